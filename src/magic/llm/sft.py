"""Step 3: LoRA supervised fine-tuning of the strategy LLM, as the paper ran it through LLaMA-Factory.

Data: ``prompts_4_LLaMA.json`` = ``[{"instruction": <dialogue prompt>, "output": <motivation>}]``, given
as a path or, as LLaMA-Factory does, as a dataset name looked up in ``<dataset_dir>/dataset_info.json``
(``resolve_dataset``).

Each pair is tokenised by ``magic.llm.local_model.encode_pair`` with an ``EncodingRule``; the default is the
released LLaMA-Factory ``default`` template: ``Human: {instruction}\\nAssistant: `` + answer + EOS, no BOS,
``cutoff_len`` split by ``infer_max_len``; loss on the answer only. The rule is saved next to the adapter
(and in every checkpoint) so export and inference read it back.

Training is ``transformers.Trainer`` on a ``peft`` LoRA model with our own collator (right padding to a
multiple of 8, labels -100 on pads, as LLaMA-Factory's ``DataCollatorForSeq2Seq``). With gradient
accumulation the loss is, by default, the mean of the per-micro-batch mean losses (what transformers 4.38,
the released version, computed); ``grad_accum_loss="token_mean"`` gives the newer rule (sum over the
accumulated batch / its answer-token count). Checkpoints go to ``output_dir/checkpoint-<step>``; a run
resumes from the last one automatically (LLaMA-Factory behaviour) unless ``overwrite_output_dir``. The
final adapter and the tokenizer are saved in ``output_dir``.

A step projects only the answer positions onto the vocabulary, and with LoRA on the top layers only the frozen
layers below run once per example instead of at every step (``frozen_layers.py``, ``--frozen_layer_cache``);
the same loss and gradients up to float rounding.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from magic.common.errors import UserError, describe
from magic.common.torchrun import end_process_group
from magic.common.io_utils import (atomic_dir, atomic_save_figure, atomic_write_text, check_not_an_input,
                                   check_replaceable, load_json, load_weights)
from magic.common.validate import check_model_dir, check_tokenizer_files, check_vocab
from magic.llm.config import (CACHE_MODES, CUTOFF_RULES, GRAD_ACCUM_LOSSES, REPORT_TO, TEMPLATES, ExportConfig,
                              SFTConfig)
from magic.llm.frozen_layers import answer_only_inputs, build_cache, causal_lm
from magic.llm.local_model import (ENCODING_FILE, IGNORE_INDEX, EncodingRule, causal_lm_from_pretrained, encode_pair,
                                   prepare_tokenizer, resolve_dtype)



class SFTDataError(UserError):
    """The training pairs or the settings cannot be used; the message names the file or flag."""


# --------------------------------------------------------------------------------------------------
# Data
def load_sft_pairs(path: str | os.PathLike, max_samples: int | None = None, prompt: str = "instruction",
                   query: str | None = None, response: str = "output") -> list[tuple[str, str]]:
    """``(instruction, output)`` pairs of a JSON list file, first ``max_samples``.

    ``prompt`` / ``query`` / ``response`` name the columns (LLaMA-Factory's alpaca columns); a non-empty
    query is appended to the prompt after a newline, as LLaMA-Factory does.
    """
    path = os.fspath(path)
    what = f"list of {{{prompt}, {response}}} pairs (prompts_4_LLaMA.json)"
    data = load_json(path, what)
    if not isinstance(data, list):
        raise SFTDataError(f"{path}: expected a JSON {what}")
    pairs = []
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get(prompt), str)
                and isinstance(item.get(response), str)):
            raise SFTDataError(f"{path}: entry {i} is not an object with string \"{prompt}\" and "
                               f"\"{response}\" fields (got {str(item)[:80]!r})")
        if not item[response].strip():
            raise SFTDataError(f"{path}: entry {i} has an empty \"{response}\"; nothing to learn from")
        extra = item.get(query) if query else None
        if extra is not None and not isinstance(extra, str):
            raise SFTDataError(f"{path}: entry {i}: \"{query}\" must be a string")
        instruction = "\n".join(x for x in (item[prompt], extra) if x)
        pairs.append((instruction, item[response]))
    if max_samples is not None:
        pairs = pairs[:max_samples]
    if not pairs:
        raise SFTDataError(f"{path}: no training pairs")
    return pairs


DATASET_INFO = "dataset_info.json"


def resolve_dataset(dataset: str, dataset_dir: str | None) -> list[dict]:
    """``--dataset`` as LLaMA-Factory reads it: comma-separated names of ``<dataset_dir>/dataset_info.json``
    entries, each a local ``file_name`` (relative to ``dataset_dir``) in the alpaca format with optional
    ``columns`` {prompt, query, response}. A value that is an existing file is taken as the data file itself.

    Returns ``[{"path", "prompt", "query", "response"}]``.
    """
    if os.path.isfile(dataset):
        return [{"path": dataset, "prompt": "instruction", "query": None, "response": "output"}]
    names = [n.strip() for n in dataset.split(",") if n.strip()]
    dataset_dir = dataset_dir or "."
    info_path = os.path.join(dataset_dir, DATASET_INFO)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"--dataset {dataset!r} is neither a file nor a name: {info_path} not found "
                                "(give the data file's path, or --dataset_dir of its dataset_info.json)")
    info = load_json(info_path, "dataset_info.json (LLaMA-Factory dataset registry)")
    if not isinstance(info, dict):
        raise SFTDataError(f"{info_path}: expected a JSON object {{name: {{\"file_name\", \"columns\"}}}}")
    out = []
    for name in names:
        entry = info.get(name)
        if not isinstance(entry, dict):
            raise SFTDataError(f"{info_path}: no dataset named {name!r} (entries: {sorted(info)[:10]})")
        if "file_name" not in entry:
            raise SFTDataError(f"{info_path}: dataset {name!r} has no \"file_name\"; only local files are "
                               "supported (no hf_hub_url / script_url)")
        if entry.get("formatting", "alpaca") != "alpaca":
            raise SFTDataError(f"{info_path}: dataset {name!r}: only the alpaca formatting is supported")
        cols = entry.get("columns")
        # LLaMA-Factory: without "columns" the alpaca defaults apply; with it, unnamed columns are absent
        cols = {"prompt": "instruction", "query": "input", "response": "output"} if cols is None else cols
        path = os.path.join(dataset_dir, entry["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: data file of dataset {name!r} ({info_path}) not found")
        out.append({"path": path, "prompt": cols.get("prompt"), "query": cols.get("query"),
                    "response": cols.get("response")})
    if not out:
        raise SFTDataError("--dataset names no dataset")
    return out


def load_dataset_pairs(dataset: str, dataset_dir: str | None, max_samples: int | None = None) -> list[tuple[str, str]]:
    """All pairs of ``--dataset`` (datasets concatenated; ``max_samples`` per dataset, as LLaMA-Factory)."""
    pairs = []
    for d in resolve_dataset(dataset, dataset_dir):
        if not d["prompt"] or not d["response"]:
            raise SFTDataError(f"{d['path']}: dataset_info.json columns must name \"prompt\" and \"response\"")
        pairs += load_sft_pairs(d["path"], max_samples, d["prompt"], d["query"], d["response"])
    return pairs


def encode_example(tokenizer, instruction: str, output: str, cutoff_len: int,
                   rule: EncodingRule | None = None) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one pair under ``rule`` (default: the released rule)."""
    return encode_pair(tokenizer, instruction, output, cutoff_len, rule or EncodingRule())


class SFTDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict[str, list[int]]]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        # the dataset index travels with the batch: the frozen-layer cache is looked up by it
        return {**self.examples[i], "example_index": i}


def build_dataset(tokenizer, pairs: Sequence[tuple[str, str]], cutoff_len: int,
                  rule: EncodingRule | None = None) -> SFTDataset:
    examples = [encode_example(tokenizer, ins, out, cutoff_len, rule) for ins, out in pairs]
    # an example whose answer was cut away entirely teaches nothing and gives a NaN mean loss
    # (infer_max_len always keeps >= 1 answer token; infer_seqlen may keep none)
    kept = [e for e in examples if any(l != IGNORE_INDEX for l in e["labels"])]
    if not kept:
        raise SFTDataError(f"cutoff_len={cutoff_len} leaves no answer tokens in any example")
    return SFTDataset(kept)


@dataclass
class SFTCollator:
    """Right-pads a list of examples: input_ids / attention_mask / labels of shape (B, T_max)."""
    pad_token_id: int
    pad_to_multiple_of: int | None = 8  # LLaMA-Factory's collator pads right-padded batches to a multiple of 8

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "example_index" in features[0]:
            batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        return batch


# --------------------------------------------------------------------------------------------------
# Training
def _check_config(cfg: SFTConfig, cuda: bool) -> None:
    if cfg.finetuning_type != "lora":
        raise ValueError(f"--finetuning_type {cfg.finetuning_type!r} is not supported; only 'lora' (the paper's)")
    if cfg.template not in TEMPLATES:
        raise ValueError(f"--template {cfg.template!r}: expected one of {TEMPLATES}")
    if cfg.cutoff_rule not in CUTOFF_RULES:
        raise ValueError(f"--cutoff_rule {cfg.cutoff_rule!r}: expected one of {CUTOFF_RULES}")
    if cfg.grad_accum_loss not in GRAD_ACCUM_LOSSES:
        raise ValueError(f"--grad_accum_loss {cfg.grad_accum_loss!r}: expected one of {GRAD_ACCUM_LOSSES}")
    if cfg.report_to not in REPORT_TO:
        raise ValueError(f"--report_to {cfg.report_to!r}: expected one of {REPORT_TO}")
    if cfg.frozen_layer_cache not in CACHE_MODES:
        raise ValueError(f"--frozen_layer_cache {cfg.frozen_layer_cache!r}: expected one of {CACHE_MODES}")
    if cfg.device == "cuda" and not cuda:
        raise ValueError("--device cuda: no CUDA GPU is available")
    if cfg.fp16 and cfg.bf16:
        raise ValueError("--fp16 and --bf16 are exclusive")
    if cfg.deepspeed:
        if not os.path.isfile(cfg.deepspeed):
            raise FileNotFoundError(f"--deepspeed {cfg.deepspeed}: config file not found "
                                    "(LLM_inference/ds_configs/ds_z2_config.json or ds_z3_config.json)")
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError("--deepspeed needs the deepspeed package (pip install deepspeed, on a CUDA machine)")
    if cfg.cutoff_len < 2:
        raise ValueError(f"--cutoff_len must be >= 2, got {cfg.cutoff_len}")


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def check_lora_files(folder: str, needed: Sequence[str] = ADAPTER_FILES) -> None:
    """THE check of a LoRA folder before transformers / peft read it (a checkpoint-<step> to resume, an adapter to
    export): ``needed`` present; every JSON file parses (trainer_state.json, adapter_config.json); the
    safetensors header is complete (a truncated adapter); every torch file (optimizer, scheduler, RNG states)
    loads with weights_only=True, numpy's arrays allowed as the Trainer allows them (a pickle of anything else:
    "not a safe checkpoint", nothing run). Anything else is one UserError naming the file."""
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals

    for name in needed:
        if not os.path.isfile(os.path.join(folder, name)):
            raise UserError(f"{os.path.join(folder, name)}: missing (not a complete LoRA folder written by "
                            "finetune_llm.py)")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".json"):
            try:
                load_json(path, "JSON file")
            except ValueError as e:  # not JSON, not UTF-8: named by load_json
                raise UserError(str(e)) from None
        elif name.endswith(".safetensors"):
            try:
                with safe_open(path, "pt"):
                    pass
            except Exception as e:  # SafetensorError: truncated or not safetensors
                raise UserError(f"{path}: not a readable safetensors file (truncated or corrupt: "
                                f"{describe(e)})") from None
        elif name.endswith((".pt", ".pth")):
            with safe_globals():
                load_weights(path)


def _checkpoint_step(name: str) -> int | None:
    head, _, step = name.partition("-")
    return int(step) if head == "checkpoint" and step.isdigit() else None


def find_resume_checkpoint(cfg: SFTConfig) -> str | None:
    """The checkpoint to resume from, checked (check_lora_files): the explicit one (a broken one is refused,
    naming the file), else the newest complete ``checkpoint-*`` in output_dir: a broken newer one (a kill
    while it was written, a truncated file) is passed over for the previous one, and said. None: start afresh."""
    needed = ADAPTER_FILES + ("trainer_state.json",)
    if cfg.resume_from_checkpoint:
        if not os.path.isdir(cfg.resume_from_checkpoint):
            raise FileNotFoundError(f"{cfg.resume_from_checkpoint}: checkpoint folder not found")
        check_lora_files(cfg.resume_from_checkpoint, needed)
        return cfg.resume_from_checkpoint
    if cfg.overwrite_output_dir or not os.path.isdir(cfg.output_dir):
        return None
    found = sorted(((_checkpoint_step(n), n) for n in os.listdir(cfg.output_dir)
                    if _checkpoint_step(n) is not None and os.path.isdir(os.path.join(cfg.output_dir, n))),
                   reverse=True)
    broken = []
    for _, name in found:
        folder = os.path.join(cfg.output_dir, name)
        try:
            check_lora_files(folder, needed)
        except UserError as e:
            broken.append(str(e))
            continue
        if broken:
            warnings.warn(f"resuming from {folder}, not from a newer checkpoint that cannot be used: "
                          + "; ".join(broken))
        return folder
    if broken:
        raise UserError(f"{cfg.output_dir}: no usable checkpoint to resume from ({'; '.join(broken)}); remove the "
                        "broken checkpoint-* folders, or pass --overwrite_output_dir to start afresh")
    return None


def build_lora_model(cfg: SFTConfig, dtype: torch.dtype):
    from peft import LoraConfig, get_peft_model

    model = causal_lm_from_pretrained(cfg.model_name_or_path, "--model_name_or_path", dtype=dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
        model.config.use_cache = False
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha if cfg.lora_alpha is not None else 2 * cfg.lora_rank,
        lora_dropout=cfg.lora_dropout, target_modules=[t.strip() for t in cfg.lora_target.split(",") if t.strip()],
    )
    model = get_peft_model(model, lora)
    # half-precision base, float32 adapter (LLaMA-Factory's upcast): the optimiser state stays exact
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def plot_loss(log_history: list[dict], path: str) -> str | None:
    """Training-loss curve (raw and exponentially smoothed) as a PNG; None if nothing was logged."""
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if not points:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*points)
    smooth, last = [], losses[0]
    for v in losses:  # EMA with a weight that grows with the number of points, as LLaMA-Factory plots
        last = last * 0.6 + v * 0.4 if len(losses) < 10 else last * 0.9 + v * 0.1
        smooth.append(last)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, alpha=0.4, label="original")
    ax.plot(steps, smooth, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.legend()
    return atomic_save_figure(fig, path)


def encoding_rule(cfg: SFTConfig) -> EncodingRule:
    return EncodingRule(template=cfg.template, add_bos=cfg.add_bos, cutoff_rule=cfg.cutoff_rule)


LLAMA_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def top_layers_target(num_layers: int, top: int) -> str:
    """``--lora_target`` for every projection of the top ``top`` of ``num_layers`` Llama-style layers."""
    return ",".join(f"layers.{i}.{m}" for i in range(num_layers - top, num_layers) for m in LLAMA_PROJECTIONS)


def _checkpointing(model) -> bool:
    """Whether activation checkpointing is on (transformers 5.x renamed the attribute)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _trainer_class(grad_accum_loss: str):
    """``Trainer`` whose loss under gradient accumulation follows ``grad_accum_loss``.

    transformers >= 4.46 hands a model that accepts loss kwargs the answer-token count of the whole
    accumulated batch (``num_items_in_batch``): loss = sum of token losses / that count. transformers 4.38
    (the released run) took each micro-batch's mean loss and divided it by the number of accumulation
    steps, so a short answer weighed as much as a long one. Reporting ``model_accepts_loss_kwargs=False``
    restores that: the model returns its micro-batch mean and ``training_step`` divides by the steps.
    """
    from transformers import Trainer

    class SFTTrainer(Trainer):
        """Loss on answer logits only, over the cached frozen layers where they can be cached (frozen_layers.py)."""

        def __init__(self, *args, frozen_layer_cache: str = "auto", **kwargs):
            super().__init__(*args, **kwargs)
            if grad_accum_loss == "micro_batch_mean":
                self.model_accepts_loss_kwargs = False
            self.frozen_mode, self.frozen_cache, self._frozen_tried = frozen_layer_cache, None, False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            index = inputs.pop("example_index", None)
            if return_outputs:  # evaluation / prediction want every position's logits
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = answer_only_inputs(model, inputs)
            if not self._frozen_tried and index is not None and model.training:
                self._frozen_tried = True
                self.frozen_cache = self._build_frozen_cache(model)
            if self.frozen_cache is None or index is None:
                return super().compute_loss(model, inputs, False, num_items_in_batch)
            with self.frozen_cache.top_only():
                step = self.frozen_cache.shared_prefix_inputs(self.frozen_cache.inputs(index, inputs), inputs["input_ids"])
                return super().compute_loss(model, step, False, num_items_in_batch)

        def _build_frozen_cache(self, model):
            why_not: list[str] = []
            cache = build_cache(
                model, self.train_dataset.examples, mode=self.frozen_mode, why_not=why_not,
                gradient_checkpointing=_checkpointing(causal_lm(model)),
                world_size=self.args.world_size, deepspeed=bool(self.args.deepspeed),
                autocast=self.accelerator.autocast, progress=not self.args.disable_tqdm,
                loss_of=lambda batch: Trainer.compute_loss(self, model, answer_only_inputs(model, batch)))
            if self.is_world_process_zero():
                if cache is None:
                    print(f"frozen-layer cache: off ({why_not[0]})")
                else:
                    total = sum(len(e["input_ids"]) for e in self.train_dataset.examples)
                    check = f"; first example's loss {cache.probe[1]:.4f} vs {cache.probe[0]:.4f} in full" \
                        if cache.probe else ""
                    print(f"frozen-layer cache: layers 0-{cache.split - 1} run once per example "
                          f"({cache.computed_tokens:,} of {total:,} tokens computed, the rest shared); "
                          f"each step runs layers {cache.split}+{check}")
            return cache

    class ReleasedSFTTrainer(SFTTrainer):
        # 4.38 divided every micro-batch loss by the configured number of steps, also in an epoch's last,
        # shorter accumulation (10,191 / 16 = 637 micro-batches: the 160th step of each epoch has one);
        # transformers 5 divides by the number of micro-batches that step really has.
        @property
        def current_gradient_accumulation_steps(self):
            return self.args.gradient_accumulation_steps

        @current_gradient_accumulation_steps.setter
        def current_gradient_accumulation_steps(self, value):
            pass

    return ReleasedSFTTrainer if grad_accum_loss == "micro_batch_mean" else SFTTrainer


def _save_rule_callback(rule: EncodingRule):
    """Writes the encoding rule into every checkpoint-<step> folder (the released README exports one)."""
    from transformers import TrainerCallback

    class SaveEncodingRule(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if state.is_world_process_zero and os.path.isdir(folder):
                rule.save(folder)

    return SaveEncodingRule()


def run_sft(cfg: SFTConfig, callbacks: list | None = None) -> dict:
    """Fine-tune; returns {"output_dir", "log_history", "train_loss", "resumed_from", "num_examples", "global_step",
    "world_size", "frozen_layer_cache" (None, or the layers it cached, the tokens it ran and its seconds)}."""
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    _check_config(cfg, cuda)
    check_not_an_input(cfg.output_dir, "--output_dir", {"--model_name_or_path": cfg.model_name_or_path})
    set_seed(cfg.seed)
    pairs = load_dataset_pairs(cfg.dataset, cfg.dataset_dir, cfg.max_samples)  # bad data fails before the model loads
    check_tokenizer_files(check_model_dir(cfg.model_name_or_path, "base model", "--model_name_or_path"))
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    prepare_tokenizer(tokenizer)
    tokenizer.padding_side = "right"  # training pads on the right; saved tokenizer is re-set by loaders
    rule = encoding_rule(cfg)
    dataset = build_dataset(tokenizer, pairs, cfg.cutoff_len, rule)
    dtype = torch.float16 if cfg.fp16 else torch.bfloat16 if cfg.bf16 else torch.float32
    resume = find_resume_checkpoint(cfg)
    if resume and os.path.isfile(os.path.join(resume, ENCODING_FILE)) and EncodingRule.load(resume) != rule:
        raise ValueError(f"{resume} was trained with {EncodingRule.load(resume)}, this run asks for {rule}: "
                         "resuming would mix two tokenisations (use the same flags, or --overwrite_output_dir)")
    model = build_lora_model(cfg, dtype)
    check_vocab(tokenizer, model, cfg.model_name_or_path)

    # a process group that exists now belongs to the caller; one that the Trainer creates (torchrun) is ours to end
    group_was_there = torch.distributed.is_available() and torch.distributed.is_initialized()
    args = TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        fp16=cfg.fp16,
        bf16=cfg.bf16,
        seed=cfg.seed,
        use_cpu=not cuda,
        optim="adamw_torch",
        report_to=cfg.report_to,
        remove_unused_columns=False,  # our examples are plain dicts of token lists
        disable_tqdm=cfg.disable_tqdm,
        deepspeed=cfg.deepspeed,
        **cfg.extra,
    )
    trainer = _trainer_class(cfg.grad_accum_loss)(
        model=model, args=args, train_dataset=dataset, data_collator=SFTCollator(tokenizer.pad_token_id),
        frozen_layer_cache=cfg.frozen_layer_cache,
        callbacks=[_save_rule_callback(rule)] + list(callbacks or []),
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)  # the adapter (adapter_config.json + adapter_model.safetensors); rank 0
    summary = {
        "num_examples": len(dataset), "train_loss": result.training_loss, "global_step": result.global_step,
        "resumed_from": resume, "world_size": args.world_size,
        "frozen_layer_cache": None if trainer.frozen_cache is None else {
            "layers_cached": trainer.frozen_cache.split, "computed_tokens": trainer.frozen_cache.computed_tokens,
            "build_s": round(trainer.frozen_cache.build_s, 3)},
    }
    trainer.save_state()  # rank 0 only (Trainer checks)
    if trainer.is_world_process_zero():  # torchrun / accelerate launch: one writer
        rule.save(cfg.output_dir)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(cfg.output_dir)
        atomic_write_text(os.path.join(cfg.output_dir, "train_results.json"), json.dumps(summary, indent=2))
        if cfg.plot_loss:
            plot_loss(trainer.state.log_history, os.path.join(cfg.output_dir, "training_loss.png"))
    summary["output_dir"] = cfg.output_dir
    summary["log_history"] = trainer.state.log_history
    if not group_was_there:  # torchrun / accelerate: the Trainer's group ends with the run
        end_process_group(barrier=True)
    return summary


# --------------------------------------------------------------------------------------------------
# Export
def load_adapter_model(model_name_or_path: str, adapter_name_or_path: str, dtype=None, device: str = "cpu"):
    """Base model with the LoRA adapter applied (not merged), in eval mode."""
    from peft import PeftModel

    if not os.path.isfile(os.path.join(adapter_name_or_path, "adapter_config.json")):
        raise FileNotFoundError(f"{adapter_name_or_path}: no adapter_config.json (not a LoRA adapter folder; "
                                "give finetune_llm.py's --output_dir or one of its checkpoint-* folders)")
    check_lora_files(adapter_name_or_path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    base = causal_lm_from_pretrained(model_name_or_path, "--model_name_or_path", **kwargs)
    model = PeftModel.from_pretrained(base, adapter_name_or_path)
    return model.to(device).eval()


def export_merged(cfg: ExportConfig) -> str:
    """Merge the LoRA weights into the base model and save it (safetensors shards of at most
    ``export_size`` GB) with the tokenizer and the adapter's ``EncodingRule`` (``ENCODING_FILE``): a plain
    model folder that inference or vLLM can load."""
    from transformers import AutoTokenizer

    if cfg.finetuning_type != "lora":
        raise ValueError(f"--finetuning_type {cfg.finetuning_type!r} is not supported; only 'lora'")
    if cfg.export_size < 1:
        raise ValueError(f"--export_size must be >= 1 (GB), got {cfg.export_size}")
    if cfg.export_legacy_format:
        raise ValueError("--export_legacy_format True (.bin weights) is not supported; safetensors only")
    adapter = cfg.adapter_name_or_path
    # before any work: never write into an input, never replace a folder export did not write
    check_not_an_input(cfg.export_dir, "--export_dir", {"--model_name_or_path": cfg.model_name_or_path,
                                                        "--adapter_name_or_path": adapter})
    check_replaceable(cfg.export_dir, cfg.overwrite_output_dir)
    check_model_dir(cfg.model_name_or_path, "base model", "--model_name_or_path")
    model = load_adapter_model(cfg.model_name_or_path, adapter, dtype=resolve_dtype(cfg.export_dtype))
    merged = model.merge_and_unload()
    # the adapter folder holds the tokenizer fine-tuning saved; fall back to the base model's
    tok_src = adapter if os.path.isfile(os.path.join(adapter, "tokenizer_config.json")) else cfg.model_name_or_path
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tok_src))
    check_vocab(tokenizer, merged, tok_src)
    # swap into place only once everything is written, so a crash never leaves a half model
    # the adapter's encoding rule travels with the merged model (released rule if the adapter has none)
    rule = EncodingRule.load(adapter)
    with atomic_dir(cfg.export_dir, overwrite=cfg.overwrite_output_dir) as tmp:
        merged.save_pretrained(tmp, max_shard_size=f"{cfg.export_size}GB", safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        rule.save(tmp)
    return cfg.export_dir
