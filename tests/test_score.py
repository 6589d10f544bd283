import json

import pytest

from asrkit.data.datadir import DataDirError
from asrkit.score import append_results, format_table, score_files, score_texts, write_score_dir
from tests.synth import make_text_file


def test_counts_match_hand_alignment():
    refs = {"a": "THE CAT SAT", "b": "GO LEFT NOW"}
    hyps = {"a": "THE BAT SAT DOWN", "b": "GO NOW"}
    r = score_texts(refs, hyps)
    # a: 1 sub (CAT->BAT), 1 ins (DOWN); b: 1 del (LEFT)
    assert (r.wer.sub, r.wer.dele, r.wer.ins, r.wer.correct) == (1, 1, 1, 4)
    assert r.wer.ref_units == 6 and r.wer.sentences == 2 and r.wer.sent_err == 2
    assert r.wer.rate == pytest.approx(50.0)
    # CER ignores spaces: refs have 9 + 9 chars
    assert r.cer.ref_units == 18


def test_missing_hypothesis_counts_as_deletions():
    r = score_texts({"a": "ONE TWO", "b": "THREE"}, {"a": "ONE TWO"})
    assert r.missing_hyps == ["b"]
    assert r.wer.dele == 1 and r.wer.rate == pytest.approx(100 / 3)


def test_empty_reference_is_an_error():
    with pytest.raises(ValueError, match="'b'"):
        score_texts({"a": "X", "b": "  "}, {"a": "X"})


def test_table_and_files(tmp_path):
    ref = make_text_file(tmp_path / "ref", {"u1": "A B C D", "u2": "E F"})
    hyp = make_text_file(tmp_path / "hyp", {"u1": "A B C D", "u2": "E"})
    report = score_files(ref, hyp)
    table = format_table([("test", report.wer)])
    assert table.splitlines()[0] == "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
    assert table.splitlines()[2] == "|test|2|6|83.3|0.0|16.7|0.0|16.7|50.0|"
    write_score_dir(report, tmp_path / "out", "test")
    assert "|test|2|6|" in (tmp_path / "out" / "score.txt").read_text()
    js = json.loads((tmp_path / "out" / "score.json").read_text())
    assert js["name"] == "test" and js["wer"]["rate"] == pytest.approx(100 / 6, abs=1e-3)
    assert (js["wer"]["ref_units"], js["wer"]["del"], js["wer"]["sent_err"]) == (6, 1, 1)
    per_utt = (tmp_path / "out" / "per_utt").read_text()
    assert "id: u2" in per_utt and "id: u1" in per_utt
    append_results(tmp_path / "RESULTS.md", "first", table)
    append_results(tmp_path / "RESULTS.md", "second", table)
    md = (tmp_path / "RESULTS.md").read_text()
    assert md.count("|test|2|6|") == 2 and "### first" in md and "### second" in md


def test_hypothesis_with_empty_line_allowed_but_bad_utf8_rejected(tmp_path):
    ref = make_text_file(tmp_path / "ref", {"u1": "A B"})
    hyp = tmp_path / "hyp"
    hyp.write_text("u1\n")
    assert score_files(ref, hyp).wer.dele == 2
    hyp.write_bytes(b"u1 \xff\xfe\n")
    with pytest.raises(DataDirError, match=r"hyp:1"):
        score_files(ref, hyp)
