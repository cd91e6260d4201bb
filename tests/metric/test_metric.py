"""magic.metric: nlg-eval compatible scores equal direct pycocoevalcap calls; BLEU / ROUGE-L / CIDEr by hand;
Distinct-n; METEOR's JVM is checked for, closed, and cannot hang."""
import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

import magic.metric.nlgeval as nlgeval_mod
from magic.metric import NLGEval, SafeMeteor, distinct_n, java_available
from magic.metric.nlgeval import MeteorError

REFS = ["i am sorry to hear that .", "have you tried talking to your boss about it ?",
        "that sounds really hard .", "you are doing the best you can ."]
HYPS = ["i am so sorry to hear that .", "have you talked to your boss ?", "&", "you can do it ."]

needs_java = pytest.mark.skipif(not java_available(), reason="METEOR needs java")


@pytest.fixture(scope="module")
def nlg():
    if not java_available():
        pytest.skip("METEOR needs java")
    with NLGEval(no_glove=True) as m:
        yield m


@needs_java
def test_scores_equal_direct_pycocoevalcap_calls(nlg):
    from pycocoevalcap.meteor.meteor import Meteor
    scores, per_sample = nlg.compute_metrics([REFS], HYPS)
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    gts = {i: [r] for i, r in enumerate(REFS)}
    res = {i: [h] for i, h in enumerate(HYPS)}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert scores[f"Bleu_{k + 1}"] == bleu[k]
        assert per_sample[f"Bleu_{k + 1}"] == bleu_each[k]
    rouge, rouge_each = Rouge().compute_score(gts, res)
    assert scores["ROUGE_L"] == rouge and per_sample["ROUGE_L"] == list(rouge_each)
    cider, cider_each = Cider().compute_score(gts, res)
    assert scores["CIDEr"] == cider and per_sample["CIDEr"] == list(cider_each)
    m = Meteor()
    try:
        meteor, meteor_each = m.compute_score(gts, res)
    finally:
        m.meteor_p.kill()
        m.meteor_p.wait()
    assert scores["METEOR"] == meteor and per_sample["METEOR"] == meteor_each
    assert 0 < scores["METEOR"] < 1


def test_bleu_by_hand_two_sample_corpus():
    # sample 1: hyp "a b c d" vs ref "a b c e": matches 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams
    # sample 2: hyp "x y" vs ref "x y z": 2/2, 1/1; corpus lengths hyp 6, ref 7 -> brevity penalty
    with NLGEval(metrics_to_omit=["METEOR", "ROUGE_L", "CIDEr"]) as m:
        scores, _ = m.compute_metrics([["a b c e", "x y z"]], ["a b c d", "x y"])
    bp = math.exp(1 - 7 / 6)
    p = [5 / 6, 3 / 4, 1 / 2]
    assert scores["Bleu_1"] == pytest.approx(bp * p[0], abs=1e-8)
    assert scores["Bleu_2"] == pytest.approx(bp * (p[0] * p[1]) ** 0.5, abs=1e-8)
    assert scores["Bleu_3"] == pytest.approx(bp * (p[0] * p[1] * p[2]) ** (1 / 3), abs=1e-8)
    assert scores["Bleu_4"] < 1e-3  # no 4-gram match: only pycocoevalcap's tiny smoothing remains


def test_rouge_l_by_hand():
    # LCS("a b c d", "a c d e f") = "a c d" = 3; P = 3/4, R = 3/5, F_beta with beta = 1.2
    with NLGEval(metrics_to_omit=["METEOR", "Bleu_1", "CIDEr"]) as m:
        scores, per = m.compute_metrics([["a c d e f", "p q"]], ["a b c d", "z"])
    P, R, b2 = 3 / 4, 3 / 5, 1.2 ** 2
    f = (1 + b2) * P * R / (R + b2 * P)
    assert per["ROUGE_L"] == pytest.approx([f, 0.0])
    assert scores["ROUGE_L"] == pytest.approx(f / 2)
    assert "Bleu_1" not in scores and "METEOR" not in scores  # omitting Bleu_1 drops every BLEU


def test_cider_by_hand():
    # Two samples, disjoint vocabularies: idf of every reference n-gram = log(2 docs) - log(df 1) = log 2.
    # Sample 1 is an exact copy: cosine 1 for 1- and 2-grams, nothing for 3/4-grams -> 10 * (1+1+0+0)/4 = 5.
    # Sample 2 shares nothing -> 0. Corpus CIDEr = 2.5.
    with NLGEval(metrics_to_omit=["METEOR", "Bleu_1", "ROUGE_L"]) as m:
        scores, per = m.compute_metrics([["a b", "c d"]], ["a b", "x y"])
    assert per["CIDEr"] == pytest.approx([5.0, 0.0])
    assert scores["CIDEr"] == pytest.approx(2.5)


def test_several_references_per_sample_follow_nlgeval_layout():
    # ref_list[k][i] = reference k of sample i: the best-matching reference counts (ROUGE-L takes the max)
    with NLGEval(metrics_to_omit=["METEOR"]) as m:
        one, _ = m.compute_metrics([["p q r", "u v"]], ["a b", "u v"])
        two, per = m.compute_metrics([["p q r", "u v"], ["a b", "w"]], ["a b", "u v"])
    assert per["ROUGE_L"] == pytest.approx([1.0, 1.0])
    assert two["Bleu_1"] > one["Bleu_1"]


def test_bad_inputs_are_refused():
    with NLGEval(metrics_to_omit=["METEOR"]) as m:
        with pytest.raises(TypeError, match="list of reference lists"):
            m.compute_metrics(["a", "b"], ["a", "b"])
        with pytest.raises(ValueError, match="reference list 0 has 1 entries but there are 2"):
            m.compute_metrics([["a"]], ["a", "b"])
        with pytest.raises(ValueError, match="newline"):
            m.compute_metrics([["a", "b"]], ["a\nb", "b"])
    with pytest.raises(ValueError, match="unknown metrics"):
        NLGEval(metrics_to_omit=["BLEU"])


def test_distinct_n():
    hyps = ["a b a", "a b", ""]
    # unigrams: a b a a b -> 2 distinct / 5; bigrams: (a b) (b a) (a b) -> 2 / 3
    assert distinct_n(hyps, 1) == pytest.approx(2 / 5)
    assert distinct_n(hyps, 2) == pytest.approx(2 / 3)
    assert distinct_n(["a"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(hyps, 0)


def test_without_java_clear_error_and_omit_works(monkeypatch):
    monkeypatch.setattr(nlgeval_mod.shutil, "which", lambda name: None)
    with pytest.raises(MeteorError, match="apt-get install default-jre-headless"):
        NLGEval(no_glove=True)
    with NLGEval(no_glove=True, metrics_to_omit=["METEOR"]) as m:
        scores, _ = m.compute_metrics([["a b c"]], ["a b c"])
    assert "METEOR" not in scores and scores["Bleu_1"] == pytest.approx(1.0)


@needs_java
def test_meteor_watchdog_kills_a_jvm_that_does_not_answer():
    # The JVM needs seconds to start; a 50 ms budget must end in an error and a reaped process, not a hang.
    m = SafeMeteor(timeout_s=0.05)
    p = m.meteor_p
    with pytest.raises(MeteorError, match="no answer within"):
        m.compute_score({0: ["a b"]}, {0: ["a b"]})
    assert p.poll() is not None and m.meteor_p is None
    assert not m.lock.locked()
    m.close()  # idempotent


@needs_java
def test_meteor_close_reaps_the_process(nlg):
    m = SafeMeteor()
    p = m.meteor_p
    m.close()
    assert p.poll() is not None
    with pytest.raises(MeteorError, match="closed"):
        m.compute_score({0: ["a"]}, {0: ["a"]})
    # the module fixture's scorer still works after another scorer was closed
    scores, _ = nlg.compute_metrics([["a b c d"]], ["a b c d"])
    assert scores["METEOR"] == pytest.approx(1.0, abs=1e-3) or scores["METEOR"] > 0.9
    assert np.isfinite(scores["CIDEr"])
