"""Strategy inference (src/strategy_inference.run_strategy_inference, LLM_inference/infer_strategy.py):
one entry per prompt with the right ids, resumable, gold report, and the OpenAI-compatible backend."""
import json
import os
import types

import pytest

import magic.llm.engines.hf as hf
from magic.llm.local_model import format_prompt, load_causal_lm
from magic.esconv.dialogues import load_samples
from magic.llm.prompts import llama_prompt
from magic.llm.inference import InferenceConfig, load_prompt_file, run_strategy_inference
from magic.testing.make_small_llm import make_tiny_llama

DIALOGUES = [
    {"situation": "lost my job", "dialog": [
        {"speaker": "usr", "text": "Hi, I feel sad."},
        {"speaker": "sys", "text": "Why do you feel sad?", "strategy": "Question"},
        {"speaker": "usr", "text": "I lost my job."},
        {"speaker": "sys", "text": "That sounds really hard.", "strategy": "Reflection of feelings"},
        {"speaker": "usr", "text": "It is."},
        {"speaker": "sys", "text": "Maybe talk to a friend.", "strategy": "Providing Suggestions or Information"}]},
    {"situation": "exam stress", "dialog": [
        {"speaker": "sys", "text": "Hello!", "strategy": "Greeting"},
        {"speaker": "usr", "text": "Hi, exams stress me."},
        {"speaker": "sys", "text": "I had exams too.", "strategy": "Self-disclosure"},
        {"speaker": "usr", "text": "How did you cope?"},
        {"speaker": "sys", "text": "You will do fine.", "strategy": "Affirmation and Reassurance"}]},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("infer")
    model = make_tiny_llama(d)
    gold = d / "valid.txt"
    gold.write_text("".join(json.dumps(x) + "\n" for x in DIALOGUES))
    samples = load_samples(gold, "valid")
    prompts = d / "prompts_4_LLaMA_valid.json"
    prompts.write_text(json.dumps([llama_prompt(s) for s in samples]))
    (d / "prompts_4_LLaMA_valid.ids.json").write_text(json.dumps([s.id for s in samples]))
    train = d / "prompts_4_LLaMA.json"  # train prompts are {instruction, output} objects
    train.write_text(json.dumps([{"instruction": llama_prompt(s), "output": "x"} for s in samples[:3]]))
    (d / "prompts_4_LLaMA.ids.json").write_text(json.dumps(["train-0-1", "train-0-3", "train-0-5"]))
    return d, model, str(gold), str(prompts), str(train), [s.id for s in samples]


def _cfg(world, out, **kw):
    d, model, _, valid, _, _ = world
    kw.setdefault("prompt_paths", {"valid": valid})
    return InferenceConfig(output_dir=str(out), model_path=model, cache_file=str(out / "cache.jsonl"),
                           batch_size=2, max_new_tokens=5, device="cpu", progress=False, **kw)


def _read(out, name="strategy_with_motivation_valid.json"):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def test_one_entry_per_prompt_with_right_ids(world, tmp_path):
    d, model, _, valid, train, ids = world
    res = run_strategy_inference(_cfg(world, tmp_path, prompt_paths={"valid": valid, "train": train}),
                                 log=lambda m: None)
    entries = _read(tmp_path)
    assert [e["id"] for e in entries] == ids  # 5 valid samples, from the sidecar, in order
    assert ids == ["valid-0-1", "valid-0-3", "valid-0-5", "valid-1-2", "valid-1-4"]
    assert all(set(e) == {"id", "strategy", "motivation"} for e in entries)
    assert all(e["strategy"].startswith("[") and e["strategy"] == e["strategy"].lower() for e in entries)
    assert [e["id"] for e in _read(tmp_path, "strategy_with_motivation.json")] == ["train-0-1", "train-0-3", "train-0-5"]
    assert res["valid"]["n"] == 5
    # the motivations are what the model generates greedily for each default-templated prompt on its own:
    # batching (file order, shared prefixes, batch_size 2) changes nothing, and entries keep the file order
    m, tok = load_causal_lm(model, device="cpu")
    prompts = json.load(open(valid))
    want = [hf.generate_batch(m, tok, [format_prompt(tok, p, "default")], 5, share_prefix=False)[0]
            for p in prompts]
    assert [e["motivation"] for e in entries] == want
    # the previous way (padded batches of similar length) gives the same file
    plain = tmp_path / "plain"
    run_strategy_inference(_cfg(world, plain, share_prefix=False), log=lambda m: None)
    assert (plain / "strategy_with_motivation_valid.json").read_bytes() == \
        (tmp_path / "strategy_with_motivation_valid.json").read_bytes()


def test_max_samples_and_missing_sidecar(world, tmp_path):
    bare = tmp_path / "p_test.json"
    bare.write_text(json.dumps(["a prompt", "another prompt", "third"]))
    # no sidecar: an error naming it, before any generation; nothing written
    with pytest.raises(FileNotFoundError, match=r"p_test\.ids\.json: ids sidecar of .*p_test\.json not found"):
        load_prompt_file(str(bare), "test")
    with pytest.raises(FileNotFoundError, match="ids sidecar"):
        run_strategy_inference(_cfg(world, tmp_path, prompt_paths={"test": str(bare)}, max_samples=2),
                               log=lambda m: None)
    assert not (tmp_path / "strategy_with_motivation_test.json").exists()
    (tmp_path / "p_test.ids.json").write_text(json.dumps(["test-0", "test-1", "test-2"]))
    ids, prompts = load_prompt_file(str(bare), "test")
    assert ids == ["test-0", "test-1", "test-2"] and prompts[1] == "another prompt"
    run_strategy_inference(_cfg(world, tmp_path, prompt_paths={"test": str(bare)}, max_samples=2),
                           log=lambda m: None)
    assert [e["id"] for e in _read(tmp_path, "strategy_with_motivation_test.json")] == ["test-0", "test-1"]
    (tmp_path / "p_test.ids.json").write_text(json.dumps(["t-1"]))
    with pytest.raises(ValueError, match="1 ids for 3 entries"):
        load_prompt_file(str(bare), "test")


def test_killed_run_resumes_to_identical_files(world, tmp_path, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    run_strategy_inference(_cfg(world, full), log=lambda m: None)

    real = hf.generate_batch
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after one batch")
        return real(*a, **k)

    monkeypatch.setattr(hf, "generate_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_strategy_inference(_cfg(world, part), log=lambda m: None)
    assert not (part / "strategy_with_motivation_valid.json").exists()  # never a partial output
    assert len((part / "cache.jsonl").read_text().splitlines()) == 2  # the first batch was kept

    calls["n"] = 10  # no more deaths; count the batches the resumed run generates
    res = run_strategy_inference(_cfg(world, part), log=lambda m: None)
    assert calls["n"] == 12  # only the 2 missing batches (of 3) were generated
    assert res["valid"]["from_cache"] == 2
    assert (part / "strategy_with_motivation_valid.json").read_bytes() == \
        (full / "strategy_with_motivation_valid.json").read_bytes()


def test_report_against_gold_by_id(world, tmp_path):
    d, _, gold, valid, _, ids = world
    res = run_strategy_inference(_cfg(world, tmp_path, gold_files={"valid": gold}), log=lambda m: None)
    rep = res["valid"]["report"]
    assert rep["n"] == 5 and rep["gold_samples"] == 5
    # gold matched by id: Question, Reflection, Suggestions (dialogue 0); Self-disclosure, Affirmation (1)
    assert rep["gold_counts"] == [1, 0, 1, 1, 1, 1, 0, 0]
    assert sum(map(sum, rep["confusion"])) == 5
    saved = json.load(open(tmp_path / "strategy_with_motivation_valid_report.json"))
    assert saved["accuracy"] == rep["accuracy"]
    assert (tmp_path / "strategy_with_motivation_valid_confusion.png").stat().st_size > 1000


def test_openai_backend_sends_raw_prompts(world, tmp_path, monkeypatch):
    import magic.llm.engines.openai as llm_client
    sent = []

    class FakeCompletions:
        def create(self, model, messages, **kw):
            sent.append((model, messages[0]["content"], kw))
            msg = types.SimpleNamespace(content="The motivation ... the strategy [Question] is to ask.")
            return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg, finish_reason="stop")])

        @property
        def with_raw_response(self):  # the SDK's raw response: the parsed completion and the retries it took
            return types.SimpleNamespace(create=lambda **kw: types.SimpleNamespace(
                parse=lambda: self.create(**kw), retries_taken=0))

    fake = types.SimpleNamespace(chat=types.SimpleNamespace(completions=FakeCompletions()))
    monkeypatch.setattr(llm_client, "make_openai_client", lambda *a, **k: fake)
    valid = world[3]
    run_strategy_inference(_cfg(world, tmp_path, backend="openai", base_url="http://x/v1", model="magic",
                                concurrency=1), log=lambda m: None)
    entries = _read(tmp_path)
    assert [e["strategy"] for e in entries] == ["[question]"] * 5
    assert sorted(p for _, p, _ in sent) == sorted(json.load(open(valid)))  # no template added
    assert all(m == "magic" and kw["max_tokens"] == 5 and kw["temperature"] == 0.0 for m, _, kw in sent)
    with pytest.raises(ValueError, match="--base_url"):
        run_strategy_inference(_cfg(world, tmp_path, backend="openai"), log=lambda m: None)


def test_cli_defaults_are_relative_to_the_script_folder(repo_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location("infer_strategy", repo_root / "LLM_inference" / "infer_strategy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args, _ = mod.parse_args([])
    here = str(repo_root / "LLM_inference")
    assert args.model_path == os.path.join(here, "fine_tuned_llama2/")
    assert args.prompt_path_test == os.path.join(here, "prompts_4_LLaMA_test.json")
    assert os.path.normpath(args.output_dir) == here
    assert args.batch_size == 16 and args.max_new_tokens == 128 and not args.do_sample
    assert mod.main(["--model_path", "/nonexistent/model", "--splits", "valid"]) == 1
