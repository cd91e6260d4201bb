"""Evaluation outputs: one name per run folder and checkpoint, claimed for the whole evaluation (a second evaluation of
the same checkpoint is refused before it decodes), and a partial file's malformed lines skipped with file and line,
then decoded again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from magic.common.errors import OutputExistsError
from magic.generator import evaluation as ev
from tests.scripts import load_script as _script, script_env as _env


def test_eval_output_is_unique_per_run_folder_and_checkpoint(tmp_path):
    from magic.generator import evaluation as ev

    def claim_output_paths(*args, **kw):  # the paths chosen, the claim given up at once (resumable)
        paths, partial = ev.claim_output(*args, **kw)
        partial.close()
        return paths

    assert ev.run_name_from_model_path("o/bs_4_epochs_1_20240101_120000_1/epoch_0_val_ppl_9.1") == \
        "bs_4_epochs_1_20240101_120000_1"
    eval_dir = str(tmp_path / "eval_result")
    run = "out/bs_4_epochs_1_20240101_120000"
    s1 = {"model_path": run + "/epoch_0_val_ppl_9.1"}
    p1 = claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1)
    assert p1["hypotheses"] == os.path.join(eval_dir, "bs_4_epochs_1_20240101_120000", "diversity_1.0_length_1.0.txt")
    Path(p1["hypotheses"]).write_text("a\n")
    Path(p1["scores"]).write_text(json.dumps({"settings": s1}))
    os.unlink(p1["partial"])
    # another checkpoint of the same run: its own name, the first result untouched
    s2 = {"model_path": run + "/epoch_1_val_ppl_8.0"}
    p2 = claim_output_paths(eval_dir, s2["model_path"], 1.0, 1.0, s2)
    assert p2["hypotheses"] == os.path.join(eval_dir, "bs_4_epochs_1_20240101_120000", "epoch_1_val_ppl_8.0",
                                            "diversity_1.0_length_1.0.txt")
    # a second evaluation of the same checkpoint while the first runs: another name again
    s2b = {**s2, "strategy_source": "gold"}
    p3 = claim_output_paths(eval_dir, s2b["model_path"], 1.0, 1.0, s2b)
    assert p3["hypotheses"] not in (p1["hypotheses"], p2["hypotheses"])
    # the interrupted one resumes into its own name
    assert claim_output_paths(eval_dir, s2["model_path"], 1.0, 1.0, s2)["hypotheses"] == p2["hypotheses"]
    # a finished result is never replaced silently
    with pytest.raises(OutputExistsError, match="already evaluated.*--overwrite_output_dir"):
        claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1)
    assert claim_output_paths(eval_dir, s1["model_path"], 1.0, 1.0, s1, overwrite=True) == p1


REPO = Path(__file__).resolve().parents[2]


def _test_records(n_dialogues):
    from tests.bart_fixtures import make_records

    recs = make_records(n_dialogues)
    for k, r in enumerate(recs):
        r["id"] = f"test-{k // 3}-{2 * (k % 3) + 1}"
    return recs


def _eval_args(ckpt, test, eval_dir, *extra):
    return ["--model_path", str(ckpt), "--test_data", str(test), "--eval_dir", str(eval_dir), "--device", "cpu",
            "--no_metrics", "--no_progress", "--num_beams", "1", "--num_beam_groups", "1", "--diversity_penalty", "0",
            "--max_length_res", "4", "--strategy_memory_max", "8", *extra]


def _claim_paths(*args, **kw):
    """The paths claim_output chooses, its claim given up again at once (resumable by the next claim)."""
    paths, partial = ev.claim_output(*args, **kw)
    partial.close()
    return paths


def _result_name(eval_dir, ckpt):
    return Path(eval_dir) / ev.run_name_from_model_path(str(ckpt)) / "diversity_0.0_length_1.0.txt"


def test_a_second_evaluation_of_a_checkpoint_being_evaluated_is_refused_before_it_decodes(ckpt, tmp_path):
    """Two test_evaluation.py processes on one checkpoint and settings: the first (stopped in the middle of its
    decoding with SIGSTOP, so the overlap is certain) keeps the name; the second says so in one line, exit 2,
    and decodes nothing; the first then finishes as if alone."""
    recs = _test_records(10)
    test = tmp_path / "test.json"
    test.write_text(json.dumps(recs))
    eval_dir = tmp_path / "eval_result"
    argv = [sys.executable, str(REPO / "test_evaluation.py"), *_eval_args(ckpt, test, eval_dir)]

    def decoded():
        try:
            return partial.read_text(encoding="utf-8").count("\n") - 1
        except FileNotFoundError:
            return -1

    hyp = _result_name(eval_dir, ckpt)
    partial = Path(str(hyp) + ".partial.jsonl")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    try:
        end = time.time() + 240
        while decoded() < 1:
            assert first.poll() is None, first.communicate()
            assert time.time() < end, "the first evaluation never started decoding"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)  # in the middle of its decoding
        assert partial.exists(), "the first evaluation finished before it could be stopped"
        before = partial.read_bytes()
        second = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=240)
        after = partial.read_bytes()
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
    assert second.returncode == 2, second.stdout + second.stderr
    errors = [ln for ln in second.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert errors[0].startswith("test_evaluation.py: error: ") and "another evaluation" in errors[0] \
        and str(partial) in errors[0], errors[0]
    assert after == before  # the second decoded nothing into the first one's file
    assert first.returncode == 0, out + err
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == len(recs)
    assert not partial.exists()


def test_the_claim_of_an_output_name_is_held_until_the_evaluation_ends(tmp_path):
    """claim_output keeps the name's .partial.jsonl locked: a second claim of the same checkpoint and settings
    is refused at once; other settings take another name; a claim given up (or its process killed: the lock
    goes with the process) is resumed by the next one."""
    eval_dir = str(tmp_path / "eval_result")
    s = {"model_path": "out/bs_4_epochs_1_20240101_120000/epoch_0_val_ppl_9.1", "num_beams": 5}
    paths, partial = ev.claim_output(eval_dir, s["model_path"], 1.0, 1.0, s)
    partial.add("test-0-1", "first response")
    with pytest.raises(OutputExistsError, match=r"diversity_1.0_length_1.0.txt: another evaluation of this "
                                                r"checkpoint with these settings is decoding into this name now"):
        _claim_paths(eval_dir, s["model_path"], 1.0, 1.0, s)
    other = {**s, "num_beams": 3}
    assert _claim_paths(eval_dir, s["model_path"], 1.0, 1.0, other)["hypotheses"] != paths["hypotheses"]
    partial.close()  # given up without finishing (as by a kill): resumable
    again, resumed = ev.claim_output(eval_dir, s["model_path"], 1.0, 1.0, s)
    assert again == paths and resumed.done == {"test-0-1": "first response"}
    resumed.finish()
    assert not os.path.exists(paths["partial"])


def test_malformed_lines_of_a_partial_file_are_skipped_with_file_and_line_and_decoded_again(ckpt, tmp_path,
                                                                                             monkeypatch):
    """An interrupted evaluation's .partial.jsonl, edited by hand: a line [1,2], a non-string response, an id
    that is not a test sample, a duplicate, a torn last line. The rerun warns naming file:line for each, keeps the
    good lines (their samples are not decoded again) and decodes the others again: exit 0, the same result."""
    test_evaluation = _script("test_evaluation.py")
    recs = _test_records(2)
    test = tmp_path / "test.json"
    test.write_text(json.dumps(recs))
    eval_dir = tmp_path / "eval_result"
    argv = _eval_args(ckpt, test, eval_dir)

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # killed while writing the scores: the partial file is complete

    with monkeypatch.context() as m:
        m.setattr(ev, "atomic_write_json", interrupted)
        assert test_evaluation.main(argv) == 130
    hyp = _result_name(eval_dir, ckpt)
    clean = hyp.read_text(encoding="utf-8").splitlines()
    partial = Path(str(hyp) + ".partial.jsonl")
    lines = partial.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + len(recs)
    ids = [r["id"] for r in recs]
    lines[1] = "[1, 2]"
    lines[2] = json.dumps({"id": ids[1], "response": 7})
    lines[3] = json.dumps({"id": ids[2], "response": "kept from the first run"})
    lines.insert(4, json.dumps({"id": "test-99-1", "response": "not a test sample"}))
    lines.insert(5, json.dumps({"id": ids[2], "response": "a second answer"}))
    partial.write_text("\n".join(lines) + '\n{"id": "test-1-', encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        assert test_evaluation.main(argv) == 0
    said = [str(w.message) for w in caught if ".partial.jsonl:" in str(w.message)]
    for line_no, what in ((2, "not a JSON object"), (3, "'response' must be a string"),
                          (5, "not a sample of"), (6, "duplicate"), (len(lines) + 1, "incomplete last line")):
        assert any(f"{partial}:{line_no}: " in s and what in s for s in said), (line_no, said)
    got = hyp.read_text(encoding="utf-8").splitlines()
    assert got[2] == "kept from the first run"  # a good line is used, not decoded again
    assert got[:2] + got[3:] == clean[:2] + clean[3:]  # the damaged ones decoded again, to the same text
    assert not partial.exists()
