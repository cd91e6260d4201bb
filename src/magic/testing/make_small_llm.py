r"""Build a small, randomly initialised Llama directory usable wherever a causal LM is expected (the demo's
motivation collector and strategy LLM, tests, benchmarks); nothing is downloaded.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the given texts, wrapped in
``PreTrainedTokenizerFast`` with ``<unk> <s> </s> <pad>`` (ids 0-3); it adds BOS the way Llama's does and
carries a minimal chat template. The weights come from a seeded ``LlamaConfig``.

    python src/magic/testing/make_small_llm.py --output_dir DIR --train_file LLM_inference/prompts_4_LLaMA.json \
        [--vocab_size 1000 --hidden_size 64 --layers 2 --heads 4]

FILE is a prompt file of step 2 (a list of {"instruction", "output"} or of strings), a list of motivation
strings, or an ESConv JSON-lines ``.txt``.
"""
from __future__ import annotations

import argparse
import os
from typing import Iterable, Sequence

from magic.esconv.dialogues import STRATEGIES, dialogue_texts
from magic.common.io_utils import atomic_dir, load_json
from magic.common.validate import positive_int, seed_int
from magic.llm.prompts import wrap_default_template

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
# Always in the tokenizer's training text: the template words, the labels as the LLM writes them, digits
# and punctuation, so that every prompt tokenises into reasonably short sequences.
BASE_TEXTS = [
    wrap_default_template("Motivation:"),
    *(f"The motivation of the supporter in choosing the strategy [{s}] is to" for s in STRATEGIES),
    *(f"[{s.lower()}]" for s in STRATEGIES),
    "0123456789 .,!?;:'\"()[]{}-_*#/\\",
]

# The tokenizer texts of make_tiny_llama (tests, benchmarks): the template words and labels as short tokens.
TINY_CORPUS = [
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


def texts_from_file(path: str | os.PathLike) -> list[str]:
    """Texts to train the tokenizer on: prompts and outputs of a JSON list, or an ESConv .txt's turns."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()[:1]
    if head == "[":
        items = load_json(path, "JSON list of prompts or texts")
        texts = []
        for item in items:
            if isinstance(item, dict):
                texts += [str(v) for k, v in item.items() if k in ("instruction", "output", "motivation")]
            else:
                texts.append(str(item))
        return texts
    return dialogue_texts(path)


def make_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (+ BASE_TEXTS), adding BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) + BASE_TEXTS * 3, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_small_llm(output_dir: str | os.PathLike, texts: Sequence[str] = (), vocab_size: int = 1000,
                   hidden_size: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
                   max_position_embeddings: int = 4096, kv_heads: int | None = None) -> str:
    """Write a random LlamaForCausalLM and its tokenizer to output_dir (built in a temporary folder, then
    renamed). Returns output_dir. ``kv_heads`` < ``heads`` gives grouped-query attention (default: heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by heads {heads}")
    kv_heads = heads if kv_heads is None else kv_heads
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"heads {heads} is not a multiple of kv_heads {kv_heads}")
    output_dir = os.path.abspath(os.fspath(output_dir))
    with atomic_dir(output_dir) as tmp:
        tokenizer = make_tokenizer(texts, vocab_size)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        gen = model.generation_config
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return output_dir


def make_tiny_llama(tmp_dir: str | os.PathLike, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 4, seed: int = 0, vocab_size: int = 400, kv_heads: int | None = None) -> str:
    """A tiny random Llama (hidden 32, 2 layers, 4 heads) and its 400-token BPE under ``tmp_dir/tiny-llama``, built
    in well under 2 s for tests and benchmarks; seeded, so equal arguments give identical weights. Returns the path."""
    return make_small_llm(os.path.join(os.fspath(tmp_dir), "tiny-llama"), TINY_CORPUS * 3, vocab_size=vocab_size,
                          hidden_size=hidden_size, layers=num_layers, heads=num_heads, seed=seed,
                          max_position_embeddings=2048, kv_heads=kv_heads)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_file", default=None, help="texts for the tokenizer (see the module docstring)")
    p.add_argument("--vocab_size", type=positive_int, default=1000)
    p.add_argument("--hidden_size", type=positive_int, default=64)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--kv_heads", type=positive_int, default=None, help="key/value heads (default --heads; fewer = GQA)")
    p.add_argument("--seed", type=seed_int, default=0)
    a = p.parse_args(argv)
    texts = texts_from_file(a.train_file) if a.train_file else []
    out = make_small_llm(a.output_dir, texts, a.vocab_size, a.hidden_size, a.layers, a.heads, a.seed,
                         kv_heads=a.kv_heads)
    print(f"wrote a random Llama ({a.hidden_size}d, {a.layers} layers) with a {len(texts)}-text BPE to {out}")


if __name__ == "__main__":
    main()
