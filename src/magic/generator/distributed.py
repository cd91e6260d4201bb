"""Data-parallel training of the MAGIC generator under ``torchrun`` (main.py; src/magic/generator/train.py calls in here).

The ranks' banks are compared after every step (``check_bank``: per-slot fingerprints, all_gather), and
a difference stops the run.

    torchrun --nproc_per_node 2 main.py --batch_size 8 ...     # 2 processes x 8 = the global batch 16

``--batch_size`` is per process. Each step every process takes the same global batch (the single-process
shuffle of ``seed + epoch``, cut in ``batch_size x world`` slices) and keeps the contiguous chunk of its
rank (a last global batch smaller than the world is dropped: it would leave a rank empty), so 2 x 8 sees exactly the samples 1 x 16 sees, in the same steps.

The memory bank stays identical on every rank after every step: each rank encodes the memory responses
of its chunk (de-duplicated over the *global* batch, as the single process de-duplicates its batch), the
new entries of all ranks are gathered in rank order (a differentiable all_gather, so the generation loss
of every rank reaches the strategy encoder of the rank that encoded the entry, as it does in one process),
and every rank applies the same FIFO update. The auxiliary strategy loss is computed on the gathered
entries (the mean over all of them, as one process computes it), and the generation loss of a rank is its
summed token NLL divided by the *global* number of target tokens times the world size: averaging the
ranks' gradients (one all_reduce of all gradients after each backward) then gives the gradient of the
single-process loss -- token mean over the global batch + l_strategy x entry mean -- not a mean of
per-rank means. What remains different from one process is float rounding (other padding lengths inside
a chunk, other summation order). Validation NLL and token counts are summed over ranks before the PPL.
Rank 0 alone logs, plots and saves.

Gradients are averaged by hand rather than by wrapping the model in DistributedDataParallel: the memory
gather already moves gradients between ranks inside the backward, which DDP's per-parameter hooks do not
expect; one flat all_reduce per step costs the same bytes without DDP's overlap with the backward.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from magic.common.torchrun import end_process_group
from magic.generator.data import keep_largest_lists


@dataclass
class DataParallel:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------------ batches
    def chunk(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's contiguous chunk of a global batch of n items (sizes differ by <= 1)."""
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)

    # ------------------------------------------------------------------------------ collectives
    def sum(self, *values: float) -> list[float]:
        """Sum scalars over ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather_memory(self, pooled: torch.Tensor, strategy_ids: torch.Tensor):
        """pooled [m_r, d], ids [m_r] of this rank -> pooled [M, d], ids [M] of all ranks in rank order.

        Differentiable: the gradient of a gathered entry returns to the rank that encoded it (summed over
        the ranks that used it)."""
        from torch.distributed.nn.functional import all_gather

        counts = torch.tensor([pooled.size(0)], device=pooled.device)
        all_counts = [torch.zeros_like(counts) for _ in range(self.world)]
        dist.all_gather(all_counts, counts)
        sizes = [int(c) for c in all_counts]
        top = max(sizes)
        if top == 0:
            return pooled, strategy_ids
        pad = top - pooled.size(0)
        padded = torch.cat([pooled, pooled.new_zeros(pad, pooled.size(1))]) if pad else pooled
        ids_padded = torch.cat([strategy_ids, strategy_ids.new_zeros(pad)]) if pad else strategy_ids
        parts = all_gather(padded)
        id_parts = [torch.zeros_like(ids_padded) for _ in range(self.world)]
        dist.all_gather(id_parts, ids_padded.contiguous())
        return (torch.cat([p[:s] for p, s in zip(parts, sizes)]),
                torch.cat([p[:s] for p, s in zip(id_parts, sizes)]))

    def average_gradients(self, params) -> None:
        """Mean of every parameter's gradient over ranks (a missing gradient counts as zero)."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[off:off + n].view_as(p.grad))
            off += n

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_bank(self, bank, step: int) -> None:
        """Raise when the memory bank differs between ranks (compared by per-slot count, sum and
        position-weighted sum in float64: any differing entry changes them)."""
        if not self.enabled:
            return
        rows = []
        for t in bank:
            t = t.detach().double()
            w = torch.arange(1, t.numel() + 1, device=t.device, dtype=torch.float64).view_as(t) if t.numel() else t
            rows.append(torch.stack([t.new_tensor(float(t.size(0))), t.sum(), (t * w).sum()]))
        mine = torch.stack(rows).to(self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        for r, other in enumerate(every):
            if not torch.equal(other, every[0]):
                raise RuntimeError(f"memory bank of rank {r} differs from rank 0's after step {step}")


def setup(device_name: str) -> DataParallel:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else one process.

    Under torchrun each rank uses cuda:LOCAL_RANK (``--device`` auto/cuda) or the CPU (``--device cpu``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DataParallel()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device_name}: CUDA is not available (use --device cpu for gloo)")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DataParallel(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def teardown(dp: DataParallel) -> None:
    if dp.enabled:
        end_process_group()


class ChunkCollator:
    """Global batch of items -> this rank's chunk collated by ``base`` (a DialogueCollator), its memory
    responses de-duplicated over the global batch: a chunk item whose memory list is dropped globally (a
    subsequence of another item's, or a repeat) goes in with no memory, so the base collator keeps exactly
    the global batch's kept lists that fall in this chunk."""

    def __init__(self, base, dp: DataParallel):
        self.base, self.dp = base, dp

    def __call__(self, items):
        lo, hi = self.dp.chunk(len(items))
        if getattr(self.base, "with_memory", False):
            kept = set(keep_largest_lists([it["memory_index"] for it in items]))
            items = [it if i in kept else {**it, "memory_index": [], "memory_ids": [], "memory_strategy": []}
                     for i, it in enumerate(items)]
        return self.base(items[lo:hi])
