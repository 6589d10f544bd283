"""Triphone HMM-GMM: context dependency, tree statistics and building, context-expanded graphs,
alignment conversion and ``train_deltas``-style training. Synthetic and seeded: phone ``B`` is
realised differently after ``A`` and after ``C`` than elsewhere, which a monophone cannot model
and a triphone tree should find.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from asrkit.models.hmm_gmm import (
    PDF_CLASS,
    AcousticModel,
    ContextDependency,
    GraphCompiler,
    TransitionModel,
    TreeStats,
    accumulate_tree_stats,
    align_equal,
    build_tree,
    convert_alignments,
    frame_contexts,
    gauss_loglik,
    train_mono,
    train_tri,
)
from asrkit.text.lexicon import Lexicon, make_lang

F = 12
BASES = ("SIL", "A", "B", "C", "D")
LEXICON = [("AB", ["A", "B"]), ("CB", ["C", "B"]), ("BD", ["B", "D"]), ("DA", ["D", "A"])]


def _lang():
    return make_lang(Lexicon(LEXICON))


def _corpus(n_utts: int = 60, seed: int = 1, shift: float = 3.0):
    """Utterances of 1-3 words with optional silence. Each phone's frames are split over 3
    sub-states with their own means (unit-variance noise); ``B``'s means move by ``shift`` per
    dimension (random signs) after ``A`` and by another such vector after ``C``."""
    rng = np.random.default_rng(100)
    mu = {b: rng.normal(size=(3, F)) * 2 for b in BASES}
    offset = {p: rng.choice([-1.0, 1.0], size=(3, F)) * shift for p in ("A", "C")}
    rng = np.random.default_rng(seed)
    lex = Lexicon(LEXICON)
    words = lex.words()
    feats, texts, truth = {}, {}, {}
    for i in range(n_utts):
        ws = list(rng.choice(words, size=int(rng.integers(1, 4))))
        seq = []
        if rng.random() < 0.8:
            seq.append(("SIL", int(rng.integers(6, 12))))
        for k, w in enumerate(ws):
            seq += [(p, int(rng.integers(6, 12))) for p in lex[w][0]]
            if k < len(ws) - 1 and rng.random() < 0.3:
                seq.append(("SIL", int(rng.integers(5, 9))))
        if rng.random() < 0.8:
            seq.append(("SIL", int(rng.integers(6, 12))))
        frames, labels = [], []
        for j, (p, d) in enumerate(seq):
            m = mu[p]
            if p == "B" and j > 0 and seq[j - 1][0] in offset:
                m = m + offset[seq[j - 1][0]]
            cuts = np.linspace(0, d, 4).astype(int)
            for s in range(3):
                frames.append(m[s] + rng.normal(size=(cuts[s + 1] - cuts[s], F)))
            labels += [p] * d
        u = f"utt{i:03d}"
        feats[u] = torch.tensor(np.concatenate(frames), dtype=torch.float32)
        texts[u] = " ".join(ws)
        truth[u] = labels
    return feats, texts, truth


def _accuracy(res, truth) -> float:
    """Fraction of frames whose aligned base phone is the generating one."""
    tm = res.model.tmodel
    right = total = 0
    for u, ali in res.alignments.items():
        got = [tm.phone_base[tm.phone_names[int(p)]] for p in ali.phones]
        right += sum(a == b for a, b in zip(got, truth[u]))
        total += len(got)
    return right / total


@pytest.fixture(scope="module")
def systems():
    feats, texts, truth = _corpus()
    lang = _lang()
    n_mono = TransitionModel.from_phone_set(lang.phone_set).num_pdfs
    # One Gaussian per pdf in both systems, so that only the tying differs.
    mono = train_mono(feats, texts, lang, num_iters=12, max_gauss=n_mono,
                      realign_iters=(1, 2, 3, 4, 5, 6, 8, 10))
    tri = train_tri(feats, texts, lang, mono, num_leaves=30, tot_gauss=30, num_iters=8,
                    realign_iters=(3, 5), min_gain=100.0)
    return mono, tri, feats, texts, truth, lang


# ------------------------------------------------------------------ context dependency

def test_monophone_context_dependency_numbers_pdfs_as_the_mono_model():
    lang = _lang()
    tm = TransitionModel.from_phone_set(lang.phone_set)
    ctx = ContextDependency.monophone(tm)
    assert (ctx.context_width, ctx.central_position, ctx.num_pdfs) == (1, 0, tm.num_pdfs)
    assert ContextDependency.monophone(lang.phone_set) == ctx
    assert tm.ctx == ctx
    for p, pid in tm.phones.items():
        hmm = tm.phone_hmm(pid)
        assert [ctx.pdf_id((pid,), s) for s in range(hmm.num_states)] == list(hmm.pdfs), p
        assert ctx.pdfs_of(pid, 0) == (hmm.pdfs[0],)
    # The same transition model whether the tree is given or implied.
    again = TransitionModel(tm.phones, tm.phone_base, tm.base_phones, tm.silence_bases,
                            tm.topology, ctx=ctx)
    for name in ("tid2pdf", "tid2phone", "tid2state", "tid2dest", "log_probs"):
        assert getattr(again, name).equal(getattr(tm, name)), name
    a_b = lang.phones["A_B"]
    with pytest.raises(ValueError, match="expected 1 phones"):
        ctx.pdf_id((0, a_b, 0), 0)
    with pytest.raises(ValueError, match="not a phone"):
        ctx.pdf_id((lang.phones["#0"],), 0)
    with pytest.raises(ValueError, match="cannot be 0"):
        ctx.pdf_id((0,), 0)
    with pytest.raises(ValueError, match="out of range"):
        ctx.pdf_id((a_b,), 3)


def test_split_gain_equals_direct_gaussian_loglik():
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(30, 4, generator=gen, dtype=torch.float64) + 2.0
    x2 = torch.randn(45, 4, generator=gen, dtype=torch.float64) * 0.7 - 1.0

    def direct(x: torch.Tensor) -> float:
        m, v = x.mean(0), x.var(0, unbiased=False)
        return float(Normal(m, v.sqrt()).log_prob(x).sum())

    def stats(x: torch.Tensor):
        return torch.tensor(float(len(x)), dtype=torch.float64), x.sum(0), (x * x).sum(0)

    for x in (x1, x2, torch.cat([x1, x2])):
        assert float(gauss_loglik(*stats(x))) == pytest.approx(direct(x), rel=1e-10)
    gain_direct = direct(x1) + direct(x2) - direct(torch.cat([x1, x2]))
    assert gain_direct > 0
    # The same split made by build_tree: phone B (value 3) after A (2) or after SIL (1).
    z = [stats(x1), stats(x2)]
    ts = TreeStats(context_width=3, central_position=1, base_phones=("SIL", "A", "B"),
                   silence_bases=frozenset({"SIL"}), phone_to_base=(0, 1, 2, 3),
                   num_pdf_classes=(1, 1, 1), contexts=torch.tensor([[2, 3, 0], [1, 3, 0]]),
                   pdf_class=torch.tensor([0, 0]), count=torch.stack([c for c, _, _ in z]),
                   sum_x=torch.stack([s for _, s, _ in z]),
                   sum_x2=torch.stack([s2 for _, _, s2 in z]))
    # SIL and A have no statistics: one leaf each; B's root plus one split = 4 leaves.
    ctx, info = build_tree(ts, [("A",), ("SIL",)], num_leaves=4, min_gain=0.0, min_count=0.0,
                           cluster_thresh=0.0)
    assert info.num_leaves == 4 and ctx.num_pdfs == 4 and info.unseen_phones == ("SIL", "A")
    assert info.loglik_gain == pytest.approx(gain_direct, rel=1e-9)
    assert ctx.pdf_id((2, 3, 0), 0) != ctx.pdf_id((1, 3, 0), 0)
    assert ctx.pdf_id((0, 3, 0), 0) == ctx.pdf_id((1, 3, 0), 0)  # "left in {A}?" no
    count, sx, _ = ts.sum_by_pdf(ctx)
    assert count[ctx.pdf_id((2, 3, 0), 0)] == 30 and count.sum() == 75
    torch.testing.assert_close(sx[ctx.pdf_id((2, 3, 0), 0)], x1.sum(0))
    # A gain threshold above the gain: no split.
    ctx2, info2 = build_tree(ts, [("A",)], num_leaves=4, min_gain=gain_direct + 1.0,
                             min_count=0.0)
    assert ctx2.num_pdfs == 3 and info2.loglik_gain == 0.0
    with pytest.raises(ValueError, match="not a base phone"):
        build_tree(ts, [("Q",)])

    # Merging after splitting: a third context (none, 0) drawn like "after A" splits off
    # (min_gain 0) but merges back with the "after A" leaf, which costs little.
    x3 = torch.randn(40, 4, generator=gen, dtype=torch.float64) + 2.0
    z.append(stats(x3))
    ts3 = TreeStats(context_width=3, central_position=1, base_phones=("SIL", "A", "B"),
                    silence_bases=frozenset({"SIL"}), phone_to_base=(0, 1, 2, 3),
                    num_pdf_classes=(1, 1, 1),
                    contexts=torch.tensor([[2, 3, 0], [1, 3, 0], [0, 3, 0]]),
                    pdf_class=torch.tensor([0, 0, 0]), count=torch.stack([c for c, _, _ in z]),
                    sum_x=torch.stack([s for _, s, _ in z]),
                    sum_x2=torch.stack([s2 for _, _, s2 in z]))
    split, sinfo = build_tree(ts3, [("A",), ("SIL",)], num_leaves=10, min_gain=0.0,
                              min_count=0.0, cluster_thresh=0.0)
    assert sinfo.num_leaves == 5 and split.num_pdfs == 5 and sinfo.num_merged == 0
    loss = (direct(x1) + direct(x3) - direct(torch.cat([x1, x3])))
    assert 0 < loss < 10.0
    merged, minfo = build_tree(ts3, [("A",), ("SIL",)], num_leaves=10, min_gain=0.0,
                               min_count=0.0, cluster_thresh=10.0)
    assert minfo.num_merged == 1 and merged.num_pdfs == 4
    assert merged.pdf_id((2, 3, 0), 0) == merged.pdf_id((0, 3, 0), 0)
    assert merged.pdf_id((2, 3, 0), 0) != merged.pdf_id((1, 3, 0), 0)
    # Default cluster_thresh (-1): the smallest split gain, which is that merge's loss.
    assert build_tree(ts3, [("A",), ("SIL",)], num_leaves=10, min_gain=0.0,
                      min_count=0.0)[1].smallest_split == pytest.approx(loss, rel=1e-6)


# ------------------------------------------------------------------------- training

def test_tree_finds_left_context_and_triphones_beat_monophones(systems):
    mono, tri, _, _, truth, _ = systems
    ctx = tri.model.tmodel.ctx
    assert (ctx.context_width, ctx.central_position) == (3, 1)
    qs = ctx.questions_of("B")
    assert qs[0] == (0, frozenset({"A"}))  # the best first question: left context
    assert (0, frozenset({"C"})) in qs
    assert all(k == PDF_CLASS for k, _ in ctx.questions_of("SIL"))  # silence: no context
    a, b, c, d = (_lang().phones[p] for p in ("A_B", "B_E", "C_B", "D_B"))
    assert len({ctx.pdf_id((a, b, 0), 1), ctx.pdf_id((c, b, 0), 1),
                ctx.pdf_id((d, b, 0), 1)}) == 3
    assert tri.history[-1].avg_loglik > mono.history[-1].avg_loglik + 1.0
    assert [h.iteration for h in tri.history] == list(range(1, 8))
    assert all(h.num_leaves == ctx.num_pdfs for h in tri.history)
    assert [h.realigned for h in tri.history] == [x in (3, 5) for x in range(1, 8)]
    assert not tri.failed and len(tri.alignments) == len(mono.alignments)
    acc_mono, acc_tri = _accuracy(mono, truth), _accuracy(tri, truth)
    assert acc_tri >= acc_mono and acc_tri > 0.9
    assert tri.model.meta["type"] == "triphone"


def test_triphone_alignments_are_context_consistent(systems):
    """Every frame's pdf is the tree's pdf for the phone context the alignment itself shows, so
    the context-expanded graphs (optional silence, word boundaries) chose the right copies."""
    _, tri, *_ = systems
    tm = tri.model.tmodel
    utts = sorted(tri.alignments)
    tids = torch.cat([tri.alignments[u].tids for u in utts])
    lens = [tri.alignments[u].num_frames for u in utts]
    ctxs = frame_contexts(tm, tids, lens)
    assert tm.ctx.pdf_ids(ctxs, tm.tid2state[tids]).equal(tm.tid2pdf[tids])
    same = convert_alignments(tm, tm, {u: tri.alignments[u] for u in utts})
    assert all(same[u].equal(tri.alignments[u].tids) for u in utts)
    # Every tid is the transition of its (phone, state, pdf) tstate to its destination.
    for tid in range(1, tm.num_tids + 1):
        row = (tm.tid2phone[tid], tm.tid2state[tid], tm.tid2pdf[tid], tm.tid2dest[tid])
        assert tm.transition_id(*map(int, row)) == tid
    b_e = _lang().phones["B_E"]
    assert len(tm.ctx.pdfs_of(b_e, 0)) == 3  # B after A, after C, elsewhere
    assert tm.phone_hmm(b_e).pdfs[0] == min(tm.ctx.pdfs_of(b_e, 0))
    with pytest.raises(KeyError, match="no transition"):
        tm.transition_id(b_e, 0, tm.num_pdfs, 0)


def test_num_leaves_is_respected_and_gaussians_grow(systems):
    mono, _, feats, texts, _, lang = systems
    tm = mono.model.tmodel
    stats = accumulate_tree_stats(tm, feats, mono.alignments)
    qs = [(b,) for b in tm.base_phones] + [("A", "C"), ("B", "D")]
    for n in (10, 14, 20):
        ctx, info = build_tree(stats, qs, num_leaves=n, min_gain=0.0, min_count=1.0,
                               cluster_thresh=0.0)
        assert ctx.num_pdfs == info.num_leaves == n
        merged, minfo = build_tree(stats, qs, num_leaves=n, min_gain=0.0, min_count=1.0)
        assert merged.num_pdfs == n - minfo.num_merged <= n
    res = train_tri(feats, texts, lang, mono.alignments, ali_model=mono.model, num_leaves=14,
                    tot_gauss=40, num_iters=4, max_iter_inc=2, realign_iters=(2,),
                    min_gain=0.0, final_align=False)
    assert res.model.tmodel.num_pdfs <= 14
    assert res.history[0].num_gauss == res.model.tmodel.num_pdfs
    assert res.model.tmodel.num_pdfs < res.model.num_gauss <= 40
    with pytest.raises(ValueError, match="need ali_model"):
        train_tri(feats, texts, lang, mono.alignments)


def test_save_load_round_trip_keeps_the_tree(systems, tmp_path):
    _, tri, feats, *_ = systems
    model = tri.model
    path = model.save(tmp_path / "final.mdl")
    raw = torch.load(path, weights_only=True)
    assert raw["transitions"]["ctx"]["context_width"] == 3
    back = AcousticModel.load(path)
    ctx, ctx2 = model.tmodel.ctx, back.tmodel.ctx
    assert ctx2 == ctx and ContextDependency.from_dict(ctx.to_dict()) == ctx
    ids = [0, *sorted(model.tmodel.phones.values())]
    rows = [(lc, c, rc) for lc, c, rc in itertools.product(ids, ids[1:], ids)]
    for cls in range(5):
        ok = [r for r in rows if cls < ctx.num_pdf_classes(r[1])]
        want = [ctx.pdf_id(r, cls) for r in ok]
        assert [ctx2.pdf_id(r, cls) for r in ok] == want
        assert ctx2.pdf_ids(torch.tensor(ok), torch.full((len(ok),), cls)).tolist() == want
    for name in ("tid2pdf", "tid2phone", "tid2state", "tid2dest", "log_probs"):
        assert getattr(back.tmodel, name).equal(getattr(model.tmodel, name)), name
    x = feats["utt000"]
    assert back.loglik(x).equal(model.loglik(x))


def test_utterance_boundaries_have_context_zero(systems):
    mono, tri, feats, _, _, lang = systems
    old, tm = mono.model.tmodel, tri.model.tmodel
    # Two utterances back to back: no context leaks across the boundary.
    u1, u2 = "utt000", "utt001"
    a1, a2 = mono.alignments[u1], mono.alignments[u2]
    ctxs = frame_contexts(old, torch.cat([a1.tids, a2.tids]), [a1.num_frames, a2.num_frames])
    seg1 = [lang.phones[s.label] for s in a1.phone_segments]
    seg2 = [lang.phones[s.label] for s in a2.phone_segments]
    assert ctxs[0].tolist() == [0, seg1[0], seg1[1] if len(seg1) > 1 else 0]
    assert ctxs[a1.num_frames - 1].tolist() == [seg1[-2] if len(seg1) > 1 else 0, seg1[-1], 0]
    assert ctxs[a1.num_frames, 0] == 0 and ctxs[a1.num_frames, 1] == seg2[0]
    assert ctxs[-1, 2] == 0
    # Tree statistics record the boundary as 0; convert-ali and graphs use the 0 context.
    stats = accumulate_tree_stats(old, feats, {u1: a1})
    assert bool((stats.contexts == 0).any())
    conv = convert_alignments(old, tm, {u1: a1})[u1]
    first = tuple(ctxs[0].tolist())
    assert int(tm.tid2pdf[conv[0]]) == tm.ctx.pdf_id(first, 0)
    a_b, b_e = lang.phones["A_B"], lang.phones["B_E"]
    g = GraphCompiler(lang, tm, sil_prob=0.0).compile("u", "AB")
    assert g.start_nodes.numel() == 1
    want = tm.context_hmm((0, a_b, b_e)).pdfs + tm.context_hmm((a_b, b_e, 0)).pdfs
    assert tuple(g.pdf.tolist()) == want
    ali = align_equal(g, 12, tm)
    assert ali.pdfs.tolist() == [p for p in want for _ in range(2)]
    # Optional silence: the first phone has two left contexts (silence or none).
    g2 = GraphCompiler(lang, tm, sil_prob=0.5).compile("u", "AB")
    entries = {(int(g2.phone[n]), tuple(g2.pdf[n:n + 3].tolist())) for n in g2.start_nodes}
    assert (a_b, tm.context_hmm((0, a_b, b_e)).pdfs) in entries
    assert not math.isinf(float(g2.start_logp.max()))
