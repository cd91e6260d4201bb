"""Generator training speed in the paper's configuration, on a GPU (or the CPU, as CI's form of it).

    python benchmarks/bench_gpu_train.py [--device cuda] [--batching length,random] [--steps 40 --warmup 8]
    python benchmarks/bench_gpu_train.py --device cpu --size tiny --steps 2 --warmup 1   # CI: runs in seconds

The paper's configuration: a random BART of bart-base's shapes (``make_paper_shaped_bart``: d 768, 6+6 layers,
12 heads, 50,265 tokens; the weights' values do not change the speed), batch 16, context/response lengths
512/64, K = 128 memory entries per strategy, l_strategy 0.2, fused AdamW, bfloat16 autocast (``--no_bf16``:
fp32), on the real training split (``$MAGIC_DATA_DIR``, default ../shared/data/esconv; without it the demo's
training dialogues, said in the output). Each row runs ``magic.generator.train.train_epoch`` itself (the code
main.py runs) over ``--warmup`` untimed and then ``--steps`` timed batches; the memory bank is filled by the
warm-up first (a real epoch reads full slots). ``--batching``: ``length`` batches similar context lengths (the
sampler main.py uses by default), ``random`` shuffles plainly (``--no_group_by_length``).

Reported per batching: samples/s, tokens/s (real context + target + memory tokens, no padding), peak GPU memory,
and MFU: model FLOPs per second over the card's dense bf16 peak (H100/H200: 989 TFLOP/s; A100: 312;
``--peak_tflops`` overrides; on CPU a measured 2048x2048 fp32 matmul). The model FLOPs are counted by
torch.utils.flop_counter (matmuls and attention) over one forward + backward of a timed batch (padding
included: with length batching there is little). ``--json FILE`` writes the rows.
Exit codes: 0 measured, 2 a flag or the device cannot be used.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

from magic.common.validate import positive_float, positive_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
SIZES = {"paper": None, "tiny": dict(vocab_size=600, d_model=64, layers=1, heads=2)}


def training_records() -> tuple[list[dict], str]:
    from magic.esconv.dialogues import load_samples
    from magic.generator.records import sample_record

    root = os.environ.get("MAGIC_DATA_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data", "esconv"))
    path = os.path.join(root, "reconstructed", "train.txt")
    if os.path.exists(path):
        return [sample_record(s) for s in load_samples(path, "train")], f"the real training split ({path})"
    path = os.path.join(ROOT, "data", "demo", "train.txt")
    return [sample_record(s) for s in load_samples(path, "train")], f"the demo's training dialogues ({path}; no real data)"


def card_peak(device, override: float | None) -> tuple[float, str]:
    """FLOP/s the MFU is measured against, and what it is."""
    import torch

    if override:
        return override * 1e12, f"{override} TFLOP/s (--peak_tflops)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{name}: dense bf16 {tflops} TFLOP/s"
        return float("nan"), f"{name}: peak unknown (--peak_tflops)"
    from bench_train import mm_peak  # benchmarks/ is on sys.path when this runs by path

    gflops = mm_peak()
    return gflops * 1e9, f"CPU fp32 2048x2048 matmul, measured {gflops:.0f} GFLOP/s"


def real_tokens(batch: dict) -> int:
    n = int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
    if "memory_attention_mask" in batch:
        n += int(batch["memory_attention_mask"].sum())
    return n


def measure(path: str, args, records, bart: str, device) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from transformers import BartTokenizer

    from magic.generator.config import GeneratorConfig
    from magic.generator.data import DialogueDataset, LengthGroupedBatchSampler, collator_for
    from magic.generator.model import DialogueModel
    from magic.generator.train import make_optimizer, to_device, train_epoch

    torch.manual_seed(0)
    cfg = GeneratorConfig(max_length=args.max_length, max_length_res_memory=args.max_length_res, strategy_memory_max=128)
    model = DialogueModel.from_pretrained_bart(bart, cfg).to(device)
    model.reset_memory()
    tok = BartTokenizer.from_pretrained(bart)
    ds = DialogueDataset(records, tok, model.generator_config)
    collate = collator_for(model)
    gen = torch.Generator().manual_seed(0)
    n = (args.warmup + args.steps) * args.batch_size
    if path == "length":
        sampler = LengthGroupedBatchSampler([len(x) for x in ds.context_ids], args.batch_size, gen)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, pin_memory=device.type == "cuda")
    else:
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, generator=gen, collate_fn=collate,
                            pin_memory=device.type == "cuda")
    batches = []
    for b in loader:  # collated up front: the timed span is the training steps, not the tokenisation
        batches.append(b)
        if len(batches) * args.batch_size >= n:
            break
    warm, timed = batches[:args.warmup], batches[args.warmup:]
    optimizer = make_optimizer(model, 1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    bf16 = not args.no_bf16
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def epoch(bs):
        train_epoch(model, [b for b in bs], optimizer, scheduler, None, device, 0.2, autocast, True, desc=path)

    epoch(warm)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t = time.perf_counter()
    epoch(timed)
    sync()
    dt = time.perf_counter() - t
    samples = sum(b["input_ids"].size(0) for b in timed)
    tokens = sum(real_tokens(b) for b in timed)
    # model FLOPs of one forward + backward of a timed batch, counted in an untimed pass
    from bench_train import flop_counter  # benchmarks/ is on sys.path when this runs by path

    model.train()
    batch = to_device(timed[0], device)
    with flop_counter() as counter:
        with autocast():
            out = model(**batch, return_logits=False)
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    flops_per_sample = counter.get_total_flops() / batch["input_ids"].size(0)
    peak, peak_what = card_peak(device, args.peak_tflops)
    row = {"path": path, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "precision": "bf16 autocast" if bf16 else "fp32",
           "steps": len(timed), "batch_size": args.batch_size, "seconds": round(dt, 3),
           "samples_per_s": round(samples / dt, 2), "tokens_per_s": round(tokens / dt, 1),
           "gflop_per_sample": round(flops_per_sample / 1e9, 2),
           "mfu": round(flops_per_sample * samples / dt / peak, 4) if peak == peak else None, "peak": peak_what,
           "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
           if device.type == "cuda" else None}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu")
    p.add_argument("--batching", default="length,random", help="batch orders to time: length, random")
    p.add_argument("--size", choices=list(SIZES), default="paper", help="paper: bart-base shapes; tiny: CI")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--warmup", type=positive_int, default=8)
    p.add_argument("--batch_size", type=positive_int, default=16)
    p.add_argument("--max_length", type=positive_int, default=512)
    p.add_argument("--max_length_res", type=positive_int, default=64)
    p.add_argument("--no_bf16", action="store_true", help="fp32 instead of bfloat16 autocast")
    p.add_argument("--peak_tflops", type=positive_float, default=None)
    p.add_argument("--work", default=None, help="keep the BART here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the rows here")
    a = p.parse_args(argv)
    import torch

    paths = a.batching.split(",")
    if set(paths) - {"length", "random"}:
        print(f"bench_gpu_train.py: error: --batching takes length and/or random, got {a.batching!r}", file=sys.stderr)
        return 2
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_train.py: error: --device cuda but no GPU is visible (use --device cpu)", file=sys.stderr)
        return 2
    records, what = training_records()
    need = (a.warmup + a.steps) * a.batch_size * 4  # evenly spaced: the split's length mix, less tokenising
    records = records[::max(1, len(records) // need)]
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or tmp
        bart = os.path.join(work, f"bart_{a.size}")
        if not os.path.exists(os.path.join(bart, "config.json")):
            from magic.testing.make_small_bart import make_paper_shaped_bart, make_small_bart

            texts = [x for r in records for x in r["context"] + [r["response"]]]
            if a.size == "paper":
                make_paper_shaped_bart(bart, texts)
            else:
                make_small_bart(bart, texts, **SIZES[a.size])
        print(f"data: {what}, {len(records)} evenly spaced samples; BART: {a.size} ({bart})")
        rows = [measure(path, a, records, bart, device) for path in paths]
    print("| batching | device | precision | samples/s | tokens/s | GFLOP/sample | MFU | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['device']} | {r['precision']} | {r['samples_per_s']} | {r['tokens_per_s']} | "
              f"{r['gflop_per_sample']} | {r['mfu']} | {r['peak_memory_gib']} |")
    print(f"MFU against {rows[0]['peak']}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"data": what, "size": a.size, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
