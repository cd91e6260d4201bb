"""The generator record is described once, beside its builder (records.py)."""
import re

from magic.esconv.dialogues import make_sample, parse_dialogue
from magic.generator import data, records


def test_the_generator_record_is_described_once_beside_its_builder():
    """records.py's docstring describes every field sample_record writes (and no other); data.py, which reads
    the records, points to it instead of describing them again."""
    dialogue = parse_dialogue({"situation": "s", "dialog": [
        {"speaker": "usr", "text": "hi ."}, {"speaker": "sys", "text": "hello .", "strategy": "Question"},
        {"speaker": "usr", "text": "I ' m sad ."}, {"speaker": "sys", "text": "why ?", "strategy": "Question"}]},
        "t", 1, 0)
    built = records.sample_record(make_sample(dialogue, 3, "train"))
    described = re.findall(r'^\s+[{ ]"(\w+)":', records.__doc__, re.M)
    assert described == list(built), (described, list(built))
    assert not re.search(r'"response_memory":', data.__doc__) and "records.py" in data.__doc__
