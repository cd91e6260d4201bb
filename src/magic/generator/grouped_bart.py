"""BART passes over length groups with one kernel call per layer for all the groups together.

The masked-pool training pass (src/magic/generator/model.py) cuts a batch into G length groups, each padded only to its own
longest row. Calling transformers' ``BartEncoder``/``BartDecoder`` once per group ran every op G times on small
tensors: G weight-gradient matmuls and G - 1 gradient accumulations per linear layer, G launches of every layer
norm, activation and dropout, a cost of its own in every training step (benchmarks/README.md, Training).
Here the groups' rows lie end to end on one token axis, ``x [N, d]`` with N = sum of B_g * n_g: embeddings,
linear layers, layer norms, activations, dropout and residuals run once over it, and only the attention runs per
group, on views of it.

The arithmetic is transformers' post-LN BART layer by layer, with the modules' own parameters (tested against
``BartEncoder``/``BartDecoder`` run per group, values and gradients). Dropout draws one mask per site for all
the groups, on CPU from 31-bit integer draws (``dropout`` below): other draws than transformers' per-group calls, equal
in distribution. LayerDrop, when configured, drops a layer for the whole batch, as one padded pass of the
released code does.

Shapes: G groups, ``shapes[g] = (B_g, n_g)``; N tokens on the flat axis; d hidden size; H heads.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GroupLayout:
    """Where each group's [B_g, n_g] block lies on the flat token axis (row-major: row by row, token by token)."""

    def __init__(self, shapes: Sequence[tuple[int, int]]):
        self.shapes = [(int(b), int(n)) for b, n in shapes]
        self.sizes = [b * n for b, n in self.shapes]

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [N, ...] -> views [B_g, n_g, ...] per group."""
        return [t.view(b, n, *x.shape[1:]) for t, (b, n) in zip(x.split(self.sizes), self.shapes)]

    @staticmethod
    def flatten(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """[B_g, n_g, ...] per group -> [N, ...]."""
        flat = [p.reshape(-1, *p.shape[2:]) for p in parts]
        return torch.cat(flat) if len(flat) > 1 else flat[0]

    def positions(self, device) -> torch.Tensor:
        """[N] position of every token in its row."""
        return torch.cat([torch.arange(n, device=device).repeat(b) for b, n in self.shapes])


def key_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """attention_mask [B, m] (1 = real) -> boolean SDPA mask [B, 1, 1, m], or None when nothing is masked."""
    m = mask.bool()
    return None if bool(m.all()) else m[:, None, None, :]


class _Dropout(torch.autograd.Function):
    """x times keep / (1 - p), saving the boolean keep mask (1 byte per element) for the backward pass, where
    torch's CPU dropout saves its float noise (4 bytes)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        bits = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()  # uniform on [0, 2^31)
        keep = bits < min(round((1.0 - p) * 2 ** 31), 2 ** 31 - 1)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        if x.dtype != torch.float32:
            return x.mul(keep).mul_(ctx.scale)
        return torch.mul(x, keep, out=bits.view(torch.float32)).mul_(ctx.scale)  # the bits' buffer, reused

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` with its keep mask drawn as 31-bit integers. On CPU torch draws a dropout mask through a
    double-precision Bernoulli: two 32-bit draws per element and a conversion, on one thread. One 32-bit draw per
    element, compared with (1 - p) * 2^31 on every thread, is faster (and faster than a float uniform with its
    comparison; benchmarks/README.md, Training), and the mask kept for the backward pass is boolean. Same arithmetic otherwise (x times keep / (1 - p)); the keep probability
    is 1 - p to within 2^-31; the draws come from the default generator, so restoring its state reproduces them."""
    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    return _Dropout.apply(x, p)


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_layout: GroupLayout,
            kv_layout: GroupLayout, masks: Sequence[torch.Tensor | None], causal: bool) -> torch.Tensor:
    """Projected q [Nq, d] and k, v [Nk, d] -> attention output [Nq, d] (before out_proj), group by group."""
    H = attn.num_heads
    p = attn.dropout if attn.training else 0.0
    outs = []
    for qg, kg, vg, (b, n), (_, m), mask in zip(q.split(q_layout.sizes), k.split(kv_layout.sizes),
                                                v.split(kv_layout.sizes), q_layout.shapes, kv_layout.shapes, masks):
        o = F.scaled_dot_product_attention(
            qg.view(b, n, H, -1).transpose(1, 2), kg.view(b, m, H, -1).transpose(1, 2),
            vg.view(b, m, H, -1).transpose(1, 2), attn_mask=mask, dropout_p=p,
            is_causal=causal and mask is None and n > 1, scale=attn.scaling)
        outs.append(o.transpose(1, 2).reshape(b * n, -1))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _project(h: torch.Tensor, *linears: nn.Linear) -> list[torch.Tensor]:
    """h [N, d] through several linear layers as one matmul (their weights stacked) -> [N, d_out] each."""
    w = torch.cat([lin.weight for lin in linears])
    b = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
    return list(F.linear(h, w, b).split([lin.out_features for lin in linears], dim=-1))


def _embed(module: nn.Module, ids: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Token + learned position embeddings, layernorm_embedding, dropout: ids [N] -> [N, d]."""
    pos = module.embed_positions
    h = module.embed_tokens(ids) + nn.Embedding.forward(pos, layout.positions(ids.device) + pos.offset)
    return dropout(module.layernorm_embedding(h), module.dropout, module.training)


def _feed_forward(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The fully connected block with its residual and layer norm."""
    x = dropout(layer.activation_fn(layer.fc1(h)), layer.activation_dropout, layer.training)
    x = dropout(layer.fc2(x), layer.dropout, layer.training)
    return layer.final_layer_norm(h + x)


def _self_attention(layer: nn.Module, h: torch.Tensor, layout: GroupLayout, masks, causal: bool) -> torch.Tensor:
    """The self-attention block with its residual and layer norm (q, k, v as one matmul)."""
    a = layer.self_attn
    x = a.out_proj(_attend(a, *_project(h, a.q_proj, a.k_proj, a.v_proj), layout, layout, masks, causal))
    return layer.self_attn_layer_norm(h + dropout(x, layer.dropout, layer.training))


def _dropped(module: nn.Module) -> bool:
    return module.training and module.layerdrop > 0.0 and bool(torch.rand([]) < module.layerdrop)


def encode(encoder: nn.Module, ids: torch.Tensor, layout: GroupLayout,
           masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """A ``BartEncoder`` over the groups: ids [N] (flat), masks[g] [B_g, n_g] (1 = real) -> states [N, d].
    Pad positions get values too (never read by a real one)."""
    h = _embed(encoder, ids, layout)
    keys = [key_mask(m) for m in masks]
    for layer in encoder.layers:
        if _dropped(encoder):
            continue
        h = _feed_forward(layer, _self_attention(layer, h, layout, keys, causal=False))
        if h.dtype == torch.float16 and not torch.isfinite(h).all():  # transformers' fp16 clamp
            big = torch.finfo(h.dtype).max - 1000
            h = h.clamp(min=-big, max=big)
    return h


def decode(decoder: nn.Module, ids: torch.Tensor, layout: GroupLayout, self_masks: Sequence[torch.Tensor | None],
           memory: torch.Tensor, memory_layout: GroupLayout, memory_masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """A ``BartDecoder`` (teacher forcing, no cache) over the groups: ids [N] (flat, group g is [B_g, t_g]);
    self_masks[g] [B_g, t_g] (1 = real) or None for all real; memory [M, d] the encoder states of the same rows
    (group g is [B_g, m_g, d]) with memory_masks[g] [B_g, m_g] -> decoder states [N, d]."""
    h = _embed(decoder, ids, layout)
    self_keys = [None if m is None else _causal_mask(m) for m in self_masks]
    cross = [key_mask(m) for m in memory_masks]
    for layer in decoder.layers:
        if _dropped(decoder):
            continue
        h = _self_attention(layer, h, layout, self_keys, causal=True)
        c = layer.encoder_attn
        x = c.out_proj(_attend(c, c.q_proj(h), *_project(memory, c.k_proj, c.v_proj), layout, memory_layout, cross,
                               causal=False))
        h = layer.encoder_attn_layer_norm(h + dropout(x, layer.dropout, layer.training))
        h = _feed_forward(layer, h)
    return h


def _causal_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """decoder attention_mask [B, t] -> causal and key-padding boolean mask [B, 1, t, t], or None (is_causal
    alone) when every position is real."""
    m = mask.bool()
    if bool(m.all()):
        return None
    t = m.size(1)
    tril = torch.ones(t, t, dtype=torch.bool, device=m.device).tril()
    return tril[None, None] & m[:, None, None, :]
