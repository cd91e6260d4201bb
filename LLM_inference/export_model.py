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
import sys

from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.settings import from_namespace, step_parser
from magic.llm.config import ExportConfig


def parse_args(argv=None) -> ExportConfig:
    p = step_parser(__doc__.split(". ")[0] + ".", ExportConfig, usage="%(prog)s --model_name_or_path DIR "
                    "--adapter_name_or_path DIR --export_dir DIR [options]")
    cfg = from_namespace(ExportConfig, p.parse_args(argv))
    if cfg.export_legacy_format:
        p.error("--export_legacy_format True (.bin weights) is not supported; safetensors only")
    if cfg.template is not None:
        print("note: --template accepted for LLaMA-Factory compatibility and ignored (applied at inference)",
              file=sys.stderr)
    return cfg


def run(argv=None) -> int:
    cfg = parse_args(argv)
    from magic.llm.sft import export_merged  # torch: after the flags are read

    print(f"merged model saved in {export_merged(cfg)}")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input is one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("export_model.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
