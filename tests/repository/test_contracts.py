"""Contracts shared between steps have one home each (issue 21, item 3): the split list
(magic.common.artifacts.SPLITS), the checkpoint and run folder names (magic.common.artifacts), and the error
contract of every entry point (magic.common.errors.run_main)."""
import ast
import datetime
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import types

import pytest

from magic.common.artifacts import (RUN_NAME_RE, SPLITS, best_checkpoint, checkpoint_dir_name, checkpoint_dirs,
                                    latest_best_checkpoint, parse_checkpoint_dir, parse_run_dir, run_dir_name,
                                    run_dirs)
from magic.common.errors import EXIT_BAD_INPUT, EXIT_USER_ERROR, UserError, run_main
from magic.common.validate import id_split, parse_split_list
from magic.esconv.dialogues import make_sample, parse_dialogue
from magic.generator import data, records, train
from tests.chat_fixtures import make_tiny_checkpoint, run_chat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE_DIRS = ("src", "LLM_inference", "data", "scripts", "metric", "benchmarks")


def _sources():
    """Every Python file of the repository outside tests/ and the virtual environment."""
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            yield os.path.join(ROOT, name)
    for top in SOURCE_DIRS:
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(folder, f)


def _load_script(rel: str):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(rel))[0],
                                                  os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------- the split list
def test_the_split_list_is_spelled_only_in_artifacts():
    """No tuple, list or set literal of exactly the three split names outside magic.common.artifacts."""
    home = os.path.join(ROOT, "src", "magic", "common", "artifacts.py")
    copies = []
    for path in _sources():
        if path == home:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) == len(SPLITS):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if sorted(values) == sorted(SPLITS):
                    copies.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not copies, "the split list typed again (use magic.common.artifacts.SPLITS):\n" + "\n".join(copies)


def test_parse_split_list_takes_the_splits_of_artifacts():
    assert parse_split_list(" valid, test ") == {"valid", "test"}
    assert parse_split_list(None) == set() and parse_split_list("") == set()
    with pytest.raises(UserError, match=r"--splits: unknown split\(s\) \['dev'\]; expected a subset of "
                                        r"train,valid,test"):
        parse_split_list("valid,dev", "--splits")
    assert [id_split(f"{s}-3-5") for s in SPLITS] == list(SPLITS) and id_split("dev-3-5") is None


def test_infer_strategy_splits_flag_uses_the_one_parser(capsys):
    mod = _load_script("LLM_inference/infer_strategy.py")
    for bad, says in (("valid,dev", "--splits: unknown split(s) ['dev']; expected a subset of train,valid,test"),
                      (" , ", "--splits: no split given; expected a subset of train,valid,test")):
        with pytest.raises(SystemExit) as e:
            mod.main(["--splits", bad])
        assert e.value.code == 2 and says in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- checkpoint folders
def test_checkpoint_and_run_names_round_trip():
    assert checkpoint_dir_name(3, 12.3456) == "epoch_3_val_ppl_12.35"  # the released name
    assert parse_checkpoint_dir("out/run/epoch_3_val_ppl_12.35/") == (3, 12.35)
    assert parse_checkpoint_dir(checkpoint_dir_name(7, 1e20)) == (7, 1e20)
    for other in ("last", ".epoch_3_val_ppl_12.35.tmp", "epoch_3_val_ppl_inf", "epoch_x_val_ppl_1.0", "bs_1"):
        assert parse_checkpoint_dir(other) is None, other
    assert run_dir_name(16, 20, "20240101_120000") == "bs_16_epochs_20_20240101_120000"
    assert parse_run_dir("out_model/bs_16_epochs_20_20240101_120000_2") == (16, 20, "20240101_120000", 2)
    assert parse_run_dir("bs_16_epochs_20_2024") is None
    assert RUN_NAME_RE.search("out/bs_4_epochs_1_20240101_120000_3/epoch_1_val_ppl_8.0")[0] == \
        "bs_4_epochs_1_20240101_120000_3"


def test_best_checkpoint_of_a_run_and_of_the_newest_run(tmp_path):
    old, new = tmp_path / "bs_16_epochs_20_20240101_120000", tmp_path / "bs_4_epochs_9_20240102_080000"
    for name in ("epoch_0_val_ppl_912.5", "epoch_9_val_ppl_50.0", "epoch_10_val_ppl_88.12", "last"):
        (old / name).mkdir(parents=True)
    for name in ("epoch_2_val_ppl_60.0", "epoch_5_val_ppl_60.0", "epoch_1_val_ppl_70.0"):
        (new / name).mkdir(parents=True)
    (tmp_path / "bs_4_epochs_9_20240103_080000").mkdir()  # the newest run, no checkpoint yet
    (tmp_path / "notes").mkdir()
    assert [os.path.basename(p) for p in checkpoint_dirs(old)] == [
        "epoch_0_val_ppl_912.5", "epoch_9_val_ppl_50.0", "epoch_10_val_ppl_88.12"]  # by epoch, not by name
    assert best_checkpoint(old) == str(old / "epoch_9_val_ppl_50.0")
    assert best_checkpoint(new) == str(new / "epoch_5_val_ppl_60.0")  # equal rounded PPL: the later epoch
    assert best_checkpoint(tmp_path / "notes") is None and best_checkpoint(tmp_path / "absent") is None
    # oldest first by the stamp, whatever the batch size and epochs in the name
    assert [os.path.basename(p) for p in run_dirs(tmp_path)] == [
        old.name, new.name, "bs_4_epochs_9_20240103_080000"]
    assert latest_best_checkpoint(tmp_path) == str(new / "epoch_5_val_ppl_60.0")
    assert latest_best_checkpoint(tmp_path / "notes") is None


def test_main_py_writes_the_names_the_readers_parse(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "datetime", types.SimpleNamespace(datetime=_FixedNow))  # this module's only
    first = train.make_run_dir(str(tmp_path), 16, 20)
    second = train.make_run_dir(str(tmp_path), 16, 20)
    assert [parse_run_dir(p) for p in (first, second)] == [(16, 20, "20240101_120000", 0),
                                                            (16, 20, "20240101_120000", 1)]
    assert run_dirs(tmp_path) == [first, second]


def test_8_evaluate_picks_the_best_checkpoint_of_the_newest_run(tmp_path):
    """scripts/8_evaluate.sh without MODEL_PATH: the checkpoint latest_best_checkpoint names (a stub python
    prints the test_evaluation.py arguments instead of evaluating)."""
    out = tmp_path / "out_model"
    for name in ("epoch_1_val_ppl_20.0", "epoch_10_val_ppl_10.0", "epoch_11_val_ppl_15.0"):
        (out / "bs_16_epochs_20_20240101_120000" / name).mkdir(parents=True)
    (out / "bs_16_epochs_20_20231231_120000" / "epoch_12_val_ppl_5.0").mkdir(parents=True)  # an older run
    stub = tmp_path / "py"
    stub.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\necho "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PY": str(stub), "OUTPUT_DIR": str(out)}
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "8_evaluate.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"--model_path {out}/bs_16_epochs_20_20240101_120000/epoch_10_val_ppl_10.0 " in r.stdout
    env["OUTPUT_DIR"] = str(tmp_path / "empty")
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "8_evaluate.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "no checkpoint under" in r.stderr


class _FixedNow:
    @staticmethod
    def now():
        return datetime.datetime(2024, 1, 1, 12, 0, 0)


# ---------------------------------------------------------------------------------------- the error contract
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


# ---------------------------------------------------------------------------------------- private names
def _private_imports():
    """``from magic... import _name`` / ``from metric... import _name`` anywhere outside tests/."""
    found = []
    for path in _sources():
        for n in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in ("magic", "metric"):
                found += [f"{os.path.relpath(path, ROOT)}:{n.lineno}: {n.module}.{a.name}" for a in n.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_is_imported_across_modules():
    assert not _private_imports(), "\n".join(_private_imports())


# ---------------------------------------------------------------------------------------- imports at the top
# Modules whose imports between magic modules are at the top (issue 21): common, esconv, generator, llm (its own
# modules) and chat/web.py. The exceptions, each for a reason written where it stands: DialogueModel (model.py
# loads transformers' BART modules) where checkpoint.py and train.py build one (any function), and padded.py (it
# imports model.py) where train_epoch runs it.
# (file, module) -> the functions that may, None for any.
TOP_IMPORT_MODULES = ("common", "esconv", "generator", "llm", "judge", os.path.join("chat", "web.py"))
FUNCTION_IMPORTS_KEPT = {("generator/checkpoint.py", "magic.generator.model"): None,
                         ("generator/train.py", "magic.generator.model"): None,
                         ("generator/train.py", "magic.generator.padded"): {"train_epoch"}}
NOT_YET = ("generator/pretrain.py", "llm/inference.py")  # being rewritten by others when this was done


def test_imports_between_magic_modules_are_at_the_top():
    package = os.path.join(ROOT, "src", "magic")
    inside = []
    for entry in TOP_IMPORT_MODULES:
        full = os.path.join(package, entry)
        paths = [full] if entry.endswith(".py") else [os.path.join(full, f) for f in sorted(os.listdir(full))
                                                       if f.endswith(".py")]
        for path in paths:
            rel = os.path.relpath(path, package).replace(os.sep, "/")
            if rel in NOT_YET:
                continue
            for fn in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for n in ast.walk(fn):
                    names = ([n.module] if isinstance(n, ast.ImportFrom) and n.module else
                             [a.name for a in n.names] if isinstance(n, ast.Import) else [])
                    for m in names:
                        kept = FUNCTION_IMPORTS_KEPT.get((rel, m), ())
                        if m.startswith(("magic.", "metric")) and not (kept is None or fn.name in kept):
                            inside.append(f"{rel}:{n.lineno} in {fn.name}: {m}")
    assert not inside, "imports between magic modules inside functions (move them to the top):\n" + "\n".join(inside)


# ---------------------------------------------------------------------------------------- no pointers outside
REPO_PATH_RE = re.compile(r"(?<![\w/.-])((?:src|docs|scripts|tests|benchmarks|metric|LLM_inference|data)/[\w./-]*\w\.(?:py|md|sh))")
OUTSIDE_RE = re.compile(r"\.\./(?!shared/data/esconv)[\w./-]+")  # the real data's default folder is configuration


def test_no_source_file_points_outside_the_repository():
    """Paths named in the code (docstrings, comments, help) that look like files of this repository exist in
    it, and the package names no file beside the repository (the real data's default folder aside). The
    released code's files are described in words, or in docs/FIDELITY.md."""
    bad = []
    for path in _sources():
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("benchmarks" + os.sep):  # bench_train.py runs the released code from its mirror
            continue
        text = open(path, encoding="utf-8").read()
        for m in REPO_PATH_RE.finditer(text):
            if not os.path.exists(os.path.join(ROOT, m[1])):
                bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m[1]} (no such file here)")
        if not rel.startswith("src" + os.sep):
            continue  # a script's ../ is relative to the folder it runs from (LLM_inference/: ../data/train.txt)
        for m in OUTSIDE_RE.finditer(text):
            bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m[0]} (outside the repository)")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------- the generator record
def test_the_generator_record_is_described_once_beside_its_builder():
    """records.py's docstring describes every field sample_record writes (and no other); data.py, which reads
    the records, points to it instead of describing them again."""
    dialogue = parse_dialogue({"situation": "s", "dialog": [
        {"speaker": "usr", "text": "hi ."}, {"speaker": "sys", "text": "hello .", "strategy": "Question"},
        {"speaker": "usr", "text": "I ' m sad ."}, {"speaker": "sys", "text": "why ?", "strategy": "Question"}]},
        "t", 1, 0)
    built = records.sample_record(make_sample(dialogue, 3, "train"))
    described = re.findall(r'^\s+[{ ]"(\w+)":', records.__doc__, re.M)
    assert described == list(built), (described, list(built))
    assert not re.search(r'"response_memory":', data.__doc__) and "records.py" in data.__doc__


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
