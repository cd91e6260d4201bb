"""HF ``thu-coai/esconv`` form -> MultiESC form (placeholder, completed below)."""
from __future__ import annotations

import re
import string

_PUNCT_RE = re.compile("([" + re.escape(string.punctuation) + "])")
_WS_RE = re.compile(r"\s+")


def tokenize_text(text: str) -> str:
    """MultiESC tokenisation of one utterance: ``"I'm fine, thanks"`` -> ``"I ' m fine , thanks ."``."""
    out = _WS_RE.sub(" ", _PUNCT_RE.sub(r" \1 ", text)).strip()
    if out and out[-1].isalnum():
        out += " ."
    return out
