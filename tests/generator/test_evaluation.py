"""src/magic/generator/evaluation.py + metric/protocol.py + test_evaluation.py: released cleaning and tokenisation, output names, '&' for empty
hypotheses, and an end-to-end run on a checkpoint written by main.py (tiny BART, a few records)."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from metric import protocol
from magic.generator import evaluation as ev
from magic.generator.eval_config import DecodingConfig
from tests.bart_fixtures import DEFAULT_TEXTS, make_tiny_bart_dir

REPO = Path(__file__).resolve().parents[2]


def _script():
    """The repository's test_evaluation.py (its name clashes with this test module, so load it by path)."""
    spec = importlib.util.spec_from_file_location("magic_test_evaluation_script", REPO / "test_evaluation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STRATS = ["Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
          "Affirmation and Reassurance", "Providing Suggestions or Information", "Greeting", "Others"]


@pytest.mark.parametrize("raw,clean", [
    ("Hello, how are you?", "Hello , how are you ?"),
    ("Wait... what!!!", "Wait . what !"),
    ('He said "hi".', "He said hi."),  # quotes go last, after spacing: the '.' followed a '"', not a word char
    ("It costs 3.5 dollars; ok: fine", "It costs 3 .5 dollars ; ok : fine"),
    ("I am sorry .. really", "I am sorry . really"),
    ("two\nlines\r\nhere", "two lines here"),  # ours: one response per line
])
def test_clean_response_released_rules(raw, clean):
    assert protocol.clean_response(raw) == clean


def test_empty_hypothesis_becomes_ampersand_and_text_is_lowercased_and_tokenised():
    refs, hyps = protocol.prepare_for_metrics(["I'm fine, THANKS.\n", "Hi ."], ["", "Hello there!"])
    assert refs == ["i 'm fine , thanks .", "hi ."]
    assert hyps == ["&", "hello there !"]
    with pytest.raises(ValueError, match="align"):
        protocol.prepare_for_metrics(["a"], [])


def test_fallback_tokeniser_matches_treebank_on_spaced_text(monkeypatch):
    monkeypatch.setattr(protocol, "punkt_available", lambda language="english": False)
    from nltk.tokenize import NLTKWordTokenizer
    text = "i am sorry to hear that . have you tried talking to him ? i do not know ..."
    assert protocol.word_tokenize(text) == NLTKWordTokenizer().tokenize(text)  # same as preserve_line=True
    assert protocol.word_tokenize("i'm fine, thanks.") == ["i", "'m", "fine", ",", "thanks", "."]
    assert protocol.tokenizer_name().startswith("fallback")


@pytest.mark.parametrize("path,run", [
    ("out_model/bs_16_epochs_20_20240101_123456/epoch_3_val_ppl_12.34", "bs_16_epochs_20_20240101_123456"),
    ("/abs/out_model/bs_8_epochs_5_20240101_123456/last", "bs_8_epochs_5_20240101_123456"),
    ("my_ckpts/best", "my_ckpts/best"),
    ("/abs/ckpt/", "abs/ckpt"),  # never escapes eval_result/
    ("../../ckpt/x", "ckpt/x"),
])
def test_run_name_from_model_path(path, run):
    assert ev.run_name_from_model_path(path) == run


def test_released_31_character_slice_agrees_for_two_digit_runs():
    path = "x/out_model/bs_16_epochs_20_20240101_123456/epoch_1_val_ppl_9.9"
    i = path.find("out_model/")
    assert path[i + 10:i + 41] == ev.run_name_from_model_path(path)


def test_output_names():
    assert ev.result_file_name(1, 1.0) == "diversity_1.0_length_1.0.txt"
    p = ev.output_paths("eval_result", "out_model/bs_16_epochs_20_20240101_123456/e", 0.5, 2)
    assert p["references"] == os.path.join("eval_result", "response_lables.txt")
    assert p["hypotheses"] == os.path.join("eval_result", "bs_16_epochs_20_20240101_123456",
                                           "diversity_0.5_length_2.0.txt")
    assert p["scores"] == p["hypotheses"] + ".scores.json"


def test_select_strategy_gold_and_inferred():
    recs = [{"id": "a", "strategy": "Question", "gold_strategy": "Others"}]
    assert ev.select_strategy(recs, "inferred")[0]["strategy"] == "Question"
    assert ev.select_strategy(recs, "gold")[0]["strategy"] == "Others"
    with pytest.raises(ValueError, match="id b.*gold_strategy"):
        ev.select_strategy([{"id": "b", "strategy": "Question"}], "gold", "test.json")


def test_format_scores_x100_two_decimals():
    out = protocol.format_scores({"CIDEr": 0.12345, "Bleu_1": 0.5})
    assert out.splitlines()[:2] == ["Bleu_1: 50.00", "CIDEr: 12.35"]


# ------------------------------------------------------------------------------------ end to end
def _records(n, offset=0):
    recs = []
    for i in range(n):
        j = i + offset
        recs.append({"id": f"test-{j}-5", "context": ["I lost my job.", DEFAULT_TEXTS[j], DEFAULT_TEXTS[j + 1]],
                     "response": DEFAULT_TEXTS[j + 2], "strategy": STRATS[j % 8], "gold_strategy": STRATS[(j + 3) % 8],
                     "response_memory": [DEFAULT_TEXTS[j + 3]] if j % 2 else [],
                     "strategy_memory": [STRATS[j % 8]] if j % 2 else [], "motivation": "The supporter asks."})
    return recs


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A one-epoch run of main.py on a few records: returns (checkpoint dir, test records path, records)."""
    main = pytest.importorskip("main")
    tmp = tmp_path_factory.mktemp("e2e")
    bart = make_tiny_bart_dir(tmp)
    train = tmp / "train.json"
    # train records carry ids of neither split checked here (training refuses test ids as train or valid data)
    train.write_text(json.dumps([{**r, "id": f"synthetic-{k}"} for k, r in enumerate(_records(8))]))
    test_recs = _records(5, offset=6)
    test = tmp / "test.json"
    test.write_text(json.dumps(test_recs))
    torch.manual_seed(0)
    main.main(["--train_data", str(train), "--valid_data", str(train), "--bart_base_dir", str(bart),
               "--output_dir", str(tmp / "out_model"), "--num_epochs", "1", "--batch_size", "4", "--device", "cpu"])
    runs = list((tmp / "out_model").glob("bs_4_epochs_1_*/epoch_*"))
    assert len(runs) == 1, runs
    return runs[0], test, test_recs


def test_end_to_end_one_line_per_sample_and_scores(trained_checkpoint, tmp_path, capsys):
    test_evaluation = _script()
    from magic.generator.checkpoint import BANK_FILE, load_checkpoint

    ckpt, test, recs = trained_checkpoint
    eval_dir = tmp_path / "eval_result"
    rc = test_evaluation.main(["--test_data", str(test), "--model_path", str(ckpt), "--device", "cpu",
                               "--num_beams", "2", "--num_beam_groups", "2", "--max_length_res", "8",
                               "--eval_dir", str(eval_dir), "--no_progress", "--no_meteor"])
    assert rc == 0
    run = ev.run_name_from_model_path(str(ckpt))
    assert run.startswith("bs_4_epochs_1_")
    hyp_file = eval_dir / run / "diversity_1.0_length_1.0.txt"
    hyps = hyp_file.read_text(encoding="utf-8").split("\n")
    assert hyps[-1] == "" and len(hyps) - 1 == len(recs)  # N lines for N samples
    refs = (eval_dir / "response_lables.txt").read_text(encoding="utf-8").splitlines()
    assert refs == [r["response"] for r in recs]
    assert all(protocol.clean_response(h) == h for h in hyps[:-1])  # written cleaned
    rec = json.loads((eval_dir / run / "diversity_1.0_length_1.0.txt.scores.json").read_text())
    assert rec["n_samples"] == 5 and rec["strategy_source"] == "inferred"
    assert set(rec["scores"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "Distinct-1",
                                  "Distinct-2"}
    assert rec["flags"]["num_beam_groups"] == 2 and rec["sample_ids"] == [r["id"] for r in recs]
    assert not os.path.exists(str(hyp_file) + ".partial.jsonl")  # resumable state removed when done
    out = capsys.readouterr().out
    assert "Bleu_1: " in out and "Test Done!" in out

    # The model and memory bank come from the checkpoint main.py wrote; decoding it directly gives the same text.
    model, tok, _ = load_checkpoint(str(ckpt), device="cpu")
    bank = torch.load(os.path.join(ckpt, BANK_FILE), weights_only=True)
    assert sum(len(t) for t in bank) > 0
    assert all(torch.equal(a, b) for a, b in zip(model.memory_bank, bank))
    again = ev.generate_responses(model, tok, recs, DecodingConfig(num_beams=2, num_beam_groups=2, max_length_res=8),
                                  batch_size=1, progress=False)
    assert [protocol.clean_response(h) for h in again] == hyps[:-1]


def test_batches_resume_and_gold_strategies(trained_checkpoint, tmp_path):
    from magic.generator.checkpoint import load_checkpoint
    ckpt, _, recs = trained_checkpoint
    model, tok, _ = load_checkpoint(str(ckpt), device="cpu")
    beams3 = DecodingConfig(num_beams=3, num_beam_groups=1, diversity_penalty=0.0, max_length_res=6)
    one = ev.generate_responses(model, tok, recs, beams3, batch_size=1, progress=False)
    three = ev.generate_responses(model, tok, recs, beams3, batch_size=3, progress=False)
    assert one == three  # padding inside a batch is masked out

    # Resume: a partial file with matching settings is trusted and its samples are not decoded again.
    part = ev._Partial(str(tmp_path / "x.partial.jsonl"), {"s": 1})
    part.add(recs[0]["id"], "RESUMED")
    part._f.close()
    part = ev._Partial(str(tmp_path / "x.partial.jsonl"), {"s": 1})
    out = ev.generate_responses(model, tok, recs, beams3, batch_size=1, partial=part, progress=False)
    assert out[0] == "RESUMED" and out[1:] == one[1:]
    part.finish()
    other = ev._Partial(str(tmp_path / "x.partial.jsonl"), {"s": 2})  # other settings: start over
    assert other.done == {}
    other.finish()

    # Errors name the problem before any decoding.
    test_evaluation = _script()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{k: v for k, v in recs[0].items() if k != "gold_strategy"}]))
    rc = test_evaluation.main(["--test_data", str(bad), "--model_path", str(ckpt), "--strategy_source", "gold",
                               "--eval_dir", str(tmp_path), "--no_progress", "--no_meteor"])
    assert rc == 2


def test_inferred_on_gold_built_records_is_refused(trained_checkpoint, tmp_path, capsys):
    """A test.json built from gold strategies (no LLM files) cannot be scored as 'inferred'."""
    test_evaluation = _script()
    ckpt, _, recs = trained_checkpoint
    gold_built = tmp_path / "gold.json"
    gold_built.write_text(json.dumps([{**r, "strategy": r["gold_strategy"], "strategy_source": "gold"} for r in recs]))
    argv = ["--test_data", str(gold_built), "--model_path", str(ckpt), "--eval_dir", str(tmp_path / "ev"),
            "--no_progress", "--no_meteor", "--num_beams", "1", "--num_beam_groups", "1", "--max_length_res", "4"]
    assert test_evaluation.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{gold_built}: record 0 (id {recs[0]['id']}) holds the gold strategy" in err
    assert not (tmp_path / "ev").exists()
    assert test_evaluation.main(argv + ["--strategy_source", "gold"]) == 0
    run = ev.run_name_from_model_path(str(ckpt))
    rec = json.loads((tmp_path / "ev" / run / "diversity_1.0_length_1.0.txt.scores.json").read_text())
    assert rec["strategy_source"] == "gold" and rec["data_strategy_source"] == ["gold"]


def test_every_unicode_line_break_becomes_a_space(tmp_path):
    """A byte-level BPE can emit \\x1c, \\x85, \\u2028 ...: the files must keep one response per line."""
    from metric.protocol import clean_response
    from magic.generator.evaluation import read_lines, write_lines

    weird = ["a\x1cb\x1dc\x1ed", "e\x85f\u2028g\u2029h", "i\x0bj\x0ck\r\nl"]
    path = tmp_path / "hyp.txt"
    write_lines(str(path), [clean_response(w) for w in weird])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert read_lines(str(path)) == ["a b c d", "e f g h", "i j k l"]


def test_released_memory_flags_must_match_the_checkpoint(trained_checkpoint, tmp_path, capsys):
    """--strategy_memory_max / --max_length_res_memory (passed by the released README's command) decide nothing:
    the checkpoint's values are used. Equal to them: accepted; different: refused in one line, exit 2, before
    anything is decoded."""
    test_evaluation = _script()
    ckpt, test, _ = trained_checkpoint
    argv = ["--test_data", str(test), "--model_path", str(ckpt), "--eval_dir", str(tmp_path / "ev"), "--no_progress",
            "--no_metrics", "--num_beams", "1", "--num_beam_groups", "1", "--diversity_penalty", "0",
            "--max_length_res", "4", "--limit", "1"]
    assert test_evaluation.main(argv + ["--strategy_memory_max", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("test_evaluation.py: error: --strategy_memory_max 7: the checkpoint")
    assert not (tmp_path / "ev").exists()
    assert test_evaluation.main(argv + ["--strategy_memory_max", "128", "--max_length_res_memory", "64"]) == 0
