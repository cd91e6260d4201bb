"""The sample layer: validation, enumeration, strategies, contractions."""
import json

import pytest

from magic.esconv.dialogues import (
    STRATEGIES, ESConvFormatError, canonical_strategy, enumerate_samples, expand_contractions,
    load_dialogues, load_samples, parse_strategy, strategy_id,
)


def write_lines(path, dialogues):
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    return path


def turn(speaker, text, strategy=None):
    t = {"speaker": speaker, "text": text}
    if strategy:
        t["strategy"] = strategy
    return t


SEEKER_OPENED_ODD = {  # usr sys usr sys usr : targets 1, 3
    "situation": "lost my job",
    "dialog": [turn("usr", "hi"), turn("sys", "hello , what happened ?", "Question"),
               turn("usr", "I ' m sad"), turn("sys", "that sounds hard .", "Reflection of feelings"),
               turn("usr", "thanks")],
}
SUPPORTER_OPENED_EVEN = {  # sys usr sys usr sys usr : targets 2, 4
    "situation": "exam stress",
    "dialog": [turn("sys", "hi there", "Greeting"), turn("usr", "hello"),
               turn("sys", "how are you ?", "Question"), turn("usr", "stressed"),
               turn("sys", "try a walk", "Providing Suggestions or Information"), turn("usr", "ok")],
}


def test_enumeration_train_targets_and_memory(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    samples = load_samples(f, "train")
    assert [s.id for s in samples] == ["train-0-1", "train-0-3", "train-1-2", "train-1-4"]
    first, second = samples[0], samples[1]
    assert first.context == ("lost my job", "hi")
    assert first.response == "hello , what happened ?" and first.strategy == "Question"
    assert first.response_memory == () and first.strategy_memory == ()
    assert second.context == ("lost my job", "hi", "hello , what happened ?", "I ' m sad")
    assert second.response_memory == ("hello , what happened ?",)
    assert second.strategy_memory == ("Question",)
    # the opening supporter turn is never a target but it is memory
    assert samples[2].response_memory == ("hi there",)
    assert samples[3].strategy_memory == ("Greeting", "Question")


def test_enumeration_test_split_last_target_without_memory(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    samples = load_samples(f, "test")
    assert [s.id for s in samples] == ["test-0-3", "test-1-4"]  # both dialogues end with a seeker turn
    assert all(s.response_memory == () and s.strategy_memory == () for s in samples)
    assert samples[1].context[-1] == "stressed"
    every = load_samples(f, "test", test_mode="all")
    assert [s.id for s in every] == ["test-0-1", "test-0-3", "test-1-2", "test-1-4"]
    with pytest.raises(ValueError):
        load_samples(f, "test", test_mode="first")


def test_dialogue_ending_with_supporter(tmp_path):
    d = {"situation": "s", "dialog": SEEKER_OPENED_ODD["dialog"][:4]}
    f = write_lines(tmp_path / "d.txt", [d])
    assert [s.id for s in load_samples(f, "test")] == ["test-0-3"]
    assert [s.id for s in load_samples(f, "valid")] == ["valid-0-1", "valid-0-3"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("dialog"), "missing key 'dialog'"),
    (lambda d: d.pop("situation"), "missing key 'situation'"),
    (lambda d: d["dialog"][2].update(speaker="seeker"), "speaker 'seeker', expected 'usr' or 'sys'"),
    (lambda d: d["dialog"][1].update(strategy="Empathy"), "unknown strategy 'Empathy'"),
    (lambda d: d["dialog"][1].pop("strategy"), "supporter turn without a 'strategy'"),
    (lambda d: d["dialog"][2].update(speaker="sys", strategy="Question"), "two 'sys' turns in a row"),
    (lambda d: d["dialog"][3].update(text="   "), "empty or missing 'text'"),
])
def test_validation_names_file_line_dialogue_and_expectation(tmp_path, mutate, expected):
    bad = json.loads(json.dumps(SEEKER_OPENED_ODD))
    mutate(bad)
    f = write_lines(tmp_path / "bad.txt", [SUPPORTER_OPENED_EVEN, bad])
    with pytest.raises(ESConvFormatError) as e:
        load_dialogues(f)
    assert f"{f}:2: dialogue 1:" in str(e.value)
    assert expected in str(e.value)


def test_not_json_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text(json.dumps(SEEKER_OPENED_ODD) + "\n\n{not json\n")
    with pytest.raises(ESConvFormatError, match=r"bad.txt:3: dialogue 1: not valid JSON"):
        load_dialogues(f)


def test_crlf_and_blank_lines_accepted(tmp_path):
    f = tmp_path / "crlf.txt"
    f.write_bytes((json.dumps(SEEKER_OPENED_ODD) + "\r\n\r\n" + json.dumps(SUPPORTER_OPENED_EVEN) + "\r\n").encode())
    ds = load_dialogues(f)
    assert [d.line for d in ds] == [1, 3] and [d.index for d in ds] == [0, 1]


def test_strategy_table_and_lookup():
    assert STRATEGIES[0] == "Question" and STRATEGIES[6] == "Greeting" and STRATEGIES[7] == "Others"
    assert strategy_id("Reflection of feelings") == 2 == strategy_id("[reflection of feelings]")
    assert strategy_id("self disclosure") == 3
    assert canonical_strategy("[providing suggestions or information]") == "Providing Suggestions or Information"
    with pytest.raises(KeyError, match="expected one of"):
        strategy_id("Providing Suggestions")


@pytest.mark.parametrize("answer, expected", [
    ("The motivation of the supporter in choosing the strategy [Question] is to ...", "Question"),
    ("Motivation: ... strategy [affirmation and reassurance] to comfort, not a question", "Affirmation and Reassurance"),
    ("I would ask a question here", "Question"),
    ("[Self disclosure] sharing", "Self-disclosure"),
    ("first [Greeting] then [Others]", "Greeting"),
    ("nothing to see", None),
    ("", None),
])
def test_parse_strategy(answer, expected):
    assert parse_strategy(answer) == expected


def test_contractions():
    assert expand_contractions("i ' m fine , don ' t worry . It ' s ok") == "I am fine , Do not worry . It is ok"
    assert expand_contractions("I can ' t , they ' d") == "I Cannot , They would"
    # whole words only: "She ' s" is not "He ' s"
    assert expand_contractions("She ' s here") == "She is here"
    assert expand_contractions("Bob ' s car") == "Bob ' s car"


def test_real_counts_and_motivation_alignment(esconv_dir):
    train = load_samples(esconv_dir / "reconstructed" / "train.txt", "train")
    valid = load_samples(esconv_dir / "magic" / "valid.txt", "valid")
    test = load_samples(esconv_dir / "magic" / "test.txt", "test")
    assert (len(train), len(valid), len(test)) == (10191, 2156, 195)
    assert len({s.id for s in train}) == len(train)
    motivations = json.loads((esconv_dir / "magic" / "motivations_4_LLaMA.json").read_text())
    named = [parse_strategy(m) for m in motivations]
    assert [strategy_id(n) for n in named] == [s.strategy_id for s in train]


def test_enumerate_samples_accepts_dialogue_list(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SUPPORTER_OPENED_EVEN])
    assert len(enumerate_samples(load_dialogues(f), "valid")) == 2
