"""compare_results.py: two .scores.json files compared sample by sample (identical -> not significant;
reference-equal vs poor -> significant; swapping A and B flips every sign and keeps every p; different ids,
a file without per-sample scores, bad flags -> one error line, exit 2, nothing written), PPL from per-sample
nll/tokens, and test_evaluation.py's scores files feeding it end to end."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compare_results
from magic.common.errors import run_main
from magic.metric.protocol import compute_scores_and_samples
from tests.generator.test_evaluation import trained_checkpoint  # noqa: F401  (a fixture: a tiny checkpoint of main.py)
from tests.metric.test_significance import MIDDLING, POOR, REFS

REPO = Path(__file__).resolve().parents[2]
IDS = [f"test-{i // 4}-{2 * (i % 4) + 1}" for i in range(len(REFS))]
TESTED = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

pytestmark = pytest.mark.filterwarnings("ignore:nltk's punkt_tab data is not installed")


def write_scores(path: Path, hyps, ids=IDS, order=None, **extra) -> Path:
    """A .scores.json as test_evaluation.py writes it (scores + per_sample keyed by id), METEOR off;
    ``order``: the sample order in the file."""
    scores, per_sample = compute_scores_and_samples(REFS, hyps, no_meteor=True)
    per_sample = {**per_sample, **extra}
    if order is not None:
        def pick(x):
            return [x[i] for i in order]
        per_sample = {k: ({kk: (pick(vv) if isinstance(vv, list) else vv) for kk, vv in v.items()}
                          if isinstance(v, dict) else pick(v) if isinstance(v, list) else v)
                      for k, v in per_sample.items()}
    per_sample = {"ids": list(ids), **per_sample}
    path.write_text(json.dumps({"scores": scores, "n_samples": len(hyps), "per_sample": per_sample}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scores")
    return {"refs": write_scores(d / "refs.scores.json", REFS),
            "poor": write_scores(d / "poor.scores.json", POOR),
            "middling": write_scores(d / "middling.scores.json", MIDDLING)}


def run(argv, capsys):
    rc = run_main("compare_results.py", lambda: compare_results.main([str(a) for a in argv]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def compare(a, b, tmp_path, capsys, *flags):
    out = tmp_path / f"{Path(a).stem}_vs_{Path(b).stem}.json"
    rc, stdout, stderr = run([a, b, "--output", out, *flags], capsys)
    assert rc == 0, stderr
    return json.loads(out.read_text()), stdout


def test_identical_systems_no_metric_significant(files, tmp_path, capsys):
    result, stdout = compare(files["middling"], files["middling"], tmp_path, capsys)
    assert set(result["metrics"]) == set(TESTED) and result["n_samples"] == len(REFS)
    for name, r in result["metrics"].items():
        assert r["delta"] == 0 and r["p_boot"] > 0.05 and r["p_ar"] > 0.05 and r["better"] is None, name
    assert set(result["not_tested"]) == {"Distinct-1", "Distinct-2"}
    assert result["resamples"] == 1000 and result["permutations"] == 1000
    assert "METEOR: per-sample scores only" not in " ".join(result["notes"])
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    for col in ("A", "B", "B-A", "95 % CI", "p bootstrap", "p AR"):
        assert col in header
    assert any(line.startswith("Bleu_2") for line in lines) and "not resampled" in stdout


def test_reference_equal_vs_poor_is_significant_and_swap_flips_the_sign(files, tmp_path, capsys):
    forward, stdout = compare(files["poor"], files["refs"], tmp_path, capsys)
    for name in ("Bleu_2", "ROUGE_L", "CIDEr"):
        r = forward["metrics"][name]
        assert r["delta"] > 0 and r["ci_low"] > 0, name
        assert r["p_boot"] < 0.05 and r["p_ar"] < 0.05 and r["better"] == "B", name
    assert forward["metrics"]["Bleu_2"]["b"] == pytest.approx(1.0)
    assert "*" in next(line for line in stdout.splitlines() if line.startswith("ROUGE_L"))
    backward, _ = compare(files["refs"], files["poor"], tmp_path, capsys)
    for name, r in forward["metrics"].items():
        s = backward["metrics"][name]
        assert s["delta"] == -r["delta"] and (s["a"], s["b"]) == (r["b"], r["a"]), name
        assert s["p_boot"] == r["p_boot"] and s["p_ar"] == r["p_ar"], name
        assert s["ci_low"] == pytest.approx(-r["ci_high"]) and s["ci_high"] == pytest.approx(-r["ci_low"]), name
        assert s["better"] == ("A" if r["better"] == "B" else r["better"]), name
    for name, r in forward["not_tested"].items():
        assert backward["not_tested"][name]["delta"] == -r["delta"]


def test_samples_are_matched_by_id_not_by_position(files, tmp_path, capsys):
    order = list(np.random.default_rng(0).permutation(len(REFS)))
    shuffled = write_scores(tmp_path / "shuffled.scores.json", MIDDLING, ids=[IDS[i] for i in order], order=order)
    a, _ = compare(files["poor"], files["middling"], tmp_path, capsys)
    b, _ = compare(files["poor"], shuffled, tmp_path, capsys)
    assert a["metrics"] == b["metrics"]
    # the files' orders differ; samples are resampled in sorted-id order, so the swap still only flips signs
    back, _ = compare(shuffled, files["poor"], tmp_path, capsys)
    for name, r in b["metrics"].items():
        s = back["metrics"][name]
        assert s["delta"] == -r["delta"] and s["p_boot"] == r["p_boot"] and s["p_ar"] == r["p_ar"]
        assert s["ci_low"] == pytest.approx(-r["ci_high"], rel=1e-9), name


def test_mismatched_ids_are_refused_with_one_line_and_nothing_written(files, tmp_path, capsys):
    other = write_scores(tmp_path / "other.scores.json", MIDDLING, ids=IDS[:-1] + ["test-99-1"])
    out = tmp_path / "out.json"
    rc, stdout, stderr = run([files["middling"], other, "--output", out], capsys)
    assert rc == 2 and not out.exists() and stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"compare_results.py: error: {other}: ")
    assert "'test-99-1'" in stderr and "'test-14-7'" in stderr


def test_file_without_per_sample_scores_is_refused(files, tmp_path, capsys):
    old = tmp_path / "old.scores.json"
    old.write_text(json.dumps({"scores": {"Bleu_1": 0.1}, "n_samples": 60}))
    out = tmp_path / "out.json"
    rc, _, stderr = run([old, files["refs"], "--output", out], capsys)
    assert rc == 2 and not out.exists()
    assert stderr.startswith(f"compare_results.py: error: {old}: no per-sample scores") and stderr.count("\n") == 1
    broken = write_scores(tmp_path / "broken.scores.json", MIDDLING, rouge_l=[0.5] * 3)
    rc, _, stderr = run([files["refs"], broken, "--output", out], capsys)
    assert rc == 2 and f"{broken}: per_sample.rouge_l: expected 60 numbers" in stderr and not out.exists()
    rc, _, stderr = run([tmp_path / "missing.json", files["refs"], "--output", out], capsys)
    assert rc == 2 and "missing.json" in stderr and not out.exists()


def test_bad_flags_exit_2(files, tmp_path, capsys):
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as e:
        compare_results.main([str(files["refs"]), str(files["poor"]), "--resamples", "100"])
    assert e.value.code == 2 and "expected an integer >= 1000" in capsys.readouterr().err
    rc, _, stderr = run([files["refs"], files["poor"], "--metrics", "BLEU", "--output", out], capsys)
    assert rc == 2 and stderr.startswith("compare_results.py: error: --metrics: ['BLEU']") and not out.exists()
    rc, _, stderr = run([files["refs"], files["poor"], "--output", files["poor"]], capsys)
    assert rc == 2 and "one of the inputs" in stderr


def test_metrics_subset_meteor_ppl_and_extras(files, tmp_path, capsys):
    n = len(REFS)
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 15, size=n)
    nll_a = tokens * rng.uniform(2.0, 3.0, size=n)
    a = write_scores(tmp_path / "a.scores.json", MIDDLING, nll=nll_a.tolist(), tokens=tokens.tolist(),
                     meteor=rng.uniform(0.2, 0.4, size=n).tolist(), length=tokens.tolist())
    b = write_scores(tmp_path / "b.scores.json", MIDDLING, nll=(nll_a * 0.7).tolist(), tokens=tokens.tolist(),
                     length=tokens.tolist())
    result, stdout = compare(a, b, tmp_path, capsys)
    ppl = result["metrics"]["PPL"]
    assert ppl["a"] == pytest.approx(np.exp(nll_a.sum() / tokens.sum()))
    assert ppl["delta"] < 0 and ppl["higher_is_better"] is False and ppl["better"] == "B"  # lower PPL wins
    assert result["metrics"]["length"]["delta"] == 0 and result["metrics"]["length"]["higher_is_better"] is None
    assert "METEOR" not in result["metrics"]
    assert any(note.startswith("METEOR: per-sample scores only in") for note in result["notes"])
    sub, _ = compare(a, b, tmp_path, capsys, "--metrics", "PPL", "Bleu_2", "Distinct-1")
    assert set(sub["metrics"]) == {"PPL", "Bleu_2"} and set(sub["not_tested"]) == {"Distinct-1"}


def test_command_line_by_path_exit_code_and_one_line(files, tmp_path):
    other = write_scores(tmp_path / "other.scores.json", MIDDLING, ids=IDS[:-1] + ["test-99-1"])
    r = subprocess.run([sys.executable, "compare_results.py", str(files["poor"]), str(other), "--output",
                        str(tmp_path / "x.json")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"compare_results.py: error: {other}: ")
    out = tmp_path / "ok.json"
    r = subprocess.run([sys.executable, "compare_results.py", str(files["poor"]), str(files["refs"]), "--output",
                        str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["metrics"]["Bleu_2"]["better"] == "B"


def test_scores_files_of_test_evaluation_compare(trained_checkpoint, tmp_path, capsys):  # noqa: F811
    """test_evaluation.py writes per_sample keyed by id (numbers only); two of its runs compare."""
    spec = importlib.util.spec_from_file_location("magic_test_evaluation_script_cmp", REPO / "test_evaluation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt, test, recs = trained_checkpoint
    eval_dir = tmp_path / "eval_result"
    paths = []
    for penalty in ("1.0", "2.0"):
        assert script.main(["--test_data", str(test), "--model_path", str(ckpt), "--device", "cpu", "--num_beams", "2",
                            "--num_beam_groups", "1", "--max_length_res", "8", "--length_penalty", penalty,
                            "--eval_dir", str(eval_dir), "--no_progress", "--no_meteor"]) == 0
        paths.append(next(eval_dir.glob(f"*/diversity_1.0_length_{penalty}.txt.scores.json")))
    capsys.readouterr()
    record = json.loads(paths[0].read_text())
    per_sample = record["per_sample"]
    assert per_sample["ids"] == [r["id"] for r in recs] and per_sample["meteor"] is None
    assert len(per_sample["bleu"]["correct"]) == len(per_sample["rouge_l"]) == len(per_sample["cider"]) == len(recs)
    assert np.mean(per_sample["rouge_l"]) == pytest.approx(record["scores"]["ROUGE_L"])
    # no text stored: beside the ids, every leaf is a number (or METEOR's null)
    leaves = []
    stack = [v for k, v in per_sample.items() if k != "ids"]
    while stack:
        x = stack.pop()
        if isinstance(x, (dict, list)):
            stack.extend(x.values() if isinstance(x, dict) else x)
        else:
            leaves.append(x)
    assert leaves and all(isinstance(v, (int, float)) or v is None for v in leaves)
    result, _ = compare(paths[0], paths[1], tmp_path, capsys)
    assert result["n_samples"] == len(recs) and set(TESTED) <= set(result["metrics"])
    assert not [n for n in result["notes"] if "differs from the reported" in n]


def _refused(a, b, tmp_path, capsys, *flags):
    out = tmp_path / "refused.json"
    rc, _, stderr = run([a, b, "--output", out, *flags], capsys)
    assert rc == 2 and not out.exists() and stderr.count("\n") == 1, stderr
    return stderr


def test_files_sharing_no_metric_or_holding_ids_only_are_refused(files, tmp_path, capsys):
    rouge_only = tmp_path / "rouge.scores.json"
    cider_only = tmp_path / "cider.scores.json"
    ids_only = tmp_path / "ids.scores.json"
    full = json.loads(files["refs"].read_text())
    for path, keep in ((rouge_only, "rouge_l"), (cider_only, "cider")):
        ps = {"ids": full["per_sample"]["ids"], keep: full["per_sample"][keep]}
        path.write_text(json.dumps({"scores": {}, "per_sample": ps}))
    ids_only.write_text(json.dumps({"scores": {}, "per_sample": {"ids": full["per_sample"]["ids"]}}))
    assert "shares no metric with" in _refused(rouge_only, cider_only, tmp_path, capsys)
    assert f"{ids_only}: per_sample holds sample ids but no per-sample scores" in \
        _refused(files["refs"], ids_only, tmp_path, capsys)


@pytest.mark.parametrize("edit, message", [
    (lambda ps: ps["bleu"]["correct"][3].__setitem__(0, -1), "per_sample.bleu.correct[3, 0] = -1"),
    (lambda ps: ps["bleu"]["correct"][5].__setitem__(1, ps["bleu"]["guess"][5][1] + 1), "is more than its guess"),
    (lambda ps: ps["bleu"]["hyp_len"].__setitem__(0, 2.5), "per_sample.bleu.hyp_len[0] = 2.5: expected integers"),
    (lambda ps: ps["rouge_l"].__setitem__(7, 5.0), "per_sample.rouge_l[7] = 5: expected numbers in [0, 1]"),
    (lambda ps: ps["cider"].__setitem__(2, -0.1), "per_sample.cider[2] = -0.1"),
])
def test_every_per_sample_value_is_range_checked(files, tmp_path, capsys, edit, message):
    rec = json.loads(files["middling"].read_text())
    edit(rec["per_sample"])
    bad = tmp_path / "edited.scores.json"
    bad.write_text(json.dumps(rec))
    assert message in _refused(files["refs"], bad, tmp_path, capsys)


def test_oversized_score_files_are_refused_before_reading(files, tmp_path, capsys, monkeypatch):
    from magic.metric import significance
    monkeypatch.setattr(significance, "MAX_SCORE_BYTES", files["refs"].stat().st_size - 1)
    stderr = _refused(files["refs"], files["poor"], tmp_path, capsys)
    assert stderr.startswith(f"compare_results.py: error: {files['refs']}: ") and "a score file may hold" in stderr


RESULTS = REPO / "results" / "cpu" / "s2"


@pytest.mark.skipif(not (RESULTS / "frequent.json").exists(), reason="the committed cpu results")
def test_study_result_files_compare_and_are_named_by_their_cell(tmp_path, capsys):
    a, b = RESULTS / "magic" / "seed0" / "test_all_inferred.json", RESULTS / "no_aux" / "seed0" / "test_all_inferred.json"
    result, stdout = compare(a, b, tmp_path, capsys)
    assert stdout.startswith(f"A: s2/magic/seed0/test_all_inferred ({a})\nB: s2/no_aux/seed0/test_all_inferred ({b})")
    assert result["n_samples"] == 1000 and result["name_b"] == "s2/no_aux/seed0/test_all_inferred"
    committed = json.loads((RESULTS / "compare.json").read_text())["result"]["no_aux@test_all"]["metrics"]
    assert result["metrics"]["Bleu_2"]["ci_low"] == pytest.approx(committed["Bleu_2"]["ci_low"])  # the study's own
    freq, stdout = compare(RESULTS / "frequent.json", a, tmp_path, capsys)  # the set whose samples A holds
    assert freq["name_a"] == "s2/frequent#test_all" and freq["metrics"]["Bleu_2"]["better"] == "B"
    test, _ = compare(f"{RESULTS / 'frequent.json'}#test", RESULTS / "magic" / "seed1" / "test_inferred.json",
                      tmp_path, capsys)
    assert test["n_samples"] == 195
    assert "holds no per-sample generation scores" in _refused(REPO / "results" / "cpu" / "s1" / "majority.json", a,
                                                                tmp_path, capsys)
