"""Faster LoRA steps (src/magic/llm/frozen_layers.py): logits on answer positions only, and the frozen layers
below the lowest LoRA layer run once per example. Both must give the full forward's loss and gradients."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from magic.llm.local_model import IGNORE_INDEX
from magic.llm.frozen_layers import FrozenLayerCache, answer_only_inputs, build_cache, split_layer
from magic.llm.sft import SFTCollator, SFTConfig, encode_example, run_sft
from magic.testing.make_small_llm import make_tiny_llama

INSTRUCTION = "Infer the strategy of the last turn with a motivation.\n"
PAIRS = [  # a shared instruction, and dialogues that extend each other (as the strategy prompts do)
    {"instruction": INSTRUCTION + "(1) Seeker: I feel so sad.\nMotivation:", "output": "[Question] to learn more."},
    {"instruction": INSTRUCTION + "(1) Seeker: I feel so sad.\n(2) Supporter: why? [Question]\n(3) Seeker: my job."
                                  "\nMotivation:", "output": "[Reflection of feelings] to validate."},
    {"instruction": INSTRUCTION + "(1) Seeker: hello\nMotivation:", "output": "[Greeting] to open the talk."},
    {"instruction": INSTRUCTION + "(1) Seeker: hello\nMotivation:", "output": "[Greeting] to open the talk."},
    {"instruction": "A different start.\n(1) Seeker: I lost my job.\nMotivation:", "output": "[Others] to go on."},
]
TOP = "layers.2.self_attn.q_proj,layers.2.self_attn.v_proj,layers.3.self_attn.q_proj,layers.3.mlp.down_proj"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("frozen")
    model_dir = make_tiny_llama(d, num_layers=4, kv_heads=2)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = [encode_example(tok, p["instruction"], p["output"], 1024) for p in PAIRS]
    return d, model_dir, examples


def _lora(model_dir, target=TOP, dropout=0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=target.split(",")))
    for name, p in model.named_parameters():  # B = 0 at init: make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    return model


def _loss_and_grads(model, batch, params):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in params}


def _trainable(model):  # named before top_only renumbers the layers
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _close(a, b, tol=1e-5):
    return all(torch.allclose(a[k], b[k], rtol=tol, atol=1e-7) for k in a)


def test_answer_only_logits_give_the_full_loss_and_gradients(tiny):
    _, model_dir, examples = tiny
    model = _lora(model_dir, "q_proj,v_proj")
    batch = SFTCollator(pad_token_id=0)(examples[:3])  # right-padded, answers of different lengths
    slim = answer_only_inputs(model, batch)
    n_targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert int(slim["logits_to_keep"].sum()) == n_targets == slim["shift_labels"].numel()
    full_loss, full_grads = _loss_and_grads(model, batch, _trainable(model))
    loss, grads = _loss_and_grads(model, slim, _trainable(model))
    assert model(**slim).logits.shape[-2] == n_targets  # only the answer positions were projected
    assert torch.allclose(loss, full_loss, rtol=1e-6) and _close(grads, full_grads)


def test_cached_frozen_layers_give_the_full_loss_and_gradients(tiny):
    _, model_dir, examples = tiny
    model = _lora(model_dir)
    assert split_layer(model) == 2
    cache = FrozenLayerCache.build(model, [e["input_ids"] for e in examples], 2, progress=False)
    # the shared instruction and the extended dialogue ran once; the repeated example not at all
    total = sum(len(e["input_ids"]) for e in examples)
    assert cache.computed_tokens < total - len(examples[3]["input_ids"]) - 10
    # each cached state is what layer 2 of the full model receives
    with torch.no_grad():
        for i, e in enumerate(examples):
            hidden = model(input_ids=torch.tensor([e["input_ids"]]), output_hidden_states=True).hidden_states[2]
            assert torch.allclose(cache.states[i], hidden[0], atol=1e-5), i
    for rows in ([1, 4], [3, 0, 2]):
        batch = SFTCollator(pad_token_id=0)([{**examples[i], "example_index": i} for i in rows])
        index = batch.pop("example_index")
        params = _trainable(model)
        full_loss, full_grads = _loss_and_grads(model, answer_only_inputs(model, batch), params)
        with cache.top_only():
            loss, grads = _loss_and_grads(model, cache.inputs(index, answer_only_inputs(model, batch)), params)
        assert torch.allclose(loss, full_loss, rtol=1e-5) and _close(grads, full_grads), rows
    # the decoder has all its layers back
    assert len(model.get_base_model().get_decoder().layers) == 4


def test_a_shared_prefix_runs_once_with_the_batch_loss_and_gradients(tiny):
    _, model_dir, examples = tiny
    model = _lora(model_dir)
    cache = FrozenLayerCache.build(model, [e["input_ids"] for e in examples], 2, progress=False)
    params = _trainable(model)
    shared = 0
    for rows in ([0, 1, 2], [0, 1], [2, 3], [1, 4], [4]):
        batch = SFTCollator(pad_token_id=0)([{**examples[i], "example_index": i} for i in rows])
        index = batch.pop("example_index")
        with cache.top_only():
            padded = cache.inputs(index, answer_only_inputs(model, batch))
            loss, grads = _loss_and_grads(model, padded, params)
            step = cache.shared_prefix_inputs(padded, batch["input_ids"], min_len=4)
            prefix = padded["inputs_embeds"].shape[1] - step["inputs_embeds"].shape[1]
            ids = [examples[i]["input_ids"] for i in rows]
            # the prefix all rows share, never reaching a position whose logits are needed
            assert all(x[:prefix] == ids[0][:prefix] for x in ids)
            assert not padded["logits_to_keep"][:, :prefix].any()
            shared_loss, shared_grads = _loss_and_grads(model, step, params)
        assert torch.allclose(shared_loss, loss, rtol=1e-5) and _close(grads, shared_grads, tol=1e-4), rows
        shared += prefix
        if rows == [4]:  # one row: the batch as it was
            assert prefix == 0
        elif rows == [1, 4]:  # different instructions: only the template's "Human: " is shared
            assert 0 < prefix < len(INSTRUCTION) // 4
        else:
            assert prefix >= len(INSTRUCTION) // 4  # at least the instruction's tokens (a char-level BPE)
    assert shared > 0


def test_the_cache_is_off_where_it_would_not_be_exact(tiny):
    _, model_dir, examples = tiny
    why = []
    assert build_cache(_lora(model_dir, "q_proj,v_proj"), examples, why_not=why) is None  # LoRA in layer 0
    assert split_layer(_lora(model_dir, TOP + ",embed_tokens")) is None  # an embedding adapter: every input moves
    model = _lora(model_dir)
    assert build_cache(model, examples, mode="off", why_not=why) is None
    assert build_cache(model, examples, world_size=2, why_not=why) is None
    assert build_cache(model, examples, max_bytes=1000, why_not=why) is None
    assert "GiB" in why[-1] and len(why) == 4
    model.get_base_model().get_decoder().layers[0].self_attn.dropout = torch.nn.Dropout(0.1)
    assert split_layer(model) is None
    # a cache that would not reproduce the full forward is refused by the probe
    model = _lora(model_dir)
    assert build_cache(model, examples, loss_of=lambda b: model(**b).loss) is not None
    assert build_cache(model, examples, why_not=why, loss_of=lambda b: model(**b).loss + (
        1.0 if "inputs_embeds" in b else 0.0)) is None and "differs" in why[-1]


def test_training_with_the_cache_ends_with_the_same_adapter(tiny, capsys):
    d, model_dir, _ = tiny
    data = d / "pairs.json"
    data.write_text(json.dumps(PAIRS))
    weights = {}
    for mode in ("auto", "off"):
        out = d / f"lora-{mode}"
        cfg = SFTConfig(model_name_or_path=model_dir, dataset=str(data), output_dir=str(out), lora_target=TOP,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=6,
                        learning_rate=2e-2, lr_scheduler_type="constant", device="cpu", disable_tqdm=True,
                        save_steps=100, frozen_layer_cache=mode)
        summary = run_sft(cfg)
        assert (summary["frozen_layer_cache"] or {}).get("layers_cached") == (2 if mode == "auto" else None)
        from safetensors.torch import load_file
        weights[mode] = load_file(str(out / "adapter_model.safetensors"))
    printed = capsys.readouterr().out
    assert "frozen-layer cache: layers 0-1 run once per example" in printed
    assert "frozen-layer cache: off (--frozen_layer_cache off)" in printed
    # the adapters moved (B starts at 0), and moved the same way
    assert any((w != 0).any() for k, w in weights["auto"].items() if "lora_B" in k)
    assert _close(weights["auto"], weights["off"], tol=1e-4)


def test_the_lora_benchmark_runs_its_three_ways_on_a_tiny_model(tmp_path):
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lora.py"
    out = tmp_path / "lora.json"
    r = subprocess.run([sys.executable, str(bench), "--model_path", "tiny", "--lora_layers", "2", "--n_pairs", "6",
                        "--steps", "3", "--precision", "fp32", "--threads", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"full", "answer", "cached"} and rows["cached"]["build_s"] > 0
    # the same training up to float rounding, whichever way the loss was computed
    assert abs(rows["cached"]["train_loss"] - rows["full"]["train_loss"]) < 1e-4 * max(1.0, rows["full"]["train_loss"])
    assert "x full" in r.stdout
