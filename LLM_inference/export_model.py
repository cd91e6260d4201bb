r"""Step 3b: merge the LoRA adapter into the base model and save it as a plain model folder (replaces
LLaMA-Factory's export_model.py; same flags). Paper settings:

    python LLM_inference/export_model.py --model_name_or_path meta-llama/Llama-2-7b-hf \
        --adapter_name_or_path LLM_inference/lora_llama2 --template default --finetuning_type lora \
        --export_dir LLM_inference/fine_tuned_llama2 --export_size 2

Writes safetensors shards of at most --export_size GB plus the tokenizer; the merged model's logits
equal the adapter model's (tests/test_finetune_export.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.local_llm import TEMPLATES, _resolve_dtype  # noqa: E402
from src.sft import export_merged  # noqa: E402
from src.validate import positive_int  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="the base model fine-tuning started from")
    p.add_argument("--adapter_name_or_path", required=True, help="finetune_llm.py's --output_dir")
    p.add_argument("--template", default="default", choices=TEMPLATES,
                   help="accepted for LLaMA-Factory compatibility; the template is applied at inference")
    p.add_argument("--finetuning_type", default="lora", choices=["lora"])
    p.add_argument("--export_dir", required=True)
    p.add_argument("--export_size", type=positive_int, default=1, help="max shard size in GB")
    p.add_argument("--export_dtype", default=None,
                   help="float32 | float16 | bfloat16 (default: as the base model loads, float32)")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="replace --export_dir even if it holds something export did not write")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        out = export_merged(args.model_name_or_path, args.adapter_name_or_path, args.export_dir,
                            args.export_size, dtype=_resolve_dtype(args.export_dtype),
                            overwrite=args.overwrite_output_dir)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"merged model saved in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
