"""The one base class for everything a user can fix.

A :class:`LrcError` is bad input — a config value, an annotation record, a checkpoint, a run folder,
a plugin that refuses its arguments — and its message says what was wrong, where (file, key, sample
id) and what to do. The command line (lrc/cli.py) catches this one class, prints the message and exits
with :attr:`LrcError.exit_code` (2); anything else is a bug in lrc or a plugin and keeps its traceback.
:class:`Interrupted` (SIGINT/SIGTERM stopped a fit) is not an input error and has exit codes of its
own. Subclasses live beside the code that raises them and keep a built-in base where callers relied on one
(a :class:`ConfigError` is also a ``ValueError``).
"""

from __future__ import annotations

import signal
import types


class LrcError(Exception):
    """Bad input the user can fix; the CLI shows the message (no traceback) and exits 2."""

    exit_code = 2


class ConfigError(LrcError, ValueError):
    """One or more config problems; ``.problems`` lists them, ``str()`` shows them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} config problem(s):\n  " + "\n  ".join(self.problems))


class MissingInputError(LrcError, FileNotFoundError):
    """A file or folder the run needs (corpus, tokenizer, annotations) is not there."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped ``lrc fit`` (lrc/train/interrupt.py). Not an
    input error: the run saved its state and can be resumed; the CLI exits with 128 + the signal
    number: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"{signal.Signals(signum).name} received")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class MissingDependencyError(LrcError, ImportError):
    """An optional package that a plugin or command needs is not installed; the message says which extra of
    lrc installs it (``pip install "lrc-video[tpo]"``)."""


def require(module: str, needed_by: str, extra: str | None = None, package: str | None = None) -> types.ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingDependencyError` saying what needs it and the
    pip command that installs it: ``extra`` names lrc's optional dependency group (pyproject.toml), else
    ``package`` (default: ``module``) is installed by name. Only the module itself being absent is turned into
    this error; a package that is installed but fails to import keeps its own error (a broken install)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        root = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != root:
            raise
        raise missing_dependency(needed_by, extra, package or root) from None


def not_installed(module: str, needed_by: str, extra: str | None = None, package: str | None = None) -> list[str]:
    """``[what to install]`` when ``module`` is not installed, else ``[]``, without importing it: for a plugin's
    ``check_args``, so that ``lrc validate`` reports a missing extra before anything is built."""
    import importlib.util

    root = module.split(".")[0]
    return [] if importlib.util.find_spec(root) is not None else [str(missing_dependency(needed_by, extra,
                                                                                          package or root))]


def missing_dependency(needed_by: str, extra: str | None, package: str) -> MissingDependencyError:
    """The error for an optional ``package`` that is not installed (see :func:`require`)."""
    from lrc import DISTRIBUTION

    how = f'pip install "{DISTRIBUTION}[{extra}]"' if extra else f"pip install {package}"
    return MissingDependencyError(f"{needed_by} needs the Python package {package!r}, which is not installed in this "
                                  f"environment. Install it with: {how}")
