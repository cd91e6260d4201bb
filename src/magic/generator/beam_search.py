"""Cached beam search for encoder-decoder models: standard and group (diverse) beam search.

transformers 5.x removed group beam search (``num_beam_groups`` / ``diversity_penalty``) from
``generate`` (it now dispatches to the hub repo ``transformers-community/group-beam-search``, which is not
reachable offline), so we implement it once here over a model-agnostic step interface:

    logits, past = model.decode(decoder_input_ids, encoder_states, encoder_mask,
                                past_key_values=past, use_cache=True)

``decoder_input_ids`` is the last token of every beam, shape (B*K, 1); ``logits`` is (B*K, 1, V) or
(B*K, V); ``past`` is an HF cache with ``reorder_cache(beam_idx)`` (``EncoderDecoderCache``) or a nested
tuple of tensors with the beam on dim 0. The encoder is run once by the caller.

Semantics follow Hugging Face:
- ``num_beam_groups == 1``: the beam search of transformers 5.x ``generate`` (top 2K candidates per step,
  an EOS candidate is finished only if it ranks in the top K, finished pool of K hypotheses scored
  ``sum_logprob / generated_len ** length_penalty``, ``early_stopping`` True / False / "never" with HF's
  stopping heuristic, ``max_length`` finishes every beam). Checked token for token against
  ``BartForConditionalGeneration.generate`` in tests/generator/test_beam_search.py.
- ``num_beam_groups > 1``: HF's former ``GroupBeamSearch`` (Vijayakumar et al. 2018, Hamming diversity):
  the K beams are split into G groups of K/G; groups are expanded one after another at each step, and
  group g's log-probabilities are lowered by ``diversity_penalty * count(token)`` over the tokens the
  groups < g chose at this step. As in HF, the penalised scores are what accumulates in the beam score;
  each group keeps its own finished pool and the result is the best hypothesis over all groups.
- ``num_beams == 1``: greedy decoding (HF's generate also switches to greedy there).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

NEG_INF = -1.0e9  # HF's "impossible" score; added (not assigned) so the arithmetic matches generate()


@dataclass
class BeamSearchOutput:
    """sequences: (B * num_return_sequences, 1 + L) token ids starting with the decoder start token,
    padded with ``pad_token_id`` after EOS; scores: (B * num_return_sequences,) length-normalised scores
    (for greedy: summed log-probabilities); lengths: generated tokens per row, EOS included."""
    sequences: torch.Tensor
    scores: torch.Tensor
    lengths: torch.Tensor


def reorder_past(past: Any, beam_idx: torch.Tensor) -> Any:
    """Reorder a decoder cache along the beam/batch dimension (dim 0). HF caches reorder in place."""
    if past is None:
        return None
    if hasattr(past, "reorder_cache"):
        out = past.reorder_cache(beam_idx)
        return past if out is None else out
    if isinstance(past, torch.Tensor):
        return past.index_select(0, beam_idx.to(past.device))
    if isinstance(past, (tuple, list)):
        return type(past)(reorder_past(p, beam_idx) for p in past)
    raise TypeError(f"cannot reorder a cache of type {type(past).__name__}")


def expand_for_beams(x: Optional[torch.Tensor], num_beams: int) -> Optional[torch.Tensor]:
    """(B, ...) -> (B * num_beams, ...), each row repeated num_beams times consecutively."""
    return None if x is None else x.repeat_interleave(num_beams, dim=0)


def _step(model, tokens: torch.Tensor, enc: torch.Tensor, enc_mask: Optional[torch.Tensor], past: Any):
    """One cached decoder step. tokens: (N, 1) -> log-probs (N, V) float32, new past."""
    logits, past = model.decode(tokens, enc, enc_mask, past_key_values=past, use_cache=True)
    if logits.dim() == 3:
        logits = logits[:, -1, :]
    return F.log_softmax(logits.float(), dim=-1), past


def _eos_tensor(eos_token_id: Union[int, Sequence[int], None], device) -> torch.Tensor:
    if eos_token_id is None:
        return torch.empty(0, dtype=torch.long, device=device)
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device)


@torch.no_grad()
def greedy_search(model, encoder_states: torch.Tensor, encoder_mask: Optional[torch.Tensor], *,
                  decoder_start_token_id: int, eos_token_id, pad_token_id: int, max_new_tokens: int,
                  min_new_tokens: int = 0) -> BeamSearchOutput:
    """Argmax decoding with the KV cache; each row stops at its first EOS (then padded).

    encoder_states: (B, S, d); encoder_mask: (B, S) or None.
    """
    device = encoder_states.device
    bsz = encoder_states.shape[0]
    eos = _eos_tensor(eos_token_id, device)
    seqs = torch.full((bsz, 1), decoder_start_token_id, dtype=torch.long, device=device)
    done = torch.zeros(bsz, dtype=torch.bool, device=device)
    lengths = torch.zeros(bsz, dtype=torch.long, device=device)
    scores = torch.zeros(bsz, dtype=torch.float, device=device)
    past = None
    for t in range(max_new_tokens):
        log_probs, past = _step(model, seqs[:, -1:], encoder_states, encoder_mask, past)
        if t < min_new_tokens and eos.numel():
            log_probs[:, eos] = -float("inf")
        best, tok = log_probs.max(dim=-1)
        tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
        scores = scores + torch.where(done, torch.zeros_like(best), best)
        lengths = lengths + (~done).long()
        seqs = torch.cat([seqs, tok[:, None]], dim=1)
        done = done | torch.isin(tok, eos)
        if bool(done.all()):
            break
    return BeamSearchOutput(seqs, scores, lengths)


def group_diversity(num_beams: int, num_beam_groups: int, diversity_penalty: float) -> float:
    """The one rule for num_beam_groups / diversity_penalty; returns the diversity penalty that acts.

    num_beam_groups must be >= 1 and divide num_beams; with several groups the penalty must be > 0 (valid,
    but HF refused it: the groups would be redundant); with one group it has no effect (a warning when set)
    and 0.0 is returned.
    """
    if num_beam_groups < 1 or num_beams % num_beam_groups:
        raise ValueError(f"num_beams ({num_beams}) must be divisible by num_beam_groups ({num_beam_groups})")
    if num_beam_groups > 1 and diversity_penalty == 0.0:
        raise ValueError("num_beam_groups > 1 needs diversity_penalty > 0 (otherwise the groups are redundant)")
    if num_beam_groups == 1:
        if diversity_penalty:
            warnings.warn(f"diversity_penalty {diversity_penalty} has no effect with num_beam_groups 1 "
                          "(standard beam search)", stacklevel=2)
        return 0.0
    return float(diversity_penalty)


@torch.no_grad()
def _check_search_args(num_beams, num_beam_groups, diversity_penalty, max_new_tokens, num_return_sequences,
                       early_stopping) -> float:
    """Refuse impossible settings before any decoding; returns the diversity penalty that acts."""
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"need num_beams >= 1 and max_new_tokens >= 1, got {num_beams}, {max_new_tokens}")
    diversity_penalty = group_diversity(num_beams, num_beam_groups, diversity_penalty)
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be in [1, num_beams], got {num_return_sequences}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    return diversity_penalty


@dataclass
class _Beams:
    """The search state, laid out (batch B, group G, beam in group S, ...): running beams and the finished
    pool of each group, and whether a group can still improve its pool."""
    run_seq: torch.Tensor     # (B, G, S, max_len) token ids, start token first
    run_score: torch.Tensor   # (B, G, S) summed log-probs
    fin_seq: torch.Tensor     # (B, G, S, max_len)
    fin_score: torch.Tensor   # (B, G, S) length-normalised scores (NEG_INF: empty slot)
    fin_len: torch.Tensor     # (B, G, S) generated tokens
    fin_flag: torch.Tensor    # (B, G, S) slot holds a finished hypothesis
    improvable: torch.Tensor  # (B, G)

    @classmethod
    def start(cls, B: int, G: int, S: int, max_len: int, start_id: int, pad_id: int, device) -> "_Beams":
        run_seq = torch.full((B, G, S, max_len), pad_id, dtype=torch.long, device=device)
        run_seq[..., 0] = start_id
        run_score = torch.zeros((B, G, S), dtype=torch.float, device=device)
        run_score[:, :, 1:] = NEG_INF  # all beams start identical: expand only the first of each group
        return cls(run_seq, run_score, run_seq.clone(), torch.full((B, G, S), NEG_INF, dtype=torch.float, device=device),
                   torch.zeros((B, G, S), dtype=torch.long, device=device),
                   torch.zeros((B, G, S), dtype=torch.bool, device=device),
                   torch.ones((B, G), dtype=torch.bool, device=device))


def _step_group(st: _Beams, g: int, lp: torch.Tensor, cur_len: int, n_keep: int, top_s: torch.Tensor,
                eos: torch.Tensor, length_penalty: float, early_stopping, prompt_len: int = 1):
    """One step of group ``g`` given its (diversity-penalised) log-probs ``lp`` (B, S, V): the next running
    beams and the merged finished pool. Returns (the beam each new running beam extends (B, S), its tokens
    (B, S), whether each candidate finished (B, n_keep))."""
    B, S, V = lp.shape
    max_len = st.run_seq.shape[-1]
    acc = (lp + st.run_score[:, g, :, None]).reshape(B, S * V)
    top_val, top_idx = torch.topk(acc, n_keep, dim=-1)
    src = top_idx // V  # beam (within group) each candidate extends
    tok = top_idx % V
    cand = torch.gather(st.run_seq[:, g], 1, src[..., None].expand(B, n_keep, max_len)).clone()
    cand[:, :, cur_len] = tok
    hits = torch.isin(tok, eos) | (cur_len + 1 >= max_len)

    # Next running beams: best S candidates that did not just finish.
    run_val = top_val + hits.float() * NEG_INF
    nxt = torch.topk(run_val, S, dim=-1).indices
    st.run_seq[:, g] = torch.gather(cand, 1, nxt[..., None].expand(B, S, max_len))
    st.run_score[:, g] = torch.gather(run_val, 1, nxt)

    # Finished pool: merge newly finished top-S candidates, keep the best S (length-normalised).
    gen_len = cur_len + 1 - prompt_len
    fin_val = top_val / (gen_len ** length_penalty)
    full = st.fin_flag[:, g].all(dim=-1, keepdim=True) & (early_stopping is True)
    fin_val = fin_val + full.float() * NEG_INF
    fin_val = fin_val + (~st.improvable[:, g, None]).float() * NEG_INF
    just = hits & top_s[None, :]
    fin_val = fin_val + (~just).float() * NEG_INF
    m_seq = torch.cat([st.fin_seq[:, g], cand], dim=1)
    m_val = torch.cat([st.fin_score[:, g], fin_val], dim=1)
    m_len = torch.cat([st.fin_len[:, g], torch.full_like(tok, gen_len)], dim=1)
    m_flag = torch.cat([st.fin_flag[:, g], just], dim=1)
    keep = torch.topk(m_val, S, dim=-1).indices
    st.fin_seq[:, g] = torch.gather(m_seq, 1, keep[..., None].expand(B, S, max_len))
    st.fin_score[:, g] = torch.gather(m_val, 1, keep)
    st.fin_len[:, g] = torch.gather(m_len, 1, keep)
    st.fin_flag[:, g] = torch.gather(m_flag, 1, keep)
    return torch.gather(src, 1, nxt), torch.gather(tok, 1, nxt), hits


def _keep_searching(st: _Beams, cur_len: int, max_len: int, length_penalty: float, early_stopping,
                    hits_all: list, prompt_len: int = 1) -> bool:
    """HF's stop heuristic: can the best running beam still beat the worst finished one (per group)?"""
    if early_stopping == "never" and length_penalty > 0.0:
        best_len = max_len - prompt_len
    else:
        best_len = cur_len - prompt_len
    best_possible = st.run_score[..., :1] / (best_len ** length_penalty)
    worst_fin = torch.where(st.fin_flag, st.fin_score.min(dim=-1, keepdim=True).values,
                            torch.full_like(st.fin_score, NEG_INF))
    st.improvable = st.improvable & (best_possible > worst_fin).any(dim=-1)
    open_beam = not (bool(st.fin_flag.all()) and early_stopping is True)
    valid = not bool(torch.stack(hits_all).all())
    return bool(st.improvable.any()) and open_beam and valid


def _best_hypotheses(st: _Beams, n: int) -> BeamSearchOutput:
    """The ``n`` best finished hypotheses over all groups of each sample, best first."""
    B, G, S, max_len = st.fin_seq.shape
    K = G * S
    all_score = st.fin_score.reshape(B, K)
    order = torch.sort(all_score, dim=-1, descending=True, stable=True).indices[:, :n]
    seqs = torch.gather(st.fin_seq.reshape(B, K, max_len), 1, order[..., None].expand(-1, -1, max_len))
    scores = torch.gather(all_score, 1, order)
    lengths = torch.gather(st.fin_len.reshape(B, K), 1, order)
    out_len = 1 + int(lengths.max())
    return BeamSearchOutput(seqs.reshape(B * n, max_len)[:, :out_len], scores.reshape(-1), lengths.reshape(-1))


def beam_search(model, encoder_states: torch.Tensor, encoder_mask: Optional[torch.Tensor], *,
                decoder_start_token_id: int, eos_token_id, pad_token_id: int, max_new_tokens: int,
                num_beams: int, num_beam_groups: int = 1, diversity_penalty: float = 0.0,
                length_penalty: float = 1.0, early_stopping: Union[bool, str] = False,
                min_new_tokens: int = 0, num_return_sequences: int = 1) -> BeamSearchOutput:
    """(Group) beam search over ``model.decode`` with a KV cache; see the module docstring.

    encoder_states: (B, S, d) and encoder_mask: (B, S) from one encoder pass (not expanded);
    max_new_tokens: generated tokens at most (EOS included), i.e. HF ``max_length = 1 + max_new_tokens``;
    min_new_tokens: EOS is forbidden before this many tokens (HF ``min_length``, which counts the start
    token, equals 1 + min_new_tokens for an encoder-decoder).
    Returns the ``num_return_sequences`` best hypotheses per sample, best first.

    Each step: one decoder call for all beams; per group, its tokens penalised by the tokens earlier groups
    chose at this step (Hamming diversity), the group's next beams and finished pool (``_step_group``); the
    cache follows the surviving beams; stop when no group can improve (``_keep_searching``).
    """
    diversity_penalty = _check_search_args(num_beams, num_beam_groups, diversity_penalty, max_new_tokens,
                                           num_return_sequences, early_stopping)
    if num_beams == 1:
        return greedy_search(model, encoder_states, encoder_mask, decoder_start_token_id=decoder_start_token_id,
                             eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                             max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)

    device = encoder_states.device
    B, K, G = encoder_states.shape[0], num_beams, num_beam_groups
    S = K // G  # beams per group
    eos = _eos_tensor(eos_token_id, device)
    n_keep = max(2, 1 + eos.numel()) * S  # candidates per group and step (HF keeps 2K so K stay alive)
    max_len = 1 + max_new_tokens  # sequence length incl. the start token (HF max_length)
    enc = expand_for_beams(encoder_states, K)
    enc_mask = expand_for_beams(encoder_mask, K)
    st = _Beams.start(B, G, S, max_len, decoder_start_token_id, pad_token_id, device)
    top_s = torch.arange(n_keep, device=device) < S  # only top-S candidates may finish (HF)
    offsets = (torch.arange(B, device=device)[:, None, None] * K + torch.arange(G, device=device)[None, :, None] * S)

    past, cur_len = None, 1
    while True:
        log_probs, past = _step(model, st.run_seq[..., cur_len - 1].reshape(B * K, 1), enc, enc_mask, past)
        log_probs = log_probs.view(B, G, S, -1)
        if cur_len - 1 < min_new_tokens and eos.numel():
            log_probs[..., eos] = -float("inf")
        hits_all, beam_src = [], torch.empty((B, G, S), dtype=torch.long, device=device)
        chosen = torch.zeros((B, log_probs.shape[-1]), dtype=torch.float, device=device)  # tokens of groups < g
        for g in range(G):
            lp = log_probs[:, g]
            if g > 0 and diversity_penalty:
                lp = lp - diversity_penalty * chosen[:, None, :]
            beam_src[:, g], tokens, hits = _step_group(st, g, lp, cur_len, n_keep, top_s, eos, length_penalty,
                                                       early_stopping)
            hits_all.append(hits)
            chosen.scatter_add_(1, tokens, torch.ones((B, S), device=device))
        past = reorder_past(past, (beam_src + offsets).reshape(-1))  # the cache follows the surviving beams
        cur_len += 1
        if not _keep_searching(st, cur_len, max_len, length_penalty, early_stopping, hits_all):
            break
    return _best_hypotheses(st, num_return_sequences)
