"""magic.metric.significance: per-sample statistics reproduce the reported corpus scores; paired bootstrap and
approximate randomisation (identical -> not significant, reference-equal vs poor -> significant, A/B swap flips
the sign and keeps p); the confusion-matrix F1s equal sklearn's; McNemar's exact test; speed."""
import math
import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from magic.metric.nlgeval import bleu_from_counts, bleu_statistics
from magic.metric.protocol import compute_scores, compute_scores_and_samples
from magic.metric.significance import (CLASSIFICATION_METRICS, ColumnStatistic, approximate_randomisation, bleu_columns, bleu_reduce,
                                 bootstrap_ci, bootstrap_paired, bootstrap_weights, classification_ci,
                                 classification_statistic, compare_classifiers,
                                 mcnemar_exact, mean_statistic, swap_masks)

pytestmark = pytest.mark.filterwarnings("ignore:nltk's punkt_tab data is not installed")

SUBJECTS = ["i", "you", "we", "my friend", "your family", "the counsellor", "everyone"]
VERBS = ["understand", "hear", "feel", "know", "appreciate", "remember", "share"]
OBJECTS = ["how hard this is", "your worry", "the stress at work", "that loss", "the pressure", "your anger",
           "the loneliness"]
TAILS = ["right now", "every day", "after the exam", "at home", "with your boss", "this week", "since the move"]


def made_up_references(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)} ."
            for _ in range(n)]


def degraded(refs: list, seed: int = 1) -> list:
    """A middling system: each reference with one or two words dropped or replaced."""
    rng = np.random.default_rng(seed)
    out = []
    for r in refs:
        words = r.split()
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(0, len(words)))
            words[k] = "okay" if rng.random() < 0.5 else ""
        out.append(" ".join(w for w in words if w))
    return out


N = 60
REFS = made_up_references(N)
POOR = ["i do not know what to say ."] * N
MIDDLING = degraded(REFS)


@pytest.fixture(scope="module")
def scored():
    """compute_scores_and_samples (METEOR off) of the three systems against REFS."""
    return {name: compute_scores_and_samples(REFS, hyps, no_meteor=True)
            for name, hyps in (("refs", REFS), ("poor", POOR), ("middling", MIDDLING))}


def statistics(per_sample: dict) -> dict:
    cols = bleu_columns(per_sample["bleu"])
    stats = {f"Bleu_{k}": ColumnStatistic(cols, bleu_reduce(k)) for k in range(1, 5)}
    stats["ROUGE_L"] = mean_statistic(per_sample["rouge_l"])
    stats["CIDEr"] = mean_statistic(per_sample["cider"])
    return stats


# ------------------------------------------------------------------------------ per-sample statistics
def test_per_sample_statistics_reproduce_the_reported_scores(scored):
    for name, (scores, per_sample) in scored.items():
        b = per_sample["bleu"]
        bleu = bleu_from_counts(np.sum(b["correct"], axis=0), np.sum(b["guess"], axis=0), sum(b["hyp_len"]),
                                sum(b["ref_len"]))
        for k in range(4):
            assert bleu[k] == pytest.approx(scores[f"Bleu_{k + 1}"], rel=1e-12, abs=1e-15), (name, k)
        assert np.mean(per_sample["rouge_l"]) == pytest.approx(scores["ROUGE_L"], rel=1e-12)
        assert np.mean(per_sample["cider"]) == pytest.approx(scores["CIDEr"], rel=1e-12)
        assert per_sample["meteor"] is None
        for metric, stat in statistics(per_sample).items():
            assert stat.value() == pytest.approx(scores[metric], rel=1e-12, abs=1e-15), (name, metric)


def test_scores_unchanged_and_per_sample_is_numbers_only(scored):
    scores, per_sample = scored["middling"]
    assert compute_scores(REFS, MIDDLING, no_meteor=True) == scores
    assert scores["Bleu_2"] < 1 and scored["refs"][0]["Bleu_2"] == pytest.approx(1.0)

    def leaves(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from leaves(v)
        elif isinstance(x, list):
            for v in x:
                yield from leaves(v)
        else:
            yield x
    assert all(isinstance(v, (int, float)) for v in leaves(per_sample) if v is not None)
    assert len(per_sample["rouge_l"]) == len(per_sample["bleu"]["hyp_len"]) == N


def test_bleu_statistics_by_hand():
    # sample 0: hyp "a b c d" vs refs "a b c e" / "a b": clipped matches 3, 2, 1, 0; closest length 4
    # sample 1: hyp "x y" vs "x y z" / "x y z w": 2, 1, 0, 0; closest 3
    # sample 2: hyp "p q r" vs "p q" / "p q r s": 3, 2, 1, 0 (max counts over both); 2 and 4 tie: the shorter
    stats = bleu_statistics([["a b c e", "x y z", "p q"], ["a b", "x y z w", "p q r s"]], ["a b c d", "x y", "p q r"])
    assert stats["correct"].tolist() == [[3, 2, 1, 0], [2, 1, 0, 0], [3, 2, 1, 0]]
    assert stats["guess"].tolist() == [[4, 3, 2, 1], [2, 1, 0, 0], [3, 2, 1, 0]]
    assert stats["hyp_len"].tolist() == [4, 2, 3] and stats["ref_len"].tolist() == [4, 3, 2]


# ------------------------------------------------------------------------------ resampling
def test_bootstrap_weights_are_seeded_resamples():
    w = bootstrap_weights(50, 200, seed=3)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all() and (w >= 0).all()
    assert np.array_equal(w, bootstrap_weights(50, 200, seed=3))
    assert not np.array_equal(w, bootstrap_weights(50, 200, seed=4))
    m = swap_masks(50, 300, seed=3)
    assert set(np.unique(m)) == {0.0, 1.0} and 0.4 < m.mean() < 0.6


def test_identical_systems_are_not_significant(scored):
    stats = statistics(scored["middling"][1])
    for metric, stat in stats.items():
        boot = bootstrap_paired(stat, stat, resamples=1000, seed=0)
        ar = approximate_randomisation(stat, stat, permutations=1000, seed=0)
        assert boot["delta"] == 0 and boot["ci_low"] == boot["ci_high"] == 0, metric
        assert boot["p"] == 1.0 and ar["p"] == 1.0, metric


def test_reference_equal_system_beats_a_poor_one_and_swapping_flips_the_sign(scored):
    poor, refs = statistics(scored["poor"][1]), statistics(scored["refs"][1])
    for metric in ("Bleu_2", "ROUGE_L", "CIDEr", "Bleu_1"):
        boot = bootstrap_paired(poor[metric], refs[metric], resamples=1000, seed=0)
        ar = approximate_randomisation(poor[metric], refs[metric], permutations=1000, seed=0)
        assert boot["delta"] > 0 and boot["ci_low"] > 0, metric
        assert boot["p"] < 0.05 and ar["p"] < 0.05, (metric, boot, ar)
        assert ar["p"] == pytest.approx(1 / 1001)  # not one permutation is as extreme
        back = bootstrap_paired(refs[metric], poor[metric], resamples=1000, seed=0)
        ar_back = approximate_randomisation(refs[metric], poor[metric], permutations=1000, seed=0)
        assert back["delta"] == -boot["delta"] and back["p"] == boot["p"] and ar_back["p"] == ar["p"]
        assert back["ci_low"] == pytest.approx(-boot["ci_high"]) and back["ci_high"] == pytest.approx(-boot["ci_low"])


def test_a_small_difference_is_not_significant_and_swap_keeps_p(scored):
    # middling vs the same system with 2 of 60 samples replaced by the reference: tiny, noisy gain
    _, per_sample = scored["middling"]
    better = [r if i in (5, 40) else h for i, (r, h) in enumerate(zip(REFS, MIDDLING))]
    _, per_better = compute_scores_and_samples(REFS, better, no_meteor=True)
    a, b = statistics(per_sample), statistics(per_better)
    for metric in ("Bleu_2", "ROUGE_L"):
        boot = bootstrap_paired(a[metric], b[metric], resamples=1000, seed=1)
        ar = approximate_randomisation(a[metric], b[metric], permutations=1000, seed=1)
        assert boot["delta"] > 0 and boot["p"] > 0.05 and ar["p"] > 0.05, (metric, boot, ar)
        ar_back = approximate_randomisation(b[metric], a[metric], permutations=1000, seed=1)
        assert ar_back["p"] == ar["p"] and ar_back["delta"] == -ar["delta"]


def test_randomisation_counts_the_swap_all_permutation_as_a_tie():
    """Swapping every sample (or none) gives the observed |delta| again, up to float rounding of sums added in
    another order: both count, so p = (2 + 1) / (2 + 1) = 1."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.random(997) * 0.3, rng.random(997) * 0.7 + 0.1
        masks = np.stack([np.ones(997), np.zeros(997)])
        assert approximate_randomisation(mean_statistic(x), mean_statistic(y), masks=masks)["p"] == 1.0


def test_resampled_bleu_is_the_bleu_of_the_resample(scored):
    """A bootstrap row's BLEU equals compute_scores' BLEU of the resampled corpus (samples repeated)."""
    w = bootstrap_weights(N, 1, seed=7)[0]
    idx = np.repeat(np.arange(N), w.astype(int))
    refs = [REFS[i] for i in idx]
    hyps = [MIDDLING[i] for i in idx]
    direct = compute_scores(refs, hyps, no_meteor=True)
    stats = statistics(scored["middling"][1])
    for metric in ("Bleu_1", "Bleu_2", "Bleu_4", "ROUGE_L"):
        assert stats[metric].on_weights(w[None, :])[0] == pytest.approx(direct[metric], rel=1e-12, abs=1e-15)


def test_bootstrap_ci_of_a_mean():
    x = np.random.default_rng(0).normal(0.5, 0.1, size=400)
    ci = bootstrap_ci(x, resamples=2000, seed=0)
    assert ci["value"] == pytest.approx(x.mean())
    half = 1.96 * x.std() / math.sqrt(x.size)
    assert ci["ci_low"] == pytest.approx(x.mean() - half, abs=half * 0.2)
    assert ci["ci_high"] == pytest.approx(x.mean() + half, abs=half * 0.2)
    with pytest.raises(ValueError, match="resamples must be an integer >= 1"):
        bootstrap_ci(x, resamples=0)


def test_speed_1000_resamples_2000_samples_7_metrics():
    rng = np.random.default_rng(0)
    n = 2000
    per = []
    for _ in range(2):
        guess = rng.integers(5, 20, size=(n, 1)) - np.arange(4)
        bleu = {"correct": rng.integers(0, 5, size=(n, 4)), "guess": guess, "hyp_len": guess[:, 0],
                "ref_len": rng.integers(5, 20, size=n)}
        per.append([ColumnStatistic(bleu_columns(bleu), bleu_reduce(k)) for k in range(1, 5)]
                   + [mean_statistic(rng.random(n)) for _ in range(3)])
    start = time.perf_counter()
    weights, masks = bootstrap_weights(n, 1000, 0), swap_masks(n, 1000, 0)
    for a, b in zip(*per):
        bootstrap_paired(a, b, weights=weights)
        approximate_randomisation(a, b, masks=masks)
    assert time.perf_counter() - start < 5.0


# ------------------------------------------------------------------------------ classifiers
LABELS = ["Question", "Restatement", "Reflection", "Self-disclosure", "Affirmation", "Suggestions",
          "Information", "Others"]


def _classifier_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    gold = rng.choice(LABELS, size=n, p=[0.3, 0.1, 0.1, 0.05, 0.15, 0.15, 0.1, 0.05])
    pred = np.where(rng.random(n) < 0.5, gold, rng.choice(LABELS[:6], size=n))
    return gold.tolist(), pred.tolist()


def classification_scores(gold, pred):
    """Accuracy, macro-F1 and weighted-F1 on the full set."""
    return {m: classification_statistic(gold, pred, m).value() for m in CLASSIFICATION_METRICS}


def test_confusion_matrix_scores_equal_sklearn_on_the_set_and_on_resamples():
    gold, pred = _classifier_data()
    got = classification_scores(gold, pred)
    assert got["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert got["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted", zero_division=0))
    # small resamples, where classes drop out of gold or of the predictions
    small_gold, small_pred = gold[:12], pred[:12]
    weights = bootstrap_weights(12, 20, seed=1)
    for metric, average in (("macro_f1", "macro"), ("weighted_f1", "weighted"), ("accuracy", None)):
        stat = classification_statistic(small_gold, small_pred, metric)
        values = stat.on_weights(weights)
        for row, value in zip(weights, values):
            idx = np.repeat(np.arange(12), row.astype(int))
            g, p = [small_gold[i] for i in idx], [small_pred[i] for i in idx]
            want = accuracy_score(g, p) if average is None else f1_score(g, p, average=average, zero_division=0)
            assert value == pytest.approx(want), (metric, row)


def test_classification_ci_and_compare_classifiers():
    gold, pred = _classifier_data()
    ci = classification_ci(gold, pred, resamples=500, seed=0)
    for metric, r in ci.items():
        assert r["ci_low"] < r["value"] < r["ci_high"], metric
    same = compare_classifiers(gold, pred, pred, resamples=500, permutations=500)
    assert all(same[m]["p"] == 1.0 and same[m]["p_ar"] == 1.0 for m in ("accuracy", "macro_f1", "weighted_f1"))
    assert same["mcnemar"] == {"a_only": 0, "b_only": 0, "p": 1.0}
    better = compare_classifiers(gold, pred, gold, resamples=500, permutations=500)  # B is always right
    worse = compare_classifiers(gold, gold, pred, resamples=500, permutations=500)
    for m in ("accuracy", "macro_f1", "weighted_f1"):
        assert better[m]["delta"] > 0 and better[m]["p"] < 0.05 and better[m]["p_ar"] < 0.05
        assert worse[m]["delta"] == -better[m]["delta"] and worse[m]["p"] == better[m]["p"]
    assert better["mcnemar"]["p"] < 1e-6 and better["mcnemar"]["a_only"] == 0


def test_mcnemar_exact_by_hand_and_against_scipy():
    # 3 samples only A gets right, 0 only B: p = 2 * P(X <= 0), X ~ Bin(3, 1/2) = 2 / 8
    gold = ["a"] * 5
    r = mcnemar_exact(gold, ["a", "a", "a", "a", "b"], ["b", "b", "b", "a", "b"])
    assert r == {"a_only": 3, "b_only": 0, "p": 0.25}
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, size=500)
    a = np.where(rng.random(500) < 0.6, gold, (gold + 1) % 3)
    b = np.where(rng.random(500) < 0.5, gold, (gold + 2) % 3)
    r = mcnemar_exact(gold.tolist(), a.tolist(), b.tolist())
    want = stats.binomtest(r["a_only"], r["a_only"] + r["b_only"], 0.5).pvalue
    assert r["p"] == pytest.approx(want, rel=1e-9)


def test_resamples_in_blocks_give_the_same_draws_with_bounded_memory(monkeypatch):
    import tracemalloc

    from magic.metric import significance
    whole_w, whole_m = bootstrap_weights(37, 101, seed=5), swap_masks(37, 101, seed=5)
    monkeypatch.setattr(significance, "CHUNK_CELLS", 37 * 3)  # blocks of 3 rows: the same rows
    assert np.array_equal(bootstrap_weights(37, 101, seed=5), whole_w)
    assert np.array_equal(swap_masks(37, 101, seed=5), whole_m)
    monkeypatch.undo()
    n = 20000
    rng = np.random.default_rng(0)
    a, b = mean_statistic(rng.random(n)), mean_statistic(rng.random(n))
    tracemalloc.start()
    try:
        bootstrap_paired(a, b, resamples=1000, seed=0)
        approximate_randomisation(a, b, permutations=1000, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2 ** 20, peak  # 1000 x 20000 at once: over 450 MB
