"""docs/RESULTS.md from the study's result files alone (numbers are never typed: regenerating gives the same
file), with the plot of predicted against gold strategy distributions beside it."""
from __future__ import annotations

import os
import statistics

from magic.common.errors import UserError
from magic.common.io_utils import atomic_save_figure, atomic_write_text
from magic.esconv.dialogues import STRATEGIES
from magic.metric.significance import ALPHA, f1_per_class
from magic.study.anchors import anchor_lines
from magic.study.cells import Study

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


def load_results(study: Study) -> tuple[dict[str, dict], list[str]]:
    """({cell: record} of the study's cells whose result file carries the cell's key, [cells whose file was made
    with other settings or another profile]); a damaged file is refused (cells.load_result), never reported."""
    res, foreign = {}, []
    for cell in study.cells.values():
        if os.path.exists(study.result_path(cell)):
            rec = study.result(cell)
            if rec is None:
                foreign.append(cell.name)
            else:
                res[cell.name] = rec
    return res, foreign


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
        metrics = [m for m, _ in METRICS if not m.startswith("Distinct")] + ["PPL"]
        out += ["**Each system against MAGIC** (seed 0 of each, the same samples): Δ = other − MAGIC (x100; PPL as it "
                f"is, lower is better); **bold** where both the paired bootstrap and approximate randomisation give "
                f"p < {ALPHA:g}, the rest plain. Intervals and p-values: `results/<profile>/s2/compare.json`, or "
                "`python compare_results.py A B` on two result files.", "",
                "| comparison | " + " | ".join(h for m, h in METRICS if m in metrics) + " | PPL |",
                "|---" * (len(metrics) + 1) + "|"]
        for label, c in res["s2/compare"]["result"].items():
            system, set_name = label.split("@")
            cells = []
            for m in metrics:
                d = c.get("metrics", {}).get(m)
                text = "–" if not d else f"{(1.0 if m == 'PPL' else 100.0) * d['delta']:+.2f}"
                cells.append(f"**{text}**" if d and _significant(d) else text)
            out.append(f"| {system} vs MAGIC ({set_name}) | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _significant(d: dict) -> bool:
    return d["p_boot"] < ALPHA and d["p_ar"] < ALPHA


MIN_DISTINCT = 0.5  # a generator is degenerate when fewer than half of its samples get a distinct response
RULE = ("**Verdict rule.** A claim gets a verdict only when (1) every system it compares is non-degenerate: a "
        "strategy classifier beats the majority class's accuracy and predicts more than one strategy; a generator "
        f"gives distinct responses to at least {MIN_DISTINCT:.0%} of the samples and beats the most frequent "
        "training response on BLEU-2, on every seed; and (2) the comparison accounts for every seed of both "
        "systems: the seed-0 paired test is significant (bootstrap interval excludes 0, both p < "
        f"{ALPHA:g}) and every seed of the better system beats every seed of the other. Otherwise the claim is "
        "*not testable at this scale*, and the report says why.")
# (label in s2/compare, claim, cells of the other system: "<system>/seed*/<set>_<source>", sign: + when other > MAGIC
#  supports the claim)
S2_CLAIMS = (("no_memory@test_all", "The strategy memory improves responses", "no_memory", "test_all_inferred", -1),
             ("no_aux@test_all", "The auxiliary strategy loss improves responses", "no_aux", "test_all_inferred", -1),
             ("wrong@test_all", "The generator follows the strategy it is given", "magic", "test_all_wrong_inferred", -1),
             ("gold@test_all", "Better strategies give better responses (oracle)", "magic", "test_all_gold", 1))
CLAIM_METRIC = "Bleu_2"


def _seed_cells(res: dict, system: str, suffix: str) -> dict[str, dict]:
    """{seed: result} of the evaluation cells s2/<system>/seed<k>/<suffix>."""
    out = {}
    for c, rec in res.items():
        parts = c.split("/")
        if len(parts) == 4 and parts[1] == system and parts[3] == suffix:
            out[parts[2][4:]] = rec["result"]
    return out


def _degenerate(results: dict[str, dict], frequent: float | None) -> list[str]:
    """Why the seeds of one generator are degenerate ([] when they are not)."""
    why = []
    few = {k: r for k, r in results.items() if r["distinct_responses"] < MIN_DISTINCT * r["n"]}
    if few:
        n = next(iter(results.values()))["n"]
        why.append("/".join(str(r["distinct_responses"]) for r in results.values()) + f" distinct of {n}")
    if frequent is not None and any(r["scores"].get(CLAIM_METRIC, 0) <= frequent for r in results.values()):
        why.append("not above the most frequent response")
    return why


def _fmt_delta(d: dict | None, scale: float = 100.0) -> str:
    if not d:
        return "–"
    return (f"{scale * d['delta']:+.2f} [{scale * d['ci_low']:+.2f}, {scale * d['ci_high']:+.2f}], "
            f"p {_p(d.get('p_boot', d.get('p')))}")


def _stage1_claim(res: dict) -> tuple[str, str]:
    """(line, verdict) of "motivations improve strategy inference" (valid macro-F1; test is checked too)."""
    comp = res.get("s1/compare", {}).get("result", {})
    d = comp.get("valid", {}).get("macro_f1")
    head = (f"- **Motivations improve strategy inference** (LoRA on ChatGPT motivations − label only, valid "
            f"macro-F1, x100): {_fmt_delta(d)}")
    cells = ("s1/majority", "s1/lora_label/eval", "s1/lora_motivation/eval")
    if not d or not all(c in res for c in cells):
        return head + ": not measured yet.", "not measured"
    sets = {c: res[c]["result"]["sets"] for c in cells}
    why = []
    for name in ("valid", "test"):
        base = sets["s1/majority"][name]["accuracy"]
        weak = [c.split("/")[1] for c in cells[1:] if sets[c][name]["accuracy"] <= base
                or len(set(sets[c][name]["pred"])) < 2]
        if weak:
            why.append(f"on {name}, {' and '.join(weak)} do not beat the majority class ({100 * base:.1f} % accuracy)")
    seeds = {res[c]["result"]["seed"] for c in ("s1/lora_label/train", "s1/lora_motivation/train") if c in res}
    valid_ok = not any(w.startswith("on valid") for w in why)
    if not valid_ok:
        verdict = "not testable at this scale"
    elif d["ci_low"] > 0 and d.get("p_ar", 0) < ALPHA:
        verdict = "supported at this scale"
    elif d["ci_high"] < 0 and d.get("p_ar", 0) < ALPHA:
        verdict = "contradicted at this scale"
    else:
        verdict = "not separable at this scale"
    note = f" ({'; '.join(why)}: test gives no verdict)" if valid_ok and why else (f" ({'; '.join(why)})" if why else "")
    return (head + f"; one seed of each (seed {', '.join(map(str, sorted(seeds)))}, all the profile trains): "
            f"**{verdict}**{note}."), verdict


def claims(res: dict) -> list[str]:
    """The paper's claims with a verdict only where the rule (RULE) allows one; the reason a claim is not
    testable is said once for the claims it applies to."""
    out = ["## The paper's claims at this scale", "", RULE, ""]
    line, _ = _stage1_claim(res)
    out.append(line)
    comp = res.get("s2/compare", {}).get("result", {})
    frequent = res.get("s2/frequent", {}).get("result", {}).get("sets", {}).get("test_all", {}).get("scores", {})
    base = frequent.get(CLAIM_METRIC)
    magic = _seed_cells(res, "magic", "test_all_inferred")
    shared = _degenerate(magic, base)
    degenerate, one_seed = {}, []
    for label, text, system, suffix, sign in S2_CLAIMS:
        other = _seed_cells(res, system, suffix)
        d = comp.get(label, {}).get("metrics", {}).get(CLAIM_METRIC)
        if not other or not magic or not d:
            out.append(f"- **{text}**: not measured yet.")
            continue
        tags = []
        own = _degenerate(other, base) if suffix == "test_all_inferred" else []
        if own:
            degenerate[system] = own
        if shared or own:
            tags.append("degenerate generators")
        if set(other) != set(magic):
            tags.append(f"seed {', '.join(sorted(other))} only")
            one_seed.append(text)
        if tags:
            verdict = "not testable at this scale"
        else:
            a = [r["scores"][CLAIM_METRIC] for r in magic.values()]
            b = [r["scores"][CLAIM_METRIC] for r in other.values()]
            apart = min(b) > max(a) or max(b) < min(a)
            if not (_significant(d) and apart and (d["ci_low"] > 0 or d["ci_high"] < 0)):
                verdict = "not separable at this scale"
            else:
                verdict = "supported at this scale" if (d["delta"] > 0) == (sign > 0) else "contradicted at this scale"
        out.append(f"- **{text}** (BLEU-2 on the test-dialogue addition, other − MAGIC, seed 0, x100: "
                   f"{_fmt_delta(d)}): **{verdict}**" + (f" ({'; '.join(tags)})" if tags else "") + ".")
    why = []
    if shared or degenerate:
        counts = "; ".join(f"{s}: {', '.join(w)}" for s, w in {"MAGIC": shared, **degenerate}.items() if w)
        why.append(f"*Degenerate generators* ({counts}, on the addition's samples; the rule asks for "
                   f"{MIN_DISTINCT:.0%} distinct): they answer almost every context with one of a handful of "
                   "responses, so a difference between two of them measures which stock phrases a seed settled on, "
                   "not the strategy memory, the auxiliary loss or the strategy given.")
    if one_seed and len(magic) > 1:
        spread = statistics.stdev(r["scores"][CLAIM_METRIC] for r in magic.values())
        why.append(f"*One seed* ({len(one_seed)} claims): the other system was evaluated with seed 0 only, so the "
                   f"comparison is MAGIC's seed 0 against it, while MAGIC's own BLEU-2 varies by ± {100 * spread:.2f} "
                   f"(std over its {len(magic)} seeds).")
    if why:
        out += ["", "Why not testable at this scale: " + " ".join(why)]
    if base is not None and magic:
        beats = all(r["scores"][CLAIM_METRIC] > base for r in magic.values())
        out += ["", f"Sanity check: {'every' if beats else 'not every'} one of MAGIC's {len(magic)} seeds beats the most "
                f"frequent training response on BLEU-2 ({100 * base:.2f}) on the addition."]
    out += ["", "What it would take to settle each claim: the same cells with the paper's models "
            "(`--profile paper`, one GPU with Llama-2-7b and bart-base) and every system with three or more seeds.",
            "", PAPER_NOTE, ""]
    return out


def _llm_name(res: dict) -> str:
    model = res.get("llm", {}).get("result", {}).get("model", "the LLM")
    return {"smollm2": "SmolLM2-135M-Instruct", "tiny": "a tiny random Llama", "local": "the local LLM"}.get(model, model)


def _bart_name(res: dict) -> str:
    r = res.get("bart", {}).get("result", {})
    if "d_model" not in r:
        return "BART"
    pre = res.get("pretrain", {}).get("result", {}).get("pretrained")
    return (f"a small BART: d_model {r['d_model']}, {r['layers']}+{r['layers']} layers"
            + (", denoising pre-trained on the training utterances only" if pre else ", random init"))


def headline(res: dict) -> list[str]:
    """Three sentences read off the result files: stage 1, stage 2, and what the profile can and cannot show."""
    sets = {c: res[c]["result"]["sets"] for c in ("s1/majority", "s1/lora_label/eval", "s1/lora_motivation/eval")
            if c in res}
    sentences = []
    if len(sets) == 3:
        acc = {c: 100 * v["test"]["accuracy"] for c, v in sets.items()}
        d = res.get("s1/compare", {}).get("result", {}).get("valid", {}).get("macro_f1")
        below = acc["s1/lora_motivation/eval"] <= acc["s1/majority"]
        sentences.append(
            f"Stage 1 ({_llm_name(res)} with LoRA): training on the ChatGPT motivations instead of the label alone "
            + (f"changes valid macro-F1 by {100 * d['delta']:+.1f} points [{100 * d['ci_low']:+.1f}, "
               f"{100 * d['ci_high']:+.1f}], " if d else "")
            + f"but on the {sets['s1/majority']['test']['n']} released test samples the motivation LoRA's accuracy ({acc['s1/lora_motivation/eval']:.1f} %) "
            + ("is not above" if below else "is above")
            + f" the majority class ({acc['s1/majority']:.1f} %).")
    magic = _seed_cells(res, "magic", "test_inferred")
    if magic:
        n = next(iter(magic.values()))["n"]
        counts = sorted(r["distinct_responses"] for r in magic.values())
        degenerate = counts[0] < MIN_DISTINCT * n
        sentences.append(
            f"Stage 2 ({_bart_name(res)}): MAGIC's {len(magic)} seeds give {counts[0]}–{counts[-1]} distinct "
            f"responses to the {n} test samples, " + ("so the generators are degenerate and none of the paper's "
                                                      "generation claims is testable at this scale."
                                                      if degenerate else "enough for the claims to be tested."))
    sentences.append("These runs check that every cell of the pipeline works end to end on the real data and give "
                     "the measured cost of each step; they are not evidence for or against the paper, which needs "
                     "`--profile paper`.")
    return [" ".join(sentences), ""]


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


def write_report(study: Study, output: str, profile: str, log=print) -> str:
    """RESULTS.md for ``profile`` from the result files of ``study`` (their keys checked). Refused, with nothing
    written, when the results folder does not exist or holds none of the profile's cells."""
    root = study.results_root
    if not os.path.isdir(root):
        raise UserError(f"{root}: no such results folder; nothing written (check --results)")
    res, foreign = load_results(study)
    if not res:
        raise UserError(f"{root}: holds none of profile {profile}'s result files"
                        + (f" ({len(foreign)} made with other settings or another profile)" if foreign else "")
                        + "; nothing written (check --results and --profile)")
    if foreign:
        log(f"note: {len(foreign)} result files in {root} were made with other settings or another profile and are "
            f"not reported: {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}")
    plot = plot_distribution(res, os.path.join(os.path.dirname(output), f"results_{profile}_strategy_distribution.png"))
    lines = [f"# Results — profile `{profile}`", ""] + headline(res) + [
             f"Generated by `python scripts/reproduce.py --profile {profile} --report` from the result files in "
             f"`{os.path.relpath(root, os.path.dirname(os.path.abspath(output)))}` "
             "(never typed by hand; rerunning gives the same file). The command that produces them: "
             f"`bash scripts/reproduce.sh {profile}`. Wall times and sizing: the appendix.", ""]
    lines += table1(res)
    if plot:
        lines += [f"![predicted against gold strategy distribution]({os.path.basename(plot)})", ""]
    lines += table2(res)
    lines += claims(res)
    lines += ["## Published numbers to aim at", "",
              "The nearest published figures (from `src/magic/study/anchors.py`, the one place that holds them, "
              "each with where it was read and what differs from this setting):", ""] + anchor_lines() + [""]
    lines += ["## Appendix", ""]
    lines += ["#" + line if line.startswith("## ") else line for line in sizing(res) + wall_times(res)]
    atomic_write_text(output, "\n".join(lines))
    return output
