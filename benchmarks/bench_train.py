"""Training throughput of the generator: ours against the released code itself, at 1 and 2 threads.

    .venv/bin/python benchmarks/bench_train.py [--threads 1,2 --modes ours,released,... --steps 20 --warmup 3]

Setup (the same for every mode): a random BART from src/magic/testing/make_small_bart.py (d_model 256, 2+2 layers,
4 heads) whose ~8k byte-level BPE is trained on the texts; the 2,156 real validation samples (magic/valid.txt
under MAGIC_DATA_DIR, built into records with magic.esconv.dialogues; the script says "skipped" and exits 0 without
them); batch 16, K = 128, max lengths 512/64, l_strategy 0.2, AdamW lr 5e-5; one fixed random batch order
(seed 0) shared by the modes that shuffle plainly, and the first batches of the length-grouped sampler (seed 0)
for ``ours``, ``bf16`` and ``interleaved`` (main.py's default); ``--warmup`` optimizer steps, then ``--steps``
timed ones.
Each mode and thread count runs in its own process, so peak RSS (ru_maxrss) is per row; the rows of ours run
with the environment main.py sets before torch loads (its TRAINING_ENV: huge pages for large CPU tensors), the
released and emulated rows, and --interleaved, without it. The timed span is
the mode's own training loop over its own data loader (so the released per-step tokenisation counts, and so
does our collate).

Modes:
    ours        our default (magic.generator.train.train_epoch; batches of similar context length from the
                length-grouped sampler, padded to their longest row, masked pooling)
    random      ours on plainly shuffled batches (main.py --no_group_by_length)
    bf16        ours under bfloat16 autocast on the CPU (main.py --bf16); with ``ours`` in the same run it also
                prints the speed ratio and the validation loss of both after the same steps (token NLL on the
                first 64 records, frozen bank): the check that bf16 stays within 1 % of fp32
    all         ours with --pool all (the released padding and pooling)
    released    the released code as released: its src/ and main.py read from the bare mirror of the
                released repository (``git show HEAD:<path>``; --released_repo), written to a temporary
                folder with only ``.to("cuda")`` -> ``.to("cpu")`` changed, and run as-is: its
                DialogueDataset, collate_fn, DialogueModel and main.train_epoch, with the anomaly detection its
                main.py switches on at import. Skipped cleanly when the mirror is absent.
    released_noanomaly   the same with torch.autograd.set_detect_anomaly(False) after the import
    emulated    our emulation of the released configuration with our model code: --pool all, responses padded
                to 512, the unused motivation encoded at 512 tokens, anomaly detection on. It leaves out the
                released per-step tokenisation of every context, response, motivation and memory response, its
                deep copies of the memory bank, its per-sample padding loops, and the released duplicate
                encoding of identical memory lists (ours encodes each memory list once); it includes our
                collate and our memory attention. Kept as a cross-check that runs without the mirror.

FLOP fraction: the matmul-class FLOPs (torch.utils.flop_counter: mm/addmm/bmm and the CPU flash-attention
kernels, forward and backward) of the first ``--flop_steps`` timed batches are counted in a second, untimed pass
over them (in the run with the most threads, with anomaly detection off: FLOPs depend on neither, and with it the
released pass ran out of memory), and FLOPs per sample times samples/s is set against a measured 2048x2048
float32 ``torch.mm`` peak at that thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from magic.common.io_utils import load_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("released", "released_noanomaly", "ours", "random", "all", "emulated", "interleaved", "bf16")
DEFAULT_MODES = ("released", "released_noanomaly", "ours", "random", "all")
LENGTH_BATCHED = ("ours", "bf16", "interleaved")  # modes on the length-grouped sampler's batches
RELEASED_FILES = ("main.py", "src/__init__.py", "src/bart_dialog.py", "src/dataset.py")
DEFAULT_RELEASED_REPO = "/work/.mirror/Wh2018+MAGIC/repo"
BATCH_SEED = 0


def data_dir() -> str:
    return os.environ.get("MAGIC_DATA_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data", "esconv"))


def build_inputs(work: str) -> tuple[str, str]:
    """records.json (valid samples) and a small BART trained on their texts, under work/."""
    from magic.generator.records import sample_record
    from magic.esconv.dialogues import load_samples
    from magic.testing.make_small_bart import make_small_bart

    recs = [sample_record(s) for s in load_samples(os.path.join(data_dir(), "magic", "valid.txt"), "valid")]
    path = os.path.join(work, "records.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(recs, f)
    texts = sorted({t for r in recs for t in r["context"] + [r["response"]]})
    bart = make_small_bart(os.path.join(work, "bart"), texts, vocab_size=8000, d_model=256, layers=2, heads=4)
    return path, bart


def extract_released(repo: str, dest: str) -> str:
    """The released main.py and src/ from the bare mirror ``repo`` into dest/released, with ``.to("cuda")``
    -> ``.to("cpu")`` (the only change). Returns that folder."""
    out = os.path.join(dest, "released")
    for rel in RELEASED_FILES:
        text = subprocess.run(["git", "-C", repo, "show", f"HEAD:{rel}"], check=True, capture_output=True,
                              text=True).stdout
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        with open(os.path.join(out, rel), "w", encoding="utf-8") as f:
            f.write(re.sub(r"""\.to\((["'])cuda\1\)""", '.to("cpu")', text))
    return out


def batch_order(n: int, batch_size: int, count: int) -> list[list[int]]:
    """The first ``count`` batches of one random permutation (seed BATCH_SEED), shared by the modes."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(BATCH_SEED)).tolist()
    if count * batch_size > n:
        raise SystemExit(f"--warmup + --steps = {count} batches need {count * batch_size} samples; have {n}")
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(count)]


def length_batches(ds, batch_size: int, count: int) -> list[list[int]]:
    """The first ``count`` batches of the length-grouped sampler main.py uses (seed BATCH_SEED)."""
    import torch

    from magic.generator.data import LengthGroupedBatchSampler

    sampler = LengthGroupedBatchSampler([len(x) for x in ds.context_ids], batch_size,
                                        torch.Generator().manual_seed(BATCH_SEED))
    return [b for b in sampler if len(b) == batch_size][:count]


class TimedLoader:
    """Wraps a DataLoader for a training loop: yields its batches, notes when batch ``start`` is asked for
    (the end of the warm-up steps)."""

    def __init__(self, loader, start: int):
        self.loader, self.start, self.t_start = loader, start, None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        i = 0
        while True:
            if i == self.start:
                self.t_start = time.perf_counter()
            try:
                yield next(it)
            except StopIteration:
                return
            i += 1


def mm_peak(reps: int = 8) -> float:
    """Best-of-``reps`` GFLOP/s of a 2048x2048 float32 torch.mm at the current thread count."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 ** 3 / best / 1e9


def flop_counter():
    """torch's FlopCounterMode plus the CPU flash-attention kernels (not in its registry)."""
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def fwd(query, key, value, *args, out_val=None, **kw):
        return fc.sdpa_flop_count(query, key, value)

    def bwd(grad_out, query, key, value, *args, out_val=None, **kw):
        return fc.sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


# ---------------------------------------------------------------------------------------------- modes
def measure(epoch, batches, warmup, count_flops, after_timed=None):
    """(seconds of ``epoch(batches, warmup)``'s timed steps, FLOPs per batch over the first ``count_flops``
    timed batches re-run under the FLOP counter or None, peak RSS in MB before that pass). ``epoch(batch_list,
    start)`` trains on ``batch_list`` and returns the seconds from its batch ``start`` on. ``after_timed()``
    runs between the timed steps and the FLOP pass (the validation loss of the bf16 check)."""
    import torch

    secs = epoch(batches, warmup)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the FLOP pass
    if after_timed is not None:
        after_timed()
    flops = None
    if count_flops:
        torch.autograd.set_detect_anomaly(False)  # FLOPs do not depend on it; with it the pass ran out of memory
        with flop_counter() as fcm:
            epoch(batches[warmup:warmup + count_flops], 0)
        flops = fcm.get_total_flops() / min(count_flops, len(batches) - warmup)  # per batch
    return secs, flops, peak_rss_mb


def run_ours(mode, records, bart, batches, warmup, count_flops):
    """(seconds of the timed steps, FLOPs per batch over the first ``count_flops`` timed batches or None, peak
    RSS in MB up to the end of the timed steps)."""
    import contextlib

    import torch
    from torch.utils.data import DataLoader
    from transformers import BartTokenizer, get_linear_schedule_with_warmup

    from magic.generator.data import DialogueDataset, collator_for, load_records
    from magic.generator.model import DialogueModel
    from magic.generator.train import make_optimizer, train_epoch

    torch.manual_seed(0)
    tok = BartTokenizer.from_pretrained(bart)
    model = DialogueModel.from_pretrained_bart(bart, pool="all" if mode in ("all", "emulated") else "masked")
    ds = DialogueDataset(load_records(records), tok, max_length=512, max_length_res_memory=64)
    if mode in LENGTH_BATCHED:
        batches = length_batches(ds, len(batches[0]), len(batches))
    collate = collator_for(model)
    if mode == "emulated":
        base = collate

        def collate(items):  # the released extra work, on top of --pool all
            b = base(items)
            pad = 512 - b["decoder_input_ids"].size(1)
            b["decoder_input_ids"] = torch.nn.functional.pad(b["decoder_input_ids"], (0, pad), value=tok.pad_token_id)
            b["decoder_attention_mask"] = torch.nn.functional.pad(b["decoder_attention_mask"], (0, pad))
            b["labels"] = torch.nn.functional.pad(b["labels"], (0, pad), value=-100)
            return b

        enc_forward = model.forward

        def forward_with_motivation(**b):
            model.encoder(input_ids=b["motivation_ids"], attention_mask=b["motivation_mask"])  # computed, unused
            return enc_forward(**b)

        model.forward = forward_with_motivation
        torch.autograd.set_detect_anomaly(True)
    # the emulation keeps the released optimizer (torch's default AdamW implementation)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5) if mode == "emulated" else make_optimizer(model, 5e-5)
    sched = get_linear_schedule_with_warmup(opt, 0, 10 ** 6)

    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "bf16" else contextlib.nullcontext

    def epoch(batch_list, start):
        loader = TimedLoader(DataLoader(ds, batch_sampler=batch_list, collate_fn=collate), start)
        train_epoch(model, loader, opt, sched, None, torch.device("cpu"), 0.2, autocast,
                    per_step_scheduler=True, desc=mode)
        return time.perf_counter() - loader.t_start

    held_out = {}

    def validation_loss():  # the bf16 check: token NLL on the first VALID_SAMPLES records, bank frozen
        from magic.generator.train import evaluate_ppl

        valid = DataLoader(torch.utils.data.Subset(ds, range(VALID_SAMPLES)), batch_size=16,
                           collate_fn=collator_for(model, with_memory=False))
        r = evaluate_ppl(model, valid, torch.device("cpu"), autocast, desc="held-out")
        held_out["val_loss"] = r["nll"] / r["tokens"]

    secs, flops, rss = measure(epoch, batches, warmup, count_flops, validation_loss)
    return secs, flops, rss, held_out.get("val_loss")


VALID_SAMPLES = 64  # records the bf16 check scores after the timed steps (the same for every mode)


def run_released(mode, records, bart, batches, warmup, count_flops, released_dir):
    """The released main.train_epoch on the released DialogueDataset/collate_fn/DialogueModel."""
    sys.path.insert(0, released_dir)  # its src/ package, never ours
    import main as released_main  # switches anomaly detection on, as released
    import torch
    from torch.utils.data import DataLoader
    from transformers import BartConfig, BartModel, BartTokenizer

    from src.bart_dialog import DialogueModel
    from src.dataset import DialogueDataset, collate_fn, read_data

    assert os.path.abspath(sys.modules["src"].__path__[0]).startswith(os.path.abspath(released_dir))
    if mode == "released_noanomaly":
        torch.autograd.set_detect_anomaly(False)
    torch.manual_seed(0)
    device = torch.device("cpu")
    # as released main(): tokenizer, config, dataset, model, BART weights, AdamW
    tokenizer = BartTokenizer.from_pretrained(bart)
    config = BartConfig.from_pretrained(bart)
    ds = DialogueDataset(read_data(records), tokenizer, 512)
    bart_model = BartModel.from_pretrained(bart)
    model = DialogueModel(config, bart_model.config, tokenizer, 512, 128, 64, device)
    model.encoder.load_state_dict(bart_model.encoder.state_dict(), strict=False)
    model.decoder.load_state_dict(bart_model.decoder.state_dict(), strict=False)
    model.strategy_encoder.load_state_dict(bart_model.encoder.state_dict(), strict=False)
    del bart_model
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def epoch(batch_list, start):
        loader = TimedLoader(DataLoader(ds, batch_sampler=batch_list, collate_fn=collate_fn), start)
        released_main.train_epoch(model, loader, opt, device, config, 0.2)
        return time.perf_counter() - loader.t_start

    return measure(epoch, batches, warmup, count_flops)


def run_interleaved(records, bart, batches, warmup, released_dir) -> dict:
    """Ours and the released code in one process, alternating step by step, each on its own default batches of
    the same size (ours: the length-grouped sampler's, as main.py draws them; the released code: the shared
    random order, as it shuffles: it pads to fixed lengths, and on the length batches its first steps meet an
    empty memory slot, which it turns into NaN), so that a
    busy machine slows both alike: returns per-side lists of step seconds (warm-up excluded). Each side's
    step is its own train_epoch over a one-batch loader built (collated, and for the released side
    tokenised) inside the timed span; anomaly detection is on for the released steps only, as released."""
    import contextlib

    import torch
    from transformers import BartConfig, BartModel, BartTokenizer, get_linear_schedule_with_warmup

    # the released package under its own name "src" (ours is "magic": the two never clash)
    sys.path.insert(0, released_dir)
    import main as released_main
    from src.bart_dialog import DialogueModel as ReleasedModel
    from src.dataset import DialogueDataset as ReleasedDataset, collate_fn, read_data
    sys.path.remove(released_dir)
    from magic.generator.data import DialogueDataset, collator_for, load_records
    from magic.generator.model import DialogueModel
    from magic.generator.train import make_optimizer, train_epoch

    torch.manual_seed(0)
    tok = BartTokenizer.from_pretrained(bart)
    config = BartConfig.from_pretrained(bart)
    rel_ds = ReleasedDataset(read_data(records), tok, 512)
    bart_model = BartModel.from_pretrained(bart)
    rel = ReleasedModel(config, bart_model.config, tok, 512, 128, 64, torch.device("cpu"))
    rel.encoder.load_state_dict(bart_model.encoder.state_dict(), strict=False)
    rel.decoder.load_state_dict(bart_model.decoder.state_dict(), strict=False)
    rel.strategy_encoder.load_state_dict(bart_model.encoder.state_dict(), strict=False)
    del bart_model
    rel_opt = torch.optim.AdamW(rel.parameters(), lr=5e-5)
    ours = DialogueModel.from_pretrained_bart(bart)
    ds = DialogueDataset(load_records(records), tok, max_length=512, max_length_res_memory=64)
    collate = collator_for(ours)
    our_batches = length_batches(ds, len(batches[0]), len(batches))  # main.py's batches
    opt = make_optimizer(ours, 5e-5)
    sched = get_linear_schedule_with_warmup(opt, 0, 10 ** 6)

    def released_step(idx):
        torch.autograd.set_detect_anomaly(True)
        released_main.train_epoch(rel, [collate_fn([rel_ds[i] for i in idx])], rel_opt, torch.device("cpu"),
                                  config, 0.2)

    def our_step(idx):
        torch.autograd.set_detect_anomaly(False)
        train_epoch(ours, [collate([ds[i] for i in idx])], opt, sched, None, torch.device("cpu"), 0.2,
                    contextlib.nullcontext, per_step_scheduler=True, desc="ours")

    times = {"released": [], "ours": []}
    cpu = {"released": [], "ours": []}  # process CPU seconds: at 1 thread, less sensitive to other jobs
    for k, (idx, our_idx) in enumerate(zip(batches, our_batches)):
        sides = [("released", released_step, idx), ("ours", our_step, our_idx)]
        for name, step, ids in (sides if k % 2 == 0 else sides[::-1]):
            t, c = time.perf_counter(), time.process_time()
            step(ids)
            if k >= warmup:
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return times, cpu


def child(a) -> None:
    mode, records, bart, released_dir = a._child
    if mode not in ("interleaved", "emulated") and not mode.startswith("released"):
        # what main.py sets before torch loads (its TRAINING_ENV), for our training only
        for name, value in runpy.run_path(os.path.join(ROOT, "main.py"))["TRAINING_ENV"].items():
            os.environ.setdefault(name, value)
    import torch

    torch.set_num_threads(a._threads)
    n = len(load_json(records, "JSON list of generator records"))
    batches = batch_order(n, a.batch_size, a.warmup + a.steps)
    peak = mm_peak()
    if mode == "interleaved":
        times, cpu = run_interleaved(records, bart, batches, a.warmup, released_dir)
        print("RESULT " + json.dumps({"mode": mode, "threads": a._threads, "times": times, "cpu": cpu,
                                      "mm_peak_gflops": peak,
                                      "load": os.getloadavg()[0]}))
        return
    if mode.startswith("released"):
        secs, flops, rss = run_released(mode, records, bart, batches, a.warmup, a._count_flops, released_dir)
        val_loss = None
    else:
        secs, flops, rss, val_loss = run_ours(mode, records, bart, batches, a.warmup, a._count_flops)
    print("RESULT " + json.dumps({
        "mode": mode, "threads": a._threads, "samples_per_s": a.steps * a.batch_size / secs, "secs": secs,
        "flops": flops, "mm_peak_gflops": peak,
        "peak_rss_mb": rss, "val_loss": val_loss}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts, one process each")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, from {','.join(MODES)}")
    p.add_argument("--released_repo", default=os.environ.get("MAGIC_RELEASED_REPO", DEFAULT_RELEASED_REPO),
                   help="bare git mirror of github.com/Wh2018/MAGIC (released modes are skipped without it)")
    p.add_argument("--interleaved", action="store_true",
                   help="instead of the modes: ours and the released code alternating step by step in one "
                        "process per thread count (a ratio that holds on a busy machine; no RSS, no FLOPs)")
    p.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--_threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--flop_steps", type=int, default=5,
                   help="timed batches re-run under the FLOP counter (untimed; 0 = none)")
    p.add_argument("--_count_flops", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        child(a)
        return
    modes = [m for m in a.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad}; expected some of {list(MODES)}")
    threads = [int(t) for t in a.threads.split(",")]
    if not os.path.exists(os.path.join(data_dir(), "magic", "valid.txt")):
        print(f"skipped: real data not found at {data_dir()} (set MAGIC_DATA_DIR)")
        return
    has_mirror = subprocess.run(["git", "-C", a.released_repo, "cat-file", "-e", "HEAD:src/bart_dialog.py"],
                                capture_output=True).returncode == 0
    if not has_mirror and any(m.startswith("released") for m in modes):
        print(f"released modes skipped: no released repository at {a.released_repo} (--released_repo)")
        modes = [m for m in modes if not m.startswith("released")]
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as work:
        records, bart = build_inputs(work)
        released_dir = extract_released(a.released_repo, work) if has_mirror else ""
        print(f"d_model 256, 2+2 layers, batch {a.batch_size}, K 128, max lengths 512/64, {a.steps} timed steps "
              f"after {a.warmup} warm-up, threads {threads}; load average {os.getloadavg()[0]:.2f}")
        if a.interleaved:
            if not has_mirror:
                sys.exit(f"--interleaved needs the released repository ({a.released_repo})")
            modes = ["interleaved"]
        for mode in modes:
            for t in threads:
                cmd = [sys.executable, os.path.abspath(__file__), "--steps", str(a.steps), "--warmup", str(a.warmup),
                       "--batch_size", str(a.batch_size), "--_threads", str(t),
                       "--_child", mode, records, bart, released_dir]
                if a.flop_steps > 0 and t == max(threads):
                    cmd += ["--_count_flops", str(a.flop_steps)]
                env = dict(os.environ, OMP_NUM_THREADS=str(t), TOKENIZERS_PARALLELISM="false")
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if out.returncode or not line:
                    sys.exit(f"mode {mode} ({t} threads) failed (exit status {out.returncode}):\n"
                             f"{out.stderr[-3000:]}")
                r = results[(mode, t)] = json.loads(line[-1][len("RESULT "):])
                if mode == "interleaved":
                    med = {k: statistics.median(v) for k, v in r["times"].items()}
                    tot = {k: sum(v) for k, v in r["times"].items()}
                    print(f"interleaved {t} thr: released {a.batch_size / med['released']:.2f}, ours "
                          f"{a.batch_size / med['ours']:.2f} samples/s (per-step medians): "
                          f"{med['released'] / med['ours']:.2f}x (totals {tot['released'] / tot['ours']:.2f}x; "
                          f"process CPU time {sum(r['cpu']['released']) / sum(r['cpu']['ours']):.2f}x); "
                          f"load average at the end {r['load']:.1f}", flush=True)
                    continue
                print(f"{mode:19s} {t} thr {r['samples_per_s']:7.2f} samples/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
                      f"({r['secs']:.1f} s; mm peak {r['mm_peak_gflops']:.0f} GFLOP/s)", flush=True)
    if a.interleaved:
        return
    print("\nFLOP fraction (matmul-class training FLOPs per second / measured 2048^2 fp32 mm peak):")
    for mode in modes:
        fl = next((results[(mode, t)]["flops"] for t in threads if results[(mode, t)].get("flops")), None)
        if not fl:
            continue
        per_sample = fl / a.batch_size
        parts = []
        for t in threads:
            r = results[(mode, t)]
            achieved = per_sample * r["samples_per_s"] / 1e9
            parts.append(f"{t} thr {achieved:5.1f} GFLOP/s = {achieved / r['mm_peak_gflops']:.0%}")
        print(f"{mode:19s} {per_sample / 1e9:5.2f} GFLOP/sample; " + "; ".join(parts))
    for t in threads:
        if ("bf16", t) in results and ("ours", t) in results:
            a32, a16 = results[("ours", t)], results[("bf16", t)]
            rel = abs(a16["val_loss"] - a32["val_loss"]) / a32["val_loss"]
            print(f"bf16 vs fp32 ({t} thr): {a16['samples_per_s'] / a32['samples_per_s']:.2f}x; validation loss after "
                  f"{a.warmup + a.steps} steps {a16['val_loss']:.6f} vs {a32['val_loss']:.6f} "
                  f"({100 * rel:.3f} %: {'within' if rel <= 0.01 else 'NOT within'} 1 %)")
    print("\nspeed-ups:")
    for ours in ("ours", "random"):
        for other in ("released", "released_noanomaly", "emulated", "all"):
            for t in threads:
                if (ours, t) in results and (other, t) in results:
                    print(f"{ours} vs {other} ({t} thr): "
                          f"{results[(ours, t)]['samples_per_s'] / results[(other, t)]['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
