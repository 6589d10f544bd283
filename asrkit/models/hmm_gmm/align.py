"""Alignment of frames to utterance graphs: equal (flat-start) and Viterbi forced alignment
(Kaldi ``align-equal-compiled`` and ``gmm-align-compiled``; Young et al., *The HTK Book*,
sec. 1.5-1.6 and ``HVite -a``).

:func:`align_equal` spreads the frames evenly over the states of the graph's equal path
(:attr:`UttGraph.equal_path`): first pronunciations, optional silence at the two ends.

:func:`align_viterbi` finds the best path of each utterance through its graph with a
frame-synchronous Viterbi pass in the log domain, vectorised over graph nodes in torch:

    score_t[j] = max_p (score_{t-1}[preds[j, p]] + edge[j, p]) + a * log p(x_t | pdf[j])

with ``edge = graph log-probability + b * log P(transition)``. ``a`` is the acoustic scale
and ``b`` the transition scale, both 0.1 as in Kaldi's ``train_mono.sh`` (``--acoustic-scale
0.1 --transition-scale 1.0 --self-loop-scale 0.1``, which for left-to-right topologies
equals scaling every HMM transition by 0.1); silence and pronunciation probabilities are
unscaled. Utterances of similar length are aligned together as one disjoint graph (each
padded to the batch's largest graph), so each frame step is a handful of tensor operations
whatever the batch size; on a GPU this is where the speed comes from. After every frame, nodes more than ``beam``
below the best node of their utterance are pruned; an utterance whose final nodes were all
pruned is retried alone with ``retry_beam`` (Kaldi ``--retry-beam``) and reported as failed
if that fails too. An utterance with fewer frames than its graph's shortest path, or with
non-finite features, is reported without being aligned.

Results are :class:`Alignment` objects: per-frame transition ids, pdfs and phones, and phone
and word segmentations in frames (10 ms each).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from asrkit.models.hmm_gmm.graph import UtteranceError, UttGraph
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.topology import TransitionModel

__all__ = ["Alignment", "AlignmentError", "Segment", "align_equal", "align_viterbi"]

logger = logging.getLogger(__name__)

_NEG_INF = float("-inf")


class AlignmentError(UtteranceError):
    """An utterance cannot be aligned; the message is ``<utt>: <reason>``.

    Attributes:
        utt_id: the utterance.
        reason: the message without the utterance prefix.
    """


@dataclass(frozen=True)
class Segment:
    """A labelled span of frames ``[start, end)`` (10 ms frames unless stated otherwise)."""

    start: int
    end: int
    label: str

    @property
    def num_frames(self) -> int:
        """``end - start``."""
        return self.end - self.start


@dataclass(frozen=True, eq=False)
class Alignment:
    """The alignment of one utterance (CPU ``int64`` tensors of length ``T``).

    Attributes:
        utt_id: the utterance.
        tids: ``(T,)`` transition id of each frame (see :mod:`.topology`).
        pdfs: ``(T,)`` pdf of each frame (Kaldi ``ali-to-pdf``).
        phones: ``(T,)`` ``phones.txt`` id of each frame (``ali-to-phones --per-frame``).
        phone_segments: the phones in order, labelled with their ``phones.txt`` names,
            optional silence included.
        word_segments: the transcript's words in order (optional silence excluded).
        score: total log score of the path, scaled as in the Viterbi pass (nan for equal
            alignments).
    """

    utt_id: str
    tids: torch.Tensor
    pdfs: torch.Tensor
    phones: torch.Tensor
    phone_segments: tuple[Segment, ...]
    word_segments: tuple[Segment, ...]
    score: float

    @property
    def num_frames(self) -> int:
        """``T``."""
        return self.tids.shape[0]


def _runs(values: torch.Tensor) -> list[tuple[int, int, int]]:
    """``[(start, end, value)]`` for each run of equal consecutive values."""
    if values.numel() == 0:
        return []
    change = (values[1:] != values[:-1]).nonzero().flatten() + 1
    starts = [0, *change.tolist()]
    ends = [*change.tolist(), values.numel()]
    vals = values[starts].tolist()
    return list(zip(starts, ends, vals))


def _make_alignment(graph: UttGraph, tmodel: TransitionModel, nodes: torch.Tensor,
                    tids: torch.Tensor, score: float) -> Alignment:
    """Build an :class:`Alignment` from a node path and its tids."""
    phones = graph.phone[nodes]
    phone_segs = tuple(Segment(s, e, tmodel.phone_names[int(phones[s])])
                       for s, e, _ in _runs(graph.phone_inst[nodes]))
    word_segs = tuple(Segment(s, e, graph.words[w])
                      for s, e, w in _runs(graph.word_inst[nodes]) if w >= 0)
    return Alignment(graph.utt_id, tids, graph.pdf[nodes], phones, phone_segs, word_segs,
                     score)


def align_equal(graph: UttGraph, num_frames: int, tmodel: TransitionModel) -> Alignment:
    """Equal alignment for the flat start (Kaldi ``align-equal-compiled``).

    The frames are spread evenly over the states of :attr:`UttGraph.equal_path` (state ``k``
    of ``K`` gets frames ``floor(k T / K) .. floor((k+1) T / K) - 1``); repeated frames use the
    states' self-loops.

    Args:
        graph: the utterance's graph.
        num_frames: ``T``.
        tmodel: the transition model the graph was compiled with.

    Returns:
        The alignment (``score`` nan).

    Raises:
        AlignmentError: ``num_frames`` is smaller than the path, or a state on it that must
            repeat has no self-loop.
    """
    path = graph.equal_path
    k = path.numel()
    if num_frames < k:
        raise AlignmentError(graph.utt_id, f"{num_frames} frames are fewer than the {k} "
                                           "states of the equal-alignment path")
    bounds = torch.div(torch.arange(k + 1) * num_frames, k, rounding_mode="floor")
    nodes = torch.repeat_interleave(path, bounds.diff())
    cache: dict[tuple[int, int], int] = {}
    nl = nodes.tolist()
    tids = []
    for a, b in itertools.pairwise(nl):
        key = (a, b)
        if key not in cache:
            try:
                cache[key] = graph.edge_tid(a, b)
            except KeyError:
                raise AlignmentError(graph.utt_id, f"the equal path needs a transition from "
                                                   f"node {a} to node {b}, which the graph "
                                                   "lacks (a state without self-loop?)"
                                     ) from None
        tids.append(cache[key])
    last = (graph.final_nodes == nl[-1]).nonzero().flatten()
    tids.append(int(graph.final_tid[last[0]]))
    return _make_alignment(graph, tmodel, nodes, torch.tensor(tids, dtype=torch.int64),
                           float("nan"))


def align_viterbi(model: AcousticModel, graphs: Sequence[UttGraph],
                  feats: Mapping[str, torch.Tensor | np.ndarray], *, beam: float = 10.0,
                  retry_beam: float | None = 40.0, acoustic_scale: float = 0.1,
                  transition_scale: float = 0.1, max_batch_elems: int = 1 << 24
                  ) -> tuple[dict[str, Alignment], dict[str, str]]:
    """Viterbi forced alignment of utterances to their graphs (Kaldi ``gmm-align-compiled``).

    Args:
        model: the acoustic model (its device is where the work happens).
        graphs: one graph per utterance, compiled with ``model.tmodel``.
        feats: ``{utt: (T, F) frames}`` (10 ms frames, the model's feature type).
        beam: pruning beam in scaled log units (Kaldi ``--beam``; ``math.inf`` for exact
            Viterbi).
        retry_beam: beam for utterances that fail with ``beam`` (Kaldi ``--retry-beam``);
            None or not larger than ``beam`` for no retry.
        acoustic_scale: scale of the acoustic log-likelihoods.
        transition_scale: scale of the HMM transition log-probabilities.
        max_batch_elems: bound on ``frames x nodes`` of one batch of utterances (memory).

    Returns:
        ``(alignments, failed)``: ``{utt: Alignment}`` for the aligned utterances and
        ``{utt: reason}`` for the others (no features, too few frames, non-finite features,
        no path within the beams). Failures are logged, never raised.

    Raises:
        ValueError: features whose dimension is not the model's.
    """
    failed: dict[str, str] = {}
    todo: list[tuple[UttGraph, torch.Tensor]] = []
    for g in graphs:
        x = feats.get(g.utt_id)
        if x is None:
            failed[g.utt_id] = "no features"
            continue
        if not isinstance(x, torch.Tensor):
            x = torch.tensor(np.asarray(x))  # a copy: kaldiio arrays may be read-only
        if x.dim() != 2 or x.shape[1] != model.feat_dim:
            raise ValueError(f"{g.utt_id}: features have shape {tuple(x.shape)}, expected (T, "
                             f"{model.feat_dim})")
        if x.shape[0] < g.min_frames:
            failed[g.utt_id] = (f"{x.shape[0]} frames are fewer than the {g.min_frames} the "
                                "transcript needs")
        elif not bool(torch.isfinite(x).all()):
            failed[g.utt_id] = "features are not finite (NaN or Inf)"
        else:
            todo.append((g, x))
    out: dict[str, Alignment] = {}
    retry: list[tuple[UttGraph, torch.Tensor]] = []
    for batch in _batches(todo, max_batch_elems):
        for (g, x), res in zip(batch, _viterbi_batch(model, batch, beam, acoustic_scale,
                                                     transition_scale)):
            if res is None:
                retry.append((g, x))
            else:
                out[g.utt_id] = _make_alignment(g, model.tmodel, *res)
    if retry and retry_beam is not None and retry_beam > beam:
        logger.info("%d utterance(s) without a path within beam %g (first: %s); retrying with "
                    "beam %g", len(retry), beam, retry[0][0].utt_id, retry_beam)
        again = []
        for batch in _batches(retry, max_batch_elems):
            for (g, x), res in zip(batch, _viterbi_batch(model, batch, retry_beam,
                                                         acoustic_scale, transition_scale)):
                if res is None:
                    again.append((g, x))
                else:
                    out[g.utt_id] = _make_alignment(g, model.tmodel, *res)
        retry, beam = again, retry_beam
    for g, _ in retry:
        failed[g.utt_id] = f"no path within beam {beam:g}"
    for utt, why in failed.items():
        logger.warning("%s: not aligned: %s", utt, why)
    return {g.utt_id: out[g.utt_id] for g in graphs if g.utt_id in out}, failed


def _batches(items: list[tuple[UttGraph, torch.Tensor]], max_elems: int
             ) -> list[list[tuple[UttGraph, torch.Tensor]]]:
    """Group utterances of similar length so that ``max T x B x max N <= max_elems`` (at
    least one utterance per batch)."""
    order = sorted(items, key=lambda it: it[1].shape[0])
    batches: list[list[tuple[UttGraph, torch.Tensor]]] = []
    cur: list[tuple[UttGraph, torch.Tensor]] = []
    nmax = 0
    for g, x in order:
        if cur and x.shape[0] * (len(cur) + 1) * max(nmax, g.num_nodes) > max_elems:
            batches.append(cur)
            cur, nmax = [], 0
        cur.append((g, x))
        nmax = max(nmax, g.num_nodes)
    if cur:
        batches.append(cur)
    return batches


def _viterbi_batch(model: AcousticModel, batch: Sequence[tuple[UttGraph, torch.Tensor]],
                   beam: float, acoustic_scale: float, transition_scale: float
                   ) -> list[tuple[torch.Tensor, torch.Tensor, float] | None]:
    """Viterbi over the disjoint union of the batch's graphs; per utterance ``(nodes (T,),
    tids (T,), score)`` or None when no final node survived.

    Utterance ``b``'s node ``j`` is union node ``b * N_max + j``; padding nodes have no
    incoming edge (score ``-inf`` throughout), so per-utterance maxima for the beam are a
    ``(B, N_max)`` reduction.
    """
    dev = model.device
    graphs = [g for g, _ in batch]
    lens = [x.shape[0] for _, x in batch]
    nb, t_max = len(batch), max(lens)
    nmax = max(g.num_nodes for g in graphs)
    n = nb * nmax
    width = max(g.preds.shape[1] for g in graphs)

    # Tables of the union graph (CPU), padding nodes point to themselves with -inf.
    preds = torch.arange(n, dtype=torch.int64)[:, None].repeat(1, width)
    ptid = torch.zeros(n, width, dtype=torch.int64)
    glp = torch.full((n, width), _NEG_INF, dtype=torch.float64)
    pdf = torch.zeros(n, dtype=torch.int64)
    for b, g in enumerate(graphs):
        o, k, w = b * nmax, g.num_nodes, g.preds.shape[1]
        preds[o:o + k, :w] = g.preds + o
        ptid[o:o + k, :w] = g.pred_tid
        glp[o:o + k, :w] = g.pred_logp
        pdf[o:o + k] = g.pdf
    tlp = model.tmodel.log_probs * transition_scale

    # (T_max, N) scaled emission scores. Each utterance is scored only under the pdfs of its
    # own graph (a few dozen of a triphone system's hundreds); frames past an utterance's end
    # repeat its last frame (those nodes are never read after it ends).
    dt = model.gmm.dtype
    em = torch.empty(t_max, n, dtype=dt, device=dev)
    for b, (g, x) in enumerate(batch):
        o, k = b * nmax, g.num_nodes
        # loglik scores each distinct pdf once and returns one column per node (T_b, k)
        ll = model.gmm.loglik(x.to(dev), g.pdf.to(dev)) * acoustic_scale
        t_b = ll.shape[0]
        em[:t_b, o:o + k] = ll
        em[t_b:, o:o + k] = ll[t_b - 1]
        em[:, o + k:o + nmax] = 0.0
        del ll
    edge = (glp + tlp[ptid]).to(dev, dt)
    pflat = preds.reshape(-1).to(dev)
    start = torch.cat([g.start_nodes + b * nmax for b, g in enumerate(graphs)]).to(dev)
    start_lp = torch.cat([g.start_logp for g in graphs]).to(dev, dt)

    ends: dict[int, list[int]] = {}
    for b, t in enumerate(lens):
        ends.setdefault(t - 1, []).append(b)
    snaps: dict[int, torch.Tensor] = {}
    back = torch.empty(t_max, n, dtype=torch.uint8 if width < 256 else torch.int32,
                       device=dev)
    cand = torch.empty(n * width, dtype=dt, device=dev)
    cand2 = cand.view(n, width)
    mask = torch.empty(nb, nmax, dtype=torch.bool, device=dev)
    prune = math.isfinite(beam)
    ems = em.unbind(0)
    score = torch.full((n,), _NEG_INF, dtype=dt, device=dev)
    score[start] = start_lp + em[0, start]
    for t in range(t_max):
        if t > 0:
            torch.index_select(score, 0, pflat, out=cand)
            cand2.add_(edge)
            score, arg = cand2.max(1)
            back[t].copy_(arg)
            score.add_(ems[t])
        if prune:
            sv = score.view(nb, nmax)
            torch.lt(sv, sv.amax(1, keepdim=True).sub_(beam), out=mask)
            score.masked_fill_(mask.view(-1), _NEG_INF)
        if t in ends:
            snaps[t] = score

    # Best final node of every utterance at its own last frame.
    final_scores = {t: s.double().cpu() for t, s in snaps.items()}
    end_node = np.full(nb, -1, dtype=np.int64)
    end_tid = np.zeros(nb, dtype=np.int64)
    totals: list[float] = []
    for b, g in enumerate(graphs):
        cand_f = (final_scores[lens[b] - 1][g.final_nodes + b * nmax] + g.final_logp
                  + tlp[g.final_tid])
        k = int(cand_f.argmax())
        totals.append(float(cand_f[k]))
        if math.isfinite(totals[-1]):
            end_node[b] = int(g.final_nodes[k]) + b * nmax
            end_tid[b] = int(g.final_tid[k])
    # Backtrace of all utterances at once (CPU), each from its own last frame.
    bk = back.cpu().numpy()
    preds_np = preds.numpy()
    ptid_np = ptid.numpy()
    nodes = np.zeros((nb, t_max), dtype=np.int64)
    tids = np.zeros((nb, t_max), dtype=np.int64)
    cur = np.zeros(nb, dtype=np.int64)
    started = np.zeros(nb, dtype=bool)
    lens_np = np.array(lens)
    for t in range(t_max - 1, -1, -1):
        new = (lens_np - 1 == t) & (end_node >= 0)
        if new.any():
            cur[new] = end_node[new]
            tids[new, t] = end_tid[new]
            started |= new
        idx = started.nonzero()[0]
        nodes[idx, t] = cur[idx]
        if t > 0 and idx.size:
            p = bk[t, cur[idx]]
            tids[idx, t - 1] = ptid_np[cur[idx], p]
            cur[idx] = preds_np[cur[idx], p]
    return [None if end_node[b] < 0 else
            (torch.from_numpy(nodes[b, :lens[b]] - b * nmax),
             torch.from_numpy(tids[b, :lens[b]].copy()), totals[b]) for b in range(nb)]
