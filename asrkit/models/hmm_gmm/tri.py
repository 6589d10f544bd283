"""Context-dependent (triphone) HMM-GMM training with delta features (Kaldi
``steps/train_deltas.sh``).

The recipe, step by step as in ``train_deltas.sh``:

1. ``acc-tree-stats``: single-Gaussian statistics per ``(triphone context, HMM state)`` from the
   starting alignments, normally the monophone system's (:func:`.tree.accumulate_tree_stats`).
2. ``cluster-phones`` and ``compile-questions``: phone-set questions from the statistics
   (:func:`.tree.cluster_phones`) and the pdf-class questions.
3. ``build-tree``: the decision tree, one root per base phone, greedy splitting to
   ``num_leaves`` leaves, then merging of leaves within a root (:func:`.tree.build_tree`).
4. ``gmm-init-model``: a transition model over the tree's pdfs (transition probabilities from
   the topology) and one Gaussian per pdf from the tree statistics it covers.
5. ``convert-ali``: the starting alignments rewritten as transition ids of the new model
   (:func:`convert_alignments`); ``compile-train-graphs``: graphs with every phone expanded in
   its context (:class:`.graph.GraphCompiler`).
6. For ``x = 1 .. num_iters-1``: realign when ``x`` is in ``realign_iters``
   (``gmm-align-compiled``), accumulate (``gmm-acc-stats-ali``), re-estimate GMMs and
   transitions and mix up toward the Gaussian target (``gmm-est --mix-up --power``). The target
   starts at the number of pdfs and grows by ``(tot_gauss - S) // max_iter_inc`` after each
   iteration ``x <= max_iter_inc``.
7. A final alignment with the final model (``steps/align_si.sh``).

The logged average log-likelihood per frame is that of the current alignment under the
current model before its update, as in :mod:`.mono`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from asrkit.models.hmm_gmm.align import Alignment, Segment, align_viterbi
from asrkit.models.hmm_gmm.features import usable_features
from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.graph import GraphCompiler, GraphError, UttGraph
from asrkit.models.hmm_gmm.lda_mllt import accumulate_mllt_stats, estimate_mllt
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.mono import (
    IterationStats,
    MonoResult,
    _accumulate,
    _aligned_frames,
    _em_update,
    _stack_frames,
)
from asrkit.models.hmm_gmm.topology import TransitionModel
from asrkit.models.hmm_gmm.tree import (
    TreeBuildInfo,
    accumulate_tree_stats,
    build_tree,
    cluster_phones,
    frame_contexts,
)
from asrkit.text.lexicon import Lang

__all__ = ["TRI_REALIGN_ITERS", "TriIterationStats", "TriResult", "convert_alignments",
           "train_tri"]

logger = logging.getLogger(__name__)

TRI_REALIGN_ITERS = (10, 20, 30)
"""Iterations that realign first (``train_deltas.sh``'s ``realign_iters``)."""


@dataclass(frozen=True)
class TriIterationStats(IterationStats):
    """One triphone training iteration: :class:`.mono.IterationStats` plus the tree size.

    Attributes:
        num_leaves: pdfs (tied states) of the tree.
    """

    num_leaves: int


@dataclass
class TriResult:
    """What :func:`train_tri` returns.

    Attributes:
        model: the final acoustic model (its transition model carries the tree,
            ``model.tmodel.ctx``), on the training device.
        alignments: ``{utt: Alignment}`` with the final model.
        failed: ``{utt: reason}`` for utterances without a final alignment.
        history: one :class:`TriIterationStats` per iteration ``1 .. num_iters-1``.
        tree_info: what building the tree did (:class:`.tree.TreeBuildInfo`).
        questions: the phone-set questions the tree was built with.
        transform: with ``mllt_iters``, the ``(F, F)`` product of the MLLT matrices the
            features went through (apply it after the input features' own transform), else
            None.
    """

    model: AcousticModel
    alignments: dict[str, Alignment]
    failed: dict[str, str]
    history: list[TriIterationStats] = field(default_factory=list)
    tree_info: TreeBuildInfo | None = None
    questions: list[tuple[str, ...]] = field(default_factory=list)
    transform: torch.Tensor | None = None


def _tids(a: Alignment | torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(a, Alignment):
        return a.tids
    return torch.as_tensor(a, dtype=torch.int64).reshape(-1).cpu()


def convert_alignments(old: TransitionModel, new: TransitionModel,
                       alignments: Mapping[str, Alignment | torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
    """Rewrite alignments as transition ids of another model with the same phones and
    topology, e.g. monophone to triphone (Kaldi ``convert-ali``).

    Every frame keeps its phone, HMM state and transition (destination state); its pdf becomes
    ``new.ctx.pdf_id`` of the phone's context in the alignment's phone sequence (0 beyond the
    utterance's ends). Vectorised: contexts by :func:`.tree.frame_contexts`, pdfs by
    :meth:`.tree.ContextDependency.pdf_ids`, tids by a look-up of the distinct ``(phone, state,
    pdf, destination)`` rows.

    Args:
        old: the model of the alignments.
        new: the target model.
        alignments: ``{utt: Alignment or (T,) tids}`` under ``old``.

    Returns:
        ``{utt: (T,) int64 tids}`` under ``new``, same order.

    Raises:
        ValueError: the models differ in phones or topology; an alignment with a tid out of
            range or ending inside a phone.
    """
    if old.phones != new.phones or old.topology != new.topology:
        raise ValueError("convert-ali needs models with the same phones and topology")
    utts = list(alignments)
    if not utts:
        return {}
    tids = [_tids(alignments[u]) for u in utts]
    lens = [t.numel() for t in tids]
    t = torch.cat(tids)
    ctx = new.ctx
    phones = frame_contexts(old, t, lens, ctx.context_width, ctx.central_position)
    state = old.tid2state[t]
    pdf = ctx.pdf_ids(phones, state)
    phone, dest = old.tid2phone[t], old.tid2dest[t]
    # One integer per distinct (phone, state, pdf, destination), looked up once each.
    ns = int(old.tid2dest.max()) + 1
    code = ((phone * ns + state) * ctx.num_pdfs + pdf) * ns + dest
    uniq, inv = code.unique(return_inverse=True)
    rows = []
    for c in uniq.tolist():
        c, d = divmod(c, ns)
        c, pd = divmod(c, ctx.num_pdfs)
        ph, st = divmod(c, ns)
        rows.append(new.transition_id(ph, st, pd, d))
    out = torch.tensor(rows, dtype=torch.int64)[inv]
    return dict(zip(utts, out.split(lens)))


def _as_alignment(tm: TransitionModel, utt: str, tids: torch.Tensor,
                  source: Alignment | torch.Tensor) -> Alignment:
    """An :class:`Alignment` for converted tids (segments from the source alignment when it has
    them, else phone segments from the tids and no word segments)."""
    if isinstance(source, Alignment):
        phone_segs, word_segs = source.phone_segments, source.word_segments
    else:
        phone_segs = tuple(Segment(s, e, tm.phone_names[p])
                           for s, e, p in tm.split_to_phones(tids))
        word_segs = ()
    return Alignment(utt, tids, tm.tid2pdf[tids], tm.tid2phone[tids], phone_segs, word_segs,
                     float("nan"))


def train_tri(feats: Mapping[str, torch.Tensor | np.ndarray],
              transcripts: Mapping[str, str | Sequence[str]], lang: Lang,
              alignments: MonoResult | TriResult | Mapping[str, Alignment | torch.Tensor], *,
              ali_model: AcousticModel | TransitionModel | None = None,
              num_leaves: int = 2000, tot_gauss: int = 10000, num_iters: int = 35,
              max_iter_inc: int = 25, realign_iters: Collection[int] = TRI_REALIGN_ITERS,
              context_width: int = 3, central_position: int = 1,
              questions: Sequence[Collection[str]] | None = None, min_gain: float = 300.0,
              min_leaf_count: float = 10.0, cluster_thresh: float = -1.0,
              tree_var_floor: float = 0.01, power: float = 0.25, sil_prob: float = 0.5,
              all_prons: bool = True, beam: float = 10.0, retry_factor: float = 4.0,
              acoustic_scale: float = 0.1, transition_scale: float = 0.1,
              var_floor: float = 0.001, perturb: float = 0.2, min_count: float = 20.0,
              final_align: bool = True, mllt_iters: Collection[int] = (),
              device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> TriResult:
    """Train a context-dependent HMM-GMM from alignments (Kaldi ``steps/train_deltas.sh``; the
    steps are in the module docstring). With ``mllt_iters`` (Kaldi ``train_lda_mllt.sh``'s
    ``2 4 6 12``) the features are LDA-projected and an MLLT matrix is estimated at those
    iterations, applied to the features and the model's means (:mod:`.lda_mllt`).

    Args:
        feats: ``{utt: (T, F) frames}`` (the features of the starting system, normally MFCC +
            deltas with per-speaker CMN).
        transcripts: ``{utt: words}`` (Kaldi ``text``).
        lang: the lang of the starting system (:func:`asrkit.text.lexicon.make_lang`).
        alignments: the starting alignments: a :class:`.mono.MonoResult` or
            :class:`TriResult` (its alignments and model), or ``{utt: Alignment or (T,) tids}``
            together with ``ali_model``.
        ali_model: the model of a plain alignment mapping (Kaldi's ``ali_dir/final.mdl``).
        num_leaves: most leaves of the tree (``numleaves``, Kaldi's e.g. 2000).
        tot_gauss: target total number of Gaussians (``totgauss``).
        num_iters: iterations; EM runs for ``x = 1 .. num_iters-1`` (Kaldi 35).
        max_iter_inc: last iteration that raises the Gaussian target (Kaldi 25).
        realign_iters: iterations that realign first (Kaldi ``10 20 30``).
        context_width: ``N`` (3: triphones).
        central_position: ``P`` (1).
        questions: phone-set questions; None to cluster them from the statistics.
        min_gain: smallest log-likelihood gain of a tree split (``build-tree --thresh``).
        min_leaf_count: fewest frames on each side of a tree split.
        cluster_thresh: leaf merging threshold (``build-tree --cluster-thresh``; -1: the
            smallest split gain; 0: none).
        tree_var_floor: variance floor of the tree objective (``acc-tree-stats --var-floor``).
        power: mix-up allocation exponent (``train_deltas.sh`` 0.25).
        sil_prob: optional-silence probability of the graphs.
        all_prons: allow all pronunciations of a word (else the first).
        beam: alignment beam (Kaldi 10).
        retry_factor: retry beam = ``retry_factor * beam`` (Kaldi 40 = 4 x 10).
        acoustic_scale: acoustic scale of the alignment.
        transition_scale: HMM transition scale of the alignment.
        var_floor: GMM variance floor.
        perturb: mix-up mean offset in standard deviations.
        min_count: mix-up: fewest frames per Gaussian.
        final_align: realign with the final model (else the last alignments are returned).
        mllt_iters: iterations that estimate and apply an MLLT transform first (after any
            realignment); the features must be square-transformable (e.g. LDA output).
        device: where the features, GMMs and alignment run.
        dtype: GMM parameter dtype.

    Returns:
        :class:`TriResult`. Utterances that fail (no features, transcript or starting
        alignment, graph errors, no path within the beams) are reported, never raised.

    Raises:
        ValueError: bad options, no starting model for a plain alignment mapping, no
            utterance with features, transcript and alignment, or features of different
            dimensions.
    """
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if max_iter_inc < 1:
        raise ValueError(f"max_iter_inc must be >= 1, got {max_iter_inc}")
    if hasattr(alignments, "alignments") and hasattr(alignments, "model"):
        src_alis: Mapping = alignments.alignments
        old_tm: TransitionModel = alignments.model.tmodel
    elif isinstance(alignments, Mapping):
        if ali_model is None:
            raise ValueError("alignments given as a mapping need ali_model, the model they "
                             "were made with")
        src_alis = alignments
        old_tm = ali_model.tmodel if isinstance(ali_model, AcousticModel) else ali_model
    else:
        raise ValueError(f"alignments must be a training result or a mapping, got "
                         f"{type(alignments).__name__}")
    device = torch.device(device)
    xs, failed = usable_features(feats, transcripts)

    # Tree statistics, questions, tree (acc-tree-stats, cluster-phones, build-tree).
    start: dict[str, Alignment | torch.Tensor] = {}
    for u in xs:
        a = src_alis.get(u)
        if a is None:
            continue
        n = _tids(a).numel()
        if n != xs[u].shape[0]:
            logger.warning("%s: starting alignment has %d frames, the features %d; not used",
                           u, n, xs[u].shape[0])
            continue
        start[u] = a
    if not start:
        raise ValueError("no utterance has features, a transcript and a starting alignment")
    stats = accumulate_tree_stats(old_tm, xs, start, context_width=context_width,
                                  central_position=central_position)
    if questions is None:
        qs = cluster_phones(stats, var_floor=tree_var_floor)
    else:
        qs = sorted({tuple(sorted(q)) for q in questions})
    ctx, tree_info = build_tree(stats, qs, num_leaves=num_leaves, min_gain=min_gain,
                                min_count=min_leaf_count, cluster_thresh=cluster_thresh,
                                var_floor=tree_var_floor)

    # gmm-init-model: transition model over the tree, one Gaussian per pdf.
    tmodel = TransitionModel(old_tm.phones, old_tm.phone_base, old_tm.base_phones,
                             old_tm.silence_bases, old_tm.topology, ctx=ctx)
    count, sx, sx2 = stats.sum_by_pdf(ctx)
    tot = count.sum()
    g_mean = sx.sum(0) / tot
    g_var = (sx2.sum(0) / tot - g_mean * g_mean).clamp_min(var_floor)
    has = count > 0
    safe = count.clamp_min(1e-300)[:, None]
    mean = torch.where(has[:, None], sx / safe, g_mean)
    var = torch.where(has[:, None], (sx2 / safe - mean * mean).clamp_min(var_floor), g_var)
    gmm = DiagGMM(torch.ones(ctx.num_pdfs, 1, dtype=dtype, device=device),
                  mean[:, None, :].to(device, dtype), var[:, None, :].to(device, dtype))
    model = AcousticModel(tmodel, gmm)
    logger.info("triphone init: %d pdfs (%d without data), %d transition states, %d "
                "utterances, %d frames", ctx.num_pdfs, int((~has).sum()), tmodel.num_tstates,
                len(xs), sum(x.shape[0] for x in xs.values()))

    # convert-ali, compile-train-graphs.
    converted = convert_alignments(old_tm, tmodel, start)
    alis = {u: _as_alignment(tmodel, u, converted[u], start[u]) for u in converted}
    compiler = GraphCompiler(lang, tmodel, sil_prob=sil_prob, all_prons=all_prons)
    graphs: dict[str, UttGraph] = {}
    for u in list(xs):
        try:
            graphs[u] = compiler.compile(u, transcripts[u])
        except GraphError as e:
            failed[u] = e.reason
            logger.warning("%s: skipped: %s", u, e.reason)
            del xs[u]
            alis.pop(u, None)
    if not alis:
        raise ValueError("no utterance has a graph and a starting alignment")
    iter_failed = {u: "no starting alignment" for u in xs if u not in alis}

    all_x, offsets, xs = _stack_frames(xs, device)

    num_gauss_target = tmodel.num_pdfs
    inc = max(0, (tot_gauss - tmodel.num_pdfs) // max_iter_inc)
    realign_set = set(realign_iters)
    mllt_set = set(mllt_iters)
    transform = torch.eye(all_x.shape[1], dtype=all_x.dtype, device=all_x.device)
    history: list[TriIterationStats] = []
    plain_em = False
    for x in range(1, num_iters):
        realigned = x in realign_set
        if realigned:
            alis, iter_failed = align_viterbi(
                model, [graphs[u] for u in xs], xs, beam=beam, retry_beam=retry_factor * beam,
                acoustic_scale=acoustic_scale, transition_scale=transition_scale)
            if not alis:
                raise ValueError(f"iteration {x}: no utterance could be aligned")
        if x in mllt_set:
            frame_ids, tids = _aligned_frames(offsets, alis)
            G, beta = accumulate_mllt_stats(model.gmm, all_x, model.tmodel.tid2pdf[tids],
                                            frame_ids)
            A, impr = estimate_mllt(G, beta)
            A = A.to(all_x.device)
            all_x.copy_(all_x @ A.T)  # in place: the per-utterance views follow
            model = AcousticModel(model.tmodel, model.gmm.transform_means(A), model.meta)
            transform = A @ transform
            plain_em = False
            logger.info("iter %d: MLLT applied (objective +%.4f per frame)", x, impr)
        gstats, tcounts = _accumulate(model, all_x, offsets, alis)
        model, info, next_plain = _em_update(
            model, gstats, tcounts, num_gauss_target, var_floor=var_floor,
            min_gaussian_occupancy=10.0, power=power, min_count=min_count, perturb=perturb)
        new_gmm = model.gmm
        h = TriIterationStats(iteration=x, avg_loglik=gstats.avg_loglik,
                              num_frames=int(gstats.count), num_gauss=new_gmm.num_gauss,
                              realigned=realigned, num_aligned=len(alis),
                              num_failed=len(iter_failed), num_leaves=tmodel.num_pdfs)
        if plain_em and not realigned and history and h.avg_loglik < history[-1].avg_loglik:
            logger.warning("iter %d: avg loglik per frame fell from %.4f to %.4f after a plain "
                           "EM update", x, history[-1].avg_loglik, h.avg_loglik)
        plain_em = next_plain
        history.append(h)
        logger.info("iter %d: avg loglik per frame %.4f over %d frames (%d utts%s), %d leaves, "
                    "%d Gaussians after update (target %d; %d removed, %d variances floored)%s",
                    x, h.avg_loglik, h.num_frames, h.num_aligned,
                    f", {h.num_failed} failed" if h.num_failed else "", h.num_leaves,
                    h.num_gauss, num_gauss_target, info.num_removed, info.num_floored,
                    ", realigned" if realigned else "")
        if x <= max_iter_inc:
            num_gauss_target += inc

    if final_align:
        alis, iter_failed = align_viterbi(
            model, [graphs[u] for u in xs], xs, beam=beam, retry_beam=retry_factor * beam,
            acoustic_scale=acoustic_scale, transition_scale=transition_scale)
    failed.update(iter_failed)
    model.meta.update({"type": "triphone", "context_width": context_width,
                       "central_position": central_position, "num_leaves": num_leaves,
                       "num_pdfs": tmodel.num_pdfs, "tot_gauss": tot_gauss,
                       "num_iters": num_iters, "power": power, "sil_prob": sil_prob,
                       "acoustic_scale": acoustic_scale, "transition_scale": transition_scale,
                       "feat_dim": model.feat_dim,
                       "final_avg_loglik": history[-1].avg_loglik if history else math.nan})
    logger.info("triphone training done: %d leaves, %d Gaussians, %d utterances aligned, %d "
                "failed", tmodel.num_pdfs, model.num_gauss, len(alis), len(failed))
    return TriResult(model=model, alignments=alis, failed=failed, history=history,
                     tree_info=tree_info, questions=list(qs),
                     transform=transform.cpu() if mllt_set else None)
