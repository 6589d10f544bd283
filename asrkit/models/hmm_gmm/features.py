"""Features for GMM systems: per-speaker CMVN, then deltas and delta-deltas (Kaldi
``apply-cmvn --utt2spk=... scp:cmvn.scp scp:feats.scp ark:- | add-deltas ark:- ark:-``, the
feature pipeline of ``steps/train_mono.sh`` and ``steps/train_deltas.sh``).

13 MFCCs become 39-dimensional frames (10 ms each): the normalised cepstra, their deltas and
delta-deltas. Kaldi's default is mean normalisation only (``--norm-vars=false``), kept here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import kaldiio
import numpy as np
import torch
import torch.nn.functional as F

from asrkit.features.cmvn import (
    apply_cmvn,
    compute_cmvn_stats_per_speaker,
    read_cmvn_stats_per_speaker,
    read_spk2utt,
)

__all__ = ["add_deltas", "delta_filters", "feature_options", "gmm_features", "load_features",
           "load_gmm_features", "splice"]

logger = logging.getLogger(__name__)


def delta_filters(order: int = 2, window: int = 2) -> list[torch.Tensor]:
    """The FIR filters of Kaldi's ``DeltaFeatures`` (``feat/feature-functions.cc``).

    Order 0 is ``[1]``; order ``i`` convolves order ``i-1`` with ``[-w .. w] / sum j^2`` for
    ``j`` in ``-w .. w``. So order 1 is the usual regression delta and order 2 is that filter
    applied twice (length ``4w + 1``).

    Args:
        order: highest order (2 for delta-deltas).
        window: ``w`` (Kaldi ``--delta-window``, 2).

    Returns:
        ``order + 1`` float64 filters, filter ``i`` of length ``2 i w + 1``, centred.

    Raises:
        ValueError: ``order < 0`` or ``window < 1``.
    """
    if order < 0 or window < 1:
        raise ValueError(f"need order >= 0 and window >= 1, got {order}, {window}")
    taps = torch.arange(-window, window + 1, dtype=torch.float64)
    base = taps / (taps * taps).sum()
    filters = [torch.ones(1, dtype=torch.float64)]
    for _ in range(order):
        prev = filters[-1]
        cur = torch.zeros(prev.numel() + 2 * window, dtype=torch.float64)
        for j in range(2 * window + 1):
            cur[j:j + prev.numel()] += base[j] * prev
        filters.append(cur)
    return filters


def add_deltas(feats: torch.Tensor, order: int = 2, window: int = 2) -> torch.Tensor:
    """Append delta features, exactly as Kaldi's ``add-deltas``.

    Frame ``t`` of order ``i`` is ``sum_j filter_i[j] * x[clamp(t + j)]`` (edge frames
    repeated). Away from the edges this equals ``torchaudio.functional.compute_deltas`` with
    ``win_length = 2 * window + 1`` applied ``i`` times; within ``2 * window`` frames of the
    edges Kaldi's single combined filter differs from repeating the first-order one.

    Args:
        feats: ``(T, F)`` frames.
        order: number of delta orders (2: deltas and delta-deltas).
        window: delta window (Kaldi ``--delta-window``).

    Returns:
        ``(T, F * (order + 1))`` in ``feats``' dtype, ``[x, delta, delta-delta]``.

    Raises:
        ValueError: ``feats`` is not 2-D, or bad ``order`` / ``window``.
    """
    if feats.dim() != 2:
        raise ValueError(f"features have shape {tuple(feats.shape)}, expected (T, F)")
    filters = delta_filters(order, window)
    t, f = feats.shape
    if t == 0:
        return feats.new_zeros(0, f * (order + 1))
    x = feats.T.unsqueeze(0)  # (1, F, T)
    outs = [feats]
    for filt in filters[1:]:
        half = (filt.numel() - 1) // 2
        padded = F.pad(x, (half, half), mode="replicate")
        w = filt.to(feats.dtype).to(feats.device).expand(f, 1, -1)
        outs.append(F.conv1d(padded, w, groups=f)[0].T)
    return torch.cat(outs, 1)


def gmm_features(mfcc: torch.Tensor | np.ndarray, cmvn_stats: np.ndarray | None = None, *,
                 norm_vars: bool = False, delta_order: int = 2, delta_window: int = 2
                 ) -> torch.Tensor:
    """``(T, F)`` cepstra -> ``(T, F * (delta_order + 1))`` GMM features: CMVN (Kaldi
    ``apply-cmvn``) then :func:`add_deltas`. With 13 MFCCs this gives the 39-dimensional
    features of Kaldi's monophone and delta triphone systems.

    Args:
        mfcc: ``(T, F)`` frames (e.g. 13 MFCCs).
        cmvn_stats: the speaker's ``(2, F+1)`` CMVN stats (Kaldi layout), or None to skip.
        norm_vars: also normalise variances (Kaldi default false).
        delta_order: number of delta orders.
        delta_window: delta window.

    Returns:
        float32 tensor on ``mfcc``'s device (CPU for numpy input).

    Raises:
        ValueError: bad shapes or stats (see :func:`asrkit.features.cmvn.apply_cmvn`).
    """
    x = (mfcc.to(torch.float32) if isinstance(mfcc, torch.Tensor)
         else torch.tensor(np.asarray(mfcc), dtype=torch.float32))  # copy: arrays may be read-only
    if cmvn_stats is not None:
        x = apply_cmvn(x, cmvn_stats, norm_vars=norm_vars)
    return add_deltas(x, delta_order, delta_window)


def load_gmm_features(feats_scp: str | os.PathLike,
                      spk2utt: Mapping[str, Sequence[str]] | str | os.PathLike, *,
                      cmvn_scp: str | os.PathLike | None = None, norm_vars: bool = False,
                      delta_order: int = 2, delta_window: int = 2,
                      utt_ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Read ``feats.scp`` and return per-speaker-CMVN'd features with deltas.

    Args:
        feats_scp: Kaldi ``feats.scp`` of ``(T, F)`` cepstra (e.g. from
            :func:`asrkit.features.compute.compute_features` with MFCC).
        spk2utt: ``{speaker: [utts]}`` or a ``spk2utt`` file.
        cmvn_scp: per-speaker stats (Kaldi ``cmvn.scp``); None computes them from
            ``feats_scp`` (:func:`asrkit.features.cmvn.compute_cmvn_stats_per_speaker`), with
            ``utt_ids`` only for the speakers of those utterances (all of their utterances).
        norm_vars: also normalise variances.
        delta_order: number of delta orders.
        delta_window: delta window.
        utt_ids: only these utterances (default: all of ``feats_scp``).

    Returns:
        ``{utt: (T, F * (delta_order + 1)) float32}`` in ``feats_scp`` order. Utterances
        whose speaker has no stats are skipped with a warning.

    Raises:
        ValueError: malformed ``spk2utt``; see also the CMVN helpers.
    """
    spk_utts = read_spk2utt(spk2utt)
    utt2spk = {u: spk for spk, utts in spk_utts.items() for u in utts}
    feats = kaldiio.load_scp(str(feats_scp))
    wanted = list(feats) if utt_ids is None else list(utt_ids)
    if cmvn_scp is not None:
        stats = read_cmvn_stats_per_speaker(cmvn_scp)
    elif utt_ids is None:
        stats = compute_cmvn_stats_per_speaker(feats_scp, spk_utts)
    else:  # only the speakers of these utterances (a decode job, a chunk of speakers)
        need = {utt2spk.get(u) for u in wanted}
        spk_utts = {spk: us for spk, us in spk_utts.items() if spk in need}
        has_feats = any(u in feats for us in spk_utts.values() for u in us)
        stats = compute_cmvn_stats_per_speaker(feats_scp, spk_utts) if has_feats else {}
    out: dict[str, torch.Tensor] = {}
    for utt in wanted:
        spk = utt2spk.get(utt)
        if spk is None or spk not in stats:
            logger.warning("%s: no CMVN stats for its speaker %s; skipped", utt, spk)
            continue
        out[utt] = gmm_features(feats[utt], stats[spk], norm_vars=norm_vars,
                                delta_order=delta_order, delta_window=delta_window)
    return out


def usable_features(feats: Mapping[str, torch.Tensor | np.ndarray],
                   transcripts: Mapping[str, str | Sequence[str]]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Float32 CPU frames of the utterances with features and a transcript (C order), and
    ``{utt: reason}`` for the others (no transcript, no features, non-finite features); the
    skipped ones are logged by id. Shared by monophone and triphone training.

    Args:
        feats: utterance id → (T, F) frames (tensor or array, e.g. from kaldiio).
        transcripts: utterance id → words (a string or a word list).

    Returns:
        ``(frames, failed)``: ``{utt: (T, F) float32 tensor}`` and ``{utt: reason}``.

    Raises:
        ValueError: no utterance with both, an utterance whose features are not (T, F), or
            feature dimensions that differ between utterances, or no usable utterance.
    """
    failed: dict[str, str] = {}
    for u in feats.keys() - transcripts.keys():
        failed[u] = "no transcript"
    for u in transcripts.keys() - feats.keys():
        failed[u] = "no features"
    utts = sorted(feats.keys() & transcripts.keys(), key=lambda u: u.encode("utf-8"))
    if not utts:
        raise ValueError("no utterance has both features and a transcript")
    xs: dict[str, torch.Tensor] = {}
    dim = None
    for u in utts:
        x = feats[u]
        if not isinstance(x, torch.Tensor):
            x = torch.tensor(np.asarray(x))  # a copy: kaldiio arrays may be read-only
        if x.dim() != 2:
            raise ValueError(f"{u}: features have shape {tuple(x.shape)}, expected (T, F)")
        if dim is None:
            dim = x.shape[1]
        elif x.shape[1] != dim:
            raise ValueError(f"{u}: feature dimension {x.shape[1]}, expected {dim} as for "
                             f"{utts[0]}")
        if not bool(torch.isfinite(x).all()):
            failed[u] = "features are not finite (NaN or Inf)"
            continue
        xs[u] = x.detach().cpu().to(torch.float32)
    for u, why in sorted(failed.items()):
        logger.warning("%s: skipped: %s", u, why)
    if not xs:
        raise ValueError("no usable utterance (see the warnings for the reasons)")
    return xs, failed


def splice(feats: torch.Tensor, context: int = 3) -> torch.Tensor:
    """Stack frames ``t - context .. t + context`` (Kaldi ``splice-feats``; edge frames are
    repeated).

    Args:
        feats: ``(T, F)`` frames.
        context: frames on each side.

    Returns:
        ``(T, F * (2 * context + 1))``, oldest frame first.

    Raises:
        ValueError: ``feats`` not 2-D or ``context < 0``.
    """
    if feats.dim() != 2:
        raise ValueError(f"feats must be (T, F), got shape {tuple(feats.shape)}")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    t = feats.shape[0]
    if t == 0:
        return feats.new_zeros(0, feats.shape[1] * (2 * context + 1))
    offs = torch.arange(-context, context + 1, device=feats.device)
    idx = (torch.arange(t, device=feats.device)[:, None] + offs[None, :]).clamp(0, t - 1)
    return feats[idx].reshape(t, -1)


def feature_options(model_cfg: Mapping) -> dict:
    """The feature options saved in a model's ``meta["features"]``: ``delta_order``,
    ``delta_window``, ``norm_vars`` (per-speaker CMVN)."""
    return {"delta_order": int(model_cfg.get("delta_order", 2)),
            "delta_window": int(model_cfg.get("delta_window", 2)),
            "norm_vars": bool(model_cfg.get("norm_vars", False)), "cmvn": "speaker"}


def load_features(data_dir: str | os.PathLike, options: Mapping,
                  utt_ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """GMM features of a feature data dir: ``{utt: (T, F * (delta_order + 1))}`` at 10 ms,
    or with ``options["splice"]`` the CMN'd cepstra spliced over ``+-splice`` frames and
    multiplied by ``options["transform"]`` (LDA+MLLT, ``(dim, F * (2 * splice + 1))``).

    Args:
        data_dir: a data dir with ``feats.scp`` (cepstra, ``asrkit features --type mfcc``)
            and ``spk2utt``; ``cmvn_spk.scp`` is used when present, else per-speaker stats are
            computed from the features.
        options: :func:`feature_options` (``model.meta["features"]``).
        utt_ids: only these utterances (default: all of ``feats.scp``).

    Raises:
        FileNotFoundError: ``feats.scp`` or ``spk2utt`` is missing.
    """
    d = Path(data_dir)
    for name in ("feats.scp", "spk2utt"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found; expected a feature data dir "
                                    "(asrkit features --type mfcc)")
    cmvn = d / "cmvn_spk.scp"
    splice_ctx = options.get("splice")
    feats = load_gmm_features(d / "feats.scp", d / "spk2utt",
                              cmvn_scp=cmvn if cmvn.is_file() else None,
                              norm_vars=bool(options.get("norm_vars", False)),
                              delta_order=0 if splice_ctx is not None
                              else int(options.get("delta_order", 2)),
                              delta_window=int(options.get("delta_window", 2)),
                              utt_ids=utt_ids)
    if splice_ctx is None:
        return feats
    transform = options.get("transform")
    mat = None if transform is None else torch.as_tensor(transform, dtype=torch.float32)
    out = {}
    for u, x in feats.items():
        y = splice(x, int(splice_ctx))
        out[u] = y if mat is None else y @ mat.T
    return out
