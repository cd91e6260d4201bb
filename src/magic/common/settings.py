"""Each step's settings are one typed dataclass; its command-line parser is generated from it.

A field is declared once, with its type, default and help::

    @dataclass
    class EvalConfig:
        num_beams: int = option(5, "beams per sample", type=positive_int)
        early_stopping: str = option("false", "stop a beam group ...", choices=("true", "false", "never"))
        use_memory: bool = option(True, "...", flags=("--no_memory",))   # a True default is switched off

so a default changed here changes ``--help`` and behaviour together. ``add_options(parser, cls)`` adds one flag
per field (``--<field>``, plus ``aliases``: released flag names stay accepted); ``from_namespace(cls, ns)``
builds the config back from parsed flags; ``parse(cls, argv)`` does both. Library code takes the config object,
never loose keyword defaults.

This module imports nothing heavy (no torch, no transformers): ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Sequence

from magic.common.validate import any_int, finite_float

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, type: Any = None, choices: Sequence | None = None,
           flags: Sequence[str] = (), aliases: Sequence[str] = (), metavar: str | None = None,
           nargs: Any = None, show_default: bool = True, factory: Any = None) -> Any:
    """A dataclass field that is also a command-line flag.

    ``type``: the argparse type (e.g. ``magic.common.validate.positive_int``); default: for str the
    annotation, for int / float a checked type (validate.any_int, validate.finite_float: never plain int/float). ``flags``: replaces ``--<name>`` (a bool field whose default is True is switched off by its flag,
    e.g. ``--no_memory``). ``aliases``: extra spellings (released names). ``factory``: a default factory (lists).
    """
    meta = {"help": help, "type": type, "choices": tuple(choices) if choices is not None else None,
            "flags": tuple(flags), "aliases": tuple(aliases), "metavar": metavar, "nargs": nargs,
            "show_default": show_default}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"cli": meta})
    return dataclasses.field(default=default, metadata={"cli": meta})


def _default_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return str(value)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                skip: Sequence[str] = ()) -> None:
    """Add one flag per field of the dataclass ``cls`` (fields without ``option`` metadata are not flags)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        if meta is None or f.name in skip:
            continue
        default = f.default_factory() if f.default_factory is not _MISSING else f.default
        names = list(meta["flags"] or (f"--{f.name}",)) + list(meta["aliases"])
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        annotation = hints[f.name]
        if annotation is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
            kwargs["default"] = default
        else:
            kwargs["default"] = None if default is _MISSING else default
            if default is _MISSING:
                kwargs["required"] = True
            kwargs["type"] = meta["type"] or _builtin(annotation)
            for key in ("choices", "metavar", "nargs"):
                if meta[key] is not None:
                    kwargs[key] = list(meta[key]) if key == "choices" else meta[key]
            if meta["show_default"] and default is not _MISSING and default is not None and default != "":
                kwargs["help"] = f"{kwargs['help']} (default: {_default_text(default)})".lstrip()
        kwargs["help"] = kwargs["help"].replace("%", "%%")
        parser.add_argument(*names, **kwargs)


def _builtin(annotation: Any):
    """The parse type of a plain annotation: int, float, str, or X | None (list fields give their item type)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple, Sequence) and args:
        return args[0]
    if args and origin is not None:
        return _builtin(args[0])
    if annotation in (int, float):  # never a plain int / float: a number is always checked (overflow, NaN)
        return any_int if annotation is int else finite_float
    return annotation if annotation is str else None


def from_namespace(cls: type, ns: argparse.Namespace, **overrides: Any):
    """The config of the parsed flags (``overrides`` win); fields that are not flags keep their defaults."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)}
    values.update(overrides)
    return cls(**values)


def step_parser(description: str, *configs: type, usage: str | None = None, epilog: str | None = None,
                raw: bool = False) -> argparse.ArgumentParser:
    """A step's parser: one flag per field of each config, in the house format (``usage`` default
    "PROG [options]", help text from column 34; ``raw``: the epilog keeps its line breaks)."""
    base = argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter
    p = argparse.ArgumentParser(usage=usage or "%(prog)s [options]", description=description, epilog=epilog,
                                formatter_class=lambda prog: base(prog, max_help_position=34, width=116))
    for cls in configs:
        add_options(p, cls)
    return p


def parse(cls: type, argv: Sequence[str] | None = None, description: str | None = None, **parser_options: Any):
    """Parse ``argv`` into one ``cls`` (argparse's usual errors and exit code 2)."""
    p = step_parser(description or (cls.__doc__ or "").split("\n\n")[0], cls, **parser_options)
    return from_namespace(cls, p.parse_args(argv))

