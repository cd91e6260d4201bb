"""Small I/O helpers shared by every step: atomic writes, so nothing half-written is left behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """``json.dumps(obj, ensure_ascii=False, indent=indent)`` written atomically (no trailing newline,
    like the released files)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Build a folder atomically: yields a temporary folder beside ``path``; when the block finishes, the
    folder replaces ``path`` (an older ``path`` is kept until the swap); when it raises, it is removed.
    So an interrupted model export or checkpoint never leaves a half-written folder under ``path``."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".")
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; model folders are meant to be shared
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            old = tmp + ".old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Load a JSON file; a missing or malformed file raises an error that names it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a {what}") from None


def plain_warnings() -> None:
    """Show ``warnings.warn`` messages to script users as ``warning: <message>`` lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)
    warnings.showwarning = show
