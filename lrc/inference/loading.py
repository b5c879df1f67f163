"""``lrc.load(PATH)``: a model ready to chat, from whatever lrc can read.

PATH may be

* a run dir of ``lrc fit`` (its ``config.yaml`` and ``checkpoints/last.ckpt``), or that checkpoint file;
* an ``lrc export`` folder (``config.yaml``, ``model.safetensors``, ``tokenizer/``), wherever it was moved;
* an InternVL2.5 / InternVideo2.5 folder (original remote-code layout or transformers' InternVL): the model
  block is ``lrc checkpoint describe``'s (lrc/weights/pretrained.py: the prompt format and the merge metric
  follow from its config.json, its TPO parts go into the heads), the tokenizer is the folder's.

Nothing is downloaded, no code from PATH runs (weights through safetensors or ``weights_only``; configs as
YAML / JSON), and the model comes back in eval mode on ``device``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import OmegaConf

from lrc.config import LoadedConfig, load_config, saved_over_defaults, validate
from lrc.inference.chat import InferenceError, VideoChat
from lrc.weights.checkpoints import CheckpointError

log = logging.getLogger(__name__)

EXPORT_WEIGHTS = "model.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def kind_of(path: Path) -> str:
    """``run``, ``export`` or ``internvl`` — or a CheckpointError saying what PATH should be."""
    if path.is_file() and path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return "run"
    if path.is_dir():
        if (path / "config.yaml").is_file() and (path / "checkpoints" / "last.ckpt").is_file():
            return "run"
        if (path / "config.yaml").is_file() and (path / EXPORT_WEIGHTS).is_file():
            return "export"
        if (path / "config.json").is_file():
            return "internvl"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run dir, an `lrc export` folder or an InternVL2.5 / "
                              "InternVideo2.5 model folder")
    raise CheckpointError(f"{path} is not something lrc.load can read: expected a run dir (config.yaml + "
                          "checkpoints/last.ckpt), a checkpoint inside one, an `lrc export` folder (config.yaml + "
                          "model.safetensors) or an InternVL model folder (config.json + safetensors)")


def _run_config(path: Path, overrides: Sequence[str], extra: Sequence[str] = ()) -> dict[str, Any]:
    """A run's or an export's config.yaml (its provenance block dropped, model.init cleared: the weights come
    from PATH), with ``overrides``."""
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is not a config (a mapping of sections)")
    saved.pop("_lrc", None)
    saved.setdefault("model", {})["init"] = {"path": None}
    loaded = LoadedConfig(saved_over_defaults(saved), path, {})
    if overrides or extra:
        from lrc.config import parse_overrides

        merged = OmegaConf.merge(loaded.cfg, OmegaConf.create(parse_overrides([*extra, *overrides])))
        loaded = LoadedConfig(merged, path, {})
    return validate(loaded)


def _internvl_config(path: Path, overrides: Sequence[str], dtype: str | None) -> dict[str, Any]:
    """lrc's defaults, the model block ``lrc checkpoint describe`` prints for PATH, its tokenizer, 16 uniformly
    sampled frames (``num_frames=`` per question changes it), then ``overrides``."""
    from lrc.config import parse_overrides
    from lrc.weights.pretrained import describe

    block = describe(path)
    if dtype is not None:
        block["llm"]["dtype"] = dtype  # the LLM is built in it: an 8B model is never held in float32 first
    experiment = {"model": block, "data": {"tokenizer": str(path), "sampler": {"name": "uniform", "num_frames": 16}}}
    layers = [load_config(None).cfg, OmegaConf.create(experiment)]
    if overrides:
        layers.append(OmegaConf.create(parse_overrides(list(overrides))))
    return validate(LoadedConfig(OmegaConf.merge(*layers), path / "config.json", {}))


def _find_tokenizer(cfg: dict[str, Any], run_dir: Path) -> None:
    """A run's corpus tokenizer (``data.root/tokenizer``, relative to where ``lrc fit`` ran) when PATH is given
    from another working directory: looked for from the run dir's parent folders too."""
    data = cfg["data"]
    root = Path(data["root"])
    if data.get("tokenizer") or cfg["model"]["llm"].get("pretrained") or root.is_absolute() or (root / "tokenizer").is_dir():
        return
    for parent in run_dir.resolve().parents:
        if (parent / root / "tokenizer").is_dir():
            data["tokenizer"] = str(parent / root / "tokenizer")
            return


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(path: str | Path, device: str | torch.device | None = "auto", dtype: str | None = None,
         overrides: Sequence[str] = (), weights: str | Path | None = None) -> VideoChat:
    """A :class:`VideoChat` for PATH (a run dir, an ``lrc export`` folder, or an InternVL2.5 / InternVideo2.5
    folder). ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda:1`` ...; ``dtype``: ``bfloat16`` /
    ``float16`` / ``float32`` for the weights (default: as saved/built); ``overrides``: ``key=value`` config
    changes, e.g. ``data.sampler.num_frames=32`` or ``model.token_dropout.enabled=true``. ``weights``: a weights
    file (a checkpoint, a state dict) for PATH then given as a config YAML (a run's ``config.yaml``: how
    ``lrc fit``'s after-fit evaluations load the model just trained)."""
    from lrc.train.build import build_model, build_tokenizer, resolve_implied
    from lrc.weights.pretrained import load_pretrained

    path = Path(path)
    if weights is not None and not (path.is_file() and path.suffix in (".yaml", ".yml")):
        raise CheckpointError(f"{path}: with a weights file ({weights}), PATH is the config YAML the weights were "
                              "trained with (a run's config.yaml)")
    kind = "config" if weights is not None else kind_of(path)
    if dtype is not None and dtype not in DTYPES:
        raise InferenceError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if kind == "config":
        ckpt = Path(weights)  # type: ignore[arg-type]
        cfg = _run_config(path, overrides)
        _find_tokenizer(cfg, path.parent)
    elif kind == "run":
        run_dir = path.parent.parent if path.is_file() else path
        ckpt = path if path.is_file() else path / "checkpoints" / "last.ckpt"
        cfg = _run_config(run_dir / "config.yaml", overrides)
        _find_tokenizer(cfg, run_dir)
    elif kind == "export":
        ckpt = path / EXPORT_WEIGHTS
        cfg = _run_config(path / "config.yaml", overrides, [f"data.tokenizer={(path / 'tokenizer').resolve()}"])
    else:
        ckpt = None
        cfg = _internvl_config(path, overrides, dtype)
    resolve_implied(cfg)
    tokenizer = build_tokenizer(cfg)
    torch.manual_seed(0)  # what the checkpoint does not hold (a fresh head) is the same from load to load
    model = build_model(cfg, tokenizer)  # an InternVL folder loads through model.init
    if ckpt is not None:
        load_pretrained(model, ckpt, layout="lrc", strict=True)
    target = resolve_device(device)
    model = model.to(target, DTYPES[dtype]) if dtype is not None else model.to(target)
    model.eval()
    log.info("loaded %s (%s) on %s", path, kind, target)
    return VideoChat(cfg, tokenizer, model, target, source=str(path))
