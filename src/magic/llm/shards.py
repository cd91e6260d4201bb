"""Strategy inference split over N independent processes (``infer_strategy.py --shard K/N``), no coordinator.

Each split's prompts are cut into the fixed batches an unsharded run would form (``--batch_size`` slices
in the run's order); process K answers the batches whose index is K modulo N, so every prompt is
generated in exactly the batch (same padding, same shared prefixes) it would have had in one process:
the answers, and so the files, are the unsharded run's. Process K caches its answers in
``<cache>.shard<K>of<N>.jsonl`` (its own file: no two writers share one). When a process has finished
its batches it reads every shard cache (read-only) and, if the split is complete, writes the usual
output files; so the last process to finish writes them, and ``--merge_shards N`` (no model loaded)
writes them from the caches at any time later, refusing while a shard is incomplete. Answers are found
by sample id and the same cache key the answering process used, so the merge runs with the same
arguments (model path, template, generation settings) as the shards.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from magic.llm.engines.cache import JsonlCache


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N; ValueError otherwise."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 0/2 (process 0 of 2)") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def shard_cache_path(cache_file: str, k: int, n: int) -> str:
    """``x/cache.jsonl`` -> ``x/cache.shard0of2.jsonl``."""
    root, ext = os.path.splitext(cache_file)
    return f"{root}.shard{k}of{n}{ext or '.jsonl'}"


def shard_share(items: Sequence, batch_size: int, k: int, n: int) -> list:
    """The items of batches k, k+n, k+2n, ... of ``items`` cut in ``batch_size`` slices, in order.

    Every batch but the last is full, so slicing the result by ``batch_size`` again gives back exactly
    these batches (what the backends do)."""
    batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
    return [x for b, batch in enumerate(batches) if b % n == k for x in batch]


def union_answers(cache_file: str, n: int, items: Sequence[tuple[str, str]], key_of: Callable[[str, str], str],
                  batch_size: int) -> tuple[dict[str, str], dict[int, int]]:
    """Answers of ``items`` = [(id, prompt)] found in the N shard caches, and {shard: prompts it still lacks}."""
    caches = [JsonlCache(shard_cache_path(cache_file, k, n), readonly=True) for k in range(n)]
    answers: dict[str, str] = {}
    missing: dict[int, int] = {}
    for k, cache in enumerate(caches):
        for i, p in shard_share(items, batch_size, k, n):
            a = cache.get(i, key_of(i, p))
            if a is None:
                missing[k] = missing.get(k, 0) + 1
            else:
                answers[i] = a
    return answers, missing
