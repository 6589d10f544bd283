"""Filterbank / MFCC / raw-waveform feature extraction into Kaldi ark/scp, the ``features`` stage.

:func:`extract` turns one waveform into a ``(T, F)`` matrix with
``torchaudio.compliance.kaldi.fbank`` / ``.mfcc``, which reproduce Kaldi's
``compute-fbank-feats`` / ``compute-mfcc-feats`` (Povey window, pre-emphasis 0.97, DC removal,
``snip_edges``), on int16-scaled samples as Kaldi reads them.

Type ``raw`` stores the waveform itself, for models that read audio (``model=pretrained_encoder``,
a wav2vec 2.0 / HuBERT encoder): the samples in [-1, 1] cut into consecutive, non-overlapping
``frame_shift`` frames (``F = sample_rate × frame_shift / 1000`` samples, 160 at 16 kHz and
10 ms), the last partial frame zero-padded, so ``T = ceil(N / F)`` and no sample is lost (the
model sees at most ``F - 1`` trailing zeros, under 10 ms of silence). Stored in the same ark/scp
with the same ``utt2num_frames`` (10 ms frames), the data loader, length bucketing
(``data.max_frames``), speed perturbation and decoding need no change. The CMVN stats are
still written (over the ``F`` sample positions of a frame, so every file of the layout below
exists), but a raw-waveform model ignores them: normalising each position within a 10 ms frame
means nothing; such models normalise per utterance instead. Float32 samples take 64 kB per
second of audio, twice 80-dim fbank.

:func:`compute_features` runs it over a Kaldi data dir like Kaldi's ``steps/make_fbank.sh``
followed by ``compute-cmvn-stats``, and leaves an output directory that is itself a Kaldi
data dir with features (ESPnet's ``dump/fbank/<set>``)::

    out_dir/
      feats.scp            utt -> <abs path>/data/feats.JOB.ark:offset, sorted (C order)
      utt2num_frames       utt -> T
      feat_dim             F (one integer)
      cmvn.ark             global CMVN stats, one binary Kaldi matrix (2, F+1)
      bad_utts             utt<TAB>reason for every skipped utterance (may be empty)
      wav.scp text utt2spk spk2utt utt2dur [segments]   filtered to the successful utts
      feature_config.yaml  the FeatureConfig used
      sample_rates.json    the features' rate and the audio's rates read (utterance counts)
      data/feats.JOB.{ark,scp} and per-job bookkeeping (utt2num_frames.JOB, utt2dur.JOB,
                           bad_utts.JOB, cmvn.JOB.ark, sample_rates.JOB)
      .done                written last

Each job's ``feats.JOB.scp`` is written last, atomically, after its ark and bookkeeping, so a
complete scp marks a complete job: a killed run resumes by redoing only the jobs without one.

Speed perturbation (Ko et al., 2015, "Audio augmentation for speech recognition"):
``compute_features(..., speed_perturb=[0.9, 1.0, 1.1])`` writes one copy of every utterance
per factor. Factor ``f != 1`` plays the audio ``f`` times faster, pitch and tempo together,
as Kaldi's ``sox speed f``: :func:`perturb_speed` relabels the samples as recorded at
``f × sample_rate`` Hz and resamples them back to ``sample_rate`` with
``torchaudio.functional.resample``, so the duration becomes ``1/f`` and every frequency is
scaled by ``f``. Ids and speakers follow Kaldi's ``utils/perturb_data_dir_speed.sh``:
utterance ``sp{f}-{utt}``, speaker ``sp{f}-{spk}``, recording ``sp{f}-{rec}`` (segments
scaled by ``1/f``), text copied, ``utt2dur`` the perturbed duration; factor 1.0 keeps the
original ids (leave it out to keep only perturbed copies). The perturbed ``wav.scp`` entries
are Kaldi's ``sox ... speed f |`` pipes, so the output data dir describes its audio for
other tools; the features themselves are computed in-process with the resampler above, not
by running sox (which needs not be installed). The factors are recorded in
``out_dir/speed_perturb`` (absent without perturbation) and are part of the resume check, but
not of :class:`FeatureConfig`, which describes how to turn any waveform into features and is
reused unchanged for dev/test sets and decoding.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import queue
import re
import shlex
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
import yaml
from torchaudio.compliance import kaldi

from asrkit.data.audio import (
    RAW_ENDIAN,
    RAW_EXTENSIONS,
    RAW_SAMPLE_RATE,
    AudioError,
    header_sample_rate,
    is_pipe,
    load_audio,
)
from asrkit.data.datadir import DataDir, read_kaldi_map, split_evenly, write_kaldi_map
from asrkit.features.cmvn import (
    compute_cmvn_stats,
    read_cmvn_stats,
    write_ark,
    write_cmvn_stats,
    write_scp,
)
from asrkit.fileio import atomic_write, is_done, mark_done

__all__ = ["FEATURE_TYPES", "FeatureConfig", "FeatureError", "FeatureReport", "SampleRateError",
           "compute_features", "extract", "perturb_speed", "speed_prefix"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "feature_config.yaml"
_ARK_OFFSET = re.compile(r"^.+\.ark:\d+$")  # wav.scp "<file>.ark:<offset>" (asrkit.data.audio)
RATES_NAME = "sample_rates.json"
"""File in the output dir: the features' rate and the audio's rates found (utterance counts)."""
SPEED_NAME = "speed_perturb"
"""File in the output dir listing the speed-perturbation factors (absent: none)."""
JOB_DIR = "data"
INT16_SCALE = 32768.0
"""Kaldi reads 16-bit PCM as integers; float waveforms in [-1, 1] are scaled by this."""

# (utt_id, wav.scp value or None when missing, start s, end s or None, speed factor)
_Utt = tuple[str, str | None, float, float | None, float]
FEATURE_TYPES = ("fbank", "mfcc", "raw")
"""Values of :attr:`FeatureConfig.type`."""


class FeatureError(ValueError):
    """Features could not be computed: too-short audio, NaN/Inf output, or no usable utterance.

    The message names the utterance when one is involved.
    """


class SampleRateError(ValueError):
    """Audio below the feature config's sample rate, which would have to be upsampled.

    Raised by :func:`compute_features` without ``allow_upsample`` (before computing anything
    when the file headers tell the rate; for pipes and archive entries when they are read).
    The message names the data dir or ``wav.scp`` entry, the rates, an example and the
    options to set. Not a per-utterance failure: it stops the stage.
    """


@dataclass
class FeatureConfig:
    """Feature extraction options; defaults follow Kaldi except where noted.

    Attributes:
        type: ``"fbank"`` (log mel filterbank, ``compute-fbank-feats``), ``"mfcc"``
            (``compute-mfcc-feats``) or ``"raw"`` (the waveform in ``frame_shift`` frames of
            samples, see the module docstring; only ``sample_rate``, ``frame_shift`` and
            ``frame_length`` apply, the last as the shortest audio accepted).
        num_mel_bins: mel bins for fbank (80, ESPnet's usual; Kaldi's default is 23).
        num_ceps: cepstra kept for MFCC (13, Kaldi default).
        mfcc_num_mel_bins: mel bins used inside MFCC (23, Kaldi's ``--num-mel-bins`` default
            for ``compute-mfcc-feats``); ``num_mel_bins`` applies to fbank only.
        sample_rate: Hz the features are computed at. :func:`compute_features` downsamples
            audio at a higher rate and refuses audio at a lower one unless told to upsample
            (``allow_upsample``); :func:`extract` resamples whatever it is given.
        frame_length: window length in ms (25).
        frame_shift: frame shift in ms (10); for ``raw`` it must be a whole number of samples.
        dither: dithering constant (0.0 here for reproducible features; Kaldi's default 1.0).
        low_freq: lowest mel-bin frequency in Hz (20, Kaldi default).
        high_freq: highest mel-bin frequency in Hz; 0 means Nyquist, negative is an offset
            from Nyquist (Kaldi default 0).
        energy_floor: floor on the log energy term (0.0, Kaldi default; torchaudio's is 1.0).
        use_energy: append (fbank) or substitute for C0 (MFCC) the log frame energy. False,
            as in Kaldi recipes' ``conf/mfcc.conf`` (the Kaldi binary's MFCC default is true).
    """

    type: str = "fbank"
    num_mel_bins: int = 80
    num_ceps: int = 13
    mfcc_num_mel_bins: int = 23
    sample_rate: int = 16000
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 0.0
    low_freq: float = 20.0
    high_freq: float = 0.0
    energy_floor: float = 0.0
    use_energy: bool = False

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"FeatureConfig.type must be one of {FEATURE_TYPES}, got "
                             f"{self.type!r}")
        for name in ("num_mel_bins", "num_ceps", "mfcc_num_mel_bins", "sample_rate",
                     "frame_length", "frame_shift"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be positive, got "
                                 f"{getattr(self, name)!r}")
        if self.type == "mfcc" and self.num_ceps > self.mfcc_num_mel_bins:
            raise ValueError(f"num_ceps={self.num_ceps} exceeds mfcc_num_mel_bins="
                             f"{self.mfcc_num_mel_bins}")
        if self.frame_shift > self.frame_length:
            raise ValueError(f"frame_shift {self.frame_shift} ms exceeds frame_length "
                             f"{self.frame_length} ms")
        if self.type == "raw":
            samples = self.sample_rate * self.frame_shift / 1000
            if abs(samples - round(samples)) > 1e-6:
                raise ValueError(f"raw features need a whole number of samples per frame; "
                                 f"frame_shift {self.frame_shift} ms at {self.sample_rate} Hz "
                                 f"is {samples:g}")

    @property
    def feat_dim(self) -> int:
        """Output dimension ``F`` (for ``raw``: samples per frame, 160 at 16 kHz / 10 ms)."""
        if self.type == "mfcc":
            return self.num_ceps
        if self.type == "raw":
            return round(self.sample_rate * self.frame_shift / 1000)
        return self.num_mel_bins + int(self.use_energy)

    @property
    def window_samples(self) -> int:
        """Samples in one analysis window at ``sample_rate`` (as torchaudio/Kaldi round)."""
        return int(self.sample_rate * self.frame_length * 0.001)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """Build from a dict such as a loaded ``feature_config.yaml``.

        Raises:
            ValueError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FeatureConfig keys: {unknown}")
        return cls(**d)


@dataclass
class FeatureReport:
    """Summary of a :func:`compute_features` run.

    Attributes:
        num_done: utterances with features in ``feats.scp``.
        num_failed: utterances skipped (listed in ``bad_utts``).
        feat_dim: ``F``.
        total_frames: sum of ``T`` over ``feats.scp``.
        seconds_audio: total duration in seconds of the successful utterances (``utt2dur``).
        out_dir: the output directory.
        audio_sample_rates: ``{rate in Hz: utterances}`` of the audio as read (before any
            resampling; speed-perturbed copies counted each), from ``sample_rates.json``;
            empty for an output dir written before that file existed.
    """

    num_done: int
    num_failed: int
    feat_dim: int
    total_frames: int
    seconds_audio: float
    out_dir: Path
    audio_sample_rates: dict[int, int] = field(default_factory=dict)


def _kaldi_compute(samples: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Call torchaudio's Kaldi-compatible fbank/mfcc on ``(num_samples,)`` int16-scale input."""
    common = {"sample_frequency": float(cfg.sample_rate), "frame_length": cfg.frame_length,
              "frame_shift": cfg.frame_shift, "dither": cfg.dither, "low_freq": cfg.low_freq,
              "high_freq": cfg.high_freq, "energy_floor": cfg.energy_floor,
              "use_energy": cfg.use_energy}
    if cfg.type == "fbank":
        return kaldi.fbank(samples.unsqueeze(0), num_mel_bins=cfg.num_mel_bins, **common)
    return kaldi.mfcc(samples.unsqueeze(0), num_ceps=cfg.num_ceps,
                      num_mel_bins=cfg.mfcc_num_mel_bins, **common)


def _raw_frames(wav: torch.Tensor, frame_samples: int) -> torch.Tensor:
    """``(N,)`` samples → ``(ceil(N / F), F)`` frames of ``F = frame_samples``, zero-padded."""
    pad = -wav.numel() % frame_samples
    return torch.nn.functional.pad(wav, (0, pad)).reshape(-1, frame_samples)


def extract(waveform: torch.Tensor, sample_rate: int, cfg: FeatureConfig, *,
            utt_id: str | None = None) -> torch.Tensor:
    """Compute Kaldi-compatible fbank or MFCC features, or raw-waveform frames, of one waveform.

    Resamples to ``cfg.sample_rate`` with ``torchaudio.functional.resample`` when
    ``sample_rate`` differs (logged at DEBUG; :func:`compute_features` reports a per-job
    summary), scales samples to the int16 range (``* 32768``) as Kaldi reads PCM, and calls
    ``torchaudio.compliance.kaldi.fbank`` / ``.mfcc`` (Kaldi ``compute-fbank-feats`` /
    ``compute-mfcc-feats`` with ``snip_edges=true``: ``T = 1 + (N - window) // shift``).
    For ``cfg.type == "raw"`` the (resampled) samples, unscaled in [-1, 1], are cut into
    ``T = ceil(N / F)`` frames of ``F = cfg.feat_dim`` samples, the last zero-padded.

    Args:
        waveform: ``(num_samples,)`` float waveform in [-1, 1] (``(1, num_samples)`` accepted).
        sample_rate: rate of ``waveform`` in Hz.
        cfg: feature options.
        utt_id: utterance id used in error messages.

    Returns:
        ``(T, F)`` float32 features, ``T`` frames every ``cfg.frame_shift`` ms,
        ``F = cfg.feat_dim``.

    Raises:
        FeatureError: multi-channel input, audio shorter than one window (0 frames), or
            NaN/Inf in the features; the message names ``utt_id`` when given.
    """
    name = f"utterance {utt_id!r}" if utt_id is not None else "waveform"
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise FeatureError(f"{name}: expected a mono waveform (num_samples,), got shape "
                           f"{tuple(waveform.shape)}")
    wav = waveform.to(torch.float32)
    if sample_rate != cfg.sample_rate:
        logger.debug("%s: resampling %d Hz -> %d Hz", name, sample_rate, cfg.sample_rate)
        wav = AF.resample(wav, orig_freq=sample_rate, new_freq=cfg.sample_rate)
    if wav.numel() < cfg.window_samples:
        raise FeatureError(f"{name}: audio too short: {wav.numel()} samples at "
                           f"{cfg.sample_rate} Hz ({wav.numel() / cfg.sample_rate:.3f} s) is less "
                           f"than one {cfg.frame_length:g} ms window; 0 frames")
    if cfg.type == "raw":
        feats = _raw_frames(wav, cfg.feat_dim)
    else:
        feats = _kaldi_compute(wav * INT16_SCALE, cfg)
    if feats.shape[0] == 0:
        raise FeatureError(f"{name}: 0 feature frames from {wav.numel()} samples")
    if not torch.isfinite(feats).all():
        bad = int((~torch.isfinite(feats)).any(dim=1).sum())
        raise FeatureError(f"{name}: features contain NaN/Inf in {bad} of {feats.shape[0]} "
                           "frames (corrupt or non-finite audio?)")
    return feats.to(torch.float32)


# ----------------------------------------------------------------------------- speed


def perturb_speed(waveform: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Speed-perturb a waveform by ``factor``, as ``sox speed`` (Ko et al., 2015).

    The samples are taken to be at ``round(factor × sample_rate)`` Hz and resampled to
    ``sample_rate`` with ``torchaudio.functional.resample`` (windowed sinc): the result
    plays ``factor`` times faster, lasts ``1/factor`` as long, and every frequency is
    multiplied by ``factor``. The rate is rounded to an integer Hz, so the effective factor
    is ``round(factor × sample_rate) / sample_rate``.

    Args:
        waveform: ``(..., num_samples)`` float waveform.
        sample_rate: its rate in Hz.
        factor: speed factor (> 0); 1.0 returns ``waveform`` unchanged.

    Returns:
        ``(..., ceil(num_samples / factor))`` waveform at ``sample_rate``.

    Raises:
        ValueError: ``factor`` not a positive finite number, ``sample_rate <= 0``, or a
            factor so small that the rounded rate is 0.
    """
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"speed factor must be a positive number, got {factor!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if factor == 1.0:
        return waveform
    fast_rate = round(factor * sample_rate)
    if fast_rate <= 0:
        raise ValueError(f"speed factor {factor} is too small for {sample_rate} Hz audio")
    return AF.resample(waveform, orig_freq=fast_rate, new_freq=sample_rate)


def speed_prefix(factor: float) -> str:
    """Kaldi's id prefix for a speed factor: ``"sp0.9-"``, ``"sp1.1-"``; ``""`` for 1.0."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def _speed_factors(speed_perturb: Sequence[float] | None) -> list[float] | None:
    """Validated, sorted, de-duplicated factors; None for no perturbation (None or [1.0])."""
    if speed_perturb is None:
        return None
    factors = sorted({float(f) for f in speed_perturb})
    if not factors:
        raise ValueError("speed_perturb is empty; pass None for no perturbation")
    for f in factors:
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"speed_perturb factors must be positive numbers, got {f!r}")
    if len({speed_prefix(f) for f in factors}) != len(factors):
        raise ValueError(f"speed_perturb factors {factors} give the same id prefix twice "
                         "(they differ beyond 6 significant digits)")
    return None if factors == [1.0] else factors


def _speed_wav_entry(spec: str, factor: float) -> str:
    """The ``wav.scp`` value of a recording sped up by ``factor`` (Kaldi's sox pipe)."""
    spec = spec.strip()
    speed = f"speed {factor:g} |"
    if is_pipe(spec):
        return f"{spec} sox -t wav - -t wav - {speed}"
    if _ARK_OFFSET.match(spec) and not Path(spec).exists():
        return f"wav-copy {shlex.quote(spec)} - | sox -t wav - -t wav - {speed}"
    if spec.lower().endswith(RAW_EXTENSIONS):
        endian = "-B" if RAW_ENDIAN == "BIG" else "-L"
        return (f"sox -t raw -r {RAW_SAMPLE_RATE} -e signed -b 16 {endian} -c 1 "
                f"{shlex.quote(spec)} -t wav - {speed}")
    return f"sox {shlex.quote(spec)} -t wav - {speed}"


def _speed_data_dir(data: DataDir, factors: list[float]
                    ) -> tuple[DataDir, dict[str, tuple[str, float]]]:
    """The perturbed data dir (one copy per factor) and ``{new utt: (source utt, factor)}``."""
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] | None = {} if data.utt2dur is not None else None
    segments: dict[str, tuple[str, float, float]] | None = \
        {} if data.segments is not None else None
    sources: dict[str, tuple[str, float]] = {}
    for f in factors:
        p = speed_prefix(f)
        for rec, spec in data.wav_scp.items():
            wav_scp[p + rec] = spec if f == 1.0 else _speed_wav_entry(spec, f)
        for utt, spk in data.utt2spk.items():
            sources[p + utt] = (utt, f)
            utt2spk[p + utt] = p + spk
            if utt in data.text:
                text[p + utt] = data.text[utt]
            if utt2dur is not None and utt in data.utt2dur:  # type: ignore[operator]
                utt2dur[p + utt] = data.utt2dur[utt] / f  # type: ignore[index]
            if segments is not None and utt in data.segments:  # type: ignore[operator]
                rec, start, end = data.segments[utt]  # type: ignore[index]
                segments[p + utt] = (p + rec, start / f, end / f)
    return DataDir(wav_scp=wav_scp, text=text, utt2spk=utt2spk, utt2dur=utt2dur,
                   segments=segments), sources


def _read_speed(path: Path) -> list[float] | None:
    if not path.is_file():
        return None
    return [float(x) for x in path.read_text(encoding="utf-8").split()]


def _write_speed(path: Path, factors: list[float] | None) -> None:
    if factors is None:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as f:
        f.write(" ".join(f"{x:g}" for x in factors) + "\n")


# ----------------------------------------------------------------------------- jobs


def _job_paths(data_out: Path, job: int) -> dict[str, Path]:
    return {
        "ark": data_out / f"feats.{job}.ark",
        "scp": data_out / f"feats.{job}.scp",
        "frames": data_out / f"utt2num_frames.{job}",
        "dur": data_out / f"utt2dur.{job}",
        "bad": data_out / f"bad_utts.{job}",
        "cmvn": data_out / f"cmvn.{job}.ark",
        "rates": data_out / f"sample_rates.{job}",
    }


def _read_bad(path: Path) -> dict[str, str]:
    return read_kaldi_map(path) if path.stat().st_size else {}


def _write_bad(path: Path, bad: dict[str, str]) -> None:
    with atomic_write(path) as f:
        for utt in sorted(bad, key=lambda u: u.encode("utf-8")):
            f.write(f"{utt}\t{bad[utt]}\n")


def _job_complete(data_out: Path, job: int, utt_ids: list[str]) -> bool:
    """A job is complete when its scp exists and scp + bad_utts cover exactly its utterances."""
    p = _job_paths(data_out, job)
    if not all(p[k].is_file() for k in ("ark", "scp", "frames", "dur", "bad", "rates")):
        return False
    try:
        done = read_kaldi_map(p["scp"]) if p["scp"].stat().st_size else {}
        bad = _read_bad(p["bad"])
    except ValueError:
        return False
    if done and not p["cmvn"].is_file():
        return False
    return set(done) | set(bad) == set(utt_ids) and not set(done) & set(bad)


def _run_job(job: int, utts: list[_Utt], data_out: Path, cfg: FeatureConfig,
             allow_pipe: bool, emit: Callable[[str, object], None],
             allow_upsample: bool = False) -> None:
    """Compute one job's features into ``data_out/feats.JOB.{ark,scp}`` plus bookkeeping
    (``sample_rates.JOB``: ``rate count`` lines of the audio read).

    ``emit(kind, payload)`` reports ``("progress", n)``, ``("bad", (utt, reason))`` and
    ``("info", message)`` to the parent. Per-utterance failures (:class:`AudioError`,
    :class:`FeatureError`) are recorded; anything else propagates, including
    :class:`SampleRateError` for audio below ``cfg.sample_rate`` without ``allow_upsample``.
    """
    p = _job_paths(data_out, job)
    p["scp"].unlink(missing_ok=True)  # the scp marks completion; never trust an old one
    num_frames: dict[str, int] = {}
    durations: dict[str, float] = {}
    bad: dict[str, str] = {}
    resampled: Counter[int] = Counter()
    rates: Counter[int] = Counter()
    stats: np.ndarray | None = None

    def features() -> Iterator[tuple[str, np.ndarray]]:
        nonlocal stats
        for utt, spec, start, end, factor in utts:
            try:
                if spec is None:
                    raise AudioError(f"no wav.scp entry for utterance {utt!r}")
                wav, sr = load_audio(spec, allow_pipe=allow_pipe, start=start, end=end)
                if sr < cfg.sample_rate and not allow_upsample:  # a pipe or archive entry
                    raise SampleRateError(
                        f"wav.scp entry {spec!r} (utterance {utt!r}) is {sr} Hz audio, below "
                        f"the feature config's {cfg.sample_rate} Hz; {_RATE_REMEDY.format(sr=sr)}")
                wav = perturb_speed(wav, sr, factor)
                if sr != cfg.sample_rate:
                    resampled[sr] += 1
                feats = extract(wav, sr, cfg, utt_id=utt).numpy()
            except (AudioError, FeatureError) as e:
                reason = " ".join(f"{type(e).__name__}: {e}".split())
                bad[utt] = reason
                emit("bad", (utt, reason))
                emit("progress", 1)
                continue
            num_frames[utt] = int(feats.shape[0])
            durations[utt] = wav.numel() / sr
            rates[sr] += 1
            s = compute_cmvn_stats([feats])
            stats = s if stats is None else stats + s
            emit("progress", 1)
            yield utt, feats

    entries = write_ark(p["ark"], features())
    _write_bad(p["bad"], bad)
    write_kaldi_map(p["frames"], num_frames)
    write_kaldi_map(p["dur"], {u: f"{d:.6f}" for u, d in durations.items()})
    if stats is not None:
        write_cmvn_stats(p["cmvn"], stats)
    write_kaldi_map(p["rates"], {str(r): str(n) for r, n in sorted(rates.items())})
    for sr, n in sorted(resampled.items()):
        emit("info", f"job {job}: resampled {n} utterance(s) from {sr} Hz to "
                     f"{cfg.sample_rate} Hz")
    write_scp(p["scp"], entries)  # last: marks the job complete


def _worker_main(job: int, utts: list[_Utt], data_out: str, cfg: FeatureConfig,
                 allow_pipe: bool, q: mp.Queue, allow_upsample: bool = False) -> None:
    """Worker-process entry point: one job on one thread, reporting through ``q``."""
    torch.set_num_threads(1)

    def emit(kind: str, payload: object) -> None:
        q.put((job, kind, payload))

    try:
        _run_job(job, utts, Path(data_out), cfg, allow_pipe, emit, allow_upsample)
    except SampleRateError as e:  # the user's to fix: passed on as is, no traceback
        q.put((job, "rate_error", str(e)))
    except BaseException:  # noqa: BLE001 - any failure must reach the parent, not vanish
        q.put((job, "error", traceback.format_exc()))
    else:
        q.put((job, "done", None))


def _make_handler(progress: Callable[[int], None] | None) -> Callable[[int, str, object], None]:
    def handle(job: int, kind: str, payload: object) -> None:
        if kind == "progress":
            if progress is not None:
                progress(int(payload))  # type: ignore[arg-type]
        elif kind == "bad":
            utt, reason = payload  # type: ignore[misc]
            logger.warning("skipping utterance %s: %s", utt, reason)
        elif kind == "info":
            logger.info("%s", payload)
    return handle


def _run_parallel(jobs: dict[int, list[_Utt]], data_out: Path, cfg: FeatureConfig,
                  allow_pipe: bool, progress: Callable[[int], None] | None,
                  allow_upsample: bool = False) -> None:
    """Run ``jobs`` in one spawned process each; wait for all, then raise if any failed
    (:class:`SampleRateError` as the workers raised it, anything else as RuntimeError)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    handle = _make_handler(progress)
    procs = {job: ctx.Process(target=_worker_main, name=f"asrkit-feats-{job}", daemon=True,
                              args=(job, utts, str(data_out), cfg, allow_pipe, q,
                                    allow_upsample))
             for job, utts in jobs.items()}
    errors: dict[int, str] = {}
    rate_errors: dict[int, str] = {}
    remaining = set(procs)
    try:
        for proc in procs.values():
            proc.start()
        while remaining:
            try:
                job, kind, payload = q.get(timeout=0.5)
            except queue.Empty:
                for job in sorted(remaining):
                    code = procs[job].exitcode
                    if code is not None and code != 0:
                        errors[job] = f"worker process exited with code {code}"
                        remaining.discard(job)
                continue
            if kind == "done":
                remaining.discard(job)
            elif kind == "error":
                errors[job] = str(payload)
                remaining.discard(job)
            elif kind == "rate_error":
                rate_errors[job] = str(payload)
                remaining.discard(job)
            else:
                handle(job, kind, payload)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
            proc.join()
        q.close()
    if rate_errors:
        raise SampleRateError(rate_errors[min(rate_errors)])
    if errors:
        for job, msg in sorted(errors.items()):
            logger.error("feature job %d failed:\n%s", job, msg)
        first = min(errors)
        raise RuntimeError(f"{len(errors)} of {len(jobs)} feature job(s) failed; first, job "
                           f"{first}: {errors[first].strip().splitlines()[-1]}. Rerun to resume "
                           "(completed jobs are kept).")


# ----------------------------------------------------------------------------- rates

_RATE_REMEDY = ("compute the features at the audio's rate with --sample-rate {sr} (sample_rate: "
                "{sr} in the --conf YAML, FeatureConfig(sample_rate={sr})), or upsample on "
                "purpose with --allow-upsample (allow_upsample=True)")


def _fmt_rates(counts: Counter[int] | dict[int, int], unit: str) -> str:
    return ", ".join(f"{r} Hz: {n} {unit}" for r, n in sorted(counts.items()))


def _check_header_rates(data_dir: str | os.PathLike, specs: Sequence[str], target: int,
                        allow_upsample: bool) -> None:
    """Apply the sample-rate policy to the recordings whose header tells their rate.

    Logs the rates found; downsampling (rates above ``target``) is logged; rates below are a
    :class:`SampleRateError` unless ``allow_upsample`` (then a warning). Unreadable files are
    left to the jobs (they become ``bad_utts``); pipes and archive entries are checked by the
    jobs when read.
    """
    files: Counter[int] = Counter()
    example: dict[int, str] = {}
    unknown = 0
    for spec in dict.fromkeys(specs):  # each recording once, in order
        try:
            sr = header_sample_rate(spec)
        except AudioError:
            continue
        if sr is None:
            unknown += 1
            continue
        files[sr] += 1
        example.setdefault(sr, spec)
    logger.info("%s: audio sample rates (file headers): %s%s", data_dir,
                _fmt_rates(files, "files") or "none known",
                f"; {unknown} pipe/archive entries are checked when read" if unknown else "")
    low = {r: n for r, n in files.items() if r < target}
    high = {r: n for r, n in files.items() if r > target}
    if low:
        n_low = sum(low.values())
        if not allow_upsample:
            sr = min(low)
            raise SampleRateError(
                f"{data_dir}: {n_low} of {sum(files.values())} audio files have a sample rate "
                f"below the feature config's {target} Hz ({_fmt_rates(low, 'files')}; e.g. "
                f"{example[sr]} is {sr} Hz); {_RATE_REMEDY.format(sr=sr)}")
        logger.warning("%s: upsampling %d audio files (%s) to %d Hz as allowed "
                       "(--allow-upsample); the features hold no more bandwidth than the "
                       "audio", data_dir, n_low, _fmt_rates(low, "files"), target)
    if high:
        logger.info("%s: downsampling %d audio files (%s) to the feature config's %d Hz",
                    data_dir, sum(high.values()), _fmt_rates(high, "files"), target)


def _write_rates(path: Path, target: int, rates: Counter[int]) -> None:
    info = {"sample_rate": target,
            "audio_sample_rates": {str(r): n for r, n in sorted(rates.items())},
            "upsampled_utterances": sum(n for r, n in rates.items() if r < target),
            "downsampled_utterances": sum(n for r, n in rates.items() if r > target)}
    with atomic_write(path) as f:
        json.dump(info, f, indent=1)
        f.write("\n")


def _read_rates(path: Path) -> dict[int, int]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return {int(r): int(n) for r, n in json.load(f)["audio_sample_rates"].items()}


# ----------------------------------------------------------------------------- stage


def _read_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _write_config(path: Path, cfg: FeatureConfig) -> None:
    with atomic_write(path) as f:
        yaml.safe_dump(asdict(cfg), f, sort_keys=False)


def _utt_sort_key(u: str) -> bytes:
    return u.encode("utf-8")


def _read_report(out_dir: Path) -> FeatureReport:
    feats = read_kaldi_map(out_dir / "feats.scp")
    bad = _read_bad(out_dir / "bad_utts")
    frames = read_kaldi_map(out_dir / "utt2num_frames")
    durs = read_kaldi_map(out_dir / "utt2dur")
    feat_dim = int((out_dir / "feat_dim").read_text(encoding="utf-8").split()[0])
    return FeatureReport(num_done=len(feats), num_failed=len(bad), feat_dim=feat_dim,
                         total_frames=sum(int(v) for v in frames.values()),
                         seconds_audio=sum(float(v) for v in durs.values()), out_dir=out_dir,
                         audio_sample_rates=_read_rates(out_dir / RATES_NAME))


def _clean_stale_jobs(data_out: Path, nj: int) -> None:
    """Remove temp files of killed runs and per-job files of job indices beyond ``nj``."""
    if not data_out.is_dir():
        return
    for f in data_out.iterdir():
        if f.name.startswith(".") and f.name.endswith(".tmp"):
            f.unlink()
            continue
        parts = f.name.split(".")
        idx = [int(x) for x in parts[1:] if x.isdigit()]
        if idx and idx[0] > nj:
            f.unlink()


def compute_features(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     cfg: FeatureConfig, *, nj: int = 1, allow_pipe: bool = False,
                     progress: Callable[[int], None] | None = None,
                     speed_perturb: Sequence[float] | None = None,
                     allow_upsample: bool = False) -> FeatureReport:
    """Compute features for a Kaldi data dir into ark/scp, plus global CMVN stats.

    Like Kaldi's ``steps/make_fbank.sh`` / ``make_mfcc.sh`` then ``compute-cmvn-stats``: the
    C-sorted utterances are split into ``nj`` contiguous chunks, each computed by one job (in
    this process for ``nj=1``, else one spawned single-threaded worker process per job),
    written to ``out_dir/data/feats.JOB.{ark,scp}`` through kaldiio, then merged. The layout
    of ``out_dir`` is described in this module's docstring; it is a valid Kaldi data dir
    holding only the utterances that succeeded.

    Utterances whose audio cannot be read, is empty or shorter than one window, or whose
    features are NaN/Inf are skipped, logged and listed with the reason in
    ``out_dir/bad_utts`` (``utt<TAB>reason``), never silently dropped.

    Sample rates: the features are computed at ``cfg.sample_rate``. Before computing, the
    rate of every recording is read from its header (``soundfile.info``) and logged. Audio
    at a higher rate is downsampled (logged with the counts); audio at a lower rate stops the
    stage with :class:`SampleRateError` (naming the data dir, the rates, an example file and
    the options ``--sample-rate`` / ``--allow-upsample``), since upsampling adds no bandwidth
    and gives features unlike those of native-rate audio, unless ``allow_upsample`` (then a
    warning). Pipe and archive entries are checked the same way when they are read. The
    rates read are written to ``out_dir/sample_rates.json`` (``sample_rate``: the features';
    ``audio_sample_rates``: ``{Hz: utterances}``; up- and downsampled utterance counts).

    With ``speed_perturb``, every utterance is processed once per factor and the output
    holds ``sp{f}-``-prefixed copies (module docstring; Kaldi's
    ``utils/data/perturb_data_dir_speed_3way.sh`` is ``[0.9, 1.0, 1.1]``); the CMVN stats
    cover all copies.

    Resuming: if ``out_dir`` is complete (``.done``) with an equal ``feature_config.yaml``
    and the same speed factors the work is skipped and the report read back. Otherwise jobs whose ``feats.JOB.scp`` is
    complete for the same utterances and config are kept and only the others rerun. A
    changed config recomputes everything. Changed audio under unchanged utterance ids is not
    detected: delete ``out_dir`` to force a recompute.

    Args:
        data_dir: input Kaldi data dir (``wav.scp``, ``text``, ``utt2spk``, optional
            ``segments``, ``utt2dur``).
        out_dir: output directory (created).
        cfg: feature options; written to ``out_dir/feature_config.yaml``.
        nj: number of parallel jobs (processes); capped at the number of utterances.
        allow_pipe: allow ``wav.scp`` entries that are commands (``... |``).
        progress: called with the number of utterances just processed (skipped ones
            included), live from the workers; also called once per job skipped on resume.
        speed_perturb: speed factors, e.g. ``[0.9, 1.0, 1.1]``; 1.0 keeps the original
            utterances, others add ``sp{f}-`` copies; None (or ``[1.0]``) perturbs nothing.
        allow_upsample: compute features of audio below ``cfg.sample_rate`` by upsampling
            it, instead of raising :class:`SampleRateError`.

    Returns:
        :class:`FeatureReport` of the output directory.

    Raises:
        FeatureError: the data dir has no utterances, or every utterance failed (``bad_utts``
            is still written).
        asrkit.data.datadir.DataDirError: the data dir is malformed.
        RuntimeError: a job failed for a reason other than a bad utterance (I/O error,
            crashed worker); completed jobs are kept for the rerun.
        ValueError: ``nj < 1``, or a speed factor that is not a positive number.
        SampleRateError: audio below ``cfg.sample_rate`` without ``allow_upsample``.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(data_dir).resolve():
        raise ValueError(f"out_dir must differ from data_dir ({data_dir})")
    data_out = out_dir / JOB_DIR
    want = asdict(cfg)
    factors = _speed_factors(speed_perturb)
    if is_done(out_dir):
        if _read_config(out_dir / CONFIG_NAME) == want and \
                _read_speed(out_dir / SPEED_NAME) == factors:
            logger.info("%s: features already complete; skipping", out_dir)
            return _read_report(out_dir)
        logger.info("%s: complete but with a different feature config or speed factors; "
                    "recomputing", out_dir)
        (out_dir / ".done").unlink()

    data = DataDir.load(data_dir)
    if factors is None:
        sources = {u: (u, 1.0) for u in data.utt_ids}
        out_data = data
    else:
        out_data, sources = _speed_data_dir(data, factors)
        logger.info("speed perturbation %s: %d utterances -> %d", factors, len(data.utt2spk),
                    len(sources))
    utts: list[_Utt] = []
    for new_utt in out_data.utt_ids:
        utt, factor = sources[new_utt]
        if data.segments is not None:
            if utt in data.segments:
                rec, start, end = data.segments[utt]
                utts.append((new_utt, data.wav_scp.get(rec), start, end, factor))
            else:
                utts.append((new_utt, None, 0.0, None, factor))
        else:
            utts.append((new_utt, data.wav_scp.get(utt), 0.0, None, factor))
    if not utts:
        raise FeatureError(f"{data_dir}: data dir has no utterances")
    _check_header_rates(data_dir, [u[1] for u in utts if u[1] is not None], cfg.sample_rate,
                        allow_upsample)

    job_cfg_path = data_out / CONFIG_NAME
    if _read_config(job_cfg_path) not in (None, want) and data_out.is_dir():
        logger.info("%s: discarding job outputs computed with a different config", data_out)
        for f in data_out.iterdir():
            f.unlink()
    _write_config(job_cfg_path, cfg)

    nj = min(nj, len(utts))
    _clean_stale_jobs(data_out, nj)
    chunks = split_evenly(utts, nj)
    pending: dict[int, list[_Utt]] = {}
    for job, chunk in enumerate(chunks, start=1):
        if _job_complete(data_out, job, [u[0] for u in chunk]):
            logger.info("feature job %d/%d already complete; skipping", job, nj)
            if progress is not None:
                progress(len(chunk))
        else:
            pending[job] = chunk
    logger.info("computing %s features (dim %d) for %d utterances of %s in %d job(s) "
                "(%d to run)", cfg.type, cfg.feat_dim, len(utts), data_dir, nj, len(pending))

    if nj == 1 and pending:
        handle = _make_handler(progress)
        _run_job(1, pending[1], data_out, cfg, allow_pipe,
                 lambda kind, payload: handle(1, kind, payload), allow_upsample)
    elif pending:
        _run_parallel(pending, data_out, cfg, allow_pipe, progress, allow_upsample)

    # Merge the jobs.
    feats_scp: dict[str, str] = {}
    num_frames: dict[str, str] = {}
    durations: dict[str, float] = {}
    bad: dict[str, str] = {}
    rates: Counter[int] = Counter()
    stats: np.ndarray | None = None
    for job in range(1, nj + 1):
        p = _job_paths(data_out, job)
        job_scp = read_kaldi_map(p["scp"]) if p["scp"].stat().st_size else {}
        feats_scp.update(job_scp)
        bad.update(_read_bad(p["bad"]))
        if p["rates"].stat().st_size:
            rates.update({int(r): int(n) for r, n in read_kaldi_map(p["rates"]).items()})
        if job_scp:
            num_frames.update(read_kaldi_map(p["frames"]))
            durations.update({u: float(d) for u, d in read_kaldi_map(p["dur"]).items()})
            s = read_cmvn_stats(p["cmvn"])
            stats = s if stats is None else stats + s
    _write_bad(out_dir / "bad_utts", bad)
    if not feats_scp or stats is None:
        raise FeatureError(f"{data_dir}: all {len(utts)} utterances failed; reasons in "
                           f"{out_dir / 'bad_utts'}")
    if bad:
        logger.warning("%d of %d utterances skipped; see %s", len(bad), len(utts),
                       out_dir / "bad_utts")
    ok = sorted(feats_scp, key=_utt_sort_key)
    write_scp(out_dir / "feats.scp", {u: feats_scp[u] for u in ok})
    write_kaldi_map(out_dir / "utt2num_frames", num_frames)
    with atomic_write(out_dir / "feat_dim") as f:
        f.write(f"{stats.shape[1] - 1}\n")
    write_cmvn_stats(out_dir / "cmvn.ark", stats)
    sub = out_data.subset(ok)
    sub.utt2dur = {u: durations[u] for u in ok}
    sub.write(out_dir)
    _write_config(out_dir / CONFIG_NAME, cfg)
    _write_speed(out_dir / SPEED_NAME, factors)
    _write_rates(out_dir / RATES_NAME, cfg.sample_rate, rates)
    mark_done(out_dir)
    report = _read_report(out_dir)
    logger.info("features done: %d utterances (%d skipped), %d frames, %.1f s of audio, "
                "dim %d, %d Hz (audio: %s) -> %s", report.num_done, report.num_failed,
                report.total_frames, report.seconds_audio, report.feat_dim, cfg.sample_rate,
                _fmt_rates(rates, "utterances"), out_dir)
    return report
