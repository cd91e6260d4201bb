"""Small I/O helpers shared by every step: atomic writes, so nothing half-written is left behind."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from typing import Any

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
