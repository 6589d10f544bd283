"""Data-parallel training: process-group helpers, batch sharding, DDP == single-process on the
union of the ranks' batches, and an end-to-end ``torchrun --nproc_per_node=2`` run.

All on CPU with the Gloo backend, one thread per process, tiny models.

Why the comparisons are exact: the model's loss is summed CTC / B, and DDP averages the
ranks' gradients, so W ranks with batches of b utterances each produce
(1/W) Σ_r (1/b) Σ_{i∈r} g_i = (1/(W·b)) Σ_i g_i, the gradient of one batch of all W·b
utterances. The tests give every rank the same batch size and every utterance the same
length (no padding, so an utterance's gradient does not depend on its batch-mates), use SGD
without momentum, no dropout or SpecAugment, and no gradient clipping in effect; what is left
is float summation order, hence ``assert_close`` at float32 tolerances.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from asrkit.cli import compose_train_config
from asrkit.data.dataset import frame_batches, shard_batches
from asrkit.exp.checkpoint import epoch_checkpoints, load_checkpoint, read_metrics
from asrkit.models.transformer import TransformerCTC
from asrkit.train.ddp import DistInfo, distributed, env_info, wrap_model
from asrkit.train.loop import train
from tests.test_train_engine import FIXED_FRAMES, SGD, TINY, make_fixed_dir

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
T, F, U, V = 40, 20, 3, 8


# ----------------------------------------------------------------------------- sharding


def test_shard_batches_equal_counts_drop_and_pad():
    batches = [[i] for i in range(7)]
    drop = [shard_batches(batches, r, 3) for r in range(3)]
    assert drop == [[[0], [3]], [[1], [4]], [[2], [5]]]  # batch 6 dropped
    pad = [shard_batches(batches, r, 3, remainder="pad") for r in range(3)]
    assert pad == [[[0], [3], [6]], [[1], [4], [0]], [[2], [5], [1]]]
    assert shard_batches(batches, 0, 1) == batches
    assert shard_batches(batches, 0, 1, skip=5) == batches[5:]
    with pytest.raises(ValueError, match="cannot be shared"):
        shard_batches([[0]], 0, 2)
    with pytest.raises(ValueError, match="rank"):
        shard_batches(batches, 3, 3)


def test_shard_batches_resume_skips_what_all_ranks_trained():
    """A resume after b local batches (skip = b × world) continues each rank's own list."""
    order = frame_batches([50 + (i * 7) % 30 for i in range(40)], 200, seed=3, epoch=2)
    for world in (1, 2, 3):
        for remainder in ("drop", "pad"):
            for r in range(world):
                mine = shard_batches(order, r, world, remainder=remainder)
                for b in range(len(mine) + 1):
                    assert shard_batches(order, r, world, remainder=remainder,
                                         skip=b * world) == mine[b:]
    # after a world-size change the remaining batches are still shared out equally
    rest = [shard_batches(order, r, 3, skip=4) for r in range(3)]
    assert len({len(x) for x in rest}) == 1


def test_env_info(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_info() == DistInfo(0, 1, 0, None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        env_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="not an integer"):
        env_info()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_info() == DistInfo(3, 4, 1, None)
    assert not env_info().enabled  # nothing initialised yet


# ----------------------------------------------------------------------------- one update


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model() -> TransformerCTC:
    torch.manual_seed(0)
    return TransformerCTC(F, V, d_model=16, nhead=2, num_layers=1, dim_feedforward=32,
                          dropout=0.0, specaug=None)


def _data() -> dict[str, torch.Tensor]:
    """Four utterances of equal length T (no padding) with U targets each."""
    g = torch.Generator().manual_seed(1)
    return {"feats": torch.randn(4, T, F, generator=g), "feat_lens": torch.full((4,), T),
            "targets": torch.randint(3, V, (4, U), generator=g),
            "target_lens": torch.full((4,), U)}


def _sgd_update(net: torch.nn.Module, params, idx: list[int]) -> None:
    d = _data()
    opt = torch.optim.SGD(params, lr=0.5)
    out = net(*(d[k][idx] for k in ("feats", "feat_lens", "targets", "target_lens")))
    out["loss"].backward()
    opt.step()


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed("cpu", timeout_s=120) as (info, device):
        assert info.enabled and info.backend == "gloo" and device.type == "cpu"
        model = _tiny_model()
        net = wrap_model(model, info, device)
        mine = shard_batches([[0, 1], [2, 3]], info.rank, info.world_size)  # the fixed pair
        assert len(mine) == 1
        _sgd_update(net, model.parameters(), mine[0])
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    assert not torch.distributed.is_initialized()


def test_ddp_update_equals_single_process_on_union(tmp_path):
    t0 = time.perf_counter()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    spawn_s = time.perf_counter() - t0
    single = _tiny_model()
    init = {k: v.clone() for k, v in single.state_dict().items()}
    _sgd_update(single, single.parameters(), [0, 1, 2, 3])
    want = single.state_dict()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for k in want:
            torch.testing.assert_close(got[k], want[k], msg=f"rank {rank}: {k}")
    # sensitive: rank 0's batch alone gives another update
    alone = _tiny_model()
    _sgd_update(alone, alone.parameters(), [0, 1])
    assert any(not torch.allclose(alone.state_dict()[k], want[k], atol=1e-5)
               for k in want if want[k].is_floating_point())
    assert any(not torch.equal(init[k], want[k]) for k in want)
    print(f"\nDDP spawn test: 2 processes in {spawn_s:.1f} s")


# ----------------------------------------------------------------------------- torchrun


def _torchrun(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "asrkit.cli", "train", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, time.perf_counter() - t0


def test_torchrun_two_processes_end_to_end_and_resume(tmp_path):
    """``torchrun --nproc_per_node=2 -m asrkit.cli train`` for one epoch, then resumed for a
    second; each epoch's weights equal single-process training on the union of the batches."""
    train_dir = make_fixed_dir(tmp_path / "train", n_utts=4, seed=0)
    dev_dir = make_fixed_dir(tmp_path / "dev", n_utts=2, seed=1)
    from asrkit.text.tokenizer import train_tokenizer

    tok = train_tokenizer(train_dir / "text", tmp_path / "tok" / "char", model_type="char")
    common = [f"data.train={train_dir}", f"data.dev={dev_dir}", f"data.tokenizer={tok}", *TINY,
              *SGD, "trainer.keep_best_by=[]"]
    exp = tmp_path / "ddp"
    # 4 utterances, 2 per batch: rank 0 and rank 1 get one batch each, one update per epoch
    ddp_args = [f"exp_dir={exp}", *common, f"data.max_frames={2 * FIXED_FRAMES}"]
    proc, first_s = _torchrun([*ddp_args, "trainer.max_epochs=1"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (exp / ".done").is_file()
    assert [p.name for p in epoch_checkpoints(exp)] == ["epoch1.pt"]
    log = (exp / "train.log").read_text()
    assert log.count("epoch 1 done") == 1 and "2 process(es)" in log  # rank 0 writes alone
    (rec,) = read_metrics(exp).values()
    assert rec["world_size"] == 2 and rec["step"] == 1 and "dev_wer" in rec
    assert len(list((exp / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (exp / "training_curves.png").is_file()
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["world_size"] == 2

    # resume under torchrun for a second epoch
    (exp / ".done").unlink()
    proc, resume_s = _torchrun([*ddp_args, "trainer.max_epochs=2"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "resumed from" in (exp / "train.log").read_text()
    assert sorted(read_metrics(exp)) == [1, 2]

    # single process, one batch of all 4 utterances per epoch
    ref = tmp_path / "single"
    train(compose_train_config([f"exp_dir={ref}", *common, "trainer.max_epochs=2",
                                f"data.max_frames={4 * FIXED_FRAMES}", "trainer.tensorboard=false",
                                "trainer.plot=false"]))
    for epoch in (1, 2):
        got = load_checkpoint(exp / "checkpoints" / f"epoch{epoch}.pt")["model"]
        want = load_checkpoint(ref / "checkpoints" / f"epoch{epoch}.pt")["model"]
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6,
                                       msg=f"epoch {epoch}: {k}")
    ddp_rec, ref_rec = read_metrics(exp)[2], read_metrics(ref)[2]
    assert ddp_rec["dev_loss"] == pytest.approx(ref_rec["dev_loss"], rel=1e-4)
    assert ddp_rec["train_loss"] == pytest.approx(ref_rec["train_loss"], rel=1e-4)
    print(f"\ntorchrun: first run {first_s:.1f} s, resumed run {resume_s:.1f} s")
