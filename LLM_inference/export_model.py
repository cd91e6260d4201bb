r"""Step 4: merge the LoRA adapter into the base model and save it as a plain model folder (replaces
LLaMA-Factory's export_model.py; same flags). The released command runs as written (script path aside;
delete the spaces after its line-continuation backslashes):

    python LLM_inference/export_model.py --model_name_or_path llama2-7B-hf/ \
        --adapter_name_or_path output/checkpoint-200/ --template default --finetuning_type lora \
        --export_dir fine_tuned_llama2/ --export_size 2 --export_legacy_format False

The released README exported checkpoint-200 (step 200 of 800: 1.25 of the 5 epochs), not the final
adapter in output/; give the folder you mean. Writes safetensors shards of at most --export_size GB, the
tokenizer and the adapter's magic_encoding.json (how fine-tuning tokenised prompts; inference reads it);
the merged model's logits equal the adapter model's (tests/llm/test_finetune_export.py).
--export_legacy_format False is what this script writes (safetensors); True (.bin files) is refused.
--template is accepted and ignored (the template is applied at inference). Exit codes: 0 done, 1 bad
input (one ``export_model.py: error: ...`` line), 2 bad command line, 130 interrupted.
"""
import argparse
import os
import sys

from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.llm.local_model import TEMPLATES, resolve_dtype
from magic.llm.sft import export_merged
from magic.common.validate import positive_int


def _parse_bool(text: str) -> bool:
    """HfArgumentParser-style boolean values (True/False/yes/no/1/0), as LLaMA-Factory's flags take them."""
    value = text.strip().lower()
    if value in ("true", "yes", "y", "1"):
        return True
    if value in ("false", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="the base model fine-tuning started from")
    p.add_argument("--adapter_name_or_path", required=True, help="finetune_llm.py's --output_dir")
    p.add_argument("--template", default=None, choices=TEMPLATES,
                   help="accepted and ignored (the template is applied at inference)")
    p.add_argument("--finetuning_type", default="lora", choices=["lora"])
    p.add_argument("--export_dir", required=True)
    p.add_argument("--export_size", type=positive_int, default=1, help="max shard size in GB")
    p.add_argument("--export_dtype", default=None,
                   help="float32 | float16 | bfloat16 (default: as transformers 5 loads the base model, i.e. its "
                        "checkpoint dtype: float16 for Llama-2-7b-hf)")
    p.add_argument("--export_legacy_format", default=False, type=_parse_bool,
                   help="False (default, released): safetensors; True (.bin) is not supported")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="replace --export_dir even if it holds something export did not write")
    args = p.parse_args(argv)
    if args.export_legacy_format:
        p.error("--export_legacy_format True (.bin weights) is not supported; safetensors only")
    if args.template is not None:
        print("note: --template accepted for LLaMA-Factory compatibility and ignored (applied at inference)",
              file=sys.stderr)
    return args


def run(argv=None) -> int:
    args = parse_args(argv)
    out = export_merged(args.model_name_or_path, args.adapter_name_or_path, args.export_dir,
                        args.export_size, dtype=resolve_dtype(args.export_dtype),
                        overwrite=args.overwrite_output_dir)
    print(f"merged model saved in {out}")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input is one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("export_model.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
