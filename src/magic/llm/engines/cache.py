"""The answer cache every LLM backend shares (motivations, strategy inference, the chat).

* ``JsonlCache``: append-only JSON-lines file of answers, one ``{"id", "key", "answer"}`` per line, each
  flushed and fsynced. A run killed with ``kill -9`` loses at most the requests in flight; the next run
  reads the cache and asks only for what is missing. The API key is never written to it.
* ``prompt_key``: sha256 of the prompt, the model and the sampling parameters that change the answer, so
  an answer is reused only for the same question to the same model (``chat_prompt_key`` for servers,
  ``local_prompt_key`` for local folders, which includes a fingerprint of the weights).
* ``ChatRunResult``: what a backend's run returns (answers, failures, counts); ``Progress``: its bar.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field

from magic.common.errors import UserError
from magic.common.jsonl import read_jsonl

try:
    import fcntl  # POSIX only; used to refuse two runs appending to one cache
except ImportError:  # pragma: no cover - Windows
    fcntl = None


# --------------------------------------------------------------------------------------------------
# Cache.
def prompt_key(prompt: str, model: str, **params) -> str:
    """sha256 (hex) of the prompt, the model and the answer-changing parameters.

    Parameters that are None are left out, so "not sent" and "not given" are the same key; the order of
    keyword arguments does not matter.
    """
    payload = {
        "prompt": prompt,
        "model": model,
        "params": {k: v for k, v in sorted(params.items()) if v is not None},
    }
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def chat_prompt_key(prompt: str, model: str, temperature: float | None = None,
                    max_tokens: int | None = None, endpoint: str = "chat") -> str:
    """The cache key of a server's answer to one prompt (the endpoint counts unless it is "chat")."""
    return prompt_key(prompt, model, temperature=temperature, max_tokens=max_tokens,
                      endpoint=None if endpoint == "chat" else endpoint)


def local_model_id(model_name_or_path: str | os.PathLike) -> str:
    """How a local model is named in cache keys: its absolute folder path plus a fingerprint of its weight
    files (name, size, modification time), so re-exporting a model into the same folder never reuses the old
    model's answers (a copied or touched folder only costs a recomputation). A hub id is used as it is."""
    path = os.path.abspath(os.fspath(model_name_or_path))
    if not os.path.isdir(path):
        return "local:" + os.fspath(model_name_or_path)
    return "local:" + path + ":" + _weights_fingerprint(path)


def _weights_fingerprint(folder: str) -> str:
    stats = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".safetensors", ".bin", ".pt", ".pth", ".gguf")) or name == "config.json":
            st = os.stat(os.path.join(folder, name))
            stats.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(stats).encode()).hexdigest()[:16]


def local_prompt_key(prompt: str, model_name_or_path: str | os.PathLike, template: str, max_new_tokens: int,
                     do_sample: bool = False, top_k: int | None = None, temperature: float | None = None) -> str:
    """The cache key of the local engine (engines/hf.py) for one prompt (sampling knobs count only when sampling)."""
    return prompt_key(prompt, local_model_id(model_name_or_path), template=template,
                      max_new_tokens=max_new_tokens, do_sample=do_sample or None,
                      top_k=top_k if do_sample else None, temperature=temperature if do_sample else None)


def _cache_record(obj) -> tuple[str, str, str]:
    if not (isinstance(obj, dict) and all(isinstance(obj.get(k), str) for k in ("id", "key", "answer"))):
        raise ValueError("expected a JSON object with string 'id', 'key' and 'answer'")
    return obj["id"], obj["key"], obj["answer"]


class CacheFormatError(UserError):
    """A cache line (other than a torn last one) is not a valid record; the message names file and line."""


class JsonlCache:
    """Append-only JSONL answer cache: ``{"id": str, "key": str, "answer": str}`` per line.

    * ``get(id, key)`` returns the cached answer or None; the first line for an (id, key) wins, later
      duplicates are ignored (so a rerun can never change an answer that was already used).
    * ``put(id, key, answer)`` appends one line, flushes and fsyncs it (thread-safe).
    * Read by magic.common.jsonl's rule: a torn last line (the process was killed while writing it) is dropped
      and the file truncated to the last complete line before anything is appended; a bad line in the middle
      is not the result of a kill, so it is an error naming the file and line.
    * An exclusive advisory lock (POSIX) refuses a second process appending to the same cache.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = os.fspath(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], str] = {}
        self._fh = None
        self.dropped_torn_line = False
        self._load()
        if not readonly:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._fh = open(self.path, "ab")
            if fcntl is not None:
                try:
                    fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    self._fh.close()
                    self._fh = None
                    raise RuntimeError(f"{self.path}: the answer cache is in use by another run; "
                                       "wait for it to finish or use another --cache_file") from None

    def _load(self) -> None:
        """By magic.common.jsonl's rule: a torn last line is dropped (and cut off the file unless read-only); any
        other bad line is refused (answers cost requests)."""
        try:
            read = read_jsonl(self.path, _cache_record, on_bad="refuse", truncate=not self.readonly,
                              what="cache record", hint="delete the line or the file to re-request it")
        except UserError as e:
            raise CacheFormatError(str(e)) from None
        self.dropped_torn_line = read.torn
        for rid, key, answer in read.records:
            self._data.setdefault((rid, key), answer)

    def get(self, id: str, key: str) -> str | None:
        with self._lock:
            return self._data.get((id, key))

    def put(self, id: str, key: str, answer: str) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path}: cache opened read-only or closed")
        if not isinstance(answer, str):
            raise TypeError(f"answer for {id!r} must be a string, got {type(answer).__name__}")
        line = json.dumps({"id": id, "key": key, "answer": answer}, ensure_ascii=False) + "\n"
        with self._lock:
            if (id, key) in self._data:
                return  # first answer wins; never write a duplicate
            try:
                self._fh.write(line.encode("utf-8"))
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as e:  # disk full: name the file; a torn line is dropped by the next run
                raise OSError(e.errno, e.strerror, self.path) from None
            self._data[(id, key)] = answer

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.close()  # closing releases the flock
                except OSError:
                    # the buffered rest of a failed put (disk full) cannot be written either; put already
                    # raised the error, and the torn line is dropped when the cache is next opened
                    pass

    def __enter__(self) -> "JsonlCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Results and errors.
@dataclass
class ChatRunResult:
    answers: dict[str, str]  # id -> answer, cached ones included
    failed: dict[str, str]  # id -> scrubbed error message of the last attempt
    retried: int = 0  # attempts that were retried, over all items
    from_cache: int = 0  # answers that came from the cache without a request
    requested: int = 0  # items sent to the model in this run (answered or failed)
    not_attempted: list[str] = field(default_factory=list)  # ids skipped because the run was stopped


class Progress:
    """tqdm bar with done / failed / retried in the postfix (thread-safe counters)."""

    def __init__(self, total: int, initial: int, desc: str, disable: bool | None):
        from tqdm import tqdm

        self.lock = threading.Lock()
        self.done, self.failed, self.retried = initial, 0, 0
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="prompt", disable=disable,
                        dynamic_ncols=True, file=sys.stderr)
        self._postfix()

    def _postfix(self):
        self.bar.set_postfix(done=self.done, failed=self.failed, retried=self.retried, refresh=False)

    def add(self, done: int = 0, failed: int = 0, retried: int = 0):
        with self.lock:
            self.done += done
            self.failed += failed
            self.retried += retried
            self._postfix()
            if done or failed:
                self.bar.update(done + failed)
            else:
                self.bar.refresh()

    def close(self):
        self.bar.close()
