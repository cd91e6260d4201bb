"""Denoising pre-training of a small random BART on in-domain utterances (the study's stand-in for bart-base,
which no registry here ships): BART's text-infilling objective -- spans with Poisson(3) lengths covering 30 %
of the tokens, each replaced by one <mask> -- reconstructed by the decoder, as BART was pre-trained on
general text (docs/FIDELITY.md). The result is a BART folder main.py loads with --bart_base_dir.

    python -m magic.generator.pretrain --bart_dir SMALL_BART --train_data data/train.json --output_dir OUT

Exit codes: 0 done; 2 bad input (one line naming the file).
"""
from __future__ import annotations

import argparse
import math
import os
import random

import torch
from tqdm import tqdm

from magic.common.errors import run_main
from magic.common.io_utils import atomic_dir
from magic.common.validate import positive_float, positive_int, seed_int
from magic.generator.data import load_records, pad_ids


def utterances(records: list[dict]) -> list[str]:
    """Every distinct utterance of the records (context turns and responses), in first-seen order."""
    seen, out = set(), []
    for r in records:
        for text in [*r["context"], r["response"]]:
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def infill(ids: list[int], mask_id: int, rng: random.Random, ratio: float = 0.3, lam: float = 3.0) -> list[int]:
    """Text infilling on the tokens between <s> and </s>: spans (Poisson(lam) lengths, at least 1) covering
    about ``ratio`` of them, each replaced by a single mask token."""
    body = ids[1:-1]
    n = len(body)
    budget = max(1, round(n * ratio)) if n else 0
    masked = [False] * n
    while budget > 0 and n:
        length = max(1, min(budget, _poisson(lam, rng)))
        start = rng.randrange(0, max(1, n - length + 1))
        for i in range(start, min(n, start + length)):
            if not masked[i]:
                masked[i] = True
                budget -= 1
    out, prev = [ids[0]], False
    for tok, m in zip(body, masked):
        if m:
            if not prev:
                out.append(mask_id)
        else:
            out.append(tok)
        prev = m
    return out + [ids[-1]]


def _poisson(lam: float, rng: random.Random) -> int:
    # Knuth's method: small lambda, a handful of draws
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def pretrain(bart_dir: str, texts: list[str], output_dir: str, epochs: float = 2.0, lr: float = 1e-3,
             batch_size: int = 32, max_length: int = 64, seed: int = 0, device: str = "cpu") -> dict:
    from transformers import BartForConditionalGeneration, BartTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = BartTokenizer.from_pretrained(bart_dir)
    model = BartForConditionalGeneration.from_pretrained(bart_dir).to(device)
    encoded = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total = max(1, round(steps_per_epoch * epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=min(100, total // 10), num_training_steps=total)
    model.train()
    losses, step = [], 0
    bar = tqdm(total=total, desc="denoising pre-training", dynamic_ncols=True, mininterval=1.0)
    while step < total:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            if step >= total:
                break
            batch = [encoded[i] for i in order[b:b + batch_size]]
            noisy = [infill(ids, tok.mask_token_id, rng) for ids in batch]
            src = pad_ids(noisy, tok.pad_token_id)
            labels = pad_ids(batch, -100)
            out = model(input_ids=src.to(device), attention_mask=(src != tok.pad_token_id).to(device),
                        labels=labels.to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(out.loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    bar.close()
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    tail = losses[-max(1, steps_per_epoch // 10):]
    return {"steps": step, "texts": len(texts), "first_loss": losses[0], "final_loss": sum(tail) / len(tail)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bart_dir", required=True, help="the BART folder to start from (e.g. a small random one)")
    p.add_argument("--train_data", required=True, help="generator records (data/train.json): their utterances")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--epochs", type=positive_float, default=2.0)
    p.add_argument("--learning_rate", type=positive_float, default=1e-3)
    p.add_argument("--batch_size", type=positive_int, default=32)
    p.add_argument("--max_length", type=positive_int, default=64, help="tokens per utterance")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    texts = utterances(load_records(args.train_data))
    result = pretrain(args.bart_dir, texts, args.output_dir, args.epochs, args.learning_rate, args.batch_size,
                      args.max_length, args.seed, args.device)
    print(f"pre-trained on {result['texts']} utterances, {result['steps']} steps, loss {result['first_loss']:.3f} "
          f"-> {result['final_loss']:.3f}; wrote {os.path.abspath(args.output_dir)}")


if __name__ == "__main__":
    raise SystemExit(run_main("pretrain", main))
