"""Tests of the lattice posteriors of the WFST Viterbi decoder (``decode_fst(posteriors=True)``,
Kaldi's ``lattice-to-post``): with unbounded beams they equal a brute-force sum over every
path of a small random graph; each frame's posteriors sum to 1; pruning keeps the best path's
labels; the 1-best is unchanged by recording them."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pynini
import pytest
import torch

from asrkit.decode.wfst import decode_fst

TID2PDF = torch.tensor([0, 0, 1, 2])  # input labels 1..3 -> score columns 0..2


def _random_graph(seed: int, num_states: int = 5) -> pynini.Fst:
    """Emitting arcs with random labels; epsilon arcs only to a higher state and at most one
    per state, so every epsilon path is unique and there are no epsilon cycles (the
    decoder's epsilon closure keeps one path per pair of states)."""
    rng = random.Random(seed)
    f = pynini.Fst()
    f.add_states(num_states)
    f.set_start(0)
    for s in range(num_states):
        for _ in range(3):
            f.add_arc(s, pynini.Arc(rng.randint(1, 3), rng.choice(range(5)),
                                    rng.uniform(0.0, 2.0), rng.randrange(num_states)))
        if s + 1 < num_states and rng.random() < 0.5:
            f.add_arc(s, pynini.Arc(0, rng.choice([0, 1]), rng.uniform(0.0, 1.0),
                                    rng.randrange(s + 1, num_states)))
        if rng.random() < 0.6:
            f.set_final(s, rng.uniform(0.0, 1.0))
    f.set_final(num_states - 1, 0.5)
    return f


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
    graph = _random_graph(seed)
    T = 5
    ll = torch.randn(T, 3, generator=torch.Generator().manual_seed(seed)) * 2.0
    acwt = 0.7
    exact = {"beam": math.inf, "max_active": 10**9, "acoustic_scale": acwt}
    one = decode_fst(graph, ll, TID2PDF, **exact)
    r = decode_fst(graph, ll, TID2PDF, posteriors=True, lattice_beam=math.inf, **exact)
    assert one.posteriors is None and r.nbest is None
    assert r.words == one.words and r.cost == one.cost and torch.equal(r.tids, one.tids)
    frames, labels, post = r.posteriors
    got = {(int(t), int(lab)): float(p) for t, lab, p in zip(frames, labels, post)}
    ref = _brute_force_posteriors(graph, -acwt * ll[:, TID2PDF[1:]])
    ref = {k: v for k, v in ref.items() if v > 1e-8}
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-6)  # float32 scores


def test_posteriors_sum_to_one_per_frame_and_pruning_keeps_the_best_path():
    graph = _random_graph(2, num_states=8)
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
