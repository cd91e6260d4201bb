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
import sys

from magic.common.errors import EXIT_BAD_INPUT, run_main
from magic.common.settings import parse
from magic.generator.records import DatasetConfig


def parse_args(argv=None) -> DatasetConfig:
    return parse(DatasetConfig, argv, __doc__.split("\n\n")[0])


def run(argv=None) -> int:
    cfg = parse_args(argv)
    from magic.common.io_utils import plain_warnings
    from magic.generator.records import build_datasets, strategy_agreement, write_datasets

    plain_warnings()
    records = build_datasets(cfg)
    paths = write_datasets(records, cfg.output_dir)
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
