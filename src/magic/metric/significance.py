"""Is system B better than system A on the same samples? Paired bootstrap and approximate randomisation on
the per-sample scores that test_evaluation.py stores (compare_results.py is the command), and bootstrap
intervals, paired comparisons and McNemar's exact test for stage-1 strategy classifiers.

Per-sample scores: ``record["per_sample"]`` of a ``.scores.json`` (src/magic/generator/evaluation.py writes it
from ``metric.protocol.compute_scores_and_samples``). Numbers only, never text; every list is in the order of
``ids``::

    "per_sample": {
      "ids":     ["test-12-3", ...],               # sample ids (unique); the tool matches samples by them
      "bleu":    {"n": 4,
                  "correct": [[c1, c2, c3, c4], ...],  # clipped n-gram matches, n = 1..4
                  "guess":   [[g1, g2, g3, g4], ...],  # hypothesis n-grams
                  "hyp_len": [...],                    # hypothesis tokens
                  "ref_len": [...]},                   # tokens of the closest reference (pycocoevalcap 'closest')
      "rouge_l": [...],                            # per-sample ROUGE-L F (beta 1.2)
      "cider":   [...],                            # per-sample CIDEr, document frequencies of the full set
      "meteor":  [...] or null,                    # METEOR segment scores (null: scored with --no_meteor)
      "nll": [...], "tokens": [...],               # optional: summed token NLL (nats) and token count per sample
      "<other>": [...]                             # optional: any other list of numbers, one per sample
    }

How each metric is recomputed on a resample (the same choice for the bootstrap and for randomisation):

- ``Bleu_1`` .. ``Bleu_4``: corpus statistics, recomputed from the resample's *summed* counts with
  pycocoevalcap's smoothing and brevity penalty (``metric.nlgeval.bleu_from_counts``); on the full set this is
  the reported BLEU to float rounding;
- ``ROUGE_L``: mean of the per-sample F-scores (pycocoevalcap's Rouge is that mean);
- ``CIDEr``: mean of the per-sample scores, whose document frequencies stay those of the full set (not
  recomputed per resample; pycocoevalcap's Cider is the mean of the same scores);
- ``METEOR``: mean of the segment scores. The reported METEOR is the jar's corpus score from aggregated
  statistics, which is not that mean, so column A / B of this metric is the segment mean, not the reported
  METEOR. Skipped (with a note) when either file has none;
- ``PPL``: exp(sum nll / sum tokens), a corpus statistic, when both ``nll`` and ``tokens`` are present;
- any other list of numbers: its mean;
- ``Distinct-1`` / ``Distinct-2``: ratios over the set of all hypotheses' n-grams; they cannot be resampled
  without the text, which is never stored, so they are reported (from ``scores``) but not tested.

Conventions: ``delta = B - A``. Higher is better for every metric but PPL (lower is better: a negative delta
means B is better); for an ``<other>`` list the direction is unknown. Samples are put in sorted-id order
before resampling, so the result does not depend on the order of either file, and swapping A and B negates
every delta and leaves every p-value unchanged.

- Paired bootstrap: ``resamples`` draws (default 1000) of n sample indices with replacement from a seeded
  ``numpy.random.Generator``; the same index sets for A and B and for every metric. Reported: the 95 %
  percentile interval of the resampled deltas, and a two-sided p-value
  ``min(1, 2 (min(#{delta* <= 0}, #{delta* >= 0}) + 1) / (R + 1))``: the smallest alpha at which the
  percentile interval of level 1 - alpha excludes 0, with the +1 that keeps it from being 0.
- Approximate randomisation: ``permutations`` draws (default 1000); in each, every sample's outputs of A and B
  are swapped with probability 1/2 (the same swaps for every metric); ``p = (#{|delta_perm| >= |delta|} + 1)
  / (P + 1)``.

Both are vectorised: a resample is a row of counts (how often each sample was drawn) or of swap flags, so
the statistics of all resamples are one matrix product with the per-sample columns
(1000 resamples x 2000 samples x 7 metrics: well under a second).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from magic.common.errors import UserError
from magic.common.io_utils import load_json
from magic.metric.nlgeval import bleu_from_counts

DEFAULT_RESAMPLES = 1000
DEFAULT_PERMUTATIONS = 1000
DEFAULT_CONFIDENCE = 0.95
ALPHA = 0.05
BLEU_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
NOT_RESAMPLED = ("Distinct-1", "Distinct-2")
# per_sample keys that are not an averaged list of their own
LAYOUT_KEYS = ("ids", "bleu", "rouge_l", "cider", "meteor", "nll", "tokens")
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "weighted_f1")
# A permuted |delta| within this relative distance below the observed one counts as "as large": the sums of a
# permutation are added in another order than the observed ones, and float rounding must not turn a tie (e.g.
# the permutation that swaps every sample) into a miss.
_TIE_TOLERANCE = 1e-9
# Resamples are drawn and reduced in blocks of at most this many numbers (rows x samples), so the memory of a
# comparison does not grow with resamples x samples (300,000 samples x 1000 resamples once took 9.8 GB).
CHUNK_CELLS = 1 << 21
# Score files are read whole (JSON): larger ones are refused before reading. 64 MiB holds ~300,000 samples of
# test_evaluation.py's per-sample scores, far more than any ESConv set (the addition has 2,295).
MAX_SCORE_BYTES = 64 << 20
# per-sample entries that have a range (a value outside it is a damaged or hand-edited file)
RANGES = {"rouge_l": (0.0, 1.0), "meteor": (0.0, 1.0), "cider": (0.0, 10.0), "nll": (0.0, math.inf)}


# ------------------------------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class ColumnStatistic:
    """A statistic of n samples that depends only on the column sums of a per-sample matrix ``columns``
    [n, k]: ``reduce(sums [..., k], n) -> [...]``. A mean is ``sums[..., 0] / n``; corpus BLEU is
    ``bleu_from_counts`` of the summed counts. A resample is a weight row (how often each sample is in it),
    so ``weights @ columns`` gives the sums of every resample at once."""
    columns: np.ndarray
    reduce: Callable[[np.ndarray, int], np.ndarray]

    @property
    def n(self) -> int:
        return int(self.columns.shape[0])

    def value(self) -> float:
        return float(self.reduce(self.columns.sum(axis=0), self.n))

    def on_weights(self, weights: np.ndarray) -> np.ndarray:
        return self.reduce(weights @ self.columns, self.n)


def mean_reduce(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / n


def mean_statistic(values) -> ColumnStatistic:
    """The mean of per-sample values, as a ColumnStatistic."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D list of per-sample values, got shape {x.shape}")
    return ColumnStatistic(x[:, None], mean_reduce)


def bleu_columns(bleu: Mapping[str, np.ndarray]) -> np.ndarray:
    """[N, 2 m + 2] columns [correct 1..m, guess 1..m, hyp_len, ref_len] of ``bleu_statistics``-like counts."""
    return np.column_stack([np.asarray(bleu[key], dtype=np.float64) for key in ("correct", "guess", "hyp_len", "ref_len")])


def bleu_reduce(order: int, max_order: int = 4) -> Callable[[np.ndarray, int], np.ndarray]:
    """Corpus BLEU-``order`` from summed ``bleu_columns`` (``max_order`` n-gram orders stored)."""
    m = max_order

    def reduce(sums: np.ndarray, n: int) -> np.ndarray:
        return bleu_from_counts(sums[..., 0:m], sums[..., m:2 * m], sums[..., 2 * m], sums[..., 2 * m + 1]
                                )[..., order - 1]
    return reduce


def ppl_reduce(sums: np.ndarray, n: int) -> np.ndarray:
    """exp(sum nll / sum tokens) from summed [nll, tokens] columns."""
    return np.exp(sums[..., 0] / sums[..., 1])


def _rows_per_chunk(n: int) -> int:
    return max(1, CHUNK_CELLS // max(1, n))


def weight_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of ``bootstrap_weights`` in consecutive blocks of at most CHUNK_CELLS numbers (the same rows:
    the generator's stream does not depend on the block size), so memory stays bounded for any n."""
    _check_count(resamples, "resamples")
    rng = np.random.default_rng([seed, 0])
    step = _rows_per_chunk(n)
    for start in range(0, resamples, step):
        k = min(step, resamples - start)
        draws = rng.integers(0, n, size=(k, n))
        flat = (draws + (np.arange(k) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] float counts: row r says how often each of the n samples is in bootstrap resample r
    (n draws with replacement). The same (n, resamples, seed) always gives the same rows."""
    return np.concatenate(list(weight_chunks(n, resamples, seed)))


def mask_chunks(n: int, permutations: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of ``swap_masks`` in blocks of at most CHUNK_CELLS numbers."""
    _check_count(permutations, "permutations")
    rng = np.random.default_rng([seed, 1])
    step = _rows_per_chunk(n)
    for start in range(0, permutations, step):
        yield (rng.random((min(step, permutations - start), n)) < 0.5).astype(np.float64)


def swap_masks(n: int, permutations: int, seed: int) -> np.ndarray:
    """[permutations, n] 0/1 floats: 1 where approximate randomisation swaps the two systems' outputs."""
    return np.concatenate(list(mask_chunks(n, permutations, seed)))


def _check_count(value: int, name: str) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_pair(a: ColumnStatistic, b: ColumnStatistic) -> None:
    if a.columns.shape != b.columns.shape:
        raise ValueError(f"paired statistics need the same per-sample columns, got {a.columns.shape} and "
                         f"{b.columns.shape}")


def percentile_interval(values: np.ndarray, confidence: float) -> tuple:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p_value(deltas: np.ndarray) -> float:
    """Two-sided p of the paired bootstrap: min(1, 2 (min(#{d <= 0}, #{d >= 0}) + 1) / (R + 1))."""
    below = int(np.count_nonzero(deltas <= 0))
    above = int(np.count_nonzero(deltas >= 0))
    return min(1.0, 2 * (min(below, above) + 1) / (deltas.size + 1))


def bootstrap_ci(data, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 confidence: float = DEFAULT_CONFIDENCE) -> Dict[str, float]:
    """Percentile bootstrap interval of one system's statistic. ``data``: a 1-D list of per-sample values
    (their mean) or a ColumnStatistic (e.g. ``classification_statistic(gold, pred, "macro_f1")``).
    Returns {"value", "ci_low", "ci_high", "resamples", "confidence"}."""
    stat = data if isinstance(data, ColumnStatistic) else mean_statistic(data)
    values = stat.on_weights(bootstrap_weights(stat.n, resamples, seed))
    low, high = percentile_interval(values, confidence)
    return {"value": stat.value(), "ci_low": low, "ci_high": high, "resamples": int(resamples),
            "confidence": confidence}


def bootstrap_paired(a: ColumnStatistic, b: ColumnStatistic, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     confidence: float = DEFAULT_CONFIDENCE, weights: Optional[np.ndarray] = None
                     ) -> Dict[str, float]:
    """Paired bootstrap of ``delta = B - A`` (the same resampled samples for both). ``weights``: rows of
    ``bootstrap_weights`` to reuse across metrics (else drawn from ``seed``). Returns {"a", "b", "delta",
    "ci_low", "ci_high", "p"}."""
    _check_pair(a, b)
    chunks = [weights] if weights is not None else weight_chunks(a.n, resamples, seed)
    return _boot_summary(a, b, np.concatenate([_boot_deltas(a, b, w) for w in chunks]), confidence)


def _boot_deltas(a: ColumnStatistic, b: ColumnStatistic, weights: np.ndarray) -> np.ndarray:
    return b.on_weights(weights) - a.on_weights(weights)


def _boot_summary(a: ColumnStatistic, b: ColumnStatistic, deltas: np.ndarray, confidence: float) -> dict:
    low, high = percentile_interval(deltas, confidence)
    va, vb = a.value(), b.value()
    return {"a": va, "b": vb, "delta": vb - va, "ci_low": low, "ci_high": high, "p": bootstrap_p_value(deltas)}


def approximate_randomisation(a: ColumnStatistic, b: ColumnStatistic, *, permutations: int = DEFAULT_PERMUTATIONS,
                              seed: int = 0, masks: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Approximate randomisation test of ``delta = B - A``: each sample's outputs swapped with probability
    1/2 in each of ``permutations`` draws (``masks``: rows of ``swap_masks`` to reuse across metrics);
    ``p = (#{|delta_perm| >= |delta|} + 1) / (P + 1)``. Returns {"delta", "p"}."""
    _check_pair(a, b)
    chunks = [masks] if masks is not None else mask_chunks(a.n, permutations, seed)
    return _ar_summary(a, b, np.concatenate([_perm_deltas(a, b, m) for m in chunks]))


def _perm_deltas(a: ColumnStatistic, b: ColumnStatistic, masks: np.ndarray) -> np.ndarray:
    diff = masks @ (b.columns - a.columns)  # what the swaps move from B to A
    return b.reduce(b.columns.sum(axis=0) - diff, b.n) - a.reduce(a.columns.sum(axis=0) + diff, a.n)


def _ar_summary(a: ColumnStatistic, b: ColumnStatistic, perm_deltas: np.ndarray) -> dict:
    observed = b.value() - a.value()
    threshold = abs(observed) * (1 - _TIE_TOLERANCE) - 1e-15
    hits = int(np.count_nonzero(np.abs(perm_deltas) >= threshold))
    return {"delta": observed, "p": (hits + 1) / (perm_deltas.size + 1)}


# ------------------------------------------------------------------------------------------ classifiers
def encode_labels(*arrays: Sequence) -> tuple:
    """Integer codes for label arrays over their joint label set: (list of int arrays, sorted labels)."""
    lengths = {len(x) for x in arrays}
    if len(lengths) != 1:
        raise ValueError(f"label arrays must have the same length, got {sorted(len(x) for x in arrays)}")
    labels = sorted({str(v) for x in arrays for v in x})
    code = {label: i for i, label in enumerate(labels)}
    return [np.array([code[str(v)] for v in x], dtype=np.int64) for x in arrays], labels


def f1_per_class(confusion) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN) of confusion matrices [..., gold, pred] (0 where undefined)."""
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    denom = conf.sum(axis=-1) + conf.sum(axis=-2)
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def confusion_reduce(n_labels: int, metric: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """``metric`` of summed one-hot (gold, pred) pair columns (gold * K + pred). Macro- and weighted-F1 follow
    sklearn's ``f1_score`` without ``labels``: classes absent from both gold and prediction of the
    (re)sample are left out, F1 = 2 TP / (2 TP + FP + FN), 0 where undefined."""
    if metric not in CLASSIFICATION_METRICS:
        raise ValueError(f"unknown classification metric {metric!r}; expected one of {list(CLASSIFICATION_METRICS)}")

    def reduce(sums: np.ndarray, n: int) -> np.ndarray:
        conf = sums.reshape(sums.shape[:-1] + (n_labels, n_labels))  # [..., gold, pred]
        tp = np.diagonal(conf, axis1=-2, axis2=-1)
        support = conf.sum(axis=-1)
        predicted = conf.sum(axis=-2)
        total = support.sum(axis=-1)
        if metric == "accuracy":
            return tp.sum(axis=-1) / total
        denom = support + predicted
        f1 = f1_per_class(conf)
        if metric == "weighted_f1":
            return (f1 * support).sum(axis=-1) / total
        present = denom > 0
        return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)
    return reduce


def _pair_columns(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    cols = np.zeros((gold.size, n_labels * n_labels), dtype=np.float64)
    cols[np.arange(gold.size), gold * n_labels + pred] = 1.0
    return cols


def classification_statistic(gold: Sequence, pred: Sequence, metric: str,
                             labels: Optional[Sequence] = None) -> ColumnStatistic:
    """Accuracy, macro-F1 or weighted-F1 of (gold, pred) pairs as a ColumnStatistic (for bootstrap_ci).
    ``labels``: the label set to encode over (default: those of gold and pred)."""
    if not len(gold):
        raise ValueError("no (gold, prediction) pairs")
    if labels is None:
        (g, p), labels = encode_labels(gold, pred)
    else:
        if len(gold) != len(pred):
            raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions; they must align")
        g, p, labels = _encode_with(gold, labels), _encode_with(pred, labels), list(labels)
    return ColumnStatistic(_pair_columns(g, p, len(labels)), confusion_reduce(len(labels), metric))


def _encode_with(values: Sequence, labels: Sequence) -> np.ndarray:
    code = {str(label): i for i, label in enumerate(labels)}
    missing = sorted({str(v) for v in values} - set(code))
    if missing:
        raise ValueError(f"labels {missing[:5]} are not in the label set {[str(x) for x in labels]}")
    return np.array([code[str(v)] for v in values], dtype=np.int64)


def classification_ci(gold: Sequence, pred: Sequence, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      confidence: float = DEFAULT_CONFIDENCE) -> Dict[str, Dict[str, float]]:
    """bootstrap_ci of accuracy, macro-F1 and weighted-F1 (the same resamples for the three)."""
    return {m: bootstrap_ci(classification_statistic(gold, pred, m), resamples=resamples, seed=seed,
                            confidence=confidence) for m in CLASSIFICATION_METRICS}


def mcnemar_exact(gold: Sequence, pred_a: Sequence, pred_b: Sequence) -> Dict[str, float]:
    """McNemar's exact test on the discordant pairs: ``a_only`` samples only A gets right, ``b_only`` only B;
    two-sided p = min(1, 2 P(X <= min(a_only, b_only))), X ~ Binomial(a_only + b_only, 1/2) (p = 1 when
    there is no discordant pair). Exact rational arithmetic (math.comb), so no underflow for large counts."""
    (g, a, b), _ = encode_labels(gold, pred_a, pred_b)
    a_right, b_right = a == g, b == g
    a_only = int(np.count_nonzero(a_right & ~b_right))
    b_only = int(np.count_nonzero(b_right & ~a_right))
    m = a_only + b_only
    tail = sum(math.comb(m, k) for k in range(min(a_only, b_only) + 1))
    p = 1.0 if m == 0 else float(min(Fraction(1), Fraction(2 * tail, 2 ** m)))
    return {"a_only": a_only, "b_only": b_only, "p": p}


def compare_classifiers(gold: Sequence, pred_a: Sequence, pred_b: Sequence, *, resamples: int = DEFAULT_RESAMPLES,
                        permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0,
                        confidence: float = DEFAULT_CONFIDENCE) -> Dict[str, dict]:
    """Two classifiers on the same samples: for accuracy, macro-F1 and weighted-F1 the paired bootstrap of
    ``delta = B - A`` (CI, p) and approximate randomisation (``p_ar``), the same resamples and swaps for the
    three; plus ``mcnemar`` (mcnemar_exact)."""
    (g, a, b), labels = encode_labels(gold, pred_a, pred_b)
    if not g.size:
        raise ValueError("no (gold, prediction) pairs")
    k = len(labels)
    weights = bootstrap_weights(g.size, resamples, seed)
    masks = swap_masks(g.size, permutations, seed)
    out: Dict[str, dict] = {}
    for metric in CLASSIFICATION_METRICS:
        reduce = confusion_reduce(k, metric)
        sa = ColumnStatistic(_pair_columns(g, a, k), reduce)
        sb = ColumnStatistic(_pair_columns(g, b, k), reduce)
        res = bootstrap_paired(sa, sb, confidence=confidence, weights=weights)
        res["p_ar"] = approximate_randomisation(sa, sb, masks=masks)["p"]
        out[metric] = res
    out["mcnemar"] = mcnemar_exact(gold, pred_a, pred_b)
    return out


# ------------------------------------------------------------------------------------------ scores files
@dataclass(frozen=True)
class SystemMetric:
    """One metric of one system, ready for resampling."""
    statistic: ColumnStatistic
    higher_is_better: Optional[bool]
    kind: str      # how a resample's value is computed
    scale: float   # the table prints value * scale (x100 as the released printout; PPL and others as they are)


def load_per_sample(path: str) -> dict:
    """A score file's per-sample scores: {"path", "name", "ids", "per_sample", "scores"}, or {"path", "name",
    "sets": {set: that}} for a study result file with several sets (s2/frequent: pick one with ``FILE#SET``, or
    compare_files picks the set whose samples the other file holds). Reads test_evaluation.py's ``.scores.json``
    and the study's result files (``results/<profile>/s2/...json``, named by their cell). A file larger than
    MAX_SCORE_BYTES, or without per-sample scores, or with malformed ids, is refused with a UserError naming it."""
    chosen = ""
    if not os.path.exists(path) and "#" in path:  # FILE#SET
        path, _, chosen = path.rpartition("#")
    if os.path.isfile(path) and os.path.getsize(path) > MAX_SCORE_BYTES:
        raise UserError(f"{path}: {os.path.getsize(path) / 2 ** 20:.0f} MiB, more than the {MAX_SCORE_BYTES >> 20} "
                        "MiB a score file may hold (about 300,000 samples); compare subsets of the samples")
    record = load_json(path, "scores record (the .scores.json of test_evaluation.py or a study result file)")
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected a JSON object (the .scores.json of test_evaluation.py), "
                        f"got {type(record).__name__}")
    name = path  # a study result file is named by its cell
    if isinstance(record.get("cell"), str) and isinstance(record.get("result"), dict):  # a study result file
        name, record = record["cell"], record["result"]
        if isinstance(record.get("sets"), dict) and "per_sample" not in record:
            sets = {k: v for k, v in record["sets"].items() if isinstance(v, dict) and "per_sample" in v}
            if not sets:
                raise UserError(f"{path}: study cell {name} holds no per-sample generation scores (a stage-1 "
                                "result: its comparison is the s1/compare cell)")
            if chosen:
                if chosen not in sets:
                    raise UserError(f"{path}#{chosen}: no set {chosen!r} in cell {name}; sets: {', '.join(sets)}")
                return _per_sample_of(path, f"{name}#{chosen}", sets[chosen])
            return {"path": path, "name": name, "sets": {k: _per_sample_of(path, f"{name}#{k}", v)
                                                         for k, v in sets.items()}}
    if chosen:
        raise UserError(f"{path}#{chosen}: only a study result file with several sets takes #SET")
    return _per_sample_of(path, name, record)


def _per_sample_of(path: str, name: str, record: dict) -> dict:
    per_sample = record.get("per_sample")
    if not isinstance(per_sample, dict):
        raise UserError(f"{path}: no per-sample scores (no 'per_sample' entry): written by an older "
                        "test_evaluation.py or with --no_metrics; evaluate again with this version")
    ids = per_sample.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UserError(f"{path}: per_sample.ids must be a non-empty list of sample id strings")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: per_sample.ids lists sample {dup!r} more than once")
    scores = record.get("scores") if isinstance(record.get("scores"), dict) else {}
    return {"path": path, "name": name, "ids": ids, "per_sample": per_sample, "scores": scores}


def pick_set(loaded: dict, other: dict) -> dict:
    """A file with several sets: the one whose samples ``other`` holds (refused when none or several fit)."""
    if "sets" not in loaded:
        return loaded
    ids = set(other["ids"]) if "ids" in other else None
    fits = [v for v in loaded["sets"].values() if ids is not None and set(v["ids"]) == ids]
    if len(fits) != 1:
        raise UserError(f"{loaded['path']}: cell {loaded['name']} holds the sets {', '.join(loaded['sets'])}; name one "
                        f"as {loaded['path']}#SET")
    return fits[0]


def _numbers(path: str, key: str, value, n: int, width: Optional[int] = None,
             bounds: tuple = (-math.inf, math.inf), integer: bool = False) -> np.ndarray:
    shape = (n,) if width is None else (n, width)
    what = f"{n} numbers" if width is None else f"{n} rows of {width} numbers"
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        x = None
    if x is None or x.shape != shape or not np.isfinite(x).all():
        got = "non-numbers" if x is None else (f"shape {list(x.shape)}" if x.shape != shape else "NaN or infinity")
        raise UserError(f"{path}: per_sample.{key}: expected {what} (one per id), got {got}")
    low, high = bounds
    bad = (x < low - 1e-9) | (x > high + 1e-9) | ((x != np.round(x)) if integer else False)
    if bad.any():
        where = np.argwhere(bad)[0]
        kind = "integers" if integer else "numbers"
        raise UserError(f"{path}: per_sample.{key}[{', '.join(map(str, where))}] = {x[tuple(where)]:g}: expected "
                        f"{kind} in [{low:g}, {high:g}] (a damaged or edited file)")
    return x


def _is_number_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def system_metrics(loaded: dict, order: Sequence[str]) -> tuple:
    """(metrics by name, notes) of one loaded file, its samples put in ``order`` (a permutation of its ids)."""
    path, ps = loaded["path"], loaded["per_sample"]
    position = {sid: i for i, sid in enumerate(loaded["ids"])}
    idx = np.array([position[sid] for sid in order], dtype=np.int64)
    n = len(order)
    metrics: Dict[str, SystemMetric] = {}
    notes: List[str] = []
    bleu = ps.get("bleu")
    if bleu is not None:
        if not isinstance(bleu, dict):
            raise UserError(f"{path}: per_sample.bleu: expected an object with correct, guess, hyp_len, ref_len")
        m = bleu.get("n", 4)
        if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= 4:
            raise UserError(f"{path}: per_sample.bleu.n: expected an integer 1..4, got {m!r}")
        counts = {k: _numbers(path, f"bleu.{k}", bleu.get(k), n, m if k in ("correct", "guess") else None,
                              (0, math.inf), integer=True) for k in ("correct", "guess", "hyp_len", "ref_len")}
        over = np.argwhere(counts["correct"] > counts["guess"])
        if over.size:
            i, k = over[0]
            raise UserError(f"{path}: per_sample.bleu.correct[{i}, {k}] = {counts['correct'][i, k]:g} is more than "
                            f"its guess {counts['guess'][i, k]:g} (matched n-grams cannot outnumber the hypothesis' "
                            "n-grams: a damaged or edited file)")
        columns = bleu_columns(counts)[idx]
        for k in range(1, m + 1):
            metrics[f"Bleu_{k}"] = SystemMetric(ColumnStatistic(columns, bleu_reduce(k, m)), True,
                                                "corpus BLEU from the resample's summed n-gram counts", 100.0)
    for key, name, kind in (("meteor", "METEOR", "mean of METEOR segment scores (not the reported corpus METEOR)"),
                            ("rouge_l", "ROUGE_L", "mean of per-sample ROUGE-L F"),
                            ("cider", "CIDEr", "mean of per-sample CIDEr (document frequencies of the full set)")):
        if ps.get(key) is not None:
            values = _numbers(path, key, ps[key], n, bounds=RANGES[key])[idx]
            metrics[name] = SystemMetric(mean_statistic(values), True, kind, 100.0)
    averaged = [k for k in ps if k not in LAYOUT_KEYS and _is_number_list(ps[k])]
    ignored = [k for k in ps if k not in LAYOUT_KEYS and k not in averaged and ps[k] is not None]
    if ps.get("nll") is not None and ps.get("tokens") is not None:
        nll = _numbers(path, "nll", ps["nll"], n, bounds=RANGES["nll"])[idx]
        tokens = _numbers(path, "tokens", ps["tokens"], n, bounds=(0, math.inf), integer=True)[idx]
        if tokens.sum() <= 0:
            raise UserError(f"{path}: per_sample.tokens: expected token counts >= 0 with a positive sum")
        metrics["PPL"] = SystemMetric(ColumnStatistic(np.column_stack([nll, tokens]), ppl_reduce), False,
                                      "exp(sum nll / sum tokens) of the resample", 1.0)
    else:
        averaged += [k for k in ("nll", "tokens") if ps.get(k) is not None]
    for key in averaged:
        values = _numbers(path, key, ps[key], n)[idx]
        metrics[key] = SystemMetric(mean_statistic(values), None, f"mean of per-sample {key}", 1.0)
    if ignored:
        notes.append(f"{path}: per_sample entries {ignored} are not lists of numbers; not compared")
    if not metrics:
        raise UserError(f"{path}: per_sample holds sample ids but no per-sample scores (bleu, rouge_l, cider, meteor, "
                        "nll ...); nothing to compare")
    return metrics, notes


def align_ids(a: dict, b: dict) -> List[str]:
    """The common samples in sorted-id order; different id sets are refused (UserError naming B and A)."""
    ids_a, ids_b = set(a["ids"]), set(b["ids"])
    if ids_a != ids_b:
        only_b, only_a = sorted(ids_b - ids_a), sorted(ids_a - ids_b)
        parts = []
        if only_b:
            parts.append(f"{len(only_b)} not in {a['path']} (e.g. {only_b[0]!r})")
        if only_a:
            parts.append(f"{len(only_a)} of its samples missing (e.g. {only_a[0]!r})")
        raise UserError(f"{b['path']}: its {len(ids_b)} sample ids are not those of {a['path']} ({len(ids_a)}): "
                        f"{', '.join(parts)}; compare evaluations of the same test samples")
    return sorted(ids_a)


def _check_reported(loaded: dict, metrics: Mapping[str, SystemMetric], notes: List[str]) -> None:
    for name in BLEU_METRICS + ("ROUGE_L", "CIDEr"):
        reported = loaded["scores"].get(name)
        if name in metrics and isinstance(reported, (int, float)):
            value = metrics[name].statistic.value()
            if abs(value - reported) > 1e-6 * max(1.0, abs(reported)):
                notes.append(f"{loaded['path']}: the per-sample {name} ({value:.6f}) differs from the reported "
                             f"score ({reported:.6f}); the file may have been edited")


def _better(delta: float, higher_is_better: Optional[bool], p_boot: float, p_ar: float) -> Optional[str]:
    if higher_is_better is None or p_boot >= ALPHA or p_ar >= ALPHA or delta == 0:
        return None
    return "B" if (delta > 0) == higher_is_better else "A"


def compare_files(path_a: str, path_b: str, *, resamples: int = DEFAULT_RESAMPLES,
                  permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, metrics: Optional[Sequence[str]] = None,
                  confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """Compare two ``.scores.json`` files sample by sample (see the module docstring); returns the JSON-ready
    result. Every check (files, ids, ``metrics`` names) runs before any resampling."""
    a, b = load_per_sample(path_a), load_per_sample(path_b)
    if "sets" in a and "sets" in b:
        raise UserError(f"{path_b}: both files hold several sets; name one as FILE#SET")
    a, b = pick_set(a, b), pick_set(b, a)
    path_a, path_b = a["path"], b["path"]
    order = align_ids(a, b)
    metrics_a, notes_a = system_metrics(a, order)
    metrics_b, notes_b = system_metrics(b, order)
    notes = notes_a + notes_b
    common = [m for m in metrics_a if m in metrics_b]
    for name in sorted(set(metrics_a) ^ set(metrics_b)):
        where = path_a if name in metrics_a else path_b
        reason = " (scored with --no_meteor)" if name == "METEOR" else ""
        notes.append(f"{name}: per-sample scores only in {where}{reason}; not compared")
    for name in common:
        if metrics_a[name].statistic.columns.shape != metrics_b[name].statistic.columns.shape:
            raise UserError(f"{path_b}: per_sample entry of {name} has another layout than in {path_a}")
    untested = [m for m in NOT_RESAMPLED if m in a["scores"] and m in b["scores"]]
    if metrics is not None:
        unknown = [m for m in metrics if m not in common and m not in untested]
        if unknown:
            raise UserError(f"--metrics: {unknown} not in both files' per-sample scores; available: "
                            f"{common + untested}")
        common = [m for m in common if m in metrics]
        untested = [m for m in untested if m in metrics]
    if not common and not untested:
        raise UserError(f"{path_b}: shares no metric with {path_a} (A: {sorted(metrics_a) or 'none'}, B: "
                        f"{sorted(metrics_b) or 'none'}); nothing to compare")
    if "METEOR" in common:
        notes.append("METEOR: A and B are means of segment scores, not the reported corpus METEOR")
    _check_reported(a, metrics_a, notes)
    _check_reported(b, metrics_b, notes)

    n = len(order)
    pairs = {name: (metrics_a[name].statistic, metrics_b[name].statistic) for name in common}
    boot_deltas: Dict[str, list] = {name: [] for name in common}
    perm_deltas: Dict[str, list] = {name: [] for name in common}
    for weights in weight_chunks(n, resamples, seed):  # the same resamples for every metric, block by block
        for name, (sa, sb) in pairs.items():
            boot_deltas[name].append(_boot_deltas(sa, sb, weights))
    for masks in mask_chunks(n, permutations, seed):
        for name, (sa, sb) in pairs.items():
            perm_deltas[name].append(_perm_deltas(sa, sb, masks))
    rows: Dict[str, dict] = {}
    for name, (sa, sb) in pairs.items():
        ma = metrics_a[name]
        boot = _boot_summary(sa, sb, np.concatenate(boot_deltas[name]), confidence)
        p_ar = _ar_summary(sa, sb, np.concatenate(perm_deltas[name]))["p"]
        rows[name] = {"a": boot["a"], "b": boot["b"], "delta": boot["delta"], "ci_low": boot["ci_low"],
                      "ci_high": boot["ci_high"], "p_boot": boot["p"], "p_ar": p_ar,
                      "higher_is_better": ma.higher_is_better, "statistic": ma.kind, "scale": ma.scale,
                      "better": _better(boot["delta"], ma.higher_is_better, boot["p"], p_ar)}
    not_tested = {m: {"a": float(a["scores"][m]), "b": float(b["scores"][m]),
                      "delta": float(b["scores"][m]) - float(a["scores"][m]), "scale": 100.0,
                      "reason": "a ratio over all hypotheses' n-gram sets: cannot be resampled without the text, "
                                "which is not stored"} for m in untested}
    return {"a": path_a, "b": path_b, "name_a": a["name"], "name_b": b["name"], "n_samples": n,
            "resamples": int(resamples), "permutations": int(permutations),
            "seed": seed, "confidence": confidence, "alpha": ALPHA,
            "convention": "delta = B - A; higher is better except PPL (lower is better) and per-sample extras "
                          "(direction unknown); 'better' names a system only when both p < alpha",
            "p_boot": "paired bootstrap, two-sided: min(1, 2 (min(#{d* <= 0}, #{d* >= 0}) + 1) / (R + 1))",
            "p_ar": "approximate randomisation, per-sample swaps with probability 1/2: (#{|d_perm| >= |d|} + 1) / "
                    "(P + 1)",
            "metrics": rows, "not_tested": not_tested, "notes": notes}


def _fmt(value: float, scale: float) -> str:
    return f"{value * scale:.2f}" if scale != 1.0 else f"{value:.4g}"


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" + (" *" if p < ALPHA else "")


def format_comparison(result: dict) -> str:
    """The result as a text table (metric | A | B | B-A | CI | p bootstrap | p AR), then the notes."""
    pct = f"{result['confidence'] * 100:g} % CI"
    header = ["metric", "A", "B", "B-A", pct, "p bootstrap", "p AR"]
    table = [header]
    for name, r in result["metrics"].items():
        s = r["scale"]
        table.append([name, _fmt(r["a"], s), _fmt(r["b"], s), _fmt(r["delta"], s),
                      f"[{_fmt(r['ci_low'], s)}, {_fmt(r['ci_high'], s)}]", _fmt_p(r["p_boot"]),
                      _fmt_p(r["p_ar"])])
    for name, r in result["not_tested"].items():
        table.append([name, _fmt(r["a"], r["scale"]), _fmt(r["b"], r["scale"]), _fmt(r["delta"], r["scale"]),
                      "not resampled", "-", "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    names = {k: (result.get(f"name_{k}", result[k]), result[k]) for k in ("a", "b")}
    lines = [f"{k.upper()}: {name}" + (f" ({path})" if name != path else "") for k, (name, path) in names.items()] + [
             f"{result['n_samples']} samples; {result['resamples']} bootstrap resamples, {result['permutations']} "
             f"permutations, seed {result['seed']}; x100 except PPL and extras; * p < {result['alpha']:g}",
             "delta = B - A: positive = B better, except PPL (negative = B better)", ""]
    for i, row in enumerate(table):
        cells = [cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
