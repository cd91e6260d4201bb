"""DialogueModel, its memory bank, the dataset/collator and checkpoints (tiny random BART, CPU)."""
import math

import pytest
import torch

from tests.bart_fixtures import make_records


@pytest.fixture(scope="module")
def tokenizer(bart_dir):
    from transformers import BartTokenizer

    return BartTokenizer.from_pretrained(bart_dir)


def new_model(bart_dir, seed=0, **kw):
    from magic.generator.model import DialogueModel

    torch.manual_seed(seed)
    return DialogueModel.from_pretrained_bart(bart_dir, **kw)


def batch_of(model, tokenizer, records, with_memory=True, **ds_kw):
    from magic.generator.data import DialogueDataset, collator_for

    ds = DialogueDataset(records, tokenizer, max_length=ds_kw.pop("max_length", 96), **ds_kw)
    return collator_for(model, with_memory=with_memory)([ds[i] for i in range(len(ds))])


def test_forward_shapes(bart_dir, tokenizer):
    model = new_model(bart_dir)
    recs = make_records(2)
    b = batch_of(model, tokenizer, recs)
    B, T = b["input_ids"].shape
    t = b["decoder_input_ids"].size(1)
    model.train()
    out = model(**b)
    assert out["logits"].shape == (B, t, model.vocab_size)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert int(out["n_tokens"]) == int((b["labels"] != -100).sum())
    model.eval()
    enc, mask = model.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"])
    assert enc.shape == (B, T + 1, model.config.d_model) and mask.shape == (B, T + 1)
    assert bool(mask[:, -1].all())  # the memory vector is always visible
    # motivation fusion appends the motivation states before the memory vector
    mot = new_model(bart_dir, use_motivation=True).eval()
    enc, mask = mot.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"], b["motivation_ids"],
                           b["motivation_mask"])
    assert enc.shape[1] == T + b["motivation_ids"].size(1) + 1
    with pytest.raises(ValueError, match="motivation"):
        mot.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"])


def test_decode_with_cache_matches_full_pass(bart_dir, tokenizer):
    """Beam search feeds one token at a time and reorders the cache; that must equal a full pass."""
    model = new_model(bart_dir).eval()
    b = batch_of(model, tokenizer, make_records(1)[:2])
    model.train(), model(**b), model.eval()  # put something in the bank
    with torch.no_grad():
        enc, mask = model.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"])
        dec = b["decoder_input_ids"][:, :4]
        full, _ = model.decode(dec, enc, mask)
        # swap the two rows inside the cache after step 2 and compare with the swapped full pass
        perm = torch.tensor([1, 0])
        logits, past = model.decode(dec[:, :2], enc, mask, use_cache=True)
        past.reorder_cache(perm)
        step, past = model.decode(dec[perm, 2:3], enc[perm], mask[perm], past_key_values=past, use_cache=True)
    assert torch.allclose(step[:, 0], full[perm, 2], atol=1e-5)
    assert torch.allclose(logits, full[:, :2], atol=1e-5)


def test_overfitting_two_batches_lowers_loss(bart_dir, tokenizer):
    model = new_model(bart_dir)
    recs = make_records(2)
    batches = [batch_of(model, tokenizer, recs[:3]), batch_of(model, tokenizer, recs[3:6])]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for step in range(30):
        out = model(**batches[step % 2])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["gen_loss"].detach())
    model.eval()
    with torch.no_grad():
        last = sum(float(model(**b)["gen_loss"]) for b in batches) / 2
    assert last < 0.5 * first, (first, last)


def test_memory_bank_is_fifo_per_strategy(bart_dir):
    model = new_model(bart_dir, strategy_memory_max=3)
    d = model.config.d_model
    vecs = torch.arange(6, dtype=torch.float).unsqueeze(1).repeat(1, d)  # row i is all i
    model.update_memory(vecs[:4], torch.tensor([2, 2, 5, 2]))
    model.update_memory(vecs[4:], torch.tensor([2, 2]))
    bank = model.memory_state()
    assert [t.size(0) for t in bank] == [0, 0, 3, 0, 0, 1, 0, 0]
    assert bank[2][:, 0].tolist() == [3.0, 4.0, 5.0]  # newest three of 0,1,3,4,5, oldest first
    assert bank[5][:, 0].tolist() == [2.0]


def test_training_forward_files_memory_under_its_strategy(bart_dir, tokenizer):
    from magic.esconv.dialogues import strategy_id

    model = new_model(bart_dir)
    recs = make_records(1, turns=8)  # one dialogue: later samples' memory extends earlier ones
    b = batch_of(model, tokenizer, recs)
    longest = max(recs, key=lambda r: len(r["response_memory"]))
    # only the longest memory list of the dialogue is encoded (the others are its prefixes)
    assert b["memory_strategy_ids"].tolist() == sorted(strategy_id(s) for s in longest["strategy_memory"])
    model.train()
    model(**b)
    counts = [t.size(0) for t in model.memory_bank]
    expected = [0] * 8
    for s in longest["strategy_memory"]:
        expected[strategy_id(s)] += 1
    assert counts == expected
    # eval mode freezes the bank
    before = model.memory_state()
    model.eval()
    with torch.no_grad():
        model(**b)
    assert all(torch.equal(x, y) for x, y in zip(before, model.memory_state()))


def test_keep_largest_lists():
    from magic.generator.data import keep_largest_lists

    lists = [[1], [1, 2, 3], [], [4, 5], [1, 3], [4, 5], [7]]
    # [1], [] and [1, 3] are subsequences of [1, 2, 3]; the second [4, 5] duplicates the first
    assert keep_largest_lists(lists) == [1, 3, 6]
    assert keep_largest_lists([[], []]) == [0]


def test_empty_slot_gives_finite_output_and_zero_vector(bart_dir, tokenizer):
    model = new_model(bart_dir).eval()
    b = batch_of(model, tokenizer, make_records(1)[:2], with_memory=False)
    with torch.no_grad():
        assert torch.isfinite(model(**b)["logits"]).all()  # every slot empty
        sids = b["strategy_ids"]
        model.update_memory(torch.randn(2, model.config.d_model), torch.stack([sids[0], sids[0]]))
        other = (sids[0] + 1) % 8
        b["strategy_ids"] = torch.stack([sids[0], other])  # sample 0 has memory, sample 1 an empty slot
        assert torch.isfinite(model(**b)["logits"]).all()
        enc, _ = model.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"])
    assert torch.count_nonzero(enc[1, -1]) == 0
    assert torch.count_nonzero(enc[0, -1]) > 0


def test_dynamic_padding_does_not_change_a_sample(bart_dir, tokenizer):
    """Masked pooling: a sample's logits do not depend on how long the other samples of its batch are."""
    model = new_model(bart_dir)
    recs = make_records(2)
    model.train()
    model(**batch_of(model, tokenizer, recs))
    model.eval()
    short = min(recs, key=lambda r: len(" ".join(r["context"])))
    long = max(recs, key=lambda r: len(" ".join(r["context"])))
    with torch.no_grad():
        alone = model(**batch_of(model, tokenizer, [short], with_memory=False))["logits"]
        both = model(**batch_of(model, tokenizer, [short, long], with_memory=False))["logits"]
    assert torch.allclose(alone[0], both[0, : alone.size(1)], atol=1e-5)


def test_pool_all_pads_to_released_lengths(bart_dir, tokenizer):
    model = new_model(bart_dir, pool="all", max_length=80, max_length_res_memory=24)
    recs = make_records(1)
    b = batch_of(model, tokenizer, recs, max_length=80, max_length_res_memory=24)
    assert b["input_ids"].shape[1] == 80 and b["memory_input_ids"].shape[1] == 24
    model.train()
    out = model(**b)
    assert torch.isfinite(out["loss"])


def test_no_memory_ablation(bart_dir, tokenizer):
    model = new_model(bart_dir, use_memory=False)
    b = batch_of(model, tokenizer, make_records(1))
    assert b["memory_input_ids"].size(0) > 0
    model.train()
    out = model(**b)
    out["loss"].backward()
    assert all(t.size(0) == 0 for t in model.memory_bank)  # no bank updates
    assert float(out["strategy_loss"]) == 0.0 and torch.equal(out["loss"], out["gen_loss"])
    assert all(p.grad is None for p in model.strategy_encoder.parameters())
    assert model.memory_enhance_module.multihead_attn.in_proj_weight.grad is None
    enc, _ = model.encode(b["input_ids"], b["attention_mask"], b["strategy_ids"])
    assert enc.size(1) == b["input_ids"].size(1)  # no memory vector appended


def test_l_strategy_zero_drops_only_the_auxiliary_loss(bart_dir, tokenizer):
    recs = make_records(1)
    model = new_model(bart_dir)
    b = batch_of(model, tokenizer, recs)
    model.train()
    out = model(**b, l_strategy=0.0)
    out["loss"].backward()
    assert torch.equal(out["loss"], out["gen_loss"])
    assert model.strategy_cls.classifier.weight.grad is None
    # the memory still works: bank filled, strategy encoder trained through the memory attention
    assert sum(t.size(0) for t in model.memory_bank) == b["memory_input_ids"].size(0)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.strategy_encoder.parameters())
    # with the default weight the loss is gen + 0.2 * aux
    model2 = new_model(bart_dir)
    out2 = model2.train()(**b)
    assert float(out2["strategy_loss"].detach()) > 0
    assert math.isclose(out2["loss"].item(), out2["gen_loss"].item() + 0.2 * out2["strategy_loss"].item(),
                        rel_tol=1e-6)


def test_save_load_roundtrip(bart_dir, tokenizer, tmp_path):
    from magic.generator.checkpoint import load_checkpoint, save_checkpoint

    model = new_model(bart_dir, strategy_memory_max=5, use_motivation=True)
    recs = make_records(2)
    model.train()
    model(**batch_of(model, tokenizer, recs))
    model.eval()
    save_checkpoint(model, tokenizer, {"learning_rate": 1e-3}, tmp_path / "ck")
    loaded, tok2, args = load_checkpoint(tmp_path / "ck", device="cpu")
    assert args == {"learning_rate": 1e-3}  # args.json: the training arguments only
    assert loaded.generator_config == model.generator_config  # generator_config.json: the model settings
    assert loaded.use_motivation is True and loaded.pool == "masked"
    assert loaded.strategy_memory_max == 5 and not loaded.training
    for x, y in zip(model.memory_state(), loaded.memory_state()):
        assert torch.equal(x, y)
    bank = torch.load(tmp_path / "ck" / "memory_bank.pth", weights_only=True)
    assert isinstance(bank, list) and len(bank) == 8
    b = batch_of(model, tokenizer, recs, with_memory=False)
    with torch.no_grad():
        assert torch.equal(model(**b)["logits"], loaded(**b)["logits"])
    assert tok2("I feel so stressed")["input_ids"] == tokenizer("I feel so stressed")["input_ids"]


def released_state_dict(config, vocab, n_strategies=8) -> dict:
    """A state_dict named and shaped as the released DialogueModel's (BartEncoder/BartDecoder layout), written
    out here from the BART architecture rather than taken from our model."""
    d, f, P = config.d_model, config.encoder_ffn_dim, config.max_position_embeddings + 2
    g = torch.Generator().manual_seed(0)
    sd = {}

    def add(name, *shape):
        sd[name] = torch.randn(*shape, generator=g) * 0.02

    def attn(prefix):
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            add(f"{prefix}.{p}.weight", d, d)
            add(f"{prefix}.{p}.bias", d)

    def norm(prefix):
        add(f"{prefix}.weight", d)
        add(f"{prefix}.bias", d)

    for enc in ("encoder", "strategy_encoder", "decoder"):
        add(f"{enc}.embed_tokens.weight", vocab, d)
        add(f"{enc}.embed_positions.weight", P, d)
        n_layers = config.decoder_layers if enc == "decoder" else config.encoder_layers
        for i in range(n_layers):
            L = f"{enc}.layers.{i}"
            attn(f"{L}.self_attn")
            norm(f"{L}.self_attn_layer_norm")
            if enc == "decoder":
                attn(f"{L}.encoder_attn")
                norm(f"{L}.encoder_attn_layer_norm")
            add(f"{L}.fc1.weight", f, d)
            add(f"{L}.fc1.bias", f)
            add(f"{L}.fc2.weight", d, f)
            add(f"{L}.fc2.bias", d)
            norm(f"{L}.final_layer_norm")
        norm(f"{enc}.layernorm_embedding")
    add("memory_enhance_module.multihead_attn.in_proj_weight", 3 * d, d)
    add("memory_enhance_module.multihead_attn.in_proj_bias", 3 * d)
    add("memory_enhance_module.multihead_attn.out_proj.weight", d, d)
    add("memory_enhance_module.multihead_attn.out_proj.bias", d)
    add("generator.proj.weight", vocab, d)
    add("generator.proj.bias", vocab)
    add("strategy_cls.classifier.weight", n_strategies, d)
    add("strategy_cls.classifier.bias", n_strategies)
    return sd


def test_generator_config_rules(bart_dir, tokenizer, tmp_path):
    """generator_config.json is the one record of the model settings: checked on load; without it the
    checkpoint is a released one (pool "all"); an earlier version's args.json["model"] still loads."""
    import json

    from magic.generator.checkpoint import load_checkpoint, save_checkpoint
    from magic.generator.config import CONFIG_FILE, RELEASED, GeneratorConfig

    model = new_model(bart_dir, pool="masked", max_length=100)
    ck = tmp_path / "ck"
    save_checkpoint(model, tokenizer, {"lr": 1}, ck)
    saved = json.loads((ck / CONFIG_FILE).read_text())
    assert GeneratorConfig.from_dict(saved) == model.generator_config
    (ck / CONFIG_FILE).write_text(json.dumps({**saved, "poool": "all"}))
    with pytest.raises(ValueError, match=r"generator_config\.json: unknown generator setting\(s\) \['poool'\]"):
        load_checkpoint(ck)
    (ck / CONFIG_FILE).write_text(json.dumps({**saved, "pool": "some"}))
    with pytest.raises(ValueError, match="pool must be one of"):
        load_checkpoint(ck)
    (ck / CONFIG_FILE).unlink()
    released, _, args = load_checkpoint(ck, device="cpu")
    assert released.generator_config == RELEASED and released.pool == "all" and args == {"released_checkpoint": True}
    (ck / "args.json").write_text(json.dumps({"lr": 1, "model": {"pool": "masked", "max_length": 100}}))
    legacy, _, _ = load_checkpoint(ck, device="cpu")
    assert legacy.pool == "masked" and legacy.max_length == 100


def test_released_checkpoint_loads_strict(bart_dir, tokenizer, tmp_path):
    from transformers import BartConfig

    from magic.generator.checkpoint import load_checkpoint

    config = BartConfig.from_pretrained(bart_dir)
    sd = released_state_dict(config, config.vocab_size)
    ck = tmp_path / "released"
    ck.mkdir()
    torch.save(sd, ck / "dialogue_model.pth")
    bank = [torch.randn(3 if i % 2 else 0, config.d_model) for i in range(8)]
    torch.save(bank, ck / "memory_bank.pth")
    with pytest.raises(ValueError, match="bart_base_dir"):
        load_checkpoint(ck)
    model, tok, args = load_checkpoint(ck, bart_base_dir=bart_dir, device="cpu")
    assert args == {"released_checkpoint": True}
    assert model.pool == "all" and model.max_length == 512  # released padding/pooling for released weights
    own = model.state_dict()
    assert set(own) == set(sd) and all(torch.equal(own[k], sd[k]) for k in sd)
    assert [t.size(0) for t in model.memory_bank] == [0, 3] * 4
    # a checkpoint of another size names the mismatching keys
    bad = dict(sd)
    bad["generator.proj.bias"] = torch.zeros(7)
    torch.save(bad, ck / "dialogue_model.pth")
    with pytest.raises(ValueError, match="generator.proj.bias"):
        load_checkpoint(ck, bart_base_dir=bart_dir, device="cpu")


def test_records_validation_names_file_and_record(tmp_path):
    import json

    from magic.generator.data import load_records

    recs = make_records(1)
    recs[1] = dict(recs[1], strategy="Shouting")
    p = tmp_path / "train.json"
    p.write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r"train.json: record 1 \(id synthetic-0-3\): unknown strategy 'Shouting'"):
        load_records(p)
    del recs[1]["strategy"]
    p.write_text(json.dumps(recs))
    with pytest.raises(ValueError, match="record 1 .*missing field 'strategy'"):
        load_records(p)


def test_collator_on_real_valid_samples(esconv_dir, tokenizer, bart_dir):
    """Records built from the real magic/valid.txt samples of one dialogue, through dataset + collator."""
    from magic.generator.data import DialogueDataset, collator_for
    from magic.generator.records import sample_record
    from magic.esconv.dialogues import load_samples, strategy_id

    samples = load_samples(esconv_dir / "magic" / "valid.txt", "valid")
    first = [s for s in samples if s.dialogue_index == samples[0].dialogue_index]
    recs = [sample_record(s) for s in first[:5]]
    model = new_model(bart_dir)
    ds = DialogueDataset(recs, tokenizer, max_length=1024)
    b = collator_for(model)([ds[i] for i in range(len(ds))])
    sep = tokenizer.sep_token_id
    for i, r in enumerate(recs):
        row = b["input_ids"][i][b["attention_mask"][i].bool()].tolist()
        assert row[0] == tokenizer.bos_token_id and row[-1] == tokenizer.eos_token_id
        assert len(row) < 1024, "context truncated; the checks below assume the whole context"
        # sep_token.join(context): one separator between consecutive context entries
        assert row[1:-1].count(sep) == len(r["context"]) - 1
        tgt = b["labels"][i][b["labels"][i] != -100].tolist()
        assert tgt[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(tgt[:-1]).strip() == r["response"].strip()
        assert b["decoder_input_ids"][i, 0] == tokenizer.bos_token_id
        assert int(b["strategy_ids"][i]) == strategy_id(r["strategy"])
    # consecutive samples of one dialogue: the longest memory (the last sample's) is the only one encoded
    assert b["memory_input_ids"].size(0) == len(recs[-1]["response_memory"])
    assert b["memory_input_ids"].size(1) <= 64


def test_length_grouped_batches_cover_every_sample_once():
    from magic.generator.data import LengthGroupedBatchSampler

    g = torch.Generator().manual_seed(0)
    lengths = torch.randperm(40, generator=g).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=4, generator=g, chunk_batches=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    assert sorted(i for b in batches for i in b) == list(range(40))
    for b in batches:  # one chunk: each batch holds 4 consecutive lengths
        ls = sorted(lengths[i] for i in b)
        assert ls == list(range(ls[0], ls[0] + 4))
    assert [sorted(b) for b in batches] != [sorted(b) for b in list(sampler)]  # reshuffled next epoch


def test_truncation_side(tokenizer):
    from magic.generator.data import DialogueDataset

    rec = max(make_records(1), key=lambda r: len(r["context"]))
    right = DialogueDataset([rec], tokenizer, max_length=16, truncation_side="right").context_ids[0]
    left = DialogueDataset([rec], tokenizer, max_length=16, truncation_side="left").context_ids[0]
    assert len(right) == len(left) == 16
    assert right[0] == left[0] == tokenizer.bos_token_id and right[-1] == left[-1] == tokenizer.eos_token_id
    # right keeps the situation (start of the context), left keeps the latest turn (its end)
    assert rec["context"][0].startswith(tokenizer.decode(right[1:-1]).strip()[:10])
    assert rec["context"][-1].endswith(tokenizer.decode(left[1:-1]).strip()[-10:])


def test_memory_attention_matches_per_sample_reference(bart_dir, tokenizer):
    """The memory attention (padded batch, SDPA, the bank's filled entries) equals each sample's own real tokens
    attending through nn.MultiheadAttention to its own slot, max-pooled; pool "all" pools over the pads too
    (released), and without padding both agree."""
    model = new_model(bart_dir)
    recs = make_records(3)
    model.train()
    model(**batch_of(model, tokenizer, recs))  # fill some slots
    model.eval()
    b = batch_of(model, tokenizer, recs)
    assert len(set(b["attention_mask"].sum(1).tolist())) > 1
    mem = model.memory_enhance_module
    bank = model.memory_bank
    with torch.no_grad():
        states = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        got = mem(states, b["attention_mask"], b["strategy_ids"], model.bank, "masked")
        released = mem(states, b["attention_mask"], b["strategy_ids"], model.bank, "all")
        for i, s in enumerate(b["strategy_ids"].tolist()):
            slot = bank[s]
            if slot.size(0) == 0:
                assert torch.equal(got[i], torch.zeros_like(got[i])) and torch.equal(released[i], got[i])
                continue
            n = int(b["attention_mask"][i].sum())
            ref, _ = mem.multihead_attn(states[i].unsqueeze(1), slot.unsqueeze(1), slot.unsqueeze(1))
            assert torch.allclose(got[i], ref[:n, 0].max(dim=0).values, atol=1e-5)
            assert torch.allclose(released[i], ref[:, 0].max(dim=0).values, atol=1e-5)
        full = torch.ones_like(b["attention_mask"])  # no padding: masked and released pooling agree
        assert torch.allclose(mem(states, full, b["strategy_ids"], model.bank, "masked"),
                              mem(states, full, b["strategy_ids"], model.bank, "all"), atol=1e-5)
    assert any(bank[s].size(0) == 0 for s in range(8))  # the empty-slot branch ran too


def test_target_only_loss_matches_full_logits(bart_dir, tokenizer):
    """return_logits=False projects only the target tokens: same loss, NLL and gradients."""
    model = new_model(bart_dir)
    recs = make_records(3)
    model.train()
    model(**batch_of(model, tokenizer, recs))
    model.detach_memory()
    model.eval()  # no dropout, frozen bank: both passes see the same model
    b = batch_of(model, tokenizer, recs)
    assert bool((b["labels"] == -100).any())  # padded targets present
    grads = []
    for return_logits in (True, False):
        model.zero_grad()
        out = model(**b, return_logits=return_logits)
        assert ("logits" in out) == return_logits
        out["loss"].backward()
        grads.append((out["loss"].detach(), out["nll_sum"], int(out["n_tokens"]),
                      model.generator.proj.weight.grad.clone(), model.encoder.layers[0].fc1.weight.grad.clone()))
    (l1, n1, t1, g1, e1), (l2, n2, t2, g2, e2) = grads
    assert t1 == t2 and torch.allclose(l1, l2, atol=1e-5) and torch.allclose(n1, n2, rtol=1e-5)
    assert torch.allclose(g1, g2, atol=1e-6) and torch.allclose(e1, e2, atol=1e-6)
