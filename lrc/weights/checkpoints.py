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


# what every Lightning training checkpoint holds (trainer.save_checkpoint); lrc's own state is under "lrc"
TRAINING_KEYS = ("state_dict", "global_step", "epoch", "loops")


def read_training_checkpoint(path: Path | str) -> dict[str, Any]:
    """A training checkpoint (a run's ``last.ckpt`` / ``step-N.ckpt``) opened the safe way and checked before
    a resume trusts it: tensors and plain containers only (``weights_only``), memory-mapped so that the check
    does not read the weights. :class:`CheckpointError` names the file and what is wrong with it: missing,
    empty, truncated or otherwise damaged, pickling code, or not a training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write never finished")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - truncation, bad zip, refused globals: the reason is kept
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(" This is an internal")[0][:200]  # torch's advice after the reason is generic
        why = ("it pickles objects other than tensors (lrc never unpickles code)" if "weights_only" in str(exc)
               or "Unsupported global" in str(exc) else f"it is truncated or damaged ({size} bytes; {first})")
        raise CheckpointError(f"checkpoint {path} cannot be used: {why}") from exc
    if not isinstance(obj, dict) or any(k not in obj for k in TRAINING_KEYS):
        have = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint written by `lrc fit` (it lacks "
                              f"{', '.join(k for k in TRAINING_KEYS if not isinstance(obj, dict) or k not in obj)}; "
                              f"it has {have})")
    return obj


class RemoteCodeError(LrcError):
    """A model or tokenizer folder that asks to run code that comes with it (``auto_map``); lrc never runs it."""


def load_tokenizer(path: Path | str) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` without running code from the folder: a tokenizer_config.json
    whose ``auto_map`` points at the folder's own code is refused (:class:`RemoteCodeError`, exit 2) before
    transformers reads anything, and so is anything transformers could load only with trust_remote_code."""
    import json

    from transformers import AutoTokenizer

    path = Path(path)
    config = path / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text()) if config.is_file() else {}
    except (OSError, ValueError):
        data = {}  # transformers reports an unreadable file itself
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if auto_map:
        raise RemoteCodeError(f"tokenizer folder {path}: {config.name} has auto_map {json.dumps(auto_map)[:200]}, "
                              "i.e. its tokenizer is code that comes with the folder; lrc never runs code from a model "
                              f"folder. Use a tokenizer transformers has built in: remove auto_map (and a "
                              f"tokenizer_class only that code defines) from {config}, or point data.tokenizer at "
                              "another folder.")
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise RemoteCodeError(f"tokenizer folder {path} can only be loaded by running code that comes with it "
                              f"({str(exc).splitlines()[0][:200]}); lrc never runs code from a model folder. Use a "
                              "tokenizer transformers has built in.") from None
