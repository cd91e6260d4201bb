"""src/magic/llm/engines/openai.py and src/magic/llm/engines/cache.py: the answer cache, keys, secrets, retry timing and the OpenAI-compatible runner."""
import json
import random
import time

import pytest

from magic.llm.engines.cache import CacheFormatError, JsonlCache, chat_prompt_key, prompt_key
from magic.llm.engines.openai import FatalRequestError, RateLimiter, run_chat_requests, scrub
from magic.testing.openai_stub import StubServer, stub_answer

KEY = "sk-test-SECRET-0123456789abcdef"


def _items(n, label="Question"):
    return [(f"s{i}", f"prompt number {i}\n(1) Supporter: hi ***[{label}]***\n") for i in range(n)]


def _run(stub, items, **kw):
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("concurrency", 4)
    return run_chat_requests(items, model="m", base_url=stub.base_url, api_key=KEY, progress=False, **kw)


# ---------------------------------------------------------------------------------------------------
# keys and secrets
def test_prompt_key_depends_on_prompt_model_and_answer_changing_params():
    base = prompt_key("p", "m", temperature=None, max_tokens=None)
    assert base == prompt_key("p", "m")  # None = not sent = not given
    assert base != prompt_key("p2", "m")
    assert base != prompt_key("p", "m2")
    assert base != prompt_key("p", "m", temperature=0.0)
    assert prompt_key("p", "m", temperature=1, max_tokens=5) == prompt_key("p", "m", max_tokens=5, temperature=1)
    assert len(base) == 64 and int(base, 16) >= 0


def test_scrub_removes_the_key_and_key_like_strings_but_keeps_dummy_keys():
    text = f"Incorrect API key provided: {KEY}. Header: Bearer abcdefgh12345; other sk-proj-zzzzzzzzzz"
    out = scrub(text, [KEY])
    assert KEY not in out and "abcdefgh12345" not in out and "sk-proj-zzzzzzzzzz" not in out
    assert "Incorrect API key provided" in out
    assert scrub("model EMPTY not found", ["EMPTY"]) == "model EMPTY not found"


# ---------------------------------------------------------------------------------------------------
# cache
def test_cache_persists_first_answer_wins_and_never_stores_extra_fields(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path) as c:
        c.put("a", "k1", "first")
        c.put("a", "k1", "second")  # ignored: an answer once used never changes
        c.put("a", "k2", "other key")
        c.put("b", "k1", "ünïcode")
        assert c.get("a", "k1") == "first" and c.get("x", "k1") is None
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert all(set(json.loads(l)) == {"id", "key", "answer"} for l in lines)
    # a duplicate appended by hand (e.g. two old runs) does not override the first line either
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "a", "key": "k1", "answer": "late"}) + "\n")
    c2 = JsonlCache(path, readonly=True)
    assert c2.get("a", "k1") == "first" and c2.get("a", "k2") == "other key" and c2.get("b", "k1") == "ünïcode"
    assert len(c2) == 3


@pytest.mark.parametrize("torn", [b'{"id": "b", "key": "k", "ans', b'{"id": "b", "key": "k", "answer": "x"}'])
def test_cache_drops_a_torn_last_line_and_appends_cleanly_after_it(tmp_path, torn):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"id": "a", "key": "k", "answer": "ok"}).encode() + b"\n"
    path.write_bytes(good + torn)  # a kill -9 in the middle of the second write
    c = JsonlCache(path)
    assert c.dropped_torn_line and c.get("a", "k") == "ok" and c.get("b", "k") is None
    assert path.read_bytes() == good  # truncated before anything is appended
    c.put("b", "k", "again")
    c.close()
    assert [json.loads(l)["answer"] for l in path.read_text().splitlines()] == ["ok", "again"]


def test_cache_rejects_a_corrupt_line_in_the_middle_naming_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "key": "k", "answer": "ok"}\nnot json\n{"id": "b", "key": "k", "answer": "x"}\n')
    with pytest.raises(CacheFormatError, match=r"c\.jsonl:2: not a valid cache record \(not JSON"):
        JsonlCache(path)


def test_cache_refuses_a_second_writer(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path):
        with pytest.raises(RuntimeError, match="in use by another run"):
            JsonlCache(path)
    JsonlCache(path).close()  # released on close


# ---------------------------------------------------------------------------------------------------
# retry timing
def test_rate_limiter_spaces_request_starts():
    limiter = RateLimiter(rpm=600)  # one start every 0.1 s
    t0 = time.monotonic()
    for _ in range(5):
        assert limiter.acquire()
    assert time.monotonic() - t0 >= 0.38


# ---------------------------------------------------------------------------------------------------
# the runner against the stub
def test_transient_faults_are_retried_and_every_answer_is_right(tmp_path):
    faults = ["429:0.3", "500", "503", "malformed", "drop", "empty", "slow:2"]
    items = _items(10)
    with StubServer(script=faults, api_key=KEY) as stub:
        with JsonlCache(tmp_path / "c.jsonl") as cache:
            res = _run(stub, items, cache=cache, timeout=0.8)
        got = [r.fault for r in stub.requests]
    assert res.failed == {} and res.retried == len(faults)
    assert res.answers == {i: stub_answer(p) for i, p in items}
    assert len(got) == len(items) + len(faults)
    assert all(r.authorization == f"Bearer {KEY}" for r in stub.requests)


def test_retry_after_is_honoured():
    items = _items(1)
    with StubServer(script=["429:0.6"]) as stub:
        res = _run(stub, items, concurrency=1)
        times = [r.time for r in stub.requests]
    assert res.retried == 1 and len(times) == 2
    assert times[1] - times[0] >= 0.6


def test_cached_answers_are_not_requested_again(tmp_path):
    items = _items(6)
    with StubServer() as stub:
        with JsonlCache(tmp_path / "c.jsonl") as cache:
            cache.put("s1", chat_prompt_key(items[1][1], "m"), "cached one")
            cache.put("s2", chat_prompt_key(items[2][1], "other-model"), "wrong model")
            res = _run(stub, items, cache=cache)
        sent = stub.prompts()
    assert res.from_cache == 1 and res.answers["s1"] == "cached one"
    assert res.answers["s2"] == stub_answer(items[2][1])  # another model's answer is not reused
    assert sorted(sent) == sorted(p for i, p in items if i != "s1")


@pytest.mark.parametrize("status", ["401", "400", "404"])
def test_non_retryable_errors_stop_the_run_at_once_without_leaking_the_key(tmp_path, status):
    items = _items(40)
    with StubServer(always=status) as stub:
        with JsonlCache(tmp_path / "c.jsonl") as cache:
            with pytest.raises(FatalRequestError) as ei:
                _run(stub, items, cache=cache, concurrency=2)
        n = len(stub.requests)
    err = ei.value
    assert err.status == int(status) and f"HTTP {status}" in str(err)
    assert n <= 2  # only what was in flight; nothing retried, nothing new started
    assert err.result is not None and err.result.answers == {}


def test_401_message_echoing_the_key_is_scrubbed():
    with StubServer(api_key="sk-the-right-key-000000") as stub:
        with pytest.raises(FatalRequestError) as ei:
            _run(stub, _items(3), concurrency=1)
    assert "authentication failed" in str(ei.value) and KEY not in str(ei.value)
    assert "Incorrect API key provided" in str(ei.value)


def test_persistent_server_error_fails_items_after_max_retries_and_keeps_the_rest(tmp_path):
    items = _items(5)
    bad = items[3][1]
    with StubServer(per_prompt={"prompt number 3\n": ["500"] * 10}) as stub:
        res = _run(stub, items, max_retries=2)
        n_bad = sum(p == bad for p in stub.prompts())
    assert set(res.failed) == {"s3"} and "HTTP 500" in res.failed["s3"] and "3 attempts" in res.failed["s3"]
    assert n_bad == 3 and len(res.answers) == 4


def test_rpm_cap_is_applied_to_requests():
    with StubServer() as stub:
        _run(stub, _items(4), rpm=300, concurrency=4)  # one start every 0.2 s
        times = sorted(r.time for r in stub.requests)
    assert times[-1] - times[0] >= 0.55


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate item id 's0'"):
        run_chat_requests([("s0", "a"), ("s0", "b")], model="m", api_key="x", base_url="http://127.0.0.1:9/v1")


def test_local_cache_key_changes_when_the_model_folder_is_rewritten(tmp_path):
    """Re-exporting a model into the same folder must not reuse the old model's cached answers."""
    import os
    import time

    from magic.llm.engines import cache as llm_client

    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"old weights")
    before = llm_client.local_prompt_key("p", folder, "default", 16)
    assert llm_client.local_prompt_key("p", folder, "default", 16) == before
    time.sleep(0.01)
    (folder / "model.safetensors").write_bytes(b"new weights!")
    os.utime(folder / "model.safetensors")
    assert llm_client.local_prompt_key("p", folder, "default", 16) != before
