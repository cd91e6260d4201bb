"""Step 7: training of the MAGIC generator (main.py is the command line; the logic lives here).

One run writes ``<output_dir>/bs_<B>_epochs_<E>_<YYYYmmdd_HHMMSS>/``:

    experiments.log                     the log (also printed)
    args.json, history.json             arguments; per-epoch losses and validation perplexity
    training_curves.png                 train loss (generation, auxiliary, total) and validation PPL per epoch
    epoch_<e>_val_ppl_<p>/              a checkpoint each time validation PPL improves (e is 0-based, as released;
                                        with --keep_best_only only the best one is kept)
    last/                               the full training state after the latest epoch, for --resume

Validation perplexity is token-level: exp(sum of token NLL / number of target tokens) with the memory bank
frozen. Training stops after ``--patience`` epochs without improvement.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from magic.generator import distributed
from magic.generator.checkpoint import (MODEL_FILE, load_checkpoint, load_training_state, resolve_device,
                                        restore_best_checkpoint, save_checkpoint, write_checkpoint_files)
from magic.generator.data import DialogueDataset, LengthGroupedBatchSampler, collator_for, load_records
from magic.generator.config import GeneratorConfig, TrainConfig, from_run_settings, run_settings
from magic.common.artifacts import RUN_STAMP_FORMAT, checkpoint_dir_name, parse_checkpoint_dir, run_dir_name
from magic.common.errors import UserError
from magic.common.io_utils import (atomic_dir, atomic_save_figure, atomic_write_json, check_finite, load_json,
                                   remove_stale_temp_dirs)
from magic.common.validate import check_bart_dir, check_split_ids, merge_resume_args

STATE_FILE = "training_state.pt"
LAST_DIR = "last"
# arguments that may differ on --resume; everything else comes from the interrupted run
RESUME_OVERRIDES = ("resume", "device", "num_workers")
# arguments that --resume honours when given (train further, wait longer); any other change is refused
RESUME_HONOURED = ("num_epochs", "patience")


# ---------------------------------------------------------------------------------------------- helpers
def make_run_dir(output_dir: str, batch_size: int, num_epochs: int) -> str:
    stamp = datetime.datetime.now().strftime(RUN_STAMP_FORMAT)
    run_dir, k = os.path.join(output_dir, run_dir_name(batch_size, num_epochs, stamp)), 1
    while os.path.exists(run_dir):  # two runs started in the same second
        run_dir, k = os.path.join(output_dir, run_dir_name(batch_size, num_epochs, stamp, k)), k + 1
    os.makedirs(run_dir)
    return run_dir


def get_logger(run_dir: str, main: bool = True) -> logging.Logger:
    if not main:  # data-parallel ranks other than 0 log nothing
        log = logging.getLogger(f"magic.train.quiet.{os.getpid()}")
        log.propagate = False
        return log
    log = logging.getLogger(f"magic.train.{os.path.abspath(run_dir)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        fmt = logging.Formatter("%(asctime)s [%(levelname)s]: %(message)s")
        for h in (logging.FileHandler(os.path.join(run_dir, "experiments.log")), logging.StreamHandler()):
            h.setFormatter(fmt)
            log.addHandler(h)
    return log


def close_logger(log: logging.Logger) -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def autocast_for(device: torch.device, fp16: bool, bf16: bool):
    if fp16:
        if device.type != "cuda":
            raise RuntimeError("--fp16 needs a CUDA device (float16 autocast on CPU is not supported); "
                               "use --bf16 or full precision")
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op without glibc). On CPU, glibc keeps
    what a step's variously sized tensors freed and RSS creeps up step after step (benchmarks/README.md, Peak
    RSS); trimming every TRIM_EVERY steps bounds it. Pages trimmed are faulted in again by the next step, which
    is why it is not done every step."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None
TRIM_EVERY = 8  # steps: a lower peak RSS for a little more CPU time (benchmarks/README.md, Peak RSS)
_steps_untrimmed = 0


def _trim_now_and_then() -> None:
    """release_freed_memory() every TRIM_EVERY training steps of this process (across epochs and calls)."""
    global _steps_untrimmed
    _steps_untrimmed += 1
    if _steps_untrimmed >= TRIM_EVERY:
        _steps_untrimmed = 0
        release_freed_memory()


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    v, state, gauss = st["python"]
    random.setstate((v, tuple(state), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def plot_curves(history: list[dict], path: str) -> None:
    """Train losses and validation PPL per epoch -> PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_gen_loss"] for h in history], "o-", label="generation")
    a.plot(ep, [h["train_strategy_loss"] for h in history], "o-", label="auxiliary (strategy)")
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="total")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    a.legend()
    b.plot(ep, [h["val_ppl"] for h in history], "o-", color="C3")
    b.set_xlabel("epoch")
    b.set_ylabel("validation perplexity")
    fig.tight_layout()
    atomic_save_figure(fig, path)


def remove_own_checkpoint(run_dir: str, path: str, keep: str, log: logging.Logger) -> None:
    """--keep_best_only: delete ``path``, an earlier best checkpoint, only when it is a checkpoint folder this
    run wrote (a folder named as magic.common.artifacts.checkpoint_dir_name directly in run_dir, holding
    dialogue_model.pth), never ``keep``."""
    path = os.path.abspath(path)
    if (path == os.path.abspath(keep) or os.path.dirname(path) != os.path.abspath(run_dir)
            or parse_checkpoint_dir(path) is None
            or not os.path.isfile(os.path.join(path, MODEL_FILE))):
        log.warning(f"--keep_best_only: not deleting {path} (not an earlier checkpoint folder of this run)")
        return
    shutil.rmtree(path)
    log.info(f"--keep_best_only: deleted the previous best checkpoint {path}")


# ------------------------------------------------------------------------------------------ train / eval
def train_epoch(model, loader, optimizer, scheduler, scaler, device, l_strategy: float, autocast,
                per_step_scheduler: bool, desc: str = "train", dp=None) -> dict:
    """One pass over ``loader``; returns mean total, generation and auxiliary loss over the batches.
    ``dp``: a magic.generator.distributed.DataParallel (losses normalised over the global batch, gradients averaged).
    The losses are summed on the device and read every ``SHOW_EVERY`` steps only (on a GPU each read waits for
    the device); the bank stays on the device."""
    dp = dp or distributed.DataParallel()
    model.train()
    sums = {"loss": 0.0, "gen_loss": 0.0, "strategy_loss": 0.0}
    n = 0
    bar = tqdm(loader, desc=desc, dynamic_ncols=True, mininterval=1.0, disable=not dp.main)
    for batch in bar:
        batch = to_device(batch, device)
        with autocast():
            out = model(**batch, l_strategy=l_strategy, return_logits=False)
        if dp.enabled:  # token mean over the global batch, not a mean of per-rank means (src/magic/generator/distributed.py)
            nll, tokens = dp.sum(float(out["nll_sum"]), float(out["n_tokens"]))
            gen = out["gen_loss"] * (out["n_tokens"].clamp(min=1) * dp.world / max(tokens, 1.0))
            out = {**out, "loss": gen + l_strategy * out["strategy_loss"],
                   "gen_loss": torch.tensor(nll / max(tokens, 1.0))}
            out["shown_loss"] = out["gen_loss"] + l_strategy * out["strategy_loss"].detach().cpu()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out["loss"]).backward()
            dp.average_gradients(model.parameters())
            scaler.step(optimizer)
            scaler.update()
        else:
            out["loss"].backward()
            dp.average_gradients(model.parameters())
            optimizer.step()
        model.detach_memory()  # this step's entries join the history: no graph kept across steps
        if dp.enabled:
            dp.check_bank(model.memory_bank, n)
        if per_step_scheduler:
            scheduler.step()
        n += 1
        if device.type == "cpu":
            _trim_now_and_then()
        for k in sums:  # device tensors: no wait for the device here
            sums[k] = sums[k] + out["shown_loss" if k == "loss" and dp.enabled else k].detach().float()
        if n % SHOW_EVERY == 0 or device.type == "cpu":
            bar.set_postfix(loss=f"{float(sums['loss']) / n:.3f}", gen=f"{float(sums['gen_loss']) / n:.3f}",
                            aux=f"{float(sums['strategy_loss']) / n:.3f}")
    return {k: float(v) / max(n, 1) for k, v in sums.items()}


SHOW_EVERY = 50  # on a GPU: steps between progress-bar loss updates


@torch.no_grad()
def evaluate_ppl(model, loader, device, autocast=contextlib.nullcontext, desc: str = "valid", dp=None) -> dict:
    """Token-level perplexity with the bank frozen: exp(sum of token NLL / number of target tokens);
    under data parallelism each rank runs its chunk of the set and the sums are taken over ranks."""
    dp = dp or distributed.DataParallel()
    model.eval()
    nll, tokens = 0.0, 0
    for batch in tqdm(loader, desc=desc, dynamic_ncols=True, mininterval=1.0, disable=not dp.main):
        batch = to_device(batch, device)
        with autocast():
            out = model(**batch, return_logits=False)
        nll += float(out["nll_sum"])
        tokens += int(out["n_tokens"])
    nll, tokens = dp.sum(nll, tokens)
    tokens = int(tokens)
    if tokens == 0:
        raise ValueError("validation set has no target tokens")
    return {"ppl": math.exp(nll / tokens), "nll": nll, "tokens": tokens}


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW as released (torch defaults, weight decay 0.01), as torch's fused kernel where it has one: the same
    update up to float rounding, one pass over each tensor instead of about ten element-wise ops, so a
    faster optimizer step (benchmarks/README.md, Training)."""
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, fused=fused or None)


def make_scheduler(optimizer, args, steps_per_epoch: int):
    from transformers import get_linear_schedule_with_warmup

    # the released schedule spans len(loader) * epochs steps even when stepped once per epoch
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup_steps,
                                           num_training_steps=steps_per_epoch * args.num_epochs)


def save_training_state(run_dir: str, model, tokenizer, args, optimizer, scheduler, scaler, state: dict) -> None:
    """Everything --resume needs, written atomically to <run_dir>/last/."""
    with atomic_dir(os.path.join(run_dir, LAST_DIR)) as tmp:
        write_checkpoint_files(model, tokenizer, args, tmp)
        torch.save({**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state()},
                   os.path.join(tmp, STATE_FILE))


def _resume_dirs(path: str) -> tuple[str, str]:
    """(run_dir, last_dir) from a run directory or its last/ directory."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, STATE_FILE)):
        return os.path.dirname(path), path
    last = os.path.join(path, LAST_DIR)
    if os.path.exists(os.path.join(last, STATE_FILE)):
        return path, last
    epochs = sorted(n for n in (os.listdir(path) if os.path.isdir(path) else []) if parse_checkpoint_dir(n))
    if epochs:  # a run killed while saving its first epoch by a version that wrote last/ after the checkpoint
        raise UserError(f"--resume {path}: no {LAST_DIR}/{STATE_FILE}: the run was interrupted while saving its "
                        f"first epoch, before the state to resume from was written ({epochs[-1]} is complete and "
                        "can be evaluated); start the run again to train further")
    raise FileNotFoundError(f"--resume {path}: no {LAST_DIR}/{STATE_FILE}; expected a run directory written "
                            "by main.py (one completed epoch at least)")


def resume_from(args: TrainConfig, model_config: GeneratorConfig):
    """(args, model_config, run_dir, last_dir, state) of ``--resume``: the saved settings merged with the ones
    given (only the honoured overrides may differ), the last epoch's training state; what a kill -9 during a
    save left (.last.*, .epoch_*.*) is removed, and said."""
    run_dir, last_dir = _resume_dirs(args.resume)
    saved = load_json(os.path.join(last_dir, "args.json"), "JSON object of training arguments")
    if not isinstance(saved, dict):
        raise ValueError(f"{os.path.join(last_dir, 'args.json')}: expected a JSON object of training arguments")
    saved.pop("model", None)
    saved = run_settings(*from_run_settings(saved))  # an earlier version's names read as today's
    defaults = run_settings(TrainConfig(), GeneratorConfig())
    merged = merge_resume_args(run_settings(args, model_config), saved, defaults, RESUME_OVERRIDES,
                               RESUME_HONOURED, run_dir)
    state = load_training_state(os.path.join(last_dir, STATE_FILE))
    remove_stale_temp_dirs(run_dir)
    if os.environ.get("RANK", "0") == "0":  # one writer under torchrun
        # a kill after last/ may have left the epoch's best checkpoint and history.json unwritten
        restore_best_checkpoint(run_dir, last_dir, state, (STATE_FILE,))
        atomic_write_json(os.path.join(run_dir, "history.json"), state["history"])
    return (*from_run_settings(merged), run_dir, last_dir, state)


def build_model(args: TrainConfig, model_config: GeneratorConfig, last_dir: str | None, device, dp):
    """(model, tokenizer): the last epoch's checkpoint when resuming, else the initial BART weights."""
    # not at module load: main.py imports this module for its parser (--help), and model.py loads
    # transformers' BART modules
    from transformers import BartTokenizer

    from magic.generator.model import DialogueModel

    if last_dir is not None:
        model, tokenizer, _ = load_checkpoint(last_dir, device="cpu")
    else:
        tokenizer = BartTokenizer.from_pretrained(args.bart_base_dir)
        model = DialogueModel.from_pretrained_bart(args.bart_base_dir, model_config)
        check_finite(model.state_dict(), f"{args.bart_base_dir} (--bart_base_dir)")
    model.to(device)
    if dp.enabled:
        model.memory_gather = dp.gather_memory
    return model, tokenizer


@dataclass
class TrainData:
    train_ds: DialogueDataset
    valid_loader: DataLoader
    train_collate: Any
    global_batch: int      # --batch_size x processes
    drop_last: bool        # a last global batch smaller than the world would leave a rank without samples
    steps_per_epoch: int
    pin_memory: bool = False  # on CUDA: page-locked batches, so to_device's non_blocking copies overlap compute
    by_length: bool = True  # batches of similar context length (LengthGroupedBatchSampler)

    def train_loader(self, args: TrainConfig, epoch: int) -> DataLoader:
        """The epoch's batches: the shuffle order depends only on (seed, epoch), so a resumed run sees the
        same batches."""
        gen = torch.Generator().manual_seed(args.seed + epoch)
        if self.by_length:
            sampler = LengthGroupedBatchSampler([len(x) for x in self.train_ds.context_ids], self.global_batch, gen)
            return DataLoader(self.train_ds, batch_sampler=sampler, collate_fn=self.train_collate,
                              num_workers=args.num_workers, pin_memory=self.pin_memory)
        return DataLoader(self.train_ds, batch_size=self.global_batch, shuffle=True, generator=gen,
                          collate_fn=self.train_collate, num_workers=args.num_workers, drop_last=self.drop_last,
                          pin_memory=self.pin_memory)


def build_data(args: TrainConfig, model, tokenizer, dp, log) -> TrainData:
    allow = args.allow_empty_responses
    train_records = load_records(args.train_data, args.max_train_samples, allow, "--allow_empty_responses")
    valid_records = load_records(args.valid_data, args.max_valid_samples, allow, "--allow_empty_responses")
    check_split_ids([r.get("id") for r in train_records], "train", args.train_data)
    check_split_ids([r.get("id") for r in valid_records], "valid", args.valid_data)
    log.info(f"Tokenising {len(train_records)} training and {len(valid_records)} validation records")
    train_ds = DialogueDataset(train_records, tokenizer, model.generator_config)
    valid_ds = DialogueDataset(valid_records, tokenizer, model.generator_config)
    if len(train_ds) == 0 or len(valid_ds) == 0:
        raise ValueError("empty training or validation data")
    train_collate = collator_for(model, with_memory=model.use_memory)
    valid_collate = collator_for(model, with_memory=False)
    if dp.enabled:  # each rank validates its contiguous chunk; the NLL sums are reduced
        valid_ds = torch.utils.data.Subset(valid_ds, range(*dp.chunk(len(valid_ds))))
        train_collate = distributed.ChunkCollator(train_collate, dp)
    valid_loader = DataLoader(valid_ds, batch_size=args.batch_size, shuffle=False, collate_fn=valid_collate,
                              num_workers=args.num_workers)
    global_batch = args.batch_size * dp.world  # --batch_size is per process
    drop_last = 0 < len(train_ds) % global_batch < dp.world
    steps = len(train_ds) // global_batch if drop_last else math.ceil(len(train_ds) / global_batch)
    # length batches pay where batches are padded to their longest row; --pool all pads to fixed lengths and
    # keeps the released plain shuffle
    return TrainData(train_ds, valid_loader, train_collate, global_batch, drop_last, steps,
                     pin_memory=model.device.type == "cuda", by_length=args.group_by_length and model.pool == "masked")


@dataclass
class TrainProgress:
    """Where training stands between epochs (saved in last/ for --resume)."""
    start_epoch: int = 0
    best: float = float("inf")
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    best_dir: str | None = None

    @classmethod
    def restore(cls, state: dict, optimizer, scheduler, scaler) -> "TrainProgress":
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return cls(state["epoch"] + 1, state["best_val_ppl"], state["bad_epochs"], list(state["history"]),
                   state.get("best_dir"))


def log_setup(log, settings: dict, model, device, data: TrainData) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"Model: DialogueModel ({n_params / 1e6:.1f}M parameters), device {device}, "
             f"pool {model.pool}, memory {model.use_memory}, motivation {model.use_motivation}")
    for k, v in sorted(settings.items()):
        log.info(f"{k}: {v}")
    log.info(f"Size-train_data: {len(data.train_ds)}  Size-val_data: {len(data.valid_loader.dataset)}")


def end_epoch(args: TrainConfig, settings: dict, run_dir, epoch, val, model, tokenizer, optimizer, scheduler, scaler,
              prog: TrainProgress, dp, log) -> bool:
    """Keep the best checkpoint, count epochs without improvement, save history, curves and the resume
    state (``settings``: run_settings(), written as args.json); returns whether to stop early."""
    stop, previous, improved = False, None, val["ppl"] < prog.best
    if improved:
        prog.best, prog.bad_epochs, previous = val["ppl"], 0, prog.best_dir
        prog.best_dir = os.path.join(run_dir, checkpoint_dir_name(epoch, val["ppl"]))
    else:
        prog.bad_epochs += 1
        stop = prog.bad_epochs >= args.patience
    if args.scheduler_step == "epoch":
        scheduler.step()
    if dp.main:  # the resume state first: a kill after it loses nothing (--resume rebuilds the checkpoint)
        save_training_state(run_dir, model, tokenizer, settings, optimizer, scheduler, scaler,
                            {"epoch": epoch, "best_val_ppl": prog.best, "bad_epochs": prog.bad_epochs,
                             "history": prog.history, "best_dir": prog.best_dir})
    if improved:
        if dp.main:
            save_checkpoint(model, tokenizer, settings, prog.best_dir)
        log.info(f"Model saved to {prog.best_dir}")
        if args.keep_best_only and previous:
            remove_own_checkpoint(run_dir, previous, prog.best_dir, log)
    if dp.main:
        atomic_write_json(os.path.join(run_dir, "history.json"), prog.history)
        plot_curves(prog.history, os.path.join(run_dir, "training_curves.png"))
    dp.barrier()  # a resumed run finds last/ complete on every rank
    if stop:
        log.info(f"Early stopping: no improvement for {args.patience} epochs")
    return stop


def run_training(args: TrainConfig, model_config: GeneratorConfig | None = None) -> dict:
    """Train as main.py does; returns {"run_dir", "best_checkpoint", "best_val_ppl", "history", "stopped_early"}.

    The workflow: resume state (if --resume); the device and the process group; the run folder; model,
    data, optimizer and schedule; then per epoch: train, validate, keep the best checkpoint, save the resume
    state, stop after --patience epochs without improvement."""
    model_config = model_config or GeneratorConfig()
    resume_state, last_dir = None, None
    if args.resume:
        args, model_config, run_dir, last_dir, resume_state = resume_from(args, model_config)
    settings = run_settings(args, model_config)
    device = resolve_device(args.device)  # checked before anything is written
    dp = distributed.setup(args.device)  # torchrun: one process per device, rank 0 writes
    device = dp.device or device
    autocast = autocast_for(device, args.fp16, args.bf16)
    if not args.resume:
        check_bart_dir(args.bart_base_dir)  # a model and tokenizer that cannot be what the user meant: refuse now
        run_dir = dp.broadcast(make_run_dir(args.output_dir, args.batch_size, args.num_epochs) if dp.main else None)
    log = get_logger(run_dir, dp.main)
    started = False
    try:
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        if dp.main:
            atomic_write_json(os.path.join(run_dir, "args.json"), {**settings, "world_size": dp.world})
        model, tokenizer = build_model(args, model_config, last_dir, device, dp)
        if resume_state is not None:
            log.info(f"Resuming {run_dir} after epoch {resume_state['epoch']}")
        data = build_data(args, model, tokenizer, dp, log)
        optimizer = make_optimizer(model, args.learning_rate)
        scheduler = make_scheduler(optimizer, args, data.steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
        if resume_state is not None:
            prog = TrainProgress.restore(resume_state, optimizer, scheduler, scaler)
        else:
            prog = TrainProgress()
            log_setup(log, settings, model, device, data)

        stopped_early = prog.bad_epochs >= args.patience and prog.start_epoch > 0
        started = True
        for epoch in range(prog.start_epoch, args.num_epochs):
            if stopped_early:
                break
            log.info(f"Epoch {epoch + 1}/{args.num_epochs}")
            t0 = time.time()
            tr = train_epoch(model, data.train_loader(args, epoch), optimizer, scheduler, scaler, device,
                             args.l_strategy, autocast, per_step_scheduler=args.scheduler_step == "step",
                             desc=f"train {epoch + 1}/{args.num_epochs}", dp=dp)
            log.info(f"Training loss: {tr['loss']:.4f}  loss_gen: {tr['gen_loss']:.4f}  "
                     f"loss_aux: {tr['strategy_loss']:.4f}  ({time.time() - t0:.0f} s)")
            val = evaluate_ppl(model, data.valid_loader, device, autocast, desc=f"valid {epoch + 1}/{args.num_epochs}",
                               dp=dp)
            log.info(f"Validation perplexity: {val['ppl']:.4f} ({val['tokens']} tokens)")
            prog.history.append({"epoch": epoch, "train_loss": tr["loss"], "train_gen_loss": tr["gen_loss"],
                                 "train_strategy_loss": tr["strategy_loss"], "val_ppl": val["ppl"],
                                 "lr": optimizer.param_groups[0]["lr"]})
            stopped_early = end_epoch(args, settings, run_dir, epoch, val, model, tokenizer, optimizer, scheduler, scaler,
                                      prog, dp, log)
        log.info(f"Best validation perplexity {prog.best:.4f}: {prog.best_dir}")
        return {"run_dir": run_dir, "best_checkpoint": prog.best_dir, "best_val_ppl": prog.best,
                "history": prog.history, "stopped_early": stopped_early}
    except BaseException:
        if dp.main and not started and not args.resume:  # refused before training: leave no empty bs_* folder behind
            close_logger(log)
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        close_logger(log)
        distributed.teardown(dp)
