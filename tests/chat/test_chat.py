"""chat.py in the terminal: a person's two turns and /strategy (scripted stdin and a real pseudo-terminal),
--input/--output, the bad inputs of the issue, and that a turn runs the pipeline's own prompt, record and
decoder (checked against a dialogue saved with /save and read back by magic.esconv.dialogues as a data file)."""
import json
import os
import pty
import shutil
import signal
import subprocess
import sys

import pytest

from tests.chat_fixtures import REPO, FILL, chat_env, make_tiny_checkpoint, make_tiny_llm, read_until as _read_until, \
    run_chat
from magic.esconv.dialogues import STRATEGIES


@pytest.fixture(scope="module")
def models(tmp_path_factory, bart_dir):
    d = tmp_path_factory.mktemp("chat_models")
    return {"ckpt": str(make_tiny_checkpoint(d, bart_dir)), "llm": make_tiny_llm(d), "dir": d}


def _no_traceback(proc):
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_two_turns_forced_strategy_and_save(models, tmp_path):
    saved = tmp_path / "chats.txt"
    typed = "\n".join(["Hi, I feel sad and alone.", "/strategy reflection of feelings",
                       "My best friend moved away last month.", "/strategy Bogus", "/history", f"/save {saved}",
                       "/quit"]) + "\n"
    proc = run_chat(["--model_path", models["ckpt"], "--llm_path", models["llm"], "--max_new_tokens", "16",
                     "--history_file", ""], stdin=typed)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("supporter:  ") == 2
    strategies = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("strategy:")]
    assert strategies[1] == ["Reflection", "of", "Feelings", "(forced)"]
    assert strategies[0][-2:] == ["LLM)"] or strategies[0][-1] == "LLM)"
    assert "error: unknown strategy 'Bogus'; expected one of ['Question'" in out
    assert "(1) Seeker: Hi , I feel sad and alone ." in out  # MultiESC tokenisation of typed text
    from magic.esconv.dialogues import load_dialogues
    (dialogue,) = load_dialogues(saved)
    assert [t.speaker for t in dialogue.turns] == ["usr", "sys", "usr", "sys"]
    assert dialogue.turns[3].strategy == "Reflection of Feelings"
    # a second /save appends a line (a chat collection), the first line unchanged
    proc = run_chat(["--model_path", models["ckpt"], "--strategy", "greeting", "--history_file", ""],
                    stdin=f"Hello there\n/save {saved}\n")
    assert proc.returncode == 0 and "appended to" in proc.stdout, proc.stdout + proc.stderr
    assert len(load_dialogues(saved)) == 2




def _pty_chat(args):
    master, slave = pty.openpty()
    # SIGINT as a terminal session has it: a shell's background job (CI run with &) ignores SIGINT, its children
    # inherit that, and Python then installs no KeyboardInterrupt handler, so Ctrl-C would do nothing
    proc = subprocess.Popen([sys.executable, str(REPO / "chat.py"), *args], stdin=slave, stdout=slave,
                            stderr=slave, env=chat_env(), cwd=REPO, close_fds=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    return proc, master


@pytest.mark.parametrize("key,code", [("\x04", 0), ("\x03", 130)], ids=["ctrl-d", "ctrl-c"])
def test_pty_session_with_readline_history(models, tmp_path, key, code):
    hist = tmp_path / "history"
    proc, fd = _pty_chat(["--model_path", models["ckpt"], "--strategy", "Question", "--history_file", str(hist)])
    try:
        out = _read_until(fd, "seeker> ")
        os.write(fd, b"I lost my job today.\r")
        out += _read_until(fd, "seeker> ")
        os.write(fd, b"/strategy greeting\r")
        out += _read_until(fd, "seeker> ")
        os.write(fd, b"thanks\r")
        out += _read_until(fd, "seeker> ")
        # Ctrl-C from the terminal is SIGINT to the foreground process group: send it as the tty would
        if key == "\x03":
            # CPython's readline loop misses a SIGINT that lands between printing the prompt and entering its
            # select() until the next key; press Ctrl-C again, as a user would, if the first one was not seen
            for _ in range(6):
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    pass
        else:
            os.write(fd, key.encode())
        proc.wait(timeout=60)
        try:
            out += _read_until(fd, "\x00", timeout=2)
        except AssertionError as e:
            out += str(e)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    assert out.count("supporter:") == 2
    assert "strategy:   Question  (fixed)" in out and "strategy:   Greeting  (forced)" in out
    assert "I lost my job today." in hist.read_text()  # readline history written on exit


def test_input_output_non_interactive(models, tmp_path):
    dialogue = {"situation": "My friend moved away .", "dialog": [
        {"speaker": "usr", "text": "Hello , I feel lonely ."},
        {"speaker": "sys", "text": "I am sorry to hear that . What happened ?", "strategy": "Question"},
        {"speaker": "usr", "text": "My best friend moved to another city ."}]}
    inp, out = tmp_path / "dialogue.json", tmp_path / "reply.json"
    inp.write_text(json.dumps(dialogue))
    proc = run_chat(["--model_path", models["ckpt"], "--strategy", "Self-disclosure", "--input", str(inp),
                     "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(out.read_text())
    assert reply["strategy"] == "Self-disclosure" and reply["strategy_source"] == "fixed"
    assert isinstance(reply["response"], str)
    assert reply["dialogue"]["dialog"][:3] == dialogue["dialog"]
    assert reply["dialogue"]["dialog"][3] == {"speaker": "sys", "text": reply["response"],
                                               "strategy": "Self-disclosure"}
    assert list(reply["classifier_probs"]) == list(STRATEGIES)
    assert abs(sum(reply["classifier_probs"].values()) - 1) < 1e-4
    assert list(reply["memory_fill"].values()) == list(FILL)
    # a dialogue that does not end with the seeker: one line, exit 2, no output file
    dialogue["dialog"] = dialogue["dialog"][:2]
    inp.write_text(json.dumps(dialogue))
    out.unlink()
    proc = run_chat(["--model_path", models["ckpt"], "--strategy", "Question", "--input", str(inp),
                     "--output", str(out)])
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        f"chat.py: error: {inp}: the dialogue must end with a seeker turn to answer")


def test_bad_inputs_one_line_each(models, tmp_path):
    # missing checkpoint folder
    proc = run_chat(["--model_path", str(tmp_path / "nope"), "--strategy", "Question"])
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"chat.py: error: {tmp_path / 'nope'}: checkpoint folder not found (expected "
        "out_model/<run>/epoch_<e>_val_ppl_<p>/ written by main.py)")
    # a run folder instead of a checkpoint: names the checkpoint inside
    run_dir = os.path.dirname(models["ckpt"])
    proc = run_chat(["--model_path", run_dir, "--strategy", "Question"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no dialogue_model.pth" in proc.stderr and models["ckpt"] in proc.stderr
    # a strategy LLM folder without its tokenizer
    bare = tmp_path / "llm_no_tok"
    shutil.copytree(models["llm"], bare)
    for f in os.listdir(bare):
        if f.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            os.unlink(bare / f)
    proc = run_chat(["--model_path", models["ckpt"], "--llm_path", str(bare)])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{bare}: no tokenizer files" in proc.stderr
    # an unknown --strategy label, and no strategy source
    proc = run_chat(["--model_path", models["ckpt"], "--strategy", "hugging"])
    assert proc.returncode == 2 and "unknown strategy 'hugging'" in proc.stderr
    proc = run_chat(["--model_path", models["ckpt"]])
    assert proc.returncode == 2 and "exactly one strategy source" in proc.stderr


def test_unreachable_server_chat_goes_on(models):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    proc = run_chat(["--model_path", models["ckpt"], "--base_url", url, "--timeout", "2", "--history_file", ""],
                    stdin="I feel awful.\n/strategy question\nI feel awful.\n")
    _no_traceback(proc)
    assert proc.returncode == 0
    assert f"warning: --base_url {url} does not answer (" in proc.stderr
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --base_url {url}: connection error")
    assert "strategy:   Question  (forced)" in proc.stdout and proc.stdout.count("supporter:") == 1


def test_turns_use_the_pipelines_prompt_record_and_decoder(models, tmp_path):
    """Two turns through a stub strategy server; the saved chat, read back as a data file, gives the same
    step-5 prompts, the same generator records and the same decoded responses."""
    from magic.chat.engine import ChatEngine, ServerStrategyLLM, generator_record, load_generator
    from magic.generator.records import sample_record
    from magic.esconv.dialogues import load_samples
    from magic.generator.eval_config import DecodingConfig
    from magic.generator.evaluation import clean_response, generate_responses
    from magic.llm.engines.base import Generation
    from magic.llm.prompts import llama_prompt
    from magic.testing.openai_stub import StubServer, stub_answer

    decoding = DecodingConfig(num_beams=4, num_beam_groups=2)
    model, tok = load_generator(models["ckpt"], device="cpu")
    with StubServer() as stub:
        engine = ChatEngine(model, tok, ServerStrategyLLM(stub.base_url, "stub", Generation(), 30.0), decoding)
        session = engine.session("My friend moved away .")
        r1 = session.say("Hi, I feel lonely.")
        session.force("Question")
        r2 = session.say("She moved to another city.")
        r3 = session.say("I miss her.")
        prompts = stub.prompts()
    assert len(prompts) == 2  # the forced turn asks nobody
    saved = tmp_path / "chat.txt"
    saved.write_text(session.multiesc_line())
    samples = load_samples(saved, "train")
    assert [s.turn_index for s in samples] == [1, 3, 5]
    assert prompts == [llama_prompt(samples[0]), llama_prompt(samples[2])]
    assert (r1.strategy, r1.motivation) == ("Others", stub_answer(prompts[0]))  # the step-5 parser
    assert (r2.strategy, r2.source, r3.source) == ("Question", "forced", "strategy server")
    for sample, res in zip(samples, (r1, r2, r3)):
        rec = {**sample_record(sample), "strategy": res.strategy, "motivation": res.motivation}
        chat_rec = generator_record(session_sample(session, sample.turn_index), res.strategy, res.motivation)
        assert {k: v for k, v in chat_rec.items() if k not in ("id", "response", "gold_strategy")} == \
               {k: v for k, v in rec.items() if k not in ("id", "response", "gold_strategy")}
        decoded = generate_responses(model, tok, [rec], decoding, batch_size=1, progress=False)[0]
        assert clean_response(decoded) == res.response
    assert samples[2].response_memory == (r1.response, r2.response)  # memory = the chat's supporter turns


def session_sample(session, turn_index):
    """The chat's sample for an earlier target turn: the session as it was before that turn."""
    from magic.chat.engine import ChatSession

    past = ChatSession(session.engine, session.situation)
    past.turns = list(session.turns[:turn_index])
    return past.sample()


def test_demo_paths_pick_the_best_checkpoint(models, tmp_path):
    from magic.chat.engine import ChatSetupError, find_demo_paths

    with pytest.raises(ChatSetupError, match="run `bash scripts/demo.sh` first"):
        find_demo_paths(str(tmp_path / "demo_run"))
    run = tmp_path / "demo_run" / "out_model" / "bs_16_epochs_30_20260101_000000"
    for name in ("epoch_0_val_ppl_912.5", "epoch_3_val_ppl_88.12", "epoch_1_val_ppl_120.0"):
        (run / name).mkdir(parents=True)
    (tmp_path / "demo_run" / "llm" / "merged").mkdir(parents=True)
    ckpt, llm = find_demo_paths(str(tmp_path / "demo_run"))
    assert ckpt.endswith("epoch_3_val_ppl_88.12") and llm.endswith(os.path.join("llm", "merged"))


def test_demo_flag_runs_on_the_demo_layout(models, tmp_path):
    """--demo --demo_dir: the checkpoint and merged LLM found where scripts/demo.sh puts them, --input answered."""
    work = tmp_path / "demo_run"
    run = work / "out_model" / "bs_16_epochs_30_20260101_000000"
    shutil.copytree(models["ckpt"], run / "epoch_2_val_ppl_250.5")
    (run / "epoch_1_val_ppl_300.0").mkdir(parents=True)  # a worse (and here broken) checkpoint: not picked
    shutil.copytree(models["llm"], work / "llm" / "merged")
    inp, out = tmp_path / "x.json", tmp_path / "y.json"
    inp.write_text(json.dumps({"situation": "", "dialog": [{"speaker": "usr", "text": "I feel sad ."}]}))
    proc = run_chat(["--demo", "--demo_dir", str(work), "--input", str(inp), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(out.read_text())
    assert reply["strategy_source"] == "strategy LLM" and reply["motivation"]
    assert reply["dialogue"]["dialog"][1]["strategy"] == reply["strategy"]


def test_update_memory_appends_supporter_turns_per_session(models):
    from magic.chat.engine import ChatEngine, FixedStrategy, load_generator
    from magic.generator.eval_config import DecodingConfig

    greedy = DecodingConfig(num_beams=1, num_beam_groups=1)
    model, tok = load_generator(models["ckpt"], device="cpu")
    engine = ChatEngine(model, tok, FixedStrategy("Question"), greedy, update_memory=True)
    a, b = engine.session(), engine.session()
    r = a.say("I feel sad.")
    assert r.memory_fill["Question"] == FILL[0] + 1 and a.memory_fill()["Question"] == FILL[0] + 1
    assert b.memory_fill()["Question"] == FILL[0]  # another chat's bank is its own
    a.force("Greeting")
    a.say("Thanks.")
    assert a.memory_fill()["Greeting"] == min(FILL[6] + 1, model.strategy_memory_max)
    a.reset()
    assert list(a.memory_fill().values()) == list(FILL)
