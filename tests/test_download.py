"""Tests for asrkit.data.download (offline: file:// URLs and a fake HTTP opener)."""

from __future__ import annotations

import email.message
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from asrkit.data import download as dl
from asrkit.data.download import DownloadError, download, extract, file_checksum


@pytest.fixture
def data_tarball(tmp_path) -> Path:
    """A small .tar.gz holding corpus/a.txt and corpus/sub/b.bin."""
    src = tmp_path / "src"
    (src / "corpus" / "sub").mkdir(parents=True)
    (src / "corpus" / "a.txt").write_text("hello\n")
    (src / "corpus" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 400)
    archive = tmp_path / "remote" / "corpus.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "corpus", arcname="corpus")
    return archive


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_download_file_url_with_checksums(tmp_path, data_tarball):
    dest = tmp_path / "dl"
    got = download(data_tarball.as_uri(), dest, sha256=_sha256(data_tarball))
    assert got == dest / "corpus.tar.gz"
    assert got.read_bytes() == data_tarball.read_bytes()
    assert not (dest / "corpus.tar.gz.part").exists()
    md5 = hashlib.md5(data_tarball.read_bytes()).hexdigest()
    assert download(data_tarball.as_uri(), tmp_path / "dl2", md5=md5).is_file()
    assert file_checksum(got, "md5") == md5


def test_download_skips_complete_file(tmp_path, data_tarball, caplog):
    url = data_tarball.as_uri()
    got = download(url, tmp_path, sha256=_sha256(data_tarball))
    data_tarball.unlink()  # the source is gone: a second call must not need it
    caplog.set_level("INFO", logger="asrkit.data.download")
    assert download(url, tmp_path, sha256=file_checksum(got)) == got
    assert "already downloaded" in caplog.text


def test_download_resumes_truncated_part(tmp_path, data_tarball):
    data = data_tarball.read_bytes()
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "corpus.tar.gz.part").write_bytes(data[: len(data) // 3])
    got = download(data_tarball.as_uri(), dest, sha256=_sha256(data_tarball), chunk=1000)
    assert got.read_bytes() == data
    assert not (dest / "corpus.tar.gz.part").exists()


def test_download_bad_checksum_deletes_part(tmp_path, data_tarball):
    dest = tmp_path / "dl"
    with pytest.raises(DownloadError, match=r"corpus\.tar\.gz: sha256 mismatch: expected 0+"):
        download(data_tarball.as_uri(), dest, sha256="0" * 64)
    assert not (dest / "corpus.tar.gz").exists()
    assert not (dest / "corpus.tar.gz.part").exists()
    # a corrupted (wrong-content) .part is not trusted either
    dest.mkdir(exist_ok=True)
    (dest / "corpus.tar.gz.part").write_bytes(b"X" * 100)
    with pytest.raises(DownloadError, match="mismatch"):
        download(data_tarball.as_uri(), dest, sha256=_sha256(data_tarball))
    assert not (dest / "corpus.tar.gz.part").exists()
    assert download(data_tarball.as_uri(), dest, sha256=_sha256(data_tarball)).is_file()


def test_download_replaces_existing_file_with_wrong_checksum(tmp_path, data_tarball):
    (tmp_path / "corpus.tar.gz").write_bytes(b"stale")
    got = download(data_tarball.as_uri(), tmp_path, sha256=_sha256(data_tarball))
    assert got.read_bytes() == data_tarball.read_bytes()


def test_download_errors(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.invalid/x.tar.gz", tmp_path)
    with pytest.raises(DownloadError, match="file not found"):
        download((tmp_path / "missing.tar.gz").as_uri(), tmp_path / "dl")


class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int, length: int | None = None):
        super().__init__(body)
        self.status = status
        self.headers = email.message.Message()
        self.headers["Content-Length"] = str(len(body) if length is None else length)


def test_download_http_range_resume(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 50
    requests: list[urllib.request.Request] = []

    def fake_urlopen(req, timeout=None):
        requests.append(req)
        rng = req.get_header("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return _FakeResponse(payload[start:], 206)
        return _FakeResponse(payload, 200)

    monkeypatch.setattr(dl.urllib.request, "urlopen", fake_urlopen)
    (tmp_path / "x.bin.part").write_bytes(payload[:1000])
    got = download("https://example.invalid/data/x.bin", tmp_path,
                   sha256=hashlib.sha256(payload).hexdigest())
    assert got.read_bytes() == payload
    assert requests[0].get_header("Range") == "bytes=1000-"


def test_download_http_range_ignored_restarts(tmp_path, monkeypatch):
    payload = b"abcdef" * 100
    monkeypatch.setattr(dl.urllib.request, "urlopen",
                        lambda req, timeout=None: _FakeResponse(payload, 200))
    (tmp_path / "x.bin.part").write_bytes(b"junk")
    assert download("http://example.invalid/x.bin", tmp_path).read_bytes() == payload


def test_download_http_incomplete_keeps_part(tmp_path, monkeypatch):
    payload = b"abcdef" * 100
    monkeypatch.setattr(dl.urllib.request, "urlopen",
                        lambda req, timeout=None: _FakeResponse(payload[:300], 200, 600))
    with pytest.raises(DownloadError, match=r"incomplete download \(300 of 600 bytes"):
        download("http://example.invalid/x.bin", tmp_path)
    assert (tmp_path / "x.bin.part").stat().st_size == 300
    assert not (tmp_path / "x.bin").exists()


def test_download_http_error(tmp_path, monkeypatch):
    def fail(req, timeout=None):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", None, None)

    monkeypatch.setattr(dl.urllib.request, "urlopen", fail)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("http://example.invalid/x.bin", tmp_path)


def test_extract_and_skip_when_done(tmp_path, data_tarball):
    out = extract(data_tarball, tmp_path / "corpora")
    assert (out / "corpus" / "a.txt").read_text() == "hello\n"
    assert (out / "corpus" / "sub" / "b.bin").stat().st_size == 256 * 400
    (out / "corpus" / "a.txt").unlink()
    assert extract(data_tarball, out) == out  # marker present: skipped
    assert not (out / "corpus" / "a.txt").exists()


def test_extract_refuses_unsafe_members(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        data = b"pwned"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DownloadError, match="unsafe archive member"):
        extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not list((tmp_path / "out").glob(".extracted*"))


def test_extract_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball at all" * 10)
    with pytest.raises(DownloadError, match=r"bad\.tar\.gz: cannot extract"):
        extract(bad, tmp_path / "out")


def test_librispeech_lm_files_and_checksum_file(tmp_path):
    """OpenSLR 11 files from a file:// mirror, verified with a sha256sum file."""
    from asrkit.data.corpora.librispeech import download_librispeech_lm, read_checksums

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "librispeech-lexicon.txt").write_text("A\tAH0\n")
    (mirror / "3-gram.pruned.3e-7.arpa.gz").write_bytes(b"\x1f\x8bfake")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{file_checksum(p)}  *{p.name}\n" for p in sorted(mirror.iterdir())))
    table = read_checksums(sums)
    assert set(table) == {"librispeech-lexicon.txt", "3-gram.pruned.3e-7.arpa.gz"}
    out = download_librispeech_lm(tmp_path / "lm", ["librispeech-lexicon.txt",
                                                    "3-gram.pruned.3e-7.arpa.gz"],
                                  mirror.as_uri(), table)
    assert (out / "librispeech-lexicon.txt").read_text() == "A\tAH0\n"
    table["librispeech-lexicon.txt"] = "0" * 64
    with pytest.raises(DownloadError):
        download_librispeech_lm(tmp_path / "lm2", ["librispeech-lexicon.txt"], mirror.as_uri(),
                                table)
    with pytest.raises(ValueError, match="unknown LibriSpeech LM file"):
        download_librispeech_lm(tmp_path / "lm3", ["5-gram.arpa"], mirror.as_uri())
    sums.write_text("not-a-digest  x\n")
    with pytest.raises(ValueError, match="SHA256SUMS:1"):
        read_checksums(sums)
