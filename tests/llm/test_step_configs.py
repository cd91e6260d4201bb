"""src/magic/llm/config.py: steps 1-5 declare their flags once, as typed dataclasses; --help is short, shows each
default once and imports no torch; every number flag is checked."""
import argparse
import dataclasses
import os
import subprocess
import sys
import typing

import pytest

from magic.common.settings import add_options, from_namespace
from magic.llm import config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPTS = ("collect_motivations_ChatGPT", "create_prompts_4_LLaMA", "finetune_llm", "export_model", "infer_strategy")
CONFIGS = (config.MotivationConfig, config.PromptConfig, config.SFTConfig, config.ReleasedSFTFlags,
           config.ExportConfig, config.InferenceConfig, config.InferenceFlags)
PROBE = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
         "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
         "except SystemExit as e:\n    print('torch' in sys.modules, e.code, file=sys.stderr)")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_is_short_shows_each_default_once_and_imports_no_torch(name):
    script = os.path.join(ROOT, "LLM_inference", f"{name}.py")
    r = subprocess.run([sys.executable, "-c", PROBE, script], capture_output=True, text=True, timeout=60)
    assert r.stderr.split()[-2:] == ["False", "0"], r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) <= 80, f"{name} --help: {len(lines)} lines"
    flags = " ".join(lines).split("  --")
    assert not [f for f in flags if f.count("(default") > 1], f"{name}: a default shown twice"


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_number_flag_has_a_checked_type(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if meta is not None and base[0] in (int, float):
            assert meta["type"] not in (None, int, float), f"{cls.__name__}.{f.name}: plain {base[0].__name__}"


@pytest.mark.parametrize("cls", (config.MotivationConfig, config.PromptConfig, config.InferenceConfig))
def test_parsed_defaults_are_the_config_defaults(cls):
    """One default per setting: the parser's are the dataclass's, so a default changed there changes both."""
    p = argparse.ArgumentParser()
    add_options(p, cls)
    assert from_namespace(cls, p.parse_args([])) == cls()


def test_checked_values_are_refused_with_argparse_exit_code(capsys):
    p = argparse.ArgumentParser()
    add_options(p, config.SFTConfig)
    required = ["--model_name_or_path", "m", "--output_dir", "o"]
    assert from_namespace(config.SFTConfig, p.parse_args(required + ["--max_steps", "-1"])).max_steps == -1
    assert from_namespace(config.SFTConfig, p.parse_args(required + ["--max_steps", "7"])).max_steps == 7
    for bad in (["--max_steps", "0"], ["--seed", "-3"], ["--lora_dropout", "1.5"], ["--template", "alpaca"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(required + bad)
        assert e.value.code == 2, bad
    assert "--max_steps" in capsys.readouterr().err


def test_released_spellings_stay_accepted():
    p = argparse.ArgumentParser()
    add_options(p, config.MotivationConfig)
    cfg = from_namespace(config.MotivationConfig, p.parse_args(["--train_file_path", "t.txt"]))
    assert cfg.train_file == "t.txt"
    p = argparse.ArgumentParser()
    add_options(p, config.ExportConfig)
    ns = p.parse_args(["--model_name_or_path", "b", "--adapter_name_or_path", "a", "--export_dir", "e",
                       "--export_legacy_format", "False"])
    assert from_namespace(config.ExportConfig, ns).export_legacy_format is False
