"""Rules every source file follows: no parser takes a plain float, every JSON file is read through
magic.common.io_utils.load_json."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# project sources every class-wide check walks: the package, the metric package and every script
SOURCE_DIRS = ("src", "metric", "LLM_inference", "data", "scripts", "benchmarks")

ROOT_SCRIPTS = ("main.py", "test_evaluation.py", "chat.py")


def _sources():
    for d in SOURCE_DIRS:
        yield from sorted((REPO / d).rglob("*.py"))
    for s in ROOT_SCRIPTS:
        yield REPO / s


def test_no_parser_takes_a_plain_float():
    """The class: every float flag of every script goes through a finite type of magic.common.validate."""
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                for kw in node.keywords:
                    if kw.arg == "type" and isinstance(kw.value, ast.Name) and kw.value.id == "float":
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"type=float accepts nan/inf: {offenders}"


def test_every_json_file_is_read_through_load_json():
    """The class: no module reads a JSON file with json.load but magic.common.io_utils.load_json."""
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "json"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == [f"src/magic/common/io_utils.py:{_load_json_line()}"], offenders


def _load_json_line():
    from magic.common import io_utils

    src = Path(io_utils.__file__).read_text(encoding="utf-8")
    return next(n.lineno for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)
                and getattr(n.func, "attr", "") == "load" and getattr(n.func.value, "id", "") == "json")
