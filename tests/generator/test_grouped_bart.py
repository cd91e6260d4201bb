"""src/magic/generator/grouped_bart.py: the one-pass-per-layer BART over length groups against transformers' BartEncoder and
BartDecoder run group by group (values and gradients), and its dropout."""
import pytest
import torch
from transformers import BartConfig
from transformers.models.bart.modeling_bart import BartDecoder, BartEncoder

from magic.generator import grouped_bart
from magic.generator.grouped_bart import GroupLayout


def tiny_config(**kw) -> BartConfig:
    base = dict(vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    base.update(kw)
    return BartConfig(**base)


def right_padded(lengths, width, gen):
    """ids [B, width] (pad 1 after each row's length) and mask [B, width]."""
    ids = torch.randint(3, 60, (len(lengths), width), generator=gen)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 1), mask


def groups_of(spec, gen):
    """spec: per group the row lengths (the first is the group's width) -> (ids list, mask list)."""
    pairs = [right_padded(lens, lens[0], gen) for lens in spec]
    return [p[0] for p in pairs], [p[1] for p in pairs]


ENC_SPEC = [[9, 7, 9], [5, 5], [2]]  # groups: widths 9, 5, 2; padding in the first only
DEC_SPEC = [[4, 2, 3], [6, 6], [1]]


def run_both(train: bool):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = tiny_config()
    enc, dec = BartEncoder(cfg), BartDecoder(cfg)
    for m in (enc, dec):
        m.train(train)
    ids, masks = groups_of(ENC_SPEC, gen)
    dids, dmasks = groups_of(DEC_SPEC, gen)
    weights = [torch.randn(*x.shape, 32, generator=gen) for x in dids]  # a loss over the decoder's real outputs

    # transformers, group by group
    ref_states = [enc(input_ids=x, attention_mask=m).last_hidden_state for x, m in zip(ids, masks)]
    ref_out = [dec(input_ids=x, attention_mask=dm, encoder_hidden_states=h, encoder_attention_mask=m).last_hidden_state
               for x, dm, h, m in zip(dids, dmasks, ref_states, masks)]
    loss = sum((o * w * dm[..., None]).sum() for o, w, dm in zip(ref_out, weights, dmasks))
    loss.backward()
    ref_grads = {n: p.grad.clone() for m in (enc, dec) for n, p in m.named_parameters(prefix=type(m).__name__)}
    for m in (enc, dec):
        m.zero_grad()

    # one pass per layer
    layout = GroupLayout([x.shape for x in ids])
    states = grouped_bart.encode(enc, GroupLayout.flatten(ids), layout, masks)
    dlayout = GroupLayout([x.shape for x in dids])
    self_masks = [None if bool(dm.all()) else dm for dm in dmasks]
    out = grouped_bart.decode(dec, GroupLayout.flatten(dids), dlayout, self_masks, states, layout, masks)
    got_out = dlayout.split(out)
    loss = sum((o * w * dm[..., None]).sum() for o, w, dm in zip(got_out, weights, dmasks))
    loss.backward()
    grads = {n: p.grad.clone() for m in (enc, dec) for n, p in m.named_parameters(prefix=type(m).__name__)}
    return (ref_states, layout.split(states), masks), (ref_out, got_out, dmasks), (ref_grads, grads)


@pytest.mark.parametrize("train", [False, True])
def test_grouped_pass_equals_transformers_per_group(train):
    """Values at every real position and every parameter gradient agree (dropout 0, so train mode differs only
    in the layer code paths); the groups mix padded and unpadded rows."""
    (ref_s, got_s, masks), (ref_o, got_o, dmasks), (ref_g, got_g) = run_both(train)
    for r, g, m in zip(ref_s, got_s, masks):
        assert torch.allclose(r[m.bool()], g[m.bool()], atol=1e-5)
    for r, g, m in zip(ref_o, got_o, dmasks):
        assert torch.allclose(r[m.bool()], g[m.bool()], atol=1e-5)
    assert ref_g.keys() == got_g.keys()
    for name in ref_g:
        assert torch.allclose(ref_g[name], got_g[name], atol=1e-5), name


def test_dropout_keeps_one_minus_p_and_scales():
    x = torch.ones(1_000_000)
    torch.manual_seed(0)
    y = grouped_bart.dropout(x, 0.1, True)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    frac = kept.float().mean().item()
    assert abs(frac - 0.9) < 5 * (0.9 * 0.1 / x.numel()) ** 0.5  # within 5 sigma
    assert torch.equal(grouped_bart.dropout(x, 0.1, False), x)
    assert torch.equal(grouped_bart.dropout(x, 0.0, True), x)


def test_dropout_reproducible_from_the_default_generator_at_any_thread_count():
    x = torch.randn(300, 257)
    threads = torch.get_num_threads()
    try:
        masks = []
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(7)
            masks.append(grouped_bart.dropout(x, 0.25, True))
        torch.manual_seed(8)
        other = grouped_bart.dropout(x, 0.25, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], other)


def test_dropout_gradient_uses_the_same_mask():
    x = torch.randn(50, 40, requires_grad=True)
    torch.manual_seed(3)
    y = grouped_bart.dropout(x, 0.5, True)
    y.sum().backward()
    assert torch.equal(x.grad, (y.detach() != 0).float() * 2.0)


def test_layerdrop_drops_a_layer_for_every_group_at_once():
    """LayerDrop 1.0 in training skips every layer: the output is the embedding block, as in transformers."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    enc = BartEncoder(tiny_config(encoder_layerdrop=1.0)).train()
    ids, masks = groups_of(ENC_SPEC, gen)
    layout = GroupLayout([x.shape for x in ids])
    got = layout.split(grouped_bart.encode(enc, GroupLayout.flatten(ids), layout, masks))
    for x, m, g in zip(ids, masks, got):
        ref = enc(input_ids=x, attention_mask=m).last_hidden_state
        assert torch.allclose(ref, g, atol=1e-6)
