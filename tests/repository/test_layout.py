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
RANK = {"common": 0, "esconv": 1, "metric": 1, "llm": 2, "generator": 2, "chat": 3, "study": 3, "judge": 3, "testing": 4}


def _modules():
    """Module name (magic.x.y; a package is its __init__) -> path, for every module of src/magic."""
    found = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, f), os.path.dirname(PACKAGE))[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, f)
    return found


def _imports(name, path, modules):
    """(line, imported name) for every import anywhere in the module (inside functions too), relative ones
    resolved; a name of magic is narrowed to the module it loads (``from magic.x import y``: magic.x.y when
    y is a module, else magic.x). Only names of magic and the root's metric are yielded."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in candidates:
            if target.split(".")[0] == "metric":
                yield node.lineno, target
            while target.startswith("magic") and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("magic."):
                yield node.lineno, target


def test_stages_import_downwards_only():
    """chat, study -> llm, generator -> esconv, metric -> common (and testing above all): a module imports its
    own stage or lower ranks only; stages of one rank never import each other."""
    modules = _modules()
    bad = []
    for name, path in sorted(modules.items()):
        if name == "magic":
            continue  # magic/__init__.py
        me = name.split(".")[1]
        assert me in RANK, f"src/magic/{me}/ has no rank in this test: give it one (README, Where things are)"
        for line, target in _imports(name, path, modules):
            where = os.path.relpath(path, ROOT)
            if not target.startswith("magic."):  # the root's metric/ is not installed: the package cannot import it
                bad.append(f"{where}:{line} imports {target} (use magic.metric)")
                continue
            other = target.split(".")[1]
            if other != me and RANK[other] >= RANK[me]:
                bad.append(f"{where}:{line} ({me}) imports {target}")
    assert not bad, "imports that go up or sideways between stages:\n" + "\n".join(bad)


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_no_import_cycle_between_modules():
    """No module of src/magic imports, directly or through others, a module that imports it back (imports
    inside functions count: a circle is a circle even when it is closed late)."""
    modules = _modules()
    graph = {name: {t for _, t in _imports(name, path, modules) if t != name and t in modules}
             for name, path in modules.items()}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]  # the finder finds
    found = [sorted(c) for c in _cycles(graph)]
    assert not found, "import cycles between modules of src/magic:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_subpackage_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for folder, _, files in os.walk(PACKAGE):
        if "__init__.py" in files:
            rel = os.path.relpath(folder, PACKAGE)
            found.add("magic" if rel == "." else "magic." + rel.replace(os.sep, "."))
    assert listed == found
    assert not any(name.split(".")[0] != "magic" for name in listed), "only magic goes into site-packages"


def test_the_released_metric_import_is_the_package():
    """``from metric import NLGEval`` still works from the root; metric/ holds no code of its own."""
    import magic.metric
    import metric
    from metric.protocol import format_scores

    assert metric.NLGEval is magic.metric.NLGEval and format_scores is magic.metric.protocol.format_scores
    assert sorted(os.listdir(os.path.join(ROOT, "metric"))) in (["__init__.py"], ["__init__.py", "__pycache__"])
    for name in ("nlgeval", "protocol", "significance"):
        assert __import__(f"metric.{name}", fromlist=["_"]) is getattr(magic.metric, name)


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
