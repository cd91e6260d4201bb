"""Step 2: instruction/output pairs for fine-tuning the strategy LLM, and prompts for valid/test.

Run from LLM_inference/ as released (defaults ../data/*.txt and motivations_4_LLaMA.json):

    python create_prompts_4_LLaMA.py
    python create_prompts_4_LLaMA.py --train_file ../data/demo/train.txt ... --output_dir out/

Writes prompts_4_LLaMA.json, prompts_4_LLaMA_valid.json, prompts_4_LLaMA_test.json (released formats,
json.dumps(..., ensure_ascii=False, indent=2)), an ids sidecar <name>.ids.json beside each, and
dataset_info.json for LLaMA-Factory users. Nothing is written unless every input checks out.
Exit codes: 0 done, 1 bad input (one ``create_prompts_4_LLaMA.py: error: ...`` line naming the file), 2 bad
flag, 130 interrupted.
"""
import sys

from magic.common.artifacts import SPLITS, prompt_file
from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.io_utils import plain_warnings
from magic.common.settings import parse
from magic.llm.config import PromptConfig
from magic.llm.prompt_files import build_prompt_files, write_prompt_files


def parse_args(argv=None) -> PromptConfig:
    return parse(PromptConfig, argv, __doc__.splitlines()[0])


def run(argv=None) -> int:
    cfg = parse_args(argv)
    plain_warnings()
    files = build_prompt_files(cfg)
    for path in write_prompt_files(files, cfg.output_dir):
        print(f"wrote {path}")
    n = {split: len(files[prompt_file(split)]) for split in SPLITS}
    print(f"{n['train']} train pairs, {n['valid']} valid prompts, {n['test']} test prompts")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input is one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("create_prompts_4_LLaMA.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
