"""Training inputs that would train silently wrong are refused (non-finite base weights, empty responses, lengths too
small for the tokenizer); an interrupted save or run leaves nothing the next one trusts."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from magic.common.errors import UserError
from tests.bart_fixtures import records_with_ids as _records

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen_data_r3")
    (d / "train.json").write_text(json.dumps(_records(2, "train", 1)))
    (d / "valid.json").write_text(json.dumps(_records(1, "valid", 2)))
    (d / "test.json").write_text(json.dumps(_records(1, "test", 3)[:2]))
    return d


def _main_args(bart, data, out, *extra):
    return ["--train_data", str(data / "train.json"), "--valid_data", str(data / "valid.json"),
            "--bart_base_dir", str(bart), "--output_dir", str(out), "--batch_size", "4", "--num_epochs", "1",
            "--max_length", "48", "--max_length_res_memory", "16", "--device", "cpu", *extra]


def test_a_base_bart_with_non_finite_weights_is_refused_before_training(bart_dir, gen_data, tmp_path, capsys):
    import main
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bart_nan"
    shutil.copytree(bart_dir, bad)
    weights = load_file(bad / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    assert main.cli(_main_args(bad, gen_data, out)) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and str(bad) in err
    assert not out.exists() or not any(out.iterdir())


def test_a_length_too_small_for_the_tokenizer_is_refused_with_the_smallest_that_works(bart_dir):
    from transformers import BartTokenizer

    from magic.generator.data import DialogueDataset

    tok = BartTokenizer.from_pretrained(bart_dir)
    recs = _records(1, "test")
    for key in ("max_length", "max_length_res_memory"):
        with pytest.raises(UserError, match=rf"{key} 1 is too small .*the smallest that works is 2"):
            DialogueDataset(recs, tok, **{key: 1})
    ds = DialogueDataset(recs, tok, max_length=3, max_length_res_memory=2)  # applied as given
    assert max(len(x) for x in ds.context_ids) == 3 and max(len(x) for x in ds.memory_ids) == 2


def test_an_empty_reference_or_training_response_is_refused_with_the_record_id(bart_dir, gen_data, tmp_path,
                                                                               capsys):
    import main
    from magic.generator.data import load_records

    recs = _records(1, "test")
    recs[1]["response"] = "  "
    path = tmp_path / "test.json"
    path.write_text(json.dumps(recs))
    with pytest.raises(UserError, match=r"test.json: record 1 \(id test-0-3\): empty 'response'"):
        load_records(path)
    assert len(load_records(path, allow_empty_responses=True)) == 3

    train = _records(2, "train", 1)
    train[4]["response"] = ""
    data = tmp_path / "data"
    shutil.copytree(gen_data, data)
    (data / "train.json").write_text(json.dumps(train))
    out = tmp_path / "out"
    assert main.cli(_main_args(bart_dir, data, out)) == 2
    err = capsys.readouterr().err
    assert "record 4 (id train-1-3): empty 'response'" in err and "--allow_empty_responses" in err
    assert not out.exists() or not any(out.iterdir())


def _killed_save(target: Path) -> Path:
    """A process that dies (SIGKILL) inside atomic_dir(target): returns the temporary folder it left."""
    code = ("import os, signal, sys\nfrom magic.common.io_utils import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    open(os.path.join(tmp, 'dialogue_model.pth'), 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    before = set(target.parent.iterdir()) if target.parent.exists() else set()
    r = subprocess.run([sys.executable, "-c", code, str(target)], env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert r.returncode == -signal.SIGKILL
    (left,) = set(target.parent.iterdir()) - before
    return left


def test_the_next_save_removes_temp_folders_of_an_interrupted_one_and_only_those(tmp_path):
    from magic.common.io_utils import atomic_dir

    run = tmp_path / "run"
    run.mkdir()
    foreign = run / ".last.notes"  # not ours: no marker
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    stale_last = _killed_save(run / "last")
    assert stale_last.name.startswith(".last.")
    stale_epoch = _killed_save(run / "epoch_3_val_ppl_9.1")  # its atomic_dir removed the first one
    assert not stale_last.exists() and stale_epoch.name.startswith(".epoch_3_val_ppl_9.1.")
    with pytest.warns(UserWarning, match=r"removed .*/\.epoch_3_val_ppl_9\.1\.\w+: left by an interrupted save "
                                         r"\(process \d+ on this host no longer runs\)"):
        with atomic_dir(run / "last") as tmp:
            Path(tmp, "dialogue_model.pth").write_text("whole")
    assert not stale_epoch.exists()
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in run.iterdir()) == [".last.notes", "last"]


def test_a_live_save_is_never_taken_for_a_stale_one(tmp_path):
    import warnings

    from magic.common.io_utils import atomic_dir, remove_stale_temp_dirs

    with atomic_dir(tmp_path / "last") as tmp:  # this process is alive: its folder is not stale
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert remove_stale_temp_dirs(tmp_path) == []
        assert os.path.isdir(tmp)


def test_resume_removes_what_the_interrupted_run_left(bart_dir, gen_data, tmp_path, capsys):
    import main

    out = tmp_path / "out"
    assert main.cli(_main_args(bart_dir, gen_data, out)) == 0
    run = next(out.iterdir())
    stale = _killed_save(run / "epoch_1_val_ppl_3.0")
    capsys.readouterr()
    assert main.cli(["--resume", str(run), "--num_epochs", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert not stale.exists() and f"removed {stale}" in err and "interrupted save" in err
