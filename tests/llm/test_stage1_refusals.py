"""Stage 1 refuses inputs that cannot be what the user meant, before any work: an existing export folder, a model
folder without tokenizer, prompts too long, empty splits, files of another split, short ids sidecars, prompt ids
unknown to the gold file; a full disk while collecting motivations is one error."""
import errno
import importlib.util
import json
from pathlib import Path

import pytest

from magic.common.errors import UserError
from tests.dialogues import make_dialogue

REPO = Path(__file__).resolve().parents[2]


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
