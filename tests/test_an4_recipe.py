"""Integration: the AN4 recipe end to end on real speech (needs AN4_DIR; skipped otherwise).

Runs every stage of recipes/an4/run.sh with a tiny model trained for one epoch on the short
utterances of AN4 train, then checks the hand-offs and the WER table. It measures nothing
about accuracy (the README's results come from the full config); it proves the pipeline runs
on real audio and that a rerun skips completed stages.
"""

from __future__ import annotations

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
    res = run_recipe(tmp_path)
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

    # rerunning skips every completed stage (no retraining, no re-decoding)
    mtimes = {p: p.stat().st_mtime for p in [exp / "checkpoints" / "last.pt",
                                              exp / "decode_test_ctc_greedy" / "text"]}
    res2 = run_recipe(tmp_path)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())


def test_recipe_without_corpus_explains(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AN4_DIR"}
    res = subprocess.run(["bash", str(ROOT / "recipes" / "an4" / "run.sh"), "--work-dir",
                          str(tmp_path)], env=env, capture_output=True, text=True,
                         check=False)
    assert res.returncode != 0
    assert "AN4 corpus not found" in res.stderr and "--an4-dir" in res.stderr
