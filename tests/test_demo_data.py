"""The embedded demo dataset (data/demo): loads, covers what the pipeline needs, matches its README."""
import json
import re
from collections import Counter

import pytest

from src.esconv import STRATEGIES, canonical_strategy, enumerate_samples, load_dialogues

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def demo(repo_root):
    return {s: load_dialogues(repo_root / "data" / "demo" / f"{s}.txt") for s in SPLITS}


def test_counts_match_readme(demo, repo_root):
    # the exact numbers data/demo/README.md documents
    expected = {"train": (30, 116), "valid": (8, 26), "test": (8, 8)}
    for split, (n_dialogues, n_samples) in expected.items():
        assert len(demo[split]) == n_dialogues, split
        assert len(enumerate_samples(demo[split], split)) == n_samples, split
    assert len(enumerate_samples(demo["test"], "test", test_mode="all")) == 26
    readme = (repo_root / "data" / "demo" / "README.md").read_text(encoding="utf-8")
    for split, (n_dialogues, n_samples) in expected.items():
        assert re.search(rf"\| {split} +\| {n_dialogues} +\| {n_samples}\b", readme), f"README row for {split}"


def test_all_strategies_are_targets_in_train(demo):
    targets = Counter(canonical_strategy(s.strategy) for s in enumerate_samples(demo["train"], "train"))
    assert set(targets) == set(STRATEGIES)
    assert min(targets.values()) >= 5, targets


def test_every_split_covers_all_labels_and_shapes(demo):
    for split, dialogues in demo.items():
        labels = {canonical_strategy(t.strategy) for d in dialogues for t in d.turns if t.speaker == "sys"}
        assert labels == set(STRATEGIES), split
        assert {d.turns[0].speaker for d in dialogues} == {"usr", "sys"}, f"{split}: both openers"
        assert {len(d.turns) % 2 for d in dialogues} == {0, 1}, f"{split}: odd and even lengths"
        assert {d.turns[-1].speaker for d in dialogues} == {"usr", "sys"}, f"{split}: both endings"
        assert all(4 <= len(d.turns) <= 14 for d in dialogues), split
    # the released test enumeration takes one target per dialogue: make those 8 all different
    test_targets = [canonical_strategy(s.strategy) for s in enumerate_samples(demo["test"], "test")]
    assert sorted(test_targets) == sorted(STRATEGIES)


def test_text_is_tokenised_the_multiesc_way(repo_root):
    for split in SPLITS:
        for line in (repo_root / "data" / "demo" / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line)["dialog"]:
                text = turn["text"]
                assert "'" not in text.replace(" ' ", ""), text  # every apostrophe spaced
                assert not re.search(r"\w[.,!?]", text), text  # no punctuation glued to a word
    train = (repo_root / "data" / "demo" / "train.txt").read_text(encoding="utf-8")
    assert " ' m " in train and "n ' t " in train  # contractions left for the dataset build to expand


def test_no_esconv_text(demo, esconv_dir):
    real_situations = set()
    real_turns = set()
    for path in [esconv_dir / "magic" / "valid.txt", esconv_dir / "magic" / "test.txt",
                 esconv_dir / "reconstructed" / "train.txt"]:
        if path.exists():
            for d in load_dialogues(path):
                real_situations.add(d.situation.strip())
                real_turns.update(t.text for t in d.turns if len(t.text.split()) > 12)
    for split, dialogues in demo.items():
        for d in dialogues:
            assert d.situation.strip() not in real_situations, f"{split} line {d.line}"
            for t in d.turns:
                # long turns only: stock phrases (up to 12 tokens, e.g. "Hi there ! What would you like to talk
                # about today ?") coincide naturally with real ones
                assert t.text not in real_turns, f"{split} line {d.line}: {t.text!r}"
