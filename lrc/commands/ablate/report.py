"""The report of an ablation: results.csv, results.md (main metrics as mean ± std over seeds, cost,
failures) and plots/*.png, from one :class:`CellResult` per cell and seed (docs/ablations.md).

Also the texts the runner prints while cells run: a cell's varied values (:func:`describe`) and
durations (:func:`duration`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lrc.commands.ablate.plan import Cell, Plan

# results.csv columns read from each cell's metrics.json, by the key the fit wrote (lrc/train/run.py _cost_metrics)
COST_COLUMNS = {"train_time_s": "train/time_s", "peak_rss_mib": "sys/peak_rss_mib",
                "peak_cuda_mib": "sys/peak_cuda_mib", "visual_tokens_per_video": "model/visual_tokens_per_video"}


@dataclass
class CellResult:
    """What one cell (one seed) came to, as its folder records it: the row of results.csv."""

    cell: Cell
    status: str  # done | failed | invalid | interrupted | not run | incomplete (its metrics.json went missing)
    seed: int | None = None
    exit_code: int | None = None
    error: str = ""
    wall_s: float | None = None  # summed over the attempts
    peak_rss_mib: float | None = None  # the OS's figure for the cell's process (os.wait4), max over attempts
    metrics: dict[str, Any] = field(default_factory=dict)


def describe(varied: dict[str, Any], seed: int | None = None) -> str:
    """A cell's varied values as the progress lines show them: ``compressor.name=tome seed=1``."""
    text = " ".join(f"{k}={_text(v)}" for k, v in varied.items())
    return text + (f" seed={seed}" if seed is not None else "")


def duration(seconds: float) -> str:
    """Seconds as a person reads them: ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def main_metrics(plan: Plan, results: list[CellResult]) -> list[str]:
    if plan.metrics:
        return plan.metrics
    # a chance level is a reference, not a result: it is drawn with its metric and kept in results.csv
    found = {k for r in results for k, v in r.metrics.items()
             if k.startswith("val/") and isinstance(v, (int, float)) and "_chance" not in k}
    return sorted(found, key=lambda k: (k != "val/mcq_acc", k))


def write_results(plan: Plan, results: list[CellResult], out: Path, wall_s: float) -> list[tuple[str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "results.md"
    cost_keys = set(COST_COLUMNS.values())
    metric_keys = sorted({k for r in results for k in r.metrics if k not in cost_keys})
    header = ["cell", *plan.axes, "seed", "status", "exit_code", "wall_time_s", *COST_COLUMNS, *metric_keys, "error"]
    with open(csv_path.with_suffix(".csv.tmp"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in results:
            cost = {col: r.metrics.get(key, "") for col, key in COST_COLUMNS.items()}
            if cost["peak_rss_mib"] == "" and r.peak_rss_mib is not None:  # a failed cell: the OS's figure
                cost["peak_rss_mib"] = r.peak_rss_mib
            writer.writerow([r.cell.slug, *(_text(r.cell.varied[a]) for a in plan.axes),
                             "" if r.seed is None else r.seed, r.status, "" if r.exit_code is None else r.exit_code,
                             "" if r.wall_s is None else r.wall_s, *cost.values(),
                             *(r.metrics.get(k, "") for k in metric_keys), r.error])
    os.replace(csv_path.with_suffix(".csv.tmp"), csv_path)
    md_path.write_text(_markdown_header(plan, results, wall_s) + table_markdown(plan, results) + "\n")
    plots = plot_results(plan, results, out / "plots")
    return [("table", md_path), ("csv", csv_path)] + [("plot", p) for p in plots]


def _markdown_header(plan: Plan, results: list[CellResult], wall_s: float) -> str:
    import torch

    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU only"
    bases = sorted({_relative(r.cell.base) for r in results})
    done = sum(r.status == "done" for r in results)
    lines = [f"# Ablation `{plan.name}`", ""]
    if plan.description:
        lines += [plan.description.strip(), ""]
    lines += [f"- ablation file: `{_relative(plan.source)}`; base config: {', '.join(f'`{b}`' for b in bases)}",
              f"- command line: `{shlex.join(plan.command_line)}`" if plan.command_line else "- command line: (none)",
              f"- {len(results)} runs ({len(plan.seeds or [None])} seed(s) per cell), {done} finished; this "
              f"invocation took {duration(wall_s)}",
              f"- {datetime.now().isoformat(timespec='minutes')}; machine: {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}, {device}",
              "- metrics are on the validation split; `± std` over seeds where there are several; peak RSS is the "
              "fit process's (docs/ablations.md)", "", ""]
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _groups(axes: list[str], results: list[CellResult]) -> dict[tuple, list[CellResult]]:
    """Results by their values of `axes` (the seeds of one cell together), in plan order."""
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        groups.setdefault(tuple(_text(r.cell.varied[a]) for a in axes), []).append(r)
    return groups


def _series_axes(plan: Plan, results: list[CellResult]) -> list[str]:
    """The varied axes after the first that tell the plots' series apart: an axis whose value follows
    from the x value (a cell's `base` next to its `label`) would only split one bar per x into two."""
    x_axis, others = plan.axes[0], plan.axes[1:]
    return [a for a in others
            if any(len({_text(r.cell.varied[a]) for r in results if _text(r.cell.varied[x_axis]) == x}) > 1
                   for x in {_text(r.cell.varied[x_axis]) for r in results})]


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table_markdown(plan: Plan, results: list[CellResult]) -> str:
    metrics = main_metrics(plan, results)
    has_cuda = any("sys/peak_cuda_mib" in r.metrics for r in results)
    columns = [*plan.axes, *metrics, "train s", "peak RSS MiB", *(["peak CUDA MiB"] if has_cuda else []),
               "visual tokens / video", "status"]
    rows = []
    for values, group in _groups(plan.axes, results).items():
        done = [r for r in group if r.status == "done"]

        def cell(key: str, fmt: str, how: str = "mean") -> str:
            found = [float(r.metrics[key]) for r in done if isinstance(r.metrics.get(key), (int, float))]
            if not found:
                return "—"
            if how == "max":
                return format(max(found), fmt)
            mean, std = _stats(found)
            text = format(mean, fmt) + (f" ± {format(std, fmt)}" if len(group) > 1 else "")
            return text + (f" ({len(found)}/{len(group)})" if len(found) < len(group) else "")

        peak = cell("sys/peak_rss_mib", ".0f", "max")
        if peak == "—":  # no finished seed: what the OS measured for the failed process
            peaks = [r.peak_rss_mib for r in group if r.peak_rss_mib is not None]
            peak = f"{max(peaks):.0f}" if peaks else "—"
        failed = [r for r in group if r.status != "done"]
        status = "ok" if not failed else "; ".join(
            f"{r.status}" + (f" (exit {r.exit_code})" if r.exit_code not in (None, 0) else "") +
            (f": {_short(r.error)}" if r.error else "") for r in failed[:2])
        rows.append([*values, *(cell(m, ".3f") for m in metrics), cell("train/time_s", ".0f"), peak,
                     *([cell("sys/peak_cuda_mib", ".0f", "max")] if has_cuda else []),
                     cell("model/visual_tokens_per_video", ".0f"), status])
    numeric = {i for i in range(len(plan.axes), len(columns) - 1)}
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(columns))) + " |"]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _why_no_value(group: list[CellResult]) -> str:
    """What a plot says where a cell has no value for a metric: it failed, or it finished without that
    metric (a TPO head's metric in a cell without the head)."""
    return "failed" if any(r.status != "done" for r in group) else "no such metric"


def chance_key(metric: str) -> str | None:
    """The metrics.json key of ``metric``'s chance level, for an accuracy: ``val/mcq_acc`` -> ``val/mcq_chance``,
    ``val/mcq_acc_colour`` -> ``val/mcq_chance_colour`` (the fit writes them: 1 / the options of each question,
    averaged). None for a metric that is not an ``_acc``."""
    head, sep, last = metric.rpartition("/")
    if not re.search(r"(^|_)acc(_|$)", last):
        return None
    return head + sep + re.sub(r"(^|_)acc(_|$)", r"\1chance\2", last, count=1)


def _chance(results: list[CellResult], metric: str) -> float | None:
    """The chance level of ``metric`` over the finished cells that report one (their mean; they agree on one
    corpus), else None."""
    key = chance_key(metric)
    found = [float(r.metrics[key]) for r in results
             if r.status == "done" and key and isinstance(r.metrics.get(key), (int, float))]
    return sum(found) / len(found) if found else None


def per_type_families(metrics: list[str]) -> dict[str, list[str]]:
    """Per-question-type metrics, by family: ``{"val/mcq_acc": ["val/mcq_acc_colour", "val/mcq_acc_shape", ...]}``
    for the ``<accuracy>_<type>`` keys of ``metrics`` (two or more of one family); drawn as one grouped panel."""
    families: dict[str, list[str]] = {}
    for m in metrics:
        match = re.fullmatch(r"(.+_acc)_(\w+)", m)
        if match:
            families.setdefault(match.group(1), []).append(m)
    return {f: ms for f, ms in families.items() if len(ms) > 1}


def _value_label(ax: Any, x: float, mean: float, std: float) -> None:
    """The value above its bar or point (above its error bar)."""
    if not math.isnan(mean):
        ax.annotate(f"{mean:.3f}" if abs(mean) < 100 else f"{mean:.0f}", (x, mean + std), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize="x-small")


def _mark_missing(ax: Any, x: float, group: list[CellResult]) -> None:
    """A cell without a value: say why, where its bar or point would be."""
    why = _why_no_value(group)
    ax.annotate(why, (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                ha="center", rotation=90, fontsize="small", color="red" if why == "failed" else "grey")


def _chance_line(ax: Any, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="black", linewidth=1, alpha=0.6, label=f"chance ({chance:.3f})")


def plot_results(plan: Plan, results: list[CellResult], folder: Path) -> list[Path]:
    """The plots of a study, one PNG each: every main metric against the first varied axis, one series per
    combination of the other axes (bars for categorical values, lines for numbers), the value of each bar or
    point, error bars (std over seeds) when a cell has several seeds, and a dashed chance line where the metric
    has a chance level (MCQ accuracy); per-question-type metrics together in one grouped panel."""
    if not plan.axes or not any(r.status == "done" for r in results):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    metrics = main_metrics(plan, results)
    families = per_type_families(metrics)
    in_family = {m for ms in families.values() for m in ms}
    paths = [_plot_metric(plt, plan, results, folder, m) for m in metrics if m not in in_family]
    paths += [_plot_family(plt, plan, results, folder, family, ms) for family, ms in families.items()]
    return paths


def _save(plt: Any, fig: Any, folder: Path, name: str) -> Path:
    fig.tight_layout()
    path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mean_std(group: list[CellResult], metric: str) -> tuple[float, float]:
    found = [float(r.metrics[metric]) for r in group
             if r.status == "done" and isinstance(r.metrics.get(metric), (int, float))]
    return _stats(found) if found else (math.nan, 0.0)


def _plot_metric(plt: Any, plan: Plan, results: list[CellResult], folder: Path, metric: str) -> Path:
    series_axes = _series_axes(plan, results)
    groups = _groups([plan.axes[0], *series_axes], results)
    xs = list(dict.fromkeys(values[0] for values in groups))
    series = list(dict.fromkeys(values[1:] for values in groups))
    raw_x = {_text(r.cell.varied[plan.axes[0]]): r.cell.varied[plan.axes[0]] for r in results}
    numeric = all(isinstance(raw_x[x], (int, float)) and not isinstance(raw_x[x], bool) for x in xs)
    seeded = any(len(g) > 1 for g in groups.values())
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(series)
    for i, rest in enumerate(series):
        stats = [_mean_std(groups.get((x, *rest), []), metric) for x in xs]
        means, stds = [m for m, _ in stats], [s for _, s in stats]
        label = ", ".join(f"{a}={v}" for a, v in zip(series_axes, rest)) or None
        yerr = stds if seeded else None
        if numeric:
            positions = [raw_x[x] for x in xs]
            ax.errorbar(positions, means, yerr=yerr, marker="o", capsize=3, label=label)
        else:
            positions = [j + (i - (len(series) - 1) / 2) * width for j in range(len(xs))]
            ax.bar(positions, means, width, yerr=yerr, capsize=3, label=label)
        for pos, mean, std, x in zip(positions, means, stds, xs):
            _value_label(ax, pos, mean, std if seeded else 0.0)
            if math.isnan(mean) and (x, *rest) in groups:
                _mark_missing(ax, pos, groups[(x, *rest)])
    chance = _chance(results, metric)
    _chance_line(ax, chance)
    if numeric:
        values = [raw_x[x] for x in xs]
        if min(values) > 0 and max(values) / min(values) >= 8:  # 4, 16, 64 tokens per frame: even steps
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
    else:
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlim(-0.5, len(xs) - 0.5)  # a category without a bar keeps its place
    ax.set_xlabel(plan.axes[0])
    ax.set_ylabel(metric)
    ax.set_title(f"{plan.name}: {metric}")
    ax.margins(y=0.12)  # room for the value labels
    if len(series) > 1 or chance is not None:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, folder, metric)


def _plot_family(plt: Any, plan: Plan, results: list[CellResult], folder: Path, family: str,
                 metrics: list[str]) -> Path:
    """One grouped panel: a group of bars per question type (``val/mcq_acc_colour`` ...), a bar per cell (mean ±
    std over its seeds), each type's chance level as a dashed mark across its group."""
    groups = _groups(plan.axes, results)
    types = [m[len(family) + 1:] for m in metrics]
    seeded = any(len(g) > 1 for g in groups.values())
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(types) * len(groups) + 2.5), 4.2))
    width = 0.8 / len(groups)
    labelled = len(types) * len(groups) <= 32  # value labels while they fit side by side
    for i, (values, group) in enumerate(groups.items()):
        stats = [_mean_std(group, m) for m in metrics]
        means, stds = [m for m, _ in stats], [s for _, s in stats]
        positions = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(types))]
        label = ", ".join(str(v) for v in values) if len(plan.axes) > 1 else str(values[0])
        ax.bar(positions, means, width, yerr=stds if seeded else None, capsize=2, label=label)
        for pos, mean, std in zip(positions, means, stds):
            if labelled:
                _value_label(ax, pos, mean, std if seeded else 0.0)
            if math.isnan(mean):
                _mark_missing(ax, pos, group)
    drawn = False
    for j, m in enumerate(metrics):
        chance = _chance(results, m)
        if chance is not None:
            ax.hlines(chance, j - 0.45, j + 0.45, linestyles="--", colors="black", linewidth=1, alpha=0.6,
                      label=None if drawn else "chance", gid="chance")
            drawn = True
    ax.set_xticks(range(len(types)), types)
    ax.set_xlim(-0.5, len(types) - 0.5)
    ax.set_xlabel("question type")
    ax.set_ylabel(family)
    ax.set_title(f"{plan.name}: {family} per question type")
    ax.margins(y=0.12)
    ax.legend(fontsize="small", title=", ".join(plan.axes), title_fontsize="small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))  # beside the panel: the bars fill it
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, folder, f"{family}_by_type")
