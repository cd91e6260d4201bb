"""chat.py's input and output: --input not UTF-8 and --output unwritable are one line before any work; bytes typed at
the terminal that are not UTF-8 are refused with the byte and the chat goes on; a turn shows a "thinking" sign on a
terminal while it runs, and nothing in piped output."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tests.scripts import load_script as _script, script_env as _env

REPO = Path(__file__).resolve().parents[2]


def _dialogue_file(path):
    path.write_text(json.dumps({"situation": "exams", "dialog": [
        {"speaker": "usr", "text": "Hello , I feel lonely ."}]}), encoding="utf-8")
    return path


def test_chat_input_that_is_not_utf8_is_one_line_before_anything_is_loaded(tmp_path, capsys):
    chat = _script("chat.py")
    bad = tmp_path / "dialogue.json"
    bad.write_bytes(b'{"situation": "caf\xe9", "dialog": []}')
    rc = chat.main(["--model_path", str(tmp_path / "no_such_checkpoint"), "--strategy", "Question",
                    "--input", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"chat.py: error: {bad}: not UTF-8 text (byte 18: "), err


@pytest.mark.parametrize("where", ["folder", "under_a_file", "read_only"])
def test_chat_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, where):
    chat = _script("chat.py")
    dialogue = _dialogue_file(tmp_path / "dialogue.json")
    if where == "folder":
        out = tmp_path / "replies"
        out.mkdir()
        expected = f"--output {out}: is a folder; expected a file name"
    elif where == "under_a_file":
        (tmp_path / "notes.txt").write_text("x")
        out = tmp_path / "notes.txt" / "reply.json"
        expected = f"--output {out}: {tmp_path / 'notes.txt'} is not a folder"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "reply.json"
        expected = f"--output {out}: cannot write in {ro}"
    rc = chat.main(["--model_path", str(tmp_path / "no_such_checkpoint"), "--strategy", "Question",
                    "--input", str(dialogue), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"chat.py: error: {expected}"), err  # the output, not the (missing) model: before loading


def test_terminal_chat_given_bytes_that_are_not_utf8_says_so_and_goes_on(ckpt):
    rng = random.Random(0)
    noise = bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(60))
    typed = b"hello there\ncaf\xe9 \xff\xfe\n" + noise + b"\nI feel sad\n/quit\n"
    proc = subprocess.run([sys.executable, str(REPO / "chat.py"), "--model_path", str(ckpt), "--strategy", "Question",
                           "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4", "--device", "cpu"],
                          input=typed, capture_output=True, env=_env(), cwd=REPO, timeout=240)
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and "Traceback" not in out + err, out + err
    assert out.count("supporter:") == 2, out  # "hello there" and "I feel sad", the one after the noise
    said = [ln for ln in out.splitlines() if ln.startswith("error: line ")]
    assert len(said) == 2, out
    assert said[0].startswith("error: line 2 is not UTF-8 text (byte 3: ") and "not answered" in said[0], said
    assert said[1].startswith("error: line 3 is not UTF-8 text"), said


def test_a_typed_line_with_undecodable_bytes_is_refused_with_the_byte(monkeypatch):
    """What input() returns under a UTF-8 locale with surrogateescape (lone surrogates), and raw bytes."""
    from magic.chat.engine import typed_text

    assert typed_text("I'm sad") == "I'm sad" and typed_text("café".encode()) == "café"
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 3: "):
        typed_text(b"caf\xe9 \xff")
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 3: "):
        typed_text(b"caf\xe9 \xff".decode("utf-8", "surrogateescape"))


def test_the_output_is_never_the_input_file_even_through_a_symlink(tmp_path, capsys):
    chat = _script("chat.py")
    dialogue = _dialogue_file(tmp_path / "dialogue.json")
    before = dialogue.read_text()
    link = tmp_path / "reply.json"
    link.symlink_to(dialogue)
    for out in (dialogue, link):
        rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--input", str(dialogue),
                        "--output", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and f"chat.py: error: --output {out}: is --input" in err, err
    assert dialogue.read_text() == before


def test_an_endless_or_huge_input_is_refused_after_a_bounded_read(tmp_path, capsys):
    chat = _script("chat.py")
    from magic.chat.engine import MAX_INPUT_BYTES

    for path in ("/dev/zero", tmp_path / "huge.jsonl"):
        if path != "/dev/zero":
            with open(path, "wb") as f:
                f.truncate(MAX_INPUT_BYTES + 10)  # sparse: no disk used
        rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--input", str(path)])
        err = capsys.readouterr().err
        assert rc == 2 and err == (f"chat.py: error: {path}: more than {MAX_INPUT_BYTES // 2 ** 20} MiB; expected one "
                                   "MultiESC dialogue (or a JSON-lines file of them, the last one answered)\n")


def test_auth_on_the_command_line_is_warned_about_and_checked_before_loading(tmp_path, capsys, monkeypatch):
    chat = _script("chat.py")
    monkeypatch.delenv("MAGIC_CHAT_AUTH", raising=False)
    rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--web", "--auth", "u:p"])
    err = capsys.readouterr().err
    assert rc == 2 and "warning: --auth puts the password in your shell history and the process list" in err
    assert "export MAGIC_CHAT_AUTH=USER:PASS instead" in err and "checkpoint folder not found" in err
    rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--web", "--auth", "nopass"])
    err = capsys.readouterr().err
    assert rc == 2 and "expected USER:PASS" in err and "checkpoint folder" not in err  # before any model
    monkeypatch.setenv("MAGIC_CHAT_AUTH", "u:p")
    rc = chat.main(["--model_path", str(tmp_path / "none"), "--strategy", "Question", "--web"])
    assert "warning" not in capsys.readouterr().err  # the environment variable is the way: no warning
    doc = chat.__doc__
    assert "MAGIC_CHAT_AUTH=" in doc and "--auth user:pass" not in doc


class _Tty:
    """A stream that says it is a terminal and records what was written, with the time of each write."""

    def __init__(self, tty=True):
        import time
        self.tty, self.writes, self._clock = tty, [], time.monotonic

    def isatty(self):
        return self.tty

    def write(self, text):
        self.writes.append((self._clock(), text))

    def flush(self):
        pass


def test_a_turn_shows_a_thinking_sign_on_a_terminal_while_it_runs():
    import time
    chat = _script("chat.py")
    tty = _Tty()
    with chat.Thinking(tty, every=0.05):
        started = time.monotonic()
        time.sleep(0.3)
        during = [t for t, _ in tty.writes if t >= started]
    assert tty.writes[0][1] == "\rthinking..."  # shown at once, before the turn's work
    assert len(during) >= 2 and any(text.startswith("\rthinking... 0 s") for _, text in tty.writes)  # updated
    last = tty.writes[-1][1]
    assert last.strip() == "" and last.endswith("\r")  # erased at the end: the answer prints on a clean line
    piped = _Tty(tty=False)
    with chat.Thinking(piped, every=0.01):
        time.sleep(0.05)
    assert piped.writes == []  # piped output stays the answers only
