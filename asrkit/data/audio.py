"""Audio loading for Kaldi ``wav.scp`` entries.

A ``wav.scp`` value (an *rxfilename* in Kaldi's terms) is one of:

* a path to a file libsndfile reads (WAV, FLAC, NIST SPHERE with uncompressed PCM, ...);
* a path ending in ``.raw``: headerless PCM as in CMU's original AN4 distribution,
  read with :data:`RAW_SAMPLE_RATE`, :data:`RAW_SUBTYPE`, :data:`RAW_ENDIAN`,
  :data:`RAW_CHANNELS`;
* a command ending in ``|`` whose standard output is a WAV file, e.g.
  ``sox x.wav -t wav - |`` or ``sph2pipe -f wav x.sph | sox -t wav - -t wav -r 8000 - |``.
  Commands run only with ``allow_pipe=True`` and never through a shell: the line is split
  with :mod:`shlex`, unquoted ``|`` separates pipeline stages that are connected with
  :class:`subprocess.Popen`, and other shell syntax (redirections, ``;``, ``&``) is refused.
* ``<file>.ark:<byte offset>``: a WAV stored in a Kaldi archive (``wav-copy``), read with
  :mod:`kaldiio`.

Samples come back as mono float32 in [-1, 1] (integer PCM scaled by libsndfile; float
files are passed through unclipped) with the sample rate in Hz. Errors raise
:class:`AudioError` naming the ``wav.scp`` value.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from signal import SIGPIPE

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

__all__ = [
    "RAW_CHANNELS",
    "RAW_ENDIAN",
    "RAW_EXTENSIONS",
    "RAW_SAMPLE_RATE",
    "RAW_SUBTYPE",
    "AudioError",
    "audio_duration",
    "check_sample_rate",
    "header_sample_rate",
    "is_pipe",
    "load_audio",
]

logger = logging.getLogger(__name__)

RAW_EXTENSIONS = (".raw",)
"""File extensions read as headerless PCM (CMU AN4 ``an4_raw.bigendian`` distribution)."""
RAW_SAMPLE_RATE = 16000
"""Sample rate in Hz assumed for headerless ``.raw`` files."""
RAW_SUBTYPE = "PCM_16"
"""libsndfile subtype of ``.raw`` files: 16-bit signed integers."""
RAW_ENDIAN = "BIG"
"""Byte order of ``.raw`` files (CMU distributes AN4 big-endian by default)."""
RAW_CHANNELS = 1
"""Channel count of ``.raw`` files."""

MAX_SEGMENT_OVERSHOOT_S = 0.5
"""Seconds a segment end may exceed the audio before it is an error (Kaldi
``extract-segments --max-overshoot`` default); smaller overshoots are clamped."""

_SHELL_PUNCT = ";&<>()"
_ARK_RE = re.compile(r"^(?P<ark>.+\.ark):(?P<offset>\d+)$")
_multichannel_warned = False


class AudioError(RuntimeError):
    """Audio could not be read or is unusable; the message names the ``wav.scp`` value."""


def is_pipe(spec: str) -> bool:
    """Return True when ``spec`` is a Kaldi pipe command (ends with ``|``)."""
    return spec.rstrip().endswith("|")


def _pipeline(spec: str) -> list[list[str]]:
    """Split ``"cmd1 args | cmd2 args |"`` into argument lists, refusing shell syntax."""
    body = spec.rstrip()[:-1]
    lex = shlex.shlex(body, posix=True, punctuation_chars="|" + _SHELL_PUNCT)
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError as e:  # unbalanced quotes
        raise AudioError(f"{spec!r}: cannot parse pipe command: {e}") from None
    stages: list[list[str]] = [[]]
    for tok in tokens:
        if tok and set(tok) <= set("|" + _SHELL_PUNCT):
            if tok != "|":
                raise AudioError(f"{spec!r}: shell syntax {tok!r} is not supported (commands run "
                                 "without a shell; only '|' between commands is)")
            stages.append([])
        else:
            stages[-1].append(tok)
    if any(not st for st in stages):
        raise AudioError(f"{spec!r}: empty command in pipe")
    return stages


def _run_pipe(spec: str) -> bytes:
    """Run the pipeline of ``spec`` (no shell) and return the last stage's stdout."""
    stages = _pipeline(spec)
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
        try:
            prev_out = subprocess.DEVNULL
            for args, err in zip(stages, errs):
                p = subprocess.Popen(args, stdin=prev_out, stdout=subprocess.PIPE, stderr=err)
                if procs:
                    procs[-1].stdout.close()  # the producer gets SIGPIPE if this one exits
                procs.append(p)
                prev_out = p.stdout
            out, _ = procs[-1].communicate()
            for p in procs:
                p.wait()
        except FileNotFoundError as e:
            raise AudioError(f"{spec!r}: command not found: {e.filename}") from None
        except OSError as e:
            raise AudioError(f"{spec!r}: cannot run command: {e}") from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for i, (args, p, err) in enumerate(zip(stages, procs, errs)):
            # like a shell pipeline, an earlier stage stopped by SIGPIPE is not an error
            if p.returncode != 0 and not (i < len(procs) - 1 and p.returncode == -SIGPIPE):
                err.seek(0)
                tail = err.read().decode("utf-8", "replace").strip()[-500:]
                raise AudioError(f"{spec!r}: command {shlex.join(args)!r} exited with status "
                                 f"{p.returncode}" + (f": {tail}" if tail else ""))
    return out


def _refuse_pipe(spec: str) -> AudioError:
    return AudioError(f"{spec!r} is a pipe command; running commands from wav.scp is disabled. "
                      "Pass --allow-pipe (allow_pipe=True) if you trust this data dir.")


def _is_raw(path: str) -> bool:
    return path.lower().endswith(RAW_EXTENSIONS)


def _open(path: str) -> sf.SoundFile:
    if _is_raw(path):
        return sf.SoundFile(path, samplerate=RAW_SAMPLE_RATE, channels=RAW_CHANNELS,
                            subtype=RAW_SUBTYPE, endian=RAW_ENDIAN, format="RAW")
    return sf.SoundFile(path)


def _read_file(spec: str, path: str, start: float, end: float | None
               ) -> tuple[np.ndarray, int]:
    """Read frames [start, end) seconds of a file; returns (frames, channels) float32 and sr."""
    if not Path(path).is_file():
        raise AudioError(f"{spec!r}: audio file not found")
    try:
        with _open(path) as f:
            sr = f.samplerate
            first, last = _frame_range(spec, sr, f.frames, start, end)
            f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        hint = ""
        if path.lower().endswith(".sph"):
            hint = " (compressed SPHERE? use a pipe such as 'sph2pipe -f wav x.sph |')"
        raise AudioError(f"{spec!r}: cannot read audio: {e}{hint}") from None
    return data, sr


def _frame_range(spec: str, sr: int, num_frames: int, start: float, end: float | None
                 ) -> tuple[int, int]:
    """Convert [start, end) seconds to frame indices like Kaldi ``extract-segments``."""
    if start < 0 or (end is not None and end <= start):
        raise AudioError(f"{spec!r}: bad segment start={start} end={end}; expected "
                         "0 <= start < end (seconds)")
    if num_frames <= 0:
        raise AudioError(f"{spec!r}: audio is empty (0 samples)")
    first = round(start * sr)
    if end is None:
        last = num_frames
    else:
        last = round(end * sr)
        if last > num_frames:
            if last - num_frames > MAX_SEGMENT_OVERSHOOT_S * sr:
                raise AudioError(f"{spec!r}: segment end {end:.3f} s is past the end of the "
                                 f"audio ({num_frames / sr:.3f} s)")
            last = num_frames
    if first >= num_frames:
        raise AudioError(f"{spec!r}: segment start {start:.3f} s is past the end of the audio "
                         f"({num_frames / sr:.3f} s)")
    return first, last


def _read_bytes(spec: str, data: bytes) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioError(f"{spec!r}: command produced no output")
    try:
        arr, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{spec!r}: command output is not readable audio (expected WAV on "
                         f"stdout): {e}") from None
    return arr, sr


def _read_ark(spec: str, ark: str, offset: int) -> tuple[np.ndarray, int]:
    import kaldiio

    try:
        obj = kaldiio.load_mat(f"{ark}:{offset}")
    except (OSError, ValueError, EOFError, KeyError, TypeError, AssertionError) as e:
        # kaldiio raises a variety of types for corrupt or non-WAV archive entries
        raise AudioError(f"{spec!r}: cannot read Kaldi archive entry: {e}") from None
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise AudioError(f"{spec!r}: archive entry is a matrix, not a WAV (feats, not audio?)")
    sr, arr = obj
    arr = np.asarray(arr)
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    return arr, int(sr)


def _load_array(spec: str, *, allow_pipe: bool, start: float, end: float | None
                ) -> tuple[np.ndarray, int]:
    if not isinstance(spec, str) or not spec.strip():
        raise AudioError(f"{spec!r}: empty wav.scp entry")
    spec = spec.strip()
    if is_pipe(spec):
        if not allow_pipe:
            raise _refuse_pipe(spec)
        arr, sr = _read_bytes(spec, _run_pipe(spec))
    else:
        m = _ARK_RE.match(spec)
        if m and not Path(spec).exists():
            arr, sr = _read_ark(spec, m["ark"], int(m["offset"]))
        else:
            return _read_file(spec, spec, start, end)
    first, last = _frame_range(spec, sr, arr.shape[0], start, end)
    return arr[first:last], sr


def load_audio(spec: str, *, allow_pipe: bool = False, target_sr: int | None = None,
               start: float = 0.0, end: float | None = None) -> tuple[torch.Tensor, int]:
    """Load one ``wav.scp`` entry as a mono float32 waveform.

    Args:
        spec: the ``wav.scp`` value: a file path (WAV/FLAC/SPHERE/anything libsndfile reads;
            ``.raw`` = headerless PCM per the ``RAW_*`` constants), ``<file>.ark:<offset>``,
            or a pipe command ending in ``|`` that writes WAV to stdout.
        allow_pipe: run pipe commands (without a shell); when False they raise.
        target_sr: resample to this rate in Hz (``torchaudio.functional.resample``) when the
            file's rate differs; None keeps the native rate.
        start: segment start in seconds (Kaldi ``segments``), default the beginning.
        end: segment end in seconds, None for the end of the audio. An end up to
            :data:`MAX_SEGMENT_OVERSHOOT_S` past the audio is clamped (Kaldi's tolerance).

    Returns:
        ``(waveform, sample_rate)``: a float32 tensor of shape ``(num_samples,)`` in
        [-1, 1] and the rate in Hz (``target_sr`` when given). Multi-channel audio is
        reduced to channel 0 (logged once per process).

    Raises:
        AudioError: missing, unreadable or corrupt audio; a pipe without ``allow_pipe`` (the
            message says to pass ``--allow-pipe``); a failing command; a bad segment; or
            zero samples. The message names ``spec``.
    """
    global _multichannel_warned
    arr, sr = _load_array(spec, allow_pipe=allow_pipe, start=start, end=end)
    if arr.shape[1] > 1 and not _multichannel_warned:
        logger.warning("%r has %d channels; using channel 0 (further multi-channel files are "
                       "not reported)", spec, arr.shape[1])
        _multichannel_warned = True
    wav = torch.from_numpy(np.ascontiguousarray(arr[:, 0], dtype=np.float32))
    if wav.numel() == 0:
        raise AudioError(f"{spec!r}: audio is empty (0 samples)")
    if target_sr is not None and target_sr != sr:
        if target_sr <= 0:
            raise AudioError(f"{spec!r}: target sample rate must be positive, got {target_sr}")
        wav = AF.resample(wav, orig_freq=sr, new_freq=target_sr)
        sr = target_sr
    return wav, sr


def _file_info(spec: str, path: str) -> tuple[int, int]:
    """``(sample_rate, num_frames)`` of a file from its header, without decoding."""
    if not Path(path).is_file():
        raise AudioError(f"{spec!r}: audio file not found")
    try:
        if _is_raw(path):
            with _open(path) as f:
                return f.samplerate, f.frames
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AudioError(f"{spec!r}: cannot read audio: {e}") from None
    return info.samplerate, info.frames


def _info(spec: str, *, allow_pipe: bool) -> tuple[int, int]:
    spec_s = spec.strip() if isinstance(spec, str) else spec
    if isinstance(spec_s, str) and spec_s and not is_pipe(spec_s) and not (
            _ARK_RE.match(spec_s) and not Path(spec_s).exists()):
        sr, frames = _file_info(spec, spec_s)
        if frames > 0:
            return sr, frames
        if frames == 0:
            raise AudioError(f"{spec!r}: audio is empty (0 samples)")
    arr, sr = _load_array(spec, allow_pipe=allow_pipe, start=0.0, end=None)
    if arr.shape[0] == 0:
        raise AudioError(f"{spec!r}: audio is empty (0 samples)")
    return sr, arr.shape[0]


def audio_duration(spec: str, *, allow_pipe: bool = False) -> float:
    """Duration in seconds of a ``wav.scp`` entry.

    Files are measured from their header (``soundfile.info``; ``.raw`` from the file size);
    pipes, archive entries and files whose header lacks a length are decoded.

    Args:
        spec: the ``wav.scp`` value (see :func:`load_audio`).
        allow_pipe: run pipe commands.

    Returns:
        Duration in seconds (``frames / sample_rate``).

    Raises:
        AudioError: as :func:`load_audio`, including for empty audio.
    """
    sr, frames = _info(spec, allow_pipe=allow_pipe)
    return frames / sr


def check_sample_rate(spec: str, expected_sr: int, *, allow_pipe: bool = False) -> int:
    """Check that a ``wav.scp`` entry has the expected sample rate.

    Args:
        spec: the ``wav.scp`` value (see :func:`load_audio`).
        expected_sr: the rate in Hz the caller requires (e.g. the feature config's).
        allow_pipe: run pipe commands.

    Returns:
        The sample rate in Hz (equal to ``expected_sr``).

    Raises:
        AudioError: the rate differs (the message names ``spec``, both rates and the
            ``target_sr`` remedy), or the audio cannot be read.
    """
    sr, _ = _info(spec, allow_pipe=allow_pipe)
    if sr != expected_sr:
        raise AudioError(f"{spec!r}: sample rate is {sr} Hz, expected {expected_sr} Hz "
                         "(resample with load_audio(..., target_sr=...) or convert the corpus)")
    return sr


def header_sample_rate(spec: str) -> int | None:
    """The sample rate of a ``wav.scp`` entry if it can be known without decoding audio.

    A file is asked for its header (``soundfile.info``; ``.raw`` files are
    :data:`RAW_SAMPLE_RATE`); pipe commands and ``<file>.ark:<offset>`` archive entries are
    not run or read (None: their rate is known only once the audio is read).

    Args:
        spec: the ``wav.scp`` value (see :func:`load_audio`).

    Returns:
        The rate in Hz, or None for pipes and archive entries.

    Raises:
        AudioError: a missing or unreadable file (the message names ``spec``).
    """
    s = spec.strip() if isinstance(spec, str) else spec
    if not isinstance(s, str) or not s or is_pipe(s) or (_ARK_RE.match(s)
                                                         and not Path(s).exists()):
        return None
    if _is_raw(s):
        if not Path(s).is_file():
            raise AudioError(f"{spec!r}: audio file not found")
        return RAW_SAMPLE_RATE
    return _file_info(spec, s)[0]
