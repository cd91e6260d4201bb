"""The one forward (src/magic/generator/model.py): ``pool="all"`` equals the released DialogueModel itself (read
from the bare mirror of github.com/Wh2018/MAGIC; skipped without it) over several training steps; masked pooling
makes a sample's loss and gradients independent of its batch's padding; the device bank is first in, first out
(tiny random BART, CPU, dropout off so that both sides compute the same function)."""
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.bart_fixtures import make_records

RELEASED_REPO = os.environ.get("MAGIC_RELEASED_REPO", "/work/.mirror/Wh2018+MAGIC/repo")


@pytest.fixture(scope="module")
def tokenizer(bart_dir):
    from transformers import BartTokenizer

    return BartTokenizer.from_pretrained(bart_dir)


def no_dropout_config(bart_dir):
    from transformers import BartConfig

    cfg = BartConfig.from_pretrained(bart_dir)
    cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0
    return cfg


@pytest.fixture(scope="module")
def released_model_class(tmp_path_factory):
    """The released src/ package (bart_dialog.py, dataset.py) with ``.to("cuda")`` -> ``.to("cpu")``."""
    ok = subprocess.run(["git", "-C", RELEASED_REPO, "cat-file", "-e", "HEAD:src/bart_dialog.py"],
                        capture_output=True).returncode == 0
    if not ok:
        pytest.skip(f"no released repository at {RELEASED_REPO} (MAGIC_RELEASED_REPO)")
    root = tmp_path_factory.mktemp("released")
    (root / "released_src").mkdir()
    for name in ("__init__.py", "bart_dialog.py", "dataset.py"):
        text = subprocess.run(["git", "-C", RELEASED_REPO, "show", f"HEAD:src/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (root / "released_src" / name).write_text(re.sub(r"""\.to\((["'])cuda\1\)""", '.to("cpu")', text))
    sys.path.insert(0, str(root))
    try:
        from released_src.bart_dialog import DialogueModel as Released
    finally:
        sys.path.remove(str(root))
    return Released


@pytest.mark.parametrize("K", [3, 128])  # 3: slots fill and evict within the steps
def test_pool_all_equals_the_released_model(bart_dir, tokenizer, released_model_class, K):
    """Logits, losses, the memory bank and the gradients after several training steps with SGD updates."""
    from magic.esconv.dialogues import strategy_id
    from magic.generator.data import DialogueDataset, collator_for
    from magic.generator.model import DialogueModel

    L, Lm = 96, 24
    cfg = no_dropout_config(bart_dir)
    torch.manual_seed(0)
    ours = DialogueModel(cfg, pool="all", strategy_memory_max=K, max_length=L, max_length_res_memory=Lm)
    released = released_model_class(cfg, cfg, tokenizer, L, K, Lm, torch.device("cpu"))
    released.load_state_dict(ours.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)  # a bank with history in every slot (the released code gives NaN for
    bank = [torch.randn(s % 3 + 1, cfg.d_model, generator=g) for s in range(8)]  # an empty one)
    ours.load_memory_state(bank)
    released.memory_bank = [t.clone() for t in bank]
    ours.train(), released.train()
    recs = make_records(4, seed=2)
    ds = DialogueDataset(recs, tokenizer, ours.generator_config)
    collate = collator_for(ours)
    size = 5
    for step in range(4):
        idx = [(step * size + i) % len(ds) for i in range(size)]
        b = collate([ds[i] for i in idx])
        assert b["input_ids"].size(1) == L and b["memory_input_ids"].size(1) == Lm  # the released padding
        out = ours(**b, l_strategy=0.2)
        logits, cls_logits, mem_ids = released(
            b["input_ids"], b["attention_mask"], b["decoder_input_ids"], b["decoder_attention_mask"],
            b["strategy_ids"].tolist(), [recs[i]["response_memory"] for i in idx],
            [[strategy_id(s) for s in recs[i]["strategy_memory"]] for i in idx], b["motivation_ids"],
            b["motivation_mask"], stage="train")
        targets = b["labels"].masked_fill(b["labels"] == -100, tokenizer.pad_token_id)
        gen = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                                ignore_index=tokenizer.pad_token_id)
        aux = torch.nn.functional.cross_entropy(cls_logits, torch.tensor(mem_ids))
        assert mem_ids == b["memory_strategy_ids"].tolist()
        torch.testing.assert_close(out["logits"], logits, rtol=1e-4, atol=1e-5, msg=f"step {step}: logits")
        torch.testing.assert_close(out["gen_loss"], gen, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["strategy_loss"], aux, rtol=1e-5, atol=1e-6)
        for model, loss in ((ours, out["loss"]), (released, gen + 0.2 * aux)):
            model.zero_grad(set_to_none=True)
            loss.backward()
        grads = {n: p.grad for n, p in released.named_parameters() if p.grad is not None}
        assert any(n.startswith("strategy_encoder.") for n in grads)  # through this step's bank entries
        for n, p in ours.named_parameters():
            assert (p.grad is None) == (n not in grads), n
            if p.grad is not None:
                torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=f"step {step}: grad {n}")
        with torch.no_grad():  # the same SGD step on both, so that later steps start from moved weights
            for model in (ours, released):
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.5 * p.grad
        ours.detach_memory()
        for s, (x, y) in enumerate(zip(ours.memory_bank, released.memory_bank)):
            assert x.shape == y.shape, f"step {step}: slot {s}"
            torch.testing.assert_close(x, y.detach(), rtol=1e-4, atol=1e-5)
    if K == 3:
        assert max(t.size(0) for t in ours.memory_bank) == 3  # full slots: entries were evicted


@pytest.mark.parametrize("overrides", [{}, {"use_motivation": True}, {"use_memory": False}])
def test_masked_pass_does_not_depend_on_padding(bart_dir, tokenizer, overrides):
    """A padded batch gives each sample the NLL and the gradient contribution it has alone, unpadded (bank
    frozen in eval mode; the training-mode bank update is the released one, checked above)."""
    from magic.generator.data import DialogueDataset, collator_for
    from magic.generator.model import DialogueModel

    torch.manual_seed(0)
    model = DialogueModel(no_dropout_config(bart_dir), **overrides)
    g = torch.Generator().manual_seed(1)
    model.load_memory_state([torch.randn(s % 4, model.config.d_model, generator=g) for s in range(8)])
    model.eval()
    ds = DialogueDataset(make_records(2, seed=3), tokenizer, max_length=96)
    collate = collator_for(model, with_memory=False)
    items = [ds[i] for i in range(min(6, len(ds)))]
    batch = collate(items)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # padding present
    model.zero_grad()
    out = model(**batch, return_logits=False)
    out["nll_sum"].requires_grad_(False)
    (out["loss"] * out["n_tokens"]).backward()
    together = model.encoder.layers[0].fc1.weight.grad.clone()
    model.zero_grad()
    nll = 0.0
    for it in items:
        one = model(**collate([it]), return_logits=False)
        (one["loss"] * one["n_tokens"]).backward()
        nll += float(one["nll_sum"])
    torch.testing.assert_close(float(out["nll_sum"]), nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.encoder.layers[0].fc1.weight.grad, together, rtol=1e-4, atol=1e-6)


def test_memory_bank_is_first_in_first_out_per_slot():
    from magic.generator.model import MemoryBank

    K, d = 4, 3
    bank = MemoryBank.from_list([torch.empty(0, d) for _ in range(3)], K, d)
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


def test_memory_chunks_equal_one_padded_call(bart_dir, tokenizer, monkeypatch):
    """encode_memory's length-sorted chunks are a speed-up only: the pooled entries, in batch order, and their
    gradients are those of one padded strategy-encoder call."""
    import magic.generator.model as model_module
    from magic.generator.data import DialogueDataset, collator_for
    from magic.generator.model import DialogueModel

    torch.manual_seed(0)
    model = DialogueModel(no_dropout_config(bart_dir))
    ds = DialogueDataset(make_records(3, seed=4), tokenizer, max_length=96)
    b = collator_for(model)([ds[i] for i in range(len(ds))])
    ids, mask = b["memory_input_ids"], b["memory_attention_mask"]
    assert ids.size(0) > 5 and len(set(mask.sum(1).tolist())) > 2
    got = []
    for chunk in (2, 10 ** 6):  # several chunks; one call
        monkeypatch.setattr(model_module, "MEMORY_CHUNK", chunk)
        model.zero_grad()
        pooled = model.encode_memory(ids, mask)
        pooled.pow(2).sum().backward()
        got.append((pooled.detach(), model.strategy_encoder.layers[0].fc1.weight.grad.clone()))
    torch.testing.assert_close(got[0][0], got[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0][1], got[1][1], rtol=1e-4, atol=1e-5)
