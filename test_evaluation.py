"""Decode every test sample with a trained generator checkpoint and score it (BLEU-1..4, METEOR, ROUGE-L,
CIDEr, Distinct-1/2). Thin wrapper: the logic is in src/evaluation.py.

    python test_evaluation.py --model_path out_model/bs_16_epochs_20_<stamp>/epoch_<e>_val_ppl_<p>

Writes eval_result/response_lables.txt (references), eval_result/<run>/diversity_<d>_length_<l>.txt (one
cleaned response per line) and <that file>.scores.json, and prints the scores x100.
"""
import os
import sys
import warnings
from argparse import ArgumentParser

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    # released flags and defaults
    p.add_argument("--test_data", type=str, default="data/test.json", help="Path to test data")
    p.add_argument("--model_path", type=str, required=True,
                   help="checkpoint directory written by main.py (dialogue_model.pth, memory_bank.pth, tokenizer)")
    p.add_argument("--bart_base_dir", type=str, default="src/bart_base/",
                   help="BART the model was trained from; only needed for checkpoints without config.json "
                        "(written by the released code)")
    p.add_argument("--batch_size", type=int, default=1, help="samples decoded together")
    p.add_argument("--num_beams", type=int, default=5, help="beams per sample")
    p.add_argument("--max_length", type=int, default=512, help="max context tokens")
    p.add_argument("--max_length_res", type=int, default=64, help="max generated tokens (EOS included)")
    p.add_argument("--strategy_memory_max", type=int, default=128,
                   help="entries per memory slot (the checkpoint's value is used; a mismatch warns)")
    p.add_argument("--max_length_res_memory", type=int, default=64,
                   help="memory response length (the checkpoint's value is used; a mismatch warns)")
    p.add_argument("--diversity_penalty", type=float, default=1.0,
                   help="Hamming diversity penalty between beam groups (acts only with --num_beam_groups > 1)")
    p.add_argument("--length_penalty", type=float, default=1.0,
                   help="hypothesis score = sum log-prob / length ** length_penalty (HF)")
    # added
    p.add_argument("--num_beam_groups", type=int, default=5,
                   help="beam groups for diverse beam search; must divide --num_beams. Default 5 (5 groups of one "
                        "beam) so the released --diversity_penalty 1.0 acts; 1 = standard beam search (= HF generate)")
    p.add_argument("--early_stopping", type=str, default="false", choices=["true", "false", "never"],
                   help="HF early_stopping semantics (default false, HF's default)")
    p.add_argument("--strategy_source", choices=["inferred", "gold"], default="inferred",
                   help="condition on the LLM-inferred strategy (test.json 'strategy', the paper) or the gold one "
                        "(oracle)")
    p.add_argument("--limit", type=int, default=None, help="decode only the first N samples (smoke tests)")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=42, help="torch seed (decoding itself is deterministic)")
    p.add_argument("--eval_dir", type=str, default="eval_result", help="output root (released: eval_result)")
    p.add_argument("--no_meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--no_metrics", action="store_true",
                   help="decode and write the responses only; no scores (needs neither nltk nor pycocoevalcap)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.early_stopping = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    if args.num_beam_groups == 1 and args.diversity_penalty:
        warnings.warn("--diversity_penalty has no effect with --num_beam_groups 1 (standard beam search)")
    from src.evaluation import evaluate, format_scores
    try:
        record = evaluate(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"test_evaluation.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{record['n_samples']} samples, strategy source: {record['strategy_source']}, "
          f"metric tokeniser: {record['metric_tokenizer']}")
    print(format_scores(record["scores"]) if record["scores"] else "no scores (--no_metrics)")
    print(f"responses: {record['hypotheses_file']}\nscores: {record['hypotheses_file']}.scores.json")
    print("Test Done!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
