"""The GPU training pass (src/magic/generator/padded.py) against the CPU one: same losses, gradients and memory
bank, on CPU (tiny random BART, dropout off so that both passes compute the same function)."""
import copy

import pytest
import torch

from tests.bart_fixtures import make_records


@pytest.fixture(scope="module")
def tokenizer(bart_dir):
    from transformers import BartTokenizer

    return BartTokenizer.from_pretrained(bart_dir)


def no_dropout_model(bart_dir, **overrides):
    from transformers import BartConfig

    from magic.generator.model import DialogueModel

    cfg = BartConfig.from_pretrained(bart_dir)
    cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0
    torch.manual_seed(0)
    return DialogueModel(cfg, **overrides)


def batches(model, tokenizer, n_batches=3, size=5):
    from magic.generator.data import DialogueDataset, collator_for

    recs = make_records(6, seed=1)
    ds = DialogueDataset(recs, tokenizer, max_length=96)
    collate = collator_for(model)
    return [collate([ds[(b * size + i) % len(ds)] for i in range(size)]) for b in range(n_batches)]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("overrides,l_strategy", [
    ({"strategy_memory_max": 3}, 0.2),       # slots fill and evict within the three steps
    ({"strategy_memory_max": 128}, 0.2),
    ({"strategy_memory_max": 3}, 0.0),       # --l_strategy 0
    ({"use_memory": False}, 0.2),            # --no_memory
    ({"use_motivation": True}, 0.2),         # --use_motivation
])
def test_padded_pass_equals_the_grouped_one(bart_dir, tokenizer, overrides, l_strategy):
    from magic.generator.padded import DeviceBank, padded_step

    grouped = no_dropout_model(bart_dir, **overrides)
    d = grouped.config.d_model
    g = torch.Generator().manual_seed(1)  # a bank with history: slot s holds s % 4 entries (slot 0 empty)
    grouped.memory_bank = [torch.randn(s % 4, d, generator=g) for s in range(grouped.num_strategies)]
    padded = copy.deepcopy(grouped)
    grouped.train(), padded.train()
    bank = DeviceBank.from_list(padded.memory_bank, padded.strategy_memory_max)
    data = batches(grouped, tokenizer)
    padded_rows = [(b["attention_mask"].sum(1) < b["attention_mask"].size(1)) for b in data]
    assert any(bool(r.any()) for r in padded_rows)  # contexts of different lengths: padding
    if grouped.use_memory:  # padded rows read filled slots (else masking the pool would go untested)
        assert any(bool((r & (b["strategy_ids"] % 4 != 0)).any()) for r, b in zip(padded_rows, data))
    for step, batch in enumerate(data):
        a = grouped(**batch, l_strategy=l_strategy, return_logits=False)
        b, bank = padded_step(padded, bank, batch, l_strategy=l_strategy)
        for k in ("loss", "gen_loss", "strategy_loss", "nll_sum"):
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=f"step {step}: {k}")
        assert int(b["n_tokens"]) == int(a["n_tokens"])
        for model, out in ((grouped, a), (padded, b)):
            model.zero_grad(set_to_none=True)
            out["loss"].backward()
        ga, gb = grads(grouped), grads(padded)
        assert ga.keys() == gb.keys()
        if grouped.use_memory:  # the generation loss reaches the strategy encoder through this step's entries
            assert any(n.startswith("strategy_encoder.") for n in ga)
        for n in ga:
            torch.testing.assert_close(gb[n], ga[n], rtol=1e-4, atol=1e-5, msg=f"step {step}: grad of {n}")
        with torch.no_grad():  # the same SGD step on both, so that later steps start from moved weights
            for p, q in zip(grouped.parameters(), padded.parameters()):
                if p.grad is not None:
                    p -= 0.5 * p.grad
                    q -= 0.5 * q.grad
        grouped.detach_memory()
        bank = bank.detach()
        listed = bank.to_list()
        for s, (x, y) in enumerate(zip(grouped.memory_bank, listed)):
            assert x.shape == y.shape, f"step {step}: slot {s}"
            torch.testing.assert_close(y, x.float(), rtol=1e-5, atol=1e-5)
    if grouped.use_memory:
        sizes = [t.size(0) for t in grouped.memory_bank]
        assert max(sizes) > 0
        if grouped.strategy_memory_max == 3:
            assert max(sizes) == 3  # some slot evicted its oldest entries


def test_device_bank_is_first_in_first_out_per_slot():
    from magic.generator.padded import DeviceBank

    K, d = 4, 3
    bank = DeviceBank.from_list([torch.empty(0, d) for _ in range(3)], K)
    reference = [[] for _ in range(3)]
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        ids = torch.randint(0, 3, (6,), generator=g)
        rows = torch.randn(6, d, generator=g, requires_grad=True)
        bank = bank.append(rows, ids)
        for r, s in zip(rows, ids.tolist()):
            reference[s] = (reference[s] + [r])[-K:]
        if step == 4:  # the newest entries carry their graph
            bank.slots.sum().backward()
            assert rows.grad is not None and rows.grad.abs().sum() > 0
        bank = bank.detach()
        for s, got in enumerate(bank.to_list()):
            want = torch.stack(reference[s]) if reference[s] else torch.empty(0, d)
            torch.testing.assert_close(got, want.detach())
