"""The repository's Python sources and its scripts, for tests that read or load them."""
import os

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

