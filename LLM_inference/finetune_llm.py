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
import os
import sys

from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.settings import add_options, from_namespace, step_parser
from magic.llm.config import ReleasedSFTFlags, SFTConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None) -> SFTConfig:
    p = step_parser(__doc__.split(". ")[0] + ".", SFTConfig,
                    usage="%(prog)s --model_name_or_path DIR --output_dir DIR [options]")
    add_options(p.add_argument_group("released flags, accepted and ignored"), ReleasedSFTFlags)
    ns = p.parse_args(argv)
    given = [f"--{k}" for k in ("stage", "do_train", "overwrite_cache") if getattr(ns, k) not in (None, False)]
    if given:
        print(f"note: {', '.join(given)} accepted for LLaMA-Factory compatibility and ignored", file=sys.stderr)
    return from_namespace(SFTConfig, ns, dataset_dir=ns.dataset_dir or HERE)


def run(argv=None) -> int:
    cfg = parse_args(argv)
    from magic.llm.sft import run_sft  # torch: after the flags are read

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
