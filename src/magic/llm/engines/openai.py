"""OpenAI-compatible servers (OpenAI, vLLM, llama.cpp server, Ollama): the request runner of motivation
collection, strategy inference's ``--backend openai`` and the chat.

* ``run_chat_requests``: one request per item (``/v1/chat/completions`` with the raw instruction, or
  ``/v1/completions`` with the templated prompt), in a thread pool with a client-side requests-per-minute
  cap; our own retry loop (exponential backoff with jitter, ``Retry-After`` honoured) on 429, 5xx, timeouts,
  connection errors and malformed answers; 400/401/403/404 stop the whole run at once (they would fail for
  every prompt, and a wrong model name or key must not be "retried" 10,000 times). Answers go through the
  shared cache (``magic.llm.engines.cache``).

Secrets: every error text that may be printed or stored goes through ``scrub`` first.
"""
from __future__ import annotations

import email.utils
import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Sequence

from magic.common.validate import check_api_key
from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, JsonlCache, Progress, chat_prompt_key
from magic.llm.local_model import EncodingRule, format_prompt


# --------------------------------------------------------------------------------------------------
# Secrets.
_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),  # OpenAI-style keys, even ones we were not told about
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{6,}"),
)


# Placeholder keys for servers without auth (not secrets; scrubbing them would garble messages).
DUMMY_KEYS = frozenset({"EMPTY"})


# Where a key is cut into fragments: the characters a rendering escapes (repr, JSON, bytes) or a header splits at
# (line breaks, spaces, control and non-ASCII characters), quotes and backslashes.
_KEY_SPLIT = re.compile(r"[^\x21-\x7e]+|[\\'\"]+")


def secret_forms(secret: str) -> list[str]:
    """Every text under which ``secret`` may stand in a message, longest first: itself, as repr, JSON and a
    bytes repr write it (escaped line breaks, control and non-ASCII characters), and each fragment of these
    between the characters such renderings escape or a header splits at (``sk-AB\\nCD`` -> ``sk-AB``, ``CD``)."""
    whole = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             repr(secret.encode("utf-8", "backslashreplace"))[2:-1]}
    forms = set(whole)
    for form in whole:
        forms.update(p for p in _KEY_SPLIT.split(form) if p)
    return sorted(forms, key=len, reverse=True)


def scrub(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with every given secret (and anything that looks like an API key) replaced by ``***``:
    the whole secret and every fragment of it (``secret_forms``: a key with a line break shows in errors as
    ``b'Bearer sk-AB\\nCD'``, or split at the break)."""
    s = str(text)
    for secret in secrets:
        if not secret or secret in DUMMY_KEYS:
            continue
        for form in secret_forms(secret):
            # whatever its length, a key is never printed: from 4 characters every occurrence is replaced (a
            # garbled word is cheaper than a leaked key); shorter ones wherever they stand as a token of their own
            if len(form) >= 4:
                s = s.replace(form, "***")
            else:
                s = re.sub(r"(?<![A-Za-z0-9_\-])" + re.escape(form) + r"(?![A-Za-z0-9_\-])", "***", s)
    s = _SECRET_PATTERNS[0].sub("sk-***", s)
    s = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "***", s)
    return s


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

    check_api_key(api_key)  # a key that cannot be a header value: refused here, never sent nor printed
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
    bar = Progress(total=len(items), initial=len(answers), desc=desc, disable=progress is False or None)
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


class OpenAIEngine(Engine):
    """Any OpenAI-compatible server. ``endpoint="chat"``: the raw instruction as the user message (the server
    applies the model's chat template); ``"completions"``: the instruction wrapped in the training template
    here (with the BOS string when the model was fine-tuned with one: its magic_encoding.json; released:
    none), sent as it is, so the server sees exactly the training format."""

    name = "openai"

    def __init__(self, model_path: str, generation: Generation, base_url: str | None = None,
                 model: str | None = None, endpoint: str = "chat", concurrency: int = 8, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 6, backoff_cap: float = 60.0, rpm: float | None = None):
        super().__init__(model_path, generation)
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"unknown openai endpoint {endpoint!r}; expected 'chat' or 'completions'")
        self.rpm = rpm
        self.base_url, self.model, self.endpoint, self.concurrency = base_url, model or model_path, endpoint, concurrency
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        check_api_key(self.api_key)  # before the first request (ApiKeyError: one line, no part of the key)
        self.timeout, self.max_retries, self.backoff_cap = timeout, max_retries, backoff_cap
        self._tokenizer = None

    def tokenizer(self):
        """The model folder's tokenizer: its chat template (``--template chat``) and BOS string (completions)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            if not os.path.isdir(self.model_path):
                raise ValueError(f"--openai_endpoint completions with --template {self.generation.template} reads "
                                 f"the tokenizer from --model_path, but {self.model_path} is not a model folder")
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def sent(self, prompt: str) -> str:
        """What goes to the server for ``prompt`` (and what its cache key is made of)."""
        if self.endpoint == "chat":
            return prompt
        template = self.generation.template
        text = format_prompt(self.tokenizer() if template == "chat" else None, prompt, template)
        rule = EncodingRule.load(self.model_path) if os.path.isdir(self.model_path) else EncodingRule()
        if rule.add_bos:
            bos = self.tokenizer().bos_token
            if bos and not text.startswith(bos):
                text = bos + text
        return text

    def key(self, prompt: str) -> str:
        g = self.generation
        return chat_prompt_key(self.sent(prompt), self.model, g.temperature if g.do_sample else 0.0, g.max_new_tokens,
                               self.endpoint)

    def answer(self, items, *, cache=None, desc="", progress=None, stats=None) -> ChatRunResult:
        g = self.generation
        sent = [(i, self.sent(p)) for i, p in items]
        return run_chat_requests(sent, model=self.model, base_url=self.base_url, endpoint=self.endpoint,
                                 api_key=self.api_key, temperature=g.temperature if g.do_sample else 0.0,
                                 max_tokens=g.max_new_tokens, concurrency=self.concurrency, timeout=self.timeout,
                                 max_retries=self.max_retries, backoff_cap=self.backoff_cap, rpm=self.rpm, cache=cache,
                                 desc=desc or "requests", progress=progress, log=None if progress is not False else
                                 (lambda msg: None))

    def check(self) -> str | None:
        """None when the server answers a model listing, else a one-line reason (secrets scrubbed)."""
        try:
            make_openai_client(self.base_url, self.api_key, timeout=min(self.timeout, 5.0)).models.list()
        except Exception as e:  # noqa: BLE001 - any failure is reported as one line
            cause = e.__cause__ or e.__context__
            detail = f" ({scrub(cause, [self.api_key])})" if cause else ""
            return f"{type(e).__name__}: {scrub(e, [self.api_key])}{detail}".splitlines()[0]
        return None
