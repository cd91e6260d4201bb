"""Training refuses what cannot be what the user meant, with one line and no run folder: a BART without tokenizer files
or with a vocabulary of another model, records of another split, bad flags; --resume honours more epochs and refuses
other changes by name."""
import json
import shutil
from pathlib import Path

import pytest

from magic.common.errors import UserError
from tests.bart_fixtures import records_with_ids as _records
from tests.scripts import load_script as _script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen_data")
    (d / "train.json").write_text(json.dumps(_records(3, "train", 1)))
    (d / "valid.json").write_text(json.dumps(_records(2, "valid", 2)))
    (d / "test.json").write_text(json.dumps(_records(1, "test", 3)))
    return d


def _main_args(bart, data, out, *extra):
    return ["--train_data", str(data / "train.json"), "--valid_data", str(data / "valid.json"),
            "--bart_base_dir", str(bart), "--output_dir", str(out), "--batch_size", "4", "--num_epochs", "1",
            "--max_length", "48", "--max_length_res_memory", "16", "--device", "cpu", *extra]


def _bart_without_tokenizer(bart_dir, dst):
    shutil.copytree(bart_dir, dst)
    for f in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (dst / f).exists():
            (dst / f).unlink()
    return dst


def test_training_refuses_a_bart_without_tokenizer_files(bart_dir, gen_data, tmp_path, capsys):
    import main

    bad = _bart_without_tokenizer(Path(bart_dir), tmp_path / "bart_no_tok")
    out = tmp_path / "out"
    rc = main.cli(_main_args(bad, gen_data, out))
    err = capsys.readouterr().err
    assert rc == 2 and "no tokenizer files" in err and str(bad) in err
    assert not out.exists() or not any(out.iterdir())  # no bs_* folder


def test_a_vocabulary_of_a_handful_of_tokens_or_of_another_model_is_refused(bart_dir, tmp_path):
    from transformers import BartTokenizer

    from magic.common.validate import check_bart_dir, check_vocab

    bad = _bart_without_tokenizer(Path(bart_dir), tmp_path / "bart_5")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    (bad / "vocab.json").write_text(json.dumps(vocab))
    (bad / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(UserError, match="only 5 tokens"):
        check_bart_dir(bad)
    tok = BartTokenizer.from_pretrained(bart_dir)

    class Model:  # embeddings of another model
        vocab_size = 3 * len(tok)
    with pytest.raises(UserError, match="belongs to another model"):
        check_vocab(tok, Model(), "x")
    Model.vocab_size = len(tok) - 1
    with pytest.raises(UserError, match="belongs to another model"):
        check_vocab(tok, Model(), "x")


def test_records_of_another_split_are_refused_by_training_and_evaluation(bart_dir, gen_data, tmp_path, capsys):
    import main

    data = tmp_path / "d"
    data.mkdir()
    shutil.copy(gen_data / "train.json", data / "train.json")
    shutil.copy(gen_data / "train.json", data / "valid.json")  # the train file given as valid
    assert main.cli(_main_args(bart_dir, data, tmp_path / "out")) == 2
    assert "of the train split, but this is the valid input" in capsys.readouterr().err

    ev = _script("test_evaluation.py")
    rc = ev.main(["--test_data", str(gen_data / "valid.json"), "--model_path", str(tmp_path / "never-loaded"),
                  "--no_meteor", "--eval_dir", str(tmp_path / "ev")])
    assert rc == 2 and "of the valid split, but this is the test input" in capsys.readouterr().err


def test_main_user_errors_are_one_line_exit_2_and_leave_no_run_folder(bart_dir, gen_data, tmp_path, capsys):
    import main

    out = tmp_path / "out"
    bad = tmp_path / "latin1.json"
    bad.write_bytes('[{"context": ["caf\xe9"]}]'.encode("latin-1"))
    for args in (["--train_data", str(tmp_path / "missing.json")], ["--train_data", str(bad)]):
        rc = main.cli(_main_args(bart_dir, gen_data, out) + args)
        err = capsys.readouterr().err
        errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error" in ln.lower()]
        assert rc == 2 and len(errors) == 1 and errors[0].startswith("main.py: error: ")  # (+ progress bars)
        assert "Traceback" not in err and args[1] in errors[0]
        assert not out.exists() or not any(out.iterdir())
    assert "not UTF-8" in err


def test_resume_honours_more_epochs_and_refuses_other_changes_by_name(bart_dir, gen_data, tmp_path, capsys):
    import main

    out = tmp_path / "out"
    assert main.cli(_main_args(bart_dir, gen_data, out)) == 0
    run = next(out.iterdir())
    assert main.cli(["--resume", str(run), "--batch_size", "8", "--device", "cpu"]) == 2
    assert "cannot change --batch_size 8 (the run has 4)" in capsys.readouterr().err
    assert main.cli(["--resume", str(run), "--num_epochs", "2", "--device", "cpu"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert json.loads((run / "args.json").read_text())["num_epochs"] == 2


def test_a_resume_state_replaced_or_edited_is_one_line_naming_it(bart_dir, gen_data, tmp_path, capsys):
    import main
    import torch

    out = tmp_path / "out"
    assert main.cli(_main_args(bart_dir, gen_data, out)) == 0
    state = next(out.iterdir()) / "last" / "training_state.pt"
    good = torch.load(state, weights_only=True)
    for bad in (b"not a torch file\n", {"foo": 1}, {**good, "epoch": "0"}):
        state.write_bytes(bad) if isinstance(bad, bytes) else torch.save(bad, state)
        assert main.cli(["--resume", str(state.parent.parent), "--num_epochs", "2", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"main.py: error: {state}: not a" in err


@pytest.mark.parametrize("killed_in", ["save_checkpoint", "plot_curves"])
def test_a_kill_while_saving_the_first_epoch_loses_no_epoch(bart_dir, gen_data, tmp_path, capsys, monkeypatch,
                                                           killed_in):
    """The resume state is written first: a kill in any later save of the epoch (its best checkpoint, the
    history and curves) resumes after that epoch, and the missing checkpoint is rebuilt from last/."""
    import main
    from magic.generator import train

    real = getattr(train, killed_in)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, killed_in, killed)
    out = tmp_path / "out"
    assert main.cli(_main_args(bart_dir, gen_data, out, "--num_epochs", "2")) == 130
    monkeypatch.setattr(train, killed_in, real)
    run = next(out.iterdir())
    assert (run / "last" / "training_state.pt").is_file()
    capsys.readouterr()
    assert main.cli(["--resume", str(run), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]  # epoch 0 kept, not trained again
    epoch0 = sorted(p for p in run.iterdir() if p.name.startswith("epoch_0_"))
    assert len(epoch0) == 1 and (epoch0[0] / "dialogue_model.pth").is_file()
    assert ("rebuilt it from" in err) == (killed_in == "save_checkpoint")


def test_resume_without_a_resume_state_but_with_an_epoch_checkpoint_says_what_happened(tmp_path, capsys):
    import main

    run = tmp_path / "bs_4_epochs_1"
    (run / "epoch_0_val_ppl_12.5000").mkdir(parents=True)
    assert main.cli(["--resume", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "interrupted while saving its first epoch" in err and "epoch_0_val_ppl_12.5000 is complete" in err
    assert "one completed epoch at least" not in err
