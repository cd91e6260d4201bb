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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            raise OSError(e.errno, e.strerror, path) from None  # name the file (e.g. disk full)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """``json.dumps(obj, ensure_ascii=False, indent=indent)`` written atomically (no trailing newline,
    like the released files)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent))


# Written into every folder atomic_dir builds: it may later replace that folder, and only such a folder.
OUTPUT_MARKER = ".magic_output"
# Files of the model folders this project wrote before the marker existed (checkpoints, exports, last/):
# a folder holding only such files is recognised as ours too.
_MODEL_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pth", "*.pt", "config.json",
                        "generation_config.json", "args.json", "tokenizer*", "vocab.*", "merges.txt",
                        "special_tokens_map.json", "added_tokens.json", "chat_template.*", "*.model")


def is_own_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder atomic_dir may replace: empty, marked as written by it, or holding only
    model-folder files (checkpoints and exports written before the marker)."""
    import fnmatch

    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    if not names or OUTPUT_MARKER in names:
        return True
    return all(os.path.isfile(os.path.join(path, n)) and any(fnmatch.fnmatch(n, p) for p in _MODEL_FILE_PATTERNS)
               for n in names)


def check_replaceable(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite_output_dir") -> None:
    """Refuse (OutputExistsError) to replace ``path`` unless it is absent, ours (is_own_output) or
    ``overwrite``. Call it before any work, so a long run never ends in a refusal."""
    from magic.common.errors import OutputExistsError

    path = os.fspath(path)
    if overwrite or not os.path.lexists(path) or is_own_output(path):
        return
    what = "a file" if not os.path.isdir(path) else "a folder this step did not write"
    raise OutputExistsError(f"{path}: exists and is {what} (no {OUTPUT_MARKER} marker); refusing to replace "
                            f"it: choose another output path, or pass {flag} to replace it")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Build a folder atomically: yields a temporary folder beside ``path``; when the block finishes, the
    folder replaces ``path`` (an older ``path`` is kept until the swap); when it raises, it is removed.
    So an interrupted model export or checkpoint never leaves a half-written folder under ``path``.

    Only a folder atomic_dir wrote itself (it holds the ``.magic_output`` marker; see is_own_output) is
    replaced; anything else at ``path`` is refused before the block runs, unless ``overwrite``."""
    path = os.path.abspath(os.fspath(path))
    check_replaceable(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".")
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; model folders are meant to be shared
    try:
        yield tmp
        with open(os.path.join(tmp, OUTPUT_MARKER), "w", encoding="utf-8") as f:
            f.write("written by the MAGIC reproduction; this folder may be replaced by the step that wrote it\n")
        check_replaceable(path, overwrite)  # something may have appeared there while the block ran
        old = None
        if os.path.lexists(path):
            old = tmp + ".old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.unlink(old)
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
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected a {what} "
                             "in UTF-8") from None


def load_weights(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only, so a
    file with arbitrary pickled code is refused, with an error naming it (never executed)."""
    import pickle

    import torch

    path = os.fspath(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: refused to load (not plain tensors; weights_only=True: {first})") from None
    except (EOFError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "PytorchStreamReader" not in str(e) and "zip" not in str(e):
            raise
        raise ValueError(f"{path}: not a readable torch file (truncated or corrupt: {e})") from None


def plain_warnings() -> None:
    """Show ``warnings.warn`` messages to script users as ``warning: <message>`` lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)
    warnings.showwarning = show
