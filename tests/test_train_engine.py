"""Training engine: gradient accumulation, early stopping, best-N checkpoints, TensorBoard,
training-curve PNG, per-epoch memory/throughput logging.

Everything runs on tiny synthetic data (one thread) in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asrkit.cli import compose_train_config
from asrkit.exp.checkpoint import (
    average_checkpoints,
    epoch_checkpoints,
    load_checkpoint,
    load_model,
    rank_epochs,
    read_metrics,
    select_checkpoints,
)
from asrkit.text.tokenizer import train_tokenizer
from asrkit.train.loop import EarlyStopping, train
from tests.synth import make_feature_dir

torch.set_num_threads(1)

TINY = ["model.d_model=16", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=32",
        "model.dropout=0.0", "model.specaug=null", "trainer.num_threads=1",
        "trainer.log_interval=1", "trainer.save_every_batches=0"]
# plain SGD, no schedule: one update is w - lr * grad, so equal gradients give equal weights
SGD = ["optim.optimizer._target_=torch.optim.SGD", "~optim.optimizer.betas",
       "~optim.optimizer.eps", "optim.optimizer.weight_decay=0.0", "optim.optimizer.lr=0.1",
       "~optim.scheduler", "trainer.grad_clip=1.0e9"]
FIXED_LETTERS = 3
FIXED_FRAMES = 4 + FIXED_LETTERS * (12 + 4)  # frames of every utterance of make_fixed_dir


def make_fixed_dir(path: Path, n_utts: int, seed: int = 0, feat_dim: int = 20) -> Path:
    """Like ``tests.synth.make_feature_dir`` but every utterance has ``FIXED_FRAMES`` frames
    (three letters), so batches of any composition need no padding: per-utterance losses and
    gradients then do not depend on which utterances share a batch, which makes "the same
    update from differently cut batches" exact up to float summation order."""
    return make_feature_dir(path, n_utts, feat_dim=feat_dim, seed=seed,
                            n_letters=FIXED_LETTERS, n_speakers=2)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed")
    train_dir = make_fixed_dir(root / "train", n_utts=4, seed=0)
    tok = train_tokenizer(train_dir / "text", root / "tok" / "char", model_type="char")
    return {"train": train_dir, "tok": tok}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    train_dir = make_feature_dir(root / "train", n_utts=16, seed=0)
    dev_dir = make_feature_dir(root / "dev", n_utts=6, seed=1)
    tok = train_tokenizer(train_dir / "text", root / "tok" / "char", model_type="char")
    return {"train": train_dir, "dev": dev_dir, "tok": tok}


def _weights(exp: Path, epoch: int = 1) -> dict[str, torch.Tensor]:
    return load_checkpoint(exp / "checkpoints" / f"epoch{epoch}.pt")["model"]


def test_accum_grad_2_of_half_batches_equals_one_full_batch(fixed, tmp_path):
    """accum_grad=2 over two batches of 2 utterances == accum_grad=1 over one batch of 4.

    The loss is summed CTC / B, so the full batch's gradient is (1/4) Σ g_i; accumulation adds
    (1/2)·(1/2)(g1+g2) + (1/2)·(1/2)(g3+g4), the same sum. Exact by construction: equal batch
    sizes, equal utterance lengths (no padding), SGD without momentum, no dropout/SpecAugment,
    no gradient clipping in effect, one update per run.
    """
    base = [f"data.train={fixed['train']}", "data.dev=null", f"data.tokenizer={fixed['tok']}",
            "trainer.max_epochs=1", "trainer.tensorboard=false", "trainer.plot=false",
            "trainer.keep_best_by=[]", *TINY, *SGD]
    full, accum, two_steps = tmp_path / "full", tmp_path / "accum", tmp_path / "two"
    train(compose_train_config([f"exp_dir={full}", *base,
                                f"data.max_frames={4 * FIXED_FRAMES}", "trainer.accum_grad=1"]))
    train(compose_train_config([f"exp_dir={accum}", *base,
                                f"data.max_frames={2 * FIXED_FRAMES}", "trainer.accum_grad=2"]))
    train(compose_train_config([f"exp_dir={two_steps}", *base,
                                f"data.max_frames={2 * FIXED_FRAMES}", "trainer.accum_grad=1"]))
    assert [r["step"] for r in read_metrics(full).values()] == [1]
    assert [r["step"] for r in read_metrics(accum).values()] == [1]
    assert [r["step"] for r in read_metrics(two_steps).values()] == [2]
    a, b, c = _weights(full), _weights(accum), _weights(two_steps)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    # the comparison is sensitive: two separate updates give other weights
    assert any(not torch.allclose(c[k], a[k], rtol=1e-4, atol=1e-5) for k in a
               if a[k].is_floating_point())


def test_early_stopping_rule():
    h = {1: {"dev_wer": 50.0}, 2: {"dev_wer": 40.0}, 3: {"dev_wer": 39.5}, 4: {"dev_wer": 41.0}}
    assert EarlyStopping("dev_wer", patience=2).status(h) == (3, 1)
    assert not EarlyStopping("dev_wer", patience=2).should_stop(h)
    # 39.5 is not better than 40 by more than min_delta=1: epochs 3 and 4 do not count
    assert EarlyStopping("dev_wer", patience=2, min_delta=1.0).status(h) == (2, 2)
    assert EarlyStopping("dev_wer", patience=2, min_delta=1.0).should_stop(h)
    assert not EarlyStopping(None).should_stop(h)
    assert EarlyStopping("dev_loss", patience=1).status({1: {"dev_loss": float("nan")}}) == \
        (None, 1)
    with pytest.raises(ValueError, match="metric"):
        EarlyStopping("train_loss")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("dev_loss", patience=0)


def test_observability_and_best_checkpoint_retention(synth, tmp_path):
    """TensorBoard events, PNG, memory/throughput per epoch, keep last N + best N."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from asrkit.train.plot import main as plot_main

    exp = tmp_path / "exp"
    train(compose_train_config([
        f"exp_dir={exp}", f"data.train={synth['train']}", f"data.dev={synth['dev']}",
        f"data.tokenizer={synth['tok']}", "data.max_frames=600", "trainer.max_epochs=3",
        "trainer.keep_checkpoints=1", "trainer.keep_best_by=[dev_loss]",
        "optim.optimizer.lr=0.005", "optim.scheduler.warmup_steps=5", *TINY]))
    records = read_metrics(exp)
    assert sorted(records) == [1, 2, 3]
    for r in records.values():
        assert r["peak_memory_kind"] == "cpu_max_rss" and r["peak_memory_mb"] > 10
        assert r["frames_per_second"] > 0 and r["num_params"] > 0 and r["world_size"] == 1
        assert {"dev_loss", "dev_wer", "lr", "train_loss"} <= set(r)
    log = (exp / "train.log").read_text()
    assert "peak memory" in log and "frames/s" in log and "parameters" in log

    # retention: the last epoch and the best epoch by dev loss, nothing else
    best = rank_epochs(records, "dev_loss")[0]
    assert {int(p.stem[5:]) for p in epoch_checkpoints(exp)} == {3, best}
    assert load_checkpoint(exp / "checkpoints" / f"epoch{best}.pt")["metrics"]["dev_loss"] == \
        records[best]["dev_loss"]

    # TensorBoard: per-update train curves and per-epoch scalars
    acc = EventAccumulator(str(exp / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/train_loss", "epoch/dev_loss", "epoch/dev_wer",
            "epoch/lr", "epoch/frames_per_second", "epoch/peak_memory_mb"} <= tags
    assert [e.step for e in acc.Scalars("epoch/dev_wer")] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("epoch/dev_wer")] == pytest.approx(
        [records[e]["dev_wer"] for e in (1, 2, 3)])
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(steps) and steps[-1] == records[3]["step"]

    # the PNG is there, and the module entry point redraws it elsewhere
    png = exp / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_main([str(exp), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert plot_main([str(tmp_path / "nothing")]) == 2


def test_early_stop_run_best_averaging_and_resume(synth, tmp_path):
    exp = tmp_path / "exp"
    args = [f"exp_dir={exp}", f"data.train={synth['train']}", f"data.dev={synth['dev']}",
            f"data.tokenizer={synth['tok']}", "data.max_frames=600", "trainer.max_epochs=10",
            "trainer.keep_checkpoints=0", "trainer.early_stop.metric=dev_loss",
            "trainer.early_stop.patience=2", "trainer.early_stop.min_delta=1.0e9",
            "trainer.tensorboard=false", "trainer.plot=false", *TINY]
    train(compose_train_config(args))
    # epoch 1 improves on +inf; 2 and 3 cannot improve by 1e9 -> stop after epoch 3
    assert sorted(read_metrics(exp)) == [1, 2, 3]
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["stopped_early_at"] == 3 and summary["epochs"] == 3
    assert "early stopping after epoch 3" in (exp / "train.log").read_text()
    # a rerun of an early-stopped experiment whose .done got lost trains no further epoch
    (exp / ".done").unlink()
    train(compose_train_config(args))
    assert sorted(read_metrics(exp)) == [1, 2, 3] and (exp / ".done").is_file()

    # best-N averaging: give the epochs known dev WERs
    real = read_metrics(exp)
    fake = {1: 30.0, 2: 10.0, 3: 20.0}
    with open(exp / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({**real[e], "dev_wer": fake[e]}) + "\n" for e in (1, 2, 3))
    ck = exp / "checkpoints"
    assert select_checkpoints(exp, 2, select="best", metric="dev_wer") == \
        [ck / "epoch2.pt", ck / "epoch3.pt"]
    assert select_checkpoints(exp, 2) == [ck / "epoch2.pt", ck / "epoch3.pt"]
    assert select_checkpoints(exp, 1, select="best", metric="dev_wer") == [ck / "epoch2.pt"]
    assert select_checkpoints(exp, 1) == [ck / "epoch3.pt"]
    model, _ = load_model(exp, avg=2, select="best", metric="dev_wer")
    want = average_checkpoints([ck / "epoch2.pt", ck / "epoch3.pt"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k], msg=k)
    model, _ = load_model(exp, avg=1, select="best", metric="dev_wer", device="cpu")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, _weights(exp, 2)[k], msg=k)
    # the old keywords keep working: last epoch by default, or an explicit checkpoint
    model, info = load_model(exp, checkpoint=ck / "epoch1.pt", avg=1, device="cpu")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, _weights(exp, 1)[k], msg=k)
    assert "model_dims" in info
    # without metrics.jsonl the checkpoints' own metrics decide
    (exp / "metrics.jsonl").unlink()
    by_loss = rank_epochs({e: real[e] for e in real}, "dev_loss")
    assert select_checkpoints(exp, 1, select="best", metric="dev_loss") == \
        [ck / f"epoch{by_loss[0]}.pt"]
    with pytest.raises(ValueError, match="select"):
        select_checkpoints(exp, 1, select="worst")
    with pytest.raises(ValueError, match=">= 1"):
        select_checkpoints(exp, 0)


def test_early_stop_needs_dev(synth, tmp_path):
    cfg = compose_train_config([f"exp_dir={tmp_path / 'e'}", f"data.train={synth['train']}",
                                f"data.tokenizer={synth['tok']}",
                                "trainer.early_stop.metric=dev_wer", *TINY])
    with pytest.raises(ValueError, match="data.dev"):
        train(cfg)
