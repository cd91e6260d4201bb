"""Issue 24, defects 6, 10, 11, 12 and 13 and the terminal chat's history (the rest of the issue is in
tests/test_reliability_round3.py).

6  two evaluations of one checkpoint started together: the second is refused, with one line, before it decodes;
10 malformed lines of a resume file (``.partial.jsonl``; the answer caches): skipped or refused naming file:line;
11 ``chat.py --input`` not UTF-8, ``--output`` a folder or unwritable: one line, exit 2, before any work;
12 the terminal chat given bytes that are not UTF-8: one line, and the chat goes on;
13 an ``OPENAI_API_KEY`` that cannot be an HTTP header value: refused before the first request, printing no
   part of it (steps 1 and 5 and the chat); ``scrub`` hides every fragment of a key;
and the terminal chat writes the typed lines to a history file only when asked (``--history_file``).

Tiny random models on CPU. Every test failed on the commit before this work (see docs/RELIABILITY.md).
"""
import importlib.util
import json
import os
import pty
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from magic.common.errors import OutputExistsError, UserError
from magic.generator import evaluation as ev
from magic.testing.openai_stub import StubServer
from tests.chat_fixtures import read_until as _read_until
from tests.dialogues import make_dialogue

REPO = Path(__file__).resolve().parents[1]


def _script(rel, name=None):
    spec = importlib.util.spec_from_file_location(name or Path(rel).stem + "_r3b", REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, bart_dir):
    from tests.chat_fixtures import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt_r3b"), bart_dir)


def _test_records(n_dialogues):
    from tests.bart_fixtures import make_records

    recs = make_records(n_dialogues)
    for k, r in enumerate(recs):
        r["id"] = f"test-{k // 3}-{2 * (k % 3) + 1}"
    return recs


def _eval_args(ckpt, test, eval_dir, *extra):
    return ["--model_path", str(ckpt), "--test_data", str(test), "--eval_dir", str(eval_dir), "--device", "cpu",
            "--no_metrics", "--no_progress", "--num_beams", "1", "--num_beam_groups", "1", "--diversity_penalty", "0",
            "--max_length_res", "4", "--strategy_memory_max", "8", *extra]


def _claim_paths(*args, **kw):
    """The paths claim_output chooses, its claim given up again at once (resumable by the next claim)."""
    paths, partial = ev.claim_output(*args, **kw)
    partial.close()
    return paths


def _result_name(eval_dir, ckpt):
    return Path(eval_dir) / ev.run_name_from_model_path(str(ckpt)) / "diversity_0.0_length_1.0.txt"


# ------------------------------------------------------------------------------- 6. concurrent evaluations
def test_a_second_evaluation_of_a_checkpoint_being_evaluated_is_refused_before_it_decodes(ckpt, tmp_path):
    """Two test_evaluation.py processes on one checkpoint and settings: the first (stopped in the middle of its
    decoding with SIGSTOP, so the overlap is certain) keeps the name; the second says so in one line, exit 2,
    and decodes nothing; the first then finishes as if alone."""
    recs = _test_records(10)
    test = tmp_path / "test.json"
    test.write_text(json.dumps(recs))
    eval_dir = tmp_path / "eval_result"
    argv = [sys.executable, str(REPO / "test_evaluation.py"), *_eval_args(ckpt, test, eval_dir)]

    def decoded():
        try:
            return partial.read_text(encoding="utf-8").count("\n") - 1
        except FileNotFoundError:
            return -1

    hyp = _result_name(eval_dir, ckpt)
    partial = Path(str(hyp) + ".partial.jsonl")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    try:
        end = time.time() + 240
        while decoded() < 1:
            assert first.poll() is None, first.communicate()
            assert time.time() < end, "the first evaluation never started decoding"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)  # in the middle of its decoding
        assert partial.exists(), "the first evaluation finished before it could be stopped"
        before = partial.read_bytes()
        second = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=240)
        after = partial.read_bytes()
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
    assert second.returncode == 2, second.stdout + second.stderr
    errors = [ln for ln in second.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert errors[0].startswith("test_evaluation.py: error: ") and "another evaluation" in errors[0] \
        and str(partial) in errors[0], errors[0]
    assert after == before  # the second decoded nothing into the first one's file
    assert first.returncode == 0, out + err
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == len(recs)
    assert not partial.exists()


def test_the_claim_of_an_output_name_is_held_until_the_evaluation_ends(tmp_path):
    """claim_output keeps the name's .partial.jsonl locked: a second claim of the same checkpoint and settings
    is refused at once; other settings take another name; a claim given up (or its process killed: the lock
    goes with the process) is resumed by the next one."""
    eval_dir = str(tmp_path / "eval_result")
    s = {"model_path": "out/bs_4_epochs_1_20240101_120000/epoch_0_val_ppl_9.1", "num_beams": 5}
    paths, partial = ev.claim_output(eval_dir, s["model_path"], 1.0, 1.0, s)
    partial.add("test-0-1", "first response")
    with pytest.raises(OutputExistsError, match=r"diversity_1.0_length_1.0.txt: another evaluation of this "
                                                r"checkpoint with these settings is decoding into this name now"):
        _claim_paths(eval_dir, s["model_path"], 1.0, 1.0, s)
    other = {**s, "num_beams": 3}
    assert _claim_paths(eval_dir, s["model_path"], 1.0, 1.0, other)["hypotheses"] != paths["hypotheses"]
    partial.close()  # given up without finishing (as by a kill): resumable
    again, resumed = ev.claim_output(eval_dir, s["model_path"], 1.0, 1.0, s)
    assert again == paths and resumed.done == {"test-0-1": "first response"}
    resumed.finish()
    assert not os.path.exists(paths["partial"])


# ------------------------------------------------------------------------------- 10. malformed resume lines
def test_malformed_lines_of_a_partial_file_are_skipped_with_file_and_line_and_decoded_again(ckpt, tmp_path,
                                                                                             monkeypatch):
    """An interrupted evaluation's .partial.jsonl, edited by hand: a line [1,2], a non-string response, an id
    that is not a test sample, a duplicate, a torn last line. The rerun warns naming file:line for each, keeps the
    good lines (their samples are not decoded again) and decodes the others again: exit 0, the same result."""
    test_evaluation = _script("test_evaluation.py")
    recs = _test_records(2)
    test = tmp_path / "test.json"
    test.write_text(json.dumps(recs))
    eval_dir = tmp_path / "eval_result"
    argv = _eval_args(ckpt, test, eval_dir)

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # killed while writing the scores: the partial file is complete

    with monkeypatch.context() as m:
        m.setattr(ev, "atomic_write_json", interrupted)
        assert test_evaluation.main(argv) == 130
    hyp = _result_name(eval_dir, ckpt)
    clean = hyp.read_text(encoding="utf-8").splitlines()
    partial = Path(str(hyp) + ".partial.jsonl")
    lines = partial.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + len(recs)
    ids = [r["id"] for r in recs]
    lines[1] = "[1, 2]"
    lines[2] = json.dumps({"id": ids[1], "response": 7})
    lines[3] = json.dumps({"id": ids[2], "response": "kept from the first run"})
    lines.insert(4, json.dumps({"id": "test-99-1", "response": "not a test sample"}))
    lines.insert(5, json.dumps({"id": ids[2], "response": "a second answer"}))
    partial.write_text("\n".join(lines) + '\n{"id": "test-1-', encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        assert test_evaluation.main(argv) == 0
    said = [str(w.message) for w in caught if ".partial.jsonl:" in str(w.message)]
    for line_no, what in ((2, "not a JSON object"), (3, "'response' must be a string"),
                          (5, "not a sample of"), (6, "duplicate"), (len(lines) + 1, "incomplete last line")):
        assert any(f"{partial}:{line_no}: " in s and what in s for s in said), (line_no, said)
    got = hyp.read_text(encoding="utf-8").splitlines()
    assert got[2] == "kept from the first run"  # a good line is used, not decoded again
    assert got[:2] + got[3:] == clean[:2] + clean[3:]  # the damaged ones decoded again, to the same text
    assert not partial.exists()


def test_the_resume_file_reader_drops_a_torn_last_line_and_skips_or_refuses_others(tmp_path):
    """magic.common.jsonl.read_jsonl, the one reader of the JSON-lines resume files: a torn last line (no
    newline, or no JSON) is dropped and cut off; any other bad line is skipped with a warning naming file:line
    (on_bad="skip") or refused with that line (on_bad="refuse")."""
    from magic.common.jsonl import read_jsonl

    def parse(obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ValueError("expected an object with a string 'id'")
        return obj["id"]

    path = tmp_path / "state.jsonl"
    path.write_bytes(b'{"id": "a"}\n[1, 2]\n\xff\xfe\n{"id": "b"}\n{"id": "c"}')
    with pytest.warns(UserWarning) as caught:
        got = read_jsonl(path, parse, on_bad="skip", truncate=True)
    assert got.records == ["a", "b"] and got.torn and [n for n, _ in got.skipped] == [2, 3]
    said = " | ".join(str(w.message) for w in caught)
    assert f"{path}:2: " in said and "expected an object with a string 'id'" in said
    assert f"{path}:3: " in said and "not UTF-8" in said and f"{path}:5: " in said
    assert path.read_bytes() == b'{"id": "a"}\n[1, 2]\n\xff\xfe\n{"id": "b"}\n'  # only the torn line cut off
    with pytest.raises(UserError, match=rf"{path}:2: not a valid record \(expected an object with a string 'id'"):
        read_jsonl(path, parse, on_bad="refuse")


def test_every_jsonl_resume_file_follows_the_one_rule(tmp_path):
    """The answer caches (JsonlCache: motivations, strategy inference, their shards) and the evaluation's
    partial file: a torn last line is dropped; a bad line elsewhere is refused naming file:line (answers that
    cost requests) or skipped naming file:line (responses decoded again)."""
    from magic.llm.engines.cache import JsonlCache

    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"id": "a", "key": "k", "answer": "x"}\n{"id": "b", "key": "k", "ans')
    with JsonlCache(cache) as c:
        assert c.get("a", "k") == "x" and c.dropped_torn_line
    cache.write_text('{"id": "a", "key": "k", "answer": "x"}\n[1, 2]\n{"id": "b", "key": "k", "answer": "y"}\n')
    with pytest.raises(ValueError, match=rf"{cache}:2: "):
        JsonlCache(cache)

    s = {"model_path": "out/bs_4_epochs_1_20240101_120000/epoch_0_val_ppl_9.1"}
    paths, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s)
    partial.add("test-0-1", "one")
    partial.close()
    with open(paths["partial"], "a", encoding="utf-8") as f:
        f.write('[1, 2]\n{"id": "test-0-3", "response": "two"}\n{"id": "test-0-5", "resp')
    with pytest.warns(UserWarning, match=r"\.partial\.jsonl:3: .*not a JSON object"):
        _, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s,
                                     ids=["test-0-1", "test-0-3", "test-0-5"])
    assert partial.done == {"test-0-1": "one", "test-0-3": "two"}
    partial.add("test-0-5", "three")
    partial.close()
    _, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s)
    assert partial.done == {"test-0-1": "one", "test-0-3": "two", "test-0-5": "three"}  # the file was repaired
    partial.close()


# ------------------------------------------------------------------------------- 11. chat --input / --output
def _dialogue_file(path):
    path.write_text(json.dumps({"situation": "exams", "dialog": [
        {"speaker": "usr", "text": "Hello , I feel lonely ."}]}), encoding="utf-8")
    return path


def test_chat_input_that_is_not_utf8_is_one_line_before_anything_is_loaded(tmp_path, capsys):
    chat = _script("chat.py")
    bad = tmp_path / "dialogue.json"
    bad.write_bytes(b'{"situation": "caf\xe9", "dialog": []}')
    rc = chat.main(["--model_path", str(tmp_path / "no_such_checkpoint"), "--strategy", "Question",
                    "--input", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"chat.py: error: {bad}: not UTF-8 text (byte 18: "), err


@pytest.mark.parametrize("where", ["folder", "under_a_file", "read_only"])
def test_chat_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, where):
    chat = _script("chat.py")
    dialogue = _dialogue_file(tmp_path / "dialogue.json")
    if where == "folder":
        out = tmp_path / "replies"
        out.mkdir()
        expected = f"--output {out}: is a folder; expected a file name"
    elif where == "under_a_file":
        (tmp_path / "notes.txt").write_text("x")
        out = tmp_path / "notes.txt" / "reply.json"
        expected = f"--output {out}: {tmp_path / 'notes.txt'} is not a folder"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "reply.json"
        expected = f"--output {out}: cannot write in {ro}"
    rc = chat.main(["--model_path", str(tmp_path / "no_such_checkpoint"), "--strategy", "Question",
                    "--input", str(dialogue), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"chat.py: error: {expected}"), err  # the output, not the (missing) model: before loading


# ------------------------------------------------------------------------------- 12. chat input not UTF-8
def test_terminal_chat_given_bytes_that_are_not_utf8_says_so_and_goes_on(ckpt):
    rng = random.Random(0)
    noise = bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(60))
    typed = b"hello there\ncaf\xe9 \xff\xfe\n" + noise + b"\nI feel sad\n/quit\n"
    proc = subprocess.run([sys.executable, str(REPO / "chat.py"), "--model_path", str(ckpt), "--strategy", "Question",
                           "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4", "--device", "cpu"],
                          input=typed, capture_output=True, env=_env(), cwd=REPO, timeout=240)
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and "Traceback" not in out + err, out + err
    assert out.count("supporter:") == 2, out  # "hello there" and "I feel sad", the one after the noise
    said = [ln for ln in out.splitlines() if ln.startswith("error: line ")]
    assert len(said) == 2, out
    assert said[0].startswith("error: line 2 is not UTF-8 text (byte 3: ") and "not answered" in said[0], said
    assert said[1].startswith("error: line 3 is not UTF-8 text"), said


def test_a_typed_line_with_undecodable_bytes_is_refused_with_the_byte(monkeypatch):
    """What input() returns under a UTF-8 locale with surrogateescape (lone surrogates), and raw bytes."""
    from magic.chat.engine import typed_text

    assert typed_text("I'm sad") == "I'm sad" and typed_text("café".encode()) == "café"
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 3: "):
        typed_text(b"caf\xe9 \xff")
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 3: "):
        typed_text(b"caf\xe9 \xff".decode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------------------- terminal history: opt-in


def _pty_session(ckpt, home, extra, lines):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(REPO / "chat.py"), "--model_path", str(ckpt), "--strategy", "Question",
                             "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4", *extra],
                            stdin=slave, stdout=slave, stderr=slave, env=_env(HOME=str(home)), cwd=REPO,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, "seeker> ")
        for line in lines:
            os.write(master, line + b"\r")
            out += _read_until(master, "seeker> ")
        os.write(master, b"\x04")  # Ctrl-D
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out


def test_terminal_chat_keeps_no_history_file_unless_asked(ckpt, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    rc, out = _pty_session(ckpt, home, [], [b"I lost my job today.", b"caf\xe9 \xff"])
    assert rc == 0 and out.count("supporter:") == 1 and "Traceback" not in out, out
    assert "is not UTF-8 text" in out  # the interactive path too: one line, the chat goes on
    assert list(home.iterdir()) == []  # no ~/.magic_chat_history: the typed lines are not kept
    hist = tmp_path / "private" / "history"
    rc, out = _pty_session(ckpt, home, ["--history_file", str(hist)], [b"I lost my job today."])
    assert rc == 0, out
    assert "I lost my job today." in hist.read_text(encoding="utf-8")
    assert stat.S_IMODE(hist.stat().st_mode) == 0o600  # its owner only


# ------------------------------------------------------------------------------- 13. API keys
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
