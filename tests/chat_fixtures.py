"""Tiny models for the chat tests: a random generator checkpoint saved as main.py saves it, a tiny strategy LLM.

``make_tiny_checkpoint(tmp)`` builds a random DialogueModel on the tiny BART of tests/bart_fixtures.py, puts a
few random vectors in some memory slots (so the fill levels differ) and writes it with
``checkpoint.save_checkpoint`` (dialogue_model.pth, memory_bank.pth, tokenizer, config.json, args.json).
Seconds, no training.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.scripts import script_env as chat_env

REPO = Path(__file__).resolve().parents[1]
FILL = (3, 0, 2, 0, 1, 0, 4, 0)  # entries put in the 8 memory slots


def make_tiny_checkpoint(tmp: str | os.PathLike, bart_dir: str | os.PathLike) -> Path:
    import torch
    from transformers import BartTokenizer

    from magic.generator.checkpoint import save_checkpoint
    from magic.generator.model import DialogueModel

    out = Path(tmp) / "out_model" / "bs_16_epochs_1_20260101_000000" / "epoch_0_val_ppl_99.0"
    if (out / "dialogue_model.pth").exists():
        return out
    torch.manual_seed(0)
    model = DialogueModel(str(bart_dir), strategy_memory_max=8, max_length=256)
    d = model.config.d_model
    model.load_memory_state([torch.randn(n, d) for n in FILL])
    tokenizer = BartTokenizer.from_pretrained(str(bart_dir))
    save_checkpoint(model, tokenizer, {"seed": 0, "note": "random tiny model for the chat tests"}, out)
    return out


def make_tiny_llm(tmp: str | os.PathLike) -> str:
    from magic.testing.make_small_llm import make_tiny_llama

    return make_tiny_llama(tmp)


def run_chat(args: list[str], stdin: str = "", timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """``python chat.py ARGS`` with ``stdin`` as the typed lines (not a terminal)."""
    return subprocess.run([sys.executable, str(REPO / "chat.py"), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=chat_env(), cwd=cwd or REPO)


def read_until(fd, needle: str, timeout: float = 120) -> str:
    """What a pty printed until ``needle`` appeared (AssertionError after ``timeout`` seconds)."""
    buf, end = "", time.time() + timeout
    while needle not in buf:
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {needle!r}; got:\n{buf}")
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data.decode("utf-8", "replace")
    return buf
