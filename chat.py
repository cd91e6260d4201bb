"""Talk to a trained MAGIC model: type what a help-seeker says, see the strategy the LLM picks, its motivation
and the generator's response. Thin wrapper: the logic is in src/magic/chat/engine.py (terminal) and src/magic/chat/web.py (--web).

    python chat.py --demo                                   # after `bash scripts/demo.sh`
    python chat.py --model_path out_model/<run>/epoch_<e>_val_ppl_<p> --llm_path LLM_inference/fine_tuned_llama2
    python chat.py --model_path CKPT --base_url http://localhost:8000/v1 --model NAME   # a vLLM/llama.cpp server
    python chat.py --model_path CKPT --strategy Question    # no LLM: a fixed strategy
    MAGIC_CHAT_AUTH=user:pass python chat.py --demo --web [--host 0.0.0.0 --port 7860]   # not --auth: ps shows it
    python chat.py --demo --input dialogue.json --output reply.json

Commands in the terminal: /strategy LABEL (force the next turn), /reset, /history, /save FILE, /help, /quit.
Exit codes: 0 done (/quit, Ctrl-D, --output written), 2 a model folder, flag or input file cannot be used, --output
cannot be written or $OPENAI_API_KEY cannot be sent (one line on stderr naming it, the key never shown), 1 a
non-interactive turn failed (e.g. the strategy server is unreachable), 130 interrupted (Ctrl-C). The terminal chat
writes nothing to disk unless asked (/save FILE, --history_file FILE); see README.md, "What the chat stores".
"""
import argparse
import os
import sys
from dataclasses import replace

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the web app

from magic.chat.config import DEMO_MAX_NEW_TOKENS, HISTORY_LENGTH, ChatConfig
from magic.chat.engine import ChatSetupError, StrategyError, load_input_dialogue
from magic.common.errors import run_main
from magic.common.io_utils import check_not_an_input
from magic.common.settings import from_namespace, step_parser
from magic.common.validate import check_api_key, check_output_file

EXIT_TURN_FAILED = 1  # --input: the strategy source failed for the turn (e.g. the server is down)

HELP = """commands:
  /strategy LABEL   force the strategy of the next supporter turn (one of the 8, any case); /strategy alone lists them
  /reset            start a new conversation (memory bank back to the checkpoint's)
  /history          the conversation so far, numbered as the strategy prompt shows it
  /save FILE        add the conversation to FILE as one MultiESC JSON line (a chat can become test data)
  /quit             leave (also Ctrl-D or Ctrl-C)
anything else is what the seeker says."""


def build_parser() -> argparse.ArgumentParser:
    return step_parser(__doc__.split("\n\n")[0], ChatConfig, epilog=__doc__.split("\n\n", 1)[1], raw=True)


def parse_config(argv=None) -> ChatConfig:
    return from_namespace(ChatConfig, build_parser().parse_args(argv))


def build_engine(cfg: ChatConfig):
    """(engine, description) from the settings; ChatSetupError (one line) for anything unusable."""
    from magic.chat.engine import (ChatEngine, FixedStrategy, LocalStrategyLLM, ServerStrategyLLM, find_demo_paths,
                                   load_generator, parse_label)
    from magic.generator.beam_search import group_diversity
    from magic.llm.engines.base import Generation

    threads = cfg.threads if cfg.threads is not None else (1 if cfg.demo else None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if cfg.demo:
        ckpt, llm = find_demo_paths(cfg.demo_dir)
        cfg = replace(cfg, model_path=cfg.model_path or ckpt,
                      llm_path=cfg.llm_path or (None if cfg.base_url or cfg.strategy else llm))
    if not cfg.model_path:
        raise ChatSetupError("no generator checkpoint: give --model_path DIR (or --demo after `bash scripts/demo.sh`)")
    chosen = [f for f in ("llm_path", "base_url", "strategy") if getattr(cfg, f)]
    if len(chosen) != 1:
        raise ChatSetupError("give exactly one strategy source: --llm_path DIR, --base_url URL or --strategy LABEL"
                             + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else ""))
    try:
        group_diversity(cfg.num_beams, cfg.num_beam_groups, cfg.diversity_penalty)
        if cfg.strategy:
            source, desc = FixedStrategy(cfg.strategy), f"--strategy {parse_label(cfg.strategy)}"
    except ValueError as e:
        raise ChatSetupError(str(e)) from None
    if cfg.base_url:  # before the models load: a key that cannot be sent is one line, no part of it shown
        check_api_key(os.environ.get("OPENAI_API_KEY"))
    model, tokenizer = load_generator(cfg.model_path, cfg.bart_base_dir, cfg.device)
    max_new_tokens = cfg.max_new_tokens or (DEMO_MAX_NEW_TOKENS if cfg.demo else Generation.max_new_tokens)
    generation = Generation(cfg.template, max_new_tokens, cfg.do_sample, cfg.top_k, cfg.temperature)
    if cfg.llm_path:
        source = LocalStrategyLLM(cfg.llm_path, generation, None if cfg.device == "auto" else cfg.device, cfg.dtype)
        desc = f"the strategy LLM {cfg.llm_path}"
    elif cfg.base_url:
        source = ServerStrategyLLM(cfg.base_url, cfg.model or "default", generation, cfg.timeout)
        desc = f"the server {cfg.base_url} (model {source.model})"
        problem = source.check()
        if problem:
            print(f"warning: --base_url {cfg.base_url} does not answer ({problem}); each turn will try again, "
                  "or force a strategy with /strategy LABEL", file=sys.stderr)
    engine = ChatEngine(model, tokenizer, source, cfg, update_memory=cfg.update_memory)
    return engine, desc


def setup_readline(path: str | None):
    """Line editing for an interactive terminal, and with ``path`` (--history_file, opt-in: what a seeker types
    is private) a history file readable by its owner only; returns a function saving the history."""
    try:
        import readline
    except ImportError:  # not on every platform; the chat works without it
        return lambda: None
    if path:
        try:
            readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LENGTH)

    def save():
        if path:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # created private, before any line
                readline.write_history_file(path)
                os.chmod(path, 0o600)  # also a file of an earlier version, whatever the readline library keeps
            except OSError as e:
                print(f"warning: cannot write the history file {path}: {e.strerror}", file=sys.stderr)
    return save


def command(session, line: str) -> bool:
    """Run one /command; False for /quit."""
    from magic.chat.engine import save_line
    from magic.esconv.dialogues import STRATEGIES

    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit", "/q"):
        return False
    if name == "/help":
        print(HELP)
    elif name == "/strategy":
        if not arg:
            print("strategies: " + ", ".join(STRATEGIES)
                  + (f"; forced for the next turn: {session.forced}" if session.forced else ""))
        else:
            try:
                print(f"the next turn uses {session.force(arg)}")
            except ValueError as e:
                print(f"error: {e}")
    elif name == "/reset":
        session.reset()
        print("new conversation")
    elif name == "/history":
        print("\n".join(session.history_lines()) or "(empty)")
    elif name == "/save":
        if not arg:
            print("error: /save needs a file name, e.g. /save my_chat.txt")
        elif not session.turns:
            print("error: nothing to save yet")
        else:
            try:
                print(f"{save_line(arg, session.multiesc_line())} {arg} (one MultiESC line, {len(session.turns)} turns)")
            except OSError as e:
                print(f"error: cannot write {arg}: {e.strerror or e}")
            except ValueError as e:  # the conversation is not valid MultiESC data
                print(f"error: not saved: {e}")
    else:
        print(f"error: unknown command {name}; /help lists them")
    return True


class Thinking:
    """A visible sign while a turn runs (seconds on a slow CPU): ``with Thinking(sys.stderr):`` shows
    "thinking... N s" on one line, updated every ``every`` seconds by a thread, and erases it at the end.
    Off (prints nothing) where ``stream`` is not a terminal, so piped output stays the answers only."""

    def __init__(self, stream, live: bool | None = None, every: float = 0.5):
        self.stream, self.every = stream, every
        self.live = stream.isatty() if live is None else live

    def _show(self, text: str) -> None:
        self.stream.write("\r" + text)
        self.stream.flush()

    def _tick(self) -> None:
        import time

        t0 = time.monotonic()
        while not self._stop.wait(self.every):
            self._show(f"thinking... {time.monotonic() - t0:.0f} s")

    def __enter__(self):
        if self.live:
            import threading

            self._show("thinking...")
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self._stop.set()
            self._thread.join()
            self._show(" " * len("thinking... 9999 s") + "\r")
        return False


def run_terminal(engine, desc: str, cfg: ChatConfig) -> int:
    from magic.chat.engine import format_turn, read_typed_line

    session = engine.session(cfg.situation)
    interactive = sys.stdin.isatty()
    save_history = setup_readline(cfg.history_file) if interactive else (lambda: None)
    print(f"MAGIC chat: {desc}.\nType what the seeker says; /help lists the commands, /quit (or Ctrl-D) leaves.",
          flush=True)
    n = 0
    try:
        while True:
            n += 1
            try:
                line = read_typed_line(sys.stdin, "seeker> ", interactive)
            except EOFError:
                print()
                return 0
            except ValueError as e:  # not UTF-8: this line costs one line of output, the chat goes on
                print(f"error: line {n} is {e}; not answered, type it again", flush=True)
                continue
            line = line.strip()
            if not line:
                continue
            if not interactive:
                print(f"seeker> {line}")
            if line.startswith("/"):
                if not command(session, line):
                    return 0
                continue
            try:
                with Thinking(sys.stderr):
                    res = session.say(line)
            except StrategyError as e:
                print(f"error: {e}\n  (the message was not answered; type it again, or /strategy LABEL first)")
                continue
            except ValueError as e:  # e.g. nothing left of the line once tokenised
                print(f"error: line {n}: {e}; not answered", flush=True)
                continue
            print("\n".join(format_turn(res)), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        save_history()


def run_once(engine, cfg: ChatConfig, obj) -> int:
    """--input: answer the dialogue ``obj`` (read from cfg.input)'s last seeker turn; --output (or stdout) gets
    the reply as JSON."""
    import json

    from magic.esconv.dialogues import ESConvFormatError
    from magic.common.io_utils import atomic_write_json

    session = engine.session()
    try:
        session.load(obj, cfg.input)
        res = session.respond()
    except ESConvFormatError as e:
        raise ChatSetupError(f"{e}") from None
    except ValueError as e:
        raise ChatSetupError(f"{cfg.input}: {e}") from None
    out = {**res.as_json(), "dialogue": session.multiesc()}
    if cfg.output:
        atomic_write_json(cfg.output, out)
        print(f"[{res.strategy}] {res.response}\nreply written to {cfg.output}")
    else:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def run(argv=None) -> int:
    from magic.common.io_utils import plain_warnings

    plain_warnings()
    cfg = parse_config(argv)
    if cfg.output and not cfg.input:
        raise ChatSetupError("--output needs --input (the dialogue to answer)")
    if cfg.web and cfg.input:
        raise ChatSetupError("--web and --input exclude each other")
    if cfg.auth is not None:  # as --openai_api_key: a secret on the command line is readable by every local user
        print("warning: --auth puts the password in your shell history and the process list (ps), readable by "
              "every user of this machine; export MAGIC_CHAT_AUTH=USER:PASS instead", file=sys.stderr)
    if cfg.web:
        from magic.chat.web import parse_auth

        parse_auth(cfg.auth)  # a malformed USER:PASS is refused now, not after the models load
    # the input read and the output checked before any model is loaded: a reply is never computed to be lost
    dialogue = load_input_dialogue(cfg.input) if cfg.input else None
    if cfg.output:
        check_output_file(cfg.output, "--output")
        check_not_an_input(cfg.output, "--output", {"--input": cfg.input})  # also through a symlink
    engine, desc = build_engine(cfg)
    if cfg.input:
        return run_once(engine, cfg, dialogue)
    if cfg.web:
        from magic.chat.web import serve

        return serve(engine, desc, cfg)
    return run_terminal(engine, desc, cfg)


def main(argv=None) -> int:
    """run() for the command line: a model folder, flag or input file that cannot be used is one
    ``chat.py: error: ...`` line and exit code 2, a failed --input turn exit code 1, Ctrl-C 130
    (src/magic/common/errors.py)."""
    return run_main("chat.py", lambda: run(argv), codes={StrategyError: EXIT_TURN_FAILED})


if __name__ == "__main__":
    sys.exit(main())
