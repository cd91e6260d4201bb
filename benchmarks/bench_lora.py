"""LoRA fine-tuning steps (step 3): the frozen-layer cache and answer-only logits against the full forward.

    python benchmarks/bench_lora.py                         # SmolLM2, the demo's LoRA settings, 40 steps each
    python benchmarks/bench_lora.py --model_path tiny       # a tiny random Llama (plumbing only)
    python benchmarks/bench_lora.py --lora_layers 0         # q/v of every layer (the paper's target): no cache

Three ways, each a fresh ``run_sft`` (src/magic/llm/sft.py) over the same pairs, batch 1, same seed:

* full: the whole model at every step, logits at every position (what a plain transformers Trainer does);
* answer logits: logits only at the answer positions (``--frozen_layer_cache off``);
* cached (the default): answer logits, and the layers below the lowest LoRA layer run once per example.

Pairs: the LLaMA strategy prompts of the first --n_pairs training samples of data/demo (the shipped synthetic
dialogues), each answered "The motivation of the supporter in choosing the strategy [<gold>] is to ...", the
demo's answer form. Prints seconds per step (the cache's one-time build shown apart), the speed-up over full,
and the mean training loss of each run (equal up to float rounding). --model_path default: SmolLM2 where
converted (models/ or demo_run/models/, scripts/convert_smollm2.py), else a tiny random Llama.
"""
import argparse
import contextlib
import json
import os
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from magic.common.validate import positive_int
from magic.esconv.dialogues import load_samples
from magic.llm import sft
from magic.llm.prompts import llama_prompt
from magic.study.cells import bf16_units

def pairs_file(folder: str, n: int) -> str:
    samples = load_samples(os.path.join(ROOT, "data", "demo", "train.txt"), "train")[:n]
    pairs = [{"instruction": llama_prompt(s), "output": f"The motivation of the supporter in choosing the strategy "
              f"[{s.strategy}] is to answer the cue in the seeker's last turn."} for s in samples]
    path = os.path.join(folder, "pairs.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(pairs, f)
    return path


def find_model(choice: str | None, folder: str) -> str:
    if choice and choice != "tiny":
        return choice
    for base in ("models", os.path.join("demo_run", "models")):
        smol = os.path.join(ROOT, base, "smollm2-135m-instruct")
        if choice is None and os.path.isfile(os.path.join(smol, "config.json")):
            return smol
    from magic.testing.make_small_llm import make_tiny_llama
    return make_tiny_llama(folder, num_layers=4)


@contextlib.contextmanager
def full_logits():
    """The Trainer's plain path: every position's logits (answer_only_inputs switched off)."""
    keep = sft.answer_only_inputs
    sft.answer_only_inputs = lambda model, inputs: inputs
    try:
        yield
    finally:
        sft.answer_only_inputs = keep


def run(model_path, data, out, target, steps, precision, cache_mode, batch=1):
    cfg = sft.SFTConfig(model_name_or_path=model_path, dataset=data, output_dir=out, lora_target=target,
                        per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps,
                        learning_rate=3e-3, logging_steps=steps, save_steps=10 ** 6, device="cpu",
                        disable_tqdm=True, bf16=precision == "bf16", frozen_layer_cache=cache_mode,
                        overwrite_output_dir=True)
    t, c = time.perf_counter(), time.process_time()
    summary = sft.run_sft(cfg)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    runtime = next(h["train_runtime"] for h in summary["log_history"] if "train_runtime" in h)
    build_s = (summary["frozen_layer_cache"] or {}).get("build_s", 0.0)  # inside the Trainer's runtime
    return {"step_s": (runtime - build_s) / steps, "build_s": build_s, "wall_s": wall, "cpu_s": cpu,
            "batch": batch, "train_loss": summary["train_loss"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", default=None, help="a causal LM folder, or tiny (default: SmolLM2 if converted)")
    p.add_argument("--lora_layers", type=int, default=6,
                   help="LoRA on every projection of the top N layers (the demo: 6); 0: q_proj,v_proj of all")
    p.add_argument("--n_pairs", type=positive_int, default=186, help="training pairs (the demo has 186)")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="default: bf16 where the CPU has bfloat16 units (AMX or AVX512-BF16), as the demo")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--modes", default="full,answer,cached", help="comma-separated: full, answer, cached")
    p.add_argument("--batch_sizes", default=None,
                   help="instead of --modes: the cached way at each of these examples per step (e.g. 1,4), the "
                        "same number of examples each (--steps at the first size); prints CPU seconds per example "
                        "(this process, all threads: the machine's other load counts less than in wall time)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precision = args.precision or ("bf16" if bf16_units() else "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = find_model(args.model_path, tmp)
        from transformers import AutoConfig
        layers = AutoConfig.from_pretrained(model_path).num_hidden_layers
        if not 0 <= args.lora_layers < layers:
            raise SystemExit(f"error: --lora_layers {args.lora_layers}: the model has {layers} layers; expected 0 "
                             f"(q_proj,v_proj of all) to {layers - 1}")
        if args.lora_layers:
            target = sft.top_layers_target(layers, args.lora_layers)
            what = f"every projection of the top {args.lora_layers} of {layers} layers"
        else:
            target, what = "q_proj,v_proj", f"q_proj,v_proj of all {layers} layers"
        data = pairs_file(tmp, args.n_pairs)
        print(f"model {model_path}, {precision}, {args.threads} threads; LoRA on {what}; {args.n_pairs} demo pairs, "
              f"{args.steps} steps of batch 1 per way")
        rows = {}
        if args.batch_sizes:
            sizes = [positive_int(x) for x in args.batch_sizes.split(",")]
            examples = args.steps * sizes[0]
            for b in sizes:
                r = rows[f"batch{b}"] = run(model_path, data, os.path.join(tmp, f"out-b{b}"), target,
                                             max(1, examples // b), precision, "auto", b)
                n = max(1, examples // b) * b
                print(f"  batch {b:2d}: {r['step_s']:.3f} s/step, {r['step_s'] / b:.3f} s/example (wall, cache "
                      f"build apart); CPU {r['cpu_s']:.1f} s for {n} examples with the cache build, "
                      f"{r['cpu_s'] / n:.3f} CPU s/example; mean loss {r['train_loss']:.4f}", flush=True)
            args.modes = ""
        for mode in filter(None, args.modes.split(",")):
            out = os.path.join(tmp, f"out-{mode}")
            if mode == "full":
                with full_logits():
                    rows[mode] = run(model_path, data, out, target, args.steps, precision, "off")
            elif mode in ("answer", "cached"):
                rows[mode] = run(model_path, data, out, target, args.steps, precision,
                                 "off" if mode == "answer" else "auto")
            else:
                raise SystemExit(f"error: --modes: unknown mode {mode!r}; expected full, answer or cached")
            r = rows[mode]
            speed = f", {rows['full']['step_s'] / r['step_s']:.2f}x full" if "full" in rows and mode != "full" else ""
            build = f" (+ {r['build_s']:.1f} s once for the cache)" if r["build_s"] else ""
            print(f"  {mode:7s} {r['step_s']:.3f} s/step{build}{speed}; mean loss {r['train_loss']:.4f}", flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"model": model_path, "precision": precision, "threads": args.threads, "lora": what,
                           "steps": args.steps, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
