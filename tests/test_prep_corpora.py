"""Tests for the corpus importers (AN4, LibriSpeech, existing Kaldi dirs) on fake trees.

The last test runs on the real AN4 corpus when ``AN4_DIR`` points at it (read in place).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from asrkit.data.corpora.an4 import prepare_an4
from asrkit.data.corpora.kaldi import import_kaldi_dir
from asrkit.data.corpora.librispeech import (
    LIBRISPEECH_SHA256,
    LIBRISPEECH_URLS,
    prepare_librispeech,
    scan_librispeech_part,
)
from asrkit.data.datadir import DataDir, DataDirError, read_kaldi_map, validate_data_dir

# --- AN4 ---------------------------------------------------------------------------------------

TRAIN_SPK = {"fash": ["an251-fash-b", "an253-fash-b", "cen1-fash-b"],
             "mblw": ["an76-mblw-b", "cen2-mblw-b"],
             "fkai": ["an11-fkai-b", "an12-fkai-b", "an13-fkai-b"],
             "mjwl": ["an31-mjwl-b", "cen7-mjwl-b"]}
TEST_SPK = {"fcaw": ["an406-fcaw-b", "an407-fcaw-b"], "mmxg": ["cen3-mmxg-b"]}


def _make_an4(root: Path, write_audio, *, ext: str = ".wav", ext_in_fileids: bool = False
              ) -> Path:
    """Fake AN4 tree: train transcription with <s> </s> markers, test without."""
    for split, dirname, spks in (("train", "an4_clstk", TRAIN_SPK),
                                 ("test", "an4test_clstk", TEST_SPK)):
        fileids, trans = [], []
        for i, (spk, utts) in enumerate(spks.items()):
            for j, utt in enumerate(utts):
                rel = f"{dirname}/{spk}/{utt}"
                write_audio(root / "wav" / f"{rel}{ext}", seconds=0.2 + 0.1 * j,
                            freq=200.0 + 50 * i)
                fileids.append(rel + (ext if ext_in_fileids else ""))
                words = f"yes {spk} {j}".upper() if split == "train" else f"Go {j}"
                trans.append(f"<s> {words} </s> ({utt})" if split == "train"
                             else f"{words} ({utt})")
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / f"an4_{split}.fileids").write_text("\n".join(fileids) + "\n")
        (root / "etc" / f"an4_{split}.transcription").write_text("\n".join(trans) + "\n")
    return root


def test_prepare_an4_sphinxtrain_layout(tmp_path, data_write_audio):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    out = tmp_path / "data"
    dirs = prepare_an4(src, out, dev_speakers=1, seed=3)
    assert dirs == {"train": out / "train", "dev": out / "dev", "test": out / "test"}
    test_dir = out / "test"
    wav = src.resolve() / "wav" / "an4test_clstk"
    assert (test_dir / "text").read_bytes() == (
        b"fcaw-an406-fcaw-b GO 0\nfcaw-an407-fcaw-b GO 1\nmmxg-cen3-mmxg-b GO 0\n")
    assert (test_dir / "wav.scp").read_text() == (
        f"fcaw-an406-fcaw-b {wav}/fcaw/an406-fcaw-b.wav\n"
        f"fcaw-an407-fcaw-b {wav}/fcaw/an407-fcaw-b.wav\n"
        f"mmxg-cen3-mmxg-b {wav}/mmxg/cen3-mmxg-b.wav\n")
    assert (test_dir / "utt2spk").read_text() == (
        "fcaw-an406-fcaw-b fcaw\nfcaw-an407-fcaw-b fcaw\nmmxg-cen3-mmxg-b mmxg\n")
    assert (test_dir / "spk2utt").read_text() == (
        "fcaw fcaw-an406-fcaw-b fcaw-an407-fcaw-b\nmmxg mmxg-cen3-mmxg-b\n")
    assert (test_dir / "utt2dur").read_text() == (
        "fcaw-an406-fcaw-b 0.200\nfcaw-an407-fcaw-b 0.300\nmmxg-cen3-mmxg-b 0.200\n")
    train, dev = DataDir.load(out / "train"), DataDir.load(out / "dev")
    assert read_kaldi_map(out / "train" / "text")["fash-an251-fash-b"] == "YES FASH 0"
    dev_spk, train_spk = set(dev.utt2spk.values()), set(train.utt2spk.values())
    assert len(dev_spk) == 1 and not dev_spk & train_spk
    assert dev_spk | train_spk == set(TRAIN_SPK)
    assert len(dev.utt2spk) + len(train.utt2spk) == sum(map(len, TRAIN_SPK.values()))
    for d in dirs.values():
        validate_data_dir(d)
        assert (d / ".done").is_file()


def test_prepare_an4_deterministic_and_skips_when_done(tmp_path, data_write_audio):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    a = prepare_an4(src, tmp_path / "a", dev_utts=4, seed=1)
    b = prepare_an4(src, tmp_path / "b", dev_utts=4, seed=1)
    for name in ("train", "dev", "test"):
        for f in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
            assert (a[name] / f).read_bytes() == (b[name] / f).read_bytes()
    n_dev = len(read_kaldi_map(a["dev"] / "utt2spk"))
    assert 2 <= n_dev <= 6  # whole speakers, about dev_utts=4
    (a["test"] / "text").write_text("sentinel\n")
    prepare_an4(src, tmp_path / "a", dev_utts=4, seed=1)  # complete: nothing rewritten
    assert (a["test"] / "text").read_text() == "sentinel\n"
    # dev_utts=0: Kaldi's setup, every training utterance in train and no dev dir
    k = prepare_an4(src, tmp_path / "k", dev_utts=0)
    assert set(k) == {"train", "test"} and not (tmp_path / "k" / "dev").exists()
    n_all = len(read_kaldi_map(k["train"] / "utt2spk"))
    assert n_all == len(read_kaldi_map(a["train"] / "utt2spk")) + n_dev
    with pytest.raises(ValueError, match="dev_utts"):
        prepare_an4(src, tmp_path / "n", dev_utts=-1)


@pytest.mark.parametrize(("ext", "ext_in_fileids"), [(".raw", False), (".sph", True)])
def test_prepare_an4_cmu_distribution_layout(tmp_path, data_write_audio, ext, ext_in_fileids):
    _make_an4(tmp_path / "dl" / "an4", data_write_audio, ext=ext, ext_in_fileids=ext_in_fileids)
    dirs = prepare_an4(tmp_path / "dl", tmp_path / "data", dev_speakers=1)  # parent of an4/
    wav_scp = read_kaldi_map(dirs["test"] / "wav.scp")
    assert all(v.endswith(ext) for v in wav_scp.values())
    assert read_kaldi_map(dirs["test"] / "utt2dur")["fcaw-an407-fcaw-b"] == "0.300"
    for d in dirs.values():
        validate_data_dir(d)


def test_prepare_an4_fileid_without_transcript(tmp_path, data_write_audio):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    trans = src / "etc" / "an4_test.transcription"
    trans.write_text("".join(trans.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DataDirError, match=r"an4_test\.fileids:1: utterance 'an406-fcaw-b' "
                                           r"has no transcript"):
        prepare_an4(src, tmp_path / "data")


def test_prepare_an4_transcript_without_fileid(tmp_path, data_write_audio):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    with (src / "etc" / "an4_test.transcription").open("a") as f:
        f.write("EXTRA WORDS (an999-fcaw-b)\n")
    with pytest.raises(DataDirError, match=r"an4_test\.transcription:4: utterance "
                                           r"'an999-fcaw-b' is not listed"):
        prepare_an4(src, tmp_path / "data")


@pytest.mark.parametrize(("line", "pattern"), [
    ("<s> </s> (an406-fcaw-b)", r"transcription:1: empty transcript for utterance"),
    ("NO PARENS HERE", r"transcription:1: cannot parse"),
])
def test_prepare_an4_bad_transcription_line(tmp_path, data_write_audio, line, pattern):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    trans = src / "etc" / "an4_test.transcription"
    lines = trans.read_text().splitlines(keepends=True)
    trans.write_text(line + "\n" + "".join(lines[1:]))
    with pytest.raises(DataDirError, match=pattern):
        prepare_an4(src, tmp_path / "data")


def test_prepare_an4_missing_and_corrupt_audio(tmp_path, data_write_audio):
    src = _make_an4(tmp_path / "an4", data_write_audio)
    wav = src / "wav" / "an4test_clstk" / "fcaw" / "an407-fcaw-b.wav"
    wav.write_bytes(os.urandom(300))
    with pytest.raises(DataDirError, match=r"an4_test\.fileids:2: unreadable audio"):
        prepare_an4(src, tmp_path / "data")
    wav.unlink()
    with pytest.raises(DataDirError, match=r"an4_test\.fileids:2: audio for .* not found"):
        prepare_an4(src, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="not an AN4 corpus"):
        prepare_an4(tmp_path / "nothing", tmp_path / "data")


# --- LibriSpeech -------------------------------------------------------------------------------

def _make_librispeech(root: Path, write_audio) -> Path:
    """dev-clean with 2 speakers; chapter 84-121123 lacks one flac and has an extra one."""
    part = root / "LibriSpeech" / "dev-clean"
    layout = {("84", "121123"): ["0000", "0001", "0002"], ("174", "50561"): ["0000", "0001"]}
    for (spk, ch), utts in layout.items():
        lines = []
        for k, u in enumerate(utts):
            uid = f"{spk}-{ch}-{u}"
            write_audio(part / spk / ch / f"{uid}.flac", seconds=0.25 + 0.25 * k)
            lines.append(f"{uid} WORDS OF {spk} NUMBER {k}\n")
        (part / spk / ch / f"{spk}-{ch}.trans.txt").write_text("".join(lines))
    (part / "84" / "121123" / "84-121123-0002.flac").unlink()  # transcript, no audio
    write_audio(part / "84" / "121123" / "84-121123-0099.flac")  # audio, no transcript
    return root


def test_prepare_librispeech(tmp_path, data_write_audio, caplog):
    src = _make_librispeech(tmp_path / "ls", data_write_audio)
    with caplog.at_level(logging.WARNING, logger="asrkit.data.corpora.librispeech"):
        dirs = prepare_librispeech(src, tmp_path / "data", ["dev-clean"])
    d = tmp_path / "data" / "dev_clean"
    assert dirs == {"dev-clean": d}
    flac = (src / "LibriSpeech" / "dev-clean").resolve()
    assert (d / "wav.scp").read_text() == (
        f"174-50561-0000 {flac}/174/50561/174-50561-0000.flac\n"
        f"174-50561-0001 {flac}/174/50561/174-50561-0001.flac\n"
        f"84-121123-0000 {flac}/84/121123/84-121123-0000.flac\n"
        f"84-121123-0001 {flac}/84/121123/84-121123-0001.flac\n")
    assert (d / "text").read_text() == (
        "174-50561-0000 WORDS OF 174 NUMBER 0\n174-50561-0001 WORDS OF 174 NUMBER 1\n"
        "84-121123-0000 WORDS OF 84 NUMBER 0\n84-121123-0001 WORDS OF 84 NUMBER 1\n")
    assert (d / "spk2utt").read_text() == (
        "174 174-50561-0000 174-50561-0001\n84 84-121123-0000 84-121123-0001\n")
    assert (d / "utt2dur").read_text() == (
        "174-50561-0000 0.250\n174-50561-0001 0.500\n84-121123-0000 0.250\n"
        "84-121123-0001 0.500\n")
    validate_data_dir(d)
    log = caplog.text
    assert "84-121123-0002.flac is missing" in log and "84-121123.trans.txt" in log
    assert "84-121123-0099.flac has no line" in log
    assert "skipped 2 utterance(s)" in log
    scan = scan_librispeech_part(src / "LibriSpeech" / "dev-clean")
    assert len(scan.skipped) == 2
    assert set(LIBRISPEECH_URLS) == set(LIBRISPEECH_SHA256)
    assert LIBRISPEECH_URLS["dev-clean"].endswith("/resources/12/dev-clean.tar.gz")


def test_prepare_librispeech_missing_part_lists_existing(tmp_path, data_write_audio):
    src = _make_librispeech(tmp_path / "ls", data_write_audio)
    with pytest.raises(FileNotFoundError, match=r"'test-other' not found.*LibriSpeech/dev-clean"):
        prepare_librispeech(src, tmp_path / "data", ["test-other"])


def test_prepare_librispeech_bad_transcript(tmp_path, data_write_audio):
    src = _make_librispeech(tmp_path / "ls", data_write_audio)
    trans = src / "LibriSpeech" / "dev-clean" / "174" / "50561" / "174-50561.trans.txt"
    trans.write_text("174-50561-0000 A\n999-1-0001 B\n")
    with pytest.raises(DataDirError, match=r"174-50561\.trans\.txt:2: utterance id '999-1-0001'"):
        prepare_librispeech(src / "LibriSpeech", tmp_path / "data", ["dev-clean"])
    trans.write_bytes(b"174-50561-0000 A\n174-50561-0001 \xff\n")
    with pytest.raises(DataDirError, match=r"174-50561\.trans\.txt:2: invalid UTF-8"):
        prepare_librispeech(src, tmp_path / "data", ["dev-clean"])


# --- existing Kaldi dir ------------------------------------------------------------------------

def test_import_kaldi_dir(tmp_path, data_write_audio, caplog):
    wav = {u: data_write_audio(tmp_path / "w" / f"{u}.wav", seconds=0.3)
           for u in ("s1-a", "s1-b", "s2-a")}
    src = tmp_path / "kaldi"
    src.mkdir()
    (src / "wav.scp").write_text(f"s2-a {wav['s2-a']}\ns1-a {wav['s1-a']}\n"
                                 f"s1-b cat {wav['s1-b']} |\n")
    (src / "text").write_text("s2-a TWO\ns1-b ONE B\ns1-a ONE A\ns3-x ORPHAN\n")
    (src / "utt2spk").write_text("s2-a s2\ns1-a s1\ns1-b s1\n")
    (src / "spk2utt").write_text("junk junk\n")
    (src / "feats.scp").write_text("s1-a x.ark:1\n")
    with pytest.raises(DataDirError, match=r"wav\.scp.*--allow-pipe"):
        import_kaldi_dir(src, tmp_path / "out1")
    with caplog.at_level(logging.WARNING):
        out = import_kaldi_dir(src, tmp_path / "out2", allow_pipe=True)
    assert "dropping utterance 's3-x'" in caplog.text
    assert (out / "text").read_text() == "s1-a ONE A\ns1-b ONE B\ns2-a TWO\n"
    assert (out / "spk2utt").read_text() == "s1 s1-a s1-b\ns2 s2-a\n"
    assert (out / "utt2dur").read_text() == "s1-a 0.300\ns1-b 0.300\ns2-a 0.300\n"
    assert not (out / "feats.scp").exists()
    validate_data_dir(out, allow_pipe=True)
    assert (out / ".done").is_file()


def test_import_kaldi_dir_with_segments(tmp_path, data_write_audio):
    rec = data_write_audio(tmp_path / "rec.wav", seconds=3.0)
    src = tmp_path / "kaldi"
    src.mkdir()
    (src / "wav.scp").write_text(f"rec {rec}\nunused {rec}\n")
    (src / "segments").write_text("s-2 rec 1.5 3.0\ns-1 rec 0.0 1.5\n")
    (src / "text").write_text("s-1 A\ns-2 B\n")
    (src / "utt2spk").write_text("s-1 s\ns-2 s\n")
    out = import_kaldi_dir(src, tmp_path / "out")
    assert (out / "wav.scp").read_text() == f"rec {rec}\n"
    assert (out / "segments").read_text() == "s-1 rec 0 1.5\ns-2 rec 1.5 3\n"
    assert (out / "utt2dur").read_text() == "s-1 1.500\ns-2 1.500\n"


# --- real corpus -------------------------------------------------------------------------------

@pytest.mark.an4
@pytest.mark.skipif(not os.environ.get("AN4_DIR"), reason="set AN4_DIR to the AN4 corpus")
def test_prepare_an4_real_corpus(tmp_path):
    dirs = prepare_an4(os.environ["AN4_DIR"], tmp_path / "data")
    sets = {name: DataDir.load(d) for name, d in dirs.items()}
    assert len(sets["test"].utt2spk) == 130
    assert len(sets["train"].utt2spk) + len(sets["dev"].utt2spk) == 948
    assert 80 <= len(sets["dev"].utt2spk) <= 130
    dev_spk = set(sets["dev"].utt2spk.values())
    train_spk = set(sets["train"].utt2spk.values())
    assert dev_spk and not dev_spk & train_spk
    assert len(dev_spk | train_spk) == 74 and len(set(sets["test"].utt2spk.values())) == 10
    for name, d in dirs.items():
        validate_data_dir(d, check_audio=True)
        text = sets[name].text
        assert all(t == t.upper() and "<s>" not in t and "</S>" not in t for t in text.values())
        assert all(u.startswith(s + "-") for u, s in sets[name].utt2spk.items())
