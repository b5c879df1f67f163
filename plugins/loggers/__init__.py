"""Built-in loggers (``run.loggers``): where a fit's metrics and its resolved config go (docs/logging.md)."""
