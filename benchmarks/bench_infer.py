"""Batched vs one-prompt-at-a-time generation for strategy inference (target: >= 4x prompts/s on CPU).

    python benchmarks/bench_infer.py                                   # tiny random Llama (or SmolLM2, below)
    python benchmarks/bench_infer.py --model_path tiny                 # force the tiny random Llama
    python benchmarks/bench_infer.py --model_path models/smollm2-135m-instruct --n_prompts 16

Same model, same prompts (LLaMA strategy prompts of the first --n_prompts validation samples when the
data is present, else synthetic dialogue prompts), same greedy settings, default template. Prints
prompts/s for batch size 1 and --batch_size and their ratio. --model_path default: SmolLM2 if
models/smollm2-135m-instruct exists, else a tiny random Llama built in a temporary folder.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from src.local_llm import format_prompt, generate_batch, load_causal_lm  # noqa: E402


def bench_prompts(data_dir: str, n: int, synthetic: bool) -> tuple[list[str], str]:
    valid = os.path.join(data_dir, "magic", "valid.txt")
    if os.path.exists(valid) and not synthetic:
        from src.esconv import load_samples
        from src.prompts import llama_prompt
        return [llama_prompt(s) for s in load_samples(valid, "valid")[:n]], f"first {n} valid prompts of {valid}"
    lines = ["(1) Seeker: I feel so sad and lonely since I lost my job.\n",
             "(2) Supporter: I am sorry to hear that. [Reflection of feelings]\n",
             "(3) Seeker: I do not know what to do now.\n"]
    return ["".join(lines[: 1 + i % 3]) + "Motivation:" for i in range(n)], "synthetic prompts"


def run(model, tok, texts, batch_size, max_new_tokens):
    t0 = time.perf_counter()
    outs = []
    for i in range(0, len(texts), batch_size):
        outs += generate_batch(model, tok, texts[i:i + batch_size], max_new_tokens)
    return time.perf_counter() - t0, outs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=None)
    p.add_argument("--data_dir", default=os.environ.get("MAGIC_DATA_DIR", os.path.join(ROOT, "..", "shared", "data", "esconv")))
    p.add_argument("--n_prompts", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--synthetic", action="store_true", help="short synthetic prompts instead of real ones")
    p.add_argument("--no_sort", action="store_true",
                   help="batch prompts in file order (infer_strategy sorts by length to limit padding)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model_path = args.model_path
    tmp = None
    if model_path is None or model_path == "tiny":
        smol = os.path.join(ROOT, "models", "smollm2-135m-instruct")
        if model_path is None and os.path.isfile(os.path.join(smol, "config.json")):
            model_path = smol
        else:
            from tests.llm_fixtures import make_tiny_llama
            tmp = tempfile.TemporaryDirectory()
            model_path = make_tiny_llama(tmp.name)
    model, tok = load_causal_lm(model_path, device=args.device)
    prompts, source = bench_prompts(args.data_dir, args.n_prompts, args.synthetic)
    texts = [format_prompt(tok, x, "default") for x in prompts]
    if not args.no_sort:
        texts.sort(key=len)  # as infer_strategy batches them: similar lengths together, less padding
    n_tokens = [len(tok(t)["input_ids"]) for t in texts]
    generate_batch(model, tok, texts[:2], 2)  # warm-up (allocations, lazy init)

    t1, single = run(model, tok, texts, 1, args.max_new_tokens)
    tb, batched = run(model, tok, texts, args.batch_size, args.max_new_tokens)
    same = sum(a == b for a, b in zip(single, batched))
    print(f"model: {model_path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
          f"device {args.device}, {args.threads} threads")
    print(f"prompts: {len(texts)} ({source}), {min(n_tokens)}-{max(n_tokens)} tokens, "
          f"max_new_tokens {args.max_new_tokens}, greedy, {'file order' if args.no_sort else 'sorted by length'}")
    print(f"one at a time : {len(texts) / t1:8.2f} prompts/s ({t1:.1f} s)")
    print(f"batch of {args.batch_size:<5}: {len(texts) / tb:8.2f} prompts/s ({tb:.1f} s)")
    print(f"speed-up      : {t1 / tb:8.2f}x (target >= 4x); identical answers {same}/{len(texts)}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
