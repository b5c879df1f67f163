"""lrc: long and rich context video MLLMs (HiCo + TPO) as swappable plugins.

``lrc.load(PATH)`` gives a model to chat with (docs/inference.md); it is imported on first use, so
``import lrc`` stays light (no torch).
"""

import importlib
from typing import Any

__version__ = "0.1.0"  # the one source of the version (pyproject.toml reads it)
# the distribution's name on PyPI: `pip install lrc-video` (the name `lrc` belongs to an unrelated project);
# the import name and the command stay `lrc`
DISTRIBUTION = "lrc-video"

# public names imported when first used (as lrc.config does): every layer may read lrc.__version__, and the
# inference layer stays above them
_LAZY = {"load": "lrc.inference.loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lrc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"load"})
