"""Strategy inference at scale: --shard K/N + merge give the unsharded files byte for byte; --backend openai
--openai_endpoint completions sends the templated prompt exactly; --backend vllm fails clearly without vllm."""
import importlib.util
import json
import os

import pytest

from magic.llm.prompts import wrap_default_template
from magic.testing.make_small_llm import make_tiny_llama
from magic.testing.openai_stub import StubServer, stub_answer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "LLM_inference", "infer_strategy.py")
HEAD = "Infer the strategy of the supporter's next turn.\n"
CLIPS = ["(1) Seeker: I feel sad.", "(1) Seeker: I feel sad.\n(2) Supporter: Why? [Question]\n(3) Seeker: I lost my job.",
         "(1) Supporter: Hello! [Greeting]\n(2) Seeker: Exams stress me.", "(1) Seeker: My dog is ill.",
         "(1) Seeker: My dog is ill.\n(2) Supporter: I am sorry. [Reflection of feelings]\n(3) Seeker: Thanks."]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    model = make_tiny_llama(d)
    for split, n in (("valid", 5), ("test", 3)):
        prompts = [HEAD + c for c in CLIPS[:n]]
        (d / f"prompts_4_LLaMA_{split}.json").write_text(json.dumps(prompts))
        (d / f"prompts_4_LLaMA_{split}.ids.json").write_text(json.dumps([f"{split}-{i}-1" for i in range(n)]))
    return d, model


def _script():
    spec = importlib.util.spec_from_file_location("infer_strategy_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def infer(world, out, *extra, check=True):
    """infer_strategy.py's main() in this process (a subprocess per call costs seconds of imports)."""
    import contextlib
    import io

    d, model = world
    argv = ["--model_path", model, "--splits", "valid,test", "--output_dir", str(out),
            "--prompt_path_valid", str(d / "prompts_4_LLaMA_valid.json"),
            "--prompt_path_test", str(d / "prompts_4_LLaMA_test.json"),
            "--batch_size", "2", "--max_new_tokens", "6", "--device", "cpu", *extra]
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        try:
            rc = _script().main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code
    r = Result(rc, so.getvalue(), se.getvalue())
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


FILES = ("strategy_with_motivation_valid.json", "strategy_with_motivation_test.json")


def test_shards_then_merge_are_byte_identical_to_one_run(world, tmp_path):
    whole, shards, merged = tmp_path / "whole", tmp_path / "shards", tmp_path / "merged"
    infer(world, whole)
    # shard 1 of 2 first: valid has batches [0,1] [2,3] [4]; shard 1 answers batch [2,3] and must not write
    r = infer(world, shards, "--shard", "1/2")
    assert not any((shards / f).exists() for f in FILES)
    assert "others still missing" in r.stdout + r.stderr
    # a merge now refuses, naming the incomplete shard, and writes nothing
    r = infer(world, merged, "--merge_shards", "2", "--cache_file", str(shards / "strategy_inference_cache.jsonl"),
              check=False)
    assert r.returncode == 1 and "shard 0/2" in r.stderr
    assert not any((merged / f).exists() for f in FILES)
    # shard 0 finishes last: it writes the usual files, identical to the unsharded run's
    infer(world, shards, "--shard", "0/2")
    for f in FILES:
        assert (shards / f).read_bytes() == (whole / f).read_bytes(), f
    ids = [e["id"] for e in json.loads((shards / FILES[0]).read_text())]
    assert ids == [f"valid-{i}-1" for i in range(5)]
    # each shard cache holds only its own batches
    c0 = [json.loads(x)["id"] for x in (shards / "strategy_inference_cache.shard0of2.jsonl").read_text().splitlines()]
    c1 = [json.loads(x)["id"] for x in (shards / "strategy_inference_cache.shard1of2.jsonl").read_text().splitlines()]
    assert not set(c0) & set(c1) and sorted(c0 + c1) == sorted(ids + [f"test-{i}-1" for i in range(3)])
    assert {"valid-2-1", "valid-3-1", "test-2-1"} == set(c1)
    # a later explicit merge (no model run) gives the same files
    infer(world, merged, "--merge_shards", "2", "--cache_file", str(shards / "strategy_inference_cache.jsonl"))
    for f in FILES:
        assert (merged / f).read_bytes() == (whole / f).read_bytes(), f


def test_bad_shard_is_refused(world, tmp_path):
    for bad in ("2/2", "x", "1/0"):
        r = infer(world, tmp_path, "--shard", bad, check=False)
        assert r.returncode == 2 and "--shard" in r.stderr
    assert not any((tmp_path / f).exists() for f in FILES)


def test_completions_endpoint_sends_the_templated_prompt_exactly(world, tmp_path):
    d, _ = world
    prompts = json.loads((d / "prompts_4_LLaMA_valid.json").read_text()) + \
        json.loads((d / "prompts_4_LLaMA_test.json").read_text())
    with StubServer() as stub:
        infer(world, tmp_path, "--backend", "openai", "--openai_endpoint", "completions", "--base_url",
              stub.base_url, "--model", "stub")
        reqs = list(stub.requests)
    want = [wrap_default_template(p) for p in prompts]
    assert sorted(r.prompt for r in reqs) == sorted(want)  # every prompt once, character for character
    assert all("messages" not in r.body and r.body["max_tokens"] == 6 and r.body["temperature"] == 0.0
               for r in reqs)
    entries = json.loads((tmp_path / FILES[0]).read_text())
    assert [e["motivation"] for e in entries] == [stub_answer(w) for w in want[:5]]
    # the chat endpoint stays available and sends the raw instruction
    with StubServer() as stub:
        infer(world, tmp_path / "chat", "--backend", "openai", "--base_url", stub.base_url, "--model", "stub")
        assert sorted(r.prompt for r in stub.requests) == sorted(prompts)
        assert all("messages" in r.body for r in stub.requests)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_fails_clearly(world, tmp_path):
    r = infer(world, tmp_path, "--backend", "vllm", check=False)
    assert r.returncode == 1
    assert "needs the vllm package" in r.stderr
    assert not any((tmp_path / f).exists() for f in FILES)
