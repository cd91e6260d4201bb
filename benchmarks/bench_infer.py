"""Batched vs one-prompt-at-a-time generation for strategy inference (target: >= 4x prompts/s on CPU).

    python benchmarks/bench_infer.py                                   # SmolLM2 if converted, else tiny
    python benchmarks/bench_infer.py --model_path tiny --synthetic     # tiny random Llama, short prompts
    python benchmarks/bench_infer.py --model_path models/smollm2-135m-instruct --n_prompts 32

Same model, same prompts (the LLaMA strategy prompts of the first --n_prompts validation samples when the
data is present, else synthetic dialogue prompts), same greedy settings, default template. Three ways:

* single (one at a time): a plain ``generate`` call per prompt (the released script's way, without its sampling);
* padded: one left-padded ``generate`` call per batch, prompts grouped by length
  (``infer_strategy.py --no_prefix_sharing``);
* shared: ``infer_strategy.py``'s default: batches in file order, each prompt prefilled
  only where it differs from an earlier prompt of its batch, then decoded together.

Prints prompts/s, the prompt tokens each way ran through the model, the speed-up over one at a time
and how many answers equal the one-at-a-time ones. --model_path default: SmolLM2 if
models/smollm2-135m-instruct exists (scripts/convert_smollm2.py), else a tiny random Llama built in a
temporary folder.
"""
import argparse
import copy
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from magic.llm.engines.hf import generate_batch
from magic.llm.local_model import format_prompt, load_causal_lm


def bench_prompts(data_dir: str, n: int, synthetic: bool) -> tuple[list[str], str]:
    valid = os.path.join(data_dir, "magic", "valid.txt")
    if os.path.exists(valid) and not synthetic:
        from magic.esconv.dialogues import load_samples
        from magic.llm.prompts import llama_prompt
        return [llama_prompt(s) for s in load_samples(valid, "valid")[:n]], f"first {n} valid prompts of {valid}"
    lines = ["(1) Seeker: I feel so sad and lonely since I lost my job.\n",
             "(2) Supporter: I am sorry to hear that. [Reflection of feelings]\n",
             "(3) Seeker: I do not know what to do now.\n"]
    return ["".join(lines[: 1 + i % 3]) + "Motivation:" for i in range(n)], "synthetic prompts"


MODES = {  # name -> (label, batched (--batch_size, else 1), share_prefix, sort by length)
    "single": ("one at a time", False, False, False),
    "padded": ("batch {}, padded", True, False, True),
    "shared": ("batch {}, shared prefill", True, True, False),
}


def run(model, tok, texts, batch_size, max_new_tokens, share_prefix, sort):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    stats: dict = {}
    outs = [""] * len(texts)
    t0 = time.perf_counter()
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        for i, out in zip(idx, generate_batch(model, tok, [texts[i] for i in idx], max_new_tokens,
                                              share_prefix=share_prefix, stats=stats)):
            outs[i] = out
    return time.perf_counter() - t0, outs, stats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=None)
    p.add_argument("--data_dir", default=os.environ.get("MAGIC_DATA_DIR", os.path.join(ROOT, "..", "shared", "data", "esconv")))
    p.add_argument("--n_prompts", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--synthetic", action="store_true", help="short synthetic prompts instead of real ones")
    p.add_argument("--levers", default=None,
                   help="instead of --modes: comma-separated fp32:TOKENS or int8:TOKENS settings of the shared way "
                        "(e.g. fp32:40,fp32:16,int8:40), each timed in CPU seconds of this process, interleaved "
                        "--repeat times, answers compared with the first setting's (label and text prefix)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated subset of single,padded,shared (the first one is the reference)")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: expected a comma-separated subset of {list(MODES)}, got {args.modes!r}")
    torch.set_num_threads(args.threads)

    model_path = args.model_path
    tmp = None
    if model_path is None or model_path == "tiny":
        smol = os.path.join(ROOT, "models", "smollm2-135m-instruct")
        if model_path is None and os.path.isfile(os.path.join(smol, "config.json")):
            model_path = smol
        else:
            from magic.testing.make_small_llm import make_tiny_llama
            tmp = tempfile.TemporaryDirectory()
            model_path = make_tiny_llama(tmp.name)
    model, tok = load_causal_lm(model_path, device=args.device)
    prompts, source = bench_prompts(args.data_dir, args.n_prompts, args.synthetic)
    texts = [format_prompt(tok, x, "default") for x in prompts]
    n_tokens = [len(tok(t)["input_ids"]) for t in texts]
    generate_batch(model, tok, texts[:2], 2)  # warm-up (allocations, lazy init)
    generate_batch(model, tok, texts[:2], 2, share_prefix=False)

    print(f"model: {model_path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
          f"device {args.device}, {args.threads} threads")
    print(f"prompts: {len(texts)} ({source}), {min(n_tokens)}-{max(n_tokens)} tokens ({sum(n_tokens):,} in all), "
          f"max_new_tokens {args.max_new_tokens}, greedy")
    if args.levers:
        return levers(model, tok, texts, args)
    ref_time = ref_outs = None
    for name in modes:
        label, batched, share, sort = MODES[name]
        size = args.batch_size if batched else 1
        label = label.format(size)
        seconds, outs, stats = run(model, tok, texts, size, args.max_new_tokens, share, sort)
        if ref_time is None:
            ref_time, ref_outs = seconds, outs
        same = sum(a == b for a, b in zip(ref_outs, outs))
        print(f"{label:<28}: {len(texts) / seconds:7.3f} prompts/s ({seconds:6.1f} s), prompt tokens run "
              f"{stats['computed_tokens']:>7,}, speed-up {ref_time / seconds:5.2f}x, same answers {same}/{len(texts)}",
              flush=True)
    print(f"target: >= 4x over {MODES[modes[0]][0].format(args.batch_size)!r} for the shared prefill")
    if tmp is not None:
        tmp.cleanup()


def levers(model, tok, texts, args) -> None:
    """Each setting of --levers on the same prompts, interleaved (the machine's load hits them alike); CPU time
    of this process (user + sys, all threads) beside the wall time."""
    from magic.esconv.dialogues import parse_strategy
    from magic.llm.local_model import quantize_int8

    settings = [(kind, int(n)) for kind, _, n in (x.partition(":") for x in args.levers.split(","))]
    models = {"fp32": model}
    if any(kind == "int8" for kind, _ in settings):
        models["int8"] = quantize_int8(copy.deepcopy(model))
    cpu = {s: 0.0 for s in settings}
    wall = {s: 0.0 for s in settings}
    outs = {}
    for _ in range(args.repeat):
        for s in settings:
            c0, t0 = time.process_time(), time.perf_counter()
            outs[s] = run(models[s[0]], tok, texts, args.batch_size, s[1], True, False)[1]
            cpu[s] += time.process_time() - c0
            wall[s] += time.perf_counter() - t0
    ref = settings[0]
    for s in settings:
        labels = sum(parse_strategy(a) == parse_strategy(b) for a, b in zip(outs[ref], outs[s]))
        prefix = sum(a.startswith(b) or b.startswith(a) for a, b in zip(outs[ref], outs[s]))
        print(f"{s[0]}:{s[1]:<4} CPU {cpu[s] / args.repeat:7.1f} s, wall {wall[s] / args.repeat:7.1f} s "
              f"({len(texts)} prompts); CPU {cpu[ref] / cpu[s]:.2f}x of {ref[0]}:{ref[1]}; same label "
              f"{labels}/{len(texts)}, same text (prefix) {prefix}/{len(texts)}", flush=True)


if __name__ == "__main__":
    main()
