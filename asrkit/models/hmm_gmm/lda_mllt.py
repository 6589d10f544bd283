"""Spliced features, LDA and MLLT (Kaldi ``steps/train_lda_mllt.sh``).

* :func:`splice` stacks each frame with its neighbours (``splice-feats --left-context=3
  --right-context=3``: 13 cepstra -> 91 dims).
* :func:`accumulate_lda_stats` / :func:`estimate_lda`: linear discriminant analysis with the
  pdfs of an alignment as classes (``acc-lda``, ``est-lda --dim=40``). The transform maps the
  within-class covariance to the identity and keeps the ``dim`` directions with the largest
  between-class variance (Fukunaga, *Introduction to Statistical Pattern Recognition*, 1990;
  Haeb-Umbach & Ney, ICASSP 1992).
* :func:`accumulate_mllt_stats` / :func:`estimate_mllt`: maximum likelihood linear transform,
  a.k.a. semi-tied covariances (Gales, *IEEE Trans. SAP* 7(3), 1999; ``gmm-acc-mllt``,
  ``est-mllt``): a square ``A`` such that diagonal-covariance Gaussians fit ``A x`` better;
  rows are updated one at a time in closed form,
  ``a_i = c_i G_i^-1 sqrt(beta / (c_i G_i^-1 c_i^T))`` with ``c_i`` the cofactor row and
  ``G_i = sum_m gamma_m S_m / sigma2_{m,i}`` (``S_m`` the scatter of Gaussian ``m``).

:func:`.tri.train_tri` applies MLLT at its ``mllt_iters``; the model stores the composed
feature transform in ``meta["features"]["transform"]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping

import torch

from asrkit.models.hmm_gmm.em import aligned_frames
from asrkit.models.hmm_gmm.features import splice
from asrkit.models.hmm_gmm.gmm import _CHUNK_ELEMS, DiagGMM
from asrkit.models.hmm_gmm.model import AcousticModel

__all__ = ["LdaStats", "MlltStep", "accumulate_lda_stats", "accumulate_mllt_stats", "estimate_lda",
           "estimate_mllt", "splice"]

logger = logging.getLogger(__name__)


class LdaStats:
    """Class counts, class sums and the total scatter ``sum x x^T`` (float64).

    Args:
        num_classes: number of classes (pdfs).
        dim: feature dimension ``D``.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, feats: torch.Tensor, classes: torch.Tensor) -> None:
        """Add ``(T, D)`` frames with their ``(T,)`` class ids."""
        x = feats.detach().to("cpu", torch.float64)
        c = torch.as_tensor(classes, dtype=torch.int64).cpu()
        if x.shape[0] != c.numel():
            raise ValueError(f"{x.shape[0]} frames but {c.numel()} class labels")
        self.count.index_add_(0, c, torch.ones_like(c, dtype=torch.float64))
        self.sums.index_add_(0, c, x)
        self.scatter += x.T @ x


def accumulate_lda_stats(feats: Mapping[str, torch.Tensor], classes: Mapping[str, torch.Tensor],
                         num_classes: int) -> LdaStats:
    """LDA statistics (``acc-lda``) of the utterances present in both mappings.

    Args:
        feats: ``{utt: (T, D)}`` (spliced) frames.
        classes: ``{utt: (T,)}`` class of each frame, e.g. the pdfs of an alignment.
        num_classes: number of classes.

    Raises:
        ValueError: no utterance in both, or an utterance whose lengths differ.
    """
    utts = [u for u in feats if u in classes]
    if not utts:
        raise ValueError("no utterance has both features and class labels")
    stats = LdaStats(num_classes, next(iter(feats.values())).shape[1])
    for u in utts:
        if feats[u].shape[0] != classes[u].numel():
            raise ValueError(f"{u}: {feats[u].shape[0]} frames but {classes[u].numel()} labels")
        stats.add(feats[u], classes[u])
    return stats


def estimate_lda(stats: LdaStats, dim: int = 40) -> torch.Tensor:
    """The LDA transform (``est-lda``): ``(dim, D)``, float32.

    With ``W`` the within-class and ``B`` the between-class covariance, ``W = L L^T``, the
    rows are the top ``dim`` eigenvectors ``u`` of ``L^-1 B L^-T`` mapped back by ``L^-T``:
    the transformed within-class covariance is the identity, and the transformed
    between-class covariance is diagonal with decreasing eigenvalues.

    Raises:
        ValueError: ``dim`` outside ``1..D``, or no data.
    """
    n = float(stats.count.sum())
    d = stats.sums.shape[1]
    if not 1 <= dim <= d:
        raise ValueError(f"dim must be in 1..{d}, got {dim}")
    if n <= 0:
        raise ValueError("no frames in the LDA statistics")
    mean = stats.sums.sum(0) / n
    has = stats.count > 0
    cmeans = stats.sums[has] / stats.count[has, None]
    between = (cmeans - mean).T @ ((cmeans - mean) * stats.count[has, None]) / n
    total = stats.scatter / n - torch.outer(mean, mean)
    within = total - between
    within = 0.5 * (within + within.T) + 1e-10 * torch.eye(d, dtype=within.dtype) * within.trace()
    chol = torch.linalg.cholesky(within)
    linv = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=within.dtype), upper=False)
    evals, evecs = torch.linalg.eigh(linv @ between @ linv.T)
    order = torch.argsort(evals, descending=True)[:dim]
    logger.info("LDA %d -> %d dims over %d classes, %d frames; kept eigenvalues %.3f .. %.3f "
                "(largest dropped %.3f)", d, dim, int(has.sum()), int(n),
                float(evals[order[0]]), float(evals[order[-1]]),
                float(evals[torch.argsort(evals, descending=True)[dim]]) if dim < d else 0.0)
    return (evecs[:, order].T @ linv).to(torch.float32)


def accumulate_mllt_stats(gmm: DiagGMM, feats: torch.Tensor, pdf_ids: torch.Tensor,
                          frame_ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """MLLT statistics (``gmm-acc-mllt``) of ``(frame, pdf)`` pairs under ``gmm``.

    Args:
        gmm: the current model (diagonal covariances).
        feats: ``(N, D)`` frames.
        pdf_ids: ``(K,)`` pdf of each pair.
        frame_ids: ``(K,)`` row of ``feats`` of each pair.

    Returns:
        ``(G, beta)``: ``G (D, D, D)`` float64, ``G[i] = sum_m S_m / sigma2_{m,i}`` with
        ``S_m`` the posterior-weighted scatter of the frames around Gaussian ``m``'s mean, and
        ``beta`` the number of frames.
    """
    pdf, comp, wp, gp, offs = gmm._flat()
    offs = offs.tolist()
    d = gmm.feat_dim
    dev = gmm.device
    means, inv_var = gmm.means[pdf, comp].double(), 1.0 / gmm.variances[pdf, comp].double()
    pdf_ids = torch.as_tensor(pdf_ids, dtype=torch.int64, device=dev)
    frame_ids = torch.as_tensor(frame_ids, dtype=torch.int64, device=dev)
    order = torch.argsort(pdf_ids, stable=True)
    pdfs, counts = torch.unique_consecutive(pdf_ids[order], return_counts=True)
    frames = frame_ids[order]
    G = torch.zeros(d, d, d, dtype=torch.float64, device=dev)
    start = 0
    for p, n in zip(pdfs.tolist(), counts.tolist()):
        a, b = offs[p], offs[p + 1]
        wt, gv = wp[a:b].T, gp[a:b]
        occ = torch.zeros(b - a, dtype=torch.float64, device=dev)
        sx = torch.zeros(b - a, d, dtype=torch.float64, device=dev)
        sxx = torch.zeros(b - a, d * d, dtype=torch.float64, device=dev)
        step = max(1, _CHUNK_ELEMS // max(1, d * d))
        for i in range(start, start + n, step):
            x = feats[frames[i:min(i + step, start + n)]].to(gmm.dtype)
            ll = torch.cat([x, x * x], 1) @ wt + gv
            post = (ll - ll.logsumexp(1, keepdim=True)).exp().double()  # (n, M_s)
            xd = x.double()
            occ += post.sum(0)
            sx += post.T @ xd
            sxx += post.T @ (xd[:, :, None] * xd[:, None, :]).reshape(-1, d * d)
        mu = means[a:b]
        scat = (sxx.view(-1, d, d) - mu[:, :, None] * sx[:, None, :]
                - sx[:, :, None] * mu[:, None, :] + occ[:, None, None] * mu[:, :, None] * mu[:, None, :])
        G += torch.einsum("mi,mjk->ijk", inv_var[a:b], scat)
        start += n
    return G, float(pdf_ids.numel())


def _mllt_objective(A: torch.Tensor, G: torch.Tensor, beta: float) -> float:
    return beta * float(torch.linalg.slogdet(A)[1]) - 0.5 * float(
        torch.einsum("ij,ijk,ik->", A, G, A))


def estimate_mllt(G: torch.Tensor, beta: float, num_iters: int = 100
                  ) -> tuple[torch.Tensor, float]:
    """The MLLT matrix (``est-mllt``), starting from the identity.

    Args:
        G: ``(D, D, D)`` statistics of :func:`accumulate_mllt_stats`.
        beta: their frame count.
        num_iters: passes over the rows (Kaldi 100).

    Returns:
        ``(A (D, D) float32, objective improvement per frame)``; the improvement is never
        negative (each row update maximises the auxiliary function given the others).

    Raises:
        ValueError: bad shapes or ``beta <= 0``.
    """
    d = G.shape[0]
    if G.shape != (d, d, d) or beta <= 0:
        raise ValueError(f"expected G (D, D, D) and beta > 0, got {tuple(G.shape)}, {beta}")
    G = G.double().cpu()
    ginv = torch.linalg.inv(G)
    A = torch.eye(d, dtype=torch.float64)
    before = _mllt_objective(A, G, beta)
    for _ in range(num_iters):
        for i in range(d):
            cof = torch.linalg.inv(A).T[i]  # the cofactor row up to det(A), which cancels
            row = cof @ ginv[i]
            A[i] = row * math.sqrt(beta / float(row @ cof))
    after = _mllt_objective(A, G, beta)
    impr = (after - before) / beta
    logger.info("MLLT: objective improvement %.4f per frame over %d frames", impr, int(beta))
    return A.to(torch.float32), impr


class MlltStep:
    """The MLLT update of ``train_lda_mllt.sh`` as an EM step (:class:`.em.TransformStep`):
    at each of ``iters`` estimate an MLLT matrix ``A`` from the alignments
    (``gmm-acc-mllt``, ``est-mllt``), apply it to the frames and the model's means
    (``gmm-transform-means``).

    Attributes:
        iters: iterations it runs at (Kaldi ``2 4 6 12``).
        transform: ``(F, F)`` product of the matrices applied so far (identity at first).
    """

    def __init__(self, iters: Collection[int]) -> None:
        self.iters = frozenset(iters)
        self.transform: torch.Tensor | None = None

    def __call__(self, iteration: int, model: AcousticModel, frames: torch.Tensor,
                 views: Mapping[str, torch.Tensor], offsets: Mapping[str, int],
                 alignments: Mapping) -> AcousticModel:
        """Estimate and apply one MLLT matrix; returns the model with transformed means."""
        frame_ids, tids = aligned_frames(offsets, alignments)
        G, beta = accumulate_mllt_stats(model.gmm, frames, model.tmodel.tid2pdf[tids],
                                        frame_ids)
        A, impr = estimate_mllt(G, beta)
        A = A.to(frames.device)
        frames.copy_(frames @ A.T)  # in place: the per-utterance views follow
        prev = torch.eye(frames.shape[1], dtype=frames.dtype, device=frames.device) \
            if self.transform is None else self.transform
        self.transform = A @ prev
        logger.info("iter %d: MLLT applied (objective +%.4f per frame)", iteration, impr)
        return AcousticModel(model.tmodel, model.gmm.transform_means(A), model.meta)
