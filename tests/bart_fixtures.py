"""Tiny BART directories for tests (shared with the evaluation tests).

``make_tiny_bart_dir(tmp_path)`` builds a random BART (d_model 32, 1 encoder + 1 decoder layer) with a
byte-level BPE of a few hundred tokens trained on ``texts`` (default: a fixed English corpus), through
src/magic/testing/make_small_bart.py. A few seconds at most; cached per (folder, texts).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

DEFAULT_TEXTS = [
    "I feel so stressed about my job and I do not know what to do.",
    "That sounds really hard. How long have you been feeling this way?",
    "For a few months now. My boss keeps giving me more work.",
    "I understand, I have been in a similar situation before.",
    "Have you tried talking to your boss about the workload?",
    "You are doing the best you can, and that is enough.",
    "Hello, how are you doing today?",
    "I am not doing well, my friend stopped talking to me.",
    "It seems like you are feeling lonely and hurt.",
    "Maybe you could write down what you want to say to your friend first.",
    "Thank you, that is helpful. I will try that.",
    "You are welcome. I hope everything works out for you.",
    "The pandemic made it hard to see my family.",
    "So you miss your family and feel isolated?",
    "Yes, exactly. I really miss them a lot.",
    "Video calls can help you stay in touch with them.",
] * 4


def make_tiny_bart_dir(tmp_path: str | os.PathLike, texts: Sequence[str] | None = None, vocab_size: int = 400,
                       d_model: int = 32, layers: int = 1, heads: int = 2, name: str = "tiny_bart") -> Path:
    """A random BART directory (config.json, model.safetensors, tokenizer files) under tmp_path/name."""
    from magic.testing.make_small_bart import make_small_bart

    out = Path(tmp_path) / name
    if (out / "config.json").exists():
        return out
    make_small_bart(out, list(texts) if texts else DEFAULT_TEXTS, vocab_size=vocab_size, d_model=d_model,
                    layers=layers, heads=heads, max_position_embeddings=1024, seed=0)
    return out


def make_records(n_dialogues: int = 3, turns: int = 6, seed: int = 0) -> list[dict]:
    """Generator records (the data/*.json contract) from synthetic dialogues: every supporter turn after a
    seeker turn is a sample whose memory is the earlier supporter turns, as magic.esconv.dialogues enumerates them."""
    import random

    from magic.esconv.dialogues import STRATEGIES

    rng = random.Random(seed)
    recs = []
    for d in range(n_dialogues):
        texts = [rng.choice(DEFAULT_TEXTS) for _ in range(turns)]
        labels = [STRATEGIES[rng.randrange(len(STRATEGIES))] for _ in range(turns)]
        situation = rng.choice(DEFAULT_TEXTS)
        for t in range(1, turns, 2):  # seeker at even turns, supporter at odd ones
            recs.append({
                "id": f"synthetic-{d}-{t}",
                "context": [situation] + texts[:t],
                "response": texts[t],
                "strategy": labels[t],
                "gold_strategy": labels[t],
                "response_memory": [texts[k] for k in range(1, t, 2)],
                "strategy_memory": [labels[k] for k in range(1, t, 2)],
                "motivation": "" if t == 1 else f"The seeker needs {labels[t].lower()}.",
            })
    return recs


def records_with_ids(n, split, seed=0):
    """``make_records`` with sample ids of ``split`` (three targets per dialogue: turns 1, 3, 5)."""
    recs = make_records(n, seed=seed)
    for k, r in enumerate(recs):
        r["id"] = f"{split}-{k // 3}-{2 * (k % 3) + 1}"
    return recs
