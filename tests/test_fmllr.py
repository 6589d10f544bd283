"""fMLLR estimation (asrkit.models.hmm_gmm.fmllr) on data the tests synthesize."""

import torch

from asrkit.models.hmm_gmm.fmllr import (
    FmllrStats,
    accumulate_fmllr_stats,
    apply_fmllr,
    compose_fmllr,
    estimate_fmllr,
    fmllr_auxf,
    identity_fmllr,
    read_fmllr,
    write_fmllr,
)
from asrkit.models.hmm_gmm.gmm import DiagGMM


def _gmm(seed=0, pdfs=6, comps=3, dim=4):
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(torch.randn(pdfs, comps, generator=g), 1)
    mu = 3 * torch.randn(pdfs, comps, dim, generator=g)
    var = 0.3 + torch.rand(pdfs, comps, dim, generator=g)
    return DiagGMM(w, mu, var)


def _sample(gmm, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    pdf = torch.randint(0, gmm.num_pdfs, (n,), generator=g)
    comp = torch.multinomial(gmm.weights[pdf], 1, generator=g).squeeze(1)
    mu, var = gmm.means[pdf, comp], gmm.variances[pdf, comp]
    return mu + var.sqrt() * torch.randn(n, gmm.feat_dim, generator=g), pdf


def test_recovers_inverse_of_a_speaker_distortion():
    gmm = _gmm()
    x, pdf = _sample(gmm, 6000)
    # the "speaker" distorts clean frames by y = M x + c; fMLLR must map y back to x
    g = torch.Generator().manual_seed(5)
    M = torch.eye(4) + 0.3 * torch.randn(4, 4, generator=g)
    c = torch.randn(4, generator=g)
    y = x @ M.T + c
    stats = accumulate_fmllr_stats(gmm, y, pdf)
    W, impr = estimate_fmllr(stats, num_iters=20)
    assert impr > 0.1
    # a second pass with the component posteriors of the adapted frames (as SAT's repeated
    # estimation and decode_fmllr's second pass do), composed with the first
    stats2 = accumulate_fmllr_stats(gmm, apply_fmllr(W, y.double()).float(), pdf)
    W = compose_fmllr(estimate_fmllr(stats2, num_iters=20)[0], W)
    truth = torch.cat([torch.linalg.inv(M), (-torch.linalg.inv(M) @ c)[:, None]], 1)
    assert (W - truth.double()).abs().max() < 0.05
    back = apply_fmllr(W, y.double()).float()
    err = (back - x).pow(2).mean() / x.var(0).mean()
    assert err < 0.01, err
    # the likelihood under the model rises when the transform is applied (with the Jacobian)
    before = gmm.loglik(y).gather(1, pdf[:, None]).mean()
    logdet = torch.linalg.slogdet(W[:, :4])[1].float()
    after = gmm.loglik(back).gather(1, pdf[:, None]).mean() + logdet
    assert after > before + 0.1


def test_auxf_never_falls_and_identity_is_fixed_point_for_clean_data():
    gmm = _gmm(seed=2)
    x, pdf = _sample(gmm, 4000, seed=3)
    stats = accumulate_fmllr_stats(gmm, x, pdf)
    prev = fmllr_auxf(stats, identity_fmllr(4))
    W = identity_fmllr(4)
    for _ in range(4):
        W, _ = estimate_fmllr(stats, W, num_iters=1)
        cur = fmllr_auxf(stats, W)
        assert cur >= prev - 1e-6
        prev = cur
    # data from the model itself: the transform stays near identity
    assert (W - identity_fmllr(4)).abs().max() < 0.15


def test_min_count_keeps_init_and_weights_count():
    gmm = _gmm()
    x, pdf = _sample(gmm, 40)
    stats = accumulate_fmllr_stats(gmm, x, pdf, torch.full((40,), 0.5))
    assert abs(stats.beta - 20.0) < 1e-9
    W, impr = estimate_fmllr(stats, min_count=50)
    assert torch.equal(W, identity_fmllr(4)) and impr == 0.0


def test_stats_add_up_over_chunks():
    gmm = _gmm()
    x, pdf = _sample(gmm, 300)
    whole = accumulate_fmllr_stats(gmm, x, pdf)
    parts = FmllrStats.zeros(4).add_(accumulate_fmllr_stats(gmm, x[:100], pdf[:100]))
    parts.add_(accumulate_fmllr_stats(gmm, x[100:], pdf[100:]))
    assert torch.allclose(whole.K, parts.K) and torch.allclose(whole.G, parts.G)


def test_compose_equals_applying_in_turn():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g).double(), torch.randn(3, 4, generator=g).double()
    x = torch.randn(10, 3, generator=g).double()
    assert torch.allclose(apply_fmllr(compose_fmllr(b, a), x), apply_fmllr(b, apply_fmllr(a, x)))


def test_trans_ark_round_trip(tmp_path):
    ts = {"spkB": torch.randn(3, 4).double(), "spkA": identity_fmllr(3)}
    p = write_fmllr(tmp_path / "trans.ark", ts)
    back = read_fmllr(p)
    assert set(back) == {"spkA", "spkB"} and torch.allclose(back["spkB"], ts["spkB"])
    assert (tmp_path / "trans.scp").read_text().startswith("spkA ")
    assert not list(tmp_path.glob("*.tmp"))
