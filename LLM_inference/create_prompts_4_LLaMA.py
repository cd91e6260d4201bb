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
import argparse
import os
import sys

from magic.common.artifacts import MOTIVATIONS_FILE, SPLITS, prompt_file
from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.io_utils import plain_warnings
from magic.llm.prompt_files import build_prompt_files, write_prompt_files
from magic.common.validate import parse_split_list


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_file", default="../data/train.txt")
    p.add_argument("--valid_file", default="../data/valid.txt")
    p.add_argument("--test_file", default="../data/test.txt")
    p.add_argument("--motivations_file", default=MOTIVATIONS_FILE,
                   help="ChatGPT motivations, one per train sample (collect_motivations_ChatGPT.py)")
    p.add_argument("--output_dir", default=".")
    p.add_argument("--allow_empty", default="", metavar="SPLITS",
                   help="comma-separated splits that may have no samples (e.g. test); otherwise an empty split "
                        "is an error")
    p.add_argument("--allow_shared_dialogues", action="store_true",
                   help="let splits share dialogues (otherwise a dialogue in two splits is an error: a mixed-up file)")
    return p.parse_args(argv)


def run(argv=None) -> int:
    args = parse_args(argv)
    plain_warnings()
    files = build_prompt_files(args.train_file, args.valid_file, args.test_file, args.motivations_file,
                               allow_empty=frozenset(parse_split_list(args.allow_empty)),
                               allow_shared=args.allow_shared_dialogues)
    for path in write_prompt_files(files, args.output_dir):
        print(f"wrote {path}")
    n = {split: len(files[prompt_file(split)]) for split in SPLITS}
    print(f"{n['train']} train pairs, {n['valid']} valid prompts, {n['test']} test prompts")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input is one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("create_prompts_4_LLaMA.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
