"""Long recordings in bounded memory: block-wise reading, voice activity detection (VAD) and
segments of capped length, for ``asrkit transcribe`` (:mod:`asrkit.decode.transcribe`).

A recording of any length is cut into speech segments without ever holding more than one
block (``block_seconds``) or one segment (``max_segment`` seconds) of audio:

1. :class:`AudioFile` (a file, read with ``soundfile.SoundFile.read(frames=…)``) or
   :class:`AudioArray` (samples already in memory) gives mono float32 samples of any range:
   multi-channel audio is averaged over its channels, or one ``channel`` is taken.
2. :func:`speech_regions` runs Silero VAD (the ``silero-vad`` package, whose TorchScript
   model ships inside the package: nothing is downloaded) over the blocks, resampled to
   16 kHz (8 kHz audio stays at 8 kHz), through its streaming ``VADIterator``: 32 ms windows
   (16 ms at 8 kHz), speech where the probability reaches ``threshold``, ended after
   ``min_silence`` seconds below ``threshold - 0.15``, each region padded by ``speech_pad``
   seconds; regions shorter than ``min_speech`` are dropped, overlapping ones merged. With
   ``vad="none"`` the whole recording is one region.
3. :func:`cap_regions` splits every region longer than ``max_segment`` at the lowest-energy
   point (10 ms frame energies smoothed over 100 ms) of the second half of each
   ``max_segment`` window, so no segment exceeds ``max_segment`` and cuts fall in pauses when
   there are any; it keeps at most one window of energies.

:func:`segment_audio` runs 2 and 3; the segments come back as a list of
:class:`AudioSegment` (start and end in seconds): a few hundred per hour, the only thing that
grows with the recording's length.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from asrkit.data.audio import AudioError, _open

__all__ = ["VAD_METHODS", "AudioArray", "AudioFile", "AudioSegment", "cap_regions",
           "load_silero_vad", "open_audio", "segment_audio", "speech_regions"]

logger = logging.getLogger(__name__)

VAD_METHODS = ("silero", "none")
"""``vad`` values: Silero VAD, or none (the whole recording is one region, cut only to cap
segment length)."""

FRAME_SECONDS = 0.01
"""Energy frame length for choosing cut points (10 ms)."""
SMOOTH_FRAMES = 10
"""Energies are averaged over this many frames (100 ms) before taking the minimum."""


@dataclass(frozen=True)
class AudioSegment:
    """A stretch of a recording, ``start`` to ``end`` in seconds (``end > start``)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        """``end - start`` in seconds."""
        return self.end - self.start


class _Audio(abc.ABC):
    """Mono float32 samples of a recording, read by range (the interface of
    :class:`AudioFile` and :class:`AudioArray`)."""

    name: str
    sample_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    @abc.abstractmethod
    def _read(self, start: int, n: int) -> np.ndarray:
        """``(n, channels)`` float32 samples from sample ``start`` (each source reads its own)."""

    def _mix(self, data: np.ndarray, channel: int | None) -> np.ndarray:
        if data.shape[1] == 1:
            return data[:, 0]
        if channel is None:
            return data.mean(axis=1, dtype=np.float32)
        return data[:, channel]

    def read(self, start: int = 0, n: int | None = None) -> np.ndarray:
        """Samples ``start`` to ``start + n`` (clipped to the recording) as ``(n,)`` float32
        in [-1, 1] at :attr:`sample_rate` Hz, mono (see the class docstring)."""
        start = max(0, min(int(start), self.num_samples))
        stop = self.num_samples if n is None else min(self.num_samples, start + int(n))
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        return self._read(start, stop - start)

    def blocks(self, block_samples: int, start: int = 0, stop: int | None = None
               ) -> Iterator[np.ndarray]:
        """Consecutive blocks of at most ``block_samples`` samples from ``start`` to ``stop``
        (default the end), each as :meth:`read` returns it."""
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        pos = max(0, start)
        while pos < stop:
            n = min(block_samples, stop - pos)
            yield self.read(pos, n)
            pos += n

    def close(self) -> None:
        """Release the file (nothing for arrays)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_channel(name: str, channels: int, channel: int | None) -> None:
    if channel is not None and not 0 <= channel < channels:
        raise AudioError(f"{name}: has {channels} channel(s); channel {channel} does not exist "
                         "(channels count from 0)")


class AudioFile(_Audio):
    """A file that libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, NIST SPHERE, …; ``.raw``
    as :mod:`asrkit.data.audio` reads it), opened once and read by range with
    ``SoundFile.seek`` and ``SoundFile.read(frames=…)``, never whole unless asked.

    Args:
        path: the file.
        channel: None averages all channels (documented choice: a stereo recording of one
            speaker loses nothing, and two microphones add up to a better signal); an
            integer takes that channel, counted from 0.

    Raises:
        AudioError: the file is missing, unreadable, empty, or has no such channel; the
            message names the file.
    """

    def __init__(self, path: str | os.PathLike, channel: int | None = None) -> None:
        self.name = str(path)
        if not Path(path).is_file():
            raise AudioError(f"{self.name}: audio file not found")
        try:
            self._f = _open(str(path))
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
            raise AudioError(f"{self.name}: cannot read audio: {e}") from None
        self.sample_rate = int(self._f.samplerate)
        self.num_samples = int(self._f.frames)
        self.channels = int(self._f.channels)
        self.channel = channel
        try:
            _check_channel(self.name, self.channels, channel)
            if self.num_samples <= 0:
                raise AudioError(f"{self.name}: audio is empty (0 samples)")
        except AudioError:
            self._f.close()
            raise

    def _read(self, start: int, n: int) -> np.ndarray:
        try:
            self._f.seek(start)
            data = self._f.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
            raise AudioError(f"{self.name}: cannot read samples {start}..{start + n}: "
                             f"{e}") from None
        if data.shape[0] == 0:
            raise AudioError(f"{self.name}: no samples at {start}..{start + n} (truncated "
                             "file?)")
        return np.ascontiguousarray(self._mix(data, self.channel), dtype=np.float32)

    def close(self) -> None:
        """Close the file."""
        self._f.close()


class AudioArray(_Audio):
    """Samples already in memory, with the same interface as :class:`AudioFile`.

    Args:
        samples: ``(N,)`` mono or ``(N, C)`` multi-channel samples (soundfile's layout),
            numpy or torch; integers are scaled from their type's range to [-1, 1].
        sample_rate: Hz.
        channel: as for :class:`AudioFile`.
        name: shown in messages.

    Raises:
        AudioError: not 1-D or 2-D, empty, a bad ``sample_rate`` or ``channel``.
    """

    def __init__(self, samples, sample_rate: int, channel: int | None = None,
                 name: str = "<array>") -> None:
        self.name = name
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise AudioError(f"{name}: expected samples of shape (N,) or (N, channels), got "
                             f"{x.shape}")
        if not sample_rate or sample_rate <= 0:
            raise AudioError(f"{name}: sample_rate must be a positive number of Hz, got "
                             f"{sample_rate!r}")
        self._x = x
        self.sample_rate = int(sample_rate)
        self.num_samples, self.channels = x.shape
        self.channel = channel
        _check_channel(name, self.channels, channel)
        if self.num_samples == 0:
            raise AudioError(f"{name}: audio is empty (0 samples)")

    def _read(self, start: int, n: int) -> np.ndarray:
        return np.ascontiguousarray(self._mix(self._x[start:start + n], self.channel),
                                    dtype=np.float32)


def load_silero_vad():
    """The Silero VAD TorchScript model shipped in the ``silero-vad`` package (no download).

    Importing ``silero_vad`` sets torch's global thread count to 1; the count is restored.

    Raises:
        ImportError: ``silero-vad`` is not installed (``pip install silero-vad``).
    """
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as e:
        raise ImportError("VAD needs the silero-vad package (pip install 'silero-vad>=6.2'); "
                          "or use vad='none'") from e
    finally:
        torch.set_num_threads(threads)
    import warnings

    with warnings.catch_warnings():  # importlib.resources.path / torch.jit.load deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad.load_silero_vad(onnx=False)


def _resample(x: np.ndarray, orig: int, new: int) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t if orig == new else AF.resample(t, orig, new)


def speech_regions(audio: _Audio, *, model=None, threshold: float = 0.5,
                   min_silence: float = 0.5, speech_pad: float = 0.2,
                   min_speech: float = 0.25, block_seconds: float = 30.0
                   ) -> Iterator[AudioSegment]:
    """Speech regions of a recording by Silero VAD (Silero Team, 2024, "Silero VAD"), read
    block by block (module docstring).

    Args:
        audio: :class:`AudioFile` or :class:`AudioArray`.
        model: a model from :func:`load_silero_vad` (loaded when None).
        threshold: speech probability threshold (Silero's default 0.5).
        min_silence: seconds of non-speech that end a region.
        speech_pad: seconds added before and after each region.
        min_speech: regions shorter than this (seconds, before padding) are dropped.
        block_seconds: seconds of audio read at a time.

    Yields:
        :class:`AudioSegment` regions in time order, not overlapping, within the recording.
        While the generator runs, torch is single-threaded (the VAD feeds one 32 ms window
        at a time, where threads only contend); the thread count is restored at its end.

    Raises:
        AudioError: the file cannot be read.
        ImportError: ``silero-vad`` is not installed.
    """
    from silero_vad import VADIterator

    model = load_silero_vad() if model is None else model
    vad_sr = 8000 if audio.sample_rate == 8000 else 16000
    win = 256 if vad_sr == 8000 else 512
    it = VADIterator(model, threshold=threshold, sampling_rate=vad_sr,
                     min_silence_duration_ms=round(min_silence * 1000),
                     speech_pad_ms=round(speech_pad * 1000))
    block = max(1, round(block_seconds * audio.sample_rate))
    pending: list[float] | None = None  # the last region, held back to merge overlaps
    duration = audio.duration

    def close(s: float, e: float) -> Iterator[AudioSegment]:
        nonlocal pending
        s, e = max(0.0, s), min(duration, e)
        if e - s - 2 * speech_pad < min_speech:
            return
        if pending is not None and s <= pending[1]:
            pending[1] = max(pending[1], e)
            return
        if pending is not None:
            yield AudioSegment(pending[0], pending[1])
        pending = [s, e]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 32 ms window at a time: more threads only contend
    try:
        yield from _run_vad(audio, it, block, vad_sr, win, close)
    finally:
        torch.set_num_threads(threads)
    if pending is not None:
        yield AudioSegment(pending[0], pending[1])


def _run_vad(audio: _Audio, it, block: int, vad_sr: int, win: int, close
             ) -> Iterator[AudioSegment]:
    """Feed ``audio`` to the ``VADIterator`` ``it`` window by window; ``close(start, end)``
    turns each finished region into segments."""
    start: float | None = None
    carry = torch.zeros(0)
    with torch.inference_mode():
        for x in audio.blocks(block):
            y = torch.cat([carry, _resample(x, audio.sample_rate, vad_sr)])
            full = y.numel() // win * win
            for i in range(0, full, win):
                ev = it(y[i:i + win])
                if ev is None:
                    continue
                if "start" in ev:
                    start = ev["start"] / vad_sr
                if "end" in ev and start is not None:
                    yield from close(start, ev["end"] / vad_sr)
                    start = None
            carry = y[full:]
    if start is not None:
        yield from close(start, audio.duration)


def _frame_energies(x: np.ndarray, frame: int) -> np.ndarray:
    """Mean-square energy of consecutive ``frame``-sample frames (the tail dropped)."""
    n = x.size // frame
    return np.square(x[:n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1)


def cap_regions(audio: _Audio, regions, max_segment: float, *,
                block_seconds: float = 30.0) -> Iterator[AudioSegment]:
    """Split regions longer than ``max_segment`` seconds at their quietest points.

    Greedy, streaming: while the rest of a region is longer than ``max_segment`` (plus one
    second, so that no tiny piece is left), the cut goes at the frame of lowest smoothed
    energy (:data:`FRAME_SECONDS` frames averaged over :data:`SMOOTH_FRAMES`) between
    ``max_segment / 2`` and ``max_segment`` after the current start. Only the energies of one
    ``max_segment`` window plus one block are held.

    Args:
        audio: the recording the regions are in.
        regions: :class:`AudioSegment` in time order.
        max_segment: longest segment in seconds (> 1).
        block_seconds: seconds read at a time.

    Yields:
        Segments no longer than ``max_segment`` that tile the regions.

    Raises:
        ValueError: ``max_segment <= 1``.
        AudioError: the file cannot be read.
    """
    if not max_segment > 1.0:
        raise ValueError(f"max_segment must be > 1 second, got {max_segment}")
    sr = audio.sample_rate
    frame = max(1, round(FRAME_SECONDS * sr))
    fsec = frame / sr
    hi = int(max_segment / fsec)
    lo = hi // 2

    def cut(energies: np.ndarray, limit: int) -> int:
        box = np.ones(SMOOTH_FRAMES)
        e = energies[:limit]  # moving average, edges averaged over the frames there are
        smooth = np.convolve(e, box, mode="same") / np.convolve(np.ones_like(e), box, "same")
        return lo + int(np.argmin(smooth[lo:limit]))

    for reg in regions:
        if reg.duration <= max_segment:
            yield reg
            continue
        first, last = round(reg.start * sr), round(reg.end * sr)
        seg_start = first  # sample
        energies = np.zeros(0)
        tail = np.zeros(0, dtype=np.float32)

        block = max(frame, round(block_seconds * sr) // frame * frame)
        for x in audio.blocks(block, first, last):
            x = np.concatenate([tail, x])
            e = _frame_energies(x, frame)
            tail = x[e.size * frame:]
            energies = np.concatenate([energies, e])
            while energies.size * fsec > max_segment + 1.0:
                k = cut(energies, hi)
                yield AudioSegment(seg_start / sr, (seg_start + k * frame) / sr)
                seg_start += k * frame
                energies = energies[k:]
        end_s = last / sr
        while end_s - seg_start / sr > max_segment:  # the last second or so of the region
            limit = min(hi, max(lo + 1, energies.size - int(0.5 / fsec)))
            k = cut(energies, limit)
            yield AudioSegment(seg_start / sr, (seg_start + k * frame) / sr)
            seg_start += k * frame
            energies = energies[k:]
        yield AudioSegment(seg_start / sr, end_s)


def with_context(regions, duration: float, context: float) -> Iterator[AudioSegment]:
    """Widen time-ordered speech regions with up to ``context`` seconds of the audio around
    them, never past the middle of the gap to a neighbour.

    A model trained on utterances that start and end with some silence (AN4, LibriSpeech)
    decodes a tightly trimmed VAD region worse than the same words with their natural
    surroundings (measured in RESULTS.md, "Long recordings"); splitting at the middle of each
    pause keeps that context and still never decodes a stretch of audio twice.

    Args:
        regions: iterable of :class:`AudioSegment` in time order, not overlapping.
        duration: the recording's length in seconds.
        context: seconds (>= 0) added on each side at most.

    Yields:
        :class:`AudioSegment` in the same order, not overlapping, within ``[0, duration]``.
    """
    prev: AudioSegment | None = None
    for seg in regions:
        if prev is None:
            start = max(0.0, seg.start - context)
        else:
            mid = (prev.end + seg.start) / 2
            yield AudioSegment(prev.start, min(prev.end + context, mid))
            start = max(seg.start - context, mid)
        prev = AudioSegment(start, seg.end)
    if prev is not None:
        yield AudioSegment(prev.start, min(duration, prev.end + context))


def segment_audio(audio: _Audio, *, vad: str = "silero", max_segment: float = 30.0,
                  model=None, block_seconds: float = 30.0, context: float = 0.5,
                  **vad_options) -> list[AudioSegment]:
    """Speech segments of a recording, none longer than ``max_segment`` (module docstring).

    Args:
        audio: :class:`AudioFile` or :class:`AudioArray`.
        vad: ``"silero"`` (:func:`speech_regions`) or ``"none"`` (the whole recording).
        max_segment: longest segment in seconds.
        model: a Silero model to reuse (:func:`load_silero_vad`).
        block_seconds: seconds of audio read at a time (memory: one block plus one segment).
        context: seconds of audio kept around each VAD region, up to the middle of the
            pause to the next one (:func:`with_context`).
        **vad_options: ``threshold``, ``min_silence``, ``speech_pad``, ``min_speech`` of
            :func:`speech_regions`.

    Returns:
        Segments in time order (empty when the VAD finds no speech).

    Raises:
        ValueError: unknown ``vad`` or ``max_segment <= 1``.
        AudioError: the file cannot be read.
    """
    if vad not in VAD_METHODS:
        raise ValueError(f"unknown vad {vad!r}; choose from {VAD_METHODS}")
    if vad == "none":
        regions: Iterator[AudioSegment] = iter([AudioSegment(0.0, audio.duration)])
    else:
        regions = with_context(speech_regions(audio, model=model, block_seconds=block_seconds,
                                              **vad_options), audio.duration, context)
    segs = list(cap_regions(audio, regions, max_segment, block_seconds=block_seconds))
    logger.debug("%s: %d segment(s), %.1f of %.1f s", audio.name, len(segs),
                 sum(s.duration for s in segs), audio.duration)
    return [s for s in segs if s.end - s.start > 0]


@contextlib.contextmanager
def open_audio(source, sample_rate: int | None = None, channel: int | None = None,
               name: str | None = None) -> Iterator[_Audio]:
    """:class:`AudioFile` for a path, :class:`AudioArray` for samples (``sample_rate``
    needed), closed on exit.

    Raises:
        AudioError: as the classes; also a path with a ``sample_rate`` other than the
            file's, or samples without one.
    """
    if isinstance(source, (str, os.PathLike)):
        audio: _Audio = AudioFile(source, channel)
        if sample_rate is not None and sample_rate != audio.sample_rate:
            audio.close()
            raise AudioError(f"{source}: the file is {audio.sample_rate} Hz; sample_rate="
                             f"{sample_rate} applies to arrays only")
    else:
        if sample_rate is None:
            raise AudioError(f"{name or '<array>'}: samples need sample_rate=")
        audio = AudioArray(source, sample_rate, channel, name or "<array>")
    try:
        yield audio
    finally:
        audio.close()
