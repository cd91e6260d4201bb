"""Every script runs by path, from the repository root and from its own folder, in a bare checkout (nothing
installed, no PYTHONPATH): ``--help`` exits 0 and prints usage. Scripts are found by their ``__main__``
guard, so a new script is covered without editing this file; the numbered shell steps' ``--help`` too."""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"tests", ".git", ".venv", "venv", "__pycache__", "models", "demo_run", "out_model"}
# A floor for the discovery: if these stop being found, the search is broken, not the scripts.
KNOWN = {"main.py", "test_evaluation.py", "src/magic/testing/make_small_bart.py", "src/magic/testing/make_small_llm.py",
         "src/magic/llm/report.py", "LLM_inference/infer_strategy.py", "LLM_inference/finetune_llm.py",
         "data/add_memory_motivation.py", "benchmarks/bench_infer.py", "scripts/convert_smollm2.py"}


def python_scripts() -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(".py") and re.search(r'^if __name__ == "__main__":\n\s+\S',
                                                  path.read_text(encoding="utf-8"), re.M):
                found.append(path.relative_to(REPO).as_posix())
    return found


SCRIPTS = python_scripts()


def _bare_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _help(script: str, cwd: Path) -> subprocess.CompletedProcess:
    arg = str(REPO / script) if cwd != REPO else script  # from the root: the relative path users type
    return subprocess.run([sys.executable, arg, "--help"], cwd=cwd, env=_bare_env(), capture_output=True,
                          text=True, timeout=300)


def test_discovery_finds_the_scripts():
    assert KNOWN <= set(SCRIPTS), f"not found: {sorted(KNOWN - set(SCRIPTS))}"


def test_every_python_script_helps_from_the_root_and_from_its_folder():
    jobs = [(s, REPO) for s in SCRIPTS] + [(s, (REPO / s).parent) for s in SCRIPTS if (REPO / s).parent != REPO]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run is mostly imports (torch, transformers)
        results = list(pool.map(lambda job: (job, _help(*job)), jobs))
    failures = []
    for (script, cwd), r in results:
        where = "root" if cwd == REPO else f"{cwd.relative_to(REPO)}/"
        if r.returncode != 0 or "usage:" not in r.stdout.lower():
            failures.append(f"{script} from {where}: rc {r.returncode}\n{(r.stderr or r.stdout)[-800:]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "scripts").glob("[0-9]_*.sh")))
def test_numbered_shell_step_prints_its_header(script):
    step = script.split("_", 1)[0]
    for cwd in (REPO, REPO / "scripts"):
        path = f"scripts/{script}" if cwd == REPO else script
        r = subprocess.run(["bash", path, "--help"], cwd=cwd, env=_bare_env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"Step {step}:"), r.stdout[:200]


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "scripts").glob("[0-9]_*.sh")))
def test_the_python_scripts_a_step_runs_carry_its_number(script):
    """One numbering: scripts/N_*.sh runs Python scripts whose docstring (the top of their --help) says Step N."""
    step = script.split("_", 1)[0]
    called = sorted(set(re.findall(r'"\$PY" (\S+\.py)', (REPO / "scripts" / script).read_text())))
    assert called, f"{script} runs no Python script"
    for py in called:
        first = (REPO / py).read_text(encoding="utf-8").lstrip("r").lstrip('"').splitlines()[0]
        assert re.match(rf"Step {step}\b", first), f"{py} (run by {script}) starts: {first!r}"
