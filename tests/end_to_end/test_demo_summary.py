"""scripts/demo_summary.py: the forced-wrong-strategy file and the timing table (the full summary runs in
tests/end_to_end/test_end_to_end.py)."""
import json

import pytest

from demo_summary import SummaryError, main, timing_rows, wrong_strategies
from magic.esconv.dialogues import STRATEGIES, strategy_id


def test_wrong_strategies_never_gold(tmp_path):
    recs = [{"id": f"test-{i}-1", "strategy": STRATEGIES[0], "gold_strategy": s} for i, s in enumerate(STRATEGIES)]
    src, out = tmp_path / "test.json", tmp_path / "wrong.json"
    src.write_text(json.dumps(recs))
    assert wrong_strategies(str(src), str(out)) == len(STRATEGIES)
    wrong = json.loads(out.read_text())
    assert [r["id"] for r in wrong] == [r["id"] for r in recs]
    assert all(strategy_id(w["strategy"]) != strategy_id(r["gold_strategy"]) for w, r in zip(wrong, recs))
    assert len({w["strategy"] for w in wrong}) == len(STRATEGIES)  # a permutation, not one constant label


def test_timing_rows_keep_the_latest_value(tmp_path):
    (tmp_path / "timings.tsv").write_text("0 data\t1\n1 motivations\t50\n0 data\t2\n")
    assert timing_rows(str(tmp_path)) == [("0 data", 2), ("1 motivations", 50)]
    (tmp_path / "timings.tsv").write_text("0 data\tfast\n")
    with pytest.raises(SummaryError, match="line 1"):
        timing_rows(str(tmp_path))


def test_missing_artefacts_fail_with_one_line(tmp_path, capsys):
    assert main(["summary", "--work", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("demo_summary.py: error:") and "\n" not in err
    assert not (tmp_path / "SUMMARY.md").exists()


def test_name_strategies_puts_the_gold_label_in_front(tmp_path, repo_root):
    from demo_summary import name_strategies
    from magic.esconv.dialogues import canonical_strategy, load_samples, parse_strategy

    train = repo_root / "data" / "demo" / "train.txt"
    samples = load_samples(train, "train")
    mot = tmp_path / "motivations_4_LLaMA.json"
    answers = ["The supporter wants to help."] * len(samples)
    answers[0] = f"The motivation of the supporter in choosing the strategy [{samples[0].strategy}] is to help."
    mot.write_text(json.dumps(answers))
    (tmp_path / "motivations_4_LLaMA.ids.json").write_text(json.dumps([s.id for s in samples]))
    assert name_strategies(str(train), str(mot)) == (len(samples) - 1, len(samples))
    named = json.loads(mot.read_text())
    assert named[0] == answers[0]  # already named: untouched
    assert all(parse_strategy(m) == canonical_strategy(s.strategy) for s, m in zip(samples, named))
    assert json.loads((tmp_path / "motivations_4_LLaMA.raw.json").read_text()) == answers
    assert name_strategies(str(train), str(mot)) == (len(samples) - 1, len(samples))  # idempotent
    assert json.loads(mot.read_text()) == named
