"""Test-set evaluation of the generator (test_evaluation.py): decoding, text clean-up, output files, scores.

Released protocol (test_evaluation.py of Wh2018/MAGIC), kept:
- references = the records' ``response`` field, written one per line to ``eval_result/response_lables.txt``
  (sic; other scripts read that name);
- generated responses written one per line to ``eval_result/<run>/diversity_<d>_length_<l>.txt`` and cleaned
  (space before ``.,!?;:`` that follows a word character, runs of ``.`` / ``!`` collapsed, ``"`` removed);
- for scoring, references and hypotheses are lower-cased and tokenised with nltk ``word_tokenize``, an
  empty hypothesis becomes ``&``, and nlg-eval's BLEU-1..4 / METEOR / ROUGE-L / CIDEr are printed x100.

Fixed (see docs/FIDELITY.md): every sample is decoded (not 5), the model gets its motivation inputs,
decoding is a real cached beam search (src/beam_search.py) that stops at EOS and whose diversity and
length penalties act. Added: Distinct-1/2, a ``.scores.json`` beside the hypotheses, resumable decoding,
atomic writes. A generated response that contains a line break is written on one line (break -> space),
otherwise the one-line-per-sample files would go out of step.
"""
from __future__ import annotations

import functools
import json
import os
import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from src.beam_search import beam_search
from src.io_utils import atomic_write_json, atomic_write_text

REFERENCE_FILE = "response_lables.txt"  # sic, the released name
RUN_NAME_RE = re.compile(r"bs_\d+_epochs_\d+_\d{8}_\d{6}")  # main.py's run folder: bs_<B>_epochs_<E>_<stamp>
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
    from metric import NLGEval, distinct_n
    refs, hyps = prepare_for_metrics(references, hypotheses)
    with NLGEval(no_glove=True, metrics_to_omit=["METEOR"] if no_meteor else None) as nlg:
        scores, _ = nlg.compute_metrics([refs], hyps)
    toks = [" ".join(word_tokenize(h.rstrip("\n").lower())) for h in hypotheses]
    scores["Distinct-1"] = distinct_n(toks, 1)
    scores["Distinct-2"] = distinct_n(toks, 2)
    return scores


def format_scores(scores: Dict[str, float]) -> str:
    """One 'Name: value' line per metric, x100 with two decimals (the released printout), then a
    markdown table row in the same order for the README."""
    names = [m for m in METRIC_ORDER if m in scores] + [m for m in scores if m not in METRIC_ORDER]
    lines = [f"{m}: {scores[m] * 100:.2f}" for m in names]
    lines.append("| " + " | ".join(names) + " |")
    lines.append("|" + "---|" * len(names))
    lines.append("| " + " | ".join(f"{scores[m] * 100:.2f}" for m in names) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ output names
def run_name_from_model_path(model_path: str) -> str:
    """The run folder under eval_result/: main.py's ``bs_<B>_epochs_<E>_<YYYYmmdd_HHMMSS>`` component of the
    model path (the released code took the 31 characters after 'out_model/', which is that name for
    two-digit B and E), else the path itself made relative (no leading '/', no '..')."""
    m = RUN_NAME_RE.search(model_path.replace("\\", "/"))
    if m:
        return m.group(0)
    parts = [p for p in os.path.normpath(model_path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"cannot derive a run name from model path {model_path!r}")
    return "/".join(parts)


def result_file_name(diversity_penalty: float, length_penalty: float) -> str:
    # str() of the float flags, as released: 1.0 -> "1.0"
    return f"diversity_{float(diversity_penalty)}_length_{float(length_penalty)}.txt"


def output_paths(eval_dir: str, model_path: str, diversity_penalty: float, length_penalty: float) -> Dict[str, str]:
    run = run_name_from_model_path(model_path)
    hyp = os.path.join(eval_dir, run, result_file_name(diversity_penalty, length_penalty))
    return {"run": run, "references": os.path.join(eval_dir, REFERENCE_FILE), "hypotheses": hyp,
            "scores": hyp + ".scores.json", "partial": hyp + ".partial.jsonl"}


def write_lines(path: str, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(one_line(x) + "\n" for x in lines))


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# ------------------------------------------------------------------------------------------ decoding
def select_strategy(records: Sequence[dict], source: str, path: str = "test data") -> List[dict]:
    """Records whose ``strategy`` is the one the generator should condition on: 'inferred' keeps the
    LLM-inferred ``strategy`` (the paper's setting), 'gold' substitutes ``gold_strategy`` (oracle)."""
    if source == "inferred":
        return list(records)
    if source != "gold":
        raise ValueError(f"strategy source must be 'inferred' or 'gold', got {source!r}")
    out = []
    for i, r in enumerate(records):
        if not r.get("gold_strategy"):
            raise ValueError(f"{path}: record {i} (id {r.get('id', '?')}) has no gold_strategy; "
                             "--strategy_source gold needs it")
        out.append({**r, "strategy": r["gold_strategy"]})
    return out


class _Partial:
    """Resumable decoding: finished responses are appended to a JSON-lines file whose first line records
    the decoding settings; a rerun with the same settings skips them, other settings start over."""

    def __init__(self, path: str, settings: dict):
        self.path, self.settings, self.done = path, settings, {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                lines = [ln for ln in f if ln.strip()]
            try:
                header = json.loads(lines[0]) if lines else None
                if header == {"settings": settings}:
                    for ln in lines[1:]:
                        rec = json.loads(ln)
                        self.done[rec["id"]] = rec["response"]
            except (json.JSONDecodeError, KeyError):
                self.done = {}  # a torn last line from a kill: start over rather than trust it
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if not self.done:
            atomic_write_text(path, json.dumps({"settings": settings}) + "\n")
        self._f = open(path, "a", encoding="utf-8")

    def add(self, sid: str, response: str) -> None:
        self.done[sid] = response
        self._f.write(json.dumps({"id": sid, "response": response}, ensure_ascii=False) + "\n")
        self._f.flush()

    def finish(self) -> None:
        self._f.close()
        os.unlink(self.path)


@torch.no_grad()
def generate_responses(model, tokenizer, records: Sequence[dict], *, batch_size: int = 1, num_beams: int = 5,
                       num_beam_groups: int = 1, diversity_penalty: float = 0.0, length_penalty: float = 1.0,
                       max_new_tokens: int = 64, min_new_tokens: int = 0, early_stopping=False,
                       max_length: int = 512, partial: Optional[_Partial] = None,
                       progress: bool = True) -> List[str]:
    """Decode one response per record (raw ``tokenizer.decode`` text, special tokens skipped).

    The encoder (context + memory vector (+ motivation)) runs once per batch; the decoder runs once per step
    for all beams with the KV cache. The memory bank is used as loaded (frozen).
    """
    from tqdm import tqdm

    from src.data import DialogueDataset, collator_for

    model.eval()
    device = model.device
    dataset = DialogueDataset(records, tokenizer, max_length=max_length,
                              max_length_res_memory=getattr(model, "max_length_res_memory", 64))
    collate = collator_for(model, with_memory=False)
    ids = dataset.ids
    if len(set(ids)) != len(ids):
        raise ValueError("test records have duplicate ids; cannot align responses to samples")
    out: Dict[str, str] = dict(partial.done) if partial else {}
    todo = [i for i in range(len(dataset)) if ids[i] not in out]
    # diversity only acts with several groups; HF refused groups > 1 without it
    div = diversity_penalty if num_beam_groups > 1 else 0.0
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="Decoding test set", disable=not progress,
               unit="sample")
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        batch = collate([dataset[i] for i in idx])
        enc, enc_mask = model.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                     batch["strategy_ids"].to(device), batch["motivation_ids"].to(device),
                                     batch["motivation_mask"].to(device))
        res = beam_search(model, enc, enc_mask, decoder_start_token_id=model.decoder_start_token_id,
                          eos_token_id=model.eos_token_id, pad_token_id=model.pad_token_id,
                          max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
                          num_beam_groups=num_beam_groups, diversity_penalty=div, length_penalty=length_penalty,
                          early_stopping=early_stopping)
        for row, i in enumerate(idx):
            n = int(res.lengths[row])
            text = tokenizer.decode(res.sequences[row, 1:1 + n].tolist(), skip_special_tokens=True)
            text = one_line(text).strip()
            out[ids[i]] = text
            if partial:
                partial.add(ids[i], text)
        bar.update(len(idx))
    bar.close()
    return [out[sid] for sid in ids]


def evaluate(args) -> dict:
    """The whole test_evaluation.py run. ``args`` is its argparse namespace. Returns the scores record."""
    from src.checkpoint import load_checkpoint
    from src.data import load_records

    if args.num_beam_groups < 1 or args.num_beams % args.num_beam_groups:
        raise ValueError(f"--num_beams {args.num_beams} must be divisible by --num_beam_groups {args.num_beam_groups}")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    no_metrics = getattr(args, "no_metrics", False)
    if not args.no_meteor and not no_metrics:
        from metric import JAVA_INSTALL_HINT, java_available
        if not java_available():  # fail before an hour of decoding, not after
            raise RuntimeError(JAVA_INSTALL_HINT.replace("test_evaluation.py --no_meteor", "--no_meteor"))
    records = load_records(args.test_data)
    if args.limit is not None:
        records = records[:args.limit]
    if not records:
        raise ValueError(f"{args.test_data}: no test records")
    records = select_strategy(records, args.strategy_source, args.test_data)

    model, tokenizer, train_args = load_checkpoint(args.model_path, bart_base_dir=args.bart_base_dir,
                                                   device=args.device)
    if getattr(model, "strategy_memory_max", None) != args.strategy_memory_max or \
            getattr(model, "max_length_res_memory", None) != args.max_length_res_memory:
        warnings.warn(f"--strategy_memory_max {args.strategy_memory_max} / --max_length_res_memory "
                      f"{args.max_length_res_memory} differ from the checkpoint's "
                      f"{model.strategy_memory_max} / {model.max_length_res_memory}; the checkpoint's are used")

    paths = output_paths(args.eval_dir, args.model_path, args.diversity_penalty, args.length_penalty)
    settings = {k: getattr(args, k) for k in ("model_path", "test_data", "num_beams", "num_beam_groups",
                                              "diversity_penalty", "length_penalty", "max_length",
                                              "max_length_res", "strategy_source", "limit", "early_stopping")}
    partial = _Partial(paths["partial"], settings)
    hyps_raw = generate_responses(model, tokenizer, records, batch_size=args.batch_size, num_beams=args.num_beams,
                                  num_beam_groups=args.num_beam_groups, diversity_penalty=args.diversity_penalty,
                                  length_penalty=args.length_penalty, max_new_tokens=args.max_length_res,
                                  early_stopping=getattr(args, "early_stopping", False),
                                  max_length=args.max_length, partial=partial, progress=not args.no_progress)
    references = [one_line(r["response"]) for r in records]
    hypotheses = [clean_response(h) for h in hyps_raw]
    write_lines(paths["references"], references)
    write_lines(paths["hypotheses"], hypotheses)
    partial.finish()

    # Score what is on disk, as released (file lines, not in-memory strings).
    # --no_metrics: decoding only (machines without nltk / pycocoevalcap, e.g. scripts/gpu_check.sh)
    scores = {} if no_metrics else compute_scores(read_lines(paths["references"]), read_lines(paths["hypotheses"]),
                                                  args.no_meteor)
    record = {
        "scores": scores,
        "scores_x100": {k: round(v * 100, 2) for k, v in scores.items()},
        "n_samples": len(records),
        "strategy_source": args.strategy_source,
        "run": paths["run"],
        "hypotheses_file": paths["hypotheses"],
        "references_file": paths["references"],
        "sample_ids": [r.get("id") for r in records],
        "metric_tokenizer": None if no_metrics else tokenizer_name(),
        "decoding": "cached group beam search (src/beam_search.py)" if args.num_beam_groups > 1 else
                    ("greedy" if args.num_beams == 1 else "cached beam search (src/beam_search.py, = HF generate)"),
        "flags": {k: v for k, v in vars(args).items()},
        "train_args": train_args,
    }
    atomic_write_json(paths["scores"], record)
    return record
