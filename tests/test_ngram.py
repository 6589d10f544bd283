"""N-gram LM: ARPA reading/writing, backoff scoring, decoder state, Kneser-Ney estimation.

The last tests read the AN4 corpus's ``etc/an4.lm`` when ``AN4_DIR`` points at the corpus root.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest

from asrkit.lm.ngram import (
    EOS,
    LOG10_ZERO,
    OOV_LOG10PROB,
    ArpaError,
    NgramLM,
    estimate_ngram,
    read_arpa,
    write_arpa,
)

LN10 = math.log(10.0)

# A hand-written trigram model (not normalised; the numbers are chosen to be easy to follow).
TINY_ARPA = """\
This header text is ignored, as SRILM and KenLM ignore it (even 'ngram 1=3' here).

\\data\\
ngram 1=5
ngram 2=4
ngram 3=1

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.7\tb\t-0.2
-0.6\t</s>

\\2-grams:
-0.2\t<s> a\t-0.1
-0.4\ta b\t-0.05
-0.3\tb </s>
-0.25\ta </s>

\\3-grams:
-0.1\t<s> a b

\\end\\
"""


def _write(tmp_path: Path, text: str | bytes, name: str = "lm.arpa") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def _line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` equal to ``needle``."""
    return text.split("\n").index(needle) + 1


@pytest.fixture
def tiny(tmp_path: Path) -> NgramLM:
    return read_arpa(_write(tmp_path, TINY_ARPA))


def _table(lm: NgramLM) -> dict[tuple[str, ...], tuple[float, float]]:
    return {w: (p, b) for n in range(1, lm.order + 1) for w, p, b in lm.ngrams(n)}


# --------------------------------------------------------------------------- reading
def test_read_tiny_structure(tiny: NgramLM) -> None:
    assert tiny.order == 3
    assert tiny.counts == [5, 4, 1]
    assert tiny.vocab == {"<unk>", "<s>", "a", "b", "</s>"}
    assert tiny.unk == "<unk>"
    assert ("<s>", "a", "b") in tiny and ("a", "a") not in tiny
    assert _table(tiny)[("<s>",)] == (-99.0, -0.5)


def test_logprob_by_hand(tiny: NgramLM) -> None:
    # Listed trigram.
    assert tiny.log10prob("b", ["<s>", "a"]) == pytest.approx(-0.1)
    # Trigram '<s> a </s>' missing: bo(<s> a) + p(</s> | a) = -0.1 + -0.25.
    assert tiny.log10prob(EOS, ["<s>", "a"]) == pytest.approx(-0.35)
    # Two back-offs: bo(a b) + bo(b) + p(a) = -0.05 + -0.2 + -0.5.
    assert tiny.log10prob("a", ["a", "b"]) == pytest.approx(-0.75)
    # Only the last order-1 words of the context count.
    assert tiny.log10prob("b", ["b", "b", "<s>", "a"]) == pytest.approx(-0.1)
    # Unknown word -> <unk>: bo(a) + p(<unk>) = -0.3 + -1.0.
    assert tiny.log10prob("zzz", ["a"]) == pytest.approx(-1.3)
    # Unknown context words -> <unk>, which has no n-grams: p(b) = -0.7.
    assert tiny.log10prob("b", ["xx", "yy"]) == pytest.approx(-0.7)
    # Empty context: the unigram.
    assert tiny.log10prob("a") == pytest.approx(-0.5)
    # Natural log is log10 * ln 10.
    assert tiny.logprob("a", ["a", "b"]) == pytest.approx(-0.75 * LN10)


def test_score_sentence_and_state_api(tiny: NgramLM) -> None:
    # p(a|<s>) p(b|<s> a) p(</s>|a b) = -0.2 + -0.1 + (-0.05 + -0.3)
    assert tiny.score_sentence(["a", "b"]) == pytest.approx(-0.65 * LN10)
    assert tiny.score_sentence("a b") == pytest.approx(-0.65 * LN10)
    # Without <s>: p(a) + p(b | a) + p(</s> | a b) = -0.5 - 0.4 - 0.35; without </s>: -0.9.
    assert tiny.score_sentence("a b", bos=False) == pytest.approx(-1.25 * LN10)
    assert tiny.score_sentence("a b", bos=False, eos=False) == pytest.approx(-0.9 * LN10)

    state = tiny.start_state()
    assert state == ("<s>",)
    lp, state = tiny.score(state, "a")
    assert (lp, state) == (pytest.approx(-0.2 * LN10), ("<s>", "a"))
    lp, state = tiny.score(state, "b")
    assert (lp, state) == (pytest.approx(-0.1 * LN10), ("a", "b"))
    assert tiny.final_score(state) == pytest.approx(-0.35 * LN10)
    hash(state)

    # '<s> b' is not a bigram, so the state keeps only the longest listed suffix.
    lp, state = tiny.score(tiny.start_state(), "b")
    assert (lp, state) == (pytest.approx((-0.5 - 0.7) * LN10), ("b",))
    lp, state = tiny.score(state, "a")  # bo(b) + p(a)
    assert (lp, state) == (pytest.approx((-0.2 - 0.5) * LN10), ("a",))
    # An unknown word is scored as <unk> and the state becomes ('<unk>',).
    lp, state = tiny.score(("a",), "zzz")
    assert (lp, state) == (pytest.approx(-1.3 * LN10), ("<unk>",))


def test_state_scores_equal_full_history_scores() -> None:
    lm = estimate_ngram(_markov_corpus(300, seed=1), order=4)
    rng = random.Random(5)
    words = sorted(lm.vocab - {"<s>"})
    for _ in range(50):
        sentence = [rng.choice(words[:-1] if rng.random() < 0.9 else words)
                    for _ in range(rng.randint(0, 8))]
        sentence = [w for w in sentence if w != EOS]
        state, history, by_state, by_history = lm.start_state(), ["<s>"], 0.0, 0.0
        for w in sentence:
            lp, state = lm.score(state, w)
            by_state += lp
            by_history += lm.logprob(w, history)
            history.append(w)
            assert len(state) <= lm.order - 1
        by_state += lm.final_score(state)
        by_history += lm.logprob(EOS, history)
        assert by_state == pytest.approx(by_history, abs=1e-9)
        assert lm.score_sentence(sentence) == pytest.approx(by_state, abs=1e-9)


def test_perplexity_counts_oovs_apart(tiny: NgramLM) -> None:
    # 'a b': -0.65. 'a zzz': p(a|<s>) = -0.2, zzz is an OOV (not scored), then
    # p(</s> | <unk>) = bo(<unk>) (none: 0) + p(</s>) = -0.6.
    r = tiny.perplexity(["a b", ["a", "zzz"]])
    assert (r.sentences, r.words, r.oovs, r.zeroprobs) == (2, 4, 1, 0)
    assert r.log10prob == pytest.approx(-1.45)
    assert r.ppl == pytest.approx(10 ** (1.45 / (4 - 1 + 2)))
    assert r.ppl1 == pytest.approx(10 ** (1.45 / (4 - 1)))
    assert "1 OOVs" in str(r) and "ppl=" in str(r)
    # SRILM -unk: the OOV is scored as <unk> after '<s> a': bo(<s> a) + bo(a) + p(<unk>)
    # = -0.1 - 0.3 - 1.0; total -0.65 - 0.2 - 1.4 - 0.6.
    r = tiny.perplexity(["a b", ["a", "zzz"]], score_unk=True)
    assert (r.words, r.oovs) == (4, 0)
    assert r.log10prob == pytest.approx(-2.85)
    assert r.ppl == pytest.approx(10 ** (2.85 / 6))


def test_closed_vocabulary_without_unk(tmp_path: Path) -> None:
    text = TINY_ARPA.replace("ngram 1=5", "ngram 1=4").replace("-1.0\t<unk>\n", "")
    lm = read_arpa(_write(tmp_path, text))
    assert lm.unk is None
    assert lm.log10prob("zzz", ["a"]) == OOV_LOG10PROB
    lp, state = lm.score(("<s>", "a"), "zzz")
    assert (lp, state) == (OOV_LOG10PROB * LN10, ())
    r = lm.perplexity(["a zzz b"])
    assert (r.words, r.oovs) == (3, 1)
    # p(a|<s>) + p(b | null context after the OOV) + p(</s> | b) = -0.2 - 0.7 - 0.3
    assert r.log10prob == pytest.approx(-1.2)


def test_reader_is_tolerant_of_crlf_tabs_spaces_and_blank_lines(tmp_path: Path,
                                                                  tiny: NgramLM) -> None:
    messy = (TINY_ARPA.replace("\t", "  ").replace("-0.7  b", "-0.7 \t b")
             .replace("\\2-grams:", "\n\n\\2-grams:  ").replace("\n", "\r\n"))
    lm = read_arpa(_write(tmp_path, "\ufeff" + messy, "messy.arpa"))
    assert _table(lm) == _table(tiny)


def test_missing_prefix_is_inserted_with_backed_off_probability(tmp_path: Path) -> None:
    # The trigram 'a b </s>' is listed but its prefix 'a b' is not (as in some pruned models).
    text = """\\data\\
ngram 1=4
ngram 2=1
ngram 3=1
\\1-grams:
-99 <s> -0.5
-0.5 a -0.3
-0.7 b -0.2
-0.6 </s>
\\2-grams:
-0.2 <s> a
\\3-grams:
-0.05 a b </s>
\\end\\
"""
    lm = read_arpa(_write(tmp_path, text))
    assert lm.counts == [4, 2, 1]
    # Inserted 'a b' = bo(a) + p(b) with no backoff: scores are what the file implies.
    assert {w: (p, b) for w, p, b in lm.ngrams(2)}[("a", "b")] == (
        pytest.approx(-1.0), 0.0)
    state = ("<s>", "a")
    lp, state = lm.score(state, "b")
    assert state == ("a", "b") and lp == pytest.approx(-1.0 * LN10)
    assert lm.final_score(state) == pytest.approx(-0.05 * LN10)


# --------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", ["rt.arpa", "rt.arpa.gz"])
def test_write_read_round_trip(tmp_path: Path, tiny: NgramLM, name: str) -> None:
    path = tmp_path / "out" / name
    write_arpa(tiny, path)
    back = read_arpa(path)
    assert back.order == tiny.order and back.counts == tiny.counts
    assert _table(back) == _table(tiny)
    if name.endswith(".arpa"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("\n\\data\\\nngram 1=5\nngram 2=4\nngram 3=1\n")
        assert text.endswith("\\3-grams:\n-0.1\t<s> a b\n\n\\end\\\n")
        assert "-99\t<s>\t-0.5\n" in text and "-0.3\tb </s>\n" in text


def test_round_trip_of_an_estimated_model(tmp_path: Path) -> None:
    lm = estimate_ngram(_markov_corpus(200, seed=3), order=3)
    write_arpa(lm, tmp_path / "kn.arpa")
    back = read_arpa(tmp_path / "kn.arpa")
    a, b = _table(lm), _table(back)
    assert a.keys() == b.keys()
    for key, (p, bo) in a.items():
        assert b[key][0] == pytest.approx(p, abs=1e-6)
        assert b[key][1] == pytest.approx(bo, abs=1e-6)
    assert b[("<s>",)][0] == LOG10_ZERO


# ------------------------------------------------------------------------- errors
def test_error_count_mismatch_names_the_declaration_line(tmp_path: Path) -> None:
    text = TINY_ARPA.replace("ngram 2=4", "ngram 2=5")
    path = _write(tmp_path, text)
    with pytest.raises(ArpaError) as e:
        read_arpa(path)
    assert e.value.line == _line_of(text, "ngram 2=5")
    assert e.value.path == path
    assert str(e.value).startswith(f"{path}:{e.value.line}: 'ngram 2=5' but the \\2-grams:")
    assert "has 4 entries" in str(e.value)


@pytest.mark.parametrize("bad, match", [
    ("-0.4\ta", "expected '<log10 prob> <2 words> \\[<log10 backoff>\\]', found 2 fields"),
    ("x\ta b", "log10 probability 'x' is not a number"),
    ("-0.4\ta b\tnan", "log10 backoff is NaN"),
    ("0.5\ta b", "positive log10 probability"),
    ("-0.4\ta q", "word 'q' of this 2-gram is not in the \\\\1-grams: section"),
    ("-0.4\t<s> a", "duplicate 2-gram '<s> a'"),
])
def test_error_malformed_line_names_the_line(tmp_path: Path, bad: str, match: str) -> None:
    text = TINY_ARPA.replace("-0.4\ta b\t-0.05", bad)
    path = _write(tmp_path, text)
    with pytest.raises(ArpaError, match=match) as e:
        read_arpa(path)
    assert e.value.line == _line_of(text, bad)
    assert str(e.value).startswith(f"{path}:{e.value.line}: ")


def test_error_non_utf8_names_the_line(tmp_path: Path) -> None:
    data = TINY_ARPA.encode("utf-8").replace(b"-0.7\tb\t", b"-0.7\tb\xff\t")
    with pytest.raises(ArpaError, match=r"invalid UTF-8 byte b'\\xff' at column 7") as e:
        read_arpa(_write(tmp_path, data))
    assert e.value.line == _line_of(TINY_ARPA, "-0.7\tb\t-0.2")


@pytest.mark.parametrize("edit, line_of, match", [
    (("\\end\\\n", ""), None, "file ends before '\\\\end\\\\'"),
    (("\\data\\", "data"), None, "no '\\\\data\\\\' line"),
    (("\\3-grams:", "\\4-grams:"), "\\4-grams:", "section \\\\4-grams: out of place"),
    (("ngram 2=4", "ngram 2 4"), "ngram 2 4", "expected 'ngram N=count'"),
    (("ngram 2=4", "ngram 5=4"), "\\1-grams:", "no 'ngram 2=count' line"),
    (("\\3-grams:\n-0.1\t<s> a b\n", ""), "\\end\\", "'\\\\end\\\\' before the \\\\3-grams:"),
    (("\\1-grams:", "1-grams:"), "1-grams:", "expected 'ngram N=count'"),
])
def test_error_structure(tmp_path: Path, edit: tuple[str, str], line_of: str | None,
                         match: str) -> None:
    text = TINY_ARPA.replace(*edit)
    with pytest.raises(ArpaError, match=match) as e:
        read_arpa(_write(tmp_path, text))
    if line_of is not None:
        assert e.value.line == _line_of(text, line_of)


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArpaError, match="file not found"):
        read_arpa(tmp_path / "nope.arpa")


# --------------------------------------------------------------------- estimation
def _markov_corpus(n_sentences: int, seed: int = 0) -> list[list[str]]:
    """Sentences from a small first-order Markov chain over 12 words (deterministic)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(12)]
    successors = {w: rng.sample(words, 3) for w in words}
    out = []
    for _ in range(n_sentences):
        w = rng.choice(words[:4])
        sentence = [w]
        while rng.random() > 0.2 and len(sentence) < 15:
            w = rng.choice(successors[w])
            sentence.append(w)
        out.append(sentence)
    return out


def _max_sum_error(lm: NgramLM, extra_contexts: list[tuple[str, ...]] = ()) -> float:
    """Largest |sum_w P(w | h) - 1| over the vocabulary (+ </s>, - <s>) for every context h
    that is an n-gram of order < N, the empty context, and ``extra_contexts``."""
    predicted = sorted(lm.vocab - {"<s>"})
    contexts = [()] + [w for n in range(1, lm.order) for w, _, _ in lm.ngrams(n)]
    worst = 0.0
    for ctx in contexts + list(extra_contexts):
        total = sum(10.0 ** lm.log10prob(w, ctx) for w in predicted)
        worst = max(worst, abs(total - 1.0))
    return worst


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("method", ["kneser_ney", "witten_bell"])
def test_estimate_sums_to_one_for_every_context(order: int, method: str) -> None:
    lm = estimate_ngram(_markov_corpus(400), order=order, method=method)
    assert lm.order == order and lm.unk == "<unk>"
    assert _max_sum_error(lm, [("w1", "zzz", "w2"), ("zzz",), ("w0", EOS)]) < 1e-6


def test_estimate_with_closed_vocabulary_sums_to_one_and_maps_unk() -> None:
    corpus = _markov_corpus(300)
    vocabulary = [f"w{i}" for i in range(10)] + ["never_seen"]  # w10, w11 become <unk>
    lm = estimate_ngram(corpus, order=3, vocabulary=vocabulary)
    assert lm.vocab == set(vocabulary) | {"<s>", "</s>", "<unk>"}
    assert ("w10",) not in lm and ("<unk>",) in lm
    assert lm.log10prob("<unk>") > lm.log10prob("never_seen")
    assert lm.log10prob("w11", ["w3"]) == lm.log10prob("<unk>", ["w3"])
    assert _max_sum_error(lm) < 1e-6


def test_kneser_ney_known_answer_with_fixed_discounts() -> None:
    """Interpolated modified KN (Chen & Goodman 1998) worked by hand, order 2, D = .5/1/1.5.

    Corpus '<s> a b </s>' x2, '<s> b </s>'. Bigram counts (highest order: raw):
    <s> a:2, a b:2, b </s>:3, <s> b:1. Unigram adjusted counts (distinct left words):
    a:1 {<s>}, b:2 {a, <s>}, </s>:1 {b}; <unk>:0; <s> is never predicted.
    Unigrams: sum = 4, freed = D1 + D2 + D1 = 2, gamma = 2/4, uniform over
    V' = {a, b, </s>, <unk>}: 0.5/4 = 0.125.
      p(a) = (1-.5)/4 + .125 = .25   p(b) = (2-1)/4 + .125 = .375
      p(</s>) = (1-.5)/4 + .125 = .25   p(<unk>) = .125
    Context <s>: a:2, b:1, sum 3, freed 1 + .5, gamma(<s>) = .5.
      p(a|<s>) = (2-1)/3 + .5 * .25    p(b|<s>) = (1-.5)/3 + .5 * .375
      p(</s>|<s>) = .5 * .25 (unseen: backoff)
    Context a: b:2, gamma(a) = 1/2; p(b|a) = (2-1)/2 + .5 * .375 = .6875
    Context b: </s>:3, gamma(b) = 1.5/3; p(</s>|b) = (3-1.5)/3 + .5 * .25 = .625
    """
    lm = estimate_ngram(["a b", "a b", "b"], order=2, discount=(0.5, 1.0, 1.5))
    expected = {
        ("a", ()): 0.25, ("b", ()): 0.375, (EOS, ()): 0.25, ("<unk>", ()): 0.125,
        ("a", ("<s>",)): 1 / 3 + 0.125, ("b", ("<s>",)): 0.5 / 3 + 0.1875,
        (EOS, ("<s>",)): 0.125, ("<unk>", ("<s>",)): 0.0625,
        ("b", ("a",)): 0.6875, ("a", ("a",)): 0.125, (EOS, ("b",)): 0.625,
    }
    for (word, ctx), p in expected.items():
        assert 10 ** lm.log10prob(word, ctx) == pytest.approx(p, abs=1e-12), (word, ctx)
    table = _table(lm)
    assert table[("<s>",)] == (LOG10_ZERO, pytest.approx(math.log10(0.5)))
    assert table[("a",)][1] == pytest.approx(math.log10(0.5))
    assert table[("<s>", "a")] == (pytest.approx(math.log10(1 / 3 + 0.125)), 0.0)
    assert lm.counts == [5, 4]


def test_kneser_ney_known_answer_discounts_from_count_of_counts() -> None:
    """Discounts from count-of-counts (Chen & Goodman eq. 26), order 1 (raw counts).

    One sentence with w1 w2 w3 once, x y twice, z three times, q four times, plus </s> once:
    t1 = 4, t2 = 2, t3 = 1, t4 = 1; Y = 4 / (4 + 2*2) = .5;
    D1 = 1 - 2 Y t2/t1 = .5, D2 = 2 - 3 Y t3/t2 = 1.25, D3+ = 3 - 4 Y t4/t3 = 1.
    Sum of counts 15; freed = 4 * .5 + 2 * 1.25 + 1 + 1 = 6.5; |V'| = 9 (with <unk>, </s>).
    """
    lm = estimate_ngram(["w1 w2 w3 x x y y z z z q q q q"], order=1, discount_fallback=None)
    share = 6.5 / 15 / 9
    expected = {"w1": 0.5 / 15 + share, "x": (2 - 1.25) / 15 + share,
                "z": (3 - 1) / 15 + share, "q": (4 - 1) / 15 + share,
                EOS: 0.5 / 15 + share, "<unk>": share}
    for word, p in expected.items():
        assert 10 ** lm.log10prob(word) == pytest.approx(p, abs=1e-12), word
    assert _max_sum_error(lm) < 1e-12


def test_discount_fallback_and_errors() -> None:
    tiny_corpus = ["a b", "a c"]  # no 2-grams seen twice: count-of-counts t2 = 0
    with pytest.raises(ValueError, match="cannot compute Kneser-Ney discounts for 1-grams"):
        estimate_ngram(tiny_corpus, order=2, discount_fallback=None)
    lm = estimate_ngram(tiny_corpus, order=2)  # falls back to (.5, 1, 1.5), with a warning
    assert _max_sum_error(lm) < 1e-9
    with pytest.raises(ValueError, match="contains '<s>' or '</s>'"):
        estimate_ngram(["<s> a b </s>"])
    with pytest.raises(ValueError, match="0 <= Dk <= k"):
        estimate_ngram(tiny_corpus, discount=(0.5, 1.0, 3.5))
    with pytest.raises(ValueError, match="unknown method"):
        estimate_ngram(tiny_corpus, method="good_turing")
    with pytest.raises(ValueError, match="no training sentences"):
        estimate_ngram([])
    with pytest.raises(ValueError, match="whitespace"):
        estimate_ngram([["a b"]])


def test_training_text_has_lower_perplexity_than_shuffled_text() -> None:
    corpus = _markov_corpus(500, seed=7)
    lm = estimate_ngram(corpus, order=3)
    rng = random.Random(0)
    shuffled = [rng.sample(s, len(s)) for s in corpus]
    train, mixed = lm.perplexity(corpus), lm.perplexity(shuffled)
    assert train.oovs == mixed.oovs == 0 and train.words == mixed.words
    assert train.ppl < 0.5 * mixed.ppl


# ---------------------------------------------------------------------------- AN4
AN4 = os.environ.get("AN4_DIR")
needs_an4 = pytest.mark.skipif(not AN4, reason="set AN4_DIR to the AN4 corpus root")


def _an4_sentences(name: str) -> list[list[str]]:
    """Words of ``etc/<name>`` lines ``[<s>] WORDS [</s>] (fileid)`` (the test file has no
    markers)."""
    out = []
    for line in (Path(AN4) / "etc" / name).read_text(encoding="utf-8").splitlines():
        words = line.rsplit("(", 1)[0].split()
        out.append([w for w in words if w not in ("<s>", "</s>")])
    return out


@pytest.mark.an4
@needs_an4
def test_an4_lm_scores_a_training_sentence() -> None:
    lm = read_arpa(Path(AN4) / "etc" / "an4.lm")
    assert lm.order == 2 and lm.counts == [107, 1]
    assert lm.unk == "<UNK>"  # CMU Sphinx spelling
    train = _an4_sentences("an4_train.transcription")
    assert train[0] == ["YES"]
    # No bigram '<s> YES' or 'YES </s>', zero backoffs: two unigrams of -2.0253.
    assert lm.score_sentence(train[0]) == pytest.approx(-4.0506 * LN10)
    state = lm.start_state()
    lp, state = lm.score(state, "YES")
    assert state == ("YES",) and lp == pytest.approx(-2.0253 * LN10)
    # A flat model: every word and </s> has log10 p = -2.0253, so ppl = 10 ** 2.0253.
    r = lm.perplexity(train)
    assert r.oovs == 0 and r.sentences == len(train)
    assert r.ppl == pytest.approx(10 ** 2.0253, rel=1e-9)


@pytest.mark.an4
@needs_an4
def test_an4_estimated_trigram_beats_the_flat_model() -> None:
    train = _an4_sentences("an4_train.transcription")
    test = _an4_sentences("an4_test.transcription")
    kn = estimate_ngram(train, order=3, discount_fallback=None)
    assert _max_sum_error(kn) < 1e-6
    # Known answer: entries of the ARPA that KenLM's lmplz (-o 3) writes for the same text
    # (lmplz computes in float32, hence the tolerance; it writes 0 where we write -99 for <s>).
    assert kn.counts == [102, 1256, 3121]
    table = _table(kn)
    lmplz = {("<unk>",): (-2.8586085, 0.0), ("<s>",): (LOG10_ZERO, -0.9854493),
             ("</s>",): (-1.3892846, 0.0), ("YES",): (-2.7769096, -0.2488126),
             ("<s>", "YES"): (-1.6856809, -1.1545292), ("YES", "</s>"): (-0.3380659, 0.0),
             ("ONE", "TWO"): (-1.2626721, -0.38253096), ("<s>", "YES", "</s>"): (-0.016776841, 0.0),
             ("<s>", "GO", "</s>"): (-0.036012243, 0.0)}
    for key, (p, bo) in lmplz.items():
        assert table[key] == (pytest.approx(p, abs=2e-6), pytest.approx(bo, abs=2e-6)), key
    flat = read_arpa(Path(AN4) / "etc" / "an4.lm")
    assert kn.perplexity(test).ppl < 0.5 * flat.perplexity(test).ppl
