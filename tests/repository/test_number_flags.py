"""Numeric flags are checked at parse time: counts below one, lengths below two, NaN and infinities are refused with
argparse's message and exit code 2."""
import importlib.util
from pathlib import Path

import pytest

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


def _script(rel, name=None):
    spec = importlib.util.spec_from_file_location(name or Path(rel).stem + "_r3", REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
