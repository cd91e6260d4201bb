"""Step 5 (report): how good the strategy LLM's strategies are, and the output entries it is judged on.

Output entries (``strategy_with_motivation{,_valid,_test}.json``, released format plus ``id``)::

    {"id": "valid-3-5", "strategy": "[question]", "motivation": "<the full answer>"}

The strategy is the first of the 8 labels the answer names (``magic.esconv.dialogues.parse_strategy``: bracketed
labels first, case-insensitive), written as released: bracketed, lower case. An answer naming none
becomes ``[others]``; such answers are counted and reported.

Report: accuracy, macro-F1 and weighted-F1 (scikit-learn, over the labels present in gold or
prediction) against the gold strategies of the dialogue files, matched BY SAMPLE ID; an 8x8 confusion
matrix (rows gold, columns predicted) as PNG and everything as JSON next to the outputs. The inference
run that writes the entries is src/magic/llm/inference.py.

    python src/magic/llm/report.py --outputs LLM_inference/strategy_with_motivation_valid.json \
        --gold_file data/valid.txt --split valid
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from magic.esconv.dialogues import STRATEGIES, load_samples, parse_strategy, strategy_id
from magic.common.io_utils import atomic_save_figure, atomic_write_json, load_json

OTHERS = "Others"


def released_label(strategy: str) -> str:
    """``"Reflection of Feelings"`` -> ``"[reflection of feelings]"`` (how the released outputs wrote it)."""
    return f"[{strategy.lower()}]"


def answer_to_entry(sample_id: str, answer: str) -> tuple[dict, bool]:
    """The output entry of one answer, and whether a strategy was found in it."""
    named = parse_strategy(answer)
    return {"id": sample_id, "strategy": released_label(named or OTHERS), "motivation": answer}, named is not None


def entries_from_answers(ids: Sequence[str], answers: Sequence[str]) -> tuple[list[dict], int]:
    """Entries for aligned ids/answers and the number of answers that named no strategy."""
    if len(ids) != len(answers):
        raise ValueError(f"{len(ids)} ids but {len(answers)} answers")
    entries, unparsed = [], 0
    for i, a in zip(ids, answers):
        e, ok = answer_to_entry(i, a)
        entries.append(e)
        unparsed += not ok
    return entries, unparsed


def strategy_metrics(gold_ids: Sequence[int], pred_ids: Sequence[int]) -> dict:
    """accuracy / macro_f1 / weighted_f1, the 8x8 confusion matrix (rows gold) and per-label counts."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if len(gold_ids) != len(pred_ids) or not gold_ids:
        raise ValueError(f"need as many predictions as gold labels (>0), got {len(pred_ids)} and {len(gold_ids)}")
    labels = list(range(len(STRATEGIES)))
    return {
        "n": len(gold_ids),
        "accuracy": float(accuracy_score(gold_ids, pred_ids)),
        "macro_f1": float(f1_score(gold_ids, pred_ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold_ids, pred_ids, average="weighted", zero_division=0)),
        "confusion": confusion_matrix(gold_ids, pred_ids, labels=labels).tolist(),
        "gold_counts": [int(sum(g == k for g in gold_ids)) for k in labels],
        "pred_counts": [int(sum(p == k for p in pred_ids)) for k in labels],
    }


def _entry_strategy_id(entry: dict, where: str) -> int:
    try:
        return strategy_id(entry["strategy"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: no valid \"strategy\" field ({e})") from None


def match_gold(entries: Sequence[dict], gold: dict[str, int], what: str) -> tuple[list[int], list[int]]:
    """(gold ids, predicted ids) of the entries, matched by sample id; every entry must have a gold label."""
    g, p = [], []
    for k, e in enumerate(entries):
        sid = e.get("id") if isinstance(e, dict) else None
        if sid not in gold:
            raise ValueError(f"{what}: entry {k} has id {sid!r}, which is not a sample of the gold file")
        g.append(gold[sid])
        p.append(_entry_strategy_id(e, f"{what}: entry {k} ({sid})"))
    return g, p


def gold_strategies(path: str, split: str, test_mode: str = "last") -> dict[str, int]:
    """Sample id -> gold strategy id of a dialogue file."""
    return {s.id: s.strategy_id for s in load_samples(path, split, test_mode)}


def plot_confusion(confusion: list[list[int]], path: str, title: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    short = [s if len(s) < 16 else s[:14] + "…" for s in STRATEGIES]
    ax.set_xticks(range(len(STRATEGIES)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(STRATEGIES)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def report_split(entries: Sequence[dict], gold: dict[str, int], out_prefix: str, split: str,
                 unparsed: int | None = None) -> dict:
    """Metrics of one split; writes ``<out_prefix>_report.json`` and ``<out_prefix>_confusion.png``."""
    g, p = match_gold(entries, gold, out_prefix)
    m = strategy_metrics(g, p)
    m["split"] = split
    m["gold_samples"] = len(gold)
    if unparsed is None:  # entries read back from a file: unparsed answers are those naming no label
        unparsed = sum(parse_strategy(e.get("motivation")) is None for e in entries)
    m["unparsed_as_others"] = unparsed
    m["labels"] = list(STRATEGIES)
    atomic_write_json(out_prefix + "_report.json", m)
    plot_confusion(m["confusion"], out_prefix + "_confusion.png",
                   f"{split}: acc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} (n={m['n']})")
    return m


def format_table(reports: Sequence[dict]) -> str:
    head = f"{'split':<8}{'n':>7}{'accuracy':>10}{'macro-F1':>10}{'weighted-F1':>13}{'no label':>10}"
    rows = [head, "-" * len(head)]
    for m in reports:
        rows.append(f"{m['split']:<8}{m['n']:>7}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}"
                    f"{m['weighted_f1']:>13.4f}{m['unparsed_as_others']:>10}")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outputs", nargs="+", required=True, help="strategy_with_motivation*.json files")
    p.add_argument("--gold_file", nargs="+", required=True, help="dialogue file per output, same order")
    p.add_argument("--split", nargs="+", required=True, help="train/valid/test per output, same order")
    p.add_argument("--test_mode", default="last", choices=["last", "all"])
    args = p.parse_args(argv)
    if not len(args.outputs) == len(args.gold_file) == len(args.split):
        p.error("--outputs, --gold_file and --split need the same number of values")
    reports = []
    try:
        for out, gold_file, split in zip(args.outputs, args.gold_file, args.split):
            entries = load_json(out, "list of strategy entries")
            if not isinstance(entries, list):
                raise ValueError(f"{out}: expected a JSON list of {{id, strategy, motivation}} entries")
            reports.append(report_split(entries, gold_strategies(gold_file, split, args.test_mode),
                                        os.path.splitext(out)[0], split))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
