"""The demo world (data/demo): make_demo.py's output, loads, covers what the pipeline needs, matches its README."""
import json
import re
from collections import Counter

import pytest

from magic.esconv.dialogues import STRATEGIES, canonical_strategy, enumerate_samples, load_dialogues

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def demo(repo_root):
    return {s: load_dialogues(repo_root / "data" / "demo" / f"{s}.txt") for s in SPLITS}


def test_counts_match_readme(demo, repo_root):
    # the exact numbers data/demo/README.md documents
    expected = {"train": (40, 186), "valid": (10, 52), "test": (16, 16)}
    for split, (n_dialogues, n_samples) in expected.items():
        assert len(demo[split]) == n_dialogues, split
        assert len(enumerate_samples(demo[split], split)) == n_samples, split
    assert len(enumerate_samples(demo["test"], "test", test_mode="all")) == 74
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
    # the released test enumeration takes one target per dialogue: 2 of each strategy (balanced baselines)
    test_targets = [canonical_strategy(s.strategy) for s in enumerate_samples(demo["test"], "test")]
    assert sorted(test_targets) == sorted(STRATEGIES * 2)


def test_files_are_make_demo_output(repo_root):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(repo_root / "data" / "demo" / "make_demo.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_strategy_follows_the_cue(demo):
    # the README's rules, checked on the data: an advice request is always answered with a suggestion, a
    # question about the supporter with self-disclosure, self-blame with reassurance, thanks with Others
    rules = {"What should I do ?": "Providing Suggestions or Information",
             "Has this ever happened to you ?": "Self-disclosure",
             "Maybe it is all my fault .": "Affirmation and Reassurance",
             "Thanks for listening to me .": "Others"}
    seen = Counter()
    for split in SPLITS:
        for s in enumerate_samples(demo[split], split):
            if s.context[-1] in rules:
                assert canonical_strategy(s.strategy) == rules[s.context[-1]], s.id
                seen[s.context[-1]] += 1
    assert set(seen) == set(rules), seen


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
