"""How the paper's numbers are computed from text: the released evaluation protocol of test_evaluation.py
(Wh2018/MAGIC), used by src/magic/generator/evaluation.py.

1. ``clean_response``: the released ``data_clean`` on each generated response (space before ``.,!?;:`` that
   follows a word character, runs of ``.`` / ``!`` collapsed, ``"`` removed; ours: a line break -> space).
2. ``prepare_for_metrics``: references and hypotheses lower-cased and tokenised with nltk ``word_tokenize``,
   joined with spaces; an empty hypothesis becomes ``&``.
3. ``compute_scores``: nlg-eval's BLEU-1..4 / METEOR / ROUGE-L / CIDEr (nlgeval.py) plus corpus
   Distinct-1/2 of the tokenised hypotheses; ``format_scores`` prints them x100 (the released printout).
4. ``compute_scores_and_samples`` (ours): the same scores plus, per sample (by position), the numbers a
   significance test resamples (significance.py); never text. How each metric is resampled:
   - BLEU-1..4 is a corpus statistic: per sample the clipped n-gram matches and hypothesis n-gram counts
     (n = 1..4), the hypothesis length and the closest reference length (``metric.nlgeval.bleu_statistics``);
     a resample's BLEU is recomputed from its summed counts (``bleu_from_counts``; on the full set it is the
     reported BLEU to float rounding);
   - ROUGE-L is the mean of per-sample F-scores (pycocoevalcap's Rouge averages them): stored per sample,
     averaged over a resample;
   - CIDEr is the mean of per-sample scores whose document frequencies (and log N) come from the full set's
     references: stored per sample, averaged over a resample (document frequencies are not recomputed on
     it);
   - METEOR: the JVM's segment scores (one per sample), averaged over a resample. The reported METEOR is
     the jar's corpus score from aggregated statistics, not the mean of the segment scores, so a test on
     METEOR is a test on the segment mean. None with ``no_meteor``;
   - Distinct-1/2 are ratios over the set of all hypotheses' n-grams: resampling them needs the text,
     which is never stored, so they are reported but not tested.
"""
from __future__ import annotations

import functools
import re
import warnings
from typing import Dict, List, Sequence, Tuple

from magic.metric.nlgeval import NLGEval, bleu_statistics, distinct_n

METRIC_ORDER = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "Distinct-1", "Distinct-2")


# ------------------------------------------------------------------------------------------ text clean-up
def add_spaces_before_punctuation(text: str) -> str:
    """'Hi, there!' -> 'Hi , there !' (a space before .,!?;: that follows a word character)."""
    return re.sub(r"(\w)([.,!?;:])", r"\1 \2", text)


# Every character that str.splitlines() treats as a line boundary: a byte-level BPE can generate any of them,
# and one inside a response would break the one-response-per-line files.
_LINE_BREAKS_RE = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    return _LINE_BREAKS_RE.sub(" ", text)


def clean_response(text: str) -> str:
    """The released ``data_clean`` on one generated response (it ran on the whole file; the rules never
    cross a line, so per line is the same). Line breaks inside a response become spaces (ours)."""
    text = one_line(text)
    text = add_spaces_before_punctuation(text)
    text = re.sub(r"\.+", ".", text)
    text = re.sub(r"!+", "!", text)
    return text.replace('"', "")


# ------------------------------------------------------------------------------------------ tokenisation
@functools.lru_cache(maxsize=None)
def punkt_available(language: str = "english") -> bool:
    """Whether nltk's punkt_tab model (used by ``nltk.word_tokenize``) is installed."""
    import nltk
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{language}/")
        return True
    except LookupError:
        return False


@functools.lru_cache(maxsize=None)
def _fallback_tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    warnings.warn(
        "nltk's punkt_tab data is not installed (python -m nltk.downloader punkt_tab needs internet); "
        "word_tokenize falls back to an untrained PunktSentenceTokenizer + NLTK's Treebank word tokenizer. "
        "On the space-tokenised ESConv references and cleaned hypotheses the tokens are the same in almost "
        "all cases (see README, Evaluation).", RuntimeWarning, stacklevel=3)
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokenize(text: str) -> List[str]:
    """``nltk.word_tokenize(text)`` (sentence split with punkt, then the improved Treebank tokenizer).

    Without the punkt_tab data (no internet here), the sentence split uses an *untrained* Punkt model,
    which knows no abbreviations: only the rare "abbreviation." in mid-text splits differently, and that
    changes tokens only when the period is glued to a word (the cleaning step already spaces it off).
    """
    import nltk
    if punkt_available():
        return nltk.word_tokenize(text)
    sents, words = _fallback_tokenizers()
    return [tok for sent in sents.tokenize(text) for tok in words.tokenize(sent)]


def tokenizer_name() -> str:
    return "nltk punkt_tab" if punkt_available() else "fallback: untrained Punkt + NLTKWordTokenizer"


def prepare_for_metrics(references: Sequence[str], hypotheses: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Released preparation: strip the line end, lower-case, word_tokenize, join with spaces; an empty
    hypothesis becomes '&' (pycocoevalcap cannot score an empty string)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; they must align")
    refs, hyps = [], []
    for ref, hyp in zip(references, hypotheses):
        ref = " ".join(word_tokenize(ref.rstrip("\n").lower()))
        hyp = " ".join(word_tokenize(hyp.rstrip("\n").lower()))
        refs.append(ref)
        hyps.append(hyp if hyp else "&")
    return refs, hyps


def compute_scores(references: Sequence[str], hypotheses: Sequence[str], no_meteor: bool = False) -> Dict[str, float]:
    """All metrics as fractions (CIDEr unscaled): nlg-eval's seven plus corpus Distinct-1/2 of the
    tokenised hypotheses (empty hypotheses contribute nothing)."""
    return compute_scores_and_samples(references, hypotheses, no_meteor)[0]


def compute_scores_and_samples(references: Sequence[str], hypotheses: Sequence[str], no_meteor: bool = False
                               ) -> Tuple[Dict[str, float], Dict[str, object]]:
    """``(scores, per_sample)``: ``scores`` is ``compute_scores``' dict; ``per_sample`` holds, in the
    order of the inputs, numbers only (plain lists, JSON-ready)::

        {"bleu": {"n": 4, "correct": [[c1, c2, c3, c4], ...], "guess": [[g1, ..., g4], ...],
                  "hyp_len": [...], "ref_len": [...]},
         "rouge_l": [...], "cider": [...], "meteor": [...] or None}

    See the module docstring for how each is resampled."""
    refs, hyps = prepare_for_metrics(references, hypotheses)
    with NLGEval(no_glove=True, metrics_to_omit=["METEOR"] if no_meteor else None) as nlg:
        scores, each = nlg.compute_metrics([refs], hyps)
    toks = [" ".join(word_tokenize(h.rstrip("\n").lower())) for h in hypotheses]
    scores["Distinct-1"] = distinct_n(toks, 1)
    scores["Distinct-2"] = distinct_n(toks, 2)
    bleu = bleu_statistics([refs], hyps, n=4)
    per_sample = {
        "bleu": {"n": 4, "correct": bleu["correct"].tolist(), "guess": bleu["guess"].tolist(),
                 "hyp_len": bleu["hyp_len"].tolist(), "ref_len": bleu["ref_len"].tolist()},
        "rouge_l": each["ROUGE_L"],
        "cider": each["CIDEr"],
        "meteor": None if no_meteor else each["METEOR"],
    }
    return scores, per_sample


def format_scores(scores: Dict[str, float]) -> str:
    """One 'Name: value' line per metric, x100 with two decimals (the released printout), then a
    markdown table row in the same order for the README."""
    names = [m for m in METRIC_ORDER if m in scores] + [m for m in scores if m not in METRIC_ORDER]
    lines = [f"{m}: {scores[m] * 100:.2f}" for m in names]
    lines.append("| " + " | ".join(names) + " |")
    lines.append("|" + "---|" * len(names))
    lines.append("| " + " | ".join(f"{scores[m] * 100:.2f}" for m in names) + " |")
    return "\n".join(lines)
