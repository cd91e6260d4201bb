"""Step 6: data/{train,valid,test}.json from dialogues and LLM outputs."""
import json
import subprocess
import sys

import pytest

from tests.esconv.test_esconv import SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN, write_lines

SCRIPT = "data/add_memory_motivation.py"
KEYS = {"id", "context", "response", "strategy", "gold_strategy", "strategy_source", "response_memory",
        "strategy_memory", "motivation"}


def run_build(repo_root, *args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=repo_root, capture_output=True, text=True)


@pytest.fixture
def dialogue_files(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    return ["--train_file", str(f), "--valid_file", str(f), "--test_file", str(f), "--allow_shared_dialogues"]


def llm_files(folder, n_train, n_test, strategy="[question]", with_ids=True, split_ids=None):
    folder.mkdir(exist_ok=True)
    ids = split_ids or {"": [f"train-{d}-{t}" for d, t in ((0, 1), (0, 3), (1, 2), (1, 4))][:n_train],
                        "_valid": [f"valid-{d}-{t}" for d, t in ((0, 1), (0, 3), (1, 2), (1, 4))][:n_train],
                        "_test": ["test-0-3", "test-1-4"][:n_test]}
    for suffix, id_list in ids.items():
        entries = [{"strategy": strategy, "motivation": f"because {i}"} for i in id_list]
        if with_ids:
            for e, i in zip(entries, id_list):
                e["id"] = i
        (folder / f"strategy_with_motivation{suffix}.json").write_text(json.dumps(entries))
    return folder


def test_gold_build_without_llm_files(tmp_path, repo_root, dialogue_files):
    out = tmp_path / "out"
    r = run_build(repo_root, *dialogue_files, "--llm_dir", str(tmp_path / "none"), "--output_dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "warning: no LLM strategy files" in r.stderr
    train = json.loads((out / "train.json").read_text())
    test = json.loads((out / "test.json").read_text())
    assert len(train) == 4 and len(test) == 2
    assert set(train[1]) == KEYS
    assert train[1]["context"] == ["lost my job", "hi", "hello , what happened ?", "I am sad"]
    assert train[1]["strategy"] == "Reflection of feelings" == train[1]["gold_strategy"]
    assert train[1]["motivation"] == ""
    assert {r["strategy_source"] for r in train + test} == {"gold"}  # recorded truthfully


def test_inferred_strategies_merged_by_id(tmp_path, repo_root, dialogue_files):
    llm = llm_files(tmp_path / "llm", 4, 2)
    out = tmp_path / "out"
    r = run_build(repo_root, *dialogue_files, "--llm_dir", str(llm), "--output_dir", str(out))
    assert r.returncode == 0, r.stderr
    valid = json.loads((out / "valid.json").read_text())
    assert [v["strategy"] for v in valid] == ["Question"] * 4
    assert valid[1]["gold_strategy"] == "Reflection of feelings"
    assert valid[3]["motivation"] == "because valid-1-4"
    assert {v["strategy_source"] for v in valid} == {"inferred"}
    r = run_build(repo_root, *dialogue_files, "--llm_dir", str(llm), "--output_dir", str(out),
                  "--strategy_source", "gold")
    valid = json.loads((out / "valid.json").read_text())
    assert valid[1]["strategy"] == "Reflection of feelings" and valid[1]["motivation"] == "because valid-0-3"
    assert {v["strategy_source"] for v in valid} == {"gold"}


def test_llm_file_without_ids_is_refused(tmp_path, repo_root, dialogue_files):
    llm = llm_files(tmp_path / "llm", 4, 2, with_ids=False)
    r = run_build(repo_root, *dialogue_files, "--llm_dir", str(llm), "--output_dir", str(tmp_path / "out"))
    assert r.returncode == 1 and not (tmp_path / "out").exists()
    assert f"{llm / 'strategy_with_motivation.json'}: entry 0 has no 'id'" in r.stderr
    # one error line (the shared-dialogue warnings come from --allow_shared_dialogues, which the fixture needs)
    assert len([x for x in r.stderr.strip().splitlines() if not x.startswith("warning:")]) == 1


@pytest.mark.parametrize("case, message", [
    ("count", "3 entries, expected 4"),
    ("strategy", "cannot parse strategy '[empathy]'"),
    ("ids", "has id 'train-9-9', expected 'train-0-1'"),
])
def test_bad_llm_file_is_refused_and_nothing_written(tmp_path, repo_root, dialogue_files, case, message):
    if case == "count":
        llm = llm_files(tmp_path / "llm", 3, 2)
    elif case == "strategy":
        llm = llm_files(tmp_path / "llm", 4, 2, strategy="[empathy]")
    else:
        llm = llm_files(tmp_path / "llm", 4, 2)
        entries = json.loads((llm / "strategy_with_motivation.json").read_text())
        entries[0]["id"] = "train-9-9"
        (llm / "strategy_with_motivation.json").write_text(json.dumps(entries))
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.json").write_text("previous")
    r = run_build(repo_root, *dialogue_files, "--llm_dir", str(llm), "--output_dir", str(out))
    assert r.returncode != 0
    assert message in r.stderr and "strategy_with_motivation" in r.stderr
    if case != "count":
        assert "sample train-0-1" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train.json"]
    assert (out / "train.json").read_text() == "previous"


BAD_LINES = {
    "not json": ("{oops", "not valid JSON"),
    "missing dialog": (json.dumps({"situation": "x"}), "missing key 'dialog'"),
    "unknown speaker": (json.dumps({"situation": "x", "dialog": [{"speaker": "bot", "text": "a"}]}),
                        "speaker 'bot', expected 'usr' or 'sys'"),
    "unknown strategy": (json.dumps({"situation": "x", "dialog": [
        {"speaker": "usr", "text": "a"}, {"speaker": "sys", "text": "b", "strategy": "Hugging"}]}),
        "unknown strategy 'Hugging'"),
    "two seeker turns": (json.dumps({"situation": "x", "dialog": [
        {"speaker": "usr", "text": "a"}, {"speaker": "usr", "text": "b"}]}), "two 'usr' turns in a row"),
    "empty text": (json.dumps({"situation": "x", "dialog": [{"speaker": "usr", "text": ""}]}),
                   "empty or missing 'text'"),
}


@pytest.mark.parametrize("defect", sorted(BAD_LINES))
def test_bad_dialogue_file_is_refused(tmp_path, repo_root, defect):
    line, message = BAD_LINES[defect]
    good = write_lines(tmp_path / "good.txt", [SEEKER_OPENED_ODD])
    bad = tmp_path / "bad.txt"
    bad.write_text(json.dumps(SEEKER_OPENED_ODD) + "\n" + line + "\n")
    out = tmp_path / "out"
    r = run_build(repo_root, "--train_file", str(good), "--valid_file", str(bad), "--test_file", str(good),
                  "--output_dir", str(out))
    assert r.returncode != 0
    assert f"{bad}:2: dialogue 1:" in r.stderr and message in r.stderr
    assert not out.exists()


def test_real_data_build(esconv_dir, repo_root, tmp_path):
    out = tmp_path / "out"
    r = run_build(repo_root, "--train_file", str(esconv_dir / "reconstructed/train.txt"),
                  "--valid_file", str(esconv_dir / "magic/valid.txt"), "--test_file", str(esconv_dir / "magic/test.txt"),
                  "--llm_dir", str(tmp_path / "none"), "--output_dir", str(out))
    assert r.returncode == 0, r.stderr
    counts = {}
    for split in ("train", "valid", "test"):
        recs = json.loads((out / f"{split}.json").read_text())
        counts[split] = len(recs)
        assert set(recs[0]) == KEYS
        assert not any(" ' m " in turn for rec in recs for turn in rec["context"] + [rec["response"]])
    assert counts == {"train": 10191, "valid": 2156, "test": 195}
