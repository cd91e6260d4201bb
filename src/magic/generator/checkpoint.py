"""Save and load generator checkpoints.

A checkpoint directory (``out_model/<run>/epoch_<e>_val_ppl_<p>/``) holds, as released:

    dialogue_model.pth   the DialogueModel state_dict
    memory_bank.pth      a list of 8 float tensors [n_s, d] (the bank is not in the state_dict)
    tokenizer files      tokenizer.save_pretrained

and, added: ``generator_config.json`` (the model settings, src/magic/generator/config.py), ``config.json`` (the
BART config, so the model can be rebuilt without the base model) and ``args.json`` (the training arguments,
for the record; nothing is read back from it). A directory without generator_config.json was written by the
released code: it gets ``generator_config.RELEASED`` (pool "all", max_length 512, max_length_res_memory 64)
and loads when ``bart_base_dir`` names the BART it was trained from.

Everything is loaded with ``torch.load(..., weights_only=True)`` and every tensor checked finite
(magic.common.io_utils.load_weights: a NaN or infinity is refused naming the file and the tensor); every JSON
file is parsed with load_json before transformers reads it (a broken one is named); a tokenizer must be
complete (tokenizer.json, or vocab.json and merges.txt); a memory bank may hold at most K entries per slot.
Directories are written atomically (built under a temporary name, then renamed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import warnings
from typing import Any

import torch

from magic.common.errors import UserError
from magic.esconv.dialogues import STRATEGIES
from magic.generator.config import GeneratorConfig
from magic.common.io_utils import atomic_dir, atomic_write_json, load_json, load_weights
from magic.common.validate import check_json_files, check_model_dir, check_vocab

MODEL_FILE = "dialogue_model.pth"
BANK_FILE = "memory_bank.pth"
ARGS_FILE = "args.json"
CONFIG_FILE = "config.json"

def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto"/None -> cuda when available, else cpu; anything else as torch.device, checked to exist."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return dev


def _args_dict(args: Any) -> dict:
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return {k: v for k, v in dict(args).items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def write_checkpoint_files(model, tokenizer, args: Any, out_dir: str) -> None:
    """Write the checkpoint files into an existing folder (not atomic; see save_checkpoint)."""
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(out_dir, MODEL_FILE))
    torch.save(model.memory_state(), os.path.join(out_dir, BANK_FILE))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    model.config.to_json_file(os.path.join(out_dir, CONFIG_FILE))
    model.generator_config.save(out_dir)
    atomic_write_json(os.path.join(out_dir, ARGS_FILE), _args_dict(args))


def save_checkpoint(model, tokenizer, args: Any, out_dir: str | os.PathLike) -> str:
    """Write dialogue_model.pth, memory_bank.pth, tokenizer files, config.json, generator_config.json and
    args.json to out_dir."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    with atomic_dir(out_dir) as tmp:
        write_checkpoint_files(model, tokenizer, args, tmp)
    return out_dir


# A BART tokenizer is tokenizer.json, or vocab.json with merges.txt.
TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))
TOKENIZER_NEEDED = "tokenizer.json, or vocab.json and merges.txt"


def _has_tokenizer(d: str) -> bool:
    """Whether ``d`` holds a complete BART tokenizer; an incomplete one (vocab.json alone) is an error."""
    if any(all(os.path.exists(os.path.join(d, f)) for f in files) for files in TOKENIZER_SETS):
        return True
    partial = [f for files in TOKENIZER_SETS for f in files if os.path.exists(os.path.join(d, f))]
    if partial:
        missing = [f for f in TOKENIZER_SETS[1] if f not in partial]
        raise UserError(f"{d}: incomplete tokenizer: {', '.join(partial)} without {', '.join(missing)} "
                        f"(expected {TOKENIZER_NEEDED}); copy the tokenizer files again")
    return False


def _load_tokenizer(folder: str, where: str):
    """BartTokenizer.from_pretrained(folder); what the tokenizers library cannot read is one error naming it."""
    from transformers import BartTokenizer

    try:
        return BartTokenizer.from_pretrained(folder)
    except Exception as e:  # tokenizers raises a bare Exception for a tokenizer.json it cannot deserialise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{where}: cannot load the tokenizer ({first})") from None


def check_bank_rows(bank, model, path: str, k_given: bool) -> None:
    """A bank saved by training never holds more than K (strategy_memory_max) entries per slot: more is another
    model's bank, refused; unless another K was asked for (``k_given``), then the latest K are kept, and said."""
    k = model.strategy_memory_max
    for i, t in enumerate(bank):
        n = int(t.size(0)) if isinstance(t, torch.Tensor) and t.dim() >= 1 else 0
        if n <= k:
            continue
        label = STRATEGIES[i] if i < len(STRATEGIES) else f"slot {i}"
        if not k_given:
            raise UserError(f"{path}: slot {i} ({label}) holds {n} entries, more than the checkpoint's "
                            f"strategy_memory_max (K) {k}; the bank belongs to another model or configuration")
        warnings.warn(f"{path}: slot {i} ({label}) holds {n} entries; keeping the latest {k} "
                      f"(strategy_memory_max {k} was asked for)")


def check_bank_dtypes(bank, model, path: str) -> None:
    """A memory bank is a list of num_strategies floating-point tensors (shapes are checked by
    DialogueModel.load_memory_state): a bank cast to integers would load, decode and score silently."""
    if not isinstance(bank, (list, tuple)):
        raise ValueError(f"{path}: expected a list of {model.num_strategies} tensors, got {type(bank).__name__}")
    for i, t in enumerate(bank):
        if isinstance(t, torch.Tensor) and not t.is_floating_point():
            raise UserError(f"{path}: slot {i} of the memory bank is {t.dtype}, expected floating point "
                            "(float32, float16 or bfloat16); the bank was altered; refusing to load it")


# What last/training_state.pt holds (save_training_state in train.py): key -> the types its value may have.
TRAINING_STATE_KEYS = {"epoch": (int,), "best_val_ppl": (float, int), "bad_epochs": (int,), "history": (list,),
                       "best_dir": (str, type(None)), "optimizer": (dict,), "scheduler": (dict,),
                       "scaler": (dict, type(None)), "rng": (dict,)}


def load_training_state(path: str) -> dict:
    """Load a --resume training state (load_weights: plain tensors only, all finite) and check its keys and
    types: anything else is one UserError naming the file, never a KeyError / TypeError from deep in resuming."""
    state = load_weights(path)
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a training state (a {type(state).__name__}, expected the dict main.py "
                        "saves); the file was replaced or corrupted; start the run again")
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    wrong = [f"{k} is {type(state[k]).__name__}" for k, types in TRAINING_STATE_KEYS.items()
             if k in state and (not isinstance(state[k], types) or isinstance(state[k], bool))]
    if not missing and not wrong:
        rng = state["rng"]
        if not isinstance(rng.get("torch"), torch.Tensor) or not isinstance(rng.get("python"), (tuple, list)) \
                or len(rng["python"]) != 3:
            wrong.append("rng is not a torch and python random state")
        if state["best_val_ppl"] != state["best_val_ppl"]:  # NaN: no later epoch would ever count as better
            wrong.append("best_val_ppl is NaN")
        if state["epoch"] < 0 or state["bad_epochs"] < 0:
            wrong.append(f"epoch {state['epoch']} / bad_epochs {state['bad_epochs']} negative")
        if not all(isinstance(h, dict) for h in state["history"]):
            wrong.append("history is not a list of per-epoch records")
    if missing or wrong:
        raise UserError(f"{path}: not a training state main.py wrote ("
                        + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + wrong)
                        + "); the file was edited or corrupted; start the run again")
    return state


def restore_best_checkpoint(run_dir: str, last_dir: str, state: dict, exclude: tuple[str, ...]) -> str | None:
    """The resume state (last/) is written before the epoch's best checkpoint (train.end_epoch), so a kill
    between the two leaves a state naming a best checkpoint that is missing: when that checkpoint is of the
    state's own epoch (bad_epochs 0: last/ holds the same weights and bank), rebuild it from last/ (all files
    but ``exclude``), atomically, and say so. Returns its path, or None when nothing was missing."""
    best = state.get("best_dir")
    if (not best or os.path.lexists(best) or state["bad_epochs"] != 0
            or os.path.dirname(os.path.abspath(best)) != os.path.abspath(run_dir)):
        return None
    with atomic_dir(best) as tmp:
        for name in os.listdir(last_dir):
            src = os.path.join(last_dir, name)
            if name not in exclude and not name.startswith(".") and os.path.isfile(src):
                shutil.copy2(src, os.path.join(tmp, name))
    warnings.warn(f"{best}: the checkpoint of epoch {state['epoch']} was not written (the run was interrupted "
                  f"while saving); rebuilt it from {last_dir}")
    return best


def load_state_dict_strict(model, path: str) -> None:
    """Load a state_dict file with weights_only=True and strict=True; a mismatch (keys, shapes, or a
    floating-point weight stored as integers) names the keys."""
    state = load_weights(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    bad_shape += [f"{k}: file {state[k].dtype} vs model {own[k].dtype}" for k in own if k in state
                  and isinstance(state[k], torch.Tensor) and state[k].is_floating_point() != own[k].is_floating_point()]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{path}: does not match the model built from its config: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(bad_shape)} with other shapes or dtypes {bad_shape[:5]} (wrong --bart_base_dir?)")
    model.load_state_dict(state, strict=True)


def load_checkpoint(ckpt_dir: str | os.PathLike, bart_base_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = None, **model_overrides):
    """Rebuild the DialogueModel of a checkpoint directory -> (model in eval mode, tokenizer, args dict).

    The BART config comes from the checkpoint's config.json, else from ``bart_base_dir`` (required for a
    released-code checkpoint). ``model_overrides`` replace recorded model settings (e.g. pool="masked").
    """
    # not at module load: model.py loads transformers' BART modules, and chat.py / test_evaluation.py import
    # this module (through magic.generator.evaluation) already to build their parsers
    from transformers import BartConfig

    from magic.generator.model import DialogueModel

    ckpt_dir = os.fspath(ckpt_dir)
    model_path = os.path.join(ckpt_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{ckpt_dir}: no {MODEL_FILE}; expected a checkpoint directory written by "
                                "main.py (or the released code)")
    check_json_files(ckpt_dir)  # config.json, tokenizer files: a broken one is named before transformers reads it
    gen_config, released = GeneratorConfig.for_checkpoint(ckpt_dir)
    args_path = os.path.join(ckpt_dir, ARGS_FILE)
    if released:
        args = {"released_checkpoint": True}
    elif os.path.exists(args_path):
        args = load_json(args_path, "JSON object of training arguments")
    else:
        args = {}
    if os.path.exists(os.path.join(ckpt_dir, CONFIG_FILE)):
        config = BartConfig.from_pretrained(ckpt_dir)
    elif bart_base_dir is not None:
        config = BartConfig.from_pretrained(check_model_dir(
            bart_base_dir, f"BART (needed because {ckpt_dir} has no {CONFIG_FILE})", "--bart_base_dir"))
    else:
        raise ValueError(f"{ckpt_dir}: no {CONFIG_FILE} (a released-code checkpoint?); pass bart_base_dir / "
                         "--bart_base_dir, the BART it was trained from (e.g. facebook/bart-base)")
    # where the tokenizer comes from, decided before the weights load: a missing one fails at once
    if _has_tokenizer(ckpt_dir):
        tokenizer_dir, tokenizer_where = ckpt_dir, ckpt_dir
    elif bart_base_dir is not None:
        tokenizer_dir = check_model_dir(bart_base_dir, f"BART tokenizer (needed because {ckpt_dir} has no tokenizer "
                                                       f"files ({TOKENIZER_NEEDED}))", "--bart_base_dir")
        check_json_files(tokenizer_dir)
        tokenizer_where = f"{tokenizer_dir} (--bart_base_dir)"
        if not released:
            warnings.warn(f"{ckpt_dir}: no tokenizer files ({TOKENIZER_NEEDED}); using the tokenizer of "
                          f"--bart_base_dir {tokenizer_dir}")
    else:
        raise UserError(f"{ckpt_dir}: no tokenizer files (expected {TOKENIZER_NEEDED}); copy them from the BART it "
                        "was trained from, or pass bart_base_dir / --bart_base_dir")
    model = DialogueModel(config, gen_config, **model_overrides)
    load_state_dict_strict(model, model_path)

    bank_path = os.path.join(ckpt_dir, BANK_FILE)
    if os.path.exists(bank_path):
        bank = load_weights(bank_path)
        check_bank_dtypes(bank, model, bank_path)
        check_bank_rows(bank, model, bank_path, "strategy_memory_max" in model_overrides)
        try:
            model.load_memory_state(bank)
        except ValueError as e:
            raise ValueError(f"{bank_path}: {e}") from None
    else:
        warnings.warn(f"{ckpt_dir}: no {BANK_FILE}; the memory bank starts empty (memory vectors are zero)")

    tokenizer = _load_tokenizer(tokenizer_dir, tokenizer_where)
    check_vocab(tokenizer, model, ckpt_dir)
    model.to(resolve_device(device))
    model.eval()
    return model, tokenizer, args
