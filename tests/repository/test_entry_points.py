"""Every entry point reports through magic.common.errors.run_main: a user error is one line and the documented exit
code."""
import ast
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from magic.common.errors import EXIT_BAD_INPUT, EXIT_USER_ERROR, UserError, run_main
from tests.chat_fixtures import make_tiny_checkpoint, run_chat
from tests.scripts import load_script as _load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENTRY_DIRS = ("", "LLM_inference", "data", os.path.join("data", "demo"), "scripts")


def _entry_points():
    for folder in ENTRY_DIRS:
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            path = os.path.join(folder, name)
            if name.endswith(".py") and "__main__" in open(os.path.join(ROOT, path), encoding="utf-8").read():
                yield path


def test_every_entry_point_reports_through_run_main():
    """Each script's body runs under magic.common.errors.run_main; none ends with a bare SystemExit message
    or prints its own "error:" line and exit code."""
    bad = []
    for rel in _entry_points():
        tree = ast.parse(open(os.path.join(ROOT, rel), encoding="utf-8").read(), rel)
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if "run_main" not in calls:
            bad.append(f"{rel}: does not call run_main")
        for n in ast.walk(tree):
            if (isinstance(n, ast.Raise) and isinstance(n.exc, ast.Call) and isinstance(n.exc.func, ast.Name)
                    and n.exc.func.id == "SystemExit" and n.exc.args):
                bad.append(f"{rel}:{n.lineno}: raise SystemExit(message)")
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
                    and any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in n.keywords)
                    and n.args and "error: " in ast.unparse(n.args[0])):
                bad.append(f"{rel}:{n.lineno}: prints its own error line")
    assert not bad, "\n".join(bad)


def _bad_inputs(tmp):
    """(script, function, argv, exit code) of one user error per entry point; ``tmp`` holds nothing.
    "__main__": the script's main() raises and its ``if __name__ == "__main__"`` wraps it in run_main."""
    missing = os.path.join(tmp, "missing")
    return [
        ("LLM_inference/collect_motivations_ChatGPT.py", "main", ["--train_file", missing], 2),
        ("LLM_inference/create_prompts_4_LLaMA.py", "main", ["--train_file", missing, "--output_dir", tmp], 1),
        ("LLM_inference/finetune_llm.py", "main", ["--model_name_or_path", missing, "--dataset", missing,
                                                   "--output_dir", os.path.join(tmp, "lora")], 1),
        ("LLM_inference/export_model.py", "main", ["--model_name_or_path", missing, "--adapter_name_or_path",
                                                   missing, "--export_dir", os.path.join(tmp, "merged")], 1),
        ("LLM_inference/infer_strategy.py", "main", ["--model_path", missing, "--splits", "valid"], 1),
        ("data/add_memory_motivation.py", "main", ["--train_file", missing, "--output_dir", tmp], 1),
        ("data/convert_hf_esconv.py", "main", ["--input", missing, "--output", os.path.join(tmp, "x.txt")], 2),
        ("data/download_esconv.py", "main", ["--base_url", "file://" + missing, "--output_dir", tmp], 1),
        ("data/demo/make_demo.py", "main", ["--check", "--out_dir", tmp], 1),
        ("scripts/demo_summary.py", "main", ["summary", "--work", tmp], 1),
        ("scripts/convert_smollm2.py", "main", ["--gguf", missing, "--output_dir", os.path.join(tmp, "m")], 1),
        ("test_evaluation.py", "main", ["--model_path", missing, "--test_data", missing], 2),
        ("chat.py", "main", ["--model_path", missing, "--strategy", "Question"], 2),
        ("main.py", "cli", ["--train_data", missing, "--valid_data", missing, "--output_dir", tmp], 2),
        ("compare_results.py", "__main__", [missing, missing], 2),
        ("scripts/reproduce.py", "__main__", ["--profile", "paper"], 2),
        ("judge_responses.py", "main", ["--a", missing, "--b", missing, "--output_dir", tmp], 2),
        ("direct_llm_responses.py", "main", ["--test_data", missing, "--eval_dir", tmp], 2),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs("/t"))), ids=[c[0] for c in _bad_inputs("/t")])
def test_a_user_error_is_one_run_main_line_and_the_documented_code(case, tmp_path, capsys):
    script, fn, argv, code = _bad_inputs(str(tmp_path))[case]
    mod, prog = _load_script(script), os.path.basename(script)
    rc = run_main(prog, lambda: mod.main(argv)) if fn == "__main__" else getattr(mod, fn)(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("warning:", "note:"))]
    assert rc == code and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (rc, err)
    assert "Traceback" not in err


def test_run_main_codes_give_a_condition_its_own_exit_code(capsys, monkeypatch):
    class TurnFailed(RuntimeError):
        pass

    def fail(exc):
        def body():
            raise exc
        return body

    assert run_main("x.py", fail(TurnFailed("server down")), codes={TurnFailed: 1}) == 1
    assert capsys.readouterr().err == "x.py: error: server down (MAGIC_DEBUG=1 shows the traceback)\n"
    assert run_main("x.py", fail(UserError("bad.json: not JSON")), codes={TurnFailed: 1}) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "x.py: error: bad.json: not JSON\n"
    assert run_main("x.py", fail(UserError("bad")), code=EXIT_BAD_INPUT) == EXIT_BAD_INPUT
    assert run_main("x.py", fail(KeyboardInterrupt())) == 130
    assert run_main("x.py", lambda: None) == 0 and run_main("x.py", lambda: 7) == 7
    with pytest.raises(TypeError):  # a bug keeps its traceback
        run_main("x.py", fail(TypeError("bug")), codes={TurnFailed: 1})
    monkeypatch.setenv("MAGIC_DEBUG", "1")
    with pytest.raises(TurnFailed):
        run_main("x.py", fail(TurnFailed("server down")), codes={TurnFailed: 1})


def test_chat_input_turn_that_fails_exits_1_through_run_main(bart_dir, tmp_path):
    """chat.py --input with an unreachable strategy server: one ``chat.py: error:`` line, exit code 1 (not 2:
    the input was fine)."""
    ckpt = make_tiny_checkpoint(tmp_path, bart_dir)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inp = tmp_path / "dialogue.json"
    inp.write_text(json.dumps({"situation": "", "dialog": [{"speaker": "usr", "text": "I feel sad ."}]}))
    proc = run_chat(["--model_path", str(ckpt), "--base_url", f"http://127.0.0.1:{port}/v1", "--timeout", "2",
                     "--input", str(inp), "--output", str(tmp_path / "reply.json")])
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("chat.py: error: "), proc.stderr
    assert not (tmp_path / "reply.json").exists()


@pytest.mark.parametrize("script", ["test_evaluation.py", "chat.py"])
def test_help_imports_no_torch_and_shows_each_default_once(script):
    """``--help`` of step 8 and of the chat: generated from their config dataclasses, without importing torch,
    each option's default said once."""
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\ntry:\n    runpy.run_path({script!r}, "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.rstrip().endswith("torch imported: False"), proc.stdout + proc.stderr
    options = re.split(r"\n  (?=-)", proc.stdout.split("options:", 1)[1])
    assert len(options) > 10 and all(o.count("default:") <= 1 for o in options), options
    assert "--num_beams NUM_BEAMS" in proc.stdout and "(default: 5)" in proc.stdout
