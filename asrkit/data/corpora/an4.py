"""CMU AN4 ("census") corpus to Kaldi data directories ``train``, ``dev`` and ``test``.

AN4 (CMU, 1991: spoken letters, digits, names and dates; 74 training and 10 test speakers,
948 + 130 utterances, 16 kHz) comes in two layouts this importer reads in place:

1. SphinxTrain's example database: ``<src>/wav/an4_clstk/<spk>/<utt>.wav``,
   ``<src>/wav/an4test_clstk/<spk>/<utt>.wav`` and ``<src>/etc/an4_{train,test}.{fileids,
   transcription}``.
2. CMU's original distribution (``an4_sphere.tar.gz`` / ``an4_raw.bigendian.tar.gz``): the
   same tree under ``an4/`` with ``.sph`` (NIST SPHERE) or ``.raw`` (headerless 16 kHz
   16-bit big-endian, see :mod:`asrkit.data.audio`) audio.

``<src>`` may be the directory holding ``etc/`` and ``wav/`` or its parent holding ``an4/``.
A ``fileids`` line is a path relative to ``wav/`` with or without extension; the audio file
is found by trying ``.wav``, ``.sph``, ``.raw``, ``.flac``. A ``transcription`` line is
``[<s>] WORDS [</s>] (<file id>)``; the markers ``<s>``, ``</s>``, ``<sil>`` are removed and
words upper-cased.

Following Kaldi's convention that utterance ids start with the speaker id, the utterance
``an251-fash-b`` of speaker ``fash`` becomes ``fash-an251-fash-b``. ``dev`` holds whole
speakers taken from the training list (seeded, deterministic), so dev and train speakers
are disjoint; ``test`` is the official test list.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

from asrkit.data.audio import AudioError, audio_duration
from asrkit.data.datadir import DataDir, DataDirError, validate_data_dir
from asrkit.fileio import is_done, mark_done

__all__ = ["AN4_MD5", "AN4_SHA256", "AN4_URL", "AUDIO_EXTENSIONS", "download_an4", "prepare_an4"]

logger = logging.getLogger(__name__)

AN4_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
"""CMU's official AN4 archive (NIST SPHERE audio, extracts to ``an4/``)."""
AN4_SHA256: str | None = None
"""Not published by CMU and not known to us for certain, so None: a download of
:data:`AN4_URL` is then verified only by its HTTP ``Content-Length`` (size), not by content."""
AN4_MD5: str | None = None
"""Not published by CMU; None (see :data:`AN4_SHA256`)."""

AUDIO_EXTENSIONS = (".wav", ".sph", ".raw", ".flac")
"""Extensions tried, in order, for a ``fileids`` entry given without one."""

MARKERS = frozenset({"<s>", "</s>", "<sil>"})
"""Sphinx sentence/silence markers removed from transcriptions."""

SPLITS = {"train": "an4_train", "test": "an4_test"}
"""Our split name -> the ``etc/<name>.{fileids,transcription}`` prefix."""

_TRANS_RE = re.compile(r"^(?P<words>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")


def _find_root(src: Path) -> Path:
    for cand in (src, src / "an4"):
        if (cand / "etc" / "an4_train.fileids").is_file():
            return cand
    raise FileNotFoundError(
        f"{src}: not an AN4 corpus: expected etc/an4_train.fileids (or an4/etc/...) with "
        "wav/an4_clstk and wav/an4test_clstk beside it; download and extract "
        f"{AN4_URL} or the SphinxTrain an4 example")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of an etc/ file as (1-based line number, stripped text)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataDirError(path, None, "file not found") from None
    out = []
    for no, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataDirError(path, no, "invalid UTF-8; expected a text line") from None
        if line:
            out.append((no, line))
    return out


def _read_transcription(path: Path) -> dict[str, tuple[int, str]]:
    """``{file id: (line, normalised words)}`` from a Sphinx ``.transcription`` file."""
    out: dict[str, tuple[int, str]] = {}
    for no, line in _read_lines(path):
        m = _TRANS_RE.match(line)
        if m is None:
            raise DataDirError(path, no, f"cannot parse {line!r}; expected "
                                         "'[<s>] WORDS [</s>] (<file id>)'")
        fid = m["id"]
        words = [w.upper() for w in m["words"].split() if w.lower() not in MARKERS]
        if not words:
            raise DataDirError(path, no, f"empty transcript for utterance {fid!r}")
        if fid in out:
            raise DataDirError(path, no, f"duplicate utterance {fid!r} (first on line "
                                         f"{out[fid][0]})")
        out[fid] = (no, " ".join(words))
    return out


def _resolve_audio(wav_dir: Path, fileid: str) -> Path | None:
    rel = Path(fileid)
    if rel.suffix.lower() in AUDIO_EXTENSIONS:
        p = wav_dir / rel
        return p if p.is_file() else None
    for ext in AUDIO_EXTENSIONS:
        p = wav_dir / f"{fileid}{ext}"
        if p.is_file():
            return p
    return None


def _prepare_split(root: Path, prefix: str) -> DataDir:
    fileids_path = root / "etc" / f"{prefix}.fileids"
    trans_path = root / "etc" / f"{prefix}.transcription"
    wav_dir = root / "wav"
    trans = _read_transcription(trans_path)
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] = {}
    seen: dict[str, int] = {}
    for no, fileid in _read_lines(fileids_path):
        rel = Path(fileid)
        base = rel.stem if rel.suffix.lower() in AUDIO_EXTENSIONS else rel.name
        if base in seen:
            raise DataDirError(fileids_path, no, f"duplicate file id {base!r} (first on line "
                                                 f"{seen[base]})")
        seen[base] = no
        if base not in trans:
            raise DataDirError(fileids_path, no, f"utterance {base!r} has no transcript in "
                                                 f"{trans_path}")
        if len(rel.parts) >= 2:
            spk = rel.parts[-2]
        elif len(base.split("-")) >= 3:  # an251-fash-b: speaker is the second field
            spk = base.split("-")[1]
        else:
            raise DataDirError(fileids_path, no, f"cannot tell the speaker of {fileid!r}; "
                                                 "expected '<dir>/<speaker>/<file id>'")
        audio = _resolve_audio(wav_dir, fileid)
        if audio is None:
            raise DataDirError(fileids_path, no, f"audio for {fileid!r} not found under "
                                                 f"{wav_dir} (tried {', '.join(AUDIO_EXTENSIONS)})")
        spec = str(audio.resolve())
        try:
            dur = audio_duration(spec)
        except AudioError as e:
            raise DataDirError(fileids_path, no, f"unreadable audio: {e}") from e
        utt = f"{spk}-{base}"
        wav_scp[utt] = spec
        text[utt] = trans[base][1]
        utt2spk[utt] = spk
        utt2dur[utt] = dur
    for fid, (no, _) in trans.items():
        if fid not in seen:
            raise DataDirError(trans_path, no, f"utterance {fid!r} is not listed in "
                                               f"{fileids_path}")
    if not utt2spk:
        raise DataDirError(fileids_path, None, "no utterances listed")
    return DataDir(wav_scp=wav_scp, text=text, utt2spk=utt2spk, utt2dur=utt2dur)


def _choose_dev_speakers(train: DataDir, *, dev_speakers: int | None, dev_utts: int,
                         seed: int) -> list[str]:
    counts: dict[str, int] = {}
    for spk in train.utt2spk.values():
        counts[spk] = counts.get(spk, 0) + 1
    speakers = sorted(counts)
    if len(speakers) < 2:
        raise ValueError(f"need at least 2 training speakers to hold out a dev set, found "
                         f"{len(speakers)}")
    random.Random(seed).shuffle(speakers)
    if dev_speakers is not None:
        if not 1 <= dev_speakers < len(speakers):
            raise ValueError(f"dev_speakers must be in [1, {len(speakers) - 1}], got "
                             f"{dev_speakers}")
        return sorted(speakers[:dev_speakers])
    if dev_utts == 0:
        return []  # Kaldi's setup: all 948 training utterances train, no dev
    if dev_utts < 0:
        raise ValueError(f"dev_utts must be >= 0, got {dev_utts}")
    chosen: list[str] = []
    total = 0
    for spk in speakers[:-1]:  # never take every speaker: train must not be empty
        if total >= dev_utts:
            break
        n = counts[spk]
        # take the speaker when it brings the total closer to the target
        if not chosen or abs(total + n - dev_utts) <= abs(total - dev_utts):
            chosen.append(spk)
            total += n
    return sorted(chosen)


def prepare_an4(src: str | os.PathLike, out: str | os.PathLike, *,
                dev_speakers: int | None = None, dev_utts: int = 100, seed: int = 0
                ) -> dict[str, Path]:
    """Prepare AN4 as Kaldi data directories ``out/train``, ``out/dev``, ``out/test``.

    Each directory gets ``wav.scp`` (absolute paths into ``src``; nothing is copied),
    ``text``, ``utt2spk``, ``spk2utt`` and ``utt2dur`` (seconds, from the audio header),
    sorted in C order, is checked with :func:`~asrkit.data.datadir.validate_data_dir` and
    then marked complete with a ``.done`` file. When all three are already complete the
    function returns at once (delete ``out`` to prepare again, e.g. with another seed).

    Args:
        src: the corpus, in either layout (see the module docstring); read in place.
        out: output parent directory.
        dev_speakers: hold out exactly this many training speakers as ``dev``; None to
            choose by ``dev_utts``.
        dev_utts: target ``dev`` size in utterances when ``dev_speakers`` is None: shuffled
            speakers are taken while each brings the count closer to this target (whole
            speakers only, so the size is approximate); 0 for no ``dev`` (all 948 training
            utterances in ``train``, as Kaldi's and ESPnet's AN4 recipes train).
        seed: seed of the speaker shuffle (same seed, same split).

    Returns:
        ``{"train": out/"train", "dev": out/"dev", "test": out/"test"}`` (no ``dev`` with
        ``dev_utts=0``).

    Raises:
        FileNotFoundError: ``src`` is not an AN4 tree.
        DataDirError: an etc/ file is malformed; an id appears in a ``fileids`` list but
            not in its ``transcription`` or the reverse; duplicate ids; an empty transcript;
            missing or unreadable audio (all naming the file and line).
        ValueError: ``dev_speakers``/``dev_utts`` leave ``dev`` or ``train`` empty.
    """
    out = Path(out)
    names = ("train", "test") if dev_speakers is None and dev_utts == 0 else (
        "train", "dev", "test")
    dirs = {name: out / name for name in names}
    if all(is_done(d) for d in dirs.values()):
        logger.info("%s: AN4 data dirs already prepared; skipping", out)
        return dirs
    root = _find_root(Path(src))
    logger.info("preparing AN4 from %s into %s", root, out)
    full_train = _prepare_split(root, SPLITS["train"])
    test = _prepare_split(root, SPLITS["test"])
    dev_spk = set(_choose_dev_speakers(full_train, dev_speakers=dev_speakers,
                                       dev_utts=dev_utts, seed=seed))
    dev = full_train.subset(u for u, s in full_train.utt2spk.items() if s in dev_spk)
    train = full_train.subset(u for u, s in full_train.utt2spk.items() if s not in dev_spk)
    for name, dd in (("train", train), ("dev", dev), ("test", test)):
        if name not in dirs:
            continue
        d = dirs[name]
        (d / ".done").unlink(missing_ok=True)
        dd.write(d)
        validate_data_dir(d, check_audio=False)  # audio headers were read for utt2dur
        mark_done(d)
        logger.info("%s: %d utterances, %d speakers, %.1f s of audio", d, len(dd.utt2spk),
                    len(set(dd.utt2spk.values())), sum((dd.utt2dur or {}).values()))
    return dirs


def download_an4(dest_dir: str | os.PathLike, url: str = AN4_URL) -> Path:
    """Download (resumable) and unpack CMU's AN4 archive; return the corpus root.

    Args:
        dest_dir: where the archive is stored and unpacked.
        url: archive URL (http(s) or ``file://`` for a local mirror); default :data:`AN4_URL`.

    Returns:
        The unpacked folder holding ``etc/`` (``dest_dir/an4`` for CMU's archive).

    Raises:
        asrkit.data.download.DownloadError: network, size or extraction failure.
        FileNotFoundError: the archive holds no ``etc/an4_train.fileids``.
    """
    from asrkit.data.download import download, extract

    dest_dir = Path(dest_dir)
    archive = download(url, dest_dir, sha256=AN4_SHA256, md5=AN4_MD5)
    extract(archive, dest_dir)
    roots = sorted(p.parent.parent for p in dest_dir.glob("**/etc/an4_train.fileids"))
    if not roots:
        raise FileNotFoundError(f"{archive}: no etc/an4_train.fileids inside the archive")
    return roots[0]
