"""The settings of step 8 (test_evaluation.py) and of the generator in the chat (chat.py), each written once.

``DecodingConfig``: loading a checkpoint and the beam search; ``EvalConfig`` adds step 8's own flags. Their
fields generate the flags (magic.common.settings); this module imports nothing heavy, so ``--help`` is quick.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from magic.common.settings import option
from magic.common.validate import finite_float, length_int, non_negative_float, positive_int, seed_int
from magic.generator.config import DEFAULT_BART

EARLY_STOPPING = {"true": True, "false": False, "never": "never"}  # --early_stopping value -> beam_search's


@dataclass(kw_only=True)
class DecodingConfig:
    """Loading a generator checkpoint and decoding with it (test_evaluation.py, chat.py)."""
    bart_base_dir: str = option(DEFAULT_BART, "BART (folder or hub id) the model was trained from; only "
                                "for checkpoints without config.json (the released code's: src/bart_base/)")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    num_beams: int = option(5, "beams per sample", type=positive_int)
    num_beam_groups: int = option(5, "beam groups of diverse beam search, dividing --num_beams (5 groups of one "
                                  "beam: the released --diversity_penalty acts); 1 = standard beam search",
                                  type=positive_int)
    diversity_penalty: float = option(1.0, "Hamming penalty between beam groups", type=non_negative_float)
    length_penalty: float = option(1.0, "score = sum log-prob / length ** this", type=finite_float)
    max_length: int = option(512, "max context tokens", type=length_int)
    max_length_res: int = option(64, "max generated tokens (EOS included)", type=positive_int)
    early_stopping: str = option("false", "HF's early_stopping", choices=tuple(EARLY_STOPPING))

    def search(self) -> dict:
        """beam_search's keyword arguments."""
        return {"num_beams": self.num_beams, "num_beam_groups": self.num_beam_groups,
                "diversity_penalty": self.diversity_penalty, "length_penalty": self.length_penalty,
                "max_new_tokens": self.max_length_res, "early_stopping": EARLY_STOPPING[self.early_stopping]}


@dataclass(kw_only=True)
class EvalConfig(DecodingConfig):
    """Decode every test sample with a generator checkpoint and score it (test_evaluation.py)."""
    model_path: str = option(help="checkpoint folder written by main.py")
    test_data: str = option("data/test.json", "test records")
    batch_size: int = option(1, "samples decoded together", type=positive_int)
    strategy_source: str = option("inferred", "condition on the LLM-inferred strategy (the paper) or the gold one",
                                  choices=("inferred", "gold"))
    limit: int | None = option(None, "decode only the first N samples", type=positive_int)
    seed: int = option(42, "torch seed", type=seed_int)
    eval_dir: str = option("eval_result", "output root")
    no_meteor: bool = option(False, "skip METEOR (needs Java)")
    no_metrics: bool = option(False, "write the responses only, no scores")
    no_progress: bool = option(False, "no progress bar")
    overwrite_output_dir: bool = option(False, "redo an evaluation whose result is in --eval_dir")
    # released flags that decide nothing here (the checkpoint's values are used): refused when they differ
    strategy_memory_max: int | None = option(None, "released; must equal the checkpoint's", type=positive_int)
    max_length_res_memory: int | None = option(None, "released; must equal the checkpoint's", type=positive_int)

    def settings(self) -> dict:
        """What tells two results apart (claim_output and the resume file compare it)."""
        out = {k: getattr(self, k) for k in ("test_data", "num_beams", "num_beam_groups", "diversity_penalty",
                                             "length_penalty", "max_length", "max_length_res", "strategy_source",
                                             "limit")}
        out["model_path"] = os.path.realpath(self.model_path)  # one checkpoint, however it is spelled
        out["early_stopping"] = EARLY_STOPPING[self.early_stopping]
        return out
