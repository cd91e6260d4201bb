"""Dataset and collator for the generator's data/{train,valid,test}.json records.

A record (written by data/add_memory_motivation.py) is described once, in src/magic/generator/records.py beside
its builder (``sample_record``); ``validate_record`` below checks it (id, gold_strategy and strategy_source are
optional here).

Everything is tokenised once, when the dataset is built (the released code re-tokenised every sample and
every memory response in every step). Batches are padded to their own longest sequence; the
``pool="all"`` compatibility mode pads contexts (and motivations) to ``max_length`` and memory responses
to ``max_length_res_memory`` as released, because its max pooling runs over pad positions too.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from magic.common.errors import UserError
from magic.esconv.dialogues import STRATEGIES, strategy_id
from magic.generator.config import GeneratorConfig
from magic.common.io_utils import load_json

NO_MOTIVATION = "No motivation provided"  # released placeholder for an empty motivation
STRATEGY_SOURCES = ("inferred", "gold", "forced")  # where a record's "strategy" came from: the LLM, the annotation, or
# a fixed wrong one (the forced-wrong-strategy baseline: magic.esconv.dialogues.wrong_strategy)

_FIELDS = {"context": list, "response": str, "strategy": str, "response_memory": list, "strategy_memory": list}


def validate_record(rec: Any, where: str, allow_empty_response: bool = False, allow_flag: str | None = None) -> None:
    """Raise ValueError naming ``where`` (file and record index/id) when a record breaks the contract. An empty
    (or blank) ``response`` is refused unless ``allow_empty_response``: it is the target the generator learns
    (an empty one teaches it to say nothing) and the reference a test response is scored against."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key, typ in _FIELDS.items():
        if key not in rec:
            raise ValueError(f"{where}: missing field {key!r}")
        if not isinstance(rec[key], typ):
            raise ValueError(f"{where}: field {key!r} must be a {typ.__name__}, got {type(rec[key]).__name__}")
    if not rec["context"] or not all(isinstance(x, str) for x in rec["context"]):
        raise ValueError(f"{where}: 'context' must be a non-empty list of strings")
    if not rec["response"].strip() and not allow_empty_response:
        hint = f", or pass {allow_flag} to keep it" if allow_flag else ""
        raise UserError(f"{where}: empty 'response'; expected the supporter's reply (the training target, or the "
                        f"reference a test response is scored against): fix or drop the record{hint}")
    if not all(isinstance(x, str) for x in rec["response_memory"] + rec["strategy_memory"]):
        raise ValueError(f"{where}: 'response_memory' and 'strategy_memory' must be lists of strings")
    if len(rec["response_memory"]) != len(rec["strategy_memory"]):
        raise ValueError(f"{where}: {len(rec['response_memory'])} memory responses but "
                         f"{len(rec['strategy_memory'])} memory strategies")
    if rec.get("strategy_source", "gold") not in STRATEGY_SOURCES:
        raise ValueError(f"{where}: 'strategy_source' must be one of {STRATEGY_SOURCES}, "
                         f"got {rec['strategy_source']!r}")
    mot = rec.get("motivation", "")
    if mot is not None and not isinstance(mot, str):
        raise ValueError(f"{where}: 'motivation' must be a string")
    for label in [rec["strategy"]] + rec["strategy_memory"]:
        try:
            strategy_id(label)
        except KeyError:
            raise ValueError(f"{where}: unknown strategy {label!r}; expected one of {list(STRATEGIES)} "
                             "(any case, brackets allowed)") from None


def load_records(path: str | os.PathLike, max_samples: int | None = None, allow_empty_responses: bool = False,
                 allow_flag: str | None = None) -> list[dict]:
    """Load and validate a data/*.json file (a JSON list of records); keep the first ``max_samples``. A record
    with an empty response is an error naming it unless ``allow_empty_responses`` (``allow_flag``: the flag that
    says so, named in the error)."""
    recs = load_json(path, what="JSON list of generator records")
    if not isinstance(recs, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(recs).__name__}")
    if max_samples is not None:
        recs = recs[:max_samples]
    for i, rec in enumerate(recs):
        rid = rec.get("id") if isinstance(rec, dict) else None
        validate_record(rec, f"{path}: record {i}" + (f" (id {rid})" if rid else ""), allow_empty_responses,
                        allow_flag)
    return recs


def check_lengths(config: GeneratorConfig, tokenizer) -> None:
    """A length is applied as given or refused: below the special tokens the tokenizer adds (2 for BART,
    <s> and </s>), transformers cannot truncate and keeps the whole sequence, so ``max_length 1`` would run
    as no limit at all while being recorded as 1."""
    smallest = tokenizer.num_special_tokens_to_add()
    for name in ("max_length", "max_length_res_memory"):
        value = getattr(config, name)
        if value < smallest:
            raise UserError(f"{name} {value} is too small for this tokenizer (it adds {smallest} special tokens to "
                            f"every sequence and could not cut it to {value}); the smallest that works is "
                            f"{smallest} (--{name} {smallest})")


class DialogueDataset(Dataset):
    """Pre-tokenised records. Item i is a dict of python lists (see ``__getitem__``).

    The lengths and the truncation side come from ``config`` (the model's ``generator_config``);
    ``overrides`` replace its fields (e.g. ``max_length=96``).

    Contexts are ``tokenizer.sep_token.join(context)`` truncated to ``max_length`` on
    ``truncation_side`` (released: right, which cuts the most recent turns of long dialogues); responses
    to ``max_length`` on the right; each distinct memory response is tokenised once, truncated to
    ``max_length_res_memory``.
    """

    def __init__(self, records: Sequence[dict], tokenizer, config: GeneratorConfig | None = None, **overrides):
        config = (config or GeneratorConfig()).replace(**overrides)
        max_length, max_length_res_memory = config.max_length, config.max_length_res_memory
        truncation_side = config.truncation_side
        if tokenizer.sep_token is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a sep_token and a pad_token (a BART tokenizer has both)")
        check_lengths(config, tokenizer)
        self.records = list(records)
        self.max_length = max_length
        self.max_length_res_memory = max_length_res_memory
        self.ids = [r.get("id", str(i)) for i, r in enumerate(self.records)]
        sep = tokenizer.sep_token

        old_side = tokenizer.truncation_side
        try:
            tokenizer.truncation_side = truncation_side
            self.context_ids = self._tok(tokenizer, [sep.join(r["context"]) for r in self.records], max_length)
            tokenizer.truncation_side = "right"
            response_ids = self._tok(tokenizer, [r["response"] for r in self.records], max_length)
            self.motivation_ids = self._tok(
                tokenizer, [(r.get("motivation") or "").strip() or NO_MOTIVATION for r in self.records], max_length)
            # each distinct memory response once; items refer to them by index
            uniq: dict[str, int] = {}
            for r in self.records:
                for text in r["response_memory"]:
                    uniq.setdefault(text, len(uniq))
            self.memory_texts = list(uniq)
            self.memory_ids = self._tok(tokenizer, self.memory_texts, max_length_res_memory)
        finally:
            tokenizer.truncation_side = old_side
        for i, ids in enumerate(response_ids):
            if len(ids) < 2:
                raise ValueError(f"record {self.ids[i]}: the response tokenises to {len(ids)} token(s); "
                                 "expected at least <s> and </s>")
        # decoder input "<s> y ...", target "y ... </s>" (released)
        self.decoder_input_ids = [ids[:-1] for ids in response_ids]
        self.target_ids = [ids[1:] for ids in response_ids]
        self.strategy_ids = [strategy_id(r["strategy"]) for r in self.records]
        self.memory_index = [[uniq[t] for t in r["response_memory"]] for r in self.records]
        self.memory_strategy = [[strategy_id(s) for s in r["strategy_memory"]] for r in self.records]

    @staticmethod
    def _tok(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return {
            "index": i,
            "input_ids": self.context_ids[i],
            "decoder_input_ids": self.decoder_input_ids[i],
            "target_ids": self.target_ids[i],
            "strategy_id": self.strategy_ids[i],
            "motivation_ids": self.motivation_ids[i],
            "memory_index": self.memory_index[i],
            "memory_ids": [self.memory_ids[j] for j in self.memory_index[i]],
            "memory_strategy": self.memory_strategy[i],
        }


def is_subsequence(a: Sequence, b: Sequence) -> bool:
    """True when every element of ``a`` occurs in ``b`` in the same order (not necessarily adjacent)."""
    it = iter(b)
    return all(any(x == y for y in it) for x in a)


def keep_largest_lists(lists: Sequence[Sequence]) -> list[int]:
    """Indices of the lists that are not a subsequence of another, different list in ``lists``;
    of identical lists only the first is kept. In a batch, earlier turns of a dialogue carry a prefix of
    the memory of later turns; only the longest is encoded so no response enters the bank twice."""
    kept, seen = [], set()
    for i, a in enumerate(lists):
        key = tuple(a)
        if key in seen:
            continue
        if any(tuple(b) != key and len(b) >= len(a) and is_subsequence(a, b) for b in lists):
            continue
        seen.add(key)
        kept.append(i)
    return kept


def pad_ids(seqs: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(B, length or the longest) long tensor of the sequences, cut to ``length``, right-padded with ``value``."""
    n = max((len(s) for s in seqs), default=0) if length is None else length
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:n]
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def _mask(seqs: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    lens = torch.tensor([min(len(s), length) for s in seqs])
    return (torch.arange(length).unsqueeze(0) < lens.unsqueeze(1)).long()


class DialogueCollator:
    """Items -> batch tensors.

    Output (B samples, M memory responses kept for this batch):
        input_ids, attention_mask [B,T]; decoder_input_ids, decoder_attention_mask [B,t]; labels [B,t] (-100
        at padding); strategy_ids [B]; motivation_ids, motivation_mask [B,Tm];
        memory_input_ids, memory_attention_mask [M,Lm]; memory_strategy_ids [M] (grouped by strategy id,
        batch order within a strategy, as the released BuildMemoryDict); index [B] (dataset positions).

    pool="all" pads contexts/motivations to max_length and memory to max_length_res_memory (released);
    "masked" pads to the longest in the batch. with_memory=False skips the memory tensors (validation and
    test do not update the bank).
    """

    def __init__(self, pad_token_id: int, config: GeneratorConfig, with_memory: bool = True):
        self.pad = pad_token_id
        self.pool = config.pool
        self.max_length = config.max_length
        self.max_length_res_memory = config.max_length_res_memory
        self.with_memory = with_memory

    def _pad_with_mask(self, seqs, fixed: int | None):
        n = fixed if fixed is not None else max((len(s) for s in seqs), default=0)
        return pad_ids(seqs, self.pad, n), _mask(seqs, n)

    def __call__(self, items: Sequence[dict]) -> dict:
        fixed = self.pool == "all"
        ids, mask = self._pad_with_mask([it["input_ids"] for it in items], self.max_length if fixed else None)
        mot, mot_mask = self._pad_with_mask([it["motivation_ids"] for it in items],
                                            self.max_length if fixed else None)
        dec_seqs = [it["decoder_input_ids"] for it in items]
        dec = pad_ids(dec_seqs, self.pad)
        labels = pad_ids([it["target_ids"] for it in items], -100)
        batch = {
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "input_ids": ids, "attention_mask": mask,
            "decoder_input_ids": dec, "decoder_attention_mask": _mask(dec_seqs, dec.size(1)),
            "labels": labels,
            "strategy_ids": torch.tensor([it["strategy_id"] for it in items], dtype=torch.long),
            "motivation_ids": mot, "motivation_mask": mot_mask,
        }
        if self.with_memory:
            kept = keep_largest_lists([it["memory_index"] for it in items])
            entries = [(s, tok) for i in kept for s, tok in zip(items[i]["memory_strategy"], items[i]["memory_ids"])]
            entries.sort(key=lambda e: e[0])  # stable: batch order within a strategy
            mem = [tok for _, tok in entries]
            if mem:
                m_ids, m_mask = self._pad_with_mask(mem, self.max_length_res_memory if fixed else None)
            else:
                m_ids = torch.zeros(0, 0, dtype=torch.long)
                m_mask = torch.zeros(0, 0, dtype=torch.long)
            batch.update(memory_input_ids=m_ids, memory_attention_mask=m_mask,
                         memory_strategy_ids=torch.tensor([s for s, _ in entries], dtype=torch.long))
        return batch


def collator_for(model, with_memory: bool = True) -> DialogueCollator:
    """The collator matching a DialogueModel's padding mode (its generator_config)."""
    return DialogueCollator(model.pad_token_id, model.generator_config, with_memory=with_memory)


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Random batches of similar context length (main.py's default with --pool masked; off: --no_group_by_length), so
    padding each batch to its longest row pays off.

    Each epoch: a random permutation (from ``generator``) is cut into chunks of ``chunk_batches`` batches;
    each chunk is sorted by context length and cut into batches; the batch order is shuffled. Every sample
    is used once per epoch. Batch composition differs from plain shuffling (it is not what the released code
    did), which also changes which memory lists meet in a batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 chunk_batches: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.chunk = batch_size * chunk_batches

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for c in range(0, len(perm), self.chunk):
            chunk = sorted(perm[c: c + self.chunk], key=lambda i: self.lengths[i])
            batches += [chunk[k: k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in order])
