r"""Every CUDA path of the pipeline at tiny scale, each compared against the CPU (scripts/gpu_check.sh).

    python scripts/gpu_check.py [--device cuda|cpu] [--work DIR] [--out DIR] [--epoch_timing]

Builds its own tiny data (synthetic dialogues: generator records, strategy-LLM prompt files), a tiny random
BART and a tiny random Llama, then runs the real command lines (main.py, finetune_llm.py, export_model.py,
infer_strategy.py, test_evaluation.py, torchrun) as subprocesses, first on the CPU in float32 (the
reference), then on ``--device``, and prints one table row per path:

    path | status (OK / FAIL / SKIP) | seconds | max difference against the CPU reference | note

What "difference" means per path (tolerances in TOL; a difference above its tolerance is a FAIL):

* main.py / finetune_llm.py: max over logged values (train losses, validation perplexity) of
  |device - cpu| / |cpu|, relative. fp16/bf16 autocast changes rounding, hence loose tolerances.
* export: max |logit| difference between the merged model and the base model + adapter, on the device.
* infer_strategy.py, test_evaluation.py: number of answers / responses that differ from the CPU's
  (greedy float32 decoding must agree exactly; --dtype auto on a bfloat16 export is reported, not judged).

With ``--device cpu`` (CI) the device runs that would repeat the reference are left out, fp16 paths are
SKIP (fp16 autocast needs CUDA), and the rest runs in well under a minute of model work.
``--epoch_timing`` adds one timed bfloat16 epoch of the paper's generator configuration (random BART with
bart-base dimensions: d_model 768, 6+6 layers, 50,265-token vocabulary; batch 16, K=128, max lengths 512/64)
on the real train split when ``$MAGIC_DATA_DIR`` holds it (``reconstructed/train.txt`` or ``train.txt``),
else on synthetic samples of the real split's size.

Exit code: 0 when no row is FAIL, 1 otherwise, 2 a bad flag or --device cuda without a CUDA GPU (one
``gpu_check.py: error: ...`` line). The table also goes to ``<out>/gpu_check.md`` (and a JSON
copy) when ``--out`` (default ``$OUT``) is set. Needs no network and none of openai, datasets, nltk,
pycocoevalcap, trl (metric scoring is switched off with test_evaluation.py --no_metrics).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from magic.common.artifacts import best_checkpoint, run_dirs
from magic.common.errors import UserError, run_main
from magic.common.io_utils import load_json
from magic.common.validate import non_negative_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# max difference tolerated per kind of check (see the module docstring)
# fp16: GradScaler starts at 2**16 and skips the first steps whose scaled gradients overflow, so a run of a
# dozen steps trains a few steps less than the float32 one
TOL = {"fp32": 1e-3, "bf16": 0.1, "fp16": 0.15, "export": 1e-4, "exact": 0}

SYNTH_WORDS = ("I feel so stressed about my job and my family lately . The pandemic made everything harder and "
               "I do not sleep well . That sounds really hard , how long have you felt this way ? You are doing "
               "the best you can . Maybe you could talk to a friend about it . Thank you , that helps a lot .").split()


@dataclass
class Row:
    path: str
    status: str
    seconds: float
    diff: str = ""
    note: str = ""


# ------------------------------------------------------------------------------------------ tiny data
def synthetic_dialogues(n: int, seed: int = 0, turns: int = 8) -> list[list[tuple[str, str, str]]]:
    """n dialogues of (speaker, text, strategy) turns; seeker and supporter alternate, seeker first."""
    from magic.esconv.dialogues import STRATEGIES

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = []
        for t in range(turns):
            text = " ".join(rng.choice(SYNTH_WORDS) for _ in range(rng.randint(5, 20)))
            d.append(("usr" if t % 2 == 0 else "sys", text, "" if t % 2 == 0 else rng.choice(STRATEGIES)))
        out.append(d)
    return out


def records_of(dialogues, split: str) -> list[dict]:
    """Generator records (the data/*.json contract) of every supporter turn, built as the dataset build builds
    them (magic.esconv.dialogues samples -> magic.generator.records.sample_record), with a placeholder motivation."""
    from magic.generator.records import sample_record
    from magic.esconv.dialogues import enumerate_samples, parse_dialogue

    parsed = [parse_dialogue({"situation": "my situation is hard",
                              "dialog": [{"speaker": sp, "text": x, **({"strategy": st} if st else {})}
                                         for sp, x, st in d]}, f"<synthetic {split}>", i + 1, i)
              for i, d in enumerate(dialogues)]
    return [{**sample_record(smp), "motivation": f"The supporter wants to help with {smp.strategy.lower()} ."}
            for smp in enumerate_samples(parsed, split, test_mode="all")]


def prompts_of(dialogues, split: str) -> tuple[list[str], list[str], list[str]]:
    """(ids, instructions, motivations) in the strategy-LLM prompt form: a shared instruction, then the clip."""
    ids, prompts, outputs = [], [], []
    head = ("The following is a conversation between a seeker and a supporter. Infer the strategy of the "
            "supporter's next turn and explain the motivation.\n")
    for di, d in enumerate(dialogues):
        for t in range(1, len(d), 2):
            clip = "".join(f"({k + 1}) {'Seeker' if s == 'usr' else 'Supporter'}: {x}"
                           + (f" [{st}]" if st else "") + "\n" for k, (s, x, st) in enumerate(d[:t]))
            ids.append(f"{split}-{di}-{t}")
            prompts.append(head + clip + "Strategy and motivation:")
            outputs.append(f"The motivation of the supporter in choosing the strategy [{d[t][2].lower()}] is to "
                           "help the seeker feel understood.")
    return ids, prompts, outputs


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def build_fixtures(work: str) -> dict:
    """Tiny data, a tiny BART and a tiny Llama under ``work``; returns their paths."""
    from magic.testing.make_small_bart import make_small_bart
    from magic.testing.make_small_llm import make_small_llm

    p = {k: os.path.join(work, k) for k in ("data", "bart", "llm")}
    os.makedirs(p["data"], exist_ok=True)
    texts = []
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        dia = synthetic_dialogues(n, seed={"train": 0, "valid": 1, "test": 2}[split])
        recs = records_of(dia, split)
        write_json(os.path.join(p["data"], f"{split}.json"), recs)
        ids, prompts, outputs = prompts_of(dia, split)
        name = {"train": "prompts_4_LLaMA", "valid": "prompts_4_LLaMA_valid", "test": "prompts_4_LLaMA_test"}[split]
        body = [{"instruction": x, "output": y} for x, y in zip(prompts, outputs)] if split == "train" else prompts
        write_json(os.path.join(p["data"], name + ".json"), body)
        write_json(os.path.join(p["data"], name + ".ids.json"), ids)
        texts += [x for r in recs for x in r["context"] + [r["response"], r["motivation"]]] + prompts + outputs
    make_small_bart(p["bart"], texts, vocab_size=600, d_model=64, layers=2, heads=2, seed=0)
    # no dropout: the CPU and CUDA random streams differ, and the device runs must do the same maths
    cfg_path = os.path.join(p["bart"], "config.json")
    cfg = load_json(cfg_path, "BART config")
    cfg.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    write_json(cfg_path, cfg)
    # head_dim 64 (128 / 2 heads): a size every attention kernel (SDPA, FlashAttention, vLLM) supports
    make_small_llm(p["llm"], texts, vocab_size=800, hidden_size=128, layers=2, heads=2, seed=0)
    return p


# ------------------------------------------------------------------------------------------ running
class Checker:
    def __init__(self, device: str, work: str, python: str):
        self.device, self.work, self.python = device, work, python
        self.rows: list[Row] = []
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), ROOT])}
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def run(self, name: str, args: list[str], timeout: float = 240) -> tuple[bool, float, str]:
        """Run ``python args`` from the repository root; (ok, seconds, its output). The log stays in work/logs."""
        cmd = [self.python, *args]
        log = os.path.join(self.logs, name.replace(" ", "_").replace("/", "_") + ".log")
        t0 = time.time()
        try:
            with open(log, "w") as f:
                rc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        dt = time.time() - t0
        with open(log, errors="replace") as f:
            text = f.read()
        if rc:
            print(f"--- {name} failed (exit {rc}); log {log}:\n{text[-1500:]}", file=sys.stderr)
        return rc == 0, dt, text

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"[gpu_check] {row.path}: {row.status} ({row.seconds:.1f} s) {row.diff} {row.note}", flush=True)
        return row

    def judged(self, path: str, ok: bool, dt: float, diff: float | None, tol: float | None, note: str = "",
               fmt: str = "{:.2e}") -> Row:
        if not ok:
            return self.add(Row(path, "FAIL", dt, "", note or "command failed (log in work/logs)"))
        if diff is None:
            return self.add(Row(path, "OK", dt, "", note))
        bad = not math.isfinite(diff) or (tol is not None and diff > tol)
        shown = fmt.format(diff) + (f" (tol {fmt.format(tol)})" if tol is not None else "")
        return self.add(Row(path, "FAIL" if bad else "OK", dt, shown, note))

    def skip(self, path: str, why: str) -> Row:
        return self.add(Row(path, "SKIP", 0.0, "", why))


def rel_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))


# --- generator (main.py)
def main_py_args(fx: dict, out: str, device: str, extra=()) -> list[str]:
    d = fx["data"]
    return ["main.py", "--bart_base_dir", fx["bart"], "--train_data", f"{d}/train.json", "--valid_data",
            f"{d}/valid.json", "--output_dir", out, "--batch_size", "4", "--num_epochs", "2", "--learning_rate",
            "1e-3", "--max_length", "128", "--strategy_memory_max", "8", "--max_length_res_memory", "32",
            "--device", device, *extra]


def main_py_values(out: str) -> tuple[list[float], str | None]:
    """Every logged loss and PPL of the one run under ``out`` and its best checkpoint."""
    runs = run_dirs(out)
    if not runs:
        return [], None
    hist = load_json(os.path.join(runs[-1], "history.json"), "training history")
    vals = [h[k] for h in hist for k in ("train_loss", "train_gen_loss", "train_strategy_loss", "val_ppl")]
    return vals, best_checkpoint(runs[-1])


# --- strategy LLM (finetune_llm.py)
def finetune_args(fx: dict, out: str, device: str, extra=()) -> list[str]:
    return ["LLM_inference/finetune_llm.py", "--model_name_or_path", fx["llm"], "--dataset",
            f"{fx['data']}/prompts_4_LLaMA.json", "--output_dir", out, "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", "1", "--max_steps", "8", "--learning_rate", "3e-3",
            "--lr_scheduler_type", "constant", "--logging_steps", "1", "--save_steps", "1000", "--cutoff_len",
            "512", "--overwrite_output_dir", "--disable_tqdm", "--device", device, *extra]


def finetune_losses(out: str) -> list[float]:
    path = os.path.join(out, "trainer_state.json")
    if not os.path.exists(path):
        return []
    return [h["loss"] for h in load_json(path, "trainer state")["log_history"] if "loss" in h]


def infer_args(fx: dict, model: str, out: str, device: str, extra=()) -> list[str]:
    d = fx["data"]
    return ["LLM_inference/infer_strategy.py", "--model_path", model, "--prompt_path_valid",
            f"{d}/prompts_4_LLaMA_valid.json", "--prompt_path_test", f"{d}/prompts_4_LLaMA_test.json",
            "--splits", "valid,test", "--output_dir", out, "--batch_size", "4", "--max_new_tokens", "24",
            "--device", device, *extra]


def infer_answers(out: str) -> dict[str, str]:
    ans = {}
    for name in ("strategy_with_motivation_valid.json", "strategy_with_motivation_test.json"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            ans.update({e["id"]: e["motivation"] for e in load_json(path, "strategy_with_motivation list")})
    return ans


def n_differ(a: dict, b: dict) -> float:
    if not a or a.keys() != b.keys():
        return float("inf")
    return float(sum(a[k] != b[k] for k in a))


def eval_args(fx: dict, ckpt: str, out: str, device: str) -> list[str]:
    return ["test_evaluation.py", "--test_data", f"{fx['data']}/test.json", "--model_path", ckpt, "--eval_dir", out,
            "--max_length_res", "16", "--device", device, "--no_metrics", "--no_progress",
            "--strategy_source", "gold"]  # the synthetic records hold gold strategies (and say so)


def eval_responses(out: str) -> list[str]:
    files = glob.glob(os.path.join(out, "*", "diversity_*.txt"))
    if not files:
        return []
    with open(files[0], encoding="utf-8") as f:
        return f.read().splitlines()


def export_logit_diff(adapter: str, base: str, merged: str, device: str) -> float:
    """Max |logit| difference, on ``device``, between base + adapter and the merged export (float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from magic.llm.sft import load_adapter_model

    ids = torch.arange(3, 60).view(1, -1).to(device)
    with torch.no_grad():
        a = load_adapter_model(base, adapter, dtype=torch.float32, device=device)(input_ids=ids).logits
        m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).to(device).eval()(input_ids=ids).logits
    return float((a - m).abs().max())


PARTS = ("generator", "llm", "ddp")  # generator: main.py + test_evaluation.py; llm: LoRA, export, inference
EXTRA_PARTS = ("paper_timing",)  # asked for by name only: the paper pipeline's time (scripts/paper_timing.py)


def run_checks(ck: Checker, fx: dict, parts=PARTS) -> None:
    """The rows of ``parts`` (all by default; a short GPU lease can run a subset)."""
    if "generator" in parts:
        generator_rows(ck, fx)
    if "llm" in parts:
        llm_rows(ck, fx)
    if "ddp" in parts:
        ddp_row(ck, fx, ck.device.startswith("cuda"))
    if "paper_timing" in parts:
        paper_timing_row(ck)


def paper_timing_row(ck: Checker) -> None:
    """scripts/paper_timing.py on the device (paper shapes on CUDA, tiny on CPU); its table is in the log and
    its figures in <work>/paper_timing.json (copied to --out)."""
    out = os.path.join(ck.logs, "paper_timing.json")
    ok, dt, tail = ck.run("paper timing", ["scripts/paper_timing.py", "--device", ck.device, "--json", out],
                          timeout=540)
    note = ""
    if ok:
        r = load_json(out, "paper timing")
        note = (f"{r['size']} shapes, {r['data']} data: projected steps 3-8 {r['projected_total_s'] / 3600:.2f} h "
                f"(table in gpu_check_logs/paper_timing.log)")
    ck.judged(f"paper_timing ({ck.device})", ok, dt, None, None, note=note)


def generator_rows(ck: Checker, fx: dict) -> None:
    dev, cuda = ck.device, ck.device.startswith("cuda")
    w = ck.work

    # ---- generator: main.py, CPU float32 reference, then the device in fp32 / fp16 / bf16
    ok, dt, _ = ck.run("main.py cpu fp32", main_py_args(fx, f"{w}/gen_ref", "cpu"))
    ref_vals, ref_ckpt = main_py_values(f"{w}/gen_ref")
    ck.judged("main.py cpu fp32 (reference)", ok and bool(ref_vals), dt, None, None,
              note=f"{len(ref_vals)} logged values")
    variants = [("fp32", []), ("fp16", ["--fp16"]), ("bf16", ["--bf16"])] if cuda else [("bf16", ["--bf16"])]
    for prec, flags in variants:
        ok, dt, _ = ck.run(f"main.py {dev} {prec}", main_py_args(fx, f"{w}/gen_{prec}", dev, flags))
        vals, _ = main_py_values(f"{w}/gen_{prec}")
        ck.judged(f"main.py {dev} {' '.join(flags) or 'fp32'}", ok, dt, rel_diff(vals, ref_vals), TOL[prec],
                  note="rel. diff of losses and val PPL, 2 epochs")
    if not cuda:
        ck.skip("main.py --fp16", "fp16 autocast needs CUDA")

    # ---- test_evaluation.py: diverse beam search on the device must give the CPU's responses
    if ref_ckpt:
        ok, dt, _ = ck.run("evaluate cpu", eval_args(fx, ref_ckpt, f"{w}/eval_ref", "cpu"))
        ref_resp = eval_responses(f"{w}/eval_ref")
        ck.judged("test_evaluation.py cpu (reference)", ok and bool(ref_resp), dt, None, None,
                  note=f"{len(ref_resp)} responses")
        if cuda:
            ok, dt, _ = ck.run("evaluate cuda", eval_args(fx, ref_ckpt, f"{w}/eval_dev", dev))
            resp = eval_responses(f"{w}/eval_dev")
            diff = float(sum(a != b for a, b in zip(resp, ref_resp))) if len(resp) == len(ref_resp) else float("inf")
            ck.judged(f"test_evaluation.py --device {dev}", ok, dt, diff, TOL["exact"],
                      note="responses differing from the CPU's", fmt="{:.0f}")
    else:
        ck.add(Row("test_evaluation.py", "FAIL", 0.0, "", "no checkpoint from the reference main.py run"))


def llm_rows(ck: Checker, fx: dict) -> None:
    dev, cuda = ck.device, ck.device.startswith("cuda")
    w = ck.work

    # ---- strategy LLM: LoRA fine-tuning, CPU float32 reference, then fp16 / bf16 on the device
    ok, dt, _ = ck.run("finetune cpu fp32", finetune_args(fx, f"{w}/lora_ref", "cpu"))
    ref_losses = finetune_losses(f"{w}/lora_ref")
    ck.judged("finetune_llm.py LoRA cpu fp32 (reference)", ok and bool(ref_losses), dt, None, None,
              note=f"{len(ref_losses)} logged losses")
    ft_dev = "cuda" if cuda else "cpu"
    for prec in (["fp16", "bf16"] if cuda else ["bf16"]):
        ok, dt, _ = ck.run(f"finetune {dev} {prec}", finetune_args(fx, f"{w}/lora_{prec}", ft_dev, [f"--{prec}"]))
        ck.judged(f"finetune_llm.py LoRA {ft_dev} --{prec}", ok, dt,
                  rel_diff(finetune_losses(f"{w}/lora_{prec}"), ref_losses), TOL[prec],
                  note="rel. diff of the 8 step losses")
    if not cuda:
        ck.skip("finetune_llm.py LoRA --fp16", "fp16 needs CUDA")

    # ---- export: merge the reference adapter (float32, and bfloat16 for --dtype auto below)
    merged, merged_bf16 = f"{w}/merged", f"{w}/merged_bf16"
    exp = ["LLM_inference/export_model.py", "--model_name_or_path", fx["llm"], "--adapter_name_or_path",
           f"{w}/lora_ref"]
    ok, dt, _ = ck.run("export fp32", exp + ["--export_dir", merged])
    diff = export_logit_diff(f"{w}/lora_ref", fx["llm"], merged, dev) if ok else None
    ck.judged(f"export_model.py (merged vs adapter logits on {dev})", ok, dt, diff, TOL["export"])
    ok_bf = False
    if cuda:  # CPU form: --dtype auto is a CUDA concern, and each extra process costs seconds of imports
        ok_bf, dt, _ = ck.run("export bf16", exp + ["--export_dir", merged_bf16, "--export_dtype", "bfloat16"])
        ck.judged("export_model.py --export_dtype bfloat16", ok_bf, dt, None, None)
    else:
        ck.skip("export_model.py --export_dtype bfloat16 + infer --dtype auto", "CUDA only (CPU form)")

    # ---- strategy inference: greedy answers on the device must equal the CPU's
    ok, dt, _ = ck.run("infer cpu", infer_args(fx, merged, f"{w}/infer_ref", "cpu"))
    ref_ans = infer_answers(f"{w}/infer_ref")
    ck.judged("infer_strategy.py cpu fp32 prefix sharing (reference)", ok and bool(ref_ans), dt, None, None,
              note=f"{len(ref_ans)} answers")
    runs = [("prefix sharing, static cache", [], merged), ("--no_prefix_sharing", ["--no_prefix_sharing"], merged)]
    if not cuda:
        runs = runs[1:]  # the device run with sharing IS the reference on the CPU
    for label, flags, model in runs:
        out = f"{w}/infer_{len(ck.rows)}"
        ok, dt, _ = ck.run(f"infer {dev} {label}", infer_args(fx, model, out, dev, flags))
        ck.judged(f"infer_strategy.py {dev} {label}", ok, dt, n_differ(infer_answers(out), ref_ans), TOL["exact"],
                  note="answers differing from the CPU's", fmt="{:.0f}")
    if ok_bf:
        out = f"{w}/infer_auto"
        ok, dt, _ = ck.run(f"infer {dev} dtype auto", infer_args(fx, merged_bf16, out, dev, ["--dtype", "auto"]))
        n = n_differ(infer_answers(out), ref_ans)
        ck.judged(f"infer_strategy.py {dev} --dtype auto (bf16 export)", ok and math.isfinite(n), dt, None, None,
                  note=f"{n:.0f}/{len(ref_ans)} answers differ from fp32 CPU (bf16 rounding; not judged)")

    # ---- vLLM backend (optional engine)
    import importlib.util
    if not cuda:
        ck.skip("infer_strategy.py --backend vllm", "needs CUDA")
    elif importlib.util.find_spec("vllm") is None:
        ck.skip("infer_strategy.py --backend vllm", "vllm is not installed")
    else:
        out = f"{w}/infer_vllm"
        ok, dt, _ = ck.run("infer vllm", infer_args(fx, merged, out, dev, ["--backend", "vllm"]), timeout=400)
        ck.judged("infer_strategy.py --backend vllm", ok, dt, n_differ(infer_answers(out), ref_ans), None,
                  note="answers differing from the CPU's (other kernels: reported, not judged)", fmt="{:.0f}")



def ddp_row(ck: Checker, fx: dict, cuda: bool) -> None:
    import torch

    if not cuda or torch.cuda.device_count() < 2:
        ck.skip("torchrun --nproc_per_node 2 main.py / finetune_llm.py (NCCL)", "needs 2 visible GPUs")
        return
    w = ck.work
    # 2 processes x batch 2 = the global batch 4 of the reference run
    args = main_py_args(fx, f"{w}/gen_ddp", "cuda")
    args[args.index("--batch_size") + 1] = "2"
    ok, dt, _ = ck.run("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args])
    vals, _ = main_py_values(f"{w}/gen_ddp")
    ref_vals, _ = main_py_values(f"{w}/gen_ref")
    ck.judged("torchrun --nproc_per_node 2 main.py (NCCL)", ok, dt, rel_diff(vals, ref_vals), TOL["fp32"],
              note="rel. diff vs 1 CPU process with the same global batch (2 x 2 vs 1 x 4)")
    args = finetune_args(fx, f"{w}/lora_ddp", "cuda")
    args[args.index("--per_device_train_batch_size") + 1] = "2"
    ok, dt, _ = ck.run("ddp finetune", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args])
    ck.judged("torchrun --nproc_per_node 2 finetune_llm.py (NCCL)", ok, dt,
              rel_diff(finetune_losses(f"{w}/lora_ddp"), finetune_losses(f"{w}/lora_ref")), TOL["fp32"],
              note="rel. diff of step losses vs 1 CPU process (2 x 2 vs 1 x 4)")


# ------------------------------------------------------------------------------------------ epoch timing


def real_train_file() -> str | None:
    root = os.environ.get("MAGIC_DATA_DIR")
    if not root:
        return None
    for rel in ("reconstructed/train.txt", "train.txt", "magic/train.txt"):
        if os.path.exists(os.path.join(root, rel)):
            return os.path.join(root, rel)
    return None


REAL_TRAIN_SAMPLES = 10191  # samples of the reconstructed train split (magic.esconv.dialogues); synthetic stand-in size


def epoch_timing(ck: Checker, max_samples: int | None = None) -> None:
    """One timed bf16 epoch of the paper's generator configuration (main.py, 1 epoch, batch 16)."""
    from magic.testing.make_small_bart import make_paper_shaped_bart

    w = os.path.join(ck.work, "epoch_timing")
    os.makedirs(w, exist_ok=True)
    src = real_train_file()
    if src:
        from magic.generator.records import sample_record
        from magic.esconv.dialogues import load_samples

        records = [sample_record(s) for s in load_samples(src, "train")]
        what = f"real train split {src} ({len(records)} samples)"
    else:
        dia = synthetic_dialogues(REAL_TRAIN_SAMPLES // 4 + 1, seed=3, turns=40)
        records = records_of(dia, "train")[:REAL_TRAIN_SAMPLES]
        what = f"{len(records)} synthetic samples (MAGIC_DATA_DIR has no train split)"
    bart = f"{w}/bart"
    if not os.path.exists(f"{bart}/config.json"):
        make_paper_shaped_bart(bart, [x for r in records for x in r["context"] + [r["response"]]])
    if max_samples:
        records = records[:max_samples]
        what += f", first {len(records)} only"
    write_json(f"{w}/train.json", records)
    # validation on train samples (timing only): ids that name no split, so the split check lets them through
    write_json(f"{w}/valid.json", [{**r, "id": f"timing-{r['id']}"} for r in records[:64]])
    dev = ck.device
    args = ["main.py", "--bart_base_dir", bart, "--train_data", f"{w}/train.json", "--valid_data", f"{w}/valid.json",
            "--output_dir", f"{w}/out", "--batch_size", "16", "--num_epochs", "1", "--max_length", "512",
            "--strategy_memory_max", "128", "--max_length_res_memory", "64", "--device", dev, "--bf16"]
    ok, dt, tail = ck.run("epoch timing", args, timeout=3600)
    train_s = re.findall(r"Training loss: .*\((\d+) s\)", tail)
    ck.judged(f"EPOCH_TIMING main.py --bf16 1 epoch, bart-base dims, batch 16 ({dev})", ok, dt, None, None,
              note=f"{what}; training pass {train_s[-1] if train_s else '?'} s, the rest start-up, "
                   "tokenisation and validation on 64 samples")


# ------------------------------------------------------------------------------------------ report
def format_table(rows: list[Row], device: str) -> str:
    lines = [f"gpu_check on {device}", "", "| path | status | seconds | max diff vs CPU | note |", "|---|---|---|---|---|"]
    lines += [f"| {r.path} | {r.status} | {r.seconds:.1f} | {r.diff} | {r.note} |" for r in rows]
    return "\n".join(lines)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return (f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}, CUDA "
                f"{torch.version.cuda}, {torch.cuda.device_count()} GPU(s) visible")
    return f"CPU, torch {torch.__version__}"


def run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=os.environ.get("DEVICE") or None,
                   help="cuda, cuda:1 or cpu (default $DEVICE, else cuda when available)")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--out", default=os.environ.get("OUT") or None, help="write gpu_check.md/.json here (default $OUT)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the subprocesses")
    p.add_argument("--epoch_timing", action="store_true", default=os.environ.get("EPOCH_TIMING") == "1",
                   help="also time one bf16 epoch of the paper configuration (default $EPOCH_TIMING=1)")
    p.add_argument("--epoch_timing_samples", type=non_negative_int, default=int(os.environ.get("EPOCH_TIMING_SAMPLES") or 0),
                   help="cap the timed epoch at N samples (a smoke run of the timing path; 0 = all)")
    p.add_argument("--parts", default=os.environ.get("PARTS") or ",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS + EXTRA_PARTS)} (default $PARTS, else "
                        f"{','.join(PARTS)}); 'none' with --epoch_timing times the epoch alone")
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(",") if x and x != "none"]
    if any(x not in PARTS + EXTRA_PARTS for x in parts):
        p.error(f"--parts: expected a subset of {','.join(PARTS + EXTRA_PARTS)}, got {a.parts!r}")
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA GPU (set DEVICE=cpu for the CPU form)")
    work = a.work or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(work, exist_ok=True)
    ck = Checker(device, work, a.python)
    t0 = time.time()
    try:
        fx = build_fixtures(work)
        ck.add(Row("tiny data, BART and Llama", "OK", time.time() - t0))
        run_checks(ck, fx, parts)
        if a.epoch_timing:
            epoch_timing(ck, a.epoch_timing_samples or None)
    finally:
        table = format_table(ck.rows, device_name(device)) + f"\n\ntotal {time.time() - t0:.0f} s\n"
        print("\n" + table)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "gpu_check.md"), "w") as f:
                f.write(table)
            write_json(os.path.join(a.out, "gpu_check.json"), [r.__dict__ for r in ck.rows])
            shutil.copytree(ck.logs, os.path.join(a.out, "gpu_check_logs"), dirs_exist_ok=True)
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.status == "FAIL" for r in ck.rows) else 0


def main(argv=None) -> int:
    """run() for the command line: user errors are one line and exit code 2 (src/magic/common/errors.py)."""
    return run_main("gpu_check.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
