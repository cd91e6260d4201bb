"""The names of the files passed between the pipeline steps, and their ids sidecars. Writers and readers
both take the names from here (the released names are kept).

    step 1  motivations_4_LLaMA.json (+ .ids.json)           collect_motivations_ChatGPT.py
    step 2  prompts_4_LLaMA{,_valid,_test}.json (+ .ids.json) create_prompts_4_LLaMA.py (+ dataset_info.json)
    step 4  strategy_with_motivation{,_valid,_test}.json     infer_strategy.py (an "id" in every entry),
            beside each: <name>_report.json, <name>_confusion.png (with gold files)
    step 7  <output_dir>/bs_<B>_epochs_<E>_<stamp>[_<k>]/    main.py: a run folder (run_dir_name), holding a
              epoch_<e>_val_ppl_<p>/                         checkpoint folder (checkpoint_dir_name) each time
                                                             the validation PPL improves

An ids sidecar ``<name>.ids.json`` is a JSON list of the sample ids (magic.esconv.dialogues) of the entries of
``<name>.json``, in the same order. A reader that needs one and does not find it stops with one line naming
the file; nothing is matched by position. The one exception is the released ``motivations_4_LLaMA.json``,
shipped without ids: it is accepted when it has exactly one motivation per train sample (see
src/magic/llm/prompt_files.py).
"""
from __future__ import annotations

import math
import os
import re
from typing import Iterable, NamedTuple

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


# ------------------------------------------------------------------------ main.py's run and checkpoint folders
# A run folder: bs_<batch size>_epochs_<epochs>_<YYYYmmdd_HHMMSS>, with _<k> (k = 1, 2, ...) when several runs
# started in the same second. RUN_NAME_RE finds it as a component of a longer path.
RUN_STAMP_FORMAT = "%Y%m%d_%H%M%S"
RUN_NAME_RE = re.compile(r"bs_(\d+)_epochs_(\d+)_(\d{8}_\d{6})(?:_(\d+))?(?![^/])")
# A checkpoint folder: epoch_<e>_val_ppl_<p>, e 0-based (as released), p the validation PPL rounded to 2 digits
CHECKPOINT_NAME_RE = re.compile(r"epoch_(\d+)_val_ppl_(.+)")


class RunName(NamedTuple):
    batch_size: int
    num_epochs: int
    stamp: str  # RUN_STAMP_FORMAT
    k: int      # 0 for the first run of its second


class CheckpointName(NamedTuple):
    epoch: int
    val_ppl: float


def run_dir_name(batch_size: int, num_epochs: int, stamp: str, k: int = 0) -> str:
    """``bs_16_epochs_20_20240101_120000`` (``_<k>`` appended for k >= 1)."""
    return f"bs_{batch_size}_epochs_{num_epochs}_{stamp}" + (f"_{k}" if k else "")


def parse_run_dir(path: str | os.PathLike) -> RunName | None:
    """The fields of a run folder's name (the last component of ``path``); None for any other name."""
    m = RUN_NAME_RE.fullmatch(os.path.basename(os.path.normpath(os.fspath(path))))
    return RunName(int(m[1]), int(m[2]), m[3], int(m[4] or 0)) if m else None


def checkpoint_dir_name(epoch: int, val_ppl: float) -> str:
    """``epoch_3_val_ppl_12.35``: the released name, the PPL rounded to 2 digits."""
    return f"epoch_{epoch}_val_ppl_{round(val_ppl, 2)}"


def parse_checkpoint_dir(path: str | os.PathLike) -> CheckpointName | None:
    """(epoch, validation PPL) from a checkpoint folder's name (the last component of ``path``); None for any
    other name (``last/``, a temporary ``.epoch_*`` folder, a PPL that is not a finite number)."""
    m = CHECKPOINT_NAME_RE.fullmatch(os.path.basename(os.path.normpath(os.fspath(path))))
    if not m:
        return None
    try:
        ppl = float(m[2])
    except ValueError:
        return None
    return CheckpointName(int(m[1]), ppl) if math.isfinite(ppl) else None


def run_dirs(output_dir: str | os.PathLike) -> list[str]:
    """The run folders directly under ``output_dir``, oldest first (by the stamp in their names, then k)."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = [(parse_run_dir(name), os.path.join(output_dir, name)) for name in os.listdir(output_dir)]
    found = [(r, p) for r, p in found if r is not None and os.path.isdir(p)]
    return [p for r, p in sorted(found, key=lambda rp: (rp[0].stamp, rp[0].k, rp[1]))]


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[str]:
    """The checkpoint folders directly in ``run_dir``, by epoch."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        return []
    found = [(parse_checkpoint_dir(name), os.path.join(run_dir, name)) for name in os.listdir(run_dir)]
    return [p for c, p in sorted((cp for cp in found if cp[0] is not None and os.path.isdir(cp[1])),
                                 key=lambda cp: (cp[0].epoch, cp[1]))]


def best_of(checkpoints: Iterable[str]) -> str | None:
    """The checkpoint folder with the lowest validation PPL in its name (of equal names' PPLs, the later
    epoch: rounding can make an improvement look equal); None for none."""
    named = [(parse_checkpoint_dir(p), p) for p in checkpoints]
    named = [(c, p) for c, p in named if c is not None]
    return min(named, key=lambda cp: (cp[0].val_ppl, -cp[0].epoch))[1] if named else None


def best_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The best checkpoint folder of one run folder (lowest validation PPL), or None when it has none."""
    return best_of(checkpoint_dirs(run_dir))


def latest_best_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The best checkpoint of the newest run folder under ``output_dir`` that holds one (main.py's
    ``--output_dir``, e.g. out_model/), or None."""
    for run in reversed(run_dirs(output_dir)):
        best = best_checkpoint(run)
        if best:
            return best
    return None
