"""A dialogue file that is not UTF-8 is named in the error."""
import json

import pytest

from tests.dialogues import make_dialogue


def _dialogue(i):
    return make_dialogue(i, text="dialogue {i} turn {t} : I am here .")


def test_non_utf8_dialogue_file_is_named(tmp_path):
    from magic.esconv.dialogues import ESConvFormatError, load_dialogues

    p = tmp_path / "train.txt"
    p.write_bytes(json.dumps(_dialogue(0)).encode() + b"\n" + b'{"situation": "caf\xe9"}\n')
    with pytest.raises(ESConvFormatError, match=r"train.txt:2: .*not UTF-8"):
        load_dialogues(p)
