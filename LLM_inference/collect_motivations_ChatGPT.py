"""Step 1: collect the motivation of every training sample's strategy from an LLM.

Writes ``motivations_4_LLaMA.json`` (JSON list of strings, one per training sample, in sample order, as
released) and ``motivations_4_LLaMA.ids.json`` (their sample ids). Resumable: answers are cached in
``<output_file>.cache.jsonl`` as they arrive; rerun the same command after a crash or failure.

    export OPENAI_API_KEY=...          # never on the command line
    python collect_motivations_ChatGPT.py --train_file ../data/train.txt --dry_run \\
        --price_per_1k_input 0.0005 --price_per_1k_output 0.0015
    python collect_motivations_ChatGPT.py --train_file ../data/train.txt
    # any OpenAI-compatible server (vLLM, llama.cpp, Ollama), no key needed:
    python collect_motivations_ChatGPT.py --base_url http://localhost:8000/v1 --model my-model
    # a local transformers chat model:
    python collect_motivations_ChatGPT.py --backend local --model_name_or_path ../models/smollm2-135m-instruct

The logic lives in src/magic/llm/motivations.py and src/magic/llm/engines/ (openai.py, cache.py). Exit codes:
0 complete (or partial with --allow_partial), 1 incomplete, 2 bad flag, bad input (one
``collect_motivations_ChatGPT.py: error: ...`` line), an OPENAI_API_KEY that cannot be sent (a line break or
another character no HTTP header holds: refused before the first request, the key not shown) or a
non-retryable API error, 130 interrupted.
"""
import sys

from magic.common.errors import run_main
from magic.common.io_utils import plain_warnings
from magic.common.settings import parse
from magic.llm.config import MotivationConfig


def parse_args(argv=None) -> MotivationConfig:
    return parse(MotivationConfig, argv, __doc__.splitlines()[0])


def run(argv=None) -> int:
    cfg = parse_args(argv)
    plain_warnings()
    from magic.llm.motivations import collect_motivations

    return collect_motivations(cfg)


def main(argv=None) -> int:
    """Bad input or configuration is one line and exit code 2 (src/magic/common/errors.py); a run that
    started returns collect_motivations' own code."""
    return run_main("collect_motivations_ChatGPT.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
