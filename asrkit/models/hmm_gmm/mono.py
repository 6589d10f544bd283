"""Monophone HMM-GMM training from a flat start (Kaldi ``steps/train_mono.sh``).

The recipe, iteration by iteration as in ``train_mono.sh``:

0. ``gmm-init-mono``: every pdf is one Gaussian with the global mean and variance of all
   training frames (Kaldi uses a 10-utterance subset); transition probabilities from the topology. ``compile-train-graphs``: one
   graph per utterance (:class:`.graph.GraphCompiler`). ``align-equal-compiled``: equal
   alignment. Statistics on it, then an update with ``min_gaussian_occupancy=3`` (so that
   rare phones get estimated).
1. For ``x = 1 .. num_iters-1``: realign with the current model when ``x`` is in
   ``realign_iters`` (``gmm-align-compiled``, beam ``initial_beam`` the first time, then
   ``beam``, retry beam 4x); accumulate statistics (``gmm-acc-stats-ali``); re-estimate GMMs
   and transitions, then mix up toward the current Gaussian target (``gmm-est --mix-up
   --power``). The target starts at the number of pdfs and grows by ``(max_gauss - S) //
   max_iter_inc`` after each iteration ``x <= max_iter_inc``.
2. A final alignment with the final model (what ``steps/align_si.sh`` does next in Kaldi
   recipes), returned with the model.

The logged average log-likelihood per frame is that of the current alignment under the
current model, before its update (what ``gmm-acc-stats-ali`` reports); it rises over training,
with small dips possible right after a mix-up or a realignment. After a plain EM iteration (no
split, no removed Gaussian, no realignment) it cannot fall; if it does, a warning is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from asrkit.models.hmm_gmm.align import Alignment, AlignmentError, align_equal, align_viterbi
from asrkit.models.hmm_gmm.features import usable_features
from asrkit.models.hmm_gmm.gmm import DiagGMM, GmmStats
from asrkit.models.hmm_gmm.graph import GraphCompiler, GraphError, UttGraph
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.topology import Topology, TransitionModel
from asrkit.text.lexicon import Lang

__all__ = ["REALIGN_ITERS", "IterationStats", "MonoResult", "train_mono"]

logger = logging.getLogger(__name__)

REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)
"""Iterations that realign first (``train_mono.sh``'s ``realign_iters``)."""


@dataclass(frozen=True)
class IterationStats:
    """One training iteration.

    Attributes:
        iteration: ``x`` (0 is the equal-alignment pass).
        avg_loglik: average log-likelihood per frame of the alignment under the model of
            this iteration, before its update (natural log).
        num_frames: frames accumulated.
        num_gauss: Gaussians after this iteration's update and mix-up.
        realigned: whether this iteration realigned first.
        num_aligned: utterances accumulated.
        num_failed: utterances without an alignment this iteration.
    """

    iteration: int
    avg_loglik: float
    num_frames: int
    num_gauss: int
    realigned: bool
    num_aligned: int
    num_failed: int


@dataclass
class MonoResult:
    """What :func:`train_mono` returns.

    Attributes:
        model: the final acoustic model (on the training device).
        alignments: ``{utt: Alignment}`` with the final model.
        failed: ``{utt: reason}`` for utterances without a final alignment (no features, no
            transcript, a graph error, too few frames, no path within the beams).
        history: one :class:`IterationStats` per iteration.
    """

    model: AcousticModel
    alignments: dict[str, Alignment]
    failed: dict[str, str]
    history: list[IterationStats] = field(default_factory=list)


def _stack_frames(xs: dict[str, torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, dict[str, int], dict[str, torch.Tensor]]:
    """Frames of all utterances concatenated once on ``device``: ``(all_x (N, F), offsets,
    {utt: view of its (T, F) rows})``."""
    offsets: dict[str, int] = {}
    pos = 0
    for u in xs:
        offsets[u] = pos
        pos += xs[u].shape[0]
    all_x = torch.cat(list(xs.values())).to(device)
    views = {u: all_x[offsets[u]:offsets[u] + xs[u].shape[0]] for u in xs}
    return all_x, offsets, views


def _em_update(model: AcousticModel, stats: GmmStats, tcounts: torch.Tensor,
               num_gauss_target: int, *, var_floor: float, min_gaussian_occupancy: float,
               power: float, min_count: float, perturb: float):
    """One M-step (gmm-est): GMM update, mix-up toward ``num_gauss_target``, transition update.

    Returns:
        ``(model, update_info, plain_em)``; ``plain_em`` is True when no Gaussian was split or
        removed, i.e. the next iteration's likelihood cannot fall below this one's.
    """
    new_gmm, info = model.gmm.update(stats, var_floor=var_floor,
                                     min_gaussian_occupancy=min_gaussian_occupancy)
    updated = new_gmm.num_gauss
    new_gmm = new_gmm.mixup(num_gauss_target, stats.pdf_occs(), power=power,
                            min_count=min_count, perturb=perturb)
    plain_em = new_gmm.num_gauss == updated and info.num_removed == 0
    return AcousticModel(model.tmodel.update(tcounts), new_gmm), info, plain_em


def _aligned_frames(offsets: Mapping[str, int], alis: Mapping[str, Alignment]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frame_ids, tids)`` of all aligned frames: rows of the stacked features and their
    transition ids (CPU)."""
    utts = list(alis)
    frame_ids = torch.cat([torch.arange(offsets[u], offsets[u] + alis[u].num_frames)
                           for u in utts])
    return frame_ids, torch.cat([alis[u].tids for u in utts])


def _accumulate(model: AcousticModel, feats: torch.Tensor, offsets: Mapping[str, int],
                alis: Mapping[str, Alignment]) -> tuple[GmmStats, torch.Tensor]:
    """GMM statistics and transition counts of the alignments (``gmm-acc-stats-ali``)."""
    dev = model.device
    frame_ids, tids = _aligned_frames(offsets, alis)
    stats = GmmStats.for_model(model.gmm)
    stats.accumulate(model.gmm, feats, model.tmodel.tid2pdf[tids].to(dev), frame_ids.to(dev))
    return stats, model.tmodel.transition_counts(tids)


def train_mono(feats: Mapping[str, torch.Tensor | np.ndarray],
               transcripts: Mapping[str, str | Sequence[str]], lang: Lang, *,
               topology: Topology | None = None, num_iters: int = 40, max_gauss: int = 1000,
               max_iter_inc: int = 30, realign_iters: Collection[int] = REALIGN_ITERS,
               power: float = 0.25, sil_prob: float = 0.5, all_prons: bool = True,
               initial_beam: float = 6.0, beam: float = 10.0, retry_factor: float = 4.0,
               acoustic_scale: float = 0.1, transition_scale: float = 0.1,
               var_floor: float = 0.001, perturb: float = 0.2, min_count: float = 20.0,
               final_align: bool = True, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> MonoResult:
    """Train a monophone HMM-GMM from a flat start (Kaldi ``steps/train_mono.sh``; the steps
    are in the module docstring).

    Args:
        feats: ``{utt: (T, F) frames}`` at 10 ms, normally 39-dimensional MFCC + deltas with
            per-speaker CMN (:func:`.features.load_gmm_features`). A lazy mapping such as
            ``kaldiio.load_scp`` works; all frames are loaded onto ``device`` once.
        transcripts: ``{utt: words}`` (Kaldi ``text``), a string or a word sequence.
        lang: from :func:`asrkit.text.lexicon.make_lang` (phones, lexicon, OOV word).
        topology: HMM topologies (default Kaldi's: 3-state phones, 5-state silence).
        num_iters: training iterations (Kaldi ``num_iters``).
        max_gauss: target total number of Gaussians (Kaldi ``totgauss``).
        max_iter_inc: last iteration that raises the Gaussian target.
        realign_iters: iterations that realign first.
        power: mix-up allocation exponent (``train_mono.sh`` 0.25).
        sil_prob: optional-silence probability of the graphs.
        all_prons: allow all pronunciations of a word (else the first).
        initial_beam: beam of the first realignment.
        beam: beam of later realignments and of the final alignment.
        retry_factor: retry beam = ``retry_factor * beam`` (Kaldi: 4).
        acoustic_scale: acoustic scale of the alignment.
        transition_scale: HMM transition scale of the alignment.
        var_floor: GMM variance floor.
        perturb: mix-up mean offset in standard deviations.
        min_count: mix-up: fewest frames per Gaussian.
        final_align: realign with the final model (else the last alignments are returned).
        device: where the features, GMMs and alignment run (``"cuda"`` for a GPU).
        dtype: GMM parameter dtype (statistics are float64 regardless).

    Returns:
        :class:`MonoResult`: the model, the alignments, the failed utterances with reasons and
        the per-iteration history. Utterances that fail are reported and skipped, never
        raised.

    Raises:
        ValueError: no utterance with both features and transcript, features of different
            dimensions, every utterance failing the equal alignment, or bad options.
    """
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if max_iter_inc < 1:
        raise ValueError(f"max_iter_inc must be >= 1, got {max_iter_inc}")
    device = torch.device(device)
    xs, failed = usable_features(feats, transcripts)
    tmodel = TransitionModel.from_phone_set(lang.phone_set, topology)
    compiler = GraphCompiler(lang, tmodel, sil_prob=sil_prob, all_prons=all_prons)
    graphs: dict[str, UttGraph] = {}
    for u in list(xs):
        try:
            graphs[u] = compiler.compile(u, transcripts[u])
        except GraphError as e:
            failed[u] = e.reason
            del xs[u]
            logger.warning("%s: skipped: %s", u, e.reason)
    if not xs:
        raise ValueError("no usable utterance (see the warnings for the reasons)")

    all_x, offsets, xs = _stack_frames(xs, device)
    flat = all_x.double()
    mean = flat.mean(0)
    var = (flat * flat).mean(0) - mean * mean
    del flat
    gmm = DiagGMM.init_single(tmodel.num_pdfs, mean, var.clamp_min(var_floor), dtype=dtype,
                              device=device)
    model = AcousticModel(tmodel, gmm)
    logger.info("monophone init: %d pdfs, feature dim %d, %d utterances, %d frames",
                tmodel.num_pdfs, gmm.feat_dim, len(xs), all_x.shape[0])

    alis: dict[str, Alignment] = {}
    iter_failed: dict[str, str] = {}
    for u, g in graphs.items():
        if u not in xs:
            continue
        try:
            alis[u] = align_equal(g, xs[u].shape[0], tmodel)
        except AlignmentError as e:
            iter_failed[u] = e.reason
            logger.warning("%s: no equal alignment: %s", u, e.reason)
    if not alis:
        raise ValueError("no utterance could be aligned equally (all too short for their "
                         "transcripts)")

    num_gauss_target = tmodel.num_pdfs
    inc = max(0, (max_gauss - tmodel.num_pdfs) // max_iter_inc)
    history: list[IterationStats] = []
    realign_set = set(realign_iters)
    cur_beam = initial_beam
    plain_em = False
    for x in range(num_iters):
        realigned = x > 0 and x in realign_set
        if realigned:
            alis, iter_failed = align_viterbi(
                model, [graphs[u] for u in xs], xs, beam=cur_beam,
                retry_beam=retry_factor * cur_beam, acoustic_scale=acoustic_scale,
                transition_scale=transition_scale)
            cur_beam = beam
            if not alis:
                raise ValueError(f"iteration {x}: no utterance could be aligned")
        stats, tcounts = _accumulate(model, all_x, offsets, alis)
        model, info, next_plain = _em_update(
            model, stats, tcounts, num_gauss_target, var_floor=var_floor,
            min_gaussian_occupancy=3.0 if x == 0 else 10.0, power=power, min_count=min_count,
            perturb=perturb)
        new_gmm = model.gmm
        h = IterationStats(iteration=x, avg_loglik=stats.avg_loglik, num_frames=int(stats.count),
                           num_gauss=new_gmm.num_gauss, realigned=realigned,
                           num_aligned=len(alis), num_failed=len(iter_failed))
        if plain_em and not realigned and history and h.avg_loglik < history[-1].avg_loglik:
            logger.warning("iter %d: avg loglik per frame fell from %.4f to %.4f after a plain "
                           "EM update", x, history[-1].avg_loglik, h.avg_loglik)
        plain_em = next_plain
        history.append(h)
        logger.info("iter %d: avg loglik per frame %.4f over %d frames (%d utts%s), %d "
                    "Gaussians after update (target %d; %d removed, %d variances floored)%s",
                    x, h.avg_loglik, h.num_frames, h.num_aligned,
                    f", {h.num_failed} failed" if h.num_failed else "", h.num_gauss,
                    num_gauss_target, info.num_removed, info.num_floored,
                    ", realigned" if realigned else "")
        if x >= 1 and x <= max_iter_inc:
            num_gauss_target += inc

    if final_align:
        alis, iter_failed = align_viterbi(
            model, [graphs[u] for u in xs], xs, beam=beam, retry_beam=retry_factor * beam,
            acoustic_scale=acoustic_scale, transition_scale=transition_scale)
    failed.update(iter_failed)
    model.meta.update({"type": "monophone", "num_iters": num_iters, "max_gauss": max_gauss,
                       "power": power, "sil_prob": sil_prob, "acoustic_scale": acoustic_scale,
                       "transition_scale": transition_scale, "feat_dim": model.feat_dim,
                       "final_avg_loglik": history[-1].avg_loglik if history else math.nan})
    logger.info("monophone training done: %d Gaussians, %d utterances aligned, %d failed",
                model.num_gauss, len(alis), len(failed))
    return MonoResult(model=model, alignments=alis, failed=failed, history=history)
