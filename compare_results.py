"""Is system B better than system A? Paired bootstrap and approximate randomisation on the per-sample scores of
two test_evaluation.py results (their .scores.json) or two of the study's result files (results/<profile>/s2/...,
named by their cell; s2/frequent.json#test picks one of a file's sets), sample by sample. Thin wrapper: the
logic and the resampling choice of each metric are in src/magic/metric/significance.py.

    python compare_results.py A.scores.json B.scores.json [--resamples 1000] [--permutations 1000] [--seed 0]
                              [--output compare_results.json] [--metrics Bleu_2 ROUGE_L ...]

Samples are matched by id; the two files must hold the same samples and share a metric; every per-sample value
is range-checked (n-gram counts, ROUGE-L and METEOR in [0, 1] ...); a file over 64 MiB is refused. Prints a table
(metric | A | B | B-A | 95 % CI | p bootstrap | p AR; delta = B - A, positive = B better except PPL) and writes it
as JSON (atomically) to --output. Exit codes: 0 done; 2 bad flags or input (one ``compare_results.py: error:
<file>: ...`` line: a missing, malformed, oversized or out-of-range file, a file without per-sample scores,
different sample ids, no shared metric, an unknown metric; nothing is written); 130 interrupted.
"""
import os
import sys
from argparse import ArgumentParser, ArgumentTypeError
from dataclasses import dataclass

from magic.common.errors import UserError, run_main
from magic.common.io_utils import atomic_write_json
from magic.common.settings import add_options, from_namespace, option
from magic.common.validate import non_negative_int, probability
from magic.metric.significance import (DEFAULT_CONFIDENCE, DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES, compare_files,
                                       format_comparison)

MIN_DRAWS = 1000


def at_least_min_draws(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < MIN_DRAWS:
        raise ArgumentTypeError(f"invalid value {text!r}: expected an integer >= {MIN_DRAWS}")
    return value


@dataclass
class CompareConfig:
    a: str  # the two files: positional arguments (build_parser)
    b: str
    resamples: int = option(DEFAULT_RESAMPLES, f"paired bootstrap resamples (>= {MIN_DRAWS})", type=at_least_min_draws)
    permutations: int = option(DEFAULT_PERMUTATIONS, f"approximate randomisation draws (>= {MIN_DRAWS})",
                               type=at_least_min_draws)
    seed: int = option(0, "seed of the resamples and swaps", type=non_negative_int)
    confidence: float = option(DEFAULT_CONFIDENCE, "level of the bootstrap interval", type=probability)
    output: str = option("compare_results.json", "the result as JSON")
    metrics: list[str] | None = option(None, "only these metrics (names as in the table: Bleu_1..Bleu_4, METEOR, "
                                       "ROUGE_L, CIDEr, PPL, Distinct-1, Distinct-2, or a per-sample extra); "
                                       "default: all in both files", nargs="+")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", metavar="A.scores.json",
                   help="system A (the baseline): a .scores.json of test_evaluation.py or a study result file")
    p.add_argument("b", metavar="B.scores.json", help="system B: a .scores.json of the same test samples")
    add_options(p, CompareConfig)
    return p


def main(argv=None) -> int:
    args = from_namespace(CompareConfig, build_parser().parse_args(argv))
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence: expected a number strictly between 0 and 1, got {args.confidence}")
    out = os.path.realpath(args.output)  # resolved: the writers follow a symlink to its target
    if os.path.isdir(out):
        raise UserError(f"{args.output}: --output is a folder; expected a JSON file path")
    if out in (os.path.realpath(args.a), os.path.realpath(args.b)):
        raise UserError(f"{args.output}: --output is one of the inputs; choose another path")
    result = compare_files(args.a, args.b, resamples=args.resamples, permutations=args.permutations,
                           seed=args.seed, metrics=args.metrics, confidence=args.confidence)
    print(format_comparison(result))
    atomic_write_json(args.output, result)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("compare_results.py", main))
