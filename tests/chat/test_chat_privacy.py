"""The chat keeps no private data behind: the web chat's dialogues live in one private folder removed with the session
and when the server ends (even killed), and the terminal chat writes a history file only when asked."""
import os
import pty
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.chat_fixtures import read_until as _read_until
from tests.scripts import script_env as _env

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine(ckpt):
    from magic.chat.engine import ChatEngine, FixedStrategy
    from magic.generator.checkpoint import load_checkpoint
    from magic.generator.eval_config import DecodingConfig

    model, tok, _ = load_checkpoint(ckpt, device="cpu")
    return ChatEngine(model, tok, FixedStrategy("Question"), DecodingConfig(
        num_beams=1, num_beam_groups=1, diversity_penalty=0.0, max_length_res=4, max_length=64))


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_web_chat_dialogues_live_in_one_private_folder_removed_with_the_session(engine):
    pytest.importorskip("gradio")
    from gradio_client import Client

    from magic.chat.web import build_app
    from magic.common.io_utils import TEMP_MARKER

    secret = f"my secret worry {os.getpid()}"
    gradio_default = Path(tempfile.gettempdir()) / "gradio"
    before = set(gradio_default.rglob("*")) if gradio_default.exists() else set()
    app = build_app(engine, "a fixed strategy")
    files = app.private_files
    try:
        assert _mode(files.folder) == 0o700
        assert all(b.GRADIO_CACHE == files.folder for b in app.blocks.values())  # Gradio's copies stay in it
        app.launch(server_port=_free_port(), prevent_thread_lock=True, quiet=True)
        client = Client(app.local_url, verbose=False, download_files=False)
        client.predict(secret, "", "(inferred)", api_name="/on_send")
        saved = [p for p in Path(files.folder).rglob("*") if p.is_file() and secret in p.read_text()]
        assert saved and all(_mode(p) == 0o600 for p in saved)
        new = set(gradio_default.rglob("*")) - before if gradio_default.exists() else set()
        assert not [p for p in new if p.is_file() and secret in p.read_text(errors="replace")]
        client.predict(api_name="/on_reset")  # "New conversation": its file is gone
        assert not [p for p in Path(files.folder).rglob("*") if p.is_file() and secret in p.read_text()]
        client.predict(secret, "", "(inferred)", api_name="/on_send")
        files.remove(next(iter(files.sessions)))  # what closing the tab does (on_unload, gradio's unload event)
        assert not files.sessions and not [p for p in Path(files.folder).rglob("*") if p.is_file()
                                           and p.name != TEMP_MARKER]
    finally:
        app.close()
        files.close()
    assert not os.path.exists(files.folder)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_web_chat_server_removes_its_folder_when_it_ends(ckpt, tmp_path, sig):
    pytest.importorskip("gradio")
    from tests.chat_fixtures import REPO as ROOT, chat_env

    port = _free_port()
    env = dict(chat_env(), TMPDIR=str(tmp_path))
    server = subprocess.Popen([sys.executable, str(ROOT / "chat.py"), "--model_path", str(ckpt), "--strategy",
                               "Question", "--web", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        end = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < end, server.stdout.read()
                time.sleep(0.3)
        (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("magic_chat_")]
        assert _mode(folder) == 0o700
        server.send_signal(sig)
        out = server.communicate(timeout=60)[0]
    finally:
        if server.poll() is None:
            server.kill()
    assert not folder.exists(), out
    assert not [p for p in tmp_path.iterdir() if p.name == "gradio"]  # Gradio's cache was inside it


def test_web_chat_removes_the_folder_of_a_server_killed_with_sigkill(tmp_path, monkeypatch):
    from magic.chat.web import PrivateFiles

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import os, signal\nfrom magic.chat.web import PrivateFiles\n"
            "f = PrivateFiles()\nf.write('s', 'a private dialogue')\nos.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TMPDIR=str(tmp_path),
                                                              PYTHONPATH=str(REPO / "src")))
    assert r.returncode == -signal.SIGKILL
    (left,) = list(tmp_path.iterdir())
    with pytest.warns(UserWarning, match=rf"removed {left}"):
        files = PrivateFiles()
    try:
        assert not left.exists() and os.path.isdir(files.folder)
    finally:
        files.close()


def _pty_session(ckpt, home, extra, lines):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(REPO / "chat.py"), "--model_path", str(ckpt), "--strategy", "Question",
                             "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4", *extra],
                            stdin=slave, stdout=slave, stderr=slave, env=_env(HOME=str(home)), cwd=REPO,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, "seeker> ")
        for line in lines:
            os.write(master, line + b"\r")
            out += _read_until(master, "seeker> ")
        os.write(master, b"\x04")  # Ctrl-D
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out


def test_terminal_chat_keeps_no_history_file_unless_asked(ckpt, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    rc, out = _pty_session(ckpt, home, [], [b"I lost my job today.", b"caf\xe9 \xff"])
    assert rc == 0 and out.count("supporter:") == 1 and "Traceback" not in out, out
    assert "is not UTF-8 text" in out  # the interactive path too: one line, the chat goes on
    assert list(home.iterdir()) == []  # no ~/.magic_chat_history: the typed lines are not kept
    hist = tmp_path / "private" / "history"
    rc, out = _pty_session(ckpt, home, ["--history_file", str(hist)], [b"I lost my job today."])
    assert rc == 0, out
    assert "I lost my job today." in hist.read_text(encoding="utf-8")
    assert stat.S_IMODE(hist.stat().st_mode) == 0o600  # its owner only
