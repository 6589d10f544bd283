"""Spliced features, LDA and MLLT (asrkit.models.hmm_gmm.lda_mllt) on synthetic data whose
structure the tests know."""

from __future__ import annotations

import pytest
import torch

from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.lda_mllt import (
    accumulate_lda_stats,
    accumulate_mllt_stats,
    estimate_lda,
    estimate_mllt,
    splice,
)


def test_splice_stacks_neighbours_and_repeats_edges():
    x = torch.arange(10, dtype=torch.float32).reshape(5, 2)  # frame t = [2t, 2t + 1]
    y = splice(x, 1)
    assert y.shape == (5, 6)
    assert y[0].tolist() == [0, 1, 0, 1, 2, 3]  # frame -1 repeats frame 0
    assert y[2].tolist() == [2, 3, 4, 5, 6, 7]
    assert y[4].tolist() == [6, 7, 8, 9, 8, 9]
    assert splice(x, 0).equal(x)
    assert splice(x[:0], 3).shape == (0, 14)
    with pytest.raises(ValueError):
        splice(x, -1)


def _classes(seed=0, n=2000, d=6, k=4):
    """k classes that differ only along dims 0 and 1; the other dims are shared noise with a
    larger variance, so PCA would keep the wrong dims and LDA must not."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(k, d)
    means[:, :2] = torch.randn(k, 2, generator=g) * 2
    scale = torch.tensor([0.5, 0.5, 5.0, 5.0, 5.0, 5.0])
    xs, labels = [], []
    for c in range(k):
        xs.append(means[c] + torch.randn(n, d, generator=g) * scale)
        labels.append(torch.full((n,), c))
    return torch.cat(xs), torch.cat(labels)


def test_lda_keeps_the_discriminative_directions_and_whitens_within_class():
    x, y = _classes()
    stats = accumulate_lda_stats({"u": x}, {"u": y}, 4)
    lda = estimate_lda(stats, dim=2)
    assert lda.shape == (2, 6)
    # The kept rows live in the span of dims 0 and 1 ...
    assert lda[:, 2:].abs().max() < 0.05 * lda[:, :2].abs().max()
    # ... and the within-class covariance of the projection is the identity.
    z = x @ lda.T
    within = sum(torch.cov(z[y == c].T) for c in range(4)) / 4
    assert torch.allclose(within, torch.eye(2), atol=0.1)
    with pytest.raises(ValueError, match="dim"):
        estimate_lda(stats, dim=7)
    with pytest.raises(ValueError, match="labels"):
        accumulate_lda_stats({"u": x}, {"u": y[:-1]}, 4)


def test_mllt_finds_the_rotation_that_diagonal_gaussians_need():
    g = torch.Generator().manual_seed(1)
    d, k, n = 4, 3, 3000
    rot = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    xs, labels = [], []
    for c in range(k):  # diagonal covariances in a rotated space
        z = torch.randn(n, d, generator=g) * torch.tensor([0.3, 1.0, 2.0, 4.0])
        xs.append((z + torch.randn(d, generator=g) * 3) @ rot.T)
        labels.append(torch.full((n,), c))
    x, y = torch.cat(xs), torch.cat(labels)

    def fit_loglik(feats):
        mu = torch.stack([feats[y == c].mean(0) for c in range(k)])
        var = torch.stack([feats[y == c].var(0) for c in range(k)])
        gmm = DiagGMM(torch.ones(k, 1), mu[:, None], var[:, None])
        return gmm, float(gmm.loglik(feats)[torch.arange(len(y)), y].mean())

    gmm, before = fit_loglik(x)
    G, beta = accumulate_mllt_stats(gmm, x, y, torch.arange(len(y)))
    assert beta == len(y)
    A, impr = estimate_mllt(G, beta)
    assert impr > 0.1
    _, after = fit_loglik(x @ A.T)
    after += float(torch.linalg.slogdet(A)[1])  # the Jacobian: likelihoods of x, not Ax
    assert after > before + 0.1
    # Re-estimating variances and MLLT in turn (as training does at its mllt_iters)
    # reaches the likelihood of the transform that undoes the rotation (the optimum; with one
    # covariance shared by all classes it is not unique, so the likelihoods are compared).
    total = A
    for _ in range(4):
        g2, _ = fit_loglik(x @ total.T)
        G, beta = accumulate_mllt_stats(g2, x @ total.T, y, torch.arange(len(y)))
        total = estimate_mllt(G, beta)[0] @ total
    _, best = fit_loglik(x @ total.T)
    _, oracle = fit_loglik(x @ rot)
    assert best + float(torch.linalg.slogdet(total)[1]) > oracle - 0.01
    assert oracle > before + 1.0
    moved = gmm.transform_means(A)
    assert torch.allclose(moved.means[:, 0], gmm.means[:, 0] @ A.T, atol=1e-5)
    assert moved.variances.equal(gmm.variances)
