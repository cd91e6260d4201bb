"""Step 6: build data/{train,valid,test}.json for the generator.

Reads the MultiESC dialogue files and, when present, the LLM outputs of step 5
(LLM_inference/strategy_with_motivation{,_valid,_test}.json), and writes one record per sample with the
released keys (context, response, strategy, response_memory, strategy_memory, motivation) plus id and
gold_strategy. Run from the repository root:

    python data/add_memory_motivation.py                       # data/*.txt + LLM_inference/ -> data/*.json
    python data/add_memory_motivation.py --strategy_source gold   # oracle strategies

Exit codes: 0 done, 1 bad input (one ``add_memory_motivation.py: error: ...`` line naming the file), 2 bad
flag, 130 interrupted.
"""
import argparse
import os
import sys

from magic.generator.records import build_datasets, strategy_agreement, write_datasets
from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.io_utils import plain_warnings
from magic.common.validate import parse_split_list


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_file", default="data/train.txt", help="MultiESC train dialogues (JSON lines)")
    p.add_argument("--valid_file", default="data/valid.txt")
    p.add_argument("--test_file", default="data/test.txt")
    p.add_argument("--llm_dir", default="LLM_inference/",
                   help="folder holding strategy_with_motivation{,_valid,_test}.json from infer_strategy.py")
    p.add_argument("--output_dir", default="data/")
    p.add_argument("--strategy_source", choices=["inferred", "gold"], default="inferred",
                   help="inferred: strategies of the LLM files (released); gold: the annotated ones (oracle)")
    p.add_argument("--test_mode", choices=["last", "all"], default="last",
                   help="last: one sample per test dialogue (released); all: every supporter turn")
    p.add_argument("--allow_empty", default="", metavar="SPLITS",
                   help="comma-separated splits that may have no samples; otherwise an empty split is an error")
    p.add_argument("--allow_shared_dialogues", action="store_true",
                   help="let splits share dialogues (otherwise a dialogue in two splits is an error: a mixed-up file)")
    return p.parse_args(argv)


def run(argv=None) -> int:
    args = parse_args(argv)
    plain_warnings()
    files = {"train": args.train_file, "valid": args.valid_file, "test": args.test_file}
    records = build_datasets(files, args.llm_dir, args.strategy_source, args.test_mode,
                             allow_empty=frozenset(parse_split_list(args.allow_empty)),
                             allow_shared=args.allow_shared_dialogues)
    paths = write_datasets(records, args.output_dir)
    for split, path in paths.items():
        recs = records[split]
        print(f"{split:5s}: {len(recs):6d} samples -> {path} "
              f"(strategy = gold in {100 * strategy_agreement(recs):.1f}%)")
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input is one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("add_memory_motivation.py", lambda: run(argv), code=EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
