"""User errors and exit codes: one clear line for the user, never a traceback, for every mistake the user can fix.

A ``UserError`` is bad input or a bad flag: the message names the file (and line or sample id) and says what
was expected. Scripts turn it, and the usual I/O and format errors, into ``<script>: error: <message>`` on
stderr and a documented exit code (docs/RELIABILITY.md). ``MAGIC_DEBUG=1`` re-raises, with the traceback.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Mapping

# Exit codes. argparse exits with 2 on a bad flag; user errors of main.py and test_evaluation.py use the same
# code. The steps 2-6 scripts (LLM_inference/, data/add_memory_motivation.py) exit with EXIT_BAD_INPUT on bad
# input and keep 2 for a bad flag, as they always did (see docs/RELIABILITY.md).
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """Bad input or flags; the message is the whole story (file, place, what was expected)."""


class OutputExistsError(UserError, FileExistsError):
    """An output path holds something this step did not write; refusing to replace it."""


def describe(exc: BaseException) -> str:
    """One line for a user-facing error: the message, with the file for OS errors (disk full, permissions)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}: {exc.reason})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}disk full (no space left on device); free space and rerun the same command"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())  # one line


# Errors that are the user's to fix (input files, flags, folders, disk space); anything else is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError,
                                                 IsADirectoryError, PermissionError, FileExistsError, OSError)


def run_main(prog: str, fn: Callable[[], int | None], code: int = EXIT_USER_ERROR,
             extra: tuple[type[BaseException], ...] = (),
             codes: Mapping[type[BaseException], int] | None = None) -> int:
    """Run a script's body: user errors (and ``extra`` exception types, e.g. RuntimeError for "--device cuda
    without CUDA") become one ``<prog>: error: ...`` line and exit code ``code``; Ctrl-C exits 130.
    ``codes`` gives a distinct condition its own exit code, reported the same way (e.g. chat.py's
    ``{StrategyError: 1}``: a turn failed, not the input); the first type that matches wins.
    ``MAGIC_DEBUG=1`` lets the exception through, with its traceback. The body's own return value (None: 0)
    is the exit code otherwise; argparse's SystemExit passes through."""
    codes = dict(codes or {})
    try:
        rc = fn()
        return EXIT_OK if rc is None else rc
    except KeyboardInterrupt:
        if os.environ.get("MAGIC_DEBUG"):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS + tuple(extra) + tuple(codes) as e:
        if os.environ.get("MAGIC_DEBUG"):
            raise
        hint = "" if isinstance(e, (UserError, OSError)) else " (MAGIC_DEBUG=1 shows the traceback)"
        print(f"{prog}: error: {describe(e)}{hint}", file=sys.stderr)
        return next((c for kind, c in codes.items() if isinstance(e, kind)), code)
