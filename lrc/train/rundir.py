"""Run folders: making one, owning one, and telling what a folder found on disk holds.

A run folder belongs to one process at a time. ``lrc fit``, ``lrc fit --resume`` and every cell of
``lrc ablate`` hold its lock, ``RUN_DIR/lrc.lock``, for as long as they run: an exclusive POSIX record lock
(``fcntl.lockf``) on the file, which also names the holder (pid, host, start time, command line). A second
process that asks for the folder stops at once with exit 2 and names the holder. The kernel drops the lock
when its process dies, however it dies (SIGKILL, OOM killer, a node's crash on NFS after the lease), so a
lock left by a dead process is taken over, with a warning that names it. A record lock belongs to one
process and is not inherited through ``fork`` (a ``flock`` is): the data loader's worker processes of a
killed fit, which live on for a few seconds, do not keep its folder locked. (Record locks have one trap: closing any descriptor of
the file drops the process's lock, so nothing in the holding process opens ``lrc.lock`` but the lock itself.) On a filesystem without working
locks
(some Lustre mounts) the file alone decides: a holder on this host that no longer runs is taken over; one
on another host cannot be checked, and the message says how to remove its lock.

What a folder holds (:func:`inspect_run_dir`) decides what ``lrc fit`` may do with it:

    free        missing, or empty (a lock file left by a dead process does not count)
    unstarted   config.yaml but no checkpoint and no metrics.json: the run never saved anything, so a new
                ``lrc fit ... --out DIR`` may start it over in place (what it left is kept in
                DIR/abandoned-N/)
    resumable   config.yaml and a checkpoint, no metrics.json: ``lrc fit --resume DIR`` continues it
    finished    metrics.json: never written over
    foreign     files, but no config.yaml: not a folder lrc made

Only the process that owns the folder (the launch's rank 0) locks it and changes it; the other ranks of a
multi-process launch train into the folder rank 0 holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lrc.errors import LrcError
from lrc.files import remove_stale_temporaries, write_text

log = logging.getLogger("lrc")

LOCK_NAME = "lrc.lock"
CONFIG_NAME = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
STEP_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")
ABANDONED = "abandoned-"
# settings a resumed run may change: neither the model nor the data it trains on (lrc fit --resume)
RESUMABLE_OVERRIDES = ("trainer.", "distributed.", "run.on_nan", "run.checkpoint_every_n_steps",
                       "run.checkpoint_every_minutes", "run.keep_last_checkpoints", "data.num_workers", "run.threads",
                       "run.loggers", "run.callbacks", "run.progress_every_s")
# keys that name where a run lives, not what it is
WHERE_KEYS = ("run.name", "run.root")
# the lock files this process holds, by (device, inode): a record lock never refuses its own process, so a
# second RunDirLock on a folder this process holds is refused here
_HELD: dict[tuple[int, int], "Holder"] = {}
# file locks are not supported on this filesystem: the lock file's content decides
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class RunDirError(LrcError, FileExistsError):
    """A run folder that cannot be used as asked: taken, in use, damaged, or not a run."""


def resumable(key: str) -> bool:
    """Whether a resumed run may take another value for ``key`` (a dotted config key)."""
    return key.startswith(RESUMABLE_OVERRIDES) or key in WHERE_KEYS


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """When ``pid`` started (Linux: clock ticks since boot, /proc/PID/stat field 22): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _running(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` (started at ``start``, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


@dataclass
class Holder:
    """Who holds (or held) a run folder's lock, as its lock file says."""

    pid: int = 0
    host: str = "?"
    started: str = "?"
    command: str = ""
    process_start: str | None = None

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), datetime.now().isoformat(timespec="seconds"),
                   shlex.join(["lrc", *sys.argv[1:]]) if sys.argv else "", _process_start(os.getpid()))

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data.get("started", "?")),
                       str(data.get("command", "")), data.get("process_start"))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        command = f" (`{self.command}`)" if self.command else ""
        return f"pid {self.pid} on host {self.host}, started {self.started}{command}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()


class RunDirLock:
    """The exclusive lock of one run folder (module docstring). ``with RunDirLock(folder):`` or
    ``acquire()`` / ``release()``; raises :class:`RunDirError` naming the holder when another process has it."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self.took_over: Holder | None = None  # the dead holder whose lock this one replaced

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunDirLock":
        if self._fd is not None:
            return self
        me = Holder.me()
        for _ in range(20):  # retried only when the file was replaced while we opened it
            try:  # checked without opening the file: closing any descriptor of it would drop this process's lock
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) in _HELD:
                    raise RunDirError(self._in_use(_HELD[st.st_dev, st.st_ino]))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    if exc.errno not in _NO_LOCKS:
                        os.close(fd)
                        raise
                    self._fd = fd
                    self._claim_without_locks(me)
                    _HELD[_key(fd)] = me
                    return self
                holder = Holder.parse(_read_fd(fd))
                os.close(fd)
                raise RunDirError(self._in_use(holder)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: open the new one
                os.close(fd)
                continue
            previous = Holder.parse(_read_fd(fd))
            if previous is not None and previous.pid != os.getpid():
                self.took_over = previous
                log.warning("%s was left by %s, which no longer runs (killed?); this process takes the run "
                            "folder over", self.path, previous.describe())
            self._fd = fd
            _HELD[_key(fd)] = me
            self._write(me)
            return self
        raise RunDirError(f"could not lock {self.path}: the lock file kept changing (another process is taking "
                          "the folder right now?); run again")

    def _claim_without_locks(self, me: Holder) -> None:
        """No file locks on this filesystem: the lock file's content decides (module docstring)."""
        assert self._fd is not None
        holder = Holder.parse(_read_fd(self._fd))
        if holder is not None and holder.pid != os.getpid():
            alive = not holder.on_this_host() or _running(holder.pid, holder.process_start)
            if alive:
                fd, self._fd = self._fd, None
                os.close(fd)
                message = self._in_use(holder)
                if not holder.on_this_host():
                    message += (f" This filesystem has no working file locks, so whether that process still runs "
                                f"cannot be checked from here: if it is gone, remove its lock (rm {self.path}) "
                                "and run again.")
                raise RunDirError(message)
            self.took_over = holder
            log.warning("%s was left by %s, which no longer runs (killed?); this process takes the run folder "
                        "over", self.path, holder.describe())
        self._write(me)

    def _in_use(self, holder: Holder | None) -> str:
        who = holder.describe() if holder is not None else "a process that has not written its name yet"
        return (f"run dir {self.folder} is in use by another lrc process: {who}. Two processes writing one run "
                "folder would mix their checkpoints and logs. Wait for it to finish (or stop it), or use another "
                "folder.")

    def _write(self, holder: Holder) -> None:
        assert self._fd is not None
        data = json.dumps(vars(holder)).encode() + b"\n"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.pop(_key(fd), None)
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)  # unlinked while still locked: a waiting opener sees the inode change
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""


class NoLock:
    """What the ranks > 0 of a launch hold: nothing (rank 0 holds the folder for all of them)."""

    held = False
    took_over = None

    def acquire(self) -> "NoLock":
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> "NoLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def lock_run_dir(folder: Path) -> RunDirLock | NoLock:
    """The folder's lock, acquired, for the launch's rank 0; for the other ranks nothing (module docstring)."""
    from lrc.parallel.distributed import is_launch_rank_zero

    if not is_launch_rank_zero():
        return NoLock()
    return RunDirLock(folder).acquire()


# ---------------------------------------------------------------------------------------------
# What a folder holds
# ---------------------------------------------------------------------------------------------
@dataclass
class RunDirState:
    path: Path
    kind: str  # free | unstarted | resumable | finished | foreign
    checkpoints: list[Path] = field(default_factory=list)  # newest first: last.ckpt, then step-N.ckpt by N
    outputs: list[Path] = field(default_factory=list)  # what an unstarted run left besides config.yaml

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME


def checkpoint_files(run_dir: Path) -> list[Path]:
    """A run's checkpoints, newest first: ``last.ckpt``, then ``step-N.ckpt`` by decreasing N."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    steps = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_PATTERN.match(p.name))),
                   reverse=True)
    last = [folder / LAST] if (folder / LAST).exists() else []
    return last + [p for _, p in steps]


def _ignored(name: str) -> bool:
    """Entries that say nothing about a run: its lock, and temporary files a killed writer left."""
    return name == LOCK_NAME or bool(re.match(r"^\..+\.tmp-\d+-\d+$", name))


def inspect_run_dir(path: Path | str) -> RunDirState:
    """What ``path`` holds (module docstring); :class:`RunDirError` when it exists but is not a folder."""
    path = Path(path)
    if not path.exists():
        return RunDirState(path, "free")
    if not path.is_dir():
        raise RunDirError(f"{path} is a file, not a folder: a run dir is a folder lrc creates. Pass --out a folder "
                          "that does not exist yet (or an empty one).")
    entries = [e for e in path.iterdir() if not _ignored(e.name)]
    if not entries:
        return RunDirState(path, "free")
    if (path / "metrics.json").exists():
        return RunDirState(path, "finished", checkpoint_files(path))
    if not (path / CONFIG_NAME).exists():
        return RunDirState(path, "foreign")
    checkpoints = checkpoint_files(path)
    if checkpoints:
        return RunDirState(path, "resumable", checkpoints)
    outputs = [e for e in entries if e.name != CONFIG_NAME and not e.name.startswith(ABANDONED)
               and not (e.is_dir() and not _has_files(e))]
    return RunDirState(path, "unstarted", outputs=outputs)


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not _ignored(p.name) for p in folder.rglob("*"))


def set_aside(state: RunDirState) -> Path | None:
    """Move what an unstarted run left (logs, skipped.json ...) into RUN_DIR/abandoned-N/, so that starting
    over never writes over it; returns that folder (None when there was nothing to move)."""
    if not state.outputs:
        return None
    n = 1 + sum(1 for p in state.path.glob(f"{ABANDONED}*"))
    target = state.path / f"{ABANDONED}{n}"
    target.mkdir()
    for entry in state.outputs:
        entry.rename(target / entry.name)
    if (state.path / CONFIG_NAME).exists():
        (target / CONFIG_NAME).write_bytes((state.path / CONFIG_NAME).read_bytes())
    return target


def refusal(state: RunDirState, config_hint: str = "CONFIG") -> str | None:
    """Why ``lrc fit ... --out DIR`` may not start a run in this folder (None: it may)."""
    p = state.path
    if state.kind in ("free", "unstarted"):
        return None
    if state.kind == "finished":
        return (f"run dir {p} holds a finished run (it has metrics.json); lrc never overwrites a run. Pass another "
                "--out, or leave --out away to get a fresh timestamped folder.")
    if state.kind == "resumable":
        return (f"run dir {p} holds an interrupted run (its newest checkpoint is {state.checkpoints[0]}); lrc never "
                f"overwrites a run. Continue it with: lrc fit --resume {p}   (in a job script that may be requeued: "
                f"lrc fit {config_hint} --out {p} --resume-if-exists). To start a new run, pass another --out.")
    return (f"run dir {p} already exists, is not empty and is not a run dir (it has no config.yaml); lrc never "
            "writes into it. Pass another --out, or leave --out away to get a fresh timestamped folder.")


def clean_checkpoint_folder(run_dir: Path) -> None:
    """Remove the temporary files killed writers left in RUN_DIR and its checkpoints (call with the lock)."""
    for folder in (run_dir, run_dir / CHECKPOINTS):
        for removed in remove_stale_temporaries(folder):
            log.info("removed %s, a partial write left by a killed process", removed)


# ---------------------------------------------------------------------------------------------
# Making a run dir (rank 0 makes it; the other ranks of a launch join it)
# ---------------------------------------------------------------------------------------------
SHARED_RUN_DIR_HELP = ("this process is one rank of a multi-process launch, and its ranks cannot agree on a "
                       "timestamped run dir: pass --out RUN_DIR (on a filesystem every node sees), or launch with "
                       "torchrun --rdzv-id ID or under SLURM, which name it (docs/distributed.md)")


def launch_dir(cfg: dict[str, Any], out: str | None) -> Path | None:
    """The folder every rank of this launch uses when ``--out`` is not given and the launch names one
    (torchrun's rendezvous id, the SLURM job id: docs/distributed.md); else ``out`` (None when neither)."""
    from lrc.parallel.distributed import launch_run_name

    if out is not None:
        return Path(out)
    launched = launch_run_name()
    return Path(cfg["run"]["root"]) / cfg["run"]["name"] / launched if launched else None


def make_run_dir(cfg: dict[str, Any], out: str | None) -> Path:
    """A fresh run dir, made by rank 0. Under a multi-process launch every rank runs ``lrc fit`` and
    must train into the same dir: ranks > 0 take ``--out``, else the dir rank 0 made (Lightning's own
    launcher starts them with rank 0's environment, lrc.parallel.distributed.RUN_DIR_ENV), else one named after the
    launch (torchrun's rendezvous id, the SLURM job id): a timestamp would differ from rank to rank."""
    from lrc.parallel.distributed import RUN_DIR_ENV, is_launch_rank_zero, launch_world_size

    named = launch_dir(cfg, out)
    if not is_launch_rank_zero():
        found = out or os.environ.get(RUN_DIR_ENV) or (str(named) if named else None)
        if found is None:
            raise RunDirError(SHARED_RUN_DIR_HELP)
        Path(found).mkdir(parents=True, exist_ok=True)
        return Path(found)
    if named is None and launch_world_size() > 1:
        raise RunDirError(SHARED_RUN_DIR_HELP)
    path = _fresh_run_dir(Path(cfg["run"]["root"]) / cfg["run"]["name"], str(named) if named else None)
    os.environ[RUN_DIR_ENV] = str(path.resolve())  # for the ranks Lightning's launcher starts from here
    return path


def check_out_free(out: str | None) -> None:
    """Refuse an ``--out`` that already holds files, before any work: make_run_dir would refuse it only
    after the corpus and the model are ready. Ranks > 0 of a launch share rank 0's dir: not theirs to check."""
    from lrc.parallel.distributed import is_launch_rank_zero

    if out is not None and is_launch_rank_zero():
        refuse_taken(Path(out))


def refuse_taken(path: Path) -> None:
    """A folder to write a new result into must not exist, or be empty."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a folder; pass a folder that does not exist yet (or an empty "
                          "one)")
    if path.exists() and any(not _ignored(p.name) for p in path.iterdir()):
        raise RunDirError(f"run dir {path} already exists and is not empty; lrc never overwrites a run. "
                          "Pass another --out, or leave --out away to get a fresh timestamped folder.")


def _fresh_run_dir(base: Path, out: str | None) -> Path:
    if out is not None:
        path = Path(out)
        refuse_taken(path)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a fresh run dir under {base}")


def open_new_run(cfg: dict[str, Any], out: str | None) -> tuple[Path, RunDirLock | NoLock]:
    """``lrc fit CONFIG [--out DIR]``: the run dir, created (or an unstarted one reused) and locked by rank 0.

    A folder that holds no checkpoint and no results (a start that failed while building, or a run killed
    before its first checkpoint) is started over; what it left goes to DIR/abandoned-N/. Anything else
    is refused (:func:`refusal`)."""
    from lrc.parallel.distributed import RUN_DIR_ENV, is_launch_rank_zero

    named = launch_dir(cfg, out)
    if not is_launch_rank_zero():
        return make_run_dir(cfg, out), NoLock()
    if named is None:  # a fresh timestamped folder: nobody else can have it, but a --resume could while it runs
        path = make_run_dir(cfg, out)
        return path, RunDirLock(path).acquire()
    path = named
    if path.exists() and not path.is_dir():
        inspect_run_dir(path)  # raises: a file
    path.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(path).acquire()
    try:
        state = inspect_run_dir(path)
        why = refusal(state)
        if why is not None:
            raise RunDirError(why)
        start_over(state)
    except BaseException:
        lock.release()
        raise
    os.environ[RUN_DIR_ENV] = str(path.resolve())
    return path, lock


def start_over(state: RunDirState) -> None:
    """Prepare an unstarted folder for a new start (rank 0, holding the lock)."""
    clean_checkpoint_folder(state.path)
    if state.kind != "unstarted":
        return
    aside = set_aside(state)
    if aside is not None:
        log.warning("run dir %s holds a run that stopped before its first checkpoint; starting it over (what it "
                    "left is kept in %s)", state.path, aside)
    else:
        log.info("run dir %s never reached training (it holds only config.yaml); starting it over", state.path)
    for name in (CHECKPOINTS,):
        folder = state.path / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.yaml as a mapping (with its ``_lrc`` provenance block); :class:`RunDirError` naming the
    file when it is missing, empty, not YAML or not a mapping."""
    from omegaconf import DictConfig, OmegaConf

    path = run_dir / CONFIG_NAME
    fix = (f"It is the run's resolved config, written when the run started: restore it from a copy, or give the run "
           f"the experiment config it was started with: lrc fit CONFIG --out {run_dir} --resume-if-exists "
           "(config.yaml is written anew from CONFIG, with the same overrides; the checkpoint must fit the model it "
           "builds).")
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run dir written by `lrc fit` (it has no config.yaml); --resume takes "
                          "the folder of an interrupted run.")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise RunDirError(f"{path} is empty (damaged). {fix}")
    try:
        node = OmegaConf.create(text)
    except Exception as exc:  # noqa: BLE001 - every kind of YAML damage
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path} is not valid YAML (damaged?): {first}. {fix}") from None
    if not isinstance(node, DictConfig):
        raise RunDirError(f"{path} holds a list, not a run's config (a mapping of sections). {fix}")
    data = OmegaConf.to_container(node, resolve=False)
    assert isinstance(data, dict)
    missing = [s for s in ("run", "data", "model") if not isinstance(data.get(s), dict)]
    if missing:
        raise RunDirError(f"{path} has no {', '.join(missing)} section(s); it is not a complete run config "
                          f"(damaged?). {fix}")
    from lrc.config import spelled_as_today

    return spelled_as_today(data)


def write_run_config(run_dir: Path, doc: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    write_text(run_dir / CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(doc)))
