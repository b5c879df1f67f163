"""What a fit shows while it trains: a progress bar on a terminal, a plain line every few seconds otherwise; and
the config it gives the loggers (:class:`LogConfig`).

Both say the same things (docs/logging.md): the training loss, the learning rate (the LLM's parameter group; the
others follow ``optim.lr``), samples and visual tokens per second, memory, and the time left for the whole fit
(ETA, from the optimizer steps still to take at the speed of the last few batches; validation time is not in
it). Visual tokens are those the LLM received after compression (HiCo level 1), counted by the training module,
so an adaptive sampler's varying frame counts show as they are. Rates are this process's, times the number of
processes: every rank runs batches of the same size.

On a terminal (stderr is a TTY) the bar is Lightning's tqdm bar with these as its postfix and without the
logger version (``v_num``) it adds. When stderr is a file or a pipe (a redirected fit, an ablation cell's
log.txt, a SLURM job) a bar would write a carriage-return update per batch into it, so a line is printed every
``run.progress_every_s`` seconds instead, and one when training ends. Only rank 0 shows either.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


class TrainingMeter:
    """Speed over the last ``window`` training batches, from the module's running counts (``module.seen``) and
    the trainer's optimizer steps; the steps still to take, from the trainer's estimate."""

    def __init__(self, window: int = 20):
        self.marks: deque[tuple[float, int, int, int]] = deque(maxlen=window + 1)
        self.total_steps: float = float("inf")
        self.started = time.perf_counter()

    def start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.marks.clear()
        self.started = time.perf_counter()
        try:
            self.total_steps = float(trainer.max_steps) if trainer.max_steps > 0 else float(
                trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - an unsized train loader: no total, no ETA
            self.total_steps = float("inf")
        self.mark(trainer, module)

    def mark(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seen = getattr(module, "seen", {})
        self.marks.append((time.perf_counter(), seen.get("samples", 0), seen.get("visual_tokens", 0),
                           trainer.global_step))

    def rates(self, world_size: int = 1) -> dict[str, float]:
        """samples/s, visual tokens/s (all processes) and optimizer steps/s over the window; {} before two marks."""
        if len(self.marks) < 2:
            return {}
        (t0, s0, v0, g0), (t1, s1, v1, g1) = self.marks[0], self.marks[-1]
        dt = max(t1 - t0, 1e-9)
        return {"samples_per_s": (s1 - s0) * world_size / dt, "visual_tokens_per_s": (v1 - v0) * world_size / dt,
                "steps_per_s": (g1 - g0) / dt}

    def eta_s(self, trainer: L.Trainer) -> float | None:
        steps_per_s = self.rates().get("steps_per_s")
        left = self.total_steps - trainer.global_step
        if not steps_per_s or left == float("inf"):
            return None
        return max(left, 0) / steps_per_s

    def summary(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, str]:
        """The figures both displays show, formatted: lr, samples/s, vis_tok/s, mem, eta."""
        out: dict[str, str] = {}
        lr = learning_rate(trainer)
        if lr is not None:
            out["lr"] = f"{lr:.1e}"
        rates = self.rates(trainer.world_size)
        if rates:
            out["samples/s"] = f"{rates['samples_per_s']:.3g}"
            out["vis_tok/s"] = _count(rates["visual_tokens_per_s"])
        out["mem"] = memory_text(module)
        eta = self.eta_s(trainer)
        if eta is not None:
            out["eta"] = clock(eta)
        return out


def learning_rate(trainer: L.Trainer) -> float | None:
    """The current learning rate of the LLM's parameter group (else the first group's)."""
    if not trainer.optimizers:
        return None
    groups = trainer.optimizers[0].param_groups
    group = next((g for g in groups if g.get("name") == "llm"), groups[0] if groups else None)
    return None if group is None else float(group["lr"])


def memory_gib(module: L.LightningModule) -> float | None:
    """On CUDA the peak memory torch allocated on this process's device, else this process's resident memory
    (None where the system does not say)."""
    import torch

    from lrc.memory import status_kib

    device = getattr(module, "device", None)
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = status_kib("VmRSS")
    return rss / 2**20 if rss is not None else None


def memory_text(module: L.LightningModule) -> str:
    gib = memory_gib(module)
    return f"{gib:.1f}G" if gib is not None else "?"


def clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def _count(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


class TrainingProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, its postfix the loss and :class:`TrainingMeter`'s figures (no ``v_num``)."""

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.meter = TrainingMeter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.meter.start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.meter.mark(trainer, pl_module)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        shown = {key.removeprefix("train/"): value for key, value in metrics.items()}
        if trainer.training:
            shown.update(self.meter.summary(trainer, pl_module))
        return shown


class ProgressLines(ProgressBar):
    """One plain line of progress every ``every_s`` seconds of training, and one when training ends."""

    def __init__(self, every_s: float, stream: Any = None):
        super().__init__()
        self.every_s = every_s
        self.stream = stream
        self.meter = TrainingMeter()
        self._enabled = True
        self._last = 0.0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.start(trainer, pl_module)
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.meter.mark(trainer, pl_module)
        if time.perf_counter() - self._last >= self.every_s:
            self._last = time.perf_counter()
            self.write(self.line(trainer, pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(self.line(trainer, pl_module, done=True))

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, done: bool = False) -> str:
        """``step 120/1000 (12%), epoch 1/3, loss 2.314, lr 1.0e-05, samples/s 12.3, vis_tok/s 3.2k, mem 1.2G,
        elapsed 0:02:01, eta 0:14:40`` (``trained`` instead of ``step`` on the last line)."""
        total = self.meter.total_steps
        step = f"{trainer.global_step}/{int(total)} ({100 * trainer.global_step / total:.0f}%)" \
            if 0 < total < float("inf") else str(trainer.global_step)
        parts = [f"{'trained' if done else 'step'} {step}"]
        if trainer.max_epochs and trainer.max_epochs > 0:
            parts.append(f"epoch {trainer.current_epoch + (0 if done else 1)}/{trainer.max_epochs}")
        loss = trainer.progress_bar_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        figures = self.meter.summary(trainer, pl_module)
        eta = figures.pop("eta", None)
        parts += [f"{key} {value}" for key, value in figures.items()]
        parts.append(f"elapsed {clock(time.perf_counter() - self.meter.started)}")
        if eta is not None and not done:
            parts.append(f"eta {eta}")
        return ", ".join(parts)

    def write(self, text: str) -> None:
        if self._enabled:
            print(text, file=self.stream or sys.stderr, flush=True)


class LogConfig(L.Callback):
    """Gives every logger the run's resolved config (RUN_DIR/config.yaml's, without the provenance) as its
    hyperparameters when a fit or an evaluation starts: TensorBoard's HPARAMS tab, MLflow's parameters, W&B's
    config, the CSV logger's hparams.yaml (Lightning's own would be the module's, empty). The loggers write on
    rank 0 only."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(self.cfg)


def progress_display(every_s: float) -> ProgressBar:
    """The bar on a terminal, else the lines (see the module docstring)."""
    return TrainingProgressBar() if sys.stderr.isatty() else ProgressLines(every_s)
