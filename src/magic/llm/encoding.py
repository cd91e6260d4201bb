"""How the strategy LLM sees text: the prompt template and the token ids, ONE rule for fine-tuning and inference.

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

from magic.common.io_utils import atomic_write_text, load_json
from magic.llm.prompts import wrap_default_template

IGNORE_INDEX = -100
TEMPLATES = ("default", "chat", "none")
CUTOFF_RULES = ("infer_max_len", "infer_seqlen")
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
