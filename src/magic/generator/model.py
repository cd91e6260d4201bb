"""The MAGIC generator: a BART encoder-decoder with a strategy memory bank (how it differs from the released
code: docs/FIDELITY.md). One forward serves training (CPU and GPU), validation, evaluation and the chat.

Parameter names and shapes follow the released ``DialogueModel`` so that a ``state_dict`` saved by the
released code loads with ``strict=True``:

    encoder.*                              BART encoder (dialogue context, and the motivation)
    decoder.*                              BART decoder
    strategy_encoder.*                     second BART encoder (memory responses)
    memory_enhance_module.multihead_attn.* nn.MultiheadAttention(d, encoder heads)
    generator.proj.{weight,bias}           Linear(d, vocab) with bias, randomly initialised
    strategy_cls.classifier.{weight,bias}  Linear(d, 8), the auxiliary strategy classifier

The pass: padded batches (the collator pads to the batch's longest row; length bucketing is the sampler's
job), every attention through ``scaled_dot_product_attention`` (transformers' BART with its "sdpa"
implementation, and the memory attention below), max pooling over the real tokens. ``pool="all"`` (the
released behaviour: contexts padded to 512 and memory responses to 64 by the collator, pooled over the pads
too) is a switch of the same pass: only the pooling mask changes.

The memory bank (8 slots, each a FIFO of at most K pooled response vectors) is model state on the model's
device but *not* part of the ``state_dict`` (the released code kept it in a plain list and saved it
separately as ``memory_bank.pth``): ``MemoryBank`` holds it as two tensors, updated by index arithmetic on
the device (no wait for the host in a training step); ``_apply`` moves it with the parameters.

Shapes: B batch, T context length, t target length, M memory responses in a batch, Lm their length,
d hidden size, H heads, V vocabulary, S = 8 strategies, K = strategy_memory_max.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BartConfig
from transformers.models.bart.modeling_bart import BartDecoder, BartEncoder

from magic.generator.config import GeneratorConfig

# memory responses per strategy-encoder call in training (encode_memory; benchmarks/README.md, Training)
MEMORY_CHUNK = 16


def _as_config(bart_config_or_dir) -> BartConfig:
    if isinstance(bart_config_or_dir, BartConfig):
        config = bart_config_or_dir
    elif isinstance(bart_config_or_dir, (str, os.PathLike)):
        config = BartConfig.from_pretrained(str(bart_config_or_dir))
    else:
        raise TypeError(f"expected a BartConfig or a BART directory, got {type(bart_config_or_dir).__name__}")
    config._attn_implementation = "sdpa"  # every BART attention through scaled_dot_product_attention
    return config


def masked_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max over dim 1 of ``x`` [B, L, d] at the positions where ``mask`` [B, L] is true -> [B, d].

    ``mask=None`` pools over every position (the released behaviour, pads included). A row without any
    true position gives zeros rather than -inf.
    """
    if mask is None:
        return x.max(dim=1).values
    m = mask.bool().unsqueeze(-1)
    out = x.masked_fill(~m, torch.finfo(x.dtype).min).max(dim=1).values
    return out.masked_fill(~m.any(dim=1), 0.0)


@dataclass
class MemoryBank:
    """The memory bank on the device: ``slots`` [S, K, d] holds each slot's entries oldest first from index 0,
    ``counts`` [S] how many are filled (the rest is never read)."""
    slots: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_list(cls, bank: Sequence[torch.Tensor], capacity: int, d: int, device=None) -> "MemoryBank":
        """From S tensors [n_s, d] (each keeps its newest ``capacity`` rows)."""
        slots = torch.zeros(len(bank), capacity, d, device=device)
        for s, t in enumerate(bank):
            t = t[-capacity:]
            if t.size(0):
                slots[s, : t.size(0)] = t.to(slots)
        counts = torch.tensor([min(t.size(0), capacity) for t in bank], device=device)
        return cls(slots, counts)

    def to_list(self) -> list[torch.Tensor]:
        """S tensors [n_s, d] (views; reads ``counts``, a wait for the device: not inside a training step)."""
        return [self.slots[s, :n] for s, n in enumerate(self.counts.tolist())]

    def detach(self) -> "MemoryBank":
        return MemoryBank(self.slots.detach(), self.counts)

    def apply(self, fn) -> "MemoryBank":
        return MemoryBank(fn(self.slots), fn(self.counts))

    def append(self, pooled: torch.Tensor, ids: torch.Tensor) -> "MemoryBank":
        """pooled [M, d] entered into slots ids [M] in order, each slot keeping its newest K entries. Older
        entries are detached; the new ones keep their graph (the generation loss reaches the strategy encoder
        through the memory attention, as released)."""
        S, K, d = self.slots.shape
        M = pooled.size(0)
        onehot = (ids[:, None] == torch.arange(S, device=ids.device)).long()  # [M, S] (F.one_hot would check
        # the range of ids on the host: a wait for the device)
        rank = (onehot.cumsum(0) - 1).gather(1, ids[:, None]).squeeze(1)    # [M] order within its slot
        total = self.counts + onehot.sum(0)                                 # [S] entries before eviction
        grown = torch.cat([self.slots.detach(), self.slots.new_zeros(S, M, d)], dim=1)  # [S, K + M, d]
        grown = grown.index_put((ids, self.counts[ids] + rank), pooled.to(grown.dtype))
        first = (total - K).clamp(min=0)                                    # [S] oldest entry kept
        index = first[:, None] + torch.arange(K, device=ids.device)[None, :]  # [S, K]
        return MemoryBank(grown.gather(1, index[:, :, None].expand(S, K, d)), total.clamp(max=K))


class MemoryEnhanceModule(nn.Module):
    """Attention from the dialogue states to the memory slot of each sample's strategy, max-pooled."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        # not batch_first: the released module is the default nn.MultiheadAttention (same parameters)
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, strategy_ids: torch.Tensor, bank: MemoryBank,
                pool: str = "masked") -> torch.Tensor:
        """states [B, T, d] (mask [B, T]) attend to the filled entries of their strategy's slot; the result is
        max-pooled over the real tokens (``pool="all"``: over every position, as released) -> [B, d]. A sample
        whose slot is empty gets a zero vector (the released code produced NaN there: every key was masked)."""
        mha = self.multihead_attn
        B, T, d = states.shape
        H = mha.num_heads
        w, b = mha.in_proj_weight, mha.in_proj_bias
        slots = bank.slots.to(states.dtype)                                   # [S, K, d]
        S, K, _ = slots.shape
        k = F.linear(slots, w[d:2 * d], b[d:2 * d])[strategy_ids]             # [B, K, d], each slot projected once
        v = F.linear(slots, w[2 * d:], b[2 * d:])[strategy_ids]
        q = F.linear(states, w[:d], b[:d])
        n = bank.counts[strategy_ids]                                         # [B]
        empty = n == 0
        visible = torch.arange(K, device=states.device)[None, :] < n[:, None]  # [B, K]
        visible[:, 0] |= empty  # one (zero) key for an empty slot keeps the softmax finite; its output is zeroed
        heads = lambda x: x.view(B, -1, H, d // H).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=visible[:, None, None, :],
                                             dropout_p=mha.dropout if self.training else 0.0)
        out = mha.out_proj(out.transpose(1, 2).reshape(B, T, d))
        return masked_max(out, mask if pool == "masked" else None).masked_fill(empty[:, None], 0.0)


class Generator(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class StrategyClassifier(nn.Module):
    def __init__(self, d_model: int, num_strategies: int):
        super().__init__()
        self.classifier = nn.Linear(d_model, num_strategies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


class DialogueModel(nn.Module):
    """MAGIC's generator. See the module docstring for the parameter layout.

    Args:
        bart_config_or_dir: a ``BartConfig`` or a BART directory (its config.json is read; no weights).
        generator_config: a ``GeneratorConfig`` (src/magic/generator/config.py: memory size, motivation, memory,
            pool mode and padding lengths); default ``GeneratorConfig()``.
        **overrides: fields of ``GeneratorConfig`` replacing those of ``generator_config``
            (e.g. ``pool="all"``).
    The settings are readable as attributes (``model.pool``, ``model.max_length``, ...).
    """

    def __init__(self, bart_config_or_dir, generator_config: GeneratorConfig | None = None, **overrides):
        super().__init__()
        gcfg = (generator_config or GeneratorConfig()).replace(**overrides)
        config = _as_config(bart_config_or_dir)
        self.config = config
        self.generator_config = gcfg
        d = config.d_model
        self.encoder = BartEncoder(config)
        self.decoder = BartDecoder(config)
        self.strategy_encoder = BartEncoder(config)
        self.memory_enhance_module = MemoryEnhanceModule(d, config.encoder_attention_heads)
        self.generator = Generator(d, config.vocab_size)
        self.strategy_cls = StrategyClassifier(d, gcfg.num_strategies)
        self.reset_memory()

    # ---------------------------------------------------------------------------------------- config
    # the generator settings, read from the one GeneratorConfig (no copies to keep in step)
    num_strategies = property(lambda self: self.generator_config.num_strategies)
    strategy_memory_max = property(lambda self: self.generator_config.strategy_memory_max)
    use_motivation = property(lambda self: self.generator_config.use_motivation)
    use_memory = property(lambda self: self.generator_config.use_memory)
    pool = property(lambda self: self.generator_config.pool)
    max_length = property(lambda self: self.generator_config.max_length)
    max_length_res_memory = property(lambda self: self.generator_config.max_length_res_memory)
    pad_token_id = property(lambda self: self.config.pad_token_id)
    bos_token_id = property(lambda self: self.config.bos_token_id)
    eos_token_id = property(lambda self: self.config.eos_token_id)
    vocab_size = property(lambda self: self.config.vocab_size)

    @property
    def decoder_start_token_id(self) -> int:
        # Training feeds "<s> y ..." to the decoder (released dataset), so decoding starts from <s>, not
        # from BART's config.decoder_start_token_id (</s>).
        return self.config.bos_token_id

    @property
    def device(self) -> torch.device:
        return self.generator.proj.weight.device

    @classmethod
    def from_pretrained_bart(cls, bart_dir, generator_config: GeneratorConfig | None = None,
                             **overrides) -> "DialogueModel":
        """A model whose encoder, decoder and strategy encoder start from the BART weights in ``bart_dir``
        (a local directory or a hub name); each keeps its own embedding copy. The attention, generator and
        classifier stay randomly initialised, as released."""
        from transformers import BartModel

        bart = BartModel.from_pretrained(str(bart_dir))
        model = cls(bart.config, generator_config, **overrides)
        enc = bart.encoder.state_dict()
        model.encoder.load_state_dict(enc, strict=True)
        model.strategy_encoder.load_state_dict(enc, strict=True)
        model.decoder.load_state_dict(bart.decoder.state_dict(), strict=True)
        del bart
        return model

    # ----------------------------------------------------------------------------------- memory bank
    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() also move the bank (not a parameter or buffer: it is not in the state_dict)
        super()._apply(fn, recurse)
        self.bank = self.bank.apply(fn)
        return self

    @property
    def memory_bank(self) -> list[torch.Tensor]:
        """The bank as S tensors [n_s, d] on the device (a wait for the device: not inside a training step)."""
        return self.bank.to_list()

    def reset_memory(self) -> None:
        d = self.config.d_model
        self.bank = MemoryBank.from_list([torch.empty(0, d)] * self.num_strategies, self.strategy_memory_max, d,
                                         self.device)

    def detach_memory(self) -> None:
        """Keep no autograd graph in the bank (after each optimizer step: this step's entries join the history)."""
        self.bank = self.bank.detach()

    def memory_state(self) -> list[torch.Tensor]:
        """The bank as a list of S detached CPU float tensors [n_s, d] (the memory_bank.pth format)."""
        return [t.detach().float().cpu().clone() for t in self.memory_bank]

    def load_memory_state(self, bank: Sequence[torch.Tensor]) -> None:
        """Set the bank from S tensors [n_s, d]; each slot keeps its newest K rows."""
        d = self.config.d_model
        if len(bank) != self.num_strategies:
            raise ValueError(f"memory bank has {len(bank)} slots, expected {self.num_strategies}")
        for i, t in enumerate(bank):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.size(1) != d:
                raise ValueError(f"memory bank slot {i}: expected a tensor [n, {d}], got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        self.bank = MemoryBank.from_list([t.detach().float() for t in bank], self.strategy_memory_max, d,
                                         self.device)

    def encode_memory(self, memory_input_ids: torch.Tensor, memory_attention_mask: torch.Tensor) -> torch.Tensor:
        """Strategy encoder + max pool: memory_input_ids [M,Lm], mask [M,Lm] -> pooled [M,d].

        With masked pooling the responses (a few tokens to max_length_res_memory: padded to the longest they
        would be 2.5 times their real tokens) are encoded in chunks of MEMORY_CHUNK, longest first, each cut
        to its own longest row; pads are never read, so the values are those of one padded call (up to float
        rounding). The chunk lengths are read on the host (on a GPU, one wait per step)."""
        enc = lambda ids, m: self.strategy_encoder(input_ids=ids, attention_mask=m).last_hidden_state  # noqa: E731
        M = memory_input_ids.size(0)
        if self.pool != "masked":
            return masked_max(enc(memory_input_ids, memory_attention_mask), None)
        if M <= MEMORY_CHUNK:
            return masked_max(enc(memory_input_ids, memory_attention_mask), memory_attention_mask)
        lens = memory_attention_mask.sum(dim=1)
        order = torch.argsort(lens, descending=True, stable=True)
        longest = lens[order[::MEMORY_CHUNK]].tolist()
        parts = []
        for start, n in zip(range(0, M, MEMORY_CHUNK), longest):
            rows = order[start:start + MEMORY_CHUNK]
            ids, mask = memory_input_ids[rows, :n], memory_attention_mask[rows, :n]
            parts.append(masked_max(enc(ids, mask), mask))
        return torch.cat(parts)[torch.argsort(order)]

    def update_memory(self, pooled: torch.Tensor, memory_strategy_ids: torch.Tensor) -> None:
        """Append pooled [M,d] to the slots memory_strategy_ids [M] (in order) and keep the newest K; this
        step's entries keep their graph (see MemoryBank.append)."""
        self.bank = self.bank.append(pooled, memory_strategy_ids)

    # --------------------------------------------------------------------------------- encode/decode
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        strategy_ids: torch.Tensor,
        motivation_ids: torch.Tensor | None = None,
        motivation_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention memory for the decoder.

        input_ids, attention_mask [B,T]; strategy_ids [B]; motivation_ids/mask [B,Tm] (used only with
        use_motivation). Returns encoder_states [B,T',d] and encoder_mask [B,T'] where
        T' = T (+ Tm with use_motivation) (+ 1 for the memory vector with use_memory). Uses the bank as it
        is (no update).
        """
        strategy_ids = torch.as_tensor(strategy_ids, dtype=torch.long, device=input_ids.device)
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        parts, masks = [states], [attention_mask]
        if self.use_motivation:
            if motivation_ids is None or motivation_mask is None:
                raise ValueError("use_motivation is set but no motivation_ids/motivation_mask were given")
            parts.append(self.encoder(input_ids=motivation_ids, attention_mask=motivation_mask).last_hidden_state)
            masks.append(motivation_mask)
        if self.use_memory:
            vec = self.memory_enhance_module(states, attention_mask, strategy_ids, self.bank, self.pool)
            parts.append(vec.unsqueeze(1).to(states.dtype))
            masks.append(attention_mask.new_ones(attention_mask.size(0), 1))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_states: torch.Tensor,
        encoder_mask: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
        decoder_attention_mask: torch.Tensor | None = None,
    ):
        """decoder_input_ids [B,t] (only the new tokens when past_key_values is given) -> (logits [B,t,V],
        past_key_values: an ``EncoderDecoderCache`` when use_cache, reorderable with ``reorder_cache``)."""
        out = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=encoder_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        return self.generator(out.last_hidden_state), out.past_key_values

    # ---------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        strategy_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        memory_input_ids: torch.Tensor | None = None,
        memory_attention_mask: torch.Tensor | None = None,
        memory_strategy_ids: torch.Tensor | None = None,
        motivation_ids: torch.Tensor | None = None,
        motivation_mask: torch.Tensor | None = None,
        l_strategy: float = 0.2,
        return_logits: bool = True,
        **unused,
    ) -> dict:
        """Teacher-forced pass. labels [B,t] with -100 at padding.

        In training mode with memory inputs (memory_input_ids/mask [M,Lm], memory_strategy_ids [M]) this step's
        memory responses are pooled, entered into the bank and classified for the auxiliary loss before the
        memory attention reads the bank; in eval mode the bank is frozen. Returns a dict: logits [B,t,V]
        (unless return_logits=False); with labels also loss, gen_loss, strategy_loss (0 when there is nothing
        to classify or l_strategy == 0), nll_sum (summed token NLL) and n_tokens, all device tensors. With
        labels and return_logits=False (the training loop) the vocabulary projection runs on the target tokens
        only on CPU (on CUDA over the padded grid: selecting the targets would wait for the host).
        """
        strategy_loss = None
        # data parallel (src/magic/generator/distributed.py): (pooled, ids) of this rank -> those of every rank
        gather = getattr(self, "memory_gather", None)
        if self.training and self.use_memory and memory_input_ids is not None and (
                memory_input_ids.size(0) > 0 or gather is not None):
            # a rank without entries of its own still joins the gather's backward: an empty slice of a parameter
            # (not new_zeros: it has no graph, and the other ranks would wait for this one in backward)
            pooled = self.encode_memory(memory_input_ids, memory_attention_mask) if memory_input_ids.size(0) > 0 \
                else self.generator.proj.weight[:0]
            if gather is not None:  # every rank takes part, with or without entries of its own
                pooled, memory_strategy_ids = gather(pooled.float(), memory_strategy_ids)
            if pooled.size(0) > 0:
                self.update_memory(pooled, memory_strategy_ids)
                if l_strategy != 0:
                    strategy_loss = F.cross_entropy(self.strategy_cls(pooled).float(), memory_strategy_ids)
        enc, enc_mask = self.encode(input_ids, attention_mask, strategy_ids, motivation_ids, motivation_mask)
        hidden = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                              encoder_hidden_states=enc, encoder_attention_mask=enc_mask).last_hidden_state
        out = {}
        if return_logits or labels is None:
            out["logits"] = self.generator(hidden)
        if labels is None:
            return out
        if "logits" in out or hidden.device.type == "cuda":
            logits = out["logits"] if "logits" in out else self.generator(hidden)
            logits, targets = logits.reshape(-1, logits.size(-1)), labels.reshape(-1)
        else:  # [N, V] for the N target tokens only
            keep = labels != -100
            logits, targets = self.generator(hidden[keep]), labels[keep]
        nll = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
        n_tokens = (labels != -100).sum()
        gen_loss = nll / n_tokens.clamp(min=1)
        if strategy_loss is None:
            strategy_loss = gen_loss.new_zeros(())
        out.update(loss=gen_loss + l_strategy * strategy_loss, gen_loss=gen_loss, strategy_loss=strategy_loss,
                   nll_sum=nll.detach(), n_tokens=n_tokens)
        return out
