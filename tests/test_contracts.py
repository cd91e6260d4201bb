"""Contracts shared between steps have one home each (issue 21, item 3): the split list
(magic.common.artifacts.SPLITS), the checkpoint and run folder names (magic.common.artifacts), and the error
contract of every entry point (magic.common.errors.run_main)."""
import ast
import importlib.util
import os

import pytest

from magic.common.artifacts import SPLITS
from magic.common.errors import UserError
from magic.common.validate import id_split, parse_split_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("src", "LLM_inference", "data", "scripts", "metric", "benchmarks")


def _sources():
    """Every Python file of the repository outside tests/ and the virtual environment."""
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            yield os.path.join(ROOT, name)
    for top in SOURCE_DIRS:
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(folder, f)


def _load_script(rel: str):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(rel))[0],
                                                  os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------- the split list
def test_the_split_list_is_spelled_only_in_artifacts():
    """No tuple, list or set literal of exactly the three split names outside magic.common.artifacts."""
    home = os.path.join(ROOT, "src", "magic", "common", "artifacts.py")
    copies = []
    for path in _sources():
        if path == home:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) == len(SPLITS):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if sorted(values) == sorted(SPLITS):
                    copies.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not copies, "the split list typed again (use magic.common.artifacts.SPLITS):\n" + "\n".join(copies)


def test_parse_split_list_takes_the_splits_of_artifacts():
    assert parse_split_list(" valid, test ") == {"valid", "test"}
    assert parse_split_list(None) == set() and parse_split_list("") == set()
    with pytest.raises(UserError, match=r"--splits: unknown split\(s\) \['dev'\]; expected a subset of "
                                        r"train,valid,test"):
        parse_split_list("valid,dev", "--splits")
    assert [id_split(f"{s}-3-5") for s in SPLITS] == list(SPLITS) and id_split("dev-3-5") is None


def test_infer_strategy_splits_flag_uses_the_one_parser(capsys):
    mod = _load_script("LLM_inference/infer_strategy.py")
    for bad, says in (("valid,dev", "--splits: unknown split(s) ['dev']; expected a subset of train,valid,test"),
                      (" , ", "--splits: no split given; expected a subset of train,valid,test")):
        with pytest.raises(SystemExit) as e:
            mod.main(["--splits", bad])
        assert e.value.code == 2 and says in capsys.readouterr().err
