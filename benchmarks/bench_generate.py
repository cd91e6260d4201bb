"""Decoding speed: our cached beam search vs the released approach (re-run the whole model for every beam at
every step, no cache, encoder included), same DialogueModel, 5 beams, 64 new tokens.

    python benchmarks/bench_generate.py [--d_model 256 --layers 2 --vocab 50265 --context_len 256]

The model is a randomly initialised DialogueModel (BART d_model 256, 2 encoder + 2 decoder layers, 4 heads,
BART's 50,265-token vocabulary unless changed), memory bank filled with random entries. Speed does not depend
on the weights. Both sides decode exactly ``--new_tokens`` tokens (EOS is disabled for the measurement, as the
released loop never stops at EOS), so the ratio measures the algorithm, not early stopping; our decoding with
EOS stopping on is faster still with a trained model. Prints samples/s for both and the ratio (target >= 10x).
"""
import argparse
import os
import time

import torch

from magic.generator.beam_search import beam_search


def build_model(d_model: int, layers: int, heads: int, vocab: int, seed: int = 0):
    from transformers import BartConfig

    from magic.generator.model import DialogueModel
    cfg = BartConfig(vocab_size=vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                     encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
                     decoder_ffn_dim=4 * d_model, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(seed)
    model = DialogueModel(cfg).eval()
    model.load_memory_state([torch.randn(16, d_model) for _ in range(model.num_strategies)])
    return model


@torch.no_grad()
def ours(model, ids, mask, strategy, beams: int, new_tokens: int) -> None:
    enc, enc_mask = model.encode(ids, mask, strategy)
    beam_search(model, enc, enc_mask, decoder_start_token_id=model.decoder_start_token_id,
                eos_token_id=model.eos_token_id, pad_token_id=model.pad_token_id, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, num_beams=beams)


@torch.no_grad()
def naive(model, ids, mask, strategy, beams: int, new_tokens: int) -> None:
    """The released loop's cost structure: one full forward (encoder + memory attention + decoder over the
    whole prefix, no cache) for the start token, then for every step and every beam again, keeping the best
    ``beams`` of beams x beams expansions. (Scores are log-probabilities here; the cost is the same.)"""
    def full(prefix):
        enc, enc_mask = model.encode(ids, mask, strategy)
        logits, _ = model.decode(torch.tensor([prefix]), enc, enc_mask, use_cache=False)
        return torch.log_softmax(logits[0, -1].float(), -1)

    lp = full([model.decoder_start_token_id])
    top, idx = lp.topk(beams)
    hyps = [([model.decoder_start_token_id, int(i)], float(s)) for s, i in zip(top, idx)]
    for _ in range(new_tokens - 1):
        cand = []
        for seq, score in hyps:
            lp = full(seq)
            top, idx = lp.topk(beams)
            cand += [(seq + [int(i)], score + float(s)) for s, i in zip(top, idx)]
        hyps = sorted(cand, key=lambda c: c[1], reverse=True)[:beams]


def timed(fn, model, inputs, beams, new_tokens) -> float:
    t = time.perf_counter()
    for ids, mask, strategy in inputs:
        fn(model, ids, mask, strategy, beams, new_tokens)
    return len(inputs) / (time.perf_counter() - t)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=50265)
    p.add_argument("--context_len", type=int, default=256, help="context tokens per sample")
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--samples", type=int, default=8, help="samples for our decoding")
    p.add_argument("--naive_samples", type=int, default=2, help="samples for the naive loop (slow)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = build_model(args.d_model, args.layers, args.heads, args.vocab)
    g = torch.Generator().manual_seed(1)

    def sample(i):
        ids = torch.randint(4, args.vocab - 1, (1, args.context_len), generator=g)
        return ids, torch.ones_like(ids), torch.tensor([i % 8])

    inputs = [sample(i) for i in range(max(args.samples, args.naive_samples))]
    ours(model, *inputs[0], args.beams, 4)  # warm-up
    ours_sps = timed(ours, model, inputs[:args.samples], args.beams, args.new_tokens)
    naive_sps = timed(naive, model, inputs[:args.naive_samples], args.beams, args.new_tokens)
    print(f"model: DialogueModel, BART d_model {args.d_model}, {args.layers}+{args.layers} layers, {args.heads} heads, "
          f"vocab {args.vocab}; context {args.context_len} tokens; {args.beams} beams, {args.new_tokens} new tokens; "
          f"CPU, {args.threads} thread(s)")
    print(f"ours  (cached beam search, encoder once): {ours_sps:8.3f} samples/s  ({args.samples} samples)")
    print(f"naive (released loop, full re-run/beam/step): {naive_sps:8.3f} samples/s  ({args.naive_samples} samples)")
    print(f"speed-up: {ours_sps / naive_sps:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
