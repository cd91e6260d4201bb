"""The study's data: the real ESConv split prepared by step 0, fixed evenly spaced subsets, and running the
pipeline's own scripts as subprocesses (what the study measures is what a user runs)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

from magic.esconv.dialogues import Sample, load_samples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


class StudyError(RuntimeError):
    """A step of the study failed; the message names the step and its log file."""


# The data folder (docs/STEPS.md, "The data folder"): each file the study and the paper route read, by its path
# inside the folder; data/fetch_data.py builds it and checks it against EXPECTED_SAMPLES.
DATA_FILES = {"train": "reconstructed/train.txt", "valid": "magic/valid.txt", "test": "magic/test.txt",
              "motivations": "magic/motivations_4_LLaMA.json"}
EXPECTED_SAMPLES = {"train": 10191, "valid": 2156, "test": 195}  # MAGIC's samples of the MultiESC split
FETCH_COMMAND = "python data/fetch_data.py"  # with internet; offline: --from DIR (a copy in the same layout)
FETCHED_DIR = os.path.join(ROOT, "data", "esconv")  # where the fetch script writes by default


def data_dir(default_root: str = ROOT) -> str:
    """The real data: $MAGIC_DATA_DIR, else data/esconv/ in the repository (what data/fetch_data.py writes),
    else the project's shared copy ../shared/data/esconv beside the repository, when they exist."""
    if os.environ.get("MAGIC_DATA_DIR"):
        return os.environ["MAGIC_DATA_DIR"]
    fetched = os.path.join(default_root, "data", "esconv")
    shared = os.path.join(os.path.dirname(default_root), "shared", "data", "esconv")
    return next((d for d in (fetched, shared) if os.path.isdir(d)), fetched)


def missing_data(root: str | None = None) -> list[str]:
    """The files of DATA_FILES not in the data folder (paths inside it)."""
    root = root or data_dir()
    return [rel for rel in DATA_FILES.values() if not os.path.isfile(os.path.join(root, rel))]


def require_data(root: str | None = None) -> None:
    """A UserError (exit 2) naming what is missing and the command that fetches it, unless the folder is whole."""
    from magic.common.errors import UserError

    root = root or data_dir()
    missing = missing_data(root)
    if missing:
        where = "" if os.path.isdir(root) else " (no such folder)"
        raise UserError(f"no ESConv data in {root}{where}: missing {', '.join(missing)}; fetch it with "
                        f"`{FETCH_COMMAND}` (offline: `{FETCH_COMMAND} --from DIR`), or set MAGIC_DATA_DIR")


def evenly_spaced(items: Sequence, k: int | None) -> list:
    """``k`` items at evenly spaced positions of ``items`` (first and last included), in their order; all of
    them when ``k`` is None or not smaller. Spread over every dialogue, unlike the first ``k``."""
    n = len(items)
    if k is None or k >= n:
        return list(items)
    if k <= 0:
        return []
    if k == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


def split_samples(work_data: str, split: str, mode: str = "last") -> list[Sample]:
    """Samples of a prepared split; split "test_all" = every supporter turn of the test dialogues."""
    if split == "test_all":
        return load_samples(os.path.join(work_data, SPLIT_FILES["test"]), "test", "all")
    return load_samples(os.path.join(work_data, SPLIT_FILES[split]), split, mode)


def run_logged(cmd: Sequence[str], log_path: str, what: str, env: dict | None = None, echo: bool = True) -> None:
    """Run ``cmd`` from the repository root, its output appended to ``log_path`` (and echoed); a failure is a
    StudyError naming ``what``, the log and its last lines."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("+ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        for line in proc.stdout:
            log.write(line)
            if echo and ("error" in line.lower() or line.startswith(("wrote", "+ "))):
                sys.stderr.write(f"    {line}")
        rc = proc.wait()
    if rc != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-8:])
        raise StudyError(f"{what} failed (exit {rc}); log: {log_path}\n{tail}")


def python() -> str:
    return sys.executable
