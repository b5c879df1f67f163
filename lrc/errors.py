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
