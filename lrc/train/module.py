"""The LightningModule: losses, metrics, optimizer parameter groups, freezing, schedule.

Per-component learning rates follow the InternVideo2.5 finetuning recipe (paper §3.5 and its released scripts: ViT 2e-6,
connector 1e-5, LLM 1e-5); a component listed in ``freeze`` gets no gradients and no optimizer state.

The training loss is paper eq. 3 (TPO), with DPO beside it when preference pairs are present:

    L_total = L_base + λ1·L_task + λ2·Σ_k w_k·L_spec,k  (+ dpo_weight·L_DPO)

L_base is next-token cross entropy on the answers; L_task the task recognition from the query; L_spec,k
head k's own loss, on the samples that carry its task only. Every term is logged (``train/<term>``).
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections import defaultdict
from contextlib import nullcontext
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from lrc.config.schema import COMPONENTS
from lrc.data.dataset import Skipped
from lrc.model.mllm import MLLMOutput, VideoMLLM, answer_loss, mcq_predictions
from lrc.model.tpo import dpo_loss
from lrc.errors import LrcError

log = logging.getLogger("lrc")


class NonFiniteLossError(LrcError, FloatingPointError):
    """A loss term was NaN or inf (run.on_nan=stop); the message names the step, samples and terms."""


class VideoMLLMModule(L.LightningModule):
    def __init__(
        self,
        model: VideoMLLM,
        lr: dict[str, float],
        freeze: list[str] | tuple[str, ...],
        weight_decay: float,
        warmup_ratio: float,
        min_lr_ratio: float,
        loss: dict[str, Any],
        on_nan: str,
        optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None = None,
        schedule: str = "cosine",
    ):
        """The values of a validated config's ``optim``, ``loss`` and ``run.on_nan`` (lrc/train/build.py
        passes them; their defaults and ranges are the schema's, lrc/config/schema.py). ``optimizer`` makes the
        optimizer from the parameter groups (the ``optim.optimizer`` plugin; default torch's AdamW)."""
        super().__init__()
        self.make_optimizer = optimizer or (lambda groups: torch.optim.AdamW(groups))
        self.schedule = schedule
        # what training has consumed in this process (samples, visual tokens after compression): the progress
        # display and the throughput callback turn these into rates (lrc/train/display.py)
        self.seen = {"samples": 0, "visual_tokens": 0}
        self.on_nan = on_nan
        self.nan_skipped = 0  # batches skipped for a non-finite loss (run.on_nan=skip)
        self._rng_to_restore: dict[str, Any] | None = None
        self.model = model
        self.loss_cfg = dict(loss)
        self.lr = dict(lr)
        self.freeze = list(freeze)
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        for name in self.freeze:
            if getattr(self.model, name) is not None:
                getattr(self.model, name).requires_grad_(False)
        # DPO's reference policy: a frozen copy of the model as built (kept out of the state dict and the
        # optimizer), or the LLM with its LoRA adapters switched off (lrc/model/tpo.py)
        self._reference: list[VideoMLLM] = []
        if self.loss_cfg["dpo_weight"] > 0 and self.loss_cfg["dpo_reference"] == "frozen_copy":
            self._reference.append(copy.deepcopy(model).eval().requires_grad_(False))
        elif self.loss_cfg["dpo_weight"] > 0 and not getattr(model.llm, "has_lora", False):
            raise ValueError("loss.dpo_reference=lora_disabled needs LoRA on the LLM (model.llm.lora)")
        self.skipped: dict[str, Skipped] = {}
        self._val: dict[str, list] = defaultdict(list)

    def on_fit_start(self) -> None:
        for ref in self._reference:
            ref.to(self.device)

    # -- exact resume: what Lightning's checkpoint does not hold ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        np_state = np.random.get_state()
        checkpoint["lrc"] = {
            "nan_skipped": self.nan_skipped,
            "skipped": [vars(s) for s in self.skipped.values()],
            # plain tensors and ints only: checkpoints load with weights_only=True
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lrc") or {}
        self.nan_skipped = int(state.get("nan_skipped", 0))
        self.skipped.update({s["id"]: Skipped(**s) for s in state.get("skipped", [])})
        self._rng_to_restore = state.get("rng")

    def on_train_start(self) -> None:
        # restored here, not in on_load_checkpoint: creating the train loader's iterator draws from the
        # global RNG, and an uninterrupted run drew that before the step the checkpoint was taken at
        rng, self._rng_to_restore = self._rng_to_restore, None
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in rng["python"]))
            kind, keys, *rest = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))

    # -- losses -----------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any], out: MLLMOutput) -> dict[str, torch.Tensor]:
        """Every term of L_total by name, and ``loss`` = L_total (paper eq. 3; module docstring)."""
        c = self.loss_cfg
        # under sequence parallelism the model computed L_base across the ranks' chunks itself
        terms = {"base": out.base_loss if out.base_loss is not None else answer_loss(out.logits, out.labels)}
        total = terms["base"]
        heads = self.model.heads
        if heads is not None and out.task_logits is not None:
            labels = heads.task_labels(batch.get("task") or ["text"] * batch["size"]).to(out.task_logits.device)
            terms["task"] = F.cross_entropy(out.task_logits.float(), labels)
            total = total + c["task_weight"] * terms["task"]
            for task, predictions in out.head_predictions.items():
                parts = heads.heads[task].loss(predictions, out.head_inputs[task])
                for name, value in parts.items():
                    terms[f"{task}/{name}"] = value
                weight = c["head_weights"].get(heads.labels[task], 1.0)
                total = total + c["spec_weight"] * weight * parts["loss"]
        if c["dpo_weight"] > 0 and batch.get("preference_rows"):
            terms["dpo"], margin = self.dpo(batch, out)
            terms["dpo_margin"] = margin.mean()
            total = total + c["dpo_weight"] * terms["dpo"]
        terms["loss"] = total
        return terms

    def dpo(self, batch: dict[str, Any], out: MLLMOutput) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch["preference_rows"]
        boxes = [batch["input_boxes"][b] for b in rows] if batch.get("input_boxes") else None
        pairs = [(batch["input_ids"][rows], batch["chosen_labels"], batch["attention_mask"][rows]),
                 (batch["rejected_input_ids"], batch["rejected_labels"], batch["rejected_attention_mask"])]
        visual = [out.visual[b] for b in rows]
        policy = [self.model.answer_logps(ids, labels, mask, visual, boxes) for ids, labels, mask in pairs]
        with torch.no_grad():
            if self._reference:
                ref = self._reference[0]
                frames = batch["pixel_values"].split(batch["frames_per_sample"])
                media = batch.get("media")
                ref_visual = ref.encode_video(torch.cat([frames[b] for b in rows]),
                                              [batch["frames_per_sample"][b] for b in rows],
                                              [media[b] for b in rows] if media else None)
            else:
                ref, ref_visual = self.model, [v.detach() for v in visual]
            context = self.model.llm.model.disable_adapter() if not self._reference else nullcontext()
            with context:
                reference = [ref.answer_logps(ids, labels, mask, ref_visual, boxes) for ids, labels, mask in pairs]
        return dpo_loss(policy[0], policy[1], reference[0], reference[1], self.loss_cfg["dpo_beta"])

    # -- steps ------------------------------------------------------------------------------
    def _note_skipped(self, batch: dict[str, Any]) -> None:
        for s in batch.get("skipped", []):
            self.skipped.setdefault(s.id, s)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._note_skipped(batch)
        if self._on_any_rank(not batch["size"]):
            return self._skip_step()  # every sample of this batch (on some rank) was unreadable
        out = self.model(batch)
        self.seen["samples"] += batch["size"]
        self.seen["visual_tokens"] += sum(int(v.shape[0]) for v in out.visual)
        terms = self.losses(batch, out)
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in terms.values()])
        if self._on_any_rank(not bool(finite.all())):  # one device sync per step
            bad = {name: float(value.detach().float().sum()) for name, value in terms.items()
                   if not bool(torch.isfinite(value.detach()).all())} or {"loss on another rank": math.nan}
            # before any backward or optimizer step: the weights (and the last checkpoint) stay good
            where = (f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}), "
                     f"samples {batch.get('ids')}")
            terms_text = ", ".join(f"{name}={value}" for name, value in bad.items())
            if self.on_nan == "skip":
                self.nan_skipped += 1
                log.warning("non-finite loss at %s: %s; batch skipped (run.on_nan=skip, %d so far)",
                            where, terms_text, self.nan_skipped)
                return self._skip_step()
            raise NonFiniteLossError(
                f"non-finite loss at {where}: {terms_text}. Training stopped; nothing was saved over the last "
                "good checkpoint. Lower the learning rates (optim.lr), check these samples' videos and "
                "annotations, or set run.on_nan=skip to skip such batches.")
        for name, value in terms.items():
            # sync_dist: the logged value is the mean over ranks, the loss that DDP's averaged gradient
            # descends (docs/distributed.md), not rank 0's share alone
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=batch["size"], sync_dist=True)
        return terms["loss"]

    def _skip_step(self) -> torch.Tensor | None:
        """What training_step returns for a batch every rank skips. One process: None, and Lightning runs no
        backward (the optimizer, finding no gradient, changes nothing). Several ranks: Lightning refuses None,
        so the step returns a zero loss over every trainable parameter (DDP all-reduces its zero gradients, no
        rank waits) and on_before_optimizer_step drops the gradients, so that the optimizer again changes nothing
        (under gradient accumulation, the whole optimizer step that batch belongs to is skipped)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return None
        self._skipping = True
        return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)  # type: ignore[return-value]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if getattr(self, "_skipping", False):
            self._skipping = False
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def _on_any_rank(self, flag: bool) -> bool:
        """``flag`` OR-ed over ranks. A step that one rank skips (an unreadable batch, a non-finite loss)
        every rank must skip: otherwise the others wait forever in DDP's gradient all-reduce (or FSDP's
        parameter gathers) for a rank that took no step."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return flag
        return bool(trainer.strategy.reduce(torch.tensor(float(flag), device=self.device), reduce_op="sum") > 0)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._note_skipped(batch)
        if not batch["size"]:
            return
        out = self.model(batch)
        # what the LLM received per video after compression (HiCo level 1), counted, not derived from the
        # config: an adaptive sampler gives each video its own frame count (lrc ablate reports the mean)
        self._val["visual_tokens"] += [int(v.shape[0]) for v in out.visual]
        loss = answer_loss(out.logits, out.labels)
        self._val["loss"].append((float(loss), batch["size"]))
        preds, golds = mcq_predictions(out.logits, batch, out.answer_start)
        types = [t for t, o in zip(batch["question_type"], batch["option_ids"]) if o]
        for p, g, t in zip(preds.tolist(), golds.tolist(), types):
            self._val["mcq"].append((p == g, t))
        # chance accuracy of the same questions (1 / its options, averaged): val/mcq_chance[_<type>], the level
        # an untrained model scores and that `lrc ablate`'s plots draw (docs/ablations.md)
        for options, t in ((o, t) for t, o in zip(batch["question_type"], batch["option_ids"]) if o):
            self._val["mcq_chance"].append(1 / len(options))
            self._val[f"mcq_chance_{t}"].append(1 / len(options))
        if self.model.heads is not None:
            self._validate_heads(batch, out)

    def _validate_heads(self, batch: dict[str, Any], out: MLLMOutput) -> None:
        """TPO metrics: task recognition, routing (does the LLM emit the head's begin token where the
        answer has it), and each head's own metrics on its decoded outputs, teacher-forced."""
        heads = self.model.heads
        labels = heads.task_labels(batch.get("task") or ["text"] * batch["size"])
        self._val["task_acc"] += (out.task_logits.argmax(-1).cpu() == labels).float().tolist()
        for task, predictions in out.head_predictions.items():
            inputs = out.head_inputs[task]
            head = heads.heads[task]
            for name, values in head.metrics(head.decode(predictions, inputs), inputs.targets).items():
                self._val[f"{task}/{name}"] += [float(v) for v in values]
        begin_ids = torch.tensor(sorted(heads.task_of_begin), device=out.labels.device)
        for b in range(batch["size"]):
            # the routing token is a label; the logit one position before it must name it
            row = out.labels[b]
            for p in torch.isin(row[1:], begin_ids).nonzero().flatten().tolist():
                task = heads.task_of_begin[int(row[p + 1])]
                self._val[f"{task}/route_acc"].append(float(out.logits[b, p].argmax() == row[p + 1]))

    def reset_validation(self) -> None:
        """Forget the results collected so far (a validation epoch starts with this; so does ``lrc fit``'s
        final validation, so that its metrics never include a validation run during training)."""
        self._val.clear()

    def on_validation_epoch_start(self) -> None:
        self.reset_validation()

    def on_validation_epoch_end(self) -> None:
        self._gather_validation()
        metrics = self.summarise_validation()
        for key, value in metrics.items():
            # every rank holds the whole split's results (gathered above): this sync averages equal values
            self.log(f"val/{key}", value, prog_bar=key in ("mcq_acc", "loss"), sync_dist=True)

    def _gather_validation(self) -> None:
        """Under several ranks each validated its own shard of the split (lrc/parallel/distributed.py
        EvalShardSampler): gather every rank's per-batch and per-sample results, and the samples it
        skipped, so that the metrics (on every rank) cover the whole split, not rank 0's shard."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return
        data = getattr(trainer, "datamodule", None)
        bad_val = list(data.bad["val"].values()) if hasattr(data, "bad") else []
        shards: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(shards, (dict(self._val), self.skipped, bad_val))
        self._val = defaultdict(list)
        pooled: list[Skipped] = []
        for results, skipped, bad in shards:
            for key, values in results.items():
                self._val[key] += values
            self.skipped.update(skipped)
            pooled += bad
        if hasattr(data, "count_bad"):  # data.max_bad_fraction judged on the whole split (every rank alike)
            data.count_bad("val", pooled)

    def summarise_validation(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._val["loss"]:
            total = sum(n for _, n in self._val["loss"])
            out["loss"] = sum(l * n for l, n in self._val["loss"]) / total
        for key, values in self._val.items():
            if key not in ("loss", "mcq", "visual_tokens") and values:
                out[key] = sum(values) / len(values)
        if self._val["mcq"]:
            out["mcq_acc"] = sum(ok for ok, _ in self._val["mcq"]) / len(self._val["mcq"])
            out["mcq_count"] = float(len(self._val["mcq"]))
            by_type: dict[str, list[bool]] = defaultdict(list)
            for ok, t in self._val["mcq"]:
                by_type[t].append(ok)
            for t, oks in sorted(by_type.items()):
                out[f"mcq_acc_{t}"] = sum(oks) / len(oks)
        return out

    def visual_tokens_per_video(self) -> float | None:
        """Mean number of visual tokens the LLM received per validation video (None before validating)."""
        counts = self._val["visual_tokens"]
        return sum(counts) / len(counts) if counts else None

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
        optimizer = self.make_optimizer(groups)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)

        def schedule(step: int) -> float:
            return lr_factor(self.schedule, step, total, warmup, self.min_lr_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_factor(schedule: str, step: int, total: int, warmup: int, min_lr_ratio: float) -> float:
    """The multiplier of every learning rate at optimizer step ``step`` of ``total`` (``optim.schedule``): a linear
    warmup from 0 over the first ``warmup`` steps, then ``cosine`` (half a cosine) or ``linear`` from 1 down to
    ``min_lr_ratio`` at the last step, or ``constant`` 1."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (optim.schedule: cosine, linear or constant)")


__all__ = ["VideoMLLMModule", "COMPONENTS"]
