"""src/magic/generator/beam_search.py: cached (group) beam search against HF generate, a brute-force argmax roll-out and
toy models whose answers are known."""
import math

import pytest
import torch

from magic.generator.beam_search import beam_search, greedy_search, reorder_past

BOS, EOS, PAD = 0, 2, 1


def _tiny_bart(seed=0, vocab=64):
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=vocab, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                     pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS,
                     forced_eos_token_id=None, forced_bos_token_id=None, no_repeat_ngram_size=0)
    model = BartForConditionalGeneration(cfg).eval()
    # Random init makes every token about equally likely; a larger scale gives peaked, varied distributions
    # (EOS reachable early) so the beam search has real decisions to make.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model


class BartStep:
    """Adapts BartForConditionalGeneration to the encode/decode step interface of DialogueModel."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def encode(self, input_ids, attention_mask):
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, \
            attention_mask

    def decode(self, decoder_input_ids, encoder_states, encoder_mask, past_key_values=None, use_cache=False):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache
        self.calls += 1
        if use_cache and past_key_values is None:
            cfg = self.model.config
            past_key_values = EncoderDecoderCache(DynamicCache(config=cfg), DynamicCache(config=cfg))
        out = self.model.model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoder_states,
                                       encoder_attention_mask=encoder_mask, past_key_values=past_key_values,
                                       use_cache=use_cache)
        logits = self.model.lm_head(out.last_hidden_state) + self.model.final_logits_bias
        return logits, out.past_key_values


def _inputs(batch=3, seed=1, vocab=64):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 6:] = 0  # padded rows: the encoder mask must reach the cross-attention
    ids[mask == 0] = PAD
    return ids, mask


def _hf(model, ids, mask, **kw):
    return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, decoder_start_token_id=EOS,
                          eos_token_id=EOS, pad_token_id=PAD, bos_token_id=BOS, forced_bos_token_id=None,
                          forced_eos_token_id=None, no_repeat_ngram_size=0, **kw)


@pytest.mark.parametrize("length_penalty,early_stopping,max_new", [
    (1.0, False, 12), (2.0, True, 9), (0.5, "never", 10), (1.0, False, 30)])
def test_one_group_equals_hf_generate(length_penalty, early_stopping, max_new):
    model = _tiny_bart()
    step = BartStep(model)
    ids, mask = _inputs()
    with torch.no_grad():
        enc, emask = step.encode(ids, mask)
        ours = beam_search(step, enc, emask, decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                           max_new_tokens=max_new, num_beams=5, length_penalty=length_penalty,
                           early_stopping=early_stopping)
        ref = _hf(model, ids, mask, num_beams=5, length_penalty=length_penalty, early_stopping=early_stopping,
                  max_new_tokens=max_new, min_length=0)
    assert ours.sequences.tolist() == ref.tolist()


def test_one_group_equals_hf_with_min_length_and_several_returns():
    model = _tiny_bart(seed=3)
    step = BartStep(model)
    ids, mask = _inputs(seed=4)
    with torch.no_grad():
        enc, emask = step.encode(ids, mask)
        ours = beam_search(step, enc, emask, decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                           max_new_tokens=15, min_new_tokens=4, num_beams=4, num_return_sequences=3)
        ref = _hf(model, ids, mask, num_beams=4, max_new_tokens=15, min_length=5, num_return_sequences=3,
                  output_scores=True, return_dict_in_generate=True)
    assert ours.sequences.tolist() == ref.sequences.tolist()
    assert torch.allclose(ours.scores, ref.sequences_scores, atol=1e-5)
    assert (ours.lengths >= 4).all()  # min length: no EOS among the first 4 tokens


def test_hf_generate_has_no_group_beam_search_offline():
    """Why src/magic/generator/beam_search.py exists: transformers 5.x sends num_beam_groups > 1 to a hub repo."""
    model = _tiny_bart()
    ids, mask = _inputs(batch=1)
    with pytest.raises(Exception):
        _hf(model, ids, mask, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=5)


def _argmax_rollout(model, ids, mask, max_new):
    """No cache, full decoder re-run every step, per row: the definition of greedy decoding."""
    out = []
    for r in range(ids.shape[0]):
        seq = [EOS]
        enc = model.get_encoder()(input_ids=ids[r:r + 1], attention_mask=mask[r:r + 1]).last_hidden_state
        for _ in range(max_new):
            h = model.model.decoder(input_ids=torch.tensor([seq]), encoder_hidden_states=enc,
                                    encoder_attention_mask=mask[r:r + 1], use_cache=False).last_hidden_state
            nxt = int((model.lm_head(h[:, -1]) + model.final_logits_bias).argmax(-1))
            seq.append(nxt)
            if nxt == EOS:
                break
        out.append(seq)
    return out


def test_greedy_equals_argmax_rollout():
    model = _tiny_bart(seed=5)
    step = BartStep(model)
    ids, mask = _inputs(seed=6)
    with torch.no_grad():
        enc, emask = step.encode(ids, mask)
        res = beam_search(step, enc, emask, decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                          max_new_tokens=20, num_beams=1)
        expected = _argmax_rollout(model, ids, mask, 20)
    for row, length, exp in zip(res.sequences.tolist(), res.lengths.tolist(), expected):
        assert row[:1 + length] == exp
        assert all(t == PAD for t in row[1 + length:])  # padded after its EOS
    assert any(e[-1] == EOS for e in expected)  # the case "stops at EOS" is exercised


class TableModel:
    """Toy decoder whose next-token distribution depends only on the last token: log-probs from a table.

    Vocabulary: 0 start, 1 pad, 2 EOS, 3.. words. The cache is the step count (a tensor per beam) so that
    reordering is exercised.
    """

    def __init__(self, table):
        self.table = torch.log(torch.tensor(table, dtype=torch.float))
        self.V = self.table.shape[1]

    def decode(self, decoder_input_ids, encoder_states, encoder_mask, past_key_values=None, use_cache=False):
        last = decoder_input_ids[:, -1]
        past = torch.zeros(last.shape[0]) if past_key_values is None else past_key_values + 1
        return self.table[last][:, None, :], past


def _enumerate(table, max_new, lp):
    """All finished sequences (EOS or max length) with their length-normalised log-probabilities."""
    logt = [[math.log(p) if p > 0 else -math.inf for p in row] for row in table]
    best = []

    def rec(seq, score):
        for tok in range(len(table)):
            s = score + logt[seq[-1]][tok]
            if s == -math.inf:
                continue
            new = seq + [tok]
            n = len(new) - 1
            if tok == EOS or n == max_new:
                best.append((s / n ** lp, new))
            else:
                rec(new, s)
    rec([BOS], 0.0)
    return sorted(best, reverse=True)


def test_toy_model_returns_best_length_normalised_hypothesis():
    # From the start, token 3 is likely but leads to a long low-probability tail; token 4 leads to EOS.
    #          start  pad   EOS   w3    w4    w5
    table = [[0.0, 0.0, 0.05, 0.55, 0.40, 0.00],   # after start
             [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],       # after pad
             [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],       # after EOS
             [0.0, 0.0, 0.10, 0.30, 0.30, 0.30],   # after w3
             [0.0, 0.0, 0.90, 0.05, 0.05, 0.00],   # after w4
             [0.0, 0.0, 0.50, 0.25, 0.25, 0.00]]   # after w5
    model = TableModel(table)
    enc = torch.zeros(1, 2, 4)
    for lp in (1.0, 0.0, 2.0):
        res = beam_search(model, enc, None, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                          max_new_tokens=6, num_beams=4, length_penalty=lp, early_stopping="never")
        exp_score, exp_seq = _enumerate(table, 6, lp)[0]
        got = res.sequences[0, :1 + int(res.lengths[0])].tolist()
        assert got == exp_seq, (lp, got, exp_seq)
        assert res.scores[0].item() == pytest.approx(exp_score, abs=1e-5)


def test_diversity_penalty_changes_beams_and_spreads_groups():
    model = _tiny_bart(seed=7)
    step = BartStep(model)
    ids, mask = _inputs(seed=8)
    kw = dict(decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=10, num_beams=4,
              num_return_sequences=4, min_new_tokens=2)
    with torch.no_grad():
        enc, emask = step.encode(ids, mask)
        plain = beam_search(step, enc, emask, **kw)
        diverse = beam_search(step, enc, emask, num_beam_groups=4, diversity_penalty=5.0, **kw)
    assert plain.sequences.tolist() != diverse.sequences.tolist()
    # One beam per group (so one finished hypothesis per group), EOS forbidden at step 1 and a large penalty:
    # the 4 returned hypotheses come one from each group and their first tokens all differ.
    for b in range(ids.shape[0]):
        first = diverse.sequences[b * 4:(b + 1) * 4, 1].tolist()
        assert len(set(first)) == 4, first


def test_diversity_penalty_is_hamming_on_toy_model():
    # Two groups of one beam, no cache dependence: group 1 is pushed off group 0's token by exactly the penalty.
    #          start  pad   EOS   w3    w4
    table = [[0.0, 0.0, 0.0, 0.6, 0.4],
             [0.0, 1.0, 0.0, 0.0, 0.0],
             [0.0, 1.0, 0.0, 0.0, 0.0],
             [0.0, 0.0, 0.98, 0.01, 0.01],
             [0.0, 0.0, 0.98, 0.01, 0.01]]
    model = TableModel(table)
    enc = torch.zeros(1, 2, 4)
    kw = dict(decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=3, num_beams=2,
              num_beam_groups=2, num_return_sequences=2, length_penalty=0.0)
    small = beam_search(model, enc, None, diversity_penalty=0.1, **kw)  # log .6 - .1 > log .4: same token
    big = beam_search(model, enc, None, diversity_penalty=1.0, **kw)    # log .6 - 1 < log .4: switches
    assert small.sequences[:, 1].tolist() == [3, 3]
    assert sorted(big.sequences[:, 1].tolist()) == [3, 4]
    # The penalised score is what the group accumulated (HF GroupBeamSearch): log .6 - 0.1 for group 1
    # (group 0 continues with a word at step 2, so group 1's EOS is not penalised).
    exp = [math.log(.6) + math.log(.98), math.log(.6) - .1 + math.log(.98)]
    assert small.scores.tolist() == pytest.approx(exp, abs=1e-5)
    assert small.sequences[:, 2].tolist() == [EOS, EOS]


def test_eos_stops_decoding_and_max_length_caps_it():
    #          start  pad   EOS   w3
    table = [[0.0, 0.0, 0.0, 1.0],
             [0.0, 1.0, 0.0, 0.0],
             [0.0, 1.0, 0.0, 0.0],
             [0.0, 0.0, 0.7, 0.3]]
    model = TableModel(table)
    calls = []
    orig = model.decode

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)
    model.decode = counting
    enc = torch.zeros(2, 2, 4)
    res = beam_search(model, enc, None, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                      max_new_tokens=50, num_beams=2, early_stopping=True)
    assert res.sequences[0].tolist() == [BOS, 3, EOS]
    assert len(calls) < 10  # stopped long before 50 steps
    g = greedy_search(model, enc, None, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                      max_new_tokens=50)
    assert g.sequences[0].tolist() == [BOS, 3, EOS] and g.lengths.tolist() == [2, 2]
    # max length: a model that never emits EOS is cut at max_new_tokens.
    table2 = [[0.0, 0.0, 0.0, 1.0]] + [[0.0, 1.0, 0.0, 0.0]] * 2 + [[0.0, 0.0, 0.0, 1.0]]
    res2 = beam_search(TableModel(table2), enc, None, decoder_start_token_id=BOS, eos_token_id=EOS,
                       pad_token_id=PAD, max_new_tokens=5, num_beams=2)
    assert res2.sequences.shape[1] == 6 and res2.lengths.tolist() == [5, 5]
    # min length forbids EOS before 3 tokens.
    res3 = beam_search(model, enc, None, decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                       max_new_tokens=10, num_beams=2, min_new_tokens=3)
    assert res3.sequences[0].tolist() == [BOS, 3, 3, 3, EOS]


def test_invalid_settings_are_refused():
    model = TableModel([[1.0]])
    enc = torch.zeros(1, 1, 1)
    kw = dict(decoder_start_token_id=0, eos_token_id=0, pad_token_id=0, max_new_tokens=3)
    with pytest.raises(ValueError, match="divisible"):
        beam_search(model, enc, None, num_beams=5, num_beam_groups=2, diversity_penalty=1.0, **kw)
    with pytest.raises(ValueError, match="diversity_penalty"):
        beam_search(model, enc, None, num_beams=4, num_beam_groups=2, diversity_penalty=0.0, **kw)


def test_reorder_past_handles_tuples_and_hf_caches():
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    t = torch.arange(6.0).view(3, 2)
    assert reorder_past((t, (t,)), torch.tensor([2, 0, 0]))[1][0].tolist() == [[4, 5], [0, 1], [0, 1]]
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    cache.self_attention_cache.update(torch.arange(3.0).view(3, 1, 1, 1), torch.zeros(3, 1, 1, 1), 0)
    out = reorder_past(cache, torch.tensor([1, 1, 2]))
    assert out.self_attention_cache.layers[0].keys.flatten().tolist() == [1, 1, 2]


def test_group_diversity_is_the_one_rule():
    from magic.generator.beam_search import group_diversity

    assert group_diversity(5, 5, 1.0) == 1.0
    with pytest.warns(UserWarning, match="no effect with num_beam_groups 1"):
        assert group_diversity(5, 1, 1.0) == 0.0
    with pytest.raises(ValueError, match="divisible"):
        group_diversity(5, 2, 1.0)
    with pytest.raises(ValueError, match="diversity_penalty > 0"):
        group_diversity(4, 2, 0.0)
