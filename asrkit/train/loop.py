"""The training stage: a resolved Hydra config → ``exp_dir`` with checkpoints and logs.

``exp_dir`` holds ``config.yaml`` (the resolved config plus the model's input and output sizes),
``train.log`` (loss per ``log_interval`` updates; dev loss and dev WER per epoch),
``checkpoints/epoch<N>.pt`` and ``checkpoints/last.pt`` (written atomically) and, when
finished, ``.done``. Rerunning after a kill resumes from ``last.pt``, mid-epoch included: batch
order is a function of (seed, epoch), so the batches already trained on are skipped.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asrkit.decode.ctc import ctc_greedy
from asrkit.decode.run import pick_device
from asrkit.features.cmvn import read_cmvn_stats
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log
from asrkit.score import score_texts
from asrkit.text.tokenizer import Tokenizer
from asrkit.train.checkpoint import epoch_checkpoints, load_checkpoint, save_checkpoint
from asrkit.train.data import FeatureDataset, collate, frame_batches

logger = logging.getLogger(__name__)

__all__ = ["count_parameters", "train"]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _feat_dim(data_dir: Path) -> int:
    f = data_dir / "feat_dim"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found; run 'asrkit features' on {data_dir}")
    return int(f.read_text().split()[0])


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: FeatureDataset, tok: Tokenizer, device: torch.device,
             max_frames: int) -> tuple[float, float]:
    """Dev loss (per utterance) and greedy-CTC dev WER (%) of ``model`` on ``ds``."""
    model.eval()
    total, n = 0.0, 0
    hyps, refs = {}, {}
    for idx in frame_batches(ds.lengths, max_frames, shuffle=False):
        b = collate([ds[i] for i in idx])
        out = model(b["feats"].to(device), b["feat_lens"].to(device),
                    b["targets"].to(device), b["target_lens"].to(device))
        total += out["loss"].item() * len(idx)
        n += len(idx)
        log_probs, lens = model.ctc_log_probs(b["feats"].to(device), b["feat_lens"].to(device))
        for utt, i, ids in zip(b["ids"], idx, ctc_greedy(log_probs, lens)):
            hyps[utt] = tok.decode(ids)
            refs[utt] = tok.decode(ds.tokens[i])
    model.train()
    return total / max(n, 1), score_texts(refs, hyps).wer.rate


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])


def train(cfg: DictConfig) -> Path:
    """Train the model the config describes; resume if ``exp_dir`` holds a checkpoint.

    Args:
        cfg: composed config (``conf/config.yaml`` + overrides) with groups ``model``,
            ``optim``, ``trainer``, ``data`` and keys ``exp_dir``, ``seed``.

    Returns:
        The experiment directory.

    Raises:
        FileNotFoundError: missing feature dirs, tokenizer or CMVN stats.
        RuntimeError: the loss became NaN/Inf for ``trainer.max_bad_steps`` updates in a row.
    """
    exp_dir = Path(cfg.exp_dir)
    if is_done(exp_dir):
        logger.info("%s is complete (.done exists); nothing to train", exp_dir)
        return exp_dir
    exp_dir.mkdir(parents=True, exist_ok=True)
    with stage_log(exp_dir / "train.log"):
        return _train(cfg, exp_dir)


def _train(cfg: DictConfig, exp_dir: Path) -> Path:
    tr, dc = cfg.trainer, cfg.data
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if tr.num_threads:
        torch.set_num_threads(int(tr.num_threads))
    device = pick_device(tr.device)
    tok = Tokenizer(dc.tokenizer)
    train_dir, dev_dir = Path(dc.train), Path(dc.dev) if dc.dev else None
    train_ds = FeatureDataset(train_dir, tok, max_frames=dc.max_utt_frames)
    dev_ds = FeatureDataset(dev_dir, tok, max_frames=10**9) if dev_dir else None
    dims = {"input_dim": _feat_dim(train_dir), "vocab_size": tok.vocab_size}

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model_dims"] = dims
    cfg_text = OmegaConf.to_yaml(OmegaConf.create(resolved))
    if (exp_dir / "config.yaml").is_file() and (exp_dir / "config.yaml").read_text() != cfg_text:
        logger.warning("%s/config.yaml differs from this run's config; overwriting it", exp_dir)
    with atomic_write(exp_dir / "config.yaml") as f:
        f.write(cfg_text)

    cmvn = read_cmvn_stats(train_dir / "cmvn.ark")
    model = instantiate(cfg.model, input_dim=dims["input_dim"], vocab_size=dims["vocab_size"],
                        cmvn_stats=cmvn).to(device)
    optimizer = instantiate(cfg.optim.optimizer, model.parameters())
    scheduler = instantiate(cfg.optim.scheduler, optimizer) if cfg.optim.get("scheduler") \
        else None
    n_params = count_parameters(model)
    logger.info("model %s: %d parameters (%.2f M); device %s; %d train / %d dev utterances",
                type(model).__name__, n_params, n_params / 1e6, device, len(train_ds),
                len(dev_ds) if dev_ds else 0)

    ckpt_dir = exp_dir / "checkpoints"
    epoch, batch_in_epoch, step, elapsed = 1, 0, 0, 0.0
    if (ckpt_dir / "last.pt").is_file():
        st = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None and st.get("scheduler"):
            scheduler.load_state_dict(st["scheduler"])
        epoch, batch_in_epoch, step = st["epoch"], st["batch_in_epoch"], st["step"]
        elapsed = st.get("elapsed", 0.0)
        _set_rng_state(st["rng"])
        logger.info("resumed from %s: epoch %d, batch %d, update %d", ckpt_dir / "last.pt",
                    epoch, batch_in_epoch, step)

    def snapshot(ep: int, b: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else {}, "epoch": ep,
                "batch_in_epoch": b, "step": step, "elapsed": elapsed + time.perf_counter() - t0,
                "rng": {"torch": torch.get_rng_state()}, "num_params": n_params}

    use_amp = device.type == "cuda" and tr.amp
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    bad_steps = 0
    t0 = time.perf_counter()
    model.train()
    while epoch <= tr.max_epochs:
        batches = frame_batches(train_ds.lengths, dc.max_frames, shuffle=True, seed=cfg.seed,
                                epoch=epoch)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=batches[batch_in_epoch:], collate_fn=collate,
            num_workers=dc.num_workers)
        ep_loss, ep_utts, ep_frames, ep_t0 = 0.0, 0, 0, time.perf_counter()
        for b_idx, batch in enumerate(loader, start=batch_in_epoch + 1):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = model(batch["feats"].to(device), batch["feat_lens"].to(device),
                            batch["targets"].to(device), batch["target_lens"].to(device))
            loss = out["loss"]
            if not torch.isfinite(loss):
                bad_steps += 1
                logger.warning("epoch %d batch %d: non-finite loss (%s); batch skipped",
                               epoch, b_idx, batch["ids"][:3])
                optimizer.zero_grad(set_to_none=True)
                if bad_steps >= tr.max_bad_steps:
                    raise RuntimeError(f"{bad_steps} non-finite losses in a row; stopping")
                continue
            bad_steps = 0
            (loss / tr.accum_grad).backward()
            if b_idx % tr.accum_grad == 0 or b_idx == len(batches):
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
                if torch.isfinite(grad_norm):
                    optimizer.step()
                else:
                    logger.warning("epoch %d batch %d: non-finite gradient norm; update "
                                   "skipped", epoch, b_idx)
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if scheduler is not None:
                    scheduler.step()
            ep_loss += loss.item() * len(batch["ids"])
            ep_utts += len(batch["ids"])
            ep_frames += int(batch["feat_lens"].sum())
            if step and b_idx % tr.log_interval == 0:
                logger.info("epoch %d batch %d/%d update %d loss %.3f lr %.2e", epoch, b_idx,
                            len(batches), step, loss.item(), optimizer.param_groups[0]["lr"])
            if tr.save_every_batches and b_idx % tr.save_every_batches == 0:
                save_checkpoint(ckpt_dir / "last.pt", snapshot(epoch, b_idx))
        # end of epoch: evaluate, save epoch<N>.pt and last.pt (pointing at the next epoch)
        ep_time = time.perf_counter() - ep_t0
        msg = (f"epoch {epoch} done: train loss {ep_loss / max(ep_utts, 1):.3f}, "
               f"{ep_frames / max(ep_time, 1e-9):.0f} frames/s, {ep_time:.1f} s")
        record = {"epoch": epoch, "train_loss": ep_loss / max(ep_utts, 1), "step": step,
                  "epoch_seconds": ep_time, "frames_per_second": ep_frames / max(ep_time, 1e-9),
                  "lr": optimizer.param_groups[0]["lr"]}
        if dev_ds is not None:
            dev_loss, dev_wer = evaluate(model, dev_ds, tok, device, dc.max_frames)
            msg += f"; dev loss {dev_loss:.3f}, dev WER {dev_wer:.2f}%"
            record.update(dev_loss=dev_loss, dev_wer=dev_wer)
        if device.type == "cuda":
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        logger.info(msg)
        state = snapshot(epoch + 1, 0)
        save_checkpoint(ckpt_dir / f"epoch{epoch}.pt", {"model": state["model"],
                                                         "epoch": epoch, "metrics": record})
        with open(exp_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        save_checkpoint(ckpt_dir / "last.pt", state)
        for old in epoch_checkpoints(exp_dir)[: -tr.keep_checkpoints]:
            old.unlink()
        epoch, batch_in_epoch = epoch + 1, 0
    total = elapsed + time.perf_counter() - t0
    logger.info("training finished: %d updates, %.1f s wall time, %d parameters", step, total,
                n_params)
    with atomic_write(exp_dir / "train_summary.json") as f:
        json.dump({"num_params": n_params, "train_seconds": total, "updates": step,
                   "epochs": int(tr.max_epochs), "device": str(device)}, f, indent=1)
    mark_done(exp_dir)
    return exp_dir

