"""CTC search algorithms over frame posteriors.

* :func:`ctc_greedy` — best path: argmax per frame, merge repeats, drop blanks.
* :func:`ctc_prefix_beam_search` — prefix beam search (Hannun et al., 2014, "First-pass large
  vocabulary continuous speech recognition using bi-directional recurrent DNNs",
  arXiv:1408.2873): keeps the ``beam`` best label prefixes, each with the total probability of
  all alignments that collapse to it, split into alignments ending in blank and in non-blank.
  It returns an n-best list and accepts an optional prefix scorer (an LM) through a hook.

Shapes: ``B`` batch, ``T`` frames, ``V`` vocabulary (blank included). Scores are natural-log
probabilities; higher is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from asrkit.text.tokenizer import BLANK_ID

__all__ = [
    "PrefixScorer",
    "ctc_greedy",
    "ctc_prefix_beam_search",
    "ctc_prefix_beam_search_batch",
]

#: An LM hook: ``scorer(prefix, token)`` → log P(token | prefix) (natural log). ``prefix`` is the
#: tuple of non-blank token ids already emitted (``()`` at the start of the sentence).
PrefixScorer = Callable[[tuple[int, ...], int], float]

_NEG_INF = float("-inf")


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = BLANK_ID
               ) -> list[list[int]]:
    """Best-path CTC decoding (Graves et al., 2006): argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) log posteriors (or any scores; only the argmax matters).
        lengths: (B,) valid frames.
        blank: blank id.

    Returns:
        One token-id list per utterance.
    """
    best = log_probs.argmax(-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(best[b, :n])
        out.append(path[path != blank].tolist())
    return out


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats, exact when either is -inf."""
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _candidates(log_probs: torch.Tensor, blank: int, prune: float | None,
                token_topk: int | None) -> list[list[int]]:
    """Per frame, the non-blank token ids worth extending a prefix with, best first.

    Vectorised over frames and vocabulary: one ``torch.topk`` over the (T, V) matrix with the
    blank column masked out, then the log-probability threshold ``prune``.
    """
    num_frames, vocab = log_probs.shape
    k = vocab - 1 if token_topk is None else min(token_topk, vocab - 1)
    if k <= 0 or num_frames == 0:
        return [[] for _ in range(num_frames)]
    masked = log_probs.clone()
    masked[:, blank] = _NEG_INF
    top_lp, top_id = masked.topk(k, dim=-1)
    keep = top_lp > _NEG_INF
    if prune is not None:
        keep &= top_lp >= prune
    ids, kept = top_id.tolist(), keep.tolist()
    return [[c for c, ok in zip(row, ok_row) if ok] for row, ok_row in zip(ids, kept)]


#: Frames converted to float64 Python rows at a time by :func:`ctc_prefix_beam_search` (a
#: whole 1-hour utterance at once would be ~90,000 × V Python floats, 2.9 GB at V = 1000).
_ROW_BLOCK = 1000
#: Every this many frames :func:`ctc_prefix_beam_search` moves the tokens all hypotheses share
#: out of their prefixes, so a prefix costs O(tokens since the hypotheses diverged), not
#: O(tokens of the utterance), to copy and hash.
_COMMIT_FRAMES = 200
#: In an utterance of more than ``_LONG_FRAMES`` frames (40 s at 40 ms), a prefix that differs
#: from the best one in a token more than ``_MAX_DIVERGENCE`` tokens before the best one's end
#: is dropped at those points (the partial-result finalisation of streaming decoders).
_LONG_FRAMES = 1000
_MAX_DIVERGENCE = 100


def _frame_rows(log_probs: torch.Tensor, blank: int, prune: float | None,
                token_topk: int | None):
    """``(t, row of V floats, candidate token ids)`` per frame of a (T, V) matrix, converted
    to float64 :data:`_ROW_BLOCK` frames at a time (the same values as all at once)."""
    for t0 in range(0, log_probs.shape[0], _ROW_BLOCK):
        blk = log_probs[t0:t0 + _ROW_BLOCK].to("cpu", torch.float64)
        cands = _candidates(blk, blank, prune, token_topk)
        for i, (row, c) in enumerate(zip(blk.tolist(), cands)):
            yield t0 + i, row, c


def _extend_prefixes(hyps: dict[tuple[int, ...], list[float]], y: list[float], y_blank: float,
                     cands: Sequence[int], last0: int | None,
                     lm_score: dict[tuple[int, ...], float] | None, scorer
                     ) -> dict[tuple[int, ...], list[float]]:
    """One frame of :func:`ctc_prefix_beam_search`: every prefix's ``[log p_b, log p_nb]``
    after frame ``y`` (a blank, a repeat of the last token, an extension by each candidate
    ``c``); ``last0`` is the last committed token (the last token of the empty prefix).
    New prefixes get their LM score in ``lm_score`` (when not None)."""
    nxt: dict[tuple[int, ...], list[float]] = {}
    for prefix, (pb, pnb) in hyps.items():
        total = _logaddexp(pb, pnb)
        cell = nxt.setdefault(prefix, [_NEG_INF, _NEG_INF])
        cell[0] = _logaddexp(cell[0], total + y_blank)
        last = prefix[-1] if prefix else last0
        if last is not None:
            cell[1] = _logaddexp(cell[1], pnb + y[last])
        for c in cands:
            new = prefix + (c,)
            add = (pb if c == last else total) + y[c]
            if add == _NEG_INF:  # e.g. "a"+"a" with no blank path yet: impossible
                continue
            cell_new = nxt.get(new)
            if cell_new is None:
                nxt[new] = [_NEG_INF, add]
                if lm_score is not None and new not in lm_score:
                    lm_score[new] = lm_score[prefix] + float(scorer(prefix, c))
            else:
                cell_new[1] = _logaddexp(cell_new[1], add)
    return nxt


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam: int = 10, *, blank: int = BLANK_ID,
                           prune: float | None = None, token_topk: int | None = None,
                           scorer: PrefixScorer | None = None, lm_weight: float = 0.0,
                           final_scorer: Callable[[tuple[int, ...]], float] | None = None,
                           ) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one utterance (Hannun et al., 2014, arXiv:1408.2873).

    For every kept prefix ``l`` (a tuple of non-blank ids) the search tracks, in log space,
    ``p_b(l)`` and ``p_nb(l)``: the total probability of the alignments of frames ``1..t`` that
    collapse to ``l`` and end in blank / in ``l``'s last token. Frame ``t+1`` with posteriors
    ``y`` updates them (``+`` is ``logaddexp``, ``*`` adds log-probabilities):

    * blank: ``p_b'(l) += (p_b(l) + p_nb(l)) * y[blank]``;
    * repeat of the last token ``c = l[-1]`` without a blank: ``p_nb'(l) += p_nb(l) * y[c]``;
    * extension by ``c``: ``p_nb'(l + c) += p_b(l) * y[c]`` if ``c == l[-1]`` (a blank must
      separate two equal labels), else ``(p_b(l) + p_nb(l)) * y[c]``.

    The ``beam`` prefixes with the best score are kept after each frame. Without pruning and
    with a beam wide enough to hold every prefix, the acoustic score of a prefix is exactly
    ``log`` of the sum over all its alignments (the CTC forward probability).

    LM hook: with ``scorer`` set (and ``lm_weight != 0``), each prefix carries
    ``lm(l) = sum_i scorer(l[:i], l[i])``, computed incrementally once per new prefix, and is
    ranked by ``log P_ctc(l) + lm_weight * lm(l)``. Because ``lm(l)`` depends only on ``l``, this
    equals Hannun's form that multiplies ``P(c | l) ** lm_weight`` into ``p_nb(l + c)`` at
    extension time. ``final_scorer(l)`` (e.g. the last word and ``</s>`` of a word LM,
    :meth:`asrkit.lm.fusion.WordNgramScorer.final`) is added, weighted, to the final ranking
    only.

    Long utterances: time and memory are linear in T. Frames are converted to float64 Python
    rows :data:`_ROW_BLOCK` at a time, and every :data:`_COMMIT_FRAMES` frames the tokens that
    every kept prefix starts with are committed: the prefixes (and the scorer's cache, through
    its ``rebase(prefix)``, which makes ``prefix`` its new empty prefix) continue from there,
    so extending and hashing a prefix costs O(tokens since the hypotheses diverged), not
    O(tokens so far). Committing changes no score or ranking. The kept prefixes need not
    share much, though (a variant of one early token can stay in the beam indefinitely), so
    beyond :data:`_LONG_FRAMES` frames a prefix that disagrees with the best one more than
    :data:`_MAX_DIVERGENCE` tokens back is dropped at those points; shorter utterances are
    searched exactly as always. With a scorer that cannot rebase (no true ``can_rebase``
    attribute, e.g. a Transformer LM, which rereads the whole prefix), or a ``final_scorer``
    other than ``scorer.final``, prefixes stay whole and the cost grows with T × tokens.

    Args:
        log_probs: (T, V) log posteriors of one utterance (``log_softmax`` output, natural log);
            other scores work for ranking, but then the returned values are not probabilities.
        beam: number of prefixes kept per frame, and the maximum length of the n-best list.
        blank: blank id (0 in asrkit's tokenizer).
        prune: per-frame threshold: a token extends prefixes at a frame only if its log
            posterior there is ``>= prune`` (e.g. ``math.log(1e-4)``); None keeps all tokens.
        token_topk: per frame, only the ``token_topk`` most probable non-blank tokens extend
            prefixes; None keeps all. The blank and the repeat of a prefix's own last token are
            always scored, so the pruning only drops unlikely new prefixes.
        scorer: optional ``(prefix, token) -> log P(token | prefix)`` (see :data:`PrefixScorer`).
        lm_weight: weight of the scorer's log-probabilities.
        final_scorer: optional ``prefix -> log-prob`` added (times ``lm_weight``) when the
            search ends.

    Returns:
        Up to ``beam`` ``(token ids, score)`` pairs, unique, sorted best first (ties broken by
        the token ids); ``score = log P_ctc + lm_weight * (lm + final)`` in nats. ``T == 0`` gives
        ``[([], 0.0)]``.

    Raises:
        ValueError: ``log_probs`` not 2-D, ``beam < 1``, ``token_topk < 1`` or ``blank`` out of
            range.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    vocab = log_probs.shape[1]
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if token_topk is not None and token_topk < 1:
        raise ValueError(f"token_topk must be >= 1 or None, got {token_topk}")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank id {blank} out of range for vocabulary size {vocab}")
    use_lm = scorer is not None and lm_weight != 0.0
    lp = log_probs.detach()
    # prefixes are kept relative to ``committed``, the tokens every hypothesis shares
    can_commit = not use_lm or (getattr(scorer, "can_rebase", False) and (
        final_scorer is None or final_scorer == getattr(scorer, "final", None)))
    committed: list[int] = []
    long = log_probs.shape[0] > _LONG_FRAMES

    # prefix -> [log p_b, log p_nb]; lm_score: prefix -> accumulated scorer log-prob
    hyps: dict[tuple[int, ...], list[float]] = {(): [0.0, _NEG_INF]}
    lm_score: dict[tuple[int, ...], float] = {(): 0.0}

    def rank(item: tuple[tuple[int, ...], list[float]]) -> float:
        prefix, (pb, pnb) = item
        score = _logaddexp(pb, pnb)
        return score + lm_weight * lm_score[prefix] if use_lm else score

    for t, y, cands_t in _frame_rows(lp, blank, prune, token_topk):
        last0 = committed[-1] if committed else None
        nxt = _extend_prefixes(hyps, y, y[blank], cands_t, last0,
                               lm_score if use_lm else None, scorer)
        kept = sorted(nxt.items(), key=lambda it: (-rank(it), it[0]))[:beam]
        hyps = dict(kept)
        if use_lm:  # keep the LM cache bounded: only the surviving prefixes
            lm_score = {p: lm_score[p] for p in hyps}
        if can_commit and (t + 1) % _COMMIT_FRAMES == 0:
            if long:  # drop what disagrees with the best prefix far back: it stays short
                best = next(iter(hyps))
                hyps = {p: v for p, v in hyps.items()
                        if len(best) - _common_length([best, p]) <= _MAX_DIVERGENCE}
            n = _common_length(list(hyps))
            if n:  # every hypothesis starts with these: move them out of the prefixes
                common = next(iter(hyps))[:n]
                committed.extend(common)
                if use_lm:
                    lm_score = {p[n:]: lm_score[p] for p in hyps}
                    scorer.rebase(common)
                hyps = {p[n:]: v for p, v in hyps.items()}

    def end(p: tuple[int, ...]) -> float:
        return lm_weight * float(final_scorer(p)) if use_lm and final_scorer else 0.0

    final = sorted(((committed + list(p), rank((p, s)) + end(p)) for p, s in hyps.items()),
                   key=lambda h: (-h[1], h[0]))
    return final


def _common_length(prefixes: list[tuple[int, ...]]) -> int:
    """Length of the longest common start of ``prefixes``."""
    first, n = prefixes[0], min(len(p) for p in prefixes)
    for i in range(n):
        if any(p[i] != first[i] for p in prefixes):
            return i
    return n


def ctc_prefix_beam_search_batch(log_probs: torch.Tensor, lengths: torch.Tensor,
                                 beam: int = 10, **kwargs
                                 ) -> list[list[tuple[list[int], float]]]:
    """:func:`ctc_prefix_beam_search` over a padded batch, one utterance at a time.

    Args:
        log_probs: (B, T, V) log posteriors, padded along T.
        lengths: (B,) valid frames of each utterance.
        beam: beam size.
        **kwargs: ``blank``, ``prune``, ``token_topk``, ``scorer``, ``lm_weight``,
            ``final_scorer`` as for :func:`ctc_prefix_beam_search`.

    Returns:
        One n-best list (``[(token ids, score), ...]``, best first) per utterance.

    Raises:
        ValueError: ``log_probs`` not 3-D, ``lengths`` not (B,) or a length outside ``0..T``.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
    if lengths.shape != (log_probs.size(0),):
        raise ValueError(f"lengths must be ({log_probs.size(0)},), got {tuple(lengths.shape)}")
    lens = lengths.tolist()
    if any(n < 0 or n > log_probs.size(1) for n in lens):
        raise ValueError(f"lengths {lens} outside 0..{log_probs.size(1)} frames")
    lp = log_probs.detach().cpu()
    return [ctc_prefix_beam_search(lp[b, :n], beam, **kwargs) for b, n in enumerate(lens)]
