"""The one import bootstrap: makes this checkout's ``src`` and ``metric`` importable for a script run by path.

``python LLM_inference/infer_strategy.py`` (or ``cd data && python add_memory_motivation.py``) puts only the
script's own folder on the module search path, so ``import src`` fails unless the repository root is added.
Every script outside the root runs this file first, by its path relative to the script::

    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "_bootstrap.py"))

(modules of ``src/`` that double as scripts do it under ``if __name__ == "__main__"``, so importing them has
no side effect). The root goes first, so a script always imports the checkout it lives in, never another
clone or worktree installed in the same environment; nothing needs installing. Scripts at the root (main.py,
test_evaluation.py) need nothing: their folder is the root; pytest gets it from pytest.ini (``pythonpath``).
The returned globals hold ``ROOT``, the repository root.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
# A script inside a package folder (python src/make_small_bart.py) gets that folder as the first search
# entry, which would make its modules importable a second time as top-level names (``data``, ``model``).
if sys.path and sys.path[0] and os.path.isfile(os.path.join(sys.path[0], "__init__.py")):
    del sys.path[0]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
