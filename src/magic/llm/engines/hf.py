"""A local causal LM for the strategy step: loading, prompt templates and batched greedy/sampled generation.

Shared by fine-tuning (template), strategy inference and the motivation collector's local backend.

* ``load_causal_lm``: model + tokenizer from a folder or hub id, tokenizer padded on the LEFT (decoder-only
  models continue from the last position, so the prompt must end at the right edge of the batch).
* ``format_prompt`` (from ``magic.llm.encoding``): ``"default"`` = LLaMA-Factory's ``default`` template, which
  is what the paper fine-tuned with; ``"chat"`` = the tokenizer's own chat template; ``"none"``.
* ``tokenize_prompts``: prompt token ids by the model's ``EncodingRule`` (saved with it by fine-tuning,
  read back by ``load_causal_lm``; no BOS as released when the folder has none), so generation sees the
  token ids training saw.
* ``generate_batch``: one batch per call; each prompt is prefilled only where it differs from an earlier
  prompt of the batch, then the batch is decoded by ``model.generate``; returns only the new text.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from magic.llm.encoding import TEMPLATES, EncodingRule, encode_text, format_prompt  # noqa: F401 (re-exported)
from magic.llm.engines.base import Engine, Generation
from magic.llm.engines.cache import ChatRunResult, JsonlCache, Progress, local_prompt_key

# attribute of a tokenizer returned by load_causal_lm: the EncodingRule its model was fine-tuned with
RULE_ATTR = "magic_encoding_rule"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype):
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


# Attention for bfloat16 models on CPU: PyTorch's CPU SDPA kernel is about 4x slower in bfloat16 than plain
# matmul + softmax for one query row (a decoding step; measured on an AMD EPYC with AVX512-BF16: 33 against 8 ms
# per layer at batch 16 over a 1,100-token cache), while for prefill (many query rows) SDPA is the faster one.
# So a decoding step's attention is computed directly (grouped-query heads read their shared key/value head
# without copying it, softmax in float32); every other call goes to SDPA as before.
CPU_BF16_ATTENTION = "magic_sdpa_cpu_bf16"


def _sdpa_or_direct_decode(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (B, H, 1, d), key/value (B, H_kv, T, d), attention_mask None, bool (True = attend) or additive,
    broadcastable to (B, 1, 1, T). Returns ((B, 1, H, d), None) as transformers' attention functions do."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or query.dtype != torch.bfloat16 or query.device.type != "cpu" or (
            module.training and dropout):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    B, H, _, d = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(B, kv_heads, H // kv_heads, d).float()             # heads grouped by their key/value head
    scores = torch.matmul(q, key.float().transpose(-1, -2))              # (B, H_kv, H / H_kv, T), float32
    scores = scores * (scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[..., -scores.shape[-1]:].reshape(attention_mask.shape[0], 1, 1, -1)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(scores.softmax(dim=-1), value.float())           # (B, H_kv, H / H_kv, d)
    return out.reshape(B, 1, H, d).to(query.dtype), None


def use_fast_cpu_attention(model) -> bool:
    """Switch a bfloat16 model on CPU that uses SDPA to ``_sdpa_or_direct_decode``; True if switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    cfg = model.config
    if (next(model.parameters()).device.type != "cpu" or model.dtype != torch.bfloat16
            or getattr(cfg, "_attn_implementation", None) != "sdpa"):
        return False
    AttentionInterface.register(CPU_BF16_ATTENTION, _sdpa_or_direct_decode)
    AttentionMaskInterface.register(CPU_BF16_ATTENTION, sdpa_mask)  # the masks SDPA takes
    try:
        model.set_attn_implementation(CPU_BF16_ATTENTION)
    except (ValueError, AttributeError):  # a model class that cannot switch: keep plain SDPA
        return False
    return True


def load_causal_lm(model_name_or_path: str | os.PathLike, device: str | None = None, dtype=None):
    """Load ``(model, tokenizer)``; the model is in eval mode on ``device`` (default: cuda if available).

    ``dtype``: a torch dtype, a name ("float32", "bf16", ...), "auto" (the checkpoint's), or None (transformers'
    default, which in transformers 5 is also the checkpoint's dtype).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.fspath(model_name_or_path)
    if os.path.sep in path and not os.path.isdir(path) and path.startswith((".", os.path.sep)):
        raise FileNotFoundError(f"{path}: model folder not found")
    from magic.common.validate import check_model_dir, check_tokenizer_files, check_vocab
    check_tokenizer_files(check_model_dir(path, "model"))
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    if os.path.isdir(path):  # the rule fine-tuning saved with the model (released rule if none)
        setattr(tokenizer, RULE_ATTR, EncodingRule.load(path))
    kwargs = {}
    resolved = resolve_dtype(dtype)
    if resolved is not None:
        kwargs["dtype"] = resolved
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    check_vocab(tokenizer, model, path)
    model.to(device or default_device())
    model.eval()
    use_fast_cpu_attention(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def encoding_rule(tokenizer) -> EncodingRule:
    """The rule ``load_causal_lm`` attached to ``tokenizer`` (read from the model folder), else the released one."""
    return getattr(tokenizer, RULE_ATTR, None) or EncodingRule()


def tokenize_prompts(tokenizer, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
    """Token ids of each (already templated) prompt, unpadded.

    ``add_bos`` None: as the model was fine-tuned (``encoding_rule``; released: no BOS). True: BOS as the
    tokenizer adds it, not twice when the text starts with the BOS string. False: no special tokens.
    """
    if add_bos is None:
        add_bos = encoding_rule(tokenizer).add_bos
    return [encode_text(tokenizer, text, add_bos) for text in texts]


def pad_left(tokenizer, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Left-pad token id lists: input_ids / attention_mask of shape (B, T), T = the longest prompt."""
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer.pad([{"input_ids": list(x)} for x in ids], padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = old_side
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def encode_prompts(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``tokenize_prompts`` then ``pad_left``: input_ids / attention_mask of shape (B, T)."""
    return pad_left(tokenizer, tokenize_prompts(tokenizer, texts))


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


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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


# --------------------------------------------------------------------------------------------------
# The local-model runner.
def run_local_requests(
    items: Sequence[tuple[str, str]],
    *,
    model_name_or_path: str,
    template: str = "chat",
    max_new_tokens: int = 128,
    batch_size: int = 8,
    do_sample: bool = False,
    top_k: int | None = None,
    temperature: float | None = None,
    device: str | None = None,
    dtype=None,
    cache: JsonlCache | None = None,
    desc: str = "local",
    progress: bool | None = None,
    model_and_tokenizer=None,
    share_prefix: bool = True,
    stats: dict | None = None,
) -> ChatRunResult:
    """Answer ``items`` with a local causal LM (``magic.llm.engines.hf``), batched, through the same cache.

    Batches are fixed slices of ``items`` (not of the uncached remainder), so a resumed run pads every
    prompt together with the same neighbours (and shares prefixes among the same prompts) as an
    uninterrupted one, and greedy answers are identical. ``share_prefix`` and ``stats``: see
    ``local_llm.generate_batch``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = {i: local_prompt_key(p, model_name_or_path, template, max_new_tokens, do_sample, top_k, temperature)
            for i, p in items}
    answers: dict[str, str] = {}
    for i, _ in items:
        cached = cache.get(i, keys[i]) if cache is not None else None
        if cached is not None:
            answers[i] = cached
    result = ChatRunResult(answers=answers, failed={}, from_cache=len(answers))
    batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
    batches = [b for b in batches if any(i not in answers for i, _ in b)]
    if not batches:
        return result
    model, tokenizer = model_and_tokenizer or load_causal_lm(model_name_or_path, device=device, dtype=dtype)
    bar = Progress(total=len(items), initial=len(answers), desc=desc, disable=progress is False or None)
    try:
        for batch in batches:
            texts = [format_prompt(tokenizer, p, template) for _, p in batch]
            outs = generate_batch(model, tokenizer, texts, max_new_tokens, do_sample=do_sample, top_k=top_k,
                                  temperature=temperature, share_prefix=share_prefix, stats=stats)
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


class HFEngine(Engine):
    """transformers in process: left-padded greedy (or sampled) batches with prefix sharing
    (``generate_batch``); the model is loaded by ``load()`` or on the first uncached prompt."""

    name = "local"

    def __init__(self, model_path: str, generation: Generation, batch_size: int = 16, share_prefix: bool = True,
                 device: str | None = None, dtype=None, model_and_tokenizer=None):
        super().__init__(model_path, generation)
        self.batch_size, self.share_prefix, self.device, self.dtype = batch_size, share_prefix, device, dtype
        self.model_and_tokenizer = model_and_tokenizer

    def load(self):
        if self.model_and_tokenizer is None:
            self.model_and_tokenizer = load_causal_lm(self.model_path, device=self.device, dtype=self.dtype)
        return self.model_and_tokenizer

    def key(self, prompt: str) -> str:
        g = self.generation
        return local_prompt_key(prompt, self.model_path, g.template, g.max_new_tokens, g.do_sample, g.top_k,
                                g.temperature)

    def answer(self, items, *, cache=None, desc="", progress=None, stats=None) -> ChatRunResult:
        g = self.generation
        self.load()  # as step 5 always did for this backend (a fully cached split still loads it once)
        return run_local_requests(items, model_name_or_path=self.model_path, template=g.template,
                                  max_new_tokens=g.max_new_tokens, batch_size=self.batch_size, do_sample=g.do_sample,
                                  top_k=g.top_k, temperature=g.temperature, cache=cache, desc=desc or "local",
                                  progress=progress, model_and_tokenizer=self.model_and_tokenizer,
                                  share_prefix=self.share_prefix, stats=stats)
