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


# ---- what stands at an output path (magic.common.io_utils.output_target, the rule of every file writer)
def _node(tmp_path, kind):
    import os
    import stat

    p = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "char_device":  # a copy of /dev/full's node (root only: containers run as root)
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    else:
        p.mkdir()
    return p


@pytest.mark.parametrize("kind", ["fifo", "char_device", "folder"])
def test_a_writer_refuses_a_fifo_a_device_or_a_folder_and_leaves_it_as_it_was(tmp_path, kind):
    import os
    import stat

    from magic.common.errors import UserError
    from magic.common.io_utils import atomic_write_json, atomic_write_text

    node = _node(tmp_path, kind)
    before = os.lstat(node)
    what = {"fifo": "a FIFO", "char_device": "a character device", "folder": "a folder"}[kind]
    for write in (lambda: atomic_write_text(node, "x"), lambda: atomic_write_json(node, {})):
        with pytest.raises(UserError, match=rf"^{node}: is {what}.*; refusing to write over it"):
            write()
    after = os.lstat(node)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
    link = tmp_path / "link"
    link.symlink_to(node)  # through a symlink too
    with pytest.raises(UserError, match=f"is {what}"):
        atomic_write_text(link, "x")
    assert link.is_symlink()


def test_a_symlink_is_followed_its_target_written_and_the_link_kept(tmp_path):
    from magic.common.io_utils import atomic_write_text

    target = tmp_path / "real" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "later.json"
    dangling.symlink_to(tmp_path / "real" / "later.json")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.json").read_text() == "made"


def test_an_existing_file_keeps_its_mode(tmp_path):
    import os

    from magic.common.io_utils import atomic_write_text

    private = tmp_path / "dialogue.jsonl"
    private.write_text("{}\n")
    private.chmod(0o600)
    atomic_write_text(private, "{}\n{}\n")
    assert private.stat().st_mode & 0o777 == 0o600 and private.read_text() == "{}\n{}\n"
    private.chmod(0o4755)  # permission bits kept, not setuid: the new content is not the program it was given to
    atomic_write_text(private, "x")
    assert private.stat().st_mode & 0o7777 == 0o755
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stdout_stderr_and_dev_null_are_written_through_never_replaced(tmp_path, capfd):
    from magic.common.io_utils import atomic_write_text

    for name, target in (("out", "/proc/self/fd/1"), ("err", "/proc/self/fd/2"), ("null", "/dev/null")):
        link = tmp_path / name  # as /dev/stdout is: a link to the process's stream
        link.symlink_to(target)
        atomic_write_text(link, f"to {name}\n")
        assert link.is_symlink(), name  # the link (the system's /dev/stdout) is not replaced by a file
    got = capfd.readouterr()
    assert got.out == "to out\n" and got.err == "to err\n"


def test_chat_save_onto_a_symlink_appends_to_its_target_and_keeps_a_private_mode(tmp_path):
    from magic.chat.engine import save_line

    target = tmp_path / "kept" / "dialogues.jsonl"
    target.parent.mkdir()
    target.write_text('{"a": 1}')
    target.chmod(0o600)
    link = tmp_path / "dialogues.jsonl"
    link.symlink_to(target)
    assert save_line(str(link), '{"b": 2}\n') == "appended to"
    assert link.is_symlink() and target.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert target.stat().st_mode & 0o777 == 0o600
    fifo = _node(tmp_path, "fifo")
    with pytest.raises(ValueError, match="is a FIFO"):  # refused, not opened for reading (which would hang)
        save_line(str(fifo), "{}\n")


def test_compare_results_and_chat_refuse_a_fifo_output_with_one_line(tmp_path, capsys):
    import importlib.util
    import os

    from tests.metric.test_compare_results import REFS, run, write_scores

    fifo = _node(tmp_path, "fifo")
    a = write_scores(tmp_path / "a.scores.json", REFS)
    rc, _, err = run([a, a, "--output", fifo, "--resamples", "1000"], capsys)
    assert rc == 2 and err.startswith(f"compare_results.py: error: {fifo}: is a FIFO") and err.count("\n") == 1
    link = tmp_path / "out.json"
    link.symlink_to(a)  # followed by the writers: an input behind a link is still an input
    before = a.read_text()
    rc, _, err = run([a, a, "--output", link, "--resamples", "1000"], capsys)
    assert rc == 2 and "--output is one of the inputs" in err and a.read_text() == before
    spec = importlib.util.spec_from_file_location("chat", Path(__file__).resolve().parents[2] / "chat.py")
    chat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chat)
    dialogue = tmp_path / "dialogue.json"
    dialogue.write_text(json.dumps({"situation": "s", "dialog": [{"speaker": "usr", "text": "hi"}]}))
    rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--input", str(dialogue),
                    "--output", str(fifo)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"chat.py: error: --output {fifo}: is a FIFO"), err
    assert os.path.exists(fifo) and not os.path.isfile(fifo)
