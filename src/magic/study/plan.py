"""The study's cells for one profile, in the order they run; ``build_study`` is the one place that wires
dependencies. Cell names are the result files' names under results/<profile>/ (and RESULTS.md's sources)."""
from __future__ import annotations

import functools
import hashlib
import json
import os

from magic.study import stage1, stage2
from magic.study.cells import Cell, Study
from magic.study.profiles import Profile

S1_SYSTEMS = {"s1/zero_shot": "llm", "s1/lora_label/eval": "s1/lora_label/train",
              "s1/lora_motivation/eval": "s1/lora_motivation/train"}


# What the estimates of each profile assume (``--plan`` prints it beside the hours).
ESTIMATE_BASIS = {
    "smoke": "the 2-core project machine (a twentieth of the cpu profile's rates)",
    "cpu": "the 2-core project machine (AMD EPYC with AVX512-BF16, no AMX), measured: docs/RESULTS.md, sizing",
    "gpu-small": "one GPU, projected as a twentieth of the cpu profile's rates (never measured on a GPU)",
    "paper": "one A100/H100 80 GB; the generator's epoch from a measurement (H200, 2026-11-26: 2.62 steps/s over "
             "369 of 637 steps, ~243 s; benchmarks/README.md), LoRA and LLM inference projected by arithmetic",
}


def _estimates(p: Profile) -> dict[str, float]:
    """Planned seconds per cell. cpu: CPU-time measurements of the cells' steps (one thread per cell, two cells
    at a time; docs/RESULTS.md, "How this profile was sized"): SmolLM2 bf16 ~1.7 s per prompt (32 new tokens,
    batch 32), a LoRA step ~3.5 s, a generator epoch of 10,191 samples (d_model 128, 2+2 layers, lengths
    256/64) ~8 min; smoke and gpu-small scaled. paper (ESTIMATE_BASIS): a generator epoch of bart-base's shapes
    243 s on an H200 (bf16, batch 16, 512/64, the pass of 2026-11-26; the validation pass a third of that per
    sample); LoRA 6 x 7e9 FLOPs per token (forward, recomputed forward, backward to the activations) x ~1,000
    tokens per prompt (the released test prompts average 4,540 characters; cutoff 1,024) at 125 TFLOP/s
    (40 % of an A100's fp16 peak): 0.34 s per prompt and epoch; 7B inference ~0.25 s per prompt (batches of 16,
    128 new tokens at ~30 ms a step); 5-beam decoding ~0.3 s per sample."""
    n_eval = (p.test_subset or 195) + (p.valid_subset or 2156)
    n_train = p.train_samples or 10191
    n_valid = p.gen_valid_subset or 2156
    n_all = p.test_all_subset or 2000
    if p.name == "paper":
        per_sample = 243 / 10191
        return {"data": 5, "llm": 5, "prompts": 30, "infer": 0.25 * n_eval, "lora": 0.34 * p.lora_epochs * n_train,
                "addition": 0.25 * n_all, "records": 30, "bart": 5, "pretrain": 0,
                "train": (per_sample * (n_train + n_valid / 3)) * p.epochs + 60,
                "eval": 0.3 * (p.test_subset or 195) + 60, "eval_all": 0.3 * n_all + 60, "small": 20}
    scale = {"smoke": 0.05, "cpu": 1.0, "gpu-small": 0.05}.get(p.name, 1.0)
    return {k: v * scale for k, v in {
        "data": 5, "llm": 60, "prompts": 30, "infer": 1.7 * n_eval, "lora": 3.5 * (p.lora_train_pairs or 10191),
        "addition": 1.7 * n_all, "records": 30, "bart": 30,
        "pretrain": 240 * p.pretrain_epochs, "train": 0.047 * n_train * p.epochs + 30,
        "eval": 0.25 * (p.test_subset or 195) + 30, "eval_all": 0.25 * n_all + 30,
        "small": 20}.items()}


def build_study(profile: Profile, work_root: str, results_root: str, log=print, data: dict | None = None) -> Study:
    """``data``: the data cell's settings, when the data folder is not here to fingerprint (a report checks the
    result files' keys against the fingerprint the results record: load_data_settings)."""
    p, est = profile, _estimates(profile)
    s = p.settings()
    cells: list[Cell] = []

    def add(name, fn, settings, deps=(), estimate=60.0, resumable=False):
        cells.append(Cell(name=name, run=functools.partial(fn, profile=p), settings=settings, deps=list(deps),
                          estimate_s=estimate, resumable=resumable))

    def pick(*keys):  # the profile settings that decide a cell
        return {k: s[k] for k in keys}

    llm_keys = ("llm", "llm_dtype", "llm_new_tokens", "device")
    # -- stage 1
    add("data", stage1.prepare_data, data or {"source": "shared", "files": data_fingerprint()}, estimate=est["data"])
    add("llm", stage1.base_llm, pick("llm"), ["data"], est["llm"])
    add("prompts", stage1.build_prompts, pick("lora_train_pairs", "valid_subset", "test_subset", "test_all_subset"), ["data"],
        est["prompts"])
    add("s1/majority", stage1.majority, pick("bootstrap"), ["data", "prompts"], est["small"])
    # inference cells continue an interrupted run from step 5's answer cache in their folder (exactly: fixed batches)
    add("s1/zero_shot", stage1.zero_shot, pick(*llm_keys, "llm_batch", "bootstrap"), ["data", "llm", "prompts"],
        est["infer"], resumable=True)
    lora_keys = ("lora_epochs", "lora_lr", "lora_batch", "lora_grad_acc", "lora_layers", "lora_target",
                 "lora_rank", "cutoff_len", "llm_dtype", "device")
    for target in ("label", "motivation"):
        add(f"s1/lora_{target}/train", functools.partial(stage1.train_lora, target=target, seed=p.seeds_llm[0]),
            {**pick(*lora_keys), "target": target, "seed": p.seeds_llm[0]}, ["data", "llm", "prompts"], est["lora"])
        add(f"s1/lora_{target}/eval", functools.partial(stage1.lora_eval, train_cell=f"s1/lora_{target}/train"),
            pick(*llm_keys, "llm_batch", "bootstrap"), ["data", "prompts", f"s1/lora_{target}/train"], est["infer"],
            resumable=True)
    add("s1/compare", functools.partial(stage1.compare_lora, a="s1/lora_label/eval", b="s1/lora_motivation/eval"),
        pick("bootstrap"), ["data", "s1/lora_label/eval", "s1/lora_motivation/eval"], est["small"])
    add("s1/best_on_addition", functools.partial(stage1.addition_strategies, candidates=S1_SYSTEMS),
        pick(*llm_keys, "llm_batch", "bootstrap"),
        ["data", "llm", "prompts", *S1_SYSTEMS, "s1/lora_label/train", "s1/lora_motivation/train"], est["addition"],
        resumable=True)
    # -- stage 2
    # training records need nothing of stage 1 (the generators train while the LLM is evaluated); the test
    # records carry stage 1's strategies and motivations
    add("records", stage2.build_records, pick("train_samples", "gen_valid_subset"), ["data", "prompts"],
        est["records"])
    add("records_inferred", functools.partial(stage2.build_inferred_records, addition_cell="s1/best_on_addition",
                                              motivation_cell="s1/lora_motivation/eval"),
        pick("gen_valid_subset"), ["data", "prompts", "s1/best_on_addition", "s1/lora_motivation/eval"],
        est["small"])
    add("bart", stage2.small_bart, pick("bart", "bart_d_model", "bart_layers", "bart_heads", "bart_vocab",
                                        "max_length"), ["records"], est["bart"])
    add("pretrain", stage2.pretrain, pick("pretrain_epochs", "pretrain_lr", "device"), ["bart", "records"],
        est["pretrain"])
    train_keys = ("epochs", "batch_size", "lr", "max_length", "patience", "device")
    eval_keys = ("num_beams", "num_beam_groups", "diversity_penalty", "length_penalty", "max_length_res",
                 "max_length", "device", "meteor")
    pairs = []
    for system in stage2.SYSTEMS:
        for seed in stage2.seeds_of(system, p):
            tcell = f"s2/{system}/seed{seed}/train"
            add(tcell, functools.partial(stage2.train, system=system, seed=seed),
                {**pick(*train_keys), "system": system, "seed": seed},
                ["records", "pretrain", *(["records_inferred"] if system == "motivation" else [])], est["train"],
                resumable=True)
            for record_set, source in stage2.eval_plan(system, seed, p):
                ecell = f"s2/{system}/seed{seed}/{record_set}_{source}"
                add(ecell, functools.partial(stage2.evaluate, train_cell=tcell, record_set=record_set, source=source),
                    {**pick(*eval_keys), "set": record_set, "source": source}, ["records_inferred", tcell],
                    est["eval_all" if record_set.startswith("test_all") else "eval"])
                if system != "magic" and seed == p.seeds[0]:
                    base = f"s2/magic/seed{seed}/{record_set}_{source}"
                    pairs.append((f"{system}@{record_set}", base, ecell))
    add("s2/frequent", stage2.frequent_response, pick("meteor"), ["records", "records_inferred"], est["small"])
    for record_set in stage2.TEST_SETS:
        pairs.append((f"frequent@{record_set}", f"s2/magic/seed{p.seeds[0]}/{record_set}_inferred", "s2/frequent"))
        pairs.append((f"gold@{record_set}", f"s2/magic/seed{p.seeds[0]}/{record_set}_inferred",
                      f"s2/magic/seed{p.seeds[0]}/{record_set}_gold"))
        pairs.append((f"wrong@{record_set}", f"s2/magic/seed{p.seeds[0]}/{record_set}_inferred",
                      f"s2/magic/seed{p.seeds[0]}/{record_set}_wrong_inferred"))
    deps = sorted({c for _, a, b in pairs for c in (a, b)})
    add("s2/compare", functools.partial(stage2.compare, pairs=pairs), pick("bootstrap"), deps, est["small"])
    return Study(cells, work_root, results_root, log=log)


# The committed results/cpu cells were keyed when the fingerprint was the files' sizes. Their data is the content
# with this digest (sha256 of the sha256 digests of magic.study.data.DATA_FILES; checked 2026-12-07 on ../shared/data/esconv, the copy
# they ran on, whose sizes and sample counts results/cpu/data.json records): that content keeps its size
# fingerprint, so their keys stay valid. Any other content -- a same-size edit too -- is keyed by its digests.
SIZE_KEYED = {"1f6193f33ee9865a417f672672ecc503de9ee379d04a86d0c126f5d81d63bdc4": {
    "reconstructed/train.txt": 4095300, "magic/valid.txt": 1232324, "magic/test.txt": 1263972,
    "magic/motivations_4_LLaMA.json": 2377092}}


def _sha256(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprint() -> dict:
    """The content of the shared files step 0 copies: {file: sha256} (a changed byte gives every cell a new
    key), or the size fingerprint of SIZE_KEYED for the content the committed results were made from."""
    from magic.study.data import DATA_FILES, data_dir

    digests = {rel: _sha256(os.path.join(data_dir(), rel)) for rel in DATA_FILES.values()}
    combined = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    return dict(SIZE_KEYED.get(combined, digests))


def load_data_settings(results_root: str) -> dict | None:
    """The data cell's settings recorded in ``results_root`` (checked by load_result), or None."""
    from magic.study.cells import load_result

    path = os.path.join(results_root, "data.json")
    return load_result(path, "data")["settings"] if os.path.exists(path) else None
