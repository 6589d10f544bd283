"""Monophone HMM-GMM core: GMMs, topology and transitions, graphs, alignment, flat-start
training, files. Everything is synthetic and seeded: "phones" are Gaussian clusters in feature
space with known frame boundaries, so the tests know the right answers.
"""

from __future__ import annotations

import math

import kaldiio
import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from asrkit.features.cmvn import apply_cmvn, compute_cmvn_stats
from asrkit.models.hmm_gmm import (
    AcousticModel,
    AlignmentError,
    AlignmentFileError,
    DiagGMM,
    GmmStats,
    GraphCompiler,
    PhoneTopology,
    Topology,
    TranscriptGraphError,
    TransitionModel,
    add_deltas,
    align_equal,
    align_viterbi,
    delta_filters,
    gmm_features,
    load_gmm_features,
    read_ctm,
    read_int_vectors,
    split_targets,
    train_mono,
    write_alignment_dir,
)
from asrkit.text.lexicon import Lexicon, make_lang

F = 39
BASES = ("SIL", "A", "B", "C", "D")
LEXICON = [("AB", ["A", "B"]), ("CA", ["C", "A"]), ("BCD", ["B", "C", "D"]), ("D", ["D"]),
           ("DA", ["D", "A"])]


def _random_gmm(gen: torch.Generator, s: int = 4, m: int = 3, f: int = 5,
                dtype: torch.dtype = torch.float64) -> DiagGMM:
    w = torch.rand(s, m, generator=gen, dtype=dtype) + 0.1
    w[1, 2:] = 0.0  # pdf 1 has two components, pdf 2 one
    w[2, 1:] = 0.0
    w = w / w.sum(1, keepdim=True)
    means = torch.randn(s, m, f, generator=gen, dtype=dtype) * 2
    var = torch.rand(s, m, f, generator=gen, dtype=dtype) + 0.2
    return DiagGMM(w, means, var)


def _reference_loglik(gmm: DiagGMM, x: torch.Tensor) -> torch.Tensor:
    cols = []
    for s in range(gmm.num_pdfs):
        n = int(gmm.num_comps[s])
        mix = MixtureSameFamily(
            Categorical(probs=gmm.weights[s, :n]),
            Independent(Normal(gmm.means[s, :n], gmm.variances[s, :n].sqrt()), 1))
        cols.append(mix.log_prob(x))
    return torch.stack(cols, 1)


def _sample_mixture(gen: torch.Generator, n: int, weights, means, std) -> torch.Tensor:
    comp = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=gen)
    mu = torch.tensor(means, dtype=torch.float64)[comp]
    return mu + torch.randn(mu.shape, generator=gen, dtype=torch.float64) * std


# --------------------------------------------------------------------------------- GMM

def test_gmm_loglik_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    gmm = _random_gmm(gen)
    x = torch.randn(50, 5, generator=gen, dtype=torch.float64) * 2
    ref = _reference_loglik(gmm, x)
    torch.testing.assert_close(gmm.loglik(x), ref, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(gmm.loglik(x, torch.tensor([2, 0, 2])), ref[:, [2, 0, 2]],
                               rtol=1e-10, atol=1e-9)
    comp = gmm.component_loglik(x)
    assert comp.shape == (50, 4, 3) and torch.isinf(comp[:, 2, 1:]).all()
    # float32 parameters (the default) agree to float32 precision
    g32 = gmm.to(dtype=torch.float32)
    torch.testing.assert_close(g32.loglik(x).double(), ref, rtol=1e-4, atol=1e-3)
    assert gmm.num_gauss == 4 + 3 + 2 + 1 - 1 and gmm.num_comps.tolist() == [3, 2, 1, 3]
    with pytest.raises(ValueError, match="expected"):
        gmm.loglik(torch.zeros(3, 4))


def test_gmm_rejects_bad_parameters():
    w = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match="must come first"):
        DiagGMM(w, torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="no component"):
        DiagGMM(torch.zeros(1, 2), torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="positive"):
        DiagGMM(torch.ones(1, 1), torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))


def test_stats_and_mstep_recover_two_component_gmm():
    gen = torch.Generator().manual_seed(1)
    true_means = [[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]]
    x = _sample_mixture(gen, 6000, [0.3, 0.7], true_means, 1.0)
    gmm = DiagGMM.init_single(1, x.mean(0), x.var(0), dtype=torch.float64)
    stats = GmmStats.for_model(gmm)
    stats.accumulate(gmm, x, torch.zeros(len(x), dtype=torch.long))
    gmm, info = gmm.update(stats)
    assert info.count == pytest.approx(6000) and info.num_removed == 0
    gmm = gmm.mixup(2, stats.pdf_occs())
    for _ in range(30):
        stats = GmmStats.for_model(gmm)
        stats.accumulate(gmm, x, torch.zeros(len(x), dtype=torch.long))
        gmm, _ = gmm.update(stats)
    order = gmm.means[0, :, 0].argsort()
    torch.testing.assert_close(gmm.means[0, order], torch.tensor(true_means, dtype=torch.float64),
                               atol=0.1, rtol=0)
    torch.testing.assert_close(gmm.weights[0, order], torch.tensor([0.3, 0.7],
                                                                    dtype=torch.float64),
                               atol=0.03, rtol=0)
    torch.testing.assert_close(gmm.variances[0], torch.ones(2, 3, dtype=torch.float64),
                               atol=0.12, rtol=0)


def test_stats_from_triples_with_posteriors_equal_weighted_frames():
    gen = torch.Generator().manual_seed(2)
    gmm = _random_gmm(gen)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    a = GmmStats.for_model(gmm)
    # frame 3 half to pdf 0, half to pdf 1; the others to pdf 2
    a.accumulate(gmm, x, torch.tensor([0, 1] + [2] * 19),
                 frame_ids=torch.tensor([3, 3] + list(range(20)))[:21],
                 posteriors=torch.tensor([0.5, 0.5] + [1.0] * 19))
    b = GmmStats.for_model(gmm)
    b.accumulate(gmm, x[[3]], torch.tensor([0]), posteriors=torch.tensor([0.5]))
    b.accumulate(gmm, x[[3]], torch.tensor([1]), posteriors=torch.tensor([0.5]))
    b.accumulate(gmm, x[:19], torch.full((19,), 2))
    torch.testing.assert_close(a.occ, b.occ)
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.x2, b.x2)
    assert a.count == pytest.approx(20.0) and a.loglik == pytest.approx(b.loglik)
    assert a.occ.sum().item() == pytest.approx(20.0)


def test_mixup_reaches_target_and_does_not_lower_loglik():
    gen = torch.Generator().manual_seed(3)
    data = [_sample_mixture(gen, 3000, [0.5, 0.5], [[-3.0] * 4, [3.0] * 4], 1.0),
            _sample_mixture(gen, 1500, [0.3, 0.3, 0.4], [[0.0] * 4, [4.0] * 4, [-4.0] * 4], 1.0),
            _sample_mixture(gen, 300, [1.0], [[1.0] * 4], 1.0)]
    x = torch.cat(data)
    pdf = torch.cat([torch.full((len(d),), i) for i, d in enumerate(data)])
    gmm = DiagGMM.init_single(3, x.mean(0), x.var(0), dtype=torch.float64)

    def em(g: DiagGMM) -> tuple[DiagGMM, GmmStats]:
        st = GmmStats.for_model(g)
        st.accumulate(g, x, pdf)
        return g.update(st)[0], st

    gmm, _ = em(gmm)
    gmm, stats = em(gmm)
    before = stats.avg_loglik
    targets = split_targets(stats.pdf_occs(), 9, power=0.2, min_count=20)
    assert sum(targets) == 9 and targets[0] >= targets[1] >= targets[2] >= 1
    mixed = gmm.mixup(9, stats.pdf_occs(), power=0.2)
    assert mixed.num_gauss == 9 and mixed.num_comps.tolist() == targets
    torch.testing.assert_close(mixed.weights.sum(1), torch.ones(3, dtype=torch.float64))
    after_gmm, after = em(mixed)
    after_gmm, after = em(after_gmm)
    assert after.avg_loglik >= before
    assert after_gmm.num_gauss == 9
    # min_count caps the allocation: pdf 2 has 300 frames -> at most 300 / 100 - 1 = 2
    assert split_targets(stats.pdf_occs(), 100, min_count=100)[2] <= 2
    assert gmm.mixup(3, stats.pdf_occs()) is gmm  # already at target: unchanged
    # Kaldi's random split directions: mean +- perturb * std * r, seeded (deterministic)
    rand = gmm.mixup(6, stats.pdf_occs(), power=0.2, perturb=0.01, direction="random", seed=5)
    again = gmm.mixup(6, stats.pdf_occs(), power=0.2, perturb=0.01, direction="random", seed=5)
    other = gmm.mixup(6, stats.pdf_occs(), power=0.2, perturb=0.01, direction="random", seed=6)
    torch.testing.assert_close(rand.means, again.means)
    assert not torch.allclose(rand.means, other.means)
    fixed = gmm.mixup(6, stats.pdf_occs(), power=0.2, perturb=0.01)
    assert rand.num_comps.tolist() == fixed.num_comps.tolist()
    pdf0 = rand.means[0, :2]  # pdf 0's single component split in two
    shift = (pdf0[0] - pdf0[1]) / 2
    std = gmm.variances[0, 0].sqrt()
    torch.testing.assert_close(pdf0.mean(0), gmm.means[0, 0])  # symmetric about the mean
    assert not torch.allclose(shift.abs(), shift.abs()[0].expand_as(shift))  # not diagonal
    assert float((shift.abs() / std).max()) < 0.05  # 0.01 std x a standard normal
    torch.testing.assert_close((fixed.means[0, 0] - fixed.means[0, 1]).abs() / 2, 0.01 * std)
    with pytest.raises(ValueError, match="direction"):
        gmm.mixup(6, stats.pdf_occs(), direction="sideways")


def test_update_floors_variances_and_removes_low_count_components():
    x = torch.cat([torch.zeros(50, 2), torch.ones(3, 2) * 5]).double()
    gmm = DiagGMM(torch.tensor([[0.5, 0.5]], dtype=torch.float64),
                  torch.tensor([[[0.0, 0.0], [5.0, 5.0]]], dtype=torch.float64),
                  torch.ones(1, 2, 2, dtype=torch.float64))
    stats = GmmStats.for_model(gmm)
    stats.accumulate(gmm, x, torch.zeros(53, dtype=torch.long))
    new, info = gmm.update(stats, var_floor=0.01)
    assert info.num_removed == 1 and new.num_gauss == 1  # 3 frames < min occupancy 10
    assert new.weights[0, 0].item() == pytest.approx(1.0)
    assert info.num_floored == 2 and torch.allclose(new.variances, torch.full((1, 1, 2), 0.01,
                                                                              dtype=torch.float64))
    kept, info2 = gmm.update(stats, remove_low_count=False)
    assert kept.num_gauss == 2 and info2.num_not_updated == 1
    torch.testing.assert_close(kept.means[0, 1], gmm.means[0, 1])  # not updated


# ------------------------------------------------------------------------- topology

def test_topologies_and_transition_model():
    sil = PhoneTopology.kaldi_silence(5)
    assert sil.num_states == 5 and sil.min_frames == 3 and sil.linear_path == (0, 1, 2, 3, 4)
    assert [d for d, _ in sil.transitions[0]] == [0, 1, 2, 3]
    assert [d for d, _ in sil.transitions[2]] == [1, 2, 3, 4]
    assert sil.transitions[4] == ((4, 0.75), (5, 0.25))
    lr = PhoneTopology.left_to_right(3)
    assert lr.min_frames == 3 and lr.transitions[1] == ((1, 0.75), (2, 0.25))
    assert PhoneTopology.from_list(sil.to_list()) == sil
    with pytest.raises(ValueError, match="sum to"):
        PhoneTopology((((0, 0.5), (1, 0.4)),))
    with pytest.raises(ValueError, match="exit cannot be reached"):
        PhoneTopology((((0, 0.5), (1, 0.5)), ((1, 1.0),)))

    lang = make_lang(Lexicon(LEXICON))
    tm = TransitionModel.from_phone_set(lang.phone_set)
    # pdfs per base phone (position variants share): SIL and SPN 5 states, A-D 3 states
    assert tm.num_pdfs == 5 + 5 + 4 * 3
    a_b, a_e = lang.phones["A_B"], lang.phones["A_E"]
    assert tm.phone_hmm(a_b).pdfs == tm.phone_hmm(a_e).pdfs
    assert tm.pdf_name(tm.phone_hmm(a_b).pdfs[1]) == "A.1"
    assert tm.phone_hmm(a_b).transitions != tm.phone_hmm(a_e).transitions  # own tids
    assert (tm.log_probs[1:].exp() > 0).all() and tm.log_probs[0] == 0

    # Re-estimation: a tstate seen 100 times with 90 self-loops and 10 exits.
    self_tid, exit_tid = (t for _, t in tm.phone_hmm(a_b).transitions[2])
    counts = torch.zeros(tm.num_tids + 1, dtype=torch.float64)
    counts[self_tid], counts[exit_tid] = 90, 10
    first_self = tm.phone_hmm(a_b).transitions[0][0][1]
    counts[first_self] = 3  # below min_count 5: unchanged
    new = tm.update(counts)
    assert new.log_probs[self_tid].exp().item() == pytest.approx(0.9)
    assert new.log_probs[exit_tid].exp().item() == pytest.approx(0.1)
    assert new.log_probs[first_self] == tm.log_probs[first_self]
    counts[exit_tid] = 0.0  # floor 0.01, renormalised
    assert new.update(counts).log_probs[exit_tid].exp().item() == pytest.approx(0.01 / 1.01)
    assert TransitionModel.from_dict(new.to_dict()).log_probs.equal(new.log_probs)


# ---------------------------------------------------------------- synthetic speech

def _lang(**kw):
    return make_lang(Lexicon(LEXICON), **kw)


def _emission_means(seed: int = 0, scale: float = 2.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {b: rng.normal(size=(3, F)) * scale for b in BASES}


def _synth_utt(rng: np.random.Generator, mu: dict[str, np.ndarray], seq: list[tuple[str, int]]
               ) -> tuple[torch.Tensor, list[str]]:
    """Frames for ``[(base phone, frames)]``: each phone's frames split over 3 sub-states with
    their own means, unit-variance noise. Returns the frames and per-frame base phones."""
    frames, labels = [], []
    for p, d in seq:
        cuts = np.linspace(0, d, 4).astype(int)
        for s in range(3):
            frames.append(mu[p][s] + rng.normal(size=(cuts[s + 1] - cuts[s], F)))
        labels += [p] * d
    return torch.tensor(np.concatenate(frames), dtype=torch.float32), labels


def _synth_corpus(n_utts: int = 40, seed: int = 0):
    """Utterances of 1-3 random words with optional silence, from the means of
    :func:`_emission_means` (seed 0); ``seed`` draws the words and durations."""
    rng = np.random.default_rng(seed)
    mu = _emission_means(0)
    lex = Lexicon(LEXICON)
    words = lex.words()
    feats, texts, truth = {}, {}, {}
    for i in range(n_utts):
        ws = list(rng.choice(words, size=int(rng.integers(1, 4))))
        seq = []
        if rng.random() < 0.8:
            seq.append(("SIL", int(rng.integers(6, 15))))
        for k, w in enumerate(ws):
            seq += [(p, int(rng.integers(5, 12))) for p in lex[w][0]]
            if k < len(ws) - 1 and rng.random() < 0.3:
                seq.append(("SIL", int(rng.integers(5, 10))))
        if rng.random() < 0.8:
            seq.append(("SIL", int(rng.integers(6, 15))))
        u = f"spk{i % 4}-utt{i:02d}"
        feats[u], truth[u] = _synth_utt(rng, mu, seq)
        texts[u] = " ".join(ws)
    return feats, texts, truth


def _true_model(lang, topology: Topology | None = None, seed: int = 0) -> AcousticModel:
    """The generating model: pdf (base, state) has the sub-state's mean (silence states 3, 4
    reuse the last), unit variances."""
    tm = TransitionModel.from_phone_set(lang.phone_set, topology)
    mu = _emission_means(seed)
    mu["SPN"] = np.zeros((3, F))
    means = torch.tensor(np.stack([mu[tm.pdf_base[p]][min(tm.pdf_state[p], 2)]
                                   for p in range(tm.num_pdfs)]), dtype=torch.float32)
    gmm = DiagGMM(torch.ones(tm.num_pdfs, 1), means[:, None, :], torch.ones(tm.num_pdfs, 1, F))
    return AcousticModel(tm, gmm)


def _base_labels(tm: TransitionModel, phones: torch.Tensor) -> list[str]:
    return [tm.phone_base[tm.phone_names[int(p)]] for p in phones]


# --------------------------------------------------------------------------- graphs

def test_graph_structure_optional_silence_and_oov():
    lang = _lang()
    tm = TransitionModel.from_phone_set(lang.phone_set)
    gc = GraphCompiler(lang, tm, sil_prob=0.5)
    g = gc.compile("u1", "AB D")
    # SIL(5) + A_B B_E (6) + SIL(5) + D_S (3) + SIL(5)
    assert g.num_nodes == 24 and g.words == ("AB", "D")
    assert g.min_frames == 9  # all silences skipped
    assert len(g.start_nodes) == 2 and len(g.final_nodes) == 2
    assert torch.allclose(g.start_logp, torch.full((2,), math.log(0.5), dtype=torch.float64))
    assert g.equal_path.numel() == 5 + 6 + 3 + 5  # silence at the ends, not between words
    assert gc.compile("u2", ["NOPE"]).words == ("<UNK>",)  # OOV mapped
    no_oov = _lang(oov_word=None)
    with pytest.raises(TranscriptGraphError, match="u3: word 'NOPE' is not in the lexicon"):
        GraphCompiler(no_oov, TransitionModel.from_phone_set(no_oov.phone_set)).compile(
            "u3", "AB NOPE")
    with pytest.raises(TranscriptGraphError, match="no path"):
        GraphCompiler(lang, tm, sil_prob=0.0).compile("u4", "")
    assert GraphCompiler(lang, tm, sil_prob=1.0).compile("u5", "D").min_frames == 3 + 3 + 3


def test_equal_alignment_spreads_frames_evenly():
    lang = _lang()
    tm = TransitionModel.from_phone_set(lang.phone_set)
    g = GraphCompiler(lang, tm).compile("u1", "AB")
    ali = align_equal(g, 32, tm)  # path: 5 + 6 + 5 = 16 states -> 2 frames each
    assert ali.num_frames == 32
    assert [(s.start, s.end, s.label) for s in ali.phone_segments] == [
        (0, 10, "SIL"), (10, 16, "A_B"), (16, 22, "B_E"), (22, 32, "SIL")]
    assert [(s.start, s.end, s.label) for s in ali.word_segments] == [(10, 22, "AB")]
    assert tm.split_to_phones(ali.tids) == [(s.start, s.end, lang.phones[s.label])
                                            for s in ali.phone_segments]
    assert ali.pdfs.tolist() == tm.tid2pdf[ali.tids].tolist()
    with pytest.raises(AlignmentError, match="u1: 15 frames are fewer than the 16 states"):
        align_equal(g, 15, tm)


# ------------------------------------------------------------------------ alignment

def test_viterbi_recovers_known_phone_boundaries():
    lang = make_lang(Lexicon([("X", ["A"]), ("Y", ["B"]), ("Z", ["C"])]))
    model = _true_model(lang)
    gc = GraphCompiler(lang, model.tmodel)
    rng = np.random.default_rng(5)
    mu = _emission_means(0)
    cases = {  # optional silence at both ends, at one end, none
        "both": [("SIL", 10), ("A", 8), ("B", 12), ("C", 9), ("SIL", 11)],
        "start": [("SIL", 7), ("A", 10), ("B", 6), ("C", 14)],
        "none": [("A", 9), ("B", 9), ("C", 7)],
    }
    feats = {u: _synth_utt(rng, mu, seq)[0] for u, seq in cases.items()}
    graphs = [gc.compile(u, "X Y Z") for u in cases]
    alis, failed = align_viterbi(model, graphs, feats)
    assert not failed
    for u, seq in cases.items():
        got = [(s.label.split("_")[0], s.start, s.end) for s in alis[u].phone_segments]
        assert [p for p, _, _ in got] == [p for p, _ in seq]
        bounds = np.cumsum([0] + [d for _, d in seq])
        for (_, start, end), b0, b1 in zip(got, bounds[:-1], bounds[1:]):
            assert abs(start - b0) <= 1 and abs(end - b1) <= 1
        assert [w.label for w in alis[u].word_segments] == ["X", "Y", "Z"]


def _reference_viterbi(model: AcousticModel, g, x: torch.Tensor, a: float, b: float) -> float:
    """Plain per-node loops over the graph tables: the best path score."""
    ll = model.gmm.loglik(x).double() * a
    tlp = model.tmodel.log_probs * b
    score = [-math.inf] * g.num_nodes
    for s, lp in zip(g.start_nodes.tolist(), g.start_logp.tolist()):
        score[s] = lp + float(ll[0, g.pdf[s]])
    for t in range(1, x.shape[0]):
        new = [-math.inf] * g.num_nodes
        for j in range(g.num_nodes):
            for p in range(g.preds.shape[1]):
                lp = float(g.pred_logp[j, p])
                if lp > -math.inf:
                    v = score[int(g.preds[j, p])] + lp + float(tlp[g.pred_tid[j, p]])
                    new[j] = max(new[j], v)
            new[j] += float(ll[t, g.pdf[j]])
        score = new
    return max(score[int(n)] + float(lp) + float(tlp[tid]) for n, lp, tid in
               zip(g.final_nodes, g.final_logp, g.final_tid))


def test_viterbi_is_exact_and_batching_does_not_change_results():
    lang = _lang()
    model = _true_model(lang)
    feats, texts, _ = _synth_corpus(6, seed=3)
    gc = GraphCompiler(lang, model.tmodel)
    graphs = [gc.compile(u, texts[u]) for u in feats]
    batched, _ = align_viterbi(model, graphs, feats, beam=math.inf)
    for g in graphs[:2]:
        single, _ = align_viterbi(model, [g], feats, beam=math.inf)
        a, s = batched[g.utt_id], single[g.utt_id]
        assert a.tids.equal(s.tids) and a.score == pytest.approx(s.score, rel=1e-6)
        ref = _reference_viterbi(model, g, feats[g.utt_id], 0.1, 0.1)
        assert a.score == pytest.approx(ref, rel=1e-5)
        # the path's own score: acoustics + transitions + one log(0.5) per silence junction
        ll = model.gmm.loglik(feats[g.utt_id]).double()
        own = (0.1 * ll[torch.arange(a.num_frames), a.pdfs].sum()
               + 0.1 * model.tmodel.log_probs[a.tids].sum()
               + (len(g.words) + 1) * math.log(0.5))
        assert float(own) == pytest.approx(ref, rel=1e-5)
    small, _ = align_viterbi(model, graphs, feats, max_batch_elems=1)  # one utt per batch
    assert all(small[u].tids.equal(batched[u].tids) for u in batched)


def test_pronunciation_variants_pick_the_spoken_one():
    lang = make_lang(Lexicon([("W", ["A", "B"]), ("W", ["C", "D"]), ("V", ["D"])]))
    model = _true_model(lang)
    rng = np.random.default_rng(7)
    mu = _emission_means(0)
    x, _ = _synth_utt(rng, mu, [("SIL", 8), ("C", 9), ("D", 9), ("D", 10)])
    g = GraphCompiler(lang, model.tmodel).compile("u", "W V")
    alis, _ = align_viterbi(model, [g], {"u": x})
    assert [s.label for s in alis["u"].phone_segments] == ["SIL", "C_B", "D_E", "D_S"]
    first_only = GraphCompiler(lang, model.tmodel, all_prons=False).compile("u", "W V")
    alis1, _ = align_viterbi(model, [first_only], {"u": x}, beam=math.inf)
    assert [s.label for s in alis1["u"].phone_segments][1:3] == ["A_B", "B_E"]


def test_unalignable_utterances_are_reported_not_raised():
    lang = _lang()
    model = _true_model(lang)
    gc = GraphCompiler(lang, model.tmodel)
    mu = _emission_means(0)
    rng = np.random.default_rng(9)
    good, _ = _synth_utt(rng, mu, [("SIL", 9), ("D", 9), ("SIL", 9)])
    bad = good.clone()
    bad[3, 0] = float("nan")
    feats = {"good": good, "short": good[:2], "nan": bad}
    graphs = [gc.compile(u, t) for u, t in
              [("good", "D"), ("short", "BCD"), ("nan", "D"), ("nofeats", "D")]]
    alis, failed = align_viterbi(model, graphs, feats)
    assert set(alis) == {"good"}
    assert failed["short"] == "2 frames are fewer than the 9 the transcript needs"
    assert "not finite" in failed["nan"] and failed["nofeats"] == "no features"
    # A wrong transcript: no path within a tiny beam; the retry beam rescues it or not.
    _, failed = align_viterbi(model, [gc.compile("good", "AB")], feats, beam=0.5,
                              retry_beam=None)
    assert failed == {"good": "no path within beam 0.5"}
    alis, failed = align_viterbi(model, [gc.compile("good", "AB")], feats, beam=0.5,
                                 retry_beam=math.inf)
    assert not failed and "good" in alis
    with pytest.raises(ValueError, match="good: features have shape"):
        align_viterbi(model, graphs[:1], {"good": good[:, :5]})


# ------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def mono():
    torch.manual_seed(0)
    feats, texts, truth = _synth_corpus(40, seed=0)
    feats["spk0-short"] = feats["spk0-utt00"][:2]  # fewer frames than any path needs
    texts["spk0-short"] = "BCD"
    texts["spk1-notext"] = "AB"
    lang = _lang()
    res = train_mono(feats, texts, lang, num_iters=14, max_gauss=60, max_iter_inc=6,
                     realign_iters=(1, 2, 3, 4, 5, 7, 9))
    return res, feats, texts, truth, lang


def test_train_mono_from_flat_start_learns_the_alignment(mono):
    res, _, _, truth, _ = mono
    hist = res.history
    assert [h.iteration for h in hist] == list(range(14))
    lls = [h.avg_loglik for h in hist]
    assert lls[-1] > lls[0] + 10  # flat start (-85) to about the true model's (-55)
    for x in range(2, len(hist)):  # plain EM steps never lower the likelihood
        if not hist[x].realigned and hist[x - 1].num_gauss == hist[x - 2].num_gauss:
            assert lls[x] >= lls[x - 1] - 1e-6, (x, lls)
    assert hist[0].num_gauss == res.model.tmodel.num_pdfs
    assert 50 <= res.model.num_gauss <= 60 and res.model.num_gauss > hist[1].num_gauss
    right = total = 0
    for u, ali in res.alignments.items():
        got = _base_labels(res.model.tmodel, ali.phones)
        right += sum(a == b for a, b in zip(got, truth[u]))
        total += len(got)
    assert total == sum(len(truth[u]) for u in res.alignments)
    assert right / total > 0.9
    assert len(res.alignments) == 40


def test_train_mono_reports_and_skips_bad_utterances(mono):
    res = mono[0]
    assert res.failed == {
        "spk0-short": "2 frames are fewer than the 9 the transcript needs",
        "spk1-notext": "no features",
    }
    assert all(h.num_failed == 1 for h in res.history)  # spk0-short in every pass


def test_train_mono_on_the_shortest_utterances_aligns_them_all():
    """shortest=N (Kaldi's subset_data_dir.sh --shortest N, then align_si.sh): EM sees the
    N shortest utterances only; the returned alignments cover every utterance, as well as
    training on all of them does."""
    torch.manual_seed(0)
    feats, texts, truth = _synth_corpus(40, seed=0)
    lang = _lang()
    kw = {"num_iters": 14, "max_gauss": 60, "max_iter_inc": 6,
          "realign_iters": (1, 2, 3, 4, 5, 7, 9)}
    res = train_mono(feats, texts, lang, shortest=15, **kw)
    assert all(h.num_aligned == 15 for h in res.history)
    assert len(res.alignments) == 40 and not res.failed
    assert res.model.meta["shortest"] == 15
    short = sorted(feats, key=lambda u: (len(feats[u]), u))[:15]
    assert max(len(feats[u]) for u in short) <= min(len(feats[u]) for u in feats
                                                   if u not in short)
    right = total = 0
    for u, ali in res.alignments.items():
        got = _base_labels(res.model.tmodel, ali.phones)
        right += sum(a == b for a, b in zip(got, truth[u]))
        total += len(got)
    assert right / total > 0.9
    # N at least the number of utterances: all of them, as without the option
    assert all(h.num_aligned == 40 for h in train_mono(feats, texts, lang, shortest=99,
                                                       **kw).history)
    with pytest.raises(ValueError, match="shortest"):
        train_mono(feats, texts, lang, shortest=-1, **kw)


def test_boost_silence_raises_silence_likelihoods_in_every_em_alignment(mono, monkeypatch):
    """Kaldi gmm-boost-silence: silence pdfs' log-likelihoods rise by log(boost), the others
    are untouched, and the EM loop aligns with the boosted model."""
    from asrkit.models.hmm_gmm.em import EmOptions, boost_silence

    res, feats, texts, _, lang = mono
    model = res.model
    assert boost_silence(model, 1.0) is model
    boosted = boost_silence(model, 4.0)
    x = feats["spk0-utt00"]
    diff = boosted.gmm.loglik(x) - model.gmm.loglik(x)
    tm = model.tmodel
    sil = torch.tensor([b in tm.silence_bases for b in tm.pdf_base])
    assert bool(sil.any()) and bool((~sil).any())
    assert torch.allclose(diff[:, sil], torch.full_like(diff[:, sil], math.log(4.0)), atol=1e-3)
    assert torch.allclose(diff[:, ~sil], torch.zeros_like(diff[:, ~sil]), atol=1e-3)
    with pytest.raises(ValueError, match="boost must be > 0"):
        boost_silence(model, 0.0)
    with pytest.raises(ValueError, match="boost_silence must be > 0"):
        EmOptions(boost_silence=-1.0)
    # every alignment of the EM loop (realignments and the final one) uses the boosted model
    from asrkit.models.hmm_gmm import em

    seen = []

    def spy(m, *args, **kwargs):
        seen.append(m.gmm.weights.sum(1))
        return align_viterbi(m, *args, **kwargs)

    monkeypatch.setattr(em, "align_viterbi", spy)
    train_mono(feats, texts, lang, num_iters=3, max_gauss=30, max_iter_inc=2,
               realign_iters=(1, 2), boost_silence=1.25)
    assert len(seen) == 3
    for w in seen:
        assert torch.allclose(w[sil], torch.full_like(w[sil], 1.25))
        assert torch.allclose(w[~sil], torch.ones_like(w[~sil]))


def test_model_save_load_round_trip(mono, tmp_path):
    res, feats, *_ = mono
    model = res.model
    path = model.save(tmp_path / "final.mdl")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "asrkit.hmm_gmm" and raw["meta"]["type"] == "monophone"
    back = AcousticModel.load(path)
    for name in ("weights", "means", "variances"):
        assert getattr(back.gmm, name).equal(getattr(model.gmm, name))
    assert back.tmodel.log_probs.equal(model.tmodel.log_probs)
    assert back.tmodel.phones == model.tmodel.phones
    assert back.tmodel.tid2pdf.equal(model.tmodel.tid2pdf)
    x = feats["spk0-utt00"]
    assert back.loglik(x).equal(model.loglik(x))
    assert back.meta == model.meta
    torch.save({"format": "other"}, tmp_path / "bad.mdl")
    with pytest.raises(ValueError, match="not an asrkit HMM-GMM model"):
        AcousticModel.load(tmp_path / "bad.mdl")
    with pytest.raises(FileNotFoundError):
        AcousticModel.load(tmp_path / "missing.mdl")


def test_alignment_directory_files(mono, tmp_path):
    res, _, texts, _, _ = mono
    d = write_alignment_dir(tmp_path / "ali", res.alignments, res.failed, model=res.model)
    tids = read_int_vectors(d / "ali.txt")
    assert list(tids) == sorted(res.alignments)
    for u, a in res.alignments.items():
        assert tids[u].equal(a.tids)
    pdfs = read_int_vectors(d / "pdf_ali.txt")
    assert pdfs["spk0-utt00"].equal(res.model.tmodel.tid2pdf[tids["spk0-utt00"]])
    phones = read_int_vectors(d / "phone_ali.txt")
    assert phones["spk0-utt00"].equal(res.alignments["spk0-utt00"].phones)
    ctm = read_ctm(d / "phone.ctm")
    a = res.alignments["spk0-utt00"]
    assert ctm["spk0-utt00"] == list(a.phone_segments)
    first = (d / "phone.ctm").read_text().splitlines()[0].split()
    seg = a.phone_segments[0]
    assert first == ["spk0-utt00", "1", f"{seg.start * 0.01:.2f}",
                     f"{seg.num_frames * 0.01:.2f}", seg.label]
    words = read_ctm(d / "word.ctm")
    assert [s.label for s in words["spk0-utt00"]] == texts["spk0-utt00"].split()
    assert (d / "failed").read_text().splitlines() == [
        "spk0-short\t2 frames are fewer than the 9 the transcript needs",
        "spk1-notext\tno features"]
    assert AcousticModel.load(d / "final.mdl").num_gauss == res.model.num_gauss
    (tmp_path / "bad.txt").write_text("u1 3 x 4\n")
    with pytest.raises(AlignmentFileError, match="bad.txt:1: 'x' is not an integer"):
        read_int_vectors(tmp_path / "bad.txt")


# ------------------------------------------------------------------------- features

def test_add_deltas_matches_kaldi_filters_and_torchaudio_inside():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(30, 13, generator=gen, dtype=torch.float64)
    y = add_deltas(x)
    assert y.shape == (30, 39) and y[:, :13].equal(x)
    d1 = AF.compute_deltas(x.T).T
    d2 = AF.compute_deltas(d1.T).T
    torch.testing.assert_close(y[:, 13:26], d1)  # first order equal everywhere
    torch.testing.assert_close(y[4:-4, 26:], d2[4:-4])  # second order away from the edges
    f2 = delta_filters(2, 2)[2]
    assert f2.numel() == 9 and f2.sum().abs() < 1e-12
    # edge frame, Kaldi's combined filter on replicated frames
    idx = torch.arange(-4, 5).clamp(0, 29)
    torch.testing.assert_close(y[0, 26:], (f2[:, None] * x[idx]).sum(0))
    assert add_deltas(torch.zeros(0, 13)).shape == (0, 39)


def test_gmm_features_with_per_speaker_cmvn(tmp_path):
    rng = np.random.default_rng(6)
    mfcc = {f"s{i % 2}-u{i}": (rng.normal(size=(20 + i, 13)) * 3 + i).astype(np.float32)
            for i in range(4)}
    scp = tmp_path / "feats.scp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/feats.ark,{scp}") as w:
        for u in sorted(mfcc):
            w(u, mfcc[u])
    spk2utt = {"s0": ["s0-u0", "s0-u2"], "s1": ["s1-u1", "s1-u3"]}
    out = load_gmm_features(scp, spk2utt)
    assert set(out) == set(mfcc)
    stats = compute_cmvn_stats([mfcc["s1-u1"], mfcc["s1-u3"]])
    want = add_deltas(apply_cmvn(torch.from_numpy(mfcc["s1-u3"]), stats, norm_vars=False))
    torch.testing.assert_close(out["s1-u3"], want)
    assert gmm_features(mfcc["s0-u0"]).shape == (20, 39)
    # speaker means are removed
    both = torch.cat([out["s0-u0"], out["s0-u2"]])[:, :13]
    assert both.mean(0).abs().max() < 1e-4
    # utt_ids: the same features, CMVN over all of the speaker's utterances, and only the
    # speakers of those utterances read (s0's features are never loaded)
    (tmp_path / "s0.ark").write_bytes(b"")
    (tmp_path / "feats_s0_broken.scp").write_text(
        "".join(f"{u} {tmp_path}/s0.ark:0\n" for u in ("s0-u0", "s0-u2"))
        + "".join(line + "\n" for line in scp.read_text().splitlines() if line.startswith("s1")))
    one = load_gmm_features(tmp_path / "feats_s0_broken.scp", spk2utt, utt_ids=["s1-u3"])
    assert list(one) == ["s1-u3"]
    torch.testing.assert_close(one["s1-u3"], out["s1-u3"])
