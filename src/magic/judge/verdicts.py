"""From the judge's answers to results: the two orders combined, win / tie / lose shares with paired-bootstrap
intervals, the sign test, position consistency and the controls' accuracy. Numbers and labels only.

Each sample is judged twice: ``ab`` shows A's reply first, ``ba`` shows B's first. An answer's "1" / "2" is
mapped back to the system shown there, so each order gives A, B or tie per criterion; the combined verdict is a
win for A when both orders say A, a loss when both say B, and a tie otherwise. A criterion is position-consistent
on a sample when both orders give the same system (or both a tie): a judge that always prefers the reply shown
first is consistent nowhere and wins nothing for either side.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np

from magic.judge.prompt import CRITERIA
from magic.metric.significance import bootstrap_weights, percentile_interval

OUTCOMES = ("win", "tie", "lose")  # for system A (for the reference, in the controls)
SIGNIFICANCE = 0.05
# the controls' criteria: both sides are written by people, so Fluency does not tell them apart
CONTROL_CRITERIA = ("Identification", "Comforting", "Suggestion", "Overall")


def side(order: str, choice: str) -> str:
    """"A", "B" or "tie": which system the answer ``choice`` ("1", "2", "tie") of order ``ab`` / ``ba`` picks."""
    if choice == "tie":
        return "tie"
    return ("A" if choice == "1" else "B") if order == "ab" else ("B" if choice == "1" else "A")


def combine(ab: Mapping[str, str], ba: Mapping[str, str]) -> dict[str, dict]:
    """criterion -> {"verdict": win|tie|lose (for A), "consistent": bool, "ab": side, "ba": side}."""
    out = {}
    for c in CRITERIA:
        x, y = side("ab", ab[c]), side("ba", ba[c])
        verdict = "win" if x == y == "A" else "lose" if x == y == "B" else "tie"
        out[c] = {"verdict": verdict, "consistent": x == y, "ab": x, "ba": y}
    return out


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties dropped): min(1, 2 P(X <= min)), X ~ Bin(w + l, 1/2);
    1 when there is neither. Exact rational arithmetic (math.comb)."""
    m = wins + losses
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(wins, losses) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** m)))


def summarise(verdicts: Sequence[Mapping[str, dict]], *, resamples: int, seed: int, confidence: float) -> dict:
    """Per criterion: shares of win / tie / lose with percentile intervals of a bootstrap over samples (the same
    resamples for every criterion), net = win - lose with its interval, the sign test, position consistency."""
    n = len(verdicts)
    if n == 0:
        return {c: None for c in CRITERIA}
    weights = bootstrap_weights(n, resamples, seed)
    out = {}
    for c in CRITERIA:
        col = {o: np.array([v[c]["verdict"] == o for v in verdicts], dtype=np.float64) for o in OUTCOMES}
        res: dict = {"n": n}
        for o in OUTCOMES:
            res[o] = float(col[o].mean())
            res[f"{o}_ci"] = list(percentile_interval(weights @ col[o] / n, confidence))
        net = col["win"] - col["lose"]
        res["net"] = float(net.mean())
        res["net_ci"] = list(percentile_interval(weights @ net / n, confidence))
        wins, losses = int(col["win"].sum()), int(col["lose"].sum())
        res["sign_test_p"] = sign_test(wins, losses)
        res["position_consistency"] = float(np.mean([v[c]["consistent"] for v in verdicts]))
        out[c] = res
    return out


def consistency(verdicts: Sequence[Mapping[str, dict]]) -> float | None:
    """Share of (sample, criterion) pairs on which the two orders agree."""
    flags = [v[c]["consistent"] for v in verdicts for c in CRITERIA]
    return float(np.mean(flags)) if flags else None


def control_accuracy(verdicts: Sequence[Mapping[str, dict]]) -> dict:
    """A control pair shows the reference as A: its accuracy on a criterion is the share of pairs the reference
    wins (in both orders). The judge beats chance on a control when more than half go to the reference and the
    sign test of reference wins against reference losses has p < 0.05 (Overall decides ``passes``)."""
    out: dict = {"n": len(verdicts), "accuracy": {}, "sign_test_p": {}}
    for c in CONTROL_CRITERIA:
        wins = sum(v[c]["verdict"] == "win" for v in verdicts)
        losses = sum(v[c]["verdict"] == "lose" for v in verdicts)
        out["accuracy"][c] = wins / len(verdicts) if verdicts else None
        out["sign_test_p"][c] = sign_test(wins, losses)
    acc = out["accuracy"]["Overall"]
    out["passes"] = bool(acc is not None and acc > 0.5 and out["sign_test_p"]["Overall"] < SIGNIFICANCE)
    return out
