"""benchmarks/bench_gpu_train.py in its CPU form (CI): both batch orders timed, the rows written; a GPU that
is not there is a clear error (exit 2)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_gpu_train.py")


def test_cpu_form_times_both_batch_orders(tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--size", "tiny", "--steps", "2", "--warmup", "1",
                        "--batch_size", "4", "--max_length", "128", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [x["path"] for x in rows] == ["length", "random"]
    for x in rows:
        assert x["samples_per_s"] > 0 and x["tokens_per_s"] > 0 and x["gflop_per_sample"] > 0
        assert 0 < x["mfu"] < 1 and x["steps"] == 2
    assert "| length | cpu |" in r.stdout and "MFU against" in r.stdout


def test_cuda_without_a_gpu_is_exit_2():
    import torch

    if torch.cuda.is_available():
        return
    r = subprocess.run([sys.executable, SCRIPT, "--device", "cuda"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 2 and "no GPU is visible" in r.stderr
