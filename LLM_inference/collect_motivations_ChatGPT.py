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
import argparse
import os
import sys

from magic.common.artifacts import MOTIVATIONS_FILE
from magic.common.errors import run_main
from magic.llm.motivations import RELEASED_MODEL, collect_motivations
from magic.common.validate import non_negative_float, non_negative_int, positive_float, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train_file", "--train_file_path", dest="train_file", default="../data/train.txt",
                   help="MultiESC train.txt (JSON lines); --train_file_path is the released name")
    p.add_argument("--output_file", default=MOTIVATIONS_FILE, help="motivations (+ <name>.ids.json sidecar)")
    p.add_argument("--cache_file", default=None, help="answer cache (default: <output_file>.cache.jsonl)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N samples")
    p.add_argument("--dry_run", action="store_true", help="count prompts, tokens and cost; send nothing")
    p.add_argument("--price_per_1k_input", type=non_negative_float, default=None, help="USD per 1k input tokens (dry run)")
    p.add_argument("--price_per_1k_output", type=non_negative_float, default=None, help="USD per 1k output tokens (dry run)")
    p.add_argument("--allow_partial", action="store_true",
                   help="write the answered samples even if some failed (the .ids.json sidecar says which)")
    p.add_argument("--backend", choices=("openai", "local"), default="openai")
    g = p.add_argument_group("OpenAI-compatible server")
    g.add_argument("--model", default=RELEASED_MODEL)
    g.add_argument("--base_url", default=None,
                   help="e.g. http://localhost:8000/v1 for vLLM / llama.cpp / Ollama (default: OpenAI)")
    g.add_argument("--openai_api_key", default=None,
                   help="DEPRECATED, leaks into shell history and process lists: export OPENAI_API_KEY")
    g.add_argument("--temperature", type=non_negative_float, default=None, help="default: not sent (the API's default)")
    g.add_argument("--max_tokens", type=positive_int, default=None,
                   help="default: not sent (API) / 128 new tokens (local)")
    g.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight")
    g.add_argument("--rpm", type=positive_float, default=None, help="client-side cap on requests per minute")
    g.add_argument("--max_retries", type=non_negative_int, default=6, help="retries per prompt on 429/5xx/timeouts")
    g.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request")
    g = p.add_argument_group("local backend (--backend local)")
    g.add_argument("--model_name_or_path", default=None, help="a transformers causal-LM folder")
    g.add_argument("--template", choices=("chat", "default", "none"), default="chat",
                   help="chat = the tokenizer's chat template (default template when it has none)")
    g.add_argument("--batch_size", type=positive_int, default=8)
    g.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    g.add_argument("--dtype", default=None, help="float32 (default), bf16, fp16 or auto")
    return p


def main(argv=None) -> int:
    """Bad input or configuration is one line and exit code 2 (src/magic/common/errors.py); a run that
    started returns collect_motivations' own code."""
    return run_main("collect_motivations_ChatGPT.py", lambda: collect_motivations(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
