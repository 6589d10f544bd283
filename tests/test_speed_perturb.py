"""Speed perturbation (Ko et al., 2015) in asrkit.features.compute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from asrkit.data.datadir import read_kaldi_map, validate_data_dir
from asrkit.features.compute import (
    FeatureConfig,
    compute_features,
    perturb_speed,
    speed_prefix,
)

torch.set_num_threads(1)

SR = 16000


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x.numpy() * np.hanning(x.numel())))
    return float(np.argmax(spec) * sr / x.numel())


def test_perturb_speed_duration_and_pitch():
    t = torch.arange(SR) / SR
    x = 0.5 * torch.sin(2 * math.pi * 440.0 * t)
    y = perturb_speed(x, SR, 1.1)
    assert y.numel() / SR == pytest.approx(1 / 1.1, abs=1e-3)  # 0.909 s
    assert _peak_hz(x, SR) == pytest.approx(440.0, abs=2.0)
    assert _peak_hz(y, SR) == pytest.approx(484.0, abs=3.0)  # 440 × 1.1
    z = perturb_speed(x, SR, 0.9)
    assert z.numel() / SR == pytest.approx(1 / 0.9, abs=1e-3)
    assert _peak_hz(z, SR) == pytest.approx(396.0, abs=3.0)
    assert perturb_speed(x, SR, 1.0) is x
    with pytest.raises(ValueError, match="positive"):
        perturb_speed(x, SR, 0.0)
    assert speed_prefix(0.9) == "sp0.9-" and speed_prefix(1.1) == "sp1.1-"
    assert speed_prefix(1.0) == ""


@pytest.fixture
def tone_dir(tmp_path, data_write_audio):
    d = tmp_path / "data"
    d.mkdir()
    wavs = {"spkA-u1": data_write_audio(tmp_path / "wav" / "a1.wav", seconds=1.0, sr=SR),
            "spkB-u2": data_write_audio(tmp_path / "wav" / "b2.wav", seconds=0.5, sr=SR,
                                        freq=300.0)}
    (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wavs.items())))
    (d / "text").write_text("spkA-u1 HELLO WORLD\nspkB-u2 GOOD BYE\n")
    (d / "utt2spk").write_text("spkA-u1 spkA\nspkB-u2 spkB\n")
    (d / "spk2utt").write_text("spkA spkA-u1\nspkB spkB-u2\n")
    return d


def test_compute_features_with_speed_perturbation(tone_dir, tmp_path):
    out = tmp_path / "feats"
    cfg = FeatureConfig(num_mel_bins=23)
    rep = compute_features(tone_dir, out, cfg, speed_perturb=[1.1, 1.0, 0.9])
    ids = ["sp0.9-spkA-u1", "sp0.9-spkB-u2", "sp1.1-spkA-u1", "sp1.1-spkB-u2", "spkA-u1",
           "spkB-u2"]
    assert rep.num_done == 6
    assert list(read_kaldi_map(out / "feats.scp")) == ids  # C-sorted
    utt2spk = read_kaldi_map(out / "utt2spk")
    assert utt2spk["sp1.1-spkA-u1"] == "sp1.1-spkA" and utt2spk["spkA-u1"] == "spkA"
    assert read_kaldi_map(out / "spk2utt")["sp0.9-spkB"] == "sp0.9-spkB-u2"
    text = read_kaldi_map(out / "text")
    assert text["sp0.9-spkA-u1"] == text["spkA-u1"] == "HELLO WORLD"
    dur = {u: float(v) for u, v in read_kaldi_map(out / "utt2dur").items()}
    assert dur["spkA-u1"] == pytest.approx(1.0, abs=1e-3)
    assert dur["sp1.1-spkA-u1"] == pytest.approx(1 / 1.1, abs=2e-3)
    assert dur["sp0.9-spkB-u2"] == pytest.approx(0.5 / 0.9, abs=2e-3)
    frames = {u: int(v) for u, v in read_kaldi_map(out / "utt2num_frames").items()}
    assert frames["sp1.1-spkA-u1"] < frames["spkA-u1"] < frames["sp0.9-spkA-u1"]
    assert frames["spkA-u1"] == 98  # 1 + (16000 - 400) // 160
    wav = read_kaldi_map(out / "wav.scp")
    assert wav["sp1.1-spkA-u1"].startswith("sox ") and wav["sp1.1-spkA-u1"].endswith(
        "speed 1.1 |")
    assert wav["spkA-u1"] == read_kaldi_map(tone_dir / "wav.scp")["spkA-u1"]
    assert (out / "speed_perturb").read_text().split() == ["0.9", "1", "1.1"]
    # a valid Kaldi data dir (audio not opened: the sp entries are sox pipes)
    validate_data_dir(out, check_audio=False)
    # FeatureConfig stays the plain feature description
    saved = yaml.safe_load((out / "feature_config.yaml").read_text())
    assert FeatureConfig.from_dict(saved) == cfg

    # resume: complete with the same factors -> skipped; other factors -> recomputed
    mtime = (out / "feats.scp").stat().st_mtime_ns
    compute_features(tone_dir, out, cfg, speed_perturb=[0.9, 1.0, 1.1])
    assert (out / "feats.scp").stat().st_mtime_ns == mtime
    rep2 = compute_features(tone_dir, out, cfg, speed_perturb=None)
    assert rep2.num_done == 2 and not (out / "speed_perturb").exists()
    assert list(read_kaldi_map(out / "feats.scp")) == ["spkA-u1", "spkB-u2"]


def test_perturbed_features_shift_up_in_frequency(tone_dir, tmp_path):
    """The fbank bin with the most energy moves up for the sped-up copy of the 440 Hz tone."""
    import kaldiio

    out = tmp_path / "feats"
    compute_features(tone_dir, out, FeatureConfig(num_mel_bins=80, low_freq=0.0),
                     speed_perturb=[1.0, 1.5])
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    orig = feats["spkA-u1"].mean(axis=0).argmax()
    fast = feats["sp1.5-spkA-u1"].mean(axis=0).argmax()
    assert fast > orig


def test_speed_perturb_segments(tmp_path, data_write_audio):
    d = tmp_path / "data"
    d.mkdir()
    rec = data_write_audio(tmp_path / "rec.wav", seconds=2.0, sr=SR)
    (d / "wav.scp").write_text(f"rec1 {rec}\n")
    (d / "segments").write_text("spk1-a rec1 0.00 0.80\nspk1-b rec1 1.00 2.00\n")
    (d / "text").write_text("spk1-a A\nspk1-b B\n")
    (d / "utt2spk").write_text("spk1-a spk1\nspk1-b spk1\n")
    (d / "spk2utt").write_text("spk1 spk1-a spk1-b\n")
    out = tmp_path / "feats"
    compute_features(d, out, FeatureConfig(num_mel_bins=23), speed_perturb=[0.9])
    seg = read_kaldi_map(out / "segments")
    assert set(seg) == {"sp0.9-spk1-a", "sp0.9-spk1-b"}
    rec_id, start, end = seg["sp0.9-spk1-b"].split()
    assert rec_id == "sp0.9-rec1"
    assert float(start) == pytest.approx(1.0 / 0.9, abs=1e-4)
    assert float(end) == pytest.approx(2.0 / 0.9, abs=1e-4)
    assert list(read_kaldi_map(out / "wav.scp")) == ["sp0.9-rec1"]
    dur = {u: float(v) for u, v in read_kaldi_map(out / "utt2dur").items()}
    assert dur["sp0.9-spk1-a"] == pytest.approx(0.8 / 0.9, abs=2e-3)
    validate_data_dir(out, check_audio=False)


def test_bad_speed_factors(tone_dir, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        compute_features(tone_dir, tmp_path / "o", FeatureConfig(), speed_perturb=[0.9, -1])
    with pytest.raises(ValueError, match="empty"):
        compute_features(tone_dir, tmp_path / "o", FeatureConfig(), speed_perturb=[])
