"""Tests of C, H, HCLG (asrkit.decode.wfst.hclg) and the Viterbi beam search
(asrkit.decode.wfst.decoder), on a toy lang and bigram with synthetic log-likelihoods, and the
decoding speed on an AN4-size graph when ``AN4_DIR`` points at the corpus (``-s`` prints it)."""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pynini
import pytest
import torch

from asrkit.decode.wfst import (
    ContextDependencyLike,
    DecodingError,
    DecodingGraph,
    GraphError,
    MonophoneContext,
    arpa_to_fst,
    compose_context,
    decode_fst,
    decode_fst_batch,
    disambig_ids,
    make_context_fst,
    make_h_fst,
    make_hclg,
    make_lexicon_fst,
    make_lg,
    reduce_ilabels,
)
from asrkit.lm.ngram import estimate_ngram, read_arpa
from asrkit.models.hmm_gmm import PhoneHmm, TransitionModel
from asrkit.text.lexicon import Lexicon, make_lang, read_cmu_dict
from tests.test_wfst_graph import TOY_ARPA, TOY_LEXICON

AN4 = os.environ.get("AN4_DIR")


# --- fixtures ----------------------------------------------------------------------------------

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
def LG(lang, G):
    return make_lg(make_lexicon_fst(lang, sil_prob=0.3), G)


@pytest.fixture(scope="module")
def tm(lang):
    return TransitionModel.from_phone_set(lang.phone_set)


@pytest.fixture(scope="module")
def hclg(lang, G, tm):
    return make_hclg(lang, G, tm, Mono(tm))


@pytest.fixture(scope="module")
def graph(hclg):
    return DecodingGraph.from_fst(hclg[0])


def _phone_ids(lang) -> list[int]:
    return [lang.phones[p] for p in (*lang.phone_set.silence, *lang.phone_set.nonsilence)]


# --- context dependencies and transition models written against the protocols --------------

class Mono:
    """A monophone context dependency from the transition model (the protocol's smallest
    implementation)."""

    context_width = 1
    central_position = 0

    def __init__(self, tm: TransitionModel) -> None:
        self.tm = tm

    def pdf_id(self, phones: tuple[int, ...], pdf_class: int) -> int:
        return self.tm.phone_hmm(phones[0]).pdfs[pdf_class]


class ToyTri:
    """Triphones whose first state depends on the left context and last state on the right
    one (odd phone id: the second copy of the monophone pdf), the middle state on neither;
    ``mono=True`` ignores the context (monophone pdfs in triphone windows)."""

    context_width = 3
    central_position = 1

    def __init__(self, tm: TransitionModel, mono: bool = False) -> None:
        self.tm, self.mono = tm, mono
        self.num_pdfs = tm.num_pdfs * (1 if mono else 2)

    def pdf_id(self, phones: tuple[int, ...], pdf_class: int) -> int:
        left, phone, right = phones
        hmm = self.tm.phone_hmm(phone)
        pdf = hmm.pdfs[pdf_class]
        if self.mono:
            return pdf
        ctx = left if pdf_class == 0 else right if pdf_class == hmm.num_states - 1 else 0
        return pdf + self.tm.num_pdfs * (ctx % 2)


class ToyTriTransitions:
    """Transition states ``(phone, HMM state, pdf)`` for :class:`ToyTri`'s pdfs: the tid tables
    of :class:`TransitionModel` plus ``transition_id`` (what ``make_h_fst`` uses for
    context-dependent pdfs)."""

    def __init__(self, tm: TransitionModel) -> None:
        self.tm = tm
        S = tm.num_pdfs
        rows = [(0, 0, 0, 0, 0)]
        log_probs = [0.0]
        self._tid: dict[tuple[int, int, int, int], int] = {}
        tstates: dict[tuple[int, int, int], int] = {}
        for phone in tm.phones.values():
            hmm = tm.phone_hmm(phone)
            for k, row in enumerate(hmm.transitions):
                for pdf in (hmm.pdfs[k], hmm.pdfs[k] + S):
                    ts = tstates.setdefault((phone, k, pdf), len(tstates))
                    for d, tid in row:
                        self._tid[(phone, k, pdf, d)] = len(rows)
                        rows.append((ts, pdf, phone, k, d))
                        log_probs.append(float(tm.log_probs[tid]))
        cols = [torch.tensor(c) for c in zip(*rows)]
        self.tid2tstate, self.tid2pdf, self.tid2phone, self.tid2state, self.tid2dest = cols
        self.log_probs = torch.tensor(log_probs, dtype=torch.float64)
        self.num_tids = len(rows) - 1

    def phone_hmm(self, phone: int) -> PhoneHmm:
        return self.tm.phone_hmm(phone)

    def transition_id(self, phone: int, hmm_state: int, pdf: int, dest: int) -> int:
        return self._tid[(phone, hmm_state, pdf, dest)]


class MonoOnly:
    """A monophone transition model with the tid tables and ``phone_hmm`` only (no
    ``transition_id``), as ``make_h_fst`` accepts."""

    def __init__(self, tm: TransitionModel) -> None:
        self.tm = tm
        self.num_tids, self.log_probs, self.tid2pdf = tm.num_tids, tm.log_probs, tm.tid2pdf
        self.tid2tstate, self.tid2state, self.tid2dest = tm.tid2tstate, tm.tid2state, tm.tid2dest

    def phone_hmm(self, phone: int) -> PhoneHmm:
        return self.tm.phone_hmm(phone)


def test_protocol_implementations(tm):
    assert isinstance(Mono(tm), ContextDependencyLike)
    assert isinstance(MonophoneContext(tm), ContextDependencyLike)
    assert MonophoneContext(tm).num_pdfs == tm.num_pdfs
    phone = tm.phones["K_B"]
    assert MonophoneContext(tm).pdf_id((phone,), 2) == tm.phone_hmm(phone).pdfs[2]
    with pytest.raises(ValueError, match="one phone"):
        MonophoneContext(tm).pdf_id((phone, phone), 0)


# --- helpers -----------------------------------------------------------------------------------

def _paths(fst: pynini.Fst) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
    """All ``(input labels, output labels, cost)`` of an acyclic FST, epsilons dropped."""
    out = []
    it = fst.paths()
    while not it.done():
        out.append((tuple(i for i in it.ilabels() if i), tuple(o for o in it.olabels() if o),
                    float(it.weight())))
        it.next()
    return out


def _accep(labels: Sequence[int]) -> pynini.Fst:
    fst = pynini.Fst()
    fst.add_states(len(labels) + 1)
    fst.set_start(0)
    fst.set_final(len(labels))
    for k, i in enumerate(labels):
        fst.add_arc(k, pynini.Arc(i, i, 0.0, k + 1))
    return fst


def _alignment(tm, cd, phones: Sequence[int], frames: Sequence[int]) -> list[int]:
    """Pdfs of a left-to-right pass through ``phones``, HMM state ``k`` of each phone
    lasting ``frames[k]`` frames (pdfs from the context dependency ``cd``)."""
    N, P = cd.context_width, cd.central_position
    padded = [0] * P + list(phones) + [0] * (N - 1 - P)
    pdfs = []
    for i, phone in enumerate(phones):
        window = tuple(padded[i:i + N])
        for k in range(tm.phone_hmm(phone).num_states):
            pdfs += [cd.pdf_id(window, k)] * frames[k % len(frames)]
    return pdfs


def _peaked(pdfs: Sequence[int], num_pdfs: int, *, low: float = -30.0) -> torch.Tensor:
    """``(T, S)`` log-likelihoods: 0 for the given pdf of each frame, ``low`` elsewhere."""
    ll = torch.full((len(pdfs), num_pdfs), low)
    ll[torch.arange(len(pdfs)), torch.tensor(pdfs)] = 0.0
    return ll


def _words(lang, text: str) -> list[int]:
    return [lang.words[w] for w in text.split()]


def _phones(lang, text: str) -> list[int]:
    return [lang.phones[p] for p in text.split()]


def _exact_cost(hclg: pynini.Fst, loglikes: torch.Tensor, tid2pdf: torch.Tensor,
                acoustic_scale: float) -> tuple[float, tuple[int, ...]]:
    """Cost and words of the best path of ``sausage(loglikes) o HCLG`` by OpenFst."""
    T = loglikes.shape[0]
    num_tids = tid2pdf.numel() - 1
    costs = (-acoustic_scale * loglikes.double())[:, tid2pdf[1:]]  # (T, num_tids)
    sausage = pynini.Fst()
    sausage.add_states(T + 1)
    sausage.set_start(0)
    sausage.set_final(T)
    for t in range(T):
        row = costs[t].tolist()
        for tid in range(1, num_tids + 1):
            sausage.add_arc(t, pynini.Arc(tid, tid, row[tid - 1], t + 1))
    composed = pynini.compose(sausage, hclg)
    best = pynini.shortestpath(composed).rmepsilon().topsort()
    ((_, words, _),) = _paths(best)
    cost = float(pynini.shortestdistance(composed, reverse=True)[composed.start()])
    return cost, words


# --- C -----------------------------------------------------------------------------------------

def test_context_n1_is_identity(lang, LG):
    phones, dis = _phone_ids(lang), disambig_ids(lang.phones)
    CLG, info = compose_context(LG, 1, 0, phones, dis)
    assert pynini.equal(CLG, LG)
    assert info[0] == ()
    for p in phones:
        assert info[p] == (p,)
    for d in dis:
        assert info[d] == (-d,)
    C, c_info = make_context_fst(1, 0, phones, dis)
    assert c_info == info
    assert pynini.equal(pynini.compose(C, LG).connect(), LG.copy().connect())


def test_context_n3_matches_full_c(lang, LG):
    phones, dis = _phone_ids(lang), disambig_ids(lang.phones)
    CLG, info = compose_context(LG, 3, 1, phones, dis)
    C, c_info = make_context_fst(3, 1, phones, dis)
    assert C.num_states() > 1000  # every history of two phones: why CLG is built on the fly
    # Same machine up to the numbering of the windows.
    index = {w: i for i, w in enumerate(info)}
    assert len(index) == len(info)
    full = pynini.compose(C, LG).connect()
    used = {a.ilabel for s in full.states() for a in full.arcs(s)}
    assert {c_info[i] for i in used} <= set(index)
    full.relabel_pairs(ipairs=[(i, index[c_info[i]]) for i in used if i])
    assert pynini.randequivalent(full, CLG, npath=300, seed=3, max_length=60)


def test_context_n3_windows_are_consistent(lang, LG):
    phones, dis = _phone_ids(lang), disambig_ids(lang.phones)
    CLG, info = compose_context(LG, 3, 1, phones, dis)
    assert all(len(w) == 3 or (len(w) == 1 and -w[0] in dis) for w in info[1:])
    L_plain = make_lexicon_fst(lang, sil_prob=0.3, disambig=False)
    sample = pynini.randgen(CLG, npath=40, seed=11, max_length=80)
    checked = 0
    for ilabels, words, _ in _paths(sample):
        windows = [info[i] for i in ilabels if len(info[i]) == 3]
        if not windows:
            continue
        assert windows[0][0] == 0 and windows[-1][2] == 0
        for a, b in itertools.pairwise(windows):
            assert a[1:] == b[:2], (a, b)
        # The central phones spell the same words through L.
        spelled = pynini.compose(_accep([w[1] for w in windows]), L_plain)
        assert words in {o for _, o, _ in _paths(spelled.rmepsilon())}
        checked += 1
    assert checked >= 20


def test_context_errors(lang, LG):
    phones, dis = _phone_ids(lang), disambig_ids(lang.phones)
    with pytest.raises(ValueError, match="central position"):
        compose_context(LG, 3, 3, phones, dis)
    with pytest.raises(ValueError, match="context width"):
        make_context_fst(0, 0, phones, dis)
    with pytest.raises(GraphError, match="neither <eps>, a phone"):
        compose_context(LG, 3, 1, phones[1:], dis)  # SIL missing from the phone ids
    with pytest.raises(ValueError, match="both phones and disambiguation"):
        compose_context(LG, 1, 0, phones, [*dis, phones[0]])


# --- H and HCLG --------------------------------------------------------------------------------

def test_h_fst(lang, tm):
    info = [(), (lang.phones["AH_S"],), (-lang.phones["#1"],)]
    H, disambig = make_h_fst(info, Mono(tm), tm)
    assert disambig == [tm.num_tids + 1]
    hmm = tm.phone_hmm(lang.phones["AH_S"])
    forward = [next(t for d, t in row if d == k + 1) for k, row in enumerate(hmm.transitions)]
    out = _paths(pynini.compose(_accep(forward), H))
    # Costs of the forward transitions renormalised without self-loops: 0 for 3-state L-to-R.
    assert [(o, c) for _, o, c in out] == [((1,), pytest.approx(0.0, abs=1e-6))]
    assert [o for _, o, _ in _paths(pynini.compose(_accep(disambig), H))] == [(2,)]
    with pytest.raises(GraphError, match="not an emitting phone"):
        make_h_fst([(), (lang.phones["#0"],)], Mono(tm), tm)
    with pytest.raises(GraphError, match="context width 1"):
        make_h_fst([(), (1, 2, 3)], Mono(tm), tm)
    # A context-dependent pdf the transition model has no transition state for ...
    window = (1, lang.phones["K_B"], 0)  # odd left context: a pdf of ToyTri's second copy
    with pytest.raises(GraphError, match=re.escape(f"context window {window}")):
        make_h_fst([(), window], ToyTri(tm), tm)
    # ... and with a monophone transition model that has no transition_id at all.
    mono_only = MonoOnly(tm)
    assert not hasattr(mono_only, "transition_id")
    H2, _ = make_h_fst(info, Mono(tm), mono_only)
    assert pynini.equal(H2, H)
    with pytest.raises(GraphError, match="transition_id"):
        make_h_fst([(), window], ToyTri(tm), mono_only)


def test_hclg_structure(hclg, tm, lang):
    fst, info = hclg
    assert set(info.sizes) == {"G", "L", "LG", "CLG", "Ha", "HCLGa", "HCLG"}
    assert info.sizes["HCLG"] == (fst.num_states(), sum(fst.num_arcs(s) for s in fst.states()))
    assert (info.context_width, info.central_position) == (1, 0)
    ilabels = {a.ilabel for s in fst.states() for a in fst.arcs(s)}
    olabels = {a.olabel for s in fst.states() for a in fst.arcs(s)}
    assert ilabels <= set(range(tm.num_tids + 1))
    assert not ilabels & set(info.disambig_tids)
    assert olabels <= {i for w, i in lang.words.items() if not w.startswith("#")}
    # Input-deterministic apart from the <eps> arcs left by the disambiguation symbols.
    for s in fst.states():
        labels = [a.ilabel for a in fst.arcs(s) if a.ilabel]
        assert len(labels) == len(set(labels))
    assert fst.properties(pynini.I_LABEL_SORTED, True) == pynini.I_LABEL_SORTED


def test_hclg_path_cost_is_model_probability(lang, G, lm, tm):
    """With both scales 1, a path costs -ln P(words) + lexicon costs - ln P(tids)."""
    fst, _ = make_hclg(lang, G, tm, self_loop_scale=1.0, transition_scale=1.0)
    pdfs = _alignment(tm, Mono(tm), _phones(lang, "AH_S K_B AE_I T_E"), [1, 4, 2])
    r = decode_fst(fst, _peaked(pdfs, tm.num_pdfs), tm.tid2pdf)
    assert r.words == _words(lang, "A CAT")
    expected = (-lm.score_sentence("A CAT") + 3 * math.log(2.0)
                - float(tm.log_probs[r.tids].sum()))
    assert r.lm_cost == pytest.approx(expected, abs=1e-4)
    assert r.am_cost == pytest.approx(0.0)
    assert [p for _, _, p in tm.split_to_phones(r.tids)] == _phones(lang, "AH_S K_B AE_I T_E")
    # Each HMM state for its number of frames: self-loops then the forward transition.
    assert tm.tid2pdf[r.tids].tolist() == pdfs
    assert [e - s for s, e, _ in tm.split_to_phones(r.tids)] == [7] * 4


# --- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,phones,frames", [
    ("A CAT", "AH_S K_B AE_I T_E", [3, 3, 3]),
    ("DOG A CAT", "SIL D_B AO_I G_E AH_S SIL K_B AE_I T_E SIL", [2, 5, 1]),
    ("CAT O", "K_B AE_I T_E OW_S", [1, 1, 1]),
])
def test_decode_known_sequence(graph, tm, lang, text, phones, frames):
    pdfs = _alignment(tm, Mono(tm), _phones(lang, phones), frames)
    r = decode_fst(graph, _peaked(pdfs, tm.num_pdfs), tm.tid2pdf)
    assert r.words == _words(lang, text)
    assert r.reached_final
    assert r.tids.shape == (len(pdfs),)
    assert tm.tid2pdf[r.tids].tolist() == pdfs
    assert [p for _, _, p in tm.split_to_phones(r.tids)] == _phones(lang, phones)
    assert r.am_cost == pytest.approx(0.0)
    assert r.cost == pytest.approx(r.lm_cost + 0.1 * r.am_cost)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_is_exact_viterbi(hclg, graph, tm, seed):
    gen = torch.Generator().manual_seed(seed)
    T = 14
    ll = torch.randn(T, tm.num_pdfs, generator=gen) * 4.0
    r = decode_fst(graph, ll, tm.tid2pdf, beam=math.inf, max_active=10**9,
                   acoustic_scale=0.5)
    cost, words = _exact_cost(hclg[0], ll, tm.tid2pdf, 0.5)
    assert r.cost == pytest.approx(cost, abs=1e-3)
    assert tuple(r.words) == words
    assert r.lm_cost + 0.5 * r.am_cost == pytest.approx(r.cost)
    # Compacting the backpointers every frame or never gives the same path.
    r1 = decode_fst(graph, ll, tm.tid2pdf, beam=math.inf, max_active=10**9,
                    acoustic_scale=0.5, gc_threshold=1)
    r2 = decode_fst(graph, ll, tm.tid2pdf, beam=math.inf, max_active=10**9,
                    acoustic_scale=0.5, gc_threshold=10**9)
    assert torch.equal(r1.tids, r.tids) and torch.equal(r2.tids, r.tids)


def test_beam_and_max_active_pruning(hclg, graph, tm):
    gen = torch.Generator().manual_seed(5)
    T = 40
    ll = torch.randn(T, tm.num_pdfs, generator=gen) * 3.0
    exact = decode_fst(graph, ll, tm.tid2pdf, beam=math.inf, max_active=10**9)
    assert exact.cost == pytest.approx(_exact_cost(hclg[0], ll, tm.tid2pdf, 0.1)[0], abs=1e-3)
    assert int(exact.num_active.max()) > 20
    for beam, max_active in [(13.0, 7000), (2.0, 7000), (0.5, 7000), (13.0, 20), (13.0, 3),
                             (1.0, 1)]:
        r = decode_fst(graph, ll, tm.tid2pdf, beam=beam, max_active=max_active)
        assert r.cost >= exact.cost - 1e-6
        assert int(r.num_active.max()) <= max_active
        assert r.num_active.shape == (T,) and int(r.num_active.min()) >= 1
        # The reported cost is the traced path's.
        assert r.lm_cost + 0.1 * r.am_cost == pytest.approx(r.cost)



def _same_result(a, b) -> bool:
    return (a.words == b.words and a.cost == b.cost and a.am_cost == b.am_cost
            and a.lm_cost == b.lm_cost and a.reached_final == b.reached_final
            and torch.equal(a.tids, b.tids) and torch.equal(a.num_active, b.num_active))


@pytest.mark.parametrize("beam,max_active,gc", [(13.0, 7000, 10**6), (2.0, 7000, 10**6),
                                                (13.0, 5, 10**6), (1.0, 1, 10**6),
                                                (math.inf, 10**9, 1), (13.0, 12, 1)])
def test_batch_search_equals_one_at_a_time(graph, tm, lang, beam, max_active, gc):
    """decode_fst_batch gives each utterance exactly decode_fst's result: per-utterance beam
    and max_active (a batch-wide beam or top-k would change the survivors), lengths that
    differ (each finished at its own last frame), backpointer compaction every frame."""
    gen = torch.Generator().manual_seed(11)
    lls = [torch.randn(T, tm.num_pdfs, generator=gen) * 3.0 for T in (17, 40, 3, 40, 25, 9)]
    # one utterance with a real sentence in it
    lls.append(_peaked(_alignment(tm, Mono(tm), _phones(lang, "AH_S K_B AE_I T_E"), [3]),
                       tm.num_pdfs))
    opts = {"beam": beam, "max_active": max_active, "gc_threshold": gc, "acoustic_scale": 0.3}
    one = [decode_fst(graph, x, tm.tid2pdf, **opts) for x in lls]
    batch = decode_fst_batch(graph, lls, tm.tid2pdf, **opts)
    assert len(batch) == len(lls)
    for a, b in zip(one, batch):
        assert _same_result(a, b), (a, b)
    if beam > 2.0 and max_active > 20:  # not pruned to death
        assert batch[-1].words == _words(lang, "A CAT")
    if max_active < 20:  # the per-utterance cap was binding
        assert max(int(r.num_active.max()) for r in batch) == max_active
    # a batch of one is the same search
    assert _same_result(decode_fst_batch(graph, lls[1:2], tm.tid2pdf, **opts)[0], one[1])



def test_word_insertion_penalty(hclg, tm, lang):
    """Every word costs the penalty more (Kaldi's lattice-add-penalty); a large one trades
    words away, a negative one adds them."""
    ll = _peaked(_alignment(tm, Mono(tm), _phones(lang, "AH_S K_B AE_I T_E"), [3]),
                 tm.num_pdfs)
    base = decode_fst(DecodingGraph.from_fst(hclg[0]), ll, tm.tid2pdf)
    small = decode_fst(DecodingGraph.from_fst(hclg[0], 0.01), ll, tm.tid2pdf)
    assert small.words == base.words == _words(lang, "A CAT")
    assert small.cost == pytest.approx(base.cost + 0.01 * len(base.words))
    assert small.am_cost == pytest.approx(base.am_cost)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(60, tm.num_pdfs, generator=gen)
    counts = [len(decode_fst(DecodingGraph.from_fst(hclg[0], p), noise, tm.tid2pdf,
                             acoustic_scale=1.0).words) for p in (-20.0, 0.0, 20.0)]
    assert counts[0] > counts[1] >= counts[2], counts

def test_batch_search_edge_cases(graph, tm):
    """A dead utterance fails alone; no frames and too few frames as decode_fst."""
    dead = torch.zeros(6, tm.num_pdfs)
    dead[3] = -math.inf
    ok = torch.randn(8, tm.num_pdfs, generator=torch.Generator().manual_seed(1))
    res = decode_fst_batch(graph, [ok, dead, torch.zeros(0, tm.num_pdfs),
                                   torch.zeros(2, tm.num_pdfs)], tm.tid2pdf)
    assert _same_result(res[0], decode_fst(graph, ok, tm.tid2pdf))
    assert isinstance(res[1], DecodingError) and "frame 3: no token survived" in str(res[1])
    assert res[2].reached_final and res[2].words == [] and res[2].tids.shape == (0,)
    assert not res[3].reached_final and res[3].tids.shape == (2,)
    assert decode_fst_batch(graph, [], tm.tid2pdf) == []
    with pytest.raises(ValueError, match="same number of columns"):
        decode_fst_batch(graph, [ok, ok[:, :-1]], tm.tid2pdf)
    with pytest.raises(ValueError, match="max_active"):
        decode_fst_batch(graph, [ok], tm.tid2pdf, max_active=0)

def test_lm_resolves_homophones(graph, tm, lang):
    """O and OH sound the same (OW_S); G prefers <s> O and DOG OH."""
    ow = _phones(lang, "OW_S")
    r = decode_fst(graph, _peaked(_alignment(tm, Mono(tm), ow, [3]), tm.num_pdfs), tm.tid2pdf)
    assert r.words == _words(lang, "O")
    phones = _phones(lang, "D_B AO_I G_E OW_S")
    r = decode_fst(graph, _peaked(_alignment(tm, Mono(tm), phones, [3]), tm.num_pdfs),
                   tm.tid2pdf)
    assert r.words == _words(lang, "DOG OH")


def test_lm_resolves_ambiguous_acoustics(graph, tm, lang):
    """Frames equally likely under A CAT and A DOG: G picks A CAT (P(CAT | A) > P(DOG | A),
    P(</s> | CAT) > P(</s> | DOG)); acoustics favouring DOG enough win over G."""
    cat = _alignment(tm, Mono(tm), _phones(lang, "AH_S K_B AE_I T_E"), [3])
    dog = _alignment(tm, Mono(tm), _phones(lang, "AH_S D_B AO_I G_E"), [3])
    frames = torch.arange(len(cat))
    ll = _peaked(cat, tm.num_pdfs)
    ll[frames, torch.tensor(dog)] = 0.0
    assert decode_fst(graph, ll, tm.tid2pdf).words == _words(lang, "A CAT")
    differ = torch.tensor([t for t in range(len(cat)) if cat[t] != dog[t]])
    ll[differ, torch.tensor(cat)[differ]] = -0.5  # 18 frames, 9 nats for DOG
    assert decode_fst(graph, ll, tm.tid2pdf, acoustic_scale=1.0).words == \
        _words(lang, "A DOG")
    assert decode_fst(graph, ll, tm.tid2pdf, acoustic_scale=0.01).words == \
        _words(lang, "A CAT")


@pytest.mark.parametrize("mono_pdfs", [True, False])
def test_triphone_graph_decodes(lang, G, tm, mono_pdfs):
    cd = ToyTri(tm, mono=mono_pdfs)
    tmodel = tm if mono_pdfs else ToyTriTransitions(tm)
    fst, info = make_hclg(lang, G, tmodel, cd)
    assert (info.context_width, info.central_position) == (3, 1)
    assert any(len(w) == 3 and w[0] and w[2] for w in info.ilabel_info)
    graph = DecodingGraph.from_fst(fst)
    for text, phones in [("A CAT", "AH_S K_B AE_I T_E"),
                         ("DOG OH", "SIL D_B AO_I G_E SIL OW_S")]:
        pdfs = _alignment(tm, cd, _phones(lang, phones), [2, 1, 3])
        r = decode_fst(graph, _peaked(pdfs, cd.num_pdfs), tmodel.tid2pdf)
        assert r.words == _words(lang, text)
        assert tmodel.tid2pdf[r.tids].tolist() == pdfs  # the context-dependent pdfs
        assert r.am_cost == pytest.approx(0.0)


def _hmm_key(tm, cd, window: tuple[int, ...]) -> tuple:
    """What make_h_fst builds a window's HMM from: central phone and per-state pdfs."""
    if len(window) == 1 and window[0] < 0:
        return window
    phone = window[cd.central_position]
    return phone, tuple(cd.pdf_id(window, k) for k in range(tm.phone_hmm(phone).num_states))


@pytest.mark.parametrize("mono_pdfs", [True, False])
def test_reduce_ilabels(lang, LG, tm, mono_pdfs):
    cd = ToyTri(tm, mono=mono_pdfs)
    phones, dis = _phone_ids(lang), disambig_ids(lang.phones)
    _, info = compose_context(LG, 3, 1, phones, dis)
    reduced, imap = reduce_ilabels(info, cd, tm)
    assert reduced[0] == () and imap[0] == 0
    assert len(imap) == len(info)
    keys = [_hmm_key(tm, cd, w) for w in reduced[1:]]
    assert len(set(keys)) == len(keys)  # one label per distinct HMM ...
    for i, w in enumerate(info[1:], start=1):  # ... standing for every window with it
        assert _hmm_key(tm, cd, reduced[imap[i]]) == _hmm_key(tm, cd, w)
    assert {_hmm_key(tm, cd, w) for w in info[1:]} == set(keys)
    # Labels in order of first use, each the first window of its class.
    first = [imap.index(r) for r in range(1, len(reduced))]
    assert first == sorted(first)
    assert [info[i] for i in first] == reduced[1:]
    # Disambiguation entries keep one label each.
    assert sorted(w for w in reduced if len(w) == 1) == sorted((-d,) for d in dis)
    used_phones = {w[1] for w in info[1:] if len(w) == 3}
    if mono_pdfs:  # monophone pdfs in triphone windows: one label per central phone
        assert len(reduced) - 1 == len(used_phones) + len(dis)
    else:  # the first state sees left % 2, the last right % 2: up to 4 HMMs per phone
        assert len(used_phones) + len(dis) < len(reduced) - 1 <= 4 * len(used_phones) + len(dis)
    assert len(reduced) < len(info)
    # Errors, as make_h_fst's.
    with pytest.raises(GraphError, match="context width 3"):
        reduce_ilabels([(), (1, 2)], cd, tm)
    with pytest.raises(GraphError, match="not an emitting phone"):
        reduce_ilabels([(), (0, lang.phones["#1"], 0)], cd, tm)
    # Monophone windows are all distinct: nothing to merge.
    _, info1 = compose_context(LG, 1, 0, phones, dis)
    reduced1, imap1 = reduce_ilabels(info1, Mono(tm), tm)
    assert reduced1 == [(), *(w for w in info1 if w)]
    assert [reduced1[r] for r in imap1] == info1


def _best(hclg: pynini.Fst, tids: Sequence[int]) -> tuple[float, tuple[int, ...]] | None:
    """Cost and words of the cheapest path of ``hclg`` reading ``tids``, None if none."""
    composed = pynini.compose(_accep(tids), hclg)
    if composed.start() == pynini.NO_STATE_ID or composed.num_states() == 0:
        return None
    best = pynini.shortestpath(composed).rmepsilon().topsort()
    paths = _paths(best)
    if not paths:
        return None
    ((_, words, cost),) = paths
    return cost, words


@pytest.mark.parametrize("mono_pdfs", [True, False])
def test_remapped_ilabels_give_the_same_graph(lang, G, tm, mono_pdfs):
    """HCLG built over one ilabel per distinct HMM (default) and over every context window
    (remap_ilabels=False): the same transition-id strings, costs and words."""
    cd = ToyTri(tm, mono=mono_pdfs)
    tmodel = tm if mono_pdfs else ToyTriTransitions(tm)
    remapped, info = make_hclg(lang, G, tmodel, cd)
    plain, info0 = make_hclg(lang, G, tmodel, cd, remap_ilabels=False)
    assert info0.ilabel_map is None and info0.h_ilabel_info == info0.ilabel_info
    assert "CLGr" not in info0.sizes
    assert info.ilabel_info == info0.ilabel_info
    assert info.ilabel_map is not None and len(info.ilabel_map) == len(info.ilabel_info)
    assert len(info.h_ilabel_info) < len(info.ilabel_info)
    assert info.sizes["Ha"][0] < info0.sizes["Ha"][0]
    assert len(info.disambig_tids) == len(info0.disambig_tids)
    assert set(info.peak_rss_mb) == set(info.sizes) - {"G"}
    assert list(info.sizes) == ["G", "L", "LG", "CLG", "CLGr", "Ha", "HCLGa", "HCLG"]
    checked = 0
    for seed, (a, b) in enumerate([(remapped, plain), (plain, remapped)] * 2):
        sample = pynini.randgen(a, npath=25, seed=seed, max_length=60)
        for ilabels, _, _ in _paths(sample):
            got_a, got_b = _best(a, ilabels), _best(b, ilabels)
            assert got_a is not None and got_b is not None
            assert got_b[0] == pytest.approx(got_a[0], abs=1e-3)
            assert got_b[1] == got_a[1]
            checked += 1
    assert checked >= 50
    # And it decodes the same.
    graph = DecodingGraph.from_fst(remapped)
    for text, phones in [("A CAT", "AH_S K_B AE_I T_E"),
                         ("DOG OH", "SIL D_B AO_I G_E SIL OW_S")]:
        pdfs = _alignment(tm, cd, _phones(lang, phones), [2, 1, 3])
        r = decode_fst(graph, _peaked(pdfs, cd.num_pdfs), tmodel.tid2pdf)
        assert r.words == _words(lang, text)
        assert tmodel.tid2pdf[r.tids].tolist() == pdfs


def test_decode_ctc_style_graph():
    """A CTC token graph (input: token + 1, blank = token 0): repeats and blanks collapse."""
    V = 3  # blank, a, b
    fst = pynini.Fst()
    start = fst.add_state()
    fst.set_start(start)
    fst.set_final(start)
    fst.add_arc(start, pynini.Arc(1, 0, 0.0, start))
    tok = {k: fst.add_state() for k in (1, 2)}
    for k, s in tok.items():
        fst.set_final(s)
        fst.add_arc(start, pynini.Arc(k + 1, k, 0.0, s))
        fst.add_arc(s, pynini.Arc(k + 1, 0, 0.0, s))
        fst.add_arc(s, pynini.Arc(1, 0, 0.0, start))
        for j, s2 in tok.items():
            if j != k:
                fst.add_arc(s, pynini.Arc(j + 1, j, 0.0, s2))
    frames = [1, 1, 0, 1, 2, 2, 0]  # a a <b> a b b <b>  ->  a a b
    logp = torch.full((len(frames), V), math.log(0.05))
    logp[torch.arange(len(frames)), torch.tensor(frames)] = math.log(0.9)
    r = decode_fst(fst, logp, torch.arange(V + 1) - 1, acoustic_scale=1.0)
    assert r.words == [1, 1, 2]
    assert (r.tids - 1).tolist() == frames


def test_decode_edge_cases(graph, tm, lang, caplog):
    # Too few frames for any sentence (a phone takes 3): the best partial path, with a warning.
    with caplog.at_level(logging.WARNING, logger="asrkit.decode.wfst.decoder"):
        r = decode_fst(graph, torch.zeros(2, tm.num_pdfs), tm.tid2pdf)
    assert not r.reached_final and "final state" in caplog.text
    assert r.tids.shape == (2,)
    # No frames: the empty sentence (<s> </s>) is final.
    r = decode_fst(graph, torch.zeros(0, tm.num_pdfs), tm.tid2pdf)
    assert r.reached_final and r.words == [] and r.tids.shape == (0,)
    with pytest.raises(DecodingError, match="frame 3: no token survived"):
        ll = torch.zeros(6, tm.num_pdfs)
        ll[3] = -math.inf
        decode_fst(graph, ll, tm.tid2pdf)
    with pytest.raises(ValueError, match="columns"):
        decode_fst(graph, torch.zeros(5, tm.num_pdfs - 1), tm.tid2pdf)
    with pytest.raises(ValueError, match="tid2pdf has only"):
        decode_fst(graph, torch.zeros(5, tm.num_pdfs), tm.tid2pdf[:10])
    with pytest.raises(ValueError, match="beam"):
        decode_fst(graph, torch.zeros(5, tm.num_pdfs), tm.tid2pdf, beam=0.0)
    with pytest.raises(ValueError, match=r"\(T, S\)"):
        decode_fst(graph, torch.zeros(5), tm.tid2pdf)


def test_decoding_graph_tensors(hclg, graph, tm):
    fst = hclg[0]
    assert graph.num_states == fst.num_states() and graph.start == fst.start()
    assert graph.num_arcs == sum(fst.num_arcs(s) for s in fst.states())
    assert int((graph.ilabel[:graph.num_emitting] == 0).sum()) == 0
    assert int((graph.ilabel[graph.num_emitting:] != 0).sum()) == 0
    s = fst.start()
    arcs = sorted((a.ilabel, a.olabel, a.nextstate, round(float(a.weight), 4))
                  for a in fst.arcs(s) if a.ilabel)
    lo, hi = int(graph.e_offsets[s]), int(graph.e_offsets[s + 1])
    mine = sorted(zip(graph.ilabel[lo:hi].tolist(), graph.olabel[lo:hi].tolist(),
                      graph.e_dst[lo:hi].tolist(),
                      [round(w, 4) for w in graph.weight[lo:hi].tolist()]))
    assert mine == arcs
    finals = [q for q in fst.states() if math.isfinite(float(fst.final(q)))]
    assert torch.isfinite(graph.final).nonzero().squeeze(1).tolist() == finals
    # Epsilon closure entries: the cost of their epsilon path.
    E = graph.num_emitting
    assert graph.c_dst.numel() > 0
    for c in range(graph.c_dst.numel()):
        lo, hi = int(graph.c_arc_offsets[c]), int(graph.c_arc_offsets[c + 1])
        arcs = graph.c_arcs[lo:hi]
        assert hi > lo and bool((arcs >= E).all())
        assert float(graph.weight[arcs].sum()) == pytest.approx(float(graph.c_weight[c]))
    with pytest.raises(ValueError, match="arc type"):
        DecodingGraph.from_fst(pynini.arcmap(fst, map_type="to_log"))
    # Symbol tables attached to the FST are ignored.
    labelled = fst.copy()
    table = pynini.SymbolTable()
    for i in range(tm.num_tids + 1):
        table.add_symbol(f"t{i}", i)
    labelled.set_input_symbols(table)
    again = DecodingGraph.from_fst(labelled)
    assert torch.equal(again.weight, graph.weight) and torch.equal(again.c_dst, graph.c_dst)


def _eps_graph(cycle_cost: float | None = None) -> pynini.Fst:
    """0 -a-> 1 -eps/1-> 2 -eps:w/-0.5-> 3 -b-> 4 (final), 1 -eps/3-> 3, 1 -c-> 4; with a
    ``cycle_cost`` epsilon arc 3 -> 1."""
    fst = pynini.Fst()
    fst.add_states(5)
    fst.set_start(0)
    fst.set_final(4)
    for src, i, o, w, dst in [(0, 1, 0, 0.0, 1), (1, 0, 0, 1.0, 2), (2, 0, 7, -0.5, 3),
                              (3, 2, 0, 0.0, 4), (1, 0, 8, 3.0, 3), (1, 3, 0, 0.0, 4)]:
        fst.add_arc(src, pynini.Arc(i, o, w, dst))
    if cycle_cost is not None:
        fst.add_arc(3, pynini.Arc(0, 0, cycle_cost, 1))
    return fst


def test_epsilon_closure():
    graph = DecodingGraph.from_fst(_eps_graph())
    lo, hi = int(graph.c_offsets[1]), int(graph.c_offsets[2])
    assert graph.c_dst[lo:hi].tolist() == [2, 3]
    assert graph.c_weight[lo:hi].tolist() == [1.0, 0.5]  # 1 -> 2 -> 3 beats 1 -> 3 (3.0)
    # Frame 0 reads a (label 1), frame 1 reads b (label 2) after the epsilon path.
    ll = torch.tensor([[0.0, -5.0, -5.0], [-5.0, 0.0, -5.0]])
    r = decode_fst(graph, ll, torch.tensor([0, 0, 1, 2]), acoustic_scale=1.0)
    assert r.words == [7] and r.tids.tolist() == [1, 2]
    assert r.lm_cost == pytest.approx(0.5) and r.cost == pytest.approx(0.5)
    # A non-negative epsilon cycle is harmless; a negative one is an error.
    assert decode_fst(_eps_graph(2.0), ll, torch.tensor([0, 0, 1, 2]),
                      acoustic_scale=1.0).words == [7]
    with pytest.raises(ValueError, match="negative cost"):
        DecodingGraph.from_fst(_eps_graph(-1.0))


# --- AN4: graph size and decoding speed --------------------------------------------------------

@pytest.mark.an4
@pytest.mark.skipif(not AN4, reason="set AN4_DIR to the AN4 corpus root")
def test_an4_decoding_speed():
    etc = Path(AN4) / "etc"
    phones = (etc / "an4.phone").read_text().split()
    lang = make_lang(read_cmu_dict(etc / "an4.dic"),
                     nonsilence_phones=[p for p in phones if p != "SIL"])
    texts = []
    for line in (etc / "an4_train.transcription").read_text().splitlines():
        m = re.fullmatch(r"\s*(.*?)\s*\(([^()\s]+)\)\s*", line)
        texts.append([x for x in m[1].upper().split() if x not in ("<S>", "</S>", "<SIL>")])
    lm = estimate_ngram(texts, order=3, unk="<UNK>")
    G = arpa_to_fst(lm, lang.words)
    tm = TransitionModel.from_phone_set(lang.phone_set)
    t0 = time.perf_counter()
    fst, info = make_hclg(lang, G, tm)
    t1 = time.perf_counter()
    graph = DecodingGraph.from_fst(fst)
    t2 = time.perf_counter()

    # One minute of "speech": training sentences back to back (first pronunciations, 1-4
    # frames per HMM state, silence between sentences); every pdf scores N(-70, 5^2), the
    # pdf of the frame 20 more.
    rng = random.Random(0)
    mono = MonophoneContext(tm)
    pdfs: list[int] = []
    spoken: list[str] = []
    sil = [lang.phones["SIL"]]
    while len(pdfs) < 6000:
        words = [w for w in rng.choice(texts) if w in lang.lexicon]
        seq = sil + [lang.phones[p] for w in words for p in lang.lexicon[w][0]] + sil
        for p in seq:
            for k in range(tm.phone_hmm(p).num_states):
                pdfs += [mono.pdf_id((p,), k)] * rng.randint(1, 4)
        spoken += words
    pdfs = pdfs[:6000]
    gen = torch.Generator().manual_seed(0)
    ll = torch.randn(len(pdfs), tm.num_pdfs, generator=gen) * 5.0 - 70.0
    ll[torch.arange(len(pdfs)), torch.tensor(pdfs)] += 20.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t3 = time.perf_counter()
        r = decode_fst(graph, ll, tm.tid2pdf)
        t4 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    assert r.tids.shape == (6000,)
    assert len(r.words) > 50
    sizes = "; ".join(f"{k} {s} states {a} arcs" for k, (s, a) in info.sizes.items())
    print(f"\nAN4 mono HCLG (train trigram {'/'.join(map(str, lm.counts))}): {sizes}; "
          f"built in {t1 - t0:.2f} s, tensors in {t2 - t1:.2f} s")
    print(f"decoded 6000 frames (60 s) in {t4 - t3:.2f} s on 1 thread: "
          f"{6000 / (t4 - t3):.0f} frames/s, RTF {(t4 - t3) / 60:.3f}; active tokens mean "
          f"{r.num_active.double().mean():.0f} max {int(r.num_active.max())}; "
          f"{len(r.words)} words decoded, {len(spoken)} spoken; reached final "
          f"{r.reached_final}")


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_nbest_is_exact_on_hclg(hclg, graph, tm, seed):
    """With infinite beams the n-best of the lattice are word sequences of ``sausage(loglikes)
    o HCLG`` at OpenFst's costs; the 1-best is unchanged and comes first. (Not always the n
    best: a word on an epsilon arc whose epsilon path is not the cheapest between its two
    states is not in the lattice; a known limitation, see the decoder's docstring.)"""
    gen = torch.Generator().manual_seed(seed)
    T = 14
    ll = torch.randn(T, tm.num_pdfs, generator=gen) * 4.0
    opts = {"beam": math.inf, "max_active": 10**9, "acoustic_scale": 0.5}
    one = decode_fst(graph, ll, tm.tid2pdf, **opts)
    r = decode_fst(graph, ll, tm.tid2pdf, nbest=6, lattice_beam=math.inf, **opts)
    assert (r.words, r.cost) == (one.words, one.cost) and torch.equal(r.tids, one.tids)
    assert r.nbest[0] == (one.words, one.cost)
    costs = (-0.5 * ll.double())[:, tm.tid2pdf[1:]]
    sausage = pynini.Fst()
    sausage.add_states(T + 1)
    sausage.set_start(0)
    sausage.set_final(T)
    for t in range(T):
        for tid, c in enumerate(costs[t].tolist(), 1):
            sausage.add_arc(t, pynini.Arc(tid, tid, c, t + 1))
    words = pynini.determinize(pynini.compose(sausage, hclg[0]).project("output").rmepsilon())
    ref = {w: c for _, w, c in _paths(pynini.shortestpath(words, nshortest=40))}
    assert len(r.nbest) == 6 and len({tuple(w) for w, _ in r.nbest}) == 6
    assert [c for _, c in r.nbest] == sorted(c for _, c in r.nbest)
    for w, c in r.nbest:
        assert c == pytest.approx(ref[tuple(w)], abs=1e-3)


# --- long utterances: blocks of scores, partial traceback --------------------------------------

def test_partial_traceback_bounds_the_held_backpointers(graph, tm, lang, monkeypatch):
    from asrkit.decode.wfst import FrameScores
    from asrkit.decode.wfst import decoder as dec

    held: list[int] = []
    gc = dec._Search.gc

    def spy(self, idx):
        out = gc(self, idx)
        held.append(len(self.chunks))
        return out

    # 30 x "DOG A CAT": noisy log-likelihoods peaked at the sentence's pdfs
    phones = _phones(lang, "SIL D_B AO_I G_E AH_S SIL K_B AE_I T_E")
    pdfs = _alignment(tm, Mono(tm), phones, [2, 5, 1]) * 30
    T = len(pdfs)
    gen = torch.Generator().manual_seed(3)
    ll = _peaked(pdfs, tm.num_pdfs, low=-8.0) + torch.randn(T, tm.num_pdfs, generator=gen)
    plain = decode_fst(graph, ll, tm.tid2pdf, gc_threshold=10**9, gc_frames=10**9)
    assert plain.words == _words(lang, "DOG A CAT " * 30)
    monkeypatch.setattr(dec._Search, "gc", spy)
    r = decode_fst(graph, ll, tm.tid2pdf, gc_frames=50)
    # a chunk per frame is held only back to where the paths merged, not for all T frames
    assert T > 2000 and len(held) >= T // 50 - 1
    assert max(held) < 100
    # the same path, costs and acoustic cost, bit for bit
    assert r.words == plain.words and torch.equal(r.tids, plain.tids)
    assert (r.cost, r.am_cost, r.lm_cost) == (plain.cost, plain.am_cost, plain.lm_cost)
    # the acoustic cost is the frames' scores of the path, summed as before
    assert r.am_cost == -float(ll.double()[torch.arange(T), tm.tid2pdf[r.tids]].sum())
    # scores computed a block at a time: the same search
    calls: list[tuple[int, int]] = []

    def compute(t0: int, t1: int) -> torch.Tensor:
        calls.append((t0, t1))
        return ll[t0:t1]

    lazy = decode_fst(graph, FrameScores(T, tm.num_pdfs, compute, block_frames=700),
                      tm.tid2pdf, gc_frames=50)
    assert calls == [(t, min(t + 700, T)) for t in range(0, T, 700)]
    assert lazy.words == r.words and torch.equal(lazy.tids, r.tids)
    assert (lazy.cost, lazy.am_cost) == (r.cost, r.am_cost)
    with pytest.raises(ValueError, match=r"frames 0..699: expected shape \(700, "):
        decode_fst(graph, FrameScores(T, tm.num_pdfs, lambda a, b: ll[a:b + 1], 700),
                   tm.tid2pdf)
    with pytest.raises(ValueError, match="gc_frames"):
        decode_fst(graph, ll, tm.tid2pdf, gc_frames=0)
