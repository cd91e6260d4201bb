"""The direct-LLM supporter (direct_llm_responses.py): an LLM writes the next supporter turn of every test sample
from the dialogue so far, zero-shot or told the record's strategy (``--mode strategy``: the step-5 inferred one on
an inferred dataset), once per sample (greedy), written in step 8's output format so that the metrics score it and
the judge compares it like any other system:

    <eval_dir>/response_lables.txt                                      the references (as step 8)
    <eval_dir>/<run>/diversity_0.0_length_1.0.txt                       one reply per line (step 8's file name;
                                                                        no beam search here, so its penalties
                                                                        are step 8's neutral values)
    <that>.scores.json                                                  scores, sample_ids, per-sample numbers
    <eval_dir>/<run>/direct_cache.jsonl                                 every answer as it came (resume)

Exit codes as judge_responses.py: 0 done; 1 incomplete (nothing written; rerun); 2 bad input or key, or a
non-retryable API error; 130 interrupted.
"""
from __future__ import annotations

import os
from dataclasses import asdict

from magic.metric import JAVA_INSTALL_HINT, java_available
from magic.metric.protocol import clean_response, compute_scores_and_samples, format_scores, one_line, tokenizer_name
from magic.common.errors import UserError
from magic.common.io_utils import atomic_write_json, atomic_write_text
from magic.judge.config import DirectConfig
from magic.judge.prompt import clean_reply, direct_prompt
from magic.judge.run import (EXIT_FATAL, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, ask, build_engine, dry_run,
                             engine_name, eprint, load_test_records, resolve_key)
from magic.llm.engines.cache import JsonlCache

REFERENCE_FILE = "response_lables.txt"  # step 8's name (magic.generator.evaluation.REFERENCE_FILE), sic
RESULT_FILE = "diversity_0.0_length_1.0.txt"  # step 8's result_file_name(0.0, 1.0)


def write_lines(path: str, lines) -> None:
    atomic_write_text(path, "".join(one_line(x) + "\n" for x in lines))


def direct_responses(cfg: DirectConfig) -> int:
    records = load_test_records(cfg.test_data)[:cfg.limit]
    if not records:
        raise UserError(f"{cfg.test_data}: no test records")
    if cfg.mode == "strategy" and any(not isinstance(r.get("strategy"), str) for r in records):
        raise UserError(f"{cfg.test_data}: a record without 'strategy'; --mode strategy needs step 6's records")
    items = [(r["id"], direct_prompt(r["context"], r["strategy"] if cfg.mode == "strategy" else None))
             for r in records]
    if cfg.show_prompt:
        print(items[0][1], flush=True)
        return EXIT_OK
    run = cfg.run_name or f"direct_{cfg.mode}"
    hyp = os.path.join(cfg.eval_dir, run, RESULT_FILE)
    cache_path = cfg.cache_file or os.path.join(cfg.eval_dir, run, "direct_cache.jsonl")
    if cfg.dry_run:
        return dry_run(cfg, items, cache_path, cfg.max_new_tokens)
    if not (cfg.no_meteor or cfg.no_metrics or java_available()):
        raise UserError(JAVA_INSTALL_HINT.replace("test_evaluation.py --no_meteor", "--no_meteor"))
    api_key = resolve_key(cfg)
    engine = build_engine(cfg, cfg.max_new_tokens, api_key)
    try:
        cache = JsonlCache(cache_path)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    try:
        answers, failed, fatal = ask(engine, items, cache, f"direct {cfg.mode}", api_key)
    except KeyboardInterrupt:
        eprint(f"interrupted: {len(cache)} answers are kept in {cache_path}; rerun the same command to resume")
        return EXIT_INTERRUPTED
    finally:
        cache.close()
    if fatal:
        eprint(f"error: {fatal}; the answers so far are kept in {cache_path}")
        return EXIT_FATAL
    if failed or len(answers) < len(items):
        eprint(f"incomplete: {len(items) - len(answers)} of {len(items)} samples have no reply; rerun the same "
               f"command to ask only for them (answers kept in {cache_path}); nothing written")
        return EXIT_INCOMPLETE
    ids = [r["id"] for r in records]
    refs = os.path.join(cfg.eval_dir, REFERENCE_FILE)
    write_lines(refs, [r["response"] for r in records])
    hyps = [clean_response(clean_reply(answers[i])) for i in ids]
    write_lines(hyp, hyps)
    scores, per_sample = ({}, None) if cfg.no_metrics else compute_scores_and_samples(
        [one_line(r["response"]) for r in records], hyps, cfg.no_meteor)
    record = {
        "scores": scores,
        "scores_x100": {k: round(v * 100, 2) for k, v in scores.items()},
        "n_samples": len(records),
        "strategy_source": "none" if cfg.mode == "zero_shot" else "record",
        "data_strategy_source": sorted({r.get("strategy_source", "unrecorded") for r in records}),
        "run": run,
        "hypotheses_file": hyp,
        "references_file": refs,
        "sample_ids": ids,
        "per_sample": None if per_sample is None else {"ids": ids, **per_sample},
        "metric_tokenizer": None if cfg.no_metrics else tokenizer_name(),
        "decoding": f"direct LLM ({cfg.mode}), greedy, one reply per sample",
        "engine": engine_name(cfg),
        "flags": asdict(cfg),
    }
    atomic_write_json(hyp + ".scores.json", record)
    if scores:
        print(format_scores(scores))
    print(f"{len(ids)} replies ({cfg.mode}): {hyp}\nscores: {hyp}.scores.json", flush=True)
    return EXIT_OK
