"""src/magic/llm/engines/hf.py and local_model.py: templates, left-padded batched generation equal to one-at-a-time, EOS stop, prefix sharing."""
import pytest
import torch

from magic.llm.engines.hf import generate_batch, supports_prefix_sharing
from magic.llm.local_model import format_prompt, load_causal_lm, pad_left, prepare_tokenizer, tokenize_prompts
from magic.testing.make_small_llm import make_tiny_llama


def encode_prompts(tok, texts):
    """input_ids / attention_mask (B, T) of templated prompts, as generate_batch pads them."""
    return pad_left(tok, tokenize_prompts(tok, texts))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_llama(tmp_path_factory.mktemp("llm"))
    model, tok = load_causal_lm(path, device="cpu")
    return path, model, tok


def test_load_sets_left_padding_eval_and_pad(tiny):
    _, model, tok = tiny
    assert tok.padding_side == "left"
    assert tok.pad_token is not None
    assert not model.training


def test_prepare_tokenizer_uses_eos_when_no_pad(tiny):
    path = tiny[0]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    prepare_tokenizer(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"


def test_format_prompt_templates(tiny):
    tok = tiny[2]
    assert format_prompt(tok, "Hi there", "default") == "Human: Hi there\nAssistant: "
    assert format_prompt(tok, "Hi there", "none") == "Hi there"
    chat = format_prompt(tok, "Hi there", "chat")
    assert "Hi there" in chat and chat.endswith("assistant: ")
    tok_nochat = type(tok).from_pretrained(tiny[0])
    tok_nochat.chat_template = None
    assert format_prompt(tok_nochat, "Hi", "chat") == "Human: Hi\nAssistant: "
    with pytest.raises(ValueError, match="unknown template"):
        format_prompt(tok, "Hi", "llama2")


def test_encode_left_pads_with_the_models_bos_rule(tiny, tmp_path):
    path, _, tok = tiny
    texts = ["Human: a\nAssistant: ", "<s>user: a much longer text\nassistant: "]
    # a folder without magic_encoding.json gets the released rule: no BOS is added
    batch = encode_prompts(tok, texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # short one padded on the left
    rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    assert rows[0][0] != tok.bos_token_id  # released: no BOS
    assert rows[1][0] == tok.bos_token_id and rows[1][1] != tok.bos_token_id  # written in the text: kept
    # --add_bos at fine-tuning: BOS once, never twice
    for row in tokenize_prompts(tok, texts, add_bos=True):
        assert row[0] == tok.bos_token_id and row[1] != tok.bos_token_id
    # the rule saved in a model folder is read back by load_causal_lm
    import shutil
    from magic.llm.local_model import EncodingRule
    other = tmp_path / "with-bos"
    shutil.copytree(path, other)
    EncodingRule(add_bos=True).save(other)
    _, tok_bos = load_causal_lm(other, device="cpu")
    assert tokenize_prompts(tok_bos, texts[:1])[0][0] == tok.bos_token_id


def test_batched_generation_equals_one_at_a_time(tiny):
    _, model, tok = tiny
    texts = [format_prompt(tok, p, "default") for p in
             ["short", "a somewhat longer prompt about feelings", "(1) Seeker: I feel so sad and lonely."]]
    batched = generate_batch(model, tok, texts, max_new_tokens=6)
    single = [generate_batch(model, tok, [t], max_new_tokens=6)[0] for t in texts]
    assert batched == single
    assert all(isinstance(s, str) and s for s in batched)


def test_generation_bounded_and_stops_at_eos(tiny):
    _, model, tok = tiny
    text = format_prompt(tok, "hello", "default")
    batch = encode_prompts(tok, [text])
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    new = out[0, batch["input_ids"].shape[1]:].tolist()
    assert len(new) <= 4
    first = new[0]
    full = generate_batch(model, tok, [text], max_new_tokens=4)[0]
    # make the first greedy token the EOS: generation must stop right after it
    tok2 = type(tok).from_pretrained(tiny[0])
    prepare_tokenizer(tok2)
    tok2.eos_token = tok2.convert_ids_to_tokens(first)
    assert tok2.eos_token_id == first
    stopped = generate_batch(model, tok2, [text], max_new_tokens=4)[0]
    assert stopped == tok.decode([first]).strip() and len(stopped) < len(full)
    assert generate_batch(model, tok, [], max_new_tokens=4) == []
    with pytest.raises(ValueError):
        generate_batch(model, tok, [text], max_new_tokens=0)


# --- prefix sharing: each prompt of a batch runs only the tokens it does not share with an earlier one ---

_INSTRUCTION = ("Please infer the strategy of the supporter. The motivation of the supporter in choosing the "
                "strategy [question] is to learn more. The dialogue clip is:\n")
_TURNS = ["(1) Seeker: I feel so sad and lonely since I lost my job.\n",
          "(2) Supporter: I am sorry to hear that. [Question]\n",
          "(3) Seeker: I do not know what to do now.\n"]


def _dialogue_prompts(tok):
    """Prompts as infer_strategy sees them: a shared instruction, then a growing dialogue clip (each a
    prefix-extension of the one before), plus an unrelated short prompt and an exact duplicate."""
    clips = ["".join(_TURNS[:k]) for k in (1, 2, 3)]
    texts = [format_prompt(tok, _INSTRUCTION + c + "Motivation:", "default") for c in clips]
    return texts + [format_prompt(tok, "hello", "default"), texts[1]]


@pytest.fixture(scope="module")
def tiny_gqa(tmp_path_factory):
    """Grouped-query attention (2 key/value heads for 4 query heads), as SmolLM2 and Llama-3 have."""
    path = make_tiny_llama(tmp_path_factory.mktemp("llm_gqa"), kv_heads=2, seed=1)
    return load_causal_lm(path, device="cpu")


@pytest.mark.parametrize("which", ["tiny", "tiny_gqa"])
def test_shared_prefill_gives_the_answers_of_plain_generation(which, request):
    fixture = request.getfixturevalue(which)
    model, tok = fixture[-2:]
    assert supports_prefix_sharing(model)
    texts = _dialogue_prompts(tok)
    shared = generate_batch(model, tok, texts, max_new_tokens=8)
    padded = generate_batch(model, tok, texts, max_new_tokens=8, share_prefix=False)
    single = [generate_batch(model, tok, [t], max_new_tokens=8, share_prefix=False)[0] for t in texts]
    assert shared == padded == single
    assert shared[4] == shared[1]  # the duplicate, answered from the other copy's keys/values


def test_shared_prefill_runs_only_new_tokens(tiny):
    _, model, tok = tiny
    texts = _dialogue_prompts(tok)
    ids = tokenize_prompts(tok, texts)
    stats = {}
    generate_batch(model, tok, texts, max_new_tokens=2, stats=stats)
    assert stats["prompt_tokens"] == sum(len(x) for x in ids)
    # shortest first; each runs what it does not share with an earlier prompt (its last token is run by
    # generate). Worked out from the token ids, independently of the implementation's bookkeeping:
    want, seen = 0, []
    for x in sorted(ids, key=len):
        shared = max([next((k for k, (a, b) in enumerate(zip(x[:-1], y[:-1])) if a != b), min(len(x), len(y)) - 1)
                      for y in seen] + [0])
        want += len(x) - shared
        seen.append(x)
    assert stats["computed_tokens"] == want
    assert stats["computed_tokens"] < 0.6 * stats["prompt_tokens"]
    plain = {}
    generate_batch(model, tok, texts, max_new_tokens=2, share_prefix=False, stats=plain)
    T = max(len(x) for x in ids)
    assert plain == {"prompt_tokens": stats["prompt_tokens"], "computed_tokens": len(texts) * T}


def test_shared_prefill_samples_like_plain_generation(tiny):
    _, model, tok = tiny
    texts = _dialogue_prompts(tok)[:3]
    torch.manual_seed(7)
    shared = generate_batch(model, tok, texts, max_new_tokens=8, do_sample=True, top_k=10, temperature=1.0)
    torch.manual_seed(7)
    padded = generate_batch(model, tok, texts, max_new_tokens=8, do_sample=True, top_k=10, temperature=1.0,
                            share_prefix=False)
    assert shared == padded


def test_models_without_a_plain_cache_are_generated_the_padded_way(tmp_path):
    """A sliding-window model keeps another cache layout: no prefix sharing, same answers as one at a time."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    path = make_tiny_llama(tmp_path)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    assert not supports_prefix_sharing(model)
    texts = _dialogue_prompts(tok)[:3]
    stats = {}
    batched = generate_batch(model, tok, texts, max_new_tokens=5, stats=stats)
    assert stats["computed_tokens"] == len(texts) * max(len(x) for x in tokenize_prompts(tok, texts))
    assert batched == [generate_batch(model, tok, [t], max_new_tokens=5)[0] for t in texts]


# --- bfloat16 on CPU: a decoding step's attention computed directly in float32 (local_model._sdpa_or_direct_decode)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_direct_decode_attention_equals_float32_sdpa(mask_kind):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from magic.llm.local_model import _sdpa_or_direct_decode

    torch.manual_seed(0)
    B, H, H_kv, T, d = 3, 6, 2, 40, 16
    q = torch.randn(B, H, 1, d).bfloat16()
    k, v = torch.randn(B, H_kv, T, d).bfloat16(), torch.randn(B, H_kv, T, d).bfloat16()
    keep = torch.ones(B, 1, 1, T, dtype=torch.bool)
    keep[0, ..., :7] = False   # left padding of the first row
    keep[:, ..., 35:] = False  # static-cache columns not written yet
    mask = {"bool": keep, "additive": torch.zeros(B, 1, 1, T).masked_fill(~keep, float("-inf")).bfloat16(),
            "none": None}[mask_kind]
    module = torch.nn.Module().eval()
    module.num_key_value_groups, module.is_causal = H // H_kv, True
    ours, _ = _sdpa_or_direct_decode(module, q, k, v, mask, scaling=0.3)
    ref_mask = None if mask is None else (mask if mask.dtype == torch.bool else mask.float())
    ref, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), ref_mask, scaling=0.3)
    assert ours.shape == ref.shape == (B, 1, H, d) and ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref, atol=1e-2, rtol=1e-2)
    if mask_kind == "none":  # no mask: every column counts, so the result must differ from the masked one
        masked, _ = _sdpa_or_direct_decode(module, q, k, v, keep, scaling=0.3)
        assert not torch.allclose(masked.float(), ours.float(), atol=1e-2)


def test_bf16_cpu_model_uses_direct_decode_and_answers_as_float32_attention(tiny_gqa, tmp_path):
    from magic.llm.local_model import CPU_BF16_ATTENTION

    path = make_tiny_llama(tmp_path / "gqa_bf16", kv_heads=2, seed=1)
    model, tok = load_causal_lm(path, device="cpu", dtype="bfloat16")
    assert model.config._attn_implementation == CPU_BF16_ATTENTION
    fp32_model, _ = load_causal_lm(path, device="cpu", dtype="float32")
    assert fp32_model.config._attn_implementation == "sdpa"  # only bfloat16 on CPU is switched
    texts = _dialogue_prompts(tok)
    ours = generate_batch(model, tok, texts, max_new_tokens=8)
    model.set_attn_implementation("sdpa")
    plain = generate_batch(model, tok, texts, max_new_tokens=8)
    assert ours == plain
