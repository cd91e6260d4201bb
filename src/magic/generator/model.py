"""The MAGIC generator: a BART encoder-decoder with a strategy memory bank (how it differs from the released
code: docs/FIDELITY.md).

Parameter names and shapes follow the released ``DialogueModel`` so that a ``state_dict`` saved by the
released code loads with ``strict=True``:

    encoder.*                              BART encoder (dialogue context, and the motivation)
    decoder.*                              BART decoder
    strategy_encoder.*                     second BART encoder (memory responses)
    memory_enhance_module.multihead_attn.* nn.MultiheadAttention(d, encoder heads)
    generator.proj.{weight,bias}           Linear(d, vocab) with bias, randomly initialised
    strategy_cls.classifier.{weight,bias}  Linear(d, 8), the auxiliary strategy classifier

The memory bank (8 slots, each a FIFO of at most K pooled response vectors) is model state but *not* part
of the ``state_dict`` (the released code kept it in a plain list and saved it separately as
``memory_bank.pth``); ``_apply`` moves it together with the parameters, so ``.to(device)`` is enough.

Shapes: B batch, T context length, t target length, M memory responses in a batch, Lm their length,
d hidden size, V vocabulary, S = 8 strategies, K = strategy_memory_max.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BartConfig
from transformers.models.bart.modeling_bart import BartDecoder, BartEncoder

from magic.generator import grouped_bart
from magic.generator.config import GeneratorConfig
from magic.generator.grouped_bart import GroupLayout



def _as_config(bart_config_or_dir) -> BartConfig:
    if isinstance(bart_config_or_dir, BartConfig):
        return bart_config_or_dir
    if isinstance(bart_config_or_dir, (str, os.PathLike)):
        return BartConfig.from_pretrained(str(bart_config_or_dir))
    raise TypeError(f"expected a BartConfig or a BART directory, got {type(bart_config_or_dir).__name__}")


def masked_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max over dim 1 of ``x`` [B, L, d] at the positions where ``mask`` [B, L] is true -> [B, d].

    ``mask=None`` pools over every position (the released behaviour, pads included). A row without any
    true position gives zeros rather than -inf.
    """
    if mask is None:
        return x.max(dim=1).values
    m = mask.bool().unsqueeze(-1)
    filled = x.masked_fill(~m, torch.finfo(x.dtype).min)
    out = filled.max(dim=1).values
    return out.masked_fill(~m.any(dim=1), 0.0)


class MemoryEnhanceModule(nn.Module):
    """Attention from the dialogue states to the memory slot of each sample's strategy, max-pooled."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        # not batch_first: the released module is the default nn.MultiheadAttention (same parameters)
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads)

    def forward(
        self,
        encoder_states: torch.Tensor,
        encoder_mask: torch.Tensor,
        strategy_ids: torch.Tensor,
        memory_bank: Sequence[torch.Tensor],
        pool: str = "masked",
    ) -> torch.Tensor:
        """encoder_states [B,T,d], encoder_mask [B,T], strategy_ids [B] -> memory vector [B,d].

        A sample whose slot is empty gets a zero vector (the released code produced NaN there: every key
        of the attention was masked).
        """
        if pool == "masked":
            return self._forward_packed(encoder_states, encoder_mask, strategy_ids, memory_bank)
        B, _, d = encoder_states.shape
        sizes = torch.tensor([t.size(0) for t in memory_bank], device=encoder_states.device)
        n = sizes[strategy_ids]  # [B] entries available to each sample
        m_max = int(n.max().item()) if B else 0
        if m_max == 0:
            return encoder_states.new_zeros(B, d)
        # stack the slots once ([S, m_max, d]) and gather by strategy instead of per-sample copies
        dtype = encoder_states.dtype
        padded = encoder_states.new_zeros(len(memory_bank), m_max, d)
        for s in set(strategy_ids.tolist()):  # only the slots this batch asks for (m_max is their max)
            t = memory_bank[s]
            if t.size(0):
                padded[s, : t.size(0)] = t.to(dtype)
        keys = padded[strategy_ids]  # [B, m_max, d]
        key_pad = torch.arange(m_max, device=keys.device).unsqueeze(0) >= n.unsqueeze(1)  # [B, m_max]
        empty = n == 0
        # keep one (zero) key visible for empty rows so softmax stays finite; their output is zeroed below
        key_pad[:, 0] = key_pad[:, 0] & ~empty
        attn, _ = self.multihead_attn(
            encoder_states.transpose(0, 1), keys.transpose(0, 1), keys.transpose(0, 1),
            key_padding_mask=key_pad, need_weights=False,
        )
        attn = attn.transpose(0, 1)  # [B, T, d]
        pooled = masked_max(attn, None)
        return pooled.masked_fill(empty.unsqueeze(1), 0.0)

    def _forward_packed(self, encoder_states, encoder_mask, strategy_ids, memory_bank) -> torch.Tensor:
        """The masked-pool forward without padding (see forward_groups), for one padded batch."""
        return self.forward_groups([encoder_states], [encoder_mask], [strategy_ids], memory_bank)[0]

    def forward_groups(self, states: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                       strategy_ids: Sequence[torch.Tensor], memory_bank: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Masked pooling over row groups, each padded to its own length: states[g] [B_g,T_g,d], masks[g]
        [B_g,T_g], strategy_ids[g] [B_g] -> memory vectors [B_g,d] per group.

        Per strategy s in the batch, the real tokens of its samples ([N_s, d], packed) attend to slot s itself
        ([n_s, d], projected once, no key padding), and each sample max-pools its own tokens. Equal to
        attending from the padded batch to per-sample padded keys and pooling over real positions (up to
        float rounding), at the cost of the real tokens only. An empty slot gives a zero vector.
        """
        d = states[0].size(-1)
        zero = states[0].new_zeros(d)
        pooled = [[zero] * h.size(0) for h in states]
        real = [m.bool() for m in masks]
        lens = [r.sum(dim=1).tolist() for r in real]
        ids = [x.tolist() for x in strategy_ids]
        for s in sorted({x for g in ids for x in g}):
            slot = memory_bank[s]
            if slot.size(0) == 0:
                continue
            where, tokens, sizes = [], [], []
            for g, gids in enumerate(ids):
                rows = [i for i, x in enumerate(gids) if x == s]
                if rows:
                    sel = real[g] & (strategy_ids[g] == s).unsqueeze(1)
                    tokens.append(states[g][sel])  # row-major: sample by sample
                    where += [(g, i) for i in rows]
                    sizes += [lens[g][i] for i in rows]
            q = torch.cat(tokens) if len(tokens) > 1 else tokens[0]
            kv = slot.to(q.dtype).unsqueeze(1)  # [n_s, 1, d]
            attn, _ = self.multihead_attn(q.unsqueeze(1), kv, kv, need_weights=False)  # [N_s, 1, d]
            for (g, i), part in zip(where, attn.squeeze(1).split(sizes)):
                if part.size(0):
                    pooled[g][i] = part.max(dim=0).values
        return [torch.stack(p) for p in pooled]


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
        # length groups of the encoders and the masked-pool training pass (speed only; 1 = the batch as padded).
        # 16: a batch's contexts one per group (no padding, no attention mask) and its memory responses barely
        # padded; since every layer runs once over all groups (src/magic/generator/grouped_bart.py), a group
        # costs only its attention call, so fewer groups were slower and more did not pay (benchmarks/README.md,
        # Training)
        self.length_groups = 16
        d = config.d_model

        self.encoder = BartEncoder(config)
        self.decoder = BartDecoder(config)
        self.strategy_encoder = BartEncoder(config)
        self.memory_enhance_module = MemoryEnhanceModule(d, config.encoder_attention_heads)
        self.generator = Generator(d, config.vocab_size)
        self.strategy_cls = StrategyClassifier(d, gcfg.num_strategies)
        self.memory_bank: list[torch.Tensor] = [torch.empty(0, d) for _ in range(gcfg.num_strategies)]

    # ---------------------------------------------------------------------------------------- config
    # the generator settings, read from the one GeneratorConfig (no copies to keep in step)
    num_strategies = property(lambda self: self.generator_config.num_strategies)
    strategy_memory_max = property(lambda self: self.generator_config.strategy_memory_max)
    use_motivation = property(lambda self: self.generator_config.use_motivation)
    use_memory = property(lambda self: self.generator_config.use_memory)
    pool = property(lambda self: self.generator_config.pool)
    max_length = property(lambda self: self.generator_config.max_length)
    max_length_res_memory = property(lambda self: self.generator_config.max_length_res_memory)

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    @property
    def bos_token_id(self) -> int:
        return self.config.bos_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.eos_token_id

    @property
    def decoder_start_token_id(self) -> int:
        # Training feeds "<s> y ..." to the decoder (released dataset), so decoding starts from <s>, not
        # from BART's config.decoder_start_token_id (</s>).
        return self.config.bos_token_id

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

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
        # .to()/.cuda()/.half() also move the bank (a plain list, invisible to nn.Module)
        super()._apply(fn, recurse)
        self.memory_bank = [fn(t) for t in self.memory_bank]
        return self

    def reset_memory(self) -> None:
        self.memory_bank = [self.generator.proj.weight.new_empty(0, self.config.d_model).float()
                            for _ in range(self.num_strategies)]

    def detach_memory(self) -> None:
        self.memory_bank = [t.detach() for t in self.memory_bank]

    def memory_state(self) -> list[torch.Tensor]:
        """The bank as a list of S detached CPU float tensors [n_s, d] (the memory_bank.pth format)."""
        return [t.detach().float().cpu().clone() for t in self.memory_bank]

    def load_memory_state(self, bank: Sequence[torch.Tensor]) -> None:
        d = self.config.d_model
        if len(bank) != self.num_strategies:
            raise ValueError(f"memory bank has {len(bank)} slots, expected {self.num_strategies}")
        for i, t in enumerate(bank):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.size(1) != d:
                raise ValueError(f"memory bank slot {i}: expected a tensor [n, {d}], got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        self.memory_bank = [t.detach().float().to(self.device)[-self.strategy_memory_max:] for t in bank]

    def length_groups_of(self, attention_mask: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Rows of attention_mask [N,L] sorted by length (longest first) and cut into ``length_groups``
        groups: [(row indices, the group's longest length)]."""
        lens = attention_mask.sum(dim=1)
        order = torch.argsort(lens, descending=True)
        return [(rows, max(int(lens[rows[0]]), 1)) for rows in torch.chunk(order, min(self.length_groups, len(order)))]

    def run_encoder(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """encoder over input_ids/attention_mask [N,L] -> states [N,L,d].

        With masked pooling, rows are encoded in ``length_groups`` groups of similar length, each padded only
        to its own longest row (a batch with one 512-token context no longer costs 512 tokens per row).
        Nothing downstream reads pad positions (cross-attention and pooling are masked), so the result is
        the same up to float rounding (pad positions differ: they are never read). pool="all" encodes the batch as padded,
        because there the pad positions are pooled (released behaviour).
        """
        N = input_ids.size(0)
        if self.pool != "masked" or self.length_groups <= 1 or N <= 1:
            return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        L = input_ids.size(1)
        groups = self.length_groups_of(attention_mask)
        states, _ = self._encode_groups(encoder, input_ids, attention_mask, groups)
        parts = [F.pad(h, (0, 0, 0, L - h.size(1))) for h in states]
        return torch.cat(parts, dim=0)[torch.argsort(torch.cat([rows for rows, _ in groups]))]

    def _encode_groups(self, encoder: nn.Module, input_ids, attention_mask,
                       groups) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """encoder over each group (rows, n) of input_ids/attention_mask -> per group the states [B_g, n, d] (views
        of one flat pass, src/magic/generator/grouped_bart.py) and the group's attention mask [B_g, n]."""
        layout = GroupLayout([(len(rows), n) for rows, n in groups])
        ids = torch.cat([input_ids[rows, :n].reshape(-1) for rows, n in groups])
        masks = [attention_mask[rows, :n] for rows, n in groups]
        return layout.split(grouped_bart.encode(encoder, ids, layout, masks)), masks

    def encode_memory(self, memory_input_ids: torch.Tensor, memory_attention_mask: torch.Tensor) -> torch.Tensor:
        """Strategy encoder + max pool: memory_input_ids [M,Lm], mask [M,Lm] -> pooled [M,d]."""
        if self.pool != "masked" or self.length_groups <= 1 or memory_input_ids.size(0) <= 1:
            states = self.run_encoder(self.strategy_encoder, memory_input_ids, memory_attention_mask)
            return masked_max(states, memory_attention_mask if self.pool == "masked" else None)
        groups = self.length_groups_of(memory_attention_mask)
        states, masks = self._encode_groups(self.strategy_encoder, memory_input_ids, memory_attention_mask, groups)
        pooled = [masked_max(h, m) for h, m in zip(states, masks)]
        return torch.cat(pooled)[torch.argsort(torch.cat([rows for rows, _ in groups]))]

    def update_memory(self, pooled: torch.Tensor, memory_strategy_ids: torch.Tensor) -> None:
        """Append pooled [M,d] to the slots memory_strategy_ids [M] (in order) and keep the newest K.

        Older entries are detached; this step's entries keep their graph so that the generation loss reaches
        the strategy encoder through the memory attention (as released).
        """
        ids = memory_strategy_ids.tolist()
        new_bank = [t.detach() for t in self.memory_bank]
        for s in sorted(set(ids)):
            if not 0 <= s < self.num_strategies:
                raise ValueError(f"memory strategy id {s} outside 0..{self.num_strategies - 1}")
            rows = pooled[memory_strategy_ids == s].to(new_bank[s].dtype)
            new_bank[s] = torch.cat([new_bank[s], rows], dim=0)[-self.strategy_memory_max:]
        self.memory_bank = new_bank

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
        states = self.run_encoder(self.encoder, input_ids, attention_mask)
        mask = attention_mask
        parts, masks = [states], [mask]
        if self.use_motivation:
            if motivation_ids is None or motivation_mask is None:
                raise ValueError("use_motivation is set but no motivation_ids/motivation_mask were given")
            mot = self.run_encoder(self.encoder, motivation_ids, motivation_mask)
            parts.append(mot)
            masks.append(motivation_mask)
        if self.use_memory:
            vec = self.memory_enhance_module(states, attention_mask, strategy_ids, self.memory_bank, self.pool)
            parts.append(vec.unsqueeze(1).to(states.dtype))
            masks.append(mask.new_ones(mask.size(0), 1))
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

        In training mode with memory inputs (memory_input_ids/mask [M,Lm], memory_strategy_ids [M]) the bank
        is updated first and the auxiliary classifier is trained on this step's pooled entries; in eval mode
        the bank is frozen. Returns a dict: logits [B,t,V] (unless return_logits=False); with labels also loss,
        gen_loss, strategy_loss (0 when there is nothing to classify or l_strategy == 0), nll_sum (summed token
        NLL) and n_tokens. With labels and return_logits=False (the training loop) the vocabulary projection
        and softmax run on the target tokens only, not on padding.
        """
        strategy_loss = None
        # data parallel (src/magic/generator/distributed.py): (pooled, ids) of this rank -> those of every rank, rank order
        gather = getattr(self, "memory_gather", None)
        if self.training and self.use_memory and memory_input_ids is not None and (
                memory_input_ids.size(0) > 0 or gather is not None):
            pooled = self.encode_memory(memory_input_ids, memory_attention_mask) if memory_input_ids.size(0) > 0 \
                else self.generator.proj.weight.new_zeros(0, self.config.d_model)
            if gather is not None:  # every rank takes part, with or without entries of its own
                pooled, memory_strategy_ids = gather(pooled.float(), memory_strategy_ids)
            if pooled.size(0) > 0:
                self.update_memory(pooled, memory_strategy_ids)
            if l_strategy != 0 and pooled.size(0) > 0:
                cls_logits = self.strategy_cls(pooled)
                strategy_loss = F.cross_entropy(cls_logits.float(), memory_strategy_ids)
        if (labels is not None and not return_logits and self.pool == "masked" and self.length_groups > 1
                and not self.use_motivation and input_ids.size(0) > 1):
            hidden, targets = self._grouped_target_states(input_ids, attention_mask, strategy_ids, decoder_input_ids,
                                                          decoder_attention_mask, labels)
            return self._with_loss({}, self.generator(hidden), targets, labels, strategy_loss, l_strategy)
        enc, enc_mask = self.encode(input_ids, attention_mask, strategy_ids, motivation_ids, motivation_mask)
        hidden = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                              encoder_hidden_states=enc, encoder_attention_mask=enc_mask).last_hidden_state
        out = {}
        if return_logits or labels is None:
            out["logits"] = self.generator(hidden)
        if labels is not None:
            if "logits" in out:
                logits, targets = out["logits"].reshape(-1, self.vocab_size), labels.reshape(-1)
            else:  # [N, V] for the N target tokens only
                keep = labels != -100
                logits, targets = self.generator(hidden[keep]), labels[keep]
            out = self._with_loss(out, logits, targets, labels, strategy_loss, l_strategy)
        return out

    @staticmethod
    def _with_loss(out: dict, logits, targets, labels, strategy_loss, l_strategy: float) -> dict:
        """Add loss, gen_loss, strategy_loss, nll_sum, n_tokens to out; logits [N,V] for targets [N]."""
        nll = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
        n_tokens = (labels != -100).sum()
        gen_loss = nll / n_tokens.clamp(min=1)
        if strategy_loss is None:
            strategy_loss = gen_loss.new_zeros(())
        out.update(loss=gen_loss + l_strategy * strategy_loss, gen_loss=gen_loss,
                   strategy_loss=strategy_loss, nll_sum=nll.detach(), n_tokens=n_tokens)
        return out

    def _grouped_target_states(self, input_ids, attention_mask, strategy_ids, decoder_input_ids,
                               decoder_attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher-forced pass per length group, never padded back to the batch: each group's contexts
        are encoded at the group's own length, its memory vectors come from forward_groups, and its decoder
        runs at the group's longest response against the group's states only. Returns the decoder states at
        the target tokens [N,d] and those targets [N] (group order). Same values as the padded pass up to
        float rounding: no real position reads a pad (causal, padding and cross-attention masks)."""
        strategy_ids = torch.as_tensor(strategy_ids, dtype=torch.long, device=input_ids.device)
        groups = self.length_groups_of(attention_mask)
        states, masks = self._encode_groups(self.encoder, input_ids, attention_mask, groups)
        sids = [strategy_ids[rows] for rows, _ in groups]
        if self.use_memory:
            vecs = self.memory_enhance_module.forward_groups(states, masks, sids, self.memory_bank)
        # per row, one past its last target (targets are right-padded; this also holds if they are not)
        positions = torch.arange(1, labels.size(1) + 1, device=labels.device)
        dec_lens = ((labels != -100) * positions).amax(dim=1)
        dec_groups = [(rows, max(int(dec_lens[rows].max()), 1)) for rows, _ in groups]
        dec_layout = GroupLayout([(len(rows), t) for rows, t in dec_groups])
        dec_ids = torch.cat([decoder_input_ids[rows, :t].reshape(-1) for rows, t in dec_groups])
        dec_masks = [None if decoder_attention_mask is None else decoder_attention_mask[rows, :t]
                     for rows, t in dec_groups]
        if self.use_memory:  # the memory vector is one more encoder position at the end of each row
            states = [torch.cat([h, v.unsqueeze(1).to(h.dtype)], dim=1) for h, v in zip(states, vecs)]
            masks = [torch.cat([m, m.new_ones(m.size(0), 1)], dim=1) for m in masks]
        enc_layout = GroupLayout([h.shape[:2] for h in states])
        hidden = grouped_bart.decode(self.decoder, dec_ids, dec_layout, dec_masks,
                                     GroupLayout.flatten(states), enc_layout, masks)
        labels_flat = torch.cat([labels[rows, :t].reshape(-1) for rows, t in dec_groups])
        keep = labels_flat != -100
        return hidden[keep], labels_flat[keep]
