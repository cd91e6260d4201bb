"""Imports between modules: no private name crosses a module, and imports between magic modules stand at the top (the
exceptions named with their reason)."""
import ast
import os

from tests.repository.source_files import _sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


# Modules whose imports between magic modules are at the top: common, esconv, generator, llm (its own modules)
# and chat/web.py. The exceptions, each for a reason written where it stands: DialogueModel (model.py loads
# transformers' BART modules) where checkpoint.py and train.py build one (any function).
# (file, module) -> the functions that may, None for any.
TOP_IMPORT_MODULES = ("common", "esconv", "generator", "llm", "judge", os.path.join("chat", "web.py"))

FUNCTION_IMPORTS_KEPT = {("generator/checkpoint.py", "magic.generator.model"): None,
                         ("generator/train.py", "magic.generator.model"): None}



def test_imports_between_magic_modules_are_at_the_top():
    package = os.path.join(ROOT, "src", "magic")
    inside = []
    for entry in TOP_IMPORT_MODULES:
        full = os.path.join(package, entry)
        paths = [full] if entry.endswith(".py") else [os.path.join(full, f) for f in sorted(os.listdir(full))
                                                       if f.endswith(".py")]
        for path in paths:
            rel = os.path.relpath(path, package).replace(os.sep, "/")
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
