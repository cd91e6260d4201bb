"""Stage 1 refuses inputs that cannot be what the user meant, before any work: an existing export folder, a model
folder without tokenizer, prompts too long, empty splits, files of another split, short ids sidecars, prompt ids
unknown to the gold file; a full disk while collecting motivations is one error."""
import errno
import json
from pathlib import Path

import pytest

from magic.common.errors import UserError
from tests.dialogues import make_dialogue
from tests.scripts import load_script as _script

REPO = Path(__file__).resolve().parents[2]


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


def test_export_model_refuses_an_existing_folder_before_loading_anything(tmp_path, capsys):
    export = _script("LLM_inference/export_model.py")
    d = tmp_path / "LLM_inference"
    d.mkdir()
    (d / "prompts_4_LLaMA.json").write_text("[]")
    rc = export.main(["--model_name_or_path", str(tmp_path / "no-base"), "--adapter_name_or_path",
                      str(tmp_path / "no-adapter"), "--export_dir", str(d)])
    assert rc == 1 and "refusing to replace" in capsys.readouterr().err
    assert (d / "prompts_4_LLaMA.json").read_text() == "[]"


def test_local_llm_refuses_a_folder_without_tokenizer(tmp_path):
    from magic.llm.local_model import load_causal_lm
    from magic.testing.make_small_llm import make_tiny_llama

    folder = Path(make_tiny_llama(tmp_path))
    for p in folder.iterdir():
        if p.name.startswith(("tokenizer", "special_tokens")):
            p.unlink()
    with pytest.raises(UserError, match="no tokenizer files"):
        load_causal_lm(folder, device="cpu")


def test_strategy_inference_bounds_prompt_length_and_counts_it(tmp_path):
    from magic.llm.engines.hf import generate_batch
    from magic.llm.local_model import load_causal_lm
    from magic.testing.make_small_llm import make_tiny_llama

    model, tok = load_causal_lm(make_tiny_llama(tmp_path), device="cpu")
    model.config.max_position_embeddings = 40
    stats = {}
    long_text = "I feel so alone and tired . " * 60
    out = generate_batch(model, tok, [long_text, "hello there"], max_new_tokens=4, stats=stats)
    assert len(out) == 2
    assert stats["truncated_prompts"] == 1 and stats["truncated_tokens"] > 0
    assert stats["prompt_tokens"] <= 2 * 36


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


def test_short_or_empty_ids_sidecar_is_refused(esconv_files, tmp_path):
    from magic.llm.config import PromptConfig
    from magic.llm.prompt_files import build_prompt_files

    motivations, ids = _motivations(esconv_files, tmp_path)
    sidecar = tmp_path / "motivations_4_LLaMA.ids.json"
    for bad in ([], ids[:-1]):
        sidecar.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="ids.json: .* ids, but"):
            build_prompt_files(PromptConfig(**{f"{s}_file": str(esconv_files[s]) for s in ("train", "valid", "test")},
                                            motivations_file=str(motivations)))


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


# ---- LoRA checkpoints, adapters and base models are checked before transformers reads them
# (magic.llm.sft.check_lora_files, magic.llm.local_model.causal_lm_from_pretrained), and a step never writes into
# its own input (magic.common.io_utils.check_not_an_input)
SFT_PAIRS = [{"instruction": "(1) Seeker: I feel sad.\nMotivation:", "output": "To learn more [question]."},
             {"instruction": "(1) Seeker: hello\nMotivation:", "output": "To greet back [greeting]."}]


def _sft_cfg(base, data, out, steps, **kw):
    from magic.llm.sft import SFTConfig

    return SFTConfig(model_name_or_path=str(base), dataset=str(data), output_dir=str(out), per_device_train_batch_size=4,
                     gradient_accumulation_steps=1, max_steps=steps, learning_rate=1e-2, logging_steps=1,
                     save_steps=2, lr_scheduler_type="constant", device="cpu", disable_tqdm=True, max_samples=4, **kw)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny base model and a 4-step LoRA run with checkpoint-2 and checkpoint-4."""
    from magic.llm.sft import run_sft
    from magic.testing.make_small_llm import make_tiny_llama

    d = tmp_path_factory.mktemp("lora")
    base = Path(make_tiny_llama(d))
    data = d / "prompts.json"
    data.write_text(json.dumps(SFT_PAIRS * 2))
    run_sft(_sft_cfg(base, data, d / "run", 4))
    return base, data, d / "run"


def _copy_run(lora_run, tmp_path):
    import shutil

    base, data, run = lora_run
    shutil.copytree(run, tmp_path / "run")
    return base, data, tmp_path / "run"


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_adapter_in_the_newest_checkpoint_resumes_from_the_previous_one_and_says_so(lora_run, tmp_path):
    from magic.llm.sft import run_sft

    base, data, run = _copy_run(lora_run, tmp_path)
    _truncate(run / "checkpoint-4" / "adapter_model.safetensors")
    with pytest.warns(UserWarning, match=r"resuming from .*checkpoint-2, not from a newer checkpoint .*"
                                         r"checkpoint-4/adapter_model.safetensors: not a readable safetensors"):
        summary = run_sft(_sft_cfg(base, data, run, 6))
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 6


@pytest.mark.parametrize("damage,message", [
    ("truncate_state", r"checkpoint-4/trainer_state.json:\d+: not valid JSON"),
    ("truncate_optimizer", r"checkpoint-4/optimizer.pt: not a readable torch file"),
    ("evil_rng", r"checkpoint-4/rng_state.pth: not a safe checkpoint .*nothing in it was run"),
    ("truncate_adapter", r"checkpoint-4/adapter_model.safetensors: not a readable safetensors file"),
])
def test_a_broken_checkpoint_given_to_resume_from_is_one_line_naming_the_file(lora_run, tmp_path, damage, message,
                                                                              monkeypatch):
    import torch

    from magic.llm.sft import run_sft

    base, data, run = _copy_run(lora_run, tmp_path)
    ck = run / "checkpoint-4"
    if damage == "evil_rng":
        monkeypatch.chdir(tmp_path)
        torch.save({"x": _Evil()}, ck / "rng_state.pth")
    else:
        _truncate(ck / {"truncate_state": "trainer_state.json", "truncate_optimizer": "optimizer.pt",
                        "truncate_adapter": "adapter_model.safetensors"}[damage])
    with pytest.raises(UserError, match=message):
        run_sft(_sft_cfg(base, data, run, 6, resume_from_checkpoint=str(ck)))
    assert not (tmp_path / "PWNED").exists()
    for name in ("checkpoint-2", "checkpoint-4"):  # no checkpoint usable: refused, naming what is broken
        f = run / name / "trainer_state.json"
        f.write_text(f.read_text()[:20])
    with pytest.raises(UserError, match=r"no usable checkpoint to resume from .*checkpoint-2/trainer_state.json:\d+: not valid JSON"):
        run_sft(_sft_cfg(base, data, run, 6))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_export_with_a_truncated_adapter_is_one_line_naming_it(lora_run, tmp_path, capsys):
    export = _script("LLM_inference/export_model.py")
    base, _, run = _copy_run(lora_run, tmp_path)
    _truncate(run / "adapter_model.safetensors")
    rc = export.main(["--model_name_or_path", str(base), "--adapter_name_or_path", str(run),
                      "--export_dir", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and f"{run}/adapter_model.safetensors: not a readable safetensors" in err
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("change", [{"intermediate_size": 2}, {"num_hidden_layers": 2}])
def test_a_base_folder_whose_config_does_not_match_its_weights_is_refused_in_fine_tuning_and_export(
        lora_run, tmp_path, change, capsys):
    import shutil

    from magic.llm.sft import run_sft

    base, data, run = lora_run
    mixed = tmp_path / "mixed"
    shutil.copytree(base, mixed)
    config = json.loads((mixed / "config.json").read_text())
    for k, factor in change.items():
        config[k] *= factor
    (mixed / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=rf"--model_name_or_path {mixed}: config.json does not match the weights"):
        run_sft(_sft_cfg(mixed, data, tmp_path / "out", 2))
    export = _script("LLM_inference/export_model.py")
    rc = export.main(["--model_name_or_path", str(mixed), "--adapter_name_or_path", str(run),
                      "--export_dir", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "config.json does not match the weights" in err


def test_export_never_writes_into_its_own_input(lora_run, tmp_path, capsys):
    import os
    import shutil

    export = _script("LLM_inference/export_model.py")
    base, _, run = lora_run
    mine = tmp_path / "base"
    shutil.copytree(base, mine)
    before = sorted(os.listdir(mine))
    for export_dir, flag in ((mine, "--model_name_or_path"), (str(mine) + "/", "--model_name_or_path"),
                             (run, "--adapter_name_or_path")):
        rc = export.main(["--model_name_or_path", str(mine), "--adapter_name_or_path", str(run),
                          "--export_dir", str(export_dir), "--overwrite_output_dir"])
        err = capsys.readouterr().err
        assert rc == 1 and "an input of this step" in err and flag in err, err
    link = tmp_path / "link"
    link.symlink_to(mine)  # the same folder by another name
    assert export.main(["--model_name_or_path", str(mine), "--adapter_name_or_path", str(run),
                        "--export_dir", str(link)]) == 1
    assert "is --model_name_or_path" in capsys.readouterr().err
    assert sorted(os.listdir(mine)) == before


def test_a_model_folder_without_the_marker_is_not_taken_for_an_export(lora_run, tmp_path, capsys):
    """A base model folder (config.json, weights, tokenizer) was taken for an export written before the marker."""
    import shutil

    export = _script("LLM_inference/export_model.py")
    base, _, run = lora_run
    other = tmp_path / "other_base"
    shutil.copytree(base, other)
    (other / ".magic_output").unlink()  # as downloaded: no marker
    rc = export.main(["--model_name_or_path", str(base), "--adapter_name_or_path", str(run),
                      "--export_dir", str(other)])
    assert rc == 1 and "refusing to replace" in capsys.readouterr().err
    assert not (other / ".magic_output").exists()
