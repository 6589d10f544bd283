"""Feature extraction (torchaudio Kaldi-compatible fbank/MFCC) and the features stage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.compliance import kaldi

from asrkit.data.datadir import (
    read_kaldi_map,
    spk2utt_from_utt2spk,
    validate_data_dir,
    write_kaldi_map,
)
from asrkit.features import compute
from asrkit.features.cmvn import compute_cmvn_stats, read_cmvn_stats
from asrkit.features.compute import (
    FeatureConfig,
    FeatureError,
    FeatureReport,
    compute_features,
    extract,
)


def _signal(n: int, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """Sine plus a little noise, float32 in [-1, 1]."""
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=n)).astype(np.float32)


def _make_data_dir(root: Path, *, corrupt: bool = False, empty: bool = False,
                   eight_k: bool = True) -> Path:
    """Write a small Kaldi data dir of synthetic 16-bit WAVs (distinct lengths per utt)."""
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    wav_scp, text, utt2spk = {}, {}, {}
    for i in range(7):
        spk = f"spk{i % 2}"
        utt = f"{spk}-u{i}"
        path = wav_dir / f"{utt}.wav"
        sf.write(path, _signal(8000 + 1000 * i, freq=200.0 + 50 * i, seed=i), 16000,
                 subtype="PCM_16")
        wav_scp[utt], text[utt], utt2spk[utt] = str(path), f"WORD{i} X", spk
    if eight_k:
        path = wav_dir / "spk1-r8k.wav"
        sf.write(path, _signal(6000, sr=8000, freq=300.0), 8000, subtype="PCM_16")
        wav_scp["spk1-r8k"], text["spk1-r8k"], utt2spk["spk1-r8k"] = str(path), "EIGHT", "spk1"
    if corrupt:
        path = wav_dir / "spk0-corrupt.wav"
        path.write_bytes(np.random.default_rng(1).bytes(3000))
        wav_scp["spk0-corrupt"], text["spk0-corrupt"] = str(path), "BAD ONE"
        utt2spk["spk0-corrupt"] = "spk0"
    if empty:
        path = wav_dir / "spk1-empty.wav"
        sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
        wav_scp["spk1-empty"], text["spk1-empty"], utt2spk["spk1-empty"] = (
            str(path), "EMPTY", "spk1")
    return _write_data_dir(root / "data", wav_scp, text, utt2spk)


def _write_data_dir(data: Path, wav_scp: dict, text: dict, utt2spk: dict) -> Path:
    """A Kaldi data dir at ``data`` from its maps (spk2utt derived); returns ``data``."""
    write_kaldi_map(data / "wav.scp", wav_scp)
    write_kaldi_map(data / "text", text)
    write_kaldi_map(data / "utt2spk", utt2spk)
    write_kaldi_map(data / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    return data


def _load_feats(out_dir: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in kaldiio.load_scp(str(out_dir / "feats.scp")).items()}


# ----------------------------------------------------------------------------- extract


def test_extract_fbank_matches_torchaudio_kaldi():
    wav = torch.from_numpy(_signal(16000))
    cfg = FeatureConfig()
    feats = extract(wav, 16000, cfg)
    ref = kaldi.fbank(wav.unsqueeze(0) * 32768, num_mel_bins=80, energy_floor=0.0, dither=0.0,
                      sample_frequency=16000)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref, rtol=0, atol=0)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 23456])
def test_extract_frame_count_snip_edges(n):
    feats = extract(torch.from_numpy(_signal(n)), 16000, FeatureConfig())
    assert feats.shape == (1 + (n - 400) // 160, 80)


def test_extract_mfcc_13_dims_matches_torchaudio():
    wav = torch.from_numpy(_signal(12345))
    cfg = FeatureConfig(type="mfcc")
    feats = extract(wav, 16000, cfg)
    assert feats.shape == (1 + (12345 - 400) // 160, 13) and cfg.feat_dim == 13
    ref = kaldi.mfcc(wav.unsqueeze(0) * 32768, num_ceps=13, num_mel_bins=23, energy_floor=0.0,
                     dither=0.0)
    torch.testing.assert_close(feats, ref, rtol=0, atol=0)


def test_extract_resamples_8k_to_16k():
    sec = 1.25
    feats8 = extract(torch.from_numpy(_signal(int(8000 * sec), sr=8000)), 8000, FeatureConfig())
    feats16 = extract(torch.from_numpy(_signal(int(16000 * sec))), 16000, FeatureConfig())
    assert feats8.shape == feats16.shape == (1 + (20000 - 400) // 160, 80)


def test_extract_errors_name_the_utterance():
    with pytest.raises(FeatureError, match=r"'u1'.*too short"):
        extract(torch.zeros(300), 16000, FeatureConfig(), utt_id="u1")
    wav = torch.from_numpy(_signal(4000))
    wav[1000] = float("nan")
    with pytest.raises(FeatureError, match=r"'u2'.*NaN"):
        extract(wav, 16000, FeatureConfig(), utt_id="u2")
    with pytest.raises(FeatureError, match="mono"):
        extract(torch.zeros(2, 4000), 16000, FeatureConfig())


def test_feature_config_validation():
    with pytest.raises(ValueError, match="type"):
        FeatureConfig(type="plp")
    with pytest.raises(ValueError, match="num_mel_bins"):
        FeatureConfig(num_mel_bins=0)
    assert FeatureConfig(use_energy=True).feat_dim == 81
    assert FeatureConfig.from_dict({"type": "mfcc", "num_ceps": 20}).num_ceps == 20
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({"bogus": 1})


# ----------------------------------------------------------------------------- stage


def test_compute_features_nj1_equals_nj2(tmp_path):
    data = _make_data_dir(tmp_path)
    counts: list[int] = []
    # one 8 kHz file among 16 kHz ones: upsampled only when asked (test_sample_rate_* below)
    r1 = compute_features(data, tmp_path / "f1", FeatureConfig(), nj=1, progress=counts.append,
                          allow_upsample=True)
    r2 = compute_features(data, tmp_path / "f2", FeatureConfig(), nj=2, allow_upsample=True)
    assert sum(counts) == 8
    assert isinstance(r1, FeatureReport)
    assert (r1.num_done, r1.num_failed, r1.feat_dim) == (8, 0, 80)
    assert (r2.num_done, r2.total_frames) == (r1.num_done, r1.total_frames)
    f1, f2 = _load_feats(tmp_path / "f1"), _load_feats(tmp_path / "f2")
    assert list(f1) == sorted(f1, key=lambda u: u.encode()) == list(f2)
    for utt in f1:
        np.testing.assert_array_equal(f1[utt], f2[utt])

    out = tmp_path / "f2"
    frames = read_kaldi_map(out / "utt2num_frames")
    assert {u: int(n) for u, n in frames.items()} == {u: len(f) for u, f in f2.items()}
    assert r2.total_frames == sum(len(f) for f in f2.values())
    assert (out / "feat_dim").read_text() == "80\n"
    assert r2.seconds_audio == pytest.approx(sum(0.5 + 0.0625 * i for i in range(7)) + 0.75,
                                             abs=0.01)
    np.testing.assert_allclose(read_cmvn_stats(out / "cmvn.ark"),
                               compute_cmvn_stats(f2.values()), rtol=1e-9)
    assert (out / "bad_utts").read_text() == ""
    assert (out / ".done").is_file() and (out / "feature_config.yaml").is_file()
    validate_data_dir(out)  # a valid Kaldi data dir in its own right
    # the 8 kHz file was resampled: 0.75 s -> 1 + (12000 - 400) // 160 frames
    assert len(f2["spk1-r8k"]) == 1 + (12000 - 400) // 160
    assert r1.audio_sample_rates == r2.audio_sample_rates == {8000: 1, 16000: 7}
    # features equal extract() on the same audio
    wav, sr = sf.read(tmp_path / "wav" / "spk0-u2.wav", dtype="float32")
    np.testing.assert_array_equal(
        f1["spk0-u2"], extract(torch.from_numpy(wav), sr, FeatureConfig()).numpy())


def test_bad_audio_is_skipped_and_reported(tmp_path, caplog):
    data = _make_data_dir(tmp_path, corrupt=True, empty=True, eight_k=False)
    with caplog.at_level(logging.WARNING, logger="asrkit"):
        report = compute_features(data, tmp_path / "out", FeatureConfig(), nj=2)
    out = tmp_path / "out"
    assert (report.num_done, report.num_failed) == (7, 2)
    lines = (out / "bad_utts").read_text().splitlines()
    bad = dict(line.split("\t", 1) for line in lines)
    assert list(bad) == ["spk0-corrupt", "spk1-empty"]
    assert "AudioError" in bad["spk0-corrupt"]
    assert "empty" in bad["spk1-empty"]
    for name in ("text", "utt2spk", "wav.scp", "feats.scp", "utt2num_frames", "utt2dur"):
        keys = set(read_kaldi_map(out / name))
        assert keys == {f"spk{i % 2}-u{i}" for i in range(7)}, name
    assert "spk1-empty" not in (out / "spk2utt").read_text()
    assert "spk0-corrupt" in caplog.text and "spk1-empty" in caplog.text
    validate_data_dir(out)


def test_all_failed_raises(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "x.wav").write_bytes(b"not a wav at all")
    write_kaldi_map(data / "wav.scp", {"a": str(tmp_path / "x.wav")})
    write_kaldi_map(data / "text", {"a": "A"})
    write_kaldi_map(data / "utt2spk", {"a": "a"})
    with pytest.raises(FeatureError, match="all 1 utterances failed"):
        compute_features(data, tmp_path / "out", FeatureConfig())
    assert (tmp_path / "out" / "bad_utts").read_text().startswith("a\t")
    assert not (tmp_path / "out" / ".done").exists()


def test_nan_features_are_reported(tmp_path, monkeypatch):
    data = _make_data_dir(tmp_path, eight_k=False)
    nan_len = 8000 + 1000 * 3  # spk1-u3
    real_fbank = kaldi.fbank

    def fbank(waveform, **kwargs):
        out = real_fbank(waveform, **kwargs)
        return out * float("nan") if waveform.shape[-1] == nan_len else out

    monkeypatch.setattr(kaldi, "fbank", fbank)
    report = compute_features(data, tmp_path / "out", FeatureConfig(), nj=1)
    assert report.num_failed == 1
    bad = (tmp_path / "out" / "bad_utts").read_text()
    assert bad.startswith("spk1-u3\tFeatureError:") and "NaN" in bad
    assert "spk1-u3" not in read_kaldi_map(tmp_path / "out" / "text")


def test_rerun_skips_when_done(tmp_path, monkeypatch):
    data = _make_data_dir(tmp_path, eight_k=False)
    calls = {"n": 0}
    real = compute.extract

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(compute, "extract", counting)
    r1 = compute_features(data, tmp_path / "out", FeatureConfig())
    assert calls["n"] == 7
    r2 = compute_features(data, tmp_path / "out", FeatureConfig())
    assert calls["n"] == 7
    assert r2 == r1
    # a different config recomputes everything
    r3 = compute_features(data, tmp_path / "out", FeatureConfig(type="mfcc"))
    assert calls["n"] == 14 and r3.feat_dim == 13
    assert (tmp_path / "out" / "feat_dim").read_text() == "13\n"


def test_resume_recomputes_only_the_missing_job(tmp_path, caplog):
    data = _make_data_dir(tmp_path, eight_k=False)
    out = tmp_path / "out"
    compute_features(data, out, FeatureConfig(), nj=2)
    before = _load_feats(out)
    ark1, ark2 = out / "data" / "feats.1.ark", out / "data" / "feats.2.ark"
    m1, m2 = ark1.stat().st_mtime_ns, ark2.stat().st_mtime_ns
    # simulate a run killed after job 1 finished but before job 2 did
    (out / ".done").unlink()
    (out / "data" / "feats.2.scp").unlink()
    os.utime(ark2, ns=(m2 - 10**9, m2 - 10**9))
    counts: list[int] = []
    with caplog.at_level(logging.INFO, logger="asrkit"):
        report = compute_features(data, out, FeatureConfig(), nj=2, progress=counts.append)
    assert "job 1/2 already complete" in caplog.text
    assert "job 2/2 already complete" not in caplog.text
    assert ark1.stat().st_mtime_ns == m1
    assert ark2.stat().st_mtime_ns > m2 - 10**9
    assert sum(counts) == 7 and report.num_done == 7
    assert report.audio_sample_rates == {16000: 7}  # job 1's counts kept from the first run
    after = _load_feats(out)
    assert list(after) == list(before)
    for utt in before:
        np.testing.assert_array_equal(after[utt], before[utt])


def test_segments(tmp_path):
    rec = tmp_path / "rec.wav"
    signal = _signal(48000)
    sf.write(rec, signal, 16000, subtype="PCM_16")
    data = tmp_path / "data"
    write_kaldi_map(data / "wav.scp", {"rec1": str(rec)})
    write_kaldi_map(data / "segments", {"s-a": "rec1 0.0 1.0", "s-b": "rec1 1.5 2.75"})
    write_kaldi_map(data / "text", {"s-a": "A", "s-b": "B"})
    write_kaldi_map(data / "utt2spk", {"s-a": "s", "s-b": "s"})
    compute_features(data, tmp_path / "out", FeatureConfig())
    feats = _load_feats(tmp_path / "out")
    audio, _ = sf.read(rec, dtype="float32")
    np.testing.assert_array_equal(
        feats["s-b"], extract(torch.from_numpy(audio[24000:44000]), 16000,
                              FeatureConfig()).numpy())
    assert len(feats["s-a"]) == 1 + (16000 - 400) // 160
    assert (tmp_path / "out" / "segments").is_file()
    validate_data_dir(tmp_path / "out")


def test_failed_job_raises_and_keeps_the_others(tmp_path):
    data = _make_data_dir(tmp_path, eight_k=False)
    out = tmp_path / "out"
    (out / "data" / "feats.2.ark").mkdir(parents=True)  # job 2 cannot write its ark
    with pytest.raises(RuntimeError, match=r"1 of 2 feature job\(s\) failed; first, job 2"):
        compute_features(data, out, FeatureConfig(), nj=2)
    assert (out / "data" / "feats.1.scp").is_file()
    assert not (out / "data" / "feats.2.scp").exists() and not (out / ".done").exists()
    (out / "data" / "feats.2.ark").rmdir()
    report = compute_features(data, out, FeatureConfig(), nj=2)
    assert (report.num_done, report.num_failed) == (7, 0)


# ----------------------------------------------------------------------------- sample rates


def _rate_dir(root: Path, write_audio, rates: list[int], *, seconds: float = 0.6,
              pipe: bool = False) -> Path:
    """A data dir of one tone per rate in ``rates`` (utterances spk-u0, spk-u1, ...)."""
    wav_scp, text, utt2spk = {}, {}, {}
    for i, sr in enumerate(rates):
        utt = f"spk-u{i}"
        path = write_audio(root / "wav" / f"{utt}_{sr}.wav", seconds=seconds, sr=sr)
        wav_scp[utt] = f"cat {path} |" if pipe else str(path)
        text[utt], utt2spk[utt] = "A B", "spk"
    return _write_data_dir(root / "data", wav_scp, text, utt2spk)


def test_sample_rate_8k_data_with_16k_config_stops_naming_the_option(tmp_path, capsys,
                                                                      data_write_audio):
    from asrkit.cli import main
    from asrkit.features.compute import SampleRateError

    data = _rate_dir(tmp_path, data_write_audio, [8000] * 3)
    with pytest.raises(SampleRateError) as e:
        compute_features(data, tmp_path / "out", FeatureConfig())
    msg = str(e.value)
    assert str(data) in msg and "3 of 3 audio files" in msg and "8000 Hz" in msg
    assert "spk-u0_8000.wav" in msg and "16000 Hz" in msg
    assert "--sample-rate 8000" in msg and "--allow-upsample" in msg
    assert not (tmp_path / "out" / "data").exists()  # stopped before computing anything
    assert main(["features", str(data), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--sample-rate 8000" in err and "spk-u0_8000.wav" in err
    # mixed rates: the one 8 kHz file is named, with the count
    mixed = _rate_dir(tmp_path / "mixed", data_write_audio, [16000, 8000, 16000])
    with pytest.raises(SampleRateError, match=r"1 of 3 audio files .*spk-u1_8000\.wav is 8000"):
        compute_features(mixed, tmp_path / "out_mixed", FeatureConfig())


def test_sample_rate_8k_data_with_8k_option_gives_native_rate_features(tmp_path, capsys,
                                                                        data_write_audio):
    from asrkit.cli import main

    data = _rate_dir(tmp_path, data_write_audio, [8000] * 3, seconds=0.6)
    out = tmp_path / "fbank8k"
    assert main(["features", str(data), str(out), "--sample-rate", "8000",
                 "--num-mel-bins", "40"]) == 0
    assert "features at 8000 Hz (audio 8000 Hz: 3)" in capsys.readouterr().out
    feats = _load_feats(out)
    n = round(0.6 * 8000)  # 25 ms = 200 samples, 10 ms = 80 samples at 8 kHz
    assert {u: f.shape for u, f in feats.items()} == {
        f"spk-u{i}": (1 + (n - 200) // 80, 40) for i in range(3)}
    wav, sr = sf.read(tmp_path / "wav" / "spk-u1_8000.wav", dtype="float32")
    cfg8 = FeatureConfig(sample_rate=8000, num_mel_bins=40)
    np.testing.assert_array_equal(feats["spk-u1"], extract(torch.from_numpy(wav), sr,
                                                           cfg8).numpy())
    import json

    info = json.loads((out / "sample_rates.json").read_text())
    assert info == {"sample_rate": 8000, "audio_sample_rates": {"8000": 3},
                    "upsampled_utterances": 0, "downsampled_utterances": 0}


def test_sample_rate_44k_data_is_downsampled_and_logged(tmp_path, caplog, data_write_audio):
    data = _rate_dir(tmp_path, data_write_audio, [44100, 44100], seconds=0.5)
    with caplog.at_level(logging.INFO, logger="asrkit"):
        rep = compute_features(data, tmp_path / "out", FeatureConfig())
    assert "audio sample rates (file headers): 44100 Hz: 2 files" in caplog.text
    assert "downsampling 2 audio files (44100 Hz: 2 files) to the feature config's 16000 Hz" \
        in caplog.text
    assert rep.audio_sample_rates == {44100: 2}
    frames = {u: len(f) for u, f in _load_feats(tmp_path / "out").items()}
    assert frames == {"spk-u0": 1 + (8000 - 400) // 160, "spk-u1": 1 + (8000 - 400) // 160}


def test_sample_rate_allow_upsample_opt_in(tmp_path, caplog, capsys, data_write_audio):
    from asrkit.cli import main

    data = _rate_dir(tmp_path, data_write_audio, [8000, 8000], seconds=0.5)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="asrkit"):
        assert main(["features", str(data), str(out), "--allow-upsample"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("upsampling 2 audio files (8000 Hz: 2 files) to 16000 Hz" in w for w in warnings)
    frames = {u: len(f) for u, f in _load_feats(out).items()}
    assert frames == {"spk-u0": 1 + (8000 - 400) // 160, "spk-u1": 1 + (8000 - 400) // 160}
    import json

    assert json.loads((out / "sample_rates.json").read_text())["upsampled_utterances"] == 2


@pytest.mark.parametrize("nj", [1, 2])
def test_sample_rate_of_pipes_is_checked_when_read(tmp_path, data_write_audio, nj):
    from asrkit.features.compute import SampleRateError

    data = _rate_dir(tmp_path, data_write_audio, [16000, 8000], pipe=True)
    with pytest.raises(SampleRateError, match=r"'cat .*spk-u1_8000\.wav \|'.*8000 Hz.*"
                                              r"--sample-rate 8000"):
        compute_features(data, tmp_path / "out", FeatureConfig(), allow_pipe=True, nj=nj)
    rep = compute_features(data, tmp_path / "out", FeatureConfig(), allow_pipe=True, nj=nj,
                           allow_upsample=True)
    assert rep.num_done == 2 and rep.audio_sample_rates == {8000: 1, 16000: 1}
