"""Built-in prompt formats (chat templates): the ``prompts`` plugin kind (lrc.protocols.PromptFormat)."""
