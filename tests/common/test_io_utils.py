"""Atomic writes: nothing half-written is ever left under the target name."""
import pytest

from magic.common.io_utils import atomic_dir, atomic_write_json, load_json


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        assert not target.exists()
        open(f"{tmp}/weights", "w").write("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            open(f"{tmp}/weights", "w").write("half")
            raise RuntimeError("killed mid-export")
    assert (target / "weights").read_text() == "v1"  # the old folder is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
    with atomic_dir(target) as tmp:
        open(f"{tmp}/other", "w").write("v2")
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == ["other"]  # + the marker


def test_atomic_write_json_and_load_errors(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "a": "é"\n}'
    assert load_json(path) == {"a": "é"}
    path.write_text("{broken")
    with pytest.raises(ValueError, match=r"x.json:1: not valid JSON"):
        load_json(path, "thing")
    with pytest.raises(FileNotFoundError, match="missing.json: thing not found"):
        load_json(tmp_path / "missing.json", "thing")
