"""Peak-memory helpers shared by the benchmarks: lrc's own (lrc/memory.py, also used by ``lrc niah``)."""

from lrc.memory import max_rss_kib, peak_kib, reset_peak, status_kib  # noqa: F401
