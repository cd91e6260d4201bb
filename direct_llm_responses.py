"""The direct-LLM supporter: an LLM (any engine) writes the next supporter turn of every test sample, zero-shot
(--mode zero_shot) or told the inferred strategy (--mode strategy), once per sample, in step 8's output format
(eval_result/<run>/diversity_0.0_length_1.0.txt + .scores.json), so that the metrics score it and
judge_responses.py compares it. Thin wrapper: the logic is in src/magic/judge/direct.py.

    python direct_llm_responses.py --backend local --model_name_or_path models/smollm2-135m-instruct --mode strategy
    python direct_llm_responses.py --base_url http://localhost:8000/v1 --model NAME --mode zero_shot

Answers are cached in <eval_dir>/<run>/direct_cache.jsonl (rerun after a crash to ask only for the rest).
Exit codes: 0 done; 1 incomplete (nothing written); 2 bad flags or input, a key that cannot be sent, a
non-retryable API error; 130 interrupted.
"""
import sys

from magic.common.errors import run_main
from magic.common.settings import from_namespace
from magic.judge.config import DirectConfig, build_parser


def run(argv=None) -> int:
    p = build_parser(DirectConfig, "%(prog)s [--mode zero_shot|strategy] [options]", __doc__.split("\n\n")[0])
    cfg = from_namespace(DirectConfig, p.parse_args(argv))
    from magic.common.io_utils import plain_warnings
    from magic.judge.direct import direct_responses

    plain_warnings()
    return direct_responses(cfg)


def main(argv=None) -> int:
    return run_main("direct_llm_responses.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
