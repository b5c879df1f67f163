"""``lrc niah``: needle-in-a-haystack evaluation (paper Fig. 3, after VideoChat-Flash).

    lrc niah CONFIG --ckpt PATH [--out DIR] [key=value ...]

For each frame count ``N`` (increasing) × needle depth × hop count, ``niah.questions_per_cell`` haystack
videos (lrc/data/synth/needle.py: ``N`` frames at 1 fps, a needle clip at the depth) go through the normal
data path (decord decode of the MP4, a sampler that takes every frame, the prompt builder, collate) and
one forward each. A question is right when, teacher-forced, the argmax of the logits at every answer
position equals the answer token there (exact match, as the paper scores NIAH); the option-restricted
first-token accuracy that ``lrc fit`` reports as ``val/mcq_acc`` (lrc.model.mllm.mcq_predictions) is kept
beside it as ``option_acc``.

Memory. Every forward's peak is measured (CPU: the process's peak resident set size during the forward,
kernel VmHWM reset just before it, lrc/memory.py; CUDA: torch's peak allocation, with the process
limited to ``niah.memory_cap_gib`` by ``torch.cuda.set_per_process_memory_fraction``). A frame count
whose forward exceeds the cap, or raises a real out-of-memory error, is out of memory: larger counts are
not tried, and ``niah/max_frames_without_oom`` is the largest count that ran (0 when none did).

Outputs in DIR: ``niah.json`` (every cell: accuracy, counts, peak memory, seconds), ``metrics.json``
(``niah/acc_mean``, ``niah/acc_single``, ``niah/acc_multi``, ``niah/max_frames_without_oom`` ...), and one
heatmap per hop type, ``niah_single.png`` / ``niah_multi.png`` (frame count × depth). With
``niah.after_fit: true``, ``lrc fit`` runs this after training into RUN_DIR/niah and adds the niah/*
metrics to the run's metrics.json, so NIAH can be a column of an ``lrc ablate`` grid.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from lrc.config import check_niah  # the grid's checks, with the rest of the config's (lrc/config/validation.py)

log = logging.getLogger("lrc")

GiB = 2**30
HOP_NAMES = {1: "single", 2: "multi"}


# ---------------------------------------------------------------------------------------------
# Scoring and memory
# ---------------------------------------------------------------------------------------------
def answer_exact_match(logits: Any, labels: Any, skip_ids: tuple[int, ...] = ()) -> list[bool]:
    """Per row: does the argmax of the logits predicting each answer token equal that token, at every
    answer position (labels != -100, minus ``skip_ids`` such as the end-of-turn token)? Teacher-forced:
    position ``p``'s token is predicted by the logits at ``p - 1``."""
    from lrc.data.prompt import IGNORE_INDEX

    target = labels[:, 1:]
    scored = target != IGNORE_INDEX
    for t in skip_ids:
        scored &= target != t
    hit = (logits[:, :-1].argmax(-1) == target) | ~scored
    return [bool(row.all()) and bool(s.any()) for row, s in zip(hit, scored)]


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class MemoryProbe:
    """The peak memory of one forward, in GiB, and whether it stayed under the cap.

    CPU: the process's peak RSS (VmHWM, reset before the forward), what an out-of-memory killer sees,
    weights included. CUDA: torch's peak allocation on the device (weights included); the process is
    also limited to the cap so that a forward that would pass it fails with a real OOM error."""

    def __init__(self, device: Any, cap_gib: float | None):
        import torch

        self.device, self.cap = device, cap_gib
        self.cuda = device.type == "cuda"
        if self.cuda and cap_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GiB / total), device)
        self.how = ("torch.cuda.max_memory_allocated" if self.cuda
                    else "peak resident set size of the process during the forward (VmHWM)")

    def close(self) -> None:
        import torch

        if self.cuda and self.cap:
            torch.cuda.set_per_process_memory_fraction(1.0, self.device)

    def start(self) -> None:
        import torch

        from lrc.memory import reset_peak

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reset = reset_peak()

    def peak_gib(self) -> float:
        import torch

        from lrc.memory import peak_kib

        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / GiB
        return peak_kib(self._reset) * 1024 / GiB

    def over(self, peak: float) -> bool:
        return self.cap is not None and peak > self.cap


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------
def _check_vocabulary(cfg: dict[str, Any], tokenizer: Any) -> None:
    """The questions' words must be in the model's vocabulary: checked on the first cell's questions,
    built without writing a video (lrc.data.synth.needle.grid_questions), before any haystack is written."""
    from lrc.config import ConfigError
    from lrc.data.synth.needle import grid_questions

    n = cfg["niah"]
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    questions = grid_questions(min(n["frame_counts"]), float(min(n["depths"])), n["hops"][0],
                               n["questions_per_cell"], n["needle_frames"], n["seed"], n["size"],
                               cfg["data"]["synth_answer_style"])
    for name, question in questions:
        for turn in question["conversations"]:
            text = turn["value"].replace("<video>", " ")
            if unk in tokenizer(text, add_special_tokens=False).input_ids:
                raise ConfigError([f"{n['root']}: sample {name}: the tokenizer (data.tokenizer, else "
                                   f"data.root/tokenizer) has no token for some words of the NIAH question {text!r}. "
                                   "Train and evaluate with a corpus that has the needle task (data.synth_tasks: "
                                   "[needle], experiments/niah/train.yaml), whose tokenizer covers them"])


def _autocast(cfg: dict[str, Any], device: Any) -> Any:
    import torch

    from lrc.parallel.distributed import resolve_precision

    precision = resolve_precision(cfg["distributed"]["precision"], device.type)
    if device.type == "cuda" and precision.startswith("bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision.startswith("16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def evaluate(cfg: dict[str, Any], module: Any, out_dir: Path) -> dict[str, float]:
    """Run the NIAH grid with ``module``'s model; write niah.json and the heatmaps into ``out_dir``, print
    the tables; return the ``niah/*`` metrics (``run`` writes them to metrics.json, ``after_fit`` adds
    them to the run's)."""
    import torch

    from lrc.train.build import build_prompt, build_tokenizer, task_token_map
    from lrc.parallel.distributed import resolve_accelerator
    from lrc.data.prompt import IM_END, PromptBuilder
    from lrc.files import write_json

    n = cfg["niah"]
    tokenizer = build_tokenizer(cfg)
    _check_vocabulary(cfg, tokenizer)  # before any forward, folder or haystack
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = module.model
    prompts = PromptBuilder(tokenizer, model.tokens_per_frame, task_tokens=task_token_map(cfg), prompt=build_prompt(cfg))
    skip = (tokenizer.convert_tokens_to_ids(IM_END),)  # the end-of-turn token is not part of the answer
    device = torch.device(resolve_accelerator(cfg["distributed"]["accelerator"]))
    model.to(device).eval()
    probe = MemoryProbe(device, n["memory_cap_gib"])
    style = cfg["data"]["synth_answer_style"]
    cells: list[dict[str, Any]] = []
    oom_at = None
    try:
        for frames in sorted(n["frame_counts"]):
            found, oom_at = _frame_count(frames, n, cfg, model, prompts, probe, device, skip, style)
            cells += found
            if oom_at is not None:
                break
    finally:
        probe.close()
    ran = [c for c in cells if not c["oom"]]
    metrics: dict[str, float] = {
        "niah/max_frames_without_oom": float(max((c["frames"] for c in ran), default=0)),
        "niah/peak_gib": round(max((c["peak_gib"] for c in cells), default=0.0), 4),
    }
    # means over the cells that ran (every cell holds questions_per_cell questions); absent when none ran
    means = {"acc_mean": [c["acc"] for c in ran], "option_acc_mean": [c["option_acc"] for c in ran]}
    for hops in n["hops"]:
        means[f"acc_{HOP_NAMES[hops]}"] = [c["acc"] for c in ran if c["hops"] == hops]
    for frames in sorted({c["frames"] for c in ran}):
        means[f"acc_n{frames}"] = [c["acc"] for c in ran if c["frames"] == frames]
    metrics.update({f"niah/{k}": round(sum(v) / len(v), 4) for k, v in means.items() if v})
    write_json(out_dir / "niah.json", {
        "settings": n, "answer_style": style, "device": str(device), "memory": probe.how,
        "frame_counts": sorted(n["frame_counts"]), "oom_at_frames": oom_at, "cells": cells, "metrics": metrics})
    plots = [heatmap(cells, hops, sorted(n["frame_counts"]), sorted(n["depths"]), oom_at, out_dir)
             for hops in n["hops"]]
    print(text_table(cells, n, oom_at, metrics, plots))
    return metrics


def _frame_count(frames: int, n: dict[str, Any], cfg: dict[str, Any], model: Any, prompts: Any, probe: MemoryProbe,
                 device: Any, skip: tuple[int, ...], style: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every cell of one frame count; ``(cells, frames)`` when it ran out of memory, else ``(cells, None)``."""
    import torch
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from lrc.data.annotations import load_annotations
    from lrc.data.collate import collate
    from lrc.data.dataset import VideoConversationDataset
    from lrc.data.synth.needle import grid_cell
    from lrc.model.mllm import mcq_predictions
    from lrc.registry import SAMPLERS

    encoder = model.encoder
    sampler = SAMPLERS.get("uniform")(num_frames=frames)  # a 1 fps haystack of `frames` frames: every frame, once
    autocast = _autocast(cfg, device)
    cells = []
    for hops in n["hops"]:
        for depth in sorted(n["depths"]):
            t0 = time.perf_counter()
            path = grid_cell(Path(n["root"]), frames, float(depth), hops, n["questions_per_cell"], n["needle_frames"],
                             n["seed"], n["size"], style)
            records = load_annotations(path)
            data = VideoConversationDataset(records, sampler, prompts, encoder.image_size, encoder.mean, encoder.std,
                                            max_length=10**9, read_timeout_s=cfg["data"]["read_timeout_s"])
            cell: dict[str, Any] = {"frames": frames, "depth": float(depth), "hops": hops, "questions": 0,
                                    "correct": 0, "option_correct": 0, "peak_gib": 0.0, "oom": False}
            forward_s = 0.0
            for i in range(len(data)):
                item = data[i]
                if "skipped" in item:
                    raise RuntimeError(f"NIAH haystack {records[i].video} (sample {records[i].id}) could not be used: "
                                       f"{item['skipped'].reason}. Delete {path.parent.parent} to write it again.")
                batch = move_data_to_device(collate([item], prompts.tok.pad_token_id), device)
                t1 = time.perf_counter()
                probe.start()
                try:
                    with torch.inference_mode(), autocast:
                        out = model(batch)
                    peak = probe.peak_gib()
                except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is handled here
                    if not _is_oom(exc):
                        raise
                    log.warning("niah: %d frames ran out of memory (%s)", frames, type(exc).__name__)
                    cell.update(oom=True, oom_error=f"{type(exc).__name__}: {str(exc)[:200]}")
                    break
                finally:
                    forward_s += time.perf_counter() - t1
                cell["peak_gib"] = max(cell["peak_gib"], round(peak, 4))
                if probe.over(peak):
                    cell["oom"] = True
                    break
                cell["questions"] += 1
                cell["correct"] += int(answer_exact_match(out.logits, out.labels, skip)[0])
                preds, golds = mcq_predictions(out.logits, batch, out.answer_start)
                cell["option_correct"] += int((preds == golds).sum())
                del out
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            q = max(cell["questions"], 1)
            cell.update(acc=round(cell["correct"] / q, 4), option_acc=round(cell["option_correct"] / q, 4),
                        forward_s=round(forward_s, 3), seconds=round(time.perf_counter() - t0, 3))
            cells.append(cell)
            log.info("niah: %d frames, depth %g, %s-hop: acc %.3f (%d/%d), peak %.2f GiB, %.1f s", frames, depth,
                     HOP_NAMES[hops], cell["acc"], cell["correct"], cell["questions"], cell["peak_gib"],
                     cell["seconds"])
            if cell["oom"]:
                # the whole frame count is out of memory: no partial column in the results
                for c in cells:
                    c.update(oom=True, acc=None, option_acc=None)
                return cells, frames
    return cells, None


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
def heatmap(cells: list[dict[str, Any]], hops: int, frame_counts: list[int], depths: list[float], oom_at: int | None,
            out_dir: Path) -> Path:
    """DIR/niah_{single,multi}.png: x = frame count, y = depth, colour = accuracy, values written in the
    cells; the frame count that ran out of memory (and the larger ones, not tried) are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.full((len(depths), len(frame_counts)), np.nan)
    for c in cells:
        if c["hops"] == hops and not c["oom"]:
            grid[depths.index(c["depth"]), frame_counts.index(c["frames"])] = c["acc"]
    fig, ax = plt.subplots(figsize=(1.1 * len(frame_counts) + 2.2, 0.55 * len(depths) + 1.8))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="upper")
    for x, frames in enumerate(frame_counts):
        if oom_at is not None and frames >= oom_at:
            ax.add_patch(plt.Rectangle((x - 0.5, -0.5), 1, len(depths), facecolor="0.85", hatch="//",
                                       edgecolor="0.5"))
            ax.text(x, (len(depths) - 1) / 2, "OOM" if frames == oom_at else "not run", ha="center",
                    va="center", rotation=90, fontsize=9)
            continue
        for y in range(len(depths)):
            if not np.isnan(grid[y, x]):
                ax.text(x, y, f"{grid[y, x]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(frame_counts)), [str(f) for f in frame_counts])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("haystack frames (1 fps)")
    ax.set_ylabel("needle depth" if hops == 1 else "depth of the first-drawn needle")
    values = grid[~np.isnan(grid)]
    mean = f"{values.mean():.3f}" if values.size else "n/a"
    ax.set_title(f"NIAH {HOP_NAMES[hops]}-hop: exact-match accuracy (mean {mean})", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = out_dir / f"niah_{HOP_NAMES[hops]}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def text_table(cells: list[dict[str, Any]], n: dict[str, Any], oom_at: int | None, metrics: dict[str, float],
               plots: list[Path]) -> str:
    frame_counts, depths = sorted(n["frame_counts"]), sorted(n["depths"])
    lines = []
    for hops in n["hops"]:
        lines.append(f"\nNIAH {HOP_NAMES[hops]}-hop, exact-match accuracy ({n['questions_per_cell']} questions per cell)")
        lines.append("depth \\ frames " + "".join(f"{f:>9d}" for f in frame_counts))
        for depth in depths:
            row = []
            for f in frame_counts:
                cell = next((c for c in cells if c["hops"] == hops and c["frames"] == f and c["depth"] == depth), None)
                if oom_at is not None and f >= oom_at:
                    row.append("OOM" if f == oom_at else "-")
                else:
                    row.append(f"{cell['acc']:.2f}" if cell and cell["acc"] is not None else "-")
            lines.append(f"{depth:<15g}" + "".join(f"{v:>9s}" for v in row))
    peaks = {f: max(c["peak_gib"] for c in cells if c["frames"] == f) for f in {c["frames"] for c in cells}}
    lines.append("peak GiB       " + "".join(f"{peaks[f]:>9.2f}" if f in peaks else f"{'-':>9s}" for f in frame_counts))
    lines.append("")
    for key in sorted(metrics):
        if not key.startswith("niah/acc_n"):
            lines.append(f"  {key:30s} {metrics[key]:.4f}")
    lines.append("heatmaps: " + ", ".join(str(p) for p in plots))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry point: `lrc niah` (also what `lrc fit` runs with niah.after_fit, lrc/train/run.py)
# ---------------------------------------------------------------------------------------------
def run(loaded: Any, ckpt: str, out: str | None = None) -> tuple[Path, dict[str, Any]]:
    """``lrc niah CONFIG --ckpt PATH``: build the model from CONFIG, load the checkpoint as ``lrc test``
    does, run the grid into ``out`` (default: a fresh run dir).

    Everything that can be wrong is checked before any work is written: the config and its grid, the
    ``--out`` folder, the checkpoint file, then (the tokenizer being the training corpus's, a corpus
    still to be synthesised comes first) the checkpoint against the config's model and the questions'
    words against its vocabulary; only then the run dir and the haystack videos."""
    from lrc.weights.checkpoints import load_state_dict_file
    from lrc.config import ConfigError, validate
    from lrc.files import write_json
    from lrc.train.build import build_tokenizer
    from lrc.train.run import check_out_free, ensure_corpus, make_run_dir, write_resolved_config

    cfg = validate(loaded)
    problems = check_niah(cfg, running=True)
    if problems:
        raise ConfigError([f"{loaded.source(key)}: {key}: {what}" for key, what in problems])
    check_out_free(out)
    state = load_state_dict_file(ckpt)
    ensure_corpus(cfg)  # the tokenizer is the training corpus's
    module = _module_with(cfg, state, ckpt)  # a checkpoint of another model is refused here
    _check_vocabulary(cfg, build_tokenizer(cfg))
    run_dir = make_run_dir(cfg, out)
    write_resolved_config(run_dir, cfg, loaded)
    metrics: dict[str, Any] = dict(evaluate(cfg, module, run_dir))
    metrics["checkpoint"] = str(ckpt)
    write_json(run_dir / "metrics.json", metrics)
    return run_dir, metrics


def _module_with(cfg: dict[str, Any], state: dict[str, Any], source: str | Path) -> Any:
    """The module built from the config (seeded as ``lrc fit`` seeds it) with the weights of ``source``."""
    import lightning as L

    from lrc.train.build import build_model, build_module, build_tokenizer
    from lrc.train.run import load_weights

    L.seed_everything(cfg["run"]["seed"], workers=True, verbose=False)
    module = build_module(cfg, build_model(cfg, build_tokenizer(cfg)))
    load_weights(module, state, source)
    return module
