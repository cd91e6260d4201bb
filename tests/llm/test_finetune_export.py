"""LoRA SFT (src/magic/llm/sft.py) and merge/export: the released token rule, masking, truncation, gradient-accumulation
averaging, loss goes down, resume, merged == adapter, the released command lines."""
import json
import os

import pytest
import torch

from magic.llm.config import ExportConfig
from magic.llm.local_model import ENCODING_FILE, IGNORE_INDEX, EncodingRule, infer_max_len, infer_seqlen
from magic.llm.sft import (SFTCollator, SFTConfig, SFTDataError, encode_example, export_merged, load_adapter_model,
                           load_dataset_pairs, load_sft_pairs, run_sft)
from magic.testing.make_small_llm import make_tiny_llama

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


def _released_encoding(tok, instruction, output, cutoff_len):
    """The vendored LLaMA-Factory's `default` template, written out from its code (template.py, utils.py):
    both messages encoded without special tokens, EOS after the answer, cutoff split by infer_max_len."""
    source = tok.encode("Human: " + instruction + "\nAssistant: ", add_special_tokens=False)
    target = tok.encode(output, add_special_tokens=False) + [tok.eos_token_id]
    max_target = max(int(cutoff_len * (len(target) / (len(source) + len(target)))), 1)
    max_source = cutoff_len - max_target
    source, target = source[:max_source], target[:max_target]
    return source + target, [IGNORE_INDEX] * len(source) + target


def test_prompt_tokens_carry_no_loss(setup):
    _, _, _, tok = setup
    ex = encode_example(tok, PAIRS[0]["instruction"], PAIRS[0]["output"], cutoff_len=1024)
    source = tok("Human: " + PAIRS[0]["instruction"] + "\nAssistant: ", add_special_tokens=False)["input_ids"]
    target = tok(PAIRS[0]["output"], add_special_tokens=False)["input_ids"]
    n = len(source)
    assert source[0] != tok.bos_token_id  # released: no BOS
    assert ex["input_ids"] == source + target + [tok.eos_token_id]
    assert ex["labels"][:n] == [IGNORE_INDEX] * n  # exactly the prompt tokens are masked
    assert ex["labels"][n:] == target + [tok.eos_token_id]


def test_token_ids_follow_the_released_rule_and_the_flags_give_the_newer_one(setup):
    tok = setup[3]
    long_instruction = PAIRS[1]["instruction"] * 5
    short, long = (PAIRS[0]["instruction"], PAIRS[0]["output"], 1024), (long_instruction, PAIRS[1]["output"], 80)
    for instruction, output, cutoff in (short, long):
        ids, labels = _released_encoding(tok, instruction, output, cutoff)
        ex = encode_example(tok, instruction, output, cutoff)
        assert ex == {"input_ids": ids, "labels": labels}
        assert len(ids) <= cutoff and ids[0] != tok.bos_token_id
    # the long example: the released split cuts the answer too (answer share ~ its length), losing its EOS
    ex = encode_example(tok, *long)
    n_answer = sum(l != IGNORE_INDEX for l in ex["labels"])
    full = tok(PAIRS[1]["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(ex["input_ids"]) == 80 and 1 <= n_answer < len(full)
    assert ex["labels"][-n_answer:] == full[:n_answer]
    # --cutoff_rule infer_seqlen --add_bos: BOS first, and an answer shorter than half the cutoff kept whole
    newer = encode_example(tok, *long, rule=EncodingRule(add_bos=True, cutoff_rule="infer_seqlen"))
    assert newer["input_ids"][0] == tok.bos_token_id and len(newer["input_ids"]) == 80
    assert newer["labels"][-len(full):] == full
    short_bos = encode_example(tok, *short, rule=EncodingRule(add_bos=True))
    assert short_bos["input_ids"] == [tok.bos_token_id] + encode_example(tok, *short)["input_ids"]
    # the two splits, by hand: source 100 / target 10 / cutoff 64
    assert infer_max_len(100, 10, 64) == (59, 5)  # int(64 * 10 / 110) = 5 answer tokens
    assert infer_seqlen(100, 10, 64) == (54, 10)  # short target kept whole, source cut
    assert infer_seqlen(10, 100, 64) == (10, 54)  # short source kept whole, target cut
    assert infer_seqlen(60, 40, 64) == (39, 25)  # both long: cut in proportion
    assert infer_max_len(3, 1000, 64) == (1, 63) and infer_max_len(1000, 1, 64) == (63, 1)  # >= 1 answer token


def test_collator_pads_right_with_ignored_labels():
    feats = [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, {"input_ids": [1, 7], "labels": [-100, 7]}]
    batch = SFTCollator(pad_token_id=3, pad_to_multiple_of=None)(feats)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 3]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert SFTCollator(pad_token_id=3)(feats)["input_ids"].shape == (2, 8)  # LLaMA-Factory: multiple of 8


def test_dataset_name_resolves_through_dataset_info(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([{"q": "a", "extra": "b", "a": "c"}, {"q": "d", "a": "e"}]))
    info = {"mine": {"file_name": "p.json", "columns": {"prompt": "q", "query": "extra", "response": "a"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    assert load_dataset_pairs("mine", str(tmp_path)) == [("a\nb", "c"), ("d", "e")]  # query after a newline
    assert load_dataset_pairs("mine,mine", str(tmp_path), max_samples=1) == [("a\nb", "c")] * 2
    with pytest.raises(SFTDataError, match="no dataset named 'other'"):
        load_dataset_pairs("other", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset_info.json not found"):
        load_dataset_pairs("mine", str(tmp_path / "nowhere"))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(PAIRS))
    assert load_dataset_pairs(str(plain), "unused")[0] == (PAIRS[0]["instruction"], PAIRS[0]["output"])


def test_bad_dataset_names_file_and_entry(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps([PAIRS[0], {"instruction": "x"}]))
    with pytest.raises(SFTDataError, match=r"p\.json: entry 1"):
        load_sft_pairs(bad)


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
    with pytest.raises(ValueError, match="would mix two tokenisations"):
        run_sft(_cfg(model_dir, data, out, steps=8, add_bos=True))


def test_export_merges_and_reproduces_adapter_logits(setup, trained):
    d, model_dir, _, tok = setup
    out, _ = trained
    export_dir = str(d / "merged")
    export_merged(ExportConfig(model_name_or_path=model_dir, adapter_name_or_path=out, export_dir=export_dir))
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
        export_merged(ExportConfig(model_name_or_path=model_dir, adapter_name_or_path=model_dir,
                                   export_dir=str(d / "x")))


class _GradProbe:
    """Before the first optimizer step: the Trainer's gradients, and the two candidate rules computed by hand
    on the same (initial) weights from the two examples' losses."""

    def __init__(self, examples):
        from transformers import TrainerCallback
        self.examples, self.result = examples, {}
        probe = self

        class CB(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                if probe.result:
                    return
                params = [p for p in model.parameters() if p.requires_grad]
                probe.result["trainer"] = torch.cat([p.grad.flatten() for p in params]).clone()
                losses, counts = [], []
                for ex in probe.examples:
                    batch = SFTCollator(pad_token_id=0)([ex])
                    losses.append(model(**batch).loss)
                    counts.append(sum(l != IGNORE_INDEX for l in ex["labels"]))  # answer tokens (all after position 0)
                rules = {"micro_batch_mean": sum(losses) / len(losses),
                         "token_mean": sum(l * n for l, n in zip(losses, counts)) / sum(counts)}
                for name, loss in rules.items():
                    grads = torch.autograd.grad(loss, params, retain_graph=True)
                    probe.result[name] = torch.cat([g.flatten() for g in grads])

        self.callback = CB()


@pytest.mark.parametrize("rule", ["micro_batch_mean", "token_mean"])
def test_gradient_accumulation_averages_as_the_flag_says(setup, tmp_path, rule):
    d, model_dir, _, tok = setup
    # two micro-batches of one example each, answers of very different lengths
    pairs = [PAIRS[0], {"instruction": PAIRS[1]["instruction"], "output": "[greeting]"}]
    data = tmp_path / "two.json"
    data.write_text(json.dumps(pairs))
    examples = [encode_example(tok, p["instruction"], p["output"], 1024) for p in pairs]
    assert len({sum(l != IGNORE_INDEX for l in e["labels"]) for e in examples}) == 2
    probe = _GradProbe(examples)
    cfg = SFTConfig(model_name_or_path=model_dir, dataset=str(data), output_dir=str(tmp_path / "out"),
                    per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=1, max_grad_norm=0.0,
                    device="cpu", disable_tqdm=True, save_steps=100, grad_accum_loss=rule)
    run_sft(cfg, callbacks=[probe.callback])
    got, other = probe.result["trainer"], probe.result[
        {"micro_batch_mean": "token_mean", "token_mean": "micro_batch_mean"}[rule]]
    assert torch.allclose(got, probe.result[rule], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got, other, rtol=1e-2, atol=1e-6)  # the two rules really differ here


# The two command lines of the released README (LLM_inference step 2), flag for flag; only the script path
# and the model paths differ (a tiny Llama; the adapter is the run's own output/ instead of checkpoint-200/).
RELEASED_TRAIN = ("--stage sft --do_train --model_name_or_path {model} --dataset strategy_motivation "
                  "--template default --finetuning_type lora --lora_target q_proj,v_proj --output_dir output/ "
                  "--overwrite_cache --per_device_train_batch_size 16 --gradient_accumulation_steps 4 "
                  "--lr_scheduler_type cosine --logging_steps 10 --save_steps 100 --learning_rate 5e-5 "
                  "--num_train_epochs 5.0 --plot_loss --fp16")
RELEASED_EXPORT = ("--model_name_or_path {model} --adapter_name_or_path {adapter} --template default "
                   "--finetuning_type lora --export_dir fine_tuned_llama2/ --export_size 2 "
                   "--export_legacy_format False")


def test_released_command_lines_run_unchanged(setup, tmp_path, monkeypatch, capsys):
    import importlib.util
    d, model_dir, _, tok = setup

    def script(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join("LLM_inference", f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    finetune, export = script("finetune_llm"), script("export_model")
    # the released README's dataset_info.json entry, in the default --dataset_dir (LLM_inference/ here)
    registry = json.load(open(os.path.join("LLM_inference", "dataset_info.json")))
    assert registry["strategy_motivation"] == {"file_name": "prompts_4_LLaMA.json",
                                               "columns": {"prompt": "instruction", "response": "output"}}
    data_dir = tmp_path / "llm"
    data_dir.mkdir()
    (data_dir / "dataset_info.json").write_text(json.dumps(registry))
    (data_dir / "prompts_4_LLaMA.json").write_text(json.dumps(PAIRS * 4))
    monkeypatch.setattr(finetune, "HERE", str(data_dir))
    monkeypatch.chdir(tmp_path)
    assert finetune.main(RELEASED_TRAIN.format(model=model_dir).split()) == 0
    err = capsys.readouterr().err
    assert "--stage, --do_train, --overwrite_cache accepted for LLaMA-Factory compatibility and ignored" in err
    state = json.load(open(tmp_path / "output" / "trainer_state.json"))
    assert state["global_step"] == 5  # 8 pairs, batch 16 x 4 accumulation: one step per epoch, 5 epochs
    assert EncodingRule.load(tmp_path / "output") == EncodingRule()  # the released rule, saved
    assert export.main(RELEASED_EXPORT.format(model=model_dir, adapter="output/").split()) == 0
    merged = tmp_path / "fine_tuned_llama2"
    assert (merged / "model.safetensors").is_file() and (merged / ENCODING_FILE).is_file()
    with pytest.raises(SystemExit):
        export.parse_args(RELEASED_EXPORT.format(model=model_dir, adapter="output/").replace(
            "--export_legacy_format False", "--export_legacy_format True").split())


def test_encoding_rule_travels_from_checkpoint_to_inference(setup, tmp_path):
    """--add_bos at fine-tuning: every checkpoint and the merged model carry the rule, and generation's
    prompt ids equal the ids training saw (the training example's source part)."""
    from magic.llm.local_model import format_prompt, load_causal_lm, tokenize_prompts
    d, model_dir, data, tok = setup
    out = str(tmp_path / "lora")
    run_sft(_cfg(model_dir, data, out, steps=4, add_bos=True, cutoff_rule="infer_seqlen"))
    want = EncodingRule(add_bos=True, cutoff_rule="infer_seqlen")
    assert EncodingRule.load(os.path.join(out, "checkpoint-4")) == want
    export_merged(ExportConfig(model_name_or_path=model_dir, adapter_name_or_path=os.path.join(out, "checkpoint-4"),
                               export_dir=str(tmp_path / "merged")))
    _, tok_inf = load_causal_lm(str(tmp_path / "merged"), device="cpu")
    ins, output = PAIRS[1]["instruction"], PAIRS[1]["output"]
    prompt_ids = tokenize_prompts(tok_inf, [format_prompt(tok_inf, ins, "default")])[0]
    ex = encode_example(tok, ins, output, 1024, want)
    n_source = ex["labels"].index(next(l for l in ex["labels"] if l != IGNORE_INDEX))
    assert prompt_ids == ex["input_ids"][:n_source] and prompt_ids[0] == tok.bos_token_id


@pytest.mark.parametrize("rule,scale", [("micro_batch_mean", 0.5), ("token_mean", 1.0)])
def test_an_epochs_last_shorter_accumulation_is_scaled_as_the_flag_says(setup, tmp_path, rule, scale):
    """3 micro-batches, accumulation 2: the second step has one micro-batch. transformers 4.38 (released)
    still divided its loss by 2; transformers 5 divides by 1."""
    from transformers import TrainerCallback
    d, model_dir, _, tok = setup
    pairs = [PAIRS[0], PAIRS[1], {"instruction": "(1) Seeker: hi", "output": "[greeting] to open"}]
    data = tmp_path / "three.json"
    data.write_text(json.dumps(pairs))
    examples = [encode_example(tok, p["instruction"], p["output"], 1024) for p in pairs]
    seen = []

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            params = [p for p in model.parameters() if p.requires_grad]
            got = torch.cat([p.grad.flatten() for p in params]).clone()
            each = [torch.cat([g.flatten() for g in torch.autograd.grad(
                model(**SFTCollator(pad_token_id=0)([ex])).loss, params)]) for ex in examples]
            seen.append((got, each))

    cfg = SFTConfig(model_name_or_path=model_dir, dataset=str(data), output_dir=str(tmp_path / "out"),
                    per_device_train_batch_size=1, gradient_accumulation_steps=2, num_train_epochs=1.0,
                    max_grad_norm=0.0, device="cpu", disable_tqdm=True, save_steps=100, grad_accum_loss=rule)
    run_sft(cfg, callbacks=[Probe()])
    assert len(seen) == 2
    got, each = seen[1]  # the last step: one micro-batch, one of the three examples
    matches = [i for i, g in enumerate(each) if torch.allclose(got, scale * g, rtol=1e-4, atol=1e-7)]
    other = [i for i, g in enumerate(each) if torch.allclose(got, (1.5 - scale) * g, rtol=1e-2, atol=1e-6)]
    assert len(matches) == 1 and not other
