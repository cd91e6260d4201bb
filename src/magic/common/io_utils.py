"""Small I/O helpers shared by every step: atomic writes, so nothing half-written is left behind; what an
output path may be (output_target: the one rule of every file writer)."""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import pickle
import shutil
import socket
import sys
import tempfile
import warnings
from typing import Any, Iterator

from magic.common.errors import OutputExistsError, UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _same_file(st: os.stat_result, fd_or_path: int | str) -> bool:
    try:
        other = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def output_target(path: str | os.PathLike) -> tuple[str, int | None, int | None]:
    """THE rule of every file writer (atomic_write_text and what builds on it): what writing ``path`` means ->
    (the file to replace, the mode to give it, or a file descriptor to write through).

    * absent: a new file, mode 0666 & ~umask (the usual permissions);
    * a regular file: replaced atomically, keeping its permission bits (a file made private stays private);
    * a symlink: followed on purpose: its target is written (replaced, keeping the target's mode), the link kept;
    * this process's stdout or stderr (``/dev/stdout``, ``/dev/stderr``, ``/proc/self/fd/1``, or any path to
      the same stream): written through (fd 1 or 2), never replaced; ``/dev/null`` likewise (discarded);
    * anything else (a folder, a FIFO, a character or block device such as /dev/full, a socket): refused, one
      UserError naming it: renaming a file over it would destroy the node (as root), and opening a FIFO
      waits for a reader."""
    import stat

    path = os.fspath(path)
    try:
        st = os.stat(path)  # follows symlinks
    except (FileNotFoundError, NotADirectoryError):  # absent (under a file: the writer names the error)
        if os.path.islink(path):  # a dangling symlink: its target is created
            return os.path.realpath(path), 0o666 & ~_UMASK, None
        return path, 0o666 & ~_UMASK, None
    for fd in (1, 2):
        if _same_file(st, fd):
            return path, None, fd
    if stat.S_ISREG(st.st_mode):
        # its permission bits (not setuid / setgid: new content is not the program the bits were given to)
        return (os.path.realpath(path) if os.path.islink(path) else path), st.st_mode & 0o777, None
    if stat.S_ISCHR(st.st_mode) and _same_file(st, os.devnull):
        return path, None, -1
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise UserError(f"{path}: is {kind}; refusing to write over it (an output is a regular file, /dev/stdout "
                    "or /dev/stderr); choose a file path")


def atomic_write_text(path: str | os.PathLike, text: str, append: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it into place; what
    stands at ``path`` is handled by output_target (symlinks followed, the mode of an existing file kept,
    stdout / stderr written through, devices, FIFOs and folders refused). ``append``: after the file's
    current content (a line break added if it lacks one), still through a temporary file and a rename."""
    path = os.fspath(path)
    target, mode, fd = output_target(path)
    if fd is not None:  # a stream of this process (or /dev/null): written through, never renamed over
        if fd >= 0:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
        return
    if append and os.path.isfile(target):
        with open(target, encoding="utf-8") as f:
            old = f.read()
        text = (old + "\n" if old and not old.endswith("\n") else old) + text
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600: the existing file's mode, else the usual permissions
        os.replace(tmp, target)
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
# a folder holding only such files, one of them a file only this project writes (_OWN_FILES), is recognised as
# ours too. A model folder of anyone else (a downloaded base model: config.json, weights, tokenizer) is not.
_OWN_FILES = ("dialogue_model.pth", "training_state.pt", "magic_encoding.json", "generator_config.json")
_MODEL_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pth", "*.pt", "config.json",
                        "generation_config.json", "args.json", "tokenizer*", "vocab.*", "merges.txt",
                        "special_tokens_map.json", "added_tokens.json", "chat_template.*", "*.model")


def is_own_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder atomic_dir may replace: empty, marked as written by it, or holding only
    model-folder files, one of them a file only this project writes (checkpoints and exports written before
    the marker; a base model folder is not ours)."""
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    if not names or OUTPUT_MARKER in names:
        return True
    return any(n in _OWN_FILES for n in names) and all(
        os.path.isfile(os.path.join(path, n)) and any(fnmatch.fnmatch(n, p) for p in _MODEL_FILE_PATTERNS)
        for n in names)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_an_input(output: str | os.PathLike, out_flag: str, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse (UserError) an output (folder or file) that is, holds or lies inside one of the step's own inputs
    (``{flag: path}``), compared as resolved paths (symlinks, ``..``, a trailing slash): a step never writes
    into what it reads (``export_model.py --export_dir`` equal to ``--model_name_or_path`` replaced the base
    model). Call it before any work. Inputs that are not local paths (a hub name) never match."""
    out = os.path.realpath(os.fspath(output))
    for flag, src in inputs.items():
        if not src or not os.path.exists(src):
            continue
        src = os.path.realpath(os.fspath(src))
        if _inside(out, src) or _inside(src, out):
            how = "is" if out == src else "lies inside" if _inside(out, src) else "holds"
            raise UserError(f"{out_flag} {output}: {how} {flag} {src}, an input of this step; writing there would "
                            "replace what the step reads; choose another output folder")


def check_replaceable(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite_output_dir") -> None:
    """Refuse (OutputExistsError) to replace ``path`` unless it is absent, ours (is_own_output) or
    ``overwrite``. Call it before any work, so a long run never ends in a refusal."""
    path = os.fspath(path)
    if overwrite or not os.path.lexists(path) or is_own_output(path):
        return
    what = "a file" if not os.path.isdir(path) else "a folder this step did not write"
    raise OutputExistsError(f"{path}: exists and is {what} (no {OUTPUT_MARKER} marker); refusing to replace "
                            f"it: choose another output path, or pass {flag} to replace it")


# Written into a temporary folder of this project the moment it is created (atomic_dir's ``.<name>.*``, the
# web chat's ``magic_chat_*``): which process made it, so a later run can tell a folder left by a killed
# process (removed, and said so) from one being written now (kept). Nothing without it is ever removed.
TEMP_MARKER = ".magic_temp"


def make_temp_dir(parent: str | os.PathLike, prefix: str, mode: int = 0o700) -> str:
    """``tempfile.mkdtemp(dir=parent, prefix=prefix)`` with TEMP_MARKER (this process's id and host) in it,
    permissions ``mode``. remove_stale_temp_dirs removes it once this process no longer runs."""
    tmp = tempfile.mkdtemp(dir=os.fspath(parent), prefix=prefix)
    os.chmod(tmp, mode)
    with open(os.path.join(tmp, TEMP_MARKER), "w", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    return tmp


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # alive (another user's), or cannot tell: keep
    return False


def _stale_reason(folder: str) -> str | None:
    """Why ``folder`` (a temporary folder of this project) may be removed, or None to keep it."""
    try:
        with open(os.path.join(folder, TEMP_MARKER), encoding="utf-8") as f:
            mark = json.loads(f.read())
        pid, host = int(mark["pid"]), str(mark["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no (readable) marker: not provably ours
    if host != socket.gethostname() or pid == os.getpid() or not _pid_gone(pid):
        return None  # another machine's, our own, or its process still runs
    return f"left by an interrupted save (process {pid} on this host no longer runs)"


def remove_stale_temp_dirs(parent: str | os.PathLike, pattern: str = ".*.*") -> list[str]:
    """Remove the folders matching ``pattern`` in ``parent`` that a killed process of this project left: those
    carrying TEMP_MARKER of a process no longer running on this host, and atomic_dir's ``.<name>.*.old``
    (a replaced version, moved aside) once ``<name>`` exists again. Nothing else (no marker: not ours). Warns
    once per folder removed; returns their paths."""
    parent = os.fspath(parent)
    removed = []
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not fnmatch.fnmatch(name, pattern) or not os.path.isdir(path) or os.path.islink(path):
            continue
        reason = _stale_reason(path)
        if reason is None and name.startswith(".") and name.endswith(".old"):
            target = os.path.join(parent, name[1:].rsplit(".", 2)[0])
            if os.path.isdir(target) and os.path.exists(os.path.join(path, OUTPUT_MARKER)):
                reason = f"the previous version of {target}, left by an interrupted save"
        if reason is None:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
            warnings.warn(f"removed {path}: {reason}", stacklevel=2)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Build a folder atomically: yields a temporary folder beside ``path``; when the block finishes, the
    folder replaces ``path`` (an older ``path`` is kept until the swap); when it raises, it is removed.
    So an interrupted model export or checkpoint never leaves a half-written folder under ``path``; one
    that a kill -9 left behind is removed by the next atomic_dir in the same folder (remove_stale_temp_dirs).

    Only a folder atomic_dir wrote itself (it holds the ``.magic_output`` marker; see is_own_output) is
    replaced; anything else at ``path`` is refused before the block runs, unless ``overwrite``."""
    path = os.path.abspath(os.fspath(path))
    check_replaceable(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temp_dirs(parent)
    # mkdtemp makes it private; model folders are meant to be shared
    tmp = make_temp_dir(parent, "." + os.path.basename(path) + ".", 0o777 & ~_UMASK)
    try:
        yield tmp
        with open(os.path.join(tmp, OUTPUT_MARKER), "w", encoding="utf-8") as f:
            f.write("written by the MAGIC reproduction; this folder may be replaced by the step that wrote it\n")
        os.unlink(os.path.join(tmp, TEMP_MARKER))  # complete: from now on an output, not a temporary
        check_replaceable(path, overwrite)  # something may have appeared there while the block ran
        old = None
        if os.path.lexists(path):
            old = tmp + ".old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.lexists(old):
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


def check_finite(obj: Any, where: str) -> None:
    """Every floating-point tensor in ``obj`` (a tensor, or dicts / lists / tuples holding tensors, as a
    state_dict, the memory bank or a training state) must be finite: else a UserError naming ``where`` and
    the tensor (``model.encoder.layers.0.fc1.weight``, ``[2]`` for slot 2 of the bank, ``optimizer.state.3.exp_avg``).
    A NaN in a checkpoint loads silently and decodes empty responses that score 0."""
    import torch

    stack = [("", obj)]
    while stack:
        name, x = stack.pop()
        if isinstance(x, torch.Tensor):
            if (x.is_floating_point() or x.is_complex()) and x.numel():
                bad = int((~torch.isfinite(x)).sum())
                if bad:
                    raise UserError(f"{where}: tensor {name or '(the file itself)'} holds {bad} NaN or infinite "
                                    f"value{'s' if bad > 1 else ''} (of {x.numel()}); the file is corrupt or "
                                    "training diverged; refusing to load it")
        elif isinstance(x, dict):
            stack += [(f"{name}.{k}" if name else str(k), v) for k, v in reversed(list(x.items()))]
        elif isinstance(x, (list, tuple)):
            stack += [(f"{name}[{i}]", v) for i, v in reversed(list(enumerate(x)))]


def load_weights(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only, so a
    file with arbitrary pickled code is refused in one line naming it, "not a safe checkpoint" (never executed);
    any other unreadable file (text, truncated) is one line naming it; and every tensor in
    it finite (check_finite), so a NaN / inf in a checkpoint is refused naming the file and the tensor."""
    import torch

    path = os.fspath(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: say what it is instead
        raise UserError(f"{path}: not a safe checkpoint (it holds pickled objects other than tensors and plain "
                        "containers; refused to load it, nothing in it was run)") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError):
        raise
    except Exception as e:  # a text file: KeyError; a truncated one: EOFError, RuntimeError or OSError (zip reader)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: not a readable torch file (truncated or corrupt: {type(e).__name__}: "
                        f"{first[:160]})") from None
    check_finite(obj, path)
    return obj


def plain_warnings() -> None:
    """Show ``warnings.warn`` messages to script users as ``warning: <message>`` lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)
    warnings.showwarning = show


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> str:
    """Save a matplotlib figure as PNG atomically (a temporary file beside ``path``, then a rename), and close
    it: a reader never sees half a picture. The one PNG writer of the project."""
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    target, mode, stream = output_target(path)
    if stream is not None:
        plt.close(fig)
        raise UserError(f"{path}: a picture is written to a file, not to a stream; choose a file path")
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
