"""Training: the builder (config → objects), the Lightning module, ``lrc fit``/``lrc test`` and run folders,
and graceful interrupts."""
