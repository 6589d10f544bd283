"""Tests of the lattice outputs of the WFST Viterbi decoder. N-best lists
(``decode_fst(nbest=N)``): on small random graphs the n-best equals OpenFst's n best distinct
output strings of ``scores o graph`` and a brute-force enumeration of the paths; the first
entry is the 1-best. Lattice posteriors (``decode_fst(posteriors=True)``, Kaldi's
``lattice-to-post``): with unbounded beams they equal a brute-force sum over every path; each
frame's posteriors sum to 1; pruning keeps the best path's labels."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pynini
import pytest
import torch

from asrkit.decode.wfst import DecodingGraph, decode_fst

TID2PDF = torch.tensor([0, 0, 1, 2])  # input labels 1..3 -> score columns 0..2


def _random_graph(seed: int, num_states: int = 5, num_words: int = 4,
                  acyclic_eps: bool = False) -> pynini.Fst:
    """Emitting arcs with random words (or none), at most one epsilon arc per state (so the
    epsilon path between two states is unique), random final costs. ``acyclic_eps``: epsilon
    arcs only to a higher state, so there are no epsilon cycles either (the decoder's epsilon
    closure keeps one path per pair of states; the posterior tests sum over every path)."""
    rng = random.Random(seed)
    f = pynini.Fst()
    f.add_states(num_states)
    f.set_start(0)
    for s in range(num_states):
        for _ in range(3):
            f.add_arc(s, pynini.Arc(rng.randint(1, 3), rng.choice(range(num_words + 1)),
                                    rng.uniform(0.0, 2.0), rng.randrange(num_states)))
        if acyclic_eps:
            if s + 1 < num_states and rng.random() < 0.5:
                f.add_arc(s, pynini.Arc(0, rng.choice([0, 1]), rng.uniform(0.0, 1.0),
                                        rng.randrange(s + 1, num_states)))
        elif (d := rng.randrange(num_states)) != s and s % 2 == 0:
            f.add_arc(s, pynini.Arc(0, rng.choice([0, 1, 2]), rng.uniform(0.0, 1.0), d))
        if rng.random() < 0.6:
            f.set_final(s, rng.uniform(0.0, 1.0))
    f.set_final(num_states - 1, 0.5)
    return f


def _sausage(costs: torch.Tensor) -> pynini.Fst:
    """A linear acceptor reading one input label (1..L) per frame at cost ``costs[t, l-1]``."""
    T, L = costs.shape
    s = pynini.Fst()
    s.add_states(T + 1)
    s.set_start(0)
    s.set_final(T)
    for t in range(T):
        for lab in range(1, L + 1):
            s.add_arc(t, pynini.Arc(lab, lab, float(costs[t, lab - 1]), t + 1))
    return s


def _openfst_nbest(graph: pynini.Fst, costs: torch.Tensor, n: int
                   ) -> list[tuple[tuple[int, ...], float]]:
    composed = pynini.compose(_sausage(costs), graph.copy().arcsort("ilabel"))
    words = pynini.determinize(composed.project("output").rmepsilon())
    best = pynini.shortestpath(words, nshortest=n, unique=True)
    out = []
    it = best.paths()
    while not it.done():
        out.append((tuple(x for x in it.olabels() if x), float(it.weight())))
        it.next()
    return sorted(out, key=lambda x: x[1])


def _brute_force(graph: pynini.Fst, costs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """The cheapest cost of every word sequence, by enumerating all paths (tiny graphs)."""
    T = costs.shape[0]
    best: dict[tuple[int, ...], float] = {}

    def walk(state: int, t: int, words: tuple[int, ...], cost: float, eps: int) -> None:
        final = float(graph.final(state))
        if t == T and math.isfinite(final):
            key = words
            best[key] = min(best.get(key, math.inf), cost + final)
        for a in graph.arcs(state):
            w = words + ((a.olabel,) if a.olabel else ())
            if a.ilabel == 0:
                if eps < 3:  # epsilon cycles have positive cost: a few steps are enough
                    walk(a.nextstate, t, w, cost + float(a.weight), eps + 1)
            elif t < T:
                walk(a.nextstate, t + 1, w, cost + float(a.weight)
                     + float(costs[t, a.ilabel - 1]), 0)

    walk(graph.start(), 0, (), 0.0, 0)
    return best


def _exact_decodes(graph: pynini.Fst, seed: int, T: int, acwt: float, **lattice):
    """Random scores, then the exact 1-best search and the same with a lattice recorded
    (``lattice``: ``nbest`` / ``posteriors``); the 1-best must be unchanged by recording."""
    ll = torch.randn(T, 3, generator=torch.Generator().manual_seed(seed)) * 2.0
    exact = {"beam": math.inf, "max_active": 10**9, "acoustic_scale": acwt}
    one = decode_fst(graph, ll, TID2PDF, **exact)
    r = decode_fst(graph, ll, TID2PDF, lattice_beam=math.inf, **lattice, **exact)
    assert one.nbest is None and one.posteriors is None
    assert r.words == one.words and r.cost == one.cost and torch.equal(r.tids, one.tids)
    return ll, one, r


@pytest.mark.parametrize("seed", range(6))
def test_nbest_equals_openfst_and_brute_force(seed):
    graph = _random_graph(seed)
    acwt = 0.7
    ll, one, r = _exact_decodes(graph, seed, 6, acwt, nbest=5)
    assert r.nbest[0] == (one.words, one.cost)
    costs = [c for _, c in r.nbest]
    assert costs == sorted(costs)
    assert len({tuple(w) for w, _ in r.nbest}) == len(r.nbest) == 5
    ref = _openfst_nbest(graph, -acwt * ll[:, TID2PDF[1:]], 5)
    assert [tuple(w) for w, _ in r.nbest] == [w for w, _ in ref]
    assert costs == pytest.approx([c for _, c in ref], abs=1e-3)
    brute = sorted(_brute_force(graph, -acwt * ll[:, TID2PDF[1:]]).items(), key=lambda x: x[1])
    assert [tuple(w) for w, _ in r.nbest] == [w for w, _ in brute[:5]]
    assert costs == pytest.approx([c for _, c in brute[:5]], abs=1e-6)


def test_nbest_with_pruning_and_few_hypotheses():
    graph = DecodingGraph.from_fst(_random_graph(3))
    ll = torch.randn(20, 3, generator=torch.Generator().manual_seed(1)) * 3.0
    one = decode_fst(graph, ll, TID2PDF, beam=6.0, max_active=3)
    r = decode_fst(graph, ll, TID2PDF, beam=6.0, max_active=3, nbest=50, lattice_beam=0.3)
    assert r.words == one.words and r.cost == one.cost
    assert r.nbest[0] == (one.words, one.cost)
    costs = [c for _, c in r.nbest]
    assert costs == sorted(costs) and costs[-1] <= one.cost + 0.3 + 1e-6
    assert 1 <= len(r.nbest) < 50  # the pruned lattice holds fewer
    wide = decode_fst(graph, ll, TID2PDF, beam=6.0, max_active=3, nbest=50, lattice_beam=1.0)
    assert len(wide.nbest) >= len(r.nbest)


def test_nbest_of_one_word_sequence_and_options():
    f = pynini.Fst()
    f.add_states(2)
    f.set_start(0)
    f.set_final(1)
    f.add_arc(0, pynini.Arc(1, 7, 0.5, 1))
    f.add_arc(1, pynini.Arc(2, 0, 0.0, 1))
    f.add_arc(1, pynini.Arc(3, 0, 0.1, 1))
    ll = torch.zeros(4, 3)
    r = decode_fst(f, ll, TID2PDF, nbest=3)
    assert r.nbest == [([7], r.cost)]  # many paths, one word sequence
    with pytest.raises(ValueError, match="nbest"):
        decode_fst(f, ll, TID2PDF, nbest=0)
    with pytest.raises(ValueError, match="lattice_beam"):
        decode_fst(f, ll, TID2PDF, nbest=2, lattice_beam=0.0)


def test_decode_data_dir_wfst_writes_the_nbest_file(tmp_path):
    """A tiny CTC model (1 epoch on synthetic letters), a TLG graph, `decode_data_dir(method=
    "wfst", nbest=3)`: the nbest file parses, rank 1 is the text line, scores descend."""
    from asrkit.decode.nbest import read_nbest
    from asrkit.decode.run import decode_data_dir
    from asrkit.decode.wfst import make_tlg_graph
    from asrkit.lm.ngram import estimate_ngram, write_arpa
    from tests.synth import train_tiny_ctc

    tiny = train_tiny_ctc(tmp_path, n_train=16, n_dev=4, epochs=1)
    exp, train_dir, dev_dir, tok = tiny["exp"], tiny["train"], tiny["dev"], tiny["tok"]
    sentences = [line.split(maxsplit=1)[1]
                 for line in (train_dir / "text").read_text().splitlines()]
    write_arpa(estimate_ngram(sentences, order=2), tmp_path / "lm.arpa")
    make_tlg_graph(tok, tmp_path / "lm.arpa", tmp_path / "tlg")
    rep = decode_data_dir(exp, dev_dir, tmp_path / "out", method="wfst", graph=tmp_path / "tlg",
                          nbest=3, device="cpu", lm_weight=0.5)
    assert rep.nbest == tmp_path / "out" / "nbest"
    nbest = read_nbest(rep.nbest)
    text = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (tmp_path / "out" / "text").read_text().splitlines())
    assert sorted(nbest) == sorted(text)
    for utt, hyps in nbest.items():
        assert hyps[0][0] == text[utt].strip()
        scores = [s for _, s in hyps]
        assert scores == sorted(scores, reverse=True) and 1 <= len(hyps) <= 3
        assert len({h for h, _ in hyps}) == len(hyps)
    # nbest == 1 removes the stale file and gives the same text
    decode_data_dir(exp, dev_dir, tmp_path / "out", method="wfst", graph=tmp_path / "tlg",
                    device="cpu", lm_weight=0.5)
    assert not (tmp_path / "out" / "nbest").exists()
    assert dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (tmp_path / "out" / "text").read_text().splitlines()) == text


def _brute_force_posteriors(graph: pynini.Fst, costs: torch.Tensor
                            ) -> dict[tuple[int, int], float]:
    """``{(frame, ilabel): posterior}`` by enumerating every path (tiny graphs)."""
    T = costs.shape[0]
    paths: list[tuple[tuple[int, ...], float]] = []

    def walk(state: int, t: int, labels: tuple[int, ...], cost: float) -> None:
        final = float(graph.final(state))
        if t == T and math.isfinite(final):
            paths.append((labels, cost + final))
        for a in graph.arcs(state):
            if a.ilabel == 0:
                walk(a.nextstate, t, labels, cost + float(a.weight))
            elif t < T:
                walk(a.nextstate, t + 1, labels + (a.ilabel,),
                     cost + float(a.weight) + float(costs[t, a.ilabel - 1]))

    walk(graph.start(), 0, (), 0.0)
    best = min(c for _, c in paths)
    z = sum(math.exp(-(c - best)) for _, c in paths)
    post: dict[tuple[int, int], float] = defaultdict(float)
    for labels, c in paths:
        for t, lab in enumerate(labels):
            post[t, lab] += math.exp(-(c - best)) / z
    return dict(post)


@pytest.mark.parametrize("seed", range(6))
def test_posteriors_equal_the_sum_over_all_paths(seed):
    graph = _random_graph(seed, acyclic_eps=True)
    acwt = 0.7
    ll, _, r = _exact_decodes(graph, seed, 5, acwt, posteriors=True)
    assert r.nbest is None
    frames, labels, post = r.posteriors
    got = {(int(t), int(lab)): float(p) for t, lab, p in zip(frames, labels, post)}
    ref = _brute_force_posteriors(graph, -acwt * ll[:, TID2PDF[1:]])
    ref = {k: v for k, v in ref.items() if v > 1e-8}
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-6)  # float32 scores


def test_posteriors_sum_to_one_per_frame_and_pruning_keeps_the_best_path():
    graph = _random_graph(2, num_states=8, acyclic_eps=True)
    T = 40
    ll = torch.randn(T, 3, generator=torch.Generator().manual_seed(3)) * 3.0
    r = decode_fst(graph, ll, TID2PDF, beam=8.0, max_active=6, posteriors=True,
                   lattice_beam=2.0)
    frames, labels, post = r.posteriors
    assert frames.dtype == labels.dtype == torch.int64 and post.dtype == torch.float64
    per_frame = torch.zeros(T, dtype=torch.float64).index_add_(0, frames, post)
    assert torch.allclose(per_frame, torch.ones(T, dtype=torch.float64), atol=1e-9)
    # the best path's label has posterior mass at every frame
    on_best = {(t, int(lab)) for t, lab in enumerate(r.tids)}
    assert on_best <= {(int(t), int(lab)) for t, lab in zip(frames, labels)}
    # a tiny lattice beam leaves (almost) only the best path
    narrow = decode_fst(graph, ll, TID2PDF, beam=8.0, max_active=6, posteriors=True,
                        lattice_beam=1e-6)
    nf, nl, npost = narrow.posteriors
    best = {(int(t), int(lab)): float(p) for t, lab, p in zip(nf, nl, npost)}
    assert all(best.get((t, int(lab)), 0.0) > 0.5 for t, lab in enumerate(r.tids))
