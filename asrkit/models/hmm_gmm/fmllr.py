"""Feature-space MLLR (fMLLR, "constrained MLLR") per speaker for diagonal GMMs.

An fMLLR transform is a ``(F, F + 1)`` matrix ``W = [A b]`` applied to every frame of a
speaker, ``x' = A x + b``, chosen to maximise the likelihood of the speaker's frames under
the model (with the Jacobian ``log |det A|`` per frame). The estimation is Gales' row-by-row
update ("Maximum likelihood linear transformations for HMM-based speech recognition",
Computer Speech and Language 12, 1998), as in Kaldi's ``FmllrDiagGmmAccs`` /
``gmm-est-fmllr``:

* statistics from frames with Gaussian posteriors ``gamma_tm`` (the frame's pdf from an
  alignment or a first-pass decode, its components' posteriors under the GMM; silence
  frames weighted down, Kaldi's ``weight-silence-post``):
  ``beta = sum gamma``, ``K = sum gamma (mu_m / var_m) xi_t^T`` ``(F, F + 1)`` and per row
  ``G_i = sum gamma / var_mi xi_t xi_t^T`` ``(F + 1, F + 1)`` with ``xi = [x; 1]``;
* for each row ``i``: ``w_i = (alpha c_i + k_i) G_i^-1`` with ``c_i`` the row's cofactor
  direction (row ``i`` of ``A^-T``, extended by 0) and ``alpha`` the root of
  ``a alpha^2 + b alpha - beta = 0`` (``a = c G^-1 c^T``, ``b = c G^-1 k^T``) that maximises
  ``beta log|alpha a + b| - alpha^2 a / 2``; rows are swept ``num_iters`` times, each sweep
  raising the auxiliary function ``beta log|det A| + sum_i (w_i k_i^T - w_i G_i w_i^T / 2)``.

Speaker-adaptive training (SAT, Kaldi ``steps/train_sat.sh``) trains on fMLLR-adapted
features; decoding (``steps/decode_fmllr.sh``) estimates the transforms of a test speaker
from a first-pass decode. Transforms are stored as Kaldi ``trans.ark`` matrices (kaldiio).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.topology import TransitionModel

__all__ = [
    "FmllrStats",
    "FmllrStep",
    "accumulate_fmllr_stats",
    "adapt_features",
    "apply_fmllr",
    "compose_fmllr",
    "estimate_fmllr",
    "fmllr_auxf",
    "identity_fmllr",
    "pdf_alignments",
    "read_fmllr",
    "silence_pdf_weights",
    "speaker_transforms",
    "write_fmllr",
    "write_fmllr_features",
]

logger = logging.getLogger(__name__)

_CHUNK_FRAMES = 8192


@dataclass
class FmllrStats:
    """fMLLR sufficient statistics of one speaker (float64).

    Attributes:
        beta: total posterior weight (frames).
        K: ``(F, F + 1)`` ``sum gamma (mu / var) xi^T``.
        G: ``(F, F + 1, F + 1)`` ``sum gamma / var_i xi xi^T`` per row ``i``.
    """

    beta: float
    K: torch.Tensor
    G: torch.Tensor

    @classmethod
    def zeros(cls, dim: int) -> FmllrStats:
        """Empty statistics for ``dim``-dimensional features."""
        return cls(0.0, torch.zeros(dim, dim + 1, dtype=torch.float64),
                   torch.zeros(dim, dim + 1, dim + 1, dtype=torch.float64))

    def add_(self, other: FmllrStats) -> FmllrStats:
        """Add ``other`` in place; returns self."""
        self.beta += other.beta
        self.K += other.K
        self.G += other.G
        return self


def identity_fmllr(dim: int) -> torch.Tensor:
    """``[I 0]``, the ``(dim, dim + 1)`` transform that changes nothing (float64)."""
    return torch.cat([torch.eye(dim, dtype=torch.float64),
                      torch.zeros(dim, 1, dtype=torch.float64)], 1)


def apply_fmllr(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x A^T + b`` for frames ``x`` ``(T, F)`` and ``W = [A b]`` ``(F, F + 1)``; same dtype
    as ``x``.

    Raises:
        ValueError: ``W`` is not ``(F, F + 1)``.
    """
    f = x.shape[1]
    if tuple(W.shape) != (f, f + 1):
        raise ValueError(f"fMLLR transform must be ({f}, {f + 1}) for {f}-dim features, got "
                         f"{tuple(W.shape)}")
    W = W.to(x.device, x.dtype)
    return x @ W[:, :f].T + W[:, f]


def compose_fmllr(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The transform applying ``inner`` then ``outer`` (Kaldi ``compose-transforms --b-is-affine``):
    ``[A2 A1, A2 b1 + b2]``."""
    f = inner.shape[0]
    a2, b2 = outer[:, :f].double(), outer[:, f].double()
    return torch.cat([a2 @ inner[:, :f].double(),
                      (a2 @ inner[:, f].double() + b2)[:, None]], 1)


def silence_pdf_weights(tmodel: TransitionModel, tids: torch.Tensor,
                        silence_weight: float) -> torch.Tensor:
    """Per-frame weights of an alignment: ``silence_weight`` on frames of silence phones, 1
    elsewhere (Kaldi ``weight-silence-post``); ``(T,)`` float64."""
    sil = torch.tensor(_silence_phone_mask(tmodel), dtype=torch.bool)
    phones = tmodel.tid2phone[torch.as_tensor(tids, dtype=torch.int64)]
    w = torch.ones(phones.numel(), dtype=torch.float64)
    w[sil[phones]] = silence_weight
    return w


def _silence_phone_mask(tmodel: TransitionModel) -> list[bool]:
    n = max(tmodel.phone_names) + 1 if tmodel.phone_names else 1
    mask = [False] * n
    for i, p in tmodel.phone_names.items():
        mask[i] = tmodel.phone_base.get(p, p) in tmodel.silence_bases
    return mask


def accumulate_fmllr_stats(gmm: DiagGMM, feats: torch.Tensor, pdf_ids: torch.Tensor,
                           weights: torch.Tensor | None = None) -> FmllrStats:
    """fMLLR statistics of one speaker's frames (Kaldi ``gmm-est-fmllr``'s accumulation,
    ``FmllrDiagGmmAccs::AccumulateForGmm``).

    Args:
        gmm: the model the transform adapts to (its Gaussians' means and variances).
        feats: ``(T, F)`` frames, *unadapted* (the transform is estimated for them).
        pdf_ids: ``(T,)`` pdf of each frame (from an alignment or a first-pass best path);
            each frame is shared among the pdf's components by their posteriors.
        weights: ``(T,)`` frame weights (e.g. :func:`silence_pdf_weights`); None for ones.

    Returns:
        :class:`FmllrStats`.

    Raises:
        ValueError: lengths or dimensions disagree.
    """
    x = torch.as_tensor(feats).to(gmm.device, gmm.dtype)
    t, f = x.shape
    if f != gmm.feat_dim:
        raise ValueError(f"features have dimension {f}, the model {gmm.feat_dim}")
    pdf_ids = torch.as_tensor(pdf_ids, dtype=torch.int64, device=gmm.device).reshape(-1)
    if pdf_ids.numel() != t:
        raise ValueError(f"{pdf_ids.numel()} pdf ids for {t} frames")
    w = (torch.ones(t, dtype=torch.float64) if weights is None
         else torch.as_tensor(weights, dtype=torch.float64).reshape(-1)).to(gmm.device)
    if w.numel() != t:
        raise ValueError(f"{w.numel()} frame weights for {t} frames")
    _, _, wp, gp, offs = gmm._flat()
    mu_over_var = wp[:, :f].double()            # (G, F)
    inv_var = (-2.0 * wp[:, f:]).double()       # (G, F)
    m_t = torch.zeros(t, f, dtype=torch.float64, device=gmm.device)
    v_t = torch.zeros(t, f, dtype=torch.float64, device=gmm.device)
    offs_l = offs.tolist()
    order = torch.argsort(pdf_ids, stable=True)
    pdfs, counts = torch.unique_consecutive(pdf_ids[order], return_counts=True)
    start = 0
    for p, n in zip(pdfs.tolist(), counts.tolist()):
        a, b = offs_l[p], offs_l[p + 1]
        rows = order[start:start + n]
        start += n
        xc = x[rows]
        ll = torch.cat([xc, xc * xc], 1) @ wp[a:b].T + gp[a:b]      # (n, M_p)
        post = torch.softmax(ll.double(), 1) * w[rows, None]
        m_t[rows] = post @ mu_over_var[a:b]
        v_t[rows] = post @ inv_var[a:b]
    xi = torch.cat([x.double(), torch.ones(t, 1, dtype=torch.float64, device=x.device)], 1)
    K = m_t.T @ xi
    G = torch.zeros(f, (f + 1) * (f + 1), dtype=torch.float64, device=x.device)
    for i in range(0, t, _CHUNK_FRAMES):
        xc = xi[i:i + _CHUNK_FRAMES]
        outer = (xc[:, :, None] * xc[:, None, :]).reshape(xc.shape[0], -1)
        G += v_t[i:i + _CHUNK_FRAMES].T @ outer
    return FmllrStats(float(w.sum()), K.cpu(), G.reshape(f, f + 1, f + 1).cpu())


def fmllr_auxf(stats: FmllrStats, W: torch.Tensor) -> float:
    """The auxiliary function ``beta log|det A| + sum_i (w_i k_i^T - w_i G_i w_i^T / 2)``
    of ``W`` (its change is the change of the speaker's log-likelihood, up to the posteriors
    being fixed)."""
    W = W.double()
    f = W.shape[0]
    _, logdet = torch.linalg.slogdet(W[:, :f])
    quad = torch.einsum("ij,ijk,ik->", W, stats.G, W)
    return float(stats.beta * logdet + (W * stats.K).sum() - 0.5 * quad)


def estimate_fmllr(stats: FmllrStats, init: torch.Tensor | None = None, *,
                   num_iters: int = 10, min_count: float = 50.0
                   ) -> tuple[torch.Tensor, float]:
    """Estimate ``W = [A b]`` from statistics (Gales 1998 row-by-row update, Kaldi
    ``ComputeFmllrMatrixDiagGmmFull``).

    Args:
        stats: the speaker's :class:`FmllrStats`.
        init: starting ``(F, F + 1)`` transform (default ``[I 0]``).
        num_iters: sweeps over the rows (Kaldi ``--fmllr-num-iters`` 40 at most; the
            auxiliary function converges in a few).
        min_count: fewer frames than this give back ``init`` unchanged (Kaldi
            ``--fmllr-min-count``), so a speaker with almost no speech is not distorted.

    Returns:
        ``(W (F, F + 1) float64, auxiliary-function improvement per frame)``.

    Raises:
        ValueError: ``init`` of the wrong shape.
    """
    f = stats.K.shape[0]
    W = identity_fmllr(f) if init is None else init.detach().double().clone().cpu()
    if tuple(W.shape) != (f, f + 1):
        raise ValueError(f"init must be ({f}, {f + 1}), got {tuple(W.shape)}")
    if stats.beta < min_count:
        logger.info("fMLLR: %.1f frames < min_count %.1f; transform not updated", stats.beta,
                    min_count)
        return W, 0.0
    before = fmllr_auxf(stats, W)
    Ginv = torch.linalg.inv(stats.G + 1e-10 * torch.eye(f + 1, dtype=torch.float64))
    for _ in range(num_iters):
        for i in range(f):
            cof = torch.linalg.inv(W[:, :f]).T[i]           # direction of row i's cofactors
            c = torch.cat([cof, cof.new_zeros(1)])
            k = stats.K[i]
            gi = Ginv[i]
            a = float(c @ gi @ c)
            b = float(c @ gi @ k)
            disc = math.sqrt(b * b + 4.0 * a * stats.beta)
            best, best_f = None, -math.inf
            for alpha in ((-b + disc) / (2 * a), (-b - disc) / (2 * a)):
                val = alpha * a + b
                if val == 0:
                    continue
                fa = stats.beta * math.log(abs(val)) - 0.5 * alpha * alpha * a
                if fa > best_f:
                    best, best_f = alpha, fa
            W[i] = (best * c + k) @ gi
    impr = (fmllr_auxf(stats, W) - before) / stats.beta
    return W, impr


def write_fmllr(path: str | os.PathLike, transforms: Mapping[str, torch.Tensor]) -> Path:
    """Write per-speaker transforms as a Kaldi ``trans.ark`` (binary matrices, kaldiio), with
    ``trans.scp`` beside it; atomic.

    Returns:
        The ark path.
    """
    import kaldiio

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp_ark = p.with_name(p.name + ".tmp")
    tmp_scp = p.with_suffix(".scp.tmp")
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as w:
        for spk in sorted(transforms):
            w(spk, transforms[spk].double().cpu().numpy())
    # the scp names the temporary ark; rewrite it to the final name
    lines = tmp_scp.read_text().replace(str(tmp_ark), str(p))
    os.replace(tmp_ark, p)
    tmp_scp.write_text(lines)
    os.replace(tmp_scp, p.with_suffix(".scp"))
    return p


def read_fmllr(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Kaldi ``trans.ark`` of per-speaker ``(F, F + 1)`` transforms (float64).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an entry that is not an ``(F, F + 1)`` matrix.
    """
    import kaldiio

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no fMLLR transforms (trans.ark)")
    out = {}
    for spk, m in kaldiio.load_ark(str(p)):
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[1] != m.shape[0] + 1:
            raise ValueError(f"{p}: transform of {spk} has shape {m.shape}, expected (F, F+1)")
        out[spk] = torch.from_numpy(m.astype(np.float64))
    return out


def speaker_transforms(gmm: DiagGMM, feats: Mapping[str, torch.Tensor],
                       pdf_ali: Mapping[str, torch.Tensor],
                       frame_weights: Mapping[str, torch.Tensor],
                       spk_of: Mapping[str, str], *,
                       init: Mapping[str, torch.Tensor] | None = None,
                       num_iters: int = 10, min_count: float = 50.0
                       ) -> tuple[dict[str, torch.Tensor], float]:
    """Estimate one fMLLR transform per speaker from aligned frames.

    Args:
        gmm: model to adapt to.
        feats: ``{utt: (T, F)}`` frames the transforms apply to.
        pdf_ali: ``{utt: (T,)}`` pdf per frame (utterances without one are skipped).
        frame_weights: ``{utt: (T,)}`` weights (silence down-weighted).
        spk_of: ``{utt: speaker}`` (``utt2spk``).
        init: per-speaker starting transforms (default identity).
        num_iters: row sweeps.
        min_count: see :func:`estimate_fmllr`.

    Returns:
        ``({speaker: W}, average auxiliary improvement per frame)``; a speaker without
        aligned frames keeps its ``init`` (or the identity).
    """
    f = gmm.feat_dim
    stats: dict[str, FmllrStats] = {}
    for u, p in pdf_ali.items():
        if u not in feats or u not in spk_of:
            continue
        s = stats.setdefault(spk_of[u], FmllrStats.zeros(f))
        s.add_(accumulate_fmllr_stats(gmm, feats[u], p, frame_weights.get(u)))
    out: dict[str, torch.Tensor] = {}
    tot_impr, tot_frames = 0.0, 0.0
    speakers = set(spk_of.values())
    for spk in sorted(speakers):
        w0 = None if init is None else init.get(spk)
        if spk not in stats:
            out[spk] = identity_fmllr(f) if w0 is None else w0.double()
            continue
        W, impr = estimate_fmllr(stats[spk], w0, num_iters=num_iters, min_count=min_count)
        out[spk] = W
        tot_impr += impr * stats[spk].beta
        tot_frames += stats[spk].beta
    return out, (tot_impr / tot_frames if tot_frames else 0.0)


def adapt_features(feats: Mapping[str, torch.Tensor], transforms: Mapping[str, torch.Tensor],
                   spk_of: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``{utt: frames}`` with each utterance's speaker transform applied (Kaldi
    ``transform-feats --utt2spk``); utterances whose speaker has no transform are kept as
    they are, with a warning.

    Raises:
        ValueError: a transform of the wrong shape.
    """
    out = {}
    missing = set()
    for u, x in feats.items():
        W = transforms.get(spk_of.get(u, u))
        if W is None:
            missing.add(spk_of.get(u, u))
            out[u] = x
        else:
            out[u] = apply_fmllr(W, x)
    if missing:
        logger.warning("no fMLLR transform for %d speaker(s) (%s); their features are "
                       "unadapted", len(missing), ", ".join(sorted(missing)[:5]))
    return out


def pdf_alignments(tmodel: TransitionModel, tids: Mapping[str, torch.Tensor],
                   silence_weight: float) -> tuple[dict[str, torch.Tensor],
                                                   dict[str, torch.Tensor]]:
    """``({utt: pdf per frame}, {utt: frame weights})`` of transition-id alignments."""
    t2p = tmodel.tid2pdf
    pdfs = {u: t2p[torch.as_tensor(t, dtype=torch.int64)] for u, t in tids.items()}
    weights = {u: silence_pdf_weights(tmodel, t, silence_weight) for u, t in tids.items()}
    return pdfs, weights




class FmllrStep:
    """SAT's per-speaker fMLLR re-estimation (``train_sat.sh`` at its ``fmllr_iters``) as an
    EM step (:class:`.em.TransformStep`): estimate a transform per speaker on the current
    frames with the current model, apply it to the frames in place and compose it into
    :attr:`transforms`.

    Args:
        iters: iterations it runs at (Kaldi ``2 4 6 12``).
        spk_of: ``{utt: speaker}``.
        silence_weight: weight of silence frames (0.0 in training).
        num_iters: row sweeps of :func:`estimate_fmllr`.
        min_count: see :func:`estimate_fmllr`.

    Attributes:
        transforms: ``{speaker: (F, F + 1)}`` composition of the transforms estimated so far.
    """

    def __init__(self, iters: Collection[int], spk_of: Mapping[str, str], *,
                 silence_weight: float = 0.0, num_iters: int = 10,
                 min_count: float = 50.0) -> None:
        self.iters = frozenset(iters)
        self.spk_of = dict(spk_of)
        self.silence_weight = silence_weight
        self.num_iters = num_iters
        self.min_count = min_count
        self.transforms: dict[str, torch.Tensor] = {}

    def __call__(self, iteration: int, model: AcousticModel, frames: torch.Tensor,
                 views: Mapping[str, torch.Tensor], offsets: Mapping[str, int],
                 alignments: Mapping) -> AcousticModel:
        """Re-estimate, apply and compose the speakers' transforms; the model is unchanged."""
        tids = {u: getattr(a, "tids", a) for u, a in alignments.items() if u in views}
        pdfs, weights = pdf_alignments(model.tmodel, tids, self.silence_weight)
        new, impr = speaker_transforms(model.gmm, views, pdfs, weights,
                                       {u: self.spk_of[u] for u in views if u in self.spk_of},
                                       num_iters=self.num_iters, min_count=self.min_count)
        for u, x in views.items():
            W = new.get(self.spk_of.get(u))
            if W is not None:
                x.copy_(apply_fmllr(W, x))
        f = model.feat_dim
        for spk, W in new.items():
            self.transforms[spk] = compose_fmllr(W, self.transforms.get(spk, identity_fmllr(f)))
        logger.info("iter %d: fMLLR re-estimated for %d speakers (auxf +%.4f per frame)",
                    iteration, len(new), impr)
        return model


_FMLLR_FEATS_INFO = "fmllr_feats.json"


def _trans_file(trans: str | os.PathLike) -> Path:
    p = Path(trans)
    if p.is_dir():
        p = p / "trans.ark"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no fMLLR transforms; expected a trans.ark or a dir holding "
                                "one (a sat stage dir, an asrkit align or asrkit decode dir of a "
                                "sat stage)")
    return p


def _write_subset_meta(src: Path, out: Path, utts: set[str]) -> None:
    """``src``'s per-utterance files restricted to ``utts``, sorted and atomic, into ``out``:
    ``utt2spk`` and ``spk2utt`` from it; ``text``, ``utt2dur``, ``segments`` and ``wav.scp``
    (its recordings of the kept segments, or its kept utterances) when present."""
    from asrkit.data.datadir import read_kaldi_map, spk2utt_from_utt2spk, write_kaldi_map

    def kept(name: str, keys: set[str]) -> dict[str, str]:
        m = read_kaldi_map(src / name, allow_empty_value=True)
        return {k: v for k, v in m.items() if k in keys}

    utt2spk = kept("utt2spk", utts)
    write_kaldi_map(out / "utt2spk", utt2spk)
    write_kaldi_map(out / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    for name in ("text", "utt2dur"):
        if (src / name).is_file():
            write_kaldi_map(out / name, kept(name, utts))
    recordings = utts
    if (src / "segments").is_file():
        segments = kept("segments", utts)
        write_kaldi_map(out / "segments", segments)
        recordings = {v.split()[0] for v in segments.values()}
    if (src / "wav.scp").is_file():
        write_kaldi_map(out / "wav.scp", kept("wav.scp", recordings))


def write_fmllr_features(model: str | os.PathLike, data_dir: str | os.PathLike,
                         trans: str | os.PathLike, out_dir: str | os.PathLike, *,
                         speakers_per_chunk: int = 16) -> tuple[Path, int]:
    """Write a SAT system's fMLLR-adapted features as a feature data dir (Kaldi
    ``steps/nnet/make_fmllr_feats.sh``), the input of a hybrid network trained on SAT
    alignments (Kaldi's DNN-on-fMLLR recipe, ``local/nnet/run_dnn.sh``).

    Each utterance's cepstra get the model's own feature pipeline (per-speaker CMN, splicing
    and the LDA+MLLT matrix, :func:`~asrkit.models.hmm_gmm.features.load_features` with
    ``meta["features"]``), then its speaker's ``(F, F + 1)`` transform: ``(T, F)`` frames at
    10 ms, ``F`` the model's feature dimension (40 for Kaldi's sizes). Speakers are processed
    ``speakers_per_chunk`` at a time, so the data never has to fit in memory.

    Writes ``OUT/feats.ark`` + ``feats.scp``, ``utt2num_frames``, ``feat_dim``, global CMVN
    stats ``cmvn.ark``, the data dir's ``utt2spk``, ``spk2utt`` and, when present, ``text``,
    ``utt2dur``, ``segments``, ``wav.scp`` restricted to the utterances written, and
    ``fmllr_feats.json`` (model, transforms). Every file is written atomically; a finished dir with the same inputs is left
    as it is.

    Args:
        model: the SAT stage's ``final.mdl`` (or its stage dir).
        data_dir: the MFCC feature data dir the model was trained or decoded on
            (``feats.scp``, ``spk2utt``, ``utt2spk``).
        trans: ``trans.ark`` or a dir holding one: the stage dir for its training speakers,
            an ``asrkit decode`` dir of the stage for test speakers (Kaldi's
            ``--transform-dir``), an ``asrkit align`` dir.
        out_dir: the feature data dir to write.
        speakers_per_chunk: speakers loaded at a time.

    Returns:
        ``(out_dir, number of utterances written)``.

    Raises:
        FileNotFoundError: no model, data dir files or ``trans.ark``.
        ValueError: a speaker of ``data_dir`` has no transform (named), or a transform's size
            does not match the model's features.
    """
    from asrkit.data.datadir import read_kaldi_map, write_kaldi_map
    from asrkit.features.cmvn import compute_cmvn_stats, write_ark, write_cmvn_stats, write_scp
    from asrkit.fileio import atomic_write, is_done, mark_done
    from asrkit.models.hmm_gmm.features import load_features

    mp = Path(model)
    mp = mp / "final.mdl" if mp.is_dir() else mp
    if not mp.is_file():
        raise FileNotFoundError(f"{mp}: no HMM-GMM model (final.mdl of a sat stage)")
    d, out = Path(data_dir), Path(out_dir)
    for name in ("feats.scp", "spk2utt", "utt2spk"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found; expected the MFCC feature data dir "
                                    "the model was trained on (asrkit features --type mfcc)")
    tfile = _trans_file(trans)
    info = {"model": str(mp.resolve()), "data_dir": str(d.resolve()),
            "trans": str(tfile.resolve()), "model_mtime": mp.stat().st_mtime,
            "trans_mtime": tfile.stat().st_mtime}
    if is_done(out) and (out / _FMLLR_FEATS_INFO).is_file() and \
            json.loads((out / _FMLLR_FEATS_INFO).read_text()) == info:
        n = len(read_kaldi_map(out / "utt2num_frames"))
        logger.info("%s: already written (%d utterances)", out, n)
        return out, n
    am = AcousticModel.load(mp)
    opts = am.meta.get("features") or {}
    dim = am.gmm.feat_dim
    transforms = read_fmllr(tfile)
    spk2utt = {s: v.split() for s, v in read_kaldi_map(d / "spk2utt").items()}
    missing = sorted(set(spk2utt) - set(transforms))
    if missing:
        raise ValueError(f"{tfile}: no transform for {len(missing)} of {len(spk2utt)} speakers "
                         f"of {d} ({', '.join(missing[:5])}); expected the trans.ark of these "
                         "speakers (decode or align this data dir with the sat stage first)")
    bad = sorted(s for s in spk2utt if tuple(transforms[s].shape) != (dim, dim + 1))
    if bad:
        raise ValueError(f"{tfile}: transform of {bad[0]} has shape "
                         f"{tuple(transforms[bad[0]].shape)}, expected ({dim}, {dim + 1}) for "
                         f"the {dim}-dim features of {mp}")
    spk_of = {u: s for s, us in spk2utt.items() for u in us}
    out.mkdir(parents=True, exist_ok=True)
    (out / ".done").unlink(missing_ok=True)
    frames: dict[str, int] = {}
    stats = np.zeros((2, dim + 1), dtype=np.float64)  # additive (count, sums, squares)

    def records():
        nonlocal stats
        spks = list(spk2utt)
        for i in range(0, len(spks), speakers_per_chunk):
            utts = [u for s in spks[i:i + speakers_per_chunk] for u in spk2utt[s]]
            feats = adapt_features(load_features(d, opts, utt_ids=utts), transforms, spk_of)
            for u in utts:
                if u not in feats:
                    continue
                x = feats.pop(u).float().numpy()
                if not np.isfinite(x).all():
                    raise ValueError(f"{u}: non-finite fMLLR-adapted features (speaker "
                                     f"{spk_of[u]}, {tfile})")
                frames[u] = x.shape[0]
                stats = stats + compute_cmvn_stats([x])
                yield u, x

    entries = write_ark(out / "feats.ark", records())
    order = sorted(entries, key=lambda u: u.encode("utf-8"))  # Kaldi's C-locale order
    write_scp(out / "feats.scp", {u: entries[u] for u in order})
    write_cmvn_stats(out / "cmvn.ark", stats)
    write_kaldi_map(out / "utt2num_frames", frames)
    with atomic_write(out / "feat_dim") as f:
        f.write(f"{dim}\n")
    _write_subset_meta(d, out, set(order))
    with atomic_write(out / _FMLLR_FEATS_INFO) as f:
        json.dump(info, f, indent=1)
    mark_done(out)
    num_utts = sum(len(us) for us in spk2utt.values())
    if len(frames) < num_utts:
        logger.warning("%s: %d of %d utterances of %s have no features (not in feats.scp); "
                       "left out", out, num_utts - len(frames), num_utts, d)
    logger.info("%s: %d utterances of %d speakers, %d-dim fMLLR features", out, len(frames),
                len(spk2utt), dim)
    return out, len(frames)
