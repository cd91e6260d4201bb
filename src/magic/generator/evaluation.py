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
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from magic.metric import JAVA_INSTALL_HINT, java_available
from magic.metric.protocol import clean_response, compute_scores, compute_scores_and_samples, one_line, tokenizer_name
from magic.generator.beam_search import beam_search, group_diversity
from magic.generator.checkpoint import load_checkpoint
from magic.generator.data import DialogueDataset, collator_for, load_records
from magic.common.artifacts import RUN_NAME_RE
from magic.common.errors import OutputExistsError
from magic.common.io_utils import atomic_write_json, atomic_write_text, load_json
from magic.common.jsonl import parse_jsonl
from magic.common.validate import check_split_ids

try:
    import fcntl  # POSIX: the lock that tells an evaluation being decoded from an interrupted one
except ImportError:  # pragma: no cover - Windows
    fcntl = None

REFERENCE_FILE = "response_lables.txt"  # sic, the released name


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


def _checkpoint_name(model_path: str) -> str:
    parts = [p for p in os.path.normpath(model_path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return parts[-1] if parts else "checkpoint"


def claim_output(eval_dir: str, model_path: str, diversity_penalty: float, length_penalty: float,
                 settings: dict, overwrite: bool = False, ids: Optional[Sequence[str]] = None):
    """``(paths, partial)``: ``output_paths`` made unique per checkpoint and settings, and the claim of that name
    (a ``_Partial`` holding its ``.partial.jsonl`` open and locked until ``finish`` or ``close``).

    The name is the released ``<eval_dir>/<run>/diversity_<d>_length_<l>.txt`` unless it holds the result
    (finished, being decoded, or interrupted) of another checkpoint or other settings; then
    ``<eval_dir>/<run>/<checkpoint>/<same name>`` (then with ``_2``, ``_3``, ... before ``.txt``). A finished
    result of the same checkpoint and settings is refused (OutputExistsError) unless ``overwrite``; so is one
    being decoded now by another evaluation (its partial file is locked): refused at once, before any decoding.
    An interrupted one (a kill releases the lock) is resumed. The partial file is created exclusively, so two
    evaluations started together never share one name. ``ids``: the samples to decode (see _Partial)."""
    base = output_paths(eval_dir, model_path, diversity_penalty, length_penalty)
    name = os.path.basename(base["hypotheses"])
    folder = os.path.join(os.path.dirname(base["hypotheses"]), _checkpoint_name(model_path))
    header = {"settings": settings}
    for k in range(1, 1000):
        hyp = base["hypotheses"] if k == 1 else os.path.join(
            folder, name if k == 2 else name[:-len(".txt")] + f"_{k - 1}.txt")
        paths = {**base, "hypotheses": hyp, "scores": hyp + ".scores.json", "partial": hyp + ".partial.jsonl"}
        for _ in range(100):  # look again when the slot changed under us (its evaluation finished meanwhile)
            if os.path.exists(paths["scores"]):
                try:
                    done = load_json(paths["scores"], "scores record")
                except ValueError:
                    done = None
                if not (isinstance(done, dict) and done.get("settings") == settings):
                    break  # another checkpoint's or other settings' finished result: keep it
                if not overwrite:
                    raise OutputExistsError(f"{hyp}: this checkpoint was already evaluated with these settings "
                                            f"(scores in {paths['scores']}); pass --overwrite_output_dir to redo it")
            elif os.path.exists(hyp) and not os.path.exists(paths["partial"]):
                break  # a result without scores (e.g. the released code's): keep it
            os.makedirs(os.path.dirname(hyp), exist_ok=True)
            try:
                fh, state = _open_claim(paths["partial"])
            except FileNotFoundError:
                continue  # removed since we looked: that evaluation finished; look at its result
            if state == "created":
                return paths, _Partial(paths["partial"], settings, ids=ids, handle=fh)
            owner = _partial_header(fh)
            if state == "busy":
                fh.close()
                if owner is None:  # created an instant ago: its settings line is being written
                    time.sleep(0.01)
                    continue
                if owner == header:
                    raise OutputExistsError(
                        f"{hyp}: another evaluation of this checkpoint with these settings is decoding into this "
                        f"name now ({paths['partial']} is locked by it); wait for it to finish (its result is "
                        "then in this name), or evaluate with other settings")
                break  # another checkpoint or other settings being decoded here: keep it
            if owner == header:
                return paths, _Partial(paths["partial"], settings, ids=ids, handle=fh)  # our interrupted run
            fh.close()
            break  # another checkpoint's or other settings' interrupted run: keep it, it can be resumed
        else:
            raise OutputExistsError(f"{hyp}: the result changes too fast to be claimed; rerun")
    raise OutputExistsError(f"{os.path.dirname(hyp)}: too many results; choose another --eval_dir")


def claim_output_paths(eval_dir: str, model_path: str, diversity_penalty: float, length_penalty: float,
                       settings: dict, overwrite: bool = False) -> Dict[str, str]:
    """The paths ``claim_output`` chooses, its claim given up again at once (the partial file stays, with the
    settings as first line, and is resumed by the next claim of the same checkpoint and settings)."""
    paths, partial = claim_output(eval_dir, model_path, diversity_penalty, length_penalty, settings, overwrite)
    partial.close()
    return paths


def _lock(fh, wait: bool = False) -> bool:
    """An exclusive flock on the open file ``fh`` (released when it is closed, also by a kill); False when
    another open file holds it and not ``wait``. Without fcntl (Windows) always True: names are then claimed
    by exclusive creation only."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _open_claim(path: str):
    """``(file, state)`` for the partial file ``path``, opened read-write: "created" (new, empty, locked by us),
    "resumable" (an existing one, locked by us: nobody is decoding into it) or "busy" (an existing one that a live
    evaluation holds locked; not locked by us). FileNotFoundError when it was removed while we looked."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    except FileExistsError:
        pass
    else:
        fh = os.fdopen(fd, "r+b")
        _lock(fh, wait=True)  # a second evaluation looking at the new file may hold the lock for an instant
        return fh, "created"
    fh = open(path, "r+b")
    if not _lock(fh):
        return fh, "busy"
    try:
        same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # removed (or replaced) between our open and our lock: its evaluation finished
        fh.close()
        raise FileNotFoundError(path)
    return fh, "resumable"


def _partial_header(fh):
    """The first line of an open partial file, decoded (None when it is not JSON)."""
    fh.seek(0)
    try:
        return json.loads(fh.readline().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


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

    The file is held open and locked (flock) while this object holds it, so that another evaluation can tell a
    live run from an interrupted one (claim_output). Its lines are read by the resume-file rule of
    magic.common.jsonl: a torn last line is dropped, any other line that is not ``{"id": <a sample of ids>,
    "response": <string>}`` (``[1, 2]``, a non-string response, an id of no test sample, a second line for
    one sample) is skipped with a warning naming ``file:line`` and its sample decoded again; the file is then
    rewritten with the lines kept. ``handle``: the file already opened and locked by claim_output; without it
    the file at ``path`` is opened (created) and locked here (OutputExistsError when another process holds it).
    """

    def __init__(self, path: str, settings: dict, ids: Optional[Sequence[str]] = None, handle=None):
        self.path, self.settings, self.done = path, settings, {}
        if handle is None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handle = os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o666), "r+b")
            if not _lock(handle):
                handle.close()
                raise OutputExistsError(f"{path}: another evaluation is decoding into it now (the file is locked); "
                                        "wait for it to finish")
        self._f = handle
        handle.seek(0)
        raw = handle.read()
        head, newline, body = raw.partition(b"\n")
        header = {"settings": settings}
        resumed = None
        if newline:
            try:
                resumed = json.loads(head.decode("utf-8")) == header
            except (UnicodeDecodeError, ValueError):
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
        """The result is complete: remove the file, then release it."""
        os.unlink(self.path)
        self._f.close()


EARLY_STOPPING = {"true": True, "false": False, "never": "never"}  # --early_stopping value -> beam_search's


@dataclass(frozen=True)
class DecodingSettings:
    """The search of step 8, and of the chat: the one translation of ``add_decoding_flags``' values into
    ``generate_responses`` arguments (test_evaluation.py and chat.py both build it with ``from_args``)."""
    num_beams: int = 5
    num_beam_groups: int = 5
    diversity_penalty: float = 1.0
    length_penalty: float = 1.0
    max_new_tokens: int = 64          # --max_length_res
    early_stopping: bool | str = False
    max_length: int = 512             # context tokens

    @classmethod
    def from_args(cls, args) -> "DecodingSettings":
        early = args.early_stopping
        return cls(num_beams=args.num_beams, num_beam_groups=args.num_beam_groups,
                   diversity_penalty=args.diversity_penalty, length_penalty=args.length_penalty,
                   max_new_tokens=args.max_length_res, max_length=args.max_length,
                   early_stopping=EARLY_STOPPING[early] if isinstance(early, str) else early)

    def kwargs(self) -> dict:
        """Keyword arguments of ``generate_responses``."""
        return asdict(self)


def add_decoding_flags(p):
    """test_evaluation.py's checkpoint-loading and search flags on an argparse parser or group (chat.py uses
    the same ones)."""
    from magic.common.validate import finite_float, length_int, non_negative_float, positive_int

    p.add_argument("--bart_base_dir", type=str, default="src/bart_base/",
                   help="BART the model was trained from; only needed for checkpoints without config.json "
                        "(written by the released code)")
    p.add_argument("--num_beams", type=positive_int, default=5, help="beams per sample")
    p.add_argument("--max_length", type=length_int, default=512, help="max context tokens")
    p.add_argument("--max_length_res", type=positive_int, default=64, help="max generated tokens (EOS included)")
    p.add_argument("--diversity_penalty", type=non_negative_float, default=1.0,
                   help="Hamming diversity penalty between beam groups (acts only with --num_beam_groups > 1)")
    p.add_argument("--length_penalty", type=finite_float, default=1.0,
                   help="hypothesis score = sum log-prob / length ** length_penalty (HF)")
    # added
    p.add_argument("--num_beam_groups", type=positive_int, default=5,
                   help="beam groups for diverse beam search; must divide --num_beams. Default 5 (5 groups of one "
                        "beam) so the released --diversity_penalty 1.0 acts; 1 = standard beam search (= HF generate)")
    p.add_argument("--early_stopping", type=str, default="false", choices=list(EARLY_STOPPING),
                   help="HF early_stopping semantics (default false, HF's default)")
    return p


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
    model.eval()
    device = model.device
    # the checkpoint's settings (truncation side, memory length); --max_length decides the context tokens
    dataset = DialogueDataset(records, tokenizer, model.generator_config, max_length=max_length)
    collate = collator_for(model, with_memory=False)
    ids = dataset.ids
    if len(set(ids)) != len(ids):
        raise ValueError("test records have duplicate ids; cannot align responses to samples")
    out: Dict[str, str] = dict(partial.done) if partial else {}
    todo = [i for i in range(len(dataset)) if ids[i] not in out]
    div = group_diversity(num_beams, num_beam_groups, diversity_penalty)
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


@dataclass
class EvalConfig:
    """Everything one evaluation needs (test_evaluation.py's flags; that script owns the parser and builds
    this with ``EvalConfig(**vars(args))``)."""
    model_path: str
    test_data: str = "data/test.json"
    batch_size: int = 1
    strategy_memory_max: int = 128
    max_length_res_memory: int = 64
    bart_base_dir: str | None = "src/bart_base/"
    num_beams: int = 5
    max_length: int = 512
    max_length_res: int = 64
    diversity_penalty: float = 1.0
    length_penalty: float = 1.0
    num_beam_groups: int = 5
    early_stopping: bool | str = "false"
    strategy_source: str = "inferred"
    limit: int | None = None
    device: str = "auto"
    seed: int | None = 42
    eval_dir: str = "eval_result"
    no_meteor: bool = False
    no_metrics: bool = False
    no_progress: bool = False
    overwrite_output_dir: bool = False

    def settings(self, decoding: DecodingSettings) -> dict:
        """What tells two results apart (claim_output_paths and resume compare it)."""
        out = {k: getattr(self, k) for k in ("model_path", "test_data", "num_beams", "num_beam_groups",
                                             "diversity_penalty", "length_penalty", "max_length", "max_length_res",
                                             "strategy_source", "limit")}
        out["early_stopping"] = decoding.early_stopping
        out["model_path"] = os.path.realpath(self.model_path)  # one checkpoint, however it is spelled
        return out


def check_before_decoding(cfg: EvalConfig, decoding: DecodingSettings) -> None:
    """What would fail after an hour of decoding fails now: the search settings, Java for METEOR."""
    group_diversity(decoding.num_beams, decoding.num_beam_groups, decoding.diversity_penalty)
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
    model, tokenizer, train_args = load_checkpoint(cfg.model_path, bart_base_dir=cfg.bart_base_dir, device=cfg.device)
    if model.strategy_memory_max != cfg.strategy_memory_max or \
            model.max_length_res_memory != cfg.max_length_res_memory:
        warnings.warn(f"--strategy_memory_max {cfg.strategy_memory_max} / --max_length_res_memory "
                      f"{cfg.max_length_res_memory} differ from the checkpoint's "
                      f"{model.strategy_memory_max} / {model.max_length_res_memory}; the checkpoint's are used")
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
        "settings": settings,  # what claim_output_paths compares to tell results apart
        "train_args": train_args,
    }


def evaluate(cfg: EvalConfig) -> dict:
    """The whole test_evaluation.py run; returns the scores record (also written as ``<hypotheses>.scores.json``).

    Check what can fail early; read the test records; load the checkpoint; claim the output name; decode
    (resumable: every response goes to the ``.partial.jsonl`` as it comes); write references and cleaned
    hypotheses; score them; write the record; only then drop the partial file."""
    decoding = DecodingSettings.from_args(cfg)
    check_before_decoding(cfg, decoding)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    records = load_test_records(cfg)
    model, tokenizer, train_args = load_model(cfg)
    settings = cfg.settings(decoding)
    # the name is ours (its partial file locked) until the end: a second evaluation of it is refused at once
    paths, partial = claim_output(cfg.eval_dir, cfg.model_path, cfg.diversity_penalty, cfg.length_penalty,
                                  settings, overwrite=cfg.overwrite_output_dir,
                                  ids=[r.get("id", str(i)) for i, r in enumerate(records)])
    try:
        hyps_raw = generate_responses(model, tokenizer, records, batch_size=cfg.batch_size, partial=partial,
                                      progress=not cfg.no_progress, **decoding.kwargs())
        write_lines(paths["references"], [one_line(r["response"]) for r in records])
        write_lines(paths["hypotheses"], [clean_response(h) for h in hyps_raw])
        record = scores_record(cfg, records, paths, settings, train_args)
        atomic_write_json(paths["scores"], record)
    except BaseException:
        partial.close()  # interrupted or failed: the claim is given up, the partial file kept for a rerun
        raise
    partial.finish()  # only now: a crash while scoring resumes from the partial file, into the same name
    return record
