import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asrkit.cli import compose_train_config, main
from asrkit.decode.run import decode_data_dir
from asrkit.exp.checkpoint import (
    average_checkpoints,
    epoch_checkpoints,
    load_checkpoint,
    select_checkpoints,
)
from asrkit.score import score_files
from asrkit.text.tokenizer import train_tokenizer
from asrkit.train.loop import train
from tests.synth import make_feature_dir

ROOT = Path(__file__).resolve().parents[1]

TINY = ["model.d_model=32", "model.nhead=2", "model.num_layers=2", "model.dim_feedforward=64",
        "model.dropout=0.0", "model.specaug=null", "optim.optimizer.lr=0.005",
        "optim.scheduler.warmup_steps=20", "trainer.log_interval=2", "trainer.num_threads=1",
        "data.max_frames=1500", "trainer.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    train_dir = make_feature_dir(root / "train", n_utts=48, seed=0)
    dev_dir = make_feature_dir(root / "dev", n_utts=12, seed=1)
    tok = train_tokenizer(train_dir / "text", root / "tok" / "char", model_type="char")
    return {"train": train_dir, "dev": dev_dir, "tok": tok, "root": root}


def overrides(synth, exp, *extra):
    return [f"exp_dir={exp}", f"data.train={synth['train']}", f"data.dev={synth['dev']}",
            f"data.tokenizer={synth['tok']}", *TINY, *extra]


def test_train_learns_writes_experiment_and_decodes(synth, tmp_path):
    exp = tmp_path / "exp"
    # keep_best_by=[]: only the last N epochs are kept, whatever the dev curves look like
    cfg = compose_train_config(overrides(synth, exp, "trainer.max_epochs=12",
                                         "trainer.keep_best_by=[]"))
    train(cfg)
    # experiment layout
    assert (exp / ".done").is_file()
    saved = (exp / "config.yaml").read_text()
    assert "d_model: 32" in saved and "vocab_size:" in saved and "input_dim: 20" in saved
    log = (exp / "train.log").read_text()
    assert "loss" in log and "dev WER" in log and "parameters" in log
    metrics = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, 13))
    # it learned: dev WER fell from the first epoch to the last, and the loss fell
    assert metrics[-1]["dev_wer"] < metrics[0]["dev_wer"]
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]
    assert [p.name for p in epoch_checkpoints(exp)] == ["epoch10.pt", "epoch11.pt", "epoch12.pt"]
    # per-epoch throughput and memory; TensorBoard events and the curves PNG
    assert all(m["frames_per_second"] > 0 and m["peak_memory_mb"] > 0 for m in metrics)
    assert "peak memory" in log
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    assert (exp / "training_curves.png").stat().st_size > 0
    # decode the dev set with checkpoint averaging, score it
    rep = decode_data_dir(exp, synth["dev"], avg=3, device="cpu")
    assert rep.text == exp / "decode_dev_ctc_greedy" / "text" and rep.num_utts == 12
    assert rep.rtf > 0
    score = score_files(synth["dev"] / "text", rep.text)
    assert score.wer.sentences == 12
    assert score.cer.rate < 30.0, score.cer.rate
    # or the best kept epoch by dev WER, as the CLI's --select best --select-by dev_wer
    best = select_checkpoints(exp, 1, select="best", metric="dev_wer")[0]
    out = tmp_path / "best"
    decode_data_dir(exp, synth["dev"], out, avg=1, select="best", metric="dev_wer",
                    device="cpu")
    assert f"from {best.name} (best by dev_wer)" in (out / "decode.log").read_text()
    assert json.loads((out / "decode_summary.json").read_text())["select"] == "best:dev_wer"
    # a finished experiment is skipped on rerun
    mtime = (exp / "checkpoints" / "last.pt").stat().st_mtime
    train(cfg)
    assert (exp / "checkpoints" / "last.pt").stat().st_mtime == mtime


def test_average_checkpoints_is_mean(tmp_path):
    from asrkit.exp.checkpoint import save_checkpoint

    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    save_checkpoint(tmp_path / "a.pt", {"model": a})
    save_checkpoint(tmp_path / "b.pt", {"model": b})
    avg = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    torch.testing.assert_close(avg["w"], torch.tensor([2.0, 4.0]))
    assert int(avg["n"]) == 5


def test_corrupt_checkpoint_is_reported(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(p)


def test_killed_mid_epoch_resumes_to_the_same_model(synth, tmp_path):
    """SIGKILL a training process mid-epoch, rerun: the result equals an uninterrupted run."""
    epochs = "trainer.max_epochs=15"
    ref_exp = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI sets trainer.num_threads=1 for the runs below
    try:
        train(compose_train_config(overrides(synth, ref_exp, epochs,
                                             "trainer.save_every_batches=1",
                                             "data.max_frames=400")))
    finally:
        torch.set_num_threads(threads)

    exp = tmp_path / "killed"
    args = overrides(synth, exp, epochs, "trainer.save_every_batches=1", "data.max_frames=400")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "asrkit.cli", "train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = exp / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                st = load_checkpoint(last)
            except RuntimeError:
                continue
            if st["epoch"] >= 2 and st["batch_in_epoch"] >= 2:
                # Freeze the process first: a SIGKILL in the middle of a checkpoint write
                # necessarily leaves atomic_write's temp file (last.pt itself stays whole; the
                # rerun removes the temp). Kill only between writes, so the check below holds.
                proc.send_signal(signal.SIGSTOP)
                if list((exp / "checkpoints").glob(".*.tmp")):
                    proc.send_signal(signal.SIGCONT)
                    continue
                proc.send_signal(signal.SIGKILL)
                killed_at = (st["epoch"], st["batch_in_epoch"])
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None, "training finished before it could be killed mid-epoch"
    assert not (exp / ".done").exists()
    # no half-written files were left behind by the kill
    assert not list((exp / "checkpoints").glob(".*.tmp"))

    # a temp file of a write interrupted by a kill is cleaned up by the rerun
    (exp / "checkpoints" / ".last.pt.killed.tmp").write_bytes(b"half a checkpoint")

    assert main(["train", *args]) == 0
    assert (exp / ".done").is_file()
    assert "resumed from" in (exp / "train.log").read_text()
    assert not list((exp / "checkpoints").glob(".*.tmp"))
    ref = load_checkpoint(ref_exp / "checkpoints" / "epoch15.pt")["model"]
    got = load_checkpoint(exp / "checkpoints" / "epoch15.pt")["model"]
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4, msg=k)


def test_max_steps_stops_mid_epoch_resumably(synth, tmp_path):
    """trainer.max_steps ends training after that many updates, mid-epoch included; the
    saved position resumes to the same model as a run without the cap."""
    from asrkit.data.dataset import FeatureDataset, frame_batches
    from asrkit.text.tokenizer import Tokenizer

    quiet = ["data.max_frames=400", "trainer.save_every_batches=0", "trainer.plot=false",
             "trainer.tensorboard=false", "trainer.max_epochs=2"]
    ds = FeatureDataset(synth["train"], Tokenizer(synth["tok"]), max_frames=3000)
    per_epoch = len(frame_batches(ds.lengths, 400))
    cap = per_epoch + per_epoch // 2  # in the middle of epoch 2
    assert per_epoch >= 4
    exp = tmp_path / "capped"
    train(compose_train_config(overrides(synth, exp, *quiet, f"trainer.max_steps={cap}")))
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["updates"] == cap and summary["max_steps_reached"] is True
    assert summary["epochs"] == 1 and (exp / ".done").is_file()
    metrics = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]  # no record of the unfinished epoch 2
    st = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert (st["epoch"], st["batch_in_epoch"], st["step"]) == (2, cap - per_epoch, cap)
    assert "max_steps=" in (exp / "train.log").read_text()

    # lift the cap: it continues from the saved batch to the uncapped run's model
    (exp / ".done").unlink()
    train(compose_train_config(overrides(synth, exp, *quiet)))
    ref = tmp_path / "ref"
    train(compose_train_config(overrides(synth, ref, *quiet)))
    a = load_checkpoint(exp / "checkpoints" / "last.pt")
    b = load_checkpoint(ref / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 2 * per_epoch
    for k, v in b["model"].items():
        assert torch.allclose(a["model"][k], v, atol=1e-6), k
    assert json.loads((exp / "train_summary.json").read_text())["max_steps_reached"] is False


def test_dev_subset_keeps_evenly_spaced_utterances(tmp_path):
    """``data.dev_max_utts``: the per-epoch dev pass on n utterances spread over the set."""
    from asrkit.data.dataset import FeatureDataset
    from asrkit.train.loop import _thin_dataset
    from tests.synth import make_feature_dir

    d = make_feature_dir(tmp_path / "dev", n_utts=10)
    ds = FeatureDataset(d)
    ids = list(ds.ids)
    _thin_dataset(ds, 4)
    assert ds.ids == [ids[0], ids[2], ids[5], ids[7]]
    assert len(ds.lengths) == len(ds.tokens) == 4
    _thin_dataset(ds, 0)
    assert len(ds.ids) == 4


def test_raising_max_epochs_continues_a_finished_run_to_the_same_model(synth, tmp_path):
    """3 epochs, then the same experiment with trainer.max_epochs=5: it goes on from last.pt
    and ends with the weights of one uninterrupted 5-epoch run; the same caps again skip."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = tmp_path / "ref"
        train(compose_train_config(overrides(synth, ref, "trainer.max_epochs=5")))
        exp = tmp_path / "pieces"
        train(compose_train_config(overrides(synth, exp, "trainer.max_epochs=3")))
        assert json.loads((exp / "train_summary.json").read_text())["epochs"] == 3
        cfg5 = compose_train_config(overrides(synth, exp, "trainer.max_epochs=5"))
        train(cfg5)
    finally:
        torch.set_num_threads(threads)
    metrics = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    assert json.loads((exp / "train_summary.json").read_text())["epochs"] == 5
    a = load_checkpoint(ref / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(exp / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    mtime = (exp / "checkpoints" / "last.pt").stat().st_mtime
    train(cfg5)
    assert (exp / "checkpoints" / "last.pt").stat().st_mtime == mtime


def test_finished_run_is_not_continued_after_early_stop_or_at_its_caps(tmp_path):
    from omegaconf import OmegaConf

    from asrkit.train.loop import extends_finished_run

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    summary = tmp_path / "train_summary.json"
    tr = OmegaConf.create({"max_epochs": 10, "max_steps": 0})
    summary.write_text(json.dumps({"epochs": 6, "updates": 600, "stopped_early_at": None}))
    assert extends_finished_run(tmp_path, tr)
    assert not extends_finished_run(tmp_path, OmegaConf.create({"max_epochs": 6, "max_steps": 0}))
    # a step cap still in force, or already passed
    assert not extends_finished_run(tmp_path, OmegaConf.create({"max_epochs": 10, "max_steps": 600}))
    assert extends_finished_run(tmp_path, OmegaConf.create({"max_epochs": 10, "max_steps": 900}))
    summary.write_text(json.dumps({"epochs": 6, "updates": 600, "stopped_early_at": 6}))
    assert not extends_finished_run(tmp_path, tr)
    summary.write_text("{not json")
    assert not extends_finished_run(tmp_path, tr)
    summary.write_text(json.dumps({"epochs": 6, "updates": 600, "stopped_early_at": None}))
    (tmp_path / "checkpoints" / "last.pt").unlink()
    assert not extends_finished_run(tmp_path, tr)
