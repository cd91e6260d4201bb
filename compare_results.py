"""Is system B better than system A? Paired bootstrap and approximate randomisation on the per-sample scores of
two test_evaluation.py results (their .scores.json), sample by sample. Thin wrapper: the logic and the
resampling choice of each metric are in src/magic/metric/significance.py.

    python compare_results.py A.scores.json B.scores.json [--resamples 1000] [--permutations 1000] [--seed 0]
                              [--output compare_results.json] [--metrics Bleu_2 ROUGE_L ...]

Samples are matched by id; the two files must hold the same samples. Prints a table (metric | A | B | B-A |
95 % CI | p bootstrap | p AR; delta = B - A, positive = B better except PPL) and writes it as JSON (atomically)
to --output. Exit codes: 0 done; 2 bad flags or input (one ``compare_results.py: error: <file>: ...`` line:
a missing or malformed file, a file without per-sample scores, different sample ids, an unknown metric;
nothing is written); 130 interrupted.
"""
import os
import sys
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser, ArgumentTypeError

from magic.common.errors import UserError, run_main
from magic.common.io_utils import atomic_write_json
from magic.common.validate import non_negative_int, probability
from magic.metric.significance import (DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES, compare_files, format_comparison)

MIN_DRAWS = 1000


def at_least_min_draws(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < MIN_DRAWS:
        raise ArgumentTypeError(f"invalid value {text!r}: expected an integer >= {MIN_DRAWS}")
    return value


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=ArgumentDefaultsHelpFormatter)
    p.add_argument("a", metavar="A.scores.json", help="system A (the baseline): a .scores.json of test_evaluation.py")
    p.add_argument("b", metavar="B.scores.json", help="system B: a .scores.json of the same test samples")
    p.add_argument("--resamples", type=at_least_min_draws, default=DEFAULT_RESAMPLES,
                   help=f"paired bootstrap resamples (>= {MIN_DRAWS})")
    p.add_argument("--permutations", type=at_least_min_draws, default=DEFAULT_PERMUTATIONS,
                   help=f"approximate randomisation draws (>= {MIN_DRAWS})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the resamples and swaps")
    p.add_argument("--confidence", type=probability, default=0.95, help="level of the bootstrap interval")
    p.add_argument("--output", type=str, default="compare_results.json", help="the result as JSON")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="only these metrics (names as in the table: Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr, PPL, "
                        "Distinct-1, Distinct-2, or a per-sample extra); default: all in both files")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence: expected a number strictly between 0 and 1, got {args.confidence}")
    out = os.path.abspath(args.output)
    if os.path.isdir(out):
        raise UserError(f"{args.output}: --output is a folder; expected a JSON file path")
    if out in (os.path.abspath(args.a), os.path.abspath(args.b)):
        raise UserError(f"{args.output}: --output is one of the inputs; choose another path")
    result = compare_files(args.a, args.b, resamples=args.resamples, permutations=args.permutations,
                           seed=args.seed, metrics=args.metrics, confidence=args.confidence)
    print(format_comparison(result))
    atomic_write_json(args.output, result)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("compare_results.py", main))
