"""The local strategy LLM, one module for fine-tuning (sft.py), export and the local engine (engines/hf.py):
loading (``load_causal_lm``), dtype names (``resolve_dtype``), the tokenizer (``prepare_tokenizer``: left padding,
a pad token) and how the model sees text: the prompt template and the token ids, ONE rule for fine-tuning and
inference (``EncodingRule``, ``encode_pair``, ``tokenize_prompts``).

This module imports torch and transformers only inside the functions that need them (``--help`` stays fast).

The paper fine-tuned with the LLaMA-Factory version vendored in the released repository (its template and
data-preprocessing code; docs/FIDELITY.md). Its ``default`` template encodes one (instruction, answer) pair as::

    source = encode("Human: {instruction}\\nAssistant: ", add_special_tokens=False)   # no BOS
    target = encode(answer, add_special_tokens=False) + [EOS]
    n_target = max(int(cutoff_len * len(target) / (len(source) + len(target))), 1)    # ``infer_max_len``
    n_source = cutoff_len - n_target
    input_ids = source[:n_source] + target[:n_target];  labels = [-100] * len(kept source) + kept target

Both parts keep their *beginning*. A pair that fits in ``cutoff_len`` is never cut (the shares are at least
the lengths then). ``EncodingRule`` holds the two choices later LLaMA-Factory versions changed, so our
earlier behaviour stays available:

* ``add_bos``: False (released) = no BOS; True = BOS as the tokenizer adds it (never twice).
* ``cutoff_rule``: ``"infer_max_len"`` (released, above) or ``"infer_seqlen"`` (LLaMA-Factory >= 0.8: a
  target shorter than half the cutoff is kept whole; else a source shorter than half is kept whole and
  the target gets the rest; else both are cut in proportion).

Fine-tuning writes the rule as ``ENCODING_FILE`` next to the adapter, export copies it into the merged
model folder, and ``load_causal_lm`` reads it back, so generation tokenises prompts exactly as training
did. A folder without the file (a base model, or one exported by LLaMA-Factory itself) gets the released
rule.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Sequence

from magic.common.errors import UserError
from magic.common.io_utils import atomic_write_text, load_json
from magic.common.validate import check_model_dir, check_tokenizer_files, check_vocab
from magic.llm.config import CUTOFF_RULES, TEMPLATES
from magic.llm.prompts import wrap_default_template

IGNORE_INDEX = -100
ENCODING_FILE = "magic_encoding.json"


@dataclass(frozen=True)
class EncodingRule:
    """The choices that decide the token ids of a prompt (defaults = the released fine-tuning)."""
    template: str = "default"
    add_bos: bool = False
    cutoff_rule: str = "infer_max_len"

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; expected one of {TEMPLATES}")
        if self.cutoff_rule not in CUTOFF_RULES:
            raise ValueError(f"unknown cutoff rule {self.cutoff_rule!r}; expected one of {CUTOFF_RULES}")

    def save(self, folder: str | os.PathLike) -> str:
        path = os.path.join(os.fspath(folder), ENCODING_FILE)
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EncodingRule":
        """The rule saved in ``folder``; the released rule when the folder has none."""
        path = os.path.join(os.fspath(folder), ENCODING_FILE)
        if not os.path.isfile(path):
            return cls()
        data = load_json(path, "prompt encoding rule")
        expected = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) - expected:
            raise ValueError(f"{path}: expected an object with keys {sorted(expected)}, got {data!r:.200}")
        return cls(**data)


def format_prompt(tokenizer, prompt: str, template: str) -> str:
    """Wrap one instruction in a template: ``"default"`` = LLaMA-Factory's (``Human: {instruction}\\nAssistant: ``,
    what the paper fine-tuned with); ``"chat"`` = the tokenizer's chat template (``default`` when it has
    none, e.g. base Llama-2); ``"none"`` = the instruction as is."""
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


def encode_text(tokenizer, text: str, add_bos: bool) -> list[int]:
    """Token ids of an already templated prompt. ``add_bos``: BOS as the tokenizer adds it, but not twice when
    the text already starts with the BOS string (chat templates often write it); otherwise no special token."""
    bos = tokenizer.bos_token
    special = add_bos and not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def encode_prompt(tokenizer, instruction: str, rule: EncodingRule) -> list[int]:
    """Token ids of one templated instruction (what generation is fed)."""
    return encode_text(tokenizer, format_prompt(tokenizer, instruction, rule.template), rule.add_bos)


def infer_max_len(source_len: int, target_len: int, cutoff_len: int, reserved_label_len: int = 1) -> tuple[int, int]:
    """The released LLaMA-Factory split of ``cutoff_len``: ``(max_source, max_target)`` budgets (not clipped
    to the lengths; slicing does that). The target's share is proportional to its length, at least
    ``reserved_label_len``."""
    max_target = max(int(cutoff_len * (target_len / (source_len + target_len))), reserved_label_len)
    return cutoff_len - max_target, max_target


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """The later LLaMA-Factory split (>= 0.8); returns the kept lengths."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * target_len / (source_len + target_len))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


def kept_lengths(source_len: int, target_len: int, cutoff_len: int, rule: str) -> tuple[int, int]:
    """How many leading source and target tokens survive ``cutoff_len`` under ``rule``."""
    if rule == "infer_max_len":
        max_source, max_target = infer_max_len(source_len, target_len, cutoff_len)
        return min(max_source, source_len), min(max_target, target_len)
    if rule == "infer_seqlen":
        return infer_seqlen(source_len, target_len, cutoff_len)
    raise ValueError(f"unknown cutoff rule {rule!r}; expected one of {CUTOFF_RULES}")


def encode_pair(tokenizer, instruction: str, answer: str, cutoff_len: int,
                rule: EncodingRule) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (both of length <= cutoff_len) of one training pair; labels are -100 on
    the prompt. The answer ends with EOS (the model learns to stop), unless the cutoff removes it."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the model could not learn to stop")
    source = encode_prompt(tokenizer, instruction, rule)
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n_src, n_tgt = kept_lengths(len(source), len(target), cutoff_len, rule.cutoff_rule)
    source, target = source[:n_src], target[:n_tgt]
    return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}


# --------------------------------------------------------------------------------------------------
# Loading.
# attribute of a tokenizer returned by load_causal_lm: the EncodingRule its model was fine-tuned with
RULE_ATTR = "magic_encoding_rule"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype):
    """A torch dtype from a name ("float32", "bf16", ...; "auto" and None pass through)."""
    import torch

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
    import torch
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
    import torch
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

    ``dtype``: a torch dtype, a name ("float32", "bf16", ...), "auto" (the checkpoint's), None (transformers'
    default, which in transformers 5 is also the checkpoint's dtype), or "int8": float32 weights whose linear
    layers are then quantised to int8 (``quantize_int8``; CPU generation only).
    """
    from transformers import AutoTokenizer

    path = os.fspath(model_name_or_path)
    if os.path.sep in path and not os.path.isdir(path) and path.startswith((".", os.path.sep)):
        raise FileNotFoundError(f"{path}: model folder not found")
    check_tokenizer_files(check_model_dir(path, "model"))
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    if os.path.isdir(path):  # the rule fine-tuning saved with the model (released rule if none)
        setattr(tokenizer, RULE_ATTR, EncodingRule.load(path))
    kwargs = {}
    int8 = dtype in INT8_NAMES
    resolved = resolve_dtype("float32" if int8 else dtype)
    if resolved is not None:
        kwargs["dtype"] = resolved
    model = causal_lm_from_pretrained(path, **kwargs)
    check_vocab(tokenizer, model, path)
    model.to(device or default_device())
    model.eval()
    if int8:
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("dtype int8 (torch dynamic quantisation) runs on the CPU only; use --device cpu")
        model = quantize_int8(model)
    use_fast_cpu_attention(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def causal_lm_from_pretrained(path: str, flag: str = "", **kwargs):
    """AutoModelForCausalLM.from_pretrained(path), refusing in one UserError naming the folder a model whose
    config.json does not match its weights: weights of other shapes (transformers' ignore_mismatched_sizes
    traceback) or missing from the files (transformers initialises them at random and says so in a table).
    The one loader of a causal LM folder: fine-tuning's base model, export's base model, inference."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report (a table) would repeat, at length, what is refused below
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, ignore_mismatched_sizes=True,
                                                           output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    mismatched = [f"{k[0]}: file {tuple(k[1])} vs config {tuple(k[2])}" if isinstance(k, (tuple, list)) and len(k) == 3
                  else str(k) for k in info.get("mismatched_keys") or ()]
    missing = sorted(info.get("missing_keys") or ())
    if mismatched or missing:
        what = (f"{len(mismatched)} weights of other shapes ({'; '.join(sorted(mismatched)[:3])})" if mismatched else "")
        what += (" and " if mismatched and missing else "") + (
            f"{len(missing)} weights missing from the files ({', '.join(missing[:3])})" if missing else "")
        raise UserError(f"{flag + ' ' if flag else ''}{path}: config.json does not match the weights: {what}; "
                        "the folder mixes files of two models (copy the config and weights of one model)")
    return model


INT8_NAMES = ("int8", "qint8")


def quantize_int8(model):
    """``model`` with every ``nn.Linear`` replaced by torch's dynamically quantised one: int8 weights (one scale per
    tensor), activations quantised per call, int8 matmuls (fbgemm: AVX2 is enough); embeddings, norms and the
    attention stay float32. For generation on CPUs without bfloat16 units: 1.6-2.7x less CPU time than float32 on
    AVX2, but SmolLM2-135M's greedy answers change (its activations have outliers that one int8 scale per tensor
    loses; benchmarks/README.md), so nothing uses it by default (``--dtype int8``, demo.sh GEN_PRECISION=int8)."""
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():  # torch 2.13 calls this API deprecated (torchao's replacement) yet ships it
        warnings.filterwarnings("ignore", message=r".*(deprecated|quantize_per_tensor)", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model.float().eval(), {nn.Linear}, dtype=torch.qint8)


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


def pad_left(tokenizer, ids: Sequence[Sequence[int]]) -> dict:
    """Left-pad token id lists: input_ids / attention_mask of shape (B, T), T = the longest prompt."""
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer.pad([{"input_ids": list(x)} for x in ids], padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = old_side
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
