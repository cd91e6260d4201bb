"""Step 2: the prompt files of the strategy LLM (released names and formats, plus id sidecars).

* ``prompts_4_LLaMA.json``: ``[{"instruction": <LLaMA prompt>, "output": <ChatGPT motivation>}]`` (train)
* ``prompts_4_LLaMA_valid.json`` / ``prompts_4_LLaMA_test.json``: ``[<LLaMA prompt>]``
* ``<name>.ids.json`` beside each: the sample ids, in the same order (later steps check them)
* ``dataset_info.json``: the LLaMA-Factory dataset entry for ``prompts_4_LLaMA.json``

All files are computed first and written only when every check passed, each atomically.
"""
from __future__ import annotations

import os
import warnings

from magic.common.artifacts import DATASET_INFO_FILE, SPLITS, ids_path, prompt_file
from magic.common.errors import UserError
from magic.esconv.dialogues import Sample, enumerate_samples, load_dialogues, strategy_mismatches
from magic.common.io_utils import atomic_write_json, load_json
from magic.common.validate import check_duplicate_dialogues, check_ids_sidecar, parse_split_list, require_nonempty
from magic.llm.config import PromptConfig
from magic.llm.prompts import llama_prompt

TRAIN_NAME, VALID_NAME, TEST_NAME = (prompt_file(split) for split in SPLITS)


class PromptBuildError(UserError):
    """The dialogues, motivations or ids sidecars do not fit together; the message names the file."""


def load_motivations(path: str, samples: list[Sample]) -> list[str]:
    """The ChatGPT motivations, one per train sample; checked against the samples' count and, through the
    ids sidecar that step 1 writes, their ids. The released file ships without a sidecar: it is accepted
    when its count matches (it was made in this sample order)."""
    motivations = load_json(path, "motivations list (step 1, collect_motivations_ChatGPT.py)")
    if not isinstance(motivations, list) or not all(isinstance(m, str) for m in motivations):
        raise PromptBuildError(f"{path}: expected a JSON list of motivation strings")
    if len(motivations) != len(samples):
        raise PromptBuildError(
            f"{path}: {len(motivations)} motivations, but the train file gives {len(samples)} samples; "
            "they must correspond one to one (was the collection partial, or made from another train file?)")
    sidecar = ids_path(path)
    if os.path.exists(sidecar):
        check_ids_sidecar(sidecar, [s.id for s in samples], path)
    return motivations


def build_prompt_files(cfg: PromptConfig) -> dict:
    """Everything to write, keyed by file name (values are JSON-serialisable). A split without samples is an
    error unless it is in ``cfg.allow_empty``; a dialogue in two splits is an error unless
    ``cfg.allow_shared_dialogues`` (magic.common.validate)."""
    files = {"train": cfg.train_file, "valid": cfg.valid_file, "test": cfg.test_file}
    allow_empty = parse_split_list(cfg.allow_empty)
    dialogues = {split: load_dialogues(path) for split, path in files.items()}
    check_duplicate_dialogues(dialogues, cfg.allow_shared_dialogues)
    samples = {split: enumerate_samples(ds, split) for split, ds in dialogues.items()}
    for split, path in files.items():
        require_nonempty(len(samples[split]), path, split, allow_empty=split in allow_empty)
    train, valid, test = samples["train"], samples["valid"], samples["test"]
    motivations = load_motivations(cfg.motivations_file, train)
    other, none, _, _ = strategy_mismatches(train, {s.id: m for s, m in zip(train, motivations)})
    mismatched = other + none
    if mismatched:
        warnings.warn(f"{mismatched} of {len(train)} motivations name no strategy or another one than the "
                      "gold strategy of their sample (kept as they are)", stacklevel=2)
    files = {
        TRAIN_NAME: [{"instruction": llama_prompt(s), "output": m} for s, m in zip(train, motivations)],
        VALID_NAME: [llama_prompt(s) for s in valid],
        TEST_NAME: [llama_prompt(s) for s in test],
        DATASET_INFO_FILE: {
            "prompts_4_LLaMA": {"file_name": TRAIN_NAME, "columns": {"prompt": "instruction", "response": "output"}}
        },
    }
    for name, samples in ((TRAIN_NAME, train), (VALID_NAME, valid), (TEST_NAME, test)):
        files[ids_path(name)] = [s.id for s in samples]
    return files


def write_prompt_files(files: dict, output_dir: str) -> list[str]:
    paths = []
    for name, obj in files.items():
        path = os.path.join(output_dir, name)
        atomic_write_json(path, obj, indent=2)
        paths.append(path)
    return paths
