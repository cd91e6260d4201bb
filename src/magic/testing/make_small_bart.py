r"""Build a small, randomly initialised BART directory usable as ``--bart_base_dir`` (demo, tests, benchmarks).

The tokenizer is a byte-level BPE (as BART's) trained with ``tokenizers`` on the given texts and written
as vocab.json + merges.txt with BART's special tokens (<s> <pad> </s> <unk> at ids 0-3, <mask> last), so
``BartTokenizer.from_pretrained(DIR)`` loads it. The weights come from a ``BartConfig``; nothing is
downloaded.

    python src/magic/testing/make_small_bart.py --output_dir DIR --train_file data/train.json \
        [--vocab_size 2000 --d_model 256 --layers 2 --heads 4]

FILE is an ESConv JSON-lines ``.txt`` (MultiESC form) or a built ``data/*.json`` list of records.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from typing import Iterable, Sequence

from magic.common.io_utils import atomic_dir, load_json
from magic.common.validate import positive_int, seed_int

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in facebook/bart-base; <mask> goes last


def texts_from_file(path: str | os.PathLike) -> list[str]:
    """Every text of an ESConv .txt (situations and turns) or of a data/*.json file (context, responses,
    memory, motivations)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()[:1]
    if head == "[":
        from magic.generator.data import load_records

        texts = []
        for r in load_records(path):
            texts += list(r["context"]) + [r["response"]] + list(r["response_memory"])
            if r.get("motivation"):
                texts.append(r["motivation"])
        return texts
    from magic.esconv.dialogues import dialogue_texts

    return dialogue_texts(path)


def train_tokenizer_files(texts: Iterable[str], out_dir: str, vocab_size: int) -> int:
    """Train a byte-level BPE on ``texts``; write vocab.json and merges.txt into out_dir. Returns the vocab
    size including <mask>."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(list(texts), vocab_size=max(vocab_size - 1, 260 + len(SPECIALS)), min_frequency=2,
                            special_tokens=SPECIALS, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_model(tmp)
        vocab = load_json(os.path.join(tmp, "vocab.json"), "vocabulary")
        for i, s in enumerate(SPECIALS):
            if vocab.get(s) != i:
                raise RuntimeError(f"tokenizer training put {s} at id {vocab.get(s)}, expected {i}")
        vocab["<mask>"] = len(vocab)
        with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        shutil.copy(os.path.join(tmp, "merges.txt"), os.path.join(out_dir, "merges.txt"))
    return len(vocab)


def make_small_bart(output_dir: str | os.PathLike, texts: Sequence[str], vocab_size: int = 2000,
                    d_model: int = 256, layers: int = 2, heads: int = 4, ffn_dim: int | None = None,
                    max_position_embeddings: int = 1024, seed: int = 0) -> str:
    """Write config.json, model.safetensors and tokenizer files of a random BART into output_dir (atomically:
    built in a temporary folder, then renamed). Returns output_dir."""
    import torch
    from transformers import BartConfig, BartModel, BartTokenizer

    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
    output_dir = os.path.abspath(os.fspath(output_dir))
    with atomic_dir(output_dir) as tmp:
        n_vocab = train_tokenizer_files(texts, tmp, vocab_size)
        # loading from the two files checks that BartTokenizer reads them; save_pretrained adds the rest
        tokenizer = BartTokenizer.from_pretrained(tmp)
        if tokenizer.convert_tokens_to_ids(SPECIALS + ["<mask>"]) != [0, 1, 2, 3, n_vocab - 1]:
            raise RuntimeError("BartTokenizer does not map the special tokens as BART does")
        tokenizer.save_pretrained(tmp)
        config = BartConfig(
            vocab_size=n_vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads,
            encoder_ffn_dim=ffn_dim or 4 * d_model, decoder_ffn_dim=ffn_dim or 4 * d_model,
            max_position_embeddings=max_position_embeddings,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
        )
        torch.manual_seed(seed)
        BartModel(config).save_pretrained(tmp)
    return output_dir


# bart-base's shapes: what the paper trains (speed does not depend on the weights' values)
PAPER_BART = dict(d_model=768, layers=6, heads=12, vocab=50265)


def make_paper_shaped_bart(output_dir: str | os.PathLike, texts: Sequence[str], seed: int = 0) -> str:
    """A random BART of bart-base's shapes (d 768, 6+6 layers, 12 heads, FFN 3072, 50,265 tokens) with a
    byte-level BPE trained on ``texts``, for timing the paper configuration where bart-base cannot be
    downloaded. The trained BPE stops short of 50,265 tokens: the vocabulary is filled with tokens no merge
    produces (<mask> last, as in bart-base), so the embedding and output projection keep bart-base's size and
    the sequence lengths stay close to bart-base's on this text."""
    import torch
    from transformers import BartConfig, BartModel, BartTokenizer

    output_dir = os.path.abspath(os.fspath(output_dir))
    n = PAPER_BART["vocab"]
    with atomic_dir(output_dir) as tmp:
        train_tokenizer_files(texts, tmp, n)
        vocab = load_json(os.path.join(tmp, "vocab.json"), "vocabulary")
        mask = vocab.pop("<mask>")
        for i in range(mask, n - 1):
            vocab[f"<unused{i}>"] = i
        vocab["<mask>"] = n - 1
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        BartTokenizer.from_pretrained(tmp).save_pretrained(tmp)
        d = PAPER_BART["d_model"]
        cfg = BartConfig(vocab_size=n, d_model=d, encoder_layers=PAPER_BART["layers"],
                         decoder_layers=PAPER_BART["layers"], encoder_attention_heads=PAPER_BART["heads"],
                         decoder_attention_heads=PAPER_BART["heads"], encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d,
                         max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         decoder_start_token_id=2, forced_eos_token_id=2)
        torch.manual_seed(seed)
        BartModel(cfg).save_pretrained(tmp)
    return output_dir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_file", required=True, help="ESConv .txt (JSON lines) or a built data/*.json")
    p.add_argument("--vocab_size", type=positive_int, default=2000)
    p.add_argument("--d_model", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=2, help="encoder layers = decoder layers")
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--max_position_embeddings", type=positive_int, default=1024)
    p.add_argument("--seed", type=seed_int, default=0)
    a = p.parse_args(argv)
    texts = texts_from_file(a.train_file)
    out = make_small_bart(a.output_dir, texts, a.vocab_size, a.d_model, a.layers, a.heads,
                          max_position_embeddings=a.max_position_embeddings, seed=a.seed)
    print(f"wrote a random BART ({a.d_model}d, {a.layers}+{a.layers} layers) with a {len(texts)}-text BPE to {out}")


if __name__ == "__main__":
    main()
