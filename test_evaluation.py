"""Step 8: decode every test sample with a trained generator checkpoint and score it (BLEU-1..4, METEOR, ROUGE-L,
CIDEr, Distinct-1/2). Thin wrapper: the logic is in src/magic/generator/evaluation.py.

    python test_evaluation.py --model_path out_model/bs_16_epochs_20_<stamp>/epoch_<e>_val_ppl_<p>

Writes eval_result/response_lables.txt (references), eval_result/<run>/diversity_<d>_length_<l>.txt (one
cleaned response per line) and <that file>.scores.json, and prints the scores x100. When that name already
holds another checkpoint's (or other settings') result, the output goes to
eval_result/<run>/<checkpoint>/diversity_<d>_length_<l>.txt instead; a finished result is never replaced
without --overwrite_output_dir. Exit codes: 0 done, 2 bad flags or input (one line naming the file).
"""
import os
import sys
from argparse import ArgumentParser

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from magic.common.errors import run_main
from magic.common.settings import from_namespace, step_parser
from magic.generator.eval_config import EvalConfig


def build_parser() -> ArgumentParser:
    return step_parser(__doc__.split("\n\n")[0], EvalConfig, usage="%(prog)s --model_path CKPT [options]")


def run(argv=None) -> int:
    cfg = from_namespace(EvalConfig, build_parser().parse_args(argv))
    from metric.protocol import format_scores
    from magic.generator.evaluation import evaluate  # torch: not for --help

    record = evaluate(cfg)
    print(f"{record['n_samples']} samples, strategy source: {record['strategy_source']}, "
          f"metric tokeniser: {record['metric_tokenizer']}")
    print(format_scores(record["scores"]) if record["scores"] else "no scores (--no_metrics)")
    print(f"responses: {record['hypotheses_file']}\nscores: {record['hypotheses_file']}.scores.json")
    print("Test Done!")
    return 0


def main(argv=None) -> int:
    """run() for the command line: user errors (and RuntimeError, e.g. --device cuda without CUDA) are one
    ``test_evaluation.py: error: ...`` line and exit code 2 (src/magic/common/errors.py)."""
    return run_main("test_evaluation.py", lambda: run(argv), extra=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
