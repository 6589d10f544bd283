"""Tests for asrkit.data.datadir: Kaldi data-dir I/O, validation and fixing."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from asrkit.data.datadir import (
    DataDir,
    DataDirError,
    fix_data_dir,
    read_kaldi_map,
    spk2utt_from_utt2spk,
    validate_data_dir,
    write_kaldi_map,
)


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


@pytest.fixture
def data_good_dir(tmp_path, data_write_audio) -> Path:
    """A valid 3-utterance, 2-speaker data dir with real audio, written by hand."""
    d = tmp_path / "data" / "train"
    audio = {u: data_write_audio(tmp_path / "wav" / f"{u}.wav", seconds=0.5)
             for u in ("spk1-u1", "spk1-u2", "spk2-u1")}
    _write(d / "wav.scp", "".join(f"{u} {p}\n" for u, p in audio.items()))
    _write(d / "text", "spk1-u1 HELLO WORLD\nspk1-u2 YES\nspk2-u1 NO\n")
    _write(d / "utt2spk", "spk1-u1 spk1\nspk1-u2 spk1\nspk2-u1 spk2\n")
    _write(d / "spk2utt", "spk1 spk1-u1 spk1-u2\nspk2 spk2-u1\n")
    _write(d / "utt2dur", "spk1-u1 0.500\nspk1-u2 0.500\nspk2-u1 0.500\n")
    return d


# --- read_kaldi_map / write_kaldi_map ---------------------------------------------------------

def test_read_kaldi_map_keeps_order_and_rest_of_line(tmp_path):
    p = _write(tmp_path / "text", "b  TWO  WORDS \na\tONE\n")
    assert list(read_kaldi_map(p).items()) == [("b", "TWO  WORDS"), ("a", "ONE")]


def test_read_kaldi_map_key_only_when_allowed(tmp_path):
    p = _write(tmp_path / "text", "u1 A\nu2\n")
    assert read_kaldi_map(p, allow_empty_value=True) == {"u1": "A", "u2": ""}
    with pytest.raises(DataDirError, match=r"text:2: empty transcript for utterance 'u2'"
                       ) as ei:
        read_kaldi_map(p)
    assert ei.value.path == p and ei.value.line == 2


@pytest.mark.parametrize(("content", "line", "pattern"), [
    (b"u1 A\nu2 \xff\xfe B\n", 2, "invalid UTF-8"),
    (b"u1 A\nu2 B\nu1 C\n", 3, r"duplicate key 'u1' \(first on line 1\)"),
    (b"u1 A\n\nu2 B\n", 2, "blank line"),
    (b"u1 A\r\nu2 B\r\n", 1, "carriage return"),
    (b"u1 A\n  u2 B\n", 2, "starts with whitespace"),
])
def test_read_kaldi_map_errors_name_file_and_line(tmp_path, content, line, pattern):
    p = _write(tmp_path / "text", content)
    with pytest.raises(DataDirError, match=pattern) as ei:
        read_kaldi_map(p)
    assert str(ei.value).startswith(f"{p}:{line}: ")
    assert ei.value.line == line


def test_read_kaldi_map_empty_value_generic(tmp_path):
    p = _write(tmp_path / "utt2lang", "u1 en\nu2\n")
    with pytest.raises(DataDirError, match=r"utt2lang:2: empty value for key 'u2'"):
        read_kaldi_map(p)


def test_read_kaldi_map_missing_file(tmp_path):
    with pytest.raises(DataDirError, match="nope: file not found"):
        read_kaldi_map(tmp_path / "nope")


def test_write_kaldi_map_sorts_in_c_order(tmp_path):
    p = tmp_path / "out" / "text"
    write_kaldi_map(p, {"b": "x", "a_b": "y", "a-b": "z", "B": "w", "\u00e9": "e", "a": "v"})
    # LC_ALL=C sort: bytes order ('B' 0x42 < 'a' 0x61; '-' 0x2d < '_' 0x5f; 0xc3 last)
    assert p.read_bytes() == "B w\na v\na-b z\na_b y\nb x\n\u00e9 e\n".encode()


def test_write_kaldi_map_rejects_bad_keys_and_values(tmp_path):
    with pytest.raises(DataDirError, match="invalid key 'a b'"):
        write_kaldi_map(tmp_path / "x", {"a b": "1"})
    with pytest.raises(DataDirError, match="newline"):
        write_kaldi_map(tmp_path / "x", {"a": "1\n2"})
    assert not (tmp_path / "x").exists()  # atomic: nothing half-written


def test_spk2utt_from_utt2spk():
    got = spk2utt_from_utt2spk({"s2-b": "s2", "s1-b": "s1", "s1-a": "s1"})
    assert list(got.items()) == [("s1", "s1-a s1-b"), ("s2", "s2-b")]


def test_error_is_picklable():
    e = DataDirError("data/text", 3, "empty transcript")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) == "data/text:3: empty transcript" and e2.line == 3


# --- DataDir -----------------------------------------------------------------------------------

def test_datadir_write_is_sorted_byte_for_byte(tmp_path):
    dd = DataDir(
        wav_scp={"s2-u1": "/w/b.wav", "s1-u1": "sox /w/a.wav -t wav - |"},
        text={"s2-u1": "NO", "s1-u1": "YES PLEASE"},
        utt2spk={"s2-u1": "s2", "s1-u1": "s1"},
        utt2dur={"s2-u1": 1.23456, "s1-u1": 2.0},
    )
    out = tmp_path / "d"
    dd.write(out)
    assert (out / "wav.scp").read_text() == "s1-u1 sox /w/a.wav -t wav - |\ns2-u1 /w/b.wav\n"
    assert (out / "text").read_text() == "s1-u1 YES PLEASE\ns2-u1 NO\n"
    assert (out / "utt2spk").read_text() == "s1-u1 s1\ns2-u1 s2\n"
    assert (out / "spk2utt").read_text() == "s1 s1-u1\ns2 s2-u1\n"
    assert (out / "utt2dur").read_text() == "s1-u1 2.000\ns2-u1 1.235\n"
    assert not (out / "segments").exists()
    validate_data_dir(out, check_audio=False)
    back = DataDir.load(out)
    assert back.utt_ids == ["s1-u1", "s2-u1"]
    assert back.text == dd.text and back.utt2dur == {"s1-u1": 2.0, "s2-u1": 1.235}


def test_datadir_segments_roundtrip_and_subset(tmp_path):
    dd = DataDir(
        wav_scp={"rec1": "/w/1.wav", "rec2": "/w/2.wav"},
        text={"s1-a": "A", "s1-b": "B", "s2-a": "C"},
        utt2spk={"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"},
        segments={"s1-a": ("rec1", 0.0, 1.5), "s1-b": ("rec1", 1.5, 3.25),
                  "s2-a": ("rec2", 0.1234567, 2.0)},
    )
    dd.write(tmp_path / "d")
    assert (tmp_path / "d" / "segments").read_text() == (
        "s1-a rec1 0 1.5\ns1-b rec1 1.5 3.25\ns2-a rec2 0.123457 2\n")
    validate_data_dir(tmp_path / "d", check_audio=False)
    sub = DataDir.load(tmp_path / "d").subset(["s2-a"])
    assert sub.wav_scp == {"rec2": "/w/2.wav"} and list(sub.segments) == ["s2-a"]
    with pytest.raises(KeyError, match="nope"):
        dd.subset(["nope"])
    sub.write(tmp_path / "d")  # rewrite in place; segments stays, no utt2dur
    validate_data_dir(tmp_path / "d", check_audio=False)


def test_datadir_load_requires_files(tmp_path, data_good_dir):
    (data_good_dir / "text").unlink()
    with pytest.raises(DataDirError, match=r"text: required file missing"):
        DataDir.load(data_good_dir)


def test_datadir_load_bad_utt2dur(data_good_dir):
    _write(data_good_dir / "utt2dur", "spk1-u1 0.5\nspk1-u2 abc\nspk2-u1 0.5\n")
    with pytest.raises(DataDirError, match=r"utt2dur:2: duration 'abc'"):
        DataDir.load(data_good_dir)


# --- validate_data_dir -------------------------------------------------------------------------

def test_validate_good_dir_with_audio(data_good_dir):
    validate_data_dir(data_good_dir)


def test_validate_corrupt_wav_names_wav_scp_line(data_good_dir):
    wav = Path(read_kaldi_map(data_good_dir / "wav.scp")["spk1-u2"])
    wav.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(DataDirError, match=r"wav\.scp:2: recording 'spk1-u2'.*cannot read"):
        validate_data_dir(data_good_dir)
    validate_data_dir(data_good_dir, check_audio=False)


def test_validate_missing_transcript(data_good_dir):
    _write(data_good_dir / "text", "spk1-u1 HELLO WORLD\nspk2-u1 NO\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: utterance 'spk1-u2' is missing from "
                                           r"text"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_extra_transcript(data_good_dir):
    _write(data_good_dir / "text", "spk1-u1 A\nspk1-u2 B\nspk1-u3 C\nspk2-u1 D\n")
    with pytest.raises(DataDirError, match=r"text:3: utterance 'spk1-u3' is missing from "
                                           r"utt2spk"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_missing_recording(data_good_dir):
    lines = (data_good_dir / "wav.scp").read_text().splitlines(keepends=True)
    _write(data_good_dir / "wav.scp", lines[0] + lines[2])
    with pytest.raises(DataDirError, match=r"utt2spk:2: utterance 'spk1-u2' is missing from "
                                           r"wav\.scp"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_duplicate_id(data_good_dir):
    _write(data_good_dir / "text", "spk1-u1 A\nspk1-u2 B\nspk1-u2 B\nspk2-u1 D\n")
    with pytest.raises(DataDirError, match=r"text:3: duplicate key 'spk1-u2'"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_empty_text(data_good_dir):
    _write(data_good_dir / "text", "spk1-u1 A\nspk1-u2\nspk2-u1 D\n")
    with pytest.raises(DataDirError, match=r"text:2: empty transcript for utterance 'spk1-u2'"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_non_utf8_text(data_good_dir):
    _write(data_good_dir / "text", b"spk1-u1 A\nspk1-u2 B\nspk2-u1 caf\xe9\n")
    with pytest.raises(DataDirError, match=r"text:3: invalid UTF-8"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_unsorted(data_good_dir):
    _write(data_good_dir / "utt2spk", "spk1-u2 spk1\nspk1-u1 spk1\nspk2-u1 spk2\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: not sorted: 'spk1-u1' comes after "
                                           r"'spk1-u2'.*C \(byte\) order"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_c_order_not_locale_order(tmp_path):
    # 'B' < 'a' in C order, although a locale-aware sort puts 'a' first
    d = tmp_path / "d"
    DataDir(wav_scp={"a": "/x", "B": "/y"}, text={"a": "X", "B": "Y"},
            utt2spk={"a": "a", "B": "B"}).write(d)
    assert (d / "text").read_text() == "B Y\na X\n"
    validate_data_dir(d, check_audio=False)
    _write(d / "text", "a X\nB Y\n")
    with pytest.raises(DataDirError, match=r"text:2: not sorted"):
        validate_data_dir(d, check_audio=False)


def test_validate_spk2utt_inconsistent(data_good_dir):
    _write(data_good_dir / "spk2utt", "spk1 spk1-u1\nspk2 spk2-u1 spk1-u2\n")
    with pytest.raises(DataDirError, match=r"spk2utt:2: utterance 'spk1-u2' listed under "
                                           r"'spk2' but belongs to speaker 'spk1'"):
        validate_data_dir(data_good_dir, check_audio=False)
    _write(data_good_dir / "spk2utt", "spk1 spk1-u1\nspk2 spk2-u1\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: utterance 'spk1-u2' of speaker 'spk1' "
                                           r"is missing from spk2utt"):
        validate_data_dir(data_good_dir, check_audio=False)
    (data_good_dir / "spk2utt").unlink()
    with pytest.raises(DataDirError, match=r"spk2utt: required file missing"):
        validate_data_dir(data_good_dir, check_audio=False)


@pytest.mark.parametrize("bad", ["0", "-1.0", "nan", "x"])
def test_validate_utt2dur_positive(data_good_dir, bad):
    _write(data_good_dir / "utt2dur", f"spk1-u1 0.5\nspk1-u2 {bad}\nspk2-u1 0.5\n")
    with pytest.raises(DataDirError, match=r"utt2dur:2: duration"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_utt2spk_two_speakers(data_good_dir):
    _write(data_good_dir / "utt2spk", "spk1-u1 spk1\nspk1-u2 spk1 extra\nspk2-u1 spk2\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: .*exactly one speaker id"):
        validate_data_dir(data_good_dir, check_audio=False)


def test_validate_speaker_prefix_is_only_a_warning(tmp_path, caplog):
    d = tmp_path / "d"
    DataDir(wav_scp={"u1": "/x", "u2": "/y"}, text={"u1": "A", "u2": "B"},
            utt2spk={"u1": "spkA", "u2": "spkB"}).write(d)
    with caplog.at_level(logging.WARNING, logger="asrkit.data.datadir"):
        validate_data_dir(d, check_audio=False)
    assert any("do not start with their speaker id" in r.getMessage() for r in caplog.records)


def test_validate_pipe_needs_allow_pipe(data_good_dir):
    wav = read_kaldi_map(data_good_dir / "wav.scp")
    wav["spk2-u1"] = f"cat {wav['spk2-u1']} |"
    write_kaldi_map(data_good_dir / "wav.scp", wav)
    with pytest.raises(DataDirError, match=r"wav\.scp:3: .*--allow-pipe"):
        validate_data_dir(data_good_dir)
    validate_data_dir(data_good_dir, allow_pipe=True)


def test_validate_segments(tmp_path, data_write_audio):
    d = tmp_path / "d"
    rec = data_write_audio(tmp_path / "rec.wav", seconds=2.0)
    dd = DataDir(wav_scp={"rec": str(rec)}, text={"s-1": "A", "s-2": "B"},
                 utt2spk={"s-1": "s", "s-2": "s"},
                 segments={"s-1": ("rec", 0.0, 1.0), "s-2": ("rec", 1.0, 2.3)})
    dd.write(d)
    validate_data_dir(d)
    _write(d / "segments", "s-1 rec 0 1\ns-2 rec 1 3.5\n")
    with pytest.raises(DataDirError, match=r"segments:2: segment 's-2' ends at 3.500 s"):
        validate_data_dir(d)
    _write(d / "segments", "s-1 rec 0 1\ns-2 other 1 2\n")
    with pytest.raises(DataDirError, match=r"segments:2: recording 'other'"):
        validate_data_dir(d, check_audio=False)
    _write(d / "segments", "s-1 rec 0 1\ns-2 rec 2 1\n")
    with pytest.raises(DataDirError, match=r"segments:2: .*0 <= start < end"):
        validate_data_dir(d, check_audio=False)


# --- fix_data_dir ------------------------------------------------------------------------------

def test_fix_data_dir(data_good_dir, caplog):
    wav = (data_good_dir / "wav.scp").read_text().splitlines(keepends=True)
    _write(data_good_dir / "wav.scp", wav[2] + wav[0] + wav[1])  # unsorted
    _write(data_good_dir / "text", "spk2-u1 NO\nspk1-u1 HELLO\nspk1-u2\nspk3-x ORPHAN\n")
    _write(data_good_dir / "spk2utt", "bogus x\n")
    with caplog.at_level(logging.WARNING, logger="asrkit.data.datadir"):
        dropped = fix_data_dir(data_good_dir)
    assert dropped == ["spk1-u2", "spk3-x"]
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "empty transcript" in msgs and "missing from utt2spk, wav.scp, utt2dur" in msgs
    validate_data_dir(data_good_dir)
    assert (data_good_dir / "text").read_text() == "spk1-u1 HELLO\nspk2-u1 NO\n"
    assert (data_good_dir / "spk2utt").read_text() == "spk1 spk1-u1\nspk2 spk2-u1\n"
    assert (data_good_dir / "utt2dur").read_text() == "spk1-u1 0.500\nspk2-u1 0.500\n"
    assert fix_data_dir(data_good_dir) == []  # idempotent


def test_fix_data_dir_segments_drops_unused_recordings(tmp_path):
    d = tmp_path / "d"
    _write(d / "wav.scp", "r2 /b.wav\nr1 /a.wav\n")
    _write(d / "segments", "s-1 r1 0 1\ns-2 r3 0 1\n")
    _write(d / "text", "s-1 A\ns-2 B\n")
    _write(d / "utt2spk", "s-1 s\ns-2 s\n")
    assert fix_data_dir(d) == ["s-2"]
    assert (d / "wav.scp").read_text() == "r1 /a.wav\n"
    validate_data_dir(d, check_audio=False)


def test_fix_data_dir_refuses_duplicates(data_good_dir):
    _write(data_good_dir / "text", "spk1-u1 A\nspk1-u1 B\n")
    with pytest.raises(DataDirError, match=r"text:2: duplicate key"):
        fix_data_dir(data_good_dir)


# --- the fix command named by the messages ------------------------------------------------------

@pytest.mark.parametrize("breakage,pattern", [
    ("unsorted", r"text:2: not sorted.*\(fix with: asrkit prep kaldi {d} {d}_fixed\)"),
    ("spk2utt", r"spk2utt:2: .*\(regenerate spk2utt with: asrkit prep kaldi {d} {d}_fixed\)"),
    ("no_spk2utt", (r"spk2utt: required file missing \(regenerate it with: asrkit prep kaldi "
                    r"{d} {d}_fixed\)")),
    ("missing_text", (r"utterance 'spk2-u1' is missing from text .*\(fix with: asrkit prep "
                      r"kaldi {d} {d}_fixed\)")),
])
def test_validation_names_the_asrkit_command_that_fixes_it(data_good_dir, capsys, breakage,
                                                           pattern):
    import re

    from asrkit.cli import main

    d = data_good_dir
    if breakage == "unsorted":
        _write(d / "text", "spk1-u2 YES\nspk1-u1 HELLO WORLD\nspk2-u1 NO\n")
    elif breakage == "spk2utt":
        _write(d / "spk2utt", "spk1 spk1-u1\nspk2 spk2-u1 spk1-u2\n")
    elif breakage == "no_spk2utt":
        (d / "spk2utt").unlink()
    else:
        _write(d / "text", "spk1-u1 HELLO WORLD\nspk1-u2 YES\n")
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d)
    assert re.search(pattern.format(d=re.escape(str(d))), str(e.value)), str(e.value)
    assert main(["validate", str(d)]) == 2
    assert "asrkit prep kaldi" in capsys.readouterr().err
    # the command named does fix it
    assert main(["prep", "kaldi", str(d), f"{d}_fixed"]) == 0
    validate_data_dir(Path(f"{d}_fixed"))


def _dd(utts: dict[str, str]) -> DataDir:
    return DataDir(wav_scp={u: f"/a/{u}.wav" for u in utts}, text={u: "A B" for u in utts},
                   utt2spk=dict(utts), utt2dur={u: 1.0 for u in utts})


def test_subset_speakers_keeps_or_drops_and_names_unknown_speakers():
    d = _dd({"s1-a": "s1", "s1-b": "s1", "s2-a": "s2", "s3-a": "s3"})
    assert set(d.subset_speakers(["s1", "s3"]).utt2spk) == {"s1-a", "s1-b", "s3-a"}
    assert set(d.subset_speakers(["s1", "s3"], exclude=True).utt2spk) == {"s2-a"}
    with pytest.raises(KeyError, match="s9"):
        d.subset_speakers(["s1", "s9"])


def test_combine_concatenates_and_refuses_duplicate_ids():
    a, b = _dd({"s1-a": "s1"}), _dd({"s2-a": "s2", "s2-b": "s2"})
    c = DataDir.combine([("a", a), ("b", b)])
    assert set(c.utt2spk) == {"s1-a", "s2-a", "s2-b"} and c.utt2dur == {
        "s1-a": 1.0, "s2-a": 1.0, "s2-b": 1.0}
    no_dur = _dd({"s3-a": "s3"})
    no_dur.utt2dur = None
    assert DataDir.combine([("a", a), ("c", no_dur)]).utt2dur is None
    with pytest.raises(ValueError, match="'s1-a' is in both a and a2"):
        DataDir.combine([("a", a), ("a2", _dd({"s1-a": "s1"}))])
    with pytest.raises(ValueError, match="no data dirs"):
        DataDir.combine([])


def test_cli_subset_and_combine(tmp_path, capsys):
    from asrkit.cli import main

    src = tmp_path / "src"
    _dd({"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"}).write(src)
    assert main(["subset", str(src), str(tmp_path / "x"), "--speakers", "s1"]) == 0
    assert main(["subset", str(src), str(tmp_path / "y"), "--speakers", "s1", "--exclude"]) == 0
    assert (tmp_path / "y" / "spk2utt").read_text() == "s2 s2-a\n"
    assert main(["combine", str(tmp_path / "z"), str(tmp_path / "x"), str(tmp_path / "y")]) == 0
    assert (tmp_path / "z" / "utt2spk").read_text() == (src / "utt2spk").read_text()
    capsys.readouterr()
    assert main(["subset", str(src), str(tmp_path / "w"), "--speakers", "s7"]) == 2
    assert "s7 not in the data dir" in capsys.readouterr().err
