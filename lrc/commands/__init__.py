"""Commands built on training and evaluation: ``lrc ablate``, ``lrc niah``, ``lrc export``."""
