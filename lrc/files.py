"""Writing result files safely: all or nothing, durably, and a full disk as an error the user can act on.

Every file lrc writes into a run folder (checkpoints, config.yaml, metrics.json ...) goes through
:func:`atomic_writer`: the bytes go to a hidden temporary file *in the same folder* (so the final rename
never crosses filesystems and is never a copy), which is flushed and fsynced before it is renamed over the
target; the folder is then fsynced so the rename itself survives a crash. A kill, an exception or a full
disk at any point leaves the previous file as it was and removes the temporary one (a SIGKILL cannot run
that clean-up: the next run in the folder removes what it left, see :func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Iterator

from lrc.errors import LrcError

# what a write returns when the filesystem (or the user's quota) has no room left
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_COUNTER = itertools.count()
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-\d+$")


class DiskFullError(LrcError, OSError):
    """A write found no space left (ENOSPC or EDQUOT). The file being written keeps its previous content
    and no partial file is left behind; the message says which file and how much room is free."""

    def __init__(self, path: Path | str, what_to_do: str = ""):
        self.path = Path(path)
        free = free_bytes(self.path.parent)
        room = f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""
        super().__init__(f"no space left on the device while writing {self.path}{room}; the previous "
                         f"{self.path.name} (if any) is intact and no partial file was left. Free some space or "
                         f"write to a larger disk. {what_to_do}".rstrip())


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """``exc``, or an exception it was raised from, is a write that found no space left."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def temporary_path(path: Path) -> Path:
    """The hidden temporary name ``path`` is written under: ``.NAME.tmp-PID-N``, in the same folder."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{next(_COUNTER)}")


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the file itself was synced
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path | str, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_writer(path) as fh: fh.write(...)``: ``path`` gets all of it or keeps what it had.

    A full disk (at the write, the flush or the fsync) raises :class:`DiskFullError`; any failure removes the
    temporary file."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink()
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path) from exc
        raise
    fsync_folder(path.parent)


def write_text(path: Path | str, text: str) -> None:
    """``path.write_text(text)``, atomic and durable (see :func:`atomic_writer`)."""
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader never sees half a file, and a crash never leaves one."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_jsonl(fh: IO[str], row: Any) -> None:
    """One JSON line appended to an open file and on disk before this returns (flushed and fsynced): a results
    file that a kill can cut off only inside its last line (``lrc infer``, ``lrc eval``)."""
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that killed processes left in ``folder`` (``.NAME.tmp-PID-N`` of a process
    that no longer runs); returns them. Call it only where no other live process writes (a locked run dir)."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if m is None or (int(m.group(1)) != os.getpid() and _alive(int(m.group(1)))):
            continue
        with suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
