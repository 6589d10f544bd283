"""Speaker-adaptive training (SAT) on fMLLR-adapted features (Kaldi ``steps/train_sat.sh``).

The recipe, as in ``train_sat.sh``:

1. Starting transforms: per-speaker fMLLR estimated with the alignment model (normally the
   LDA+MLLT system) on its alignments, silence frames weighted 0 (``ali-to-post |
   weight-silence-post 0.0 | gmm-est-fmllr``), unless the alignments come with transforms
   (a SAT system's ``trans.ark``).
2. Tree, model initialisation and EM as in :func:`.tri.train_tri`, on the adapted features,
   with the transforms re-estimated with the current model at ``fmllr_iters`` (``2 4 6 12``)
   and composed with the previous ones.
3. The speaker-independent alignment model ``final.alimdl``: one more M-step from the final
   model whose statistics are the *unadapted* features with Gaussian posteriors computed on
   the adapted ones (``gmm-acc-stats-twofeats``, ``gmm-est --remove-low-count-gaussians=false``);
   it shares the final model's tree, so it decodes through the same ``HCLG`` and gives the
   first pass of ``decode_fmllr.sh`` and ``align_fmllr.sh``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from asrkit.models.hmm_gmm.align import Alignment
from asrkit.models.hmm_gmm.em import options_from
from asrkit.models.hmm_gmm.fmllr import (
    FmllrStep,
    adapt_features,
    compose_fmllr,
    identity_fmllr,
    pdf_alignments,
    speaker_transforms,
)
from asrkit.models.hmm_gmm.gmm import GmmStats
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.mono import MonoResult
from asrkit.models.hmm_gmm.tri import TriOptions, TriResult, train_tri
from asrkit.text.lexicon import Lang

__all__ = ["SAT_FMLLR_ITERS", "SatOptions", "SatResult", "estimate_si_model", "train_sat"]

logger = logging.getLogger(__name__)

SAT_FMLLR_ITERS = (2, 4, 6, 12)
"""Iterations that re-estimate the speakers' fMLLR transforms (``train_sat.sh``)."""


@dataclass(frozen=True)
class SatOptions(TriOptions):
    """Options of :func:`train_sat`: :class:`.tri.TriOptions` (``train_sat.sh`` has
    ``train_deltas.sh``'s) plus

    Attributes:
        fmllr_iters: iterations that re-estimate the speakers' transforms (``2 4 6 12``).
        silence_weight: weight of silence frames in the fMLLR statistics (0.0).
    """

    fmllr_iters: Collection[int] = SAT_FMLLR_ITERS
    silence_weight: float = 0.0


@dataclass
class SatResult(TriResult):
    """What :func:`train_sat` returns: a :class:`.tri.TriResult` whose ``spk_transforms``
    are the speakers' complete fMLLR transforms of the *input* features, plus
    ``si_model``, the speaker-independent alignment model (``final.alimdl``)."""

    si_model: AcousticModel | None = None


def estimate_si_model(model: AcousticModel, si_feats: Mapping[str, torch.Tensor],
                      adapted_feats: Mapping[str, torch.Tensor],
                      alignments: Mapping[str, Alignment | torch.Tensor], *,
                      var_floor: float = 0.001) -> AcousticModel:
    """The speaker-independent alignment model of a SAT system (``final.alimdl``).

    Args:
        model: the final SAT model.
        si_feats: ``{utt: (T, F)}`` unadapted features.
        adapted_feats: the same frames after the speakers' fMLLR transforms.
        alignments: ``{utt: Alignment or (T,) tids}`` with ``model``.
        var_floor: GMM variance floor.

    Returns:
        An :class:`AcousticModel` with the same transition model and Gaussians' layout.

    Raises:
        ValueError: no utterance has both features and an alignment.
    """
    utts = [u for u in alignments if u in si_feats and u in adapted_feats]
    if not utts:
        raise ValueError("no utterance has features and an alignment for the SI model")
    dev = model.device
    tids = torch.cat([getattr(alignments[u], "tids", alignments[u]) for u in utts])
    post = torch.cat([adapted_feats[u] for u in utts]).to(dev)
    stat = torch.cat([si_feats[u] for u in utts]).to(dev)
    stats = GmmStats.for_model(model.gmm)
    stats.accumulate(model.gmm, post, model.tmodel.tid2pdf[tids].to(dev),
                     stats_feats=stat)
    gmm, _ = model.gmm.update(stats, var_floor=var_floor, remove_low_count=False)
    return AcousticModel(model.tmodel, gmm, dict(model.meta))


def train_sat(feats: Mapping[str, torch.Tensor | np.ndarray],
              transcripts: Mapping[str, str | Sequence[str]], lang: Lang,
              alignments: MonoResult | TriResult | Mapping[str, Alignment | torch.Tensor],
              options: SatOptions | None = None, *, spk_of: Mapping[str, str],
              ali_model: AcousticModel | None = None,
              init_transforms: Mapping[str, torch.Tensor] | None = None,
              device: torch.device | str = "cpu", **overrides) -> SatResult:
    """Train a SAT triphone system (Kaldi ``steps/train_sat.sh``; steps in the module
    docstring).

    Args:
        feats: ``{utt: (T, F)}`` speaker-independent features (normally LDA+MLLT, 40 dims).
        transcripts: ``{utt: words}``.
        lang: the lang dir's :class:`Lang`.
        alignments: starting alignments (a training result, or a mapping with ``ali_model``).
        options: :class:`SatOptions`.
        spk_of: ``{utt: speaker}`` (``utt2spk``).
        ali_model: the model of a plain alignment mapping; also estimates the starting
            transforms when ``init_transforms`` is None.
        init_transforms: ``{speaker: (F, F + 1)}`` transforms that came with the alignments
            (a previous SAT stage); None to estimate them with ``ali_model``.
        device: where training runs.
        **overrides: fields of :class:`SatOptions` to replace.

    Returns:
        :class:`SatResult`.

    Raises:
        ValueError: no alignment model to estimate the starting transforms, or anything
            :func:`.tri.train_tri` raises.
        TypeError: an unknown option.
    """
    opts = options_from(SatOptions, options, **overrides)
    xs = {u: torch.as_tensor(x, dtype=torch.float32) for u, x in feats.items()}
    if init_transforms is None:
        start_model = getattr(alignments, "model", None) or ali_model
        if start_model is None:
            raise ValueError("train_sat needs ali_model (or a training result) to estimate "
                             "the starting fMLLR transforms")
        src = getattr(alignments, "alignments", alignments)
        tids = {u: getattr(a, "tids", a) for u, a in src.items() if u in xs}
        pdfs, weights = pdf_alignments(start_model.tmodel, tids, opts.silence_weight)
        init_transforms, impr = speaker_transforms(start_model.gmm.to(device), xs, pdfs,
                                                   weights, spk_of)
        logger.info("SAT: starting fMLLR transforms of %d speakers from the alignment model "
                    "(auxf +%.4f per frame)", len(init_transforms), impr)
    adapted = adapt_features(xs, init_transforms, spk_of)
    step = FmllrStep(opts.fmllr_iters, spk_of, silence_weight=opts.silence_weight)
    tri_opts = TriOptions(**{f: getattr(opts, f) for f in TriOptions.__dataclass_fields__})
    res = train_tri(adapted, transcripts, lang, alignments, tri_opts, ali_model=ali_model,
                    steps=[step], device=device)
    del adapted
    f = res.model.feat_dim
    total = {spk: compose_fmllr(step.transforms.get(spk, identity_fmllr(f)), W)
             for spk, W in init_transforms.items()}
    final_feats = adapt_features(xs, total, spk_of)
    si_model = estimate_si_model(res.model, xs, final_feats, res.alignments)
    res.model.meta.update({"type": "sat", "fmllr_iters": sorted(opts.fmllr_iters),
                           "silence_weight": opts.silence_weight})
    si_model.meta.update(res.model.meta)
    si_model.meta["type"] = "sat_alignment_model"
    logger.info("SAT done: %d speakers' transforms, SI alignment model estimated",
                len(total))
    fields = {k: getattr(res, k) for k in TriResult.__dataclass_fields__}
    fields["spk_transforms"] = total
    return SatResult(**fields, si_model=si_model)
