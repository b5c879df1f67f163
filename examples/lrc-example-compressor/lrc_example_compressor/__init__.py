"""An example lrc plugin package: one compressor, registered through an entry point (see pyproject.toml)."""

from lrc_example_compressor.keyframe_delta import KeyframeDeltaCompressor

__all__ = ["KeyframeDeltaCompressor"]
__version__ = "0.1.0"
