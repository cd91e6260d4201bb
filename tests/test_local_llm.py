"""src/local_llm.py: templates, left-padded batched generation equal to one-at-a-time, EOS stop."""
import pytest
import torch

from src.local_llm import encode_prompts, format_prompt, generate_batch, load_causal_lm, prepare_tokenizer
from tests.llm_fixtures import make_tiny_llama


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


def test_encode_left_pads_and_adds_one_bos(tiny):
    tok = tiny[2]
    batch = encode_prompts(tok, ["Human: a\nAssistant: ", "<s>user: a much longer text\nassistant: "])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # short one padded on the left
    for row, m in zip(ids, mask):
        real = row[m.bool()].tolist()
        assert real[0] == tok.bos_token_id and real[1] != tok.bos_token_id


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
