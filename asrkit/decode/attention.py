"""Attention and joint CTC/attention beam search for hybrid models.

* :func:`attention_beam_search` — label-synchronous beam search with the attention decoder
  alone (ESPnet's ``BeamSearch`` with ``ctc_weight=0``).
* :func:`joint_ctc_attention_beam_search` — one-pass joint decoding (Watanabe et al., 2017,
  "Hybrid CTC/attention architecture for end-to-end speech recognition", sec. 4.3; Hori et al.,
  2017): every hypothesis h is ranked by ``(1 - λ) log p_att(h) + λ log p_ctc(h…)``, where
  ``p_ctc(h…)`` is the CTC *prefix* probability (the total probability of all label sequences
  that start with h) for an open hypothesis, and the full CTC probability of h once it ends in
  ``<sos/eos>``. :class:`CTCPrefixScorer` computes it (ESPnet's ``CTCPrefixScore``).
* :func:`end_detect` — ESPnet's end detection (Watanabe et al., 2017, eq. 50).

Conventions shared by both searches:

- Input is a batch of encoder outputs ``enc`` (B, T', D) with lengths ``enc_lens`` (B,), from
  ``model.encode``. Utterances are searched one after another (a per-utterance loop: simple and
  fast enough on CPU; within an utterance all hypotheses of a step go through the decoder as one
  batch).
- Output: one n-best list per utterance, ``[(token_ids, score), …]`` best first. Token ids
  exclude ``<sos/eos>``; scores are natural-log and higher is better (the weighted sum above plus
  ``lm_weight × LM`` and ``length_penalty`` per token, divided by ``(len + 1) ** alpha`` under
  ``length_norm``).
- Vocabulary: id 0 (blank) is never emitted; id 2 (``<sos/eos>``) starts every decoder prefix
  and ends a hypothesis.
- Max length: at most ``max(1, int(maxlen_ratio × T'))`` tokens (``maxlen_ratio <= 0``: T',
  ESPnet's convention), T' counting this utterance's valid encoder frames. At that length only
  ``<sos/eos>`` may follow, and it is scored (ESPnet appends it without a score).
- Pre-beam (ESPnet's ``pre_beam_ratio``): each hypothesis is extended only with the
  ``int(pre_beam_ratio × beam)`` tokens the attention decoder scores highest; the CTC prefix
  scorer and the LM hook see only those. With ``ctc_weight=1`` no decoder is used and every
  token is scored by CTC (exact, O(T' V) per hypothesis and step).
- Devices: the decoder runs where the model is; the CTC prefix recursion (a Python loop over
  frames, vectorised over candidates) runs on the CPU, where its many tiny steps are cheapest.
- LM hook (shallow fusion): ``scorer(prefix, token) -> log P(token | prefix)`` with the same
  contract as :data:`asrkit.decode.ctc.PrefixScorer`; ``prefix`` is the tuple of tokens so far
  (no ``<sos/eos>``). It is also asked for ``token = 2`` (end of sentence); a scorer without an
  end-of-sentence model should return 0.0 there.

Shapes: ``B`` batch, ``T'`` encoder frames, ``D`` encoder width, ``U`` tokens, ``V``
vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID

__all__ = [
    "CTCPrefixScorer",
    "CTCPrefixState",
    "NBest",
    "Scorer",
    "attention_beam_search",
    "attention_greedy",
    "end_detect",
    "joint_ctc_attention_beam_search",
]

#: LM hook: ``scorer(prefix, token)`` → log P(token | prefix), natural log (the contract of
#: :data:`asrkit.decode.ctc.PrefixScorer`; here ``token`` may also be ``<sos/eos>`` = 2).
Scorer = Callable[[tuple[int, ...], int], float]

#: One utterance's n-best list: ``[(token_ids, score), …]``, best first.
NBest = list[tuple[list[int], float]]

_NEG_INF = float("-inf")
#: ESPnet's ``end_detect`` threshold: ``np.log(1 * np.exp(-10))``.
D_END = -10.0


# --------------------------------------------------------------------------- CTC prefix score


@dataclass
class CTCPrefixState:
    """CTC forward variables of one prefix g.

    Attributes:
        r: (T, 2) log r_t^n(g), log r_t^b(g): probability of the first t + 1 frames emitting g
            and ending in a non-blank (the last label of g) or in blank.
        score: log prefix probability ψ(g) (0.0 for the empty prefix).
    """

    r: torch.Tensor
    score: float


class CTCPrefixScorer:
    """CTC prefix probabilities for label-synchronous search (ESPnet's ``CTCPrefixScore``).

    For a prefix g with forward variables r(g) and a candidate label c, the prefix probability
    of h = g + c is (Watanabe et al., 2017, Algorithm 2)::

        φ_t = r_t^n(g) + r_t^b(g), or r_t^b(g) alone if c is g's last label
        r_t^n(h) = (r_{t-1}^n(h) + φ_{t-1}) · p_t(c)
        r_t^b(h) = (r_{t-1}^n(h) + r_{t-1}^b(h)) · p_t(blank)
        ψ(h) = r_0^n(h) + Σ_{t ≥ 1} φ_{t-1} · p_t(c)

    (in log space), and for c = ``<sos/eos>`` ψ(h) = r_{T-1}^n(g) + r_{T-1}^b(g), the full CTC
    probability of g. The recursion runs over frames in Python, vectorised over candidates.

    Args:
        log_probs: (T, V) CTC log-posteriors of one utterance's valid frames.
        blank: blank id.
        eos: ``<sos/eos>`` id.

    Raises:
        ValueError: if ``log_probs`` is not 2-D with T ≥ 1.
    """

    def __init__(self, log_probs: torch.Tensor, blank: int = BLANK_ID, eos: int = SOS_EOS_ID):
        if log_probs.dim() != 2 or log_probs.size(0) < 1:
            raise ValueError(f"log_probs must be (T, V) with T >= 1, got {tuple(log_probs.shape)}")
        self.x = log_probs
        self.blank = blank
        self.eos = eos

    def initial_state(self) -> CTCPrefixState:
        """State of the empty prefix: r^n = -inf, r^b_t = Σ_{τ ≤ t} log p_τ(blank), ψ = 0."""
        r = torch.full((self.x.size(0), 2), _NEG_INF, dtype=self.x.dtype, device=self.x.device)
        r[:, 1] = torch.cumsum(self.x[:, self.blank], dim=0)
        return CTCPrefixState(r, 0.0)

    def score(self, prefix: Sequence[int], state: CTCPrefixState,
              candidates: Sequence[int] | torch.Tensor
              ) -> tuple[torch.Tensor, list[CTCPrefixState]]:
        """Log prefix probabilities of ``prefix + c`` for each candidate c.

        Args:
            prefix: the labels of g (no ``<sos/eos>``); only its length and last label matter.
            state: g's state (from :meth:`initial_state` or an earlier :meth:`score`).
            candidates: (C,) label ids; ``eos`` gives the full CTC probability of g, ``blank``
                gives -inf.

        Returns:
            ``scores`` (C,) log ψ(g + c) (absolute, not relative to g) and one new state per
            candidate.
        """
        x = self.x
        num_frames = x.size(0)
        cs = torch.as_tensor(candidates, dtype=torch.long, device=x.device).reshape(-1)
        num_c = cs.numel()
        out_len = len(prefix)
        xs = x[:, cs]  # (T, C)
        r = torch.full((num_frames, 2, num_c), _NEG_INF, dtype=x.dtype, device=x.device)
        if out_len == 0:
            r[0, 0] = xs[0]
        r_prev = state.r
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T,)
        log_phi = r_sum[:, None].repeat(1, num_c)
        if out_len > 0:
            same = cs == int(prefix[-1])
            log_phi[:, same] = r_prev[:, 1:2]
        start = max(out_len, 1)
        blank_lp = x[:, self.blank]
        for t in range(start, num_frames):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], log_phi[t - 1]) + xs[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + blank_lp[t]
        terms = [r[start - 1, 0][None]]
        if start < num_frames:
            terms.append(log_phi[start - 1: num_frames - 1] + xs[start:])
        log_psi = torch.logsumexp(torch.cat(terms, dim=0), dim=0)
        log_psi = torch.where(cs == self.eos, r_sum[-1], log_psi)
        log_psi = log_psi.masked_fill(cs == self.blank, _NEG_INF)
        states = [CTCPrefixState(r[:, :, i], float(log_psi[i])) for i in range(num_c)]
        return log_psi, states


# --------------------------------------------------------------------------- end detection


def end_detect(ended: Sequence[tuple[int, float]], i: int, m: int = 3,
               d_end: float = D_END) -> bool:
    """ESPnet's ``end_detect`` (Watanabe et al., 2017, eq. 50): stop the search at step i?

    True when, for each of the ``m`` lengths ``i, i - 1, …, i - m + 1``, some hypothesis of that
    length has ended and the best of them scores more than ``|d_end|`` below the best ended
    hypothesis overall. Lengths count ``<sos>`` and ``<eos>`` as ESPnet's ``yseq`` does, i.e.
    ``num_tokens + 2``; ESPnet's default ``d_end = log(1 · e^-10) = -10``.

    Args:
        ended: ``(num_tokens, score)`` of every ended hypothesis so far (no sos/eos counted).
        i: current output step (0-based; hypotheses hold i + 1 tokens after step i).
        m: number of consecutive lengths that must all be hopeless.
        d_end: log-score margin (negative).

    Returns:
        Whether to stop.
    """
    if not ended:
        return False
    best = max(score for _, score in ended)
    count = 0
    for k in range(m):
        same = [score for n, score in ended if n + 2 == i - k]
        if same and max(same) - best < d_end:
            count += 1
    return count == m


# --------------------------------------------------------------------------- beam search


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    score: float  # weighted total, length penalty included
    att: float = 0.0  # Σ log p_att
    ctc: float = 0.0  # log ψ_ctc(tokens)
    lm: float = 0.0  # Σ scorer(...)
    ctc_state: CTCPrefixState | None = field(default=None, repr=False)
    done: bool = False  # ended with <sos/eos>


def _max_tokens(maxlen_ratio: float, num_frames: int) -> int:
    if maxlen_ratio <= 0:
        return max(1, num_frames)
    return max(1, int(maxlen_ratio * num_frames))


def _search_one(model: nn.Module, enc: torch.Tensor, enc_len: int, ctc_lp: torch.Tensor | None,
                *, beam: int, ctc_weight: float, maxlen_ratio: float, length_penalty: float,
                length_norm: bool, length_norm_alpha: float, end_detection: bool,
                nbest: int, pre_beam_ratio: float, scorer: Scorer | None,
                lm_weight: float) -> NBest:
    """Search one utterance: enc (1, T', D) valid frames only, ctc_lp (T', V) or None."""
    use_att = ctc_weight < 1.0
    use_ctc = ctc_weight > 0.0
    use_lm = scorer is not None and lm_weight != 0.0
    device = enc.device
    lens = torch.tensor([enc_len], device=device)
    vocab = ctc_lp.size(-1) if ctc_lp is not None else None
    ctc = CTCPrefixScorer(ctc_lp) if use_ctc else None
    maxlen = _max_tokens(maxlen_ratio, enc_len)
    running = [_Hyp((), 0.0, ctc_state=ctc.initial_state() if ctc else None)]
    ended: list[_Hyp] = []
    for i in range(maxlen + 1):
        if use_att:
            prefixes = torch.tensor([(SOS_EOS_ID, *h.tokens) for h in running], device=device)
            att_lp = model.decoder.score(enc, lens, prefixes).float().cpu()
            att_lp[:, BLANK_ID] = _NEG_INF
            vocab = att_lp.size(-1)
        pool: list[_Hyp] = []
        for n, hyp in enumerate(running):
            if i == maxlen:
                cands = [SOS_EOS_ID]
            elif use_att:
                k = min(vocab - 1, max(1, int(pre_beam_ratio * beam)))
                cands = att_lp[n].topk(k).indices.tolist()
            else:
                cands = [c for c in range(vocab) if c != BLANK_ID]
            if use_ctc:
                ctc_scores, ctc_states = ctc.score(hyp.tokens, hyp.ctc_state, cands)
                ctc_scores = ctc_scores.tolist()
            for j, c in enumerate(cands):
                att = hyp.att + (float(att_lp[n, c]) if use_att else 0.0)
                ctc_score = ctc_scores[j] if use_ctc else 0.0
                lm = hyp.lm + (float(scorer(hyp.tokens, c)) if use_lm else 0.0)
                total = ((1.0 - ctc_weight) * att if use_att else 0.0) \
                    + (ctc_weight * ctc_score if use_ctc else 0.0) \
                    + (lm_weight * lm if use_lm else 0.0) \
                    + length_penalty * (len(hyp.tokens) + 1)
                if total == _NEG_INF or math.isnan(total):
                    continue
                if c == SOS_EOS_ID:
                    pool.append(_Hyp(hyp.tokens, total, att, ctc_score, lm, done=True))
                else:
                    pool.append(_Hyp((*hyp.tokens, c), total, att, ctc_score, lm,
                                     ctc_states[j] if use_ctc else None))
        pool.sort(key=lambda h: h.score, reverse=True)
        running = []
        for h in pool[:beam]:
            (ended if h.done else running).append(h)
        if end_detection and end_detect([(len(h.tokens), h.score) for h in ended], i):
            break
        if not running:
            break
    if not ended:  # only when every extension scored -inf; fall back to the open hypotheses
        ended = running

    def final(h: _Hyp) -> float:
        if not length_norm:
            return h.score
        return h.score / float(len(h.tokens) + 1) ** length_norm_alpha

    ranked = sorted(ended, key=final, reverse=True)[:nbest]
    return [(list(h.tokens), final(h)) for h in ranked]


def _check(enc: torch.Tensor, enc_lens: torch.Tensor, beam: int) -> None:
    if enc.dim() != 3 or enc_lens.dim() != 1 or enc_lens.size(0) != enc.size(0):
        raise ValueError(f"expected enc (B, T', D) and enc_lens (B,), got {tuple(enc.shape)} "
                         f"and {tuple(enc_lens.shape)}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")


@torch.no_grad()
def joint_ctc_attention_beam_search(
        model: nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, beam: int = 10,
        ctc_weight: float = 0.3, *, ctc_log_probs: torch.Tensor | None = None,
        maxlen_ratio: float = 1.0, length_penalty: float = 0.0, length_norm: bool = False,
        length_norm_alpha: float = 1.0, end_detection: bool = True, nbest: int | None = None,
        pre_beam_ratio: float = 1.5, scorer: Scorer | None = None, lm_weight: float = 0.0,
) -> list[NBest]:
    """One-pass joint CTC/attention beam search (Watanabe et al., 2017).

    Each step extends every running hypothesis h with its pre-beam candidates c, scores
    ``(1 - λ) log p_att(h + c) + λ log ψ_ctc(h + c) + lm_weight · LM(h + c) +
    length_penalty · |h + c|`` (``|·|`` counting ``<sos/eos>`` when c is it), keeps the
    ``beam`` best extensions overall and moves those ending in ``<sos/eos>`` to the ended list
    (ESPnet's ``BeamSearch``). The search stops at the max length, when no hypothesis is left
    running, or when :func:`end_detect` fires (``end_detection``).

    Args:
        model: a :class:`asrkit.models.base.CTCModel` (in eval mode); its ``decoder`` is used
            when ``ctc_weight < 1``, its ``ctc_out`` when ``ctc_log_probs`` is None.
        enc: (B, T', D) encoder output; enc_lens: (B,) valid frames.
        beam: beam width (≥ 1).
        ctc_weight: λ in [0, 1]; 0 is :func:`attention_beam_search`, 1 is CTC prefix search
            (no decoder needed).
        ctc_log_probs: optional (B, T', V) CTC log-posteriors, if the caller already has them.
        maxlen_ratio: max tokens = ``max(1, int(maxlen_ratio × T'))``; ≤ 0 means T'.
        length_penalty: added to the score per output token (``<sos/eos>`` included); > 0
            favours longer outputs (ESPnet's ``penalty``).
        length_norm: rank the ended hypotheses by ``score / (len + 1) ** length_norm_alpha``
            (len in tokens, + 1 for ``<sos/eos>``); the returned scores are normalised too.
        length_norm_alpha: exponent α of the length normalisation.
        end_detection: apply :func:`end_detect` (M = 3, D_end = -10) after every step.
        nbest: hypotheses returned per utterance (default ``beam``).
        pre_beam_ratio: extensions per hypothesis = ``int(pre_beam_ratio × beam)`` best
            attention tokens (all tokens when ``ctc_weight == 1``).
        scorer: optional LM hook ``(prefix, token) -> log P`` (:data:`Scorer`).
        lm_weight: weight of the hook's log-probabilities.

    Returns:
        One n-best list per utterance, ``[(token_ids, score), …]`` best first.

    Raises:
        ValueError: on bad shapes, ``beam < 1``, ``ctc_weight`` outside [0, 1], or
            ``ctc_weight < 1`` with a model that has no decoder.
    """
    _check(enc, enc_lens, beam)
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if ctc_weight < 1.0 and getattr(model, "decoder", None) is None:
        raise ValueError(f"ctc_weight={ctc_weight} needs an attention decoder, and this model "
                         "has none (model.decoder is null); use ctc_weight=1.0 or CTC search")
    if ctc_weight > 0.0 and ctc_log_probs is None:
        ctc_log_probs = model.ctc_out(enc).float().log_softmax(-1)
    results = []
    for b, n in enumerate(enc_lens.tolist()):
        n = max(1, min(int(n), enc.size(1)))
        results.append(_search_one(
            model, enc[b:b + 1, :n], n,
            ctc_log_probs[b, :n].float().cpu() if ctc_weight > 0.0 else None,
            beam=beam, ctc_weight=ctc_weight, maxlen_ratio=maxlen_ratio,
            length_penalty=length_penalty, length_norm=length_norm,
            length_norm_alpha=length_norm_alpha, end_detection=end_detection,
            nbest=nbest or beam, pre_beam_ratio=pre_beam_ratio, scorer=scorer,
            lm_weight=lm_weight))
    return results


def attention_beam_search(
        model: nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, beam: int = 10, *,
        maxlen_ratio: float = 1.0, length_penalty: float = 0.0, length_norm: bool = False,
        length_norm_alpha: float = 1.0, end_detection: bool = True, nbest: int | None = None,
        pre_beam_ratio: float = 1.5, scorer: Scorer | None = None, lm_weight: float = 0.0,
) -> list[NBest]:
    """Beam search with the attention decoder alone (no CTC).

    The score of a hypothesis is ``log p_att + lm_weight · LM + length_penalty · length``.
    Attention-only search tends to end early or loop on long utterances; the length penalty,
    length normalisation and above all :func:`joint_ctc_attention_beam_search` counter that.

    Args:
        model: a hybrid :class:`asrkit.models.base.CTCModel` (``has_decoder``), in eval mode.
        enc: (B, T', D) encoder output; enc_lens: (B,) valid frames.
        beam, maxlen_ratio, length_penalty, length_norm, length_norm_alpha, end_detection,
            nbest, pre_beam_ratio, scorer, lm_weight: as for
            :func:`joint_ctc_attention_beam_search`.

    Returns:
        One n-best list per utterance, ``[(token_ids, score), …]`` best first.

    Raises:
        ValueError: on bad shapes, ``beam < 1``, or a model without a decoder.
    """
    return joint_ctc_attention_beam_search(
        model, enc, enc_lens, beam, 0.0, maxlen_ratio=maxlen_ratio,
        length_penalty=length_penalty, length_norm=length_norm,
        length_norm_alpha=length_norm_alpha, end_detection=end_detection, nbest=nbest,
        pre_beam_ratio=pre_beam_ratio, scorer=scorer, lm_weight=lm_weight)


@torch.no_grad()
def attention_greedy(model: nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, *,
                     maxlen_ratio: float = 1.0) -> list[list[int]]:
    """Batched greedy decoding with the attention decoder (beam 1, all utterances at once).

    At every step the whole batch's prefixes go through ``model.decoder.score`` as one batch
    and each utterance takes its most probable next token (blank excluded) until it emits
    ``<sos/eos>`` or reaches its maximum length (``maxlen_ratio`` as in
    :func:`joint_ctc_attention_beam_search`). Used for the dev WER of attention-only models
    during training, where a beam search per utterance would cost too much.

    Args:
        model: a hybrid :class:`asrkit.models.base.CTCModel` (``has_decoder``), in eval mode.
        enc: (B, T', D) encoder output; enc_lens: (B,) valid frames.
        maxlen_ratio: maximum tokens per encoder frame (<= 0: T').

    Returns:
        B lists of token ids (without ``<sos/eos>``).

    Raises:
        ValueError: on bad shapes or a model without a decoder.
    """
    _check(enc, enc_lens, 1)
    if not getattr(model, "has_decoder", False):
        raise ValueError("attention_greedy needs a model trained with an attention decoder")
    limits = [_max_tokens(maxlen_ratio, int(n)) for n in enc_lens.tolist()]
    batch = enc.size(0)
    prefixes = torch.full((batch, 1), SOS_EOS_ID, dtype=torch.long, device=enc.device)
    done = torch.zeros(batch, dtype=torch.bool, device=enc.device)
    limit = torch.tensor(limits, device=enc.device)
    for step in range(max(limits)):
        lp = model.decoder.score(enc, enc_lens, prefixes)
        lp[:, BLANK_ID] = _NEG_INF
        nxt = lp.argmax(-1)
        nxt = torch.where(done | (limit <= step), torch.full_like(nxt, SOS_EOS_ID), nxt)
        done |= nxt == SOS_EOS_ID
        prefixes = torch.cat([prefixes, nxt[:, None]], 1)
        if bool(done.all()):
            break
    out = []
    for row in prefixes[:, 1:].tolist():
        out.append(row[:row.index(SOS_EOS_ID)] if SOS_EOS_ID in row else row)
    return out
