"""Hybrid DNN-HMM (``model=hybrid``, asrkit/models/hybrid.py) end to end on synthetic "speech"
(tests/synth.py): a monophone GMM gives pdf alignments -> ``asrkit train model=hybrid`` (frame
cross-entropy, priors from the alignment counts, resume) -> ``asrkit decode`` through the GMM's
HCLG -> ``asrkit align`` with the network; plus priors, pseudo-likelihoods, encoders, errors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from synth import PHONE_LEXICON, make_phone_feature_dir

from asrkit.cli import main
from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.gmm import decode_gmm_data_dir
from asrkit.exp.checkpoint import average_checkpoints, load_checkpoint, select_checkpoints
from asrkit.features.cmvn import compute_cmvn_stats, write_cmvn_stats
from asrkit.models.hmm_gmm import AcousticModel, read_int_vectors, write_int_vectors
from asrkit.models.hybrid import (
    UNSEEN_LOG_PRIOR,
    HybridModel,
    HybridScorer,
    load_frame_targets,
    pdf_counts,
)
from asrkit.score import score_files

_STAGES = OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "hmm_gmm.yaml").stages
GMM_OPTS = ["model.stages.mono.num_iters=10", "model.stages.mono.max_gauss=40",
            "model.stages.mono.max_iter_inc=6", "model.stages.mono.realign_iters=[1,2,3,4,5,7]",
            "model.device=cpu", *(f"~model.stages.{k}" for k in _STAGES if k != "mono")]


def _hybrid_args(s: dict, exp, *extra: str) -> list[str]:
    return ["train", "model=hybrid", f"data.train={s['train']}", f"data.dev={s['test']}",
            f"data.alignment={s['gmm']}", f"data.dev_alignment={s['ali_test']}",
            f"exp_dir={exp}", "model.tdnn.hidden_dim=48",
            "model.tdnn.layers=[[3,1],[3,1],[3,2]]", "model.specaug.freq_mask_width=2",
            "model.specaug.time_mask_width=4", "trainer.device=cpu", "trainer.num_threads=1",
            "trainer.tensorboard=false", "trainer.plot=false", "data.max_frames=1500",
            "optim.scheduler.warmup_steps=20", "optim.optimizer.lr=0.005", *extra]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    train, _ = make_phone_feature_dir(root / "train", 60, seed=0)
    test, _ = make_phone_feature_dir(root / "test", 20, seed=1)
    feats = HybridScorer.load_features(train)  # global CMVN stats for the network
    write_cmvn_stats(train / "cmvn.ark", compute_cmvn_stats(x.numpy() for x in feats.values()))
    lex = root / "lexicon.txt"
    lex.write_text("".join(f"{w} {p}\n" for w, p in PHONE_LEXICON.items()))
    assert main(["lang", str(lex), str(root / "lang"), "--text", str(train / "text")]) == 0
    assert main(["train-lm", "ngram", str(train / "text"), str(root / "lm.arpa"),
                 "--order", "2"]) == 0
    gexp = root / "gmm"
    assert main(["train", "model=hmm_gmm", f"data.train={train}",
                 f"data.lang={root / 'lang'}", f"exp_dir={gexp}", *GMM_OPTS]) == 0
    gmm = gexp / "mono"
    assert main(["mkgraph", str(root / "lang"), str(root / "lm.arpa"), str(gmm),
                 str(gmm / "graph")]) == 0
    assert main(["align", str(gmm), str(root / "lang"), str(test), str(root / "ali_test"),
                 "--device", "cpu"]) == 0
    s = {"root": root, "train": train, "test": test, "gmm": gmm, "ali_test": root / "ali_test"}
    # trained in two goes: 6 updates (a mid-epoch stop), then resumed to 8 epochs
    exp = root / "exp"
    assert main(_hybrid_args(s, exp, "trainer.max_epochs=8", "trainer.max_steps=6")) == 0
    (exp / ".done").unlink()
    assert main(_hybrid_args(s, exp, "trainer.max_epochs=8")) == 0
    s["exp"] = exp
    return s


def test_training_writes_a_self_contained_experiment_and_resumes(system):
    exp = system["exp"]
    assert (exp / ".done").is_file() and (exp / "final.mdl").is_file()
    assert (exp / "checkpoints" / "epoch8.pt").is_file()
    assert "resumed from" in (exp / "train.log").read_text()
    metrics = [line for line in (exp / "metrics.jsonl").read_text().splitlines() if line]
    assert len(metrics) == 8  # no epoch duplicated or lost by the resume
    recs = [json.loads(m) for m in metrics]
    # frame cross-entropy falls and the dev frame error rate ("dev_wer" slot) is low
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    assert recs[-1]["dev_wer"] < 30.0, recs[-1]


def test_priors_are_the_alignment_pdf_counts(system):
    gmm = AcousticModel.load(system["gmm"] / "final.mdl")
    alis = read_int_vectors(system["gmm"] / "ali" / "pdf_ali.txt")
    counts = torch.zeros(gmm.num_pdfs, dtype=torch.int64)
    for a in alis.values():
        for p in a.tolist():
            counts[p] += 1
    assert torch.equal(pdf_counts(alis, gmm.num_pdfs), counts)
    text = (system["exp"] / "pdf_counts.txt").read_text().split()
    assert text[0] == "[" and text[-1] == "]" and [int(v) for v in text[1:-1]] == counts.tolist()
    st = load_checkpoint(system["exp"] / "checkpoints" / "epoch8.pt")["model"]
    expected = (counts.double() / counts.sum()).log().float()
    expected[counts == 0] = UNSEEN_LOG_PRIOR
    assert torch.allclose(st["log_priors"], expected)


def test_decode_through_the_gmm_graph(system):
    exp, test = system["exp"], system["test"]
    graph = system["gmm"] / "graph"
    assert main(["decode", str(exp), str(test), "--graph", str(graph), "--acwt", "0.3"]) == 0
    out = exp / f"decode_test_{graph.name}"
    report = score_files(test / "text", out / "text")
    assert report.wer.rate <= 10.0, report.wer
    assert (out / "ctm").is_file() and (out / "decode_summary.json").is_file()


def test_decode_averages_the_chosen_checkpoints(system, tmp_path):
    exp, test, graph = system["exp"], system["test"], system["gmm"] / "graph"
    out = tmp_path / "avg2"
    assert main(["decode", str(exp), str(test), "--graph", str(graph), "--acwt", "0.3",
                 "--avg", "2", "--select", "last", "--out", str(out)]) == 0
    summary = json.loads((out / "decode_summary.json").read_text())
    assert summary["checkpoints"] == {"avg": "2", "select": "last", "metric": "dev_loss"}
    # the network scored with is the mean of the two latest epochs' weights
    used = select_checkpoints(exp, 2, select="last")
    assert [p.name for p in used] == ["epoch7.pt", "epoch8.pt"]
    scorer = HybridScorer.load(exp, avg=2, select="last")
    expected = average_checkpoints(used)
    for k, v in scorer.model.state_dict().items():
        assert torch.allclose(v, expected[k].to(v.dtype)), k
    one = HybridScorer.load(exp, checkpoint=exp / "checkpoints" / "epoch7.pt")
    w7 = load_checkpoint(exp / "checkpoints" / "epoch7.pt")["model"]
    assert all(torch.equal(v, w7[k]) for k, v in one.model.state_dict().items())
    # the GMM has no checkpoints: the options are refused by name, before any work
    with pytest.raises(ValueError, match="HMM-GMM model: avg"):
        decode_gmm_data_dir(system["gmm"], graph, test, tmp_path / "x", avg=2)
    assert not (tmp_path / "x").exists()


def test_align_with_the_network_matches_the_gmm_alignment(system):
    root, exp, test = system["root"], system["exp"], system["test"]
    out = root / "ali_hybrid"
    assert main(["align", str(exp), str(root / "lang"), str(test), str(out),
                 "--device", "cpu"]) == 0
    mine = read_int_vectors(out / "pdf_ali.txt")
    gmm = read_int_vectors(system["ali_test"] / "pdf_ali.txt")
    frames = read_kaldi_map(test / "utt2num_frames")
    assert set(mine) == set(frames)
    agree = total = 0
    for u, a in mine.items():
        assert a.numel() == int(frames[u])
        agree += int((a == gmm[u]).sum())
        total += a.numel()
    assert agree / total > 0.8
    # the alignment dir carries the GMM, so it can train the next hybrid model (realignment)
    assert (out / "final.mdl").is_file()
    targets, skipped = load_frame_targets(out, test, AcousticModel.load(out / "final.mdl")
                                          .num_pdfs)
    assert len(targets) == len(frames) and not skipped


def test_pseudo_loglik_is_log_posterior_minus_log_prior(system):
    scorer = HybridScorer.load(system["exp"])
    feats = scorer.load_features(system["test"])
    u = min(feats)
    x = feats[u]
    lp = scorer.model.log_posteriors(x[None], torch.tensor([x.shape[0]]))[0]
    ll = scorer.loglik(x)
    assert ll.shape == (x.shape[0], scorer.num_pdfs)
    seen = scorer.model.log_priors < UNSEEN_LOG_PRIOR / 2
    assert torch.allclose(ll[:, seen], (lp - scorer.model.log_priors)[:, seen], atol=1e-5)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(x.shape[0]), atol=1e-4)


def test_mismatched_or_missing_alignments_are_named(system, tmp_path, caplog, capsys):
    num_pdfs = AcousticModel.load(system["gmm"] / "final.mdl").num_pdfs
    alis = read_int_vectors(system["gmm"] / "ali" / "pdf_ali.txt")
    bad = sorted(alis)[3]
    alis[bad] = alis[bad][:-2]
    ali_dir = tmp_path / "ali"
    write_int_vectors(ali_dir / "pdf_ali.txt", alis)
    (ali_dir / "final.mdl").write_bytes((system["gmm"] / "final.mdl").read_bytes())
    with caplog.at_level(logging.WARNING, logger="asrkit.models.hybrid"):
        targets, skipped = load_frame_targets(ali_dir, system["train"], num_pdfs)
    assert list(skipped) == [bad] and bad not in targets
    assert "aligned frames" in skipped[bad] and bad in caplog.text
    with pytest.raises(FileNotFoundError, match="no pdf alignments at"):
        load_frame_targets(tmp_path / "nowhere", system["train"], num_pdfs)
    with pytest.raises(ValueError, match="outside"):
        load_frame_targets(ali_dir, system["train"], 2)
    # training without data.alignment says what to set
    assert main(["train", "model=hybrid", f"data.train={system['train']}",
                 f"exp_dir={tmp_path / 'x'}", "trainer.device=cpu"]) == 2
    assert "needs data.alignment" in capsys.readouterr().err


@pytest.mark.parametrize("encoder,conf", [
    ("lstm", {"hidden_size": 16, "num_layers": 1, "subsampling": "none"}),
    ("conformer", {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1,
                   "depthwise_conv_kernel_size": 3}),
    ("transformer", {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32}),
])
def test_other_encoders_give_one_output_per_frame(encoder, conf):
    torch.manual_seed(0)
    m = HybridModel(13, 7, encoder=encoder, encoder_conf=conf, specaug=None)
    lens = torch.tensor([30, 23])
    x = torch.randn(2, 30, 13)
    targets = torch.randint(0, 7, (2, 30))
    targets[1, 23:] = -1
    out = m(x, lens, targets, lens)
    assert math.isfinite(out["loss"].item()) and out["frames"] == 53
    out["loss"].backward()
    m.eval()
    assert m.log_posteriors(x, lens).shape == (2, 30, 7)
    assert m.pseudo_loglik(x[0]).shape == (30, 7)


def test_tdnn_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    m = HybridModel(13, 5, specaug=None, tdnn={"hidden_dim": 8}).eval()
    x = torch.randn(1, 20, 13)
    alone = m.log_posteriors(x, torch.tensor([20]))
    padded = torch.cat([x, torch.randn(1, 7, 13)], dim=1)
    batched = m.log_posteriors(padded, torch.tensor([20]))[:, :20]
    assert torch.allclose(alone, batched, atol=1e-5)
    assert m.encoder.context == 2 + 1 + 1 + 3 + 3 + 3
    with pytest.raises(ValueError, match="odd"):
        HybridModel(13, 5, tdnn={"layers": [[2, 1]]})
    with pytest.raises(ValueError, match="encoder"):
        HybridModel(13, 5, encoder="rnnt")
