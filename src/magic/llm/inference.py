"""Step 5: answer every prompt file with the fine-tuned strategy LLM (LLM_inference/infer_strategy.py).

Reads ``prompts_4_LLaMA{,_valid,_test}.json`` and their ``.ids.json`` sidecars (step 2), writes
``strategy_with_motivation{,_valid,_test}.json`` (entries: src/magic/llm/report.py) and, given the gold
dialogue files, the accuracy/F1 report of src/magic/llm/report.py. Backends: local transformers
(src/magic/llm/engines/hf.py) or any OpenAI-compatible server (src/magic/llm/engines/client.py); answers are cached so a killed
run resumes.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from magic.common import validate
from magic.common.artifacts import ids_path, load_ids, strategy_file
from magic.common.io_utils import atomic_write_json, load_json
from magic.llm.report import entries_from_answers, format_table, gold_strategies, report_split


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


@dataclass
class InferenceConfig:
    prompt_paths: dict  # split -> prompt file (only the splits to run)
    output_dir: str
    model_path: str
    cache_file: str
    backend: str = "local"  # "local" (transformers), "openai" (any OpenAI-compatible server) or "vllm"
    template: str = "default"
    batch_size: int = 16
    max_samples: int | None = None
    max_new_tokens: int = 128
    do_sample: bool = False
    top_k: int | None = None
    temperature: float | None = None
    device: str | None = None
    dtype: str | None = None
    base_url: str | None = None
    model: str | None = None  # served model name (openai backend)
    concurrency: int = 8
    gold_files: dict = field(default_factory=dict)  # split -> dialogue file, for the report
    test_mode: str = "last"
    share_prefix: bool = True  # local backend: prefill only what a prompt does not share (local_llm)
    # batch order (local backend): None = file order when sharing prefixes (a dialogue's prompts extend one
    # another, so they share the most), else grouped by length (least padding)
    sort_by_length: bool | None = None
    progress: bool | None = None
    # openai backend: "chat" (the server applies its chat template to the raw instruction) or "completions"
    # (the instruction wrapped in `template` here, sent to /v1/completions as it is)
    openai_endpoint: str = "chat"
    tensor_parallel_size: int = 1  # vllm backend
    shard: tuple[int, int] | None = None  # (K, N): answer only shard K of N (src/magic/llm/shards.py)
    merge_shards: int | None = None  # N: write the outputs from the N shard caches, no model


class InferenceIncomplete(RuntimeError):
    pass


def _sent_prompt(cfg: InferenceConfig, prompt: str, tokenizer=None) -> str:
    """What the backend's cache key is made of: the instruction, or for /v1/completions the templated text,
    with the BOS string in front when the model was fine-tuned with one (its magic_encoding.json; released: none)."""
    if cfg.backend == "openai" and cfg.openai_endpoint == "completions":
        from magic.llm.encoding import EncodingRule
        from magic.llm.engines.hf import format_prompt
        text = format_prompt(tokenizer, prompt, cfg.template)
        rule = EncodingRule.load(cfg.model_path) if os.path.isdir(cfg.model_path) else EncodingRule()
        if rule.add_bos:
            bos = (tokenizer or _folder_tokenizer(cfg.model_path)).bos_token
            if bos and not text.startswith(bos):
                text = bos + text
        return text
    return prompt


@functools.lru_cache(maxsize=2)
def _folder_tokenizer(path: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def _completions_tokenizer(cfg: InferenceConfig):
    """The tokenizer whose chat template --template chat needs in completions mode (None otherwise)."""
    if cfg.backend != "openai" or cfg.openai_endpoint != "completions" or cfg.template != "chat":
        return None
    from transformers import AutoTokenizer
    if not os.path.isdir(cfg.model_path):
        raise ValueError(f"--template chat with --openai_endpoint completions reads the chat template from "
                         f"--model_path, but {cfg.model_path} is not a model folder")
    return AutoTokenizer.from_pretrained(cfg.model_path)


def answer_key(cfg: InferenceConfig, prompt: str, tokenizer=None) -> str:
    """The cache key the backend files the answer to ``prompt`` under (the shard merge looks answers up by it)."""
    from magic.llm.engines.client import chat_prompt_key, local_prompt_key

    if cfg.backend == "local":
        return local_prompt_key(prompt, cfg.model_path, cfg.template, cfg.max_new_tokens, cfg.do_sample, cfg.top_k,
                                cfg.temperature)
    if cfg.backend == "vllm":
        from magic.llm.engines.vllm import vllm_prompt_key
        return vllm_prompt_key(prompt, cfg.model_path, cfg.template, cfg.max_new_tokens, cfg.do_sample, cfg.top_k,
                               cfg.temperature)
    return chat_prompt_key(_sent_prompt(cfg, prompt, tokenizer), cfg.model or cfg.model_path,
                           cfg.temperature if cfg.do_sample else 0.0, cfg.max_new_tokens, cfg.openai_endpoint)


def _answer_split(cfg: InferenceConfig, split: str, items: list, cache, model_and_tokenizer, stats: dict):
    from magic.llm.engines.client import run_chat_requests, run_local_requests

    if cfg.backend == "vllm":
        from magic.llm.engines.vllm import run_vllm_requests
        return run_vllm_requests(
            items, model_path=cfg.model_path, template=cfg.template, max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.do_sample, top_k=cfg.top_k, temperature=cfg.temperature, dtype=cfg.dtype,
            tensor_parallel_size=cfg.tensor_parallel_size, cache=cache, desc=f"strategy {split}",
            progress=cfg.progress, engine=model_and_tokenizer)
    if cfg.backend == "local":
        return run_local_requests(
            items, model_name_or_path=cfg.model_path, template=cfg.template, max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size, do_sample=cfg.do_sample, top_k=cfg.top_k, temperature=cfg.temperature,
            cache=cache, desc=f"strategy {split}", progress=cfg.progress, model_and_tokenizer=model_and_tokenizer,
            share_prefix=cfg.share_prefix, stats=stats,
        )
    # chat: the server applies the model's own chat template to the raw instruction (see the README for a
    # chat template that reproduces the training template `default`); completions: the templated prompt
    # goes as it is, so the server sees exactly the training format
    if cfg.openai_endpoint == "completions":
        tokenizer = _completions_tokenizer(cfg)
        sent = {i: _sent_prompt(cfg, p, tokenizer) for i, p in items}
        items = [(i, sent[i]) for i, _ in items]
    return run_chat_requests(
        items, model=cfg.model or cfg.model_path, base_url=cfg.base_url, endpoint=cfg.openai_endpoint,
        api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
        temperature=cfg.temperature if cfg.do_sample else 0.0, max_tokens=cfg.max_new_tokens,
        concurrency=cfg.concurrency, cache=cache, desc=f"strategy {split}", progress=cfg.progress,
    )


def run_strategy_inference(cfg: InferenceConfig, log=print) -> dict:
    """Answer every prompt of every split, write the output files and, with gold files, the report.

    Answers are cached (JSONL, keyed by sample id + prompt/model/generation parameters) the moment they
    exist, so a killed run resumes where it stopped; each split's output is written atomically once all
    of its prompts are answered. Returns {split: {"path", "n", "unparsed", "report"?}}.
    """
    from magic.llm.engines.client import JsonlCache
    from magic.llm.engines.hf import TEMPLATES

    from magic.llm.shards import shard_cache_path, shard_share, union_answers

    if cfg.backend not in ("local", "openai", "vllm"):
        raise ValueError(f"unknown backend {cfg.backend!r}; expected 'local', 'openai' or 'vllm'")
    if cfg.openai_endpoint not in ("chat", "completions"):
        raise ValueError(f"unknown openai endpoint {cfg.openai_endpoint!r}; expected 'chat' or 'completions'")
    if cfg.shard and cfg.merge_shards:
        raise ValueError("--shard and --merge_shards are exclusive (shards answer; the merge only writes)")
    if cfg.template not in TEMPLATES:
        raise ValueError(f"unknown template {cfg.template!r}; expected one of {TEMPLATES}")
    if cfg.backend == "openai" and not cfg.base_url:
        raise ValueError("--backend openai needs --base_url (e.g. http://localhost:8000/v1)")
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise ValueError("--max_new_tokens and --batch_size must be >= 1")
    splits = {}
    for split, path in cfg.prompt_paths.items():
        ids, prompts = load_prompt_file(path, split)
        if cfg.max_samples is not None:
            ids, prompts = ids[:cfg.max_samples], prompts[:cfg.max_samples]
        validate.require_nonempty(len(ids), path, split, "prompts", hint="leave the split out of --splits")
        validate.check_split_ids(ids, split, ids_path(path))
        splits[split] = (path, ids, prompts)
    golds = {split: gold_strategies(f, split, cfg.test_mode) for split, f in cfg.gold_files.items()
             if split in splits}  # read before hours of generation, so a bad file fails fast
    for split, gold in golds.items():
        validate.check_ids_known(splits[split][1], gold, ids_path(splits[split][0]), cfg.gold_files[split])

    model_and_tokenizer = None
    if cfg.backend == "local" and not cfg.merge_shards:
        from magic.llm.engines.hf import load_causal_lm
        model_and_tokenizer = load_causal_lm(cfg.model_path, device=cfg.device, dtype=cfg.dtype)
    key_tokenizer = _completions_tokenizer(cfg) if (cfg.shard or cfg.merge_shards) else None
    n_shards = cfg.merge_shards or (cfg.shard[1] if cfg.shard else None)
    results = {}
    cache_file = shard_cache_path(cfg.cache_file, *cfg.shard) if cfg.shard else cfg.cache_file
    with JsonlCache(cache_file, readonly=bool(cfg.merge_shards)) as cache:
        for split, (path, ids, prompts) in splits.items():
            items = list(zip(ids, prompts))
            sort = cfg.sort_by_length if cfg.sort_by_length is not None else not cfg.share_prefix
            if sort and cfg.backend == "local":
                # batch prompts of similar length together: far less padding (prompts run from a few
                # lines to whole dialogues). Stable and input-determined, so a resumed run forms the
                # same batches; the output keeps the file order.
                items.sort(key=lambda item: len(item[1]))
            stats: dict = {}
            mine = shard_share(items, cfg.batch_size, *cfg.shard) if cfg.shard else items
            if not cfg.merge_shards:
                run = _answer_split(cfg, split, mine, cache, model_and_tokenizer, stats)
                answers, from_cache = run.answers, run.from_cache
                if cfg.backend == "vllm":  # the engine built for the first split serves the next ones
                    model_and_tokenizer = getattr(run, "engine", None) or model_and_tokenizer
            if stats.get("truncated_prompts"):
                log(f"{split}: {stats['truncated_prompts']} prompts were longer than the model's context and lost "
                    f"their last {stats['truncated_tokens']:,} tokens in all (cut on the right, as in fine-tuning)")
            if stats.get("prompt_tokens"):
                log(f"{split}: the prefill ran {stats['computed_tokens']:,} token positions for "
                    f"{stats['prompt_tokens']:,} prompt tokens ({'shared prefixes' if cfg.share_prefix else 'padded batches'})")
            if not cfg.merge_shards:
                missing = [i for i, _ in mine if i not in run.answers]
            if n_shards and (cfg.merge_shards or not missing):
                # every shard's answers, from the shard caches: complete -> this process writes the files
                answers, lacking = union_answers(cfg.cache_file, n_shards, items,
                                                 lambda i, p: answer_key(cfg, p, key_tokenizer), cfg.batch_size)
                from_cache = len(answers)
                if lacking:
                    what = ", ".join(f"shard {k}/{n_shards}: {m}" for k, m in sorted(lacking.items()))
                    if cfg.merge_shards:
                        raise InferenceIncomplete(f"{split}: prompts not answered yet ({what}); rerun the "
                                                  "missing shards with the same arguments, then merge again")
                    log(f"{split}: shard {cfg.shard[0]}/{n_shards} answered its {len(mine)} prompts; others "
                        f"still missing ({what}): the last shard to finish, or --merge_shards {n_shards}, "
                        "writes the output")
                    results[split] = {"path": None, "n": len(mine), "unparsed": None, "from_cache": run.from_cache}
                    continue
                missing = []
            if missing:
                some = "; ".join(f"{i}: {run.failed.get(i, 'not attempted')}" for i in missing[:3])
                raise InferenceIncomplete(
                    f"{split}: {len(missing)} of {len(ids)} prompts have no answer ({some}); answers so far are "
                    f"cached in {cfg.cache_file}, rerun the same command to finish")
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
