"""The study trusts nothing it reads back: one checked loader for result files (schema, cell, finite numbers,
per-sample lists, known sample ids) used by the plan, the cells and the report; the data is keyed by its
content; a report is never written from a folder that is missing or holds none of the profile's cells."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from magic.common.errors import UserError
from magic.study import stage1
from magic.study import cells
from magic.study.cells import Cell, Study
from magic.study.plan import build_study
from magic.study.profiles import PROFILES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("MAGIC_DATA_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data", "esconv")
CPU = os.path.join(ROOT, "results", "cpu")
need_data = pytest.mark.skipif(not os.path.exists(os.path.join(DATA, "magic", "test.txt")) or
                               not os.path.exists(os.path.join(CPU, "data.json")),
                               reason=f"needs the real ESConv data in {DATA} and the committed results/cpu")


def _tiny(tmp_path):
    cells = [Cell("a", {"v": 1}, lambda ctx: {"value": 1.5}),
             Cell("s/b", {}, lambda ctx: {"n": 2, "per_sample": {"ids": ["x", "y"], "rouge_l": [0.1, 0.2]}},
                  deps=["a"])]
    return Study(cells, str(tmp_path / "work"), str(tmp_path / "results"), log=lambda m: None)


def _edit(path, change):
    rec = json.load(open(path))
    change(rec)
    with open(path, "w") as f:
        f.write(json.dumps(rec, allow_nan=True))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["result"].__setitem__("value", math.nan), "holds NaN where a finite number belongs"),
    (lambda r: r["result"].__setitem__("value", math.inf), "holds Infinity where a finite number belongs"),
    (lambda r: r.pop("wall_s"), "field 'wall_s' is missing"),
    (lambda r: r.__setitem__("cell", "s/other"), "holds cell 's/other', not 's/b'"),
    (lambda r: r["result"]["per_sample"]["rouge_l"].pop(), "per_sample.rouge_l: expected one entry per id (2)"),
    (lambda r: r["result"]["per_sample"].__setitem__("ids", ["x", "x"]), "distinct sample id strings"),
    (lambda r: r["settings"].__setitem__("epochs", 99), "of other settings than its own (edited)"),
])
def test_a_damaged_result_file_is_refused_by_the_plan_naming_it(tmp_path, change, message):
    study = _tiny(tmp_path)
    study.run()
    cell = "a" if "finite" in message else "s/b"
    path = study.result_path(study.cells[cell])
    _edit(path, change)
    with pytest.raises(UserError) as e:
        _tiny(tmp_path).plan_lines()
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_a_number_too_large_for_a_float_is_refused(tmp_path):
    study = _tiny(tmp_path)
    study.run()
    path = study.result_path(study.cells["a"])
    text = open(path).read()
    open(path, "w").write(text.replace("1.5", "1e999"))
    with pytest.raises(UserError, match="holds 1e999 where a finite number belongs"):
        cells.load_result(path, "a")


def test_a_result_file_of_other_settings_is_not_done(tmp_path):
    study = _tiny(tmp_path)
    study.run()
    _edit(study.result_path(study.cells["a"]), lambda r: r.__setitem__("key", "0123456789ab"))  # another profile
    assert [c.name for c in _tiny(tmp_path).needed()] == ["a"]  # not done: it runs again (b keeps its key)


def _report(*args, env=None):
    return subprocess.run([sys.executable, "scripts/reproduce.py", "--report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MAGIC_DATA_DIR": DATA, **(env or {})})


@need_data
def test_the_report_refuses_a_missing_or_foreign_results_folder_and_writes_nothing(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("the committed report")
    p = _report("--profile", "cpu", "--results", str(tmp_path / "cpu_typo"), "--output", str(out))
    assert p.returncode == 2 and p.stderr.strip() == \
        f"reproduce.py: error: {tmp_path / 'cpu_typo'}: no such results folder; nothing written (check --results)"
    assert out.read_text() == "the committed report" and not (tmp_path / "cpu_typo").exists()
    smoke = tmp_path / "smoke"
    shutil.copytree(os.path.join(CPU, "s1"), smoke / "s1")     # the cpu profile's files under another profile
    p = _report("--profile", "smoke", "--results", str(smoke), "--output", str(out))
    assert p.returncode == 2 and "holds none of profile smoke's result files (8 made with other settings" in p.stderr
    assert out.read_text() == "the committed report" and len(p.stderr.strip().splitlines()) == 1


@need_data
def test_damaged_result_files_stop_the_report_with_one_line(tmp_path):
    results = tmp_path / "cpu"
    shutil.copytree(CPU, results)
    out = tmp_path / "RESULTS.md"
    _edit(results / "s1" / "majority.json", lambda r: r["result"]["sets"]["test"].__setitem__("accuracy", math.nan))
    p = _report("--profile", "cpu", "--results", str(results), "--output", str(out))
    assert p.returncode == 2 and not out.exists(), p.stderr
    assert p.stderr.startswith(f"reproduce.py: error: {results / 's1' / 'majority.json'}: holds NaN")
    shutil.copy(os.path.join(CPU, "s1", "majority.json"), results / "s1" / "majority.json")
    _edit(results / "s2" / "frequent.json", lambda r: r.pop("wall_s"))
    p = _report("--profile", "cpu", "--results", str(results), "--output", str(out))
    assert p.returncode == 2 and "frequent.json: not a study result record: field 'wall_s' is missing" in p.stderr


@need_data
def test_the_committed_report_regenerates_identically_with_its_verdict_rule(tmp_path):
    out = tmp_path / "RESULTS.md"
    first = _report("--profile", "cpu", "--output", str(out))
    assert first.returncode == 0, first.stderr
    text = out.read_text()
    assert _report("--profile", "cpu", "--output", str(out)).returncode == 0 and out.read_text() == text
    head = text.split("\n\n")[1]
    assert head.startswith("Stage 1") and head.count(". ") == 2  # three sentences
    assert "**Verdict rule.**" in text and text.count("Why not testable at this scale:") == 1
    stage2 = [line for line in text.splitlines() if "BLEU-2 on the test-dialogue addition" in line]
    assert len(stage2) == 4 and all("**not testable at this scale** (degenerate generators" in x for x in stage2)
    assert text.index("## Appendix") < text.index("### Wall time per cell")
    assert "p 0.344/0.340" not in text  # the compact comparison table: deltas only, significant ones bold


@need_data
def test_the_data_is_keyed_by_content_and_the_committed_cells_stay_valid(tmp_path, monkeypatch):
    committed = json.load(open(os.path.join(CPU, "data.json")))["key"]
    monkeypatch.setenv("MAGIC_DATA_DIR", DATA)
    assert build_study(PROFILES["cpu"], str(tmp_path), CPU).cells["data"].key == committed
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    test = copy / "magic" / "test.txt"
    os.chmod(test, 0o644)
    raw = bytearray(test.read_bytes())
    i = raw.index(b"a")
    raw[i:i + 1] = b"e"                                          # a same-size edit
    test.write_bytes(bytes(raw))
    monkeypatch.setenv("MAGIC_DATA_DIR", str(copy))
    edited = build_study(PROFILES["cpu"], str(tmp_path), CPU)
    assert edited.cells["data"].key != committed
    assert not any(edited.done(c) for c in edited.cells.values())  # every cell to run again


@need_data
def test_edited_sample_ids_are_named_not_a_traceback(tmp_path):
    data = tmp_path / "data" / "data"
    data.mkdir(parents=True)
    for split in ("valid", "test"):
        os.symlink(os.path.join(DATA, "magic", f"{split}.txt"), data / f"{split}.txt")
    results = {c: json.load(open(os.path.join(CPU, "s1", c.split("/")[1], "eval.json")))["result"]
               for c in ("s1/lora_label/eval", "s1/lora_motivation/eval")}
    results["s1/lora_motivation/eval"]["sets"]["test"]["ids"][4] = "test-999-9"

    class Ctx:
        study = build_study(PROFILES["cpu"], str(tmp_path / "w"), str(tmp_path / "r"), data={"source": "x"})

        def dep_work(self, name):
            return str(tmp_path / "data")

        def dep_result(self, name):
            return results[name]

    with pytest.raises(UserError, match=r"lora_motivation/eval.json: sample id 'test-999-9' .* is not a test sample"):
        stage1.compare_lora(Ctx(), PROFILES["cpu"], "s1/lora_label/eval", "s1/lora_motivation/eval")
