"""Helpers for processes started by ``torchrun``, shared by both stages (the LoRA trainer, the generator)."""
from __future__ import annotations

import torch.distributed as dist


def end_process_group(barrier: bool = False) -> None:
    """Destroy the default process group, if there is one (after a barrier: every rank has finished, e.g.
    waiting for rank 0's files). Left to interpreter exit, gloo's threads aborted a rank now and then
    ("terminate called without an active exception", exit -6) after a finished torchrun run."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
