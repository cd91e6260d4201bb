"""Step 9: judge two step-8 outputs pairwise on ESConv's human-evaluation criteria (Fluency, Identification,
Comforting, Suggestion, Overall) with an LLM, each sample in both orders, with controls that say whether the
judge can tell good from bad. Thin wrapper: the logic is in src/magic/judge/.

    export OPENAI_API_KEY=...        # never on the command line
    python judge_responses.py --a eval_result/<run A>/diversity_1.0_length_1.0.txt \\
        --b eval_result/<run B>/diversity_1.0_length_1.0.txt --dry_run --price_per_1k_input 0.00015
    python judge_responses.py --a ... --b ... --output_dir judge_result/A_vs_B
    python judge_responses.py --a ... --b ... --backend local --model_name_or_path models/smollm2-135m-instruct

Writes <output_dir>/judge.json (win / tie / lose per criterion with intervals and a sign test, position
consistency, the controls' accuracy, per-sample verdicts by sample id; no text) and keeps every answer in
<output_dir>/judge_cache.jsonl (rerun after a crash or kill to ask only for the rest). Exit codes: 0 done;
1 incomplete (failed requests; nothing written); 2 bad flags or input (one line naming the file), a key that
cannot be sent, a non-retryable API error; 130 interrupted.
"""
import sys

from magic.common.errors import run_main
from magic.common.settings import from_namespace
from magic.judge.config import JudgeConfig, build_parser


def parse_args(argv=None) -> JudgeConfig:
    p = build_parser(JudgeConfig, "%(prog)s --a OUTPUT_A --b OUTPUT_B [options]", __doc__.split("\n\n")[0])
    return from_namespace(JudgeConfig, p.parse_args(argv))


def run(argv=None) -> int:
    cfg = parse_args(argv)
    from magic.common.io_utils import plain_warnings
    from magic.judge.run import judge

    plain_warnings()
    return judge(cfg)


def main(argv=None) -> int:
    return run_main("judge_responses.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
