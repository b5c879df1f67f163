"""``lrc fit`` and ``lrc test``: validate, prepare data, build, train, evaluate, write results.

A run directory holds everything about one run. It is reused by ``lrc fit --resume RUN_DIR``, which
continues an interrupted run from its newest good checkpoint at the exact batch it stopped at, and by
``lrc fit CONFIG --out RUN_DIR --resume-if-exists`` (a job that may be requeued: it starts the run when the
folder is empty and resumes it when the folder holds the same config); lrc/train/rundir.py says which
folders may be used how, and locks the folder for the process that runs in it:

    lrc.lock         who runs in the folder now (pid, host, command); removed when that process ends
    config.yaml      the fully resolved config plus the class and package version of every plugin
    checkpoints/     last.ckpt and the last few step-N.ckpt (Lightning checkpoints: weights, optimizer,
                     scheduler, loop state), written atomically (lrc/train/checkpointing.py)
    logs/            what run.loggers write: metrics.csv and hparams.yaml (csv), tb/ (tensorboard), mlflow.db (mlflow)
    metrics.json     flat {"val/mcq_acc": ..., "train/time_s": ..., "data/wait_fraction": ...}; its presence
                     marks a finished run
    progress.json    how far training is (step of total steps, elapsed), while it runs (lrc/train/progress.py)
    interrupted.json written when SIGINT/SIGTERM stopped training (signal, step, epoch, time)
    skipped.json     samples whose video could not be read, with the reason (also written when a
                     run stops because more than data.max_bad_fraction of them were bad)
    data_sources.json per split, each annotation source: its format, records read, sampled and used
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
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf

from lrc.config import ConfigError, LoadedConfig, leaf_keys, parse_overrides, saved_over_defaults, validate
from lrc.errors import LrcError, MissingInputError
from lrc.files import write_json
# run folders: lrc/train/rundir.py (RunDirError, make_run_dir and check_out_free are imported from here by the
# commands built on training)
from lrc.train.rundir import (RESUMABLE_OVERRIDES, RunDirError, check_out_free, inspect_run_dir,  # noqa: F401
                              launch_dir, lock_run_dir, make_run_dir, open_new_run, read_run_config, refusal,
                              resumable, start_over)

log = logging.getLogger("lrc")


def write_resolved_config(run_dir: Path, cfg: dict[str, Any], loaded: LoadedConfig) -> None:
    """RUN_DIR/config.yaml, written by rank 0 only."""
    from lrc import __version__
    from lrc.train.build import plugin_provenance
    from lrc.parallel.distributed import is_launch_rank_zero

    if not is_launch_rank_zero():
        return

    from lrc.train.rundir import write_run_config

    doc = dict(cfg)
    doc["_lrc"] = {"version": __version__, "source": str(loaded.path) if loaded.path else None,
                   "plugins": plugin_provenance(cfg)}
    write_run_config(run_dir, doc)  # atomic and durable (lrc.files.atomic_writer)


def ensure_corpus(cfg: dict[str, Any]) -> None:
    """Synthesise the corpus when it is missing and the config asks for that (data.synth_videos). A mixture
    (data.train / data.val as a list of sources) is never synthesised: every source must exist."""
    d = cfg["data"]
    root = Path(d["root"])
    from lrc.data.mixture import source_problems

    problems = source_problems(d["train"], root, "train") + source_problems(d["val"], root, "val")
    if problems:
        raise MissingInputError("the data sources cannot be read:\n  " + "\n  ".join(problems))
    if not isinstance(d["train"], str) or (root / d["train"]).exists():
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
    seed = cfg["run"]["seed"] if d.get("synth_seed") is None else d["synth_seed"]
    synthesize(root, videos=d["synth_videos"], seed=seed, answer_style=d["synth_answer_style"],
               multi_turn_train=d["synth_multi_turn_train"], tasks=tuple(d["synth_tasks"]))
    log.info("corpus ready in %.1fs", time.perf_counter() - t0)


def write_data_sources(run_dir: Path, data: Any, splits: tuple[str, ...]) -> None:
    """RUN_DIR/data_sources.json: per split, what each annotation source gave (format, records read, sampled,
    used); the annotations are read here, before training, and the counts are logged (rank 0 writes)."""
    from lrc.parallel.distributed import is_launch_rank_zero

    for split in splits:
        data.dataset(split)
    if is_launch_rank_zero():
        write_json(run_dir / "data_sources.json", data.source_counts())


def _trainer(cfg: dict[str, Any], run_dir: Path, model: Any, callbacks: tuple[Any, ...] = ()) -> Any:
    """The Lightning trainer: the loggers and callbacks the config names (``run.loggers``, ``run.callbacks``:
    plugins, docs/logging.md), lrc's checkpoint writer and progress display (lrc/train/display.py), ``trainer:``
    as given, and devices, strategy and precision from the shared ``distributed:`` block
    (lrc/parallel/distributed.py). When to save is the callbacks' (``lrc fit`` passes
    lrc/train/checkpointing.py's RunCheckpoints); without one, none."""
    import lightning as L

    from lrc.parallel.distributed import trainer_arguments
    from lrc.train.build import build_callbacks, build_loggers
    from lrc.train.checkpointing import DurableCheckpointIO
    from lrc.train.display import LogConfig, progress_display

    saving = any(hasattr(c, "save") for c in callbacks)
    shown = [progress_display(cfg["run"]["progress_every_s"])] if cfg["trainer"].get("enable_progress_bar", True) \
        else []
    return L.Trainer(default_root_dir=str(run_dir), logger=build_loggers(cfg, run_dir),
                     callbacks=[*callbacks, *shown, LogConfig(cfg), *build_callbacks(cfg)],
                     enable_checkpointing=saving, plugins=[DurableCheckpointIO()],
                     **trainer_arguments(cfg["distributed"], model), **cfg["trainer"])


def _build(cfg: dict[str, Any]):
    import lightning as L

    from lrc.cpus import apply_threads
    from lrc.train.build import build_data, build_model, build_module, build_tokenizer

    apply_threads(cfg["run"].get("threads"))  # torch's thread pools: run.threads (lrc/cpus.py)
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


def fit(loaded: LoadedConfig, out: str | None = None, resume_if_exists: bool = False) -> tuple[Path, dict[str, float]]:
    """``lrc fit CONFIG [--out RUN_DIR] [--resume-if-exists]``: a new run, in a fresh or unstarted folder
    (lrc/train/rundir.py), held under its lock until it ends. With ``resume_if_exists``: see
    :func:`fit_or_resume`."""
    cfg = validate(loaded)
    ensure_corpus(cfg)
    if resume_if_exists:
        return fit_or_resume(loaded, cfg, out)
    run_dir, lock = open_new_run(cfg, out)
    with lock:
        return run_dir, _start(cfg, run_dir, loaded)


def _start(cfg: dict[str, Any], run_dir: Path, loaded: LoadedConfig) -> dict[str, float]:
    write_resolved_config(run_dir, cfg, loaded)
    log.info("run dir: %s", run_dir)
    return _train(cfg, run_dir)


def _no_space(run_dir: Path, exc: BaseException) -> LrcError:
    """A write that found the disk full, as the exit-2 error that says what to do."""
    from lrc.files import DiskFullError

    path = exc.path if isinstance(exc, DiskFullError) else Path(getattr(exc, "filename", None) or run_dir)
    resume_with = f"lrc fit --resume {run_dir}"
    what = (f"Then continue the run from its last checkpoint: {resume_with}"
            if any((run_dir / "checkpoints").glob("*.ckpt")) else "Then start the run again.")
    return DiskFullError(path, what)


def _train(cfg: dict[str, Any], run_dir: Path, ckpt: Path | None = None) -> dict[str, float]:
    """Train (from ``ckpt`` when resuming), evaluate, write the results. SIGINT/SIGTERM save and stop; a full
    disk stops with what to do (the checkpoints already on disk are intact)."""
    from lrc.files import is_disk_full

    try:
        return _train_and_evaluate(cfg, run_dir, ckpt)
    except LrcError as exc:
        if is_disk_full(exc):
            raise _no_space(run_dir, exc) from exc
        raise
    except OSError as exc:
        if is_disk_full(exc):  # a log or result file, written by Lightning or lrc
            raise _no_space(run_dir, exc) from exc
        raise


def _train_and_evaluate(cfg: dict[str, Any], run_dir: Path, ckpt: Path | None) -> dict[str, float]:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lrc.parallel.distributed import apply_activation_checkpointing
    from lrc.errors import Interrupted
    from lrc.train.checkpointing import RunCheckpoints, check_fits
    from lrc.train.interrupt import GracefulInterrupt
    from lrc.train.data_wait import DataWait
    from lrc.train.progress import ProgressFile

    module, data = _build(cfg)
    write_data_sources(run_dir, data, ("train", "val"))
    if ckpt is not None:
        check_fits(module, ckpt)
    apply_activation_checkpointing(module.model, cfg["distributed"])
    r = cfg["run"]
    checkpoints = RunCheckpoints(run_dir, r["checkpoint_every_n_steps"], r["checkpoint_every_minutes"],
                                 r["keep_last_checkpoints"])
    interrupt = GracefulInterrupt(run_dir, checkpoints)
    waited = DataWait()  # data/wait_s and data/wait_fraction in metrics.json (lrc/train/data_wait.py)
    trainer = _trainer(cfg, run_dir, module.model, callbacks=(checkpoints, interrupt, ProgressFile(run_dir), waited))
    how = f"lrc fit --resume {run_dir}"
    t0 = time.perf_counter()
    try:
        with interrupt.installed(), _report_when_too_many_bad(run_dir, module):
            # weights_only: resuming never unpickles code (docs/checkpoints.md)
            trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        train_time = time.perf_counter() - t0
        module.reset_validation()
        with interrupt.installed(), _report_when_too_many_bad(run_dir, module):
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
    metrics.update(waited.metrics())
    if cfg["niah"]["after_fit"] and trainer.is_global_zero:  # NIAH as a column of an ablation (docs/niah.md)
        metrics.update(run_after_fit(["niah"], "niah/", module, run_dir))
    if cfg["eval"]["after_fit"] and trainer.is_global_zero:  # benchmark accuracy as ablation columns (evaluation.md)
        metrics.update(run_after_fit(["eval"], "eval/", module, run_dir))
    return _finish(run_dir, module, metrics)


# Variables that make a process one rank of a launch; the after-fit command is a process of its own.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")


class AfterFitError(LrcError):
    """An evaluation the config runs after training (``niah.after_fit``, ``eval.after_fit``) failed; the trained run
    is kept."""


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


# Overrides that a resumed run may take (they change neither the model nor the data it trains on) are
# lrc/train/checkpointing.py's RESUMABLE_OVERRIDES.


def resume(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, dict[str, float]]:
    """``lrc fit --resume RUN_DIR``: continue a run in its own dir from its newest good checkpoint, with the
    config it was started with (RUN_DIR/config.yaml), at the exact batch it stopped at. The folder is locked
    first; config.yaml and the checkpoint are checked before anything is loaded (a damaged checkpoint gives
    way to the previous good one, lrc/train/checkpointing.py)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a run dir written by `lrc fit` ("
                          f"{'it is a file' if run_dir.exists() else 'it does not exist'}); --resume takes the folder "
                          "of an interrupted run.")
    with lock_run_dir(run_dir):
        saved = read_run_config(run_dir)
        finished = _already_finished(run_dir)
        if finished is not None:
            return run_dir, finished
        loaded = _resumed_config(saved, overrides)
        cfg = validate(loaded)
        ensure_corpus(cfg)
        ckpt = _checkpoint_to_resume(run_dir)
        if loaded.sources:  # the config the rest of the run trains with
            write_resolved_config(run_dir, cfg, loaded)
        log.info("resuming %s from %s", run_dir, ckpt)
        return run_dir, _train(cfg, run_dir, ckpt)


def _already_finished(run_dir: Path) -> dict[str, float] | None:
    """A finished run's metrics (None: not finished). A damaged metrics.json counts as not finished: the resume
    then finds training complete and evaluates again, which writes it anew."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is damaged (%s); the run is evaluated again from its last checkpoint", path, exc)
        return None
    log.warning("%s already finished (it has metrics.json); nothing to resume", run_dir)
    return metrics


def _resumed_config(saved: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> LoadedConfig:
    """RUN_DIR/config.yaml with the command line's overrides, which may change only what a resume may."""
    saved = dict(saved)
    provenance = saved.pop("_lrc", None) or {}
    asked = leaf_keys(parse_overrides(list(overrides)))
    allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE_OVERRIDES)
    refused = [f"command line: {key}: a resumed run keeps the model and data it started with (run has "
               f"{_get(saved, key)!r}, asked for {value!r}); only {allowed} may change. Start a fresh run "
               "(lrc fit CONFIG) to change it."
               for key, value in asked.items()
               if not resumable(key) and value != _get(saved, key)]
    if refused:
        raise ConfigError(refused)
    merged = OmegaConf.merge(saved_over_defaults(saved), OmegaConf.create(parse_overrides(list(overrides))))
    source = provenance.get("source") if isinstance(provenance, dict) else None
    return LoadedConfig(merged, Path(source) if source else None,  # type: ignore[arg-type]
                        {key: "command line" for key in asked})


def _checkpoint_to_resume(run_dir: Path, rename_damaged: bool | None = None) -> Path:
    """The newest good checkpoint (lrc/train/checkpointing.py), or the exit-2 error that says what to do."""
    from lrc.parallel.distributed import is_launch_rank_zero
    from lrc.train.checkpointing import choose_checkpoint
    from lrc.weights.checkpoints import CheckpointError

    if rename_damaged is None:
        rename_damaged = is_launch_rank_zero()
    try:
        return choose_checkpoint(run_dir, rename_damaged=rename_damaged)
    except CheckpointError as exc:
        config = run_dir / "config.yaml"
        if "has no checkpoint (" in str(exc):
            raise RunDirError(f"{run_dir} has no checkpoint: it stopped before saving anything, so there is nothing "
                              f"to resume. Start it again in the same folder: lrc fit {config} --out {run_dir}") from None
        raise RunDirError(f"{exc}\nStart the run over in the same folder (the files above are kept, renamed "
                          f"*.unusable): lrc fit {config} --out {run_dir}") from None


def fit_or_resume(loaded: LoadedConfig, cfg: dict[str, Any], out: str | None) -> tuple[Path, dict[str, float]]:
    """``lrc fit CONFIG --out RUN_DIR --resume-if-exists``, the one command line of a job that may be requeued
    (SLURM ``--requeue``, a preemptible VM): an empty (or missing) RUN_DIR starts the run; one holding the same
    config resumes it from its newest good checkpoint, or starts it over when it saved none that can be used
    (what it left is kept); a finished one is reported; one holding another config is refused. "The same"
    ignores what a resume may change (trainer.*, distributed.*, run.on_nan, run.checkpoint_*, data.num_workers)."""
    from lrc.parallel.distributed import is_launch_rank_zero

    run_dir = launch_dir(cfg, out)
    if run_dir is None:
        raise RunDirError("--resume-if-exists needs the run's folder: pass --out RUN_DIR (a timestamped folder would "
                          "be a new one on every start)")
    owner = is_launch_rank_zero()
    if owner:
        inspect_run_dir(run_dir)  # a file: refused before anything is created
        run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run_dir(run_dir):
        state = inspect_run_dir(run_dir)
        if state.kind == "foreign":
            raise RunDirError(refusal(state) or "")
        if state.kind != "free":
            try:
                saved = read_run_config(run_dir)
            except RunDirError as exc:  # damaged: the config given here is taken as the run's (check_fits checks)
                log.warning("%s\n--resume-if-exists takes the config given here as the run's and writes config.yaml "
                            "anew", str(exc).split(" It is the run's")[0])
            else:
                _refuse_another_config(run_dir, saved, cfg)
        finished = _already_finished(run_dir) if state.kind == "finished" else None
        if finished is not None:
            return run_dir, finished
        if state.kind in ("resumable", "finished"):
            from lrc.train.checkpointing import choose_checkpoint
            from lrc.weights.checkpoints import CheckpointError

            try:
                ckpt = choose_checkpoint(run_dir, rename_damaged=owner)
            except CheckpointError as exc:
                log.warning("%s\nNo checkpoint of %s can be used: starting the run over (the damaged files are kept, "
                            "renamed *.unusable)", exc, run_dir)
                state = inspect_run_dir(run_dir)
            else:
                if owner:
                    start_over(state)  # removes what killed writers left
                write_resolved_config(run_dir, cfg, loaded)
                log.info("resuming %s from %s", run_dir, ckpt)
                return run_dir, _train(cfg, run_dir, ckpt)
        if owner:
            start_over(state)
        return run_dir, _start(cfg, run_dir, loaded)


def _as_recorded(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` as RUN_DIR/config.yaml records it (with what the builder fills in before writing it), as flat
    ``{dotted key: JSON value}``: how two runs' configs are compared."""
    import copy

    from lrc.train.build import plugin_provenance

    cfg = copy.deepcopy(cfg)
    plugin_provenance(cfg)  # fills in settings implied by model.init, as write_resolved_config records them
    return {k: json.loads(json.dumps(v, default=str)) for k, v in leaf_keys(cfg).items()}


def _refuse_another_config(run_dir: Path, saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    """RUN_DIR holds a run of another config (judged as a resume would: only RESUMABLE_OVERRIDES may differ)."""
    saved = {k: v for k, v in saved.items() if k != "_lrc"}
    try:
        then = validate(LoadedConfig(OmegaConf.create(saved), run_dir / "config.yaml", {}))
    except ConfigError as exc:
        raise RunDirError(f"{run_dir / 'config.yaml'} no longer validates ({exc.problems[0]}); cannot tell whether "
                          f"{run_dir} holds this run. Pass another --out.") from None
    a, b = _as_recorded(then), _as_recorded(cfg)
    changed = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>") and not resumable(k))
    if changed:
        shown = "; ".join(f"{k}: {a.get(k, '<unset>')!r} there, {b.get(k, '<unset>')!r} here" for k in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise RunDirError(f"run dir {run_dir} holds a run of another config ({shown}{more}); --resume-if-exists "
                          f"continues only the same run. Pass another --out for this config, or continue that run "
                          f"as it was: lrc fit --resume {run_dir}")


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
    from lrc.train.build import resolve_implied
    from lrc.weights.checkpoints import load_state_dict_file

    cfg = resolve_implied(validate(loaded), loaded)
    check_out_free(out)
    state = load_state_dict_file(ckpt)
    ensure_corpus(cfg)
    module, data = _build(cfg)
    load_weights(module, state, ckpt)
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    write_data_sources(run_dir, data, ("val",))
    trainer = _trainer(cfg, run_dir, module.model)
    with _report_when_too_many_bad(run_dir, module):
        trainer.validate(module, datamodule=data, verbose=False)
    metrics = {f"val/{k}": v for k, v in module.summarise_validation().items()}
    metrics["checkpoint"] = str(ckpt)  # type: ignore[assignment]
    return run_dir, _finish(run_dir, module, metrics)
