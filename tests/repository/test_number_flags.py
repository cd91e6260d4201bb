"""Numeric flags are checked at parse time: counts below one, lengths below two, NaN and infinities are refused with
argparse's message and exit code 2."""
from pathlib import Path

import pytest
from tests.scripts import load_script as _script

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script,argv", [
    ("test_evaluation.py", ["--model_path", "x", "--limit", "-1"]),
    ("test_evaluation.py", ["--model_path", "x", "--batch_size", "0"]),
    ("LLM_inference/infer_strategy.py", ["--batch_size", "0"]),
    ("LLM_inference/infer_strategy.py", ["--max_samples", "-3"]),
    ("LLM_inference/collect_motivations_ChatGPT.py", ["--limit", "-1"]),
    ("LLM_inference/finetune_llm.py", ["--model_name_or_path", "m", "--output_dir", "o", "--max_samples", "-3"]),
    ("LLM_inference/export_model.py", ["--model_name_or_path", "m", "--adapter_name_or_path", "a",
                                       "--export_dir", "e", "--export_size", "0"]),
    ("main.py", ["--num_epochs", "-1"]),
    ("main.py", ["--batch_size", "0"]),
])
def test_negative_or_zero_counts_are_refused_at_parse_time(script, argv, capsys):
    mod = _script(script)
    parse = getattr(mod, "build_parser", None)
    if script == "main.py":
        from magic.generator.config import build_parser as parse
    with pytest.raises(SystemExit) as e:
        parse().parse_args(argv) if parse else mod.parse_args(argv)
    assert e.value.code == 2 and "invalid value" in capsys.readouterr().err


@pytest.mark.parametrize("script,argv", [
    ("main.py", ["--max_length", "1"]), ("main.py", ["--max_length_res_memory", "1"]),
    ("test_evaluation.py", ["--model_path", "x", "--max_length", "1"]),
])
def test_length_flags_below_two_are_refused_at_parse_time(script, argv, capsys):
    from magic.generator.config import build_parser  # main.py's parser (a library module: imported, not run)

    parser = build_parser() if script == "main.py" else \
        _script("test_evaluation.py", "magic_test_evaluation_r3").build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2 and "an integer >= 2" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"])
def test_every_float_type_refuses_nan_and_infinities(text):
    import argparse

    from magic.common import validate

    for t in (validate.finite_float, validate.positive_float, validate.non_negative_float, validate.probability):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid value"):
            t(text)
    assert validate.finite_float("-2.5") == -2.5


@pytest.mark.parametrize("value", ["nan", "-inf"])
def test_evaluation_length_penalty_nan_is_refused(value, capsys):
    parser = _script("test_evaluation.py", "magic_test_evaluation_r3").build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--model_path", "x", f"--length_penalty={value}"])
    assert e.value.code == 2 and "--length_penalty: invalid value" in capsys.readouterr().err


# Every parser of the repository, as its script builds it: parse_args is intercepted, the parser inspected.
PARSER_PROBE = """
import argparse, json, runpy, sys

class Built(BaseException):
    def __init__(self, parser):
        self.parser = parser

def built(self, *a, **k):
    raise Built(self)

argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = built

def plain(p):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from plain(sub)
        elif a.type in (int, float):
            yield "/".join(a.option_strings) or a.dest

out = {}
for target in sys.argv[1:]:
    sys.argv = [target]
    try:
        (runpy.run_path if target.endswith(".py") else runpy.run_module)(target, run_name="__main__")
        out[target] = "built no parser"
    except Built as b:
        out[target] = sorted(plain(b.parser))
print(json.dumps(out))
"""


def _parser_targets():
    scripts = [str(p.relative_to(REPO)) for pattern in ("*.py", "LLM_inference/*.py", "data/*.py", "data/*/*.py",
                                                        "scripts/*.py") for p in sorted(REPO.glob(pattern))]
    modules = []
    for p in sorted((REPO / "src" / "magic").rglob("*.py")):
        if 'if __name__ == "__main__"' in p.read_text(encoding="utf-8"):
            modules.append(".".join(p.relative_to(REPO / "src").with_suffix("").parts))
    return scripts + modules


def test_every_parser_of_every_script_uses_checked_number_types():
    """docs/RELIABILITY.md: no flag parses with plain int / float (no range, no NaN check: `--port 70000`
    overflowed after the model loaded). Config dataclasses get checked types from magic.common.settings."""
    import json
    import os
    import subprocess
    import sys

    targets = _parser_targets()
    assert "chat.py" in targets and "magic.testing.openai_stub" in targets
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    r = subprocess.run([sys.executable, "-c", PARSER_PROBE, *targets], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    found = json.loads(r.stdout.splitlines()[-1])
    assert {t: v for t, v in found.items() if v} == {}, "plain int/float flags (or a script that built no parser)"


@pytest.mark.parametrize("argv,message", [
    (["--web", "--port", "70000"], "a port number between 1 and 65535"),
    (["--web", "--port", "0"], "a port number between 1 and 65535"),
    (["--threads", "0"], "an integer >= 1"), (["--top_k", "-1"], "an integer >= 1"),
    (["--max_new_tokens", "0"], "an integer >= 1"), (["--timeout", "nan"], "a number > 0"),
])
def test_chat_number_flags_are_refused_at_parse_time(argv, message, capsys):
    chat = _script("chat.py", "chat_number_flags")
    with pytest.raises(SystemExit) as e:
        chat.main(["--model_path", "x", "--strategy", "Question", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("script", ["main.py", "LLM_inference/finetune_llm.py", "test_evaluation.py"])
def test_a_seed_numpy_cannot_take_is_refused_at_parse_time(script, capsys):
    if script == "main.py":
        from magic.generator.config import build_parser

        parse = build_parser().parse_args
    elif script == "test_evaluation.py":
        parse = _script(script, "seed_test_evaluation").build_parser().parse_args
    else:
        parse = _script(script, "seed_finetune_llm").parse_args
    argv = {"main.py": [], "LLM_inference/finetune_llm.py": ["--model_name_or_path", "m", "--output_dir", "o"],
            "test_evaluation.py": ["--model_path", "x"]}[script]
    with pytest.raises(SystemExit) as e:
        parse([*argv, "--seed", str(2 ** 32)])
    assert e.value.code == 2 and "(a seed)" in capsys.readouterr().err
