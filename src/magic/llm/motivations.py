"""Step 1 of MAGIC: ask an LLM why the supporter chose each training sample's strategy.

``collect_motivations(cfg)`` is the whole of ``LLM_inference/collect_motivations_ChatGPT.py``:

1. samples = ``load_samples(train_file, "train")`` (first ``--limit``), prompts = ``chatgpt_prompt(sample)``;
2. ``--source released``: the authors' released motivations instead, written as released with the ids
   sidecar (nothing asked); ``--dry_run``: count prompts, estimate tokens and cost, ask nothing;
3. answers from the cache or the model (``magic.llm.engines.factory.make_engine``: an OpenAI-compatible server
   or a local model);
4. only when every sample has an answer: ``motivations_4_LLaMA.json`` (JSON list of strings in sample
   order, as released) and ``motivations_4_LLaMA.ids.json`` (the sample ids, in the same order), both
   written atomically. Otherwise exit 1 with a summary, unless ``--allow_partial``;
5. report how many motivations name a strategy other than the gold one (informational).

Exit codes: 0 complete (or partial with ``--allow_partial``), 1 incomplete, 2 stopped by a
non-retryable error or bad configuration, 130 interrupted (Ctrl-C; the cache keeps what was answered).
Bad input or configuration found before any request is raised (a UserError, ValueError or OSError naming
the file or flag), for the script's run_main to report as one line with exit code 2.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence

from magic.common.artifacts import ids_path
from magic.common.errors import UserError, describe
from magic.esconv.dialogues import Sample, load_samples, strategy_mismatches
from magic.common.io_utils import atomic_write_json, atomic_write_text, load_json
from magic.common.validate import KEYLESS_PLACEHOLDER, check_api_key, openai_api_key
from magic.llm.config import LOCAL_MAX_NEW_TOKENS, MotivationConfig
from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, JsonlCache
from magic.llm.engines.factory import make_engine
from magic.llm.engines.openai import FatalRequestError, scrub
from magic.llm.prompts import chatgpt_prompt

# The released motivations average ~230 characters (~50 tokens); 60 leaves headroom.
DEFAULT_OUTPUT_TOKENS = 60
# A chat request costs a few tokens beyond its text (role and message framing).
CHAT_MESSAGE_OVERHEAD_TOKENS = 7
EXIT_OK, EXIT_INCOMPLETE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def build_items(train_file: str, limit: int | None = None) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Training samples (first ``limit``) and their ``(sample id, ChatGPT prompt)`` items, in sample order."""
    samples = load_samples(train_file, "train")
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        samples = samples[:limit]
    return samples, [(s.id, chatgpt_prompt(s)) for s in samples]


def default_cache_path(output_file: str) -> str:
    return output_file + ".cache.jsonl"


# --------------------------------------------------------------------------------------------------
# Dry run.
def _tiktoken_encoding():
    """The gpt-3.5 (cl100k_base) encoding, or None when tiktoken or its BPE file is unavailable (offline)."""
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # noqa: BLE001 - any failure (no package, no network) means "use the heuristic"
        return None


def estimate_input_tokens(prompts: Sequence[str], use_tiktoken: bool = True) -> tuple[int, str]:
    """Total input tokens of one user message per prompt, and how they were counted."""
    enc = _tiktoken_encoding() if use_tiktoken else None
    if enc is not None:
        text_tokens = sum(len(enc.encode(p)) for p in prompts)
        method = "tiktoken cl100k_base (the gpt-3.5-turbo encoding)"
    else:
        text_tokens = int(round(sum(len(p.split()) for p in prompts) * 1.3))
        method = "heuristic: words x 1.3 (tiktoken's cl100k_base file could not be loaded offline)"
    return text_tokens + CHAT_MESSAGE_OVERHEAD_TOKENS * len(prompts), method


@dataclass
class DryRunEstimate:
    prompts: int
    cached: int
    input_tokens: int
    output_tokens: int
    token_method: str
    output_method: str
    cost: float | None


def estimate(prompts_to_send: Sequence[str], cached: int, max_tokens: int | None,
             price_in: float | None, price_out: float | None, use_tiktoken: bool = True) -> DryRunEstimate:
    tokens, method = estimate_input_tokens(prompts_to_send, use_tiktoken)
    per_answer = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
    out_method = (f"--max_tokens {max_tokens} per answer (an upper bound)" if max_tokens is not None else
                  f"~{DEFAULT_OUTPUT_TOKENS} tokens per answer (the released motivations average ~50)")
    out_tokens = per_answer * len(prompts_to_send)
    cost = None
    if price_in is not None or price_out is not None:
        cost = tokens / 1000 * (price_in or 0.0) + out_tokens / 1000 * (price_out or 0.0)
    return DryRunEstimate(len(prompts_to_send) + cached, cached, tokens, out_tokens, method, out_method, cost)


def format_estimate(e: DryRunEstimate, price_in: float | None, price_out: float | None) -> str:
    lines = [
        f"prompts: {e.prompts} ({e.cached} already cached, {e.prompts - e.cached} to request)",
        f"estimated input tokens to request: {e.input_tokens:,} [{e.token_method}]",
        f"estimated output tokens: {e.output_tokens:,} [{e.output_method}]",
    ]
    if e.cost is None:
        lines.append("estimated cost: pass --price_per_1k_input / --price_per_1k_output (USD per 1k tokens)")
    else:
        lines.append(f"estimated cost: ${e.cost:,.4f} at ${price_in or 0:g}/1k input and "
                     f"${price_out or 0:g}/1k output tokens")
    lines.append("dry run: no requests were made")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Outputs.
def write_outputs(output_file: str, samples: Sequence[Sample], answers: dict[str, str]) -> tuple[str, int]:
    """Write the answered samples' motivations (sample order) and their ids; return (ids path, count).

    The ids sidecar goes first: if a kill falls between the two renames, the old list is left beside new
    ids and the count check of any consumer refuses the pair instead of shifting data.
    """
    kept = [s for s in samples if s.id in answers]
    sidecar = ids_path(output_file)
    atomic_write_json(sidecar, [s.id for s in kept])
    atomic_write_json(output_file, [answers[s.id] for s in kept])
    return sidecar, len(kept)


def resolve_api_key(cli_key: str | None, base_url: str | None, environ=os.environ) -> str:
    """The key from OPENAI_API_KEY (or the deprecated --openai_api_key); "EMPTY" for a local server. A key that
    cannot be an HTTP header value is refused here, before the cache is opened or anything is sent
    (ApiKeyError: one line, no part of the key)."""
    if cli_key:
        eprint("warning: --openai_api_key leaks the key into your shell history and the process list; "
               "export OPENAI_API_KEY instead")
        check_api_key(cli_key, "--openai_api_key")
        return cli_key
    key = openai_api_key(base_url, environ)
    if key:
        return key
    raise UserError("no API key: export OPENAI_API_KEY (or pass --base_url for a server without auth)")


def _summarise_failure(samples: Sequence[Sample], result: ChatRunResult | None, answers: dict[str, str],
                       cache_path: str | None) -> str:
    missing = [s.id for s in samples if s.id not in answers]
    failed = result.failed if result is not None else {}
    lines = [f"incomplete: {len(answers)} of {len(samples)} samples answered, {len(failed)} failed, "
             f"{len(missing) - len(failed)} not attempted"]
    if failed:
        shown = list(failed.items())[:10]
        lines.append("failed ids: " + ", ".join(i for i, _ in shown) + (" ..." if len(failed) > 10 else ""))
        for i, err in shown[:3]:
            lines.append(f"  {i}: {err}")
    if cache_path:
        lines.append(f"answers so far are kept in {cache_path}; rerun the same command to ask only for the rest")
    lines.append("no output written (pass --allow_partial to write the answered samples with their ids)")
    return "\n".join(lines)


def make_motivation_engine(cfg: MotivationConfig, api_key: str) -> Engine:
    """The chosen backend. A server gets temperature and max_tokens only when given (None: the API's own
    defaults, which sample); a local model decodes greedily unless a temperature is given."""
    if cfg.backend == "local":
        do_sample = bool(cfg.temperature)
        generation = Generation(template=cfg.template, max_new_tokens=cfg.max_tokens or LOCAL_MAX_NEW_TOKENS,
                                do_sample=do_sample, temperature=cfg.temperature if do_sample else None)
        return make_engine("local", model_path=cfg.model_name_or_path, generation=generation,
                           batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)
    generation = Generation(max_new_tokens=cfg.max_tokens, do_sample=True, temperature=cfg.temperature)
    return make_engine("openai", model_path=cfg.model, generation=generation, base_url=cfg.base_url,
                       api_key=api_key, concurrency=cfg.concurrency, rpm=cfg.rpm, max_retries=cfg.max_retries,
                       timeout=cfg.timeout)


def use_released(cfg: MotivationConfig, samples: Sequence[Sample]) -> int:
    """``--source released``: the authors' motivations, one per training sample in sample order, written as
    released (the same bytes; the first ``--limit`` as JSON) with their ids sidecar. Nothing is asked."""
    if not cfg.released_file:
        raise UserError("--source released needs --released_file FILE (the released motivations_4_LLaMA.json; "
                        "python data/fetch_data.py fetches it)")
    motivations = load_json(cfg.released_file, "released motivations")
    if not isinstance(motivations, list) or not all(isinstance(m, str) for m in motivations):
        raise UserError(f"{cfg.released_file}: not a JSON list of motivation strings")
    full = load_samples(cfg.train_file, "train")
    if len(motivations) != len(full):
        raise UserError(f"{cfg.released_file}: {len(motivations)} motivations for the {len(full)} training samples "
                        f"of {cfg.train_file} (the released file fits MAGIC's train.txt: 10,191 samples)")
    atomic_write_json(ids_path(cfg.output_file), [s.id for s in samples])
    if len(samples) == len(full):
        with open(cfg.released_file, encoding="utf-8") as f:
            atomic_write_text(cfg.output_file, f.read())
    else:
        atomic_write_json(cfg.output_file, motivations[:len(samples)])
    print(f"wrote {len(samples)} released motivations to {cfg.output_file} (sample ids in "
          f"{ids_path(cfg.output_file)}); nothing was asked of a model", flush=True)
    other, none, total, _ = strategy_mismatches(samples, dict(zip((s.id for s in samples), motivations)))
    print(f"{other} of {total} motivations name a different strategy than the gold one"
          + (f"; {none} name no strategy" if none else ""), flush=True)
    return EXIT_OK


def collect_motivations(cfg: MotivationConfig) -> int:
    """Run the step (see the script's --help); returns the exit code of a run that
    started. Bad input or configuration raises before any request (see the module docstring)."""
    samples, items = build_items(cfg.train_file, cfg.limit)
    if not samples:
        raise UserError(f"{cfg.train_file}: no training samples")
    if cfg.source == "released":
        return use_released(cfg, samples)
    cache_path = cfg.cache_file or default_cache_path(cfg.output_file)
    local = cfg.backend == "local"
    if local and not cfg.model_name_or_path:
        raise UserError("--backend local needs --model_name_or_path DIR")

    if cfg.dry_run:
        if os.path.exists(cache_path):
            cache = JsonlCache(cache_path, readonly=True)
            engine = make_motivation_engine(cfg, KEYLESS_PLACEHOLDER)  # for its cache keys only: nothing is sent
            to_send = [p for i, p in items if cache.get(i, engine.key(p)) is None]
        else:
            to_send = [p for _, p in items]
        cached = len(items) - len(to_send)
        est = estimate(to_send, cached, cfg.max_tokens, cfg.price_per_1k_input, cfg.price_per_1k_output)
        print(format_estimate(est, cfg.price_per_1k_input, cfg.price_per_1k_output), flush=True)
        return EXIT_OK

    api_key = resolve_api_key(cfg.openai_api_key, cfg.base_url) if not local else None
    engine = make_motivation_engine(cfg, api_key)
    try:
        cache = JsonlCache(cache_path)
    except RuntimeError as e:  # in use by another run
        raise UserError(str(e)) from None
    result: ChatRunResult | None = None
    fatal: str | None = None
    try:
        result = engine.answer(items, cache=cache, desc="motivations (local)" if local else "motivations")
    except FatalRequestError as e:
        fatal = scrub(e, [api_key])
        result = e.result
    except (OSError, ValueError) as e:  # e.g. a local model folder that cannot be loaded
        fatal = scrub(e, [api_key])
    except KeyboardInterrupt:
        # the requests in flight have finished and are cached; nothing else was started
        eprint(f"interrupted: {len(cache)} answers are kept in {cache_path}; rerun the same command to resume")
        return EXIT_INTERRUPTED
    finally:
        cache.close()

    answers = result.answers if result is not None else {}
    if result is not None:
        print(f"answered {len(answers)} of {len(samples)} samples ({result.from_cache} from the cache, "
              f"{result.requested} requested, {result.retried} retries, {len(result.failed)} failed)", flush=True)
    if fatal:
        eprint(f"error: {fatal}")

    complete = len(answers) == len(samples)
    if complete or cfg.allow_partial:
        if answers:
            try:
                sidecar, n = write_outputs(cfg.output_file, samples, answers)
            except OSError as e:  # e.g. disk full: the earlier outputs are intact (atomic writes)
                eprint(f"error: {describe(e)}; the answers are kept in {cache_path}")
                return EXIT_FATAL
            what = "all" if complete else "PARTIAL:"
            print(f"wrote {what} {n} motivations to {cfg.output_file} (sample ids in {sidecar})", flush=True)
        other, none, total, examples = strategy_mismatches(samples, answers)
        print(f"{other} of {total} motivations name a different strategy than the gold one"
              + (f" (e.g. {', '.join(examples)})" if examples else "")
              + (f"; {none} name no strategy" if none else ""), flush=True)
    if not complete:
        eprint(_summarise_failure(samples, result, answers, cache_path) if not cfg.allow_partial else
               f"partial: {len(samples) - len(answers)} samples have no motivation; rerun to complete")
    if fatal:
        return EXIT_FATAL
    return EXIT_OK if complete or cfg.allow_partial else EXIT_INCOMPLETE

