"""Motivation collection throughput: released behaviour vs ours, against the stub with fixed latency.

    python benchmarks/bench_collect.py [--n 200] [--latency 0.2] [--concurrency 16] [--measure_sleep]

Released: one request at a time, then ``sleep(3)``. Its rate is computed from the measured per-call time
of sequential requests plus 3 s (``--measure_sleep`` really sleeps, on a few calls). Ours:
``run_chat_requests`` at ``--concurrency`` with the fsynced answer cache, as the script runs it.
Target: ours / released >= 30x.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from magic.common.validate import non_negative_float
from magic.llm.engines.cache import JsonlCache
from magic.llm.engines.openai import make_openai_client, run_chat_requests
from magic.llm.motivations import build_items
from magic.testing.openai_stub import StubServer

RELEASED_SLEEP = 3.0


def make_items(train_file: str, n: int) -> list[tuple[str, str]]:
    """n real ChatGPT prompts (cycled over the file's samples, each copy with its own id)."""
    _, base = build_items(train_file)
    return [(f"{base[k % len(base)][0]}#{k // len(base)}", base[k % len(base)][1]) for k in range(n)]


def released_like(stub: StubServer, items, sleep: float) -> float:
    """Seconds for ``items`` the released way: sequential calls, each followed by ``sleep``."""
    client = make_openai_client(stub.base_url, "EMPTY", timeout=30)
    t0 = time.perf_counter()
    for _, prompt in items:
        client.chat.completions.create(model="gpt-3.5-turbo-0125", messages=[{"role": "user", "content": prompt}])
        time.sleep(sleep)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_file", default="data/demo/train.txt")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--latency", type=non_negative_float, default=0.2, help="stub seconds per answer")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--sequential_n", type=int, default=10, help="calls to time the released per-call cost")
    p.add_argument("--measure_sleep", action="store_true", help="also run 3 released calls with the real sleep")
    args = p.parse_args()

    items = make_items(args.train_file, args.n)
    with StubServer(latency=args.latency) as stub:
        per_call = released_like(stub, items[: args.sequential_n], 0.0) / args.sequential_n
        released_rate = 1.0 / (per_call + RELEASED_SLEEP)
        measured = None
        if args.measure_sleep:
            measured = 3 / released_like(stub, items[:3], RELEASED_SLEEP)

        with tempfile.TemporaryDirectory() as tmp:
            with JsonlCache(os.path.join(tmp, "cache.jsonl")) as cache:
                t0 = time.perf_counter()
                res = run_chat_requests(items, model="gpt-3.5-turbo-0125", base_url=stub.base_url, api_key="EMPTY",
                                        concurrency=args.concurrency, cache=cache, progress=False)
                ours_s = time.perf_counter() - t0
            assert len(res.answers) == len(items) and not res.failed
            # a rerun of a finished collection: everything from the cache, no request
            with JsonlCache(os.path.join(tmp, "cache.jsonl")) as cache:
                t0 = time.perf_counter()
                res2 = run_chat_requests(items, model="gpt-3.5-turbo-0125", base_url=stub.base_url,
                                         api_key="EMPTY", cache=cache, progress=False)
                resume_s = time.perf_counter() - t0
            assert res2.from_cache == len(items)

    ours_rate = len(items) / ours_s
    print(f"prompts: {len(items)} real ChatGPT prompts from {args.train_file}; stub latency {args.latency * 1000:.0f} ms")
    print(f"released (sequential + {RELEASED_SLEEP:g} s sleep): {released_rate:.3f} prompts/s "
          f"[computed: measured {per_call * 1000:.1f} ms per call over {args.sequential_n} calls + 3 s]")
    if measured is not None:
        print(f"released, measured with the real sleep on 3 calls: {measured:.3f} prompts/s")
    print(f"released without the sleep (sequential only): {1 / per_call:.2f} prompts/s")
    print(f"ours (--concurrency {args.concurrency}, fsynced cache): {ours_rate:.2f} prompts/s "
          f"({ours_s:.2f} s for {len(items)})")
    print(f"speed-up vs released: {ours_rate / released_rate:.0f}x (target >= 30x); "
          f"vs sequential without sleep: {ours_rate * per_call:.1f}x")
    print(f"rerun of a finished collection (all cached, no requests): {resume_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
