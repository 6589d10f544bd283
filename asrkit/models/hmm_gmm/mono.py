"""Monophone HMM-GMM training from a flat start (Kaldi ``steps/train_mono.sh``).

The recipe, iteration by iteration as in ``train_mono.sh``:

0. ``gmm-init-mono``: every pdf is one Gaussian with the global mean and variance of all
   training frames (Kaldi uses a 10-utterance subset); transition probabilities from the topology. ``compile-train-graphs``: one
   graph per utterance (:class:`.graph.GraphCompiler`). ``align-equal-compiled``: equal
   alignment. Statistics on it, then an update with ``min_gaussian_occupancy=3`` (so that
   rare phones get estimated).
1. For ``x = 1 .. num_iters-1``: the shared EM loop (:func:`.em.run_em`): realign with the
   current model when ``x`` is in ``realign_iters`` (beam ``initial_beam`` the first time,
   then ``beam``), accumulate, re-estimate and mix up toward the Gaussian target, which
   grows by ``(max_gauss - S) // max_iter_inc`` after each iteration ``x <= max_iter_inc``.
2. A final alignment with the final model (what ``steps/align_si.sh`` does next in Kaldi
   recipes), returned with the model. With ``shortest`` = N, steps 0-1 see only the N
   shortest utterances (Kaldi recipes train the monophone on ``subset_data_dir.sh --shortest``,
   e.g. Mini LibriSpeech's 500 and LibriSpeech's 2,000) and this alignment covers all of them.

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
from asrkit.models.hmm_gmm.em import (
    EmOptions,
    IterationStats,
    boost_silence,
    options_from,
    run_em,
    stack_frames,
)
from asrkit.models.hmm_gmm.features import usable_features
from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.graph import GraphCompiler, TranscriptGraphError, UttGraph
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.topology import Topology, TransitionModel
from asrkit.text.lexicon import Lang

__all__ = ["REALIGN_ITERS", "IterationStats", "MonoOptions", "MonoResult", "train_mono"]

logger = logging.getLogger(__name__)

REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)
"""Iterations that realign first (``train_mono.sh``'s ``realign_iters``)."""


@dataclass(frozen=True)
class MonoOptions(EmOptions):
    """Options of :func:`train_mono`: :class:`.em.EmOptions` with ``train_mono.sh``'s
    defaults, plus

    Attributes:
        max_gauss: target total number of Gaussians (``totgauss`` 1000).
        initial_beam: beam of the first realignment (6).
        shortest: train on the N shortest utterances (in frames) only, then align every
            utterance with the final model; 0 = all.
    """

    num_iters: int = 40
    max_iter_inc: int = 30
    realign_iters: Collection[int] = REALIGN_ITERS
    max_gauss: int = 1000
    initial_beam: float = 6.0
    shortest: int = 0


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


def train_mono(feats: Mapping[str, torch.Tensor | np.ndarray],
               transcripts: Mapping[str, str | Sequence[str]], lang: Lang,
               options: MonoOptions | None = None, *, topology: Topology | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               **overrides) -> MonoResult:
    """Train a monophone HMM-GMM from a flat start (Kaldi ``steps/train_mono.sh``; the steps
    are in the module docstring).

    Args:
        feats: ``{utt: (T, F) frames}`` at 10 ms, normally 39-dimensional MFCC + deltas with
            per-speaker CMN (:func:`.features.load_gmm_features`). A lazy mapping such as
            ``kaldiio.load_scp`` works; all frames are loaded onto ``device`` once.
        transcripts: ``{utt: words}`` (Kaldi ``text``), a string or a word sequence.
        lang: from :func:`asrkit.text.lexicon.make_lang` (phones, lexicon, OOV word).
        options: :class:`MonoOptions` (default: Kaldi's).
        topology: HMM topologies (default Kaldi's: 3-state phones, 5-state silence).
        device: where the features, GMMs and alignment run (``"cuda"`` for a GPU).
        dtype: GMM parameter dtype (statistics are float64 regardless).
        **overrides: fields of :class:`MonoOptions` to replace (``num_iters=20``, ...).

    Returns:
        :class:`MonoResult`: the model, the alignments, the failed utterances with reasons and
        the per-iteration history. Utterances that fail are reported and skipped, never
        raised.

    Raises:
        ValueError: no utterance with both features and transcript, features of different
            dimensions, every utterance failing the equal alignment, or bad options.
        TypeError: an unknown option.
    """
    opts = options_from(MonoOptions, options, **overrides)
    device = torch.device(device)
    xs, failed = usable_features(feats, transcripts)
    tmodel = TransitionModel.from_phone_set(lang.phone_set, topology)
    compiler = GraphCompiler(lang, tmodel, sil_prob=opts.sil_prob, all_prons=opts.all_prons)
    graphs: dict[str, UttGraph] = {}
    for u in list(xs):
        try:
            graphs[u] = compiler.compile(u, transcripts[u])
        except TranscriptGraphError as e:
            failed[u] = e.reason
            del xs[u]
            logger.warning("%s: skipped: %s", u, e.reason)
    if not xs:
        raise ValueError("no usable utterance (see the warnings for the reasons)")
    if opts.shortest < 0:
        raise ValueError(f"shortest must be >= 0 utterances, got {opts.shortest}")
    rest: dict[str, torch.Tensor] = {}
    if 0 < opts.shortest < len(xs):
        keep = set(sorted(xs, key=lambda u: (xs[u].shape[0], u))[:opts.shortest])
        rest = {u: x for u, x in xs.items() if u not in keep}
        xs = {u: x for u, x in xs.items() if u in keep}
        logger.info("monophone training on the %d shortest of %d utterances (%d frames "
                    "each at most)", len(xs), len(xs) + len(rest),
                    max(x.shape[0] for x in xs.values()))
    all_x, offsets, xs = stack_frames(xs, device)
    flat = all_x.double()
    mean = flat.mean(0)
    var = (flat * flat).mean(0) - mean * mean
    del flat
    gmm = DiagGMM.init_single(tmodel.num_pdfs, mean, var.clamp_min(opts.var_floor),
                              dtype=dtype, device=device)
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

    res = run_em(model, all_x, offsets, xs, graphs, alis, opts, opts.max_gauss, first_iter=0,
                 first_beam=opts.initial_beam, failed=iter_failed)
    model, history = res.model, res.history
    failed.update(res.failed)
    alignments = res.alignments
    if rest:  # align_si.sh over the whole set
        more, more_failed = align_viterbi(
            boost_silence(model, opts.boost_silence), [graphs[u] for u in rest],
            {u: x.to(device) for u, x in rest.items()}, **opts.align_kwargs())
        alignments = {**alignments, **more}
        failed.update(more_failed)
    model.meta.update({"type": "monophone", "num_iters": opts.num_iters,
                       "max_gauss": opts.max_gauss, "power": opts.power,
                       "shortest": opts.shortest,
                       "sil_prob": opts.sil_prob, "acoustic_scale": opts.acoustic_scale,
                       "transition_scale": opts.transition_scale, "feat_dim": model.feat_dim,
                       "final_avg_loglik": history[-1].avg_loglik if history else math.nan})
    logger.info("monophone training done: %d Gaussians, %d utterances aligned, %d failed",
                model.num_gauss, len(alignments), len(failed))
    return MonoResult(model=model, alignments=alignments, failed=failed, history=history)
