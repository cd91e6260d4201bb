"""Step 9 (judge_responses.py) and the direct-LLM supporter (direct_llm_responses.py) against the OpenAI-compatible
stub playing the judge (magic.testing.openai_stub.judge_answer_fn)."""
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

import direct_llm_responses
import judge_responses
from magic.common.settings import from_namespace
from magic.judge.config import DirectConfig, JudgeConfig, build_parser
from magic.judge.prompt import CRITERIA, parse_judgement
from magic.judge.verdicts import combine, sign_test
from magic.testing.openai_stub import StubServer, judge_answer_fn

REPO = Path(__file__).resolve().parents[2]
N = 10  # test samples, one per dialogue
KEY = "sk-judge-SECRET-0123456789abcdef"
SITUATION = re.compile(r"^Seeker's situation: (.*)$", re.MULTILINE)


@pytest.fixture
def world(tmp_path):
    """Step-6 test/train records and two step-8 outputs (A, B) of the same 10 samples."""
    ids = [f"test-{d}-3" for d in range(N)]
    test = [{"id": i, "context": [f"situation {d}: my dog Rex{d} ran away", f"I miss Rex{d} so much",
                                  f"That sounds hard, tell me more about Rex{d}", f"He was my best friend {d}"],
             "response": f"Reference reply {d}: losing Rex{d} must hurt, you could put up posters",
             "strategy": "Providing Suggestions or Information", "strategy_source": "inferred",
             "response_memory": [], "strategy_memory": [], "motivation": ""} for d, i in enumerate(ids)]
    train = [{"id": f"train-{k}-1", "context": ["s", "hi"], "response": r} for k, r in
             enumerate(["I understand how you feel.", "Frequent generic reply here.", "Frequent generic reply here.",
                        "Anything else?", "Frequent generic reply here."])]
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "train.json").write_text(json.dumps(train))
    systems = {}
    for name, words in (("A", "alpha system says"), ("B", "beta system answers")):
        folder = tmp_path / "eval" / f"run_{name}"
        folder.mkdir(parents=True)
        hyp = folder / "diversity_1.0_length_1.0.txt"
        # A's replies are longer on the even samples, B's on the odd ones
        hyp.write_text("".join(f"{words} number {d}{' at length' * (3 if (d % 2 == 0) == (name == 'A') else 0)}\n"
                               for d in range(N)))
        Path(str(hyp) + ".scores.json").write_text(json.dumps({"run": f"run_{name}", "sample_ids": ids}))
        systems[name] = hyp
    return {"dir": tmp_path, "ids": ids, "test": test, "refs": {r["context"][0]: r["response"] for r in test},
            "A": systems["A"], "B": systems["B"]}


def _args(world, out, stub=None, *extra, a="A", b="B"):
    args = ["--a", str(world[a]), "--b", str(world[b]), "--test_data", str(world["dir"] / "test.json"),
            "--train_data", str(world["dir"] / "train.json"), "--output_dir", str(out), "--resamples", "200",
            "--concurrency", "1", "--max_retries", "0", "--timeout", "5"]
    return args + (["--base_url", stub.base_url] if stub is not None else []) + list(extra)


def _judge(monkeypatch, capsys, args, key=KEY):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    rc = judge_responses.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _result(out):
    return json.loads((Path(out) / "judge.json").read_text())


def first_shown(prompt, r1, r2):
    return "1"


def longer(prompt, r1, r2):
    return "1" if len(r1) > len(r2) else "2" if len(r2) > len(r1) else "tie"


def reference_judge(world):
    def choose(prompt, r1, r2):
        ref = world["refs"][SITUATION.search(prompt).group(1)]
        return "1" if r1 == ref else "2" if r2 == ref else "tie"
    return choose


def random_judge(prompt, r1, r2):
    return "12"[hashlib.sha256(prompt.encode()).digest()[0] % 2]


# ------------------------------------------------------------------------------------------ pure parts
def test_parse_and_combine():
    assert parse_judgement("Fluency: 1\nIdentification: Reply 2\nComforting - tie\nSuggestion: 2\nOverall: 1") == \
        {"Fluency": "1", "Identification": "2", "Comforting": "tie", "Suggestion": "2", "Overall": "1"}
    assert parse_judgement("Fluency: 1\nIdentification: 2") is None  # a criterion missing: unreadable
    both_first = combine({c: "1" for c in CRITERIA}, {c: "1" for c in CRITERIA})
    assert {v["verdict"] for v in both_first.values()} == {"tie"} and not any(v["consistent"] for v in both_first.values())
    agree = combine({c: "1" for c in CRITERIA}, {c: "2" for c in CRITERIA})  # A first, then A second
    assert {v["verdict"] for v in agree.values()} == {"win"} and all(v["consistent"] for v in agree.values())
    assert sign_test(10, 0) == pytest.approx(2 / 1024) and sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0


# ------------------------------------------------------------------------------------------ the judge
def test_position_bias_gives_no_net_wins_and_zero_consistency(world, monkeypatch, capsys):
    out = world["dir"] / "j"
    with StubServer(answer_fn=judge_answer_fn(first_shown)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, out, stub))
        assert len(stub.requests) == 2 * 3 * N  # both orders of every sample and of both controls
    assert rc == 0
    r = _result(out)
    assert r["schema"] == "magic.judge/1" and r["n_judged"] == N
    for c in CRITERIA:
        s = r["results"][c]
        assert (s["win"], s["tie"], s["lose"], s["net"]) == (0.0, 1.0, 0.0, 0.0)
        assert s["position_consistency"] == 0.0
    assert r["position_consistency"] == 0.0
    assert r["controls"]["trusted"] is False and "cannot separate systems" in stdout


def test_reference_judge_passes_controls_random_judge_is_flagged(world, monkeypatch, capsys):
    out = world["dir"] / "ref"
    with StubServer(answer_fn=judge_answer_fn(reference_judge(world))) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, out, stub))
    assert rc == 0
    controls = _result(out)["controls"]
    for kind in ("frequent", "other_dialogue"):
        assert controls[kind]["accuracy"] == {c: 1.0 for c in ("Identification", "Comforting", "Suggestion", "Overall")}
        assert controls[kind]["passes"] is True
    assert controls["trusted"] is True and controls["flag"] is None
    assert "cannot separate" not in stdout

    out = world["dir"] / "rnd"
    with StubServer(answer_fn=judge_answer_fn(random_judge)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, out, stub))
    assert rc == 0
    controls = _result(out)["controls"]
    assert controls["trusted"] is False and controls["flag"] == "this judge cannot separate systems"
    assert "WARNING: this judge cannot separate systems" in stdout

    def contrary(prompt, r1, r2):  # always against the reference: consistent and significant, but wrong
        return {"1": "2", "2": "1"}.get(reference_judge(world)(prompt, r1, r2), "tie")
    out = world["dir"] / "contrary"
    with StubServer(answer_fn=judge_answer_fn(contrary)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, out, stub))
    controls = _result(out)["controls"]
    assert rc == 0 and controls["frequent"]["sign_test_p"]["Overall"] < 0.05 and controls["trusted"] is False


def test_swapping_a_and_b_swaps_win_and_lose(world, monkeypatch, capsys):
    runs = {}
    for name, (a, b) in {"ab": ("A", "B"), "ba": ("B", "A")}.items():
        with StubServer(answer_fn=judge_answer_fn(longer)) as stub:
            rc, _, _ = _judge(monkeypatch, capsys, _args(world, world["dir"] / name, stub, "--no_controls", a=a, b=b))
        assert rc == 0
        runs[name] = _result(world["dir"] / name)
    ab, ba = runs["ab"], runs["ba"]
    assert ab["results"]["Overall"]["win"] == 0.5  # A longer on the even samples: a real split, not all ties
    flip = {"win": "lose", "lose": "win", "tie": "tie"}
    for c in CRITERIA:
        assert ab["results"][c]["win"] == ba["results"][c]["lose"] and ab["results"][c]["lose"] == ba["results"][c]["win"]
        assert ab["results"][c]["sign_test_p"] == ba["results"][c]["sign_test_p"]
        for sid in world["ids"]:
            assert ab["per_sample"][sid][c]["verdict"] == flip[ba["per_sample"][sid][c]["verdict"]]


def test_unreadable_answers_are_reasked_then_counted_apart(world, monkeypatch, capsys):
    def choose(prompt, r1, r2):
        situation = SITUATION.search(prompt).group(1)
        if situation.startswith("situation 1:") and r1.startswith("alpha"):
            return "I cannot decide."  # never readable with A shown first: the sample is counted apart
        if situation.startswith("situation 2:") and "could not be read" not in prompt:
            return "Both are nice."  # readable once reminded
        return longer(prompt, r1, r2)
    out = world["dir"] / "unread"
    with StubServer(answer_fn=judge_answer_fn(choose)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, out, stub, "--no_controls", "--parse_retries", "2"))
        asked = [p for p in stub.prompts() if "situation 1:" in p]
    assert rc == 0
    r = _result(out)
    assert r["unreadable"] == ["test-1-3"] and r["n_judged"] == N - 1
    assert "test-1-3" not in r["per_sample"] and "test-2-3" in r["per_sample"]
    assert len(asked) == 3 + 1  # A first: asked once and re-asked twice; B first: readable at once
    assert "1 unreadable after 2 re-asks" in stdout
    s = r["results"]["Overall"]
    assert s["n"] == N - 1 and s["win"] + s["tie"] + s["lose"] == pytest.approx(1.0)


def test_no_text_of_the_data_in_the_output(world, monkeypatch, capsys):
    out = world["dir"] / "notext"
    with StubServer(answer_fn=judge_answer_fn(longer)) as stub:
        rc, _, _ = _judge(monkeypatch, capsys, _args(world, out, stub))
    assert rc == 0
    text = (out / "judge.json").read_text()
    assert str(world["dir"]) in text  # the paths of the inputs are there; take them out, then look for data text
    text = text.replace(str(world["dir"]), "").replace("diversity_1.0_length_1.0.txt", "")
    pieces = {p for r in world["test"] for p in r["context"] + [r["response"]]}
    pieces |= set(world["A"].read_text().splitlines()) | set(world["B"].read_text().splitlines())
    pieces |= {"Frequent generic reply here."}
    for piece in pieces:
        for word in re.findall(r"[A-Za-z]+\d+|[A-Za-z]{6,}", piece):
            if word not in ("situation", "system", "reference", "Reference"):
                assert word not in text, word


def test_key_with_a_line_break_is_refused_before_any_request(world, monkeypatch, capsys):
    key = "sk-judge-LEAKY1234\nSECONDHALF5678"
    with StubServer(answer_fn=judge_answer_fn(longer)) as stub:
        rc, stdout, stderr = _judge(monkeypatch, capsys, _args(world, world["dir"] / "k", stub), key=key)
        assert stub.requests == []
    assert rc == 2 and "OPENAI_API_KEY" in stderr and "line break" in stderr
    for part in ("LEAKY1234", "SECONDHALF5678"):
        assert part not in stdout + stderr
    assert not (world["dir"] / "k" / "judge_cache.jsonl").exists()


def test_dry_run_and_show_prompt_send_nothing(world, monkeypatch, capsys):
    with StubServer(answer_fn=judge_answer_fn(longer)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, world["dir"] / "d", stub, "--dry_run", "--limit", "4",
                                                           "--price_per_1k_input", "1"))
        assert rc == 0 and f"requests: {2 * 3 * 4} (0 already cached" in stdout and "estimated cost: $" in stdout
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, world["dir"] / "d", stub, "--show_prompt"))
        assert rc == 0 and all(f"- {c}:" in stdout for c in CRITERIA) and stdout.count("Reply 1:") == 1
        assert stub.requests == []


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_the_same_verdicts_without_reasking(world):
    env = dict(os.environ, OPENAI_API_KEY=KEY, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    killed, clean = world["dir"] / "killed", world["dir"] / "clean"
    cache = killed / "judge_cache.jsonl"
    total = 2 * 3 * N
    with StubServer(latency=0.1, answer_fn=judge_answer_fn(longer)) as stub:
        cmd = [sys.executable, str(REPO / "judge_responses.py"), *_args(world, killed, stub)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and not (cache.exists() and cache.read_bytes().count(b"\n") >= 8):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL and not (killed / "judge.json").exists()
        done = cache.read_text().split("\n")[:-1]  # complete lines only (a torn one is asked again)
        assert 8 <= len(done) < total
        n_first = len(stub.requests)
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        rerun_prompts = stub.prompts()[n_first:]
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # all cached now
        assert again.returncode == 0 and len(stub.requests) == n_first + len(rerun_prompts)
        ok = subprocess.run([sys.executable, str(REPO / "judge_responses.py"), *_args(world, clean, stub)], env=env,
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
    first_asked = {p for p in stub.prompts()[:n_first]}
    assert len(rerun_prompts) == total - len(done)
    assert len(set(rerun_prompts) & first_asked) <= 1  # at most the one in flight at the kill, never a cached one
    a, b = _result(killed), _result(clean)
    assert a["per_sample"] == b["per_sample"] and a["results"] == b["results"] and a["controls"] == b["controls"]


# ------------------------------------------------------------------------------------------ direct-LLM supporter
def test_direct_llm_rows_in_step8_format_judged_like_any_system(world, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    eval_dir = world["dir"] / "eval"

    def answer(prompt):
        strategy = re.search(r'Use the strategy "([^"]+)"', prompt)
        return f"Supporter: I hear you{' (' + strategy.group(1) + ')' if strategy else ''}.\nextra line"
    with StubServer(answer_fn=answer) as stub:
        for mode in ("zero_shot", "strategy"):
            rc = direct_llm_responses.main(["--test_data", str(world["dir"] / "test.json"), "--eval_dir", str(eval_dir),
                                            "--mode", mode, "--base_url", stub.base_url, "--no_meteor"])
            assert rc == 0, capsys.readouterr().err
        n = len(stub.requests)
        assert n == 2 * N
        rc = direct_llm_responses.main(["--test_data", str(world["dir"] / "test.json"), "--eval_dir", str(eval_dir),
                                        "--mode", "strategy", "--base_url", stub.base_url, "--no_meteor"])
        assert rc == 0 and len(stub.requests) == n  # cached
    capsys.readouterr()
    zero = eval_dir / "direct_zero_shot" / "diversity_0.0_length_1.0.txt"
    strat = eval_dir / "direct_strategy" / "diversity_0.0_length_1.0.txt"
    assert zero.read_text().splitlines() == ["I hear you ."] * N
    assert strat.read_text().splitlines()[0] == "I hear you (Providing Suggestions or Information)."
    record = json.loads(Path(str(strat) + ".scores.json").read_text())
    assert record["sample_ids"] == world["ids"] and record["per_sample"]["ids"] == world["ids"]
    assert "Bleu_2" in record["scores"]
    world["Z"], world["S"] = zero, strat
    with StubServer(answer_fn=judge_answer_fn(longer)) as stub:
        rc, stdout, _ = _judge(monkeypatch, capsys, _args(world, world["dir"] / "zs", stub, "--no_controls", a="S",
                                                          b="Z"))
    assert rc == 0 and _result(world["dir"] / "zs")["results"]["Overall"]["win"] == 1.0


@pytest.mark.parametrize("script", ["judge_responses.py", "direct_llm_responses.py"])
def test_help_imports_no_torch_and_shows_each_default_once(script):
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\ntry:\n    runpy.run_path({script!r}, "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('heavy imported:', any(m in sys.modules for m in "
            "('torch', 'transformers', 'openai', 'numpy')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}"))
    assert proc.stdout.rstrip().endswith("heavy imported: False"), proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) <= 80
    options = re.split(r"\n  (?=-)", proc.stdout.split("this step:", 1)[1])
    assert len(options) > 10 and all(o.count("default:") <= 1 for o in options), options
    assert "--backend {openai,local,vllm}" in proc.stdout and "--limit N" in proc.stdout


@pytest.mark.parametrize("cls", [JudgeConfig, DirectConfig])
def test_number_flags_are_checked_and_parsed_defaults_are_the_config_defaults(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if base[0] in (int, float):
            assert f.metadata["cli"]["type"] not in (None, int, float), f.name
    required = ["--a", "x", "--b", "y"] if cls is JudgeConfig else []
    parsed = from_namespace(cls, build_parser(cls, "", "").parse_args(required))
    assert parsed == (cls(a="x", b="y") if cls is JudgeConfig else cls())
