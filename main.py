"""Step 7: train the MAGIC generator: python main.py [--bart_base_dir facebook/bart-base] [flags]; see --help and
src/train.py (the training logic) for the outputs under out_model/."""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> None:
    from src.io_utils import plain_warnings
    from src.train import build_parser, run_training

    plain_warnings()
    args = build_parser().parse_args(argv)
    result = run_training(args)
    print(f"run directory: {result['run_dir']}")
    print(f"best checkpoint: {result['best_checkpoint']} (validation PPL {result['best_val_ppl']:.3f})")


if __name__ == "__main__":
    main()
