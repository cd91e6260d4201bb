"""Training (src/magic/generator/train.py, main.py), validation perplexity, resume, and src/magic/testing/make_small_bart.py (tiny, CPU)."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from tests.bart_fixtures import DEFAULT_TEXTS, make_records


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "train.json").write_text(json.dumps(make_records(4, seed=1)))  # 12 records
    (d / "valid.json").write_text(json.dumps(make_records(2, seed=2)))  # 6 records
    return d


def main_args(bart_dir, data_files, out, *extra):
    return ["--train_data", str(data_files / "train.json"), "--val_data", str(data_files / "valid.json"),
            "--bart_base_dir", str(bart_dir), "--output_dir", str(out), "--batch_size", "4",
            "--num_epochs", "2", "--learning_rate", "1e-3", "--max_length", "64",
            "--max_length_res_memory", "24", "--device", "cpu", *extra]


def run_dir_of(out):
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def full_run(bart_dir, data_files, tmp_path_factory):
    """main.py for 2 epochs, uninterrupted."""
    import main

    out = tmp_path_factory.mktemp("out_full")
    main.main(main_args(bart_dir, data_files, out))
    return run_dir_of(out)


def test_main_writes_the_checkpoint_layout(full_run):
    from magic.generator.checkpoint import load_checkpoint

    assert re.fullmatch(r"bs_4_epochs_2_\d{8}_\d{6}", full_run.name)
    history = json.loads((full_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    ckpts = sorted(p.name for p in full_run.glob("epoch_*"))
    assert ckpts and all(re.fullmatch(r"epoch_\d+_val_ppl_\d+(\.\d+)?", c) for c in ckpts)
    # a checkpoint exactly for each improvement, named with its rounded PPL
    best = math.inf
    expected = []
    for h in history:
        if h["val_ppl"] < best:
            best = h["val_ppl"]
            expected.append(f"epoch_{h['epoch']}_val_ppl_{round(h['val_ppl'], 2)}")
    assert ckpts == sorted(expected)
    for name in ckpts:
        files = {p.name for p in (full_run / name).iterdir()}
        assert {"dialogue_model.pth", "memory_bank.pth", "args.json", "config.json", "generator_config.json",
                "tokenizer_config.json"} <= files
    log = (full_run / "experiments.log").read_text()
    assert "Validation perplexity" in log and "Training loss" in log
    assert (full_run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, _, args = load_checkpoint(full_run / ckpts[-1], device="cpu")
    assert args["batch_size"] == 4 and args["valid_data"].endswith("valid.json")
    assert sum(t.size(0) for t in model.memory_bank) > 0  # the trained bank came back
    # the model settings named by the flags, in one object read back by the model
    assert model.generator_config.to_dict() == {
        "num_strategies": 8, "strategy_memory_max": 128, "use_motivation": False, "use_memory": True,
        "pool": "masked", "max_length": 64, "max_length_res_memory": 24, "truncation_side": "right"}


def test_help_shows_defaults():
    """Every option that takes a value and has a default shows it, once; the defaults are the configs'."""
    from magic.generator.config import GeneratorConfig, TrainConfig, build_parser, parse_args

    parser = build_parser()
    text = " ".join(parser.format_help().split())
    assert "(default: masked)" in text and "(default: 5e-05)" in text and "(default: 16)" in text
    valued = [a for a in parser._actions if a.dest != "help" and a.nargs != 0 and a.default is not None]
    assert len(re.findall(r"\(default: [^)]*\)", text)) == len(valued)
    assert parse_args([]) == (TrainConfig(), GeneratorConfig())
    assert parse_args(["--no_memory", "--group_by_length", "--no_group_by_length", "--val_data", "v.json"]) == (
        TrainConfig(group_by_length=False, valid_data="v.json"), GeneratorConfig(use_memory=False))
    with pytest.raises(SystemExit):
        parse_args(["--fp16", "--bf16"])


def test_keep_best_only_and_pool_all(bart_dir, data_files, tmp_path, monkeypatch):
    """--keep_best_only deletes the previous best of this run when a better one is saved, and nothing else;
    --pool all reaches the checkpoint's generator_config.json and, through it, the collator."""
    import main
    import magic.generator.train as train
    from magic.generator.checkpoint import load_checkpoint
    from magic.generator.data import collator_for

    ppls = iter([5.0, 4.0, 4.5])
    real = train.evaluate_ppl
    monkeypatch.setattr(train, "evaluate_ppl", lambda *a, **kw: {**real(*a, **kw), "ppl": next(ppls)})
    out = tmp_path / "out"
    other = out / "bs_4_epochs_3_20000101_000000" / "epoch_0_val_ppl_1.0"  # another run's checkpoint
    other.mkdir(parents=True)
    (other / "dialogue_model.pth").write_bytes(b"x")
    main.main(main_args(bart_dir, data_files, out, "--num_epochs", "3", "--keep_best_only",
                                 "--pool", "all", "--max_train_samples", "4", "--max_valid_samples", "2"))
    run = next(p for p in out.iterdir() if p.is_dir() and p != other.parent)
    assert sorted(p.name for p in run.glob("epoch_*")) == ["epoch_1_val_ppl_4.0"]
    assert (run / "last" / "dialogue_model.pth").exists() and (other / "dialogue_model.pth").exists()
    saved = json.loads((run / "epoch_1_val_ppl_4.0" / "generator_config.json").read_text())
    assert saved["pool"] == "all" and saved["max_length"] == 64 and saved["max_length_res_memory"] == 24
    model, tok, _ = load_checkpoint(run / "epoch_1_val_ppl_4.0", device="cpu")
    item = {"index": 0, "input_ids": [0, 5, 2], "decoder_input_ids": [0, 5], "target_ids": [5, 2],
            "strategy_id": 1, "motivation_ids": [0, 2], "memory_index": [0], "memory_ids": [[0, 7, 2]],
            "memory_strategy": [3]}
    b = collator_for(model)([item])
    assert b["input_ids"].shape == (1, 64) and b["memory_input_ids"].shape == (1, 24)  # released fixed padding


def test_resume_continues_at_next_epoch_with_same_state(bart_dir, data_files, full_run, tmp_path, monkeypatch):
    """Interrupt after epoch 0, resume: epoch 1 runs once, from the saved optimizer state, and ends exactly
    where the uninterrupted run ended."""
    import main
    import magic.generator.train as train

    real_train_epoch = train.train_epoch
    calls = []

    def opt_state(optimizer):
        return {i: {k: v.clone() for k, v in st.items()} for i, st in optimizer.state_dict()["state"].items()}

    def interrupt_second(model, loader, optimizer, *a, **kw):
        calls.append((kw.get("desc"), opt_state(optimizer)))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train_epoch(model, loader, optimizer, *a, **kw)

    monkeypatch.setattr(train, "train_epoch", interrupt_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main.main(main_args(bart_dir, data_files, out))
    run = run_dir_of(out)
    saved = torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert saved["epoch"] == 0

    before_interrupt = calls[1][1]  # optimizer state when epoch 1 was about to start
    calls.clear()

    def record(model, loader, optimizer, *a, **kw):
        calls.append((kw.get("desc"), opt_state(optimizer)))
        return real_train_epoch(model, loader, optimizer, *a, **kw)

    monkeypatch.setattr(train, "train_epoch", record)
    main.main(["--resume", str(run), "--device", "cpu"])
    assert [c[0] for c in calls] == ["train 2/2"]  # only the next epoch ran
    resumed = calls[0][1]
    assert before_interrupt.keys() == resumed.keys() and len(resumed) > 0
    for i in resumed:
        assert all(torch.equal(before_interrupt[i][k], resumed[i][k]) for k in resumed[i])
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [0, 1]

    a = torch.load(full_run / "last" / "dialogue_model.pth", weights_only=True)
    b = torch.load(run / "last" / "dialogue_model.pth", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    sa = torch.load(full_run / "last" / "training_state.pt", weights_only=True)
    sb = torch.load(run / "last" / "training_state.pt", weights_only=True)
    assert sa["optimizer"]["state"][0]["step"] == sb["optimizer"]["state"][0]["step"] == 6  # 3 steps x 2 epochs
    assert torch.allclose(sa["optimizer"]["state"][0]["exp_avg_sq"], sb["optimizer"]["state"][0]["exp_avg_sq"])
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 6
    assert [h["val_ppl"] for h in sa["history"]] == pytest.approx([h["val_ppl"] for h in sb["history"]], rel=1e-6)


def test_validation_ppl_is_exp_mean_token_nll(bart_dir, data_files):
    from torch.utils.data import DataLoader
    from transformers import BartTokenizer

    from magic.generator.data import DialogueDataset, collator_for, load_records
    from magic.generator.model import DialogueModel
    from magic.generator.train import evaluate_ppl

    tok = BartTokenizer.from_pretrained(bart_dir)
    torch.manual_seed(0)
    model = DialogueModel.from_pretrained_bart(bart_dir)
    recs = load_records(data_files / "valid.json")
    ds = DialogueDataset(recs, tok, max_length=64)
    model.train()
    model(**collator_for(model)([ds[i] for i in range(len(ds))]))  # fill the bank
    got = evaluate_ppl(model, DataLoader(ds, batch_size=4, collate_fn=collator_for(model, with_memory=False)),
                       torch.device("cpu"))
    # independently: one sample at a time, log-softmax of the logits at each target token
    nll, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i, r in enumerate(recs):
            ctx = tok(tok.sep_token.join(r["context"]), truncation=True, max_length=64, return_tensors="pt")
            resp = tok(r["response"], truncation=True, max_length=64)["input_ids"]
            enc, mask = model.encode(ctx["input_ids"], ctx["attention_mask"], torch.tensor([ds.strategy_ids[i]]))
            logits, _ = model.decode(torch.tensor([resp[:-1]]), enc, mask)
            logp = torch.log_softmax(logits[0].double(), -1)
            nll -= sum(float(logp[j, y]) for j, y in enumerate(resp[1:]))
            n += len(resp) - 1
    assert got["tokens"] == n
    assert got["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_early_stopping_after_patience(bart_dir, data_files, tmp_path):
    """With lr 0 and no memory the validation PPL never improves after epoch 0: patience 1 stops at epoch 1."""
    from magic.generator.config import parse_args
    from magic.generator.train import run_training

    res = run_training(*parse_args(main_args(bart_dir, data_files, tmp_path, "--num_epochs", "5", "--patience", "1",
                                             "--learning_rate", "0", "--no_memory", "--scheduler_step", "epoch")))
    assert res["stopped_early"] and [h["epoch"] for h in res["history"]] == [0, 1]
    run = Path(res["run_dir"])
    assert [p.name.split("_val")[0] for p in run.glob("epoch_*")] == ["epoch_0"]
    assert "Early stopping" in (run / "experiments.log").read_text()


def test_fp16_on_cpu_is_a_clear_error(bart_dir, data_files, tmp_path):
    import main

    with pytest.raises(RuntimeError, match="--fp16 needs a CUDA device"):
        main.main(main_args(bart_dir, data_files, tmp_path / "o", "--fp16"))
    assert not (tmp_path / "o").exists()  # nothing written


def test_make_small_bart_cli_from_esconv_txt(tmp_path):
    from transformers import BartConfig, BartModel, BartTokenizer

    from magic.testing import make_small_bart

    lines = []
    for k in range(3):
        turns = [{"speaker": "usr" if i % 2 == 0 else "sys", "text": DEFAULT_TEXTS[(k + i) % 16],
                  **({"strategy": "Question"} if i % 2 else {})} for i in range(6)]
        lines.append(json.dumps({"situation": DEFAULT_TEXTS[k], "dialog": turns}))
    (tmp_path / "train.txt").write_text("\n".join(lines))
    out = tmp_path / "bart"
    make_small_bart.main(["--output_dir", str(out), "--train_file", str(tmp_path / "train.txt"),
                          "--vocab_size", "300", "--d_model", "16", "--layers", "1", "--heads", "2"])
    tok = BartTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tok.mask_token_id == len(tok) - 1
    text = "Have you tried talking to your boss?"
    ids = tok(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and tok.decode(ids, skip_special_tokens=True) == text
    cfg = BartConfig.from_pretrained(out)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size) == (16, 1, 1, len(tok))
    BartModel.from_pretrained(out)  # weights load
