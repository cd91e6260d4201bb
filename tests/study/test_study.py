"""The results study (scripts/reproduce.py, src/magic/study/): cells cached by their settings, the paper
profile's commands carry the released flags, and the smoke profile runs end to end on the real data."""
import json
import os
import subprocess
import sys

import pytest

from magic.study import stage1, stage2
from magic.study.cells import DONE, MARKER, Cell, Study
from magic.study.data import evenly_spaced
from magic.study.plan import build_study
from magic.study.profiles import PROFILES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("MAGIC_DATA_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data", "esconv")
HAVE_DATA = os.path.exists(os.path.join(DATA, "magic", "test.txt"))


def test_evenly_spaced_covers_the_whole_list():
    items = list(range(100))
    assert evenly_spaced(items, 5) == [0, 25, 50, 74, 99]
    assert evenly_spaced(items, None) == items and evenly_spaced(items, 500) == items
    assert evenly_spaced(items, 1) == [0] and evenly_spaced(items, 0) == []


def _study(tmp_path, calls, value=1):
    def run_a(ctx):
        calls.append("a")
        open(os.path.join(ctx.work, "model.txt"), "w").write("weights")
        return {"value": value}

    def run_b(ctx):
        calls.append("b")
        assert os.path.exists(os.path.join(ctx.dep_work("a"), "model.txt"))
        return {"double": 2 * ctx.dep_result("a")["value"]}

    cells = [Cell("a", {"v": value}, run_a), Cell("s/b", {}, run_b, deps=["a"])]
    return Study(cells, str(tmp_path / "work"), str(tmp_path / "results"), log=lambda m: None)


def test_cells_are_cached_by_settings_and_rerun_when_upstream_changes(tmp_path):
    calls = []
    _study(tmp_path, calls).run()
    assert calls == ["a", "b"]
    rec = json.loads((tmp_path / "results" / "s" / "b.json").read_text())
    assert rec["result"] == {"double": 2} and rec["machine"]["cpu"]
    calls.clear()
    _study(tmp_path, calls).run()
    assert calls == []                                   # everything done: nothing runs
    _study(tmp_path, calls, value=3).run()
    assert calls == ["a", "b"]                           # a changed setting upstream: both cells again
    assert json.loads((tmp_path / "results" / "s" / "b.json").read_text())["result"] == {"double": 6}


def test_results_without_work_files_recreate_only_what_a_cell_needs(tmp_path):
    calls = []
    study = _study(tmp_path, calls)
    study.run()
    os.remove(tmp_path / "results" / "s" / "b.json")     # b to redo; a's files gone (a fresh clone)
    import shutil
    shutil.rmtree(tmp_path / "work")
    calls.clear()
    before = (tmp_path / "results" / "a.json").read_text()
    _study(tmp_path, calls).run()
    assert calls == ["a", "b"]                           # a's files recreated, its committed result kept
    assert (tmp_path / "results" / "a.json").read_text() == before


def test_an_interrupted_cell_restarts_cleanly(tmp_path):
    calls = []
    study = _study(tmp_path, calls)
    work = study.work_dir(study.cells["a"])
    os.makedirs(work)
    open(os.path.join(work, MARKER), "w").close()
    open(os.path.join(work, "half-written.bin"), "w").close()
    study.run()
    assert not os.path.exists(os.path.join(work, "half-written.bin")) and os.path.exists(os.path.join(work, DONE))


def test_a_resumable_cell_continues_in_its_folder(tmp_path):
    kept = []

    def run(ctx):
        kept.append(os.path.exists(os.path.join(ctx.work, "answer_cache.jsonl")))
        return {}

    study = Study([Cell("s1/infer", {}, run, resumable=True)], str(tmp_path / "w"), str(tmp_path / "r"),
                  log=lambda m: None)
    work = study.work_dir(study.cells["s1/infer"])
    os.makedirs(work)
    open(os.path.join(work, MARKER), "w").close()
    open(os.path.join(work, "answer_cache.jsonl"), "w").write("{}\n")  # what an interrupted run had answered
    study.run()
    assert kept == [True]
    assert all(study.cells[c].resumable for c in ("s1/zero_shot", "s1/lora_label/eval", "s1/best_on_addition")
               for study in [build_study(PROFILES["cpu"], str(tmp_path), str(tmp_path))])


def test_a_folder_the_study_did_not_write_is_never_removed(tmp_path):
    study = _study(tmp_path, [])
    work = study.work_dir(study.cells["a"])
    os.makedirs(work)
    open(os.path.join(work, "precious.txt"), "w").close()
    with pytest.raises(RuntimeError, match="not written by the study"):
        study.run()
    assert os.path.exists(os.path.join(work, "precious.txt"))


def test_every_profile_has_every_cell(tmp_path):
    names = {p: set(build_study(prof, str(tmp_path), str(tmp_path)).cells) for p, prof in PROFILES.items()}
    shape = {p: {n.replace("seed1", "seedK").replace("seed2", "seedK") for n in cells} for p, cells in names.items()}
    assert len({frozenset(s) for s in shape.values()}) == 1
    cpu = names["cpu"]
    for cell in ("s1/majority", "s1/zero_shot", "s1/lora_label/eval", "s1/lora_motivation/eval", "s1/compare",
                 "s2/magic/seed0/test_inferred", "s2/magic/seed0/test_gold", "s2/magic/seed0/test_all_inferred",
                 "s2/magic/seed0/test_wrong_inferred", "s2/no_memory/seed2/test_inferred",
                 "s2/no_aux/seed0/test_inferred", "s2/motivation/seed0/test_inferred", "s2/frequent",
                 "s2/compare"):
        assert cell in cpu
    assert len(PROFILES["cpu"].seeds) >= 3 and PROFILES["cpu"].valid_subset >= 500
    assert PROFILES["cpu"].test_all_subset >= 1000 and PROFILES["cpu"].test_subset is None


def test_generators_train_while_stage1_runs(tmp_path):
    """Only the motivation-fused system's training and the evaluations wait for stage 1 (its strategies and
    motivations); the other trainings need the data, the prompts' subsets and the pre-trained BART only."""
    study = build_study(PROFILES["cpu"], str(tmp_path), str(tmp_path))

    def upstream(name):
        seen, todo = set(), list(study.cells[name].deps)
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo += study.cells[d].deps
        return seen

    trains = [n for n in study.cells if n.startswith("s2/") and n.endswith("/train")]
    assert len(trains) == 8
    for name in trains:
        from_stage1 = {d for d in upstream(name) if d.startswith("s1/")}
        assert bool(from_stage1) == name.startswith("s2/motivation/"), (name, from_stage1)
    for name in study.cells:
        if name.startswith("s2/") and name.count("/") == 3 and not name.endswith("/train"):
            assert "s1/best_on_addition" in upstream(name), name


class _Stop(Exception):
    pass


class _Ctx:
    def __init__(self, tmp_path):
        self.work = str(tmp_path / "cell")
        os.makedirs(self.work, exist_ok=True)
        self.tmp = tmp_path

    def dep_work(self, name):
        folder = self.tmp / name.replace("/", "_")
        (folder / "model").mkdir(parents=True, exist_ok=True)
        (folder / "model" / "config.json").write_text('{"num_hidden_layers": 32}')
        return str(folder)


def _first_command(monkeypatch, fn):
    seen = []

    def fake(cmd, *a, **k):
        seen.append(list(cmd))
        raise _Stop

    monkeypatch.setattr(stage1, "run_logged", fake)
    monkeypatch.setattr(stage2, "run_logged", fake)
    with pytest.raises(_Stop):
        fn()
    return seen[0]


def _flags(cmd):
    return {cmd[i]: (cmd[i + 1] if i + 1 < len(cmd) and not cmd[i + 1].startswith("--") else True)
            for i in range(len(cmd)) if cmd[i].startswith("--")}


def test_paper_profile_runs_the_released_command_lines(monkeypatch, tmp_path):
    paper = PROFILES["paper"]
    ctx = _Ctx(tmp_path)
    lora = _flags(_first_command(monkeypatch, lambda: stage1.train_lora(ctx, paper, "motivation", 0)))
    # README of Wh2018/MAGIC, step 2 (LLaMA-Factory src/train_bash.py)
    released = {"--template": "default", "--finetuning_type": "lora", "--lora_target": "q_proj,v_proj",
                "--per_device_train_batch_size": "16", "--gradient_accumulation_steps": "4",
                "--lr_scheduler_type": "cosine", "--learning_rate": "5e-05", "--num_train_epochs": "5.0",
                "--fp16": True}
    for flag, value in released.items():
        assert lora.get(flag) == value, flag
    assert lora["--dataset"].endswith("train_motivation.json")
    gen = _flags(_first_command(monkeypatch, lambda: stage2.train(ctx, paper, "magic", 0)))
    # released main.py defaults (the README runs `python main.py`)
    for flag, value in {"--batch_size": "16", "--num_epochs": "20", "--learning_rate": "5e-05",
                        "--max_length": "512"}.items():
        assert gen.get(flag) == value, flag
    assert "--no_memory" not in gen and "--use_motivation" not in gen and "--l_strategy" not in gen
    assert gen["--patience"] == "5"  # released main.py: stop after 5 epochs without improvement
    nomem = _flags(_first_command(monkeypatch, lambda: stage2.train(ctx, paper, "no_memory", 0)))
    assert nomem["--no_memory"] is True
    noaux = _flags(_first_command(monkeypatch, lambda: stage2.train(ctx, paper, "no_aux", 0)))
    assert noaux["--l_strategy"] == "0"


def test_without_data_a_requested_profile_exits_2_naming_the_fetch_command(tmp_path):
    env = {**os.environ, "MAGIC_DATA_DIR": str(tmp_path / "nothing")}
    p = subprocess.run([sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--work", str(tmp_path / "w"),
                        "--results", str(tmp_path / "r")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith(f"reproduce.py: error: no ESConv data in {tmp_path / 'nothing'} (no such folder): "
                               "missing reconstructed/train.txt, magic/valid.txt")
    assert "`python data/fetch_data.py`" in p.stderr and not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason=f"needs the real ESConv data in {DATA} (MAGIC_DATA_DIR)")
def test_smoke_profile_end_to_end(tmp_path):
    """Every cell of the study at tiny sizes on the real data: both tables in the RESULTS format; a rerun
    runs nothing and writes the same report."""
    cmd = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--work", str(tmp_path / "work"),
           "--results", str(tmp_path / "results"), "--output", str(tmp_path / "RESULTS.md")]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Table 1" in report and "## Table 2" in report and "not run yet" not in report
    for row in ("majority class", "LoRA, label only", "LoRA, ChatGPT motivations", "MAGIC (inferred strategies)",
                "w/o strategy memory", "most frequent training response", "forced wrong strategy"):
        assert row in report
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and " 0 to run" in again.stdout
    assert (tmp_path / "RESULTS.md").read_text() == report
    results = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "results") for f in fs if f.endswith(".json")]
    test_text = open(os.path.join(DATA, "magic", "test.txt"), encoding="utf-8").read()
    for path in results:  # numbers and labels only: no response of the data in any result file
        for value in _strings(json.load(open(path))):
            assert len(value) < 40 or value not in test_text, (path, value[:60])


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_a_second_study_on_the_same_work_folder_is_refused_and_the_live_folder_kept(tmp_path):
    from magic.common.errors import UserError
    seen = {}

    def run_a(ctx):  # while this cell works, a second study starts on the same work folder
        open(os.path.join(ctx.work, "live.txt"), "w").write("training")
        with pytest.raises(UserError) as e:
            _study(tmp_path, []).run(["a"])
        seen["error"] = str(e.value)
        assert os.path.exists(os.path.join(ctx.work, "live.txt"))
        return {"value": 1}

    Study([Cell("a", {"v": 1}, run_a)], str(tmp_path / "work"), str(tmp_path / "results"), log=lambda m: None).run()
    assert seen["error"].startswith(f"{tmp_path / 'work'}: another study is running on this work folder (pid ")
    with _study(tmp_path, []).locked():  # the lock went with the first study
        pass


def test_unknown_only_cells_are_refused_before_anything_runs(tmp_path):
    from magic.common.errors import UserError
    calls = []
    with pytest.raises(UserError, match="--only: no_such_cell: no such cell in this profile's plan"):
        _study(tmp_path, calls).run(["a", "no_such_cell"])
    assert calls == [] and not (tmp_path / "work").exists()
    p = subprocess.run([sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--only", "no_such_cell",
                        "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "MAGIC_DATA_DIR": DATA})
    if HAVE_DATA:  # without data the study is skipped before its plan
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("reproduce.py: error: --only: "), p.stderr
        assert not (tmp_path / "w").exists()


@pytest.mark.skipif(not HAVE_DATA, reason=f"needs the real ESConv data in {DATA} (MAGIC_DATA_DIR)")
def test_commit_outside_the_repository_is_refused_before_the_first_cell(tmp_path):
    p = subprocess.run([sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--only", "data", "--commit",
                        "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MAGIC_DATA_DIR": DATA})
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"reproduce.py: error: --commit: {tmp_path / 'r'} is outside the git repository "
        f"{os.path.realpath(ROOT)}; nothing could be committed: drop --commit or run from a clone"], p.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
