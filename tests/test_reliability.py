"""Issue 15: every step refuses what cannot be what the user meant, loses nothing, and says so in one line.

One test (or a few) per class of defect; docs/RELIABILITY.md has the table. Tiny models, CPU, seconds.
"""
import errno
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.bart_fixtures import records_with_ids as _records

from magic.common.errors import OutputExistsError, UserError
from tests.dialogues import make_dialogue

REPO = Path(__file__).resolve().parents[1]


def _script(rel):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dialogue(i):
    return make_dialogue(i, text="dialogue {i} turn {t} : I am here .")


def _write_dialogues(path, indices):
    path.write_text("".join(json.dumps(_dialogue(i)) + "\n" for i in indices), encoding="utf-8")
    return path


@pytest.fixture
def esconv_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return {"train": _write_dialogues(d / "train.txt", range(0, 3)),
            "valid": _write_dialogues(d / "valid.txt", range(10, 12)),
            "test": _write_dialogues(d / "test.txt", range(20, 22))}


def _motivations(esconv_files, folder):
    from magic.esconv.dialogues import load_samples

    samples = load_samples(esconv_files["train"], "train")
    path = folder / "motivations_4_LLaMA.json"
    path.write_text(json.dumps([f"The supporter uses [{s.strategy}]." for s in samples]), encoding="utf-8")
    (folder / "motivations_4_LLaMA.ids.json").write_text(json.dumps([s.id for s in samples]))
    return path, [s.id for s in samples]


def _prompts_cli(esconv_files, motivations, out, *extra):
    return ["--train_file", str(esconv_files["train"]), "--valid_file", str(esconv_files["valid"]),
            "--test_file", str(esconv_files["test"]), "--motivations_file", str(motivations),
            "--output_dir", str(out), *extra]


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


# ------------------------------------------------------------------------------- 1. the safe writer
def test_atomic_dir_never_replaces_a_folder_it_did_not_write(tmp_path):
    from magic.common.io_utils import OUTPUT_MARKER, atomic_dir

    mine = tmp_path / "export"
    with atomic_dir(mine) as tmp:
        Path(tmp, "model.safetensors").write_text("v1")
    assert (mine / OUTPUT_MARKER).exists()
    with atomic_dir(mine) as tmp:  # its own folder: replaced
        Path(tmp, "model.safetensors").write_text("v2")
    assert (mine / "model.safetensors").read_text() == "v2"

    theirs = tmp_path / "notes"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    ran = []
    with pytest.raises(OutputExistsError, match=r"notes: exists .*--overwrite_output_dir"):
        with atomic_dir(theirs) as tmp:
            ran.append(tmp)
    assert not ran and (theirs / "notes.txt").read_text() == "precious"  # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "notes"]  # no temporary left
    with atomic_dir(theirs, overwrite=True) as tmp:  # the user said so
        Path(tmp, "config.json").write_text("{}")
    assert not (theirs / "notes.txt").exists()


def test_export_model_refuses_an_existing_folder_before_loading_anything(tmp_path, capsys):
    export = _script("LLM_inference/export_model.py")
    d = tmp_path / "LLM_inference"
    d.mkdir()
    (d / "prompts_4_LLaMA.json").write_text("[]")
    rc = export.main(["--model_name_or_path", str(tmp_path / "no-base"), "--adapter_name_or_path",
                      str(tmp_path / "no-adapter"), "--export_dir", str(d)])
    assert rc == 1 and "refusing to replace" in capsys.readouterr().err
    assert (d / "prompts_4_LLaMA.json").read_text() == "[]"


# ------------------------------------------------------------------------------- 2. model / tokenizer sanity
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


def test_local_llm_refuses_a_folder_without_tokenizer(tmp_path):
    from magic.llm.engines.hf import load_causal_lm
    from magic.testing.make_small_llm import make_tiny_llama

    folder = Path(make_tiny_llama(tmp_path))
    for p in folder.iterdir():
        if p.name.startswith(("tokenizer", "special_tokens")):
            p.unlink()
    with pytest.raises(UserError, match="no tokenizer files"):
        load_causal_lm(folder, device="cpu")


# ------------------------------------------------------------------------------- 3. evaluation output names
def test_eval_output_is_unique_per_run_folder_and_checkpoint(tmp_path):
    from magic.generator import evaluation as ev

    assert ev.run_name_from_model_path("o/bs_4_epochs_1_20240101_120000_1/epoch_0_val_ppl_9.1") == \
        "bs_4_epochs_1_20240101_120000_1"
    eval_dir = str(tmp_path / "eval_result")
    run = "out/bs_4_epochs_1_20240101_120000"
    s1 = {"model_path": run + "/epoch_0_val_ppl_9.1"}
    p1 = ev.claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1)
    assert p1["hypotheses"] == os.path.join(eval_dir, "bs_4_epochs_1_20240101_120000", "diversity_1.0_length_1.0.txt")
    Path(p1["hypotheses"]).write_text("a\n")
    Path(p1["scores"]).write_text(json.dumps({"settings": s1}))
    os.unlink(p1["partial"])
    # another checkpoint of the same run: its own name, the first result untouched
    s2 = {"model_path": run + "/epoch_1_val_ppl_8.0"}
    p2 = ev.claim_output_paths(eval_dir, s2["model_path"], 1.0, 1.0, s2)
    assert p2["hypotheses"] == os.path.join(eval_dir, "bs_4_epochs_1_20240101_120000", "epoch_1_val_ppl_8.0",
                                            "diversity_1.0_length_1.0.txt")
    # a second evaluation of the same checkpoint while the first runs: another name again
    s2b = {**s2, "strategy_source": "gold"}
    p3 = ev.claim_output_paths(eval_dir, s2b["model_path"], 1.0, 1.0, s2b)
    assert p3["hypotheses"] not in (p1["hypotheses"], p2["hypotheses"])
    # the interrupted one resumes into its own name
    assert ev.claim_output_paths(eval_dir, s2["model_path"], 1.0, 1.0, s2)["hypotheses"] == p2["hypotheses"]
    # a finished result is never replaced silently
    with pytest.raises(OutputExistsError, match="already evaluated.*--overwrite_output_dir"):
        ev.claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1)
    assert ev.claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1, overwrite=True) == p1


# ------------------------------------------------------------------------------- 4. prompt length bound
def test_strategy_inference_bounds_prompt_length_and_counts_it(tmp_path):
    from magic.llm.engines.hf import generate_batch, load_causal_lm
    from magic.testing.make_small_llm import make_tiny_llama

    model, tok = load_causal_lm(make_tiny_llama(tmp_path), device="cpu")
    model.config.max_position_embeddings = 40
    stats = {}
    long_text = "I feel so alone and tired . " * 60
    out = generate_batch(model, tok, [long_text, "hello there"], max_new_tokens=4, stats=stats)
    assert len(out) == 2
    assert stats["truncated_prompts"] == 1 and stats["truncated_tokens"] > 0
    assert stats["prompt_tokens"] <= 2 * 36


# ------------------------------------------------------------------------------- 5. empty inputs
def test_empty_split_is_an_error_unless_asked_for(esconv_files, tmp_path, capsys):
    create = _script("LLM_inference/create_prompts_4_LLaMA.py")
    motivations, _ = _motivations(esconv_files, tmp_path)
    out = tmp_path / "prompts"
    assert create.main(_prompts_cli(esconv_files, motivations, out)) == 0
    good = (out / "prompts_4_LLaMA_test.json").read_text()
    esconv_files["test"].write_text("")
    assert create.main(_prompts_cli(esconv_files, motivations, out)) == 1
    assert "no test samples" in capsys.readouterr().err
    assert (out / "prompts_4_LLaMA_test.json").read_text() == good  # the good output is intact
    assert create.main(_prompts_cli(esconv_files, motivations, out, "--allow_empty", "test")) == 0
    assert json.loads((out / "prompts_4_LLaMA_test.json").read_text()) == []


def test_dataset_build_and_inference_refuse_empty_inputs(esconv_files, tmp_path):
    from magic.generator.records import DatasetConfig, build_datasets
    from magic.llm.inference import InferenceConfig, run_strategy_inference

    esconv_files["valid"].write_text("\n")
    files = {f"{k}_file": str(v) for k, v in esconv_files.items()}
    with pytest.raises(UserError, match="no valid samples"):
        build_datasets(DatasetConfig(**files, llm_dir=None))
    assert build_datasets(DatasetConfig(**files, llm_dir=None, allow_empty="valid"))["valid"] == []
    prompts = tmp_path / "p_valid.json"
    prompts.write_text("[]")
    (tmp_path / "p_valid.ids.json").write_text("[]")  # its (empty) ids sidecar: sidecars are required
    cfg = InferenceConfig(prompt_paths={"valid": str(prompts)}, output_dir=str(tmp_path),
                          model_path=str(tmp_path / "never-loaded"), cache_file=str(tmp_path / "c.jsonl"))
    with pytest.raises(UserError, match="no valid prompts"):
        run_strategy_inference(cfg, log=lambda m: None)
    assert not (tmp_path / "strategy_with_motivation_valid.json").exists()


# ------------------------------------------------------------------------------- 6. numeric flags
@pytest.mark.parametrize("script,argv", [
    ("test_evaluation.py", ["--model_path", "x", "--limit", "-1"]),
    ("test_evaluation.py", ["--model_path", "x", "--batch_size", "0"]),
    ("LLM_inference/infer_strategy.py", ["--batch_size", "0"]),
    ("LLM_inference/infer_strategy.py", ["--max_samples", "-3"]),
    ("LLM_inference/collect_motivations_ChatGPT.py", ["--limit", "-1"]),
    ("LLM_inference/finetune_llm.py", ["--model_name_or_path", "m", "--output_dir", "o", "--max_samples", "-3"]),
    ("LLM_inference/export_model.py", ["--model_name_or_path", "m", "--adapter_name_or_path", "a",
                                       "--export_dir", "e", "--export_size", "0"]),
    ("main.py", ["--num_epochs", "-1"]),
    ("main.py", ["--batch_size", "0"]),
])
def test_negative_or_zero_counts_are_refused_at_parse_time(script, argv, capsys):
    mod = _script(script)
    parse = getattr(mod, "build_parser", None)
    if script == "main.py":
        from magic.generator.config import build_parser as parse
    with pytest.raises(SystemExit) as e:
        parse().parse_args(argv) if parse else mod.parse_args(argv)
    assert e.value.code == 2 and "invalid value" in capsys.readouterr().err


# ------------------------------------------------------------------------------- 7. mix-ups between splits
def test_a_file_given_for_the_wrong_split_is_refused(esconv_files, tmp_path, capsys):
    create = _script("LLM_inference/create_prompts_4_LLaMA.py")
    motivations, _ = _motivations(esconv_files, tmp_path)
    files = {**esconv_files, "test": esconv_files["valid"]}  # the valid file given as test
    assert create.main(_prompts_cli(files, motivations, tmp_path / "out")) == 1
    assert "is also valid dialogue" in capsys.readouterr().err and not (tmp_path / "out").exists()

    from magic.common.validate import check_duplicate_dialogues
    from magic.esconv.dialogues import load_dialogues
    twice = _write_dialogues(tmp_path / "twice.txt", [1, 2, 1])
    with pytest.warns(UserWarning, match="twice.txt:3: duplicate of train dialogue .*twice.txt:1"):
        assert check_duplicate_dialogues({"train": load_dialogues(twice)}) == 1


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


# ------------------------------------------------------------------------------- 8. ids sidecars, before any work
def test_short_or_empty_ids_sidecar_is_refused(esconv_files, tmp_path):
    from magic.llm.prompt_files import build_prompt_files

    motivations, ids = _motivations(esconv_files, tmp_path)
    sidecar = tmp_path / "motivations_4_LLaMA.ids.json"
    for bad in ([], ids[:-1]):
        sidecar.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="ids.json: .* ids, but"):
            build_prompt_files(*(str(esconv_files[s]) for s in ("train", "valid", "test")), str(motivations))


def test_inference_checks_prompt_ids_against_gold_before_generating(esconv_files, tmp_path):
    from magic.llm.inference import InferenceConfig, run_strategy_inference

    prompts = tmp_path / "p_valid.json"
    prompts.write_text(json.dumps(["a prompt", "another"]))
    (tmp_path / "p_valid.ids.json").write_text(json.dumps(["valid-0-1", "valid-7-1"]))
    cfg = InferenceConfig(prompt_paths={"valid": str(prompts)}, output_dir=str(tmp_path),
                          model_path=str(tmp_path / "never-loaded"), cache_file=str(tmp_path / "c.jsonl"),
                          gold_files={"valid": str(esconv_files["valid"])})
    with pytest.raises(UserError, match="1 of 2 sample ids are not samples of .*valid.txt .*valid-7-1"):
        run_strategy_inference(cfg, log=lambda m: None)


# ------------------------------------------------------------------------------- 9. one clear line
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


def test_non_utf8_dialogue_file_is_named(tmp_path):
    from magic.esconv.dialogues import ESConvFormatError, load_dialogues

    p = tmp_path / "train.txt"
    p.write_bytes(json.dumps(_dialogue(0)).encode() + b"\n" + b'{"situation": "caf\xe9"}\n')
    with pytest.raises(ESConvFormatError, match=r"train.txt:2: .*not UTF-8"):
        load_dialogues(p)


def test_checkpoint_without_config_names_the_missing_bart(tmp_path):
    from magic.generator.checkpoint import load_checkpoint

    (tmp_path / "dialogue_model.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"src/bart_base/: BART .*no config.json.* not found \(--bart_base_dir\)"):
        load_checkpoint(tmp_path, bart_base_dir="src/bart_base/")


def test_disk_full_while_collecting_motivations_is_one_error_exit_2(esconv_files, tmp_path, monkeypatch, capsys):
    import io

    from magic.llm.engines import cache as llm_client
    from magic.testing.openai_stub import StubServer

    cli = _script("LLM_inference/collect_motivations_ChatGPT.py")
    real_open = open

    class FullDisk(io.BufferedWriter):
        def flush(self):
            if self.raw.closed:
                return
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        if mode == "ab":
            return FullDisk(real_open(path, "ab", buffering=0))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(llm_client, "open", fake_open, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    out = tmp_path / "m.json"
    with StubServer() as stub:
        rc = cli.main(["--train_file", str(esconv_files["train"]), "--output_file", str(out),
                       "--base_url", stub.base_url, "--concurrency", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "m.json.cache.jsonl" in err
    assert not out.exists()


# ------------------------------------------------------------------------------- 10. --resume and changed flags
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


# ------------------------------------------------------------------------------- 11. keys of any length
@pytest.mark.parametrize("key", ["abc1234", "k3y", "sk-12", "a-very-long-key-0123456789"])
def test_api_keys_of_any_length_are_scrubbed(key):
    from magic.llm.engines.openai import scrub

    msg = f"Error code: 401 - Incorrect API key provided: {key}. Authorization: Bearer {key}"
    assert key not in scrub(msg, [key])
    assert scrub("EMPTY key for a local server", ["EMPTY"]) == "EMPTY key for a local server"


# ------------------------------------------------------------------------------- kept guarantees
def test_disk_full_never_destroys_an_earlier_output(tmp_path, monkeypatch):
    from magic.common import io_utils

    out = tmp_path / "train.json"
    io_utils.atomic_write_json(out, ["good"])
    folder = tmp_path / "model"
    with io_utils.atomic_dir(folder) as tmp:
        Path(tmp, "config.json").write_text("good")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io_utils.os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as e:
        io_utils.atomic_write_json(out, ["new"])
    assert e.value.filename == str(out)  # the error names the file
    with pytest.raises(OSError):
        with io_utils.atomic_dir(folder) as tmp:
            io_utils.atomic_write_text(Path(tmp, "config.json"), "new")
    monkeypatch.undo()
    assert json.loads(out.read_text()) == ["good"] and (folder / "config.json").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.json"]  # no temporary left


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
    with pytest.raises(ValueError, match="dialogue_model.pth: refused to load"):
        load_checkpoint(ckpt, device="cpu")
    assert not (tmp_path / "PWNED").exists()
