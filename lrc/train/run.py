"""``lrc fit`` and ``lrc test``: validate, prepare data, build, train, evaluate, write results.

A run directory holds everything about one run. It is reused only by ``lrc fit --resume RUN_DIR``,
which continues an interrupted run from its last.ckpt at the exact batch it stopped at:

    config.yaml      the fully resolved config plus the class and package version of every plugin
    checkpoints/     last.ckpt (Lightning checkpoint: weights, optimizer, scheduler, loop state)
    logs/            CSV and TensorBoard logs
    metrics.json     flat {"val/mcq_acc": ..., "train/time_s": ...}; its presence marks a finished run
    interrupted.json written when SIGINT/SIGTERM stopped training (signal, step, epoch, time)
    skipped.json     samples whose video could not be read, with the reason (also written when a
                     run stops because more than data.max_bad_fraction of them were bad)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf

from lrc.config import ConfigError, LoadedConfig, leaf_keys, parse_overrides, validate
from lrc.errors import LrcError, MissingInputError
from lrc.files import write_json

log = logging.getLogger("lrc")


class RunDirError(LrcError, FileExistsError):
    pass


SHARED_RUN_DIR_HELP = ("this process is one rank of a multi-process launch, and its ranks cannot agree on a "
                       "timestamped run dir: pass --out RUN_DIR (on a filesystem every node sees), or launch with "
                       "torchrun --rdzv-id ID or under SLURM, which name it (docs/distributed.md)")


def make_run_dir(cfg: dict[str, Any], out: str | None) -> Path:
    """A fresh run dir, made by rank 0. Under a multi-process launch every rank runs ``lrc fit`` and
    must train into the same dir: ranks > 0 take ``--out``, else the dir rank 0 made (Lightning's own
    launcher starts them with rank 0's environment, lrc.parallel.distributed.RUN_DIR_ENV), else one named after the
    launch (torchrun's rendezvous id, the SLURM job id): a timestamp would differ from rank to rank."""
    from lrc.parallel.distributed import RUN_DIR_ENV, is_launch_rank_zero, launch_run_name, launch_world_size

    base = Path(cfg["run"]["root"]) / cfg["run"]["name"]
    launched = launch_run_name()
    if not is_launch_rank_zero():
        found = out or os.environ.get(RUN_DIR_ENV) or (str(base / launched) if launched else None)
        if found is None:
            raise RunDirError(SHARED_RUN_DIR_HELP)
        Path(found).mkdir(parents=True, exist_ok=True)
        return Path(found)
    if out is None and launched:
        out = str(base / launched)
    elif out is None and launch_world_size() > 1:
        raise RunDirError(SHARED_RUN_DIR_HELP)
    path = _fresh_run_dir(base, out)
    os.environ[RUN_DIR_ENV] = str(path.resolve())  # for the ranks Lightning's launcher starts from here
    return path


def check_out_free(out: str | None) -> None:
    """Refuse an ``--out`` that already holds files, before any work: make_run_dir would refuse it only
    after the corpus and the model are ready. Ranks > 0 of a launch share rank 0's dir: not theirs to check."""
    from lrc.parallel.distributed import is_launch_rank_zero

    if out is not None and is_launch_rank_zero():
        _refuse_taken(Path(out))


def _refuse_taken(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise RunDirError(f"run dir {path} already exists and is not empty; lrc never overwrites a run. "
                          "Pass another --out, or leave --out away to get a fresh timestamped folder.")


def _fresh_run_dir(base: Path, out: str | None) -> Path:
    if out is not None:
        path = Path(out)
        _refuse_taken(path)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a fresh run dir under {base}")


def write_resolved_config(run_dir: Path, cfg: dict[str, Any], loaded: LoadedConfig) -> None:
    """RUN_DIR/config.yaml, written by rank 0 only."""
    from lrc import __version__
    from lrc.train.build import plugin_provenance
    from lrc.parallel.distributed import is_launch_rank_zero

    if not is_launch_rank_zero():
        return

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
        raise MissingInputError(f"{root / d['train']} does not exist. Point data.root at your corpus, or set "
                                f"data.synth_videos=N to synthesise one there (or run `lrc data synth {root}`).")
    from lrc.data.synth import synthesize
    from lrc.parallel.distributed import is_launch_rank_zero, wait_for_files

    if not is_launch_rank_zero():  # rank 0 synthesises; it writes the annotation files last
        log.info("waiting for rank 0 to synthesise the corpus in %s", root)
        wait_for_files([root / d["train"], root / d["val"]], "the synthetic corpus")
        return

    log.info("synthesising %d videos into %s", d["synth_videos"], root)
    t0 = time.perf_counter()
    synthesize(root, videos=d["synth_videos"], seed=cfg["run"]["seed"], answer_style=d["synth_answer_style"],
               multi_turn_train=d["synth_multi_turn_train"], tasks=tuple(d["synth_tasks"]))
    log.info("corpus ready in %.1fs", time.perf_counter() - t0)


def _trainer(cfg: dict[str, Any], run_dir: Path, model: Any, callbacks: tuple[Any, ...] = ()) -> Any:
    """The Lightning trainer: lrc's loggers and checkpointing, ``trainer:`` as given, and devices,
    strategy and precision from the shared ``distributed:`` block (lrc/parallel/distributed.py)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lrc.parallel.distributed import trainer_arguments

    loggers = [CSVLogger(str(run_dir), name="logs", version="")]
    try:
        loggers.append(TensorBoardLogger(str(run_dir), name="logs", version="tb"))
    except ModuleNotFoundError:  # tensorboard is a dependency, but a trimmed install still trains
        log.warning("tensorboard not installed; writing CSV logs only")
    # no version counter: a resumed run writes its progress to the same last.ckpt (not last-v1.ckpt)
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                                 enable_version_counter=False)
    return L.Trainer(default_root_dir=str(run_dir), logger=loggers, callbacks=[checkpoint, *callbacks],
                     **trainer_arguments(cfg["distributed"], model), **cfg["trainer"])


def _build(cfg: dict[str, Any]):
    import lightning as L

    from lrc.train.build import build_data, build_model, build_module, build_tokenizer

    L.seed_everything(cfg["run"]["seed"], workers=True, verbose=False)
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    return build_module(cfg, model), build_data(cfg, tokenizer, model)


def _finish(run_dir: Path, module: Any, metrics: dict[str, float]) -> dict[str, float]:
    """skipped.json and metrics.json, by rank 0 only (the module gathered every rank's share of both)."""
    skipped = [vars(s) for s in module.skipped.values()]
    metrics["data/skipped"] = float(len(skipped))
    metrics.update(_cost_metrics(module))
    if not module.trainer.is_global_zero:
        return metrics
    write_json(run_dir / "skipped.json", skipped)
    write_json(run_dir / "metrics.json", metrics)
    if skipped:
        log.warning("%d sample(s) skipped because their video could not be read; see %s",
                    len(skipped), run_dir / "skipped.json")
    return metrics


def _cost_metrics(module: Any) -> dict[str, float]:
    """What a run cost, for `lrc ablate`'s tables (docs/ablations.md): the visual tokens the LLM received per
    validation video, counted during validation (after compression; before any token dropout inside the
    LLM), and this process's peak memory: resident set size, and on CUDA the largest allocation torch made."""
    import torch

    from lrc.memory import max_rss_kib

    out = {"sys/peak_rss_mib": round(max_rss_kib() / 1024, 1)}
    tokens = module.visual_tokens_per_video()
    if tokens is not None:
        out["model/visual_tokens_per_video"] = round(tokens, 2)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["sys/peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


@contextmanager
def _report_when_too_many_bad(run_dir: Path, module: Any) -> Iterator[None]:
    """A run stopped by data.max_bad_fraction still leaves RUN_DIR/skipped.json, written before the
    error reaches the user so that its message can point at the file."""
    from lrc.data.dataset import TooManyBadSamples

    try:
        yield
    except TooManyBadSamples as exc:
        found = dict(module.skipped)
        for s in exc.skipped:  # the batch that tipped it over has not reached the module yet
            found.setdefault(s.id, s)
        write_json(run_dir / "skipped.json", [vars(s) for s in found.values()])
        exc.report = run_dir / "skipped.json"
        raise


def fit(loaded: LoadedConfig, out: str | None = None) -> tuple[Path, dict[str, float]]:
    cfg = validate(loaded)
    ensure_corpus(cfg)
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    log.info("run dir: %s", run_dir)
    return run_dir, _train(cfg, run_dir)


def _train(cfg: dict[str, Any], run_dir: Path, ckpt: Path | None = None) -> dict[str, float]:
    """Train (from ``ckpt`` when resuming), evaluate, write the results. SIGINT/SIGTERM save and stop."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lrc.parallel.distributed import apply_activation_checkpointing
    from lrc.errors import Interrupted
    from lrc.train.interrupt import GracefulInterrupt

    module, data = _build(cfg)
    apply_activation_checkpointing(module.model, cfg["distributed"])
    interrupt = GracefulInterrupt(run_dir)
    trainer = _trainer(cfg, run_dir, module.model, callbacks=(interrupt,))
    how = f"lrc fit --resume {run_dir}"
    t0 = time.perf_counter()
    try:
        with interrupt.installed(), _report_when_too_many_bad(run_dir, module):
            # weights_only: resuming never unpickles code (docs/checkpoints.md)
            trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        train_time = time.perf_counter() - t0
        module.reset_validation()
        with _report_when_too_many_bad(run_dir, module):
            trainer.validate(module, datamodule=data, verbose=False)
    except (Interrupted, SIGTERMException) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGTERM
        name = signal.Signals(signum).name
        if interrupt.saved:
            raise Interrupted(signum, f"{name}: stopped after step {trainer.global_step} (epoch "
                                      f"{trainer.current_epoch}); saved {interrupt.ckpt_path} and "
                                      f"{run_dir / 'interrupted.json'}. Resume with: {how}") from None
        raise Interrupted(signum, f"{name}: stopped outside a training step; {run_dir / 'checkpoints'} keeps "
                                  f"the last saved state. Resume with: {how}") from None
    metrics = {f"val/{k}": v for k, v in module.summarise_validation().items()}
    metrics.update({"train/time_s": round(train_time, 2), "train/steps": float(trainer.global_step),
                    "train/epochs": float(trainer.current_epoch), "train/nan_skipped": float(module.nan_skipped)})
    if cfg["niah"]["after_fit"] and trainer.is_global_zero:  # NIAH as a column of an ablation (docs/niah.md)
        metrics.update(run_after_fit(["niah"], "niah/", module, run_dir))
    return _finish(run_dir, module, metrics)


# Variables that make a process one rank of a launch; the after-fit command is a process of its own.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")


class AfterFitError(LrcError):
    """An evaluation the config runs after training (``niah.after_fit``) failed; the trained run is kept."""


def run_after_fit(command: list[str], prefix: str, module: Any, run_dir: Path) -> dict[str, float]:
    """An evaluation command run on the weights just trained, as the user would run it (``lrc niah
    RUN/config.yaml --ckpt WEIGHTS --out RUN/niah``); its metrics starting with ``prefix`` join the run's.

    It runs in a fresh process: in this one the optimizer state, the data pipeline's caches and the
    allocator's freed pages stay resident (on CUDA, allocated), so an evaluation that measures memory (NIAH's
    memory cap and ``niah/max_frames_without_oom``) would count training too. It also keeps the training
    layer from importing the commands built on it."""
    import torch

    from lrc.parallel.distributed import RUN_DIR_ENV

    out = run_dir / command[0]
    weights = run_dir / f"{command[0]}-weights.pt"
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, weights)
    argv = [sys.executable, "-m", "lrc.cli", *command, str(run_dir / "config.yaml"), "--ckpt", str(weights),
            "--out", str(out)]
    log.info("%s.after_fit: %s into %s (in a fresh process)", command[0], " ".join(["lrc", *command]), out)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and k != RUN_DIR_ENV}
    try:
        done = subprocess.run(argv, env=env)
    finally:
        weights.unlink(missing_ok=True)
    if done.returncode != 0 or not (out / "metrics.json").is_file():
        raise AfterFitError(f"{command[0]}.after_fit: `{' '.join(argv)}` failed with exit code {done.returncode} "
                            f"(its messages are above). The trained run is complete in {run_dir}: evaluate its "
                            f"checkpoint with `lrc {command[0]} {run_dir / 'config.yaml'} --ckpt "
                            f"{run_dir / 'checkpoints' / 'last.ckpt'}`.")
    found = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in found.items() if k.startswith(prefix)}


# Overrides that a resumed run may take: they change neither the model nor the data it trains on.
RESUMABLE_OVERRIDES = ("trainer.", "run.on_nan", "data.num_workers")


def resume(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, dict[str, float]]:
    """``lrc fit --resume RUN_DIR``: continue a run in its own dir from checkpoints/last.ckpt, with the
    config it was started with (RUN_DIR/config.yaml), at the exact batch it stopped at."""
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise RunDirError(f"{run_dir} is not a run dir written by `lrc fit` (it has no config.yaml); --resume takes "
                          "the folder of an interrupted run.")
    if (run_dir / "metrics.json").is_file():
        log.warning("%s already finished (it has metrics.json); nothing to resume", run_dir)
        return run_dir, json.loads((run_dir / "metrics.json").read_text())
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise RunDirError(f"{run_dir} has no checkpoints/last.ckpt: it stopped before saving anything. Start it "
                          f"again: lrc fit {saved_path} --out NEW_RUN_DIR")
    saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
    assert isinstance(saved, dict)
    provenance = saved.pop("_lrc", None) or {}
    asked = leaf_keys(parse_overrides(list(overrides)))
    allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE_OVERRIDES)
    refused = [f"command line: {key}: a resumed run keeps the model and data it started with (run has "
               f"{_get(saved, key)!r}, asked for {value!r}); only {allowed} may change. Start a fresh run "
               "(lrc fit CONFIG) to change it."
               for key, value in asked.items()
               if not key.startswith(RESUMABLE_OVERRIDES) and value != _get(saved, key)]
    if refused:
        raise ConfigError(refused)
    merged = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(list(overrides)))
    source = provenance.get("source")
    loaded = LoadedConfig(merged, Path(source) if source else None,  # type: ignore[arg-type]
                          {key: "command line" for key in asked})
    cfg = validate(loaded)
    ensure_corpus(cfg)
    if asked:  # the config the rest of the run trains with
        write_resolved_config(run_dir, cfg, loaded)
    log.info("resuming %s from %s", run_dir, ckpt)
    return run_dir, _train(cfg, run_dir, ckpt)


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def load_weights(module: Any, state: dict[str, Any], ckpt: str | Path) -> None:
    """A checkpoint's state dict into the module built from the config (``lrc test``, ``lrc niah``)."""
    from lrc.weights.checkpoints import CheckpointError

    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: another architecture or vocabulary
        raise CheckpointError(f"checkpoint {ckpt} does not match this config's model: {str(exc)[:500]}. Use the config "
                              "the checkpoint was trained with (its run dir has config.yaml).") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt} does not match this config's model: {len(missing)} missing keys "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Use the "
                              "config the checkpoint was trained with (its run dir has config.yaml).")


def test(loaded: LoadedConfig, ckpt: str, out: str | None = None) -> tuple[Path, dict[str, float]]:
    """``lrc test CONFIG --ckpt PATH``: the checkpoint evaluated on CONFIG's validation data. The config,
    ``--out``, the checkpoint file and whether it fits the config's model are all checked before the run
    dir is made (a corpus still to be synthesised comes first: the model's vocabulary is the corpus's)."""
    from lrc.weights.checkpoints import load_state_dict_file

    cfg = validate(loaded)
    check_out_free(out)
    state = load_state_dict_file(ckpt)
    ensure_corpus(cfg)
    module, data = _build(cfg)
    load_weights(module, state, ckpt)
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    trainer = _trainer(cfg, run_dir, module.model)
    with _report_when_too_many_bad(run_dir, module):
        trainer.validate(module, datamodule=data, verbose=False)
    metrics = {f"val/{k}": v for k, v in module.summarise_validation().items()}
    metrics["checkpoint"] = str(ckpt)  # type: ignore[assignment]
    return run_dir, _finish(run_dir, module, metrics)
