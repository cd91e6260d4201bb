"""HF ``thu-coai/esconv`` form -> MultiESC form (the form ``magic.esconv.dialogues`` reads).

The HF form (``hf_split/*.json`` in the shared data, the ``{train,valid,test}.txt`` files of the hub
dataset) is JSON lines with raw, untokenised text, consecutive turns by the same speaker kept as
separate turns, and the 8 original ESConv labels. MultiESC (and so MAGIC) merged those turns,
tokenised the text and used its own label set. The rules below were worked out by comparing the HF
valid/test dialogues with the real MultiESC valid/test files (same dialogues, same order):

1. Merge consecutive turns by the same speaker into one turn; drop a turn whose text exactly repeats
   the turn just before it by the same speaker (a double send in the crowd-sourcing tool).
2. Text: a space each side of every ASCII punctuation character, whitespace collapsed, ``" ."`` added
   when a part ends in a letter or digit; merged parts joined with a space (see :func:`tokenize_text`).
3. Top-level keys: emotion_type, problem_type, situation, init_intensity and final_intensity from the
   seeker survey, as ints; a missing final intensity becomes 2, as in MultiESC.
4. Labels: "Providing Suggestions" and "Information" -> "Providing Suggestions or Information"; the
   others keep their name. A merged supporter turn takes the label of its first part, except that an
   "Others" part is skipped when a later part has a real strategy (MultiESC labelled the merged turn
   by its substance, not by a leading "ok" or "I see").
5. Greeting is **a heuristic**: ESConv has no Greeting label; MultiESC split most greetings, thanks and
   good-byes off "Others". We label an "Others" turn "Greeting" when its text looks like one
   (:data:`GREETING_RE`). ``greeting="opening"`` applies this to the first supporter turn of a
   dialogue only, ``greeting="none"`` never (turns stay "Others").

How closely the result matches the MultiESC files (turn counts, exact turn text, supporter labels for each
``greeting`` mode, and on train the labels named in MAGIC's released motivations) is measured on the real
data by tests/esconv/test_convert_hf.py, which prints the report; the figures are in docs/FIDELITY.md. Nearly every
text mismatch is a " ." that MultiESC added after a part already ending in punctuation, which the HF text
cannot predict.
"""
from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass, field
from typing import Iterable

from magic.common.errors import UserError
from magic.esconv.dialogues import STRATEGIES, ESConvFormatError, parse_dialogue
from magic.common.io_utils import atomic_write_text

PSI = "Providing Suggestions or Information"
# The 8 labels of the HF/original ESConv data, and what each becomes. The MultiESC spelling is kept
# ("Reflection of feelings", lower-case f), so converted files look like the released ones.
LABEL_MAP: dict[str, str] = {
    "Question": "Question",
    "Restatement or Paraphrasing": "Restatement or Paraphrasing",
    "Reflection of feelings": "Reflection of feelings",
    "Self-disclosure": "Self-disclosure",
    "Affirmation and Reassurance": "Affirmation and Reassurance",
    "Providing Suggestions": PSI,
    "Information": PSI,
    "Others": "Others",
}
_LABEL_LOOKUP = {k.lower(): v for k, v in LABEL_MAP.items()}
# Already-converted input (our 8 labels) passes through too, in the MultiESC spelling.
_LABEL_LOOKUP.update({s.lower(): ("Reflection of feelings" if s == "Reflection of Feelings" else s)
                      for s in STRATEGIES})

# Greetings, thanks, well-wishes and good-byes: what MultiESC labelled "Greeting" among ESConv's
# "Others" turns. Chosen by measuring against the real valid/test labels (see the module docstring).
GREETING_RE = re.compile(
    r"\b(hi|hello|hey|hiya|greetings|good (morning|afternoon|evening|night|day)|welcome|take care"
    r"|bye+|goodbye|good luck|best of luck|thanks?|thank you|nice (talking|chatting|to (meet|talk|chat))"
    r"|have a (good|great|nice|wonderful|lovely|blessed)|glad|wish(ing)? you|best wishes|all the best"
    r"|i hope|you too|no problem|pleasure|happy holidays|merry christmas|how are you)\b",
    re.IGNORECASE,
)
GREETING_MODES = ("all", "opening", "none")
DEFAULT_GREETING = GREETING_MODES[0]  # closest to MultiESC (docs/FIDELITY.md)
DEFAULT_FINAL_INTENSITY = 2  # MultiESC's value when the seeker skipped the final survey question

_PUNCT_RE = re.compile("([" + re.escape(string.punctuation) + "])")
_WS_RE = re.compile(r"\s+")


class HFFormatError(UserError):
    """An HF-form input line is malformed; the message names file, line and what was expected."""


def tokenize_text(text: str) -> str:
    """MultiESC tokenisation of one utterance: ``"I'm fine, thanks"`` -> ``"I ' m fine , thanks ."``.

    Only ASCII punctuation is split off; curly quotes stay attached, as in MultiESC.
    """
    out = _WS_RE.sub(" ", _PUNCT_RE.sub(r" \1 ", text)).strip()
    if out and out[-1].isalnum():
        out += " ."
    return out


def is_greeting_like(text: str) -> bool:
    return GREETING_RE.search(text) is not None


def map_label(label: str) -> str:
    """An HF label (or one of ours) -> its MultiESC label; KeyError naming the accepted labels."""
    key = label.strip().lower() if isinstance(label, str) else None
    if key not in _LABEL_LOOKUP:
        raise KeyError(f"unknown strategy {label!r}; expected one of {list(LABEL_MAP)}")
    return _LABEL_LOOKUP[key]


def merged_label(labels: list[str], texts: list[str], opening: bool, greeting: str = DEFAULT_GREETING) -> str:
    """The MultiESC label of one merged supporter turn from the HF labels of its parts (rules 4 and 5)."""
    mapped = [map_label(x) for x in labels]
    substantive = [x for x in mapped if x != "Others"]
    label = substantive[0] if substantive else "Others"
    if mapped[0] == "Others" and (greeting == "all" or (greeting == "opening" and opening)):
        # a leading greeting ("Hi! How are you?") names the whole turn, as in MultiESC
        if is_greeting_like(texts[0]):
            return "Greeting"
        if label == "Others" and is_greeting_like(" ".join(texts)):
            return "Greeting"
    return label


def _intensity(value: object, default: int | None, what: str, fail) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise fail(f"missing {what}; expected an integer 1-5")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise fail(f"{what} {value!r} is not an integer") from None


@dataclass
class ConvertStats:
    dialogues: int = 0
    turns_in: int = 0
    turns_out: int = 0
    duplicates_dropped: int = 0
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, other: "ConvertStats") -> None:
        self.dialogues += other.dialogues
        self.turns_in += other.turns_in
        self.turns_out += other.turns_out
        self.duplicates_dropped += other.duplicates_dropped
        for k, v in other.labels.items():
            self.labels[k] = self.labels.get(k, 0) + v


def convert_dialogue(obj: object, path: str = "<input>", line: int = 0, greeting: str = DEFAULT_GREETING,
                     stats: ConvertStats | None = None) -> dict:
    """One HF-form dialogue (decoded JSON) -> one MultiESC-form dict. HFFormatError names path:line."""
    if greeting not in GREETING_MODES:
        raise ValueError(f"greeting must be one of {GREETING_MODES}, got {greeting!r}")

    def fail(msg: str) -> HFFormatError:
        return HFFormatError(f"{path}:{line}: {msg}")

    if isinstance(obj, dict) and "dialog" not in obj and isinstance(obj.get("text"), str):
        # a row of the hub dataset: {"text": "<the dialogue as a JSON string>"}
        try:
            obj = json.loads(obj["text"])
        except json.JSONDecodeError as e:
            raise fail(f"the 'text' field is not a JSON dialogue ({e.msg})") from None
    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object (one HF-form dialogue), got {type(obj).__name__}")
    for key in ("situation", "dialog"):
        if key not in obj:
            raise fail(f"missing key {key!r}; expected an HF thu-coai/esconv dialogue with 'situation' and 'dialog'")
    dialog = obj["dialog"]
    if not isinstance(dialog, list) or not dialog:
        raise fail("'dialog' must be a non-empty list of turns")
    seeker = (obj.get("survey_score") or {}).get("seeker") or {}
    if not isinstance(seeker, dict):
        raise fail("'survey_score.seeker' must be an object")

    groups: list[tuple[str, list[dict]]] = []  # (speaker, parts)
    prev: dict | None = None
    dropped = 0
    for t, turn in enumerate(dialog):
        if not isinstance(turn, dict):
            raise fail(f"turn {t}: expected an object with 'speaker' and 'text'")
        speaker, text = turn.get("speaker"), turn.get("text")
        if speaker not in ("usr", "sys"):
            raise fail(f"turn {t}: speaker {speaker!r}, expected 'usr' or 'sys'")
        if not isinstance(text, str) or not text.strip():
            raise fail(f"turn {t}: empty or missing 'text', expected a non-empty string")
        if speaker == "sys":
            try:
                map_label(turn.get("strategy"))
            except KeyError as e:
                raise fail(f"turn {t}: {e.args[0]}") from None
        if prev is not None and prev["speaker"] == speaker and prev["text"] == text:
            dropped += 1
            continue
        prev = turn
        if groups and groups[-1][0] == speaker:
            groups[-1][1].append(turn)
        else:
            groups.append((speaker, [turn]))

    out_dialog = []
    labels: dict[str, int] = {}
    for g, (speaker, parts) in enumerate(groups):
        text = " ".join(tokenize_text(p["text"]) for p in parts)
        if speaker == "usr":
            out_dialog.append({"text": text, "speaker": "usr"})
            continue
        label = merged_label([p["strategy"] for p in parts], [p["text"] for p in parts],
                             opening=(g <= 1), greeting=greeting)  # speakers alternate: the first sys turn is 0 or 1
        labels[label] = labels.get(label, 0) + 1
        out_dialog.append({"text": text, "speaker": "sys", "strategy": label})

    result = {
        "emotion_type": obj.get("emotion_type", ""),
        "problem_type": obj.get("problem_type", ""),
        "situation": obj["situation"],
        "init_intensity": _intensity(seeker.get("initial_emotion_intensity"), None,
                                     "survey_score.seeker.initial_emotion_intensity", fail),
        "final_intensity": _intensity(seeker.get("final_emotion_intensity"), DEFAULT_FINAL_INTENSITY,
                                      "survey_score.seeker.final_emotion_intensity", fail),
        "dialog": out_dialog,
    }
    if stats is not None:
        stats.add(ConvertStats(1, len(dialog), len(out_dialog), dropped, labels))
    return result


def convert_lines(lines: Iterable[str], path: str = "<input>", greeting: str = DEFAULT_GREETING,
                  stats: ConvertStats | None = None) -> list[dict]:
    """Convert HF-form JSON lines (blank lines skipped) and validate each result with magic.esconv.dialogues.

    Raises HFFormatError (bad input) naming ``path:line``; nothing is returned partially.
    """
    out: list[dict] = []
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise HFFormatError(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); "
                                "expected one HF-form dialogue per line") from None
        converted = convert_dialogue(obj, path, line_no, greeting, stats)
        try:
            # the same checks every consumer applies (alternation, labels, non-empty text)
            parse_dialogue(converted, path, line_no, len(out))
        except ESConvFormatError as e:
            raise HFFormatError(f"converted dialogue is not valid MultiESC form: {e}") from None
        out.append(converted)
    if not out:
        raise HFFormatError(f"{path}: no dialogues found; expected HF-form JSON lines")
    return out


def dumps_multiesc(dialogues: list[dict]) -> str:
    """JSON lines as MultiESC writes them (one object per line, non-ASCII kept, LF endings)."""
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues)


# HF split files are named train/valid/test (local copies) or train/validation/test (hub).
HF_SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation"), "test": ("test",)}
HF_EXTENSIONS = (".json", ".jsonl", ".txt")


def find_split_file(input_dir: str | os.PathLike, split: str) -> str:
    """The HF-form file of ``split`` in ``input_dir`` (``valid.json``, ``validation.txt``, ...)."""
    input_dir = os.fspath(input_dir)
    tried = []
    for name in HF_SPLIT_NAMES[split]:
        for ext in HF_EXTENSIONS:
            candidate = os.path.join(input_dir, name + ext)
            tried.append(os.path.basename(candidate))
            if os.path.exists(candidate):
                return candidate
    raise FileNotFoundError(f"{input_dir}: no HF-form file for split {split!r} (tried {', '.join(tried)})")


def convert_splits(sources: dict[str, tuple[str, Iterable[str]]], outputs: dict[str, str | os.PathLike],
                   greeting: str = DEFAULT_GREETING) -> dict[str, ConvertStats]:
    """Convert several splits: ``sources[split] = (name for messages, lines)`` -> file ``outputs[split]``.

    All splits are converted and validated before any file is written, so a bad line in test leaves
    no half-updated set of train/valid/test behind.
    """
    converted, stats = {}, {}
    for split, (name, lines) in sources.items():
        stats[split] = ConvertStats()
        converted[split] = convert_lines(lines, name, greeting, stats[split])
    for split, dialogues in converted.items():
        atomic_write_text(outputs[split], dumps_multiesc(dialogues))
    return stats


HUB_DATASET = "thu-coai/esconv"
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


class HubUnavailableError(RuntimeError):
    """The hub dataset could not be loaded (offline, blocked, or not installed)."""


def hub_lines(split: str, dataset: str = HUB_DATASET) -> list[str]:
    """The rows of one split of the hub dataset as JSON lines (each row's ``text`` is a dialogue)."""
    try:
        from datasets import load_dataset

        rows = load_dataset(dataset, split=HUB_SPLITS[split])
    except Exception as e:  # noqa: BLE001 - any failure here means "no hub": say what to do instead
        raise HubUnavailableError(
            f"could not load the Hugging Face dataset {dataset!r} split {HUB_SPLITS[split]!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Without internet access "
            "(or with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 set), download the HF-form files elsewhere and "
            "use --input FILE or --input_dir DIR instead of --from_hub.") from None
    if "text" in rows.column_names:
        return [row["text"] for row in rows]
    return [json.dumps(row, ensure_ascii=False) for row in rows]
