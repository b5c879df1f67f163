"""``lrc fit`` and ``lrc test``: validate, prepare data, build, train, evaluate, write results.

A run directory holds everything about one run and is never reused:

    config.yaml      the fully resolved config plus the class and package version of every plugin
    checkpoints/     last.ckpt (Lightning checkpoint: weights, optimizer, scheduler, loop state)
    logs/            CSV and TensorBoard logs
    metrics.json     flat {"val/mcq_acc": ..., "train/time_s": ...}
    skipped.json     samples whose video could not be read, with the reason
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lrc.config import LoadedConfig, validate

log = logging.getLogger("lrc")


class RunDirError(FileExistsError):
    pass


def make_run_dir(cfg: dict[str, Any], out: str | None) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise RunDirError(f"run dir {path} already exists and is not empty; lrc never overwrites a run. "
                              "Pass another --out, or leave --out away to get a fresh timestamped folder.")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(cfg["run"]["root"]) / cfg["run"]["name"]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a fresh run dir under {base}")


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader never sees half a file, and a crash never leaves one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_resolved_config(run_dir: Path, cfg: dict[str, Any], loaded: LoadedConfig) -> None:
    from lrc import __version__
    from lrc.build import plugin_provenance

    doc = dict(cfg)
    doc["_lrc"] = {"version": __version__, "source": str(loaded.path) if loaded.path else None,
                   "plugins": plugin_provenance(cfg)}
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(doc)))
    os.replace(tmp, run_dir / "config.yaml")


def ensure_corpus(cfg: dict[str, Any]) -> None:
    """Synthesise the corpus when it is missing and the config asks for that (data.synth_videos)."""
    d = cfg["data"]
    root = Path(d["root"])
    if (root / d["train"]).exists():
        return
    if not d.get("synth_videos"):
        raise FileNotFoundError(f"{root / d['train']} does not exist. Point data.root at your corpus, or set "
                                f"data.synth_videos=N to synthesise one there (or run `lrc data synth {root}`).")
    from lrc.data.synth import synthesize

    log.info("synthesising %d videos into %s", d["synth_videos"], root)
    t0 = time.perf_counter()
    synthesize(root, videos=d["synth_videos"], seed=cfg["run"]["seed"], answer_style=d["synth_answer_style"],
               multi_turn_train=d["synth_multi_turn_train"], tasks=tuple(d["synth_tasks"]))
    log.info("corpus ready in %.1fs", time.perf_counter() - t0)


def _trainer(cfg: dict[str, Any], run_dir: Path) -> Any:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [CSVLogger(str(run_dir), name="logs", version="")]
    try:
        loggers.append(TensorBoardLogger(str(run_dir), name="logs", version="tb"))
    except ModuleNotFoundError:  # tensorboard is a dependency, but a trimmed install still trains
        log.warning("tensorboard not installed; writing CSV logs only")
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)
    return L.Trainer(default_root_dir=str(run_dir), logger=loggers, callbacks=[checkpoint], **cfg["trainer"])


def _build(cfg: dict[str, Any]):
    import lightning as L

    from lrc.build import build_data, build_model, build_module, build_tokenizer

    L.seed_everything(cfg["run"]["seed"], workers=True, verbose=False)
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    return build_module(cfg, model), build_data(cfg, tokenizer, model)


def _finish(run_dir: Path, module: Any, metrics: dict[str, float]) -> dict[str, float]:
    skipped = [vars(s) for s in module.skipped.values()]
    write_json(run_dir / "skipped.json", skipped)
    metrics["data/skipped"] = float(len(skipped))
    write_json(run_dir / "metrics.json", metrics)
    if skipped:
        log.warning("%d sample(s) skipped because their video could not be read; see %s",
                    len(skipped), run_dir / "skipped.json")
    return metrics


def fit(loaded: LoadedConfig, out: str | None = None) -> tuple[Path, dict[str, float]]:
    cfg = validate(loaded)
    ensure_corpus(cfg)
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    log.info("run dir: %s", run_dir)
    module, data = _build(cfg)
    trainer = _trainer(cfg, run_dir)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_time = time.perf_counter() - t0
    module._val.clear()
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {f"val/{k}": v for k, v in module.summarise_validation().items()}
    metrics.update({"train/time_s": round(train_time, 2), "train/steps": float(trainer.global_step),
                    "train/epochs": float(trainer.current_epoch)})
    return run_dir, _finish(run_dir, module, metrics)


def test(loaded: LoadedConfig, ckpt: str, out: str | None = None) -> tuple[Path, dict[str, float]]:
    from lrc.checkpoints import load_state_dict_file

    cfg = validate(loaded)
    ensure_corpus(cfg)
    state = load_state_dict_file(ckpt)
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    module, data = _build(cfg)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not match this config's model: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Use the "
                         "config the checkpoint was trained with (its run dir has config.yaml).")
    trainer = _trainer(cfg, run_dir)
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {f"val/{k}": v for k, v in module.summarise_validation().items()}
    metrics["checkpoint"] = str(ckpt)  # type: ignore[assignment]
    return run_dir, _finish(run_dir, module, metrics)
