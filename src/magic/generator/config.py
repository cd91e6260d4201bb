"""The generator's own settings: one object read by the model (src/magic/generator/model.py), the dataset and collator
(src/magic/generator/data.py), training (src/magic/generator/train.py) and checkpoints (src/magic/generator/checkpoint.py).

A checkpoint stores it as ``generator_config.json`` beside the BART ``config.json``. The rule for a
checkpoint without it is explicit: it was written by the released code, so it gets ``RELEASED`` (pool
"all", i.e. contexts padded to 512 and memory responses to 64, max-pooled over pads as released).

``TrainConfig`` beside it holds step 7's training settings. ``main.py``'s flags are generated from both
(magic.common.settings), so each default is written once, here. This module imports nothing heavy: ``main.py
--help`` answers without torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from dataclasses import dataclass, fields
from typing import Any, Sequence

from magic.common.io_utils import atomic_write_json, load_json
from magic.common.settings import add_options, from_namespace, option
from magic.common.validate import length_int, non_negative_float, non_negative_int, positive_int, seed_int

CONFIG_FILE = "generator_config.json"
DEFAULT_BART = "facebook/bart-base"  # the paper's generator; a local copy works the same (--bart_base_dir DIR)
POOL_MODES = ("masked", "all")
TRUNCATION_SIDES = ("right", "left")


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that decides what the generator computes besides its weights.

    num_strategies: memory slots / classifier outputs (8).
    strategy_memory_max: K, entries kept per slot (FIFO).
    use_motivation: append the encoded motivation to the cross-attention memory (released: encoded, unused).
    use_memory: the memory-enhanced vector, bank and auxiliary loss (False = the --no_memory ablation).
    pool: "masked" pads each batch to its longest row and max-pools over real tokens; "all" pads contexts
        and motivations to max_length and memory responses to max_length_res_memory and pools over every
        position, pads included (released).
    max_length: tokens kept of a context / response / motivation (and the "all" padding length).
    max_length_res_memory: tokens kept of a memory response (and its "all" padding length).
    truncation_side: which end of a long context is cut (released: right, i.e. the latest turns).
    """

    num_strategies: int = 8
    strategy_memory_max: int = option(128, "K, entries kept per memory slot", type=positive_int)
    use_motivation: bool = option(False, "append the encoded motivation to the decoder's cross-attention memory "
                                         "(released: encoded but unused)")
    use_memory: bool = option(True, "ablation: no memory-enhanced vector, no memory bank, no auxiliary loss",
                              flags=("--no_memory",))
    pool: str = option("masked", "masked: pad each batch to its longest row, max-pool over real tokens; all: "
                                 "released (pad contexts to --max_length and memory responses to "
                                 "--max_length_res_memory, pool over the pads too)", choices=POOL_MODES)
    max_length: int = option(512, "max tokens of a context / response / motivation", type=length_int)
    max_length_res_memory: int = option(64, "max tokens of a memory response", type=length_int)
    truncation_side: str = option("right", "which end of a long context is cut (released: right, i.e. the latest "
                                           "turns)", choices=TRUNCATION_SIDES)

    def __post_init__(self):
        for f in fields(self):  # every field has the type its annotation names: "false" is not a boolean
            value, typ = getattr(self, f.name), FIELD_TYPES[f.name]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be a{'n' if typ is int else ''} {TYPE_NAMES[typ]}, got "
                                 f"{json.dumps(value) if _jsonable(value) else repr(value)}")
        if self.pool not in POOL_MODES:
            raise ValueError(f"pool must be one of {POOL_MODES}, got {self.pool!r}")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation_side must be one of {TRUNCATION_SIDES}, got {self.truncation_side!r}")
        for name in ("num_strategies", "strategy_memory_max", "max_length", "max_length_res_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "GeneratorConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Any, where: str = "generator config") -> "GeneratorConfig":
        """Fields missing from ``d`` keep their defaults; an unknown key is an error naming ``where``."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object of generator settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown generator setting(s) {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def save(self, folder: str) -> str:
        path = os.path.join(folder, CONFIG_FILE)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def for_checkpoint(cls, folder: str) -> tuple["GeneratorConfig", bool]:
        """(config, is_released) of a checkpoint folder: its generator_config.json; else the settings an
        earlier version of this code kept in args.json["model"]; else ``RELEASED`` (a released checkpoint)."""
        path = os.path.join(folder, CONFIG_FILE)
        if os.path.exists(path):
            return cls.from_dict(load_json(path, "JSON object of generator settings"), path), False
        args_path = os.path.join(folder, "args.json")
        if os.path.exists(args_path):
            saved = load_json(args_path, "JSON object of training arguments")
            legacy = saved.get("model") if isinstance(saved, dict) else None
            if legacy is not None:
                return cls.from_dict(legacy, f"{args_path} [\"model\"]"), False
        return RELEASED, True


# The typed-field table: each field's type, from the annotations above (the one place a field is declared).
FIELD_TYPES: dict[str, type] = typing.get_type_hints(GeneratorConfig)
TYPE_NAMES = {bool: "boolean (true or false, not a string)", int: "integer", str: "string"}
if not set(FIELD_TYPES.values()) <= set(TYPE_NAMES):
    raise TypeError(f"GeneratorConfig: a field of a type __post_init__ cannot check: {FIELD_TYPES}")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


# The released code's settings (its model and dataset padded every context and memory response to the fixed
# lengths and pooled over the pads; docs/FIDELITY.md). Used for every checkpoint that carries no
# generator_config.json.
RELEASED = GeneratorConfig(pool="all")


@dataclass
class TrainConfig:
    """Step 7's training settings (the model's are GeneratorConfig)."""

    train_data: str = option("data/train.json", "training records")
    valid_data: str = option("data/valid.json", "validation records", aliases=("--val_data",))
    output_dir: str = option("out_model/", "runs go to <output_dir>/bs_<B>_epochs_<E>_<time>/")
    batch_size: int = option(16, "samples per step (per process under torchrun)", type=positive_int)
    num_epochs: int = option(20, "at most this many epochs (see --patience)", type=positive_int)
    learning_rate: float = option(5e-5, "AdamW learning rate (linear decay)", type=non_negative_float)
    warmup_steps: int = option(0, "linear warm-up steps of the schedule", type=non_negative_int)
    bart_base_dir: str = option(DEFAULT_BART, "BART folder or hub id for the initial weights and tokenizer "
                                              "(released: src/bart_base/)")
    l_strategy: float = option(0.2, "weight of the auxiliary strategy loss", type=non_negative_float)
    seed: int = option(42, "seeds the initialisation and the shuffling", type=seed_int)
    patience: int = option(5, "stop after this many epochs without improvement", type=positive_int)
    device: str = option("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    fp16: bool = option(False, "CUDA float16 autocast with loss scaling")
    bf16: bool = option(False, "bfloat16 autocast")
    num_workers: int = option(0, "DataLoader workers", type=non_negative_int)
    resume: str | None = option(None, "continue an interrupted run (its run directory or its last/) at the next "
                                      "epoch", metavar="DIR")
    max_train_samples: int | None = option(None, "use the first N training records", type=positive_int)
    max_valid_samples: int | None = option(None, "use the first N validation records", type=positive_int)
    scheduler_step: str = option("step", "step the linear LR schedule per batch or once per epoch (released)",
                                 choices=("step", "epoch"))
    group_by_length: bool = option(True, "shuffle plainly instead of batching samples of similar context length "
                                         "(length batches are the default with --pool masked: less padding, "
                                         "faster; --pool all always shuffles plainly, as released)",
                                   flags=("--no_group_by_length",))
    allow_empty_responses: bool = option(False, "train and validate on records whose response is empty (refused "
                                                "by default, naming the record)")
    keep_best_only: bool = option(False, "keep only this run's best epoch_<e>_val_ppl_<p>/ checkpoint (last/ is "
                                         "kept for --resume)")


def build_parser() -> argparse.ArgumentParser:
    """main.py's parser: TrainConfig's flags, then GeneratorConfig's."""
    p = argparse.ArgumentParser(description="Step 7: train the MAGIC generator (BART + strategy memory).")
    add_options(p, TrainConfig)
    add_options(p.add_argument_group("model"), GeneratorConfig)
    # the default since length batching became one: still accepted, changes nothing
    p.add_argument("--group_by_length", action="store_true", dest="group_by_length", help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, GeneratorConfig]:
    p = build_parser()
    ns = p.parse_args(argv)
    if ns.fp16 and ns.bf16:
        p.error("argument --bf16: not allowed with argument --fp16")
    return from_namespace(TrainConfig, ns), from_namespace(GeneratorConfig, ns)


def run_settings(train: TrainConfig, model: GeneratorConfig) -> dict:
    """Both as one flat dict of flag values (args.json; what --resume compares)."""
    return {**dataclasses.asdict(train), **{f.name: getattr(model, f.name) for f in fields(model) if "cli" in f.metadata}}


def from_run_settings(d: dict) -> tuple[TrainConfig, GeneratorConfig]:
    """run_settings() read back (keys that are neither config's fields are ignored; an earlier version's
    "no_memory" is read as use_memory)."""
    d = dict(d)
    if "no_memory" in d and "use_memory" not in d:
        d["use_memory"] = not d["no_memory"]
    pick = lambda cls: {f.name: d[f.name] for f in fields(cls) if f.name in d}  # noqa: E731
    return TrainConfig(**pick(TrainConfig)), GeneratorConfig(**pick(GeneratorConfig))

