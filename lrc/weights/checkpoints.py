"""Reading weights without executing code.

Every state dict lrc reads goes through here: safetensors when the file is one, otherwise
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain
containers. A file that needs more than that is refused with an explanation, never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lrc.errors import LrcError


class CheckpointError(LrcError, RuntimeError):
    pass


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, or a pickle named .safetensors
            raise CheckpointError(f"{path} is not a valid safetensors file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:300]}); it is never read any other way") from exc
    obj = load_torch_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_torch_file(path: Path | str) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no code runs while loading)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the reason is kept in the message
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint that loads with "
            f"weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). lrc never "
            "unpickles arbitrary objects; re-save the weights as safetensors or a plain state dict."
        ) from exc
