"""Where a cell's ``lrc fit`` runs: a child process of ``lrc ablate`` (``--jobs N`` of them at once), or a job of
a cluster scheduler submitted through submitit (``--executor slurm``; ``local``: submitit's local executor, the
same path without a cluster, for trying it out and for the tests).

Either way the cell's folder is the same: the fit's output is appended to ``cells/SLUG/log.txt`` after a
``===`` line with the command, and the attempt comes back as an :class:`Outcome` (exit code, wall time, the
process's peak RSS from ``os.wait4``), which the runner (runner.py) records in cell.json. A launcher starts
attempts and answers ``poll()`` without blocking, so the runner can keep several cells going, print progress
and pass signals on.

On a cluster, the job runs :class:`CellJob` on a node: it starts the same ``python -m lrc.cli fit ...``
(the node's Python, the same environment), waits for it, and returns its outcome. The folders must be on a
filesystem the nodes share. When the scheduler warns of the end of the job's time or of a preemption
(submitit's USR2), the job tells the fit to stop (SIGTERM: it saves a checkpoint) and asks submitit to requeue
it; the requeued job runs the same command, which resumes (``--resume-if-exists``).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from lrc.errors import ConfigError, LrcError, MissingInputError
from lrc.registry import suggest

EXECUTORS = ("subprocess", "slurm", "local")  # --executor; local = submitit's LocalExecutor
SUBMITIT_EXECUTORS = ("slurm", "local")
# submitit's local executor stops a job after timeout_min (its default: 2 minutes); a cell may take hours
LOCAL_TIMEOUT_MIN = 24 * 60


class ExecutorError(LrcError):
    """A cluster job could not be submitted (no scheduler here, a refused setting): nothing more is submitted."""


@dataclass
class Outcome:
    """How one attempt at a cell ended."""

    exit_code: int | None  # None: the job ended without a result (killed by the scheduler, lost)
    wall_s: float
    peak_rss_mib: float | None
    error: str = ""  # set when there is no exit code: what the scheduler said
    job_id: str | None = None


def cell_threads(jobs: int, cpus: int | None = None) -> int:
    """Threads for each of ``jobs`` cells sharing this machine's CPUs (those this process may run on)."""
    from lrc.cpus import available_cpus

    return max(1, (cpus or available_cpus()) // jobs)


def thread_env(threads: int | None) -> dict[str, str]:
    """The variables that size a child's thread pools (torch reads OMP_NUM_THREADS when it starts)."""
    if threads is None:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------
# One child process
# ---------------------------------------------------------------------------------------------
class Child:
    """``python -m lrc.cli ARGS``, its output appended to ``log_path`` after a ``===`` line with the command.

    ``lrc ablate``'s own children run in their own session: Ctrl-C reaches ``lrc ablate`` alone, which passes it
    on once. A cluster job's child stays in the job's process group (``own_session=False``), where the
    scheduler's signals reach it directly, and ignores USR2, the job's warning (see :class:`CellJob`)."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str], stream_prefix: str | None = None,
                 own_session: bool = True):
        self.command = [sys.executable, "-m", "lrc.cli", *args]
        self.log = open(log_path, "a", encoding="utf-8", errors="replace")
        self.log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {shlex.join(self.command)}\n")
        self.log.flush()
        self.offset = self.log.tell()  # where this attempt's output starts (its error is read from there)
        self.started = datetime.now().isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        streaming = stream_prefix is not None
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE if streaming else self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, start_new_session=own_session,
            text=True, errors="replace",
            # a cluster's end-of-time warning is the job's to handle (CellJob.checkpoint), not the fit's to die of
            preexec_fn=None if own_session else (lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN)))
        self.pid = self.proc.pid
        self._pump = None
        if streaming:  # --verbose: the output goes to the log and, line by line, to our stdout
            self._pump = threading.Thread(target=_pump, args=(self.proc.stdout, self.log, stream_prefix), daemon=True)
            self._pump.start()

    def poll(self, block: bool = False) -> Outcome | None:
        pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        # wait4, not Popen.wait: it also returns the child's own resource usage (its peak RSS)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self._pump is not None:
            self._pump.join()
        self.log.close()
        from lrc.memory import max_rss_kib

        return Outcome(self.proc.returncode, time.perf_counter() - self.t0, round(max_rss_kib(usage) / 1024, 1))

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Stop it at once and reap it (the caller is failing)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.poll(block=True)


def _pump(stream: IO[str], log: IO[str], prefix: str) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Launchers: what the runner starts attempts with
# ---------------------------------------------------------------------------------------------
class Attempt:
    """One attempt in flight: ``poll()`` is its Outcome once it ended, else None."""

    command: str
    started: str
    offset: int  # where its output starts in log.txt

    def poll(self) -> Outcome | None:
        raise NotImplementedError

    def signal(self, signum: int) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """Stop it now, unsaved (``lrc ablate`` itself is failing)."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where it runs, for the progress lines: empty for a child process, the job's state for a job."""
        return ""


class ChildAttempt(Attempt):
    def __init__(self, child: Child):
        self.child = child
        self.command, self.started, self.offset = shlex.join(child.command), child.started, child.offset

    def poll(self) -> Outcome | None:
        return self.child.poll()

    def signal(self, signum: int) -> None:
        self.child.signal(signum)

    def kill(self) -> None:
        self.child.kill()


class SubprocessLauncher:
    """Cells as child processes of ``lrc ablate``, ``jobs`` at a time, sharing this machine's CPUs."""

    name = "subprocess"

    def __init__(self, jobs: int, verbose: bool):
        self.jobs, self.verbose = jobs, verbose
        self.threads: int | None = None

    def share(self, slots: int) -> None:
        """``slots`` cells will run at once: each gets its share of the CPUs (one at a time: torch's own default,
        every core)."""
        self.threads = cell_threads(slots) if slots > 1 else None

    def start(self, slug: str, args: list[str], log_path: Path) -> Attempt:
        prefix = None if not self.verbose else "" if self.jobs == 1 else f"[{slug}] "
        return ChildAttempt(Child(args, log_path, thread_env(self.threads), stream_prefix=prefix))

    def close(self) -> None:
        pass


@dataclass
class CellJob:
    """What a cluster job runs (pickled by submitit, so plain data): the cell's ``lrc fit`` as a child process,
    its output appended to the cell's log.txt; returns the outcome as a dict. Checkpointable: on submitit's
    end-of-time or preemption signal it stops the fit with SIGTERM (the fit saves a checkpoint) and is
    requeued, to resume."""

    args: list[str]
    log_path: str
    env: dict[str, str]

    def __call__(self) -> dict[str, Any]:
        child = Child(self.args, Path(self.log_path), self.env, own_session=False)
        self._child = child
        # scancel's SIGTERM (and a terminal's Ctrl-C under the local executor) reaches the whole process group,
        # the fit included, which saves and stops; this job waits for it to report how it ended. Passing the
        # signal on as well would make it a second one, which stops the fit unsaved.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        outcome = child.poll(block=True)
        return {"exit_code": outcome.exit_code, "wall_s": outcome.wall_s, "peak_rss_mib": outcome.peak_rss_mib}

    def checkpoint(self) -> Any:
        """submitit calls this on USR2 (time nearly up, or preempted): the fit saves and stops, the job is requeued."""
        import submitit

        child = getattr(self, "_child", None)
        if child is not None and child.proc.returncode is None:
            child.signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
        return submitit.helpers.DelayedSubmission(CellJob(self.args, self.log_path, self.env))


class JobAttempt(Attempt):
    def __init__(self, job: Any, command: str, offset: int):
        self.job, self.command, self.offset = job, command, offset
        self.started = datetime.now().isoformat(timespec="seconds")
        self.t0 = time.perf_counter()

    def poll(self) -> Outcome | None:
        if not self.job.done():
            return None
        try:
            got = self.job.result()
        except Exception as exc:  # noqa: BLE001 - the scheduler's account of a job that ended without a result
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            why = lines[-1].strip() if lines else type(exc).__name__
            return Outcome(None, time.perf_counter() - self.t0, None, f"job {self.job.job_id} ended without a result: "
                                                                     f"{why} (its logs: {self.job.paths.folder})",
                           job_id=str(self.job.job_id))
        return Outcome(got["exit_code"], got["wall_s"], got["peak_rss_mib"], job_id=str(self.job.job_id))

    def signal(self, signum: int) -> None:
        # scancel (slurm) sends SIGTERM to the job, whose fit then saves a checkpoint and stops
        self.job.cancel(check=False)

    def kill(self) -> None:
        self.job.cancel(check=False)

    def describe(self) -> str:
        try:
            state = self.job.state
        except Exception:  # noqa: BLE001 - the state is only shown
            return ""
        return "queued" if state in ("PENDING", "REQUEUED", "CONFIGURING") else ""


class SubmititLauncher:
    """Cells as jobs of a scheduler (slurm), or of submitit's local executor, submitted through submitit.
    ``settings`` is the ablation file's ``executor: {slurm: {...}}`` block (checked by :func:`check_settings`)."""

    def __init__(self, cluster: str, folder: Path, settings: dict[str, Any], study: str, jobs: int | None):
        submitit = import_submitit()
        self.name, self.jobs = cluster, jobs
        params = dict(settings)
        if cluster == "local":
            params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
        try:
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            self.executor.update_parameters(**submitit_parameters(cluster, params))
        except Exception as exc:  # noqa: BLE001 - submitit's own account of why (no srun here, a bad value)
            raise ExecutorError(f"--executor {cluster}: submitit cannot submit jobs here: {type(exc).__name__}: "
                                f"{exc}. Run lrc ablate on a machine of the cluster (a login node), or use "
                                "--jobs N to run the cells on this machine") from exc
        self.study, self.cpus_per_task = study, settings.get("cpus_per_task")
        self.threads: int | None = None

    def share(self, slots: int) -> None:
        """Threads per cell: the CPUs each job asks for (cpus_per_task), else, for the local executor, this
        machine's CPUs shared out over the ``slots`` cells that run at once."""
        self.threads = self.cpus_per_task or (cell_threads(slots) if self.name == "local" and slots > 1 else None)

    def start(self, slug: str, args: list[str], log_path: Path) -> Attempt:
        self.executor.update_parameters(name=f"lrc-{self.study}-{slug}"[:120])
        with open(log_path, "a", encoding="utf-8") as log:  # the job appends from here on
            offset = log.seek(0, os.SEEK_END)
        try:
            job = self.executor.submit(CellJob(args, str(log_path), thread_env(self.threads)))
        except Exception as exc:  # noqa: BLE001 - sbatch refused the job: say what it said
            raise ExecutorError(f"--executor {self.name}: submitting cell {slug} failed: {type(exc).__name__}: "
                                f"{str(exc).strip()[:2000]} (the settings are the ablation file's "
                                f"executor.{self.name} block)") from exc
        return JobAttempt(job, shlex.join(["python", "-m", "lrc.cli", *args]) + f"  (job {job.job_id})", offset)

    def close(self) -> None:
        pass


def import_submitit() -> Any:
    try:
        import submitit
    except ModuleNotFoundError as exc:
        raise MissingInputError("--executor slurm|local needs submitit: pip install 'lrc[slurm]' (or pip install "
                                "submitit) into the environment lrc runs in") from exc
    return submitit


def check_settings(cluster: str, block: Any, where: str) -> list[str]:
    """Problems of the ablation file's ``executor.<cluster>`` block (submitit's parameter names: timeout_min,
    gpus_per_node, cpus_per_task, mem_gb, ... and, for slurm, partition, account, qos, constraint ...)."""
    if block is None:
        return []
    if not isinstance(block, dict):
        return [f"{where}: ablation.executor.{cluster}: expected a mapping of submitit parameters such as "
                f"{{partition: gpu, timeout_min: 240, gpus_per_node: 1}}, got {block!r}"]
    valid = _valid_parameters(cluster)
    return [f"{where}: ablation.executor.{cluster}.{key}: not a parameter of submitit's {cluster} executor."
            f"{suggest(str(key), sorted(valid))}" for key in block if key not in valid]


def _valid_parameters(cluster: str) -> set[str]:
    submitit = import_submitit()
    from submitit.core import plugins

    return set(submitit.AutoExecutor._valid_parameters()) | set(plugins.get_executors()[cluster]._valid_parameters())


def submitit_parameters(cluster: str, block: dict[str, Any]) -> dict[str, Any]:
    """The block as AutoExecutor.update_parameters takes it: shared names as they are (timeout_min, gpus_per_node
    ...), the cluster's own with its prefix (partition -> slurm_partition)."""
    import submitit

    shared = submitit.AutoExecutor._valid_parameters()
    return {key if key in shared else f"{cluster}_{key}": value for key, value in block.items()}


def check_executor_block(block: Any, where: str) -> list[str]:
    """The shape of ``ablation.executor`` (its contents are checked when that executor is used)."""
    if block is None:
        return []
    if not isinstance(block, dict) or any(k not in SUBMITIT_EXECUTORS for k in block):
        unknown = [k for k in block if k not in SUBMITIT_EXECUTORS] if isinstance(block, dict) else []
        hint = suggest(str(unknown[0]), list(SUBMITIT_EXECUTORS)) if unknown else ""
        return [f"{where}: ablation.executor: expected a mapping with a block per executor, e.g. {{slurm: {{partition: "
                f"gpu, timeout_min: 240, gpus_per_node: 1}}}}; got {block!r}.{hint}"]
    return []


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise ConfigError([f"command line: --jobs {jobs}: run at least one cell at a time (--jobs 1 or more)"])
