"""A stdlib OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions`` stub with scripted faults (tests and benchmarks).

It answers deterministically from the prompt: ``"The motivation of the supporter in choosing the strategy
[<label>] is to answer prompt <sha8>."``, where <label> is the last ``***[...]***`` mark of the prompt
(the target turn of the ChatGPT motivation prompt) and <sha8> the first 8 hex digits of the prompt's sha256.

Faults, each a string:
  ``"ok"``             answer normally
  ``"429"`` / ``"429:S"``  HTTP 429 with ``Retry-After: S`` (default 0.05 s; fractions allowed, for fast tests)
  ``"500"``, ``"503"``, ``"400"``, ``"401"``, ``"404"``   that status with an OpenAI-style error body
  ``"malformed"``      HTTP 200, content-type JSON, a body that is not JSON
  ``"empty"``          HTTP 200, a valid completion whose content is null
  ``"drop"``           close the connection without answering
  ``"slow:S"``         sleep S seconds, then answer normally

Where faults come from, first match wins for each request:
  ``script``     a list consumed one per request in arrival order;
  ``per_prompt`` {substring: [faults]}, consumed one per request whose prompt contains the substring;
  ``always``     one fault for every other request (e.g. ``"500"`` for a persistent outage).
Judge mode (judge_responses.py's prompts): ``answer_fn=judge_answer_fn(choose)`` answers the five criteria with
``choose(prompt, reply_1, reply_2)``: "1", "2" or "tie" for all of them, or any other string as the whole
(unreadable) answer.

If ``api_key`` is set, a request without ``Authorization: Bearer <api_key>`` gets a 401 whose message
echoes the key it was given, as real servers do in part: the client must scrub it.

Run standalone: ``python src/magic/testing/openai_stub.py --port 8000 --latency 0.2``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from magic.common.validate import non_negative_float, port_or_zero

_MARK_RE = re.compile(r"\*\*\*\[([^\]]+)\]\*\*\*")


def stub_answer(prompt: str) -> str:
    """The stub's deterministic answer to a prompt."""
    marks = _MARK_RE.findall(prompt)
    label = marks[-1] if marks else "Others"
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    return f"The motivation of the supporter in choosing the strategy [{label}] is to answer prompt {digest}."


_REPLY_RE = re.compile(r"^Reply ([12]): (.*)$", re.MULTILINE)
JUDGE_CRITERIA = ("Fluency", "Identification", "Comforting", "Suggestion", "Overall")


def judge_answer_fn(choose: Callable[[str, str, str], str]) -> Callable[[str], str]:
    """An ``answer_fn`` that plays a judge: ``choose(prompt, reply_1, reply_2)`` -> "1" | "2" | "tie" (the same
    choice on every criterion) or any other text (returned as it is: an unreadable answer)."""
    def answer(prompt: str) -> str:
        replies = dict(_REPLY_RE.findall(prompt))
        pick = choose(prompt, replies.get("1", ""), replies.get("2", ""))
        if pick not in ("1", "2", "tie"):
            return pick
        return "\n".join(f"{c}: {pick}" for c in JUDGE_CRITERIA)
    return answer


@dataclass
class StubRequest:
    prompt: str | None
    model: str | None
    body: dict | None
    authorization: str | None
    fault: str
    time: float


class StubServer:
    """``with StubServer(latency=0.2) as stub: OpenAI(base_url=stub.base_url, ...)``; see the module doc."""

    def __init__(self, latency: float = 0.0, api_key: str | None = None, script: list[str] | None = None,
                 per_prompt: dict[str, list[str]] | None = None, always: str | None = None,
                 answer_fn: Callable[[str], str] | None = None, port: int = 0):
        self.latency = latency
        self.api_key = api_key
        self.script = list(script or [])
        self.per_prompt = {k: list(v) for k, v in (per_prompt or {}).items()}
        self.always = always
        self.answer_fn = answer_fn or stub_answer
        self.requests: list[StubRequest] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                stub._handle(self)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    stub._send_json(self, 200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
                else:
                    stub._send_json(self, 404, _error("not found", "invalid_request_error"))

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "StubServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def prompts(self) -> list[str]:
        """Prompts of the requests received so far, in arrival order."""
        with self.lock:
            return [r.prompt for r in self.requests]

    # ---------------------------------------------------------------------------------------------
    def _pick_fault(self, prompt: str | None) -> str:
        with self.lock:
            if self.script:
                return self.script.pop(0)
            if prompt is not None:
                for needle, faults in self.per_prompt.items():
                    if needle in prompt and faults:
                        return faults.pop(0)
            return self.always or "ok"

    @staticmethod
    def _send_json(handler, status: int, obj, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode("utf-8")
        StubServer._send_raw(handler, status, body, headers)

    @staticmethod
    def _send_raw(handler, status: int, body: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization")
        # /v1/chat/completions (the last message's content) or /v1/completions (the raw "prompt" string)
        chat = h.path.rstrip("/").endswith("/chat/completions")
        try:
            body = json.loads(raw.decode("utf-8"))
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            if not isinstance(prompt, str):
                raise TypeError("prompt")
            model = body.get("model")
        except (ValueError, KeyError, IndexError, TypeError):
            body, prompt, model = None, None, None
        if not chat and not h.path.rstrip("/").endswith("/completions"):
            return self._send_json(h, 404, _error(f"unknown path {h.path}", "invalid_request_error"))

        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            fault = "401"
        else:
            fault = self._pick_fault(prompt)
        with self.lock:
            self.requests.append(StubRequest(prompt, model, body, auth, fault, time.time()))
        if body is None and fault == "ok":
            return self._send_json(h, 400, _error("could not parse the request body", "invalid_request_error"))

        kind, _, arg = fault.partition(":")
        if kind == "drop":
            h.close_connection = True
            try:
                h.connection.shutdown(2)  # SHUT_RDWR: the client sees the connection die mid-request
            except OSError:
                pass
            return
        if kind == "slow":
            time.sleep(float(arg or 1.0))
            kind = "ok"
        elif self.latency:
            time.sleep(self.latency)

        make = _completion if chat else _text_completion
        if kind == "ok":
            return self._send_json(h, 200, make(model, self.answer_fn(prompt)))
        if kind == "empty":
            return self._send_json(h, 200, make(model, None))
        if kind == "malformed":
            return self._send_raw(h, 200, b'{"id": "chatcmpl-stub", "choices": [{"message": {"content": "tru')
        if kind == "429":
            return self._send_json(h, 429, _error("Rate limit reached", "rate_limit_exceeded"),
                                   {"Retry-After": arg or "0.05"})
        if kind == "401":
            given = (auth or "").removeprefix("Bearer ")
            return self._send_json(h, 401, _error(f"Incorrect API key provided: {given}.", "invalid_api_key"))
        if kind.isdigit():
            status = int(kind)
            return self._send_json(h, status, _error(f"stub error {status}", "server_error"))
        raise ValueError(f"unknown stub fault {fault!r}")


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _completion(model: str | None, content: str | None) -> dict:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _text_completion(model: str | None, text: str | None) -> dict:
    return {
        "id": "cmpl-stub",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model or "stub",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port_or_zero, default=8000)
    parser.add_argument("--latency", type=non_negative_float, default=0.0, help="seconds per answer")
    parser.add_argument("--always", default=None, help="a fault for every request, e.g. 500")
    args = parser.parse_args()
    stub = StubServer(latency=args.latency, always=args.always, port=args.port)
    print(f"stub listening on {stub.base_url}", flush=True)
    try:
        stub._server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
