"""Names shared between steps have one home (magic.common.artifacts): the split list, and the checkpoint and run folder
names that training writes and evaluation, chat and the study read."""
import ast
import datetime
import os
import subprocess
import sys
import types

import pytest

from magic.common.artifacts import (RUN_NAME_RE, SPLITS, best_checkpoint, checkpoint_dir_name, checkpoint_dirs,
                                    latest_best_checkpoint, parse_checkpoint_dir, parse_run_dir, run_dir_name,
                                    run_dirs)
from magic.common.errors import UserError
from magic.common.validate import id_split, parse_split_list
from magic.generator import train
from tests.repository.source_files import _sources
from tests.scripts import load_script as _load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_checkpoint_and_run_names_round_trip():
    assert checkpoint_dir_name(3, 12.3456) == "epoch_3_val_ppl_12.35"  # the released name
    assert parse_checkpoint_dir("out/run/epoch_3_val_ppl_12.35/") == (3, 12.35)
    assert parse_checkpoint_dir(checkpoint_dir_name(7, 1e20)) == (7, 1e20)
    for other in ("last", ".epoch_3_val_ppl_12.35.tmp", "epoch_3_val_ppl_inf", "epoch_x_val_ppl_1.0", "bs_1"):
        assert parse_checkpoint_dir(other) is None, other
    assert run_dir_name(16, 20, "20240101_120000") == "bs_16_epochs_20_20240101_120000"
    assert parse_run_dir("out_model/bs_16_epochs_20_20240101_120000_2") == (16, 20, "20240101_120000", 2)
    assert parse_run_dir("bs_16_epochs_20_2024") is None
    assert RUN_NAME_RE.search("out/bs_4_epochs_1_20240101_120000_3/epoch_1_val_ppl_8.0")[0] == \
        "bs_4_epochs_1_20240101_120000_3"


def test_best_checkpoint_of_a_run_and_of_the_newest_run(tmp_path):
    old, new = tmp_path / "bs_16_epochs_20_20240101_120000", tmp_path / "bs_4_epochs_9_20240102_080000"
    for name in ("epoch_0_val_ppl_912.5", "epoch_9_val_ppl_50.0", "epoch_10_val_ppl_88.12", "last"):
        (old / name).mkdir(parents=True)
    for name in ("epoch_2_val_ppl_60.0", "epoch_5_val_ppl_60.0", "epoch_1_val_ppl_70.0"):
        (new / name).mkdir(parents=True)
    (tmp_path / "bs_4_epochs_9_20240103_080000").mkdir()  # the newest run, no checkpoint yet
    (tmp_path / "notes").mkdir()
    assert [os.path.basename(p) for p in checkpoint_dirs(old)] == [
        "epoch_0_val_ppl_912.5", "epoch_9_val_ppl_50.0", "epoch_10_val_ppl_88.12"]  # by epoch, not by name
    assert best_checkpoint(old) == str(old / "epoch_9_val_ppl_50.0")
    assert best_checkpoint(new) == str(new / "epoch_5_val_ppl_60.0")  # equal rounded PPL: the later epoch
    assert best_checkpoint(tmp_path / "notes") is None and best_checkpoint(tmp_path / "absent") is None
    # oldest first by the stamp, whatever the batch size and epochs in the name
    assert [os.path.basename(p) for p in run_dirs(tmp_path)] == [
        old.name, new.name, "bs_4_epochs_9_20240103_080000"]
    assert latest_best_checkpoint(tmp_path) == str(new / "epoch_5_val_ppl_60.0")
    assert latest_best_checkpoint(tmp_path / "notes") is None


def test_main_py_writes_the_names_the_readers_parse(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "datetime", types.SimpleNamespace(datetime=_FixedNow))  # this module's only
    first = train.make_run_dir(str(tmp_path), 16, 20)
    second = train.make_run_dir(str(tmp_path), 16, 20)
    assert [parse_run_dir(p) for p in (first, second)] == [(16, 20, "20240101_120000", 0),
                                                            (16, 20, "20240101_120000", 1)]
    assert run_dirs(tmp_path) == [first, second]


def test_8_evaluate_picks_the_best_checkpoint_of_the_newest_run(tmp_path):
    """scripts/8_evaluate.sh without MODEL_PATH: the checkpoint latest_best_checkpoint names (a stub python
    prints the test_evaluation.py arguments instead of evaluating)."""
    out = tmp_path / "out_model"
    for name in ("epoch_1_val_ppl_20.0", "epoch_10_val_ppl_10.0", "epoch_11_val_ppl_15.0"):
        (out / "bs_16_epochs_20_20240101_120000" / name).mkdir(parents=True)
    (out / "bs_16_epochs_20_20231231_120000" / "epoch_12_val_ppl_5.0").mkdir(parents=True)  # an older run
    stub = tmp_path / "py"
    stub.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\necho "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PY": str(stub), "OUTPUT_DIR": str(out)}
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "8_evaluate.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"--model_path {out}/bs_16_epochs_20_20240101_120000/epoch_10_val_ppl_10.0 " in r.stdout
    env["OUTPUT_DIR"] = str(tmp_path / "empty")
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "8_evaluate.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "no checkpoint under" in r.stderr


class _FixedNow:
    @staticmethod
    def now():
        return datetime.datetime(2024, 1, 1, 12, 0, 0)
