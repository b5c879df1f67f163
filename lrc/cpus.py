"""How many CPU threads a run uses, and how they behave on a machine shared with other work (``run.threads``).

The policy (docs/troubleshooting.md, "Slow on a shared machine"):

* **How many.** ``run.threads`` (default: ``OMP_NUM_THREADS`` if the environment sets it, else the CPUs this
  process may run on, ``os.sched_getaffinity``, which ``taskset``, cgroups' cpusets and SLURM's
  ``--cpus-per-task`` narrow) is the size of torch's intra-op and
  inter-op pools, and the share of the decode work in the data pipeline (lrc/train/build.py passes it on).
  ``lrc ablate --jobs N`` gives each of its N runs its own share; runs started by hand beside each other
  should set ``run.threads`` so that their sum stays within the machine.
* **Who decodes.** Video decoding runs in ``data.num_workers`` persistent DataLoader worker processes
  (default: one per 4 threads, at least 1), so it overlaps the training step instead of adding to it; each
  worker decodes with one thread (parallelism comes from the workers and the prefetched batches). With
  ``data.num_workers: 0`` the training process decodes between steps, with ``run.threads`` decoder threads.
* **How they wait.** torch's CPU kernels run on OpenMP threads, and GNU OpenMP lets a thread that reaches
  the end of a parallel region *spin* for a while before it sleeps. When another process holds one of the
  CPUs, one of the run's threads is descheduled in the middle of every region and the others spin until it
  is back, so each small op costs a scheduler time slice: a tiny-model fit on 2 CPUs beside one CPU-bound
  process ran 3.3× slower with 2 threads than with 1, where the machine share predicts at most 2×. With
  ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once and gives its CPU back, and the same
  2 threads keep their speed. The OpenMP runtime reads the variable once, when torch is first imported,
  so the ``lrc`` command sets it before importing torch (:func:`prefer_passive_waits`) unless the user set
  it; a script that imports torch itself should set it in its environment.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, cpusets, a scheduler's allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity masks
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``run.threads`` as a count: the value given, else ``OMP_NUM_THREADS`` when the environment sets it (a
    choice made outside lrc), else :func:`available_cpus`."""
    if threads:
        return int(threads)
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:  # unset, or not a plain count ("4,2" nests levels): the CPUs decide
        return available_cpus()


def data_workers(num_workers: int | None, threads: int | None) -> int:
    """``data.num_workers`` as a count: the value given, else one worker per 4 of ``run.threads`` (at least 1,
    at most 8) where this platform can run worker processes, else 0 (with a warning)."""
    if num_workers is not None:
        return int(num_workers)
    try:  # worker processes need POSIX semaphores, which some sandboxes and serverless platforms lack
        import multiprocessing

        multiprocessing.get_context().Lock()
    except (ImportError, OSError) as exc:
        log.warning("data.num_workers: this platform cannot run DataLoader worker processes (%s); loading in the "
                    "training process", exc)
        return 0
    return max(1, min(8, resolve_threads(threads) // 4))


def decode_threads(workers: int, threads: int | None) -> int:
    """Decoder threads per video read: 1 in each worker process, ``run.threads`` when the training process
    decodes between its steps (``workers == 0``)."""
    return 1 if workers > 0 else resolve_threads(threads)


def prefer_passive_waits() -> None:
    """Make OpenMP threads sleep, not spin, when they wait (the module docstring says why). Effective only
    before torch is imported; a value the user set is kept."""
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def apply_threads(threads: int | None) -> int:
    """Size torch's thread pools for this run (``run.threads``) and return the count used.

    The intra-op pool can be resized at any time; the inter-op pool only before torch first uses it, so a
    process that already did (a second fit in one Python session) keeps its inter-op size."""
    import torch

    count = resolve_threads(threads)
    cpus = available_cpus()
    if count > cpus:
        log.warning("run.threads=%d but this process may run on %d CPU(s): the threads will take turns on them, "
                    "which is slower than %d threads (docs/troubleshooting.md)", count, cpus, cpus)
    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # the pool has started; its size is fixed for the life of the process
            pass
    if os.environ.get(WAIT_POLICY_ENV, "").upper() != "PASSIVE" and count > 1:
        log.debug("%s is %r: OpenMP threads spin while they wait, which is slow when other work shares the CPUs",
                  WAIT_POLICY_ENV, os.environ.get(WAIT_POLICY_ENV))
    return count
