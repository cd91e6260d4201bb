"""scripts/demo_summary.py: the forced-wrong-strategy file and the timing table (the full summary runs in
tests/end_to_end/test_end_to_end.py)."""
import json

import pytest

from demo_summary import SummaryError, main, timing_rows, wrong_strategies
from magic.esconv.dialogues import STRATEGIES, strategy_id


def test_wrong_strategies_never_gold(tmp_path):
    recs = [{"id": f"test-{i}-1", "strategy": STRATEGIES[0], "gold_strategy": s} for i, s in enumerate(STRATEGIES)]
    src, out = tmp_path / "test.json", tmp_path / "wrong.json"
    src.write_text(json.dumps(recs))
    assert wrong_strategies(str(src), str(out)) == len(STRATEGIES)
    wrong = json.loads(out.read_text())
    assert [r["id"] for r in wrong] == [r["id"] for r in recs]
    assert all(strategy_id(w["strategy"]) != strategy_id(r["gold_strategy"]) for w, r in zip(wrong, recs))
    assert len({w["strategy"] for w in wrong}) == len(STRATEGIES)  # a permutation, not one constant label


def test_timing_rows_keep_the_latest_value(tmp_path):
    (tmp_path / "timings.tsv").write_text("0 data\t1\n1 motivations\t50\n0 data\t2\n")
    assert timing_rows(str(tmp_path)) == [("0 data", 2), ("1 motivations", 50)]
    (tmp_path / "timings.tsv").write_text("0 data\tfast\n")
    with pytest.raises(SummaryError, match="line 1"):
        timing_rows(str(tmp_path))


def test_missing_artefacts_fail_with_one_line(tmp_path, capsys):
    assert main(["summary", "--work", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("demo_summary.py: error:") and "\n" not in err
    assert not (tmp_path / "SUMMARY.md").exists()


def test_name_strategies_puts_the_gold_label_in_front(tmp_path, repo_root):
    from demo_summary import name_strategies
    from magic.esconv.dialogues import canonical_strategy, load_samples, parse_strategy

    train = repo_root / "data" / "demo" / "train.txt"
    samples = load_samples(train, "train")
    mot = tmp_path / "motivations_4_LLaMA.json"
    answers = ["The supporter wants to help."] * len(samples)
    answers[0] = f"The motivation of the supporter in choosing the strategy [{samples[0].strategy}] is to help."
    mot.write_text(json.dumps(answers))
    (tmp_path / "motivations_4_LLaMA.ids.json").write_text(json.dumps([s.id for s in samples]))
    assert name_strategies(str(train), str(mot)) == (len(samples) - 1, len(samples))
    named = json.loads(mot.read_text())
    assert named[0] == answers[0]  # already named: untouched
    assert all(parse_strategy(m) == canonical_strategy(s.strategy) for s, m in zip(samples, named))
    assert json.loads((tmp_path / "motivations_4_LLaMA.raw.json").read_text()) == answers
    assert name_strategies(str(train), str(mot)) == (len(samples) - 1, len(samples))  # idempotent
    assert json.loads(mot.read_text()) == named


def _plan(**kw):
    plan = {"llm": "smollm2", "data": "demo", "precision": "fp32", "n_train": 100, "n_valid": 20, "n_test": 10,
            "tokens_motivation": 40, "tokens_base": 16, "tokens_infer": 40, "lora_epochs": 2, "lora_batch": 1,
            "max_train": None}
    return {**plan, **kw}


def test_estimate_is_the_steps_work_over_the_probed_rate(monkeypatch):
    """The time estimate from a fake probe: each step's GFLOP-equivalents / the probe's rate in the step's
    precision, plus its fixed seconds; twice the rate halves the scaled part; the total is the steps' sum."""
    import demo_summary as ds

    costs = {"gen_prompt": 10.0, "gen_token": 1.0, "lora_cache": 5.0, "lora_example": 20.0, "lora_shared": 0.5,
             "lora_step": 2.0,
             "generator_train": 500.0, "generator_eval": 100.0}
    monkeypatch.setattr(ds, "COSTS", costs)
    monkeypatch.setattr(ds, "FIXED_S", {"load": 0.0, "merge": 0.0, "small": 0.0})
    fake = {"cpu": "Fake CPU", "flags": ["avx2"], "cores": 2, "threads": 2, "load": 0.5, "precision": "bf16",
            "gflops": {"fp32": 10.0, "bf16": 50.0}}
    est = ds.estimate(_plan(precision="bf16"), fake)
    s = est["steps"]
    assert s["1 motivations (smollm2)"] == 100 * (10 + 40) / 50  # 100 prompts x (prefill + 40 tokens), bf16 rate
    assert s["3a base-model strategies (test)"] == 10 * (10 + 16) / 50
    assert s["5 strategy inference"] == 130 * (10 + 40) / 50
    assert s["3 LoRA fine-tuning"] == 4 + (100 * 5 + 200 * 20 + 200 * 2) / 50  # 200 steps of one example
    assert s["7 train MAGIC"] == 500 / 10  # the generator runs in fp32: the fp32 rate
    # the three evaluations run at once: each expects the group's time (their work adds up), counted once
    assert s["8 evaluation"] == s["8 evaluation, wrong strategies"] == 3 * 100 / 10
    assert est["total"] == pytest.approx(sum(s.values()) - 2 * s["8 evaluation"], abs=0.2)
    # 4 examples per step: a quarter of the steps' overhead; the shared instruction once per step
    batched = ds.estimate(_plan(precision="bf16", lora_batch=4), fake)["steps"]["3 LoRA fine-tuning"]
    assert batched == pytest.approx(4 + (100 * 5 + 200 * 20 * (0.5 + 0.5 / 4) + 50 * 2) / 50)
    # LLM_TRAIN caps the LoRA pairs, not the motivations
    capped = ds.estimate(_plan(max_train=50), fake)["steps"]
    assert capped["3 LoRA fine-tuning"] == 4 + (50 * 5 + 100 * 20 + 100 * 2) / 10
    assert capped["1 motivations (smollm2)"] == 100 * 50 / 10
    q8 = ds.estimate(_plan(gen_precision="int8"), {**fake, "gflops": {"fp32": 10.0, "int8": 25.0}})["steps"]
    assert q8["5 strategy inference"] == 130 * (10 + 40) / 25  # generation at the int8 rate
    assert q8["3 LoRA fine-tuning"] == 4 + (100 * 5 + 200 * 20 + 200 * 2) / 10  # LoRA stays fp32
    faster = ds.estimate(_plan(), {**fake, "gflops": {"fp32": 20.0}})
    assert faster["steps"]["7 train MAGIC"] == s["7 train MAGIC"] / 2
    text = ds.format_estimate(est)
    assert "Fake CPU (avx2)" in text and "bf16 50 GFLOP/s" in text and "load 0.5" in text


def test_probe_measures_the_matmul_rate_and_names_the_cpu():
    import demo_summary as ds

    m = ds.probe("fp32", "int8", seconds=0.05)
    assert m["gflops"]["fp32"] > 0 and m["gflops"]["int8"] > 0 and m["gen_precision"] == "int8" and m["cores"] >= 1 and m["threads"] >= 1 and m["precision"] == "fp32"
    assert set(m["flags"]) <= set(ds.RELEVANT_FLAGS)
