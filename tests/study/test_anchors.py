"""The published numbers to aim at (magic.study.anchors): each figure traceable to the project's list of what was
read where, MAGIC's own row empty with its reason."""
import os
import re

import pytest

from magic.study.anchors import ANCHORS, MAGIC, anchor_lines

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIST = os.path.join(os.path.dirname(ROOT), "shared", "PUBLISHED_ANCHORS.md")


def test_magic_row_is_empty_with_its_reason_and_every_other_row_names_its_source():
    assert MAGIC in ANCHORS and MAGIC.values == {} and MAGIC.missing.startswith("not public")
    for a in ANCHORS:
        assert a is MAGIC or (a.values and a.source and a.differs), a.system
    table = anchor_lines()
    assert table[2].startswith("| MAGIC") and "— (not public" in table[2]
    assert all(line.startswith(("|", "[")) for line in table if line)


@pytest.mark.skipif(not os.path.exists(LIST), reason=f"the list of published figures is not at {LIST}")
def test_every_figure_is_in_the_list_of_what_was_read_where():
    text = open(LIST, encoding="utf-8").read()
    found = set(re.findall(r"\d+\.\d+", text))
    for a in ANCHORS:
        for metric, value in a.values.items():
            assert f"{value:.2f}" in found, (a.system, metric, value)


def test_the_readme_copies_the_figures_of_the_one_table():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("**Numbers to aim at.**"):]
    section = section[:section.index("\n**", 5)]
    for a in ANCHORS:
        for metric, value in a.values.items():
            assert f"{metric} {value:.2f}" in section, (a.system, metric)
    assert "src/magic/study/anchors.py" in section and "not public" in section
