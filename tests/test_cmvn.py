"""CMVN statistics in Kaldi's layout, their files, and normalisation."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import torch

from asrkit.features.cmvn import (
    GlobalCMVN,
    apply_cmvn,
    compute_cmvn_stats,
    compute_cmvn_stats_per_speaker,
    read_cmvn_stats,
    read_cmvn_stats_per_speaker,
    write_ark,
    write_cmvn_stats,
    write_cmvn_stats_per_speaker,
    write_scp,
)


def _feats(seed: int = 0, n: int = 3, dim: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(int(rng.integers(20, 60)), dim)) * 3 + 7).astype(np.float32)
            for _ in range(n)]


def test_stats_layout_matches_numpy():
    feats = _feats()
    stats = compute_cmvn_stats(feats)
    allf = np.concatenate(feats).astype(np.float64)
    assert stats.shape == (2, 6) and stats.dtype == np.float64
    np.testing.assert_allclose(stats[0, :-1], allf.sum(0))
    np.testing.assert_allclose(stats[1, :-1], (allf ** 2).sum(0))
    assert stats[0, -1] == len(allf)
    assert stats[1, -1] == 0


def test_stats_accept_tensors_and_reject_bad_input():
    feats = _feats()
    np.testing.assert_allclose(compute_cmvn_stats(torch.from_numpy(f) for f in feats),
                               compute_cmvn_stats(feats))
    with pytest.raises(ValueError, match="no feature matrices"):
        compute_cmvn_stats([])
    with pytest.raises(ValueError, match="dim"):
        compute_cmvn_stats([np.zeros((3, 4)), np.zeros((3, 5))])
    with pytest.raises(ValueError, match=r"expected \(T, F\)"):
        compute_cmvn_stats([np.zeros(4)])


def test_apply_cmvn_normalises_numpy_and_torch():
    feats = _feats()
    stats = compute_cmvn_stats(feats)
    allf = np.concatenate(feats)
    out = apply_cmvn(allf, stats)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == allf.shape
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-4)
    t = apply_cmvn(torch.from_numpy(allf), stats)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), out, atol=1e-5)
    mean_only = apply_cmvn(allf, stats, norm_vars=False)
    np.testing.assert_allclose(mean_only.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(mean_only.std(0), allf.std(0), rtol=1e-4)


def test_apply_cmvn_floors_variance_and_checks_dims():
    x = np.ones((10, 2), dtype=np.float32)
    x[:, 1] = np.arange(10)
    out = apply_cmvn(x, compute_cmvn_stats([x]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], 0)
    with pytest.raises(ValueError, match="dim"):
        apply_cmvn(np.zeros((4, 3), dtype=np.float32), compute_cmvn_stats([x]))
    with pytest.raises(ValueError, match="count"):
        apply_cmvn(x, np.zeros((2, 3)))


def test_write_read_round_trip_is_kaldi_matrix(tmp_path):
    stats = compute_cmvn_stats(_feats())
    path = tmp_path / "cmvn.ark"
    write_cmvn_stats(path, stats)
    assert path.read_bytes()[:5] == b"\0BDM "  # binary Kaldi double matrix, no key
    np.testing.assert_array_equal(read_cmvn_stats(path), stats)
    np.testing.assert_array_equal(kaldiio.load_mat(str(path)), stats)
    with pytest.raises(ValueError, match=r"\(2, F\+1\)"):
        write_cmvn_stats(tmp_path / "bad.ark", np.zeros((3, 4)))
    with pytest.raises(FileNotFoundError):
        read_cmvn_stats(tmp_path / "missing.ark")


def test_write_ark_scp_readable_by_kaldiio(tmp_path):
    feats = dict(zip(["a", "b", "c"], _feats(n=3), strict=True))
    entries = write_ark(tmp_path / "x.ark", feats.items())
    write_scp(tmp_path / "x.scp", entries)
    loaded = kaldiio.load_scp(str(tmp_path / "x.scp"))
    assert list(loaded) == ["a", "b", "c"]
    for k, v in feats.items():
        np.testing.assert_array_equal(loaded[k], v)
    with pytest.raises(ValueError, match="key"):
        write_ark(tmp_path / "y.ark", [("has space", feats["a"])])
    assert not (tmp_path / "y.ark").exists()


def test_per_speaker_stats(tmp_path):
    feats = dict(zip(["s1-a", "s1-b", "s2-a"], _feats(n=3), strict=True))
    write_scp(tmp_path / "feats.scp", write_ark(tmp_path / "feats.ark", feats.items()))
    (tmp_path / "spk2utt").write_text("s1 s1-a s1-b\ns2 s2-a missing\ns3 gone\n")
    per_spk = compute_cmvn_stats_per_speaker(tmp_path / "feats.scp", tmp_path / "spk2utt")
    assert list(per_spk) == ["s1", "s2"]  # s3 has no features: omitted
    np.testing.assert_allclose(per_spk["s1"], compute_cmvn_stats([feats["s1-a"],
                                                                  feats["s1-b"]]))
    np.testing.assert_allclose(per_spk["s2"], compute_cmvn_stats([feats["s2-a"]]))
    write_cmvn_stats_per_speaker(tmp_path / "cmvn.ark", tmp_path / "cmvn.scp", per_spk)
    back = read_cmvn_stats_per_speaker(tmp_path / "cmvn.scp")
    assert list(back) == ["s1", "s2"]
    for spk in per_spk:
        np.testing.assert_array_equal(back[spk], per_spk[spk])
    same = compute_cmvn_stats_per_speaker(tmp_path / "feats.scp",
                                          {"s1": ["s1-a", "s1-b"], "s2": ["s2-a"]})
    np.testing.assert_array_equal(same["s1"], per_spk["s1"])


def test_global_cmvn_module_equals_apply_cmvn(tmp_path):
    feats = _feats()
    stats = compute_cmvn_stats(feats)
    module = GlobalCMVN(stats)
    x = torch.from_numpy(np.stack([f[:20] for f in feats]))  # (B, T, F)
    y = module(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), apply_cmvn(x.numpy(), stats), atol=1e-5)
    assert set(module.state_dict()) == {"mean", "istd"}
    write_cmvn_stats(tmp_path / "cmvn.ark", stats)
    from_file = GlobalCMVN.from_file(tmp_path / "cmvn.ark")
    torch.testing.assert_close(from_file(x), y)
    no_var = GlobalCMVN(torch.from_numpy(stats), norm_vars=False)
    np.testing.assert_allclose(no_var(x).numpy(), apply_cmvn(x.numpy(), stats, norm_vars=False),
                               atol=1e-5)
