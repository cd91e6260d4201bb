"""--dtype int8 (src/magic/llm/local_model.py quantize_int8): generation with int8 linear layers and its own cache
entries (it changes SmolLM2's answers, benchmarks/README.md: opt-in only, the demo does not use it)."""
import pytest
import torch
from torch import nn

from magic.llm.engines.base import Generation
from magic.llm.engines.hf import HFEngine, generate_batch
from magic.llm.local_model import format_prompt, load_causal_lm
from magic.testing.make_small_llm import make_tiny_llama


def test_int8_quantises_every_linear_layer_and_generates(tmp_path):
    path = make_tiny_llama(tmp_path)
    f32, tok = load_causal_lm(path, device="cpu", dtype="float32")
    q8, _ = load_causal_lm(path, device="cpu", dtype="int8")
    float_linear = [m for m in q8.modules() if type(m) is nn.Linear]
    quantised = [m for m in q8.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert not float_linear and len(quantised) == sum(type(m) is nn.Linear for m in f32.modules())
    texts = [format_prompt(tok, p, "default") for p in ("I feel sad", "My exams went badly and I cannot sleep")]
    a, b = generate_batch(f32, tok, texts, 6), generate_batch(q8, tok, texts, 6)
    assert len(b) == 2 and all(isinstance(x, str) for x in b)
    assert generate_batch(q8, tok, texts, 6) == b  # deterministic
    with pytest.raises(ValueError, match="CPU only"):
        load_causal_lm(path, device="meta", dtype="int8")
    del a


def test_int8_answers_are_cached_apart_from_float_ones():
    g = Generation(template="default", max_new_tokens=8)
    f32 = HFEngine("m", g, batch_size=1, dtype="float32")
    q8 = HFEngine("m", g, batch_size=1, dtype="int8")
    assert f32.key("p") != q8.key("p") and f32.key("p") == HFEngine("m", g, batch_size=1).key("p")

