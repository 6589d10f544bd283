"""Alignment files, in Kaldi's text forms (UTF-8, ``\\n`` line endings, one utterance per line,
utterances in C (byte) order, each file written atomically).

An alignment directory (:func:`write_alignment_dir`, like Kaldi's ``exp/mono_ali``) holds::

    ali.txt        utt tid tid ...        per-frame transition ids (Kaldi's ali.JOB.gz as
                                          written by copy-int-vector to ark,t; our tid
                                          numbering, see asrkit.models.hmm_gmm.topology)
    pdf_ali.txt    utt pdf pdf ...        per-frame pdf ids, 0-based (ali-to-pdf)
    phone_ali.txt  utt phone phone ...    per-frame phones.txt ids (ali-to-phones --per-frame)
    phone.ctm      utt 1 start dur PHONE  one line per phone, optional silence included
                                          (ali-to-phones --ctm-output | int2sym.pl -f 5)
    word.ctm       utt 1 start dur WORD   one line per transcript word (silence excluded)
    failed         utt<TAB>reason         utterances that could not be aligned (may be empty)
    final.mdl      the acoustic model the alignments were made with (when given)

CTM times are seconds: ``start = first frame * frame_shift``, ``dur = frames * frame_shift``
with ``frame_shift`` 0.01 (10 ms frames), printed with two decimals by default; channel ``1``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from asrkit.fileio import atomic_write
from asrkit.models.hmm_gmm.align import Alignment, Segment
from asrkit.models.hmm_gmm.model import AcousticModel

__all__ = ["AlignmentFileError", "read_ctm", "read_int_vectors", "write_alignment_dir",
           "write_ctm", "write_failed", "write_int_vectors"]

_INT = re.compile(r"-?\d+")


class AlignmentFileError(ValueError):
    """A malformed alignment or CTM file; the message is ``<path>:<line>: <what is wrong>``."""


def _c_order(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda u: u.encode("utf-8"))


def _check_id(utt: str) -> None:
    if not utt or any(c.isspace() for c in utt):
        raise ValueError(f"utterance id {utt!r} is empty or contains whitespace")


def write_int_vectors(path: str | os.PathLike,
                      vectors: Mapping[str, torch.Tensor | Sequence[int]]) -> Path:
    """Write ``utt i1 i2 ...`` lines (Kaldi ``ark,t`` int vectors: ``ali.txt`` and friends).

    Args:
        path: output file.
        vectors: ``{utt: (T,) ints}``.

    Returns:
        ``path``.

    Raises:
        ValueError: an utterance id with whitespace.
    """
    path = Path(path)
    with atomic_write(path) as f:
        for utt in _c_order(vectors):
            _check_id(utt)
            v = vectors[utt]
            vals = v.tolist() if isinstance(v, torch.Tensor) else list(v)
            f.write(" ".join([utt, *map(str, vals)]) + "\n")
    return path


def read_int_vectors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`write_int_vectors`.

    Returns:
        ``{utt: (T,) int64 tensor}`` in file order.

    Raises:
        FileNotFoundError: no such file.
        AlignmentFileError: a non-integer field or a repeated utterance (with file and line).
    """
    path = Path(path)
    out: dict[str, torch.Tensor] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            utt, vals = fields[0], fields[1:]
            bad = next((v for v in vals if not _INT.fullmatch(v)), None)
            if bad is not None:
                raise AlignmentFileError(f"{path}:{no}: {bad!r} is not an integer; expected "
                                         "'utt-id INT INT ...'")
            if utt in out:
                raise AlignmentFileError(f"{path}:{no}: utterance {utt!r} appears twice")
            out[utt] = torch.tensor([int(v) for v in vals], dtype=torch.int64)
    return out


def write_ctm(path: str | os.PathLike, segments: Mapping[str, Sequence[Segment]], *,
              frame_shift: float = 0.01, decimals: int = 2, channel: str = "1") -> Path:
    """Write ``utt channel start dur label`` lines (NIST CTM as Kaldi writes it).

    Args:
        path: output file.
        segments: ``{utt: [Segment, ...]}`` in frames.
        frame_shift: seconds per frame.
        decimals: digits after the point for times.
        channel: the channel field.

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_write(path) as f:
        for utt in _c_order(segments):
            _check_id(utt)
            for s in segments[utt]:
                f.write(f"{utt} {channel} {s.start * frame_shift:.{decimals}f} "
                        f"{s.num_frames * frame_shift:.{decimals}f} {s.label}\n")
    return path


def read_ctm(path: str | os.PathLike, *, frame_shift: float = 0.01
             ) -> dict[str, list[Segment]]:
    """Read a CTM back into frame segments (times rounded to the nearest frame).

    Returns:
        ``{utt: [Segment, ...]}`` in file order.

    Raises:
        FileNotFoundError: no such file.
        AlignmentFileError: a line without 5 or 6 fields or with non-numeric times.
    """
    path = Path(path)
    out: dict[str, list[Segment]] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (5, 6):
                raise AlignmentFileError(f"{path}:{no}: expected 'utt channel start dur "
                                         f"label [conf]', got {line.rstrip()!r}")
            try:
                start, dur = float(fields[2]), float(fields[3])
            except ValueError:
                raise AlignmentFileError(f"{path}:{no}: start and duration must be numbers, "
                                         f"got {fields[2]!r} {fields[3]!r}") from None
            s = round(start / frame_shift)
            out.setdefault(fields[0], []).append(Segment(s, s + round(dur / frame_shift),
                                                         fields[4]))
    return out


def write_failed(path: str | os.PathLike, failed: Mapping[str, str]) -> Path:
    """Write ``utt<TAB>reason`` lines (an empty file when nothing failed); returns ``path``."""
    path = Path(path)
    with atomic_write(path) as f:
        for utt in _c_order(failed):
            f.write(f"{utt}\t{' '.join(failed[utt].split())}\n")
    return path


def write_alignment_dir(out_dir: str | os.PathLike, alignments: Mapping[str, Alignment],
                        failed: Mapping[str, str] | None = None, *,
                        model: AcousticModel | None = None, frame_shift: float = 0.01
                        ) -> Path:
    """Write an alignment directory (layout in the module docstring), each file atomically.

    Args:
        out_dir: the directory (created).
        alignments: ``{utt: Alignment}``.
        failed: ``{utt: reason}`` of utterances that could not be aligned.
        model: written as ``final.mdl`` when given.
        frame_shift: seconds per frame for the CTM files.

    Returns:
        ``out_dir``.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_int_vectors(d / "ali.txt", {u: a.tids for u, a in alignments.items()})
    write_int_vectors(d / "pdf_ali.txt", {u: a.pdfs for u, a in alignments.items()})
    write_int_vectors(d / "phone_ali.txt", {u: a.phones for u, a in alignments.items()})
    write_ctm(d / "phone.ctm", {u: a.phone_segments for u, a in alignments.items()},
              frame_shift=frame_shift)
    write_ctm(d / "word.ctm", {u: a.word_segments for u, a in alignments.items()},
              frame_shift=frame_shift)
    write_failed(d / "failed", failed or {})
    if model is not None:
        model.save(d / "final.mdl")
    return d
