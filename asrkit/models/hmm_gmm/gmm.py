"""Diagonal-covariance Gaussian mixtures for all pdfs at once, as tensors (Kaldi ``AmDiagGmm``).

A :class:`DiagGMM` holds ``S`` pdfs of up to ``M`` components over ``F``-dimensional features
as padded tensors: ``weights (S, M)``, ``means (S, M, F)``, ``variances (S, M, F)``. The
active components of pdf ``s`` are ``0 .. num_comps[s]-1``; the padding has weight 0.

* Likelihoods (:meth:`DiagGMM.loglik`) use Kaldi's ``DiagGmm::LogLikelihoods`` trick: with
  per-component constants ``g = log w - 0.5 (F log 2pi + sum log var + sum mean^2 / var)``,
  ``log w N(x; mean, var) = g + x . (mean / var) - 0.5 x^2 . (1 / var)``, so all components
  of all pdfs are one matrix product of ``[x, x^2]`` ``(T, 2F)`` with a ``(2F, S*M)`` matrix,
  followed by a log-sum-exp over ``M``.
* Statistics (:class:`GmmStats`, Kaldi ``gmm-acc-stats-ali``) are accumulated from
  ``(frame, pdf, posterior)`` triples: the component posteriors within each triple's pdf,
  then zeroth, first and second order sums added with ``index_add_`` (float64).
* :meth:`DiagGMM.update` is the maximum-likelihood M-step of Kaldi's ``MleDiagGmmUpdate``
  (``gmm-est``): variance floor, no update of components with too little data, removal of
  low-count / low-weight components.
* :meth:`DiagGMM.mixup` grows the number of Gaussians toward a total, allocating it to pdfs in
  proportion to ``occupancy ** power`` (Kaldi ``GetSplitTargets`` / ``gmm-est --mix-up``) and
  splitting each pdf's heaviest component, with the means moved by ``+-perturb`` standard
  deviations (HTK ``HHEd MU``, Young et al., *The HTK Book*, sec. 10.6), or by
  ``+-perturb`` times a standard-normal vector of standard deviations (``direction="random"``:
  Kaldi's ``DiagGmm::Split``, whose ``gmm-est --perturb-factor`` is 0.01).

Everything runs on the device of the parameter tensors (CPU or GPU).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["DiagGMM", "GmmStats", "GmmUpdateInfo", "split_targets"]

logger = logging.getLogger(__name__)

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK_ELEMS = 1 << 22  # elements of the largest temporary a chunk may create


class DiagGMM:
    """Diagonal GMMs of ``S`` pdfs as padded tensors.

    Args:
        weights: ``(S, M)`` mixture weights; the active components of each pdf are a prefix
            with positive weights summing to 1, the rest 0.
        means: ``(S, M, F)`` means.
        variances: ``(S, M, F)`` variances (positive where the weight is positive).

    Raises:
        ValueError: shapes disagree, a pdf has no positive weight, active components are not a
            prefix, or an active variance is not positive.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor,
                 variances: torch.Tensor) -> None:
        if weights.dim() != 2 or means.dim() != 3 or variances.shape != means.shape \
                or means.shape[:2] != weights.shape:
            raise ValueError(f"expected weights (S, M), means and variances (S, M, F); got "
                             f"{tuple(weights.shape)}, {tuple(means.shape)}, "
                             f"{tuple(variances.shape)}")
        active = weights > 0
        n = active.sum(1)
        if bool((n == 0).any()):
            raise ValueError(f"pdf {int((n == 0).nonzero()[0])} has no component with "
                             "positive weight")
        prefix = torch.arange(weights.shape[1], device=weights.device)[None, :] < n[:, None]
        if not bool(torch.equal(prefix, active)):
            raise ValueError("active components (weight > 0) must come first in every pdf")
        if not bool((variances[active] > 0).all()):
            raise ValueError("variances of active components must be positive")
        self.weights = weights
        self.means = means
        self.variances = variances
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None
        self._flat_cache: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def init_single(cls, num_pdfs: int, mean: torch.Tensor, variance: torch.Tensor, *,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> DiagGMM:
        """One Gaussian per pdf, all equal to the global mean and variance (Kaldi
        ``gmm-init-mono``, the flat start).

        Args:
            num_pdfs: ``S``.
            mean: ``(F,)`` global mean.
            variance: ``(F,)`` global variance (positive).
            dtype: parameter dtype.
            device: parameter device (default: that of ``mean``).
        """
        device = mean.device if device is None else device
        mean = mean.to(device, dtype)
        variance = variance.to(device, dtype)
        f = mean.shape[0]
        return cls(torch.ones(num_pdfs, 1, dtype=dtype, device=device),
                   mean.expand(num_pdfs, 1, f).clone(), variance.expand(num_pdfs, 1, f).clone())

    # ------------------------------------------------------------------ properties
    @property
    def num_pdfs(self) -> int:
        """``S``."""
        return self.weights.shape[0]

    @property
    def max_comps(self) -> int:
        """``M``, the padded number of components."""
        return self.weights.shape[1]

    @property
    def feat_dim(self) -> int:
        """``F``."""
        return self.means.shape[2]

    @property
    def num_comps(self) -> torch.Tensor:
        """``(S,)`` number of active components per pdf (int64)."""
        return (self.weights > 0).sum(1)

    @property
    def num_gauss(self) -> int:
        """Total number of active Gaussians."""
        return int((self.weights > 0).sum())

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.weights.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return self.weights.dtype

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> DiagGMM:
        """A copy on ``device`` / in ``dtype`` (or self when nothing changes)."""
        dtype = dtype or self.dtype
        device = torch.device(device) if device is not None else self.device
        if device == self.device and dtype == self.dtype:
            return self
        return DiagGMM(self.weights.to(device, dtype), self.means.to(device, dtype),
                       self.variances.to(device, dtype))

    def transform_means(self, transform: torch.Tensor) -> DiagGMM:
        """The GMM with every mean ``mu`` replaced by ``transform @ mu``, weights and
        variances kept (Kaldi ``gmm-transform-means``, after an MLLT update).

        Args:
            transform: ``(F, F)`` square matrix.

        Raises:
            ValueError: ``transform`` is not ``(F, F)``.
        """
        f = self.feat_dim
        if tuple(transform.shape) != (f, f):
            raise ValueError(f"transform must be ({f}, {f}), got {tuple(transform.shape)}")
        a = transform.to(self.device, self.dtype)
        return DiagGMM(self.weights, self.means @ a.T, self.variances)

    # ------------------------------------------------------------------ likelihoods
    def _params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W (S, M, 2F)`` = ``[mean / var, -0.5 / var]`` and ``g (S, M)`` (``-inf`` for
        padding), computed once (Kaldi's ``means_invvars``, ``inv_vars``, ``gconsts``)."""
        if self._packed is None:
            active = self.weights > 0
            var = torch.where(active[..., None], self.variances, torch.ones_like(self.variances))
            inv = 1.0 / var
            w = torch.cat([self.means * inv, -0.5 * inv], dim=2)
            g = (self.weights.clamp_min(1e-300).log()
                 - 0.5 * (self.feat_dim * _LOG_2PI + var.log().sum(2)
                          + (self.means * self.means * inv).sum(2)))
            g = g.masked_fill(~active, float("-inf"))
            self._packed = (w, g)
        return self._packed

    def _check_feats(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.feat_dim:
            raise ValueError(f"features have shape {tuple(x.shape)}, expected (T, "
                             f"{self.feat_dim})")
        return x.to(self.device, self.dtype)

    def component_loglik(self, x: torch.Tensor, pdf_ids: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """Weighted component log-likelihoods ``log w_m + log N(x_t; mean_m, var_m)``.

        Args:
            x: ``(T, F)`` frames.
            pdf_ids: ``(K,)`` pdfs to score, or None for all ``S``.

        Returns:
            ``(T, K, M)`` (or ``(T, S, M)``); ``-inf`` for padding components.

        Raises:
            ValueError: ``x`` is not ``(T, F)``.
        """
        x = self._check_feats(x)
        w, g = self._params()
        if pdf_ids is not None:
            idx = torch.as_tensor(pdf_ids, device=self.device, dtype=torch.int64)
            w, g = w[idx], g[idx]
        k, m = g.shape
        wf = w.reshape(k * m, -1).T
        return (torch.cat([x, x * x], 1) @ wf + g.reshape(1, -1)).view(-1, k, m)

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor]:
        """The active Gaussians packed in pdf order, without padding (computed once):
        ``pdf (G,)``, ``comp (G,)`` (index in the padded layout), ``W (G, 2F)``, ``g (G,)``
        and ``offsets (S + 1,)`` (pdf ``s`` owns rows ``offsets[s]:offsets[s + 1]``). Pdfs
        differ a lot in their number of components after mix-up (on AN4 triphones from 1 to
        over 500), so the padded ``(S, M)`` layout would waste most of the work."""
        if self._flat_cache is None:
            w, g = self._params()
            pdf, comp = (self.weights > 0).nonzero(as_tuple=True)
            counts = torch.bincount(pdf, minlength=self.num_pdfs)
            offsets = torch.zeros(self.num_pdfs + 1, dtype=torch.int64, device=self.device)
            offsets[1:] = counts.cumsum(0)
            self._flat_cache = (pdf, comp, w[pdf, comp], g[pdf, comp], offsets)
        return self._flat_cache

    def loglik(self, x: torch.Tensor, pdf_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Log-likelihoods of frames under pdfs (natural log, per frame).

        Computed over the packed active Gaussians (one ``(T, 2F) x (2F, G)`` product, then a
        per-pdf log-sum-exp), so the cost is proportional to the Gaussians scored, not to
        ``pdfs x max components``.

        Args:
            x: ``(T, F)`` frames (10 ms each; any float dtype, moved to the model's device).
            pdf_ids: ``(K,)`` pdfs to score, or None for all ``S``.

        Returns:
            ``(T, K)`` (or ``(T, S)``) in the model's dtype, on its device.

        Raises:
            ValueError: ``x`` is not ``(T, F)``.
        """
        x = self._check_feats(x)
        pdf, _, wp, gp, _ = self._flat()
        if pdf_ids is None:
            k, col, inv = self.num_pdfs, pdf, None
        else:
            idx = torch.as_tensor(pdf_ids, device=self.device, dtype=torch.int64).reshape(-1)
            uniq, inv = torch.unique(idx, return_inverse=True)
            pos = torch.full((self.num_pdfs,), -1, dtype=torch.int64, device=self.device)
            pos[uniq] = torch.arange(uniq.numel(), device=self.device)
            col = pos[pdf]
            keep = col >= 0
            k, col, wp, gp = uniq.numel(), col[keep], wp[keep], gp[keep]
        wt = wp.T.contiguous()
        step = max(1, _CHUNK_ELEMS // max(1, col.numel()))
        out = []
        for i in range(0, x.shape[0], step):
            xc = x[i:i + step]
            t = xc.shape[0]
            ll = torch.cat([xc, xc * xc], 1) @ wt + gp  # (t, G)
            top = torch.full((t, k), float("-inf"), dtype=ll.dtype, device=ll.device)
            top.scatter_reduce_(1, col.expand(t, -1), ll, "amax")
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            ll.sub_(torch.index_select(top, 1, col)).exp_()  # index_select: fast on CPU
            acc = torch.zeros_like(top).index_add_(1, col, ll)
            out.append(top + acc.log())
        res = torch.cat(out) if out else x.new_zeros(0, k)
        return res if inv is None else res[:, inv]

    # ------------------------------------------------------------------ M-step
    def update(self, stats: GmmStats, *, var_floor: float = 0.001,
               min_gaussian_occupancy: float = 10.0, min_gaussian_weight: float = 1e-5,
               remove_low_count: bool = True) -> tuple[DiagGMM, GmmUpdateInfo]:
        """Maximum-likelihood re-estimation from statistics (Kaldi ``MleDiagGmmUpdate``).

        Per pdf with data: weights ``occ / total``; each component with ``occ >
        min_gaussian_occupancy`` and weight ``> min_gaussian_weight`` gets mean ``sum x /
        occ`` and variance ``sum x^2 / occ - mean^2`` floored at ``var_floor``. The other
        components are removed when ``remove_low_count`` (keeping the pdf's heaviest one if
        all would go: Kaldi keeps the last one), else kept with their old parameters and a
        weight of at least ``min_gaussian_weight``; weights are renormalised. Pdfs without
        data keep their parameters (logged).

        Args:
            stats: accumulated with this model (:class:`GmmStats`).
            var_floor: absolute variance floor (Kaldi ``--min-variance``; features are
                CMVN-normalised so one floor fits all dimensions).
            min_gaussian_occupancy: Kaldi ``--min-gaussian-occupancy`` (10; 3 for the first
                flat-start update in ``train_mono.sh``).
            min_gaussian_weight: Kaldi ``--min-gaussian-weight``.
            remove_low_count: Kaldi ``--remove-low-count-gaussians``.

        Returns:
            The new model (same device and dtype) and a :class:`GmmUpdateInfo`.

        Raises:
            ValueError: ``stats`` do not match the model's shape.
        """
        if stats.occ.shape != self.weights.shape or stats.x.shape != self.means.shape:
            raise ValueError(f"stats of shape {tuple(stats.x.shape)} do not match the model "
                             f"{tuple(self.means.shape)}")
        dev, dt = self.device, self.dtype
        occ, sx, sx2 = (t.to(dev, torch.float64) for t in (stats.occ, stats.x, stats.x2))
        active = self.weights > 0
        total = occ.sum(1, keepdim=True)
        has_data = total[:, 0] > 0
        prob = torch.where(has_data[:, None], occ / total.clamp_min(1e-300),
                           self.weights.double())
        good = active & (occ > min_gaussian_occupancy) & (prob > min_gaussian_weight)
        good &= has_data[:, None]
        mean = sx / occ.clamp_min(1e-300)[..., None]
        var = sx2 / occ.clamp_min(1e-300)[..., None] - mean * mean
        floored = good[..., None] & (var < var_floor)
        var = var.clamp_min(var_floor)
        new_means = torch.where(good[..., None], mean, self.means.double())
        new_vars = torch.where(good[..., None], var, self.variances.double())
        bad = active & ~good & has_data[:, None]
        if remove_low_count:
            # Keep one component in pdfs where every active one is bad: the heaviest.
            all_bad = has_data & (bad.sum(1) == active.sum(1))
            rescue = torch.zeros_like(bad)
            heaviest = occ.masked_fill(~active, -1.0).argmax(1)
            rescue[torch.arange(self.num_pdfs, device=dev), heaviest] = True
            rescue &= all_bad[:, None]
            removed = bad & ~rescue
        else:
            rescue = bad
            removed = torch.zeros_like(bad)
        weights = torch.where(rescue, prob.clamp_min(min_gaussian_weight), prob)
        weights = torch.where(active & ~removed, weights, torch.zeros_like(weights))
        weights = weights / weights.sum(1, keepdim=True)
        info = GmmUpdateInfo(
            num_floored=int(floored.sum()), num_removed=int(removed.sum()),
            num_not_updated=int(rescue.sum()),
            pdfs_without_data=tuple(int(i) for i in (~has_data).nonzero().flatten()),
            count=float(total.sum()))
        if info.pdfs_without_data:
            logger.info("%d pdf(s) had no data and were not updated", len(info.pdfs_without_data))
        if info.num_removed:
            logger.info("removed %d Gaussian(s) with occupancy <= %g or weight <= %g",
                        info.num_removed, min_gaussian_occupancy, min_gaussian_weight)
        new = _compact(weights, new_means, new_vars)
        return new.to(dev, dt), info

    # ------------------------------------------------------------------ mix-up
    def mixup(self, target: int, occs: torch.Tensor, *, power: float = 0.2,
              min_count: float = 20.0, perturb: float = 0.2, direction: str = "fixed",
              seed: int = 0) -> DiagGMM:
        """Split Gaussians toward ``target`` in total (Kaldi ``gmm-est --mix-up``).

        Each pdf's share comes from :func:`split_targets` (``occs ** power``, at most one
        Gaussian per ``min_count`` frames); a pdf below its share repeatedly splits its
        heaviest component into two of half the weight, same variance, means ``mean +-
        perturb * std`` (``direction="fixed"``, every dimension moved alike) or ``mean +-
        perturb * std * r`` with ``r`` a standard-normal vector (``"random"``, Kaldi's
        ``DiagGmm::Split``; drawn from a generator seeded with ``seed``, so training stays
        deterministic). Pdfs never lose components here.

        Args:
            target: desired total number of Gaussians.
            occs: ``(S,)`` pdf occupancies (:meth:`GmmStats.pdf_occs`).
            power: allocation exponent (Kaldi ``--power``; ``train_mono.sh`` uses 0.25).
            min_count: Kaldi ``--min-count``.
            perturb: mean offset in standard deviations.
            direction: ``"fixed"`` or ``"random"`` (above).
            seed: seed of the ``"random"`` directions.

        Returns:
            A new model (or self when nothing splits).

        Raises:
            ValueError: ``occs`` is not ``(S,)``, or an unknown ``direction``.
        """
        if direction not in ("fixed", "random"):
            raise ValueError(f"direction must be 'fixed' or 'random', got {direction!r}")
        occs = torch.as_tensor(occs, dtype=torch.float64).cpu()
        if occs.shape != (self.num_pdfs,):
            raise ValueError(f"occs has shape {tuple(occs.shape)}, expected ({self.num_pdfs},)")
        targets = split_targets(occs, target, power=power, min_count=min_count)
        n = self.num_comps.cpu()
        want = torch.maximum(torch.tensor(targets, dtype=torch.int64), n)
        if bool((want == n).all()):
            return self
        m = max(int(want.max()), self.max_comps)
        w = torch.zeros(self.num_pdfs, m, dtype=torch.float64)
        mu = torch.zeros(self.num_pdfs, m, self.feat_dim, dtype=torch.float64)
        var = torch.ones_like(mu)
        mm = self.max_comps
        w[:, :mm] = self.weights.double().cpu()
        mu[:, :mm] = self.means.double().cpu()
        var[:, :mm] = torch.where((self.weights > 0)[..., None], self.variances,
                                  torch.ones_like(self.variances)).double().cpu()
        gen = torch.Generator().manual_seed(seed) if direction == "random" else None
        for s in (want > n).nonzero().flatten().tolist():
            for j in range(int(n[s]), int(want[s])):
                i = int(w[s, :j].argmax())
                w[s, i] *= 0.5
                w[s, j] = w[s, i]
                shift = perturb * var[s, i].sqrt()
                if gen is not None:
                    shift = shift * torch.randn(self.feat_dim, generator=gen,
                                                dtype=torch.float64)
                var[s, j] = var[s, i]
                mu[s, j] = mu[s, i] + shift
                mu[s, i] = mu[s, i] - shift
        return DiagGMM(w.to(self.device, self.dtype), mu.to(self.device, self.dtype),
                       var.to(self.device, self.dtype))

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"weights", "means", "variances"}`` (CPU tensors), for :func:`torch.save`."""
        return {"weights": self.weights.cpu(), "means": self.means.cpu(),
                "variances": self.variances.cpu()}

    @classmethod
    def from_state_dict(cls, d: Mapping[str, torch.Tensor],
                        device: torch.device | str = "cpu") -> DiagGMM:
        """Inverse of :meth:`state_dict`, on ``device``."""
        return cls(d["weights"].to(device), d["means"].to(device), d["variances"].to(device))

    def __repr__(self) -> str:
        return (f"DiagGMM({self.num_pdfs} pdfs, {self.num_gauss} Gaussians, dim "
                f"{self.feat_dim}, {self.dtype}, {self.device})")


def _compact(weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> DiagGMM:
    """Move each pdf's active components (weight > 0) to the front and trim the padding."""
    active = weights > 0
    order = torch.argsort((~active).to(torch.int8), dim=1, stable=True)
    m = max(1, int(active.sum(1).max()))
    order = order[:, :m]
    w = weights.gather(1, order)
    idx = order[..., None].expand(-1, -1, means.shape[2])
    mu = means.gather(1, idx)
    var = variances.gather(1, idx)
    pad = (w <= 0)[..., None]
    mu = mu.masked_fill(pad, 0.0)
    var = var.masked_fill(pad, 1.0)
    return DiagGMM(w, mu, var)


def split_targets(occs: torch.Tensor, target: int, *, power: float = 0.2,
                  min_count: float = 20.0) -> list[int]:
    """Number of Gaussians each pdf should have for ``target`` in total (Kaldi
    ``GetSplitTargets``).

    Every pdf starts with one; then, one at a time, a Gaussian goes to the pdf with the largest
    ``occ ** power / n``, unless that would leave it fewer than ``min_count`` frames per
    Gaussian (``(n + 1) * min_count >= occ``), which closes the pdf.

    Args:
        occs: ``(S,)`` pdf occupancies (frames).
        target: desired total.
        power: allocation exponent.
        min_count: fewest frames per Gaussian.

    Returns:
        ``S`` targets (at least 1 each); their sum is ``max(S, target)`` unless ``min_count``
        stopped the allocation earlier.
    """
    occ = [float(o) for o in torch.as_tensor(occs).reshape(-1).tolist()]
    counts = [1] * len(occ)
    heap = [(-(o ** power), s) for s, o in enumerate(occ) if o > 0]
    heapq.heapify(heap)
    total = len(occ)
    while total < target and heap:
        _, s = heapq.heappop(heap)
        if (counts[s] + 1) * min_count >= occ[s]:
            continue  # closed: too few frames for another Gaussian
        counts[s] += 1
        total += 1
        heapq.heappush(heap, (-(occ[s] ** power) / counts[s], s))
    if total < target:
        logger.info("mix-up reached %d of %d Gaussians (min_count %g limits the rest)",
                    total, target, min_count)
    return counts


@dataclass(frozen=True)
class GmmUpdateInfo:
    """What :meth:`DiagGMM.update` did.

    Attributes:
        num_floored: variance elements raised to the floor.
        num_removed: components removed for too little data.
        num_not_updated: components kept with their old parameters for too little data.
        pdfs_without_data: pdfs that had no data (unchanged).
        count: total occupancy (frames) of the statistics.
    """

    num_floored: int
    num_removed: int
    num_not_updated: int
    pdfs_without_data: tuple[int, ...]
    count: float


class GmmStats:
    """Sufficient statistics of a :class:`DiagGMM` (Kaldi ``AccumAmDiagGmm``), float64.

    Args:
        num_pdfs: ``S``.
        max_comps: ``M`` (that of the model the statistics are for).
        feat_dim: ``F``.
        device: where the statistics live (the model's device).

    Attributes:
        occ: ``(S, M)`` component occupancies (sum of posteriors).
        x: ``(S, M, F)`` posterior-weighted sums of frames.
        x2: ``(S, M, F)`` posterior-weighted sums of squared frames.
        loglik: sum over accumulated triples of ``posterior * log p(x_t | pdf)``.
        count: sum of the triples' posteriors (frames).
    """

    def __init__(self, num_pdfs: int, max_comps: int, feat_dim: int,
                 device: torch.device | str = "cpu") -> None:
        self.occ = torch.zeros(num_pdfs, max_comps, dtype=torch.float64, device=device)
        self.x = torch.zeros(num_pdfs, max_comps, feat_dim, dtype=torch.float64, device=device)
        self.x2 = torch.zeros_like(self.x)
        self.loglik = 0.0
        self.count = 0.0

    @classmethod
    def for_model(cls, gmm: DiagGMM) -> GmmStats:
        """Zero statistics shaped like ``gmm``, on its device."""
        return cls(gmm.num_pdfs, gmm.max_comps, gmm.feat_dim, gmm.device)

    def accumulate(self, gmm: DiagGMM, feats: torch.Tensor, pdf_ids: torch.Tensor,
                   frame_ids: torch.Tensor | None = None,
                   posteriors: torch.Tensor | None = None,
                   stats_feats: torch.Tensor | None = None) -> float:
        """Add ``(frame, pdf, posterior)`` triples (Kaldi ``gmm-acc-stats-ali`` for posterior
        1, ``gmm-acc-stats`` otherwise).

        Each triple ``k`` adds frame ``x = feats[frame_ids[k]]`` to pdf ``pdf_ids[k]`` with
        weight ``posteriors[k]``, shared among the pdf's components by their posteriors under
        ``gmm`` (the E-step).

        Args:
            gmm: the current model (same shape as these statistics).
            feats: ``(T, F)`` frames.
            pdf_ids: ``(K,)`` pdf of each triple.
            frame_ids: ``(K,)`` row of ``feats`` of each triple; None for ``0 .. T-1``
                (then ``K == T``).
            posteriors: ``(K,)`` weights; None for all ones.
            stats_feats: ``(T, F)`` other frames to accumulate, with the component
                posteriors computed on ``feats`` (Kaldi ``gmm-acc-stats-twofeats``: the
                speaker-independent alignment model of SAT, posteriors from adapted
                features, statistics of unadapted ones); None to accumulate ``feats``.

        Returns:
            This call's ``sum posterior * log p(x | pdf)`` (also added to :attr:`loglik`).

        Raises:
            ValueError: shapes disagree with each other or with the statistics.
        """
        if gmm.weights.shape != self.occ.shape or gmm.feat_dim != self.x.shape[2]:
            raise ValueError(f"model {tuple(gmm.means.shape)} does not match the statistics "
                             f"{tuple(self.x.shape)}")
        dev = self.occ.device
        feats = gmm._check_feats(feats)
        acc_feats = feats if stats_feats is None else gmm._check_feats(stats_feats)
        if acc_feats.shape != feats.shape:
            raise ValueError(f"stats_feats {tuple(acc_feats.shape)} differ from feats "
                             f"{tuple(feats.shape)}")
        pdf_ids = torch.as_tensor(pdf_ids, dtype=torch.int64, device=dev).reshape(-1)
        k = pdf_ids.numel()
        if frame_ids is None:
            if k != feats.shape[0]:
                raise ValueError(f"{k} pdf ids for {feats.shape[0]} frames")
            frame_ids = torch.arange(k, device=dev)
        frame_ids = torch.as_tensor(frame_ids, dtype=torch.int64, device=dev).reshape(-1)
        if posteriors is None:
            posteriors = torch.ones(k, dtype=torch.float64, device=dev)
        posteriors = torch.as_tensor(posteriors, dtype=torch.float64, device=dev).reshape(-1)
        if frame_ids.numel() != k or posteriors.numel() != k:
            raise ValueError(f"pdf_ids, frame_ids and posteriors differ in length: {k}, "
                             f"{frame_ids.numel()}, {posteriors.numel()}")
        _, comp, wp, gp, offs = gmm._flat()
        offs = offs.tolist()
        f = gmm.feat_dim
        # Triples grouped by pdf: per pdf the statistics are two (M_s, n) x (n, F) matrix
        # products over its active components, instead of scattering an (n, M, F) tensor.
        order = torch.argsort(pdf_ids, stable=True)
        pdfs, counts = torch.unique_consecutive(pdf_ids[order], return_counts=True)
        frames, posts = frame_ids[order], posteriors[order]
        total = torch.zeros((), dtype=torch.float64, device=dev)
        start = 0
        for p, n in zip(pdfs.tolist(), counts.tolist()):
            a, b = offs[p], offs[p + 1]
            ci, wt, gv = comp[a:b], wp[a:b].T, gp[a:b]
            step = max(1, _CHUNK_ELEMS // max(1, (b - a) * f))
            for i in range(start, start + n, step):
                j = min(i + step, start + n)
                x = feats[frames[i:j]]
                ll = torch.cat([x, x * x], 1) @ wt + gv  # (n, M_s)
                lse = ll.logsumexp(1)
                pp = posts[i:j]
                post = (ll - lse[:, None]).exp().double() * pp[:, None]
                total += (pp * lse.double()).sum()
                xd = (x if stats_feats is None else acc_feats[frames[i:j]]).double()
                self.occ[p].index_add_(0, ci, post.sum(0))
                self.x[p].index_add_(0, ci, post.T @ xd)
                self.x2[p].index_add_(0, ci, post.T @ (xd * xd))
            start += n
        value = float(total)
        self.loglik += value
        self.count += float(posteriors.sum())
        return value

    def pdf_occs(self) -> torch.Tensor:
        """``(S,)`` occupancy of each pdf (float64, on the statistics' device)."""
        return self.occ.sum(1)

    def add_(self, other: GmmStats) -> GmmStats:
        """Add ``other`` in place (Kaldi ``gmm-sum-accs``); returns self.

        Raises:
            ValueError: shapes differ.
        """
        if other.x.shape != self.x.shape:
            raise ValueError(f"cannot add stats {tuple(other.x.shape)} to {tuple(self.x.shape)}")
        self.occ += other.occ.to(self.occ.device)
        self.x += other.x.to(self.x.device)
        self.x2 += other.x2.to(self.x2.device)
        self.loglik += other.loglik
        self.count += other.count
        return self

    @property
    def avg_loglik(self) -> float:
        """Average log-likelihood per frame, :attr:`loglik` / :attr:`count` (nan when empty)."""
        return self.loglik / self.count if self.count > 0 else float("nan")
