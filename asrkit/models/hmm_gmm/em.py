"""The one Viterbi-EM loop of every HMM-GMM stage (Kaldi's ``train_mono.sh``,
``train_deltas.sh``, ``train_lda_mllt.sh`` and ``train_sat.sh`` share it).

Each stage builds its starting model, training graphs and alignments (flat start and equal
alignment for the monophone; tree, ``gmm-init-model`` and ``convert-ali`` for the triphones)
and then calls :func:`run_em`, which for each iteration ``x``:

1. realigns with the current model when ``x`` is in ``realign_iters``
   (``gmm-align-compiled``; the first realignment may use a narrower beam; with
   ``boost_silence`` > 1 the silence pdfs' likelihoods are boosted for the alignment only,
   Kaldi's ``gmm-boost-silence``, :func:`boost_silence`);
2. runs the stage's feature-transform steps scheduled at ``x`` (:class:`TransformStep`:
   MLLT for LDA+MLLT, per-speaker fMLLR for SAT), which change the frames and the model;
3. accumulates statistics of the alignments (``gmm-acc-stats-ali``);
4. re-estimates the GMMs and transitions and mixes up toward the Gaussian target (``gmm-est
   --mix-up --power``); the target starts at the number of pdfs and grows by
   ``(tot_gauss - S) // max_iter_inc`` after each iteration ``1 <= x <= max_iter_inc``;

and finally realigns with the final model. The logged average log-likelihood per frame is
that of the current alignment under the current model before its update; after a plain EM
iteration (no split, no removed Gaussian, no realignment, no transform) it cannot fall, and a
warning says so if it does.

:class:`EmOptions` holds the options every stage has; the stage functions add their own
(:class:`.mono.MonoOptions`, :class:`.tri.TriOptions`, :class:`.sat.SatOptions`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from asrkit.models.hmm_gmm.align import Alignment, align_viterbi
from asrkit.models.hmm_gmm.gmm import DiagGMM, GmmStats
from asrkit.models.hmm_gmm.graph import UttGraph
from asrkit.models.hmm_gmm.model import AcousticModel

__all__ = ["EmOptions", "EmResult", "IterationStats", "TransformStep", "aligned_frames",
           "boost_silence", "options_from", "run_em", "stack_frames"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmOptions:
    """Options of the EM loop, shared by every GMM stage (Kaldi's names in parentheses).

    Attributes:
        num_iters: iterations (``num_iters``).
        max_iter_inc: last iteration that raises the Gaussian target (``max_iter_inc``).
        realign_iters: iterations that realign first (``realign_iters``).
        power: mix-up allocation exponent (``--power`` 0.25).
        sil_prob: optional-silence probability of the training graphs.
        all_prons: allow all pronunciations of a word (else the first).
        beam: alignment beam (``--beam`` 10).
        retry_factor: retry beam = ``retry_factor * beam`` (``--retry-beam`` 40 = 4 x 10).
        acoustic_scale: acoustic scale of the alignment (0.1).
        transition_scale: HMM transition scale of the alignment (0.1).
        var_floor: absolute GMM variance floor.
        perturb: mix-up mean offset in standard deviations (0.2 with ``split_direction``
            ``fixed``; Kaldi's ``--perturb-factor`` is 0.01 with its random directions).
        split_direction: mix-up: ``fixed`` (every dimension moved by ``perturb`` standard
            deviations, HTK) or ``random`` (a standard-normal direction, Kaldi's
            ``DiagGmm::Split``), :meth:`.gmm.DiagGMM.mixup`.
        min_count: mix-up: fewest frames per Gaussian (``--min-count`` 20).
        final_align: realign with the final model (else the last alignments are returned).
        boost_silence: factor on the silence pdfs' likelihoods in every alignment of the loop
            (``--boost-silence``; 1.0 = off; Kaldi recipes often use 1.25).
    """

    num_iters: int = 35
    max_iter_inc: int = 25
    realign_iters: Collection[int] = (10, 20, 30)
    power: float = 0.25
    sil_prob: float = 0.5
    all_prons: bool = True
    beam: float = 10.0
    retry_factor: float = 4.0
    acoustic_scale: float = 0.1
    transition_scale: float = 0.1
    var_floor: float = 0.001
    perturb: float = 0.2
    split_direction: str = "fixed"
    min_count: float = 20.0
    final_align: bool = True
    boost_silence: float = 1.0

    def __post_init__(self) -> None:
        if self.num_iters < 1:
            raise ValueError(f"num_iters must be >= 1, got {self.num_iters}")
        if self.max_iter_inc < 1:
            raise ValueError(f"max_iter_inc must be >= 1, got {self.max_iter_inc}")
        if not self.boost_silence > 0:
            raise ValueError(f"boost_silence must be > 0, got {self.boost_silence}")
        if self.split_direction not in ("fixed", "random"):
            raise ValueError(f"split_direction must be 'fixed' or 'random', got "
                             f"{self.split_direction!r}")

    def align_kwargs(self, beam: float | None = None) -> dict:
        """Keyword arguments of :func:`.align.align_viterbi` (``beam`` overrides)."""
        b = self.beam if beam is None else beam
        return {"beam": b, "retry_beam": self.retry_factor * b,
                "acoustic_scale": self.acoustic_scale,
                "transition_scale": self.transition_scale}


def boost_silence(model: AcousticModel, boost: float) -> AcousticModel:
    """``model`` with the mixture weights of every silence pdf multiplied by ``boost`` (Kaldi
    ``gmm-boost-silence``): their log-likelihoods rise by ``log(boost)``, so alignments favour
    silence. Silence pdfs are those of the silence base phones (``tmodel.silence_bases``).

    Returns ``model`` itself when ``boost`` is 1; else a new model sharing means and variances
    (for aligning only: its weights no longer sum to 1).

    Raises:
        ValueError: ``boost`` is not positive.
    """
    if not boost > 0:
        raise ValueError(f"boost must be > 0, got {boost}")
    if boost == 1.0:
        return model
    tm, g = model.tmodel, model.gmm
    sil = torch.tensor([b in tm.silence_bases for b in tm.pdf_base], device=g.weights.device)
    weights = torch.where(sil[:, None], g.weights * boost, g.weights)
    return AcousticModel(tm, DiagGMM(weights, g.means, g.variances), model.meta)


def options_from(cls: type, options=None, **overrides):
    """``cls(**overrides)`` or ``options`` with ``overrides`` replaced (``dataclasses.replace``).

    Raises:
        TypeError: an override that is not a field of ``cls``.
    """
    if options is None:
        return cls(**overrides)
    return dataclasses.replace(options, **overrides) if overrides else options


@dataclass(frozen=True)
class IterationStats:
    """One training iteration.

    Attributes:
        iteration: ``x`` (0 is the monophone's equal-alignment pass).
        avg_loglik: average log-likelihood per frame of the alignment under the model of
            this iteration, before its update (natural log).
        num_frames: frames accumulated.
        num_gauss: Gaussians after this iteration's update and mix-up.
        realigned: whether this iteration realigned first.
        num_aligned: utterances accumulated.
        num_failed: utterances without an alignment this iteration.
        num_leaves: pdfs of the model (tied states of the tree).
    """

    iteration: int
    avg_loglik: float
    num_frames: int
    num_gauss: int
    realigned: bool
    num_aligned: int
    num_failed: int
    num_leaves: int = 0


class TransformStep(Protocol):
    """A feature-space step run at some iterations before accumulation (MLLT, fMLLR).

    Attributes:
        iters: the iterations it runs at.
    """

    iters: Collection[int]

    def __call__(self, iteration: int, model: AcousticModel, frames: torch.Tensor,
                 views: Mapping[str, torch.Tensor], offsets: Mapping[str, int],
                 alignments: Mapping[str, Alignment]) -> AcousticModel:
        """Change ``frames`` (``(N, F)``, in place; ``views`` are its per-utterance rows)
        and return the model to go on with."""


@dataclass
class EmResult:
    """What :func:`run_em` returns: the final model, its alignments, the utterances that
    failed the last alignment (``{utt: reason}``) and one :class:`IterationStats` per
    iteration."""

    model: AcousticModel
    alignments: dict[str, Alignment]
    failed: dict[str, str]
    history: list[IterationStats] = field(default_factory=list)


def stack_frames(xs: Mapping[str, torch.Tensor], device: torch.device
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


def aligned_frames(offsets: Mapping[str, int], alis: Mapping[str, Alignment]
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
    frame_ids, tids = aligned_frames(offsets, alis)
    stats = GmmStats.for_model(model.gmm)
    stats.accumulate(model.gmm, feats, model.tmodel.tid2pdf[tids].to(dev), frame_ids.to(dev))
    return stats, model.tmodel.transition_counts(tids)


def _em_update(model: AcousticModel, stats: GmmStats, tcounts: torch.Tensor,
               num_gauss_target: int, opts: EmOptions, min_gaussian_occupancy: float):
    """One M-step (gmm-est): GMM update, mix-up toward ``num_gauss_target``, transition update.

    Returns:
        ``(model, update_info, plain_em)``; ``plain_em`` is True when no Gaussian was split or
        removed, i.e. the next iteration's likelihood cannot fall below this one's.
    """
    new_gmm, info = model.gmm.update(stats, var_floor=opts.var_floor,
                                     min_gaussian_occupancy=min_gaussian_occupancy)
    updated = new_gmm.num_gauss
    new_gmm = new_gmm.mixup(num_gauss_target, stats.pdf_occs(), power=opts.power,
                            min_count=opts.min_count, perturb=opts.perturb,
                            direction=opts.split_direction, seed=num_gauss_target)
    plain_em = new_gmm.num_gauss == updated and info.num_removed == 0
    return AcousticModel(model.tmodel.update(tcounts), new_gmm), info, plain_em


def run_em(model: AcousticModel, frames: torch.Tensor, offsets: Mapping[str, int],
           views: Mapping[str, torch.Tensor], graphs: Mapping[str, UttGraph],
           alignments: dict[str, Alignment], opts: EmOptions, tot_gauss: int, *,
           first_iter: int = 1, first_beam: float | None = None,
           steps: Sequence[TransformStep] = (),
           failed: Mapping[str, str] | None = None) -> EmResult:
    """Iterations ``first_iter .. opts.num_iters - 1`` of Viterbi EM (module docstring),
    then the final alignment.

    Args:
        model: the starting model (on the training device).
        frames: ``(N, F)`` all training frames stacked (:func:`stack_frames`); transform
            steps change them in place.
        offsets: ``{utt: first row in frames}``.
        views: ``{utt: (T, F) rows of frames}``.
        graphs: ``{utt: training graph}`` of every utterance in ``views``.
        alignments: the starting alignments (``{utt: Alignment}``).
        opts: :class:`EmOptions`.
        tot_gauss: the Gaussian target after ``max_iter_inc`` iterations.
        first_iter: 0 for the monophone's pass over the equal alignment (its update keeps
            Gaussians with occupancy >= 3, Kaldi's ``--min-gaussian-occupancy=3``), 1 for the
            triphone stages.
        first_beam: beam of the first realignment (``train_mono.sh``'s initial beam 6);
            None for ``opts.beam``.
        steps: feature-transform steps (:class:`TransformStep`), run in order after any
            realignment at their iterations.
        failed: ``{utt: reason}`` of utterances without a starting alignment.

    Returns:
        :class:`EmResult`.

    Raises:
        ValueError: a realignment where no utterance can be aligned.
    """
    num_gauss_target = model.tmodel.num_pdfs
    inc = max(0, (tot_gauss - model.tmodel.num_pdfs) // opts.max_iter_inc)
    realign_set = set(opts.realign_iters)
    iter_failed = dict(failed or {})
    history: list[IterationStats] = []
    alis = alignments
    cur_beam = opts.beam if first_beam is None else first_beam
    plain_em = False
    utt_graphs = [graphs[u] for u in views]
    for x in range(first_iter, opts.num_iters):
        realigned = x > 0 and x in realign_set
        if realigned:
            alis, iter_failed = align_viterbi(boost_silence(model, opts.boost_silence),
                                              utt_graphs, views, **opts.align_kwargs(cur_beam))
            cur_beam = opts.beam
            if not alis:
                raise ValueError(f"iteration {x}: no utterance could be aligned")
        for step in steps:
            if x in step.iters:
                model = step(x, model, frames, views, offsets, alis)
                plain_em = False
        stats, tcounts = _accumulate(model, frames, offsets, alis)
        model, info, next_plain = _em_update(model, stats, tcounts, num_gauss_target, opts,
                                             3.0 if x == 0 else 10.0)
        h = IterationStats(iteration=x, avg_loglik=stats.avg_loglik,
                           num_frames=int(stats.count), num_gauss=model.gmm.num_gauss,
                           realigned=realigned, num_aligned=len(alis),
                           num_failed=len(iter_failed), num_leaves=model.tmodel.num_pdfs)
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
        if 1 <= x <= opts.max_iter_inc:
            num_gauss_target += inc
    if opts.final_align:
        alis, iter_failed = align_viterbi(boost_silence(model, opts.boost_silence), utt_graphs,
                                          views, **opts.align_kwargs())
    return EmResult(model, alis, iter_failed, history)
