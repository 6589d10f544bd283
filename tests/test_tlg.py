"""Tests of CTC WFST decoding with TLG graphs (asrkit.decode.wfst.tlg), on tiny sentencepiece
models and n-gram LMs trained here, with synthesized CTC posteriors (no corpus, no network)."""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from pathlib import Path

import pynini
import pytest
import torch

from asrkit.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from asrkit.decode.wfst import (
    CtcDecodingGraph,
    GraphError,
    decode_ctc_wfst,
    decode_ctc_wfst_batch,
    make_ctc_token_fst,
    make_piece_lexicon,
    make_tlg,
    make_tlg_graph,
)
from asrkit.lm.fusion import WordNgramScorer
from asrkit.lm.ngram import estimate_ngram, read_arpa, write_arpa
from asrkit.text.tokenizer import BLANK_ID, Tokenizer, train_tokenizer
from tests.synth import make_text_file

VOCAB = ["A", "CAT", "CATS", "DOG", "DOGS", "SAT", "THE"]
# Tokenizer text: every word of VOCAB, never a Z (so ZOO cannot be spelled).
TOKENIZER_TEXT = ["A CAT SAT", "THE CAT", "THE DOG SAT", "A DOG", "CATS AND DOGS",
                  "THE CATS SAT", "THE DOGS SAT"] * 10
# LM text: after THE the LM prefers DOG, after A it prefers CAT; ZOO is an LM word.
LM_TEXT = (["THE DOG SAT"] * 10 + ["THE CAT SAT"] + ["A CAT SAT"] * 10 + ["A DOG SAT"]
           + ["THE CATS SAT", "A DOGS SAT", "THE DOGS", "A CATS", "THE ZOO", "SAT"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The search runs many tiny tensor ops per frame: threads only add overhead (and on a
    busy machine contention); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tlg")


@pytest.fixture(scope="module")
def tok(workdir) -> Tokenizer:
    text = make_text_file(workdir / "text", {f"u{i:03d}": s
                                             for i, s in enumerate(TOKENIZER_TEXT)})
    return Tokenizer(train_tokenizer(text, workdir / "bpe", model_type="bpe", vocab_size=30))


@pytest.fixture(scope="module")
def char_tok(workdir) -> Tokenizer:
    text = make_text_file(workdir / "text_c", {f"u{i:03d}": s
                                               for i, s in enumerate(TOKENIZER_TEXT)})
    return Tokenizer(train_tokenizer(text, workdir / "char", model_type="char", vocab_size=100))


@pytest.fixture(scope="module")
def arpa(workdir) -> Path:
    path = workdir / "lm.arpa"
    write_arpa(estimate_ngram(LM_TEXT, order=2), path)
    return path


@pytest.fixture(scope="module")
def lm(arpa):
    return read_arpa(arpa)


@pytest.fixture(scope="module")
def graphs(tok, char_tok, arpa):
    """``{(tokenizer name, topology): (CtcDecodingGraph, TlgInfo)}``."""
    out = {}
    for name, t in (("bpe", tok), ("char", char_tok)):
        for topo in ("standard", "compact"):
            TLG, info = make_tlg(t, arpa, topology=topo)
            out[name, topo] = (CtcDecodingGraph.from_fst(TLG, info.lexicon.words,
                                                         info.lexicon.tokens, topology=topo),
                               info)
    return out


# --- helpers -----------------------------------------------------------------------------------

def _linear(labels) -> pynini.Fst:
    f = pynini.Fst()
    s = f.add_state()
    f.set_start(s)
    for label in labels:
        n = f.add_state()
        f.add_arc(s, pynini.Arc(label, label, 0.0, n))
        s = n
    f.set_final(s)
    return f


def _outputs(T: pynini.Fst, labels) -> set[tuple[int, ...]]:
    """Every output string of ``T`` for the input string ``labels`` (``<eps>`` dropped)."""
    composed = pynini.compose(_linear(labels), T)
    out = set()
    if composed.start() == pynini.NO_STATE_ID:
        return out
    it = composed.paths()
    while not it.done():
        out.add(tuple(o for o in it.olabels() if o))
        it.next()
    return out


def _collapse(frames, blank=0) -> tuple[int, ...]:
    """The CTC rule: merge runs, drop blanks."""
    return tuple(k for k, _ in itertools.groupby(frames) if k != blank)


def _log_posteriors(rows, V: int, peak: float = 0.95) -> torch.Tensor:
    """``(T, V)`` log-posteriors: a row ``k`` puts ``peak`` on token ``k``; a row
    ``{k: p, ...}`` puts those; the rest of the mass is spread evenly."""
    out = []
    for r in rows:
        probs = {r: peak} if isinstance(r, int) else dict(r)
        rest = (1.0 - sum(probs.values())) / (V - len(probs))
        out.append([math.log(probs.get(k, rest)) for k in range(V)])
    return torch.tensor(out, dtype=torch.float64)


def _align(words_ids, rng: random.Random) -> tuple[list[int], list[tuple[int, int]]]:
    """A random CTC alignment of the words' tokens (1-3 frames each, 0-2 blanks between, a
    blank at least between equal tokens) and each word's (first frame, end frame)."""
    frames: list[int] = []
    segs = []
    prev = None
    for ids in words_ids:
        start = None
        for k in ids:
            frames += [BLANK_ID] * max(rng.randint(0, 2), int(k == prev))
            if start is None:
                start = len(frames)
            frames += [k] * rng.randint(1, 3)
            prev = k
        segs.append((start, len(frames)))
    frames += [BLANK_ID] * rng.randint(0, 2)
    return frames, segs


# --- (a) T -------------------------------------------------------------------------------------

def test_standard_token_fst_is_the_ctc_collapsing_rule():
    V = 4  # blank, a, b, c
    T = make_ctc_token_fst(V)
    a, b = 1, 2
    # Labels are ids + 1 on both sides.
    assert _outputs(T, [a + 1, a + 1, BLANK_ID + 1, a + 1, b + 1, b + 1]) == {(a + 1, a + 1,
                                                                               b + 1)}
    # A repeat without a blank is one token, never two; with a blank it is two.
    assert _outputs(T, [a + 1, a + 1]) == {(a + 1,)}
    assert _outputs(T, [a + 1, BLANK_ID + 1, a + 1]) == {(a + 1, a + 1)}
    assert _outputs(T, [BLANK_ID + 1] * 3) == {()}
    # Every frame string has exactly one output: its CTC collapse.
    rng = random.Random(0)
    for _ in range(200):
        frames = [rng.randrange(V) for _ in range(rng.randint(0, 7))]
        want = tuple(k + 1 for k in _collapse(frames))
        assert _outputs(T, [k + 1 for k in frames]) == {want}, frames
    # Size: (U + 1)^2 arcs for U tokens.
    assert T.num_states() == V and sum(T.num_arcs(s) for s in T.states()) == V * V


def test_compact_token_fst_may_split_a_held_token():
    V = 4
    T = make_ctc_token_fst(V, topology="compact")
    a = 1
    assert _outputs(T, [a + 1, a + 1]) == {(a + 1,), (a + 1, a + 1)}
    assert _outputs(T, [a + 1, BLANK_ID + 1, a + 1]) == {(a + 1, a + 1)}
    rng = random.Random(1)
    for _ in range(100):  # the CTC collapse is always among the outputs
        frames = [rng.randrange(V) for _ in range(rng.randint(0, 6))]
        assert tuple(k + 1 for k in _collapse(frames)) in _outputs(T, [k + 1 for k in frames])
    assert sum(T.num_arcs(s) for s in T.states()) == 3 * (V - 1) + 1


@pytest.mark.parametrize("topology", ["standard", "compact"])
def test_token_fst_passes_disambiguation_symbols(topology):
    V, d0 = 4, 5  # tokens.txt: tokens 1..4, #0 at 5
    T = make_ctc_token_fst(V, disambig_ids=[d0], topology=topology)
    a, b = 2, 3  # labels
    assert (a, d0, b) in _outputs(T, [a, d0, b])
    assert (a, d0, a) in _outputs(T, [a, BLANK_ID + 1, d0, a])
    if topology == "standard":
        # #0 (a word boundary where G backs off) does not forget the last token: a held
        # token is still one token across it.
        assert _outputs(T, [a, d0, a]) == {(a, d0)}
    # Only the given tokens are emitted.
    T2 = make_ctc_token_fst(V, tokens=[1], topology=topology)
    assert _outputs(T2, [b]) == set()


def test_token_fst_errors():
    with pytest.raises(ValueError, match="topology"):
        make_ctc_token_fst(4, topology="eesen")
    with pytest.raises(ValueError, match="collide"):
        make_ctc_token_fst(4, disambig_ids=[3])
    with pytest.raises(ValueError, match="blank"):
        make_ctc_token_fst(4, blank=4)
    with pytest.raises(ValueError, match="num_tokens"):
        make_ctc_token_fst(1)


# --- L and the graph ---------------------------------------------------------------------------

def test_piece_lexicon_spells_words_with_the_tokenizer(tok, char_tok):
    for t in (tok, char_tok):
        lex = make_piece_lexicon(t, [*VOCAB, "<s>", "</s>", "<unk>", "#0"])
        assert lex.lexicon.words() == sorted(VOCAB)
        V = t.vocab_size
        for w in VOCAB:
            assert lex.lexicon[w] == [tuple(t.pieces(t.encode(w)))]
            assert lex.words[w] >= 1
        # tokens.txt: <eps> 0, token k at k + 1, then #0.. above V.
        assert lex.tokens["<eps>"] == 0 and lex.tokens["<blank>"] == BLANK_ID + 1
        assert all(lex.tokens[p] == k + 1 for k, p in enumerate(t.pieces(list(range(V)))))
        assert lex.disambig_ids[0] == lex.tokens["#0"] == V + 1
        assert [lex.words[s] for s in ("#0", "<s>", "</s>")] == [len(VOCAB) + i
                                                                for i in (1, 2, 3)]
    # Char spellings: CAT is a prefix of CATS, so it gets a disambiguation symbol.
    lex = make_piece_lexicon(char_tok, VOCAB)
    assert lex.lexicon_disambig["CAT"][0][-1] == "#1"
    assert lex.lexicon_disambig["CATS"][0][-1] != "#1"


def test_unspellable_words_are_reported_by_name(tok, arpa, caplog):
    with caplog.at_level(logging.WARNING):
        lex = make_piece_lexicon(tok, ["CAT", "ZOO"])
    assert list(lex.unspellable) == ["ZOO"] and "'Z'" in lex.unspellable["ZOO"]
    assert "ZOO" in caplog.text
    _, info = make_tlg(tok, arpa)
    assert info.lm_words_left_out == ["ZOO"]
    assert "ZOO" in info.lexicon.unspellable
    with pytest.raises(GraphError, match="ZOO"):
        make_tlg(tok, arpa, oov="error")
    with pytest.raises(GraphError, match="no word"):
        make_tlg(tok, arpa, words=["ZOO"])


def test_tlg_sizes_and_symbols(graphs):
    for (name, topo), (g, info) in graphs.items():
        assert set(info.sizes) == {"L", "G", "LG", "T", "TLG"}
        assert all(v >= 0 for v in info.seconds.values())
        # Input labels: token ids + 1 (no disambiguation symbol is left); outputs: words.
        top = int(g.graph.ilabel.max())
        assert 1 <= top <= g.num_tokens
        words = {g.id2word[int(w)] for w in g.graph.olabel.unique() if int(w)}
        assert words == set(VOCAB), (name, topo)
    s_info, c_info = graphs["bpe", "standard"][1], graphs["bpe", "compact"][1]
    assert c_info.sizes["T"][1] < s_info.sizes["T"][1]


# --- (b) decoding ------------------------------------------------------------------------------

SENTENCES = ["THE DOG SAT", "A CAT SAT", "THE CATS SAT", "A DOGS SAT", "SAT", "THE DOGS",
             "A CAT"]


@pytest.mark.parametrize("name", ["bpe", "char"])
@pytest.mark.parametrize("topology", ["standard", "compact"])
def test_decode_peaked_posteriors_returns_the_sentence(graphs, tok, char_tok, name, topology):
    t = tok if name == "bpe" else char_tok
    g, _ = graphs[name, topology]
    rng = random.Random(7)
    for sentence in SENTENCES:
        for _ in range(2):
            frames, segs = _align([t.encode(w) for w in sentence.split()], rng)
            r = decode_ctc_wfst(_log_posteriors(frames, t.vocab_size), g)
            assert r.words == sentence.split(), (frames, r.words)
            assert r.tokens == t.encode(sentence)
            assert r.frame_tokens.tolist() == frames
            assert r.segments == segs
            assert r.reached_final
            assert r.cost == pytest.approx(r.lm_cost + r.am_cost)


def test_decode_empty_and_batch(graphs, tok):
    g, _ = graphs["bpe", "standard"]
    V = tok.vocab_size
    r = decode_ctc_wfst(torch.zeros(0, V), g)
    assert r.words == [] and r.reached_final
    rng = random.Random(3)
    lps = [_log_posteriors(_align([tok.encode(w) for w in s.split()], rng)[0], V)
           for s in SENTENCES[:4]]
    lens = torch.tensor([len(x) for x in lps])
    batch = torch.zeros(len(lps), int(lens.max()), V, dtype=torch.float64)
    for b, x in enumerate(lps):
        batch[b, :len(x)] = x
    got = decode_ctc_wfst_batch(batch, lens, g)
    assert [r.words for r in got] == [decode_ctc_wfst(x, g).words for x in lps]
    with pytest.raises(ValueError, match="columns"):
        decode_ctc_wfst(torch.zeros(3, V + 1), g)


# --- (c) the LM decides where the acoustics are ambiguous --------------------------------------

def test_lm_resolves_ambiguous_acoustics(graphs, tok, lm):
    g, _ = graphs["bpe", "standard"]
    V = tok.vocab_size
    (cat,), (dog,) = tok.encode("CAT"), tok.encode("DOG")
    ambiguous = {cat: 0.5, dog: 0.45}  # the acoustics lean to CAT
    for first in ("THE", "A"):
        (w1,), (sat,) = tok.encode(first), tok.encode("SAT")
        lp = _log_posteriors([0, w1, 0, ambiguous, 0, sat, 0], V)
        lm_best = max(("CAT", "DOG"), key=lambda w: lm.score_sentence(f"{first} {w} SAT"))
        r = decode_ctc_wfst(lp, g)
        assert r.words == [first, lm_best, "SAT"]
        # With the LM's weight negligible the acoustics decide.
        r = decode_ctc_wfst(lp, g, acoustic_scale=1000.0)
        assert r.words == [first, "CAT", "SAT"]
    # The fixture is informative: after THE the LM overrides the acoustics.
    assert lm.score_sentence("THE DOG SAT") > lm.score_sentence("THE CAT SAT")


def test_lm_chooses_between_homophones(workdir, tok):
    # Sentencepiece normalizes full-width letters (NFKC): both words are spelled ▁CAT.
    wide = "\uff23\uff21\uff34"
    assert tok.encode(wide) == tok.encode("CAT")
    lm = estimate_ngram(["THE CAT"] * 5 + [f"A {wide}"] * 5 + ["THE", "A"], order=2)
    TLG, info = make_tlg(tok, lm)
    assert {info.lexicon.lexicon_disambig[w][0][-1] for w in ("CAT", wide)} == {"#1", "#2"}
    g = CtcDecodingGraph.from_fst(TLG, info.lexicon.words, info.lexicon.tokens)
    for first in ("THE", "A"):
        lp = _log_posteriors([0, *tok.encode(first), 0, *tok.encode("CAT"), 0],
                             tok.vocab_size)
        best = max(("CAT", wide), key=lambda w: lm.score_sentence(f"{first} {w}"))
        assert decode_ctc_wfst(lp, g).words == [first, best]


def test_blank_penalty_and_priors(graphs, tok):
    g, _ = graphs["bpe", "standard"]
    V = tok.vocab_size
    (the,), (cat,), (sat,) = tok.encode("THE"), tok.encode("CAT"), tok.encode("SAT")
    lp = _log_posteriors([the, 0, {BLANK_ID: 0.58, cat: 0.4}, 0, sat], V)
    plain = decode_ctc_wfst(lp, g, acoustic_scale=1000.0)
    assert plain.words == ["THE", "SAT"]
    pen = decode_ctc_wfst(lp, g, acoustic_scale=1000.0, blank_penalty=1.0)
    assert pen.words == ["THE", "CAT", "SAT"]
    # The penalty is in the acoustic cost: same path, one nat per blank frame more.
    small = decode_ctc_wfst(lp, g, acoustic_scale=1000.0, blank_penalty=0.1)
    assert small.words == plain.words
    n_blank = int((small.frame_tokens == BLANK_ID).sum())
    assert small.am_cost == pytest.approx(plain.am_cost + 0.1 * n_blank)
    # Uniform priors shift every path alike; priors can also flip the decision.
    uni = decode_ctc_wfst(lp, g, acoustic_scale=1000.0,
                          log_priors=torch.full((V,), -math.log(V)))
    assert uni.words == plain.words
    assert uni.am_cost == pytest.approx(plain.am_cost - len(lp) * math.log(V))
    priors = torch.full((V,), math.log(0.5 / (V - 1)))
    priors[BLANK_ID] = math.log(0.5)
    flip = decode_ctc_wfst(lp, g, acoustic_scale=1000.0, log_priors=priors)
    assert flip.words == ["THE", "CAT", "SAT"]
    with pytest.raises(ValueError, match="log_priors"):
        decode_ctc_wfst(lp, g, log_priors=torch.zeros(V + 1))


# --- (d) WFST 1-best = CTC prefix beam search with the word n-gram -----------------------------

@pytest.mark.parametrize("lm_weight", [1.0, 0.5])
def test_wfst_equals_prefix_beam_search_with_word_ngram(graphs, tok, lm, lm_weight):
    """With every frame either almost surely blank or a choice between whole words (single
    ``▁`` pieces of the graph's vocabulary), each hypothesis has one dominant alignment, so
    Viterbi (max over alignments) and the prefix search (sum) rank alike, and the WFST cost
    is the fused score with ``acoustic_scale = 1 / lm_weight``."""
    g, _ = graphs["bpe", "standard"]
    V = tok.vocab_size
    word_tokens = []
    for w in VOCAB:
        ids = tok.encode(w)
        assert len(ids) == 1, w  # a precondition of the fixture
        word_tokens.append(ids[0])
    sc = WordNgramScorer(lm, tok.pieces(list(range(V))))
    rng = random.Random(11)
    eps = 1e-6
    checked = lm_mattered = 0
    for _ in range(12):
        rows: list = [{BLANK_ID: 1 - eps}]
        for _ in range(rng.randint(1, 4)):
            cands = rng.sample(word_tokens, rng.randint(2, 3))
            weights = [rng.random() + 0.2 for _ in cands]
            total = sum(weights)
            rows.append({k: (1 - eps) * x / total for k, x in zip(cands, weights)})
            rows.append({BLANK_ID: 1 - eps})
        lp = _log_posteriors(rows, V)
        nbest = ctc_prefix_beam_search(lp, beam=128, token_topk=4, scorer=sc,
                                       lm_weight=lm_weight, final_scorer=sc.final)
        sc.reset()
        if len(nbest) > 1 and nbest[0][1] - nbest[1][1] < 1e-2:
            continue  # a near tie: either answer is right
        r = decode_ctc_wfst(lp, g, acoustic_scale=1.0 / lm_weight, beam=50.0)
        assert r.words == sc.words(tuple(nbest[0][0]))
        assert lm_weight * r.cost == pytest.approx(-nbest[0][1], abs=1e-3)
        checked += 1
        lm_mattered += r.tokens != ctc_greedy(lp[None], torch.tensor([len(lp)]))[0]
    assert checked >= 8
    assert lm_mattered >= 3  # the fixtures are informative: the LM overrode the acoustics


# --- graph dir ---------------------------------------------------------------------------------

def test_graph_dir_written_resumed_and_loaded(workdir, tok, char_tok, arpa, caplog):
    out = workdir / "graph"
    make_tlg_graph(tok.model_path, arpa, out)
    for f in ("TLG.fst", "words.txt", "tokens.txt", "lexicon.txt", "graph.json",
              "mkgraph.log"):
        assert (out / f).is_file(), f
    meta = json.loads((out / "graph.json").read_text())
    assert meta["num_tokens"] == tok.vocab_size and meta["topology"] == "standard"
    assert meta["lm_words_left_out"] == ["ZOO"] and "ZOO" in meta["unspellable"]
    assert set(meta["sizes"]) == {"L", "G", "LG", "T", "TLG"}
    assert sorted(ln.split()[0] for ln in (out / "lexicon.txt").read_text().splitlines()) \
        == sorted(VOCAB)

    g = CtcDecodingGraph.load(out, tokenizer=tok)
    assert g.topology == "standard" and g.num_tokens == tok.vocab_size
    frames, _ = _align([tok.encode(w) for w in ("THE", "CATS", "SAT")],
                       random.Random(5))
    assert decode_ctc_wfst(_log_posteriors(frames, tok.vocab_size), g).words == \
        ["THE", "CATS", "SAT"]

    # Complete for the same inputs: skipped; another topology rebuilds.
    mtime = (out / "TLG.fst").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        make_tlg_graph(tok.model_path, arpa, out)
    assert "skipping" in caplog.text
    assert (out / "TLG.fst").stat().st_mtime_ns == mtime
    make_tlg_graph(tok.model_path, arpa, out, topology="compact")
    assert json.loads((out / "graph.json").read_text())["topology"] == "compact"

    with pytest.raises(GraphError, match="another tokenizer"):
        CtcDecodingGraph.load(out, tokenizer=char_tok)
    with pytest.raises(FileNotFoundError):
        CtcDecodingGraph.load(workdir / "nowhere")
    with pytest.raises(FileNotFoundError):
        make_tlg_graph(tok.model_path, workdir / "missing.arpa", out)


def test_decode_nbest_from_the_lattice(graphs, tok, lm):
    """``nbest=N``: distinct word sequences, best first, rank 1 the 1-best with score -cost;
    ``nbest=1`` leaves the result as it was."""
    g, _ = graphs["bpe", "standard"]
    rng = random.Random(11)
    frames, _ = _align([tok.encode(w) for w in SENTENCES[0].split()], rng)
    lp = _log_posteriors(frames, tok.vocab_size, peak=0.5)
    one = decode_ctc_wfst(lp, g, acoustic_scale=2.0)
    r = decode_ctc_wfst(lp, g, acoustic_scale=2.0, nbest=4, lattice_beam=30.0)
    assert one.nbest is None
    assert (r.words, r.cost, r.tokens) == (one.words, one.cost, one.tokens)
    assert r.nbest[0] == (one.words, -one.cost)
    scores = [s for _, s in r.nbest]
    assert scores == sorted(scores, reverse=True) and len(r.nbest) == 4
    assert len({tuple(w) for w, _ in r.nbest}) == 4
    # a narrow lattice beam keeps only the hypotheses within it of the best
    narrow = decode_ctc_wfst(lp, g, acoustic_scale=2.0, nbest=4, lattice_beam=1e-3)
    assert narrow.nbest[0] == r.nbest[0]
    assert all(s >= scores[0] - 1e-3 - 1e-9 for _, s in narrow.nbest)
