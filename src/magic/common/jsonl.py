"""JSON-lines resume files: the one reader of the files a step appends one record to per finished piece of work,
so that a rerun after a crash or a kill -9 continues where the run stopped (the evaluation's
``<result>.partial.jsonl``, and the LLM answer caches: magic.llm.engines.cache.JsonlCache reads through it).

The rule, for every such file:

* a torn last line (the writer was killed in the middle of it: no newline at its end, or not a valid record)
  is dropped with a warning naming ``file:line``; with ``truncate`` it is cut off the file, so the next record
  appended starts on a line of its own;
* any other line that is not a valid record (not UTF-8, not JSON, or refused by the caller's ``parse``) is not
  the trace of a kill but of an edit or another program: it is skipped with a warning naming ``file:line``
  (``on_bad="skip"``: state whose loss only costs the work again) or refused with a UserError naming
  ``file:line`` (``on_bad="refuse"``);
* blank lines are ignored.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, List, Tuple

from magic.common.errors import UserError

ON_BAD = ("skip", "refuse")


@dataclass
class JsonlContents:
    """What ``parse_jsonl`` / ``read_jsonl`` kept of a resume file."""
    records: List[Any] = field(default_factory=list)  # what ``parse`` returned for each valid line, in order
    lines: List[int] = field(default_factory=list)  # the line number of each record
    skipped: List[Tuple[int, str]] = field(default_factory=list)  # (line number, reason) of each bad line skipped
    torn: bool = False  # the last line was torn (dropped; not in ``skipped``)
    good_end: int = 0  # byte offset just after the last complete line (where the torn one started)


def _decode(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None


def parse_jsonl(raw: bytes, path: str, parse: Callable[[Any], Any], *, on_bad: str = "skip",
                first_line: int = 1, what: str = "record", skipped_note: str = "skipped",
                hint: str = "") -> JsonlContents:
    """The records of the JSON-lines bytes ``raw`` of file ``path`` (whose first line is line ``first_line``),
    by the module's rule. ``parse(obj)`` turns one decoded JSON value into a record, or raises ValueError with
    the reason it is not one. ``skipped_note`` ends the warning of a skipped line (what happens instead),
    ``hint`` the error of a refused one (how to repair it)."""
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    out = JsonlContents()
    pos, line_no = 0, first_line - 1
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line, line_no = raw[pos:end], line_no + 1
        last = end >= len(raw)
        if line.strip():
            try:
                if nl < 0:
                    raise ValueError("no newline at its end")
                record = parse(_decode(line))
            except ValueError as e:
                if last:  # the write of this line was interrupted: forget it, its work is done again
                    out.torn = True
                    warnings.warn(f"{path}:{line_no}: incomplete last line (a run was interrupted while writing "
                                  f"it: {e}); dropped", stacklevel=3)
                    return out
                if on_bad == "refuse":
                    raise UserError(f"{path}:{line_no}: not a valid {what} ({e})" + (f"; {hint}" if hint else "")) \
                        from None
                out.skipped.append((line_no, str(e)))
                warnings.warn(f"{path}:{line_no}: not a valid {what} ({e}); {skipped_note}", stacklevel=3)
            else:
                out.records.append(record)
                out.lines.append(line_no)
        out.good_end = pos = end
    return out


def read_jsonl(path: str | os.PathLike, parse: Callable[[Any], Any], *, on_bad: str = "skip",
               truncate: bool = False, **kwargs) -> JsonlContents:
    """``parse_jsonl`` of the file ``path`` (absent: nothing); with ``truncate`` a torn last line is cut off the
    file (fsynced) before the caller appends to it. ``kwargs`` go to parse_jsonl."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return JsonlContents()
    with open(path, "rb") as f:
        raw = f.read()
    out = parse_jsonl(raw, path, parse, on_bad=on_bad, **kwargs)
    if truncate and out.torn:
        with open(path, "r+b") as f:
            f.truncate(out.good_end)
            f.flush()
            os.fsync(f.fileno())
    return out
