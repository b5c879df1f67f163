"""Built-in optimizers (``optim.optimizer``): what steps the per-component parameter groups (docs/config.md)."""
