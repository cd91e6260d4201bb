"""The generator's own settings: one object read by the model (src/magic/generator/model.py), the dataset and collator
(src/magic/generator/data.py), training (src/magic/generator/train.py) and checkpoints (src/magic/generator/checkpoint.py).

A checkpoint stores it as ``generator_config.json`` beside the BART ``config.json``. The rule for a
checkpoint without it is explicit: it was written by the released code, so it gets ``RELEASED`` (pool
"all", i.e. contexts padded to 512 and memory responses to 64, max-pooled over pads as released).
``main.py``'s flag defaults are this class's defaults (``--pool masked``; see docs/FIDELITY.md).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, fields
from typing import Any

from magic.common.io_utils import atomic_write_json, load_json

CONFIG_FILE = "generator_config.json"
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
    strategy_memory_max: int = 128
    use_motivation: bool = False
    use_memory: bool = True
    pool: str = "masked"
    max_length: int = 512
    max_length_res_memory: int = 64
    truncation_side: str = "right"

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
