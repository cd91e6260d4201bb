"""Steps whose flags come from one typed config (magic.common.settings): ``--help`` answers without importing
torch or transformers, stays short, shows each default once, and the parser's defaults are the config's."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script as _load_script

REPO = Path(__file__).resolve().parents[2]
# script -> its config class
CONFIGS = {"scripts/reproduce.py": "ReproduceConfig", "compare_results.py": "CompareConfig",
           "data/download_esconv.py": "DownloadConfig", "data/convert_hf_esconv.py": "ConvertConfig",
           "data/fetch_data.py": "FetchConfig"}
MAX_HELP_LINES = 45
PROBE = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit:
            pass
    out[script] = text.getvalue()
print(json.dumps({"help": out, "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def helps():
    r = subprocess.run([sys.executable, "-c", PROBE, *CONFIGS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_help_imports_nothing_heavy(helps):
    assert helps["heavy"] == [], f"--help of {list(CONFIGS)} imported {helps['heavy']}"


@pytest.mark.parametrize("script", CONFIGS)
def test_help_is_short_and_shows_each_default_once(helps, script):
    text = helps["help"][script]
    assert text.startswith("usage:") and len(text.splitlines()) <= MAX_HELP_LINES, text
    options = text.split("options:", 1)[1]
    for block in re.split(r"\n  (?=-)", options):  # one block per flag
        assert len(re.findall(r"\(default", block)) <= 1, block


def _defaults(cls: type) -> dict:
    """Field name -> default of a config class (what ``--help`` shows)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


@pytest.mark.parametrize("script", CONFIGS)
def test_the_parser_defaults_are_the_config_defaults(script):
    mod = _load_script(script)
    cls = getattr(mod, CONFIGS[script])
    parser = mod.build_parser()
    for name, value in _defaults(cls).items():
        assert parser.get_default(name) == value, (script, name)
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == {f.name for f in dataclasses.fields(cls)}, script
