"""Kaldi data directories: reading, writing, validating and fixing.

A data directory is the hand-off between corpus preparation and feature extraction
(DESIGN.md). It follows Kaldi's conventions (``egs/*/s5/data/<set>``, checked by
``utils/validate_data_dir.sh`` and repaired by ``utils/fix_data_dir.sh``):

* ``wav.scp``  ``<recording-id> <path or "command |">``
* ``text``     ``<utterance-id> <transcript>``
* ``utt2spk``  ``<utterance-id> <speaker-id>``
* ``spk2utt``  ``<speaker-id> <utterance-id> <utterance-id> ...`` (derived from ``utt2spk``)
* ``utt2dur``  ``<utterance-id> <duration in seconds>`` (optional)
* ``segments`` ``<utterance-id> <recording-id> <start s> <end s>`` (optional; without it the
  recording ids of ``wav.scp`` are the utterance ids)

Every file is UTF-8, one entry per line, ``\\n`` line endings, sorted by its first field in C
(byte) order as ``LC_ALL=C sort`` produces, with unique keys. Errors raise
:class:`DataDirError`, whose message names the file, the 1-based line and what was expected.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asrkit.fileio import FileLineError, atomic_write

__all__ = [
    "DataDir",
    "DataDirError",
    "fix_command",
    "fix_data_dir",
    "read_kaldi_map",
    "spk2utt_from_utt2spk",
    "validate_data_dir",
    "write_kaldi_map",
]

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "text", "utt2spk")
"""Files :meth:`DataDir.load` requires; ``spk2utt`` is derived from ``utt2spk``."""

SEGMENT_OVERSHOOT_S = 0.5
"""Seconds a segment may end past its recording's end (Kaldi ``extract-segments`` default)."""

_WHITESPACE = (" ", "\t")
_EMPTY_VALUE = {
    "text": "empty transcript for utterance",
    "wav.scp": "no path or command for recording",
    "utt2spk": "no speaker id for utterance",
    "spk2utt": "no utterance ids for speaker",
    "utt2dur": "no duration for utterance",
    "segments": "no '<recording-id> <start> <end>' for utterance",
}


def fix_command(path: str | os.PathLike) -> str:
    """The command that repairs the data dir holding file ``path`` into a new dir:
    ``asrkit prep kaldi DIR DIR_fixed``, which re-sorts in C order, drops utterances missing
    from any file, regenerates ``spk2utt`` and validates
    (:func:`asrkit.data.corpora.kaldi.import_kaldi_dir`)."""
    d = Path(path).parent
    return f"asrkit prep kaldi {d} {d}_fixed"


class DataDirError(FileLineError):
    """A data-directory file is malformed or inconsistent.

    The message has the form ``<path>:<line>: <what is wrong>`` (or ``<path>: ...`` when no
    single line is at fault), like a compiler diagnostic, e.g.
    ``data/train/text:12: empty transcript for utterance 'an4-x'``.

    Attributes:
        path: the offending file (or directory), or None when no file is involved.
        line: 1-based line number, or None.
        reason: the message without the location prefix.
    """


def _c_key(key: str) -> bytes:
    """Sort key giving Kaldi's ``LC_ALL=C sort`` order: the UTF-8 bytes."""
    return key.encode("utf-8")


def _read_entries(path: str | os.PathLike, *, allow_empty_value: bool = False
                  ) -> list[tuple[int, str, str]]:
    """Parse a Kaldi ``key rest-of-line`` file into ``(line_no, key, value)`` in file order.

    Checks UTF-8, blank lines, CR line endings, leading whitespace and (unless allowed)
    empty values; duplicate keys and sorting are the callers' concern.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataDirError(path, None, "file not found") from None
    except OSError as e:
        raise DataDirError(path, None, f"cannot read file: {e.strerror or e}") from e
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        logger.warning("%s: last line has no trailing newline", path)
    entries: list[tuple[int, str, str]] = []
    for no, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            raise DataDirError(path, no, f"invalid UTF-8 at byte {e.start} of the line "
                                         f"({raw[e.start:e.start + 4]!r}); expected UTF-8 text"
                               ) from None
        if "\r" in line:
            raise DataDirError(path, no, "carriage return found (Windows CRLF line ending?); "
                                         "expected '\\n' line endings")
        if not line.strip():
            raise DataDirError(path, no, "blank line; expected '<key> <value>'")
        if line[0] in _WHITESPACE:
            raise DataDirError(path, no, "line starts with whitespace; expected '<key> <value>'")
        parts = line.split(None, 1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            what = _EMPTY_VALUE.get(path.name)
            raise DataDirError(path, no, f"{what} {key!r}" if what else
                               f"empty value for key {key!r}; expected '<key> <value>'")
        entries.append((no, key, value))
    return entries


def _entries_to_map(path: str | os.PathLike, entries: list[tuple[int, str, str]]
                    ) -> dict[str, str]:
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    for no, key, value in entries:
        if key in seen:
            raise DataDirError(path, no, f"duplicate key {key!r} (first on line {seen[key]}); "
                                         "expected unique keys")
        seen[key] = no
        out[key] = value
    return out


def _check_sorted(path: str | os.PathLike, entries: list[tuple[int, str, str]]) -> None:
    """Raise at the first line whose key is not strictly greater (C order) than the previous."""
    prev: bytes | None = None
    prev_key = ""
    for no, key, _ in entries:
        k = _c_key(key)
        if prev is not None:
            if k == prev:
                raise DataDirError(path, no, f"duplicate key {key!r}; expected unique keys "
                                             f"(remove one, then fix with: {fix_command(path)})")
            if k < prev:
                raise DataDirError(path, no, f"not sorted: {key!r} comes after {prev_key!r}; "
                                             "expected C (byte) order as 'LC_ALL=C sort' "
                                             f"gives (fix with: {fix_command(path)})")
        prev, prev_key = k, key


def read_kaldi_map(path: str | os.PathLike, *, allow_empty_value: bool = False
                   ) -> dict[str, str]:
    """Read a Kaldi ``<key> <rest of line>`` file (wav.scp, text, utt2spk, spk2utt, ...).

    The key is the first whitespace-delimited field; the value is the rest of the line with
    surrounding whitespace stripped (so ``text`` keeps its internal spacing).

    Args:
        path: the file to read.
        allow_empty_value: accept lines holding only a key (value ``""``).

    Returns:
        ``{key: value}`` in file order (insertion order preserved).

    Raises:
        DataDirError: missing/unreadable file; a line that is not valid UTF-8 (decoding is
            strict); a blank line; a CR (``\\r\\n``) line ending; a line starting with
            whitespace; an empty value unless ``allow_empty_value``; a duplicate key (the
            message gives both line numbers). Sorting is not checked here; see
            :func:`validate_data_dir`.
    """
    entries = _read_entries(path, allow_empty_value=allow_empty_value)
    return _entries_to_map(path, entries)


def _check_key(path: Path, key: str) -> None:
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        raise DataDirError(path, None, f"invalid key {key!r}; Kaldi keys are non-empty and "
                                       "contain no whitespace")


def write_kaldi_map(path: str | os.PathLike, mapping: Mapping[str, object]) -> None:
    """Write ``<key> <value>\\n`` lines sorted by key in C (byte) order, atomically.

    The order is Kaldi's ``LC_ALL=C sort``: keys compared as UTF-8 bytes. Values are written
    with ``str()``; an empty value writes the key alone.

    Args:
        path: output file (parent directories are created).
        mapping: ``{key: value}``; keys must be non-empty and whitespace-free.

    Raises:
        DataDirError: a key is empty or contains whitespace, or a value contains a newline.
    """
    path = Path(path)
    keys = sorted(mapping, key=_c_key)
    with atomic_write(path) as f:
        for key in keys:
            _check_key(path, key)
            value = str(mapping[key])
            if "\n" in value or "\r" in value:
                raise DataDirError(path, None, f"value for key {key!r} contains a newline")
            f.write(f"{key} {value}\n" if value else f"{key}\n")


def split_evenly(items: list, nj: int) -> list[list]:
    """Split ``items`` into ``nj`` contiguous chunks whose sizes differ by at most one, in
    order (Kaldi ``utils/split_data.sh``/``split_scp.pl`` for ``--nj`` jobs); chunks may be
    empty when ``nj > len(items)``.

    Raises:
        ValueError: ``nj < 1``.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    k, m = divmod(len(items), nj)
    out, i = [], 0
    for j in range(nj):
        n = k + (1 if j < m else 0)
        out.append(items[i:i + n])
        i += n
    return out


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Invert ``utt2spk`` into ``spk2utt`` (Kaldi ``utils/utt2spk_to_spk2utt.pl``).

    Args:
        utt2spk: ``{utterance-id: speaker-id}``.

    Returns:
        ``{speaker-id: "utt1 utt2 ..."}``: utterance ids space-joined in C (byte) order;
        speakers in C order.
    """
    groups: dict[str, list[str]] = {}
    for utt, spk in utt2spk.items():
        groups.setdefault(spk, []).append(utt)
    return {spk: " ".join(sorted(groups[spk], key=_c_key)) for spk in sorted(groups, key=_c_key)}


def _format_seconds(x: float) -> str:
    """Seconds with microsecond precision and no trailing zeros (``1.5``, ``12.34``, ``3``)."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def _parse_utt2dur(path: Path, entries: list[tuple[int, str, str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for no, key, value in entries:
        try:
            d = float(value)
        except ValueError:
            raise DataDirError(path, no, f"duration {value!r} for {key!r} is not a number; "
                                         "expected '<utt-id> <seconds>'") from None
        if not math.isfinite(d) or d <= 0:
            raise DataDirError(path, no, f"duration {value!r} for {key!r}; expected a positive "
                                         "number of seconds")
        out[key] = d
    return out


def _parse_segments(path: Path, entries: list[tuple[int, str, str]]
                    ) -> dict[str, tuple[str, float, float]]:
    out: dict[str, tuple[str, float, float]] = {}
    for no, key, value in entries:
        fields = value.split()
        if len(fields) != 3:
            raise DataDirError(path, no, f"expected '<utt-id> <recording-id> <start> <end>', "
                                         f"got {len(fields) + 1} fields")
        rec, a, b = fields
        try:
            start, end = float(a), float(b)
        except ValueError:
            raise DataDirError(path, no, f"start/end {a!r} {b!r} are not numbers (seconds)"
                               ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise DataDirError(path, no, f"segment {key!r} has start={a} end={b}; expected "
                                         "0 <= start < end (seconds)")
        out[key] = (rec, start, end)
    return out


def _check_utt2spk_values(path: Path, entries: list[tuple[int, str, str]]) -> None:
    for no, key, value in entries:
        if len(value.split()) != 1:
            raise DataDirError(path, no, f"utterance {key!r} maps to {value!r}; expected "
                                         "exactly one speaker id")


@dataclass
class DataDir:
    """An in-memory Kaldi data directory.

    Attributes:
        wav_scp: ``{recording-id: path or "command |"}``; recording ids equal utterance ids
            unless ``segments`` is given.
        text: ``{utterance-id: transcript}``.
        utt2spk: ``{utterance-id: speaker-id}``.
        utt2dur: ``{utterance-id: seconds}`` or None.
        segments: ``{utterance-id: (recording-id, start s, end s)}`` or None.

    ``spk2utt`` is not stored; it is derived from ``utt2spk`` when writing.
    """

    wav_scp: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] | None = None
    segments: dict[str, tuple[str, float, float]] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, *, allow_empty_text: bool = False) -> DataDir:
        """Read a data directory (Kaldi layout); optional files are read when present.

        Args:
            path: the directory; must hold ``wav.scp``, ``text`` and ``utt2spk``; ``utt2dur``
                and ``segments`` are read if they exist, ``spk2utt`` is ignored (derived).
            allow_empty_text: accept ``text`` lines without a transcript (value ``""``), e.g.
                to drop them afterwards with :meth:`fixed`.

        Returns:
            The :class:`DataDir`. Order follows the files; sorting and cross-file consistency
            are not checked here (use :func:`validate_data_dir`).

        Raises:
            DataDirError: a required file is missing or any file is malformed (see
                :func:`read_kaldi_map`), a duration is not a positive number, a segments
                line is not ``<utt> <rec> <start> <end>``, or a utt2spk value is not one
                speaker id.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataDirError(path, None, "data directory not found")
        for name in REQUIRED_FILES:
            if not (path / name).is_file():
                raise DataDirError(path / name, None, "required file missing; a Kaldi data "
                                                      f"dir needs {', '.join(REQUIRED_FILES)}")
        wav_scp = read_kaldi_map(path / "wav.scp")
        text = read_kaldi_map(path / "text", allow_empty_value=allow_empty_text)
        u_entries = _read_entries(path / "utt2spk")
        _check_utt2spk_values(path / "utt2spk", u_entries)
        utt2spk = _entries_to_map(path / "utt2spk", u_entries)
        utt2dur = segments = None
        if (path / "utt2dur").is_file():
            entries = _read_entries(path / "utt2dur")
            _entries_to_map(path / "utt2dur", entries)
            utt2dur = _parse_utt2dur(path / "utt2dur", entries)
        if (path / "segments").is_file():
            entries = _read_entries(path / "segments")
            _entries_to_map(path / "segments", entries)
            segments = _parse_segments(path / "segments", entries)
        return cls(wav_scp=wav_scp, text=text, utt2spk=utt2spk, utt2dur=utt2dur,
                   segments=segments)

    def write(self, path: str | os.PathLike) -> None:
        """Write the directory in Kaldi layout, every file sorted (C order) and atomic.

        Writes ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and, when set, ``utt2dur``
        (``%.3f`` seconds) and ``segments``
        (seconds, up to microsecond precision). A stale ``utt2dur``/``segments`` already in
        ``path`` is removed when the field is None, so the directory stays consistent.

        Args:
            path: output directory (created if missing).

        Raises:
            DataDirError: a key is empty or contains whitespace, or a value has a newline.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_kaldi_map(path / "wav.scp", self.wav_scp)
        write_kaldi_map(path / "text", self.text)
        write_kaldi_map(path / "utt2spk", self.utt2spk)
        write_kaldi_map(path / "spk2utt", spk2utt_from_utt2spk(self.utt2spk))
        if self.utt2dur is not None:
            write_kaldi_map(path / "utt2dur", {u: f"{d:.3f}" for u, d in self.utt2dur.items()})
        else:
            (path / "utt2dur").unlink(missing_ok=True)
        if self.segments is not None:
            write_kaldi_map(path / "segments", {
                u: f"{rec} {_format_seconds(s)} {_format_seconds(e)}"
                for u, (rec, s, e) in self.segments.items()})
        else:
            (path / "segments").unlink(missing_ok=True)

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids (the keys of ``utt2spk``) sorted in C (byte) order."""
        return sorted(self.utt2spk, key=_c_key)

    def subset(self, utt_ids: Iterable[str]) -> DataDir:
        """Return a new :class:`DataDir` holding only ``utt_ids``.

        With ``segments`` the ``wav.scp`` keeps only the recordings those segments use
        (Kaldi ``utils/subset_data_dir.sh``).

        Args:
            utt_ids: utterance ids to keep (order irrelevant; duplicates ignored).

        Raises:
            KeyError: an id is not an utterance of this directory (``utt2spk``).
        """
        keep = set(utt_ids)
        missing = sorted(keep.difference(self.utt2spk), key=_c_key)
        if missing:
            raise KeyError(f"subset: {len(missing)} utterance id(s) not in the data dir, "
                           f"first {missing[0]!r}")

        def pick(d: dict) -> dict:
            return {k: v for k, v in d.items() if k in keep}

        segments = pick(self.segments) if self.segments is not None else None
        if segments is not None:
            recs = {rec for rec, _, _ in segments.values()}
            wav_scp = {k: v for k, v in self.wav_scp.items() if k in recs}
        else:
            wav_scp = pick(self.wav_scp)
        return DataDir(wav_scp=wav_scp, text=pick(self.text), utt2spk=pick(self.utt2spk),
                       utt2dur=pick(self.utt2dur) if self.utt2dur is not None else None,
                       segments=segments)

    @classmethod
    def combine(cls, dirs: Sequence[tuple[str, DataDir]]) -> DataDir:
        """Concatenate data dirs, Kaldi's ``utils/combine_data.sh`` (e.g. the three LibriSpeech
        training parts into ``train_960``).

        Args:
            dirs: ``(name, DataDir)`` pairs; the names only appear in error messages.

        Returns:
            One :class:`DataDir` with every utterance; ``utt2dur`` and ``segments`` are kept
            only when every input has them.

        Raises:
            ValueError: no input; an utterance or recording id in two inputs (both named);
                some inputs with ``segments`` and some without.
        """
        if not dirs:
            raise ValueError("combine: no data dirs given")
        seg = [d.segments is not None for _, d in dirs]
        if any(seg) and not all(seg):
            raise ValueError("combine: some data dirs have segments and some do not: "
                             + ", ".join(n for (n, _), s in zip(dirs, seg) if not s))
        out = cls(wav_scp={}, text={}, utt2spk={},
                  utt2dur={} if all(d.utt2dur is not None for _, d in dirs) else None,
                  segments={} if all(seg) else None)
        owner: dict[str, str] = {}
        for name, d in dirs:
            for u in d.utt2spk:
                if u in owner:
                    raise ValueError(f"combine: utterance {u!r} is in both {owner[u]} and "
                                     f"{name}")
                owner[u] = name
            clash = set(d.wav_scp).intersection(out.wav_scp)
            if clash:
                raise ValueError(f"combine: recording {min(clash)!r} of {name} is also "
                                 "in an earlier data dir")
            out.wav_scp.update(d.wav_scp)
            out.text.update(d.text)
            out.utt2spk.update(d.utt2spk)
            if out.utt2dur is not None:
                out.utt2dur.update(d.utt2dur or {})
            if out.segments is not None:
                out.segments.update(d.segments or {})
        return out

    def subset_speakers(self, speakers: Iterable[str], *, exclude: bool = False) -> DataDir:
        """Return a new :class:`DataDir` with the utterances of ``speakers`` (or, with
        ``exclude``, of every other speaker), Kaldi's ``utils/subset_data_dir.sh --spk-list``.

        Args:
            speakers: speaker ids (values of ``utt2spk``).
            exclude: keep the speakers *not* listed.

        Raises:
            KeyError: a listed speaker has no utterance here (a typo would otherwise give an
                empty or wrong split silently).
        """
        wanted = set(speakers)
        known = set(self.utt2spk.values())
        missing = sorted(wanted - known, key=_c_key)
        if missing:
            raise KeyError(f"subset: speaker(s) {', '.join(missing)} not in the data dir "
                           f"({len(known)} speakers, e.g. {sorted(known, key=_c_key)[:3]})")
        return self.subset(u for u, s in self.utt2spk.items() if (s in wanted) != exclude)

    def fixed(self, *, source: str = "data dir") -> tuple[DataDir, list[str]]:
        """Keep only utterances consistent across all fields (Kaldi ``utils/fix_data_dir.sh``).

        An utterance is kept when it is in ``utt2spk`` with a non-empty ``text``, in
        ``wav_scp`` (or in ``segments`` with its recording in ``wav_scp``) and, when
        ``utt2dur`` is set, in ``utt2dur``. With ``segments``, recordings no kept segment
        uses are dropped from ``wav_scp``. Every dropped id is logged with the reason.

        Args:
            source: name used in the log messages (e.g. the directory).

        Returns:
            ``(fixed DataDir, dropped utterance ids in C order)``.
        """
        segments, utt2dur, text = self.segments, self.utt2dur, self.text
        all_ids = set(self.utt2spk) | set(text)
        all_ids |= set(segments) if segments is not None else set(self.wav_scp)
        if utt2dur is not None:
            all_ids |= set(utt2dur)
        keep = {u for u in all_ids if u in self.utt2spk and text.get(u)}
        if segments is not None:
            keep = {u for u in keep if u in segments and segments[u][0] in self.wav_scp}
        else:
            keep &= set(self.wav_scp)
        if utt2dur is not None:
            keep &= set(utt2dur)
        dropped = sorted(all_ids - keep, key=_c_key)
        audio_name = "segments" if segments is not None else "wav.scp"
        for u in dropped:
            where = [name for name, d in (("utt2spk", self.utt2spk), ("text", text),
                                          (audio_name, segments or self.wav_scp),
                                          ("utt2dur", utt2dur)) if d is not None and u not in d]
            if where:
                why = f"missing from {', '.join(where)}"
            elif not text[u]:
                why = "empty transcript"
            else:
                why = f"recording {segments[u][0]!r} not in wav.scp"  # type: ignore[index]
            logger.warning("%s: dropping utterance %r (%s)", source, u, why)
        if segments is not None:
            used = {segments[u][0] for u in keep}
            for rec in sorted(set(self.wav_scp) - used, key=_c_key):
                logger.warning("%s: dropping recording %r of wav.scp (no kept segment uses it)",
                               source, rec)
            wav_kept = {k: v for k, v in self.wav_scp.items() if k in used}
        else:
            wav_kept = {k: v for k, v in self.wav_scp.items() if k in keep}

        def pick(d: dict) -> dict:
            return {k: v for k, v in d.items() if k in keep}

        return DataDir(wav_scp=wav_kept, text=pick(text), utt2spk=pick(self.utt2spk),
                       utt2dur=pick(utt2dur) if utt2dur is not None else None,
                       segments=pick(segments) if segments is not None else None), dropped


def _first_missing(src: list[tuple[int, str, str]], other: Mapping[str, object]
                   ) -> tuple[int, str] | None:
    for no, key, _ in src:
        if key not in other:
            return no, key
    return None


def _require_same_keys(a_path: Path, a: list[tuple[int, str, str]],
                       b_path: Path, b: list[tuple[int, str, str]], what: str) -> None:
    """Error naming the first id present in one file and missing from the other."""
    a_keys = {k for _, k, _ in a}
    b_keys = {k for _, k, _ in b}
    hit = _first_missing(a, b_keys)
    if hit is not None:
        raise DataDirError(a_path, hit[0], f"{what} {hit[1]!r} is missing from {b_path.name} "
                                           f"({b_path}); every {what} must be in both "
                                           f"(fix with: {fix_command(a_path)})")
    hit = _first_missing(b, a_keys)
    if hit is not None:
        raise DataDirError(b_path, hit[0], f"{what} {hit[1]!r} is missing from {a_path.name} "
                                           f"({a_path}); every {what} must be in both "
                                           f"(fix with: {fix_command(b_path)})")


def validate_data_dir(path: str | os.PathLike, *, check_audio: bool = True,
                      allow_pipe: bool = False) -> None:
    """Check a data directory like Kaldi's ``utils/validate_data_dir.sh``; raise on the first fault.

    Checks, in order:

    1. ``wav.scp``, ``text``, ``utt2spk`` and ``spk2utt`` exist.
    2. Every present file (those four, ``utt2dur``, ``segments``) is strict UTF-8 without
       blank lines, with unique keys sorted in C (byte) order.
    3. ``text`` has no empty transcript; ``utt2spk`` maps each utterance to one speaker.
    4. The same utterance ids appear in ``utt2spk``, ``text`` and ``wav.scp`` (or
       ``segments``, whose recording ids must then equal those of ``wav.scp``) and, when
       present, ``utt2dur``; ``utt2dur`` durations are positive numbers; segments satisfy
       ``0 <= start < end``.
    5. ``spk2utt`` lists exactly the utterances ``utt2spk`` gives each speaker.
    6. With ``check_audio``: each ``wav.scp`` entry can be opened (``soundfile.info``; a
       pipe command is run, which needs ``allow_pipe``) and, with ``segments``, no segment
       ends more than :data:`SEGMENT_OVERSHOOT_S` past its recording.

    A speaker id that is not a prefix of its utterance ids is only logged as a warning
    (Kaldi makes it an error because sorting by utterance must equal sorting by speaker;
    ``utt2spk`` being sorted is still required here).

    Args:
        path: the data directory.
        check_audio: open every recording (slower; needs the audio to be reachable).
        allow_pipe: allow ``wav.scp`` commands (``... |``) to be run by the audio check.

    Raises:
        DataDirError: on the first violation; the message names the file, the 1-based line
            and what was expected (e.g. ``data/x/text:12: empty transcript for utterance 'u1'``).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(path, None, "data directory not found")
    for name in (*REQUIRED_FILES, "spk2utt"):
        if not (path / name).is_file():
            hint = f" (regenerate it with: {fix_command(path / name)})" \
                if name == "spk2utt" else ""
            raise DataDirError(path / name, None, f"required file missing{hint}")
    files = {name: path / name for name in ("wav.scp", "text", "utt2spk", "spk2utt",
                                            "utt2dur", "segments")}
    entries: dict[str, list[tuple[int, str, str]]] = {}
    for name, p in files.items():
        if p.is_file():
            entries[name] = _read_entries(p)  # strict UTF-8, no blank/empty-value lines
            _check_sorted(p, entries[name])
    if not entries["utt2spk"]:
        raise DataDirError(files["utt2spk"], None, "no utterances; expected at least one line")
    _check_utt2spk_values(files["utt2spk"], entries["utt2spk"])
    utt2spk = {k: v for _, k, v in entries["utt2spk"]}

    _require_same_keys(files["utt2spk"], entries["utt2spk"], files["text"], entries["text"],
                       "utterance")
    segments = None
    if "segments" in entries:
        segments = _parse_segments(files["segments"], entries["segments"])
        _require_same_keys(files["utt2spk"], entries["utt2spk"], files["segments"],
                           entries["segments"], "utterance")
        wav_recs = {k for _, k, _ in entries["wav.scp"]}
        for no, utt, _ in entries["segments"]:
            rec = segments[utt][0]
            if rec not in wav_recs:
                raise DataDirError(files["segments"], no, f"recording {rec!r} of segment "
                                   f"{utt!r} is missing from wav.scp ({files['wav.scp']})")
        used = {rec for rec, _, _ in segments.values()}
        for no, rec, _ in entries["wav.scp"]:
            if rec not in used:
                raise DataDirError(files["wav.scp"], no, f"recording {rec!r} is used by no "
                                   f"segment in {files['segments']} (fix with: "
                                   f"{fix_command(files['wav.scp'])})")
    else:
        _require_same_keys(files["utt2spk"], entries["utt2spk"], files["wav.scp"],
                           entries["wav.scp"], "utterance")
    if "utt2dur" in entries:
        _parse_utt2dur(files["utt2dur"], entries["utt2dur"])
        _require_same_keys(files["utt2spk"], entries["utt2spk"], files["utt2dur"],
                           entries["utt2dur"], "utterance")

    # spk2utt must be the exact inverse of utt2spk.
    expected = spk2utt_from_utt2spk(utt2spk)
    seen_utts: dict[str, int] = {}
    for no, spk, value in entries["spk2utt"]:
        if spk not in expected:
            raise DataDirError(files["spk2utt"], no, f"speaker {spk!r} is not in utt2spk "
                               f"(regenerate spk2utt with: {fix_command(files['spk2utt'])})")
        utts = value.split()
        for u in utts:
            if u in seen_utts:
                raise DataDirError(files["spk2utt"], no, f"utterance {u!r} already listed on "
                                   f"line {seen_utts[u]}; expected each utterance once")
            seen_utts[u] = no
            if utt2spk.get(u) != spk:
                got = utt2spk.get(u)
                why = "is not in utt2spk" if got is None else f"belongs to speaker {got!r}"
                raise DataDirError(files["spk2utt"], no, f"utterance {u!r} listed under "
                                   f"{spk!r} but {why} (regenerate spk2utt with: "
                                   f"{fix_command(files['spk2utt'])})")
    spk_in_file = {k for _, k, _ in entries["spk2utt"]}
    for no, utt, spk in entries["utt2spk"]:
        if spk not in spk_in_file or utt not in seen_utts:
            raise DataDirError(files["utt2spk"], no, f"utterance {utt!r} of speaker {spk!r} is "
                               f"missing from spk2utt ({files['spk2utt']}); regenerate it "
                               f"with: {fix_command(files['spk2utt'])}")

    bad_prefix = [(u, s) for u, s in utt2spk.items() if not u.startswith(s)]
    if bad_prefix:
        u, s = bad_prefix[0]
        logger.warning("%s: %d utterance id(s) do not start with their speaker id (first: %r "
                       "of speaker %r); Kaldi recommends speaker-prefixed utterance ids",
                       files["utt2spk"], len(bad_prefix), u, s)

    if check_audio:
        _check_audio(files["wav.scp"], entries["wav.scp"], segments, allow_pipe=allow_pipe,
                     segments_path=files["segments"])
    logger.info("%s: valid data dir (%d utterances, %d speakers)", path, len(utt2spk),
                len(expected))


def _check_audio(wav_path: Path, wav_entries: list[tuple[int, str, str]],
                 segments: dict[str, tuple[str, float, float]] | None, *, allow_pipe: bool,
                 segments_path: Path) -> None:
    from asrkit.data.audio import AudioError, audio_duration

    durations: dict[str, float] = {}
    lines: dict[str, int] = {}
    for no, rec, spec in wav_entries:
        try:
            durations[rec] = audio_duration(spec, allow_pipe=allow_pipe)
        except AudioError as e:
            raise DataDirError(wav_path, no, f"recording {rec!r}: {e}") from e
        lines[rec] = no
    if segments is None:
        return
    seg_lines = {}
    if segments_path.is_file():
        seg_lines = {k: no for no, k, _ in _read_entries(segments_path)}
    for utt, (rec, _, end) in segments.items():
        if end > durations[rec] + SEGMENT_OVERSHOOT_S:
            raise DataDirError(segments_path, seg_lines.get(utt),
                               f"segment {utt!r} ends at {end:.3f} s but recording {rec!r} "
                               f"(wav.scp line {lines[rec]}) lasts {durations[rec]:.3f} s")


def fix_data_dir(path: str | os.PathLike) -> list[str]:
    """Repair a data directory in place, like Kaldi's ``utils/fix_data_dir.sh``.

    Keeps only the utterances present in every file (``utt2spk``, ``text``, ``wav.scp`` or
    ``segments`` with an existing recording, and ``utt2dur`` when present) and with a
    non-empty transcript; drops ``wav.scp`` recordings no kept segment uses; rewrites every
    file sorted in C order and regenerates ``spk2utt`` (see :meth:`DataDir.fixed`). Files
    are read leniently about order and empty transcripts, strictly about everything else.

    Unlike Kaldi, an utterance missing from ``utt2dur`` is dropped (Kaldi filters
    ``utt2dur`` only, which leaves a directory ``validate_data_dir.sh`` then rejects).

    Args:
        path: the data directory (must hold ``wav.scp``, ``text``, ``utt2spk``).

    Returns:
        The dropped utterance ids, C-sorted (each also logged with the reason).

    Raises:
        DataDirError: a required file is missing or malformed beyond repair (invalid UTF-8,
            blank lines, duplicate keys: which duplicate to keep is the user's decision).
    """
    path = Path(path)
    fixed, dropped = DataDir.load(path, allow_empty_text=True).fixed(source=str(path))
    fixed.write(path)
    logger.info("%s: fixed data dir: kept %d utterances, dropped %d", path,
                len(fixed.utt2spk), len(dropped))
    return dropped
