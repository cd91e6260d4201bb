"""Tiny BART directories for tests (shared with the evaluation tests).

``make_tiny_bart_dir(tmp_path)`` builds a random BART (d_model 32, 1 encoder + 1 decoder layer) with a
byte-level BPE of a few hundred tokens trained on ``texts`` (default: a fixed English corpus), through
src/make_small_bart.py. A few seconds at most; cached per (folder, texts).
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
    from src.make_small_bart import make_small_bart

    out = Path(tmp_path) / name
    if (out / "config.json").exists():
        return out
    make_small_bart(out, list(texts) if texts else DEFAULT_TEXTS, vocab_size=vocab_size, d_model=d_model,
                    layers=layers, heads=heads, max_position_embeddings=1024, seed=0)
    return out
