"""Resumable, verified corpus downloads and safe archive extraction.

:func:`download` fetches ``http(s)://`` or ``file://`` URLs with :mod:`urllib.request` into
``<dest_dir>/<name>.part``, resumes a partial ``.part`` (HTTP ``Range`` header; ``file://`` by
seeking), verifies a SHA-256 or MD5 checksum when one is given and renames the finished file
into place with :func:`os.replace` (atomic), so ``<name>`` only ever exists complete. (The
``.part`` file is appended to directly rather than through :func:`asrkit.fileio.atomic_write`
because resuming needs it; nothing trusts a ``.part``.)

:func:`extract` unpacks a tar archive with :mod:`tarfile`'s ``"data"`` filter (PEP 706: no
absolute paths, no ``..``, no links leaving the destination, no device files) and writes a
marker so a second call skips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from asrkit.fileio import is_done, mark_done

__all__ = ["DownloadError", "download", "extract", "file_checksum"]

logger = logging.getLogger(__name__)

TIMEOUT_S = 60.0
"""Socket timeout in seconds for HTTP(S) requests."""


class DownloadError(RuntimeError):
    """A download failed, was incomplete, or its checksum did not match (names the URL)."""


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256",
                  chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in ``chunk``-byte blocks.

    Args:
        path: the file.
        algorithm: a :mod:`hashlib` name (``"sha256"``, ``"md5"``).
        chunk: block size in bytes.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def _verify(path: Path, expected: tuple[str, str] | None, chunk: int) -> bool:
    if expected is None:
        return True
    algo, digest = expected
    return file_checksum(path, algo, chunk) == digest


def _name_from_url(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise DownloadError(f"{url}: cannot derive a file name from the URL")
    return name


def _fetch_file(url: str, part: Path, chunk: int) -> None:
    """Copy a ``file://`` URL into ``part``, resuming after its current size by seeking."""
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not src.is_file():
        raise DownloadError(f"{url}: file not found ({src})")
    offset = part.stat().st_size if part.exists() else 0
    total = src.stat().st_size
    if offset > total:
        logger.warning("%s: partial file %s is larger than the source; restarting", url, part)
        offset = 0
    if offset:
        logger.info("%s: resuming at byte %d of %d", url, offset, total)
    with open(src, "rb") as fin, open(part, "ab" if offset else "wb") as fout:
        fin.seek(offset)
        shutil.copyfileobj(fin, fout, chunk)


def _fetch_http(url: str, part: Path, chunk: int) -> None:
    """Download an HTTP(S) URL into ``part``, resuming with a ``Range`` request if possible."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "asrkit-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: the .part is already complete (or the file changed);
            # the size/checksum checks of the caller decide.
            logger.info("%s: server reports nothing after byte %d", url, offset)
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status != 206:
            logger.info("%s: server ignored the Range request; restarting from byte 0", url)
            offset = 0
        elif offset:
            logger.info("%s: resuming at byte %d", url, offset)
        length = resp.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as fout:
            try:
                shutil.copyfileobj(resp, fout, chunk)
            except OSError as e:
                raise DownloadError(f"{url}: transfer interrupted at {fout.tell()} bytes ({e}); "
                                    "run again to resume") from None
    if expected_total is not None and part.stat().st_size != expected_total:
        raise DownloadError(f"{url}: incomplete download ({part.stat().st_size} of "
                            f"{expected_total} bytes, kept in {part}); run again to resume")


def download(url: str, dest_dir: str | os.PathLike, *, sha256: str | None = None,
             md5: str | None = None, chunk: int = 1 << 20) -> Path:
    """Download ``url`` into ``dest_dir`` (resumable, checksum-verified, atomic).

    Args:
        url: ``http://``, ``https://`` or ``file://`` URL; the file name is its last path
            component.
        dest_dir: directory for the file (created if missing).
        sha256: expected hex SHA-256 of the file, or None.
        md5: expected hex MD5 (used only when ``sha256`` is None), or None. With neither,
            the file is not verified (HTTP downloads still check ``Content-Length``).
        chunk: transfer and hashing block size in bytes.

    Returns:
        Path of the complete file ``dest_dir/<name>``. If it already exists and matches the
        checksum (or no checksum was given), nothing is downloaded.

    Raises:
        DownloadError: unsupported scheme, network/HTTP error, missing ``file://`` source, an
            incomplete transfer (the ``.part`` is kept so the next call resumes) or a checksum
            mismatch (the ``.part`` is deleted: its bytes are not trusted).
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https, file)")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = _name_from_url(url)
    dest = dest_dir / name
    part = dest_dir / f"{name}.part"
    expected = _expected(sha256, md5)
    if dest.is_file():
        if _verify(dest, expected, chunk):
            logger.info("%s: already downloaded%s", dest,
                        "" if expected else " (no checksum given; not verified)")
            return dest
        logger.warning("%s exists but its %s does not match; downloading again", dest,
                       expected[0] if expected else "checksum")
        dest.unlink()
    logger.info("downloading %s -> %s", url, dest)
    if scheme == "file":
        _fetch_file(url, part, chunk)
    else:
        _fetch_http(url, part, chunk)
    if expected is not None:
        algo, digest = expected
        got = file_checksum(part, algo, chunk)
        if got != digest:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: {algo} mismatch: expected {digest}, got {got}; "
                                "the partial file was deleted")
    os.replace(part, dest)
    logger.info("downloaded %s (%d bytes)%s", dest, dest.stat().st_size,
                f", {expected[0]} verified" if expected else ", not verified (no checksum)")
    return dest


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract a tar archive (any compression :mod:`tarfile` reads) safely into ``dest_dir``.

    Members are filtered with ``tarfile``'s ``"data"`` filter (PEP 706), which rejects
    absolute paths, ``..`` components, links pointing outside ``dest_dir`` and special
    files. A marker ``dest_dir/.extracted.<archive name>`` is written last; when it exists
    the call returns at once. An interrupted extraction has no marker and is redone.

    Args:
        archive: the ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
        dest_dir: destination directory (created if missing).

    Returns:
        ``dest_dir``.

    Raises:
        DownloadError: the archive is missing or not a readable tar file, a member is unsafe
            (``tarfile.FilterError``), or this Python lacks extraction filters (< 3.10.12 /
            3.11.4), where extracting untrusted archives would be unsafe.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    marker = f".extracted.{archive.name}"
    if is_done(dest_dir, marker):
        logger.info("%s: already extracted into %s", archive, dest_dir)
        return dest_dir
    if not hasattr(tarfile, "data_filter"):
        raise DownloadError("this Python has no tarfile extraction filters (PEP 706); upgrade "
                            "to >= 3.10.12 / 3.11.4 to extract archives safely")
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    dest_dir.mkdir(parents=True, exist_ok=True)
    logger.info("extracting %s -> %s", archive, dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest_dir, filter="data")
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: unsafe archive member refused: {e}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"{archive}: cannot extract: {e}") from None
    mark_done(dest_dir, marker)
    return dest_dir
