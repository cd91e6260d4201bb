"""Step 8: test-set evaluation of the generator (test_evaluation.py): decoding, text clean-up, output files, scores.

Released protocol (test_evaluation.py of Wh2018/MAGIC), kept:
- references = the records' ``response`` field, written one per line to ``eval_result/response_lables.txt``
  (sic; other scripts read that name);
- generated responses written one per line to ``eval_result/<run>/diversity_<d>_length_<l>.txt``, cleaned
  and scored by the released protocol, which lives in magic/metric/protocol.py (cleaning, nltk tokenisation,
  nlg-eval scores, Distinct-n, the x100 table).

Fixed (see docs/FIDELITY.md): every sample is decoded (not 5), the model gets its motivation inputs,
decoding is a real cached beam search (src/magic/generator/beam_search.py) that stops at EOS and whose diversity and
length penalties act. Added: Distinct-1/2, a ``.scores.json`` beside the hypotheses, resumable decoding,
atomic writes. A generated response that contains a line break is written on one line (break -> space),
otherwise the one-line-per-sample files would go out of step.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from magic.metric import JAVA_INSTALL_HINT, java_available
from magic.metric.protocol import clean_response, compute_scores_and_samples, one_line, tokenizer_name
from magic.generator.beam_search import beam_search, group_diversity
from magic.generator.checkpoint import load_checkpoint
from magic.generator.data import DialogueDataset, collator_for, load_records
from magic.generator.eval_config import DecodingConfig, EvalConfig
from magic.common.artifacts import RUN_NAME_RE
from magic.common.errors import OutputExistsError, UserError
from magic.common.io_utils import atomic_write_json, atomic_write_text
from magic.common.jsonl import parse_jsonl
from magic.common.validate import check_split_ids

try:
    import fcntl  # POSIX: the lock that tells an evaluation being decoded from an interrupted one
except ImportError:  # pragma: no cover - Windows
    fcntl = None

REFERENCE_FILE = "response_lables.txt"  # sic, the released name


# ------------------------------------------------------------------------------------------ output names
def _path_parts(model_path: str) -> List[str]:
    """The folders of a path, made relative (no leading '/', no '.', no '..')."""
    return [p for p in os.path.normpath(model_path).replace("\\", "/").split("/") if p not in ("", ".", "..")]


def run_name_from_model_path(model_path: str) -> str:
    """The run folder under eval_result/: main.py's ``bs_<B>_epochs_<E>_<YYYYmmdd_HHMMSS>`` component of the
    model path (the released code took the 31 characters after 'out_model/', which is that name for
    two-digit B and E), else the path itself made relative (no leading '/', no '..')."""
    m = RUN_NAME_RE.search(model_path.replace("\\", "/"))
    if m:
        return m.group(0)
    parts = _path_parts(model_path)
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


@contextmanager
def _folder_lock(folder: str):
    """One claim (or finish) at a time among the results of ``folder`` (an flock on the folder itself, released
    by a kill too; without fcntl, i.e. on Windows, no lock)."""
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _settings_of(path: str):
    """The settings a result file (scores record, or partial file's first line) records; None if unreadable."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.readline() if path.endswith(".jsonl") else f.read())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj.get("settings") if isinstance(obj, dict) else None


def claim_output(eval_dir: str, model_path: str, diversity_penalty: float, length_penalty: float,
                 settings: dict, overwrite: bool = False, ids: Optional[Sequence[str]] = None):
    """``(paths, partial)``: the output name of this checkpoint and settings, claimed (``partial``, a _Partial,
    holds its ``.partial.jsonl`` open and locked until ``finish`` or ``close``).

    The name is the released ``<eval_dir>/<run>/diversity_<d>_length_<l>.txt`` unless it holds a result (finished,
    being decoded or interrupted) of another checkpoint or other settings; then ``<eval_dir>/<run>/<checkpoint>/``
    that name (then with ``_2``, ``_3``, ... before ``.txt``): no result is ever replaced. A finished result of
    the same checkpoint and settings is refused (OutputExistsError) unless ``overwrite``; so is one being decoded
    now (its partial file is locked), at once; an interrupted one is resumed. Claims of one run folder take turns
    (_folder_lock), so two evaluations started together never share a name. ``ids``: see _Partial."""
    base = output_paths(eval_dir, model_path, diversity_penalty, length_penalty)
    run_dir, name = os.path.split(base["hypotheses"])
    own = os.path.join(run_dir, (_path_parts(model_path) or ["checkpoint"])[-1])
    with _folder_lock(run_dir):
        for k in range(1000):
            hyp = base["hypotheses"] if k == 0 else os.path.join(own, name if k == 1 else f"{name[:-4]}_{k}.txt")
            paths = {**base, "hypotheses": hyp, "scores": hyp + ".scores.json", "partial": hyp + ".partial.jsonl"}
            if os.path.exists(paths["scores"]):
                if _settings_of(paths["scores"]) != settings:
                    continue  # another checkpoint's or other settings' finished result: keep it
                if not overwrite:
                    raise OutputExistsError(f"{hyp}: this checkpoint was already evaluated with these settings "
                                            f"(scores in {paths['scores']}); pass --overwrite_output_dir to redo it")
            elif os.path.exists(hyp) and not os.path.exists(paths["partial"]):
                continue  # a result without scores (e.g. the released code's): keep it
            if os.path.exists(paths["partial"]) and _settings_of(paths["partial"]) != settings:
                continue  # another checkpoint or other settings being decoded here, or interrupted: keep it
            os.makedirs(os.path.dirname(hyp), exist_ok=True)
            partial = _Partial(paths["partial"], settings, ids=ids, lock_dir=run_dir)  # refused if being decoded
            return paths, partial
    raise OutputExistsError(f"{own}: too many results; choose another --eval_dir")


def write_lines(path: str, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(one_line(x) + "\n" for x in lines))


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# ------------------------------------------------------------------------------------------ decoding
def select_strategy(records: Sequence[dict], source: str, path: str = "test data") -> List[dict]:
    """Records whose ``strategy`` is the one the generator should condition on: 'inferred' keeps the
    LLM-inferred ``strategy`` (the paper's setting), 'gold' substitutes ``gold_strategy`` (oracle).

    'inferred' on records whose ``strategy_source`` says "gold" (the dataset was built without LLM files or
    with --strategy_source gold) is an error: it would report oracle results as inferred ones."""
    if source == "inferred":
        for i, r in enumerate(records):
            if r.get("strategy_source") == "gold":
                raise ValueError(f"{path}: record {i} (id {r.get('id', '?')}) holds the gold strategy "
                                 "(strategy_source 'gold': built without the LLM files or with --strategy_source "
                                 "gold); rebuild it from the LLM outputs, or evaluate with --strategy_source gold")
        return list(records)
    if source != "gold":
        raise ValueError(f"strategy source must be 'inferred' or 'gold', got {source!r}")
    out = []
    for i, r in enumerate(records):
        if not r.get("gold_strategy"):
            raise ValueError(f"{path}: record {i} (id {r.get('id', '?')}) has no gold_strategy; "
                             "--strategy_source gold needs it")
        out.append({**r, "strategy": r["gold_strategy"], "strategy_source": "gold"})
    return out


class _Partial:
    """Resumable decoding: finished responses are appended to a JSON-lines file whose first line records the
    decoding settings; a rerun with the same settings skips them, other settings start over.

    The file is held open and locked (flock) while this object holds it: another evaluation that wants it is
    refused at once (OutputExistsError), one that finds it unlocked (its evaluation was interrupted: a kill
    releases the lock too) resumes it. Its lines are read by the resume-file rule of magic.common.jsonl: a torn
    last line is dropped, any other line that is not ``{"id": <a sample of ids>, "response": <string>}``
    (``[1, 2]``, a non-string response, an id of no test sample, a second line for one sample) is skipped with a
    warning naming ``file:line`` and its sample decoded again; the file is then rewritten with the lines kept.
    ``lock_dir``: the folder whose claims ``finish`` waits for (claim_output's).
    """

    def __init__(self, path: str, settings: dict, ids: Optional[Sequence[str]] = None,
                 lock_dir: Optional[str] = None):
        self.path, self.settings, self.lock_dir, self.done = path, settings, lock_dir, {}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._f = handle = os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o666), "r+b")
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            hyp = path[:-len(".partial.jsonl")] if path.endswith(".partial.jsonl") else path
            raise OutputExistsError(
                f"{hyp}: another evaluation of this checkpoint with these settings is decoding into this name now "
                f"({path} is locked by it); wait for it to finish (its result is then in this name), or evaluate "
                "with other settings") from None
        handle.seek(0)
        raw = handle.read()
        head, newline, body = raw.partition(b"\n")
        try:
            resumed = bool(newline) and json.loads(head) == {"settings": settings}
        except ValueError:  # a torn header (UnicodeDecodeError is a ValueError too)
            resumed = False
        if resumed:
            known, seen = (set(ids) if ids is not None else None), set()

            def parse(obj):
                if not isinstance(obj, dict):
                    raise ValueError(f"not a JSON object, got {type(obj).__name__}")
                sid, response = obj.get("id"), obj.get("response")
                if not isinstance(sid, str):
                    raise ValueError(f"'id' must be a string, got {json.dumps(sid)[:40]}")
                if not isinstance(response, str):
                    raise ValueError(f"'response' must be a string, got {json.dumps(response)[:40]}")
                if known is not None and sid not in known:
                    raise ValueError(f"{sid!r} is not a sample of the test data being evaluated")
                if sid in seen:
                    raise ValueError(f"duplicate line for sample {sid} (its first response is kept)")
                seen.add(sid)
                return sid, response

            read = parse_jsonl(body, path, parse, on_bad="skip", first_line=2, what="decoded response",
                               skipped_note="skipped (that sample is decoded again)")
            self.done = dict(read.records)
            if read.skipped or read.torn:  # keep only the good lines, so the next append starts a line of its own
                self._rewrite()
            else:
                handle.seek(0, os.SEEK_END)
        else:  # a new file, other settings or a torn header: start over
            self._rewrite()

    def _rewrite(self) -> None:
        """The file = the settings line and the responses kept (in place: the lock stays on this file)."""
        lines = [json.dumps({"settings": self.settings})] + [
            json.dumps({"id": sid, "response": r}, ensure_ascii=False) for sid, r in self.done.items()]
        self._f.seek(0)
        self._f.truncate()
        self._f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def add(self, sid: str, response: str) -> None:
        self.done[sid] = response
        self._f.write((json.dumps({"id": sid, "response": response}, ensure_ascii=False) + "\n").encode("utf-8"))
        self._f.flush()

    def close(self) -> None:
        """Give the claim up, keeping the file (a later run resumes it)."""
        self._f.close()

    def finish(self) -> None:
        """The result is complete: remove the file, then release it (not while claim_output looks at it)."""
        with _folder_lock(self.lock_dir) if self.lock_dir else nullcontext():
            os.unlink(self.path)
            self._f.close()


@torch.no_grad()
def generate_responses(model, tokenizer, records: Sequence[dict], decoding: DecodingConfig, *, batch_size: int,
                       partial: Optional[_Partial] = None, progress: bool = True) -> List[str]:
    """Decode one response per record (raw ``tokenizer.decode`` text, special tokens skipped), ``batch_size``
    records at a time, as ``decoding`` says (its search; its max_length: the context tokens kept).

    The encoder (context + memory vector (+ motivation)) runs once per batch; the decoder runs once per step
    for all beams with the KV cache. The memory bank is used as loaded (frozen).
    """
    model.eval()
    device = model.device
    # the checkpoint's settings (truncation side, memory length); --max_length decides the context tokens
    dataset = DialogueDataset(records, tokenizer, model.generator_config, max_length=decoding.max_length)
    collate = collator_for(model, with_memory=False)
    ids = dataset.ids
    if len(set(ids)) != len(ids):
        raise ValueError("test records have duplicate ids; cannot align responses to samples")
    out: Dict[str, str] = dict(partial.done) if partial else {}
    todo = [i for i in range(len(dataset)) if ids[i] not in out]
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="Decoding test set", disable=not progress,
               unit="sample")
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        batch = collate([dataset[i] for i in idx])
        enc, enc_mask = model.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                     batch["strategy_ids"].to(device), batch["motivation_ids"].to(device),
                                     batch["motivation_mask"].to(device))
        res = beam_search(model, enc, enc_mask, decoder_start_token_id=model.decoder_start_token_id,
                          eos_token_id=model.eos_token_id, pad_token_id=model.pad_token_id, **decoding.search())
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


def check_before_decoding(cfg: EvalConfig) -> None:
    """What would fail after an hour of decoding fails now: the search settings, Java for METEOR."""
    group_diversity(cfg.num_beams, cfg.num_beam_groups, cfg.diversity_penalty)
    if not cfg.no_meteor and not cfg.no_metrics and not java_available():
        raise RuntimeError(JAVA_INSTALL_HINT.replace("test_evaluation.py --no_meteor", "--no_meteor"))


def load_test_records(cfg: EvalConfig) -> list[dict]:
    """The test records to decode (``--limit`` first ones), with the strategy the model is given."""
    records = load_records(cfg.test_data)
    if cfg.limit is not None:
        records = records[:cfg.limit]
    if not records:
        raise ValueError(f"{cfg.test_data}: no test records")
    check_split_ids([r.get("id") for r in records], "test", cfg.test_data)
    return select_strategy(records, cfg.strategy_source, cfg.test_data)


def load_model(cfg: EvalConfig):
    """(model, tokenizer, train args) of the checkpoint; the released --strategy_memory_max and
    --max_length_res_memory, when given, must be the checkpoint's (they decide nothing here)."""
    model, tokenizer, train_args = load_checkpoint(cfg.model_path, bart_base_dir=cfg.bart_base_dir, device=cfg.device)
    for flag in ("strategy_memory_max", "max_length_res_memory"):
        asked, own = getattr(cfg, flag), getattr(model, flag)
        if asked is not None and asked != own:
            raise UserError(f"--{flag} {asked}: the checkpoint {cfg.model_path} was trained with {own}, which "
                            "decoding uses; drop the flag")
    return model, tokenizer, train_args


def scores_record(cfg: EvalConfig, records: list[dict], paths: dict, settings: dict, train_args) -> dict:
    """Scores of what is on disk, as released (file lines, not in-memory strings), and the record written
    beside the hypotheses. ``--no_metrics``: decoding only (machines without nltk / pycocoevalcap, e.g.
    scripts/gpu_check.sh). per_sample: numbers only, keyed by sample id, for compare_results.py (layout:
    magic/metric/significance.py)."""
    scores, per_sample = ({}, None) if cfg.no_metrics else compute_scores_and_samples(
        read_lines(paths["references"]), read_lines(paths["hypotheses"]), cfg.no_meteor)
    ids = [r.get("id") for r in records]
    if cfg.num_beam_groups > 1:
        decoding = "cached group beam search (src/magic/generator/beam_search.py)"
    else:
        decoding = "greedy" if cfg.num_beams == 1 else \
            "cached beam search (src/magic/generator/beam_search.py, = HF generate)"
    return {
        "scores": scores,
        "scores_x100": {k: round(v * 100, 2) for k, v in scores.items()},
        "n_samples": len(records),
        "strategy_source": cfg.strategy_source,
        # what the test records say of their strategies ("unrecorded": built by other code)
        "data_strategy_source": sorted({r.get("strategy_source", "unrecorded") for r in records}),
        "run": paths["run"],
        "hypotheses_file": paths["hypotheses"],
        "references_file": paths["references"],
        "sample_ids": ids,
        "per_sample": None if per_sample is None else {"ids": ids, **per_sample},
        "metric_tokenizer": None if cfg.no_metrics else tokenizer_name(),
        "decoding": decoding,
        "flags": asdict(cfg),
        "settings": settings,  # what claim_output compares to tell results apart
        "train_args": train_args,
    }


def evaluate(cfg: EvalConfig) -> dict:
    """The whole test_evaluation.py run; returns the scores record (also written as ``<hypotheses>.scores.json``).

    Check what can fail early; read the test records; load the checkpoint; claim the output name; decode
    (resumable: every response goes to the ``.partial.jsonl`` as it comes); write references and cleaned
    hypotheses; score them; write the record; only then drop the partial file."""
    check_before_decoding(cfg)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    records = load_test_records(cfg)
    model, tokenizer, train_args = load_model(cfg)
    settings = cfg.settings()
    # the name is ours (its partial file locked) until the end: a second evaluation of it is refused at once
    paths, partial = claim_output(cfg.eval_dir, cfg.model_path, cfg.diversity_penalty, cfg.length_penalty,
                                  settings, overwrite=cfg.overwrite_output_dir,
                                  ids=[r.get("id", str(i)) for i, r in enumerate(records)])
    try:
        hyps_raw = generate_responses(model, tokenizer, records, cfg, batch_size=cfg.batch_size, partial=partial,
                                      progress=not cfg.no_progress)
        write_lines(paths["references"], [one_line(r["response"]) for r in records])
        write_lines(paths["hypotheses"], [clean_response(h) for h in hyps_raw])
        record = scores_record(cfg, records, paths, settings, train_args)
        atomic_write_json(paths["scores"], record)
    except BaseException:
        partial.close()  # interrupted or failed: the claim is given up, the partial file kept for a rerun
        raise
    partial.finish()  # only now: a crash while scoring resumes from the partial file, into the same name
    return record
