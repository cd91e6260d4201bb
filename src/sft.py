"""Step 3a: LoRA supervised fine-tuning of the strategy LLM (what the paper ran through LLaMA-Factory).

Data: ``prompts_4_LLaMA.json`` = ``[{"instruction": <dialogue prompt>, "output": <motivation>}]``.

One example is tokenised as LLaMA-Factory's ``default`` template does::

    source = tokenizer("Human: {instruction}\\nAssistant: ")            # BOS as the tokenizer adds it
    target = tokenizer(output, add_special_tokens=False) + [EOS]
    input_ids = source + target;  labels = [-100] * len(source) + target   # loss on the answer only

``--cutoff_len`` truncation follows LLaMA-Factory's budget rule (``infer_seqlen``): a target shorter than
half the cutoff is kept whole; else, a source shorter than half the cutoff is kept whole and the target
gets the rest; else both are cut in proportion to their lengths. Each part keeps its *beginning* (so a
truncated target loses its EOS, and an over-long dialogue loses its end and the closing instruction,
exactly as in LLaMA-Factory). Inference does not truncate.

Training is ``transformers.Trainer`` on a ``peft`` LoRA model with our own collator (right padding,
labels -100 on pads). Checkpoints go to ``output_dir/checkpoint-<step>``; a run resumes from the last
one automatically (LLaMA-Factory behaviour) unless ``overwrite_output_dir``. The final adapter and the
tokenizer are saved in ``output_dir``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .io_utils import atomic_dir, atomic_write_text, load_json
from .local_llm import TEMPLATES, format_prompt, prepare_tokenizer

IGNORE_INDEX = -100


class SFTDataError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------
# Data
def load_sft_pairs(path: str | os.PathLike, max_samples: int | None = None) -> list[tuple[str, str]]:
    """``(instruction, output)`` pairs of a ``[{"instruction", "output"}]`` file, first ``max_samples``."""
    path = os.fspath(path)
    data = load_json(path, "list of {instruction, output} pairs (prompts_4_LLaMA.json)")
    if not isinstance(data, list):
        raise SFTDataError(f"{path}: expected a JSON list of {{\"instruction\", \"output\"}} objects")
    pairs = []
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get("instruction"), str)
                and isinstance(item.get("output"), str)):
            raise SFTDataError(f"{path}: entry {i} is not an object with string \"instruction\" and "
                               f"\"output\" fields (got {str(item)[:80]!r})")
        if not item["output"].strip():
            raise SFTDataError(f"{path}: entry {i} has an empty \"output\"; nothing to learn from")
        pairs.append((item["instruction"], item["output"]))
    if max_samples is not None:
        pairs = pairs[:max_samples]
    if not pairs:
        raise SFTDataError(f"{path}: no training pairs")
    return pairs


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's rule for splitting ``cutoff_len`` between source and target; returns the kept lengths."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * target_len / (source_len + target_len))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


def encode_source(tokenizer, instruction: str, template: str = "default") -> list[int]:
    """Token ids of the templated prompt, with BOS as the tokenizer adds it (not twice)."""
    text = format_prompt(tokenizer, instruction, template)
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def encode_example(tokenizer, instruction: str, output: str, cutoff_len: int,
                   template: str = "default") -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (length <= cutoff_len) of one pair; labels are -100 on the source."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the model could not learn to stop")
    source = encode_source(tokenizer, instruction, template)
    target = tokenizer(output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n_src, n_tgt = infer_seqlen(len(source), len(target), cutoff_len)
    source, target = source[:n_src], target[:n_tgt]
    return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}


class SFTDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict[str, list[int]]]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def build_dataset(tokenizer, pairs: Sequence[tuple[str, str]], cutoff_len: int,
                  template: str = "default") -> SFTDataset:
    examples = [encode_example(tokenizer, ins, out, cutoff_len, template) for ins, out in pairs]
    # an example whose answer was cut away entirely teaches nothing and gives a NaN mean loss
    kept = [e for e in examples if any(l != IGNORE_INDEX for l in e["labels"])]
    if not kept:
        raise SFTDataError(f"cutoff_len={cutoff_len} leaves no answer tokens in any example")
    return SFTDataset(kept)


@dataclass
class SFTCollator:
    """Right-pads a list of examples: input_ids / attention_mask / labels of shape (B, T_max)."""
    pad_token_id: int
    pad_to_multiple_of: int | None = None

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
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------------------------------
# Training
@dataclass
class SFTConfig:
    """LLaMA-Factory flag names; defaults are the paper's settings (README of the released code)."""
    model_name_or_path: str
    dataset: str
    output_dir: str
    template: str = "default"
    finetuning_type: str = "lora"
    lora_target: str = "q_proj,v_proj"
    lora_rank: int = 8
    lora_alpha: float | None = None  # None: 2 x rank (LLaMA-Factory)
    lora_dropout: float = 0.0
    cutoff_len: int = 1024
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int | None = None
    learning_rate: float = 5e-5
    num_train_epochs: float = 5.0
    max_steps: int = -1
    max_grad_norm: float = 1.0
    plot_loss: bool = False
    fp16: bool = False
    bf16: bool = False
    seed: int = 42
    max_samples: int | None = None
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    gradient_checkpointing: bool = False
    device: str | None = None  # "cpu" forces the CPU; None: CUDA when available
    disable_tqdm: bool = False
    deepspeed: str | None = None  # a DeepSpeed config (LLM_inference/ds_configs/ds_z{2,3}_config.json), needs deepspeed
    extra: dict = field(default_factory=dict)


def _check_config(cfg: SFTConfig, cuda: bool) -> None:
    if cfg.finetuning_type != "lora":
        raise ValueError(f"--finetuning_type {cfg.finetuning_type!r} is not supported; only 'lora' (the paper's)")
    if cfg.template not in TEMPLATES:
        raise ValueError(f"--template {cfg.template!r}: expected one of {TEMPLATES}")
    if cfg.device == "cuda" and not cuda:
        raise ValueError("--device cuda: no CUDA GPU is available")
    if cfg.fp16 and cfg.bf16:
        raise ValueError("--fp16 and --bf16 are exclusive")
    if cfg.fp16 and not cuda:
        raise ValueError("--fp16 needs a CUDA GPU (mixed precision with fp16 gradients scaling is not "
                         "available on the CPU); drop --fp16, or use --bf16 on a CPU with bf16 support")
    if cfg.deepspeed:
        import importlib.util
        if not os.path.isfile(cfg.deepspeed):
            raise FileNotFoundError(f"--deepspeed {cfg.deepspeed}: config file not found "
                                    "(LLM_inference/ds_configs/ds_z2_config.json or ds_z3_config.json)")
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError("--deepspeed needs the deepspeed package (pip install deepspeed, on a CUDA machine)")
    if cfg.cutoff_len < 2:
        raise ValueError(f"--cutoff_len must be >= 2, got {cfg.cutoff_len}")


def find_resume_checkpoint(cfg: SFTConfig) -> str | None:
    """The checkpoint to resume from: the explicit one, else the last ``checkpoint-*`` in output_dir."""
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.resume_from_checkpoint:
        if not os.path.isdir(cfg.resume_from_checkpoint):
            raise FileNotFoundError(f"{cfg.resume_from_checkpoint}: checkpoint folder not found")
        return cfg.resume_from_checkpoint
    if cfg.overwrite_output_dir or not os.path.isdir(cfg.output_dir):
        return None
    return get_last_checkpoint(cfg.output_dir)


def build_lora_model(cfg: SFTConfig, dtype: torch.dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=dtype)
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def run_sft(cfg: SFTConfig, callbacks: list | None = None) -> dict:
    """Fine-tune; returns {"output_dir", "log_history", "train_loss", "resumed_from", "num_examples"}."""
    from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    _check_config(cfg, cuda)
    set_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    prepare_tokenizer(tokenizer)
    tokenizer.padding_side = "right"  # training pads on the right; saved tokenizer is re-set by loaders
    pairs = load_sft_pairs(cfg.dataset, cfg.max_samples)
    dataset = build_dataset(tokenizer, pairs, cfg.cutoff_len, cfg.template)
    dtype = torch.float16 if cfg.fp16 else torch.bfloat16 if cfg.bf16 else torch.float32
    model = build_lora_model(cfg, dtype)
    resume = find_resume_checkpoint(cfg)

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
        report_to="none",
        remove_unused_columns=False,  # our examples are plain dicts of token lists
        disable_tqdm=cfg.disable_tqdm,
        deepspeed=cfg.deepspeed,
        **cfg.extra,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=SFTCollator(tokenizer.pad_token_id), callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)  # the adapter (adapter_config.json + adapter_model.safetensors); rank 0
    summary = {
        "num_examples": len(dataset), "train_loss": result.training_loss, "global_step": result.global_step,
        "resumed_from": resume, "world_size": args.world_size,
    }
    trainer.save_state()  # rank 0 only (Trainer checks)
    if trainer.is_world_process_zero():  # torchrun / accelerate launch: one writer
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(cfg.output_dir)
        atomic_write_text(os.path.join(cfg.output_dir, "train_results.json"), json.dumps(summary, indent=2))
        if cfg.plot_loss:
            plot_loss(trainer.state.log_history, os.path.join(cfg.output_dir, "training_loss.png"))
    summary["output_dir"] = cfg.output_dir
    summary["log_history"] = trainer.state.log_history
    return summary


# --------------------------------------------------------------------------------------------------
# Export
def load_adapter_model(model_name_or_path: str, adapter_name_or_path: str, dtype=None, device: str = "cpu"):
    """Base model with the LoRA adapter applied (not merged), in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not os.path.isfile(os.path.join(adapter_name_or_path, "adapter_config.json")):
        raise FileNotFoundError(f"{adapter_name_or_path}: no adapter_config.json (not a LoRA adapter folder; "
                                "give finetune_llm.py's --output_dir or one of its checkpoint-* folders)")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    base = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    model = PeftModel.from_pretrained(base, adapter_name_or_path)
    return model.to(device).eval()


def export_merged(model_name_or_path: str, adapter_name_or_path: str, export_dir: str, export_size: int = 1,
                  dtype=None, finetuning_type: str = "lora") -> str:
    """Merge the LoRA weights into the base model and save it (safetensors shards of at most
    ``export_size`` GB) with the tokenizer: a plain model folder that inference or vLLM can load."""
    from transformers import AutoTokenizer

    if finetuning_type != "lora":
        raise ValueError(f"--finetuning_type {finetuning_type!r} is not supported; only 'lora'")
    if export_size < 1:
        raise ValueError(f"--export_size must be >= 1 (GB), got {export_size}")
    model = load_adapter_model(model_name_or_path, adapter_name_or_path, dtype=dtype)
    merged = model.merge_and_unload()
    # the adapter folder holds the tokenizer fine-tuning saved; fall back to the base model's
    tok_src = adapter_name_or_path if os.path.isfile(os.path.join(adapter_name_or_path, "tokenizer_config.json")) \
        else model_name_or_path
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tok_src))
    # swap into place only once everything is written, so a crash never leaves a half model
    with atomic_dir(export_dir) as tmp:
        merged.save_pretrained(tmp, max_shard_size=f"{export_size}GB", safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return export_dir
