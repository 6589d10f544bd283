"""Integration: the AN4 recipe end to end on real speech (needs AN4_DIR; skipped otherwise).

Runs every stage of recipes/an4/run.sh with a tiny model trained for one epoch on the short
utterances of AN4 train, then checks the hand-offs and the WER table. It measures nothing
about accuracy (the README's results come from the full config); it proves the pipeline runs
on real audio and that a rerun skips completed stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asrkit.data.datadir import read_kaldi_map, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
AN4 = os.environ.get("AN4_DIR")

needs_an4 = pytest.mark.skipif(not AN4, reason="set AN4_DIR to the AN4 corpus root")

TINY = ["model.d_model=32", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=64",
        "trainer.max_epochs=1", "data.max_utt_frames=250", "trainer.num_threads=2"]


def run_recipe(work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    return subprocess.run(
        ["bash", str(ROOT / "recipes" / "an4" / "run.sh"), "--an4-dir", AN4, "--work-dir",
         str(work), "--tag", "tiny", *extra, "--", *TINY],
        env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.an4
@needs_an4
def test_an4_recipe_end_to_end(tmp_path):
    res = run_recipe(tmp_path, "--ctc-lms", "kn3", "--lm-weights", "0.3 0.5")
    assert res.returncode == 0, res.stderr[-3000:]
    for part, n in (("train", None), ("dev", None), ("test", 130)):
        validate_data_dir(tmp_path / "data" / part, check_audio=False)
        feats = read_kaldi_map(tmp_path / "dump" / "fbank" / part / "feats.scp")
        if n:
            assert len(feats) == n
    exp = tmp_path / "exp" / "tiny"
    assert (exp / "config.yaml").is_file() and (exp / "checkpoints" / "epoch1.pt").is_file()
    hyp = read_kaldi_map(exp / "decode_test_ctc_greedy" / "text", allow_empty_value=True)
    assert len(hyp) == 130
    score = (exp / "decode_test_ctc_greedy" / "score.txt").read_text()
    assert "|test_ctc_greedy|130|" in score
    assert "|test_ctc_greedy|130|" in res.stdout
    assert "test_ctc_greedy" in (exp / "RESULTS.md").read_text()
    # --ctc-lms: TLG graph of the KN trigram, LM weight chosen on dev, test decoded once
    assert (exp / "graph_tlg_kn3" / "TLG.fst").is_file()
    tlg = exp / "decode_test_tlg_kn3"
    assert len(read_kaldi_map(tlg / "text", allow_empty_value=True)) == 130
    weight = (tlg / "lm-weight").read_text().strip()
    assert weight in ("0.3", "0.5")
    assert (tlg / "dev_best").read_text().strip() == f"decode_dev_tlg_kn3_lm-weight{weight}"
    assert "tlg_kn3: dev WER" in res.stdout

    # rerunning skips every completed stage (no retraining, no re-decoding)
    mtimes = {p: p.stat().st_mtime for p in [exp / "checkpoints" / "last.pt",
                                              exp / "decode_test_ctc_greedy" / "text",
                                              tlg / "text"]}
    res2 = run_recipe(tmp_path, "--ctc-lms", "kn3", "--lm-weights", "0.3 0.5")
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())


def test_recipe_without_corpus_explains(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AN4_DIR"}
    res = subprocess.run(["bash", str(ROOT / "recipes" / "an4" / "run.sh"), "--work-dir",
                          str(tmp_path)], env=env, capture_output=True, text=True,
                         check=False)
    assert res.returncode != 0
    assert "AN4 corpus not found" in res.stderr and "--an4-dir" in res.stderr


GMM_QUICK = ["model=hmm_gmm", "model.stages.mono.num_iters=10", "model.stages.mono.max_gauss=300",
             "model.stages.mono.max_iter_inc=6", "model.stages.mono.realign_iters=[1,2,3,4,5,7,9]",
             "model.stages.tri1.num_iters=6", "model.stages.tri1.max_iter_inc=4",
             "model.stages.tri1.num_leaves=300", "model.stages.tri1.tot_gauss=1200",
             "model.stages.tri1.realign_iters=[3]", "model.stages.tri2.num_iters=6",
             "model.stages.tri2.max_iter_inc=4", "model.stages.tri2.realign_iters=[3]",
             "model.stages.tri2.mllt_iters=[2]", "model.stages.tri3.num_iters=6",
             "model.stages.tri3.max_iter_inc=4", "model.stages.tri3.realign_iters=[3]",
             "model.stages.tri3.fmllr_iters=[2,4]", "trainer.num_threads=2"]


@pytest.mark.an4
@needs_an4
def test_an4_recipe_hmm_gmm_end_to_end(tmp_path):
    """``run.sh -- model=hmm_gmm`` on real AN4: MFCC, lang from an4.dic, KN trigram from the
    training text, mono then tri1, forced alignments of train, HCLG with both LMs, dev-tuned
    decoding of test. A short schedule, so the WER bound is loose; RESULTS.md has the full
    run."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    cmd = ["bash", str(ROOT / "recipes" / "an4" / "run.sh"), "--an4-dir", AN4, "--work-dir",
           str(tmp_path), "--tag", "gmm", "--acwt", "0.083", "--", *GMM_QUICK]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    exp = tmp_path / "exp" / "gmm"
    train_utts = read_kaldi_map(tmp_path / "data" / "train" / "text")
    for stage in ("mono", "tri1", "tri2"):
        ali = read_kaldi_map(exp / stage / "ali" / "ali.txt")
        assert len(ali) >= 0.98 * len(train_utts)
        frames = read_kaldi_map(tmp_path / "dump" / "mfcc" / "train" / "utt2num_frames")
        assert all(len(v.split()) == int(frames[u]) for u, v in ali.items())
    wers = {}
    for stage in ("mono", "tri1", "tri2", "tri3"):
        for lm in ("kn3", "an4"):
            d = exp / stage / f"decode_test_graph_{lm}"
            assert len(read_kaldi_map(d / "text", allow_empty_value=True)) == 130
            wers[stage, lm] = json.loads((d / "score.json").read_text())["wer"]["rate"]
            assert d.joinpath("ctm").stat().st_size > 0
    assert wers["tri1", "kn3"] < 20.0 and wers["tri2", "kn3"] < 20.0, wers
    assert wers["mono", "kn3"] < 25.0, wers
    # SAT (tri3): speaker-independent first pass, the test speakers' fMLLR transforms
    sat = exp / "tri3" / "decode_test_graph_kn3"
    assert wers["tri3", "kn3"] < 20.0, wers
    assert len(read_kaldi_map(sat / "si" / "text", allow_empty_value=True)) == 130
    assert (sat / "trans.ark").stat().st_size > 0
    assert "== exp/gmm/tri1 graph_kn3: dev WER" in res.stdout

    # A rerun trains and decodes no GMM again; with --hybrid tri3 it adds the hybrid DNN-HMM
    # rung: fMLLR features of every set (tri3 is SAT), a (tiny, one-epoch) TDNN on tri3's
    # alignments, decoded through tri3's KN3 graph; with --rescore-lms its n-best lists are
    # rescored with the corpus LM in place of KN3 (weight from dev).
    mdl = exp / "tri2" / "final.mdl"
    text = exp / "tri2" / "decode_test_graph_kn3" / "text"
    before = (mdl.stat().st_mtime_ns, text.stat().st_mtime_ns)
    hyb = ["--hybrid", "tri3", "--hybrid-acwt", "0.2", "--hybrid-opts",
           ("trainer.max_epochs=1 model.tdnn.hidden_dim=32 model.tdnn.layers=[[3,1],[3,1]] "
            "trainer.num_threads=2 trainer.plot=false trainer.tensorboard=false"),
           "--gmm-decode", "tri3", "--gmm-lms", "kn3", "--rescore-lms", "an4", "--nbest", "10",
           "--rescore-weights", "0.5 1.0"]
    res2 = subprocess.run(cmd[:-len(GMM_QUICK) - 1] + hyb + cmd[-len(GMM_QUICK) - 1:], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert (mdl.stat().st_mtime_ns, text.stat().st_mtime_ns) == before
    for part in ("train", "dev", "test"):
        feats = tmp_path / "dump" / "fmllr_tri3" / part
        assert read_kaldi_map(feats / "utt2num_frames") == read_kaldi_map(
            tmp_path / "dump" / "mfcc" / part / "utt2num_frames")
    hexp = tmp_path / "exp" / "gmm_hybrid_tri3"
    assert (hexp / "decode_test_graph_kn3" / "acwt").read_text().strip() == "0.2"
    hyp = read_kaldi_map(hexp / "decode_test_graph_kn3" / "text", allow_empty_value=True)
    assert len(hyp) == 130 and sum(bool(v) for v in hyp.values()) > 65
    assert "== exp/gmm_hybrid_tri3 graph_kn3: dev WER" in res2.stdout
    nbest = hexp / "decode_test_graph_kn3_nbest" / "nbest"
    assert nbest.stat().st_size > 0
    resc = hexp / "decode_test_graph_kn3_rescore_an4"
    assert (resc / "lm-weight").read_text().strip() in ("0.5", "1.0")
    rhyp = read_kaldi_map(resc / "text", allow_empty_value=True)
    assert set(rhyp) == set(hyp)
    # each rescored 1-best is one of its utterance's n-best hypotheses (the one-epoch TDNN
    # is too weak for a WER bound), and the recipe scored it against all 130 references
    cands: dict[str, set[str]] = {}
    for line in nbest.read_text().splitlines():
        key, _, *words = line.split()
        cands.setdefault(key.rsplit("-", 1)[0], set()).add(" ".join(words))
    assert all(rhyp[u] in cands[u] for u in rhyp if u in cands)
    assert len(cands) >= 0.9 * len(rhyp)
    assert json.loads((resc / "score.json").read_text())["wer"]["sentences"] == 130
