"""Tests of the L, G and LG transducers (asrkit.decode.wfst), on a toy lang and bigram, and on
AN4 when ``AN4_DIR`` points at the corpus (``-s`` shows the graph sizes and build times)."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pynini
import pytest

from asrkit.decode.wfst import (
    DELTA,
    GraphError,
    arpa_to_fst,
    determinize_star,
    disambig_ids,
    make_lexicon_fst,
    make_lg,
    minimize_encoded,
    read_fst,
    read_symbols,
    remove_disambig,
    symbol_table,
    table_compose,
    write_fst,
)
from asrkit.lm.ngram import estimate_ngram, read_arpa
from asrkit.text.lexicon import Lexicon, make_lang, read_cmu_dict, write_lang

AN4 = os.environ.get("AN4_DIR")

# CAT, DOG: several phones; A: one phone; O and OH: homophones (OW_S #1, OW_S #2).
TOY_LEXICON = [("A", ["AH"]), ("CAT", ["K", "AE", "T"]), ("DOG", ["D", "AO", "G"]),
               ("O", ["OW"]), ("OH", ["OW"])]

# Every listed bigram is cheaper than backing off to its unigram, so the cheapest path of a
# word string through G (with #0 allowed anywhere) is the exact backoff path.
TOY_ARPA = """\
\\data\\
ngram 1=8
ngram 2=7

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.3
-0.7\tA\t-0.2
-0.8\tCAT\t-0.25
-0.9\tDOG\t-0.3
-1.0\tO
-1.1\tOH
-1.5\t<UNK>

\\2-grams:
-0.2\t<s> A
-0.5\t<s> O
-0.3\tA CAT
-0.4\tA DOG
-0.5\tDOG OH
-0.3\tCAT </s>
-0.6\tDOG </s>

\\end\\
"""

SENTENCES = [
    "A CAT",        # <s> A, A CAT, CAT </s>: no backoff
    "A DOG OH",     # DOG OH listed; OH </s> backs off through the unigram state
    "CAT O",        # <s> backs off to CAT; CAT backs off to O
    "O OH A DOG",   # O is never extended: its history is bypassed
    "<UNK> DOG",
    "",             # <s> </s> backs off
]


@pytest.fixture(scope="module")
def lang():
    return make_lang(Lexicon(TOY_LEXICON))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "toy.arpa"
    path.write_text(TOY_ARPA)
    return read_arpa(path)


@pytest.fixture(scope="module")
def G(lm, lang):
    return arpa_to_fst(lm, lang.words)


@pytest.fixture(scope="module")
def L(lang):
    return make_lexicon_fst(lang, sil_prob=0.3)


# --- helpers -----------------------------------------------------------------------------------

def _accep(labels: Sequence[int]) -> pynini.Fst:
    """A linear acceptor of ``labels`` (ids); built with pynini's string compiler."""
    table = pynini.SymbolTable()
    table.add_symbol("<eps>", 0)
    for i in labels:
        table.add_symbol(str(i), i)
    return pynini.accep(" ".join(str(i) for i in labels), token_type=table)


def _ids(table, symbols: str) -> list[int]:
    return [table[s] for s in symbols.split()]


def _cost(fst: pynini.Fst) -> float:
    """Shortest distance from the start to a final state (inf for an empty FST)."""
    if fst.start() == pynini.NO_STATE_ID:
        return math.inf
    return float(pynini.shortestdistance(fst, reverse=True)[fst.start()])


def _paths(fst: pynini.Fst) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
    """All ``(input labels, output labels, cost)`` of an acyclic FST, epsilons dropped."""
    out = []
    it = fst.paths()
    while not it.done():
        out.append((tuple(i for i in it.ilabels() if i), tuple(o for o in it.olabels() if o),
                    float(it.weight())))
        it.next()
    return sorted(out)


def _transduce(machine: pynini.Fst, labels: Sequence[int]) -> list[tuple[tuple[int, ...], float]]:
    """``(output labels, cost)`` of every path of ``machine`` reading ``labels``."""
    return sorted((o, c) for _, o, c in _paths(pynini.compose(_accep(labels), machine)))


def _with_backoffs(G: pynini.Fst, words: Sequence[int], backoff: int) -> list[int]:
    """``words`` with the backoff symbol inserted wherever deterministic ``G`` has no arc for
    the next word (or no final weight at the end): the phi-matcher reading of ``G``."""
    arcs = {s: {a.ilabel: a.nextstate for a in G.arcs(s)} for s in G.states()}
    zero = pynini.Weight.zero(G.weight_type())
    out: list[int] = []
    s = G.start()
    for w in [*words, None]:
        while (w not in arcs[s]) if w is not None else (G.final(s) == zero):
            out.append(backoff)
            s = arcs[s][backoff]
        if w is not None:
            out.append(w)
            s = arcs[s][w]
    return out


def _is_deterministic(fst: pynini.Fst) -> bool:
    return fst.properties(pynini.I_DETERMINISTIC, True) == pynini.I_DETERMINISTIC


# --- G -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sentence", SENTENCES)
def test_g_path_cost_is_lm_probability(G, lm, lang, sentence):
    words = _ids(lang.words, sentence)
    expected = -lm.score_sentence(sentence)
    # The one path reading #0 where the backoff recursion backs off.
    exact = _with_backoffs(G, words, lang.words["#0"])
    composed = pynini.compose(_accep(exact), G)
    assert len(_paths(composed)) == 1
    assert _cost(composed) == pytest.approx(expected, abs=1e-4)
    # #0 allowed anywhere: the cheapest path is the same one for this model.
    loose = _accep(words)
    for s in loose.states():
        loose.add_arc(s, pynini.Arc(lang.words["#0"], lang.words["#0"], 0.0, s))
    assert _cost(pynini.compose(loose.arcsort("olabel"), G)) == pytest.approx(expected,
                                                                              abs=1e-4)


def test_g_backoff_case_counts_backoffs(G, lang):
    b = lang.words["#0"]
    w = lang.words
    # CAT after <s>: not a bigram, back off once; O after CAT: back off once; </s> after O:
    # O's history is bypassed, so the unigram state is already reached.
    assert _with_backoffs(G, _ids(w, "CAT O"), b) == [b, w["CAT"], b, w["O"]]
    assert _with_backoffs(G, _ids(w, "A CAT"), b) == [w["A"], w["CAT"]]


def test_g_structure(G, lm, lang):
    assert G.arc_type() == "standard"
    assert _is_deterministic(G)
    assert G.properties(pynini.I_LABEL_SORTED, True) == pynini.I_LABEL_SORTED
    labels = {(a.ilabel, a.olabel) for s in G.states() for a in G.arcs(s)}
    words = lang.words
    # <s> and </s> are never read; backoff arcs are #0:<eps> (arpa2fst --disambig-symbol=#0).
    assert not {words["<s>"], words["</s>"]} & {i for i, _ in labels}
    assert (words["#0"], 0) in labels
    assert all(i == o for i, o in labels if i != words["#0"])
    # States: unigram state, <s>, A, CAT, DOG; O, OH and <UNK> are bypassed (never extended).
    assert G.num_states() == 5
    # Word arc costs are -ln(10) * log10 p.
    start = G.start()
    a_arc = next(a for a in G.arcs(start) if a.ilabel == words["A"])
    assert float(a_arc.weight) == pytest.approx(0.2 * math.log(10), abs=1e-5)


def test_g_acceptor_variant_and_no_disambig(lm, lang):
    acc = arpa_to_fst(lm, lang.words, backoff_output="disambig")
    assert acc.properties(pynini.ACCEPTOR, True) == pynini.ACCEPTOR
    plain = arpa_to_fst(lm, lang.words, disambig_symbol=None)
    assert plain.properties(pynini.ACCEPTOR, True) == pynini.ACCEPTOR
    # With <eps> backoffs, the cheapest path is the exact one for this model.
    for sentence in SENTENCES:
        assert _cost(pynini.compose(_accep(_ids(lang.words, sentence)), plain)) == \
            pytest.approx(-lm.score_sentence(sentence), abs=1e-4)


def test_g_from_paths(tmp_path, lang):
    arpa = tmp_path / "toy.arpa"
    arpa.write_text(TOY_ARPA)
    write_lang(lang, tmp_path / "lang")
    from_paths = arpa_to_fst(arpa, tmp_path / "lang" / "words.txt")
    assert pynini.equal(from_paths, arpa_to_fst(read_arpa(arpa), lang.words))


def test_g_missing_word_is_an_error(tmp_path, lm, lang, caplog):
    words = {w: i for w, i in lang.words.items() if w != "DOG"}
    with pytest.raises(GraphError, match=r"missing from words\.txt: 'DOG' \(1 of 6 words\)"):
        arpa_to_fst(lm, words)
    arpa = tmp_path / "toy.arpa"
    arpa.write_text(TOY_ARPA)
    with pytest.raises(GraphError, match=re.escape(f"{arpa}: ARPA words missing")):
        arpa_to_fst(arpa, words)
    with caplog.at_level(logging.WARNING, logger="asrkit.decode.wfst.graph"):
        G = arpa_to_fst(lm, words, oov="skip")
    assert "'DOG'" in caplog.text
    assert _cost(pynini.compose(_accep(_ids(words, "A CAT")), G)) == \
        pytest.approx(-lm.score_sentence("A CAT"), abs=1e-4)
    no_disambig = {w: i for w, i in lang.words.items() if w != "#0"}
    with pytest.raises(GraphError, match="'#0' is not in words.txt"):
        arpa_to_fst(lm, no_disambig)
    with pytest.raises(ValueError, match="oov"):
        arpa_to_fst(lm, lang.words, oov="map")


# --- L -----------------------------------------------------------------------------------------

def test_l_spells_words(L, lang):
    p, w = lang.phones, lang.words
    no_sil, sil = -math.log(0.7), -math.log(0.3)
    # Two words without silence: start, A and CAT each take the no-silence branch.
    assert _transduce(L, _ids(p, "AH_S K_B AE_I T_E")) == [
        ((w["A"], w["CAT"]), pytest.approx(3 * no_sil, abs=1e-5))]
    # Optional silence before, between and after words (SIL then the silence symbol #3).
    assert _transduce(L, _ids(p, "SIL #3 AH_S SIL #3 K_B AE_I T_E SIL #3")) == [
        ((w["A"], w["CAT"]), pytest.approx(3 * sil, abs=1e-5))]
    assert _transduce(L, _ids(p, "D_B AO_I G_E SIL #3")) == [
        ((w["DOG"],), pytest.approx(no_sil + sil, abs=1e-5))]
    # The homophones O and OH are told apart by #1 and #2 only.
    assert _transduce(L, _ids(p, "OW_S #1 OW_S #2")) == [
        ((w["O"], w["OH"]), pytest.approx(3 * no_sil, abs=1e-5))]
    assert _transduce(L, _ids(p, "OW_S")) == []
    # G's backoff symbol passes through at word boundaries.
    assert _transduce(L, _ids(p, "AH_S #0 K_B AE_I T_E")) == [
        ((w["A"], w["#0"], w["CAT"]), pytest.approx(3 * no_sil, abs=1e-5))]
    assert _transduce(L, _ids(p, "K_B #0 AE_I T_E")) == []
    # In L_disambig, silence needs its disambiguation symbol.
    assert _transduce(L, _ids(p, "AH_S SIL")) == []


def test_l_structure_and_symbol_ids(tmp_path, L, lang):
    assert L.properties(pynini.O_LABEL_SORTED, True) == pynini.O_LABEL_SORTED
    ilabels = {a.ilabel for s in L.states() for a in L.arcs(s)}
    olabels = {a.olabel for s in L.states() for a in L.arcs(s)}
    assert ilabels <= set(lang.phones.values())
    assert olabels <= set(lang.words.values())
    assert set(disambig_ids(lang.phones)) <= ilabels  # #0 self-loop, #1 #2, #3 after SIL
    # The ids are those of the written phones.txt and words.txt.
    d = write_lang(lang, tmp_path / "lang")
    phones, words = read_symbols(d / "phones.txt"), read_symbols(d / "words.txt")
    spelled = pynini.accep("SIL #3 D_B AO_I G_E OW_S #2", token_type=phones)
    out = pynini.compose(spelled, L).project("output").rmepsilon()
    assert _paths(out)[0][1] == tuple(words.find(x) for x in ("DOG", "OH"))


def test_l_without_disambig(lang):
    p, w = lang.phones, lang.words
    L = make_lexicon_fst(lang, disambig=False)
    ilabels = {a.ilabel for s in L.states() for a in L.arcs(s)}
    assert not ilabels & set(disambig_ids(p))
    half = -math.log(0.5)
    assert _transduce(L, _ids(p, "OW_S")) == [((w["O"],), pytest.approx(2 * half, abs=1e-5)),
                                              ((w["OH"],), pytest.approx(2 * half, abs=1e-5))]
    assert [o for o, _ in _transduce(L, _ids(p, "SIL AH_S SIL"))] == [(w["A"],)]


def test_l_no_silence_and_pron_probs():
    lex = Lexicon()
    lex.add("A", ["AH"], 1.0)
    lex.add("A", ["EY"], 0.25)
    lex.add("B", ["B", "IY"], 1.0)
    lang = make_lang(lex)
    p, w = lang.phones, lang.words
    L = make_lexicon_fst(lang, sil_prob=0.0)
    assert L.start() == 0 and L.num_states() == 2  # the loop state and B's middle state
    assert _transduce(L, _ids(p, "EY_S B_B IY_E AH_S")) == [
        ((w["A"], w["B"], w["A"]), pytest.approx(-math.log(0.25), abs=1e-5))]
    assert _transduce(L, _ids(p, "SIL #1 AH_S")) == []
    with pytest.raises(ValueError, match="sil_prob"):
        make_lexicon_fst(lang, sil_prob=1.0)


# --- LG ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def LG(L, G):
    return make_lg(L, G)


def test_lg_is_deterministic_and_minimal(L, G, LG):
    assert _is_deterministic(LG)
    assert LG.properties(pynini.I_LABEL_SORTED, True) == pynini.I_LABEL_SORTED
    det = determinize_star(table_compose(L, G))
    assert LG.num_states() <= det.num_states()
    assert LG.num_states() == minimize_encoded(LG).num_states()
    assert not _is_deterministic(table_compose(L, G))


def test_lg_matches_l_then_g(L, G, LG, lang, lm):
    p, w = lang.phones, lang.words
    no_sil = -math.log(0.7)
    # A CAT spelled out: lexicon costs plus -ln P(A CAT).
    got = _transduce(LG, _ids(p, "AH_S K_B AE_I T_E"))
    assert got == [((w["A"], w["CAT"]), pytest.approx(3 * no_sil - lm.score_sentence("A CAT"),
                                                      abs=1e-4))]
    # With silence, backoffs (<s> to CAT, CAT to O) and the homophones O, OH by #1, #2.
    phones = _ids(p, "SIL #3 #0 K_B AE_I T_E #0 OW_S #1 SIL #3 OW_S #2")
    assert _transduce(LG, _ids(p, "SIL #3 K_B AE_I T_E #0 OW_S #1 SIL #3 OW_S #2")) == []
    lg = _transduce(LG, phones)
    assert [o for o, _ in lg] == [(w["CAT"], w["O"], w["OH"])]
    assert lg[0][1] == pytest.approx(_cost(pynini.compose(_accep(phones), table_compose(L, G))),
                                     abs=1e-4)
    # Random paths of L o G: same outputs and costs through LG.
    lg_raw = table_compose(L, G)
    sample = pynini.randgen(lg_raw, npath=30, seed=7, max_length=40)
    checked = 0
    for ilabels, _, _ in _paths(sample):
        ref = _transduce(lg_raw, ilabels)
        best = min(c for _, c in ref)
        got = _transduce(LG, ilabels)
        assert len(got) == 1
        assert got[0][1] == pytest.approx(best, abs=1e-4)
        assert got[0][0] in {o for o, c in ref if c == pytest.approx(best, abs=1e-4)}
        checked += 1
    assert checked >= 10


def test_det_min_relabel_in_place(L, G, LG, lang):
    """copy=False works on the argument itself (make_lg and make_hclg save a copy's memory),
    with the same result as on a copy; the default quantization delta is 2 ** -13."""
    assert DELTA == 2.0 ** -13
    raw = table_compose(L, G)
    det = determinize_star(raw)
    assert raw.num_states() == table_compose(L, G).num_states()  # copy: untouched
    raw_eps = sum(1 for s in raw.states() for a in raw.arcs(s) if not a.ilabel and not a.olabel)
    assert raw_eps > 0
    det2 = determinize_star(raw, copy=False)
    assert not any(not a.ilabel and not a.olabel for s in raw.states() for a in raw.arcs(s))
    assert pynini.equal(det, det2)
    minimized = minimize_encoded(det)
    assert minimize_encoded(det2, copy=False) is det2
    assert pynini.equal(minimized, det2)
    ids = disambig_ids(lang.phones)
    lg = LG.copy()
    assert remove_disambig(lg, ids, copy=False) is lg
    assert pynini.equal(lg, remove_disambig(LG, ids))


def test_lg_remove_disambig(LG, lang, lm):
    ids = disambig_ids(lang.phones)
    clean = remove_disambig(LG, ids)
    assert not {a.ilabel for s in clean.states() for a in clean.arcs(s)} & set(ids)
    assert clean.num_states() == LG.num_states()
    assert {a.ilabel for s in LG.states() for a in LG.arcs(s)} & set(ids)  # LG unchanged
    acc = arpa_to_fst(lm, lang.words, backoff_output="disambig")
    word_ids = disambig_ids(lang.words)
    out = remove_disambig(acc, [], output_ids=word_ids)
    assert not {a.olabel for s in out.states() for a in out.arcs(s)} & set(word_ids)
    assert {a.ilabel for s in out.states() for a in out.arcs(s)} & set(word_ids)


def test_lg_of_mismatched_tables_is_an_error(L, lm, lang):
    shifted = {s: i + 100 if i else 0 for s, i in lang.words.items()}
    with pytest.raises(GraphError, match="empty"):
        make_lg(L, arpa_to_fst(lm, shifted))


# --- I/O ---------------------------------------------------------------------------------------

def test_write_read_round_trip(tmp_path, LG, lang):
    path = tmp_path / "graph" / "LG.fst"
    assert write_fst(LG, path) == path
    back = read_fst(path)
    assert pynini.equal(back, LG)
    assert [p.name for p in path.parent.iterdir()] == ["LG.fst"]  # no temporary left
    # Overwrite in place; a failed write leaves the old file and no temporary.
    small = make_lexicon_fst(lang)
    write_fst(small, path)
    assert pynini.equal(read_fst(path), small)

    class Broken:
        def write(self, name):
            Path(name).write_bytes(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_fst(Broken(), path)
    assert pynini.equal(read_fst(path), small)
    assert [p.name for p in path.parent.iterdir()] == ["LG.fst"]
    with pytest.raises(FileNotFoundError):
        read_fst(tmp_path / "missing.fst")
    bad = tmp_path / "bad.fst"
    bad.write_bytes(b"not an fst")
    with pytest.raises(GraphError, match="bad.fst"):
        read_fst(bad)
    log_fst = pynini.arcmap(LG, map_type="to_log")
    write_fst(log_fst, tmp_path / "log.fst")
    with pytest.raises(GraphError, match="arc type 'log'"):
        read_fst(tmp_path / "log.fst")
    assert read_fst(tmp_path / "log.fst", arc_type=None).arc_type() == "log"


def test_symbol_tables(tmp_path, lang):
    d = write_lang(lang, tmp_path / "lang")
    words = read_symbols(d / "words.txt")
    assert {words.find(i): i for i in range(words.num_symbols())} == lang.words
    assert symbol_table(lang.phones).find("#0") == lang.phones["#0"]


# --- AN4 ---------------------------------------------------------------------------------------

def _sizes(fst: pynini.Fst) -> str:
    return f"{fst.num_states()} states, {sum(fst.num_arcs(s) for s in fst.states())} arcs"


@pytest.mark.an4
@pytest.mark.skipif(not AN4, reason="set AN4_DIR to the AN4 corpus root")
def test_an4_lg(tmp_path):
    etc = Path(AN4) / "etc"
    t0 = time.perf_counter()
    phones = (etc / "an4.phone").read_text().split()
    lang = make_lang(read_cmu_dict(etc / "an4.dic"),
                     nonsilence_phones=[p for p in phones if p != "SIL"])
    L = make_lexicon_fst(lang)
    t1 = time.perf_counter()
    # an4.lm has five words that an4.dic lacks: an error by default, skipped on request.
    with pytest.raises(GraphError, match="'HALL'.*'WEAN' \\(5 of 105 words\\)"):
        arpa_to_fst(etc / "an4.lm", lang.words)
    G = arpa_to_fst(etc / "an4.lm", lang.words, oov="skip")
    t2 = time.perf_counter()
    LG = make_lg(L, G)
    t3 = time.perf_counter()
    assert _is_deterministic(LG)
    write_fst(LG, tmp_path / "LG.fst")
    assert pynini.equal(read_fst(tmp_path / "LG.fst"), LG)
    print(f"\nAN4 an4.lm: L {_sizes(L)} ({t1 - t0:.3f} s); G {_sizes(G)} ({t2 - t1:.3f} s); "
          f"LG {_sizes(LG)} ({t3 - t2:.3f} s)")

    # A trigram estimated from the training transcripts: a G with real backoff structure.
    texts = []
    for line in (etc / "an4_train.transcription").read_text().splitlines():
        m = re.fullmatch(r"\s*(.*?)\s*\(([^()\s]+)\)\s*", line)
        texts.append([x for x in m[1].upper().split() if x not in ("<S>", "</S>", "<SIL>")])
    lm = estimate_ngram(texts, order=3, unk="<UNK>")
    t4 = time.perf_counter()
    G3 = arpa_to_fst(lm, lang.words)
    t5 = time.perf_counter()
    LG3 = make_lg(L, G3)
    t6 = time.perf_counter()
    assert _is_deterministic(G3) and _is_deterministic(LG3)
    print(f"AN4 train trigram ({'/'.join(map(str, lm.counts))} n-grams): G {_sizes(G3)} "
          f"({t5 - t4:.3f} s); LG {_sizes(LG3)} ({t6 - t5:.3f} s)")
    words = lang.words
    checked = 0
    for line in (etc / "an4_test.transcription").read_text().splitlines()[:50]:
        sentence = re.sub(r"\s*\([^()]*\)\s*$", "", line).upper().split()
        if any(x not in lm.vocab for x in sentence):  # would be scored as <UNK>
            continue
        exact = _with_backoffs(G3, [words[x] for x in sentence], words["#0"])
        assert _cost(pynini.compose(_accep(exact), G3)) == pytest.approx(
            -lm.score_sentence(sentence), abs=1e-3), sentence
        checked += 1
    assert checked >= 20
