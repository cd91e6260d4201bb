r"""Step 3: LoRA fine-tuning of the strategy LLM on prompts_4_LLaMA.json (replaces LLaMA-Factory's
`train_bash.py --stage sft`, with the same flags). The released command runs as written (only the script
path changes; the released README has a space after three of its line-continuation backslashes, which
ends the shell command early: delete those spaces):

    python LLM_inference/finetune_llm.py --stage sft --do_train --model_name_or_path llama2-7B-hf/ \
        --dataset strategy_motivation --template default --finetuning_type lora \
        --lora_target q_proj,v_proj --output_dir output/ --overwrite_cache \
        --per_device_train_batch_size 16 --gradient_accumulation_steps 4 --lr_scheduler_type cosine \
        --logging_steps 10 --save_steps 100 --learning_rate 5e-5 --num_train_epochs 5.0 --plot_loss --fp16

--dataset is a file path or a name in <--dataset_dir>/dataset_info.json (default dataset_dir: this
folder, whose dataset_info.json names prompts_4_LLaMA.json `strategy_motivation`, as the released README
asks). Tokens follow the released LLaMA-Factory rule (no BOS, `infer_max_len` cutoff split) and, under
gradient accumulation, the released loss averaging; --add_bos, --cutoff_rule infer_seqlen and
--grad_accum_loss token_mean give the newer behaviour. --stage sft, --do_train and --overwrite_cache are
accepted and ignored (one line says so). Re-running the same command resumes from the last
checkpoint-* in --output_dir (--overwrite_output_dir starts afresh). The adapter, the tokenizer and
magic_encoding.json (the tokenisation rule, read back by export and inference) are saved in --output_dir
and in every checkpoint; merge one with export_model.py. Exit codes: 0 done, 1 bad data or settings (one
``finetune_llm.py: error: ...`` line), 2 bad command line, 130 interrupted.

Many GPUs: `torchrun --nproc_per_node N LLM_inference/finetune_llm.py ...` or `accelerate launch
--multi_gpu --num_processes N LLM_inference/finetune_llm.py ...` (DDP; --per_device_train_batch_size is per
process, so divide it by N to keep the global batch); rank 0 alone writes. Add --deepspeed
LLM_inference/ds_configs/ds_z3_config.json (or ds_z2_config.json) when the model does not fit one card.
"""
import argparse
import os
import sys

from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.llm.sft import CACHE_MODES, SFTConfig, run_sft
from magic.common.validate import non_negative_float, non_negative_int, positive_float, positive_int, probability


HERE = os.path.dirname(os.path.abspath(__file__))
# flags of the released train_bash.py command that have no effect here: we always train one SFT stage, and
# keep no tokenised-dataset cache to overwrite
IGNORED = ("stage", "do_train", "overwrite_cache")


def _bool_flag(p, name, help):
    p.add_argument(f"--{name}", action="store_true", help=help)


def parse_args(argv=None) -> SFTConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="base model folder or hub id")
    p.add_argument("--dataset", default="prompts_4_LLaMA.json",
                   help="path to prompts_4_LLaMA.json ([{instruction, output}]), or comma-separated names in "
                        "<dataset_dir>/dataset_info.json (released: strategy_motivation)")
    p.add_argument("--dataset_dir", default=HERE,
                   help="folder of dataset_info.json and the files it names (default: LLM_inference/)")
    p.add_argument("--stage", default=None, choices=["sft"], help="accepted and ignored (only SFT)")
    _bool_flag(p, "do_train", "accepted and ignored (this script always trains)")
    _bool_flag(p, "overwrite_cache", "accepted and ignored (no tokenised-dataset cache is kept)")
    p.add_argument("--output_dir", required=True, help="checkpoints, adapter and tokenizer go here")
    p.add_argument("--template", default="default", help="default (paper) | chat | none")
    p.add_argument("--finetuning_type", default="lora", help="only lora")
    p.add_argument("--lora_target", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument("--lora_rank", type=positive_int, default=8)
    p.add_argument("--lora_alpha", type=positive_float, default=None, help="default 2 x lora_rank")
    p.add_argument("--lora_dropout", type=probability, default=0.0)
    p.add_argument("--cutoff_len", type=positive_int, default=1024, help="max tokens per example")
    p.add_argument("--cutoff_rule", default="infer_max_len", choices=["infer_max_len", "infer_seqlen"],
                   help="how cutoff_len is split between prompt and answer: infer_max_len (released "
                        "LLaMA-Factory: answer share proportional to its length) | infer_seqlen (later versions)")
    _bool_flag(p, "add_bos", "prepend BOS to the prompt (released: none); saved with the adapter so "
                             "inference does the same")
    p.add_argument("--grad_accum_loss", default="micro_batch_mean", choices=["micro_batch_mean", "token_mean"],
                   help="loss under gradient accumulation: mean of micro-batch means (released, transformers "
                        "4.38) | token_mean (sum over the accumulated batch / its answer tokens, transformers 5)")
    p.add_argument("--report_to", default="none", choices=["none", "tensorboard", "wandb"],
                   help="where the Trainer logs (tensorboard/wandb need their package installed)")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=16)
    p.add_argument("--gradient_accumulation_steps", type=positive_int, default=4)
    p.add_argument("--lr_scheduler_type", default="cosine")
    p.add_argument("--warmup_steps", type=non_negative_int, default=0)
    p.add_argument("--logging_steps", type=positive_int, default=10)
    p.add_argument("--save_steps", type=positive_int, default=100)
    p.add_argument("--save_total_limit", type=positive_int, default=None)
    p.add_argument("--learning_rate", type=non_negative_float, default=5e-5)
    p.add_argument("--num_train_epochs", type=positive_float, default=5.0)
    p.add_argument("--max_steps", type=int, default=-1, help="overrides num_train_epochs when > 0")
    p.add_argument("--max_grad_norm", type=non_negative_float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max_samples", type=positive_int, default=None, help="use the first N pairs only")
    p.add_argument("--resume_from_checkpoint", default=None, help="default: last checkpoint in output_dir")
    p.add_argument("--frozen_layer_cache", default="auto", choices=list(CACHE_MODES),
                   help="auto: with LoRA on the top layers only, the frozen layers below run once per example, "
                        "not at every step (same loss up to rounding; src/magic/llm/frozen_layers.py)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--deepspeed", default=None, metavar="CONFIG",
                   help="DeepSpeed config for models that do not fit one card: LLM_inference/ds_configs/ds_z2_config.json "
                        "(ZeRO-2) or ds_z3_config.json (ZeRO-3); needs the deepspeed package and torchrun")
    _bool_flag(p, "plot_loss", "write training_loss.png in output_dir")
    _bool_flag(p, "fp16", "fp16 base model + mixed precision (released; runs on CPU too, slowly)")
    _bool_flag(p, "bf16", "bf16 mixed precision")
    _bool_flag(p, "overwrite_output_dir", "do not resume from checkpoints in output_dir")
    _bool_flag(p, "gradient_checkpointing", "trade compute for memory (large models)")
    _bool_flag(p, "disable_tqdm", "no progress bar")
    args = vars(p.parse_args(argv))
    given = [f"--{k}" for k in IGNORED if args.pop(k) not in (None, False)]
    if given:
        print(f"note: {', '.join(given)} accepted for LLaMA-Factory compatibility and ignored", file=sys.stderr)
    return SFTConfig(**args)


def run(argv=None) -> int:
    cfg = parse_args(argv)
    summary = run_sft(cfg)
    print(f"trained on {summary['num_examples']} examples, {summary['global_step']} steps, "
          f"mean loss {summary['train_loss']:.4f}"
          + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else ""))
    print(f"adapter and tokenizer saved in {cfg.output_dir}")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad data or settings (a missing file, a model that cannot be loaded) are
    one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("finetune_llm.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
