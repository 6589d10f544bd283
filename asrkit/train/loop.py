"""The training stage: a resolved Hydra config → ``exp_dir`` with checkpoints and logs.

``exp_dir`` holds:

- ``config.yaml``: the resolved config plus the model's input and output sizes and, under
  ``exp_files``, the copies below (paths relative to ``exp_dir``);
- ``tokenizer/<name>.model`` and ``cmvn.ark``: copies of ``data.tokenizer`` and of the
  training features' CMVN stats, so the experiment decodes after a move
  (:mod:`asrkit.exp.expdir`; the model holds the CMVN stats as buffers too);
- ``train.log``: parameter count, loss and learning rate every ``trainer.log_interval``
  batches, and per epoch train loss, dev loss and dev WER, frames/second and peak memory;
- ``metrics.jsonl``: one JSON object per epoch (``epoch``, ``train_loss``, ``dev_loss``,
  ``dev_wer`` in %, ``lr``, ``step``, ``epoch_seconds``, ``frames_per_second`` summed over
  ranks, ``peak_memory_mb`` with ``peak_memory_kind``, ``num_params``, ``world_size``);
  rewritten atomically each epoch, so a resumed run never duplicates an epoch;
- ``tensorboard/``: TensorBoard event files (``train/loss`` and ``train/lr`` per logged
  update; ``epoch/*`` per epoch: train/dev loss, dev WER, lr, frames/s, peak memory);
- ``training_curves.png``: loss, dev WER and lr per epoch (:mod:`asrkit.train.plot`);
- ``checkpoints/epoch<N>.pt`` (weights + that epoch's metrics) and ``checkpoints/last.pt``
  (everything needed to resume), written atomically; ``train_summary.json`` and ``.done``
  when finished.

Peak memory is ``torch.cuda.max_memory_allocated`` for the epoch on CUDA; on CPU it is the
process's maximum resident set size so far (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
which cannot be reset and so never decreases between epochs. Under DDP the maximum over ranks
is reported.

Resume: rerunning after a kill continues from ``last.pt``, mid-epoch included: the batch
order is a function of (seed, epoch), so the batches already trained on are skipped, and the
RNG state of every rank is restored.

Step cap (``trainer.max_steps`` = N, 0 = none): training ends after N optimizer updates in
all (resumed ones included), or at ``trainer.max_epochs``, whichever comes first. Reached
mid-epoch, ``last.pt`` is saved with the position in the epoch (no epoch record, epoch
checkpoint or dev pass for the unfinished epoch); ``train_summary.json`` says
``max_steps_reached``. Like a finished run it is marked ``.done``.

Longer schedules in pieces: rerunning a finished experiment with a larger
``trainer.max_epochs`` (or ``trainer.max_steps``) than the run ended at continues it from
``last.pt`` (:func:`extends_finished_run`); the same caps, or a run
that stopped early, leave it finished. A schedule that depends on the total length (cosine decay
to ``max_epochs``) then changes its course from the resumed update on; ``WarmupLR`` (the
default) does not depend on it.

Checkpoint retention (``trainer.keep_checkpoints`` = N, 0 keeps all): the last N epoch
checkpoints plus, for each metric in ``trainer.keep_best_by`` (``dev_loss``, ``dev_wer``), the
N best epochs by it; :func:`asrkit.exp.checkpoint.load_model` (``select="best"``) averages
the best ones. Early stopping (``trainer.early_stop.metric`` = ``dev_loss``/``dev_wer``) ends
training after ``patience`` epochs in a row without an improvement larger than ``min_delta``.

Optimiser parameter groups: a model that has a ``param_groups()`` method (only
``model=pretrained_encoder`` so far) returns a list of ``{"params": [...], "lr_scale": s,
...}`` dicts; the optimiser gets one group per dict, with lr = ``optim.optimizer.lr × s``, and
the scheduler scales every group's lr alike (it keeps each group's own base lr), so the ratio
holds. Other models give all their parameters to one group. The lr logged is group 0's.

Data-parallel training: launched under ``torchrun`` (``WORLD_SIZE > 1``), each process trains
on its shard of every epoch's batches (:func:`asrkit.data.dataset.shard_batches`) with the model
wrapped in ``DistributedDataParallel`` (:mod:`asrkit.train.ddp`); rank 0 alone writes
``exp_dir`` and evaluates the dev set while the other ranks wait on a barrier. DDP averages
the ranks' gradients; as the loss is a per-utterance mean within each rank's batch, one update
equals single-process training on the union of the ranks' batches when those batches hold the
same number of utterances (batches by frames usually differ a little, which weights the
utterances of smaller batches slightly more). Autocast wraps the DDP forward as it wraps the
plain model; gradient accumulation skips the all-reduce (``no_sync``) on all but the last
micro-batch of each update.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asrkit.data.dataset import FeatureDataset, collate, frame_batches, shard_batches
from asrkit.decode.attention import attention_greedy
from asrkit.decode.ctc import ctc_greedy
from asrkit.exp.checkpoint import (
    METRICS,
    epoch_checkpoints,
    instantiate_model,
    load_checkpoint,
    rank_epochs,
    read_metrics,
    save_checkpoint,
)
from asrkit.exp.expdir import EXP_FILES_KEY, TOKENIZER_DIR, copy_into_exp
from asrkit.features.cmvn import read_cmvn_stats
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log
from asrkit.score import score_texts
from asrkit.text.tokenizer import Tokenizer
from asrkit.train.ddp import (
    DistInfo,
    all_gather_object,
    all_reduce,
    all_true,
    barrier,
    broadcast_object,
    distributed,
    wrap_model,
)

logger = logging.getLogger(__name__)

__all__ = ["EarlyStopping", "count_parameters", "evaluate", "peak_memory_mb", "train"]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """Peak memory in MiB and what was measured.

    Returns:
        ``(torch.cuda.max_memory_allocated / 2**20, "cuda_max_allocated")`` on CUDA (since
        the last ``reset_peak_memory_stats``); on CPU ``(ru_maxrss in MiB, "cpu_max_rss")``,
        the process's peak resident set size since it started (Linux reports KiB, macOS
        bytes); ``(None, "unavailable")`` where ``resource`` does not exist (Windows).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:
        import resource
    except ImportError:
        return None, "unavailable"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when a dev metric has not improved for ``patience`` epochs (lower is better).

    An epoch improves when its value is below the best so far by more than ``min_delta``
    (the best is updated only then); an epoch without the metric (NaN, missing) does not
    improve. The state is recomputed from the per-epoch records, so it survives a resume.

    Attributes:
        metric: ``"dev_loss"``, ``"dev_wer"`` or None (never stop).
        patience: epochs in a row without improvement that stop training (>= 1).
        min_delta: required improvement (>= 0), in the metric's unit (loss, or WER points).
    """

    metric: str | None = None
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"trainer.early_stop.metric must be one of {METRICS} or null, "
                             f"got {self.metric!r}")
        if self.patience < 1:
            raise ValueError(f"trainer.early_stop.patience must be >= 1, got {self.patience}")
        if self.min_delta < 0:
            raise ValueError(f"trainer.early_stop.min_delta must be >= 0, got {self.min_delta}")

    def status(self, history: dict[int, dict]) -> tuple[int | None, int]:
        """``(best epoch or None, epochs since the last improvement)`` over ``history``."""
        best_epoch, best, since = None, math.inf, 0
        for e in sorted(history):
            v = history[e].get(self.metric) if self.metric else None
            if isinstance(v, (int, float)) and math.isfinite(v) and v < best - self.min_delta:
                best_epoch, best, since = e, float(v), 0
            else:
                since += 1
        return best_epoch, since

    def should_stop(self, history: dict[int, dict]) -> bool:
        """True when ``metric`` is set and has not improved for ``patience`` epochs."""
        return self.metric is not None and self.status(history)[1] >= self.patience


def _feat_dim(data_dir: Path) -> int:
    f = data_dir / "feat_dim"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found; run 'asrkit features' on {data_dir}")
    return int(f.read_text().split()[0])


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: FeatureDataset, tok: Tokenizer, device: torch.device,
             max_frames: int) -> tuple[float, float]:
    """Dev loss (per utterance) and greedy dev WER (%) of ``model`` on ``ds``.

    The WER is of greedy CTC decoding, or of batched greedy attention decoding
    (:func:`asrkit.decode.attention.attention_greedy`) for a hybrid model trained with
    ``ctc_weight = 0``, whose CTC layer is untrained, or of the LLM's greedy generation for
    ``model=speech_llm``.

    ``model`` is the plain module (not a DDP wrapper, whose forward would start collectives
    the other ranks do not join).
    """
    model.eval()
    if getattr(model, "frame_targets", False):  # model=hybrid: frame error rate, not WER
        return _evaluate_frames(model, ds, device, max_frames)
    total, n = 0.0, 0
    hyps, refs = {}, {}
    for idx in frame_batches(ds.lengths, max_frames, shuffle=False):
        b = collate([ds[i] for i in idx])
        enc, lens = model.encode(b["feats"].to(device), b["feat_lens"].to(device))
        out = model.loss_from_encoder(enc, lens, b["targets"].to(device),
                                      b["target_lens"].to(device))
        total += out["loss"].item() * len(idx)
        n += len(idx)
        if hasattr(model, "recognize_from_encoder"):  # model=speech_llm: greedy generation
            best = [h[0][0] for h in model.recognize_from_encoder(enc, lens)]
        elif getattr(model, "has_decoder", False) and model.ctc_weight == 0.0:
            best = attention_greedy(model, enc, lens)
        else:
            best = ctc_greedy(model.ctc_log_probs_from_encoder(enc), lens)
        for utt, i, ids in zip(b["ids"], idx, best):
            hyps[utt] = tok.decode(ids)
            refs[utt] = tok.decode(ds.tokens[i])
    model.train()
    return total / max(n, 1), score_texts(refs, hyps).wer.rate


def _evaluate_frames(model: torch.nn.Module, ds: FeatureDataset, device: torch.device,
                     max_frames: int) -> tuple[float, float]:
    """Dev loss (mean per frame) and frame error rate (%) of a frame classifier (a model
    with ``frame_targets``, i.e. ``model=hybrid``), whose dataset tokens are frame targets."""
    total, frames, errors = 0.0, 0, 0
    for idx in frame_batches(ds.lengths, max_frames, shuffle=False):
        b = collate([ds[i] for i in idx])
        out = model(b["feats"].to(device), b["feat_lens"].to(device),
                    b["targets"].to(device), b["target_lens"].to(device))
        n = int(out["frames"])
        total += out["loss"].item() * n
        frames += n
        errors += int(out["errors"])
    model.train()
    return total / max(frames, 1), 100.0 * errors / max(frames, 1)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(rng: dict, info: DistInfo, device: torch.device) -> None:
    """Restore this rank's RNG state from a ``last.pt`` ``rng`` entry."""
    ranks = rng.get("ranks")
    if ranks is not None and len(ranks) == info.world_size:
        mine = ranks[info.rank]
    elif info.rank == 0:
        mine = rng
    else:
        logger.warning("rank %d: checkpoint holds RNG states of %d rank(s); keeping a fresh "
                       "seed", info.rank, len(ranks) if ranks else 1)
        return
    torch.set_rng_state(mine["torch"].cpu())
    if "cuda" in mine and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"].cpu(), device)


def _write_metrics(exp_dir: Path, history: dict[int, dict]) -> None:
    with atomic_write(exp_dir / "metrics.jsonl") as f:
        for e in sorted(history):
            f.write(json.dumps(history[e]) + "\n")


def _prune_checkpoints(exp_dir: Path, keep: int, best_by: list[str],
                       history: dict[int, dict]) -> None:
    """Delete epoch checkpoints outside the last ``keep`` and the ``keep`` best per metric."""
    if keep <= 0:
        return
    present = {int(p.stem[len("epoch"):]): p for p in epoch_checkpoints(exp_dir)}
    kept = set(sorted(present)[-keep:])
    records = {e: history[e] for e in present if e in history}
    for metric in best_by:
        kept.update(rank_epochs(records, metric)[:keep])
    for e, p in present.items():
        if e not in kept:
            p.unlink()


def _plot(exp_dir: Path) -> None:
    from asrkit.train.plot import plot_training_curves

    try:
        plot_training_curves(exp_dir)
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # a plot never stops training
        logger.warning("could not draw %s/training_curves.png: %s", exp_dir, e)


@contextlib.contextmanager
def _quiet(log: logging.Logger):
    """Only warnings from ranks other than 0 (rank 0 reports progress)."""
    old = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(old)


def train(cfg: DictConfig) -> Path:
    """Train the model the config describes; resume if ``exp_dir`` holds a checkpoint.

    Runs as one process, or as one of ``WORLD_SIZE`` processes started by ``torchrun``
    (data-parallel, see the module docstring); the call is the same.

    Args:
        cfg: composed config (``conf/config.yaml`` + overrides) with groups ``model``,
            ``optim``, ``trainer``, ``data`` and keys ``exp_dir``, ``seed``.

    Returns:
        The experiment directory.

    Raises:
        FileNotFoundError: missing feature dirs, tokenizer or CMVN stats.
        ValueError: invalid trainer options (early stopping without ``data.dev``, unknown
            metric), a malformed torchrun environment, fewer batches than ranks.
        RuntimeError: the loss became NaN/Inf for ``trainer.max_bad_steps`` updates in a row.
    """
    exp_dir = Path(cfg.exp_dir)
    tr = cfg.trainer
    with distributed(tr.device, timeout_s=float(tr.get("ddp_timeout_s", 3600))) as (info, dev):
        done = broadcast_object(is_done(exp_dir) and not extends_finished_run(exp_dir, tr)
                                if info.is_main else None, info)
        if done:
            if info.is_main:
                logger.info("%s is complete (.done exists); nothing to train", exp_dir)
            return exp_dir
        if not info.is_main:
            with _quiet(logging.getLogger("asrkit")):
                return _train(cfg, exp_dir, info, dev)
        exp_dir.mkdir(parents=True, exist_ok=True)
        with stage_log(exp_dir / "train.log"):
            return _train(cfg, exp_dir, info, dev)


def extends_finished_run(exp_dir: Path, tr: DictConfig) -> bool:
    """Whether ``tr`` (the ``trainer`` config) asks a finished run in ``exp_dir`` to go on.

    True when ``exp_dir/train_summary.json`` says the run ended at its epoch or step cap (not
    by early stopping) and ``tr.max_epochs`` / ``tr.max_steps`` now allow more: training then
    resumes from ``checkpoints/last.pt`` (logged). False when the summary or ``last.pt`` is
    missing or unreadable, the run stopped early, or the caps allow nothing more.
    """
    try:
        summary = json.loads((exp_dir / "train_summary.json").read_text())
    except (OSError, ValueError):
        return False
    if summary.get("stopped_early_at") is not None or not (exp_dir / "checkpoints/last.pt").is_file():
        return False
    epochs, updates = int(summary.get("epochs", 0)), int(summary.get("updates", 0))
    max_steps = int(tr.get("max_steps", 0) or 0)
    go_on = int(tr.max_epochs) > epochs and (max_steps == 0 or max_steps > updates)
    if go_on:
        logger.info("%s finished at epoch %d, update %d; trainer.max_epochs=%d, max_steps=%d "
                    "allow more: continuing from checkpoints/last.pt", exp_dir, epochs, updates,
                    int(tr.max_epochs), max_steps)
    return go_on


def _thin_dataset(ds: FeatureDataset, n: int) -> None:
    """Keep ``n`` utterances of ``ds`` evenly spaced over its (sorted) ids, in place: the
    per-epoch dev pass on a subset of a large dev set (``data.dev_max_utts``)."""
    total = len(ds.ids)
    if n <= 0 or n >= total:
        return
    keep = [i * total // n for i in range(n)]
    ds.ids = [ds.ids[i] for i in keep]
    ds.lengths = [ds.lengths[i] for i in keep]
    ds.tokens = [ds.tokens[i] for i in keep]
    logger.info("dev pass on %d of %d utterances (data.dev_max_utts)", n, total)


def _train(cfg: DictConfig, exp_dir: Path, info: DistInfo, device: torch.device) -> Path:
    tr, dc = cfg.trainer, cfg.data
    main = info.is_main
    world = info.world_size
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    es_cfg = tr.get("early_stop") or {}
    stopper = EarlyStopping(metric=es_cfg.get("metric"), patience=int(es_cfg.get("patience", 5)),
                            min_delta=float(es_cfg.get("min_delta", 0.0)))
    if stopper.metric is not None and not dc.dev:
        raise ValueError(f"trainer.early_stop.metric={stopper.metric} needs a dev set "
                         "(data.dev)")
    keep_best_by = list(tr.get("keep_best_by") or [])
    for m in keep_best_by:
        if m not in METRICS:
            raise ValueError(f"trainer.keep_best_by: unknown metric {m!r}; one of {METRICS}")
    remainder = dc.get("shard_remainder", "drop")

    train_dir, dev_dir = Path(dc.train), Path(dc.dev) if dc.dev else None
    # Hook: model=hybrid trains on per-frame pdf ids of a GMM alignment (asrkit.models.hybrid)
    # instead of tokens; the dataset carries them in place of token ids, the output size is
    # the number of pdfs, and the priors come from their counts.
    hybrid = None
    if cfg.model.get("family") == "hybrid":
        from asrkit.models.hybrid import prepare_training

        exp_dir.mkdir(parents=True, exist_ok=True)
        hybrid = prepare_training(cfg, exp_dir if main else None)
        tok = None
        train_ds = FeatureDataset(train_dir, targets=hybrid["train"],
                                  max_frames=dc.max_utt_frames)
        dev_ds = FeatureDataset(dev_dir, targets=hybrid["dev"], max_frames=10**9) \
            if dev_dir and main else None
        dims = {"input_dim": _feat_dim(train_dir), "vocab_size": hybrid["num_pdfs"]}
    else:
        # model=speech_llm: the units are its LLM's tokens (asrkit.models.speech_llm)
        if cfg.model.get("family") == "speech_llm":
            from asrkit.lm.hf import HFTextTokenizer

            # its frozen LLM and encoder stay outside the experiment (a 7 B LLM is not
            # copied): absolute paths, so it decodes from any working directory
            for node, key in ((cfg.model, "llm"), (cfg.model, "encoder_exp"),
                              (cfg.model.get("encoder_conf") or {}, "pretrained")):
                if node.get(key):
                    node[key] = str(Path(node[key]).resolve())

            tok = HFTextTokenizer(cfg.model.llm, case=cfg.model.get("text_case", "keep"))
        else:
            tok = Tokenizer(dc.tokenizer)
        train_ds = FeatureDataset(train_dir, tok, max_frames=dc.max_utt_frames)
        dev_ds = FeatureDataset(dev_dir, tok, max_frames=10**9) if dev_dir and main else None
        dims = {"input_dim": _feat_dim(train_dir), "vocab_size": tok.vocab_size}
    if dev_ds is not None and dc.get("dev_max_utts"):
        _thin_dataset(dev_ds, int(dc.dev_max_utts))

    if main:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["model_dims"] = dims
        # the experiment carries its tokenizer and CMVN stats (asrkit.exp.expdir)
        resolved[EXP_FILES_KEY] = {
            "cmvn": copy_into_exp(train_dir / "cmvn.ark", exp_dir, "cmvn.ark")}
        if hybrid is not None:
            resolved[EXP_FILES_KEY]["hmm_model"] = hybrid["final_mdl"]
        elif isinstance(tok, Tokenizer):  # speech_llm: the LLM dir holds its tokenizer
            resolved[EXP_FILES_KEY]["tokenizer"] = copy_into_exp(
                dc.tokenizer, exp_dir, f"{TOKENIZER_DIR}/{Path(dc.tokenizer).name}")
        if (train_dir / "feature_config.yaml").is_file():  # what asrkit transcribe computes
            resolved[EXP_FILES_KEY]["features"] = copy_into_exp(
                train_dir / "feature_config.yaml", exp_dir, "feature_config.yaml")
        cfg_text = OmegaConf.to_yaml(OmegaConf.create(resolved))
        cfg_path = exp_dir / "config.yaml"
        if cfg_path.is_file() and cfg_path.read_text() != cfg_text:
            logger.warning("%s/config.yaml differs from this run's config; overwriting it",
                           exp_dir)
        with atomic_write(cfg_path) as f:
            f.write(cfg_text)

    ckpt_dir = exp_dir / "checkpoints"
    if main:  # a SIGKILL during a checkpoint write leaves atomic_write's temp file behind
        for tmp in ckpt_dir.glob(".*.tmp"):
            logger.info("removing %s, left by a killed run", tmp)
            tmp.unlink()
    resumed = broadcast_object((ckpt_dir / "last.pt").is_file() if main else None, info)
    cmvn = read_cmvn_stats(train_dir / "cmvn.ark")
    model = instantiate_model(cfg.model, dims["input_dim"], dims["vocab_size"],
                              from_checkpoint=resumed, cmvn_stats=cmvn).to(device)
    if hybrid is not None and not resumed:  # priors travel in the model (buffer log_priors)
        model.set_priors(hybrid["counts"])
    # Hook: a model with param_groups() (model=pretrained_encoder) gets one optimiser group per
    # dict it returns, with lr = optimiser lr × the group's "lr_scale"; schedulers scale every
    # group's lr alike, so the ratio holds. Other models: one group, as before.
    groups = model.param_groups() if hasattr(model, "param_groups") else None
    optimizer = instantiate(cfg.optim.optimizer,
                            model.parameters() if groups is None else groups)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    scheduler = instantiate(cfg.optim.scheduler, optimizer) if cfg.optim.get("scheduler") \
        else None
    n_params = count_parameters(model)
    logger.info("model %s: %d parameters (%.2f M); device %s; %d process(es); %d train / %d "
                "dev utterances", type(model).__name__, n_params, n_params / 1e6, device, world,
                len(train_ds), len(dev_ds) if dev_ds else 0)
    if info.rank > 0:  # same initial weights, but own SpecAugment/dropout draws per rank
        torch.manual_seed(cfg.seed + 7919 * info.rank)

    epoch, consumed, step, elapsed = 1, 0, 0, 0.0
    if resumed:  # every rank reads the file (exp_dir on a filesystem all nodes share)
        st = load_checkpoint(ckpt_dir / "last.pt", map_location="cpu")
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None and st.get("scheduler"):
            scheduler.load_state_dict(st["scheduler"])
        epoch, step = st["epoch"], st["step"]
        saved_world = int(st.get("world_size", 1))
        consumed = int(st.get("batches_consumed", st["batch_in_epoch"] * saved_world))
        if saved_world != world and consumed:
            logger.warning("resuming mid-epoch with %d process(es) after %d: the %d batches "
                           "already trained on this epoch are skipped", world, saved_world,
                           consumed)
        elapsed = st.get("elapsed", 0.0)
        _restore_rng(st["rng"], info, device)
        logger.info("resumed from %s: epoch %d, batch %d, update %d", ckpt_dir / "last.pt",
                    epoch, consumed // world, step)
        del st
    history = {e: r for e, r in read_metrics(exp_dir).items() if e < epoch} if main else {}

    net = wrap_model(model, info, device,
                     find_unused_parameters=bool(tr.get("ddp_find_unused_parameters", False)))
    writer = None
    if main and tr.get("tensorboard", True):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after the update last.pt holds
        writer = SummaryWriter(str(exp_dir / "tensorboard"),
                               purge_step=step + 1 if resumed else None)

    def state(ep: int, b: int, used: int, rng: list[dict]) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else {}, "epoch": ep,
                "batch_in_epoch": b, "batches_consumed": used, "world_size": world,
                "step": step, "elapsed": elapsed + time.perf_counter() - t0,
                "rng": {**rng[0], "ranks": rng}, "num_params": n_params}

    use_amp = device.type == "cuda" and tr.amp
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    # fp16 (GPUs without bf16) needs loss scaling; disabled, the scaler passes everything through
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    accum = int(tr.accum_grad)
    max_steps = int(tr.get("max_steps") or 0)
    capped = bool(max_steps) and step >= max_steps  # trainer.max_steps updates done
    bad_steps = 0
    t0 = time.perf_counter()
    model.train()
    stop = broadcast_object(stopper.should_stop(history) if main else None, info)
    try:
        while epoch <= tr.max_epochs and not stop and not capped:
            order = frame_batches(train_ds.lengths, dc.max_frames, shuffle=True, seed=cfg.seed,
                                  epoch=epoch)
            mine = shard_batches(order, info.rank, world, remainder=remainder, skip=consumed)
            start = consumed // world
            n_local = start + len(mine)
            loader = torch.utils.data.DataLoader(train_ds, batch_sampler=mine,
                                                 collate_fn=collate, num_workers=dc.num_workers)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ep_loss, ep_utts, ep_frames, ep_t0 = 0.0, 0, 0, time.perf_counter()
            cut_epoch = False
            for i, batch in enumerate(loader):
                b_idx = start + i + 1
                used = consumed + (i + 1) * world
                update = b_idx % accum == 0 or b_idx == n_local
                # DDP: all-reduce gradients only on the micro-batch that ends an update
                sync = contextlib.nullcontext() if update or not info.enabled else net.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        out = net(batch["feats"].to(device), batch["feat_lens"].to(device),
                                  batch["targets"].to(device), batch["target_lens"].to(device))
                    loss = out["loss"]
                    finite = all_true(torch.isfinite(loss.detach()), info, device)
                    if finite or info.enabled:  # DDP expects a backward after each forward
                        scaler.scale(loss / accum).backward()
                if not finite:
                    bad_steps += 1
                    logger.warning("epoch %d batch %d: non-finite loss%s (%s); batch skipped",
                                   epoch, b_idx, " on some rank" if info.enabled else "",
                                   batch["ids"][:3])
                    optimizer.zero_grad(set_to_none=True)
                    if bad_steps >= tr.max_bad_steps:
                        raise RuntimeError(f"{bad_steps} non-finite losses in a row; stopping")
                    continue
                bad_steps = 0
                if update:
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
                    if scaler.is_enabled():
                        scaler.step(optimizer)  # skips the step itself on inf/NaN gradients
                        scaler.update()
                    elif torch.isfinite(grad_norm):
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
                    # the loss and the model's other scalar parts ("ctc", "att"), rank mean
                    names = ["loss"] + sorted(k for k, v in out.items() if k != "loss"
                                              and torch.is_tensor(v) and v.numel() == 1)
                    means = dict(zip(names, (v / world for v in all_reduce(
                        [float(out[k].detach()) for k in names], info, device))))
                    lr = optimizer.param_groups[0]["lr"]
                    extra = "".join(f" {k} {means[k]:.3f}" for k in names[1:])
                    logger.info("epoch %d batch %d/%d update %d loss %.3f%s lr %.2e", epoch,
                                b_idx, n_local, step, means["loss"], extra, lr)
                    if writer is not None:
                        for k, v in means.items():
                            writer.add_scalar(f"train/{k}", v, step)
                        writer.add_scalar("train/lr", lr, step)
                if tr.save_every_batches and b_idx % tr.save_every_batches == 0:
                    rng = all_gather_object(_rng_state(device), info)
                    if main:
                        save_checkpoint(ckpt_dir / "last.pt", state(epoch, b_idx, used, rng))
                if max_steps and step >= max_steps:
                    capped = True
                    logger.info("trainer.max_steps=%d updates reached (epoch %d batch %d/%d)",
                                max_steps, epoch, b_idx, n_local)
                    if b_idx < n_local:  # mid-epoch: resumable like save_every_batches
                        rng = all_gather_object(_rng_state(device), info)
                        if main:
                            save_checkpoint(ckpt_dir / "last.pt",
                                            state(epoch, b_idx, used, rng))
                        cut_epoch = True
                        break
            if cut_epoch:
                break  # the epoch is unfinished: no epoch record, checkpoint or dev pass

            # end of epoch: totals over ranks; rank 0 evaluates and writes, the others wait
            ep_time = time.perf_counter() - ep_t0
            tot_loss, tot_utts, tot_frames = all_reduce([ep_loss, ep_utts, ep_frames], info,
                                                        device)
            peak, peak_kind = peak_memory_mb(device)
            if peak is not None:
                peak = all_reduce([peak], info, device, op="max")[0]
            rng = all_gather_object(_rng_state(device), info)
            if main:
                stop = _end_epoch(
                    exp_dir, epoch, writer, stopper, history, tr, keep_best_by,
                    record={"epoch": epoch,
                            "train_loss": tot_loss / tot_utts if tot_utts else None,
                            "step": step, "epoch_seconds": ep_time,
                            "frames_per_second": tot_frames / max(ep_time, 1e-9),
                            "lr": optimizer.param_groups[0]["lr"],
                            "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
                            "num_params": n_params, "world_size": world},
                    dev=functools.partial(evaluate, model, dev_ds, tok, device, dc.max_frames)
                    if dev_ds is not None else None,
                    save=functools.partial(state, epoch + 1, 0, 0, rng))
            barrier(info)
            stop = broadcast_object(stop, info)
            epoch, consumed = epoch + 1, 0
    finally:
        if writer is not None:
            writer.close()

    total = elapsed + time.perf_counter() - t0
    if main:
        best = {m: (rank_epochs(history, m) or [None])[0] for m in METRICS if dev_dir}
        stopped = max(history) if stop and history else None
        if stopped is not None:
            logger.info("early stopping after epoch %d: no %s improvement over %g for %d "
                        "epoch(s) (best epoch %s)", stopped, stopper.metric, stopper.min_delta,
                        stopper.patience, stopper.status(history)[0])
        logger.info("training finished: %d updates, %.1f s wall time, %d parameters, %d "
                    "process(es)", step, total, n_params, world)
        with atomic_write(exp_dir / "train_summary.json") as f:
            json.dump({"num_params": n_params, "train_seconds": total, "updates": step,
                       "epochs": max(history) if history else 0,
                       "max_epochs": int(tr.max_epochs), "stopped_early_at": stopped,
                       "max_steps_reached": capped,
                       "best_epoch": best, "device": str(device), "world_size": world}, f,
                      indent=1)
        mark_done(exp_dir)
    barrier(info)
    return exp_dir


def _end_epoch(exp_dir: Path, epoch: int, writer, stopper: EarlyStopping,
               history: dict[int, dict], tr: DictConfig, keep_best_by: list[str], *,
               record: dict, dev, save) -> bool:
    """Rank 0's end of an epoch: dev evaluation, log, checkpoints, metrics, plots.

    Returns:
        Whether early stopping ends training now.
    """
    train_loss = record["train_loss"]
    msg = (f"epoch {epoch} done: train loss "
           f"{'n/a' if train_loss is None else f'{train_loss:.3f}'}, "
           f"{record['frames_per_second']:.0f} frames/s, {record['epoch_seconds']:.1f} s")
    if record["peak_memory_mb"] is not None:
        msg += f", peak memory {record['peak_memory_mb']:.0f} MiB ({record['peak_memory_kind']})"
    if dev is not None:
        dev_loss, dev_wer = dev()
        msg += f"; dev loss {dev_loss:.3f}, dev WER {dev_wer:.2f}%"
        record.update(dev_loss=dev_loss, dev_wer=dev_wer)
    logger.info(msg)
    ckpt_dir = exp_dir / "checkpoints"
    st = save()
    save_checkpoint(ckpt_dir / f"epoch{epoch}.pt", {"model": st["model"], "epoch": epoch,
                                                     "metrics": record})
    history[epoch] = record
    _write_metrics(exp_dir, history)
    save_checkpoint(ckpt_dir / "last.pt", st)
    _prune_checkpoints(exp_dir, int(tr.keep_checkpoints), keep_best_by, history)
    if writer is not None:
        for key in ("train_loss", "dev_loss", "dev_wer", "lr", "frames_per_second",
                    "peak_memory_mb"):
            if record.get(key) is not None:
                writer.add_scalar(f"epoch/{key}", record[key], epoch)
        writer.flush()
    if tr.get("plot", True):
        _plot(exp_dir)
    return stopper.should_stop(history)
