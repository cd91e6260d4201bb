"""LoRA SFT (src/sft.py) and merge/export: masking, truncation, loss goes down, resume, merged == adapter."""
import json
import os

import pytest
import torch

from src.sft import (IGNORE_INDEX, SFTCollator, SFTConfig, SFTDataError, encode_example, export_merged,
                     infer_seqlen, load_adapter_model, load_sft_pairs, run_sft)
from src.make_small_llm import make_tiny_llama

PAIRS = [
    {"instruction": "(1) Seeker: I feel so sad and lonely since I lost my job.\nMotivation:",
     "output": "The motivation of the supporter in choosing the strategy [question] is to learn more."},
    {"instruction": "(1) Seeker: hello\n(2) Supporter: hi [Greeting]\n(3) Seeker: I am sad.\nMotivation:",
     "output": "The motivation of the supporter in choosing the strategy [reflection of feelings] is to validate emotions."},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("sft")
    model_dir = make_tiny_llama(d)
    data = d / "prompts_4_LLaMA.json"
    data.write_text(json.dumps(PAIRS * 4))
    from transformers import AutoTokenizer
    return d, model_dir, str(data), AutoTokenizer.from_pretrained(model_dir)


def test_prompt_tokens_carry_no_loss(setup):
    _, _, _, tok = setup
    ex = encode_example(tok, PAIRS[0]["instruction"], PAIRS[0]["output"], cutoff_len=1024)
    source = tok("Human: " + PAIRS[0]["instruction"] + "\nAssistant: ")["input_ids"]
    target = tok(PAIRS[0]["output"], add_special_tokens=False)["input_ids"]
    n = len(source)
    assert source[0] == tok.bos_token_id  # BOS as the tokenizer adds it
    assert ex["input_ids"] == source + target + [tok.eos_token_id]
    assert ex["labels"][:n] == [IGNORE_INDEX] * n  # exactly the prompt tokens are masked
    assert ex["labels"][n:] == target + [tok.eos_token_id]


def test_cutoff_follows_llama_factory_rule(setup):
    tok = setup[3]
    assert infer_seqlen(100, 10, 64) == (54, 10)  # short target kept whole, source cut
    assert infer_seqlen(10, 100, 64) == (10, 54)  # short source kept whole, target cut
    assert infer_seqlen(60, 40, 64) == (39, 25)  # both long: cut in proportion
    ex = encode_example(tok, PAIRS[1]["instruction"] * 5, PAIRS[1]["output"], cutoff_len=40)
    assert len(ex["input_ids"]) == 40 and len(ex["labels"]) == 40
    assert ex["input_ids"][0] == tok.bos_token_id  # the source keeps its beginning
    n_answer = sum(l != IGNORE_INDEX for l in ex["labels"])
    full = tok(PAIRS[1]["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex["labels"][-n_answer:] == full[:n_answer]


def test_collator_pads_right_with_ignored_labels():
    batch = SFTCollator(pad_token_id=3)([{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]},
                                         {"input_ids": [1, 7], "labels": [-100, 7]}])
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 3]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_bad_dataset_names_file_and_entry(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps([PAIRS[0], {"instruction": "x"}]))
    with pytest.raises(SFTDataError, match=r"p\.json: entry 1"):
        load_sft_pairs(bad)


def test_fp16_on_cpu_is_a_clear_error(setup):
    d, model_dir, data, _ = setup
    cfg = SFTConfig(model_name_or_path=model_dir, dataset=data, output_dir=str(d / "fp16"), fp16=True,
                    device="cpu")
    with pytest.raises(ValueError, match="--fp16 needs a CUDA GPU"):
        run_sft(cfg)


def _cfg(model_dir, data, out, steps, **kw):
    return SFTConfig(model_name_or_path=model_dir, dataset=data, output_dir=out, per_device_train_batch_size=4,
                     gradient_accumulation_steps=1, max_steps=steps, learning_rate=2e-2, logging_steps=1,
                     save_steps=4, lr_scheduler_type="constant", device="cpu", disable_tqdm=True,
                     max_samples=4, **kw)


@pytest.fixture(scope="module")
def trained(setup):
    d, model_dir, data, _ = setup
    out = str(d / "lora")
    summary = run_sft(_cfg(model_dir, data, out, steps=8, plot_loss=True))
    return out, summary


def test_finetuning_lowers_loss_and_saves_adapter(trained):
    out, summary = trained
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.05, losses  # 4 examples = one repeated batch
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_loss.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert json.load(open(os.path.join(out, "adapter_config.json")))["r"] == 8
    assert summary["resumed_from"] is None


def test_rerun_resumes_from_last_checkpoint(setup, trained):
    d, model_dir, data, _ = setup
    out = str(d / "lora-resume")
    run_sft(_cfg(model_dir, data, out, steps=4))
    summary = run_sft(_cfg(model_dir, data, out, steps=6))
    assert summary["resumed_from"].endswith("checkpoint-4")
    assert summary["global_step"] == 6
    logged = [h["step"] for h in summary["log_history"] if "loss" in h]
    assert logged[-2:] == [5, 6]


def test_export_merges_and_reproduces_adapter_logits(setup, trained):
    d, model_dir, _, tok = setup
    out, _ = trained
    export_dir = str(d / "merged")
    export_merged(model_dir, out, export_dir, export_size=1)
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert os.path.isfile(os.path.join(export_dir, "model.safetensors"))
    adapter = load_adapter_model(model_dir, out)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(["Human: (1) Seeker: I feel sad.\nAssistant: The motivation"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, m, b = adapter(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(a, m, atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3)  # the adapter changed something, so the check means something
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        export_merged(model_dir, model_dir, str(d / "x"))
