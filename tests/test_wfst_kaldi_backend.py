"""The kaldi backend of HMM-GMM decoding (asrkit.decode.kaldi: Kaldi's FasterDecoder from
kaldi-decoder over kaldifst) against our search (asrkit.decode.wfst.decode_fst) on the toy
lang, bigram and HCLG of tests/test_wfst_decoder.py; skipped without the kaldi extra."""

from __future__ import annotations

import math

import pytest
import torch

from asrkit.decode.gmm import decode_gmm_data_dir
from asrkit.decode.kaldi import KaldiFasterDecoder, kaldi_decoder_available
from asrkit.decode.wfst import DecodingError, DecodingGraph, decode_fst, make_hclg
from tests.test_wfst_decoder import (
    G,  # noqa: F401  (fixtures)
    Mono,
    ToyTri,
    ToyTriTransitions,
    _alignment,
    _peaked,
    _phones,
    _words,
    hclg,  # noqa: F401
    lang,  # noqa: F401
    lm,  # noqa: F401
    tm,  # noqa: F401
)

needs_kaldi = pytest.mark.skipif(not kaldi_decoder_available(),
                                 reason="kaldi-decoder/kaldifst not installed (the kaldi extra)")


def _same(a, b, acoustic_scale: float) -> None:
    assert a.words == b.words
    assert torch.equal(a.tids, b.tids)
    assert a.reached_final == b.reached_final
    assert a.am_cost == pytest.approx(b.am_cost, abs=1e-6)
    assert a.lm_cost == pytest.approx(b.lm_cost, abs=1e-3)  # Kaldi sums in float32
    assert a.cost == pytest.approx(b.cost, abs=1e-3)
    assert b.cost == pytest.approx(b.lm_cost + acoustic_scale * b.am_cost)


@needs_kaldi
@pytest.mark.parametrize(("text", "phones", "frames"), [
    ("A CAT", "AH_S K_B AE_I T_E", [3]),
    ("DOG A CAT", "SIL D_B AO_I G_E AH_S SIL K_B AE_I T_E SIL", [2, 5, 1]),
    ("CAT O", "K_B AE_I T_E OW_S", [1, 1, 1]),
])
def test_known_sequences_match_ours(hclg, tm, lang, text, phones, frames):  # noqa: F811
    kaldi = KaldiFasterDecoder(hclg[0], tm.tid2pdf)
    pdfs = _alignment(tm, Mono(tm), _phones(lang, phones), frames)
    ll = _peaked(pdfs, tm.num_pdfs)
    r = kaldi.decode(ll)
    assert r.words == _words(lang, text)
    assert tm.tid2pdf[r.tids].tolist() == pdfs
    assert r.num_active.shape == (len(pdfs),) and r.nbest is None
    _same(decode_fst(hclg[0], ll, tm.tid2pdf), r, 0.1)


@needs_kaldi
@pytest.mark.parametrize("seed", range(6))
def test_random_scores_same_1best_as_ours(hclg, tm, seed):  # noqa: F811
    """Noisy log-likelihoods, several beams: the same best path, words, alignment and costs
    (one decoder object reused across utterances)."""
    graph = DecodingGraph.from_fst(hclg[0])
    gen = torch.Generator().manual_seed(seed)
    T = 30 + 7 * seed
    ll = torch.randn(T, tm.num_pdfs, generator=gen, dtype=torch.float64) * 3.0
    for acwt, beam in [(0.1, 13.0), (0.5, 8.0), (1.0, 30.0)]:
        kaldi = KaldiFasterDecoder(hclg[0], tm.tid2pdf, acoustic_scale=acwt, beam=beam)
        ours = decode_fst(graph, ll, tm.tid2pdf, acoustic_scale=acwt, beam=beam)
        _same(ours, kaldi.decode(ll), acwt)
        _same(ours, kaldi.decode(ll), acwt)  # reused


@needs_kaldi
def test_triphone_graph_and_graph_file(lang, G, tm, tmp_path):  # noqa: F811
    cd = ToyTri(tm, mono=False)
    tmodel = ToyTriTransitions(tm)
    fst, _ = make_hclg(lang, G, tmodel, cd)
    path = tmp_path / "HCLG.fst"
    fst.write(str(path))
    kaldi = KaldiFasterDecoder(path, tmodel.tid2pdf, beam=16.0)
    pdfs = _alignment(tm, cd, _phones(lang, "SIL D_B AO_I G_E SIL OW_S"), [2, 1, 3])
    ll = _peaked(pdfs, cd.num_pdfs)
    r = kaldi.decode(ll)
    assert r.words == _words(lang, "DOG OH")
    assert tmodel.tid2pdf[r.tids].tolist() == pdfs
    _same(decode_fst(fst, ll, tmodel.tid2pdf, beam=16.0), r, 0.1)


@needs_kaldi
def test_errors(hclg, tm, tmp_path):  # noqa: F811
    with pytest.raises(FileNotFoundError, match="mkgraph"):
        KaldiFasterDecoder(tmp_path / "missing.fst", tm.tid2pdf)
    with pytest.raises(ValueError, match="tid2pdf has only"):
        KaldiFasterDecoder(hclg[0], tm.tid2pdf[:3])
    with pytest.raises(ValueError, match="beam"):
        KaldiFasterDecoder(hclg[0], tm.tid2pdf, beam=0.0)
    kaldi = KaldiFasterDecoder(hclg[0], tm.tid2pdf)
    with pytest.raises(ValueError, match="columns"):
        kaldi.decode(torch.zeros(5, 2))
    with pytest.raises(DecodingError):
        kaldi.decode(torch.full((5, tm.num_pdfs), -math.inf))


def test_driver_rejects_bad_backend_options(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        decode_gmm_data_dir(tmp_path, tmp_path, tmp_path, backend="flashlight")
    with pytest.raises(ValueError, match="word_ins_penalty needs the asrkit backend"):
        decode_gmm_data_dir(tmp_path, tmp_path, tmp_path, backend="kaldi", word_ins_penalty=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        decode_gmm_data_dir(tmp_path, tmp_path, tmp_path, batch_size=0)
    if kaldi_decoder_available():
        with pytest.raises(ValueError, match="nbest > 1 needs the asrkit backend"):
            decode_gmm_data_dir(tmp_path, tmp_path, tmp_path, backend="kaldi", nbest=2)


def test_missing_package_names_the_install_command(monkeypatch):
    import builtins

    from asrkit.decode import kaldi as kmod

    real = builtins.__import__

    def no_kaldi(name, *args, **kwargs):
        if name in ("kaldi_decoder", "kaldifst"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kaldi)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[kaldi\]'"):
        kmod.require_kaldi_decoder()
