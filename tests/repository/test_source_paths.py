"""Paths named in the code exist in the repository, and the package names no file outside it."""
import os
import re

from tests.repository.source_files import _sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO_PATH_RE = re.compile(r"(?<![\w/.-])((?:src|docs|scripts|tests|benchmarks|metric|LLM_inference|data)/[\w./-]*\w\.(?:py|md|sh))")

OUTSIDE_RE = re.compile(r"\.\./(?!shared/data/esconv)[\w./-]+")  # the real data's default folder is configuration


def test_no_source_file_points_outside_the_repository():
    """Paths named in the code (docstrings, comments, help) that look like files of this repository exist in
    it, and the package names no file beside the repository (the real data's default folder aside). The
    released code's files are described in words, or in docs/FIDELITY.md."""
    bad = []
    for path in _sources():
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("benchmarks" + os.sep):  # bench_train.py runs the released code from its mirror
            continue
        text = open(path, encoding="utf-8").read()
        for m in REPO_PATH_RE.finditer(text):
            if not os.path.exists(os.path.join(ROOT, m[1])):
                bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m[1]} (no such file here)")
        if not rel.startswith("src" + os.sep):
            continue  # a script's ../ is relative to the folder it runs from (LLM_inference/: ../data/train.txt)
        for m in OUTSIDE_RE.finditer(text):
            bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m[0]} (outside the repository)")
    assert not bad, "\n".join(bad)
