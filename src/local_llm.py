"""A local causal LM for the strategy step: loading, prompt templates and batched greedy/sampled generation.

Shared by fine-tuning (template), strategy inference and the motivation collector's local backend.

* ``load_causal_lm``: model + tokenizer from a folder or hub id, tokenizer padded on the LEFT (decoder-only
  models continue from the last position, so the prompt must end at the right edge of the batch).
* ``format_prompt``: ``"default"`` = LLaMA-Factory's ``default`` template (``Human: {instruction}\\nAssistant: ``),
  which is what the paper fine-tuned with; ``"chat"`` = the tokenizer's own chat template; ``"none"``.
* ``generate_batch``: one ``model.generate`` call per batch; returns only the new text.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from .prompts import wrap_default_template

TEMPLATES = ("default", "chat", "none")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "auto": "auto"}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(names)}")
    return names[dtype]


def prepare_tokenizer(tokenizer):
    """Left padding, and a pad token (EOS, else UNK) when the tokenizer has none (Llama-2 has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise ValueError("tokenizer has no pad, eos or unk token to pad batches with")
    return tokenizer


def load_causal_lm(model_name_or_path: str | os.PathLike, device: str | None = None, dtype=None):
    """Load ``(model, tokenizer)``; the model is in eval mode on ``device`` (default: cuda if available).

    ``dtype``: a torch dtype, a name ("float32", "bf16", ...), "auto" (the checkpoint's), or None (float32).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.fspath(model_name_or_path)
    if os.path.sep in path and not os.path.isdir(path) and path.startswith((".", os.path.sep)):
        raise FileNotFoundError(f"{path}: model folder not found")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    kwargs = {}
    resolved = _resolve_dtype(dtype)
    if resolved is not None:
        kwargs["dtype"] = resolved
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.to(device or default_device())
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def format_prompt(tokenizer, prompt: str, template: str) -> str:
    """Wrap one instruction in a template ("default", "chat" or "none"); see the module docstring.

    "chat" falls back to "default" when the tokenizer has no chat template (e.g. base Llama-2).
    """
    if template == "default":
        return wrap_default_template(prompt)
    if template == "chat":
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        return wrap_default_template(prompt)
    if template == "none":
        return prompt
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")


def encode_prompts(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenise prompts as the tokenizer does (BOS added if it adds one) and left-pad them.

    A text that already starts with the BOS string (chat templates often write it) is tokenised without
    special tokens, so it does not get two BOS. Returns input_ids / attention_mask of shape (B, T).
    """
    bos = tokenizer.bos_token
    encoded = []
    for text in texts:
        add_special = not (bos and text.startswith(bos))
        encoded.append({"input_ids": tokenizer(text, add_special_tokens=add_special)["input_ids"]})
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer.pad(encoded, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = old_side
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def sampling_kwargs(do_sample: bool, top_k: int | None, temperature: float | None) -> dict:
    """``generate`` kwargs: greedy overrides any sampling defaults in the model's generation_config."""
    if not do_sample:
        return {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
    kwargs: dict = {"do_sample": True}
    if top_k is not None:
        kwargs["top_k"] = top_k
    if temperature is not None:
        kwargs["temperature"] = temperature
    return kwargs


@torch.inference_mode()
def generate_batch(model, tokenizer, texts: Sequence[str], max_new_tokens: int, do_sample: bool = False,
                   top_k: int | None = None, temperature: float | None = None) -> list[str]:
    """Generate one continuation per (already templated) text in a single left-padded batch.

    Returns the new text only (prompt removed, special tokens skipped, stripped of surrounding
    whitespace), generation stopping at EOS or after ``max_new_tokens`` tokens.
    """
    if not texts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    batch = encode_prompts(tokenizer, texts)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **sampling_kwargs(do_sample, top_k, temperature),
    )  # (B, T + new)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
