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

from asrkit.models.hmm_gmm.align import Alignment, Segment
from asrkit.models.hmm_gmm.em import (
    EmOptions,
    IterationStats,
    TransformStep,
    options_from,
    run_em,
    stack_frames,
)
from asrkit.models.hmm_gmm.features import usable_features
from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.graph import GraphCompiler, TranscriptGraphError, UttGraph
from asrkit.models.hmm_gmm.lda_mllt import MlltStep, accumulate_lda_stats, estimate_lda
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.mono import MonoResult
from asrkit.models.hmm_gmm.topology import TransitionModel
from asrkit.models.hmm_gmm.tree import (
    TreeBuildInfo,
    accumulate_tree_stats,
    build_tree,
    cluster_phones,
    frame_contexts,
)
from asrkit.text.lexicon import Lang

__all__ = ["TRI_REALIGN_ITERS", "LdaMlltOptions", "TriIterationStats", "TriOptions",
           "TriResult", "convert_alignments", "train_lda_mllt", "train_tri"]

logger = logging.getLogger(__name__)

TRI_REALIGN_ITERS = (10, 20, 30)
"""Iterations that realign first (``train_deltas.sh``'s ``realign_iters``)."""


TriIterationStats = IterationStats
"""One triphone training iteration (:class:`.em.IterationStats`, with ``num_leaves``)."""


@dataclass(frozen=True)
class TriOptions(EmOptions):
    """Options of :func:`train_tri`: :class:`.em.EmOptions` with ``train_deltas.sh``'s
    defaults, plus the tree's and MLLT's (Kaldi's names in parentheses).

    Attributes:
        num_leaves: most leaves of the tree (``numleaves`` 2000).
        tot_gauss: target total number of Gaussians (``totgauss`` 10000).
        context_width: ``N`` (3: triphones).
        central_position: ``P`` (1).
        min_gain: smallest log-likelihood gain of a tree split (``build-tree --thresh``).
        min_leaf_count: fewest frames on each side of a tree split.
        cluster_thresh: leaf merging threshold (``build-tree --cluster-thresh``; -1: the
            smallest split gain; 0: none).
        tree_var_floor: variance floor of the tree objective (``acc-tree-stats --var-floor``).
        mllt_iters: iterations that estimate and apply an MLLT transform first (after any
            realignment; ``train_lda_mllt.sh``'s ``2 4 6 12``); the features must be
            square-transformable (e.g. LDA output).
    """

    num_leaves: int = 2000
    tot_gauss: int = 10000
    context_width: int = 3
    central_position: int = 1
    min_gain: float = 300.0
    min_leaf_count: float = 10.0
    cluster_thresh: float = -1.0
    tree_var_floor: float = 0.01
    mllt_iters: Collection[int] = ()


@dataclass
class TriResult:
    """What :func:`train_tri` returns.

    Attributes:
        model: the final acoustic model (its transition model carries the tree,
            ``model.tmodel.ctx``), on the training device.
        alignments: ``{utt: Alignment}`` with the final model.
        failed: ``{utt: reason}`` for utterances without a final alignment.
        history: one :class:`.em.IterationStats` per iteration ``1 .. num_iters-1``.
        tree_info: what building the tree did (:class:`.tree.TreeBuildInfo`).
        questions: the phone-set questions the tree was built with.
        transform: with ``mllt_iters``, the ``(F, F)`` product of the MLLT matrices the
            features went through (apply it after the input features' own transform), else
            None.
        spk_transforms: for SAT (:func:`.sat.train_sat`), ``{speaker: (F, F + 1)}`` the
            speakers' complete fMLLR transforms of the input features, else None.
    """

    model: AcousticModel
    alignments: dict[str, Alignment]
    failed: dict[str, str]
    history: list[TriIterationStats] = field(default_factory=list)
    tree_info: TreeBuildInfo | None = None
    questions: list[tuple[str, ...]] = field(default_factory=list)
    transform: torch.Tensor | None = None
    spk_transforms: dict[str, torch.Tensor] | None = None


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


def _starting_alignments(xs: Mapping[str, torch.Tensor], src_alis: Mapping
                         ) -> dict[str, Alignment | torch.Tensor]:
    """The utterances' starting alignments whose length matches their features."""
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
    return start


def _tree_model(old_tm: TransitionModel, xs: Mapping[str, torch.Tensor],
                start: Mapping[str, Alignment | torch.Tensor], opts: TriOptions,
                questions: Sequence[Collection[str]] | None, device: torch.device,
                dtype: torch.dtype) -> tuple[AcousticModel, TreeBuildInfo, list]:
    """``acc-tree-stats``, ``cluster-phones``, ``build-tree`` and ``gmm-init-model``: the
    tree-based transition model with one Gaussian per pdf from the tree statistics."""
    stats = accumulate_tree_stats(old_tm, xs, start, context_width=opts.context_width,
                                  central_position=opts.central_position)
    if questions is None:
        qs = cluster_phones(stats, var_floor=opts.tree_var_floor)
    else:
        qs = sorted({tuple(sorted(q)) for q in questions})
    ctx, tree_info = build_tree(stats, qs, num_leaves=opts.num_leaves, min_gain=opts.min_gain,
                                min_count=opts.min_leaf_count,
                                cluster_thresh=opts.cluster_thresh,
                                var_floor=opts.tree_var_floor)
    tmodel = TransitionModel(old_tm.phones, old_tm.phone_base, old_tm.base_phones,
                             old_tm.silence_bases, old_tm.topology, ctx=ctx)
    count, sx, sx2 = stats.sum_by_pdf(ctx)
    tot = count.sum()
    g_mean = sx.sum(0) / tot
    g_var = (sx2.sum(0) / tot - g_mean * g_mean).clamp_min(opts.var_floor)
    has = count > 0
    safe = count.clamp_min(1e-300)[:, None]
    mean = torch.where(has[:, None], sx / safe, g_mean)
    var = torch.where(has[:, None], (sx2 / safe - mean * mean).clamp_min(opts.var_floor), g_var)
    gmm = DiagGMM(torch.ones(ctx.num_pdfs, 1, dtype=dtype, device=device),
                  mean[:, None, :].to(device, dtype), var[:, None, :].to(device, dtype))
    logger.info("triphone init: %d pdfs (%d without data), %d transition states, %d "
                "utterances, %d frames", ctx.num_pdfs, int((~has).sum()), tmodel.num_tstates,
                len(xs), sum(x.shape[0] for x in xs.values()))
    return AcousticModel(tmodel, gmm), tree_info, list(qs)


def _source(alignments, ali_model) -> tuple[Mapping, TransitionModel]:
    """``(alignments mapping, their transition model)`` of :func:`train_tri`'s inputs."""
    if hasattr(alignments, "alignments") and hasattr(alignments, "model"):
        return alignments.alignments, alignments.model.tmodel
    if isinstance(alignments, Mapping):
        if ali_model is None:
            raise ValueError("alignments given as a mapping need ali_model, the model they "
                             "were made with")
        return alignments, (ali_model.tmodel if isinstance(ali_model, AcousticModel)
                            else ali_model)
    raise ValueError(f"alignments must be a training result or a mapping, got "
                     f"{type(alignments).__name__}")


def train_tri(feats: Mapping[str, torch.Tensor | np.ndarray],
              transcripts: Mapping[str, str | Sequence[str]], lang: Lang,
              alignments: MonoResult | TriResult | Mapping[str, Alignment | torch.Tensor],
              options: TriOptions | None = None, *,
              ali_model: AcousticModel | TransitionModel | None = None,
              questions: Sequence[Collection[str]] | None = None,
              steps: Sequence[TransformStep] = (), device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, **overrides) -> TriResult:
    """Train a context-dependent HMM-GMM from alignments (Kaldi ``steps/train_deltas.sh``; the
    steps are in the module docstring). With ``mllt_iters`` (Kaldi ``train_lda_mllt.sh``'s
    ``2 4 6 12``) the features are LDA-projected and an MLLT matrix is estimated at those
    iterations, applied to the features and the model's means (:class:`.lda_mllt.MlltStep`).

    Args:
        feats: ``{utt: (T, F) frames}`` (the features of the starting system, normally MFCC +
            deltas with per-speaker CMN).
        transcripts: ``{utt: words}`` (Kaldi ``text``).
        lang: the lang of the starting system (:func:`asrkit.text.lexicon.make_lang`).
        alignments: the starting alignments: a :class:`.mono.MonoResult` or
            :class:`TriResult` (its alignments and model), or ``{utt: Alignment or (T,) tids}``
            together with ``ali_model``.
        options: :class:`TriOptions` (default: Kaldi's ``train_deltas.sh 2000 10000``).
        ali_model: the model of a plain alignment mapping (Kaldi's ``ali_dir/final.mdl``).
        questions: phone-set questions; None to cluster them from the statistics.
        steps: more feature-transform steps for the EM loop (SAT's
            :class:`.fmllr.FmllrStep`), run after MLLT at their iterations.
        device: where the features, GMMs and alignment run.
        dtype: GMM parameter dtype.
        **overrides: fields of :class:`TriOptions` to replace (``num_leaves=150``, ...).

    Returns:
        :class:`TriResult`. Utterances that fail (no features, transcript or starting
        alignment, graph errors, no path within the beams) are reported, never raised.

    Raises:
        ValueError: bad options, no starting model for a plain alignment mapping, no
            utterance with features, transcript and alignment, or features of different
            dimensions.
        TypeError: an unknown option.
    """
    opts = options_from(TriOptions, options, **overrides)
    src_alis, old_tm = _source(alignments, ali_model)
    device = torch.device(device)
    xs, failed = usable_features(feats, transcripts)
    start = _starting_alignments(xs, src_alis)
    model, tree_info, qs = _tree_model(old_tm, xs, start, opts, questions, device, dtype)
    tmodel = model.tmodel

    # convert-ali, compile-train-graphs.
    converted = convert_alignments(old_tm, tmodel, start)
    alis = {u: _as_alignment(tmodel, u, converted[u], start[u]) for u in converted}
    compiler = GraphCompiler(lang, tmodel, sil_prob=opts.sil_prob, all_prons=opts.all_prons)
    graphs: dict[str, UttGraph] = {}
    for u in list(xs):
        try:
            graphs[u] = compiler.compile(u, transcripts[u])
        except TranscriptGraphError as e:
            failed[u] = e.reason
            logger.warning("%s: skipped: %s", u, e.reason)
            del xs[u]
            alis.pop(u, None)
    if not alis:
        raise ValueError("no utterance has a graph and a starting alignment")
    iter_failed = {u: "no starting alignment" for u in xs if u not in alis}

    all_x, offsets, xs = stack_frames(xs, device)
    mllt = MlltStep(opts.mllt_iters)
    res = run_em(model, all_x, offsets, xs, graphs, alis, opts, opts.tot_gauss,
                 steps=[mllt, *steps], failed=iter_failed)
    model, history = res.model, res.history
    failed.update(res.failed)
    model.meta.update({"type": "triphone", "context_width": opts.context_width,
                       "central_position": opts.central_position,
                       "num_leaves": opts.num_leaves, "num_pdfs": tmodel.num_pdfs,
                       "tot_gauss": opts.tot_gauss, "num_iters": opts.num_iters,
                       "power": opts.power, "sil_prob": opts.sil_prob,
                       "acoustic_scale": opts.acoustic_scale,
                       "transition_scale": opts.transition_scale, "feat_dim": model.feat_dim,
                       "final_avg_loglik": history[-1].avg_loglik if history else math.nan})
    logger.info("triphone training done: %d leaves, %d Gaussians, %d utterances aligned, %d "
                "failed", tmodel.num_pdfs, model.num_gauss, len(res.alignments), len(failed))
    transform = None
    if opts.mllt_iters:
        transform = (mllt.transform if mllt.transform is not None
                     else torch.eye(all_x.shape[1], dtype=all_x.dtype)).cpu()
    return TriResult(model=model, alignments=res.alignments, failed=failed, history=history,
                     tree_info=tree_info, questions=qs, transform=transform)


@dataclass(frozen=True)
class LdaMlltOptions(TriOptions):
    """Options of :func:`train_lda_mllt` (``train_lda_mllt.sh``): :class:`TriOptions` with
    MLLT at ``2 4 6 12``, plus

    Attributes:
        splice: frames of context each side of the spliced input (``--left-context``, 3).
        lda_dim: LDA output dimension (``--dim`` 40).
    """

    mllt_iters: Collection[int] = (2, 4, 6, 12)
    splice: int = 3
    lda_dim: int = 40


def train_lda_mllt(spliced: Mapping[str, torch.Tensor],
                   transcripts: Mapping[str, str | Sequence[str]], lang: Lang,
                   alignments: MonoResult | TriResult | Mapping[str, Alignment | torch.Tensor],
                   options: LdaMlltOptions | None = None, *,
                   ali_model: AcousticModel | None = None,
                   device: torch.device | str = "cpu", **overrides) -> TriResult:
    """Train triphones on LDA+MLLT features (Kaldi ``steps/train_lda_mllt.sh``): LDA over the
    starting system's pdfs (``acc-lda``, ``est-lda``), then :func:`train_tri` on the
    projected frames with MLLT at ``mllt_iters``.

    Args:
        spliced: ``{utt: (T, F * (2 * splice + 1))}`` spliced CMN'd cepstra
            (:func:`.lda_mllt.splice`).
        transcripts: ``{utt: words}``.
        lang: the lang dir's :class:`Lang`.
        alignments: starting alignments (a training result, or a mapping with
            ``ali_model``).
        options: :class:`LdaMlltOptions`.
        ali_model: the model of a plain alignment mapping.
        device: where training runs.
        **overrides: fields of :class:`LdaMlltOptions` to replace.

    Returns:
        :class:`TriResult` whose ``transform`` is the whole ``(lda_dim, F * (2 * splice +
        1))`` feature transform (LDA, then the MLLT matrices).

    Raises:
        ValueError: as :func:`train_tri`.
        TypeError: an unknown option.
    """
    opts = options_from(LdaMlltOptions, options, **overrides)
    src_alis, old_tm = _source(alignments, ali_model)
    num_pdfs = int(old_tm.num_pdfs)
    lda = estimate_lda(accumulate_lda_stats(
        spliced, {u: old_tm.tid2pdf[_tids(a)] for u, a in src_alis.items()}, num_pdfs),
        opts.lda_dim)
    projected = {u: x @ lda.T for u, x in spliced.items()}
    tri_opts = TriOptions(**{f: getattr(opts, f) for f in TriOptions.__dataclass_fields__})
    res = train_tri(projected, transcripts, lang, alignments, tri_opts, ali_model=ali_model,
                    device=device)
    res.transform = lda if res.transform is None else res.transform.to(lda) @ lda
    return res
