"""docs/RESULTS.md from the study's result files alone (numbers are never typed: regenerating gives the same
file), with the plot of predicted against gold strategy distributions beside it."""
from __future__ import annotations

import glob
import os
import statistics

from magic.common.io_utils import atomic_save_figure, atomic_write_text, load_json
from magic.esconv.dialogues import STRATEGIES
from magic.metric.significance import f1_per_class

S1_ROWS = [("s1/majority", "majority class"), ("s1/zero_shot", "base LLM, zero-shot (released prompt)"),
           ("s1/lora_label/eval", "LoRA, label only"), ("s1/lora_motivation/eval", "LoRA, ChatGPT motivations (MAGIC)")]
S1_SETS = {"test": "test (195, released)", "valid": "valid (evenly spaced subset)"}
S2_SETS = {"test": "Released test set (195 samples: the last supporter turn of each test dialogue)",
           "test_all": "Addition: every supporter turn of the test dialogues (enumerated as the valid split; "
                       "an evenly spaced subset where the profile says so) -- not the released test numbers"}
METRICS = [("Bleu_1", "B-1"), ("Bleu_2", "B-2"), ("Bleu_3", "B-3"), ("Bleu_4", "B-4"), ("METEOR", "METEOR"),
           ("ROUGE_L", "R-L"), ("CIDEr", "CIDEr"), ("Distinct-1", "D-1"), ("Distinct-2", "D-2")]
PAPER_NOTE = ("The paper's own numbers (ECML-PKDD 2024, LNAI 14945: the automatic metrics of MAGIC and its ablations "
              "on the ESConv test set) are not reproduced beside ours: no copy of the paper's tables was "
              "available to check them against, and numbers are never typed from memory. Whoever has the paper can "
              "add them to PAPER (src/magic/study/report.py) with their table and row; the report then prints them "
              "beside ours. What differs in any case: model size (SmolLM2-135M and a ~10M-parameter BART against "
              "Llama-2-7b and bart-base), pre-training (in-domain denoising on ~10k dialogues' utterances against "
              "bart-base's general-English pre-training), training length, and the subsets listed in docs/FIDELITY.md.")
# metric -> (value x100, "Table N, row") from the paper; empty until checked against the paper itself
PAPER: dict[str, tuple[float, str]] = {}


def load_results(results_root: str) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(results_root, "**", "*.json"), recursive=True)):
        rec = load_json(path, "study result file")
        if isinstance(rec, dict) and "cell" in rec and "result" in rec:
            out[rec["cell"]] = rec
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(c: dict | None) -> str:
    if not c:
        return "–"
    return f"{100 * c['value']:.1f} [{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}]"


def _p(p) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def table1(res: dict) -> list[str]:
    out = ["## Table 1 — strategy inference (stage 1)", ""]
    for key, title in S1_SETS.items():
        n = next((res[c]["result"]["sets"][key]["n"] for c, _ in S1_ROWS if c in res), None)
        out += [f"**{title}**, n = {n}: accuracy, macro-F1, weighted-F1 (%, 95 % bootstrap interval)", "",
                "| model | accuracy | macro-F1 | weighted-F1 |", "|---|---|---|---|"]
        for cell, name in S1_ROWS:
            if cell not in res:
                out.append(f"| {name} | not run yet | | |")
                continue
            r = res[cell]["result"]["sets"][key]
            ci = r.get("ci", {})
            label = f" ({res[cell]['result']['label']})" if cell == "s1/majority" else ""
            out.append(f"| {name}{label} | {_ci(ci.get('accuracy'))} | {_ci(ci.get('macro_f1'))} | "
                       f"{_ci(ci.get('weighted_f1'))} |")
        out.append("")
    if "s1/compare" in res:
        out += ["**Label-only against motivation-trained LoRA** (same prompts, steps and seed; difference "
                "motivation − label, paired bootstrap; McNemar's exact test on the samples where they disagree)", "",
                "| set | Δ accuracy | Δ macro-F1 | McNemar p | discordant (label right / motivation right) |",
                "|---|---|---|---|---|"]
        for key in S1_SETS:
            c = res["s1/compare"]["result"][key]
            out.append(f"| {key} | {_delta(c['accuracy'])} | {_delta(c['macro_f1'])} | {_p(c['mcnemar']['p'])} | "
                       f"{c['mcnemar']['a_only']} / {c['mcnemar']['b_only']} |")
        out.append("")
    rows = [(name, res[c]["result"]["sets"]["valid"]) for c, name in S1_ROWS if c in res]
    if rows:
        out += ["**Per-strategy F1 on the valid subset** (%)", "",
                "| model | " + " | ".join(STRATEGIES) + " |", "|---" * (len(STRATEGIES) + 1) + "|"]
        for name, r in rows:
            out.append(f"| {name} | " + " | ".join(_pct(float(f)) for f in f1_per_class(r["confusion"])) + " |")
        out.append("")
    return out


def _delta(d: dict) -> str:
    return f"{100 * d['delta']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}], p {_p(d['p'])}"


def plot_distribution(res: dict, path: str) -> str | None:
    """Predicted against gold strategy distribution on the valid subset (the preference bias of ESC models)."""
    rows = [(name, res[c]["result"]["sets"]["valid"]) for c, name in S1_ROWS if c in res and c != "s1/majority"]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / (len(rows) + 1)
    gold = rows[0][1]["gold_counts"]
    total = sum(gold)
    xs = range(len(STRATEGIES))
    ax.bar([x - 0.4 + width / 2 for x in xs], [g / total for g in gold], width, label="gold", color="black")
    for i, (name, r) in enumerate(rows, 1):
        ax.bar([x - 0.4 + width / 2 + i * width for x in xs], [p / total for p in r["pred_counts"]], width, label=name)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([s.replace(" or ", "/\n").replace(" and ", " &\n") for s in STRATEGIES], fontsize=8)
    ax.set_ylabel("share of samples")
    ax.set_title(f"Predicted vs gold strategy distribution (valid subset, n = {total})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path


def _s2_rows(res: dict, set_name: str) -> list[tuple[str, list[dict]]]:
    rows = []

    def cells(system, suffix):
        found = []
        for c, rec in res.items():
            parts = c.split("/")
            if len(parts) == 4 and parts[1] == system and parts[3] == f"{set_name}_{suffix}":
                found.append(rec["result"])
        return found

    rows.append(("MAGIC (inferred strategies)", cells("magic", "inferred")))
    rows.append(("MAGIC, gold strategies (oracle)", cells("magic", "gold")))
    rows.append(("w/o strategy memory", cells("no_memory", "inferred")))
    rows.append(("w/o auxiliary loss (λ = 0)", cells("no_aux", "inferred")))
    if set_name == "test":
        rows.append(("with motivation fused", cells("motivation", "inferred")))
    wrong = [rec["result"] for c, rec in res.items() if c.endswith(f"/{set_name}_wrong_inferred")]
    rows.append(("MAGIC under a forced wrong strategy", wrong))
    if "s2/frequent" in res:
        rows.append(("most frequent training response", [res["s2/frequent"]["result"]["sets"][set_name]]))
    return rows


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{scale * values[0]:.2f}"
    return f"{scale * statistics.mean(values):.2f} ± {scale * statistics.stdev(values):.2f}"


def table2(res: dict) -> list[str]:
    out = ["## Table 2 — response generation (stage 2)", "",
           "x100; mean ± std over seeds where a row has several (MAGIC and w/o memory); PPL = token-level "
           "perplexity of the reference responses; 'distinct' = distinct responses among the samples.", ""]
    for set_name, title in S2_SETS.items():
        out += [f"**{title}**", "",
                "| system | seeds | " + " | ".join(h for _, h in METRICS) + " | PPL | distinct |",
                "|---" * (len(METRICS) + 4) + "|"]
        if set_name == "test" and PAPER:
            out.append("| paper: MAGIC (" + "; ".join(sorted({w for _, w in PAPER.values()})) + ") | – | " +
                       " | ".join(f"{PAPER[m][0]:.2f}" if m in PAPER else "–" for m, _ in METRICS) + " | – | – |")
        for name, rows in _s2_rows(res, set_name):
            if not rows:
                out.append(f"| {name} | not run yet |" + " |" * (len(METRICS) + 2))
                continue
            n = rows[0]["n"]
            vals = [_mean_std([r["scores"].get(m) for r in rows if r["scores"].get(m) is not None]) for m, _ in METRICS]
            ppl = [r["ppl"] for r in rows if r.get("ppl")]
            distinct = "/".join(str(r["distinct_responses"]) for r in rows)
            out.append(f"| {name} | {len(rows)} | " + " | ".join(vals) +
                       f" | {_mean_std(ppl, 1.0) if ppl else '–'} | {distinct} of {n} |")
        out.append("")
    if "s2/compare" in res:
        out += ["**Each system against MAGIC** (seed 0 of each, the same samples; Δ = other − MAGIC, x100, "
                "95 % paired-bootstrap interval; p: paired bootstrap / approximate randomisation)", ""]
        comp = res["s2/compare"]["result"]
        metrics = [m for m, _ in METRICS if not m.startswith("Distinct")] + ["PPL"]
        out += ["| comparison | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for label, c in comp.items():
            system, set_name = label.split("@")
            cells = []
            for m in metrics:
                d = c.get("metrics", {}).get(m)
                if not d:
                    cells.append("–")
                    continue
                scale = 1.0 if m == "PPL" else 100.0
                cells.append(f"{scale * d['delta']:+.2f} [{scale * d['ci_low']:+.2f}, {scale * d['ci_high']:+.2f}] "
                             f"p {_p(d['p_boot'])}/{_p(d['p_ar'])}")
            out.append(f"| {system} vs MAGIC ({set_name}) | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _verdict(d: dict | None, higher_is_better: bool = True) -> str:
    if not d:
        return "not measured yet"
    lo, hi = d["ci_low"], d["ci_high"]
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        return "supported at this scale" if better else "contradicted at this scale"
    return "not separable at this scale (the interval contains 0)"


def claims(res: dict) -> list[str]:
    """One line per claim of the paper, read off the result files (interval of the difference, p-value)."""
    out = ["## The paper's claims at this scale", ""]
    c1 = res.get("s1/compare", {}).get("result", {}).get("valid")
    d1 = c1 and c1.get("macro_f1")
    out.append(f"- **Motivations improve strategy inference** (LoRA on ChatGPT motivations vs label only, valid "
               f"macro-F1): {_delta(d1) if d1 else '–'}; McNemar p {_p(c1['mcnemar']['p']) if c1 else '–'}: "
               f"{_verdict(d1)}.")
    comp = res.get("s2/compare", {}).get("result", {})
    # MAGIC's own seed-to-seed spread on the addition: a one-seed comparison smaller than it carries no claim
    seeds = [r["result"]["scores"].get("Bleu_2") for c, r in res.items()
             if c.startswith("s2/magic/seed") and c.endswith("/test_all_inferred")]
    seeds = [v for v in seeds if v is not None]
    spread = statistics.stdev(seeds) if len(seeds) > 1 else None
    for label, text, metric, sign in (("no_memory@test_all", "The strategy memory improves responses", "Bleu_2", -1),
                                      ("no_aux@test_all", "The auxiliary strategy loss improves responses", "Bleu_2", -1),
                                      ("wrong@test_all", "The generator follows the strategy it is given", "Bleu_2", -1),
                                      ("gold@test_all", "Better strategies give better responses (oracle)", "Bleu_2", 1),
                                      ("frequent@test_all", "MAGIC beats the most frequent response", "Bleu_2", -1)):
        d = comp.get(label, {}).get("metrics", {}).get(metric)
        shown = f"{100 * d['delta']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}], p {_p(d['p_boot'])}" \
            if d else "–"
        # the comparison is other - MAGIC: the claim holds when MAGIC is better, i.e. the delta is negative
        caveat = ""
        fixed = res.get("s2/frequent", {}).get("result", {}).get("sets", {}).get("test_all", {}).get("scores", {})
        if label.startswith("frequent@") and fixed.get(metric) is not None and seeds:
            if min(seeds) > fixed[metric]:  # a baseline without seeds: every MAGIC seed beats it, or not
                caveat = f" (every one of MAGIC's {len(seeds)} seeds beats it)"
        elif d and spread is not None and spread > abs(d["delta"]):
            caveat = (f" — but MAGIC's own BLEU-2 varies by ± {100 * spread:.2f} (std over {len(seeds)} seeds) on "
                      "this set, more than this seed-0 difference: it says more about seed 0 than about the system")
        out.append(f"- **{text}** (BLEU-2 on the test-dialogue addition, other − MAGIC): {shown}: "
                   f"{_verdict(d, higher_is_better=sign > 0)}{caveat}.")
    out += ["", "What it would take to settle each claim: the same cells with the paper's models "
            "(`--profile paper`, one GPU with Llama-2-7b and bart-base) and three or more seeds; at this scale an "
            "interval that contains 0 says the difference is smaller than what these models and sample sizes can "
            "resolve, not that there is none.", "", PAPER_NOTE, ""]
    return out


def sizing(res: dict) -> list[str]:
    """How the profile was sized, from the result files: the sizes it cut (never cells) and what each kind of
    cell cost per unit on the machine it ran on (the rates the next sizing starts from)."""
    out = ["## How this profile was sized", ""]
    sizes = res.get("prompts", {}).get("result", {})
    train = [r for c, r in res.items() if c.startswith("s2/") and c.endswith("/train")]
    if sizes:
        out.append(f"Sizes cut (every cell kept): LoRA on {sizes.get('train_pairs')} training prompts; stage 1 scored "
                   f"on {sizes.get('test')} test and {sizes.get('valid')} evenly spaced valid samples; the addition "
                   f"on {sizes.get('test_all')} evenly spaced test-dialogue samples"
                   + (f"; generators for at most {train[0]['settings']['epochs']} "
                      f"epoch{'s' if train[0]['settings']['epochs'] != 1 else ''} over all training samples "
                      f"(context {train[0]['settings']['max_length']} tokens)" if train else "") + ".")
    rates = []
    for c in ("s1/zero_shot", "s1/lora_label/eval", "s1/lora_motivation/eval"):
        if c in res:
            n = sum(v["n"] for v in res[c]["result"]["sets"].values())
            rates.append(f"{c}: {res[c]['wall_s'] / n:.2f} s per prompt ({n} prompts)")
    if "s1/best_on_addition" in res:
        n = res["s1/best_on_addition"]["result"]["sets"]["test_all"]["n"]
        rates.append(f"s1/best_on_addition: {res['s1/best_on_addition']['wall_s'] / n:.2f} s per prompt ({n})")
    for c in ("s1/lora_label/train", "s1/lora_motivation/train"):
        if c in res and sizes.get("train_pairs"):
            rates.append(f"{c}: {res[c]['wall_s'] / sizes['train_pairs']:.2f} s per training prompt (merge included)")
    if train:
        per_epoch = [r["wall_s"] / max(1, r["result"]["epochs_run"]) for r in train]
        rates.append(f"generator training: {statistics.mean(per_epoch) / 60:.1f} min per epoch "
                     f"(mean of {len(train)} runs, validation included)")
    for name in ("test", "test_all"):
        walls = [r["wall_s"] for c, r in res.items() if c.startswith("s2/") and r["settings"].get("set") == name]
        if walls:
            rates.append(f"evaluations on {name}: {statistics.mean(walls) / 60:.1f} min each ({len(walls)} runs)")
    if rates:
        out += ["", "Measured cost per unit (each cell on one thread, two cells at a time; the machine is in the "
                "table below):", ""] + [f"- {r}" for r in rates]
    return out + [""]


def elapsed(res: dict) -> list[str]:
    """First start to last finish of the cells finished on each day (cells ran two at a time, so this, not the
    sum of the cells' times, is how long the profile took)."""
    import datetime

    days: dict[str, list[tuple[float, float]]] = {}
    for rec in res.values():
        if not rec.get("finished"):
            continue
        end = datetime.datetime.strptime(rec["finished"], "%Y-%m-%d %H:%M:%S").timestamp()
        days.setdefault(rec["finished"][:10], []).append((end - rec["wall_s"], end))
    return [f"Elapsed on {day}: {(max(e for _, e in spans) - min(b for b, _ in spans)) / 60:.0f} min "
            f"({len(spans)} cells)." for day, spans in sorted(days.items())]


def wall_times(res: dict) -> list[str]:
    out = ["## Wall time per cell", "", "| cell | seconds | machine | finished |", "|---|---|---|---|"]
    total = 0.0
    for c, rec in res.items():
        m = rec.get("machine", {})
        where = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f", {m['gpu']}" if m.get("gpu") else "")
        out.append(f"| {c} | {rec['wall_s']:.0f} | {where} | {rec.get('finished', '')} |")
        total += rec["wall_s"]
    out += ["", f"Total: {total / 60:.1f} min of cell time over {len(res)} cells.", *elapsed(res), ""]
    return out


def write_report(results_root: str, output: str, profile: str) -> str:
    res = load_results(results_root)
    plot = plot_distribution(res, os.path.join(os.path.dirname(output), f"results_{profile}_strategy_distribution.png"))
    lines = [f"# Results — profile `{profile}`", "",
             f"Generated by `python scripts/reproduce.py --profile {profile} --report` from the result files in "
             f"`{os.path.relpath(results_root, os.path.dirname(os.path.abspath(output)))}` "
             "(never typed by hand; rerunning gives the same file). The command that produces them: "
             f"`bash scripts/reproduce.sh {profile}`.", ""]
    lines += table1(res)
    if plot:
        lines += [f"![predicted against gold strategy distribution]({os.path.basename(plot)})", ""]
    lines += table2(res)
    lines += claims(res)
    lines += sizing(res)
    lines += wall_times(res)
    atomic_write_text(output, "\n".join(lines))
    return output
