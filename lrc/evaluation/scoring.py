"""Scoring: one answer against its item, then a benchmark's predictions into its overall and per-category figures.

Multiple choice: an answer is right when the option it picks (lrc/evaluation/answers.py) is the item's. The
accuracy counts every item: an answer that names no option (``unparsed``) and an item whose video could not be
read (``errors``) are wrong, and both are counted in the results. Benchmarks whose headline is the mean over
their categories (MVBench, MLVU's M-Avg) get ``mean_acc`` beside ``acc``.

Grounding: the IoU of the answer's span with the right one; R1@m is the fraction of items whose first span has
IoU >= m (m = 0.3, 0.5, 0.7), mIoU the mean IoU; an answer without a span has IoU 0. Scored twice when the model
has a temporal head: from the text (``text``) and from the head's best span (``head``).

Figures are fractions in [0, 1] (results.md shows percentages, as the papers do).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from lrc.evaluation.answers import choice, span
from lrc.evaluation.benchmark import MCQ, Benchmark
from lrc.evaluation.items import Item

IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of two ``(start, end)`` segments (0 when either is empty or they do not overlap)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def score_mcq(item: Item, text: str) -> dict[str, Any]:
    picked, how = choice(text, item.options)
    return {"choice": picked, "how": how, "correct": picked is not None and picked == item.answer}


def score_grounding(item: Item, text: str, head_spans: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
    """The text's first span and the head's best span (``head_spans`` best first), each with its IoU."""
    assert item.span is not None
    found = span(text)
    out: dict[str, Any] = {"text_span": None if found is None else [round(v, 3) for v in found],
                           "text_iou": round(iou(found, item.span), 4) if found is not None else 0.0}
    if head_spans:
        best = [float(v) for v in head_spans[0][:2]]
        out.update(head_span=[round(v, 3) for v in best], head_iou=round(iou(best, item.span), 4))
    return out


def _accuracy(lines: list[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(bool(line.get("correct")) for line in lines)
    return {"acc": round(correct / len(lines), 4) if lines else None, "correct": correct, "total": len(lines)}


def _grounding(lines: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ious = [float(line.get(f"{key}_iou") or 0.0) for line in lines]
    n = len(ious)
    out: dict[str, Any] = {f"r1@{m}": round(sum(v >= m for v in ious) / n, 4) if n else None for m in IOU_THRESHOLDS}
    out.update(miou=round(sum(ious) / n, 4) if n else None, total=n)
    return out


def summarize(bench: Benchmark, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"overall": {...}, "breakdown": {category name: {value: {...}}, group: {...}}}`` of a benchmark's
    predictions (one line per item, lrc/evaluation/runner.py)."""
    errors = sum("error" in line for line in lines)
    keys = [bench.category, *bench.groups]

    def value(line: dict[str, Any], key: str) -> str:
        return str(line.get("category", "")) if key == bench.category else str((line.get("groups") or {}).get(key, ""))

    def by(key: str, figure: Any) -> dict[str, Any]:
        values = sorted({value(line, key) for line in lines}, key=_natural)
        return {v: figure([line for line in lines if value(line, key) == v]) for v in values}

    if bench.kind == MCQ:
        overall = _accuracy(lines)
        overall["unparsed"] = sum(line.get("how") == "unparsed" and "error" not in line for line in lines)
        breakdown = {key: by(key, _accuracy) for key in keys}
        if bench.mean_over_categories:
            accs = [v["acc"] for v in breakdown[bench.category].values() if v["acc"] is not None]
            overall["mean_acc"] = round(sum(accs) / len(accs), 4) if accs else None
    else:
        overall = {"text": _grounding(lines, "text")}
        overall["text"]["unparsed"] = sum(line.get("text_span") is None and "error" not in line for line in lines)
        with_head = sum(line.get("head_span") is not None for line in lines)
        if with_head:
            overall["head"] = _grounding(lines, "head")
            overall["head"]["answered"] = with_head
        breakdown = {key: by(key, lambda group: _grounding(group, "text")) for key in keys}
    overall["errors"] = errors
    return {"overall": overall, "breakdown": breakdown}


def flat_metrics(label: str, bench: Benchmark, summary: dict[str, Any]) -> dict[str, float]:
    """``eval/<label>/...`` figures for metrics.json (what ``lrc ablate`` tables read): the headline, then each
    category's accuracy (MCQ) or R1 / mIoU (grounding, ``text`` and ``head``)."""
    out: dict[str, float] = {}
    overall = summary["overall"]
    prefix = f"eval/{label}"
    if bench.kind == MCQ:
        for key in ("acc", "mean_acc", "unparsed", "errors"):
            if overall.get(key) is not None:
                out[f"{prefix}/{key}"] = float(overall[key])
        for v, figures in summary["breakdown"][bench.category].items():
            if figures["acc"] is not None:
                out[f"{prefix}/{bench.category}/{slug(v)}"] = float(figures["acc"])
        return out
    for source in ("text", "head"):
        for key, v in overall.get(source, {}).items():
            if v is not None:
                out[f"{prefix}/{key}" if source == "text" else f"{prefix}/head/{key}"] = float(v)
    out[f"{prefix}/errors"] = float(overall["errors"])
    return out


def slug(value: str) -> str:
    """A category as a metric key: ``Film & Television`` -> ``film_television``."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "none"


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]
