"""The chat as a Gradio page (``python chat.py --web``): the same ``magic.chat.engine`` engine as the terminal.

Beside the conversation: the inferred strategy and its source, the motivation, the generator's strategy
classifier on its response (8 bars), the fill level of the 8 memory slots (8 bars), a dropdown that forces the
next turn's strategy, and a button that downloads the conversation as one MultiESC JSON line. Each browser
tab has its own conversation (gr.State); the models are loaded once and shared, one turn at a time.

Element ids (stable, for the browser test): seeker-input, send, reset, chat, strategy, motivation,
classifier, memory, force, download, status.
"""
from __future__ import annotations

import os
import sys
import tempfile

from magic.esconv.dialogues import STRATEGIES

AUTO = "(inferred)"  # the force dropdown's "do not force" entry

CSS = "#strategy textarea {font-weight: bold}"


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
    from magic.chat.engine import ChatSetupError

    value = value if value is not None else os.environ.get("MAGIC_CHAT_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ChatSetupError("--auth / $MAGIC_CHAT_AUTH: expected USER:PASS (both non-empty)")
    return user, password


def build_app(engine, desc: str, situation: str = ""):
    """The gr.Blocks app (not launched)."""
    import gradio as gr

    from magic.chat.engine import StrategyError

    k = engine.model.strategy_memory_max
    download_dir = tempfile.mkdtemp(prefix="magic_chat_")

    def session_of(state):
        return state if state is not None else engine.session(situation)

    def dialogue_file(session) -> str | None:
        if not session.turns:
            return None
        path = os.path.join(download_dir, f"chat_{id(session):x}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write(session.multiesc_line())
        return path

    def view(session, status: str):
        last = session.last
        return (_messages(session),
                f"{last.strategy}  ({last.source})" if last else "",
                (last.motivation or f"(none: the strategy was {last.source}, the LLM was not asked)") if last else "",
                last.classifier_probs if last else None,
                _memory_bars(session.memory_fill(), k),
                gr.update(value=AUTO),
                gr.update(value=dialogue_file(session), interactive=bool(session.turns)),
                status, session)

    def on_load(state):
        session = session_of(state)
        return view(session, f"Strategies from {desc}.")

    def on_send(message, situation_text, forced, state):
        session = session_of(state)
        message = (message or "").strip()
        if not message:
            return (gr.update(),) + view(session, "Type what the seeker says.")
        if not session.turns:
            session.situation = situation_text or ""
        if forced and forced != AUTO:
            session.force(forced)
        try:
            res = session.say(message)
        except StrategyError as e:
            gr.Warning(str(e))
            return (gr.update(value=message),) + view(session, f"error: {e}")
        status = f"{res.strategy} ({res.source}), answered in {res.seconds:.1f} s."
        return ("",) + view(session, status)

    def on_reset(state):
        session = session_of(state)
        session.reset()
        return ("",) + view(session, "New conversation.")

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
    app.download_dir = download_dir
    return app


def serve(engine, desc: str, args) -> int:
    """Launch the page on args.host:args.port (blocks until Ctrl-C)."""
    auth = parse_auth(args.auth)
    app = build_app(engine, desc, args.situation)
    if args.host not in ("127.0.0.1", "localhost") and auth is None:
        print(f"warning: serving on {args.host} without authentication; anyone who can reach port {args.port} can "
              "use the models (--auth USER:PASS or $MAGIC_CHAT_AUTH)", file=sys.stderr)
    print(f"MAGIC chat: {desc}.", flush=True)
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                   allowed_paths=[app.download_dir], ssr_mode=False, css=CSS, quiet=False)
    except OSError as e:  # e.g. the port is taken
        from magic.chat.engine import ChatSetupError

        raise ChatSetupError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    return 0
