"""Training throughput of the generator: ours (dynamic padding, masked pooling) vs the released padding.

    .venv/bin/python benchmarks/bench_train.py [--steps 50 --warmup 5 --batch_size 16 --threads 1]

Data: the real validation samples (magic/valid.txt of the shared data, built into records with
src.esconv; MAGIC_DATA_DIR overrides the location); the script exits with a message when it is absent.
Model: a random BART from src/make_small_bart.py (d_model 256, 2+2 layers, 4 heads) whose byte-level BPE
is trained on those texts. For each mode, in its own process (so peak RSS is per mode), it times
``--steps`` optimizer steps after ``--warmup`` and prints samples/s and peak RSS:

    masked    ours: batches padded to their longest sequence, max-pool over real tokens
    grouped   masked + --group_by_length (batches of similar context length)
    all       --pool all: contexts padded to 512, memory responses to 64, pool over every position
    released  "all" plus what the released training step also paid for: responses padded to 512 and the
              (unused) motivation encoded at 512 tokens, under torch.autograd.set_detect_anomaly(True)
              as its main.py sets

Only the forward/backward/step is timed; the released code also re-tokenised every batch on the fly.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import resource
import subprocess
import sys
import tempfile
import time

ROOT = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "_bootstrap.py"))["ROOT"]
MODES = ("masked", "grouped", "all", "released")


def data_dir() -> str:
    return os.environ.get("MAGIC_DATA_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data", "esconv"))


def build_inputs(work: str) -> tuple[str, str]:
    """records.json (valid samples) and a small BART trained on their texts, under work/."""
    from src.dataset_build import sample_record
    from src.esconv import load_samples
    from src.make_small_bart import make_small_bart

    recs = [sample_record(s) for s in load_samples(os.path.join(data_dir(), "magic", "valid.txt"), "valid")]
    path = os.path.join(work, "records.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(recs, f)
    texts = sorted({t for r in recs for t in r["context"] + [r["response"]]})
    bart = make_small_bart(os.path.join(work, "bart"), texts, vocab_size=8000, d_model=256, layers=2, heads=4)
    return path, bart


def run_mode(mode: str, records: str, bart: str, steps: int, warmup: int, batch_size: int, threads: int) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from transformers import BartTokenizer

    from src.data import DialogueDataset, LengthGroupedBatchSampler, collator_for, load_records
    from src.model import DialogueModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = BartTokenizer.from_pretrained(bart)
    model = DialogueModel.from_pretrained_bart(bart, pool="all" if mode in ("all", "released") else "masked")
    ds = DialogueDataset(load_records(records), tok, max_length=512, max_length_res_memory=64)
    gen = torch.Generator().manual_seed(0)
    if mode == "grouped":
        sampler = LengthGroupedBatchSampler([len(x) for x in ds.context_ids], batch_size, gen)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collator_for(model))
    else:
        loader = DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=collator_for(model),
                            generator=gen, drop_last=True)
    if mode == "released":
        torch.autograd.set_detect_anomaly(True)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    it = iter(loader)
    t0 = None
    ctx_tokens = 0
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        b = next(it)
        if mode == "released":
            pad = 512 - b["decoder_input_ids"].size(1)
            b["decoder_input_ids"] = torch.nn.functional.pad(b["decoder_input_ids"], (0, pad), value=tok.pad_token_id)
            b["decoder_attention_mask"] = torch.nn.functional.pad(b["decoder_attention_mask"], (0, pad))
            b["labels"] = torch.nn.functional.pad(b["labels"], (0, pad), value=-100)
            model.encoder(input_ids=b["motivation_ids"], attention_mask=b["motivation_mask"])  # computed, unused
        out = model(**b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if step >= warmup:
            ctx_tokens += b["input_ids"].numel()
    secs = time.perf_counter() - t0
    return {"mode": mode, "samples_per_s": steps * batch_size / secs, "secs": secs,
            "mean_context_len": ctx_tokens / (steps * batch_size),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=16)
    # 1 by default: on a shared 2-core machine, 2 OpenMP threads per process thrash (several times slower)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--_child", nargs=3, metavar=("MODE", "RECORDS", "BART"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        res = run_mode(a._child[0], a._child[1], a._child[2], a.steps, a.warmup, a.batch_size, a.threads)
        print("RESULT " + json.dumps(res))
        return
    if not os.path.exists(os.path.join(data_dir(), "magic", "valid.txt")):
        print(f"skipped: real data not found at {data_dir()} (set MAGIC_DATA_DIR)")
        return
    results = {}
    with tempfile.TemporaryDirectory() as work:
        records, bart = build_inputs(work)
        print(f"d_model 256, 2+2 layers, batch {a.batch_size}, {a.steps} steps after {a.warmup} warm-up, "
              f"{a.threads} threads")
        for mode in a.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--warmup", str(a.warmup),
                                  "--batch_size", str(a.batch_size), "--threads", str(a.threads),
                                  "--_child", mode, records, bart], capture_output=True, text=True, cwd=ROOT)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"mode {mode} failed:\n{out.stderr[-3000:]}")
            r = results[mode] = json.loads(line[-1][len("RESULT "):])
            print(f"{mode:9s} {r['samples_per_s']:8.2f} samples/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"mean padded context {r['mean_context_len']:.0f} tokens  ({r['secs']:.1f} s)", flush=True)
    for ours in ("masked", "grouped"):
        for other in ("all", "released"):
            if ours in results and other in results:
                print(f"speed-up {ours} vs {other}: "
                      f"{results[ours]['samples_per_s'] / results[other]['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
