"""Data: annotation reading, video decoding, datasets and the synthetic corpus.

``lrc.data.read_frames(path, indices, size=None, exact=True)`` reads frames of a video (lrc/data/media.py,
docs/data.md "Reading frames"); it and the names below are imported when first used, so ``import lrc.data``
stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "lrc.data.media": ("read_frames", "open_video"),
    "lrc.data.video": ("Frames", "VideoFile", "VideoReadError"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lrc.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
