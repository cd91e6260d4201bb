"""LLM_inference/collect_motivations_ChatGPT.py end to end against the stub server and a tiny local model."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dialogues import make_dialogue
from magic.esconv.dialogues import load_samples
from magic.llm.prompts import chatgpt_prompt
from magic.testing.openai_stub import StubServer, stub_answer

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "LLM_inference" / "collect_motivations_ChatGPT.py"
KEY = "sk-collect-SECRET-9876543210fedcba"

sys.path.insert(0, str(SCRIPT.parent))
import collect_motivations_ChatGPT as cli


def _dialogue(i, opener, n_turns, strategies):
    return make_dialogue(i, opener, n_turns, strategies)


@pytest.fixture
def train_file(tmp_path):
    """4 dialogues (seeker- and supporter-opened, trailing seeker turn) -> 11 training samples."""
    strategies = ["Question", "Reflection of feelings", "Self-disclosure", "Providing Suggestions or Information",
                  "Affirmation and Reassurance", "Others", "Restatement or Paraphrasing", "Greeting"]
    dialogues = [_dialogue(0, "usr", 6, strategies), _dialogue(1, "sys", 7, strategies[2:]),
                 _dialogue(2, "usr", 7, strategies[4:]), _dialogue(3, "sys", 6, strategies[1:])]
    path = tmp_path / "train.txt"
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogues), encoding="utf-8")
    assert len(load_samples(path, "train")) == 11
    return path


def _target(d, t):
    """A substring only the prompt whose target is turn t of dialogue d contains (the target is marked)."""
    return f"dialogue {d} turn {t} : I ' m here . ***["


def _expected(train_file):
    samples = load_samples(train_file, "train")
    return [stub_answer(chatgpt_prompt(s)) for s in samples], [s.id for s in samples]


def _args(train_file, out, stub=None, *extra):
    args = ["--train_file", str(train_file), "--output_file", str(out), "--max_retries", "3", "--timeout", "5"]
    if stub is not None:
        args += ["--base_url", stub.base_url]
    return args + list(extra)


def _run_cli(monkeypatch, capsys, args, key=KEY):
    if key is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _files_text(folder):
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in Path(folder).iterdir() if p.is_file())


# ---------------------------------------------------------------------------------------------------
def test_answers_land_in_sample_order_with_ids_sidecar(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "out" / "motivations_4_LLaMA.json"
    expected, ids = _expected(train_file)
    # the first prompts answer last, so completion order differs from sample order
    slow = {_target(0, t): ["slow:0.4"] for t in (1, 3)}
    with StubServer(per_prompt=slow) as stub:
        rc, stdout, _ = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--concurrency", "4"))
        models = {r.model for r in stub.requests}
        bodies = [r.body for r in stub.requests]
    assert rc == 0
    assert json.loads(out.read_text(encoding="utf-8")) == expected
    assert json.loads((tmp_path / "out" / "motivations_4_LLaMA.ids.json").read_text()) == ids
    assert out.read_text(encoding="utf-8") == json.dumps(expected, ensure_ascii=False, indent=2)
    # released defaults: the 0125 model, one user message, the API's default sampling
    assert models == {"gpt-3.5-turbo-0125"}
    assert all(len(b["messages"]) == 1 and b["messages"][0]["role"] == "user" for b in bodies)
    assert not any("temperature" in b or "max_tokens" in b for b in bodies)
    assert "0 of 11 motivations name a different strategy" in stdout


def test_transient_faults_are_retried_and_the_run_succeeds(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "m.json"
    with StubServer(script=["429:0.05", "500", "malformed", "drop", "503"]) as stub:
        rc, stdout, _ = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--train_file_path",
                                                            str(train_file)))
    assert rc == 0 and "5 retries" in stdout
    assert json.loads(out.read_text()) == _expected(train_file)[0]


def test_persistent_failure_exits_nonzero_without_output(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "m.json"
    with StubServer(per_prompt={_target(2, 3): ["500"] * 20}) as stub:
        rc, _, err = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--max_retries", "1"))
    assert rc == 1 and not out.exists() and not (tmp_path / "m.ids.json").exists()
    assert "10 of 11 samples answered, 1 failed" in err and "train-2-3" in err and "HTTP 500" in err
    # the 10 answers are cached: a rerun once the server recovers asks only for the missing one
    with StubServer() as stub:
        rc, _, _ = _run_cli(monkeypatch, capsys, _args(train_file, out, stub))
        assert len(stub.requests) == 1 and _target(2, 3) in stub.requests[0].prompt
    assert rc == 0 and json.loads(out.read_text()) == _expected(train_file)[0]


def test_allow_partial_writes_answered_samples_and_their_ids(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "m.json"
    with StubServer(per_prompt={_target(2, 3): ["500"] * 20}) as stub:
        rc, stdout, _ = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--max_retries", "0",
                                                            "--allow_partial"))
    expected, ids = _expected(train_file)
    k = ids.index("train-2-3")
    assert rc == 0 and "PARTIAL" in stdout
    assert json.loads((tmp_path / "m.ids.json").read_text()) == ids[:k] + ids[k + 1:]
    assert json.loads(out.read_text()) == expected[:k] + expected[k + 1:]


def test_unauthorised_key_stops_at_once_and_never_leaks(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "m.json"
    with StubServer(api_key="sk-the-valid-key-0000000") as stub:  # echoes the wrong key in its 401
        rc, stdout, err = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--concurrency", "1"))
        n = len(stub.requests)
    assert rc == 2 and n == 1 and not out.exists()
    assert "HTTP 401 authentication failed" in err
    assert KEY not in stdout + err + _files_text(tmp_path)


def test_key_never_appears_in_any_output_or_file(tmp_path, train_file, monkeypatch, capsys):
    out = tmp_path / "m.json"
    with StubServer(api_key=KEY, script=["500", "drop"]) as stub:
        rc, stdout, err = _run_cli(monkeypatch, capsys, _args(train_file, out, stub))
        # and through the deprecated flag: a warning, still no echo of the key
        rc2, stdout2, err2 = _run_cli(monkeypatch, capsys, _args(train_file, out, stub, "--openai_api_key", KEY),
                                      key=None)
        assert all(r.authorization == f"Bearer {KEY}" for r in stub.requests)
    assert rc == rc2 == 0 and "leaks the key" in err2
    assert KEY not in stdout + err + stdout2 + err2 + _files_text(tmp_path)
    assert (tmp_path / "m.json.cache.jsonl").exists()


def test_no_key_is_a_clear_error_and_a_local_server_gets_a_dummy_key(tmp_path, train_file, monkeypatch, capsys):
    rc, _, err = _run_cli(monkeypatch, capsys, _args(train_file, tmp_path / "m.json"), key=None)
    assert rc == 2 and "export OPENAI_API_KEY" in err
    with StubServer() as stub:
        rc, _, _ = _run_cli(monkeypatch, capsys, _args(train_file, tmp_path / "m.json", stub, "--limit", "2"),
                            key=None)
        assert {r.authorization for r in stub.requests} == {"Bearer EMPTY"}
    assert rc == 0 and len(json.loads((tmp_path / "m.json").read_text())) == 2


def test_dry_run_estimates_without_requests(tmp_path, train_file, monkeypatch, capsys):
    monkeypatch.setattr("magic.llm.motivations._tiktoken_encoding", lambda: None)  # offline, deterministic
    prompts = [chatgpt_prompt(s) for s in load_samples(train_file, "train")]
    tokens = round(sum(len(p.split()) for p in prompts) * 1.3) + 7 * len(prompts)
    with StubServer() as stub:
        rc, stdout, _ = _run_cli(monkeypatch, capsys, _args(train_file, tmp_path / "m.json", stub, "--dry_run",
                                                            "--price_per_1k_input", "1", "--price_per_1k_output",
                                                            "2"), key=None)
        assert stub.requests == []
    cost = tokens / 1000 + 11 * 60 * 2 / 1000
    assert rc == 0 and "prompts: 11" in stdout and f"{tokens:,}" in stdout and "words x 1.3" in stdout
    assert f"${cost:,.4f}" in stdout and not (tmp_path / "m.json").exists()


def test_mismatched_strategies_are_reported_not_fatal(tmp_path, train_file, monkeypatch, capsys):
    def answer(prompt):
        return "Motivation: the strategy [Greeting] opens up." if "dialogue 0 " in prompt else stub_answer(prompt)

    with StubServer(answer_fn=answer) as stub:
        rc, stdout, _ = _run_cli(monkeypatch, capsys, _args(train_file, tmp_path / "m.json", stub))
    assert rc == 0 and "3 of 11 motivations name a different strategy than the gold one" in stdout


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, train_file):
    env = dict(os.environ, OPENAI_API_KEY=KEY, PYTHONPATH=str(REPO))
    killed, clean = tmp_path / "killed" / "m.json", tmp_path / "clean" / "m.json"
    cache = Path(str(killed) + ".cache.jsonl")
    with StubServer(latency=0.15, api_key=KEY) as stub:
        cmd = [sys.executable, str(SCRIPT), *_args(train_file, killed, stub, "--concurrency", "2")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline:
            if cache.exists() and cache.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL and not killed.exists()
        # complete lines only: a torn last line (no newline) is dropped by the rerun and asked again
        done_before = {json.loads(l)["id"] for l in cache.read_text().split("\n")[:-1]}
        assert 4 <= len(done_before) < 11
        n_first = len(stub.requests)

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        rerun_prompts = stub.prompts()[n_first:]
        clean_run = subprocess.run([sys.executable, str(SCRIPT), *_args(train_file, clean, stub)], env=env,
                                   capture_output=True, text=True, timeout=60)
        assert clean_run.returncode == 0, clean_run.stderr
    prompts = {s.id: chatgpt_prompt(s) for s in load_samples(train_file, "train")}
    assert not {prompts[i] for i in done_before} & set(rerun_prompts)  # finished samples never re-asked
    assert len(rerun_prompts) == 11 - len(done_before)
    assert killed.read_bytes() == clean.read_bytes()
    assert Path(str(killed)[:-5] + ".ids.json").read_bytes() == Path(str(clean)[:-5] + ".ids.json").read_bytes()
    lines = cache.read_text().splitlines()
    assert len(lines) == 11 == len({json.loads(l)["id"] for l in lines})  # one line per sample, no duplicates


def test_local_backend_with_a_tiny_random_model(tmp_path, train_file, monkeypatch, capsys):
    from magic.testing.make_small_llm import make_tiny_llama

    model_dir = make_tiny_llama(tmp_path)
    out = tmp_path / "local.json"
    # 6 samples (prompts are ~1k tokens each: keep CPU time small), 2 fixed batches of 3
    args = _args(train_file, out, None, "--backend", "local", "--model_name_or_path", model_dir, "--limit", "6",
                 "--max_tokens", "4", "--batch_size", "3", "--device", "cpu")
    rc, stdout, _ = _run_cli(monkeypatch, capsys, args, key=None)
    got = json.loads(out.read_text(encoding="utf-8"))
    assert rc == 0 and len(got) == 6 and all(isinstance(x, str) for x in got)
    assert json.loads((tmp_path / "local.ids.json").read_text()) == _expected(train_file)[1][:6]
    # resume: drop the last 2 cached answers (a kill mid-batch); the rerun regenerates their whole fixed
    # batch, so every prompt is padded with the same neighbours and the output is byte-identical
    cache = Path(str(out) + ".cache.jsonl")
    lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 6
    cache.write_text("".join(lines[:4]), encoding="utf-8")
    first = out.read_bytes()
    out.unlink()
    rc, stdout, _ = _run_cli(monkeypatch, capsys, args, key=None)
    assert rc == 0 and "4 from the cache, 2 requested" in stdout
    assert out.read_bytes() == first


# ------------------------------------------------------------------- --source released: the authors' file
def test_source_released_writes_the_released_bytes_and_the_ids(train_file, tmp_path, monkeypatch):
    samples = load_samples(train_file, "train")
    released = tmp_path / "released.json"  # the released form: indent 2, non-ASCII as is, no final newline
    released.write_text(json.dumps([f"motivation {i} é [Question]" for i in range(len(samples))],
                                   ensure_ascii=False, indent=2), encoding="utf-8")
    out = tmp_path / "out" / "motivations_4_LLaMA.json"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # nothing is asked: no key needed
    assert cli.main(["--train_file", str(train_file), "--output_file", str(out), "--source", "released",
                     "--released_file", str(released)]) == 0
    assert out.read_bytes() == released.read_bytes()
    assert json.loads((tmp_path / "out" / "motivations_4_LLaMA.ids.json").read_text()) == [s.id for s in samples]
    assert not (tmp_path / "out" / "motivations_4_LLaMA.json.cache.jsonl").exists()


def test_source_released_refuses_a_file_of_another_length(train_file, tmp_path, capsys):
    released = tmp_path / "released.json"
    released.write_text(json.dumps(["one [Question]"] * 3))
    out = tmp_path / "m.json"
    assert cli.main(["--train_file", str(train_file), "--output_file", str(out), "--source", "released",
                     "--released_file", str(released)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3 motivations for the 11 training samples" in err
    assert not out.exists()


def test_source_released_on_the_real_data_is_the_released_file(esconv_dir, tmp_path):
    """Step 1 by its script, SOURCE=released, on MAGIC's train.txt: the released file, byte for byte."""
    released = esconv_dir / "magic" / "motivations_4_LLaMA.json"
    env = {**os.environ, "SOURCE": "released", "RELEASED": str(released), "PY": sys.executable,
           "DATA_DIR": str(esconv_dir / "reconstructed"), "LLM_DIR": str(tmp_path)}
    env.pop("OPENAI_API_KEY", None)
    p = subprocess.run(["bash", "scripts/1_collect_motivations.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "motivations_4_LLaMA.json").read_bytes() == released.read_bytes()
    ids = json.loads((tmp_path / "motivations_4_LLaMA.ids.json").read_text())
    assert ids == [s.id for s in load_samples(esconv_dir / "reconstructed" / "train.txt", "train")]
    assert len(ids) == 10191 and "0 of 10191 motivations name a different strategy" in p.stdout
