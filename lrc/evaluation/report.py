"""A benchmark's results as people read them: results.md (the overall figures, then a table per breakdown) and
results.png (per-category accuracy, or grounding recall, as bars). Percentages, as the papers print them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrc.evaluation.benchmark import MCQ, Benchmark
from lrc.evaluation.scoring import IOU_THRESHOLDS


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(bench: Benchmark, label: str, settings: dict[str, Any], summary: dict[str, Any], figure: Path) -> str:
    overall = summary["overall"]
    frames = "the model's own sampler (data.sampler)" if settings["sampler"] == "config" else \
        f"{settings['num_frames']} frames, uniform"
    lines = [f"# {label}", "",
             f"Model `{settings.get('model') or '?'}`, data `{settings['data']}`; {frames}, greedy, at most "
             f"{settings['max_new_tokens']} new tokens" + (f", first {settings['limit']} items by category"
                                                          if settings.get("limit") else "") + ".",
             f"Reference settings: {bench.reference}.", ""]
    if bench.kind == MCQ:
        header = ["items", "accuracy %", *(["mean over " + bench.category + "s %"] if "mean_acc" in overall else []),
                  "unparsed", "errors"]
        row = [str(overall["total"]), _pct(overall["acc"]), *([_pct(overall["mean_acc"])] if "mean_acc" in overall
                                                              else []), str(overall["unparsed"]), str(overall["errors"])]
        lines += _table(header, [row])
        for key, values in summary["breakdown"].items():
            lines += ["", f"## by {key}", ""]
            lines += _table([key, "items", "accuracy %"], [[v or "(none)", str(f["total"]), _pct(f["acc"])]
                                                           for v, f in values.items()])
    else:
        header = ["from", "items", *(f"R1@{m} %" for m in IOU_THRESHOLDS), "mIoU %", "no span"]
        rows = []
        for source in ("text", "head"):
            f = overall.get(source)
            if f:
                missing = f.get("unparsed", f["total"] - f.get("answered", f["total"]))
                rows.append([source, str(f["total"]), *(_pct(f[f"r1@{m}"]) for m in IOU_THRESHOLDS), _pct(f["miou"]),
                             str(missing)])
        lines += _table(header, rows)
        if "head" not in overall:
            lines += ["", "(no temporal head output: scored from the answers' text only)"]
    if overall["errors"]:
        lines += ["", f"{overall['errors']} item(s) could not be asked (their `error` is in results.json); they count "
                      "as wrong."]
    lines += ["", f"![{label}]({figure.name})", ""]
    return "\n".join(lines)


def plot(path: Path, bench: Benchmark, label: str, summary: dict[str, Any]) -> Path:
    """results.png: accuracy per category with the overall as a line (multiple choice), or R1@m and mIoU from the
    text and the head (grounding)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = summary["overall"]
    if bench.kind == MCQ:
        values = summary["breakdown"][bench.category]
        names = list(values)
        accs = [100 * (values[n]["acc"] or 0.0) for n in names]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.6))
        ax.barh(range(len(names)), accs, color="#4C72B0")
        ax.set_yticks(range(len(names)), [f"{n} ({values[n]['total']})" for n in names], fontsize=8)
        ax.invert_yaxis()
        if overall["acc"] is not None:
            ax.axvline(100 * overall["acc"], color="#C44E52", linestyle="--", label=f"overall {_pct(overall['acc'])}%")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy %")
        ax.set_title(f"{label}: accuracy by {bench.category}", fontsize=10)
    else:
        keys = [f"r1@{m}" for m in IOU_THRESHOLDS] + ["miou"]
        sources = [s for s in ("text", "head") if s in overall]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.8 / len(sources)
        for k, source in enumerate(sources):
            ax.bar([i + k * width for i in range(len(keys))], [100 * (overall[source][key] or 0.0) for key in keys],
                   width, label=source)
        ax.set_xticks([i + width * (len(sources) - 1) / 2 for i in range(len(keys))],
                      ["R1@0.3", "R1@0.5", "R1@0.7", "mIoU"])
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.legend(fontsize=8)
        ax.set_title(f"{label}: temporal grounding", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
