"""ESConv in the MultiESC form: loading, validation, strategies and the one sample enumeration.

Every step of the pipeline (motivation prompts, LLaMA prompts, strategy inference, the dataset build and
the evaluation) talks about *samples*: one target supporter turn of one dialogue. They are defined here,
once, each with a stable id ``"<split>-<dialogue index>-<turn index>"`` (0-based), so that files produced
by different steps can be checked against each other instead of being aligned by list position.

MultiESC form (one JSON object per line)::

    {"situation": str, "dialog": [{"speaker": "usr"|"sys", "text": str, "strategy": str (sys only)}, ...], ...}

Enumeration (reproduces the released code; 10,191 train / 2,156 valid / 195 test samples on MultiESC):

* train / valid: every supporter turn that follows a seeker turn (so the opening turn of a
  supporter-opened dialogue is never a target, and a trailing seeker turn is not one either).
* test: one sample per dialogue, the last supporter turn (the one before a trailing seeker turn).
  ``test_mode="all"`` enumerates test dialogues like train instead.
* context = [situation] + every turn before the target; response = the target text; strategy = its
  label; response_memory / strategy_memory = every earlier supporter turn and its label (empty for the
  single test sample of a dialogue, as released).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from magic.common.errors import UserError

# --------------------------------------------------------------------------------------------------
# Strategies. The id is the memory-bank slot of the generator: keep this order.
STRATEGIES: tuple[str, ...] = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of Feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions or Information",
    "Greeting",
    "Others",
)
NUM_STRATEGIES = len(STRATEGIES)


def _norm_key(label: str) -> str:
    # case, surrounding brackets, and hyphen/space variants ("Self disclosure") do not matter
    return re.sub(r"[\s-]+", " ", label.strip().strip("[]").strip().lower())


_STRATEGY_ID = {_norm_key(name): i for i, name in enumerate(STRATEGIES)}


def strategy_id(label: str) -> int:
    """Id (0-7) of a strategy label, case-insensitive, surrounding brackets allowed: ``"[question]"`` -> 0.

    Raises KeyError naming the 8 valid labels for anything else.
    """
    key = _norm_key(label)
    if key not in _STRATEGY_ID:
        raise KeyError(f"unknown strategy {label!r}; expected one of {list(STRATEGIES)} (any case)")
    return _STRATEGY_ID[key]


def canonical_strategy(label: str) -> str:
    """The canonical spelling of a label (``"reflection of feelings"`` -> ``"Reflection of Feelings"``)."""
    return STRATEGIES[strategy_id(label)]


WRONG_SHIFT = 4  # the forced wrong strategy of a sample: STRATEGIES[(gold id + 4) % 8], never the gold one


def wrong_strategy(label: str) -> str:
    """The fixed wrong strategy for a sample whose gold strategy is ``label`` (the forced-wrong baseline of the
    demo and the study)."""
    return STRATEGIES[(strategy_id(label) + WRONG_SHIFT) % NUM_STRATEGIES]


def _label_pattern(name: str) -> str:
    # "Self-disclosure" is also written "Self disclosure"; spaces may be runs of whitespace.
    words = re.split(r"[\s-]+", name)
    return r"[\s-]+".join(re.escape(w) for w in words)


_BRACKETED_RE = re.compile(
    r"\[\s*(" + "|".join(_label_pattern(s) for s in STRATEGIES) + r")\s*\]", re.IGNORECASE
)
_BARE_RE = re.compile(r"\b(" + "|".join(_label_pattern(s) for s in STRATEGIES) + r")\b", re.IGNORECASE)


def parse_strategy(answer: str | None) -> str | None:
    """The first strategy named in an LLM answer, in canonical spelling, or None.

    Bracketed labels (``[Question]``, as the prompts ask for) win over bare words, because a motivation
    may mention "question" in passing after the bracketed label; among the same kind the earliest wins.
    """
    if not answer:
        return None
    for pattern in (_BRACKETED_RE, _BARE_RE):
        m = pattern.search(answer)
        if m:
            return STRATEGIES[_STRATEGY_ID[_norm_key(m.group(1))]]
    return None


def strategy_mismatches(samples: Sequence[Sample], answers: dict[str, str]) -> tuple[int, int, int, list[str]]:
    """Compare LLM answers about samples with their gold strategies, over the samples that have an answer
    (``answers``: sample id -> text): (named another strategy, named none, answered, up to 5 ids of the first
    kind)."""
    other, none, total, examples = 0, 0, 0, []
    for s in samples:
        if s.id not in answers:
            continue
        total += 1
        named = parse_strategy(answers[s.id])
        if named is None:
            none += 1
        elif named != canonical_strategy(s.strategy):
            other += 1
            if len(examples) < 5:
                examples.append(s.id)
    return other, none, total, examples


# --------------------------------------------------------------------------------------------------
# Contractions. MultiESC tokenised "I'm" as "I ' m"; the dataset build expands the 45 forms below
# (case-insensitive, whole words, the replacement always in this spelling), as the released code did.
CONTRACTIONS: tuple[tuple[str, str], ...] = (
    ("You ' re", "You are"), ("I ' m", "I am"), ("He ' s", "He is"), ("She ' s", "She is"),
    ("It ' s", "It is"), ("We ' re", "We are"), ("They ' re", "They are"), ("Can ' t", "Cannot"),
    ("Don ' t", "Do not"), ("Doesn ' t", "Does not"), ("Didn ' t", "Did not"), ("Won ' t", "Will not"),
    ("Isn ' t", "Is not"), ("Aren ' t", "Are not"), ("Wasn ' t", "Was not"), ("Weren ' t", "Were not"),
    ("Haven ' t", "Have not"), ("Hasn ' t", "Has not"), ("Hadn ' t", "Had not"), ("Let ' s", "Let us"),
    ("That ' s", "That is"), ("Who ' s", "Who is"), ("What ' s", "What is"), ("Where ' s", "Where is"),
    ("When ' s", "When is"), ("Why ' s", "Why is"), ("How ' s", "How is"), ("I ' ll", "I will"),
    ("You ' ll", "You will"), ("He ' ll", "He will"), ("She ' ll", "She will"), ("It ' ll", "It will"),
    ("We ' ll", "We will"), ("They ' ll", "They will"), ("I ' ve", "I have"), ("You ' ve", "You have"),
    ("We ' ve", "We have"), ("They ' ve", "They have"), ("I ' d", "I would"), ("You ' d", "You would"),
    ("He ' d", "He would"), ("She ' d", "She would"), ("It ' d", "It would"), ("We ' d", "We would"),
    ("They ' d", "They would"),
)
_CONTRACTION_MAP = {short.lower(): full for short, full in CONTRACTIONS}
# One pass over the text is equivalent to the released 45 sequential substitutions: no replacement
# contains an apostrophe, so none can create a new match, and no two forms overlap.
_CONTRACTION_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(s) for s, _ in CONTRACTIONS) + r")\b", re.IGNORECASE
)


def expand_contractions(text: str) -> str:
    """``"i ' m fine , don ' t worry"`` -> ``"I am fine , Do not worry"``."""
    return _CONTRACTION_RE.sub(lambda m: _CONTRACTION_MAP[m.group(0).lower()], text)


# --------------------------------------------------------------------------------------------------
# Loading and validation.
class ESConvFormatError(UserError):
    """A dialogue file does not have the MultiESC form; the message names file, line and dialogue."""


@dataclass(frozen=True)
class Turn:
    speaker: str  # "usr" (seeker) or "sys" (supporter)
    text: str
    strategy: str | None  # the label as written in the data (sys only)


@dataclass(frozen=True)
class Dialogue:
    index: int  # 0-based position among the dialogues of the file
    line: int  # 1-based line number in the file
    situation: str
    turns: tuple[Turn, ...]
    path: str = ""


def _fail(path: str, line: int, index: int, msg: str) -> ESConvFormatError:
    return ESConvFormatError(f"{path}:{line}: dialogue {index}: {msg}")


def parse_dialogue(obj: object, path: str, line: int, index: int) -> Dialogue:
    """Validate one decoded JSON object and return it as a Dialogue."""
    if not isinstance(obj, dict):
        raise _fail(path, line, index, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("situation", "dialog"):
        if key not in obj:
            raise _fail(path, line, index, f"missing key {key!r} (expected 'situation' and 'dialog')")
    situation = obj["situation"]
    if not isinstance(situation, str):
        raise _fail(path, line, index, "'situation' must be a string")
    dialog = obj["dialog"]
    if not isinstance(dialog, list) or not dialog:
        raise _fail(path, line, index, "'dialog' must be a non-empty list of turns")
    turns = []
    for t, turn in enumerate(dialog):
        where = f"turn {t}: "
        if not isinstance(turn, dict):
            raise _fail(path, line, index, where + "expected an object with 'speaker' and 'text'")
        speaker = turn.get("speaker")
        if speaker not in ("usr", "sys"):
            raise _fail(path, line, index, where + f"speaker {speaker!r}, expected 'usr' or 'sys'")
        text = turn.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _fail(path, line, index, where + "empty or missing 'text', expected a non-empty string")
        if t > 0 and dialog[t - 1].get("speaker") == speaker:
            raise _fail(path, line, index, where + f"two {speaker!r} turns in a row; expected speakers to "
                        "alternate (merge consecutive same-speaker turns, see data/convert_hf_esconv.py)")
        strategy = None
        if speaker == "sys":
            strategy = turn.get("strategy")
            if not isinstance(strategy, str):
                raise _fail(path, line, index, where + f"supporter turn without a 'strategy'; expected one of "
                            f"{list(STRATEGIES)}")
            try:
                strategy_id(strategy)
            except KeyError:
                raise _fail(path, line, index, where + f"unknown strategy {strategy!r}; expected one of "
                            f"{list(STRATEGIES)}") from None
        turns.append(Turn(speaker, text, strategy))
    return Dialogue(index=index, line=line, situation=situation, turns=tuple(turns), path=path)


def load_dialogues(path: str | os.PathLike) -> list[Dialogue]:
    """Read and validate a MultiESC-form JSON-lines file (blank lines skipped, CRLF accepted)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such dialogue file (expected MultiESC JSON lines)")
    dialogues: list[Dialogue] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _fail(path, line_no, len(dialogues), f"not UTF-8 text (byte {e.start} of the line: "
                            f"{e.reason}); expected UTF-8 JSON lines") from None
            if not raw.strip():
                continue
            index = len(dialogues)
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _fail(path, line_no, index, f"not valid JSON ({e.msg} at column {e.colno}); "
                            "expected one JSON object per line") from None
            dialogues.append(parse_dialogue(obj, path, line_no, index))
    return dialogues


def dialogue_texts(path: str | os.PathLike) -> list[str]:
    """Every text of a MultiESC dialogue file, in order: each dialogue's situation, then its turns (what the
    tiny models' tokenizers are trained on)."""
    texts = []
    for d in load_dialogues(path):
        texts.append(d.situation)
        texts += [t.text for t in d.turns]
    return texts


# --------------------------------------------------------------------------------------------------
# Samples.
@dataclass(frozen=True)
class Sample:
    id: str  # "<split>-<dialogue index>-<turn index>"
    split: str
    dialogue: Dialogue = field(repr=False, compare=False)
    turn_index: int  # index of the target turn in dialogue.turns
    context: tuple[str, ...]  # situation first, then every earlier turn
    response: str
    strategy: str  # the label as written in the data
    response_memory: tuple[str, ...]
    strategy_memory: tuple[str, ...]
    every_target: bool = True  # False for the released one-per-dialogue test enumeration

    @property
    def dialogue_index(self) -> int:
        return self.dialogue.index

    @property
    def strategy_id(self) -> int:
        return strategy_id(self.strategy)


def make_sample_id(split: str, dialogue_index: int, turn_index: int) -> str:
    return f"{split}-{dialogue_index}-{turn_index}"


def target_turns(dialogue: Dialogue, last_only: bool) -> list[int]:
    """Indices of the target supporter turns of a dialogue (see the module docstring)."""
    turns = dialogue.turns
    if last_only:
        for t in range(len(turns) - 1, -1, -1):
            if turns[t].speaker == "sys":
                return [t]
        return []
    return [t for t in range(1, len(turns)) if turns[t].speaker == "sys" and turns[t - 1].speaker == "usr"]


def make_sample(dialogue: Dialogue, turn_index: int, split: str, with_memory: bool = True) -> Sample:
    turns = dialogue.turns
    target = turns[turn_index]
    assert target.speaker == "sys" and target.strategy is not None
    earlier = [t for t in turns[:turn_index] if t.speaker == "sys"] if with_memory else []
    return Sample(
        id=make_sample_id(split, dialogue.index, turn_index),
        split=split,
        dialogue=dialogue,
        turn_index=turn_index,
        context=(dialogue.situation,) + tuple(t.text for t in turns[:turn_index]),
        response=target.text,
        strategy=target.strategy,
        response_memory=tuple(t.text for t in earlier),
        strategy_memory=tuple(t.strategy for t in earlier),
        every_target=with_memory,
    )


def enumerate_samples(dialogues: Iterable[Dialogue], split: str, test_mode: str = "last") -> list[Sample]:
    """All samples of a split, in the released order.

    ``split`` is "train", "valid" or "test" (any other name enumerates like train). For "test",
    ``test_mode="last"`` (released) gives one sample per dialogue without memory; ``"all"`` enumerates
    like train.
    """
    if test_mode not in ("last", "all"):
        raise ValueError(f"test_mode must be 'last' or 'all', got {test_mode!r}")
    last_only = split == "test" and test_mode == "last"
    samples = []
    for d in dialogues:
        for t in target_turns(d, last_only):
            samples.append(make_sample(d, t, split, with_memory=not last_only))
    return samples


def load_samples(path: str | os.PathLike, split: str, test_mode: str = "last") -> list[Sample]:
    """``enumerate_samples(load_dialogues(path), split, test_mode)``."""
    return enumerate_samples(load_dialogues(path), split, test_mode)
