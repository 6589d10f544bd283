"""LibriSpeech (OpenSLR 12) parts to Kaldi data directories.

The official layout, read in place, is ``<src>/<part>/<spk>/<chapter>/`` holding
``<spk>-<chapter>-<utt>.flac`` files and one ``<spk>-<chapter>.trans.txt`` whose lines are
``<spk>-<chapter>-<utt> WORDS...`` (upper case). ``<src>`` may be the ``LibriSpeech``
directory the archives extract to, or its parent.

The utterance id is the LibriSpeech id (already speaker-prefixed, as Kaldi wants), the
speaker the first field of it, and the part ``dev-clean`` is written to ``<out>/dev_clean``
(Kaldi's ``egs/librispeech/s5/local/data_prep.sh`` naming). Audio is not decoded: durations
come from the FLAC headers (``soundfile.info``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from asrkit.data.audio import AudioError, audio_duration
from asrkit.data.datadir import DataDir, DataDirError, read_kaldi_map, validate_data_dir
from asrkit.fileio import is_done, mark_done

__all__ = [
    "LIBRISPEECH_LM_FILES",
    "LIBRISPEECH_LM_URL",
    "LIBRISPEECH_PARTS",
    "LIBRISPEECH_SHA256",
    "LIBRISPEECH_URLS",
    "PartScan",
    "download_librispeech",
    "download_librispeech_lm",
    "prepare_librispeech",
    "read_checksums",
    "scan_librispeech_part",
]

logger = logging.getLogger(__name__)

LIBRISPEECH_PARTS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
                     "train-clean-360", "train-other-500")
"""The seven official parts."""

LIBRISPEECH_URLS = {part: f"https://www.openslr.org/resources/12/{part}.tar.gz"
                    for part in LIBRISPEECH_PARTS}
"""Official archive URL of each part (OpenSLR resource 12)."""

LIBRISPEECH_SHA256: dict[str, str | None] = {
    # As published in torchaudio.datasets.librispeech._CHECKSUMS (torchaudio 2.11); the
    # dev-clean value also matches the archive's independently reported digest.
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
"""SHA-256 of each archive in :data:`LIBRISPEECH_URLS` (pass to ``download(sha256=...)``)."""


@dataclass
class PartScan:
    """Result of :func:`scan_librispeech_part`.

    Attributes:
        data: the data directory contents (utt2dur in seconds).
        skipped: one message per skipped utterance/file, naming the file(s) involved.
    """

    data: DataDir
    skipped: list[str] = field(default_factory=list)


def _resolve_part(src: Path, part: str) -> Path:
    for cand in (src / part, src / "LibriSpeech" / part):
        if cand.is_dir():
            return cand
    existing = sorted(p.name for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if (src / "LibriSpeech").is_dir():
        existing += [f"LibriSpeech/{p.name}" for p in sorted((src / "LibriSpeech").iterdir())
                     if p.is_dir()]
    raise FileNotFoundError(
        f"{src}: LibriSpeech part {part!r} not found (looked for {src / part} and "
        f"{src / 'LibriSpeech' / part}); existing directories: "
        f"{', '.join(existing) if existing else 'none'}. Download it from "
        f"{LIBRISPEECH_URLS.get(part, 'https://www.openslr.org/12')}")


def scan_librispeech_part(part_dir: str | os.PathLike) -> PartScan:
    """Collect one LibriSpeech part into a :class:`~asrkit.data.datadir.DataDir`.

    An utterance listed in a ``.trans.txt`` without its ``.flac``, a ``.flac`` without a
    transcript line, and a chapter without a ``.trans.txt`` are skipped, each logged as a
    warning naming the files and recorded in :attr:`PartScan.skipped`.

    Args:
        part_dir: e.g. ``.../LibriSpeech/dev-clean``.

    Returns:
        The :class:`PartScan`; ``wav.scp`` holds absolute ``.flac`` paths.

    Raises:
        DataDirError: a ``.trans.txt`` line is malformed (invalid UTF-8, blank, empty
            transcript, duplicate id) or its id does not start with ``<spk>-<chapter>-``;
            a ``.flac`` header is unreadable; the part holds no utterances.
    """
    part_dir = Path(part_dir)
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] = {}
    skipped: list[str] = []

    def skip(msg: str) -> None:
        logger.warning("%s: skipping %s", part_dir, msg)
        skipped.append(msg)

    for spk_dir in sorted(p for p in part_dir.iterdir() if p.is_dir()):
        for ch_dir in sorted(p for p in spk_dir.iterdir() if p.is_dir()):
            prefix = f"{spk_dir.name}-{ch_dir.name}"
            trans_path = ch_dir / f"{prefix}.trans.txt"
            flacs = {p.name[:-len(".flac")]: p for p in ch_dir.glob("*.flac")}
            if not trans_path.is_file():
                for utt in sorted(flacs):
                    skip(f"utterance {utt!r}: {flacs[utt]} has no transcript ({trans_path} "
                         "missing)")
                continue
            trans = read_kaldi_map(trans_path)
            for no, utt in enumerate(trans, start=1):
                if not utt.startswith(prefix + "-"):
                    raise DataDirError(trans_path, no, f"utterance id {utt!r} does not start "
                                                       f"with {prefix + '-'!r}")
            for utt in sorted(set(trans) - set(flacs)):
                skip(f"utterance {utt!r}: listed in {trans_path} but "
                     f"{ch_dir / (utt + '.flac')} is missing")
            for utt in sorted(set(flacs) - set(trans)):
                skip(f"utterance {utt!r}: {flacs[utt]} has no line in {trans_path}")
            for utt in sorted(set(flacs) & set(trans)):
                spec = str(flacs[utt].resolve())
                try:
                    utt2dur[utt] = audio_duration(spec)
                except AudioError as e:
                    raise DataDirError(flacs[utt], None, f"unreadable audio: {e}") from e
                wav_scp[utt] = spec
                text[utt] = trans[utt]
                utt2spk[utt] = spk_dir.name
    if not utt2spk:
        raise DataDirError(part_dir, None, "no utterances found; expected "
                                           "<spk>/<chapter>/<spk>-<chapter>-<utt>.flac files")
    return PartScan(DataDir(wav_scp=wav_scp, text=text, utt2spk=utt2spk, utt2dur=utt2dur),
                    skipped)


def prepare_librispeech(src: str | os.PathLike, out: str | os.PathLike, parts: list[str]
                        ) -> dict[str, Path]:
    """Prepare LibriSpeech parts as Kaldi data directories ``out/<part with _ for ->``.

    Each directory gets ``wav.scp`` (absolute FLAC paths into ``src``), ``text``,
    ``utt2spk``, ``spk2utt`` and ``utt2dur``, sorted in C order, is checked with
    :func:`~asrkit.data.datadir.validate_data_dir` and marked complete with ``.done``; a
    part whose directory is already complete is skipped. Skipped utterances (see
    :func:`scan_librispeech_part`) are logged one by one and counted in a summary warning.

    Args:
        src: the ``LibriSpeech`` directory (or its parent).
        out: output parent directory.
        parts: e.g. ``["train-clean-100", "dev-clean"]``.

    Returns:
        ``{part: out/part_with_underscores}``, e.g. ``{"dev-clean": out/"dev_clean"}``.

    Raises:
        FileNotFoundError: a part's directory does not exist (the message lists what does).
        DataDirError: see :func:`scan_librispeech_part`.
    """
    src, out = Path(src), Path(out)
    result: dict[str, Path] = {}
    for part in parts:
        d = out / part.replace("-", "_")
        result[part] = d
        if is_done(d):
            logger.info("%s: already prepared; skipping", d)
            continue
        part_dir = _resolve_part(src, part)
        logger.info("preparing LibriSpeech %s from %s into %s", part, part_dir, d)
        scan = scan_librispeech_part(part_dir)
        (d / ".done").unlink(missing_ok=True)
        scan.data.write(d)
        validate_data_dir(d, check_audio=False)  # headers were read for utt2dur
        mark_done(d)
        if scan.skipped:
            logger.warning("%s: skipped %d utterance(s) with missing audio or transcript (see "
                           "the warnings above)", part, len(scan.skipped))
        logger.info("%s: %d utterances, %d speakers, %.2f h", d, len(scan.data.utt2spk),
                    len(set(scan.data.utt2spk.values())),
                    sum((scan.data.utt2dur or {}).values()) / 3600)
    return result


LIBRISPEECH_LM_URL = "https://www.openslr.org/resources/11"
"""OpenSLR resource 11: LibriSpeech's lexicon, vocabulary and n-gram LMs."""

LIBRISPEECH_LM_FILES = ("librispeech-lexicon.txt", "librispeech-vocab.txt",
                        "3-gram.pruned.3e-7.arpa.gz", "3-gram.pruned.1e-7.arpa.gz",
                        "3-gram.arpa.gz", "4-gram.arpa.gz")
"""The files of :data:`LIBRISPEECH_LM_URL` the recipes use: the 200 k-word lexicon (G2P
pronunciations for words CMUdict lacks), its vocabulary, the pruned 3-grams Kaldi calls
``tgsmall`` (3e-7) and ``tgmed`` (1e-7), the full 3-gram (``tglarge``) and 4-gram
(``fglarge``). Their checksums are not pinned here (they could not be verified offline);
pass them with ``checksums`` (``sha256sum`` output) to have every file verified."""


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """Read ``sha256sum`` output (``<hex>  <name>`` per line, ``*`` binary marker allowed).

    Returns:
        ``{file name (last path component): lower-case hex digest}``.

    Raises:
        ValueError: a line that is not ``<64 hex digits> <name>`` (the file and line named).
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or len(fields[0]) != 64 or \
                    any(c not in "0123456789abcdefABCDEF" for c in fields[0]):
                raise ValueError(f"{path}:{no}: expected '<sha256 hex>  <file name>' "
                                 f"(sha256sum output), got {line.strip()!r}")
            out[Path(fields[1].lstrip("*")).name] = fields[0].lower()
    return out


def download_librispeech_lm(dest_dir: str | os.PathLike, files: list[str] | None = None,
                            base_url: str | None = None,
                            checksums: dict[str, str] | None = None) -> Path:
    """Download LibriSpeech's lexicon and LMs (OpenSLR 11) into ``dest_dir``; resumable.

    Args:
        dest_dir: where the files go (created).
        files: names from :data:`LIBRISPEECH_LM_FILES` (default: all).
        base_url: mirror (``<base_url>/<name>``, ``file://`` allowed); default
            :data:`LIBRISPEECH_LM_URL`.
        checksums: ``{name: sha256}`` to verify (:func:`read_checksums`); unverified
            otherwise (HTTP still checks the length).

    Returns:
        ``dest_dir``.

    Raises:
        ValueError: an unknown file name.
        asrkit.data.download.DownloadError: network or checksum failure.
    """
    from asrkit.data.download import download

    dest = Path(dest_dir)
    base = (base_url or LIBRISPEECH_LM_URL).rstrip("/")
    for name in files or LIBRISPEECH_LM_FILES:
        if name not in LIBRISPEECH_LM_FILES:
            raise ValueError(f"unknown LibriSpeech LM file {name!r}; known: "
                             f"{', '.join(LIBRISPEECH_LM_FILES)}")
        download(f"{base}/{name}", dest, sha256=(checksums or {}).get(name))
    return dest


def download_librispeech(dest_dir: str | os.PathLike, parts: list[str],
                         base_url: str | None = None,
                         checksums: dict[str, str] | None = None) -> Path:
    """Download (resumable, SHA-256 checked) and unpack LibriSpeech parts; return the root.

    Args:
        dest_dir: where archives are stored and unpacked.
        parts: official part names (see :data:`LIBRISPEECH_PARTS`).
        base_url: mirror prefix (``<base_url>/<part>.tar.gz``, ``file://`` allowed); default
            the OpenSLR URLs of :data:`LIBRISPEECH_URLS`.
        checksums: ``{archive name: sha256}`` replacing :data:`LIBRISPEECH_SHA256` for the
            archives it names (a mirror of other archives, e.g. a test fixture).

    Returns:
        The ``LibriSpeech`` folder holding one folder per part.

    Raises:
        ValueError: unknown part name.
        asrkit.data.download.DownloadError: network, checksum or extraction failure.
    """
    from asrkit.data.download import download, extract

    dest_dir = Path(dest_dir)
    for part in parts:
        if part not in LIBRISPEECH_URLS:
            raise ValueError(f"unknown LibriSpeech part {part!r}; known: {LIBRISPEECH_PARTS}")
        url = f"{base_url.rstrip('/')}/{part}.tar.gz" if base_url else LIBRISPEECH_URLS[part]
        sha = (checksums or {}).get(f"{part}.tar.gz", LIBRISPEECH_SHA256.get(part))
        archive = download(url, dest_dir, sha256=sha)
        marker = dest_dir / f".{part}.extracted"  # written once the whole archive is out
        if not marker.is_file():
            extract(archive, dest_dir)
            marker.touch()
    return dest_dir / "LibriSpeech"
