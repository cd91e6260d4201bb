"""Step 6: ESConv samples (+ LLM-inferred strategies and motivations) -> data/{train,valid,test}.json.

The generator record, the one description of it (``sample_record`` builds it; ``build_datasets`` fills
``strategy``, ``strategy_source`` and ``motivation`` from the LLM files; magic.generator.data reads it)::

    {"id": str,                          # the sample id of magic.esconv.dialogues, <split>-<dialogue>-<turn>
     "context": [situation, turn1, ...], # the dialogue before the target turn, situation first, turns stripped
     "response": str,                    # the target supporter turn
     "strategy": str,                    # the strategy the generator is conditioned on (one of the 8)
     "gold_strategy": str,               # the annotated strategy of the target turn
     "strategy_source": "inferred" | "gold" | "forced",
     "response_memory": [str],           # every earlier supporter turn of the dialogue ...
     "strategy_memory": [str],           # ... and its strategy, one each
     "motivation": str}                  # why the LLM chose the strategy ("" when there is none)

``context``, ``response``, ``strategy``, ``response_memory``, ``strategy_memory`` and ``motivation`` are the
released keys; ``id``, ``gold_strategy`` and ``strategy_source`` are ours (optional for the reader, which
checks every record: magic.generator.data.validate_record). Contractions are expanded in the context, the
response and the response memory, as released. ``strategy_source`` says where ``strategy`` came from:
``"inferred"`` (the LLM files), ``"gold"`` (the annotation: --strategy_source gold, or no LLM files, as
released; test_evaluation.py refuses ``--strategy_source inferred`` on gold records) or ``"forced"`` (a fixed
wrong one, the forced-wrong-strategy baseline: magic.esconv.dialogues.wrong_strategy).

The LLM files (``strategy_with_motivation{,_valid,_test}.json`` from LLM_inference/infer_strategy.py) are
merged by sample id; every entry must carry its ``id``. Any mismatch, a missing id or an answer whose
strategy cannot be parsed is an error, and nothing is written.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from magic.common.artifacts import SPLITS, strategy_file
from magic.common.errors import UserError
from magic.esconv.dialogues import STRATEGIES, Sample, canonical_strategy, enumerate_samples, expand_contractions, load_dialogues, \
    strategy_id
from magic.common.io_utils import atomic_write_json, load_json
from magic.common.settings import option
from magic.common.validate import check_duplicate_dialogues, parse_split_list, require_nonempty



class DatasetBuildError(UserError):
    """An input file does not fit the samples; the message names the file and the entry."""


@dataclass
class Inferred:
    strategy: str  # canonical label
    motivation: str


def sample_record(sample: Sample) -> dict:
    """The generator record of one sample, as released: context turns stripped (the released
    add_memory_motivation.py strips context turns only) and contractions expanded in the context, the response
    and the response memory; gold strategy, empty motivation (build_datasets fills strategy and motivation
    from the LLM files). The one record builder: the dataset build, tests and benchmarks all use it."""
    return {
        "id": sample.id,
        "context": [expand_contractions(turn.strip()) for turn in sample.context],
        "response": expand_contractions(sample.response),
        "strategy": sample.strategy,
        "gold_strategy": sample.strategy,
        "strategy_source": "gold",
        "response_memory": [expand_contractions(r) for r in sample.response_memory],
        "strategy_memory": list(sample.strategy_memory),
        "motivation": "",
    }


def load_inferred(path: str, samples: list[Sample]) -> list[Inferred]:
    """Read one strategy_with_motivation file and align it to ``samples`` by the ids of its entries."""
    entries = load_json(path, "strategy_with_motivation list")
    if not isinstance(entries, list):
        raise DatasetBuildError(f"{path}: expected a JSON list of {{'strategy', 'motivation'}} objects")
    if len(entries) != len(samples):
        raise DatasetBuildError(
            f"{path}: {len(entries)} entries, expected {len(samples)} (one per {samples[0].split if samples else ''}"
            " sample); was inference run with --max_samples or on another data file?")
    no_id = next((i for i, e in enumerate(entries) if not isinstance(e, dict) or "id" not in e), None)
    if no_id is not None:
        raise DatasetBuildError(f"{path}: entry {no_id} has no 'id'; the entries cannot be matched to their samples "
                                "(rerun LLM_inference/infer_strategy.py, which writes an id in every entry)")
    out = []
    for i, (entry, sample) in enumerate(zip(entries, samples)):
        where = f"{path}: entry {i} (sample {sample.id})"
        if not isinstance(entry, dict) or "strategy" not in entry:
            raise DatasetBuildError(f"{where}: expected an object with 'strategy' and 'motivation'")
        if entry["id"] != sample.id:
            raise DatasetBuildError(f"{where}: has id {entry['id']!r}, expected {sample.id!r}; "
                                    "the file was made from different data or in another order")
        try:
            label = canonical_strategy(str(entry["strategy"]))
        except KeyError:
            raise DatasetBuildError(f"{where}: cannot parse strategy {entry['strategy']!r}; expected one of "
                                    f"{list(STRATEGIES)} (any case, brackets allowed)") from None
        motivation = entry.get("motivation", "")
        if not isinstance(motivation, str):
            raise DatasetBuildError(f"{where}: 'motivation' must be a string")
        out.append(Inferred(label, motivation))
    return out


@dataclass
class DatasetConfig:
    """Step 6's settings (data/add_memory_motivation.py)."""

    train_file: str = option("data/train.txt", "MultiESC train dialogues (JSON lines)")
    valid_file: str = option("data/valid.txt", "MultiESC valid dialogues")
    test_file: str = option("data/test.txt", "MultiESC test dialogues")
    llm_dir: str | None = option("LLM_inference/", "folder holding strategy_with_motivation{,_valid,_test}.json "
                                                   "from infer_strategy.py")
    output_dir: str = option("data/", "where {train,valid,test}.json are written")
    strategy_source: str = option("inferred", "inferred: strategies of the LLM files (released); gold: the "
                                              "annotated ones (oracle)", choices=("inferred", "gold"))
    test_mode: str = option("last", "last: one sample per test dialogue (released); all: every supporter turn",
                            choices=("last", "all"))
    allow_empty: str = option("", "comma-separated splits that may have no samples; otherwise an empty split is "
                                  "an error", metavar="SPLITS")
    allow_shared_dialogues: bool = option(False, "let splits share dialogues (otherwise a dialogue in two splits "
                                                 "is an error: a mixed-up file)")

    def files(self) -> dict[str, str]:
        return {"train": self.train_file, "valid": self.valid_file, "test": self.test_file}


def build_datasets(cfg: DatasetConfig) -> dict[str, list[dict]]:
    """Records of every split, from the MultiESC dialogue files ``cfg.files()``.

    strategy_source "inferred" takes the strategy from the LLM files (when all three exist; without any
    of them the gold strategies are used with a warning, as released, and the records say
    ``"strategy_source": "gold"``); "gold" always keeps the gold strategy (oracle) and still takes the
    motivations when the LLM files exist.
    """
    files, llm_dir, strategy_source = cfg.files(), cfg.llm_dir, cfg.strategy_source
    allow_empty = parse_split_list(cfg.allow_empty)
    if strategy_source not in ("inferred", "gold"):
        raise ValueError(f"strategy_source must be 'inferred' or 'gold', got {strategy_source!r}")
    dialogues = {split: load_dialogues(files[split]) for split in SPLITS}
    check_duplicate_dialogues(dialogues, cfg.allow_shared_dialogues)  # a file given for the wrong split shares its dialogues with it
    samples = {split: enumerate_samples(dialogues[split], split, cfg.test_mode) for split in SPLITS}
    for split in SPLITS:  # an empty split is an error unless asked for (it would replace a good file with [])
        require_nonempty(len(samples[split]), files[split], split, allow_empty=split in allow_empty)
    llm_paths = {split: os.path.join(llm_dir, strategy_file(split)) for split in SPLITS} if llm_dir else {}
    present = [s for s in SPLITS if llm_paths and os.path.exists(llm_paths[s])]
    if present and len(present) < len(SPLITS):
        missing = [llm_paths[s] for s in SPLITS if s not in present]
        raise DatasetBuildError(f"found {[llm_paths[s] for s in present]} but not {missing}; "
                                "run LLM_inference/infer_strategy.py for every split, or remove the files")
    if not present:
        warnings.warn(f"no LLM strategy files in {llm_dir!r}: using gold strategies and empty motivations "
                      "(the released behaviour without LLM inference)", stacklevel=2)
    records = {}
    for split in SPLITS:
        inferred = load_inferred(llm_paths[split], samples[split]) if present else None
        recs = []
        for i, sample in enumerate(samples[split]):
            rec = sample_record(sample)
            if inferred is not None:
                rec["motivation"] = inferred[i].motivation
                if strategy_source == "inferred":
                    rec["strategy"] = inferred[i].strategy
                    rec["strategy_source"] = "inferred"
            recs.append(rec)
        records[split] = recs
    return records


def write_datasets(records: dict[str, list[dict]], output_dir: str) -> dict[str, str]:
    """Write ``<output_dir>/<split>.json`` (indent 4, as released), each atomically; returns the paths."""
    paths = {}
    for split, recs in records.items():
        paths[split] = os.path.join(output_dir, f"{split}.json")
        atomic_write_json(paths[split], recs, indent=4)
    return paths


def strategy_agreement(records: list[dict]) -> float:
    """Share of records whose strategy equals the gold one (1.0 for gold datasets)."""
    if not records:
        return 0.0
    same = sum(strategy_id(r["strategy"]) == strategy_id(r["gold_strategy"]) for r in records)
    return same / len(records)
