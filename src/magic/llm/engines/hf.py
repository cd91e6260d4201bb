"""The local engine: a causal LM in process (transformers), batched greedy/sampled generation.

* ``generate_batch``: one left-padded batch per call; each prompt is prefilled only where it differs from an
  earlier prompt of the batch, then the batch is decoded by ``model.generate``; returns only the new text.
* ``HFEngine``: the ``local`` backend of ``magic.llm.engines.factory.make_engine``.

Loading, the tokenizer and the encoding rule are magic.llm.local_model's (shared with fine-tuning and export).
"""
from __future__ import annotations

from typing import Sequence

import torch

from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, Progress, local_prompt_key
from magic.llm.local_model import INT8_NAMES, common_prefix_len, format_prompt, load_causal_lm, pad_left, \
    tokenize_prompts


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


def supports_prefix_sharing(model) -> bool:
    """Whether ``generate_batch`` can build this model's KV cache itself (decoder-only, full attention).

    Sliding-window, linear-attention and encoder-decoder models keep other cache layouts; they are
    generated the plain way.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer, StaticCache, StaticLayer

    if getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "get_decoder"):
        return False
    try:
        dynamic = DynamicCache(config=model.config).layers
        static = StaticCache(config=model.config, max_cache_len=2).layers
    except Exception:  # a config the caches cannot lay out: not ours to guess
        return False
    return (len(dynamic) > 0 and all(type(layer) is DynamicLayer for layer in dynamic)
            and all(type(layer) is StaticLayer and hasattr(layer, "cumulative_length") for layer in static))


def _prefill_shared(model, ids: list[list[int]], max_new_tokens: int, stats: dict | None):
    """KV cache of a left-padded batch, each prompt prefilled on its own and only where it is new.

    Strategy prompts repeat a ~340-token instruction, and within a dialogue each prompt extends the
    previous one's dialogue clip, so most tokens of a prompt were already run for another prompt of the
    batch. Each prompt (shortest first) copies the keys/values of its longest token prefix shared with an
    earlier prompt and runs only the rest, alone (no padding, so no masked-out work). This is exact up to
    float rounding: keys/values at a position depend only on the tokens up to it, and an unpadded prompt
    has the same positions 0..L-1 that ``generate`` gives a left-padded one. Only prompts of the same
    batch are shared, so a resumed run (same fixed batches) computes exactly what an uninterrupted one did.

    Returns a StaticCache, preallocated for the whole generation, holding the first T-1 columns of the
    (B, T) left-padded batch (every token but each prompt's last, which ``generate`` runs to get the first
    logits); pad columns hold zeros and are masked out. Static, not dynamic: a DynamicCache re-copies the
    whole batch cache at every decoding step, which on CPU cost more than the model itself.
    """
    from transformers.cache_utils import DynamicCache, StaticCache

    decoder = model.get_decoder()
    device = next(model.parameters()).device
    B, T = len(ids), max(len(x) for x in ids)
    batch_cache = StaticCache(config=model.config, max_cache_len=T + max_new_tokens)
    layers = batch_cache.layers  # keys/values: (B, kv_heads, T + max_new_tokens, head_dim) once allocated
    done: list[int] = []
    for i in sorted(range(B), key=lambda k: len(ids[k])):
        todo = ids[i][:-1]
        if not todo:
            continue
        best, n = None, 0
        for j in done:
            m = common_prefix_len(todo, ids[j][:-1])
            if m > n:
                best, n = j, m
        prefix = None
        if n:
            off = T - len(ids[best])  # first column of prompt `best` in the left-padded batch
            prefix = [(layer.keys[best:best + 1, :, off:off + n], layer.values[best:best + 1, :, off:off + n])
                      for layer in layers]
        cache = DynamicCache(ddp_cache_data=prefix, config=model.config)
        if n < len(todo):
            decoder(input_ids=torch.tensor([todo[n:]], device=device), past_key_values=cache, use_cache=True)
        start = T - len(ids[i])
        for layer, own in zip(layers, cache.layers):
            if not layer.is_initialized:
                k, v = own.keys, own.values  # (1, kv_heads, len(todo), head_dim)
                layer.lazy_initialization(k.new_zeros(B, k.shape[1], 0, k.shape[3]),
                                          v.new_zeros(B, v.shape[1], 0, v.shape[3]))
            layer.keys[i, :, start:T - 1] = own.keys[0]
            layer.values[i, :, start:T - 1] = own.values[0]
        done.append(i)
        if stats is not None:
            stats["computed_tokens"] = stats.get("computed_tokens", 0) + len(todo) - n
    for layer in layers:
        layer.cumulative_length.fill_(T - 1)
    if stats is not None:
        stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + sum(len(x) for x in ids)
        stats["computed_tokens"] = stats.get("computed_tokens", 0) + B  # each last token, run by generate
    return batch_cache


def _bound_prompts(model, ids: list[list[int]], max_new_tokens: int, stats: dict | None) -> list[list[int]]:
    """Prompts longer than the model's context (less ``max_new_tokens``) lose their end, the side the
    fine-tuning cutoff cuts (src/magic/llm/sft.py); counted in ``stats`` (truncated_prompts, truncated_tokens)."""
    from magic.common.validate import clip_ids

    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return ids
    limit = max(context - max_new_tokens, 1)
    out = [clip_ids(x, limit, "right") for x in ids]
    cut = [len(a) - len(b) for a, b in zip(ids, out) if len(a) > len(b)]
    if stats is not None and cut:
        stats["truncated_prompts"] = stats.get("truncated_prompts", 0) + len(cut)
        stats["truncated_tokens"] = stats.get("truncated_tokens", 0) + sum(cut)
    return out


@torch.inference_mode()
def generate_batch(model, tokenizer, texts: Sequence[str], max_new_tokens: int, do_sample: bool = False,
                   top_k: int | None = None, temperature: float | None = None, share_prefix: bool = True,
                   stats: dict | None = None) -> list[str]:
    """Generate one continuation per (already templated) text in a single left-padded batch.

    Returns the new text only (prompt removed, special tokens skipped, stripped of surrounding
    whitespace), generation stopping at EOS or after ``max_new_tokens`` tokens.

    ``share_prefix`` (default, where ``supports_prefix_sharing``): the prompts are prefilled one by one,
    each running only the tokens it does not share with an earlier prompt of the batch (see
    ``_prefill_shared``), then decoded together; same answers as one padded ``generate`` call up to float
    rounding, and several times faster on long prompts with a common instruction. Off: one padded
    ``generate`` call. ``stats``, if given, accumulates ``prompt_tokens`` and ``computed_tokens`` (the
    prompt tokens actually run through the model).
    """
    if not texts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = tokenize_prompts(tokenizer, texts)
    ids = _bound_prompts(model, ids, max_new_tokens, stats)
    batch = pad_left(tokenizer, ids)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    extra = {}
    if share_prefix and max(len(x) for x in ids) > 1 and supports_prefix_sharing(model):
        extra["past_key_values"] = _prefill_shared(model, ids, max_new_tokens, stats)
    elif stats is not None:
        n = sum(len(x) for x in ids)
        stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + n
        stats["computed_tokens"] = stats.get("computed_tokens", 0) + batch["input_ids"].numel()
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **sampling_kwargs(do_sample, top_k, temperature), **extra,
    )  # (B, T + new)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class HFEngine(Engine):
    """transformers in process: left-padded greedy (or sampled) batches with prefix sharing
    (``generate_batch``); the model is loaded by ``load()`` or on the first uncached prompt."""

    name = "local"

    def __init__(self, model_path: str, generation: Generation, *, batch_size: int, share_prefix: bool = True,
                 device: str | None = None, dtype=None, model_and_tokenizer=None):
        super().__init__(model_path, generation)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.share_prefix, self.device, self.dtype = batch_size, share_prefix, device, dtype
        self.model_and_tokenizer = model_and_tokenizer

    def load(self):
        if self.model_and_tokenizer is None:
            self.model_and_tokenizer = load_causal_lm(self.model_path, device=self.device, dtype=self.dtype)
        return self.model_and_tokenizer

    def key(self, prompt: str) -> str:
        g = self.generation
        # int8 weights give other answers than float ones: their own cache entries
        model = f"{self.model_path}#int8" if self.dtype in INT8_NAMES else self.model_path
        return local_prompt_key(prompt, model, g.template, g.max_new_tokens, g.do_sample, g.top_k, g.temperature)

    def answer(self, items, *, cache=None, desc="", progress=None, stats=None) -> ChatRunResult:
        """Batches are fixed slices of ``items`` (not of the uncached remainder), so a resumed run pads every
        prompt together with the same neighbours (and shares prefixes among the same prompts) as an
        uninterrupted one, and greedy answers are identical. ``stats``: see ``generate_batch``."""
        g = self.generation
        keys = {i: self.key(p) for i, p in items}
        answers = {i: a for i, _ in items if cache is not None and (a := cache.get(i, keys[i])) is not None}
        result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
        model, tokenizer = self.load()  # as step 5 always did (a fully cached split still loads it once)
        batches = [items[s:s + self.batch_size] for s in range(0, len(items), self.batch_size)]
        batches = [b for b in batches if any(i not in answers for i, _ in b)]
        if not batches:
            return result
        bar = Progress(total=len(items), initial=len(answers), desc=desc or "local", disable=progress is False or None)
        try:
            for batch in batches:
                texts = [format_prompt(tokenizer, p, g.template) for _, p in batch]
                outs = generate_batch(model, tokenizer, texts, g.max_new_tokens, do_sample=g.do_sample, top_k=g.top_k,
                                      temperature=g.temperature, share_prefix=self.share_prefix, stats=stats)
                new = 0
                for (i, _), out in zip(batch, outs):
                    if i in answers:
                        continue  # cached before a kill mid-batch; the first answer wins
                    if cache is not None:
                        cache.put(i, keys[i], out)
                    answers[i] = out
                    new += 1
                result.requested += new
                bar.add(done=new)
        finally:
            bar.close()
        return result

