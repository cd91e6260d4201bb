"""Talk to a trained MAGIC model: type what a help-seeker says, see the strategy the LLM picks, its motivation
and the generator's response. Thin wrapper: the logic is in src/magic/chat/engine.py (terminal) and src/magic/chat/web.py (--web).

    python chat.py --demo                                   # after `bash scripts/demo.sh`
    python chat.py --model_path out_model/<run>/epoch_<e>_val_ppl_<p> --llm_path LLM_inference/fine_tuned_llama2
    python chat.py --model_path CKPT --base_url http://localhost:8000/v1 --model NAME   # a vLLM/llama.cpp server
    python chat.py --model_path CKPT --strategy Question    # no LLM: a fixed strategy
    python chat.py --demo --web [--host 0.0.0.0 --port 7860 --auth user:pass]
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

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the web app

from magic.chat.engine import ChatSetupError, StrategyError, load_input_dialogue
from magic.common.errors import run_main
from magic.common.validate import check_api_key, check_output_file

DEMO_MAX_NEW_TOKENS = 48  # scripts/demo.sh runs step 5 with MAX_NEW_TOKENS=48
EXIT_TURN_FAILED = 1  # --input: the strategy source failed for the turn (e.g. the server is down)
HISTORY_LENGTH = 1000  # lines kept in --history_file

HELP = """commands:
  /strategy LABEL   force the strategy of the next supporter turn (one of the 8, any case); /strategy alone lists them
  /reset            start a new conversation (memory bank back to the checkpoint's)
  /history          the conversation so far, numbered as the strategy prompt shows it
  /save FILE        add the conversation to FILE as one MultiESC JSON line (a chat can become test data)
  /quit             leave (also Ctrl-D or Ctrl-C)
anything else is what the seeker says."""


def build_parser() -> argparse.ArgumentParser:
    from magic.common.validate import non_negative_float, positive_float
    from magic.generator.evaluation import add_decoding_flags

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model_path", "--checkpoint", dest="model_path", default=None,
                   help="generator checkpoint folder written by main.py (epoch_<e>_val_ppl_<p>/)")
    src = p.add_argument_group("strategy source (one of)")
    src.add_argument("--llm_path", default=None, help="merged strategy LLM folder (LLM_inference/export_model.py)")
    src.add_argument("--base_url", default=None, help="OpenAI-compatible server serving the strategy LLM, "
                     "e.g. http://localhost:8000/v1 (key from $OPENAI_API_KEY, else none)")
    src.add_argument("--strategy", default=None, help="a fixed strategy for every turn, no LLM")
    p.add_argument("--demo", action="store_true",
                   help="the best checkpoint and the merged LLM under --demo_dir (after `bash scripts/demo.sh`)")
    p.add_argument("--demo_dir", default="demo_run", help="the demo's work folder (default demo_run)")
    llm = p.add_argument_group("strategy LLM generation (as LLM_inference/infer_strategy.py)")
    llm.add_argument("--model", default=None, help="served model name (--base_url; default --llm_path or 'default')")
    llm.add_argument("--template", default="default", choices=["default", "chat", "none"])
    llm.add_argument("--max_new_tokens", type=int, default=None,
                     help="answer length in tokens (default 128 as infer_strategy.py; 48 with --demo, as the demo's step 5)")
    llm.add_argument("--do_sample", action="store_true")
    llm.add_argument("--top_k", type=int, default=None)
    llm.add_argument("--temperature", type=non_negative_float, default=None)
    llm.add_argument("--dtype", default=None, help="strategy LLM dtype: float32 | float16 | bfloat16 | auto")
    llm.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per request to --base_url")
    gen = p.add_argument_group("generator decoding (as test_evaluation.py)")
    add_decoding_flags(gen)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (both models)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's, all cores; 1 with --demo: its models are so small "
                        "that more threads only wait for each other, 20x slower per turn on a busy 2-core machine)")
    p.add_argument("--situation", default="", help="the seeker's situation, first item of the generator's context")
    p.add_argument("--update_memory", action="store_true",
                   help="append each supporter turn of the chat to the memory bank, as training does (default: "
                        "the checkpoint's bank, frozen, as in the evaluation)")
    p.add_argument("--input", default=None, help="a MultiESC dialogue (JSON) ending with a seeker turn: answer it "
                   "and exit (no chat)")
    p.add_argument("--output", default=None, help="with --input: the reply as JSON (default: stdout)")
    p.add_argument("--history_file", default=None, metavar="FILE",
                   help="keep the lines typed in the terminal chat in FILE (readline history, its owner only, the "
                        f"last {HISTORY_LENGTH} lines, across sessions; e.g. ~/.magic_chat_history). Default: none "
                        "is written; the up arrow recalls the lines of this session only")
    web = p.add_argument_group("web app")
    web.add_argument("--web", action="store_true", help="serve the chat as a Gradio page instead of the terminal")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    web.add_argument("--port", type=int, default=7860)
    web.add_argument("--share", action="store_true", help="a public gradio.live link (off by default)")
    web.add_argument("--auth", default=None, help="USER:PASS required to open the page (else $MAGIC_CHAT_AUTH; "
                     "without either the page has no authentication)")
    return p


def build_engine(args):
    """(engine, description) from the flags; ChatSetupError (one line) for anything unusable."""
    from magic.chat.engine import (ChatEngine, ChatSetupError, FixedStrategy, LocalStrategyLLM, ServerStrategyLLM,
                          decoding_settings, find_demo_paths, load_generator, parse_label)
    from magic.generator.beam_search import group_diversity

    threads = args.threads if args.threads is not None else (1 if args.demo else None)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    if args.max_new_tokens is None:
        args.max_new_tokens = DEMO_MAX_NEW_TOKENS if args.demo else 128
    if args.demo:
        ckpt, llm = find_demo_paths(args.demo_dir)
        args.model_path = args.model_path or ckpt
        if not (args.base_url or args.strategy):
            args.llm_path = args.llm_path or llm
    if not args.model_path:
        raise ChatSetupError("no generator checkpoint: give --model_path DIR (or --demo after `bash scripts/demo.sh`)")
    chosen = [f for f in ("llm_path", "base_url", "strategy") if getattr(args, f)]
    if len(chosen) != 1:
        raise ChatSetupError("give exactly one strategy source: --llm_path DIR, --base_url URL or --strategy LABEL"
                             + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else ""))
    try:
        group_diversity(args.num_beams, args.num_beam_groups, args.diversity_penalty)
        if args.strategy:
            source, desc = FixedStrategy(args.strategy), f"--strategy {parse_label(args.strategy)}"
    except ValueError as e:
        raise ChatSetupError(str(e)) from None
    if args.base_url:  # before the models load: a key that cannot be sent is one line, no part of it shown
        check_api_key(os.environ.get("OPENAI_API_KEY"))
    device = None if args.device == "auto" else args.device
    model, tokenizer = load_generator(args.model_path, args.bart_base_dir, args.device)
    if args.llm_path:
        source = LocalStrategyLLM(args.llm_path, args.template, args.max_new_tokens, args.do_sample, args.top_k,
                                  args.temperature, device, args.dtype)
        desc = f"the strategy LLM {args.llm_path}"
    elif args.base_url:
        source = ServerStrategyLLM(args.base_url, args.model or "default", args.max_new_tokens, args.do_sample,
                                   args.temperature, args.timeout)
        desc = f"the server {args.base_url} (model {source.model})"
        problem = source.check()
        if problem:
            print(f"warning: --base_url {args.base_url} does not answer ({problem}); each turn will try again, "
                  "or force a strategy with /strategy LABEL", file=sys.stderr)
    engine = ChatEngine(model, tokenizer, source, decoding_settings(args), update_memory=args.update_memory)
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


def run_terminal(engine, desc: str, args) -> int:
    from magic.chat.engine import format_turn, read_typed_line

    session = engine.session(args.situation)
    interactive = sys.stdin.isatty()
    save_history = setup_readline(args.history_file) if interactive else (lambda: None)
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


def run_once(engine, args, obj) -> int:
    """--input: answer the dialogue ``obj`` (read from args.input)'s last seeker turn; --output (or stdout) gets
    the reply as JSON."""
    import json

    from magic.esconv.dialogues import ESConvFormatError
    from magic.common.io_utils import atomic_write_json

    session = engine.session()
    try:
        session.load(obj, args.input)
        res = session.respond()
    except ESConvFormatError as e:
        raise ChatSetupError(f"{e}") from None
    except ValueError as e:
        raise ChatSetupError(f"{args.input}: {e}") from None
    out = {**res.as_json(), "dialogue": session.multiesc()}
    if args.output:
        atomic_write_json(args.output, out)
        print(f"[{res.strategy}] {res.response}\nreply written to {args.output}")
    else:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def run(argv=None) -> int:
    from magic.common.io_utils import plain_warnings

    plain_warnings()
    args = build_parser().parse_args(argv)
    if args.output and not args.input:
        raise ChatSetupError("--output needs --input (the dialogue to answer)")
    if args.web and args.input:
        raise ChatSetupError("--web and --input exclude each other")
    # the input read and the output checked before any model is loaded: a reply is never computed to be lost
    dialogue = load_input_dialogue(args.input) if args.input else None
    if args.output:
        check_output_file(args.output, "--output")
    engine, desc = build_engine(args)
    if args.input:
        return run_once(engine, args, dialogue)
    if args.web:
        from magic.chat.web import serve

        return serve(engine, desc, args)
    return run_terminal(engine, desc, args)


def main(argv=None) -> int:
    """run() for the command line: a model folder, flag or input file that cannot be used is one
    ``chat.py: error: ...`` line and exit code 2, a failed --input turn exit code 1, Ctrl-C 130
    (src/magic/common/errors.py)."""
    return run_main("chat.py", lambda: run(argv), codes={StrategyError: EXIT_TURN_FAILED})


if __name__ == "__main__":
    sys.exit(main())
