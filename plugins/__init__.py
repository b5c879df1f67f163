"""Built-in lrc plugins, installed as ``lrc_plugins`` (the folder is ``plugins/``)."""
