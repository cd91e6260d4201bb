"""Step 7: train the MAGIC generator: python main.py [--bart_base_dir facebook/bart-base] [flags]; see --help and
src/magic/generator/train.py (the training logic) for the outputs under out_model/.

Exit codes: 0 trained; 2 bad flags or input (one ``main.py: error: ...`` line naming the file, no run folder
left behind); 130 interrupted (resume with --resume RUN_DIR). See docs/RELIABILITY.md."""
import os
import sys

# Set before torch loads (benchmarks/bench_train.py applies the same to its runs of our training).
# THP_MEM_ALLOC_ENABLE: torch puts CPU tensors of 2 MB and more on transparent huge pages (2 MB aligned,
# madvise), so glibc no longer keeps the freed middle of its heap between steps: a lower peak RSS at the same
# speed (benchmarks/README.md, Training). No effect where THP is off.
TRAINING_ENV = {"TOKENIZERS_PARALLELISM": "false", "THP_MEM_ALLOC_ENABLE": "1"}
for _name, _value in TRAINING_ENV.items():
    os.environ.setdefault(_name, _value)


def main(argv=None) -> None:
    from magic.common.io_utils import plain_warnings
    from magic.generator.config import parse_args

    train_config, model_config = parse_args(argv)  # before torch loads: --help answers at once
    from magic.generator.train import run_training

    plain_warnings()
    result = run_training(train_config, model_config)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one process reports
        print(f"run directory: {result['run_dir']}")
        print(f"best checkpoint: {result['best_checkpoint']} (validation PPL {result['best_val_ppl']:.3f})")


def cli(argv=None) -> int:
    """main() for the command line: user errors are one line and exit code 2 (src/magic/common/errors.py)."""
    from magic.common.errors import run_main

    return run_main("main.py", lambda: main(argv), extra=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(cli())
