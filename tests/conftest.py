"""Shared pytest fixtures. Fixtures for the data-preparation tests are prefixed ``data_``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def data_write_audio() -> Callable[..., Path]:
    """Factory writing a synthesized tone: ``f(path, seconds=0.5, sr=16000, channels=1,
    fmt=None, subtype="PCM_16")``; ``fmt`` is inferred from the suffix (``.raw`` files are
    written headerless 16-bit big-endian). Returns the path."""

    def write(path: Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1,
              fmt: str | None = None, subtype: str = "PCM_16", freq: float = 440.0) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        x = _tone(seconds, sr, freq, channels)
        if path.suffix == ".raw":
            np.round(x * 32767).astype(">i2").tofile(path)
        elif path.suffix == ".sph":
            sf.write(path, x, sr, format="NIST", subtype=subtype)
        else:
            sf.write(path, x, sr, format=fmt, subtype=subtype)
        return path

    return write
