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

Everything is loaded with ``torch.load(..., weights_only=True)``; directories are written atomically
(built under a temporary name, then renamed).
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from typing import Any

import torch

from magic.generator.config import GeneratorConfig
from magic.common.io_utils import atomic_dir, atomic_write_json, load_weights

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


def _has_tokenizer(d: str) -> bool:
    return any(os.path.exists(os.path.join(d, f)) for f in ("tokenizer.json", "vocab.json"))


def load_state_dict_strict(model, path: str) -> None:
    """Load a state_dict file with weights_only=True and strict=True; a mismatch names the keys."""
    state = load_weights(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{path}: does not match the model built from its config: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(bad_shape)} with other shapes {bad_shape[:5]} (wrong --bart_base_dir?)")
    model.load_state_dict(state, strict=True)


def load_checkpoint(ckpt_dir: str | os.PathLike, bart_base_dir: str | os.PathLike | None = None,
                    device: str | torch.device | None = None, **model_overrides):
    """Rebuild the DialogueModel of a checkpoint directory -> (model in eval mode, tokenizer, args dict).

    The BART config comes from the checkpoint's config.json, else from ``bart_base_dir`` (required for a
    released-code checkpoint). ``model_overrides`` replace recorded model settings (e.g. pool="masked").
    """
    from transformers import BartConfig, BartTokenizer

    from magic.generator.model import DialogueModel

    ckpt_dir = os.fspath(ckpt_dir)
    model_path = os.path.join(ckpt_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{ckpt_dir}: no {MODEL_FILE}; expected a checkpoint directory written by "
                                "main.py (or the released code)")
    gen_config, released = GeneratorConfig.for_checkpoint(ckpt_dir)
    args_path = os.path.join(ckpt_dir, ARGS_FILE)
    if released:
        args = {"released_checkpoint": True}
    elif os.path.exists(args_path):
        with open(args_path, encoding="utf-8") as f:
            args = json.load(f)
    else:
        args = {}

    if os.path.exists(os.path.join(ckpt_dir, CONFIG_FILE)):
        config = BartConfig.from_pretrained(ckpt_dir)
    elif bart_base_dir is not None:
        from magic.common.validate import check_model_dir
        config = BartConfig.from_pretrained(check_model_dir(
            bart_base_dir, f"BART (needed because {ckpt_dir} has no {CONFIG_FILE})", "--bart_base_dir"))
    else:
        raise ValueError(f"{ckpt_dir}: no {CONFIG_FILE} (a released-code checkpoint?); pass bart_base_dir / "
                         "--bart_base_dir, the BART it was trained from (e.g. facebook/bart-base)")
    model = DialogueModel(config, gen_config, **model_overrides)
    load_state_dict_strict(model, model_path)

    bank_path = os.path.join(ckpt_dir, BANK_FILE)
    if os.path.exists(bank_path):
        bank = load_weights(bank_path)
        if not isinstance(bank, (list, tuple)):
            raise ValueError(f"{bank_path}: expected a list of {model.num_strategies} tensors, "
                             f"got {type(bank).__name__}")
        try:
            model.load_memory_state(bank)
        except ValueError as e:
            raise ValueError(f"{bank_path}: {e}") from None
    else:
        warnings.warn(f"{ckpt_dir}: no {BANK_FILE}; the memory bank starts empty (memory vectors are zero)")

    if _has_tokenizer(ckpt_dir):
        tokenizer = BartTokenizer.from_pretrained(ckpt_dir)
    elif bart_base_dir is not None:
        tokenizer = BartTokenizer.from_pretrained(os.fspath(bart_base_dir))
    else:
        raise ValueError(f"{ckpt_dir}: no tokenizer files; pass bart_base_dir")
    from magic.common.validate import check_vocab
    check_vocab(tokenizer, model, ckpt_dir)
    model.to(resolve_device(device))
    model.eval()
    return model, tokenizer, args
