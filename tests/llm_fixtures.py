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

import torch

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

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def make_tokenizer(vocab_size: int = 400):
    """A seeded byte-level BPE ``PreTrainedTokenizerFast`` that adds BOS (not EOS) like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llama(tmp_dir: str | os.PathLike, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 4, seed: int = 0, vocab_size: int = 400) -> str:
    """Save a tiny random LlamaForCausalLM and its tokenizer under ``tmp_dir/tiny-llama``; return the path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = os.path.join(os.fspath(tmp_dir), "tiny-llama")
    tokenizer = make_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
