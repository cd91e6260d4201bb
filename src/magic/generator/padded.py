"""The training pass built for GPUs: padded batches, one kernel per op, no host synchronisation.

The CPU pass (``DialogueModel.forward`` in training mode) cuts a batch into length groups, runs the attention
per group and per strategy slot, and keeps the memory bank as a Python list of per-slot tensors: every
``.tolist()`` and every data-dependent shape there waits for the device, and every Python loop over groups or
slots launches its own small kernels. On a GPU that costs more than the arithmetic. This pass computes the same
model and the same losses the GPU's way:

* contexts, memory responses and targets as padded batches (length bucketing, if wanted, is the sampler's job:
  ``--group_by_length``); every attention is ``scaled_dot_product_attention`` (transformers' BART with
  ``attn_implementation="sdpa"``, and the memory attention below);
* the memory bank as two device tensors (``DeviceBank``: slots [S, K, d], counts [S]); a step's new entries
  enter their slots first-in-first-out by index arithmetic on the device, keeping their autograd graph as the
  CPU pass does (the generation loss reaches the strategy encoder through the memory attention);
* the memory vector: each context token attends to the K entries of its sample's slot (unfilled entries
  masked), max-pooled over the real tokens; an empty slot gives zeros (as ``MemoryEnhanceModule``);
* the loss over the padded target grid with ``ignore_index`` (no boolean indexing: its shape would need the
  host).

Same values as the CPU pass up to float rounding (tests/generator/test_padded.py: losses, gradients and the bank after
several steps with eviction). Shapes: B batch, T context length, t target length, M memory responses, Lm their
length, d hidden size, H heads, S strategies, K entries per slot, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from magic.generator.model import DialogueModel, masked_max


@dataclass
class DeviceBank:
    """The memory bank on the device: ``slots`` [S, K, d] holds each slot's entries oldest first from index 0,
    ``counts`` [S] how many are filled (the rest is never read)."""
    slots: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_list(cls, bank: Sequence[torch.Tensor], capacity: int, device=None) -> "DeviceBank":
        """From the model's list of S tensors [n_s, d] (n_s <= K); sizes are host metadata, so no sync."""
        d = bank[0].size(1)
        device = device if device is not None else bank[0].device
        slots = torch.zeros(len(bank), capacity, d, device=device)
        for s, t in enumerate(bank):  # once per epoch, not per step
            if t.size(0):
                slots[s, : t.size(0)] = t[-capacity:].detach().float()
        counts = torch.tensor([min(t.size(0), capacity) for t in bank], device=device)
        return cls(slots, counts)

    def to_list(self) -> list[torch.Tensor]:
        """The model's list form (detached); reads ``counts`` (one sync: call it outside the step loop)."""
        return [self.slots[s, :n].detach() for s, n in enumerate(self.counts.tolist())]

    def detach(self) -> "DeviceBank":
        return DeviceBank(self.slots.detach(), self.counts)

    def append(self, pooled: torch.Tensor, ids: torch.Tensor) -> "DeviceBank":
        """pooled [M, d] entered into slots ids [M] in order, each slot keeping its newest K entries. Older
        entries are detached; the new ones keep their graph."""
        S, K, d = self.slots.shape
        M = pooled.size(0)
        onehot = (ids[:, None] == torch.arange(S, device=ids.device)).long()  # [M, S] (F.one_hot checks the
        # range of ids on the host: a wait for the device)
        rank = (onehot.cumsum(0) - 1).gather(1, ids[:, None]).squeeze(1)    # [M] order within its slot
        total = self.counts + onehot.sum(0)                                 # [S] entries before eviction
        grown = torch.cat([self.slots.detach(), self.slots.new_zeros(S, M, d)], dim=1)  # [S, K + M, d]
        grown = grown.index_put((ids, self.counts[ids] + rank), pooled.to(grown.dtype))
        first = (total - K).clamp(min=0)                                    # [S] oldest entry kept
        index = first[:, None] + torch.arange(K, device=ids.device)[None, :]  # [S, K]
        slots = grown.gather(1, index[:, :, None].expand(S, K, d))
        return DeviceBank(slots, total.clamp(max=K))


def memory_vectors(model: DialogueModel, states: torch.Tensor, mask: torch.Tensor, strategy_ids: torch.Tensor,
                   bank: DeviceBank) -> torch.Tensor:
    """states [B, T, d] (mask [B, T]) attend to their strategy's slot, max-pooled over real tokens -> [B, d];
    the parameters are ``memory_enhance_module.multihead_attn``'s (nn.MultiheadAttention: in/out projections)."""
    mha = model.memory_enhance_module.multihead_attn
    B, T, d = states.shape
    H = mha.num_heads
    keys = bank.slots[strategy_ids].to(states.dtype)                       # [B, K, d]
    K = keys.size(1)
    n = bank.counts[strategy_ids]                                          # [B]
    empty = n == 0
    visible = torch.arange(K, device=states.device)[None, :] < n[:, None]   # [B, K]
    visible[:, 0] |= empty  # one (zero) key for an empty slot keeps the softmax finite; its output is zeroed
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = F.linear(states, w[:d], b[:d]).view(B, T, H, d // H).transpose(1, 2)
    k = F.linear(keys, w[d:2 * d], b[d:2 * d]).view(B, K, H, d // H).transpose(1, 2)
    v = F.linear(keys, w[2 * d:], b[2 * d:]).view(B, K, H, d // H).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :],
                                         dropout_p=mha.dropout if model.training else 0.0)
    out = mha.out_proj(out.transpose(1, 2).reshape(B, T, d))
    return masked_max(out, mask).masked_fill(empty[:, None], 0.0)


def padded_step(model: DialogueModel, bank: DeviceBank, batch: dict, l_strategy: float = 0.2,
                update_bank: bool = True) -> tuple[dict, DeviceBank]:
    """One teacher-forced pass over a padded batch (the collator's dict) -> (losses, the bank after it).

    Returns loss, gen_loss, strategy_loss, nll_sum and n_tokens as device tensors (as ``DialogueModel.forward``
    with ``return_logits=False``). With memory inputs and ``update_bank``, this step's memory responses are
    pooled, entered into the bank, and classified for the auxiliary loss, before the memory attention reads the
    bank (the CPU pass's order)."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    strategy_ids = torch.as_tensor(batch["strategy_ids"], dtype=torch.long, device=input_ids.device)
    labels = batch["labels"]
    strategy_loss = None
    mem_ids = batch.get("memory_input_ids")
    gather = getattr(model, "memory_gather", None)
    if update_bank and model.use_memory and mem_ids is not None and (mem_ids.size(0) > 0 or gather is not None):
        mem_mask = batch["memory_attention_mask"]
        mem_sids = batch["memory_strategy_ids"]
        if mem_ids.size(0) > 0:
            states = model.strategy_encoder(input_ids=mem_ids, attention_mask=mem_mask).last_hidden_state
            pooled = masked_max(states, mem_mask)
        else:
            pooled = model.generator.proj.weight.new_zeros(0, model.config.d_model)
        if gather is not None:
            pooled, mem_sids = gather(pooled.float(), mem_sids)
        if pooled.size(0) > 0:
            bank = bank.append(pooled, mem_sids)
            if l_strategy != 0:
                strategy_loss = F.cross_entropy(model.strategy_cls(pooled).float(), mem_sids)
    states = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    parts, masks = [states], [attention_mask]
    if model.use_motivation:
        mot_mask = batch["motivation_mask"]
        parts.append(model.encoder(input_ids=batch["motivation_ids"], attention_mask=mot_mask).last_hidden_state)
        masks.append(mot_mask)
    if model.use_memory:
        parts.append(memory_vectors(model, states, attention_mask, strategy_ids, bank).unsqueeze(1).to(states.dtype))
        masks.append(attention_mask.new_ones(attention_mask.size(0), 1))
    hidden = model.decoder(input_ids=batch["decoder_input_ids"], attention_mask=batch.get("decoder_attention_mask"),
                           encoder_hidden_states=torch.cat(parts, dim=1),
                           encoder_attention_mask=torch.cat(masks, dim=1)).last_hidden_state
    logits = model.generator(hidden)                                        # [B, t, V]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                          reduction="sum")
    n_tokens = (labels != -100).sum()
    gen_loss = nll / n_tokens.clamp(min=1)
    if strategy_loss is None:
        strategy_loss = gen_loss.new_zeros(())
    return {"loss": gen_loss + l_strategy * strategy_loss, "gen_loss": gen_loss, "strategy_loss": strategy_loss,
            "nll_sum": nll.detach(), "n_tokens": n_tokens}, bank
