"""API keys: any key is scrubbed from messages, every fragment of it; a key that cannot be an HTTP header value is
refused before the first request, showing no part of it (step 1, step 5 and the chat)."""
import json
from pathlib import Path

import pytest

from magic.common.errors import UserError
from magic.testing.openai_stub import StubServer
from tests.dialogues import make_dialogue
from tests.scripts import load_script as _script


@pytest.mark.parametrize("key", ["abc1234", "k3y", "sk-12", "a-very-long-key-0123456789"])
def test_api_keys_of_any_length_are_scrubbed(key):
    from magic.llm.engines.openai import scrub

    msg = f"Error code: 401 - Incorrect API key provided: {key}. Authorization: Bearer {key}"
    assert key not in scrub(msg, [key])
    assert scrub("EMPTY key for a local server", ["EMPTY"]) == "EMPTY key for a local server"


REPO = Path(__file__).resolve().parents[2]


def _dialogue_file(path):
    path.write_text(json.dumps({"situation": "exams", "dialog": [
        {"speaker": "usr", "text": "Hello , I feel lonely ."}]}), encoding="utf-8")
    return path


BAD_KEYS = {"lf": "sk-ABCDline1\nTOPSECRETtail", "crlf": "sk-ABCDline1\r\nTOPSECRETtail",
            "nul": "sk-ABCDline1\x00TOPSECRETtail", "space": "sk-ABCDline1 TOPSECRETtail",
            "non_ascii": "sk-ABCDline1\u00e9TOPSECRETtail"}

FRAGMENTS = ("ABCDline1", "TOPSECRET", "tail")


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_a_key_that_cannot_be_a_header_value_is_refused_without_showing_it(key):
    from magic.common.validate import check_api_key

    with pytest.raises(UserError) as e:
        check_api_key(key)
    msg = str(e.value)
    assert msg.startswith("OPENAI_API_KEY ") and "\n" not in msg
    assert not any(f in msg for f in FRAGMENTS), msg
    check_api_key("sk-proj-AbC_123-xyz")  # a real key's characters pass
    check_api_key("EMPTY")


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_scrub_hides_every_fragment_of_a_key(key):
    from magic.llm.engines.openai import scrub

    texts = [f"Illegal header value b'Bearer {key}'", f"Illegal header value {key.encode()!r}",
             f"key {key!r} refused", f"auth: Bearer {key}", json.dumps({"key": key}), key.split()[-1] + " was sent"]
    for text in texts:
        got = scrub(text, [key])
        assert not any(f in got for f in FRAGMENTS), (text, got)


def _stub_checks(out, rc, stub):
    assert rc == 2, out
    errors = [ln for ln in out.splitlines() if "error" in ln]
    assert len(errors) == 1 and "OPENAI_API_KEY" in errors[0] and "Traceback" not in out, out
    assert not any(f in out for f in FRAGMENTS), out
    assert stub.requests == []


@pytest.mark.parametrize("key", [BAD_KEYS["lf"], BAD_KEYS["crlf"]], ids=["lf", "crlf"])
def test_step1_refuses_a_bad_key_before_the_first_request(tmp_path, monkeypatch, capsys, key):
    cli = _script("LLM_inference/collect_motivations_ChatGPT.py")
    train = tmp_path / "train.txt"
    train.write_text(json.dumps(make_dialogue(0, "usr", 6)) + "\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with StubServer() as stub:
        rc = cli.main(["--train_file", str(train), "--output_file", str(tmp_path / "m.json"), "--base_url",
                       stub.base_url, "--max_retries", "0", "--timeout", "5"])
    captured = capsys.readouterr()
    _stub_checks(captured.out + captured.err, rc, stub)
    assert not (tmp_path / "m.json.cache.jsonl").exists()  # refused before the cache was even opened


def test_step5_openai_backend_refuses_a_bad_key_before_the_first_request(tmp_path, monkeypatch, capsys):
    from magic.esconv.dialogues import load_samples
    from magic.llm.prompts import llama_prompt

    infer = _script("LLM_inference/infer_strategy.py")
    gold = tmp_path / "valid.txt"
    gold.write_text(json.dumps(make_dialogue(0, "usr", 6)) + "\n", encoding="utf-8")
    samples = load_samples(gold, "valid")
    prompts = tmp_path / "prompts_valid.json"
    prompts.write_text(json.dumps([llama_prompt(s) for s in samples]))
    (tmp_path / "prompts_valid.ids.json").write_text(json.dumps([s.id for s in samples]))
    monkeypatch.setenv("OPENAI_API_KEY", BAD_KEYS["lf"])
    with StubServer() as stub:
        rc = infer.main(["--backend", "openai", "--base_url", stub.base_url, "--model", "magic", "--splits", "valid",
                         "--prompt_path_valid", str(prompts), "--output_dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    _stub_checks(captured.out + captured.err, rc, stub)


def test_chat_refuses_a_bad_key_for_its_server_before_the_first_request(ckpt, tmp_path, monkeypatch, capsys):
    chat = _script("chat.py")
    dialogue = _dialogue_file(tmp_path / "dialogue.json")
    monkeypatch.setenv("OPENAI_API_KEY", BAD_KEYS["crlf"])
    with StubServer() as stub:
        rc = chat.main(["--model_path", str(ckpt), "--base_url", stub.base_url, "--input", str(dialogue),
                        "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4", "--device", "cpu"])
    captured = capsys.readouterr()
    _stub_checks(captured.out + captured.err, rc, stub)


@pytest.mark.parametrize("env", [{"OPENAI_API_KEY": ""}, {}])
def test_an_empty_or_unset_key_sends_the_placeholder_to_a_keyless_server_everywhere(env, monkeypatch):
    """One rule (magic.common.validate.openai_api_key): the chat's and step 5's server engine, as step 1."""
    from magic.chat.engine import ServerStrategyLLM
    from magic.common.validate import KEYLESS_PLACEHOLDER, openai_api_key
    from magic.llm.engines.base import Generation
    from magic.llm.motivations import resolve_api_key

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert openai_api_key("http://127.0.0.1:1/v1") == resolve_api_key(None, "http://x/v1", env) == KEYLESS_PLACEHOLDER
    assert openai_api_key(None) is None
    with StubServer() as stub:
        source = ServerStrategyLLM(stub.base_url, "default", Generation(max_new_tokens=8), timeout=5.0)
        assert source.check() is None
        assert source.answer("test-0-1", "[INST] hi [/INST]")
        assert {r.authorization for r in stub.requests} == {f"Bearer {KEYLESS_PLACEHOLDER}"}
