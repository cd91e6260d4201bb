"""Tiny random Llama + byte-level BPE tokenizer, saved to a folder like a Hub checkpoint (for tests).

``make_tiny_llama(tmp_dir)`` builds, in well under 2 s and with no network:

* a byte-level BPE tokenizer trained with ``tokenizers`` on a few strategy/motivation sentences (so the 8
  strategy labels and the template words are short token sequences), wrapped in
  ``PreTrainedTokenizerFast`` with ``<s>``/``</s>``/``<pad>``/``<unk>``; a ``TemplateProcessing``
  post-processor adds BOS the way Llama's tokenizer does, and a minimal chat template is set;
* a randomly initialised ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads, vocab = the tokenizer's).

Everything is seeded, so two calls with the same arguments give identical weights and vocabularies.
"""
from __future__ import annotations

import os

from src.esconv import STRATEGIES

_CORPUS = [
    "Human: Please infer the strategy of the supporter.\nAssistant: ",
    "The motivation of the supporter in choosing the strategy [question] is to learn more.",
    "The motivation of the supporter in choosing the strategy [restatement or paraphrasing] is to show understanding.",
    "The motivation of the supporter in choosing the strategy [reflection of feelings] is to validate emotions.",
    "The motivation of the supporter in choosing the strategy [self-disclosure] is to build rapport.",
    "The motivation of the supporter in choosing the strategy [affirmation and reassurance] is to comfort.",
    "The motivation of the supporter in choosing the strategy [providing suggestions or information] is to help.",
    "The motivation of the supporter in choosing the strategy [greeting] is to open the conversation.",
    "The motivation of the supporter in choosing the strategy [others] is to keep talking.",
    "(1) Seeker: I feel so sad and lonely since I lost my job. (2) Supporter: I am sorry to hear that. [Question]",
    "Motivation: The supporter wants to understand the seeker's situation and feelings.",
    " ".join(STRATEGIES),
    "0123456789 .,!?;:'\"()[]{}-_*#/\\",
]

def make_tokenizer(vocab_size: int = 400):
    """A seeded byte-level BPE ``PreTrainedTokenizerFast`` that adds BOS (not EOS) like Llama's."""
    from src.make_small_llm import make_tokenizer as build

    return build(_CORPUS * 3, vocab_size)


def make_tiny_llama(tmp_dir: str | os.PathLike, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 4, seed: int = 0, vocab_size: int = 400, kv_heads: int | None = None) -> str:
    """Save a tiny random LlamaForCausalLM and its tokenizer under ``tmp_dir/tiny-llama``; return the path."""
    from src.make_small_llm import make_small_llm

    return make_small_llm(os.path.join(os.fspath(tmp_dir), "tiny-llama"), _CORPUS * 3, vocab_size=vocab_size,
                          hidden_size=hidden_size, layers=num_layers, heads=num_heads, seed=seed,
                          max_position_embeddings=2048, kv_heads=kv_heads)
