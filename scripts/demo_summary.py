"""The evidence at the end of scripts/demo.sh: did each stage learn? Printed and written to <work>/SUMMARY.md.

    python scripts/demo_summary.py summary --work demo_run [--llm smollm2]
    python scripts/demo_summary.py wrong-strategies data/test.json data/test_wrong_strategy.json
    python scripts/demo_summary.py name-strategies data/train.txt LLM_inference/motivations_4_LLaMA.json
    python scripts/demo_summary.py estimate --work demo_run --llm smollm2 --precision fp32 [--lora_batch 1 ...]

``summary`` reads the demo's artefacts under <work>/ (layout: scripts/demo.sh) and reports

* the strategy LLM on the test split: accuracy and macro-F1 of the base model (llm/base_model/), after LoRA
  (llm/strategy_with_motivation_test.json) and of the majority class of the training targets;
* the generator's test metrics (eval_result/) beside baselines from the same run: the most frequent training
  response for every sample (scored here), the gold (oracle) strategies (eval_gold/) and a forced wrong
  strategy (eval_wrong/); plus how many of the first 8 test responses are distinct;
* three test samples in full (last turns of the context, gold, inferred strategy and motivation, generated);
* two step-1 motivations, and the wall time of each step (timings.tsv).

``name-strategies`` makes every step-1 motivation name its sample's gold strategy, as ChatGPT's answers do
("The motivation of the supporter in choosing the strategy [X] is ..."): SmolLM2-135M mostly answers with a
generic sentence that names none, and a LoRA target without the label cannot teach the strategy. A motivation
that does not name the gold strategy is rewritten into that form around the model's own words (``with_label``), and the unchanged answers stay in ``<file>.raw.json``. Idempotent.

``estimate`` says the time before spending it: it measures the machine in about two seconds (``probe``: the
matrix-multiply rate of torch in the LLM's precision and in fp32, with the threads torch will use, so the
load of the moment is in the figure; the CPU's name and relevant flags; cores; load average), prices each
step from its work (``step_work``: counts of the run's samples, tokens and LoRA steps times a per-unit cost in
GFLOP-equivalents, calibrated from demo runs: ``COSTS``), prints the expected seconds of each step and of the
run, and writes them to ``<work>/estimate.json``; the summary shows them against the actual times.

``wrong-strategies`` writes a copy of a test.json whose every ``strategy`` is a fixed different one
(gold id + 4 mod 8), the input of the forced-wrong-strategy evaluation.

Exit codes: 0 written; 1 an artefact is missing or malformed (one ``demo_summary.py: error: ...`` line naming
it); 2 bad flag.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from collections import Counter

from magic.esconv.dialogues import STRATEGIES, canonical_strategy, load_samples, parse_strategy, wrong_strategy
from magic.common.artifacts import SPLITS
from magic.common.errors import run_main
from magic.common.io_utils import atomic_write_json, atomic_write_text, load_json
from magic.common.validate import positive_int

FIRST_N = 8  # "distinct responses among the first 8 test samples"

# -- the time estimate (``estimate``) ------------------------------------------------------------------------
PROBE_SHAPE = (256, 576, 1536)  # one SmolLM2-135M MLP projection over a 256-token block: (rows, in, out)
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Work per unit, in GFLOP-equivalents: seconds of a calibration run times its probe rate (GFLOP/s); a step's
# expected time is its work / this machine's probe rate, plus fixed seconds that do not scale with matmuls
# (loading, writing). Generation: per prompt (prefill, shared prefixes) + per prompt and new token (decode).
COSTS = {
    "gen_prompt": 24.0,        # GFLOP-eq per prompt (prefill)
    "gen_token": 1.0,          # GFLOP-eq per prompt and new token (decode at batch 32)
    "lora_cache": 18.0,        # GFLOP-eq per training example: the frozen layers, once
    "lora_example": 70.0,      # GFLOP-eq per example and epoch: forward + backward of the top 6 layers
    "lora_shared": 0.54,       # share of an example's tokens in the instruction all share: run once per batch
    "lora_step": 6.0,          # GFLOP-eq per optimiser step (LoRA update, bookkeeping)
    "generator_train": 6000.0, # GFLOP-eq (fp32) for step 7 (small BART, early stopping)
    "generator_eval": 1500.0,  # GFLOP-eq (fp32) for one step-8 evaluation
}
FIXED_S = {"load": 8.0, "merge": 12.0, "small": 3.0}
TINY_LLM = 0.02  # LLM=tiny: a random Llama of hidden size 64, about 2 % of SmolLM2's work


def probe(precision: str, gen_precision: str | None = None, seconds: float = 0.6) -> dict:
    """The machine as the steps will find it: torch's matmul rate (GFLOP/s, wall clock, torch's threads) in
    fp32, in ``precision`` (LoRA) and in ``gen_precision`` (generation; int8: torch's dynamically quantised
    linear layer, as ``--dtype int8`` runs it), the CPU's name and relevant flags, cores, threads and the
    1-minute load."""
    import time

    import torch
    from magic.study.cells import machine

    name = machine()["cpu"]
    flags = next((line.split(":", 1)[1].split() for line in _read_lines("/proc/cpuinfo")
                  if line.startswith("flags")), []) if os.path.exists("/proc/cpuinfo") else []
    rows, k, n = PROBE_SHAPE
    rates, per_cpu = {}, {}
    for prec in dict.fromkeys(("fp32", precision, gen_precision or precision)):
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        a = torch.randn(rows, k, dtype=dtype)
        linear = torch.nn.Linear(k, n, bias=False).to(dtype).eval()
        if prec == "int8":
            from magic.llm.local_model import quantize_int8
            linear = quantize_int8(torch.nn.Sequential(linear))
        with torch.no_grad():
            linear(a)  # warm-up
            count, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds or count < 3:
                linear(a)
                count += 1
        rates[prec] = 2 * rows * k * n * count / (time.perf_counter() - t0) / 1e9
        per_cpu[prec] = 2 * rows * k * n * count / max(time.process_time() - c0, 1e-6) / 1e9
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name or "unknown", "flags": [f for f in RELEVANT_FLAGS if f in flags], "cores": cores,
            "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2), "precision": precision,
            "gen_precision": gen_precision or precision,
            "gflops": {p: round(r, 2) for p, r in rates.items()},
            # per CPU second (all threads): what the work costs without the load; COSTS are calibrated with it
            "gflops_per_cpu_s": {p: round(r, 2) for p, r in per_cpu.items()}}


def generation_work(prompts: int, tokens: int) -> float:
    return prompts * (COSTS["gen_prompt"] + tokens * COSTS["gen_token"])


def step_work(plan: dict) -> list[tuple[str, float, str, float]]:
    """[(step name as demo.sh times it, GFLOP-equivalents, the precision they run in, fixed seconds)]. ``plan``:
    llm, data ("demo"/"real"), n_train, n_valid, n_test, tokens_motivation, tokens_base, tokens_infer,
    lora_epochs, lora_batch, max_train (LoRA pairs; None: all), precision (LoRA's), gen_precision (generation's;
    default precision). Generation work is priced at the probed rate of its precision (int8: the quantised
    linear layer's, which overstates the gain where attention or sampling, still float, take a large share)."""
    llm, prec, gen = plan["llm"], plan["precision"], plan.get("gen_precision") or plan["precision"]
    scale = TINY_LLM if llm == "tiny" else 1.0
    n_train, epochs, batch = plan["n_train"], plan["lora_epochs"], plan["lora_batch"]
    n_lora = min(n_train, plan.get("max_train") or n_train)
    steps = -(-n_lora // batch) * epochs
    per_example = COSTS["lora_example"] * (1 - COSTS["lora_shared"] + COSTS["lora_shared"] / batch)
    lora = n_lora * COSTS["lora_cache"] + n_lora * epochs * per_example + steps * COSTS["lora_step"]
    out = []
    if plan["data"] == "real":
        out.append(("1 motivations (released)", 0.0, "fp32", 2.0))
    else:
        out += [(f"1 motivations ({llm})", scale * generation_work(n_train, plan["tokens_motivation"]), gen,
                 FIXED_S["load"]),
                ("1b name the strategy in each motivation", 0.0, "fp32", 1.0)]
    n_all = n_train + plan["n_valid"] + plan["n_test"]
    out += [("2 prompts", 0.0, "fp32", 2.0),
            ("3a base-model strategies (test)", scale * generation_work(plan["n_test"], plan["tokens_base"]), gen,
             FIXED_S["load"]),
            ("3 LoRA fine-tuning", scale * lora, prec, FIXED_S["load"] + 4),
            ("4 merge LoRA", 0.0, "fp32", FIXED_S["merge"]),
            ("5 strategy inference", scale * generation_work(n_all, plan["tokens_infer"]), gen, FIXED_S["load"]),
            ("6 dataset", 0.0, "fp32", 3.0),
            ("small random BART", 0.0, "fp32", FIXED_S["small"] + 5),
            ("7 train MAGIC", COSTS["generator_train"], "fp32", FIXED_S["load"]),
            ("8 evaluation", COSTS["generator_eval"], "fp32", FIXED_S["load"]),
            ("8 evaluation, gold strategies", COSTS["generator_eval"], "fp32", FIXED_S["load"]),
            ("8 evaluation, wrong strategies", COSTS["generator_eval"], "fp32", FIXED_S["load"])]
    return out


# demo.sh runs these at once: they share the cores (their work adds up) and start up side by side
PARALLEL = ("8 evaluation", "8 evaluation, gold strategies", "8 evaluation, wrong strategies")


def estimate(plan: dict, machine: dict) -> dict:
    """{"machine", "plan", "steps": {name: expected seconds}, "total": seconds} from the probe's rates; the
    ``PARALLEL`` steps each expect the time of the group, which the total counts once."""
    steps, group_work, group_fixed = {}, 0.0, 0.0
    for name, work, prec, fixed in step_work(plan):
        rate = max(machine["gflops"].get(prec) or machine["gflops"]["fp32"], 1e-3)
        if name in PARALLEL:
            group_work, group_fixed = group_work + work / rate, max(group_fixed, fixed)
        else:
            steps[name] = round(fixed + work / rate, 1)
    total = sum(steps.values())
    if group_work or group_fixed:
        steps.update({name: round(group_fixed + group_work, 1) for name in PARALLEL})
        total += group_fixed + group_work
    return {"machine": machine, "plan": plan, "steps": steps, "total": round(total, 1)}


def describe_machine(m: dict) -> str:
    rates = ", ".join(f"{p} {r:.0f} GFLOP/s" for p, r in m["gflops"].items())
    return (f"{m['cpu']} ({' '.join(m['flags']) or 'no AVX2'}), {m['cores']} cores, torch {m['threads']} threads, "
            f"load {m['load']:.1f}; matmul {rates}; LLM precision {m['precision']} (LoRA), "
            f"{m.get('gen_precision') or m['precision']} (generation)")


def format_estimate(est: dict) -> str:
    width = max(len(n) for n in est["steps"])
    lines = [f"machine: {describe_machine(est['machine'])}", "expected time per step on it:"]
    lines += [f"  {name:<{width}}  {sec:7.0f} s" for name, sec in est["steps"].items()]
    lines.append(f"  {'total (the steps above)':<{width}}  {est['total']:7.0f} s  (about {est['total'] / 60:.0f} min)")
    return "\n".join(lines)


def count_samples(path: str) -> int:
    from magic.esconv.dialogues import load_samples
    split = os.path.basename(path).split(".")[0]
    return len(load_samples(path, split))


class SummaryError(RuntimeError):
    pass


def wrong_strategies(in_path: str, out_path: str) -> int:
    """Copy of the records of ``in_path`` with a strategy that is never the gold one; returns the count."""
    records = load_json(in_path, "JSON list of generator records")
    out = [{**r, "strategy": wrong_strategy(r["gold_strategy"])}
           for r in records]
    atomic_write_json(out_path, out, indent=4)
    return len(out)


_LEAD_RE = re.compile(r"^(?:motivation:\s*)?(?:the supporter'?s motivation\b[^.]*?\bis\s+)?", re.IGNORECASE)


def with_label(text: str, gold: str) -> str:
    """The released answer form around a motivation that names no (or another) strategy: "Motivation: The
    supporter's motivation is to X" -> "The motivation of the supporter in choosing the strategy [gold] is to X"
    (the form the prompt's example shows, so only the label is new to the model)."""
    text = text.strip()
    rest = _LEAD_RE.sub("", text, count=1).strip()
    if rest.lower().startswith("to "):
        return f"The motivation of the supporter in choosing the strategy [{gold}] is {rest}"
    return f"The motivation of the supporter in choosing the strategy [{gold}]: {rest or text}"


def name_strategies(train_file: str, motivations_file: str) -> tuple[int, int]:
    """Prefix ``[gold]`` to the motivations that do not name their gold strategy first (see the module doc);
    returns (prefixed, total). The first call keeps the model's answers in ``<file>.raw.json``."""
    samples = load_samples(train_file, "train")
    ids_file = motivations_file[: -len(".json")] + ".ids.json"
    ids = load_json(ids_file, "list of sample ids")
    if ids != [s.id for s in samples]:
        raise SummaryError(f"{ids_file}: the ids do not match the samples of {train_file}")
    raw_file = motivations_file[: -len(".json")] + ".raw.json"
    if not os.path.exists(raw_file):
        atomic_write_json(raw_file, load_json(motivations_file, "motivation list"))
    motivations = load_json(raw_file, "motivation list")
    if not isinstance(motivations, list) or len(motivations) != len(samples):
        raise SummaryError(f"{raw_file}: expected a list of {len(samples)} motivations")
    out, prefixed = [], 0
    for sample, text in zip(samples, motivations):
        gold = canonical_strategy(sample.strategy)
        if parse_strategy(text) != gold:
            text = with_label(text, gold)
            prefixed += 1
        out.append(text)
    atomic_write_json(motivations_file, out)
    return prefixed, len(out)


def _latest(pattern: str) -> str:
    paths = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not paths:
        raise SummaryError(f"no file matches {pattern}; did the step that writes it run?")
    return paths[-1]


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def strategy_rows(work: str) -> list[dict]:
    """[{name, accuracy, macro_f1, n}] for the base model, the LoRA model and the majority class."""
    from magic.llm.report import match_gold, strategy_metrics

    gold = {s.id: s.strategy_id for s in load_samples(os.path.join(work, "data", "test.txt"), "test")}
    train_targets = Counter(s.strategy_id for s in load_samples(os.path.join(work, "data", "train.txt"), "train"))
    rows = []
    for name, path in (("base model (before LoRA)", "llm/base_model/strategy_with_motivation_test.json"),
                       ("after LoRA", "llm/strategy_with_motivation_test.json")):
        full = os.path.join(work, path)
        g, p = match_gold(load_json(full, "strategy_with_motivation list"), gold, full)
        m = strategy_metrics(g, p)
        rows.append({"name": name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"],
                     "predicted": Counter(STRATEGIES[k] for k in p).most_common(2)})
    majority = train_targets.most_common(1)[0][0]
    g = list(gold.values())
    m = strategy_metrics(g, [majority] * len(g))
    rows.append({"name": f"majority class ({STRATEGIES[majority]})", "accuracy": m["accuracy"],
                 "macro_f1": m["macro_f1"], "n": m["n"], "predicted": [(STRATEGIES[majority], len(g))]})
    return rows


def generator_rows(work: str) -> tuple[list[dict], list[str], list[str]]:
    """(rows, references, MAGIC's hypotheses). Each row: name, scores (fractions), distinct among first 8."""
    from magic.metric import java_available

    from magic.metric.protocol import compute_scores

    refs = _read_lines(os.path.join(work, "eval_result", "response_lables.txt"))
    rows, magic_hyps = [], None
    systems = (("MAGIC (inferred strategies)", "eval_result"), ("MAGIC, gold strategies (oracle)", "eval_gold"),
               ("MAGIC, forced wrong strategy", "eval_wrong"))
    for name, folder in systems:
        scores_path = _latest(os.path.join(work, folder, "*", "diversity_*.txt.scores.json"))
        hyps = _read_lines(scores_path[: -len(".scores.json")])
        if len(hyps) != len(refs):
            raise SummaryError(f"{scores_path}: {len(hyps)} responses for {len(refs)} references")
        magic_hyps = magic_hyps or hyps
        rows.append({"name": name, "scores": load_json(scores_path, "scores record")["scores"],
                     "distinct_first": len(set(hyps[:FIRST_N]))})
    train = load_json(os.path.join(work, "data", "train.json"), "JSON list of generator records")
    frequent = Counter(r["response"] for r in train).most_common(1)[0][0]
    scores = compute_scores(refs, [frequent] * len(refs), no_meteor=not java_available())
    rows.append({"name": f"frequent training response (\"{frequent}\")", "scores": scores,
                 "distinct_first": 1})
    return rows, refs, magic_hyps


def timing_rows(work: str) -> list[tuple[str, int]]:
    """(step, seconds) from timings.tsv, the latest value of each step, in first-seen order."""
    path = os.path.join(work, "timings.tsv")
    if not os.path.exists(path):
        return []
    seen: dict[str, int] = {}
    for k, line in enumerate(_read_lines(path)):
        name, _, sec = line.partition("\t")
        try:
            seen[name] = int(sec)
        except ValueError:
            raise SummaryError(f"{path}: line {k + 1}: expected 'step<TAB>seconds', got {line!r}") from None
    return list(seen.items())


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def build_summary(work: str, llm: str = "smollm2") -> tuple[str, dict]:
    """(markdown text, machine-readable checks)."""
    srows = strategy_rows(work)
    grows, refs, hyps = generator_rows(work)
    test = load_json(os.path.join(work, "data", "test.json"), "JSON list of generator records")
    motivations = load_json(os.path.join(work, "llm", "motivations_4_LLaMA.json"), "motivation list")
    out = [f"# MAGIC demo summary ({work}/, strategy LLM: {llm})", ""]

    out += ["## Strategy LLM on the test split", "",
            "| model | accuracy % | macro-F1 % | n | most frequent predictions |", "|---|---|---|---|---|"]
    for r in srows:
        pred = ", ".join(f"{s} x{c}" for s, c in r["predicted"])
        out.append(f"| {r['name']} | {_pct(r['accuracy'])} | {_pct(r['macro_f1'])} | {r['n']} | {pred} |")

    metrics = ["Bleu_1", "Bleu_2", "ROUGE_L", "METEOR", "Distinct-1", "Distinct-2"]
    metrics = [m for m in metrics if m in grows[0]["scores"]]
    out += ["", "## Generator on the test split (x100)", "",
            "| system | " + " | ".join(metrics) + f" | distinct of first {FIRST_N} |",
            "|---" * (len(metrics) + 2) + "|"]
    for r in grows:
        out.append(f"| {r['name']} | " + " | ".join(_pct(r["scores"][m]) for m in metrics)
                   + f" | {r['distinct_first']} |")

    out += ["", "## Three test samples", ""]
    for i in range(min(3, len(test))):
        rec = test[i]
        out.append(f"### {rec['id']}")
        out.append("Context (last turns):")
        for turn in rec["context"][-4:]:
            out.append(f"> {turn}")
        out.append("")
        out.append(f"- gold: [{rec['gold_strategy']}] {rec['response']}")
        out.append(f"- inferred: [{rec['strategy']}] motivation: {rec.get('motivation') or '(none)'}")
        out.append(f"- generated: {hyps[i]}")
        out.append("")

    out += ["## Two step-1 motivations (written by the base model)", ""]
    raw_path = os.path.join(work, "llm", "motivations_4_LLaMA.raw.json")
    if os.path.exists(raw_path):
        raw = load_json(raw_path, "motivation list")
        train = load_samples(os.path.join(work, "data", "train.txt"), "train")
        named = sum(parse_strategy(m) == canonical_strategy(s.strategy) for s, m in zip(train, raw))
        out += [f"The model named the gold strategy in {named} of {len(raw)} answers; the others got "
                "the label in the released answer form (scripts/demo_summary.py name-strategies), so the LoRA targets "
                "carry it "
                "as ChatGPT's motivations do.", ""]
    out += [f"- {m}" for m in motivations[:2]]

    times = timing_rows(work)
    est_path = os.path.join(work, "estimate.json")
    est = load_json(est_path, "estimate record") if os.path.exists(est_path) else None
    if est:
        out += ["", "## Machine", "", f"- at the start: {describe_machine(est['machine'])}",
                f"- load average at the end: {os.getloadavg()[0]:.1f} (1 min)"]
    if times:
        expected = est["steps"] if est else {}
        out += ["", "## Wall time per step (seconds): expected at the start, actual", "",
                "| step | expected s | actual s |", "|---|---|---|"]
        out += [f"| {name} | {expected[name]:.0f} | {sec} |" if name in expected else f"| {name} | | {sec} |"
                for name, sec in times]
        if est:
            out.append(f"| expected total (steps after the estimate) | {est['total']:.0f} | |")

    lora, base, majority = srows[1]["accuracy"], srows[0]["accuracy"], srows[2]["accuracy"]
    magic_b2, freq_b2 = grows[0]["scores"]["Bleu_2"], grows[-1]["scores"]["Bleu_2"]
    checks = {
        "LoRA accuracy > base model": lora > base,
        "LoRA accuracy > majority class": lora > majority,
        "MAGIC BLEU-2 > frequent-response baseline": magic_b2 > freq_b2,
        f">= 6 distinct responses among the first {FIRST_N}": grows[0]["distinct_first"] >= 6,
    }
    out += ["", "## Checks", ""] + [f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items()]
    return "\n".join(out) + "\n", checks


def run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print and write <work>/SUMMARY.md")
    s.add_argument("--work", default="demo_run")
    s.add_argument("--llm", default="smollm2", help="the strategy LLM's name, for the title")
    n = sub.add_parser("name-strategies", help="make every motivation name its gold strategy")
    n.add_argument("train_file")
    n.add_argument("motivations_file")
    e = sub.add_parser("estimate", help="measure the machine, print and write the expected time of each step")
    e.add_argument("--work", default="demo_run")
    e.add_argument("--llm", default="smollm2", choices=["smollm2", "tiny"])
    e.add_argument("--data", default="demo", choices=["demo", "real"])
    e.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the LLM's (LoRA) precision")
    e.add_argument("--gen_precision", default=None, choices=["fp32", "bf16", "int8"],
                   help="the generation steps' precision (default: --precision)")
    e.add_argument("--max_train", type=positive_int, default=None, help="LLM_TRAIN: LoRA pairs (default all)")
    for flag in ("tokens_motivation", "tokens_base", "tokens_infer", "lora_epochs", "lora_batch"):
        e.add_argument(f"--{flag}", type=positive_int, required=True)
    w = sub.add_parser("wrong-strategies", help="test.json -> a copy with a forced wrong strategy")
    w.add_argument("input")
    w.add_argument("output")
    args = p.parse_args(argv)
    if args.cmd == "name-strategies":
        k, total = name_strategies(args.train_file, args.motivations_file)
        print(f"{total - k} of {total} motivations named their gold strategy; the label written into {k} "
              f"(the model's answers: {args.motivations_file[:-5]}.raw.json)")
        return 0
    if args.cmd == "estimate":
        data = os.path.join(args.work, "data")
        n = {split: count_samples(os.path.join(data, f"{split}.txt")) for split in SPLITS}
        plan = {"llm": args.llm, "data": args.data, "precision": args.precision,
                "gen_precision": args.gen_precision or args.precision, "n_train": n["train"],
                "n_valid": n["valid"], "n_test": n["test"], "max_train": args.max_train,
                **{k: getattr(args, k) for k in ("tokens_motivation", "tokens_base", "tokens_infer", "lora_epochs",
                                                 "lora_batch")}}
        est = estimate(plan, probe(args.precision, plan["gen_precision"]))
        atomic_write_json(os.path.join(args.work, "estimate.json"), est, indent=2)
        print(format_estimate(est))
        return 0
    if args.cmd == "wrong-strategies":
        n = wrong_strategies(args.input, args.output)
        print(f"{n} records with a wrong strategy -> {args.output}")
        return 0
    text, _ = build_summary(args.work, args.llm)
    atomic_write_text(os.path.join(args.work, "SUMMARY.md"), text)
    print(text)
    return 0


def main(argv=None) -> int:
    """run() for the command line: a missing or malformed artefact (KeyError: a field it lacks) is one line
    and exit code 1 (src/magic/common/errors.py)."""
    return run_main("demo_summary.py", lambda: run(argv), code=1, extra=(SummaryError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
