"""Where a record's media may be, and what a path names, in stable words (docs/data.md, "Where media may be").

The policy: a record's media (its video, frame folder or images) must resolve, symlinks followed, inside
``data.root``. A relative path resolves against its annotation file's folder (or its source's ``root``);
an absolute path elsewhere, a ``../`` that climbs out, or a symlink that points out is refused for that
sample (it is skipped and listed in skipped.json with the reason), unless ``data.allow_outside_root: true``.
Whatever the setting, only regular files (and folders of frames) are read: a device, a FIFO or a socket is
never opened, and a symlink loop is reported as one.

The reasons are short and the same on every run (no decoder log lines, no times), so skipped.json files of
two runs compare line by line.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable

OUTSIDE_ROOT_KEY = "data.allow_outside_root"


def stat_problem(path: str | os.PathLike, allow_folder: bool = False) -> str | None:
    """Why ``path`` cannot be read as a media file (``allow_folder``: or a folder of frames), else None:
    "file not found", "symlink loop ...", "permission denied", "not a regular file", "zero bytes" ..."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return _errno_reason(exc)
    if stat.S_ISDIR(st.st_mode) and allow_folder:
        return None
    if not stat.S_ISREG(st.st_mode):  # a folder, a device, a FIFO (which could block a decoder for ever), a socket
        return "not a regular file"
    if st.st_size == 0:
        return "zero bytes"
    return None


def _errno_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop (the path's symlinks point at each other)"
    if exc.errno == errno.ENOENT:
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        return "file not found (a part of its path is a file, not a folder)"
    if exc.errno == errno.ENAMETOOLONG:
        return "path too long"
    return f"cannot stat the file ({errno.errorcode.get(exc.errno or 0, 'error')})"


class MediaPolicy:
    """Whether a media path lies where media may be: inside ``root`` (symlinks followed), unless ``allow_outside``."""

    def __init__(self, root: str | os.PathLike | None, allow_outside: bool = False):
        self.root = Path(os.path.realpath(root)) if root is not None else None
        self.allow_outside = allow_outside

    def problem(self, path: str | os.PathLike) -> str | None:
        """None when ``path`` may be read; else the stable reason it may not (module docstring)."""
        if self.allow_outside or self.root is None:
            return None
        real = Path(os.path.realpath(path))  # never raises, also on a loop or a missing file
        if real == self.root or self.root in real.parents:
            return None
        return (f"outside data.root (it resolves to {real}); lrc reads media inside data.root only: move the file "
                f"under {self.root}, or set {OUTSIDE_ROOT_KEY}=true to read media anywhere")

    def first_problem(self, paths: Iterable[str | os.PathLike]) -> tuple[str, str] | None:
        """(path, reason) of the first of ``paths`` that may not be read, else None."""
        for p in paths:
            why = self.problem(p)
            if why is not None:
                return str(p), why
        return None
