"""Step 5: answer every prompt file with the fine-tuned strategy LLM (LLM_inference/infer_strategy.py).

Reads ``prompts_4_LLaMA{,_valid,_test}.json`` and their ``.ids.json`` sidecars (step 2), writes
``strategy_with_motivation{,_valid,_test}.json`` (entries: src/magic/llm/report.py) and, given the gold
dialogue files, the accuracy/F1 report of src/magic/llm/report.py. Backends: local transformers
(src/magic/llm/engines/hf.py), any OpenAI-compatible server (openai.py) or vLLM (vllm.py), all behind the
engine interface of src/magic/llm/engines/base.py; answers are cached (engines/cache.py) so a killed run
resumes. ``run_strategy_inference`` reads as the workflow: check the config, make the engine, read the
splits and gold files, answer each split, write its entries and report.
"""
from __future__ import annotations

import os

from magic.common import validate
from magic.common.artifacts import ids_path, load_ids, strategy_file
from magic.common.io_utils import atomic_write_json, load_json
from magic.llm.config import TEMPLATES, InferenceConfig
from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.factory import make_engine
from magic.llm.engines.cache import JsonlCache
from magic.llm.report import entries_from_answers, format_table, gold_strategies, report_split
from magic.llm.shards import shard_cache_path, shard_share, union_answers


def load_prompt_file(path: str, split: str) -> tuple[list[str], list[str]]:
    """``(ids, prompts)`` of a prompt file: a list of strings (valid/test) or of ``{"instruction", ...}``
    objects (the train file). Ids come from the ``.ids.json`` sidecar written by step 2; a missing one is
    an error (outputs without ids could not be matched to the dialogues)."""
    data = load_json(path, "prompt list (create_prompts_4_LLaMA.py)")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of prompts")
    prompts = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            item = item.get("instruction")
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{path}: entry {i} is neither a prompt string nor an object with a non-empty "
                             "string \"instruction\"")
        prompts.append(item)
    ids = load_ids(path, len(prompts), "create_prompts_4_LLaMA.py, which writes the prompts and their ids")
    return ids, prompts


def write_entries(path: str, entries: list[dict]) -> None:
    """Released layout (``json.dumps(..., indent=2)``), written atomically."""
    atomic_write_json(path, entries, indent=2)


class InferenceIncomplete(RuntimeError):
    pass


def make_inference_engine(cfg: InferenceConfig) -> Engine:
    """The configured backend behind the one engine interface (magic.llm.engines.factory.make_engine)."""
    generation = Generation(template=cfg.template, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                            top_k=cfg.top_k, temperature=cfg.temperature)
    options = {"local": dict(batch_size=cfg.batch_size, share_prefix=cfg.share_prefix, device=cfg.device,
                             dtype=cfg.dtype),
               "openai": dict(base_url=cfg.base_url, model=cfg.model, endpoint=cfg.openai_endpoint,
                              concurrency=cfg.concurrency),
               "vllm": dict(dtype=cfg.dtype, tensor_parallel_size=cfg.tensor_parallel_size)}
    if cfg.backend not in options:
        raise ValueError(f"unknown backend {cfg.backend!r}; expected 'local', 'openai' or 'vllm'")
    return make_engine(cfg.backend, model_path=cfg.model_path, generation=generation, **options[cfg.backend])


def check_config(cfg: InferenceConfig) -> None:
    if cfg.openai_endpoint not in ("chat", "completions"):
        raise ValueError(f"unknown openai endpoint {cfg.openai_endpoint!r}; expected 'chat' or 'completions'")
    if cfg.backend == "openai" and not cfg.base_url:
        raise ValueError("--backend openai needs --base_url (e.g. http://localhost:8000/v1)")
    if cfg.shard and cfg.merge_shards:
        raise ValueError("--shard and --merge_shards are exclusive (shards answer; the merge only writes)")
    if cfg.template not in TEMPLATES:
        raise ValueError(f"unknown template {cfg.template!r}; expected one of {TEMPLATES}")
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise ValueError("--max_new_tokens and --batch_size must be >= 1")


def read_splits(cfg: InferenceConfig) -> dict[str, tuple[str, list[str], list[str]]]:
    """split -> (prompt file, ids, prompts), checked (non-empty, ids of that split)."""
    splits = {}
    for split, path in cfg.prompt_paths.items():
        ids, prompts = load_prompt_file(path, split)
        if cfg.max_samples is not None:
            ids, prompts = ids[:cfg.max_samples], prompts[:cfg.max_samples]
        validate.require_nonempty(len(ids), path, split, "prompts", hint="leave the split out of --splits")
        validate.check_split_ids(ids, split, ids_path(path))
        splits[split] = (path, ids, prompts)
    return splits


def read_golds(cfg: InferenceConfig, splits: dict) -> dict[str, dict[str, int]]:
    """Gold strategies of the splits that have a gold file: read before hours of generation, so a bad file
    fails fast."""
    golds = {split: gold_strategies(f, split, cfg.test_mode) for split, f in cfg.gold_files.items() if split in splits}
    for split, gold in golds.items():
        validate.check_ids_known(splits[split][1], gold, ids_path(splits[split][0]), cfg.gold_files[split])
    return golds


def batch_order(cfg: InferenceConfig, ids: list[str], prompts: list[str]) -> list[tuple[str, str]]:
    """The (id, prompt) items in the order batches are formed. Sharing prefixes: the file order (a dialogue's
    prompts extend one another). Otherwise, for the local backend, grouped by length (far less padding):
    stable and input-determined, so a resumed run forms the same batches; the output keeps the file order."""
    items = list(zip(ids, prompts))
    sort = cfg.sort_by_length if cfg.sort_by_length is not None else not cfg.share_prefix
    if sort and cfg.backend == "local":
        items.sort(key=lambda item: len(item[1]))
    return items


def log_stats(split: str, stats: dict, cfg: InferenceConfig, log) -> None:
    if stats.get("truncated_prompts"):
        log(f"{split}: {stats['truncated_prompts']} prompts were longer than the model's context and lost "
            f"their last {stats['truncated_tokens']:,} tokens in all (cut on the right, as in fine-tuning)")
    if stats.get("prompt_tokens"):
        log(f"{split}: the prefill ran {stats['computed_tokens']:,} token positions for "
            f"{stats['prompt_tokens']:,} prompt tokens ({'shared prefixes' if cfg.share_prefix else 'padded batches'})")


def answer_split(cfg: InferenceConfig, engine: Engine, split: str, items: list, cache,
                 log) -> tuple[dict | None, int, int]:
    """(every answer of one split (id -> answer), from this process and, when sharded, from every shard's
    cache -- None when other shards have not finished yet: the last one writes the files; the number of
    prompts this process answers; how many answers came from a cache)."""
    n_shards = cfg.merge_shards or (cfg.shard[1] if cfg.shard else None)
    mine = shard_share(items, cfg.batch_size, *cfg.shard) if cfg.shard else items
    answers, missing, run, from_cache = {}, [], None, 0
    if not cfg.merge_shards:
        stats: dict = {}
        run = engine.answer(mine, cache=cache, desc=f"strategy {split}", progress=cfg.progress, stats=stats)
        log_stats(split, stats, cfg, log)
        answers, from_cache = run.answers, run.from_cache
        missing = [i for i, _ in mine if i not in run.answers]
    if n_shards and (cfg.merge_shards or not missing):
        # every shard's answers, from the shard caches: complete -> this process writes the files
        answers, lacking = union_answers(cfg.cache_file, n_shards, items, lambda i, p: engine.key(p), cfg.batch_size)
        if lacking:
            what = ", ".join(f"shard {k}/{n_shards}: {m}" for k, m in sorted(lacking.items()))
            if cfg.merge_shards:
                raise InferenceIncomplete(f"{split}: prompts not answered yet ({what}); rerun the "
                                          "missing shards with the same arguments, then merge again")
            log(f"{split}: shard {cfg.shard[0]}/{n_shards} answered its {len(mine)} prompts; others "
                f"still missing ({what}): the last shard to finish, or --merge_shards {n_shards}, writes the output")
            return None, len(mine), from_cache
        missing, from_cache = [], len(answers)
    if missing:
        some = "; ".join(f"{i}: {run.failed.get(i, 'not attempted')}" for i in missing[:3])
        raise InferenceIncomplete(
            f"{split}: {len(missing)} of {len(items)} prompts have no answer ({some}); answers so far are "
            f"cached in {cfg.cache_file}, rerun the same command to finish")
    return answers, len(mine), from_cache


def run_strategy_inference(cfg: InferenceConfig, log=print) -> dict:
    """Answer every prompt of every split, write the output files and, with gold files, the report.

    Answers are cached (JSONL, keyed by sample id + prompt/model/generation parameters) the moment they
    exist, so a killed run resumes where it stopped; each split's output is written atomically once all
    of its prompts are answered. Returns {split: {"path", "n", "unparsed", "from_cache", "report"?}}.
    """
    check_config(cfg)
    engine = make_inference_engine(cfg)
    splits = read_splits(cfg)
    golds = read_golds(cfg, splits)
    results = {}
    cache_file = shard_cache_path(cfg.cache_file, *cfg.shard) if cfg.shard else cfg.cache_file
    with JsonlCache(cache_file, readonly=bool(cfg.merge_shards)) as cache:
        for split, (path, ids, prompts) in splits.items():
            answers, n_mine, from_cache = answer_split(cfg, engine, split, batch_order(cfg, ids, prompts), cache, log)
            if answers is None:
                results[split] = {"path": None, "n": n_mine, "unparsed": None, "from_cache": from_cache}
                continue
            entries, unparsed = entries_from_answers(ids, [answers[i] for i in ids])
            out = os.path.join(cfg.output_dir, strategy_file(split))
            write_entries(out, entries)
            info = {"path": out, "n": len(entries), "unparsed": unparsed, "from_cache": from_cache}
            log(f"{split}: wrote {len(entries)} entries to {out} ({from_cache} from the cache); "
                f"{unparsed} answers named no strategy and became [others]")
            if split in golds:
                info["report"] = report_split(entries, golds[split], os.path.splitext(out)[0], split, unparsed)
            results[split] = info
    reports = [r["report"] for r in results.values() if "report" in r]
    if reports:
        log(format_table(reports))
    return results
