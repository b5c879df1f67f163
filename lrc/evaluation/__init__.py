"""Standard video benchmarks (``lrc eval``, docs/evaluation.md): each benchmark read from its own published
layout into common items (one module per benchmark), asked with its reference prompt, answers read in one place
(answers.py), scored per category (scoring.py), run resumably and sharded over processes (runner.py)."""

from __future__ import annotations

import importlib

from lrc.config.schema import BENCHMARKS  # the names, written once (eval.benches[].name checks against them)
from lrc.evaluation.benchmark import Benchmark
from lrc.evaluation.items import BenchmarkDataError


def get(name: str) -> Benchmark:
    """The benchmark called ``name``; a BenchmarkDataError with the known names otherwise."""
    if name not in BENCHMARKS:
        from lrc.registry import suggest

        raise BenchmarkDataError(f"unknown benchmark {name!r}.{suggest(name, list(BENCHMARKS))}")
    return importlib.import_module(f"lrc.evaluation.{name}").BENCHMARK  # each benchmark's module is named after it


__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkDataError", "get"]
