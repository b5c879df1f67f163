"""Inference on trained or released models: ``lrc.load``, chat, batch inference (docs/inference.md)."""
