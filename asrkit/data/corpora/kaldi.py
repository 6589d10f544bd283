"""Import an existing Kaldi (or ESPnet) data directory.

Lets a user enter the pipeline with a data directory made by Kaldi, ESPnet or their own
scripts (DESIGN.md: every hand-off is a format the field knows). The import copies
``wav.scp``, ``text``, ``utt2spk`` and, when present, ``segments`` and ``utt2dur``,
re-sorts them in C order, drops utterances missing from any of them (like Kaldi's
``utils/fix_data_dir.sh``), regenerates ``spk2utt``, adds ``utt2dur`` when absent and
validates the result including the audio (``utils/validate_data_dir.sh``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asrkit.data.audio import AudioError, audio_duration
from asrkit.data.datadir import DataDir, DataDirError, validate_data_dir
from asrkit.fileio import is_done, mark_done

__all__ = ["import_kaldi_dir"]

logger = logging.getLogger(__name__)

_WRITTEN = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "segments")


def _durations(dd: DataDir, src: Path, *, allow_pipe: bool) -> dict[str, float]:
    if dd.segments is not None:
        return {u: end - start for u, (_, start, end) in dd.segments.items()}
    out: dict[str, float] = {}
    for utt, spec in dd.wav_scp.items():
        try:
            out[utt] = audio_duration(spec, allow_pipe=allow_pipe)
        except AudioError as e:
            raise DataDirError(src / "wav.scp", None, f"recording {utt!r}: {e}") from e
    return out


def import_kaldi_dir(src: str | os.PathLike, out: str | os.PathLike, *,
                     allow_pipe: bool = False) -> Path:
    """Copy a Kaldi data directory to ``out``, repaired, completed and validated.

    Steps: read ``src`` (``wav.scp``, ``text``, ``utt2spk`` required; ``segments``,
    ``utt2dur`` optional; ``spk2utt`` ignored and regenerated; any other file such as
    ``feats.scp`` is not copied, since features are recomputed); drop utterances that are
    not in every file or have an empty transcript (each logged, see
    :meth:`~asrkit.data.datadir.DataDir.fixed`); compute ``utt2dur`` when ``src`` has none
    (from ``segments``, else from the audio headers); write everything sorted in C order;
    run :func:`~asrkit.data.datadir.validate_data_dir` with ``check_audio=True``; mark
    ``out`` complete with ``.done``. A complete ``out`` is returned at once.

    Args:
        src: the existing data directory (left untouched).
        out: the new data directory.
        allow_pipe: allow ``wav.scp`` entries that are commands (``... |``); they are run
            (without a shell) to measure and check the audio.

    Returns:
        ``out``.

    Raises:
        DataDirError: a required file is missing or malformed (invalid UTF-8, duplicate ids,
            blank lines: naming the file and line), no utterance survives, or the audio
            check fails (naming the ``wav.scp`` line; a pipe without ``allow_pipe`` says to
            pass ``--allow-pipe``).
    """
    src, out = Path(src), Path(out)
    if is_done(out):
        logger.info("%s: already imported; skipping", out)
        return out
    if src.resolve() == out.resolve():
        raise ValueError(f"{src}: import source and destination are the same directory")
    dd = DataDir.load(src, allow_empty_text=True)
    fixed, dropped = dd.fixed(source=str(src))
    if not fixed.utt2spk:
        raise DataDirError(src, None, "no utterance is present in all of wav.scp/segments, "
                                      "text and utt2spk")
    if dropped:
        logger.warning("%s: dropped %d of %d utterance(s) not present in every file (see "
                       "above)", src, len(dropped), len(dd.utt2spk))
    if fixed.utt2dur is None:
        fixed.utt2dur = _durations(fixed, src, allow_pipe=allow_pipe)
    (out / ".done").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    fixed.write(out)
    for extra in sorted(p.name for p in src.iterdir() if p.is_file()):
        if extra not in _WRITTEN and not extra.startswith("."):
            logger.info("%s: not imported: %s (only %s are)", src, extra, ", ".join(_WRITTEN))
    validate_data_dir(out, check_audio=True, allow_pipe=allow_pipe)
    mark_done(out)
    logger.info("imported %s -> %s: %d utterances, %d speakers", src, out, len(fixed.utt2spk),
                len(set(fixed.utt2spk.values())))
    return out

