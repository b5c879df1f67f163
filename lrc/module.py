"""The LightningModule: losses, metrics, optimizer parameter groups, freezing, schedule.

Per-component learning rates follow the InternVideo2.5 finetuning recipe (REFERENCE.md: ViT 2e-6,
connector 1e-5, LLM 1e-5); a component listed in ``freeze`` gets no gradients and no optimizer state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import lightning as L
import torch

from lrc.data.dataset import Skipped
from lrc.model import COMPONENTS, VideoMLLM, answer_loss, mcq_predictions


class VideoMLLMModule(L.LightningModule):
    def __init__(
        self,
        model: VideoMLLM,
        lr: dict[str, float],
        freeze: list[str] | tuple[str, ...] = (),
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.lr = dict(lr)
        self.freeze = list(freeze)
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        for name in self.freeze:
            getattr(self.model, name).requires_grad_(False)
        self.skipped: dict[str, Skipped] = {}
        self._val: dict[str, list] = defaultdict(list)

    # -- steps ------------------------------------------------------------------------------
    def _note_skipped(self, batch: dict[str, Any]) -> None:
        for s in batch.get("skipped", []):
            self.skipped.setdefault(s.id, s)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._note_skipped(batch)
        if not batch["size"]:
            return None  # every sample of this batch was unreadable; Lightning skips the step
        out = self.model(batch)
        loss = answer_loss(out.logits, out.labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["size"])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._note_skipped(batch)
        if not batch["size"]:
            return
        out = self.model(batch)
        loss = answer_loss(out.logits, out.labels)
        self._val["loss"].append((float(loss), batch["size"]))
        preds, golds = mcq_predictions(out.logits, batch, out.answer_start)
        types = [t for t, o in zip(batch["question_type"], batch["option_ids"]) if o]
        for p, g, t in zip(preds.tolist(), golds.tolist(), types):
            self._val["mcq"].append((p == g, t))

    def on_validation_epoch_start(self) -> None:
        self._val.clear()

    def on_validation_epoch_end(self) -> None:
        metrics = self.summarise_validation()
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key in ("mcq_acc", "loss"), sync_dist=True)

    def summarise_validation(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._val["loss"]:
            total = sum(n for _, n in self._val["loss"])
            out["loss"] = sum(l * n for l, n in self._val["loss"]) / total
        if self._val["mcq"]:
            out["mcq_acc"] = sum(ok for ok, _ in self._val["mcq"]) / len(self._val["mcq"])
            out["mcq_count"] = float(len(self._val["mcq"]))
            by_type: dict[str, list[bool]] = defaultdict(list)
            for ok, t in self._val["mcq"]:
                by_type[t].append(ok)
            for t, oks in sorted(by_type.items()):
                out[f"mcq_acc_{t}"] = sum(oks) / len(oks)
        return out

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = []
        for name, params in self.model.component_parameters().items():
            params = [p for p in params if p.requires_grad]
            if not params:
                continue
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]  # biases and norms are not decayed
            for ps, wd in ((decay, self.weight_decay), (no_decay, 0.0)):
                if ps:
                    groups.append({"params": ps, "lr": self.lr[name], "weight_decay": wd, "name": name})
        if not groups:
            raise ValueError("every component is frozen (optim.freeze); nothing would train")
        optimizer = torch.optim.AdamW(groups, betas=self.betas)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)

        def schedule(step: int) -> float:  # linear warmup, then cosine to min_lr_ratio
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


__all__ = ["VideoMLLMModule", "COMPONENTS"]
