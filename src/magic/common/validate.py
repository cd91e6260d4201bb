"""One validation layer for every step: flags, models and tokenizers, sample ids, empty inputs, --resume.

Every check runs before any work starts (before a model is trained, a prompt generated or a file written)
and fails with a ``UserError`` naming the file (and entry) and what was expected. See docs/RELIABILITY.md.

* argparse types (``positive_int``, ``non_negative_int``, ``length_int``, ``finite_float``, ``positive_float``,
  ...): bad numbers are refused at parse time with argparse's usual message and exit code 2; every float type
  refuses NaN and infinities (one rule, in ``_number``);
* ``check_model_dir`` / ``check_tokenizer_files`` / ``check_json_files`` / ``check_vocab``: a model or tokenizer
  that cannot be what the user meant (no such folder, no tokenizer files, a JSON file that does not parse or a
  tokenizer.json that is not one, a vocabulary of a handful of tokens, a vocabulary that does not fit the
  model's embeddings);
* ``check_split_ids`` / ``check_ids_sidecar`` / ``check_duplicate_dialogues``: files mixed up between splits,
  a short or stale ids sidecar, a dialogue given twice;
* ``require_nonempty``: an empty input is an error unless the user asked for that split to be empty;
* ``merge_resume_args``: which flags --resume honours and which it refuses, by name;
* ``check_output_file``: an output file that could not be written is refused before the work;
* ``check_api_key``: an API key that cannot be an HTTP header value is refused before the first request.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import warnings
from typing import Iterable, Mapping, Sequence

from magic.common.artifacts import SPLITS, load_ids
from magic.common.errors import UserError
from magic.common.io_utils import load_json, output_target


# ---------------------------------------------------------------------------------------- argparse types
def _number(cast, test, expected: str):
    def parse(text: str):
        try:
            value = cast(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}") from None
        # the one rule of every float flag: NaN and infinities are refused ("nan", "inf", "1e999"); a flag
        # that gives them a meaning needs its own type, documented in its help
        if cast is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected} (finite)")
        if not test(value):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}")
        return value
    parse.__name__ = expected.replace(" ", "_")  # argparse shows the type's name in some messages
    return parse


# BART wraps every sequence in <s> ... </s>: a length below this cannot be applied (the tokenizer keeps the
# sequence whole); magic.generator.data.DialogueDataset checks the tokenizer's own count
MIN_SEQUENCE_LENGTH = 2

positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
length_int = _number(int, lambda v: v >= MIN_SEQUENCE_LENGTH,
                     f"an integer >= {MIN_SEQUENCE_LENGTH} (a sequence holds <s> and </s> at least)")
finite_float = _number(float, lambda v: True, "a number")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
probability = _number(float, lambda v: 0 <= v <= 1, "a number between 0 and 1")
any_int = _number(int, lambda v: True, "an integer")  # settings.add_options' type for an int field given none
port_int = _number(int, lambda v: 1 <= v <= 65535, "a port number between 1 and 65535")
port_or_zero = _number(int, lambda v: 0 <= v <= 65535, "a port number between 0 (any free port) and 65535")
# numpy (transformers' set_seed) takes seeds below 2**32 only
seed_int = _number(int, lambda v: 0 <= v < 2 ** 32, "an integer between 0 and 4294967295 (a seed)")


# ---------------------------------------------------------------------------------------- models
# Files from which a tokenizer can be built (fast tokenizer, byte-level BPE, SentencePiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.txt")
# Fewer tokens than this cannot be a trained tokenizer (byte-level BPE alone has 256 byte tokens); a folder
# without vocabulary files gives transformers' tokenizers a vocabulary of the special tokens only.
MIN_VOCAB = 100
# Embedding matrices are often padded (to a multiple of 64 or 128) beyond the tokenizer; a tokenizer that
# covers less than this share of them belongs to another model.
MIN_VOCAB_SHARE = 0.9


def looks_like_path(name: str) -> bool:
    """Whether a model name is meant as a local folder (rather than a hub id such as facebook/bart-base)."""
    return (name.startswith((".", "/", "~")) or name.endswith(("/", os.sep)) or os.sep + os.sep in name
            or name.count("/") > 1 or os.path.isabs(name))


def check_model_dir(name: str | os.PathLike, what: str, flag: str = "") -> str:
    """``name`` as a string; a local-looking path must be an existing folder (so no hub 'Repo id' error)."""
    name = os.fspath(name)
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise UserError(f"{name}: is a file; expected the {what} folder{f' ({flag})' if flag else ''}")
    if looks_like_path(name):
        raise UserError(f"{name}: {what} folder not found{f' ({flag})' if flag else ''}")
    return name  # a hub id: transformers downloads it


def check_tokenizer_files(folder: str | os.PathLike, what: str = "model") -> None:
    """A local model folder must hold a tokenizer (one of TOKENIZER_FILES), and its JSON files must be what
    transformers reads (check_json_files)."""
    folder = os.fspath(folder)
    if os.path.isdir(folder) and not any(os.path.exists(os.path.join(folder, f)) for f in TOKENIZER_FILES):
        raise UserError(f"{folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
                        f"copy the tokenizer of the {what} into it, or point to a folder that has one")
    check_json_files(folder)


# The JSON files transformers reads from a model folder. Each is parsed with load_json first, so a truncated or
# hand-broken one is an error naming it (transformers' and tokenizers' own errors do not name the file).
MODEL_JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "vocab.json")


def check_json_files(folder: str | os.PathLike, names: Sequence[str] = MODEL_JSON_FILES) -> None:
    """Every file of ``names`` present in ``folder`` must be a JSON object; tokenizer.json must be a tokenizers
    file (an object with "model" and "added_tokens"). Raises an error naming the file."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        obj = load_json(path, f"JSON object ({name} of a model folder)")
        if not isinstance(obj, dict):
            raise UserError(f"{path}: expected a JSON object, got a {type(obj).__name__}")
        if name == "tokenizer.json" and not (isinstance(obj.get("model"), dict)
                                             and isinstance(obj.get("added_tokens"), list)):
            raise UserError(f"{path}: not a tokenizer file (expected the object the tokenizers library writes, "
                            f"with 'model' and 'added_tokens'; got {sorted(obj)[:6] or 'an empty object'}); copy "
                            "the tokenizer files again from the model it belongs to")


def embedding_rows(model) -> int | None:
    """Rows of the model's input embedding matrix (the token ids it can take)."""
    get = getattr(model, "get_input_embeddings", None)
    if get is not None:
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
        if emb is not None and hasattr(emb, "num_embeddings"):
            return int(emb.num_embeddings)
    size = getattr(model, "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def check_vocab(tokenizer, model, where: str) -> None:
    """The tokenizer must be a real one and fit the model: ``MIN_VOCAB`` tokens at least, no id beyond the
    embeddings, and at least ``MIN_VOCAB_SHARE`` of the embedding rows covered."""
    n_tok = len(tokenizer)
    if n_tok < MIN_VOCAB:
        raise UserError(f"{where}: the tokenizer has only {n_tok} tokens (expected a trained vocabulary of "
                        f">= {MIN_VOCAB}); are its vocabulary files (e.g. vocab.json + merges.txt) missing?")
    rows = embedding_rows(model) if model is not None else None
    if rows is None:
        return
    if n_tok > rows:
        raise UserError(f"{where}: the tokenizer has {n_tok} tokens but the model's embeddings only {rows} rows; "
                        "the tokenizer belongs to another model")
    if n_tok < MIN_VOCAB_SHARE * rows:
        raise UserError(f"{where}: the tokenizer has {n_tok} tokens but the model's embeddings {rows} rows; "
                        "the tokenizer belongs to another model")


# ---------------------------------------------------------------------------------------- inputs
def require_nonempty(n: int, path: str, split: str, what: str = "samples", allow_empty: bool = False,
                     hint: str | None = None) -> None:
    """An empty split is an error unless the user asked for it (``allow_empty``)."""
    if n == 0 and not allow_empty:
        hint = hint or f"pass --allow_empty {split} if this split is meant to be empty"
        raise UserError(f"{path}: no {split} {what}; expected at least one ({hint})")


def check_ids_known(ids: Sequence[str], known: Mapping | set, where: str, reference: str) -> None:
    """Every id must be a sample of ``reference`` (e.g. the gold dialogue file): checked before any work."""
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise UserError(f"{where}: {len(unknown)} of {len(ids)} sample ids are not samples of {reference} "
                        f"(first: {unknown[0]!r}); were the prompts made from another file?")


def parse_split_list(text: str | None, flag: str = "--allow_empty") -> set[str]:
    """``"valid,test"`` -> {"valid", "test"}; only the splits of magic.common.artifacts.SPLITS."""
    splits = {s.strip() for s in (text or "").split(",") if s.strip()}
    bad = splits - set(SPLITS)
    if bad:
        raise UserError(f"{flag}: unknown split(s) {sorted(bad)}; expected a subset of {','.join(SPLITS)}")
    return splits


def id_split(sample_id: object) -> str | None:
    """``"valid-3-5"`` -> ``"valid"``; None for anything that is not a sample id of magic.esconv.dialogues."""
    if not isinstance(sample_id, str):
        return None
    head, sep, _ = sample_id.partition("-")
    return head if sep and head in SPLITS else None


def check_split_ids(ids: Iterable[object], split: str, where: str) -> None:
    """Sample ids say which split they come from: refuse a file of another split, and duplicate ids.
    Entries without an id (files written by the released code) are not checked."""
    seen: dict[str, int] = {}
    for k, sid in enumerate(ids):
        if sid is None:
            continue
        got = id_split(sid)
        if got is not None and got != split:
            raise UserError(f"{where}: entry {k} is sample {sid!r} of the {got} split, but this is the {split} "
                            f"input; was a {got} file given for {split}?")
        if sid in seen:
            raise UserError(f"{where}: entries {seen[sid]} and {k} are both sample {sid!r}; each sample once")
        seen[sid] = k


def check_ids_sidecar(sidecar: str, expected: Sequence[str], data_path: str) -> None:
    """The ids sidecar of ``data_path`` (``sidecar``, as magic.common.artifacts.ids_path names it) must list exactly
    ``expected``, in order (no short, empty or stale sidecar)."""
    try:
        ids = load_ids(data_path)
    except (OSError, ValueError) as e:
        raise UserError(str(e)) from None
    if len(ids) != len(expected):
        raise UserError(f"{sidecar}: {len(ids)} ids, but {data_path} goes with {len(expected)} samples; "
                        "they must correspond one to one (regenerate both)")
    for i, (got, want) in enumerate(zip(ids, expected)):
        if got != want:
            raise UserError(f"{sidecar}: entry {i} is sample {got!r}, expected {want!r}")


def dialogue_fingerprint(dialogue) -> str:
    """Hash of a dialogue's situation and turns (speaker, text): equal dialogues, equal fingerprints."""
    h = hashlib.sha1(dialogue.situation.encode("utf-8"))
    for t in dialogue.turns:
        h.update(b"\x00" + t.speaker.encode() + b"\x01" + t.text.encode("utf-8"))
    return h.hexdigest()


def check_duplicate_dialogues(dialogues: Mapping[str, Sequence], allow_shared: bool = False) -> int:
    """``dialogues``: split -> list of magic.esconv.dialogues.Dialogue. A dialogue in two splits is an error (a file given
    for the wrong split, or leakage) unless ``allow_shared`` (then a warning); a dialogue twice within a split
    is reported (warning). Returns the number of duplicates."""
    first: dict[str, tuple[str, object]] = {}
    within = 0
    for split, ds in dialogues.items():
        for d in ds:
            fp = dialogue_fingerprint(d)
            if fp in first:
                split0, d0 = first[fp]
                where0 = f"{getattr(d0, 'path', '')}:{getattr(d0, 'line', '?')}"
                where = f"{getattr(d, 'path', '')}:{getattr(d, 'line', '?')}"
                if split0 != split and not allow_shared:
                    raise UserError(f"{where}: this {split} dialogue is also {split0} dialogue {where0}; the "
                                    f"splits must not share dialogues (was a {split0} file given for {split}? "
                                    "--allow_shared_dialogues if they are meant to)")
                within += 1
                if within <= 3:
                    warnings.warn(f"{where}: duplicate of {split0} dialogue {where0}", stacklevel=2)
            else:
                first[fp] = (split, d)
    if within > 3:
        warnings.warn(f"{within} duplicate dialogues in all (first 3 shown)", stacklevel=2)
    return within


# ---------------------------------------------------------------------------------------- --resume
def merge_resume_args(cli: Mapping, saved: Mapping, defaults: Mapping, free: Iterable[str],
                      honoured: Iterable[str], resume_dir: str) -> dict:
    """The arguments of a resumed run: the interrupted run's, except ``free`` flags (taken from the command
    line) and ``honoured`` flags given on the command line (e.g. more --num_epochs). Any other flag given
    with a value other than the run's is refused, by name, rather than silently ignored."""
    free, honoured = set(free), set(honoured)
    merged = {**cli, **{k: v for k, v in saved.items() if k in cli}}
    changed = []
    for k, v in cli.items():
        if k in free:
            merged[k] = v
        elif k in saved and v != saved[k] and v != defaults.get(k, v):  # given on the command line, differs
            if k in honoured:
                merged[k] = v
            else:
                changed.append(f"--{k} {v} (the run has {saved[k]})")
    if changed:
        raise UserError(f"--resume {resume_dir}: cannot change {', '.join(changed)}; resume with the run's "
                        f"flags (only {', '.join('--' + k for k in sorted(honoured))} may change) or start a new run")
    return merged


# ---------------------------------------------------------------------------------------- prompt length
def clip_ids(ids: Sequence[int], limit: int, side: str = "right") -> list[int]:
    """At most ``limit`` ids: ``side="right"`` cuts the end (keeps the beginning), ``"left"`` the start."""
    if limit < 1:
        raise ValueError(f"prompt limit must be >= 1, got {limit}")
    if len(ids) <= limit:
        return list(ids)
    return list(ids[:limit]) if side == "right" else list(ids[len(ids) - limit:])


def check_bart_dir(bart_dir: str | os.PathLike, flag: str = "--bart_base_dir") -> None:
    """The BART a run starts from: an existing folder (or hub id) with tokenizer files, a real vocabulary,
    and a tokenizer that fits the config's embeddings. Loads only the tokenizer and the config."""
    from transformers import BartConfig, BartTokenizer

    name = check_model_dir(bart_dir, "BART", flag)
    check_tokenizer_files(name, "BART model")
    try:
        tokenizer = BartTokenizer.from_pretrained(name)
        config = BartConfig.from_pretrained(name)
    except OSError as e:  # a hub id (or a folder typed without ./) that cannot be fetched
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        local = f"models/{os.path.basename(name)}"
        raise UserError(f"{name}: no such folder, and not loadable as a hub model ({flag}): {first.rstrip('.')}; "
                        f"with hub access it downloads by itself (HF_HUB_OFFLINE unset), else fetch it: "
                        f"`hf download {name} --local-dir {local}` and pass {flag} {local}") from None
    check_vocab(tokenizer, _Rows(config.vocab_size), f"{name} ({flag})")


class _Rows:
    """Stands for a model whose embedding matrix has ``vocab_size`` rows (from its config)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)


# ---------------------------------------------------------------------------------------- output files
def check_output_file(path: str | os.PathLike, flag: str = "--output") -> None:
    """Before any work: ``path`` can be written as a file by atomic_write_text / atomic_write_json (a temporary
    file in its folder, then a rename; missing folders are created; stdout / stderr written through).
    Refused, naming the flag: an existing folder, a FIFO or device (io_utils.output_target), a path under a file, a folder this process cannot write in (permissions, a read-only disk)."""

    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is a folder; expected a file name")
    try:
        target, _, stream = output_target(path)  # a FIFO, a device: refused now, not after the work
    except UserError as e:
        raise UserError(f"{flag} {e}") from None
    if stream is not None:
        return
    folder = os.path.dirname(os.path.abspath(target))
    while not os.path.exists(folder):  # created by the writer; what counts is the first folder that exists
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write in {folder} (permission denied or a read-only disk)")


# ---------------------------------------------------------------------------------------- API keys
class ApiKeyError(UserError):
    """The API key cannot be sent (it holds a character no HTTP header value may hold); the message shows no
    part of it."""


def _key_character(c: str) -> str:
    if c in "\r\n":
        return "a line break"
    if c in " \t":
        return "a space or tab"
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return "a control character"
    return "a non-ASCII character"


# sent to a server without auth (vLLM, llama.cpp, Ollama accept any key): the OpenAI client refuses to send none
KEYLESS_PLACEHOLDER = "EMPTY"


def openai_api_key(base_url: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """THE rule of every step that talks to an OpenAI-compatible server: $OPENAI_API_KEY when set and not empty
    (checked: check_api_key); else, for a --base_url server, the placeholder KEYLESS_PLACEHOLDER (an empty key
    counts as unset: the OpenAI client would refuse it with "Missing credentials"); else None (the caller
    decides: step 1 refuses, for the official API a key is needed)."""
    key = environ.get("OPENAI_API_KEY") or None
    if key:
        check_api_key(key)
        return key
    return KEYLESS_PLACEHOLDER if base_url else None


def check_api_key(key: str | None, source: str = "OPENAI_API_KEY") -> None:
    """An API key goes into an HTTP header (``Authorization: Bearer <key>``): it must be printable ASCII without
    spaces (what every provider issues). Otherwise an ApiKeyError before the first request, saying which kind of
    character and where (start, end, inside), never the key or a part of it: a key pasted with its line break,
    or two values pasted together, would else be printed by the HTTP library's "Illegal header value" error and
    retried as a connection error. ``None`` (no key) passes: the callers decide whether one is needed."""
    if not key:
        return
    bad = [i for i, c in enumerate(key) if not "\x21" <= c <= "\x7e"]
    if not bad:
        return
    kinds = sorted({_key_character(key[i]) for i in bad})
    if all(i == k for k, i in enumerate(bad)):
        where = "at its start"
    elif all(i == len(key) - 1 - k for k, i in enumerate(reversed(bad))):
        where = "at its end"
    else:
        where = "inside it"
    raise ApiKeyError(f"{source} holds {' and '.join(kinds)} ({where}); an API key is one word of printable ASCII "
                      "and cannot be sent as an HTTP header otherwise: set it to the key alone (its value is not "
                      "shown)")
