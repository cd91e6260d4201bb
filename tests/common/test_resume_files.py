"""Resume files (JSON lines): the one reader drops a torn last line and skips or refuses the others, and every resume
file of the package goes through it."""
import pytest

from magic.common.errors import UserError
from magic.generator import evaluation as ev


def test_the_resume_file_reader_drops_a_torn_last_line_and_skips_or_refuses_others(tmp_path):
    """magic.common.jsonl.read_jsonl, the one reader of the JSON-lines resume files: a torn last line (no
    newline, or no JSON) is dropped and cut off; any other bad line is skipped with a warning naming file:line
    (on_bad="skip") or refused with that line (on_bad="refuse")."""
    from magic.common.jsonl import read_jsonl

    def parse(obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ValueError("expected an object with a string 'id'")
        return obj["id"]

    path = tmp_path / "state.jsonl"
    path.write_bytes(b'{"id": "a"}\n[1, 2]\n\xff\xfe\n{"id": "b"}\n{"id": "c"}')
    with pytest.warns(UserWarning) as caught:
        got = read_jsonl(path, parse, on_bad="skip", truncate=True)
    assert got.records == ["a", "b"] and got.torn and [n for n, _ in got.skipped] == [2, 3]
    said = " | ".join(str(w.message) for w in caught)
    assert f"{path}:2: " in said and "expected an object with a string 'id'" in said
    assert f"{path}:3: " in said and "not UTF-8" in said and f"{path}:5: " in said
    assert path.read_bytes() == b'{"id": "a"}\n[1, 2]\n\xff\xfe\n{"id": "b"}\n'  # only the torn line cut off
    with pytest.raises(UserError, match=rf"{path}:2: not a valid record \(expected an object with a string 'id'"):
        read_jsonl(path, parse, on_bad="refuse")


def test_every_jsonl_resume_file_follows_the_one_rule(tmp_path):
    """The answer caches (JsonlCache: motivations, strategy inference, their shards) and the evaluation's
    partial file: a torn last line is dropped; a bad line elsewhere is refused naming file:line (answers that
    cost requests) or skipped naming file:line (responses decoded again)."""
    from magic.llm.engines.cache import JsonlCache

    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"id": "a", "key": "k", "answer": "x"}\n{"id": "b", "key": "k", "ans')
    with JsonlCache(cache) as c:
        assert c.get("a", "k") == "x" and c.dropped_torn_line
    cache.write_text('{"id": "a", "key": "k", "answer": "x"}\n[1, 2]\n{"id": "b", "key": "k", "answer": "y"}\n')
    with pytest.raises(ValueError, match=rf"{cache}:2: "):
        JsonlCache(cache)

    s = {"model_path": "out/bs_4_epochs_1_20240101_120000/epoch_0_val_ppl_9.1"}
    paths, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s)
    partial.add("test-0-1", "one")
    partial.close()
    with open(paths["partial"], "a", encoding="utf-8") as f:
        f.write('[1, 2]\n{"id": "test-0-3", "response": "two"}\n{"id": "test-0-5", "resp')
    with pytest.warns(UserWarning, match=r"\.partial\.jsonl:3: .*not a JSON object"):
        _, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s,
                                     ids=["test-0-1", "test-0-3", "test-0-5"])
    assert partial.done == {"test-0-1": "one", "test-0-3": "two"}
    partial.add("test-0-5", "three")
    partial.close()
    _, partial = ev.claim_output(str(tmp_path / "ev"), s["model_path"], 1.0, 1.0, s)
    assert partial.done == {"test-0-1": "one", "test-0-3": "two", "test-0-5": "three"}  # the file was repaired
    partial.close()
