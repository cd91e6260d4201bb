"""The chat as a Gradio page (``python chat.py --web``): the same ``magic.chat.engine`` engine as the terminal.

Beside the conversation: the inferred strategy and its source, the motivation, the generator's strategy
classifier on its response (8 bars), the fill level of the 8 memory slots (8 bars), a dropdown that forces the
next turn's strategy, and a button that downloads the conversation as one MultiESC JSON line. Each browser
tab has its own conversation (gr.State); the models are loaded once and shared, one turn at a time.

What is kept of a conversation (PrivateFiles): the conversation itself in memory only, for as long as its
browser tab is open (closing or reloading the tab, or "New conversation", clears it). On disk, only the
download button's file: one per session, in one folder of this server (``<tmp>/magic_chat_*``, readable by
its owner only: folder 0700, files 0600), replaced at each turn and removed when the session ends; Gradio's
cache of this process is that same folder (GRADIO_TEMP_DIR), so Gradio keeps no copy elsewhere. The folder
is removed when the server ends (Ctrl-C, SIGTERM, normal exit); one left by a server killed with SIGKILL is
removed by the next server start (it carries the project's temp marker, magic.common.io_utils.TEMP_MARKER).

Element ids (stable, for the browser test): seeker-input, send, reset, chat, strategy, motivation,
classifier, memory, force, download, status.
"""
# no ``from __future__ import annotations``: gradio finds the ``request: gr.Request`` parameter of the event
# handlers by their evaluated annotations

import atexit
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading

from magic.chat.engine import ChatSetupError, StrategyError
from magic.common.io_utils import make_temp_dir, remove_stale_temp_dirs
from magic.esconv.dialogues import STRATEGIES

AUTO = "(inferred)"  # the force dropdown's "do not force" entry

CSS = "#strategy textarea {font-weight: bold}"


class PrivateFiles:
    """The one place the web chat writes anything of a conversation: a folder of this server process, readable
    by its owner only, holding the download file of each browser session (``sessions``: session key -> path).
    ``remove(key)`` when a session ends, ``close()`` when the server ends (also registered with atexit). A
    folder that a killed server left is removed when the next one starts (remove_stale_temp_dirs)."""

    PATTERN = "magic_chat_*"

    def __init__(self):
        base = tempfile.gettempdir()
        remove_stale_temp_dirs(base, self.PATTERN)
        self.folder = make_temp_dir(base, self.PATTERN[:-1], 0o700)
        self.sessions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._gradio_cache = None  # the GRADIO_TEMP_DIR this replaced (use_as_gradio_cache)
        atexit.register(self.close)

    def use_as_gradio_cache(self) -> None:
        """Make this folder Gradio's cache (GRADIO_TEMP_DIR) for the components built from now on, so the files
        Gradio serves are these and it copies nothing into its default cache (``<tmp>/gradio``)."""
        self._gradio_cache = (os.environ.get("GRADIO_TEMP_DIR"),)
        os.environ["GRADIO_TEMP_DIR"] = self.folder

    def write(self, key: str, text: str) -> str:
        """The session's file, (re)written with ``text`` (0600, through a temporary file); a random name, so
        that a link to one session's file cannot be guessed from another's."""
        with self._lock:
            path = self.sessions.get(key) or os.path.join(self.folder, f"dialogue_{secrets.token_hex(8)}.jsonl")
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".dialogue_", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            self.sessions[key] = path
            return path

    def remove(self, key: str) -> None:
        """The session's file, gone (the session ended, or its conversation was reset)."""
        with self._lock:
            path = self.sessions.pop(key, None)
            if path and os.path.exists(path):
                os.unlink(path)

    def close(self) -> None:
        """Remove the folder and everything in it; give Gradio its former cache setting back. Idempotent."""
        with self._lock:
            self.sessions.clear()
            shutil.rmtree(self.folder, ignore_errors=True)
            if self._gradio_cache is not None:
                (previous,) = self._gradio_cache
                if os.environ.get("GRADIO_TEMP_DIR") == self.folder:
                    if previous is None:
                        os.environ.pop("GRADIO_TEMP_DIR", None)
                    else:
                        os.environ["GRADIO_TEMP_DIR"] = previous
                self._gradio_cache = None


def _messages(session) -> list[dict]:
    out = []
    for t in session.turns:
        if t.speaker == "usr":
            out.append({"role": "user", "content": t.text})
        else:
            out.append({"role": "assistant", "content": f"[{t.strategy}] {t.text}"})
    return out


def _memory_bars(fill: dict, k: int) -> dict:
    return {f"{label} ({n}/{k})": n / k for label, n in fill.items()}


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ("user", "pass"); None -> $MAGIC_CHAT_AUTH or no authentication."""
    value = value if value is not None else os.environ.get("MAGIC_CHAT_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ChatSetupError("--auth / $MAGIC_CHAT_AUTH: expected USER:PASS (both non-empty)")
    return user, password


def build_app(engine, desc: str, situation: str = "", files: PrivateFiles | None = None):
    """The gr.Blocks app (not launched). ``files`` (default: a new PrivateFiles, made Gradio's cache) holds the
    download files; the app keeps it as ``app.private_files``; close it when the app is done with."""
    files = files or PrivateFiles()
    # before gradio is first imported (some of its modules fix their cache folder then) and before any component
    # exists (each takes its cache folder when it is built)
    files.use_as_gradio_cache()
    import gradio as gr

    k = engine.model.strategy_memory_max
    live: dict = {}  # session key -> its ChatSession, so that the end of a session clears its conversation

    def session_of(state, request):
        session = state if state is not None else engine.session(situation)
        live[request.session_hash] = session
        return session

    def dialogue_file(session, request) -> str | None:
        if not session.turns:
            files.remove(request.session_hash)
            return None
        return files.write(request.session_hash, session.multiesc_line())

    def view(session, status: str, request):
        last = session.last
        return (_messages(session),
                f"{last.strategy}  ({last.source})" if last else "",
                (last.motivation or f"(none: the strategy was {last.source}, the LLM was not asked)") if last else "",
                last.classifier_probs if last else None,
                _memory_bars(session.memory_fill(), k),
                gr.update(value=AUTO),
                gr.update(value=dialogue_file(session, request), interactive=bool(session.turns)),
                status, session)

    def on_load(state, request: gr.Request):
        session = session_of(state, request)
        return view(session, f"Strategies from {desc}.", request)

    def on_send(message, situation_text, forced, state, request: gr.Request):
        session = session_of(state, request)
        message = (message or "").strip()
        if not message:
            return (gr.update(),) + view(session, "Type what the seeker says.", request)
        if not session.turns:
            session.situation = situation_text or ""
        if forced and forced != AUTO:
            session.force(forced)
        try:
            res = session.say(message)
        except StrategyError as e:
            gr.Warning(str(e))
            return (gr.update(value=message),) + view(session, f"error: {e}", request)
        status = f"{res.strategy} ({res.source}), answered in {res.seconds:.1f} s."
        return ("",) + view(session, status, request)

    def on_reset(state, request: gr.Request):
        session = session_of(state, request)
        session.reset()
        return ("",) + view(session, "New conversation.", request)

    def on_unload(request: gr.Request):  # the tab was closed or reloaded: the session is over
        files.remove(request.session_hash)
        session = live.pop(request.session_hash, None)
        if session is not None:
            session.reset()

    with gr.Blocks(title="MAGIC chat") as app:
        state = gr.State(None)
        gr.Markdown("### MAGIC: talk to the model\nType what a help-seeker says. The strategy LLM picks a support "
                    "strategy and says why; the generator answers with its strategy memory.")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=420, render_markdown=False)
                seeker = gr.Textbox(label="Seeker", placeholder="I feel ... (Enter sends)", elem_id="seeker-input",
                                    lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("New conversation", elem_id="reset")
                situation_box = gr.Textbox(label="Situation (optional, first item of the generator's context)",
                                           value=situation, lines=1, elem_id="situation")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                strategy = gr.Textbox(label="Strategy of the last turn", interactive=False, elem_id="strategy")
                motivation = gr.Textbox(label="Motivation", interactive=False, lines=3, elem_id="motivation")
                force = gr.Dropdown([AUTO] + list(STRATEGIES), value=AUTO, label="Force the next turn's strategy",
                                    elem_id="force")
                classifier = gr.Label(label="Generator's strategy classifier on its response", num_top_classes=8,
                                      show_heading=False, elem_id="classifier")
                memory = gr.Label(label=f"Memory slots (entries / {k})", num_top_classes=8, show_heading=False,
                                  elem_id="memory")
                download = gr.DownloadButton("Download dialogue (MultiESC line)", elem_id="download",
                                             interactive=False)
        outputs = [chat, strategy, motivation, classifier, memory, force, download, status, state]
        app.load(on_load, [state], outputs)
        seeker.submit(on_send, [seeker, situation_box, force, state], [seeker] + outputs)
        send.click(on_send, [seeker, situation_box, force, state], [seeker] + outputs)
        reset.click(on_reset, [state], [seeker] + outputs)
        app.unload(on_unload)
    app.private_files = files
    return app


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # gradio closes its server on it, and serve's finally removes the private folder


def serve(engine, desc: str, cfg) -> int:
    """Launch the page on cfg.host:cfg.port (blocks until Ctrl-C); ``cfg``: chat.py's ChatConfig."""
    auth = parse_auth(cfg.auth)
    app = build_app(engine, desc, cfg.situation)
    files = app.private_files
    if cfg.host not in ("127.0.0.1", "localhost") and auth is None:
        print(f"warning: serving on {cfg.host} without authentication; anyone who can reach port {cfg.port} can "
              "use the models (--auth USER:PASS or $MAGIC_CHAT_AUTH)", file=sys.stderr)
    print(f"MAGIC chat: {desc}.", flush=True)
    print(f"Conversations are kept in memory while their tab is open; the download file of each is in {files.folder} "
          "(owner only), removed when the session ends and the folder when this server stops.", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        app.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share, auth=auth,
                   allowed_paths=[files.folder], ssr_mode=False, css=CSS, quiet=False)
    except OSError as e:  # e.g. the port is taken
        raise ChatSetupError(f"cannot serve on {cfg.host}:{cfg.port}: {e}") from None
    finally:
        files.close()
    return 0
