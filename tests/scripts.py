"""The repository's scripts as the tests use them: loaded as modules by path, or run as subprocesses."""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str, name: str | None = None):
    """The script ``rel`` (relative to the repository root) as a module, registered under ``name`` (default: one
    derived from the path, so that a script named like a test module, test_evaluation.py, does not clash);
    registered because dataclasses look their module up while the module runs."""
    name = name or "script_" + re.sub(r"\W", "_", rel)
    spec = importlib.util.spec_from_file_location(name, REPO / rel)
    mod = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def script_env(**extra: str) -> dict:
    """The environment of a script run as a subprocess: offline, one thread, unbuffered, this checkout's package
    first on the path (not an installed one)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env.update(extra)
    return env
