"""Joint-sequence G2P (asrkit.text.g2p) on a tiny synthetic, perfectly regular dictionary."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from asrkit.cli import main
from asrkit.text.g2p import (
    AlignOptions,
    G2PError,
    G2PModel,
    align_entries,
    edit_distance,
    evaluate_g2p,
    joint_token,
    pronounce_missing,
    split_lexicon,
    split_token,
    train_g2p,
)
from asrkit.text.lexicon import Lexicon, read_lexicon

# Letters -> phones of a made-up orthography: one letter one phone, three digraphs, X -> K S
# and a silent final E.
CONS = {"B": "B", "D": "D", "F": "F", "G": "G", "K": "K", "L": "L", "M": "M", "N": "N",
        "P": "P", "R": "R", "S": "S", "T": "T", "V": "V", "Z": "Z", "SH": "SH", "CH": "CH",
        "TH": "TH", "X": "K S"}
VOWELS = {"A": "AE", "E": "EH", "I": "IH", "O": "AA", "U": "AH"}


def _word(rng: random.Random) -> tuple[str, list[str]]:
    parts = []
    for _ in range(rng.choice([1, 2])):
        parts += [rng.choice(list(CONS)), rng.choice(list(VOWELS))]
    parts.append(rng.choice(list(CONS)))
    pron = [p for x in parts for p in (CONS | VOWELS)[x].split()]
    word = "".join(parts)
    if rng.random() < 0.25:
        word += "E"  # silent
    return word, pron


def _dictionary(n: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    while len(out) < n:
        word, pron = _word(rng)
        out.setdefault(word, pron)
    return out


@pytest.fixture(scope="module")
def data():
    d = _dictionary(450, seed=1)
    words = list(d)
    train = {w: d[w] for w in words[:350]}
    test = {w: d[w] for w in words[350:]}
    return train, test


@pytest.fixture(scope="module")
def model(data):
    return train_g2p(data[0].items(), order=4, align=AlignOptions(iterations=4))


def test_joint_token_spelling_round_trip():
    assert joint_token(("P", "H"), ("F",)) == "P|H}F"
    assert joint_token(("E",), ()) == "E}_"
    assert split_token("X}K|S") == (("X",), ("K", "S"))
    assert split_token("E}_") == (("E",), ())
    with pytest.raises(G2PError, match="no '}'"):
        split_token("EK")


def test_alignment_finds_the_obvious_letter_phone_pairs(data):
    train = dict(data[0])
    train.update({"SHIB": ["SH", "IH", "B"], "FOXE": ["F", "AA", "K", "S"],
                  "BAT": ["B", "AE", "T"]})
    words = ["SHIB", "FOXE", "BAT"]
    entries = [(list(w), p) for w, p in train.items()]
    al = dict(zip(train, align_entries(entries)))
    tokens = {w: [joint_token(a, b) for a, b in al[w]] for w in words}
    assert tokens["BAT"] == ["B}B", "A}AE", "T}T"]
    assert tokens["SHIB"] == ["S|H}SH", "I}IH", "B}B"]
    assert tokens["FOXE"] == ["F}F", "O}AA", "X}K|S", "E}_"]
    # every alignment spells its entry back
    for w, p in train.items():
        assert "".join(c for a, _ in al[w] for c in a) == w
        assert [ph for _, b in al[w] for ph in b] == p


def test_alignment_of_an_impossible_entry_is_none():
    # 5 phones for 2 letters cannot be covered by chunks of at most 2 phones
    out = align_entries([(list("AB"), ["AE", "B"]), (list("AB"), list("PQRST"))])
    assert out[0] is not None and out[1] is None
    with pytest.raises(ValueError, match="max_letters"):
        align_entries([(["A"], ["AE"])], AlignOptions(max_letters=0))


def test_model_pronounces_unseen_regular_words(model, data):
    _, test = data
    wrong = {w: (model.pronounce(w)[0][0], tuple(p)) for w, p in test.items()
             if model.pronounce(w)[0][0] != tuple(p)}
    assert len(wrong) <= 2, wrong  # 100 unseen words of a regular spelling
    score = evaluate_g2p(model, Lexicon(test.items()))
    assert score.words == len(test) and score.word_errors == len(wrong)
    assert score.wer <= 2.0 and score.per < 1.0


def test_nbest_distinct_and_sorted_and_unknown_letters(model):
    # case-normalised like the training words; E is EH or silent: 2 readings, no third
    prons = model.pronounce("bate", nbest=3)
    assert prons[0][0] == ("B", "AE", "T")
    assert ("B", "AE", "T", "EH") in [p for p, _ in prons]
    assert len({p for p, _ in prons}) == len(prons) == 2
    assert [c for _, c in prons] == sorted(c for _, c in prons)
    assert model.pronounce("BÄT") == []
    assert model.pronounce("") == []
    with pytest.raises(ValueError, match="nbest"):
        model.pronounce("BAT", nbest=0)


def test_save_load_round_trip(model, data, tmp_path):
    d = model.save(tmp_path / "g2p")
    assert {p.name for p in d.iterdir()} == {"g2p.json", "joint.arpa.gz", "tokens.txt",
                                              "G.fst"}
    cfg = json.loads((d / "g2p.json").read_text())
    assert cfg["format"] == "asrkit-g2p" and cfg["order"] == 4 and cfg["case"] == "upper"
    words = list(data[1])[:20]
    expect = [model.pronounce(w, nbest=2) for w in words]
    loaded = G2PModel.load(d)
    assert [loaded.pronounce(w, nbest=2) for w in words] == expect
    (d / "G.fst").unlink()  # rebuilt from the ARPA file
    rebuilt = G2PModel.load(d)
    assert [[p for p, _ in rebuilt.pronounce(w, nbest=2)] for w in words] == [
        [p for p, _ in e] for e in expect]


def test_load_errors_name_the_problem(model, tmp_path):
    with pytest.raises(G2PError, match="not found"):
        G2PModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(G2PError, match="g2p.json: missing"):
        G2PModel.load(tmp_path / "empty")
    d = model.save(tmp_path / "m")
    (d / "g2p.json").write_text("{not json")
    with pytest.raises(G2PError, match="not valid JSON"):
        G2PModel.load(d)
    (d / "g2p.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(G2PError, match="asrkit-g2p"):
        G2PModel.load(d)
    model.save(d)
    (d / "G.fst").write_bytes(b"garbage")
    with pytest.raises(G2PError, match="G.fst: not a readable OpenFst file"):
        G2PModel.load(d)
    (d / "joint.arpa.gz").unlink()
    with pytest.raises(G2PError, match="joint.arpa.gz: missing"):
        G2PModel.load(d)


def test_training_rejects_bad_entries():
    with pytest.raises(G2PError, match="no dictionary entries"):
        train_g2p([])
    with pytest.raises(G2PError, match="'AB'.*phone 'K}S'"):
        train_g2p([("AB", ["AE", "K}S"])])
    with pytest.raises(G2PError, match="'A_B'.*letter '_'"):
        train_g2p([("A_B", ["AE", "B"])])


def test_split_lexicon_holds_out_whole_words():
    lex = Lexicon()
    for i in range(200):
        lex.add(f"W{i}", ["AH"])
        if i % 3 == 0:
            lex.add(f"W{i}", ["EH"])
    train, test = split_lexicon(lex, 0.05, seed=3)
    assert len(test) == 10 and len(train) == 190
    assert not set(train) & set(test)
    assert all(test[w] == lex[w] for w in test)
    assert list(split_lexicon(lex, 0.05, seed=3)[1]) == list(test)
    assert list(split_lexicon(lex, 0.05, seed=4)[1]) != list(test)


def test_edit_distance_and_scoring_picks_closest_reference(model):
    assert edit_distance("KAT", "KATS") == 1
    assert edit_distance([], ["A", "B"]) == 2
    assert edit_distance(["A", "B", "C"], ["A", "X", "C"]) == 1
    refs = Lexicon([("BAT", ["B", "AA", "T"]), ("BAT", ["B", "AE", "T"]),  # 2nd matches
                    ("FIG", ["F", "IH", "G", "Z"])])                       # 1 deletion
    s = evaluate_g2p(model, refs)
    assert (s.words, s.word_errors, s.phone_errors, s.ref_phones) == (2, 1, 1, 7)
    assert s.wer == 50.0 and s.examples == [("FIG", "F IH G", "F IH G Z")]


def test_cli_train_apply_and_lang_g2p(model, tmp_path, capsys):
    dic = tmp_path / "tiny.dic"
    entries = _dictionary(300, seed=1)
    dic.write_text("".join(f"{w} {' '.join(p)}\n" for w, p in entries.items()))
    mdir = tmp_path / "g2p"
    assert main(["g2p", "train", str(dic), str(mdir), "--order", "3", "--iterations", "3"]) == 0
    assert "joint tokens" in capsys.readouterr().out
    words = tmp_path / "words.txt"
    words.write_text("BAT\nSHIX\n\nBÄT\n")
    out = tmp_path / "lexicon.txt"
    assert main(["g2p", "apply", str(mdir), str(words), str(out)]) == 0
    assert "1 words have letters the model never saw: BÄT" in capsys.readouterr().out
    lex = read_lexicon(out)
    assert lex["BAT"] == [("B", "AE", "T")] and lex["SHIX"] == [("SH", "IH", "K", "S")]

    text = tmp_path / "text"
    known = next(iter(entries))
    text.write_text(f"u1 {known} ZOTH\nu2 SHAB\n")
    lang = tmp_path / "lang"
    assert main(["lang", str(dic), str(lang), "--format", "cmu", "--g2p", str(mdir),
                 "--keep-text", str(text), "--text", str(text),
                 "--no-position-dependent"]) == 0
    printed = capsys.readouterr().out
    assert "g2p: pronounced 2 of the 2 words" in printed and "0 OOV" in printed
    lex = read_lexicon(lang / "lexicon.txt")
    assert lex["ZOTH"] == [("Z", "AA", "TH")] and lex["SHAB"] == [("SH", "AE", "B")]


def test_cli_errors_bad_dictionary_line_and_missing_model(tmp_path, capsys):
    dic = tmp_path / "bad.dic"
    dic.write_text("BAT B AE T\nCAT\n")
    assert main(["g2p", "train", str(dic), str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"{dic}:2:" in err
    words = tmp_path / "w"
    words.write_text("BAT\n")
    assert main(["g2p", "apply", str(tmp_path / "missing"), str(words),
                 str(tmp_path / "o")]) == 2
    assert "G2P model directory not found" in capsys.readouterr().err


def test_cli_lang_rejects_model_with_other_phones(model, tmp_path, capsys):
    mdir = model.save(tmp_path / "g2p")
    dic = tmp_path / "other.dic"
    dic.write_text("BAT B AE1 T\n")  # stressed phones: the model's phones are missing
    text = tmp_path / "text"
    text.write_text("u1 BAT FIG\n")
    assert main(["lang", str(dic), str(tmp_path / "lang"), "--format", "cmu", "--g2p",
                 str(mdir), "--keep-text", str(text)]) == 2
    assert "stress digits" in capsys.readouterr().err
    shutil.rmtree(mdir)


def test_pronounce_missing_adds_only_missing_words(model):
    lex = Lexicon([("BAT", ["B", "AA", "T"])])
    added, failed = pronounce_missing(lex, ["BAT", "FIG", "FIG", "BÄT", "SHOX"], model)
    assert (added, failed) == (2, ["BÄT"])
    assert lex["BAT"] == [("B", "AA", "T")]  # kept, not re-pronounced
    assert lex["FIG"] == [("F", "IH", "G")] and lex["SHOX"] == [("SH", "AA", "K", "S")]


def test_cli_lang_g2p_with_vocab_size_pronounces_the_top_words(model, tmp_path, capsys):
    mdir = model.save(tmp_path / "g2p")
    dic = tmp_path / "d.dic"
    dic.write_text("BAT B AE T\nFIG F IH G\n")
    vocab = tmp_path / "lm.txt"
    vocab.write_text("ZOTH ZOTH ZOTH VEB\nVEB BAT MUP\n")  # MUP is below the top 3
    lang = tmp_path / "lang"
    assert main(["lang", str(dic), str(lang), "--format", "cmu", "--g2p", str(mdir),
                 "--vocab-text", str(vocab), "--vocab-size", "3",
                 "--no-position-dependent"]) == 0
    assert "g2p: pronounced 2 of the 2 words" in capsys.readouterr().out
    lex = read_lexicon(lang / "lexicon.txt")
    assert {"ZOTH", "VEB", "BAT"} <= set(lex) and "MUP" not in lex and "FIG" not in lex
    assert lex["VEB"] == [("V", "EH", "B")]
