"""The settings of stage 1's five steps, each one typed dataclass whose fields are the step's flags
(magic.common.settings generates the parsers): each default is written here once, and the library functions
take these objects. This module imports nothing heavy, so every step's ``--help`` answers at once.

    1 collect_motivations_ChatGPT.py  MotivationConfig     (magic.llm.motivations)
    2 create_prompts_4_LLaMA.py       PromptConfig         (magic.llm.prompt_files)
    3 finetune_llm.py                 SFTConfig            (magic.llm.sft.run_sft)
    4 export_model.py                 ExportConfig         (magic.llm.sft.export_merged)
    5 infer_strategy.py               InferenceConfig      (magic.llm.inference), plus InferenceFlags: the
                                      flags the script turns into InferenceConfig's split maps
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from magic.common.artifacts import MOTIVATIONS_FILE, SPLITS
from magic.common.settings import option
from magic.common.validate import (non_negative_float, non_negative_int, positive_float, positive_int, probability,
                                   seed_int)

TEMPLATES = ("default", "chat", "none")
CUTOFF_RULES = ("infer_max_len", "infer_seqlen")
GRAD_ACCUM_LOSSES = ("micro_batch_mean", "token_mean")
REPORT_TO = ("none", "tensorboard", "wandb")
CACHE_MODES = ("auto", "off")  # the frozen-layer cache (magic.llm.frozen_layers)
RELEASED_MODEL = "gpt-3.5-turbo-0125"
LOCAL_MAX_NEW_TOKENS = 128  # step 1's local backend when --max_tokens is not given

# steps 1 and 2 run from LLM_inference/ as released: the dialogue files are the repository's data/ folder
RELEASED_DATA = os.path.join(os.pardir, "data")


def step_count(text: str) -> int:
    """A checked --max_steps: -1 (transformers' "not set": train num_train_epochs) or an integer >= 1."""
    return -1 if text.strip() == "-1" else positive_int(text)


def parse_bool(text: str) -> bool:
    """HfArgumentParser-style boolean values (True/False/yes/no/1/0), as LLaMA-Factory's flags take them."""
    value = text.strip().lower()
    if value in ("true", "yes", "y", "1"):
        return True
    if value in ("false", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


@dataclass(kw_only=True)
class EngineOptions:
    """The LLM a step asks (steps 1 and 9, the direct-LLM rows): an OpenAI-compatible server, or a local transformers
    model, through magic.llm.engines.factory.make_engine."""
    backend: str = option("openai", "an OpenAI-compatible server, or a local transformers model",
                          choices=("openai", "local"))
    model: str = option(RELEASED_MODEL, "served model name (openai)")
    base_url: str | None = option(None, "e.g. http://localhost:8000/v1 for vLLM / llama.cpp / Ollama (default: OpenAI)")
    openai_api_key: str | None = option(None, "DEPRECATED (shell history, process list): export OPENAI_API_KEY")
    concurrency: int = option(8, "requests in flight (openai)", type=positive_int, metavar="N")
    rpm: float | None = option(None, "client-side cap on requests per minute (openai)", type=positive_float,
                               metavar="X")
    max_retries: int = option(6, "retries per prompt on 429/5xx/timeouts/malformed answers (openai)",
                              type=non_negative_int, metavar="N")
    timeout: float = option(60.0, "seconds per request (openai)", type=positive_float, metavar="X")
    model_name_or_path: str | None = option(None, "a transformers causal-LM folder (local)")
    template: str = option("chat", "chat = the tokenizer's chat template, default when it has none (local)",
                           choices=TEMPLATES)
    batch_size: int = option(8, "prompts per batch (local)", type=positive_int, metavar="N")
    device: str | None = option(None, "default: cuda if available, else cpu (local)")
    dtype: str | None = option(None, "float32 (default) | bf16 | fp16 | auto | int8 (local, CPU)")


@dataclass(kw_only=True)
class MotivationConfig(EngineOptions):
    """Step 1: ask an LLM why the supporter chose each training sample's strategy."""
    train_file: str = option(os.path.join(RELEASED_DATA, "train.txt"), "MultiESC train.txt (JSON lines)",
                             aliases=("--train_file_path",))
    output_file: str = option(MOTIVATIONS_FILE, "motivations (+ <name>.ids.json sidecar)")
    source: str = option("model", "model: ask the LLM of --backend; released: copy the authors' released "
                         "motivations (--released_file), nothing asked or paid", choices=("model", "released"))
    released_file: str | None = option(None, "--source released: the released motivations_4_LLaMA.json "
                                       "(data/fetch_data.py puts it in <data folder>/magic/)")
    cache_file: str | None = option(None, "answer cache (default: <output_file>.cache.jsonl)")
    limit: int | None = option(None, "only the first N samples", type=positive_int, metavar="N")
    dry_run: bool = option(False, "count prompts, tokens and cost; send nothing")
    price_per_1k_input: float | None = option(None, "USD per 1k input tokens (dry run)", type=non_negative_float,
                                              metavar="X")
    price_per_1k_output: float | None = option(None, "USD per 1k output tokens (dry run)", type=non_negative_float,
                                               metavar="X")
    allow_partial: bool = option(False, "write the answered samples even if some failed (the .ids.json says which)")
    temperature: float | None = option(None, "default: not sent (openai); greedy (local)", type=non_negative_float,
                                       metavar="X")
    max_tokens: int | None = option(None, f"default: not sent (openai); {LOCAL_MAX_NEW_TOKENS} new tokens (local)",
                                    type=positive_int, metavar="N")


@dataclass(kw_only=True)
class PromptConfig:
    """Step 2: build the fine-tuning pairs and the valid/test prompts."""
    train_file: str = option(os.path.join(RELEASED_DATA, "train.txt"), "MultiESC train.txt")
    valid_file: str = option(os.path.join(RELEASED_DATA, "valid.txt"), "MultiESC valid.txt")
    test_file: str = option(os.path.join(RELEASED_DATA, "test.txt"), "MultiESC test.txt")
    motivations_file: str = option(MOTIVATIONS_FILE, "one motivation per train sample (step 1)")
    output_dir: str = option(".", "where the prompt files go")
    allow_empty: str = option("", "comma-separated splits that may have no samples (e.g. test)", metavar="SPLITS")
    allow_shared_dialogues: bool = option(False, "let splits share dialogues (otherwise an error: a mixed-up file)")


@dataclass(kw_only=True)
class SFTConfig:
    """Step 3: LoRA fine-tuning with LLaMA-Factory's flag names; defaults are the paper's settings."""
    model_name_or_path: str = option(help="base model folder or hub id")
    dataset: str = option("prompts_4_LLaMA.json", "a data file ([{instruction, output}]) or comma-separated names "
                                                  "in <dataset_dir>/dataset_info.json")
    dataset_dir: str | None = option(None, "folder of dataset_info.json (default: LLM_inference/)")
    output_dir: str = option(help="checkpoints, adapter and tokenizer go here")
    template: str = option("default", "prompt template (the paper's: default)", choices=TEMPLATES)
    finetuning_type: str = option("lora", "only lora", choices=("lora",))
    lora_target: str = option("q_proj,v_proj", "comma-separated module names")
    lora_rank: int = option(8, "", type=positive_int, metavar="N")
    lora_alpha: float | None = option(None, "default 2 x lora_rank", type=positive_float, metavar="X")
    lora_dropout: float = option(0.0, "", type=probability, metavar="X")
    cutoff_len: int = option(1024, "max tokens per example", type=positive_int, metavar="N")
    cutoff_rule: str = option("infer_max_len", "split of cutoff_len between prompt and answer: released "
                                               "LLaMA-Factory | later versions", choices=CUTOFF_RULES)
    add_bos: bool = option(False, "BOS before the prompt (released: none; saved with the adapter)")
    grad_accum_loss: str = option("micro_batch_mean", "loss under gradient accumulation: mean of micro-batch means "
                                  "(released) | over the answer tokens (transformers 5)", choices=GRAD_ACCUM_LOSSES)
    report_to: str = option("none", "where the Trainer logs", choices=REPORT_TO)
    per_device_train_batch_size: int = option(16, "", type=positive_int, metavar="N")
    gradient_accumulation_steps: int = option(4, "", type=positive_int, metavar="N")
    lr_scheduler_type: str = option("cosine", "")
    warmup_steps: int = option(0, "", type=non_negative_int, metavar="N")
    logging_steps: int = option(10, "", type=positive_int, metavar="N")
    save_steps: int = option(100, "", type=positive_int, metavar="N")
    save_total_limit: int | None = option(None, "", type=positive_int, metavar="N")
    learning_rate: float = option(5e-5, "", type=non_negative_float, metavar="X")
    num_train_epochs: float = option(5.0, "", type=positive_float, metavar="X")
    max_steps: int = option(-1, "overrides num_train_epochs when > 0", type=step_count, metavar="N")
    max_grad_norm: float = option(1.0, "", type=non_negative_float, metavar="X")
    seed: int = option(42, "", type=seed_int, metavar="N")
    max_samples: int | None = option(None, "the first N pairs only", type=positive_int, metavar="N")
    resume_from_checkpoint: str | None = option(None, "default: the last checkpoint in output_dir")
    frozen_layer_cache: str = option("auto", "auto: with LoRA on the top layers only, the frozen layers below run "
                                             "once per example (same loss up to rounding)", choices=CACHE_MODES)
    device: str | None = option(None, "default: cuda when available", choices=("cpu", "cuda"))
    deepspeed: str | None = option(None, "DeepSpeed config (LLM_inference/ds_configs/ds_z{2,3}_config.json; needs "
                                         "deepspeed and torchrun)", metavar="CONFIG")
    plot_loss: bool = option(False, "write training_loss.png in output_dir")
    fp16: bool = option(False, "fp16 base model + mixed precision (released)")
    bf16: bool = option(False, "bf16 mixed precision")
    overwrite_output_dir: bool = option(False, "do not resume from checkpoints in output_dir")
    gradient_checkpointing: bool = option(False, "trade compute for memory (large models)")
    disable_tqdm: bool = option(False, "no progress bar")
    extra: dict = field(default_factory=dict)  # more transformers.TrainingArguments (not a flag)


@dataclass(kw_only=True)
class ReleasedSFTFlags:
    """Flags of the released train_bash.py command that change nothing here (one line says so)."""
    stage: str | None = option(None, "accepted and ignored (only SFT)", choices=("sft",))
    do_train: bool = option(False, "accepted and ignored (this script always trains)")
    overwrite_cache: bool = option(False, "accepted and ignored (no tokenised-dataset cache is kept)")


@dataclass(kw_only=True)
class ExportConfig:
    """Step 4: merge the LoRA adapter into the base model, saved as a plain model folder."""
    model_name_or_path: str = option(help="the base model fine-tuning started from")
    adapter_name_or_path: str = option(help="finetune_llm.py's --output_dir (or a checkpoint-* in it)")
    template: str | None = option(None, "accepted and ignored (the template is applied at inference)",
                                  choices=TEMPLATES)
    finetuning_type: str = option("lora", "", choices=("lora",))
    export_dir: str = option(help="the merged model folder")
    export_size: int = option(1, "max shard size in GB", type=positive_int, metavar="N")
    export_dtype: str | None = option(None, "float32 | float16 | bfloat16 (default: the base checkpoint's)")
    export_legacy_format: bool | None = option(False, "True (.bin weights) is refused: safetensors only",
                                               type=parse_bool)
    overwrite_output_dir: bool = option(False, "replace --export_dir even if export did not write it")


@dataclass(kw_only=True)
class InferenceConfig:
    """Step 5: answer every prompt file with the fine-tuned strategy LLM. ``prompt_paths`` / ``gold_files``
    (split -> file) are the library's; the script builds them from InferenceFlags."""
    prompt_paths: dict = field(default_factory=dict)  # split -> prompt file (only the splits to run)
    gold_files: dict = field(default_factory=dict)  # split -> dialogue file, for the report
    model_path: str | None = option(None, "merged model folder (default LLM_inference/fine_tuned_llama2/)")
    output_dir: str | None = option(None, "default LLM_inference/")
    cache_file: str | None = option(None, "answer cache (default <output_dir>/strategy_inference_cache.jsonl)")
    backend: str = option("local", "local: transformers; openai: an OpenAI-compatible server; vllm: vllm.LLM "
                                   "(optional package, CUDA)", choices=("local", "openai", "vllm"))
    template: str = option("default", "prompt template, as in fine-tuning", choices=TEMPLATES)
    batch_size: int = option(16, "", type=positive_int, metavar="N")
    max_samples: int | None = option(None, "the first N prompts of each split", type=positive_int, metavar="N")
    max_new_tokens: int = option(128, "", type=positive_int, metavar="N")
    do_sample: bool = option(False, "sample instead of greedy decoding")
    top_k: int | None = option(None, "with --do_sample (released: 10)", type=positive_int, metavar="N")
    temperature: float | None = option(None, "with --do_sample", type=positive_float, metavar="X")
    device: str | None = option(None, "cpu | cuda (default: cuda when available)")
    dtype: str | None = option(None, "float32 | float16 | bfloat16 | auto | int8 (CPU) (default: the checkpoint's)")
    base_url: str | None = option(None, "OpenAI-compatible server, e.g. http://localhost:8000/v1")
    model: str | None = option(None, "served model name (openai; default --model_path)")
    concurrency: int = option(8, "parallel requests (openai)", type=positive_int, metavar="N")
    openai_endpoint: str = option("chat", "chat: the raw instruction, the server's chat template; completions: the "
                                          "prompt in --template, the fine-tuning format",
                                  choices=("chat", "completions"))
    tensor_parallel_size: int = option(1, "GPUs per model (vllm)", type=positive_int, metavar="N")
    merge_shards: int | None = option(None, "write the outputs from the N shard caches (no model)", type=positive_int,
                                      metavar="N")
    test_mode: str = option("last", "test enumeration (gold)", choices=("last", "all"))
    share_prefix: bool = True  # local: prefill only what a prompt does not share with an earlier one of its batch
    # batch order (local): None = file order when sharing prefixes (a dialogue's prompts extend one another), else
    # grouped by length (least padding)
    sort_by_length: bool | None = None
    progress: bool | None = None
    shard: tuple[int, int] | None = None  # (K, N): answer only shard K of N (magic.llm.shards)

    def __post_init__(self):
        if self.cache_file is None and self.output_dir is not None:
            self.cache_file = os.path.join(self.output_dir, "strategy_inference_cache.jsonl")


@dataclass(kw_only=True)
class InferenceFlags:
    """Step 5's flags that the script turns into InferenceConfig fields."""
    prompt_path: str | None = option(None, "train prompts (default LLM_inference/prompts_4_LLaMA.json)")
    prompt_path_valid: str | None = option(None, "valid prompts (default LLM_inference/prompts_4_LLaMA_valid.json)")
    prompt_path_test: str | None = option(None, "test prompts (default LLM_inference/prompts_4_LLaMA_test.json)")
    splits: str = option(",".join(SPLITS), f"comma-separated subset of {','.join(SPLITS)}")
    train_file: str | None = option(None, "gold dialogues for the report (train split)")
    valid_file: str | None = option(None, "gold dialogues (valid)")
    test_file: str | None = option(None, "gold dialogues (test)")
    no_prefix_sharing: bool = option(False, "local: one padded generate call per batch (same answers, slower)")
    batch_order: str = option("auto", "local: file (a dialogue's prompts share the most prefix) | length (least "
                                      "padding) | auto: file with prefix sharing", choices=("auto", "file", "length"))
    shard: str | None = option(None, "answer only shard K of N (0-based); the last shard to finish writes the "
                                     "outputs", metavar="K/N")
