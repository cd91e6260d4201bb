"""OpenAI-compatible servers (OpenAI, vLLM, llama.cpp server, Ollama): the request runner of motivation
collection, strategy inference's ``--backend openai`` and the chat.

* ``run_chat_requests``: one request per item (``/v1/chat/completions`` with the raw instruction, or
  ``/v1/completions`` with the templated prompt), in a thread pool with a client-side requests-per-minute
  cap. Retries are the OpenAI SDK's own (``max_retries``): 408, 409, 429, 5xx, timeouts and connection errors,
  exponential backoff with jitter, ``Retry-After`` / ``retry-after-ms`` honoured up to 60 s. By hand only what
  the SDK lacks (tests/llm/test_llm_client.py, "malformed" and "empty" faults): an HTTP 200 whose body is not
  a completion, or whose answer is empty, is asked again (same ``max_retries`` budget). 400/401/403/404 stop
  the whole run at once (they would fail for every prompt, and a wrong model name or key must not be
  "retried" 10,000 times). Answers go through the shared cache (``magic.llm.engines.cache``).

Secrets: every error text that may be printed or stored goes through ``scrub`` first.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterable, Sequence

from magic.common.validate import KEYLESS_PLACEHOLDER, check_api_key, openai_api_key
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
DUMMY_KEYS = frozenset({KEYLESS_PLACEHOLDER})


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


FATAL_STATUS_HINTS = {
    400: "bad request (check --model, --max_tokens, --temperature, and that the prompt fits the context)",
    401: "authentication failed (check OPENAI_API_KEY)",
    403: "permission denied (the key may not have access to this model or region)",
    404: "not found (check --model and --base_url, which should end in /v1)",
}


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
def make_openai_client(base_url: str | None, api_key: str, timeout: float, max_retries: int = 0):
    """An ``openai.OpenAI`` client that retries transient failures itself (``max_retries`` times)."""
    from openai import OpenAI

    check_api_key(api_key)  # a key that cannot be a header value: refused here, never sent nor printed
    return OpenAI(api_key=api_key, max_retries=max_retries, timeout=timeout, base_url=base_url or None)


def _failure(exc: BaseException, secrets: Sequence[str]) -> str | FatalRequestError:
    """The scrubbed message of an attempt's failure, or the FatalRequestError that stops the run."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status, message = exc.status_code, scrub(getattr(exc, "message", exc), secrets)
        if status in FATAL_STATUS_HINTS or (400 <= status < 500 and status not in (408, 409, 429)):
            hint = FATAL_STATUS_HINTS.get(status, "client error")
            return FatalRequestError(f"HTTP {status} {hint}: {message}", status=status)
        return f"HTTP {status}: {message}"
    if isinstance(exc, openai.APITimeoutError):
        return f"timeout: {scrub(exc, secrets)}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return f"connection error: {scrub(exc, secrets)}" + (f" ({scrub(cause, secrets)})" if cause else "")
    return f"{type(exc).__name__}: {scrub(exc, secrets)}"


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
    client=None,
    progress: bool | None = None,
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

    client = client or make_openai_client(base_url, api_key, timeout, max_retries)
    limiter = RateLimiter(rpm)
    stop = threading.Event()
    fatal: list[FatalRequestError] = []
    bar = Progress(total=len(items), initial=len(answers), desc=desc, disable=progress is False or None)
    lock = threading.Lock()
    started: set[str] = set()

    extra = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
    if endpoint == "completions":
        # the caller sends exactly the text to tokenise (BOS written out when the model was trained with one):
        # servers that honour it (vLLM) must add no special token of their own; others ignore the field
        extra["extra_body"] = {"add_special_tokens": False}
    api = client.chat.completions if endpoint == "chat" else client.completions

    def send(prompt: str):
        """One call; the SDK retries transient failures inside it (``raw.retries_taken``)."""
        if endpoint == "chat":
            return api.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}], **extra)
        return api.with_raw_response.create(model=model, prompt=prompt, **extra)

    def fail(item_id: str, message: str) -> None:
        with lock:
            result.failed[item_id] = message
        bar.add(failed=1)

    def one(item_id: str, prompt: str) -> None:
        attempts = 0  # requests sent for this item
        while limiter.acquire(stop):
            with lock:
                started.add(item_id)
            try:
                raw = send(prompt)
            except Exception as exc:  # noqa: BLE001 - sorted below; nothing escapes unscrubbed
                err = _failure(exc, secrets)
                if isinstance(err, FatalRequestError):
                    err.item_id = item_id
                    with lock:
                        fatal.append(err)
                    stop.set()
                    return fail(item_id, str(err))
                return fail(item_id, f"{err} (gave up after {attempts + max_retries + 1} attempts)")
            attempts += raw.retries_taken + 1
            with lock:
                result.retried += raw.retries_taken
            bar.add(retried=raw.retries_taken)
            try:
                answer = _extract_answer(raw.parse(), endpoint)
            except Exception as exc:  # noqa: BLE001 - a 200 that is no answer: asked again, as the SDK does not
                err = f"malformed response: {type(exc).__name__}: {scrub(exc, secrets)}"
                if attempts > max_retries:
                    return fail(item_id, f"{err} (gave up after {attempts} attempts)")
                with lock:
                    result.retried += 1
                bar.add(retried=1)
                continue
            if cache is not None:
                cache.put(item_id, keys[item_id], answer)
            with lock:
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
        raise
    finally:
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
                 model: str | None = None, endpoint: str = "chat", *, concurrency: int, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 6, rpm: float | None = None):
        super().__init__(model_path, generation)
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"unknown openai endpoint {endpoint!r}; expected 'chat' or 'completions'")
        self.rpm = rpm
        self.base_url, self.model, self.endpoint, self.concurrency = base_url, model or model_path, endpoint, concurrency
        self.api_key = api_key if api_key is not None else (openai_api_key(base_url) or KEYLESS_PLACEHOLDER)
        check_api_key(self.api_key)  # before the first request (ApiKeyError: one line, no part of the key)
        self.timeout, self.max_retries = timeout, max_retries
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
                                 max_retries=self.max_retries, rpm=self.rpm, cache=cache, desc=desc or "requests",
                                 progress=progress)

    def check(self) -> str | None:
        """None when the server answers a model listing, else a one-line reason (secrets scrubbed)."""
        try:
            make_openai_client(self.base_url, self.api_key, timeout=min(self.timeout, 5.0)).models.list()
        except Exception as e:  # noqa: BLE001 - any failure is reported as one line
            cause = e.__cause__ or e.__context__
            detail = f" ({scrub(cause, [self.api_key])})" if cause else ""
            return f"{type(e).__name__}: {scrub(e, [self.api_key])}{detail}".splitlines()[0]
        return None
