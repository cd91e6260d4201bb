"""A checkpoint is loaded only when it is what it claims: finite tensors, a typed generator config, valid tokenizer
files, a memory bank of the right shape, its BART named when missing, and no pickled code."""
import json
import os
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from magic.common.errors import UserError


def test_checkpoint_without_config_names_the_missing_bart(tmp_path):
    from magic.generator.checkpoint import load_checkpoint

    (tmp_path / "dialogue_model.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"src/bart_base/: BART .*no config.json.* not found \(--bart_base_dir\)"):
        load_checkpoint(tmp_path, bart_base_dir="src/bart_base/")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_pickle_in_a_checkpoint_is_refused_not_run(bart_dir, tmp_path, monkeypatch):
    import torch

    from magic.generator.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(Path(bart_dir) / f, ckpt / f)
    torch.save({"x": _Evil()}, ckpt / "dialogue_model.pth")
    with pytest.raises(ValueError, match="dialogue_model.pth: not a safe checkpoint .*nothing in it was run"):
        load_checkpoint(ckpt, device="cpu")
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture
def copy_ckpt(ckpt, tmp_path):
    def make(name="ck"):
        dst = tmp_path / name
        shutil.copytree(ckpt, dst)
        return dst
    return make


def _load(path, **kw):
    from magic.generator.checkpoint import load_checkpoint

    return load_checkpoint(path, device="cpu", **kw)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_memory_bank_or_weight_holding_nan_or_inf_is_refused_naming_file_and_tensor(copy_ckpt, value):
    from magic.generator.checkpoint import BANK_FILE, MODEL_FILE

    ck = copy_ckpt()
    bank = torch.load(ck / BANK_FILE, weights_only=True)
    bank[2][1, 3] = value
    torch.save(bank, ck / BANK_FILE)
    with pytest.raises(UserError, match=rf"{BANK_FILE}: tensor \[2\] holds 1 NaN or infinite value"):
        _load(ck)

    ck = copy_ckpt("ck2")
    state = torch.load(ck / MODEL_FILE, weights_only=True)
    name = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
    state[name].view(-1)[:2] = value
    torch.save(state, ck / MODEL_FILE)
    with pytest.raises(UserError, match=rf"{MODEL_FILE}: tensor {name} holds 2 NaN or infinite values"):
        _load(ck)


def test_every_loaded_torch_file_is_checked_for_finite_tensors_nested_ones_included(tmp_path):
    from magic.common.io_utils import load_weights

    path = tmp_path / "training_state.pt"
    torch.save({"epoch": 0, "best_val_ppl": float("inf"),  # a Python float is not a tensor: kept
                "optimizer": {"state": {3: {"exp_avg": torch.tensor([1.0, float("nan")])}}},
                "rng": {"torch": torch.get_rng_state()}}, path)
    with pytest.raises(UserError, match=r"training_state.pt: tensor optimizer.state.3.exp_avg holds 1 NaN"):
        load_weights(path)
    torch.save({"ok": torch.ones(3), "ids": torch.arange(4)}, path)
    assert load_weights(path)["ok"].sum() == 3


def _wrong_type(value):
    """A JSON value of another type than ``value``'s: a string for numbers and booleans, a number for strings."""
    if isinstance(value, bool):
        return "false" if value else "true"
    if isinstance(value, int):
        return str(value)
    return 1


@pytest.mark.parametrize("key,value", [("use_motivation", "false"), ("use_memory", "no"),
                                       ("strategy_memory_max", True), ("max_length", 512.0),
                                       ("use_memory", 1), ("pool", None)])
def test_generator_config_json_values_of_the_wrong_type_are_refused(copy_ckpt, key, value):
    from magic.generator.config import CONFIG_FILE

    ck = copy_ckpt()
    cfg = json.loads((ck / CONFIG_FILE).read_text())
    cfg[key] = value
    (ck / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: {key} must be a"):
        _load(ck)


def test_every_generator_config_field_is_type_checked():
    from magic.generator.config import GeneratorConfig

    default = GeneratorConfig()
    for f in fields(GeneratorConfig):  # the class: a new field is checked as soon as it exists
        bad = _wrong_type(getattr(default, f.name))
        with pytest.raises(ValueError, match=rf"x.json: {f.name} must be a"):
            GeneratorConfig.from_dict({f.name: bad}, "x.json")


def test_an_invalid_generator_config_or_tokenizer_json_is_named(copy_ckpt, bart_dir, tmp_path):
    from magic.common.validate import check_bart_dir
    from magic.generator.config import CONFIG_FILE

    ck = copy_ckpt()
    (ck / CONFIG_FILE).write_text('{"pool": "all",\n}')
    with pytest.raises(ValueError, match=rf"{ck / CONFIG_FILE}:2: not valid JSON"):
        _load(ck)

    ck = copy_ckpt("ck2")
    text = (ck / "tokenizer.json").read_text()
    (ck / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{ck / 'tokenizer.json'}:\d+: not valid JSON"):
        _load(ck)

    bart = tmp_path / "bart"
    shutil.copytree(bart_dir, bart)
    (bart / "tokenizer.json").write_text(text[: len(text) // 3])
    with pytest.raises(ValueError, match=rf"{bart / 'tokenizer.json'}:\d+: not valid JSON"):
        check_bart_dir(bart)


def test_a_tokenizer_json_replaced_by_an_empty_object_is_named(copy_ckpt, bart_dir, tmp_path):
    from magic.common.validate import check_bart_dir

    ck = copy_ckpt()
    (ck / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match=rf"{ck / 'tokenizer.json'}: not a tokenizer file .*'added_tokens'"):
        _load(ck)
    bart = tmp_path / "bart"
    shutil.copytree(bart_dir, bart)
    (bart / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match=r"tokenizer.json: not a tokenizer file"):
        check_bart_dir(bart)


def test_a_checkpoint_without_tokenizer_files_names_itself_and_what_is_missing(copy_ckpt, monkeypatch, tmp_path):
    ck = copy_ckpt()
    (ck / "tokenizer.json").unlink()
    monkeypatch.chdir(tmp_path)  # no src/bart_base/ here
    with pytest.raises(UserError, match=rf"src/bart_base/: .*{ck} has no tokenizer files \(tokenizer.json, or "
                                        r"vocab.json and merges.txt\).* not found \(--bart_base_dir\)"):
        _load(ck, bart_base_dir="src/bart_base/")
    (ck / "vocab.json").write_text("{}")
    with pytest.raises(UserError, match=rf"{ck}: incomplete tokenizer: vocab.json without merges.txt"):
        _load(ck, bart_base_dir="src/bart_base/")


def test_a_memory_bank_with_more_rows_per_slot_than_k_is_refused(copy_ckpt):
    from magic.generator.checkpoint import BANK_FILE

    ck = copy_ckpt()
    bank = torch.load(ck / BANK_FILE, weights_only=True)
    bank[0] = torch.randn(300, bank[0].size(1))
    torch.save(bank, ck / BANK_FILE)
    with pytest.raises(UserError, match=rf"{BANK_FILE}: slot 0 \(Question\) holds 300 entries, more than the "
                                        r"checkpoint's strategy_memory_max \(K\) 8"):
        _load(ck)
    model, _, _ = _load(ck, strategy_memory_max=16)  # asked for another K: the latest 16 kept, and said so
    assert model.memory_bank[0].size(0) == 16


def test_a_memory_bank_or_weights_cast_to_integers_are_refused_with_the_shapes(copy_ckpt):
    from magic.generator.checkpoint import BANK_FILE, MODEL_FILE

    ck = copy_ckpt()
    bank = torch.load(ck / BANK_FILE, weights_only=True)
    torch.save([t.long() for t in bank], ck / BANK_FILE)
    with pytest.raises(UserError, match=rf"{BANK_FILE}: slot 0 of the memory bank is torch.int64, expected floating"):
        _load(ck)

    ck = copy_ckpt("ck2")
    state = torch.load(ck / MODEL_FILE, weights_only=True)
    name = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
    state[name] = state[name].long()
    torch.save(state, ck / MODEL_FILE)
    with pytest.raises(ValueError, match=rf"{MODEL_FILE}: .*{name}: file torch.int64 vs model torch.float32"):
        _load(ck)


def _a_training_state(**change):
    state = {"epoch": 0, "best_val_ppl": 3.5, "bad_epochs": 0, "history": [{"epoch": 0}], "best_dir": None,
             "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": None,
             "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(5)), None)}}
    state.update(change)
    return {k: v for k, v in state.items() if v != "DROP"}


@pytest.mark.parametrize("content,message", [
    (b"a line of text\n", r"not a readable torch file \(truncated or corrupt"),
    ({"foo": 1}, r"not a training state main.py wrote \(missing epoch, best_val_ppl"),
    (_a_training_state(epoch="3"), r"not a training state main.py wrote \(epoch is str\)"),
    (_a_training_state(bad_epochs=True), r"bad_epochs is bool"),
    (_a_training_state(history="DROP"), r"missing history"),
    (_a_training_state(rng={"torch": 1}), r"rng is not a torch and python random state"),
    (_a_training_state(epoch=-1), r"epoch -1 / bad_epochs 0 negative"),
    (_a_training_state(best_val_ppl=float("nan")), r"best_val_ppl is NaN"),
    ([1, 2], r"not a training state \(a list"),
])
def test_a_resume_state_is_checked_after_loading_one_line_naming_the_file(tmp_path, content, message):
    from magic.generator.checkpoint import load_training_state

    path = tmp_path / "last" / "training_state.pt"
    path.parent.mkdir()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=rf"^{path}: .*{message}"):
        load_training_state(str(path))
    torch.save(_a_training_state(), path)
    assert load_training_state(str(path))["epoch"] == 0
