"""Tests for asrkit.data.audio: wav.scp entries to mono float32 tensors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from asrkit.data import audio
from asrkit.data.audio import (
    RAW_SAMPLE_RATE,
    AudioError,
    audio_duration,
    check_sample_rate,
    is_pipe,
    load_audio,
)


@pytest.mark.parametrize("name", ["a.wav", "a.flac", "a.sph", "a.raw"])
def test_load_formats(tmp_path, data_write_audio, name):
    ref = data_write_audio(tmp_path / "ref.wav", seconds=0.5)
    path = data_write_audio(tmp_path / name, seconds=0.5)
    wav, sr = load_audio(str(path))
    assert sr == 16000 == RAW_SAMPLE_RATE
    assert wav.dtype == torch.float32 and wav.shape == (8000,)
    ref_wav, _ = load_audio(str(ref))
    assert torch.allclose(wav, ref_wav, atol=1e-4)
    assert float(wav.abs().max()) <= 1.0
    assert audio_duration(str(path)) == pytest.approx(0.5)


def test_multichannel_takes_channel_0_and_logs_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "_multichannel_warned", False)
    x = np.zeros((1600, 2), dtype=np.float32)
    x[:, 0] = 0.5
    x[:, 1] = -0.25
    sf.write(tmp_path / "st.wav", x, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="asrkit.data.audio"):
        wav, _ = load_audio(str(tmp_path / "st.wav"))
        load_audio(str(tmp_path / "st.wav"))
    assert wav.shape == (1600,) and torch.all(wav == 0.5)
    assert sum("channels" in r.getMessage() for r in caplog.records) == 1


def test_resample_to_target_sr(tmp_path, data_write_audio):
    path = data_write_audio(tmp_path / "a8k.wav", seconds=1.0, sr=8000)
    wav, sr = load_audio(str(path), target_sr=16000)
    assert sr == 16000 and wav.shape == (16000,)
    same, sr2 = load_audio(str(path), target_sr=8000)
    assert sr2 == 8000 and same.shape == (8000,)


def test_check_sample_rate(tmp_path, data_write_audio):
    path = data_write_audio(tmp_path / "a8k.wav", sr=8000)
    assert check_sample_rate(str(path), 8000) == 8000
    with pytest.raises(AudioError, match=r"a8k\.wav.*8000 Hz, expected 16000 Hz"):
        check_sample_rate(str(path), 16000)


def test_segment_start_end(tmp_path):
    x = (np.arange(16000, dtype=np.float32) / 16000 - 0.5)
    sf.write(tmp_path / "ramp.wav", x, 16000, subtype="FLOAT")
    spec = str(tmp_path / "ramp.wav")
    seg, _ = load_audio(spec, start=0.25, end=0.5)
    assert seg.shape == (4000,)
    assert torch.equal(seg, torch.from_numpy(x[4000:8000]))
    tail, _ = load_audio(spec, start=0.75)
    assert tail.shape == (4000,)
    clamped, _ = load_audio(spec, start=0.5, end=1.2)  # 0.2 s overshoot: clamped like Kaldi
    assert clamped.shape == (8000,)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(spec, start=0.5, end=2.0)
    with pytest.raises(AudioError, match="0 <= start < end"):
        load_audio(spec, start=0.5, end=0.4)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(spec, start=1.5)


def test_corrupt_missing_empty(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_audio(str(bad))
    with pytest.raises(AudioError, match="corrupt.wav"):
        audio_duration(str(bad))
    with pytest.raises(AudioError, match="nowhere.wav.*not found"):
        load_audio(str(tmp_path / "nowhere.wav"))
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*0 samples"):
        load_audio(str(tmp_path / "empty.wav"))
    with pytest.raises(AudioError, match="0 samples"):
        audio_duration(str(tmp_path / "empty.wav"))


def test_pipe_refused_without_allow_pipe(tmp_path, data_write_audio):
    path = data_write_audio(tmp_path / "a.wav")
    spec = f"cat {path} |"
    assert is_pipe(spec) and not is_pipe(str(path))
    with pytest.raises(AudioError, match="--allow-pipe"):
        load_audio(spec)
    with pytest.raises(AudioError, match="--allow-pipe"):
        audio_duration(spec)


def test_pipe_accepted_with_allow_pipe(tmp_path, data_write_audio):
    path = data_write_audio(tmp_path / "a b.wav", seconds=0.25)  # space: needs quoting
    ref, _ = load_audio(str(path))
    wav, sr = load_audio(f"cat '{path}' |", allow_pipe=True)
    assert sr == 16000 and torch.equal(wav, ref)
    chained, _ = load_audio(f"cat '{path}' | cat | cat |", allow_pipe=True)
    assert torch.equal(chained, ref)
    assert audio_duration(f"cat '{path}' |", allow_pipe=True) == pytest.approx(0.25)
    seg, _ = load_audio(f"cat '{path}' |", allow_pipe=True, start=0.1, end=0.2)
    assert seg.shape == (1600,)


@pytest.mark.parametrize(("spec", "pattern"), [
    ("cat x.wav 2>/dev/null |", "shell syntax"),
    ("cat x.wav; rm -rf / |", "shell syntax"),
    ("cat x.wav && ls |", "shell syntax"),
    ("asrkit-no-such-command x |", "command not found"),
    ("false |", "exited with status 1"),
    ("cat /asrkit/no/such/file.wav |", "No such file"),
    ("echo hello |", "not readable audio"),
    ("cat 'unterminated |", "cannot parse"),
    (" | cat |", "empty command"),
])
def test_pipe_errors(spec, pattern):
    with pytest.raises(AudioError, match=pattern):
        load_audio(spec, allow_pipe=True)


def test_kaldi_ark_entry(tmp_path):
    kaldiio = pytest.importorskip("kaldiio")
    x = np.round(np.sin(np.arange(8000) / 7) * 8000).astype(np.int16)
    kaldiio.save_ark(str(tmp_path / "w.ark"), {"u1": (16000, x)},
                     scp=str(tmp_path / "w.scp"))
    spec = (tmp_path / "w.scp").read_text().split()[1]
    wav, sr = load_audio(spec)
    assert sr == 16000 and wav.shape == (8000,)
    assert torch.allclose(wav, torch.from_numpy(x.astype(np.float32) / 32768))
    assert audio_duration(spec) == pytest.approx(0.5)
