"""The settings of step 9 (judge_responses.py) and of the direct-LLM supporter (direct_llm_responses.py), each
default written once here (magic.common.settings generates the flags). Nothing heavy is imported: ``--help``
answers at once.

``EngineOptions``: the LLM both scripts ask, through magic.llm.engines.factory.make_engine (the flag names of
step 1: --backend, --model, --base_url, --model_name_or_path ...); ``JudgeConfig`` and ``DirectConfig`` add
their own flags.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from magic.common.settings import add_options, option, step_parser
from magic.common.validate import non_negative_float, non_negative_int, positive_int, probability
from magic.llm.config import EngineOptions as LLMOptions

BACKENDS = ("openai", "local", "vllm")  # magic.llm.engines.factory.BACKENDS, the step-1 order
DIRECT_MODES = ("zero_shot", "strategy")


@dataclass(kw_only=True)
class EngineOptions(LLMOptions):
    """The judging (or answering) LLM: step 1's engine flags, vLLM allowed, a stronger default model."""
    backend: str = option("openai", "openai: an OpenAI-compatible server (key: OPENAI_API_KEY); local: a "
                                    "transformers folder; vllm: vllm.LLM (CUDA)", choices=BACKENDS)
    model: str = option("gpt-4o-mini", "served model name (openai)")
    cache_file: str | None = option(None, "answer cache (default: in the output folder)")
    dry_run: bool = option(False, "print requests, input tokens and cost; send nothing")
    price_per_1k_input: float | None = option(None, "USD per 1k input tokens (dry run)", type=non_negative_float,
                                              metavar="X")
    price_per_1k_output: float | None = option(None, "USD per 1k output tokens (dry run)",
                                               type=non_negative_float, metavar="X")
    show_prompt: bool = option(False, "print the first prompt and exit")


@dataclass(kw_only=True)
class JudgeConfig(EngineOptions):
    """Step 9: judge two step-8 outputs pairwise on ESConv's criteria, both orders, with controls."""
    a: str = option(help="system A: a step-8 output, eval_result/<run>/diversity_*.txt (its .scores.json beside)")
    b: str = option(help="system B: the same, on the same test samples")
    test_data: str = option("data/test.json", "step-6 test records (the dialogue context)")
    train_data: str = option("data/train.json", "step-6 train records (the controls' most frequent response)")
    output_dir: str = option("judge_result", "where judge.json and the answer cache go")
    limit: int | None = option(None, "N evenly spaced samples", type=positive_int, metavar="N")
    controls: bool = option(True, "skip the control pairs (reference vs frequent response, vs another "
                                  "dialogue's reference)", flags=("--no_controls",))
    max_new_tokens: int = option(48, "answer tokens per judgement", type=positive_int, metavar="N")
    parse_retries: int = option(2, "re-asks of an unreadable answer (with a format reminder)",
                                type=non_negative_int, metavar="N")
    seed: int = option(0, "controls' random dialogue and bootstrap", type=non_negative_int, metavar="N")
    resamples: int = option(1000, "bootstrap resamples", type=positive_int, metavar="N")
    confidence: float = option(0.95, "interval level", type=probability, metavar="X")


@dataclass(kw_only=True)
class DirectConfig(EngineOptions):
    """The direct-LLM supporter: an LLM writes the next supporter turn; step 8's output format."""
    test_data: str = option("data/test.json", "step-6 test records")
    eval_dir: str = option("eval_result", "output root, as step 8's --eval_dir")
    mode: str = option("zero_shot", "zero_shot: the dialogue only; strategy: also the record's (inferred) strategy",
                       choices=DIRECT_MODES)
    limit: int | None = option(None, "only the first N samples (as step 8's --limit)", type=positive_int,
                               metavar="N")
    run_name: str | None = option(None, "folder under --eval_dir (default: direct_<mode>)")
    max_new_tokens: int = option(64, "tokens of the reply", type=positive_int, metavar="N")
    no_meteor: bool = option(False, "skip METEOR (needs Java)")
    no_metrics: bool = option(False, "write the responses only, no scores")


def build_parser(cls: type, usage: str, description: str):
    """The script's parser: its own flags first, then the LLM's (one group each)."""
    p = step_parser(description, usage=usage)
    engine = [f.name for f in fields(EngineOptions)]
    add_options(p.add_argument_group("this step"), cls, skip=engine)
    add_options(p.add_argument_group("the LLM (magic.llm.engines)"), EngineOptions)
    return p
