"""The demo pipeline end to end (scripts/demo.sh) on a trimmed configuration: every artefact exists with
the right counts, the scores file holds the 7 metrics and Distinct-1/2, and a rerun skips finished steps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from magic.esconv.dialogues import load_samples

METRICS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
TRIM = 4


def run_demo(repo_root, work, *args):
    # LLM=tiny: the random Llama (the demo's default SmolLM2 takes minutes; this test checks the plumbing)
    env = dict(os.environ, WORK=str(work), TRIM=str(TRIM), LLM="tiny", EPOCHS="1", LLM_EPOCHS="1", BART_D_MODEL="32",
               LLM_HIDDEN="32", PY=sys.executable)
    return subprocess.run(["bash", "scripts/demo.sh", *args], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=900)


def load(path):
    return json.loads(Path(path).read_text())


@pytest.mark.slow
def test_demo_pipeline_trimmed(repo_root, tmp_path):
    work = tmp_path / "run"
    r = run_demo(repo_root, work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data, llm = work / "data", work / "llm"
    samples = {split: load_samples(data / f"{split}.txt", split) for split in ("train", "valid", "test")}
    assert [len(load_dialogues_lines(data / f"{s}.txt")) for s in ("train", "valid", "test")] == [TRIM] * 3
    n = {split: len(s) for split, s in samples.items()}
    assert n["test"] == TRIM

    assert load(llm / "motivations_4_LLaMA.ids.json") == [s.id for s in samples["train"]]
    assert len(load(llm / "motivations_4_LLaMA.json")) == n["train"]
    assert len(load(llm / "prompts_4_LLaMA.json")) == n["train"]
    assert load(llm / "prompts_4_LLaMA_valid.ids.json") == [s.id for s in samples["valid"]]
    assert (llm / "adapter" / "adapter_config.json").exists() and (llm / "merged" / "config.json").exists()
    for split, name in (("train", ""), ("valid", "_valid"), ("test", "_test")):
        entries = load(llm / f"strategy_with_motivation{name}.json")
        assert [e["id"] for e in entries] == [s.id for s in samples[split]]
        assert all(e["strategy"].startswith("[") for e in entries)
        records = load(data / f"{split}.json")
        assert [rec["id"] for rec in records] == [s.id for s in samples[split]]

    ckpts = sorted((work / "out_model").glob("bs_16_epochs_1_*/epoch_*"))
    assert ckpts, "no checkpoint written"
    for name in ("dialogue_model.pth", "memory_bank.pth", "args.json"):
        assert (ckpts[-1] / name).exists(), name

    refs = (work / "eval_result" / "response_lables.txt").read_text().splitlines()
    assert len(refs) == n["test"]
    hyp_files = list((work / "eval_result").glob("bs_16_epochs_1_*/diversity_1.0_length_1.0.txt"))
    assert len(hyp_files) == 1
    assert len(hyp_files[0].read_text().splitlines()) == n["test"]
    scores = load(str(hyp_files[0]) + ".scores.json")
    flat = scores.get("scores", scores)
    for key in METRICS + ["Distinct-1", "Distinct-2"]:
        assert isinstance(flat[key], float), key
    assert "Demo finished" in r.stdout
    summary = (work / "SUMMARY.md").read_text()
    for heading in ("Strategy LLM on the test split", "Generator on the test split", "Three test samples",
                    "Wall time per step", "## Machine", "| step | expected s | actual s |"):
        assert heading in summary, heading
    est = load(work / "estimate.json")  # said before spending it: printed before step 1
    assert est["machine"]["gflops"]["fp32"] > 0 and set(est["steps"]) >= {"3 LoRA fine-tuning", "7 train MAGIC"}
    assert r.stdout.index("expected time per step") < r.stdout.index("=== 1 motivations")

    again = run_demo(repo_root, work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done (") >= 9  # every step skipped


def load_dialogues_lines(path):
    return [line for line in Path(path).read_text().splitlines() if line.strip()]
