"""Mixtures: a split made of several annotation files, each sampled and repeated (``data.train`` as a list).

    data:
      root: data/mix
      train:
        - {annotations: llava_video.json, root: videos, sampling: "first:50%"}
        - {annotations: chat.jsonl, format: sharegpt, sampling: "random:1000", repeat: 2}
        - {annotations: images.json}

Each source is read in its format (``auto``: detected), then sampled once per run — the records chosen are a
function of the file and ``(run.seed, the source's place in the list)`` only — and repeated ``repeat`` times; the
split is the sources' records one after another in list order (the training loader shuffles them every
epoch, lrc/data/resumable.py, and shards them under DDP). Sampling, as LLaVA-NeXT's and VideoChat-Flash's
data YAMLs write it (``sampling_strategy``):

    all          every record
    first:N      the first N records       first:N%   the first ceil(N% of them)
    end:N        the last N records        end:N%     the last ceil(N% of them)
    random:N     N records drawn without replacement, kept in file order   random:N%
    N            same as random:N

A count larger than the file is an error (use ``repeat`` to oversample). A plain string (``train:
train.jsonl``) is a one-source mixture with ``format: auto``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrc.config.schema import DataSource, Sampling
from lrc.data.annotations import AnnotationError, Record
from lrc.data.formats import read_annotations

def parse_sampling(text: Any) -> Sampling:
    """``all``, ``first:N[%]``, ``end:N[%]``, ``random:N[%]`` or ``N``; ``ValueError`` saying what is wrong."""
    return Sampling.parse(text)


@dataclass
class Source:
    """One source of a split, with paths resolved. ``name`` says where it was configured (``data.train[1]``)."""

    name: str
    annotations: Path
    root: Path | None = None
    format: str = "auto"
    sampling: str = "all"
    repeat: int = 1
    index: int = 0  # its place in the split's list: random sampling draws from (run.seed, index)

    def describe(self) -> str:
        return f"{self.name} ({self.annotations})"


@dataclass
class SourceCount:
    """What a source contributed: for the start-of-run table and RUN_DIR/data_sources.json."""

    name: str
    annotations: str
    format: str
    reason: str
    sampling: str
    repeat: int
    records: int  # read from the file
    sampled: int  # after sampling
    used: int  # after repeat: the split's share
    media: dict[str, int] = field(default_factory=dict)  # records by kind of media: video, image


def sources_of(spec: str | Sequence[Any], data_root: str | os.PathLike, split: str) -> list[Source]:
    """The sources of ``data.<split>``: a path (one source), or a list of source mappings (paths relative to
    ``data_root`` unless absolute)."""
    root = Path(data_root)

    def under(path: Any) -> Path:
        return Path(path) if Path(path).is_absolute() else root / path

    if isinstance(spec, (str, os.PathLike)):
        return [Source(f"data.{split}", under(spec))]
    out = []
    for i, node in enumerate(spec):
        if isinstance(node, DataSource):
            node = vars(node)
        node = dict(node)
        if not node.get("annotations"):
            raise AnnotationError(f"data.{split}[{i}]: annotations: required (the annotation file of this source)")
        out.append(Source(f"data.{split}[{i}]", under(node["annotations"]),
                          root=under(node["root"]) if node.get("root") else None,
                          format=node.get("format") or "auto", sampling=str(node.get("sampling", "all")),
                          repeat=int(node.get("repeat", 1)), index=i))
    return out


def source_problems(spec: str | Sequence[Any], data_root: str | os.PathLike, split: str) -> list[str]:
    """What stops a mixture's sources from being read, each naming its source: a missing annotation file or
    media root, a sampling that does not parse. A plain path (one source) gives none: its own reader says."""
    if isinstance(spec, (str, os.PathLike)):
        return []
    problems = []
    for source in sources_of(spec, data_root, split):
        if not source.annotations.is_file():
            problems.append(f"{source.describe()}: annotation file {source.annotations} does not exist (paths are "
                            f"relative to data.root={data_root})")
        if source.root is not None and not source.root.is_dir():
            problems.append(f"{source.describe()}: root {source.root} is not a folder")
        try:
            parse_sampling(source.sampling)
        except ValueError as exc:
            problems.append(f"{source.describe()}: sampling: {exc}")
    return problems


def sample(records: list[Record], sampling: Sampling, seed: int, index: int, where: str) -> list[Record]:
    """The records a sampling keeps, in file order; ``random`` draws from ``(seed, index)``."""
    n = sampling.size(len(records))
    if n > len(records):
        raise AnnotationError(f"{where}: sampling asks for {n} records but the file has {len(records)}; ask for at "
                              "most that many, or oversample with repeat: K")
    if sampling.kind == "all" or n == len(records):
        return list(records)
    if sampling.kind == "first":
        return records[:n]
    if sampling.kind == "end":
        return records[len(records) - n:]
    keep = np.sort(np.random.default_rng([seed, 7919, index]).choice(len(records), size=n, replace=False))
    return [records[i] for i in keep]


def load_split(sources: Sequence[Source], seed: int = 0) -> tuple[list[Record], list[SourceCount]]:
    """The records of a split made of ``sources`` (read, sampled, repeated, in list order) and what each
    contributed. Errors name the source."""
    records: list[Record] = []
    counts: list[SourceCount] = []
    for source in sources:
        try:
            sampling = parse_sampling(source.sampling)
        except ValueError as exc:
            raise AnnotationError(f"{source.describe()}: sampling: {exc}") from None
        if source.repeat < 1:
            raise AnnotationError(f"{source.describe()}: repeat: must be an integer >= 1, got {source.repeat!r}")
        if not source.annotations.is_file():
            raise AnnotationError(f"{source.describe()}: annotation file {source.annotations} does not exist")
        try:
            loaded = read_annotations(source.annotations, source.format, source.root)
        except AnnotationError as exc:
            if len(sources) == 1:
                raise
            raise AnnotationError(f"{source.describe()}: {exc}") from None
        chosen = sample(loaded.records, sampling, seed, source.index, source.describe())
        media = {"video": sum(r.images is None for r in chosen), "image": sum(r.images is not None for r in chosen)}
        counts.append(SourceCount(source.name, str(source.annotations), loaded.format, loaded.reason, source.sampling,
                                  source.repeat, len(loaded.records), len(chosen), len(chosen) * source.repeat,
                                  {k: v for k, v in media.items() if v}))
        records += chosen * source.repeat
    return records, counts


def counts_table(split: str, counts: Sequence[SourceCount]) -> str:
    """The per-source counts as lines for the log."""
    lines = [f"{split}: {sum(c.used for c in counts)} samples from {len(counts)} source(s)"]
    for c in counts:
        media = ", ".join(f"{n} {kind}" for kind, n in c.media.items())
        lines.append(f"  {c.name:16s} {c.format:8s} {c.records:7d} read  {c.sampling:>10s} -> {c.sampled:7d}"
                     f"  x{c.repeat} = {c.used:7d}  ({media})  {c.annotations}")
    return "\n".join(lines)
