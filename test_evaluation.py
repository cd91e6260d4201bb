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
from argparse import ArgumentDefaultsHelpFormatter, ArgumentParser

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from metric.protocol import format_scores
from magic.common.errors import run_main
from magic.common.validate import positive_int
from magic.generator.evaluation import EvalConfig, add_decoding_flags, evaluate


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=ArgumentDefaultsHelpFormatter)
    # released flags and defaults
    p.add_argument("--test_data", type=str, default="data/test.json", help="Path to test data")
    p.add_argument("--model_path", type=str, required=True,
                   help="checkpoint directory written by main.py (dialogue_model.pth, memory_bank.pth, tokenizer)")
    p.add_argument("--batch_size", type=positive_int, default=1, help="samples decoded together")
    p.add_argument("--strategy_memory_max", type=positive_int, default=128,
                   help="entries per memory slot (the checkpoint's value is used; a mismatch warns)")
    p.add_argument("--max_length_res_memory", type=positive_int, default=64,
                   help="memory response length (the checkpoint's value is used; a mismatch warns)")
    add_decoding_flags(p)  # shared with chat.py
    p.add_argument("--strategy_source", choices=["inferred", "gold"], default="inferred",
                   help="condition on the LLM-inferred strategy (test.json 'strategy', the paper) or the gold one "
                        "(oracle)")
    p.add_argument("--limit", type=positive_int, default=None, help="decode only the first N samples (smoke tests)")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=42, help="torch seed (decoding itself is deterministic)")
    p.add_argument("--eval_dir", type=str, default="eval_result", help="output root (released: eval_result)")
    p.add_argument("--no_meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--no_metrics", action="store_true",
                   help="decode and write the responses only; no scores (needs neither nltk nor pycocoevalcap)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="redo an evaluation whose finished result is already in --eval_dir (refused otherwise)")
    return p


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    record = evaluate(EvalConfig(**vars(args)))
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
