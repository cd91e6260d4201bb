"""nlg-eval compatible corpus metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) on top of pycocoevalcap.

The released evaluation imports ``from metric import NLGEval`` (a copy of Maluuba's nlg-eval that the
authors shipped separately) and calls ``NLGEval(no_glove=True).compute_metrics([refs], hyps)``. This
module gives the same interface and the same numbers: the scorers are pycocoevalcap's ``Bleu(4)``,
``Meteor()``, ``Rouge()`` and ``Cider()``, fed ``{i: [reference, ...]}`` / ``{i: [hypothesis]}`` dicts
of already-tokenised, whitespace-stripped strings, with no PTB tokeniser (as nlg-eval does).

Differences from nlg-eval, none of which changes a score:
- ``compute_metrics`` also returns the per-sample scores (the released call unpacks two values).
- METEOR runs in a Java subprocess; we check for ``java`` up front (clear error with the install command),
  read its stderr into a temporary file instead of an unread pipe (a full pipe can block the JVM), kill
  it with a watchdog when it stops answering, and always close it (``close()`` / context manager),
  so no JVM is left behind.
- Embedding metrics (GloVe, skip-thoughts) are not offered: the MAGIC paper does not report them.

Added for significance tests (significance.py): ``bleu_statistics`` gives, per sample, exactly what
pycocoevalcap's corpus BLEU sums (clipped n-gram matches, hypothesis n-gram counts, hypothesis length and
the closest reference length), and ``bleu_from_counts`` turns summed counts back into BLEU-1..n with
pycocoevalcap's smoothing (``tiny`` / ``small``) and brevity penalty, vectorised over resamples. BLEU is a
corpus statistic: a resample's BLEU is recomputed from that resample's summed counts (the mean of the
sentence BLEUs ``compute_metrics`` returns is a different number).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

OVERLAP_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

JAVA_INSTALL_HINT = (
    "METEOR needs a Java runtime (`java` on PATH) to run pycocoevalcap's meteor-1.5.jar. Install one, e.g. "
    "`apt-get install default-jre-headless` (Debian/Ubuntu) or `conda install -c conda-forge openjdk`, "
    "or omit the metric with NLGEval(metrics_to_omit=['METEOR']) / test_evaluation.py --no_meteor."
)


class MeteorError(RuntimeError):
    """METEOR could not be computed (no Java, the JVM died, or it stopped answering)."""


def java_available() -> bool:
    return shutil.which("java") is not None


class SafeMeteor(Meteor):
    """pycocoevalcap's ``Meteor`` (same jar, same command line, same SCORE/EVAL protocol: its
    ``compute_score`` and ``_stat`` are inherited unchanged) with a process life cycle that cannot hang
    or leak:

    - the JVM's stderr goes to a temporary file (pycocoevalcap opens a pipe nobody reads);
    - ``compute_score`` runs under a watchdog that kills the JVM after ``timeout_s`` seconds, so a wedged
      JVM turns into a ``MeteorError`` carrying the JVM's stderr instead of a silent hang;
    - ``close()`` kills and reaps the process; ``__del__`` calls it without taking the scorer lock
      (pycocoevalcap's ``__del__`` takes the lock and would deadlock after an exception inside
      ``compute_score``, which leaves the lock held).
    """

    def __init__(self, timeout_s: float = 600.0):
        if not java_available():
            raise MeteorError(JAVA_INSTALL_HINT)
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        jar_dir = os.path.dirname(os.path.abspath(_meteor_module.__file__))
        cmd = ["java", "-jar", "-Xmx2G", _meteor_module.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self.meteor_p = subprocess.Popen(cmd, cwd=jar_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr)

    def _stderr_text(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace").strip()[-2000:]
        except (ValueError, OSError):
            return ""

    def compute_score(self, gts, res):
        if self.meteor_p is None:
            raise MeteorError("METEOR scorer already closed")
        if self.meteor_p.poll() is not None:
            raise MeteorError(f"METEOR JVM exited with code {self.meteor_p.returncode}: {self._stderr_text()}")
        killed = threading.Event()
        proc = self.meteor_p

        def _kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(self.timeout_s, _kill)
        timer.daemon = True
        timer.start()
        try:
            return super().compute_score(gts, res)
        except (ValueError, BrokenPipeError, OSError) as e:
            # A dead or killed JVM shows up as an empty line (float('') -> ValueError) or a broken pipe.
            why = f"no answer within {self.timeout_s:g} s, killed" if killed.is_set() else "JVM failed"
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            err = self._stderr_text() or "<empty>"
            self.close()
            raise MeteorError(f"METEOR {why} ({e}); JVM stderr: {err}") from None
        finally:
            timer.cancel()
            if self.lock.locked():  # pycocoevalcap does not release it on error
                self.lock.release()

    def close(self) -> None:
        p = getattr(self, "meteor_p", None)
        if p is None:
            return
        self.meteor_p = None
        try:
            if p.stdin:
                p.stdin.close()
        except OSError:
            pass
        if p.poll() is None:
            p.kill()
        p.wait()
        for stream in (p.stdout, getattr(self, "_stderr", None)):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def __del__(self):
        self.close()


class NLGEval:
    """``NLGEval(no_glove=True, metrics_to_omit=None)``; ``compute_metrics(ref_list, hyp_list)``.

    ``ref_list`` is a list of reference *lists*, as nlg-eval takes it: ``ref_list[k][i]`` is reference k
    of sample i (the released code passes ``[refs]``, one reference per sample). ``hyp_list[i]`` is the
    hypothesis of sample i. Strings must already be tokenised (space-separated); they are only stripped.

    Returns ``(scores, per_sample)``: ``scores[m]`` is the corpus score of metric m (a float in [0, 1],
    CIDEr in [0, 10]); ``per_sample[m]`` is the list of per-sample scores (for BLEU pycocoevalcap's
    sentence-level BLEU, whose mean is *not* the corpus BLEU).

    Use as a context manager or call ``close()`` to stop the METEOR JVM promptly.
    """

    valid_metrics = frozenset(OVERLAP_METRICS)

    def __init__(self, no_glove: bool = True, metrics_to_omit: Iterable[str] | None = None,
                 meteor_timeout_s: float = 600.0):
        if not no_glove:
            raise ValueError("GloVe embedding metrics are not available in this reproduction; use no_glove=True")
        omit = set(metrics_to_omit or ())
        unknown = omit - self.valid_metrics
        if unknown:
            raise ValueError(f"unknown metrics to omit: {sorted(unknown)}; valid: {list(OVERLAP_METRICS)}")
        self.metrics_to_omit = omit
        self.scorers: List[Tuple[object, object]] = []
        # Like nlg-eval: omitting Bleu_i drops Bleu_j for every j >= i.
        n_bleu = 4
        for i in range(1, 5):
            if f"Bleu_{i}" in omit:
                n_bleu = i - 1
                break
        if n_bleu:
            self.scorers.append((Bleu(n_bleu), [f"Bleu_{j}" for j in range(1, n_bleu + 1)]))
        if "METEOR" not in omit:
            self.scorers.append((SafeMeteor(timeout_s=meteor_timeout_s), "METEOR"))
        if "ROUGE_L" not in omit:
            self.scorers.append((Rouge(), "ROUGE_L"))
        if "CIDEr" not in omit:
            self.scorers.append((Cider(), "CIDEr"))

    @property
    def metric_names(self) -> List[str]:
        names: List[str] = []
        for _, method in self.scorers:
            names.extend(method if isinstance(method, list) else [method])
        return names

    def compute_metrics(self, ref_list: Sequence[Sequence[str]], hyp_list: Sequence[str]
                        ) -> Tuple[Dict[str, float], Dict[str, List[float]]]:
        if isinstance(ref_list, str) or not all(isinstance(r, (list, tuple)) for r in ref_list):
            raise TypeError("ref_list must be a list of reference lists, e.g. [refs] (ref_list[k][i] = "
                            "reference k of sample i)")
        if not ref_list:
            raise ValueError("ref_list is empty: need at least one reference list")
        for k, refs in enumerate(ref_list):
            if len(refs) != len(hyp_list):
                raise ValueError(f"reference list {k} has {len(refs)} entries but there are {len(hyp_list)} "
                                 "hypotheses; they must align one to one")
        if not hyp_list:
            raise ValueError("no hypotheses to score")
        per_sample_refs = [[r.strip() for r in refs] for refs in zip(*ref_list)]
        refs = {i: r for i, r in enumerate(per_sample_refs)}
        hyps = {i: [h.strip()] for i, h in enumerate(hyp_list)}
        for i, h in hyps.items():
            # A newline would split METEOR's line protocol and desynchronise it (a hang in pycocoevalcap).
            if "\n" in h[0] or any("\n" in r for r in refs[i]):
                raise ValueError(f"sample {i}: reference/hypothesis contains a newline; pass one line per sample")
        scores: Dict[str, float] = {}
        per_sample: Dict[str, List[float]] = {}
        for scorer, method in self.scorers:
            if isinstance(scorer, Bleu):
                score, sample_scores = scorer.compute_score(refs, hyps, verbose=0)
            else:
                score, sample_scores = scorer.compute_score(refs, hyps)
            if isinstance(method, list):
                for m, sc, scs in zip(method, score, sample_scores):
                    scores[m] = float(sc)
                    per_sample[m] = [float(x) for x in scs]
            else:
                scores[method] = float(score)
                per_sample[method] = [float(x) for x in np.asarray(sample_scores).ravel()]
        return scores, per_sample

    def close(self) -> None:
        for scorer, _ in self.scorers:
            if isinstance(scorer, SafeMeteor):
                scorer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def distinct_n(hyps: Sequence[str], n: int) -> float:
    """Corpus-level Distinct-n: distinct n-grams / all n-grams over all hypotheses (whitespace tokens).

    Hypotheses shorter than n contribute no n-grams; 0.0 when the corpus has none.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: Counter = Counter()
    for h in hyps:
        toks = h.split()
        grams.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


# pycocoevalcap's BleuScorer.compute_score constants: "tiny" keeps a zero match count from giving log(0),
# "small" keeps a zero denominator from dividing by zero.
BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9


def bleu_statistics(ref_list: Sequence[Sequence[str]], hyp_list: Sequence[str], n: int = 4) -> Dict[str, np.ndarray]:
    """Per-sample BLEU sufficient statistics, computed by pycocoevalcap's own ``cook_refs`` / ``cook_test``
    on the strings ``NLGEval.compute_metrics`` scores (same ``ref_list`` layout: ``ref_list[k][i]`` is
    reference k of sample i).

    Returns int64 arrays: ``correct`` [N, n] clipped n-gram matches, ``guess`` [N, n] hypothesis n-grams,
    ``hyp_len`` [N] hypothesis tokens, ``ref_len`` [N] the length of the reference closest in length
    (ties: the shorter one), which is pycocoevalcap's ``option='closest'`` that ``Bleu.compute_score`` uses.
    """
    if not ref_list or any(len(refs) != len(hyp_list) for refs in ref_list):
        raise ValueError("ref_list must hold reference lists as long as hyp_list (ref_list[k][i] = reference k "
                         "of sample i)")
    correct = np.zeros((len(hyp_list), n), dtype=np.int64)
    guess = np.zeros((len(hyp_list), n), dtype=np.int64)
    hyp_len = np.zeros(len(hyp_list), dtype=np.int64)
    ref_len = np.zeros(len(hyp_list), dtype=np.int64)
    for i, (hyp, refs) in enumerate(zip(hyp_list, zip(*ref_list))):
        cooked = cook_test(hyp.strip(), cook_refs([r.strip() for r in refs], n=n), n=n)
        correct[i] = cooked["correct"]
        guess[i] = cooked["guess"]
        hyp_len[i] = cooked["testlen"]
        ref_len[i] = min((abs(length - cooked["testlen"]), length) for length in cooked["reflen"])[1]
    return {"correct": correct, "guess": guess, "hyp_len": hyp_len, "ref_len": ref_len}


def bleu_from_counts(correct, guess, hyp_len, ref_len) -> np.ndarray:
    """Corpus BLEU-1..n from *summed* statistics, as pycocoevalcap computes it: BLEU-k is the geometric mean
    of the smoothed precisions (correct + 1e-15) / (guess + 1e-9) of orders 1..k, times the brevity penalty
    exp(1 - ref/hyp) when (hyp + 1e-15) / (ref + 1e-9) < 1.

    ``correct`` / ``guess`` have shape [..., n] and the lengths shape [...] (e.g. one row per resample);
    returns [..., n]."""
    correct = np.asarray(correct, dtype=np.float64)
    guess = np.asarray(guess, dtype=np.float64)
    ratio = (np.asarray(hyp_len, dtype=np.float64) + BLEU_TINY) / (np.asarray(ref_len, dtype=np.float64) + BLEU_SMALL)
    products = np.cumprod((correct + BLEU_TINY) / (guess + BLEU_SMALL), axis=-1)
    bleu = products ** (1.0 / np.arange(1, correct.shape[-1] + 1))
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleu * penalty[..., None]
