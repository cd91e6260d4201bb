r"""Step 3a: LoRA fine-tuning of the strategy LLM on prompts_4_LLaMA.json (replaces LLaMA-Factory's
`train_bash.py --stage sft`, with the same flag names). Paper settings (defaults):

    python LLM_inference/finetune_llm.py --model_name_or_path meta-llama/Llama-2-7b-hf \
        --dataset LLM_inference/prompts_4_LLaMA.json --template default --finetuning_type lora \
        --lora_target q_proj,v_proj --output_dir LLM_inference/lora_llama2 \
        --per_device_train_batch_size 16 --gradient_accumulation_steps 4 --lr_scheduler_type cosine \
        --logging_steps 10 --save_steps 100 --learning_rate 5e-5 --num_train_epochs 5.0 --plot_loss --fp16

Re-running the same command resumes from the last checkpoint-* in --output_dir (--overwrite_output_dir
starts afresh). The adapter and the tokenizer are saved in --output_dir; merge them with export_model.py.

Many GPUs: `torchrun --nproc_per_node N LLM_inference/finetune_llm.py ...` or `accelerate launch
--multi_gpu --num_processes N LLM_inference/finetune_llm.py ...` (DDP; --per_device_train_batch_size is per
process, so divide it by N to keep the global batch); rank 0 alone writes. Add --deepspeed
LLM_inference/ds_configs/ds_z3_config.json (or ds_z2_config.json) when the model does not fit one card.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.sft import SFTConfig, SFTDataError, run_sft  # noqa: E402


def _bool_flag(p, name, help):
    p.add_argument(f"--{name}", action="store_true", help=help)


def parse_args(argv=None) -> SFTConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="base model folder or hub id")
    p.add_argument("--dataset", default="prompts_4_LLaMA.json",
                   help="path to prompts_4_LLaMA.json ([{instruction, output}])")
    p.add_argument("--output_dir", required=True, help="checkpoints, adapter and tokenizer go here")
    p.add_argument("--template", default="default", help="default (paper) | chat | none")
    p.add_argument("--finetuning_type", default="lora", help="only lora")
    p.add_argument("--lora_target", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument("--lora_rank", type=int, default=8)
    p.add_argument("--lora_alpha", type=float, default=None, help="default 2 x lora_rank")
    p.add_argument("--lora_dropout", type=float, default=0.0)
    p.add_argument("--cutoff_len", type=int, default=1024, help="max tokens per example (LLaMA-Factory rule)")
    p.add_argument("--per_device_train_batch_size", type=int, default=16)
    p.add_argument("--gradient_accumulation_steps", type=int, default=4)
    p.add_argument("--lr_scheduler_type", default="cosine")
    p.add_argument("--warmup_steps", type=int, default=0)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--save_steps", type=int, default=100)
    p.add_argument("--save_total_limit", type=int, default=None)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--num_train_epochs", type=float, default=5.0)
    p.add_argument("--max_steps", type=int, default=-1, help="overrides num_train_epochs when > 0")
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max_samples", type=int, default=None, help="use the first N pairs only")
    p.add_argument("--resume_from_checkpoint", default=None, help="default: last checkpoint in output_dir")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--deepspeed", default=None, metavar="CONFIG",
                   help="DeepSpeed config for models that do not fit one card: LLM_inference/ds_configs/ds_z2_config.json "
                        "(ZeRO-2) or ds_z3_config.json (ZeRO-3); needs the deepspeed package and torchrun")
    _bool_flag(p, "plot_loss", "write training_loss.png in output_dir")
    _bool_flag(p, "fp16", "fp16 mixed precision (CUDA only)")
    _bool_flag(p, "bf16", "bf16 mixed precision")
    _bool_flag(p, "overwrite_output_dir", "do not resume from checkpoints in output_dir")
    _bool_flag(p, "gradient_checkpointing", "trade compute for memory (large models)")
    _bool_flag(p, "disable_tqdm", "no progress bar")
    return SFTConfig(**vars(p.parse_args(argv)))


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        summary = run_sft(cfg)
    except (SFTDataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"trained on {summary['num_examples']} examples, {summary['global_step']} steps, "
          f"mean loss {summary['train_loss']:.4f}"
          + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else ""))
    print(f"adapter and tokenizer saved in {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
