"""Table 2 -- response generation (stage 2): MAGIC (strategy memory + auxiliary loss) with inferred and gold
(oracle) strategies, w/o strategy memory, w/o auxiliary loss, with the motivation fused, and two baselines
(the most frequent training response; MAGIC under a forced wrong strategy), on the released 195 test samples
and on the addition (every supporter turn of the test dialogues, enumerated as the valid split is).

All systems train on the same records with the same budget (epochs, batch, learning rate, early stopping on
the same validation subset); MAGIC and w/o memory with several seeds. Each evaluation is step 8 itself
(test_evaluation.py) plus the token-level perplexity of the references, per sample.
"""
from __future__ import annotations

import glob
import math
import os
import shutil
import threading
from collections import Counter

from magic.common.artifacts import latest_best_checkpoint, parse_checkpoint_dir, run_dirs
from magic.common.io_utils import atomic_write_json, load_json
from magic.esconv.dialogues import canonical_strategy, wrong_strategy
from magic.generator.records import sample_record
from magic.study import stage1
from magic.study.data import StudyError, evenly_spaced, python, run_logged, split_samples
from magic.study.profiles import Profile

# system -> main.py flags (the ablations of the paper's Table 3, as the released flags spell them)
SYSTEMS = {"magic": [], "no_memory": ["--no_memory"], "no_aux": ["--l_strategy", "0"],
           "motivation": ["--use_motivation"]}
TEST_SETS = ("test", "test_all")


def seeds_of(system: str, profile: Profile) -> tuple[int, ...]:
    return profile.seeds if system in ("magic", "no_memory") else profile.seeds[:1]


def eval_plan(system: str, seed: int, profile: Profile) -> list[tuple[str, str]]:
    """(record set, strategy source) pairs evaluated for one trained model."""
    sets = [("test", "inferred")] if system == "motivation" else [(s, "inferred") for s in TEST_SETS]
    if system == "magic" and seed == profile.seeds[0]:
        sets += [(s, "gold") for s in TEST_SETS] + [(f"{s}_wrong", "inferred") for s in TEST_SETS]
    return sets


# ------------------------------------------------------------------------------------------------ cells
def build_records(ctx, profile: Profile) -> dict:
    """Generator records for training (step 6's record builder): the training samples with the gold strategy and
    the released ChatGPT motivation, the validation subset with the gold strategy. Needs nothing of stage 1, so
    the generators train while the strategy LLM is still being evaluated."""
    data = os.path.join(ctx.dep_work("data"), "data")
    train = split_samples(data, "train")
    chatgpt = load_json(os.path.join(data, "motivations_4_LLaMA.json"), "released motivations")
    by_id = {s.id: m for s, m in zip(train, chatgpt)}
    out = {"train": [dict(sample_record(s), motivation=by_id[s.id]) for s in evenly_spaced(train, profile.train_samples)]}
    valid = {s.id: s for s in split_samples(data, "valid")}
    out["valid"] = [sample_record(valid[i]) for i in _valid_ids(ctx, profile)]
    for name, recs in out.items():
        atomic_write_json(os.path.join(ctx.work, f"{name}.json"), recs, indent=1)
    return {"sizes": {n: len(v) for n, v in out.items()}}


def _valid_ids(ctx, profile: Profile) -> list[str]:
    """The generator's validation subset: evenly spaced over the stage-1 valid prompts."""
    ids = load_json(os.path.join(ctx.dep_work("prompts"), "eval_valid.ids.json"), "ids")
    return evenly_spaced(ids, profile.gen_valid_subset)


def build_inferred_records(ctx, profile: Profile, addition_cell: str, motivation_cell: str) -> dict:
    """Generator records that need stage 1: test and addition with the best stage-1 model's strategies (gold
    kept beside them for the oracle), forced wrong strategies for the baseline, and the motivations of the
    motivation-trained LoRA where it answered (test; and the validation subset, for the motivation-fused system's
    early stopping: ``valid_motivation.json``)."""
    data = os.path.join(ctx.dep_work("data"), "data")
    answers = stage1.load_answers(ctx, addition_cell)                 # best model: test, test_all, valid
    motivations = stage1.load_answers(ctx, motivation_cell)           # motivation LoRA: test, valid
    out = {}
    valid = {s.id: s for s in split_samples(data, "valid")}
    out["valid_motivation"] = [dict(sample_record(valid[i]),
                                    motivation=motivations["valid"].get(i, {}).get("motivation", ""))
                               for i in _valid_ids(ctx, profile)]
    for name in TEST_SETS:
        ids = load_json(os.path.join(ctx.dep_work("prompts"), f"eval_{name}.ids.json"), "ids")
        samples = {s.id: s for s in split_samples(data, name)}
        recs = []
        for i in ids:
            r = sample_record(samples[i])
            r["strategy"] = canonical_strategy(answers[name][i]["strategy"])
            r["strategy_source"] = "inferred"
            r["motivation"] = motivations.get(name, {}).get(i, {}).get("motivation", "")
            recs.append(r)
        out[name] = recs
        out[f"{name}_wrong"] = [dict(r, strategy=wrong_strategy(r["gold_strategy"]), strategy_source="forced")
                                for r in recs]
    for name, recs in out.items():
        atomic_write_json(os.path.join(ctx.work, f"{name}.json"), recs, indent=1)
    agree = {n: sum(r["strategy"] == r["gold_strategy"] for r in out[n]) / len(out[n]) for n in TEST_SETS}
    return {"sizes": {n: len(v) for n, v in out.items()}, "inferred_equals_gold": agree}


def small_bart(ctx, profile: Profile) -> dict:
    """A random BART of the profile's size with a byte-level BPE trained on the training records, or the local
    bart-base folder (profile.extra['bart_path'])."""
    out = os.path.join(ctx.work, "bart")
    if profile.bart != "small":
        os.symlink(os.path.abspath(profile.extra["bart_path"]), out)
        return {"bart": profile.bart}
    run_logged([python(), "src/magic/testing/make_small_bart.py", "--output_dir", out, "--train_file",
                os.path.join(ctx.dep_work("records"), "train.json"), "--vocab_size", str(profile.bart_vocab),
                "--d_model", str(profile.bart_d_model), "--layers", str(profile.bart_layers),
                "--heads", str(profile.bart_heads), "--max_position_embeddings", str(max(512, profile.max_length + 2))],
               os.path.join(ctx.work, "log.txt"), "small BART")
    cfg = load_json(os.path.join(out, "config.json"), "BART config")
    return {"d_model": cfg["d_model"], "layers": cfg["encoder_layers"], "vocab": cfg["vocab_size"]}


def pretrain(ctx, profile: Profile) -> dict:
    """Denoising pre-training of the small BART on the training records' utterances (magic.generator.pretrain);
    with pretrain_epochs 0 the random BART is used as it is."""
    src = os.path.join(ctx.dep_work("bart"), "bart")
    out = os.path.join(ctx.work, "bart")
    if not profile.pretrain_epochs:
        os.symlink(os.path.abspath(src), out)
        return {"pretrained": False}
    run_logged([python(), "-m", "magic.generator.pretrain", "--bart_dir", src, "--train_data",
                os.path.join(ctx.dep_work("records"), "train.json"), "--output_dir", out,
                "--epochs", str(profile.pretrain_epochs), "--learning_rate", str(profile.pretrain_lr),
                "--device", profile.device], os.path.join(ctx.work, "log.txt"), "denoising pre-training",
               env=_threads(profile))
    line = [l for l in open(os.path.join(ctx.work, "log.txt"), encoding="utf-8") if l.startswith("pre-trained")]
    return {"pretrained": True, "summary": line[-1].strip() if line else ""}


def _threads(profile: Profile) -> dict:
    return {"OMP_NUM_THREADS": str(profile.threads)} if profile.threads else {}


def train(ctx, profile: Profile, system: str, seed: int) -> dict:
    """Step 7 (main.py) of one system and seed; an interrupted run continues with --resume."""
    records = ctx.dep_work("records")
    valid = os.path.join(ctx.dep_work("records_inferred"), "valid_motivation.json") if system == "motivation" \
        else os.path.join(records, "valid.json")
    out = os.path.join(ctx.work, "out_model")
    runs = run_dirs(out)
    resume = ["--resume", runs[-1]] if runs and os.path.isdir(os.path.join(runs[-1], "last")) else []
    if runs and not resume:  # started but no epoch finished: start over
        for r in runs:
            shutil.rmtree(r)
    run_logged([python(), "main.py", "--train_data", os.path.join(records, "train.json"),
                "--valid_data", valid,
                "--bart_base_dir", os.path.join(ctx.dep_work("pretrain"), "bart"), "--output_dir", out,
                "--batch_size", str(profile.batch_size), "--num_epochs", str(profile.epochs),
                "--learning_rate", str(profile.lr), "--max_length", str(profile.max_length),
                "--patience", str(profile.patience), "--seed", str(seed), "--device", profile.device,
                "--keep_best_only", *SYSTEMS[system], *resume], os.path.join(ctx.work, "log.txt"),
               f"training {system} seed {seed}", env=_threads(profile))
    run = run_dirs(out)[-1]
    history = load_json(os.path.join(run, "history.json"), "training history")
    best = best_checkpoint(ctx.work)
    return {"system": system, "seed": seed, "best_checkpoint": os.path.basename(best),
            "best_val_ppl": _ppl_from_name(best), "epochs_run": len(history),
            "val_ppl_per_epoch": [round(h["val_ppl"], 3) for h in history],
            "train_loss_per_epoch": [round(h["train_loss"], 4) for h in history]}


def best_checkpoint(train_work: str) -> str:
    """The best checkpoint of a training cell (its one run under ``train_work/out_model``: an unfinished
    first try is removed before the next)."""
    found = latest_best_checkpoint(os.path.join(train_work, "out_model"))
    if not found:
        raise StudyError(f"{train_work}: no checkpoint epoch_*_val_ppl_* written")
    return found


def _ppl_from_name(path: str) -> float:
    name = parse_checkpoint_dir(path)
    return name.val_ppl if name else math.inf


def evaluate(ctx, profile: Profile, train_cell: str, record_set: str, source: str) -> dict:
    """Step 8 (test_evaluation.py) on one record set, then the references' token-level perplexity per sample."""
    records = os.path.join(ctx.dep_work("records_inferred"), f"{record_set}.json")
    ckpt = best_checkpoint(ctx.dep_work(train_cell))
    eval_dir = os.path.join(ctx.work, "eval_result")
    run_logged([python(), "test_evaluation.py", "--model_path", ckpt, "--test_data", records,
                "--eval_dir", eval_dir, "--strategy_source", source, "--device", profile.device,
                "--num_beams", str(profile.num_beams), "--num_beam_groups", str(profile.num_beam_groups),
                "--diversity_penalty", str(profile.diversity_penalty), "--length_penalty", str(profile.length_penalty),
                "--max_length", str(profile.max_length), "--max_length_res", str(profile.max_length_res),
                "--batch_size", "8", "--no_progress", *([] if profile.meteor else ["--no_meteor"])],
               os.path.join(ctx.work, "log.txt"), f"evaluation of {train_cell} on {record_set} ({source})",
               env=_threads(profile))
    found = glob.glob(os.path.join(eval_dir, "**", "*.scores.json"), recursive=True)
    rec = load_json(found[0], "scores record")
    hyps = open(rec["hypotheses_file"], encoding="utf-8").read().splitlines()
    ppl = reference_nll(ckpt, records, source, profile)
    per_sample = rec.get("per_sample") or {"ids": rec["sample_ids"]}
    if per_sample["ids"] != rec["sample_ids"] or ppl["ids"] != per_sample["ids"]:
        raise StudyError(f"{found[0]}: per-sample scores are not in the order of the decoded samples")
    return {"scores": rec["scores"], "n": rec["n_samples"], "distinct_responses": len(set(hyps)),
            "per_sample": {**per_sample, "nll": ppl["nll"], "tokens": ppl["tokens"]},
            "ppl": math.exp(sum(ppl["nll"]) / max(1, sum(ppl["tokens"]))), "checkpoint": os.path.basename(ckpt)}


_LOAD_LOCK = threading.Lock()  # cells run in threads (--jobs): transformers' lazy imports are not thread-safe


def reference_nll(ckpt: str, records_path: str, source: str, profile: Profile) -> dict:
    """Per-sample summed token NLL and token count of the reference responses (the bank frozen, as in
    validation), for perplexity: exp(sum NLL / sum tokens) over any subset."""
    with _LOAD_LOCK:
        import torch

        from magic.generator.checkpoint import load_checkpoint
        from magic.generator.data import DialogueDataset, collator_for, load_records
        from magic.generator.evaluation import select_strategy

        model, tokenizer, _ = load_checkpoint(ckpt, device=profile.device)

    threads = profile.threads or int(os.environ.get("OMP_NUM_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    recs = select_strategy(load_records(records_path), source, records_path)
    ds = DialogueDataset(recs, tokenizer, model.generator_config)
    collate = collator_for(model)
    nll, tokens = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in collate([ds[i]]).items()}
            out = model(**batch, return_logits=False)
            nll.append(round(float(out["nll_sum"]), 5))
            tokens.append(int(out["n_tokens"]))
    return {"nll": nll, "tokens": tokens, "ids": [r["id"] for r in recs]}


def frequent_response(ctx, profile: Profile) -> dict:
    """The most frequent training response as the answer to every sample (no text is kept: only its scores)."""
    from magic.metric.protocol import compute_scores_and_samples, one_line

    train = load_json(os.path.join(ctx.dep_work("records"), "train.json"), "records")
    top, count = Counter(r["response"] for r in train).most_common(1)[0]
    out = {"train_count": count, "words": len(top.split()), "sets": {}}
    for name in TEST_SETS:
        recs = load_json(os.path.join(ctx.dep_work("records_inferred"), f"{name}.json"), "records")
        refs = [one_line(r["response"]) for r in recs]
        scores, per_sample = compute_scores_and_samples(refs, [top] * len(refs), no_meteor=not (profile.meteor and _java()))
        out["sets"][name] = {"scores": scores, "n": len(refs), "distinct_responses": 1,
                             "per_sample": {"ids": [r["id"] for r in recs], **per_sample}}
    return out


def _java() -> bool:
    from magic.metric import java_available
    return java_available()


def compare(ctx, profile: Profile, pairs: list[tuple[str, str, str]]) -> dict:
    """Paired bootstrap and approximate randomisation (metric.significance, as compare_results.py runs them)
    of each system against MAGIC, per set: ``pairs`` = ("<system>@<set>", MAGIC eval cell, other cell)."""
    from magic.metric.significance import compare_files

    out = {}
    for label, a, b in pairs:
        set_name = label.split("@")[1]
        paths = []
        for cell in (a, b):
            r = ctx.dep_result(cell)
            r = r["sets"][set_name] if "sets" in r else r
            path = os.path.join(ctx.work, cell.replace("/", "_") + ".scores.json")
            atomic_write_json(path, {"scores": r["scores"], "per_sample": r["per_sample"]})
            paths.append(path)
        res = compare_files(*paths, resamples=profile.bootstrap, permutations=profile.bootstrap, seed=0)
        out[label] = {k: res[k] for k in ("n_samples", "resamples", "permutations", "metrics", "not_tested", "notes")}
        out[label]["a"], out[label]["b"] = a, b
    return out
