"""Asking an LLM many prompts without wasting money: an answer cache and an OpenAI-compatible runner.

Shared by motivation collection (``LLM_inference/collect_motivations_ChatGPT.py``) and strategy
inference's ``--backend openai``.

* ``JsonlCache``: append-only JSON-lines file of answers, one ``{"id", "key", "answer"}`` per line, each
  flushed and fsynced. A run killed with ``kill -9`` loses at most the requests in flight; the next run
  reads the cache and asks only for what is missing. The API key is never written to it.
* ``prompt_key``: sha256 of the prompt, the model and the sampling parameters that change the answer, so
  an answer is reused only for the same question to the same model.
* ``run_chat_requests``: one user message per item against any OpenAI-compatible server (OpenAI, vLLM,
  llama.cpp server, Ollama), in a thread pool with a client-side requests-per-minute cap; our own retry
  loop (exponential backoff with jitter, ``Retry-After`` honoured) on 429, 5xx, timeouts, connection
  errors and malformed answers; 400/401/403/404 stop the whole run at once (they would fail for every
  prompt, and a wrong model name or key must not be "retried" 10,000 times).
* ``run_local_requests``: the same contract with a local transformers model (``magic.llm.engines.hf``).

Secrets: every error text that may be printed or stored goes through ``scrub`` first.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

try:
    import fcntl  # POSIX only; used to refuse two runs appending to one cache
except ImportError:  # pragma: no cover - Windows
    fcntl = None


# --------------------------------------------------------------------------------------------------
# Secrets.
_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),  # OpenAI-style keys, even ones we were not told about
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{6,}"),
)


# Placeholder keys for servers without auth (not secrets; scrubbing them would garble messages).
DUMMY_KEYS = frozenset({"EMPTY"})


def scrub(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with every given secret (and anything that looks like an API key) replaced by ``***``."""
    s = str(text)
    for secret in secrets:
        if not secret or secret in DUMMY_KEYS:
            continue
        # whatever its length, a key is never printed: from 4 characters every occurrence is replaced (a
        # garbled word is cheaper than a leaked key); shorter ones wherever they stand as a token of their own
        if len(secret) >= 4:
            s = s.replace(secret, "***")
        else:
            s = re.sub(r"(?<![A-Za-z0-9_\-])" + re.escape(secret) + r"(?![A-Za-z0-9_\-])", "***", s)
    s = _SECRET_PATTERNS[0].sub("sk-***", s)
    s = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "***", s)
    return s


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
    """The cache key ``run_chat_requests`` uses for one prompt (the endpoint counts unless it is "chat")."""
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
    """The cache key ``run_local_requests`` uses for one prompt (sampling knobs count only when sampling)."""
    return prompt_key(prompt, local_model_id(model_name_or_path), template=template,
                      max_new_tokens=max_new_tokens, do_sample=do_sample or None,
                      top_k=top_k if do_sample else None, temperature=temperature if do_sample else None)


class CacheFormatError(ValueError):
    """A cache line (other than a torn last one) is not a valid record; the message names file and line."""


class JsonlCache:
    """Append-only JSONL answer cache: ``{"id": str, "key": str, "answer": str}`` per line.

    * ``get(id, key)`` returns the cached answer or None; the first line for an (id, key) wins, later
      duplicates are ignored (so a rerun can never change an answer that was already used).
    * ``put(id, key, answer)`` appends one line, flushes and fsyncs it (thread-safe).
    * A torn last line (the process was killed while writing it) is dropped and the file truncated to the
      last complete line before anything is appended. A bad line in the middle is not the result of a
      kill, so it is an error naming the file and line.
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
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            raw = f.read()
        good_end = 0  # byte offset just after the last complete, valid line
        pos = 0
        line_no = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            end = len(raw) if nl < 0 else nl + 1
            line = raw[pos:end]
            line_no += 1
            is_last = end >= len(raw)
            record = self._parse(line) if line.strip() else "blank"
            if record is None:
                if is_last:
                    # the write of this line was interrupted: forget it, it is re-requested
                    self.dropped_torn_line = True
                    break
                raise CacheFormatError(
                    f"{self.path}:{line_no}: not a cache record; expected a JSON object with string "
                    "'id', 'key' and 'answer' on one line (delete the line or the file to re-request it)")
            if record != "blank":
                if nl < 0:  # complete JSON but no newline: the newline itself was torn off
                    self.dropped_torn_line = True
                    break
                rid, key, answer = record
                self._data.setdefault((rid, key), answer)
            good_end = end
            pos = end
        if good_end < len(raw) and not self.readonly:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    @staticmethod
    def _parse(line: bytes):
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(obj, dict):
            return None
        rid, key, answer = obj.get("id"), obj.get("key"), obj.get("answer")
        if not (isinstance(rid, str) and isinstance(key, str) and isinstance(answer, str)):
            return None
        return rid, key, answer

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


class FatalRequestError(RuntimeError):
    """A non-retryable error (bad request, bad key, no permission, unknown model): the run stops."""

    def __init__(self, message: str, status: int | None = None, item_id: str | None = None,
                 result: "ChatRunResult | None" = None):
        super().__init__(message)
        self.status = status
        self.item_id = item_id
        self.result = result  # what the run had answered and failed when it stopped


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


FATAL_STATUS_HINTS = {
    400: "bad request (check --model, --max_tokens, --temperature, and that the prompt fits the context)",
    401: "authentication failed (check OPENAI_API_KEY)",
    403: "permission denied (the key may not have access to this model or region)",
    404: "not found (check --model and --base_url, which should end in /v1)",
}


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt + 1``: ``min(cap, base * 2**attempt)`` with full-range jitter in
    [0.5, 1.5)x. A positive ``Retry-After`` from the server replaces it (we come back when asked, plus up
    to 10 % jitter, neither earlier nor after a long exponential wait)."""
    rng = rng or random
    delay = min(cap, base * (2 ** attempt)) * (0.5 + rng.random())
    if retry_after is not None:
        # honour it, with a little jitter so that many threads told "1 s" do not return in lockstep
        delay = max(delay if retry_after <= 0 else 0.0, retry_after * (1.0 + 0.1 * rng.random()))
    return delay


class RateLimiter:
    """Client-side cap of ``rpm`` request starts per minute, spaced evenly (thread-safe); None = no cap."""

    def __init__(self, rpm: float | None):
        if rpm is not None and rpm <= 0:
            raise ValueError(f"rpm must be > 0, got {rpm}")
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until a request may start; False when ``stop`` was set while waiting."""
        if not self.interval:
            return not (stop and stop.is_set())
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - time.monotonic()
        if delay > 0:
            if stop is not None:
                return not stop.wait(delay)
            time.sleep(delay)
        return not (stop and stop.is_set())


# --------------------------------------------------------------------------------------------------
# The OpenAI-compatible runner.
def make_openai_client(base_url: str | None, api_key: str, timeout: float, concurrency: int = 8):
    """An ``openai.OpenAI`` client without its own retries (ours count, jitter and report them)."""
    from openai import OpenAI

    kwargs = {"api_key": api_key, "max_retries": 0, "timeout": timeout}
    if base_url:
        kwargs["base_url"] = base_url
    return OpenAI(**kwargs)


def _classify(exc: BaseException, secrets: Sequence[str]) -> BaseException:
    """Map an exception of one attempt to _Retryable or FatalRequestError (messages scrubbed)."""
    import openai

    if isinstance(exc, (_Retryable, FatalRequestError)):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return _Retryable(f"timeout: {scrub(exc, secrets)}")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({scrub(cause, secrets)})" if cause else ""
        return _Retryable(f"connection error: {scrub(exc, secrets)}{detail}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = scrub(getattr(exc, "message", exc), secrets)
        if status in (408, 409, 429) or status >= 500:
            return _Retryable(f"HTTP {status}: {message}", parse_retry_after(exc.response.headers))
        hint = FATAL_STATUS_HINTS.get(status, "client error")
        return FatalRequestError(f"HTTP {status} {hint}: {message}", status=status)
    if isinstance(exc, openai.APIResponseValidationError) or isinstance(exc, (ValueError, KeyError, TypeError,
                                                                                 AttributeError, IndexError)):
        # json.JSONDecodeError is a ValueError: the server sent something that is not a chat completion
        return _Retryable(f"malformed response: {type(exc).__name__}: {scrub(exc, secrets)}")
    return _Retryable(f"{type(exc).__name__}: {scrub(exc, secrets)}")


def _extract_answer(completion, endpoint: str = "chat") -> str:
    if isinstance(completion, (str, bytes)):
        raise ValueError(f"expected a completion object, got text {str(completion)[:80]!r}")
    choices = getattr(completion, "choices", None)
    if not choices:
        raise ValueError("response has no choices")
    content = choices[0].message.content if endpoint == "chat" else choices[0].text
    if not isinstance(content, str) or not content.strip():
        raise ValueError(f"empty answer (finish_reason={getattr(choices[0], 'finish_reason', None)!r})")
    return content


class _Progress:
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


def run_chat_requests(
    items: Sequence[tuple[str, str]],
    *,
    model: str,
    base_url: str | None = None,
    api_key: str,
    temperature: float | None = None,
    max_tokens: int | None = None,
    concurrency: int = 8,
    rpm: float | None = None,
    max_retries: int = 6,
    timeout: float = 60.0,
    cache: JsonlCache | None = None,
    desc: str = "requests",
    backoff_base: float = 1.0,
    backoff_cap: float = 60.0,
    client=None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    endpoint: str = "chat",
) -> ChatRunResult:
    """Answer ``items`` = [(id, user prompt), ...] with one chat request each; return answers and failures.

    ``endpoint="completions"``: each prompt is sent as it is to ``/v1/completions`` (no chat template on
    the server: the caller has already applied the training template and written out any BOS), with
    ``add_special_tokens: false`` so that a server honouring it (vLLM) adds no BOS of its own.

    Cached answers (same id, same ``prompt_key``) are not requested again. Every new answer is put in the
    cache the moment it arrives. ``temperature`` / ``max_tokens`` None = not sent (the server's default).
    An item that still fails after ``max_retries`` retries is reported in ``failed`` and the run goes on; a
    non-retryable error raises FatalRequestError after the requests in flight have finished (their answers
    are cached), and nothing new is started.
    """
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate item id {dup!r}: every prompt needs its own id")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if endpoint not in ("chat", "completions"):
        raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
    secrets = [api_key]
    log = log or (lambda msg: print(msg, file=sys.stderr))

    keys = {i: chat_prompt_key(p, model, temperature, max_tokens, endpoint) for i, p in items}
    answers: dict[str, str] = {}
    todo: list[tuple[str, str]] = []
    for i, p in items:
        cached = cache.get(i, keys[i]) if cache is not None else None
        if cached is not None:
            answers[i] = cached
        else:
            todo.append((i, p))
    result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
    if not todo:
        return result

    if client is None:
        client = make_openai_client(base_url, api_key, timeout, concurrency)
    limiter = RateLimiter(rpm)
    stop = threading.Event()
    fatal: list[FatalRequestError] = []
    rng = random.Random()
    rng_lock = threading.Lock()
    bar = _Progress(total=len(items), initial=len(answers), desc=desc, disable=progress is False or None)
    results_lock = threading.Lock()
    started: set[str] = set()

    extra = {}
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    if endpoint == "completions":
        # the caller sends exactly the text to tokenise (BOS written out when the model was trained with one):
        # servers that honour it (vLLM) must add no special token of their own; others ignore the field
        extra["extra_body"] = {"add_special_tokens": False}

    def one(item_id: str, prompt: str) -> None:
        if stop.is_set():
            return
        with results_lock:
            started.add(item_id)
        attempt = 0
        while True:
            if not limiter.acquire(stop):
                with results_lock:
                    started.discard(item_id)  # never sent: count it as not attempted
                return
            try:
                if endpoint == "chat":
                    completion = client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": prompt}], **extra)
                else:
                    completion = client.completions.create(model=model, prompt=prompt, **extra)
                answer = _extract_answer(completion, endpoint)
            except Exception as exc:  # noqa: BLE001 - classified below; nothing escapes unscrubbed
                err = _classify(exc, secrets)
                if isinstance(err, FatalRequestError):
                    err.item_id = item_id
                    with results_lock:
                        fatal.append(err)
                        result.failed[item_id] = str(err)
                    stop.set()
                    bar.add(failed=1)
                    return
                if attempt >= max_retries:
                    with results_lock:
                        result.failed[item_id] = f"{err} (gave up after {attempt + 1} attempts)"
                    bar.add(failed=1)
                    return
                with rng_lock:
                    delay = backoff_delay(attempt, backoff_base, backoff_cap, err.retry_after, rng)
                attempt += 1
                with results_lock:
                    result.retried += 1
                bar.add(retried=1)
                if stop.wait(delay):
                    with results_lock:
                        result.failed[item_id] = f"{err} (run stopped before retry)"
                    bar.add(failed=1)
                    return
                continue
            if cache is not None:
                cache.put(item_id, keys[item_id], answer)
            with results_lock:
                answers[item_id] = answer
            bar.add(done=1)
            return

    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(todo)), thread_name_prefix="llm")
    try:
        pending = {pool.submit(one, i, p) for i, p in todo}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                if not fut.cancelled():
                    fut.result()  # a bug in `one` should surface, not vanish
            if stop.is_set():
                for fut in pending:
                    fut.cancel()
    except BaseException:
        # Ctrl-C or a bug: start nothing new; requests in flight finish and are cached
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    result.requested = len(started)
    result.not_attempted = [i for i, _ in todo if i not in answers and i not in result.failed]
    if fatal:
        first = fatal[0]
        raise FatalRequestError(
            f"stopping: {first} (item {first.item_id}); {len(answers)} answers are kept"
            + (f" in {cache.path}" if cache is not None else ""), status=first.status, item_id=first.item_id,
            result=result)
    return result


# --------------------------------------------------------------------------------------------------
# The local-model runner.
def run_local_requests(
    items: Sequence[tuple[str, str]],
    *,
    model_name_or_path: str,
    template: str = "chat",
    max_new_tokens: int = 128,
    batch_size: int = 8,
    do_sample: bool = False,
    top_k: int | None = None,
    temperature: float | None = None,
    device: str | None = None,
    dtype=None,
    cache: JsonlCache | None = None,
    desc: str = "local",
    progress: bool | None = None,
    model_and_tokenizer=None,
    share_prefix: bool = True,
    stats: dict | None = None,
) -> ChatRunResult:
    """Answer ``items`` with a local causal LM (``magic.llm.engines.hf``), batched, through the same cache.

    Batches are fixed slices of ``items`` (not of the uncached remainder), so a resumed run pads every
    prompt together with the same neighbours (and shares prefixes among the same prompts) as an
    uninterrupted one, and greedy answers are identical. ``share_prefix`` and ``stats``: see
    ``local_llm.generate_batch``.
    """
    from magic.llm.engines.hf import format_prompt, generate_batch, load_causal_lm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = {i: local_prompt_key(p, model_name_or_path, template, max_new_tokens, do_sample, top_k, temperature)
            for i, p in items}
    answers: dict[str, str] = {}
    for i, _ in items:
        cached = cache.get(i, keys[i]) if cache is not None else None
        if cached is not None:
            answers[i] = cached
    result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
    batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
    batches = [b for b in batches if any(i not in answers for i, _ in b)]
    if not batches:
        return result
    model, tokenizer = model_and_tokenizer or load_causal_lm(model_name_or_path, device=device, dtype=dtype)
    bar = _Progress(total=len(items), initial=len(answers), desc=desc, disable=progress is False or None)
    try:
        for batch in batches:
            texts = [format_prompt(tokenizer, p, template) for _, p in batch]
            outs = generate_batch(model, tokenizer, texts, max_new_tokens, do_sample=do_sample, top_k=top_k,
                                  temperature=temperature, share_prefix=share_prefix, stats=stats)
            new = 0
            for (i, _), out in zip(batch, outs):
                if i in answers:
                    continue  # cached before a kill mid-batch; the first answer wins
                if cache is not None:
                    cache.put(i, keys[i], out)
                answers[i] = out
                new += 1
            result.requested += new
            bar.add(done=new)
    finally:
        bar.close()
    return result
