"""The package layout's contracts (README, "Where things are"): stages import downwards only, every
subpackage is installed, and no script needs a run-time import bootstrap."""
import ast
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "src", "magic")
# rank of each stage: a module may import its own stage and lower ranks; llm and generator share a rank
# and never import each other.
RANK = {"common": 0, "esconv": 1, "llm": 2, "generator": 2, "chat": 3, "study": 3, "judge": 3, "testing": 4}


def _magic_imports(path):
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("magic."):
                yield node.lineno, name


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def test_stages_import_downwards_only():
    bad = []
    for path in _modules():
        rel = os.path.relpath(path, PACKAGE).split(os.sep)
        if len(rel) == 1:
            continue  # magic/__init__.py
        me = rel[0]
        assert me in RANK, f"src/magic/{me}/ has no rank in this test: give it one (README, Where things are)"
        for line, name in _magic_imports(path):
            other = name.split(".")[1]
            if other != me and RANK[other] >= RANK[me]:
                bad.append(f"src/magic/{'/'.join(rel)}:{line} ({me}) imports {name}")
    assert not bad, "imports that go up or sideways between stages:\n" + "\n".join(bad)


def test_every_subpackage_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {"metric"}
    for folder, _, files in os.walk(PACKAGE):
        if "__init__.py" in files:
            rel = os.path.relpath(folder, PACKAGE)
            found.add("magic" if rel == "." else "magic." + rel.replace(os.sep, "."))
    assert listed == found


def test_no_import_bootstrap():
    pattern = re.compile(r"_bootstrap|sys\.path\.insert|noqa: E402")
    allowed = {os.path.join("benchmarks", "bench_train.py")}  # it imports the released code's own src/ package
    bad = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "node_modules", "__pycache__")]
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), ROOT)
            if f.endswith(".py") and rel not in allowed:
                for i, line in enumerate(open(os.path.join(ROOT, rel)), 1):
                    if pattern.search(line):
                        bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
