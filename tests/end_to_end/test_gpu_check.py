"""scripts/gpu_check.sh in its CPU form (DEVICE=cpu), as CI runs it: every row OK or SKIP, the table written
to $OUT, and a broken path reported as FAIL with exit code 1."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_check_cpu_form(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "WORK": str(tmp_path / "work")}
    r = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    by_path = {row["path"]: row for row in rows}
    assert all(row["status"] in ("OK", "SKIP") for row in rows), rows
    # the paths that must have run on the CPU, with their comparisons
    assert by_path["main.py cpu --bf16"]["status"] == "OK"
    assert by_path["finetune_llm.py LoRA cpu --bf16"]["status"] == "OK"
    assert by_path["infer_strategy.py cpu --no_prefix_sharing"]["diff"].startswith("0 ")
    assert by_path["test_evaluation.py cpu (reference)"]["status"] == "OK"
    assert "| path | status | seconds |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_gpu_check_refuses_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu_check.py"), "--device", "cuda", "--work", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr
    assert not os.listdir(tmp_path)


def test_failed_path_is_a_fail_row(tmp_path):
    from gpu_check import Checker, rel_diff

    ck = Checker("cpu", str(tmp_path), sys.executable)
    ok, _, _ = ck.run("broken", ["-c", "raise SystemExit(3)"])
    row = ck.judged("broken path", ok, 0.1, None, None)
    assert row.status == "FAIL"
    assert ck.judged("too far", True, 0.1, rel_diff([1.5], [1.0]), 0.1).status == "FAIL"
    assert ck.judged("close", True, 0.1, rel_diff([1.05], [1.0]), 0.1).status == "OK"
    assert ck.judged("nan", True, 0.1, rel_diff([float("nan")], [1.0]), 0.1).status == "FAIL"


@pytest.mark.slow
def test_paper_timing_part_cpu_form(tmp_path):
    """PARTS=paper_timing: scripts/paper_timing.py's tiny form on CPU through the check, one OK row with the
    projected total, and its JSON with every step's projection."""
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "WORK": str(tmp_path / "work"), "PARTS": "paper_timing"}
    r = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    row = [x for x in rows if x["path"].startswith("paper_timing")][0]
    assert row["status"] == "OK" and "projected steps 3-8" in row["note"]
    timing = json.loads((tmp_path / "work" / "logs" / "paper_timing.json").read_text())
    assert timing["size"] == "tiny"
    for step in ("step3_lora", "step5_inference", "step7_generator", "step8_decoding"):
        assert timing[step]["projected_s"] > 0, step
    assert timing["step5_inference"]["released_projected_s"] > timing["step5_inference"]["projected_s"]
