"""Strategy parsing into output entries and the accuracy / F1 report, on hand-made answers."""
import json

import pytest

from magic.llm.report import (answer_to_entry, entries_from_answers, format_table, main, match_gold,
                                 released_label, report_split, strategy_metrics)

ANSWERS = {
    "The motivation of the supporter in choosing the strategy [Question] is to learn more.": "[question]",
    "The motivation of the supporter in choosing the strategy [reflection of feelings] is to validate.":
        "[reflection of feelings]",
    "...strategy [Self disclosure] is to build rapport.": "[self-disclosure]",
    # the bracketed label wins over an earlier bare word
    "To question less, the supporter uses [Affirmation and Reassurance].": "[affirmation and reassurance]",
    "The supporter offers providing suggestions or information here.": "[providing suggestions or information]",
    "I am not sure what to say.": "[others]",
    "": "[others]",
}


def test_answers_become_released_entries():
    for answer, label in ANSWERS.items():
        entry, found = answer_to_entry("valid-0-1", answer)
        assert entry == {"id": "valid-0-1", "strategy": label, "motivation": answer}
        assert found == (answer not in ("I am not sure what to say.", ""))
    assert released_label("Restatement or Paraphrasing") == "[restatement or paraphrasing]"
    entries, unparsed = entries_from_answers(["a", "b", "c"], ["[Greeting] hi", "nothing", "[others] x"])
    assert [e["strategy"] for e in entries] == ["[greeting]", "[others]", "[others]"]
    assert unparsed == 1  # an explicit [others] is a parsed answer, not an unparsed one
    with pytest.raises(ValueError):
        entries_from_answers(["a"], [])


def test_metrics_on_hand_made_labels():
    gold = [0, 0, 0, 2, 2, 5]
    pred = [0, 0, 2, 2, 7, 5]
    m = strategy_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-class F1 over labels present: 0: p=1, r=2/3 -> 0.8; 2: p=1/2, r=1/2 -> 0.5; 5: 1; 7: 0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0 + 0.0) / 4)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 1.0) / 6)
    assert m["confusion"][0][:3] == [2, 0, 1] and m["confusion"][2][7] == 1
    assert len(m["confusion"]) == 8 and all(len(r) == 8 for r in m["confusion"])
    assert m["gold_counts"] == [3, 0, 2, 0, 0, 1, 0, 0] and m["pred_counts"][7] == 1


def test_gold_is_matched_by_id_not_position():
    gold = {"valid-0-1": 0, "valid-0-3": 2}
    entries = [{"id": "valid-0-3", "strategy": "[reflection of feelings]"}, {"id": "valid-0-1", "strategy": "[question]"}]
    assert match_gold(entries, gold, "out.json") == ([2, 0], [2, 0])
    with pytest.raises(ValueError, match=r"out\.json: entry 1 has id 'test-9'"):
        match_gold([entries[0], {"id": "test-9", "strategy": "[question]"}], gold, "out.json")
    with pytest.raises(ValueError, match="valid-0-1"):
        match_gold([{"id": "valid-0-1", "strategy": "[shouting]"}], gold, "out.json")


def test_report_files_table_and_cli(tmp_path):
    dialogues = [{"situation": "s", "dialog": [
        {"speaker": "usr", "text": "hi"}, {"speaker": "sys", "text": "why?", "strategy": "Question"},
        {"speaker": "usr", "text": "sad"}, {"speaker": "sys", "text": "I see", "strategy": "Reflection of feelings"}]}]
    gold_file = tmp_path / "valid.txt"
    gold_file.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    out = tmp_path / "strategy_with_motivation_valid.json"
    out.write_text(json.dumps([{"id": "valid-0-1", "strategy": "[question]", "motivation": "[Question] ..."},
                               {"id": "valid-0-3", "strategy": "[others]", "motivation": "no idea"}]))
    m = report_split(json.loads(out.read_text()), {"valid-0-1": 0, "valid-0-3": 2}, str(tmp_path / "r"), "valid")
    assert m["accuracy"] == 0.5 and m["unparsed_as_others"] == 1
    assert json.loads((tmp_path / "r_report.json").read_text())["labels"][2] == "Reflection of Feelings"
    assert (tmp_path / "r_confusion.png").read_bytes()[:4] == b"\x89PNG"
    table = format_table([m])
    assert "valid" in table and "0.5000" in table
    assert main(["--outputs", str(out), "--gold_file", str(gold_file), "--split", "valid"]) == 0
    assert (tmp_path / "strategy_with_motivation_valid_report.json").exists()
    assert main(["--outputs", str(out), "--gold_file", str(gold_file), "--split", "test"]) == 1  # ids differ
