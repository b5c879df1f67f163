"""``lrc export``: a trained model as a self-contained folder that reloads without the run that made it.

    DIR/config.yaml        the run's config, made self-contained: every path to outside weights
                           (``pretrained`` folders, SAM2 / timm ``checkpoint`` files, ``model.init``) is
                           replaced by the architecture it built, since DIR/model.safetensors holds the weights
    DIR/model.safetensors  every weight of the model, under the keys of a run's last.ckpt ("model.encoder...")
    DIR/tokenizer/         the tokenizer the model was trained with (lrc's special tokens included)
    DIR/llm/               when the LLM is a plain transformers model: a transformers folder (LoRA merged)
                           that loads with ``AutoModelForCausalLM.from_pretrained``, plus the tokenizer
    DIR/manifest.json      versions (lrc, torch, transformers, peft, ...), source, files with sha256,
                           parameter counts, plugin provenance
    DIR/README.md          how to reload it

Only safetensors and JSON/YAML are written; nothing is pickled. It reloads with
``lrc test DIR/config.yaml --ckpt DIR/model.safetensors``, ``model.init.path=DIR`` in another experiment
(training stage 3 from stage 2, docs/checkpoints.md), or :func:`load_exported` in Python.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lrc.weights.checkpoints import CheckpointError
from lrc.config import COMPONENTS, LoadedConfig, load_config, validate
from lrc.config.schema import InitConfig
from lrc.weights.pretrained import architecture

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


def _source(source: str | Path, config: str | Path | None) -> tuple[Path, Path]:
    """(checkpoint file, config file) of a run dir or a checkpoint file."""
    source = Path(source)
    if source.is_dir():
        ckpt = source / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise CheckpointError(f"{source} has no checkpoints/last.ckpt; give a run dir of `lrc fit` or a checkpoint "
                                  "file with --config")
        run_dir = source
    elif source.is_file():
        ckpt, run_dir = source, source.parent.parent if source.parent.name == "checkpoints" else source.parent
    else:
        raise CheckpointError(f"{source} does not exist; give a run dir or a checkpoint file (.ckpt / .safetensors)")
    cfg_path = Path(config) if config else run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"no config for {ckpt}: {cfg_path} does not exist. Pass the experiment it was trained "
                              "with: lrc export CKPT --config CONFIG --out DIR")
    return ckpt, cfg_path


def _load_run_config(path: Path) -> LoadedConfig:
    """A run's saved config.yaml (with lrc's provenance block) or any experiment YAML, with model.init
    dropped: the weights come from the checkpoint being exported."""
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if isinstance(saved, dict) and "_lrc" in saved:
        saved.pop("_lrc")
        saved.setdefault("model", {})["init"] = {"path": None}
        return LoadedConfig(OmegaConf.create(saved), path, {})
    return load_config(path, ["model.init.path=null"])


def self_contained(cfg: dict[str, Any], model: Any, tokenizer_dir: Path) -> dict[str, Any]:
    """The config with outside weight paths replaced by the architecture they built."""
    cfg = copy.deepcopy(cfg)
    m = cfg["model"]
    m["init"] = dataclasses.asdict(InitConfig())  # no outside weights: they are in model.safetensors
    cfg["data"]["tokenizer"] = str(tokenizer_dir.resolve())
    encoder = m["encoder"]
    if encoder.get("pretrained") and hasattr(model.encoder, "vit"):  # internvl_vit from a folder
        arch = architecture(model.encoder.vit.config)
        arch.pop("model_type", None)
        encoder.update(pretrained=None, config=arch)
    if encoder.get("checkpoint"):  # timm_vit: its weights are in model.safetensors
        encoder["checkpoint"] = None
    llm = m["llm"]
    if llm.get("pretrained"):
        base = llm_base(model.llm)
        if base is None:
            raise CheckpointError(f"model.llm {llm.get('name')!r} was loaded from {llm['pretrained']} and is not a "
                                  "transformers model lrc can describe; export needs that folder to stay available")
        llm.update(pretrained=None, config=architecture(base.config), trust_remote_code=False)
    for head in (m.get("heads") or {}).values():
        if isinstance(head, dict) and head.get("checkpoint"):  # sam2_mask: SAM2's weights are in model.safetensors
            head["checkpoint"] = None
    return cfg


def llm_base(llm: Any) -> Any:
    """The transformers model inside the LLM plugin (under peft's wrapper when it has LoRA), or None."""
    from transformers import PreTrainedModel

    inner = getattr(llm, "model", None)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner if isinstance(inner, PreTrainedModel) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    from lrc import __version__

    # lrc's own version from the code that runs (its distribution is lrc-video; `lrc` on PyPI is another project)
    out = {"python": platform.python_version(), "lrc": __version__}
    for dist in ("torch", "transformers", "peft", "lightning", "safetensors", "timm", "sam2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def export(source: str | Path, out: str | Path, config: str | Path | None = None, hf_llm: bool = True) -> Path:
    """Write the export folder ``out`` (which must not exist or be empty) from a run dir or checkpoint.
    Everything that can be wrong (the source, ``out``, the config, the checkpoint against the config's
    model, weights the exported config could not describe) is found before ``out`` is made."""
    from safetensors.torch import save_file

    from lrc.train.build import build_model, build_tokenizer, plugin_provenance
    from lrc.weights.pretrained import load_pretrained

    ckpt, cfg_path = _source(source, config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a folder; pass a folder that does not exist yet (or an "
                              "empty one).")
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} exists and is not empty; lrc export never overwrites. Pass another --out.")
    cfg = validate(_load_run_config(cfg_path))
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer).eval()
    load_pretrained(model, ckpt, layout="lrc", strict=True)
    # before the folder is made: a model this config cannot describe without outside files is refused here
    exported = self_contained(cfg, model, out / "tokenizer")
    out.mkdir(parents=True, exist_ok=True)

    # weights: the LightningModule's keys, so `lrc test --ckpt` and model.init read them as they read last.ckpt;
    # tied tensors (lm_head = embeddings) are written as separate copies, which safetensors requires
    state = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "lrc": "VideoMLLM state dict, keys 'model.*'"})
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(exported)))

    hf_note = None
    base = llm_base(model.llm)
    if not hf_llm:
        hf_note = "not written (--no-hf-llm)"
    elif base is None:
        hf_note = f"not written: the LLM plugin {cfg['model']['llm']['name']!r} is not a plain transformers model"
    else:
        llm = model.llm.model
        merged = copy.deepcopy(llm).merge_and_unload() if hasattr(llm, "merge_and_unload") else llm
        merged.save_pretrained(out / "llm")  # safetensors
        tokenizer.save_pretrained(out / "llm")

    files = sorted(p for p in out.rglob("*") if p.is_file())
    params = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in COMPONENTS if getattr(model, name, None) is not None}
    manifest = {
        "format": "lrc-export/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": str(ckpt.resolve()), "config": str(cfg_path.resolve())},
        "versions": _versions(),
        "plugins": plugin_provenance(exported),
        "parameters": params,
        "tensors": len(state),
        "llm_transformers_folder": "llm" if hf_note is None else hf_note,
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_readme(out, manifest))
    log.info("exported %s to %s", ckpt, out)
    return out


def _readme(out: Path, manifest: dict[str, Any]) -> str:
    hf = manifest["llm_transformers_folder"]
    llm_text = ("`llm/` is the language model alone as a transformers folder (LoRA merged into the weights):\n\n"
                "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                f"model = AutoModelForCausalLM.from_pretrained(\"{out}/llm\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{out}/llm\")\n```\n\n"
                "It is the text path only: lrc's vision tower, compressor, projector and TPO task embeddings/heads "
                "are in `model.safetensors`.\n") if hf == "llm" else f"No transformers folder: {hf}.\n"
    versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
    return f"""# lrc export

Exported {manifest['created']} from `{manifest['source']['checkpoint']}` with {versions}.

Reload with lrc:

```bash
lrc test {out}/config.yaml --ckpt {out}/model.safetensors      # evaluate on config.yaml's data
lrc fit NEXT_STAGE.yaml model.init.path={out}                  # start another training stage from it
```

```python
from lrc.commands.export import load_exported
cfg, tokenizer, model = load_exported("{out}")
```

`config.yaml` names the tokenizer by absolute path; after moving the folder, add
`data.tokenizer=NEW_PLACE/tokenizer` (``load_exported`` does that itself).

{llm_text}
Files (sha256 in manifest.json): {', '.join(sorted(manifest['files']))}.
Only safetensors, JSON and YAML: nothing in this folder is pickled.
"""


def load_exported(folder: str | Path) -> tuple[dict[str, Any], Any, Any]:
    """(config, tokenizer, model in eval mode) from an ``lrc export`` folder, wherever it now lies."""
    from lrc.train.build import build_model, build_tokenizer
    from lrc.weights.pretrained import load_pretrained

    folder = Path(folder)
    if not (folder / "config.yaml").is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is not an lrc export (it needs config.yaml and {WEIGHTS})")
    cfg = validate(load_config(folder / "config.yaml", [f"data.tokenizer={folder.resolve() / 'tokenizer'}"]))
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    load_pretrained(model, folder / WEIGHTS, layout="lrc", strict=True)
    return cfg, tokenizer, model.eval()
