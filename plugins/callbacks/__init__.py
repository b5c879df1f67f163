"""Built-in callbacks (``run.callbacks``): what runs beside training (docs/logging.md)."""
