"""Outputs are written atomically: a folder the writer did not make is never replaced, and a full disk never destroys
an earlier output."""
import errno
import json
from pathlib import Path

import pytest

from magic.common.errors import OutputExistsError


def test_atomic_dir_never_replaces_a_folder_it_did_not_write(tmp_path):
    from magic.common.io_utils import OUTPUT_MARKER, atomic_dir

    mine = tmp_path / "export"
    with atomic_dir(mine) as tmp:
        Path(tmp, "model.safetensors").write_text("v1")
    assert (mine / OUTPUT_MARKER).exists()
    with atomic_dir(mine) as tmp:  # its own folder: replaced
        Path(tmp, "model.safetensors").write_text("v2")
    assert (mine / "model.safetensors").read_text() == "v2"

    theirs = tmp_path / "notes"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    ran = []
    with pytest.raises(OutputExistsError, match=r"notes: exists .*--overwrite_output_dir"):
        with atomic_dir(theirs) as tmp:
            ran.append(tmp)
    assert not ran and (theirs / "notes.txt").read_text() == "precious"  # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "notes"]  # no temporary left
    with atomic_dir(theirs, overwrite=True) as tmp:  # the user said so
        Path(tmp, "config.json").write_text("{}")
    assert not (theirs / "notes.txt").exists()


def test_disk_full_never_destroys_an_earlier_output(tmp_path, monkeypatch):
    from magic.common import io_utils

    out = tmp_path / "train.json"
    io_utils.atomic_write_json(out, ["good"])
    folder = tmp_path / "model"
    with io_utils.atomic_dir(folder) as tmp:
        Path(tmp, "config.json").write_text("good")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io_utils.os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as e:
        io_utils.atomic_write_json(out, ["new"])
    assert e.value.filename == str(out)  # the error names the file
    with pytest.raises(OSError):
        with io_utils.atomic_dir(folder) as tmp:
            io_utils.atomic_write_text(Path(tmp, "config.json"), "new")
    monkeypatch.undo()
    assert json.loads(out.read_text()) == ["good"] and (folder / "config.json").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.json"]  # no temporary left
