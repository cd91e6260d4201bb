"""Step 3d: the strategy LLM's outputs, and how good its strategies are.

Output entries (``strategy_with_motivation{,_valid,_test}.json``, released format plus ``id``)::

    {"id": "valid-3-5", "strategy": "[question]", "motivation": "<the full answer>"}

The strategy is the first of the 8 labels the answer names (``src.esconv.parse_strategy``: bracketed
labels first, case-insensitive), written as released: bracketed, lower case. An answer naming none
becomes ``[others]``; such answers are counted and reported.

Report: accuracy, macro-F1 and weighted-F1 (scikit-learn, over the labels present in gold or
prediction) against the gold strategies of the dialogue files, matched BY SAMPLE ID; an 8x8 confusion
matrix (rows gold, columns predicted) as PNG and everything as JSON next to the outputs.

    python -m src.strategy_report --outputs LLM_inference/strategy_with_motivation_valid.json \
        --gold_file data/valid.txt --split valid
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

from .esconv import STRATEGIES, load_samples, parse_strategy, strategy_id
from .io_utils import atomic_write_json, load_json

OTHERS = "Others"


def released_label(strategy: str) -> str:
    """``"Reflection of Feelings"`` -> ``"[reflection of feelings]"`` (how the released outputs wrote it)."""
    return f"[{strategy.lower()}]"


def answer_to_entry(sample_id: str, answer: str) -> tuple[dict, bool]:
    """The output entry of one answer, and whether a strategy was found in it."""
    named = parse_strategy(answer)
    return {"id": sample_id, "strategy": released_label(named or OTHERS), "motivation": answer}, named is not None


def entries_from_answers(ids: Sequence[str], answers: Sequence[str]) -> tuple[list[dict], int]:
    """Entries for aligned ids/answers and the number of answers that named no strategy."""
    if len(ids) != len(answers):
        raise ValueError(f"{len(ids)} ids but {len(answers)} answers")
    entries, unparsed = [], 0
    for i, a in zip(ids, answers):
        e, ok = answer_to_entry(i, a)
        entries.append(e)
        unparsed += not ok
    return entries, unparsed


def strategy_metrics(gold_ids: Sequence[int], pred_ids: Sequence[int]) -> dict:
    """accuracy / macro_f1 / weighted_f1, the 8x8 confusion matrix (rows gold) and per-label counts."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if len(gold_ids) != len(pred_ids) or not gold_ids:
        raise ValueError(f"need as many predictions as gold labels (>0), got {len(pred_ids)} and {len(gold_ids)}")
    labels = list(range(len(STRATEGIES)))
    return {
        "n": len(gold_ids),
        "accuracy": float(accuracy_score(gold_ids, pred_ids)),
        "macro_f1": float(f1_score(gold_ids, pred_ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold_ids, pred_ids, average="weighted", zero_division=0)),
        "confusion": confusion_matrix(gold_ids, pred_ids, labels=labels).tolist(),
        "gold_counts": [int(sum(g == k for g in gold_ids)) for k in labels],
        "pred_counts": [int(sum(p == k for p in pred_ids)) for k in labels],
    }


def _entry_strategy_id(entry: dict, where: str) -> int:
    try:
        return strategy_id(entry["strategy"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: no valid \"strategy\" field ({e})") from None


def match_gold(entries: Sequence[dict], gold: dict[str, int], what: str) -> tuple[list[int], list[int]]:
    """(gold ids, predicted ids) of the entries, matched by sample id; every entry must have a gold label."""
    g, p = [], []
    for k, e in enumerate(entries):
        sid = e.get("id") if isinstance(e, dict) else None
        if sid not in gold:
            raise ValueError(f"{what}: entry {k} has id {sid!r}, which is not a sample of the gold file")
        g.append(gold[sid])
        p.append(_entry_strategy_id(e, f"{what}: entry {k} ({sid})"))
    return g, p


def gold_strategies(path: str, split: str, test_mode: str = "last") -> dict[str, int]:
    """Sample id -> gold strategy id of a dialogue file."""
    return {s.id: s.strategy_id for s in load_samples(path, split, test_mode)}


def plot_confusion(confusion: list[list[int]], path: str, title: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    short = [s if len(s) < 16 else s[:14] + "…" for s in STRATEGIES]
    ax.set_xticks(range(len(STRATEGIES)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(STRATEGIES)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report_split(entries: Sequence[dict], gold: dict[str, int], out_prefix: str, split: str,
                 unparsed: int | None = None) -> dict:
    """Metrics of one split; writes ``<out_prefix>_report.json`` and ``<out_prefix>_confusion.png``."""
    g, p = match_gold(entries, gold, out_prefix)
    m = strategy_metrics(g, p)
    m["split"] = split
    m["gold_samples"] = len(gold)
    if unparsed is None:  # entries read back from a file: unparsed answers are those naming no label
        unparsed = sum(parse_strategy(e.get("motivation")) is None for e in entries)
    m["unparsed_as_others"] = unparsed
    m["labels"] = list(STRATEGIES)
    atomic_write_json(out_prefix + "_report.json", m)
    plot_confusion(m["confusion"], out_prefix + "_confusion.png",
                   f"{split}: acc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} (n={m['n']})")
    return m


def format_table(reports: Sequence[dict]) -> str:
    head = f"{'split':<8}{'n':>7}{'accuracy':>10}{'macro-F1':>10}{'weighted-F1':>13}{'no label':>10}"
    rows = [head, "-" * len(head)]
    for m in reports:
        rows.append(f"{m['split']:<8}{m['n']:>7}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}"
                    f"{m['weighted_f1']:>13.4f}{m['unparsed_as_others']:>10}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# Inference over prompt files (LLM_inference/infer_strategy.py)
def ids_sidecar(path: str) -> str:
    """``x/prompts_4_LLaMA_test.json`` -> ``x/prompts_4_LLaMA_test.ids.json`` (written by step 2)."""
    root, ext = os.path.splitext(path)
    return root + ".ids" + ext


def load_prompt_file(path: str, split: str) -> tuple[list[str], list[str]]:
    """``(ids, prompts)`` of a prompt file: a list of strings (valid/test) or of ``{"instruction", ...}``
    objects (the train file). Ids come from the ``.ids.json`` sidecar; without one they are
    ``"<split>-<position>"`` (with a warning: such outputs cannot be checked against the dialogues)."""
    import warnings

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
    sidecar = ids_sidecar(path)
    if os.path.exists(sidecar):
        ids = load_json(sidecar, "list of sample ids")
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ValueError(f"{sidecar}: expected a JSON list of sample id strings")
        if len(ids) != len(prompts):
            raise ValueError(f"{sidecar}: {len(ids)} ids for {len(prompts)} prompts in {path}; "
                             "regenerate both with create_prompts_4_LLaMA.py")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{sidecar}: duplicate sample ids")
    else:
        warnings.warn(f"{sidecar} not found: using ids \"{split}-<position>\", which cannot be matched "
                      "against the dialogue files", stacklevel=2)
        ids = [f"{split}-{i}" for i in range(len(prompts))]
    return ids, prompts


def write_entries(path: str, entries: list[dict]) -> None:
    """Released layout (``json.dumps(..., indent=2)``), written atomically."""
    atomic_write_json(path, entries, indent=2)


SPLIT_SUFFIX = {"train": "", "valid": "_valid", "test": "_test"}


def output_name(split: str) -> str:
    """``strategy_with_motivation.json`` (train), ``..._valid.json``, ``..._test.json`` (released names)."""
    return f"strategy_with_motivation{SPLIT_SUFFIX[split]}.json"


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
    shard: tuple[int, int] | None = None  # (K, N): answer only shard K of N (src/strategy_shards.py)
    merge_shards: int | None = None  # N: write the outputs from the N shard caches, no model


class InferenceIncomplete(RuntimeError):
    pass


def _sent_prompt(cfg: InferenceConfig, prompt: str, tokenizer=None) -> str:
    """What the backend's cache key is made of: the instruction, or for /v1/completions the templated text."""
    if cfg.backend == "openai" and cfg.openai_endpoint == "completions":
        from .local_llm import format_prompt
        return format_prompt(tokenizer, prompt, cfg.template)
    return prompt


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
    from .llm_client import chat_prompt_key, local_prompt_key

    if cfg.backend == "local":
        return local_prompt_key(prompt, cfg.model_path, cfg.template, cfg.max_new_tokens, cfg.do_sample, cfg.top_k,
                                cfg.temperature)
    if cfg.backend == "vllm":
        from .vllm_backend import vllm_prompt_key
        return vllm_prompt_key(prompt, cfg.model_path, cfg.template, cfg.max_new_tokens, cfg.do_sample, cfg.top_k,
                               cfg.temperature)
    return chat_prompt_key(_sent_prompt(cfg, prompt, tokenizer), cfg.model or cfg.model_path,
                           cfg.temperature if cfg.do_sample else 0.0, cfg.max_new_tokens, cfg.openai_endpoint)


def _answer_split(cfg: InferenceConfig, split: str, items: list, cache, model_and_tokenizer, stats: dict):
    from .llm_client import run_chat_requests, run_local_requests

    if cfg.backend == "vllm":
        from .vllm_backend import run_vllm_requests
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
    from .llm_client import JsonlCache
    from .local_llm import TEMPLATES

    from .strategy_shards import shard_cache_path, shard_share, union_answers

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
        splits[split] = (path, ids, prompts)
    golds = {split: gold_strategies(f, split, cfg.test_mode) for split, f in cfg.gold_files.items()
             if split in splits}  # read before hours of generation, so a bad file fails fast

    model_and_tokenizer = None
    if cfg.backend == "local" and not cfg.merge_shards:
        from .local_llm import load_causal_lm
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
            out = os.path.join(cfg.output_dir, output_name(split))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outputs", nargs="+", required=True, help="strategy_with_motivation*.json files")
    p.add_argument("--gold_file", nargs="+", required=True, help="dialogue file per output, same order")
    p.add_argument("--split", nargs="+", required=True, help="train/valid/test per output, same order")
    p.add_argument("--test_mode", default="last", choices=["last", "all"])
    args = p.parse_args(argv)
    if not len(args.outputs) == len(args.gold_file) == len(args.split):
        p.error("--outputs, --gold_file and --split need the same number of values")
    reports = []
    try:
        for out, gold_file, split in zip(args.outputs, args.gold_file, args.split):
            entries = load_json(out, "list of strategy entries")
            if not isinstance(entries, list):
                raise ValueError(f"{out}: expected a JSON list of {{id, strategy, motivation}} entries")
            reports.append(report_split(entries, gold_strategies(gold_file, split, args.test_mode),
                                        os.path.splitext(out)[0], split))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
