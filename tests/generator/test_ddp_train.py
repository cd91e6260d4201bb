"""main.py under torchrun (gloo, CPU): 2 processes x batch 8 against 1 process x batch 16 on the same samples.

Every rank must hold the same memory bank after every step (main.py compares the ranks' banks after each
step and stops on a difference: the run succeeding is the check; test_bank_check_catches_a_difference
shows that it does catch one). The loss curves and the final bank must equal the single process's up to
float rounding: src/magic/generator/distributed.py normalises the generation loss by the global token count and computes
the auxiliary loss on the gathered entries, so the averaged gradient is the single-process gradient.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.bart_fixtures import make_records, make_tiny_bart_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# float rounding only (other padding inside a chunk, other summation order); measured ~1e-6
TOL = 1e-4


def _bart_without_dropout(tmp_path):
    bart = make_tiny_bart_dir(tmp_path, name="bart_nodrop")
    cfg = json.loads((bart / "config.json").read_text())
    cfg.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)  # same maths whatever the RNG
    (bart / "config.json").write_text(json.dumps(cfg))
    return bart


def _run(cmd, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def _history(out):
    (run,) = [os.path.join(out, d) for d in os.listdir(out)]
    return run, json.loads(open(os.path.join(run, "history.json")).read())


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    bart = _bart_without_dropout(tmp_path)
    recs = make_records(n_dialogues=8, turns=8)  # 32 samples: 2 global batches of 16 per epoch
    (tmp_path / "train.json").write_text(json.dumps(recs))
    (tmp_path / "valid.json").write_text(json.dumps(recs[:10]))
    common = ["--bart_base_dir", str(bart), "--train_data", str(tmp_path / "train.json"), "--valid_data",
              str(tmp_path / "valid.json"), "--num_epochs", "2", "--learning_rate", "1e-3", "--max_length", "64",
              "--strategy_memory_max", "6", "--device", "cpu"]
    _run([sys.executable, "main.py", "--output_dir", str(tmp_path / "one"), "--batch_size", "16", *common])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
          "--output_dir", str(tmp_path / "two"), "--batch_size", "8", *common])
    run1, h1 = _history(tmp_path / "one")
    run2, h2 = _history(tmp_path / "two")  # rank 0 alone wrote: one run folder
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        for k in ("train_loss", "train_gen_loss", "train_strategy_loss", "val_ppl"):
            assert abs(a[k] - b[k]) <= TOL * abs(a[k]), (k, a[k], b[k])
    assert json.loads(open(os.path.join(run2, "args.json")).read())["world_size"] == 2
    bank1 = torch.load(os.path.join(run1, "last", "memory_bank.pth"), weights_only=True)
    bank2 = torch.load(os.path.join(run2, "last", "memory_bank.pth"), weights_only=True)
    assert [t.shape for t in bank1] == [t.shape for t in bank2] and sum(t.size(0) for t in bank1) > 0
    assert max(float((a - b).abs().max()) for a, b in zip(bank1, bank2) if a.numel()) < 1e-4


def _bank_check_worker(rank, port, q):
    import torch.distributed as dist

    from magic.generator.distributed import DataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    dp = DataParallel(rank=rank, world=2, device=torch.device("cpu"))
    bank = [torch.ones(2, 3), torch.zeros(0, 3)]
    dp.check_bank(bank, 0)  # equal: passes
    bank[0][1, 2] += 1e-6 * rank  # one entry differs on rank 1
    try:
        dp.check_bank(bank, 1)
        q.put((rank, "no error"))
    except RuntimeError as e:
        q.put((rank, str(e)))
    dist.destroy_process_group()


def test_bank_check_catches_a_difference():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_bank_check_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all("differs from rank 0's after step 1" in got[r] for r in range(2)), got


def test_chunks_cover_a_global_batch_in_order():
    from magic.generator.distributed import DataParallel

    for n in (16, 15, 3, 2):
        parts = [DataParallel(rank=r, world=2).chunk(n) for r in range(2)]
        assert parts[0][0] == 0 and parts[0][1] == parts[1][0] and parts[1][1] == n
        assert abs((parts[0][1] - parts[0][0]) - (parts[1][1] - parts[1][0])) <= 1
