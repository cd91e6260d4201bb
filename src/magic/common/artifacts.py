"""The names of the files passed between the pipeline steps, and their ids sidecars. Writers and readers
both take the names from here (the released names are kept).

    step 1  motivations_4_LLaMA.json (+ .ids.json)           collect_motivations_ChatGPT.py
    step 2  prompts_4_LLaMA{,_valid,_test}.json (+ .ids.json) create_prompts_4_LLaMA.py (+ dataset_info.json)
    step 4  strategy_with_motivation{,_valid,_test}.json     infer_strategy.py (an "id" in every entry),
            beside each: <name>_report.json, <name>_confusion.png (with gold files)

An ids sidecar ``<name>.ids.json`` is a JSON list of the sample ids (magic.esconv.dialogues) of the entries of
``<name>.json``, in the same order. A reader that needs one and does not find it stops with one line naming
the file; nothing is matched by position. The one exception is the released ``motivations_4_LLaMA.json``,
shipped without ids: it is accepted when it has exactly one motivation per train sample (see
src/magic/llm/prompt_files.py).
"""
from __future__ import annotations

import os

from magic.common.io_utils import load_json

SPLITS = ("train", "valid", "test")
SPLIT_SUFFIX = {"train": "", "valid": "_valid", "test": "_test"}

MOTIVATIONS_FILE = "motivations_4_LLaMA.json"
DATASET_INFO_FILE = "dataset_info.json"


def prompt_file(split: str) -> str:
    """``prompts_4_LLaMA.json`` (train), ``prompts_4_LLaMA_valid.json``, ``prompts_4_LLaMA_test.json``."""
    return f"prompts_4_LLaMA{SPLIT_SUFFIX[split]}.json"


def strategy_file(split: str) -> str:
    """``strategy_with_motivation.json`` (train), ``..._valid.json``, ``..._test.json``."""
    return f"strategy_with_motivation{SPLIT_SUFFIX[split]}.json"


def ids_path(path: str) -> str:
    """``x/prompts_4_LLaMA_test.json`` -> ``x/prompts_4_LLaMA_test.ids.json`` (any other name: + ``.ids.json``)."""
    root, ext = os.path.splitext(path)
    return root + ".ids.json" if ext == ".json" else path + ".ids.json"


def load_ids(data_path: str, n: int | None = None, writer: str = "the step that wrote it") -> list[str]:
    """The sample ids of ``data_path`` from its sidecar: a list of ``n`` distinct strings (``n`` = the
    number of entries of ``data_path``, when given). A missing or inconsistent sidecar raises ValueError
    (FileNotFoundError when missing) naming the file and ``writer``."""
    sidecar = ids_path(data_path)
    if not os.path.exists(sidecar):
        raise FileNotFoundError(f"{sidecar}: ids sidecar of {data_path} not found; the entries cannot be matched "
                                f"to their samples without it (rerun {writer})")
    ids = load_json(sidecar, "list of sample ids")
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise ValueError(f"{sidecar}: expected a JSON list of sample id strings")
    if n is not None and len(ids) != n:
        raise ValueError(f"{sidecar}: {len(ids)} ids for {n} entries in {data_path}; rerun {writer}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{sidecar}: duplicate sample ids")
    return ids
