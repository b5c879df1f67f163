"""Data: annotation reading, video decoding, datasets and the synthetic corpus."""
