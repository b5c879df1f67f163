"""Peak resident memory of this process on the CPU (Linux /proc), for benchmarks/ and ``lrc niah``.

A measurement resets the kernel's high-water mark (VmHWM) to the current RSS, runs, and reads the peak
back. Where the reset is not allowed it falls back to ru_maxrss, an upper bound (the process's peak so far).
"""

from __future__ import annotations

import resource
import sys


def max_rss_kib(usage: resource.struct_rusage | None = None) -> float:
    """``ru_maxrss`` in KiB: of ``usage`` (e.g. a child's, from ``os.wait4``), else of this process.
    Linux reports it in KiB, macOS in bytes."""
    usage = usage if usage is not None else resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)


def status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kib(reset_ok: bool) -> float:
    hwm = status_kib("VmHWM") if reset_ok else None
    return hwm if hwm is not None else max_rss_kib()
