"""Faster LoRA steps with the same loss: logits only where there is a target, frozen layers run once.

Two things a LoRA step of ``sft.py`` computes and throws away:

* **Logits of prompt positions.** The loss is on the answer only (about 36 of 435 tokens of a demo prompt),
  yet a causal LM projects every position onto its vocabulary (SmolLM2: 49,152 words, a fifth of its
  forward FLOPs, and as much again backwards). ``answer_only_inputs`` asks for the answer positions only
  (transformers' ``logits_to_keep`` mask) and hands the loss the matching targets (``shift_labels``).
* **Frozen layers.** With LoRA on the top layers only (the demo: SmolLM2's top 6 of 30), the layers below
  hold no trainable weight: their output for an example is the same at every step of every epoch.
  ``FrozenLayerCache`` computes it once per example, sharing the common instruction prefix between
  examples (sorted, each example reuses the keys/values of the one before it, as inference does), and a
  step then runs only the trainable top: ``inputs_embeds`` = the cached states, the decoder's layer list cut
  to the top for the call (``top_only``).

* **A shared instruction, once per batch.** With several examples per step, every row repeats the same
  instruction (about 250 of a demo example's 435 tokens). ``shared_prefix_inputs`` runs the batch's common
  token prefix through the trainable top once (with gradients) and the rows only from there on, attending to
  its keys/values: the loss and gradients of the padded batch, fewer tokens (the prefix's gradient is the sum
  over the rows, as in the padded batch). LoRA dropout, where on, draws one mask for the shared prefix.

All three are exact up to float rounding (the same positions through the same weights; a masked position's
logits never entered the loss). The cache is checked at start against the full forward on one example and
is off wherever it would not be exact or not fit: a trainable weight below the top (embeddings included),
dropout in a frozen layer, gradient checkpointing, several processes, or states over ``max_bytes``.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import time
from typing import Sequence

import torch
from torch import nn

from magic.llm.local_model import IGNORE_INDEX, common_prefix_len

DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB of cached states: the demo needs 100 MB; the paper's 7B run would need 100 GB


def causal_lm(model) -> nn.Module:
    """The transformers causal LM inside a (peft / accelerate-wrapped) training model."""
    inner = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def answer_only_inputs(model, inputs: dict) -> dict:
    """``inputs`` plus ``logits_to_keep`` (a (B, T) mask of the positions whose next token is a target) and
    the matching ``shift_labels``; unchanged for a model whose forward has no ``logits_to_keep``.

    transformers' causal-LM loss shifts ``labels`` itself; given ``shift_labels`` it takes those as the
    targets of the kept logits, with the same reduction (mean, or sum / ``num_items_in_batch``)."""
    labels = inputs.get("labels")
    if labels is None or "logits_to_keep" not in inspect.signature(causal_lm(model).forward).parameters:
        return inputs
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return {**inputs, "logits_to_keep": keep, "shift_labels": labels[:, 1:][keep[:, :-1]]}


def _decoder(model) -> nn.Module | None:
    lm = causal_lm(model)
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    ok = (decoder is not None and isinstance(getattr(decoder, "layers", None), nn.ModuleList)
          and isinstance(getattr(decoder, "norm", None), nn.Module))
    return decoder if ok else None


def split_layer(model) -> int | None:
    """Index of the lowest decoder layer with a trainable weight, where every trainable weight lies in that
    layer or above and no frozen layer below drops out; None where the frozen layers cannot be cached."""
    decoder = _decoder(model)
    if decoder is None:
        return None
    layer_of = {}
    for i, layer in enumerate(decoder.layers):
        for p in layer.parameters():
            layer_of[id(p)] = i
    trainable = [p for p in causal_lm(model).parameters() if p.requires_grad]
    if not trainable or any(id(p) not in layer_of for p in trainable):
        return None  # nothing to train, or embeddings / norm / head trained: every layer's input changes
    split = min(layer_of[id(p)] for p in trainable)
    if split == 0:
        return None
    if getattr(decoder.config, "attention_dropout", 0.0) or any(
            isinstance(m, nn.Dropout) and m.p > 0 for layer in decoder.layers[:split] for m in layer.modules()):
        return None  # a frozen layer that drops out differs between steps
    return split


@contextlib.contextmanager
def decoder_slice(decoder: nn.Module, start: int, stop: int, final_norm: bool = True):
    """The decoder runs only its layers ``start:stop`` (and its final norm only if ``final_norm``) inside."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        decoder.norm = nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = layers, norm


class FrozenLayerCache:
    """The hidden states entering layer ``split`` for every training example (index = dataset index)."""

    def __init__(self, model, split: int, states: list[torch.Tensor], computed_tokens: int, build_s: float = 0.0):
        self.model, self.split, self.states, self.computed_tokens = model, split, states, computed_tokens
        self.build_s = build_s  # seconds the frozen layers took, once
        self.probe: tuple[float, float] | None = None  # (full, cached) loss of the start-up check

    @classmethod
    @torch.no_grad()
    def build(cls, model, examples: Sequence[Sequence[int]], split: int, autocast=contextlib.nullcontext,
              progress: bool = True) -> "FrozenLayerCache":
        """Run layers ``0:split`` over every example once; an example reuses the keys/values of the longest
        prefix it shares with the example before it in token order (lexicographic order makes that neighbour
        the best earlier match), so a shared instruction runs once."""
        from tqdm.auto import tqdm
        from transformers.cache_utils import DynamicCache

        start = time.perf_counter()
        decoder = _decoder(model)
        device = next(decoder.parameters()).device
        order = sorted(range(len(examples)), key=lambda i: list(examples[i]))
        states: list[torch.Tensor | None] = [None] * len(examples)
        prev, prev_states, kv, computed = None, None, None, 0
        with decoder_slice(decoder, 0, split, final_norm=False), autocast():
            for i in tqdm(order, desc=f"frozen layers 0-{split - 1}", unit="example", disable=not progress):
                ids = list(examples[i])
                shared = common_prefix_len(ids, prev) if prev is not None else 0
                if shared == len(ids):  # the same tokens again
                    states[i] = prev_states[:shared]
                    continue
                # the keys/values of the shared prefix (a new cache: slicing never writes into the old one)
                kv = DynamicCache(ddp_cache_data=[(layer.keys[:, :, :shared], layer.values[:, :, :shared])
                                                  for layer in kv.layers[:split]] if shared else None)
                out = decoder(input_ids=torch.tensor([ids[shared:]], device=device), past_key_values=kv,
                              use_cache=True).last_hidden_state[0]
                states[i] = out if shared == 0 else torch.cat([prev_states[:shared], out])
                prev, prev_states, computed = ids, states[i], computed + len(ids) - shared
        return cls(model, split, states, computed, time.perf_counter() - start)

    @staticmethod
    def size_bytes(model, examples: Sequence[Sequence[int]]) -> int:
        decoder = _decoder(model)
        hidden = decoder.config.hidden_size
        dtype = next(decoder.parameters()).dtype
        return sum(len(x) for x in examples) * hidden * torch.finfo(dtype).bits // 8

    def inputs(self, index: torch.Tensor, inputs: dict) -> dict:
        """``inputs`` with ``input_ids`` replaced by the cached states of the examples ``index``, right-padded
        to the batch's length as the collator padded the ids (pad rows are masked out)."""
        batch, length = inputs["input_ids"].shape
        first = self.states[int(index[0])]
        embeds = first.new_zeros(batch, length, first.shape[-1])
        for row, i in enumerate(index.tolist()):
            s = self.states[i]
            embeds[row, :s.shape[0]] = s
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        return {**rest, "inputs_embeds": embeds}

    def top_only(self):
        """Inside, the model's decoder runs only the layers from ``split`` up (and its final norm)."""
        decoder = _decoder(self.model)
        return decoder_slice(decoder, self.split, len(decoder.layers))

    def shared_prefix_inputs(self, inputs: dict, input_ids: torch.Tensor, min_len: int = 16) -> dict:
        """Inside ``top_only``: ``inputs`` (from ``inputs`` and ``answer_only_inputs``) with the batch's common
        prefix run once. The prefix is the longest token prefix all rows share, cut before the first position
        whose logits any row needs; it runs as one row through the top layers, its keys/values (expanded to
        the batch, so gradients from every row add up) become ``past_key_values`` of a pass over the rest.
        Unchanged for one row, a prefix under ``min_len`` tokens, or inputs without ``logits_to_keep``."""
        from transformers.cache_utils import DynamicCache

        embeds, keep = inputs["inputs_embeds"], inputs.get("logits_to_keep")
        batch = embeds.shape[0]
        if batch == 1 or not isinstance(keep, torch.Tensor) or keep.dim() != 2:
            return inputs
        same = (input_ids == input_ids[:1]).all(dim=0) & inputs["attention_mask"].bool().all(dim=0)
        length = int(same.long().cumprod(0).sum())
        needed = keep.any(dim=0).nonzero()
        if len(needed):
            length = min(length, int(needed[0]))
        if length < min_len:
            return inputs
        decoder = _decoder(self.model)
        config = causal_lm(self.model).config
        prefix = decoder(inputs_embeds=embeds[:1, :length], attention_mask=inputs["attention_mask"][:1, :length],
                         past_key_values=DynamicCache(config=config), use_cache=True).past_key_values
        # layers below the split are never run again: only layer 0 holds anything (its length, for the mask)
        data = [(None, None)] * self.split
        data[0] = (embeds.new_zeros(batch, 1, length, 1),) * 2
        data += [(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                 for layer in prefix.layers[self.split:]]
        return {**inputs, "inputs_embeds": embeds[:, length:], "logits_to_keep": keep[:, length:],
                "past_key_values": DynamicCache(ddp_cache_data=data, config=config)}


def build_cache(model, examples: Sequence[dict], *, mode: str = "auto", why_not: list | None = None,
                gradient_checkpointing: bool = False, world_size: int = 1, deepspeed: bool = False,
                max_bytes: int = DEFAULT_MAX_BYTES, autocast=contextlib.nullcontext, loss_of=None,
                progress: bool = True) -> FrozenLayerCache | None:
    """A ``FrozenLayerCache`` for ``model`` and the training ``examples`` (``{"input_ids", "labels"}``), or
    None with the reason appended to ``why_not``. ``loss_of(inputs)`` (the training step's loss for a batch),
    if given, checks the cache on the first example: the cached and the full forward must agree."""
    def no(reason: str) -> None:
        if why_not is not None:
            why_not.append(reason)
        return None

    if mode == "off":
        return no("--frozen_layer_cache off")
    if gradient_checkpointing or world_size > 1 or deepspeed:
        return no("gradient checkpointing, several processes or DeepSpeed")
    split = split_layer(model)
    if split is None:
        return no("a trainable weight in the lowest layer or outside the layers, or dropout below")
    ids = [e["input_ids"] for e in examples]
    size = FrozenLayerCache.size_bytes(model, ids)
    if size > max_bytes:
        return no(f"the states would take {size / 2**30:.1f} GiB (> {max_bytes / 2**30:.1f} GiB)")
    cache = FrozenLayerCache.build(model, ids, split, autocast=autocast, progress=progress)
    if loss_of is not None:
        device = next(model.parameters()).device
        probe = {"input_ids": torch.tensor([ids[0]], device=device),
                 "labels": torch.tensor([examples[0]["labels"]], device=device)}
        probe["attention_mask"] = torch.ones_like(probe["input_ids"])
        was_training = model.training
        model.eval()  # LoRA dropout would make the two losses differ at random
        try:
            with torch.no_grad():
                full = float(loss_of(probe))
                with cache.top_only():
                    cached = float(loss_of(cache.inputs(torch.tensor([0]), probe)))
        finally:
            model.train(was_training)
        # bf16 / fp16 states round at every layer; a wrong cache (a model that rescales inputs_embeds, an
        # unusual layer loop) is off by far more than that
        if not (math.isfinite(full) and abs(cached - full) <= 2e-2 * max(abs(full), 1.0)):
            return no(f"the cached forward's loss {cached:.4f} differs from the full forward's {full:.4f}")
        cache.probe = (full, cached)
    return cache
