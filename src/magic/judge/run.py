"""Step 9 (judge_responses.py): two step-8 outputs judged pairwise on ESConv's criteria by an LLM, in both
orders, with controls whose better side is known.

1. ``load_system``: a step-8 output, ``diversity_*.txt`` (one response per line) and the ``.scores.json`` beside
   it, whose ``sample_ids`` say which sample each line is; the two systems must hold the same samples, and the
   step-6 test records (``--test_data``) give each sample's context and reference;
2. ``--limit N``: N evenly spaced samples (of A's order);
3. pairs: (A, B) per sample, and with ``--controls`` (the default) the reference against the most frequent
   training response and against the reference of another, randomly chosen test dialogue (``--seed``);
4. each pair asked in both orders through the one engine interface (magic.llm.engines.factory.make_engine),
   every answer cached as it arrives (``<output_dir>/judge_cache.jsonl``: kill -9 and rerun asks only for the
   rest); an unreadable answer is asked again with a format reminder (``--parse_retries``), then counted apart;
5. ``<output_dir>/judge.json`` (``JUDGE_SCHEMA``): numbers and labels only, per-sample verdicts keyed by sample
   id, never any text of the data.

Exit codes: 0 done; 1 incomplete (requests that failed after their retries; nothing written, rerun to resume);
2 bad flags or input, a key that cannot be sent, a non-retryable API error; 130 interrupted.
"""
from __future__ import annotations

import os
import random
import sys
from collections import Counter
from typing import Sequence

from magic.common.errors import UserError, describe
from magic.common.io_utils import atomic_write_json, load_json
from magic.judge.config import EngineOptions, JudgeConfig
from magic.judge.prompt import CRITERIA, judge_prompt, parse_judgement
from magic.judge.verdicts import CONTROL_CRITERIA, OUTCOMES, combine, consistency, control_accuracy, summarise
from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import JsonlCache
from magic.llm.engines.factory import make_engine
from magic.llm.engines.openai import FatalRequestError, scrub
from magic.llm.motivations import estimate, format_estimate, resolve_api_key

JUDGE_SCHEMA = "magic.judge/1"
RESULT_FILE = "judge.json"
CACHE_FILE = "judge_cache.jsonl"
CONTROLS = {"frequent": "reference vs the most frequent training response",
            "other_dialogue": "reference vs another dialogue's reference"}
FLAG = "this judge cannot separate systems"
EXIT_OK, EXIT_INCOMPLETE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ inputs
def load_system(path: str, flag: str) -> dict:
    """A step-8 output: {"hypotheses_file", "scores_file", "run", "ids", "responses"} (responses by id)."""
    hyp = path[:-len(".scores.json")] if path.endswith(".scores.json") else path
    scores = hyp + ".scores.json"
    with open(hyp, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    record = load_json(scores, f"scores record of step 8 (beside {flag} {hyp})")
    ids = record.get("sample_ids") if isinstance(record, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise UserError(f"{scores}: no list of unique 'sample_ids'; {flag} takes a step-8 output "
                        "(test_evaluation.py or direct_llm_responses.py)")
    if len(ids) != len(lines):
        raise UserError(f"{hyp}: {len(lines)} lines but {len(ids)} sample ids in {scores}; the pair is out of step")
    return {"hypotheses_file": hyp, "scores_file": scores, "run": record.get("run"), "ids": ids,
            "responses": dict(zip(ids, lines))}


def load_test_records(path: str, what: str = "step-6 records") -> list[dict]:
    """A data/*.json list of records with a string ``id``, a ``context`` list and a ``response`` string."""
    recs = load_json(path, f"JSON list of {what}")
    if not isinstance(recs, list):
        raise UserError(f"{path}: expected a JSON list of records, got {type(recs).__name__}")
    for i, r in enumerate(recs):
        if not (isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("context"), list)
                and isinstance(r.get("response"), str)):
            raise UserError(f"{path}: record {i} has no string 'id', list 'context' and string 'response'")
    return recs


def evenly_spaced(ids: Sequence[str], limit: int | None) -> list[str]:
    """``limit`` ids spread evenly over ``ids`` (all of them without a limit, or when there are fewer)."""
    n = len(ids)
    if limit is None or limit >= n:
        return list(ids)
    return [ids[(k * n) // limit] for k in range(limit)]


def most_frequent_response(path: str) -> str:
    """The training response that occurs most often (the first one seen among equals)."""
    counts = Counter(r["response"].strip() for r in load_test_records(path, "step-6 train records"))
    if not counts:
        raise UserError(f"{path}: no training records")
    return counts.most_common(1)[0][0]


def dialogue_of(sample_id: str) -> str:
    """``test-12-3`` -> ``test-12``: the dialogue of a sample id (the id itself when it has no turn part)."""
    head, sep, tail = sample_id.rpartition("-")
    return head if sep and tail.isdigit() else sample_id


def build_pairs(cfg: JudgeConfig) -> tuple[dict, dict, list[str], list[tuple[str, str, list, str, str]]]:
    """(system A, system B, selected ids, pairs); a pair is (kind, sample id, context, text A, text B), kind
    "main" or a control (its A side the reference)."""
    a, b = load_system(cfg.a, "--a"), load_system(cfg.b, "--b")
    if set(a["ids"]) != set(b["ids"]):
        only = sorted(set(a["ids"]) ^ set(b["ids"]))
        raise UserError(f"{b['scores_file']}: not the samples of {a['scores_file']} ({len(only)} ids in one only, "
                        f"e.g. {only[0]}); judge two outputs of the same test samples")
    records = load_test_records(cfg.test_data)
    by_id = {r["id"]: r for r in records}
    missing = [i for i in a["ids"] if i not in by_id]
    if missing:
        raise UserError(f"{cfg.test_data}: no record for sample {missing[0]} of {a['scores_file']} "
                        f"({len(missing)} missing); pass the test data step 8 decoded")
    ids = evenly_spaced(a["ids"], cfg.limit)
    if not ids:
        raise UserError(f"{a['hypotheses_file']}: no samples")
    pairs = [("main", i, by_id[i]["context"], a["responses"][i], b["responses"][i]) for i in ids]
    if cfg.controls:
        frequent = most_frequent_response(cfg.train_data)
        rng = random.Random(cfg.seed)
        for i in ids:
            pairs.append(("frequent", i, by_id[i]["context"], by_id[i]["response"], frequent))
        for i in ids:
            others = [r for r in records if dialogue_of(r["id"]) != dialogue_of(i)]
            if not others:
                raise UserError(f"{cfg.test_data}: one dialogue only; the other-dialogue control needs two "
                                "(or pass --no_controls)")
            pairs.append(("other_dialogue", i, by_id[i]["context"], by_id[i]["response"],
                          rng.choice(others)["response"]))
    return a, b, ids, pairs


def items_for(pairs, attempt: int, only: set | None = None) -> list[tuple[str, str]]:
    """(item id, prompt) of both orders of each pair (``only``: just these item keys ``kind/sid/order``)."""
    items = []
    for kind, sid, context, x, y in pairs:
        for order, first, second in (("ab", x, y), ("ba", y, x)):
            key = f"{kind}/{sid}/{order}"
            if only is None or key in only:
                items.append((f"{key}/{attempt}", judge_prompt(context, first, second, attempt)))
    return items


# ------------------------------------------------------------------------------------------ engine
def resolve_key(opts: EngineOptions) -> str | None:
    """OPENAI_API_KEY as step 1 takes it (refused before anything is sent when it cannot be an HTTP header;
    never shown); None for the in-process backends."""
    if opts.backend != "openai":
        return None
    return resolve_api_key(opts.openai_api_key, opts.base_url)


def build_engine(opts: EngineOptions, max_new_tokens: int, api_key: str | None) -> Engine:
    """The engine of ``opts.backend``, greedy (temperature 0 on a server): one answer per prompt."""
    if opts.backend == "openai":
        return make_engine("openai", model_path=opts.model, generation=Generation(max_new_tokens=max_new_tokens),
                           base_url=opts.base_url, api_key=api_key or "EMPTY", concurrency=opts.concurrency,
                           rpm=opts.rpm, max_retries=opts.max_retries, timeout=opts.timeout)
    if not opts.model_name_or_path:
        raise UserError(f"--backend {opts.backend} needs --model_name_or_path DIR")
    generation = Generation(template=opts.template, max_new_tokens=max_new_tokens)
    if opts.backend == "local":
        return make_engine("local", model_path=opts.model_name_or_path, generation=generation,
                           batch_size=opts.batch_size, device=opts.device, dtype=opts.dtype)
    return make_engine("vllm", model_path=opts.model_name_or_path, generation=generation, dtype=opts.dtype)


def engine_name(opts: EngineOptions) -> dict:
    return {"backend": opts.backend, "model": opts.model if opts.backend == "openai" else opts.model_name_or_path,
            "base_url": opts.base_url if opts.backend == "openai" else None}


def dry_run(opts: EngineOptions, items: list[tuple[str, str]], cache_path: str, max_new_tokens: int,
            note: str = "") -> int:
    """Step 1's estimate (requests, input tokens, cost) of the items not yet in the cache; nothing is sent."""
    to_send = [p for _, p in items]
    if os.path.exists(cache_path):
        cache = JsonlCache(cache_path, readonly=True)
        engine = build_engine(opts, max_new_tokens, "EMPTY")  # for its cache keys only
        to_send = [p for i, p in items if cache.get(i, engine.key(p)) is None]
    est = estimate(to_send, len(items) - len(to_send), max_new_tokens, opts.price_per_1k_input,
                   opts.price_per_1k_output)
    print(format_estimate(est, opts.price_per_1k_input, opts.price_per_1k_output).replace("prompts:", "requests:", 1)
          .replace("--max_tokens", "--max_new_tokens") + note, flush=True)
    return EXIT_OK


def ask(engine: Engine, items, cache: JsonlCache, desc: str, api_key: str | None) -> tuple[dict, dict, str | None]:
    """(answers, failed, fatal message) of one engine run; failures scrubbed of the key."""
    try:
        run = engine.answer(items, cache=cache, desc=desc)
    except FatalRequestError as e:
        run = e.result
        return (run.answers if run else {}), (run.failed if run else {}), scrub(e, [api_key])
    return run.answers, run.failed, None


# ------------------------------------------------------------------------------------------ the step
def judge(cfg: JudgeConfig) -> int:
    if not 0 < cfg.confidence < 1:
        raise UserError(f"--confidence {cfg.confidence}: expected a level between 0 and 1 (exclusive)")
    a, b, ids, pairs = build_pairs(cfg)
    if cfg.show_prompt:
        print(items_for(pairs[:1], 0)[0][1], end="", flush=True)
        return EXIT_OK
    cache_path = cfg.cache_file or os.path.join(cfg.output_dir, CACHE_FILE)
    if cfg.dry_run:
        return dry_run(cfg, items_for(pairs, 0), cache_path, cfg.max_new_tokens,
                       f"\n({len(ids)} samples x {len(pairs) // len(ids)} pairs x 2 orders; re-asks of unreadable "
                       "answers come on top)")
    api_key = resolve_key(cfg)  # before the cache is opened and before any request
    engine = build_engine(cfg, cfg.max_new_tokens, api_key)
    try:
        cache = JsonlCache(cache_path)
    except RuntimeError as e:  # in use by another run
        raise UserError(str(e)) from None
    parsed: dict[str, dict] = {}  # kind/sid/order -> criterion -> choice
    todo = {f"{k}/{s}/{o}" for k, s, *_ in pairs for o in ("ab", "ba")}
    failed: dict[str, str] = {}
    fatal = None
    try:
        for attempt in range(cfg.parse_retries + 1):
            items = items_for(pairs, attempt, todo)
            if not items:
                break
            answers, failed, fatal = ask(engine, items, cache, "judge" if attempt == 0 else f"judge re-ask {attempt}",
                                         api_key)
            for item_id, answer in answers.items():
                verdict = parse_judgement(answer)
                if verdict is not None:
                    key = item_id.rsplit("/", 1)[0]
                    parsed[key] = verdict
                    todo.discard(key)
            if failed or fatal:
                break
    except KeyboardInterrupt:
        eprint(f"interrupted: {len(cache)} answers are kept in {cache_path}; rerun the same command to resume")
        return EXIT_INTERRUPTED
    except (OSError, ValueError) as e:  # e.g. a local model folder that cannot be loaded
        fatal = scrub(describe(e), [api_key])
    finally:
        cache.close()
    if fatal:
        eprint(f"error: {fatal}; the answers so far are kept in {cache_path}")
        return EXIT_FATAL
    if failed:
        shown = next(iter(failed.items()))
        eprint(f"incomplete: {len(failed)} requests failed after their retries (e.g. {shown[0]}: {shown[1]}); the "
               f"answers are kept in {cache_path}: rerun the same command to ask only for the rest; nothing written")
        return EXIT_INCOMPLETE
    result = build_result(cfg, a, b, ids, pairs, parsed)
    path = os.path.join(cfg.output_dir, RESULT_FILE)
    atomic_write_json(path, result)
    print(format_result(result), flush=True)
    print(f"wrote {path}", flush=True)
    return EXIT_OK


def build_result(cfg: JudgeConfig, a: dict, b: dict, ids: list[str], pairs, parsed: dict) -> dict:
    """The judge.json record (``JUDGE_SCHEMA``): numbers, labels, ids and paths; no text of the data."""
    def part(kind: str) -> tuple[dict, list[str]]:
        verdicts, unreadable = {}, []
        for k, sid, *_ in pairs:
            if k != kind:
                continue
            ab, ba = parsed.get(f"{k}/{sid}/ab"), parsed.get(f"{k}/{sid}/ba")
            if ab is None or ba is None:
                unreadable.append(sid)
            else:
                verdicts[sid] = combine(ab, ba)
        return verdicts, unreadable

    main, unreadable = part("main")
    result = {
        "schema": JUDGE_SCHEMA,
        "a": {k: a[k] for k in ("hypotheses_file", "scores_file", "run")},
        "b": {k: b[k] for k in ("hypotheses_file", "scores_file", "run")},
        "test_data": cfg.test_data,
        "judge": {**engine_name(cfg), "max_new_tokens": cfg.max_new_tokens, "parse_retries": cfg.parse_retries},
        "criteria": list(CRITERIA),
        "outcomes": "win / tie / lose of A against B; a win needs both orders to agree",
        "limit": cfg.limit, "n_samples": len(ids), "n_judged": len(main), "unreadable": unreadable,
        "seed": cfg.seed, "resamples": cfg.resamples, "confidence": cfg.confidence,
        "position_consistency": consistency(list(main.values())),
        "results": summarise(list(main.values()), resamples=cfg.resamples, seed=cfg.seed, confidence=cfg.confidence),
        "per_sample": {sid: {c: {"verdict": v[c]["verdict"], "ab": v[c]["ab"], "ba": v[c]["ba"]} for c in CRITERIA}
                       for sid, v in main.items()},
        "controls": None,
    }
    if cfg.controls:
        controls: dict = {}
        for kind, what in CONTROLS.items():
            verdicts, unread = part(kind)
            controls[kind] = {"what": what, **control_accuracy(list(verdicts.values())), "unreadable": unread,
                              "position_consistency": consistency(list(verdicts.values())),
                              "per_sample": {sid: {c: v[c]["verdict"] for c in CONTROL_CRITERIA}
                                             for sid, v in verdicts.items()}}
        trusted = all(c["passes"] for c in controls.values())
        result["controls"] = {**controls, "trusted": trusted, "flag": None if trusted else FLAG}
    return result


# ------------------------------------------------------------------------------------------ printing
def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def format_result(r: dict) -> str:
    conf = round(100 * r["confidence"])
    lines = [f"judge: {r['judge']['backend']} {r['judge']['model']}; A = {r['a']['hypotheses_file']}, "
             f"B = {r['b']['hypotheses_file']}",
             f"{r['n_judged']} of {r['n_samples']} samples judged in both orders; {len(r['unreadable'])} unreadable "
             f"after {r['judge']['parse_retries']} re-asks (counted apart, for neither side)",
             f"{'criterion':<15}" + "".join(f"{'A ' + o + f' % [{conf} % CI]':<24}" for o in OUTCOMES)
             + f"{'sign p':>8}  consistency %"]
    for c in CRITERIA:
        s = r["results"][c]
        if s is None:
            lines.append(f"{c:<15}no judged samples")
            continue
        cells = "".join(f"{_pct(s[o]) + ' [' + _pct(s[o + '_ci'][0]).strip() + ', ' + _pct(s[o + '_ci'][1]).strip() + ']':<24}"
                        for o in OUTCOMES)
        lines.append(f"{c:<15}{cells}{s['sign_test_p']:>8.3f}  {_pct(s['position_consistency'])}")
    lines.append(f"position consistency (all criteria): {_pct(r['position_consistency']).strip()} %")
    controls = r["controls"]
    if controls:
        lines.append("controls (the reference should win; accuracy = share it wins in both orders):")
        for kind in CONTROLS:
            k = controls[kind]
            accs = ", ".join(f"{c} {_pct(k['accuracy'][c]).strip()} %" for c in CONTROL_CRITERIA)
            lines.append(f"  {k['what']} ({k['n']} pairs, {len(k['unreadable'])} unreadable): {accs}; "
                         f"Overall sign p {k['sign_test_p']['Overall']:.3f} -> "
                         + ("beats chance" if k["passes"] else "does NOT beat chance"))
        if not controls["trusted"]:
            lines.append(f"WARNING: {FLAG} (it does not beat chance on the controls); its verdicts above say nothing "
                         "about the systems")
    return "\n".join(lines)
