"""HMM-GMM stages end to end through the CLI on synthetic "speech" (tests/synth.py):
``asrkit lang`` -> ``train-lm ngram`` -> ``train model=hmm_gmm`` (mono, tri1) -> ``align`` ->
``mkgraph`` -> ``decode`` -> ``score``; and the lang dir reader."""

from __future__ import annotations

import json

import pytest
import torch
from synth import PHONE_LEXICON, make_phone_feature_dir

from asrkit.cli import main
from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.nbest import read_nbest
from asrkit.models.hmm_gmm import read_ctm
from asrkit.score import score_files
from asrkit.text.lexicon import Lexicon, LexiconError, make_lang, read_lang, write_lang

TRAIN_OPTS = ["model.stages.mono.num_iters=12", "model.stages.mono.max_gauss=40",
              "model.stages.mono.max_iter_inc=6",
              "model.stages.mono.realign_iters=[1,2,3,4,5,7,9]",
              "model.stages.tri1.num_leaves=40", "model.stages.tri1.tot_gauss=80",
              "model.stages.tri1.num_iters=8", "model.stages.tri1.max_iter_inc=5",
              "model.stages.tri1.realign_iters=[4]", "model.stages.tri1.min_gain=20",
              "model.stages.tri2.num_leaves=40", "model.stages.tri2.tot_gauss=80",
              "model.stages.tri2.num_iters=8", "model.stages.tri2.max_iter_inc=5",
              "model.stages.tri2.realign_iters=[4]", "model.stages.tri2.min_gain=20",
              "model.stages.tri2.mllt_iters=[2,4]", "model.stages.tri2.lda_dim=20",
              "model.stages.tri3.num_leaves=40", "model.stages.tri3.tot_gauss=80",
              "model.stages.tri3.num_iters=8", "model.stages.tri3.max_iter_inc=5",
              "model.stages.tri3.realign_iters=[4]", "model.stages.tri3.min_gain=20",
              "model.stages.tri3.fmllr_iters=[2,4]",
              "model.device=cpu"]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("gmm")
    train, train_truth = make_phone_feature_dir(root / "train", 60, seed=0)
    test, test_truth = make_phone_feature_dir(root / "test", 20, seed=1)
    lex = root / "lexicon.txt"
    lex.write_text("".join(f"{w} {p}\n" for w, p in PHONE_LEXICON.items()))
    assert main(["lang", str(lex), str(root / "lang"), "--text", str(train / "text")]) == 0
    assert main(["train-lm", "ngram", str(train / "text"), str(root / "lm.arpa"),
                 "--order", "2"]) == 0
    exp = root / "exp"
    args = ["train", "model=hmm_gmm", f"data.train={train}", f"data.lang={root / 'lang'}",
            f"exp_dir={exp}", *TRAIN_OPTS]
    assert main(args) == 0
    return {"root": root, "train": train, "test": test, "exp": exp, "args": args,
            "train_truth": train_truth, "test_truth": test_truth}


def _boundary_errors(ctm, truth) -> list[int]:
    errs = []
    for utt, spans in truth.items():
        segs = ctm[utt]
        assert [s.label for s in segs] == [w for w, _, _ in spans], utt
        for seg, (_, start, end) in zip(segs, spans):
            errs += [abs(seg.start - start), abs(seg.end - end)]
    return errs


def test_train_writes_stages_with_rising_likelihood_and_alignments(system):
    exp = system["exp"]
    for stage in ("mono", "tri1", "tri2", "tri3"):
        d = exp / stage
        assert (d / ".done").is_file() and (d / "final.mdl").is_file()
        hist = json.loads((d / "history.json").read_text())
        assert hist[-1]["avg_loglik"] > hist[0]["avg_loglik"]
        assert (d / "ali" / "failed").read_text() == ""
        errs = _boundary_errors(read_ctm(d / "ali" / "word.ctm"), system["train_truth"])
        assert sum(e <= 2 for e in errs) / len(errs) > 0.9, stage
    # The triphone stages have trees; the LDA+MLLT stage stores its feature transform.
    assert "leaves" in (exp / "tri1" / "train.log").read_text()
    assert "MLLT applied" in (exp / "tri2" / "train.log").read_text()
    from asrkit.models.hmm_gmm import AcousticModel

    opts = AcousticModel.load(exp / "tri2" / "final.mdl").meta["features"]
    assert opts["splice"] == 3 and len(opts["transform"]) == 20
    assert len(opts["transform"][0]) == 13 * 7


def test_sat_stage_writes_transforms_and_decodes_in_two_passes(system):
    from asrkit.models.hmm_gmm import AcousticModel
    from asrkit.models.hmm_gmm.fmllr import read_fmllr

    root, exp, test = system["root"], system["exp"], system["test"]
    sat = exp / "tri3"
    assert "fMLLR re-estimated for 4 speakers" in (sat / "train.log").read_text()
    trans = read_fmllr(sat / "trans.ark")
    assert sorted(trans) == [f"spk{i}" for i in range(4)]
    assert all(tuple(w.shape) == (20, 21) for w in trans.values())
    mdl, ali = AcousticModel.load(sat / "final.mdl"), AcousticModel.load(sat / "final.alimdl")
    assert mdl.meta["features"]["fmllr"] and mdl.meta["type"] == "sat"
    assert torch.equal(mdl.tmodel.tid2pdf, ali.tmodel.tid2pdf)
    assert main(["mkgraph", str(root / "lang"), str(root / "lm.arpa"), str(sat),
                 str(sat / "graph")]) == 0
    assert main(["decode", str(sat), str(test), "--nj", "2"]) == 0
    out = sat / "decode_test_graph"
    report = score_files(test / "text", out / "text")
    assert report.wer.sub + report.wer.dele + report.wer.ins <= 1, report.wer
    # first pass with final.alimdl, transforms of the test speakers, then adapted passes
    assert set(read_kaldi_map(out / "si" / "text")) == set(read_kaldi_map(out / "text"))
    assert sorted(read_fmllr(out / "trans.ark")) == [f"spk{i}" for i in range(4)]
    summary = json.loads((out / "decode_summary.json").read_text())
    assert summary["fmllr_passes"] == 2 and summary["num_utts"] == 20
    # align_fmllr: SI alignment, transforms, adapted alignment
    assert main(["align", str(sat), str(root / "lang"), str(test), str(root / "ali_sat")]) == 0
    assert sorted(read_fmllr(root / "ali_sat" / "trans.ark")) == [f"spk{i}" for i in range(4)]
    errs = _boundary_errors(read_ctm(root / "ali_sat" / "word.ctm"), system["test_truth"])
    assert sum(e <= 2 for e in errs) / len(errs) > 0.9
    # lattice-posterior fMLLR statistics (decode_fmllr.sh's lattice-to-post)
    assert main(["decode", str(sat), str(test), "--fmllr-stats", "lattice",
                 "--out", str(root / "lat")]) == 0
    report = score_files(test / "text", root / "lat" / "text")
    assert report.wer.sub + report.wer.dele + report.wer.ins <= 1, report.wer
    summary = json.loads((root / "lat" / "decode_summary.json").read_text())
    assert summary["fmllr_stats"] == "lattice" and summary["fmllr_lattice_beam"] == 4.0
    lat_trans = read_fmllr(root / "lat" / "trans.ark")
    best_trans = read_fmllr(out / "trans.ark")
    assert sorted(lat_trans) == sorted(best_trans)
    assert any(not torch.allclose(lat_trans[s], best_trans[s], atol=1e-4) for s in lat_trans)
    # a lattice holding only the best path gives the 1-best statistics' transforms
    assert main(["decode", str(sat), str(test), "--fmllr-stats", "lattice",
                 "--fmllr-lattice-beam", "1e-6", "--out", str(root / "lat0")]) == 0
    narrow = read_fmllr(root / "lat0" / "trans.ark")
    for s in best_trans:
        assert torch.allclose(narrow[s], best_trans[s], atol=1e-5), s
    assert main(["decode", str(sat), str(test), "--fmllr-stats", "lattice", "--backend",
                 "kaldi", "--out", str(root / "x")]) == 2
    # without its speaker-independent model a SAT stage cannot decode
    (sat / "final.alimdl").rename(sat / "alimdl.bak")
    try:
        assert main(["decode", str(sat), str(test), "--out", str(root / "x")]) == 2
    finally:
        (sat / "alimdl.bak").rename(sat / "final.alimdl")


def test_train_resumes_by_skipping_finished_stages(system):
    mdl = system["exp"] / "tri2" / "final.mdl"
    before = mdl.stat().st_mtime_ns
    assert main(system["args"]) == 0
    assert mdl.stat().st_mtime_ns == before


def test_mkgraph_decode_score_recognise_held_out_utterances(system, capsys):
    root, exp, test = system["root"], system["exp"], system["test"]
    assert main(["mkgraph", str(root / "lang"), str(root / "lm.arpa"), str(exp / "tri1"),
                 str(exp / "tri1" / "graph")]) == 0
    info = json.loads((exp / "tri1" / "graph" / "graph.json").read_text())
    assert info["sizes"]["HCLG"][0] > 0 and info["lm_words_missing_from_lexicon"] == []
    assert set(info["peak_rss_mb"]) == set(info["seconds"]) and info["lm_counts"][0] > 0
    assert 0 < info["hmm_ilabels"] <= info["context_windows"]
    assert main(["decode", str(exp / "tri1"), str(test), "--nj", "2"]) == 0
    out = exp / "tri1" / "decode_test_graph"
    report = score_files(test / "text", out / "text")
    assert report.wer.sub + report.wer.dele + report.wer.ins <= 1, report.wer
    ctm = read_ctm(out / "ctm")
    hyp = read_kaldi_map(out / "text")
    assert {u: " ".join(s.label for s in segs) for u, segs in ctm.items()} == hyp
    summary = json.loads((out / "decode_summary.json").read_text())
    assert summary["num_utts"] == 20 and summary["rtf"] > 0 and summary["nj"] == 2
    # The LDA+MLLT stage decodes through its own feature transform.
    assert main(["mkgraph", str(root / "lang"), str(root / "lm.arpa"), str(exp / "tri2"),
                 str(exp / "tri2" / "graph")]) == 0
    assert main(["decode", str(exp / "tri2"), str(test)]) == 0
    report2 = score_files(test / "text", exp / "tri2" / "decode_test_graph" / "text")
    assert report2.wer.sub + report2.wer.dele + report2.wer.ins <= 1, report2.wer
    # One job gives the same output; with --nbest the 1-best is unchanged and the n-best file
    # (all jobs merged) starts with it, scores descending.
    assert main(["decode", str(exp / "tri1"), str(test), "--out", str(root / "dec1")]) == 0
    assert (root / "dec1" / "text").read_text() == (out / "text").read_text()
    # The batched search (default --batch-size 16) and one utterance at a time: same output.
    assert summary["batch_size"] == 16 and summary["word_ins_penalty"] == 0.0
    assert main(["decode", str(exp / "tri1"), str(test), "--batch-size", "1",
                 "--out", str(root / "dec_b1")]) == 0
    for name in ("text", "ctm"):
        assert (root / "dec_b1" / name).read_text() == (out / name).read_text()
    assert json.loads((root / "dec_b1" / "decode_summary.json").read_text())["batch_size"] == 1
    assert main(["decode", str(exp / "tri1"), str(test), "--nj", "2", "--nbest", "3",
                 "--out", str(root / "dec3")]) == 0
    assert (root / "dec3" / "text").read_text() == (out / "text").read_text()
    nb = read_nbest(root / "dec3" / "nbest")
    assert set(nb) == set(hyp)
    for utt, entries in nb.items():
        assert entries[0][0] == hyp[utt] and 1 <= len(entries) <= 3
        assert [sc for _, sc in entries] == sorted((sc for _, sc in entries), reverse=True)


def test_long_utterances_get_their_loglikes_in_blocks(system, tmp_path, monkeypatch):
    from asrkit.decode import gmm

    root, exp, test = system["root"], system["exp"], system["test"]
    graph = exp / "tri1" / "graph"
    if not (graph / "HCLG.fst").is_file():
        assert main(["mkgraph", str(root / "lang"), str(root / "lm.arpa"), str(exp / "tri1"),
                     str(graph)]) == 0
    assert main(["decode", str(exp / "tri1"), str(test), "--out", str(tmp_path / "a")]) == 0
    calls = []
    loglik = gmm.AcousticModel.loglik

    def spy(self, x):
        calls.append(x.shape[0])
        return loglik(self, x)

    # every utterance (50-110 frames) counts as long: GMM scores 16 frames at a time
    monkeypatch.setattr(gmm, "WHOLE_LOGLIK_FRAMES", 10)
    monkeypatch.setattr(gmm, "LOGLIK_BLOCK_FRAMES", 16)
    monkeypatch.setattr(gmm.AcousticModel, "loglik", spy)
    assert main(["decode", str(exp / "tri1"), str(test), "--out", str(tmp_path / "b")]) == 0
    assert calls and max(calls) <= 16
    for name in ("text", "ctm"):
        assert (tmp_path / "b" / name).read_text() == (tmp_path / "a" / name).read_text()
    a, b = (json.loads((tmp_path / d / "decode_summary.json").read_text()) for d in "ab")
    assert b["avg_am_cost_per_frame"] == pytest.approx(a["avg_am_cost_per_frame"], rel=1e-6)


def test_align_held_out_data_dir_matches_true_word_boundaries(system):
    root, exp = system["root"], system["exp"]
    out = root / "ali_test"
    assert main(["align", str(exp / "tri1"), str(root / "lang"), str(system["test"]),
                 str(out)]) == 0
    errs = _boundary_errors(read_ctm(out / "word.ctm"), system["test_truth"])
    assert sum(e <= 2 for e in errs) / len(errs) > 0.9
    pdf = read_kaldi_map(out / "pdf_ali.txt")
    frames = read_kaldi_map(system["test"] / "utt2num_frames")
    assert {u: len(v.split()) for u, v in pdf.items()} == {u: int(n) for u, n in frames.items()}


def test_decode_and_train_report_missing_inputs(system, tmp_path, capsys):
    exp, test = system["exp"], system["test"]
    assert main(["decode", str(exp / "mono"), str(test), "--graph", str(tmp_path)]) == 2
    assert "asrkit mkgraph" in capsys.readouterr().err
    assert main(["train", "model=hmm_gmm", f"data.train={system['train']}",
                 f"exp_dir={tmp_path / 'x'}"]) == 2
    assert "data.lang" in capsys.readouterr().err
    assert main(["train", "model=hmm_gmm", f"data.train={system['train']}",
                 f"data.lang={system['root'] / 'lang'}", f"exp_dir={tmp_path / 'y'}",
                 "+model.stages.mono.bogus=1"]) == 2
    assert "unknown options ['bogus']" in capsys.readouterr().err
    # a SAT stage needs LDA+MLLT (or SAT) features before it: refused before any training
    assert main(["train", "model=hmm_gmm", f"data.train={system['train']}",
                 f"data.lang={system['root'] / 'lang'}", f"exp_dir={tmp_path / 'z'}",
                 "~model.stages.tri2"]) == 2
    assert "a sat stage must follow an lda_mllt or sat stage" in capsys.readouterr().err
    assert not (tmp_path / "z" / "mono").exists()


def test_mkgraph_lists_lm_words_the_lexicon_lacks(system, tmp_path):
    root, exp = system["root"], system["exp"]
    text = tmp_path / "text"
    text.write_text("u1 AB CA\nu2 ZZZ AB\n")
    assert main(["train-lm", "ngram", str(text), str(tmp_path / "lm.arpa"), "--order", "2"]) == 0
    assert main(["mkgraph", str(root / "lang"), str(tmp_path / "lm.arpa"), str(exp / "mono"),
                 str(tmp_path / "graph")]) == 0
    info = json.loads((tmp_path / "graph" / "graph.json").read_text())
    assert "ZZZ" in info["lm_words_missing_from_lexicon"]


def test_read_lang_round_trip_and_mismatch(tmp_path):
    lang = make_lang(Lexicon([(w, p.split()) for w, p in PHONE_LEXICON.items()]))
    write_lang(lang, tmp_path / "lang")
    back = read_lang(tmp_path / "lang")
    assert back.phone_set == lang.phone_set and back.words == lang.words
    assert back.lexicon == lang.lexicon and back.lexicon_disambig == lang.lexicon_disambig
    assert back.oov_word == "<UNK>"
    flat = make_lang(Lexicon([(w, p.split()) for w, p in PHONE_LEXICON.items()]),
                     position_dependent=False)
    write_lang(flat, tmp_path / "flat")
    assert read_lang(tmp_path / "flat").phone_set == flat.phone_set
    phones = tmp_path / "lang" / "phones.txt"
    phones.write_text(phones.read_text().replace("A_B", "A_X"))
    with pytest.raises(LexiconError, match="phones.txt.*does not match"):
        read_lang(tmp_path / "lang")


def test_fmllr_feats_writes_adapted_feature_dir(system, tmp_path, capsys):
    import kaldiio
    import numpy as np

    from asrkit.data.dataset import FeatureDataset
    from asrkit.features.cmvn import read_cmvn_stats
    from asrkit.models.hmm_gmm import AcousticModel, load_features
    from asrkit.models.hmm_gmm.fmllr import apply_fmllr, read_fmllr, write_fmllr

    train, sat = system["train"], system["exp"] / "tri3"
    out = tmp_path / "fmllr"
    assert main(["fmllr-feats", str(sat), str(train), str(sat), str(out)]) == 0
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    spk_of = read_kaldi_map(train / "utt2spk")
    assert sorted(feats) == sorted(spk_of)
    assert list(read_kaldi_map(out / "feats.scp")) == sorted(spk_of)
    # each utterance: the model's own features, then its speaker's transform
    mdl = AcousticModel.load(sat / "final.mdl")
    trans = read_fmllr(sat / "trans.ark")
    utt = sorted(feats)[7]
    x = load_features(train, mdl.meta["features"], utt_ids=[utt])[utt]
    want = apply_fmllr(trans[spk_of[utt]], x).float().numpy()
    assert np.allclose(feats[utt], want, atol=1e-4)
    assert (out / "feat_dim").read_text().split() == ["20"]
    frames = {u: int(n) for u, n in read_kaldi_map(out / "utt2num_frames").items()}
    assert all(frames[u] == feats[u].shape[0] for u in feats)
    stats = read_cmvn_stats(out / "cmvn.ark")
    assert stats[0, -1] == sum(frames.values())
    assert (out / "text").read_text() == (train / "text").read_text()
    assert len(FeatureDataset(out)) == len(feats)
    # a finished dir is left as it is
    mtime = (out / "feats.ark").stat().st_mtime_ns
    assert main(["fmllr-feats", str(sat), str(train), str(sat), str(out)]) == 0
    assert (out / "feats.ark").stat().st_mtime_ns == mtime
    # a speaker without a transform is named, nothing is written
    write_fmllr(tmp_path / "part.ark", {s: w for s, w in trans.items() if s != "spk2"})
    assert main(["fmllr-feats", str(sat), str(train), str(tmp_path / "part.ark"),
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "no transform for 1 of 4 speakers" in err and "spk2" in err
    assert not (tmp_path / "bad" / "feats.scp").exists()
