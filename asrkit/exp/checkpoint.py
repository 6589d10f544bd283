"""Checkpoints: atomic saves, safe loads (``weights_only=True``), selection, averaging, loading.

An experiment's ``checkpoints/epoch<N>.pt`` each hold ``{"model", "epoch", "metrics"}``, the
metrics being that epoch's line of ``exp_dir/metrics.jsonl`` (``train_loss``, ``dev_loss``,
``dev_wer`` in %, ...). :func:`select_checkpoints` picks the last N epochs or the N best by a
dev metric (lower is better for both ``dev_loss`` and ``dev_wer``), reading the metrics from
``metrics.jsonl`` and falling back to the checkpoints' own copy; :func:`load_model` averages
the chosen ones (ESPnet's ``average_nbest_models``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asrkit.fileio import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "SELECT",
    "average_checkpoints",
    "epoch_checkpoints",
    "instantiate_model",
    "load_checkpoint",
    "load_model",
    "pick_device",
    "rank_epochs",
    "read_metrics",
    "save_checkpoint",
    "select_checkpoints",
]

METRICS = ("dev_loss", "dev_wer")
"""Metrics checkpoints can be ranked by; lower is better for both."""
SELECT = ("last", "best")
"""Ways to choose the checkpoints to average."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        RuntimeError: if the file is corrupt or holds non-tensor objects.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, unpickling refused
        raise RuntimeError(f"cannot load checkpoint {path}: {e}") from e


def epoch_checkpoints(exp_dir: str | os.PathLike) -> list[Path]:
    """``exp_dir/checkpoints/epoch<N>.pt`` files sorted by N."""
    ckpts = Path(exp_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in ckpts.glob("epoch*.pt")
             if (m := re.fullmatch(r"epoch(\d+)\.pt", p.name))]
    return [p for _, p in sorted(found)]


def _epoch_of(path: Path) -> int:
    m = re.fullmatch(r"epoch(\d+)\.pt", path.name)
    if m is None:
        raise ValueError(f"{path} is not an epoch<N>.pt checkpoint")
    return int(m.group(1))


def read_metrics(exp_dir: str | os.PathLike) -> dict[int, dict]:
    """Per-epoch records of ``exp_dir/metrics.jsonl`` (one JSON object per line).

    Returns:
        ``{epoch: record}``; a later line for the same epoch replaces an earlier one; ``{}``
        when the file does not exist.

    Raises:
        ValueError: a line is not a JSON object with an integer ``epoch`` (names the line).
    """
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    out: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{no}: not JSON: {e}") from None
            try:
                epoch = int(rec["epoch"])
            except (TypeError, KeyError, ValueError):
                raise ValueError(f"{path}:{no}: expected an object with an integer "
                                 "'epoch'") from None
            out[epoch] = rec
    return out


def rank_epochs(records: dict[int, dict], metric: str) -> list[int]:
    """Epochs that have a finite ``metric``, best first (lowest value; ties: later epoch).

    Raises:
        ValueError: ``metric`` is not one of :data:`METRICS`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    scored = [(float(r[metric]), -e) for e, r in records.items()
              if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    return [-neg_e for _, neg_e in sorted(scored)]


def select_checkpoints(exp_dir: str | os.PathLike, n: int = 1, *, select: str = "last",
                       metric: str = "dev_loss") -> list[Path]:
    """Choose ``n`` epoch checkpoints of an experiment, returned in epoch order.

    Args:
        exp_dir: experiment directory.
        n: how many (fewer are returned, with a warning for ``"best"``, when fewer exist).
        select: ``"last"``: the ``n`` highest epochs present; ``"best"``: the ``n`` present
            epochs with the lowest ``metric`` (ties go to the later epoch).
        metric: ``"dev_loss"`` or ``"dev_wer"``, for ``select="best"``.

    Returns:
        Paths of ``checkpoints/epoch<N>.pt``, sorted by N.

    Raises:
        ValueError: ``n < 1``, unknown ``select``/``metric``, or (``"best"``) no present epoch
            has ``metric`` (e.g. trained without ``data.dev``).
        FileNotFoundError: no epoch checkpoint exists.
    """
    if n < 1:
        raise ValueError(f"number of checkpoints to average must be >= 1, got {n}")
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    present = epoch_checkpoints(exp_dir)
    if not present:
        raise FileNotFoundError(f"no epoch checkpoints in {Path(exp_dir) / 'checkpoints'}")
    if select == "last":
        return present[-n:]
    by_epoch = {_epoch_of(p): p for p in present}
    logged = read_metrics(exp_dir)
    records: dict[int, dict] = {}
    for e, p in by_epoch.items():
        rec = logged.get(e)
        if rec is None or metric not in rec:  # metrics.jsonl lost or edited: ask the file
            rec = load_checkpoint(p).get("metrics") or {}
        records[e] = rec
    ranked = rank_epochs(records, metric)
    if not ranked:
        raise ValueError(f"no checkpoint of {exp_dir} has {metric!r} (trained without a dev "
                         "set?); use select='last'")
    if len(ranked) < n:
        logger.warning("%s: only %d checkpoint(s) with %s for the %d best requested", exp_dir,
                       len(ranked), metric, n)
    return [by_epoch[e] for e in sorted(ranked[:n])]


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (ESPnet's average_nbest).

    Floating tensors are averaged; integer buffers are taken from the last checkpoint.

    Raises:
        ValueError: if ``paths`` is empty or the checkpoints hold different parameter names.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    avg: dict[str, torch.Tensor] = {}
    sd: dict[str, torch.Tensor] = {}
    for i, p in enumerate(paths):
        sd = load_checkpoint(p)["model"]
        if i == 0:
            avg = {k: v.clone().double() if v.is_floating_point() else v.clone()
                   for k, v in sd.items()}
            continue
        if sd.keys() != avg.keys():
            raise ValueError(f"{p}: parameter names differ from {paths[0]}")
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k] += v.double()
            else:
                avg[k] = v.clone()
    # ``sd`` is the last checkpoint: its dtypes are the ones to return
    return {k: (v / len(paths)).to(sd[k].dtype) if v.is_floating_point() else v
            for k, v in avg.items()}


def pick_device(device: str | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def instantiate_model(model_cfg, input_dim: int, vocab_size: int, *, from_checkpoint: bool,
                      **kwargs) -> torch.nn.Module:
    """Build a model from its Hydra config (``cfg.model``) with ``input_dim`` (F) and
    ``vocab_size`` (V). With ``from_checkpoint`` (a checkpoint will supply every weight: a
    resumed run, a decode) a ``pretrained`` initialisation path (``model=pretrained_encoder``)
    is set to None, so the file is not read and need not exist any more.

    Args:
        model_cfg: the ``model`` node (``_target_`` and its arguments).
        input_dim, vocab_size: F and V.
        from_checkpoint: whether the weights will be loaded from a checkpoint.
        **kwargs: more constructor arguments (e.g. ``cmvn_stats``).
    """
    from hydra.utils import instantiate

    if from_checkpoint and "pretrained" in model_cfg:
        kwargs["pretrained"] = None
    return instantiate(model_cfg, input_dim=input_dim, vocab_size=vocab_size, **kwargs)


def load_model(exp_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
               avg: int = 1, device: str | torch.device = "cpu", select: str = "last",
               metric: str = "dev_loss") -> tuple[torch.nn.Module, dict]:
    """Build the model of an experiment from ``config.yaml`` and load its weights.

    A ``model.pretrained`` path (initial weights of ``model=pretrained_encoder``) is set to
    None: the checkpoints hold every weight, so the pretrained file is neither read nor needed.

    Args:
        exp_dir: experiment directory written by ``asrkit train``.
        checkpoint: a specific checkpoint file; default: the average of ``avg`` epoch
            checkpoints chosen by ``select``.
        avg: number of epoch checkpoints to average (1 = a single one).
        device: where to put the model.
        select: ``"last"`` (the ``avg`` latest epochs) or ``"best"`` (the ``avg`` epochs with
            the lowest ``metric``); see :func:`select_checkpoints`.
        metric: ``"dev_loss"`` or ``"dev_wer"`` for ``select="best"``.

    Returns:
        (model in eval mode, the resolved config as a plain dict).

    Raises:
        FileNotFoundError: no ``config.yaml`` or no checkpoint in ``exp_dir``.
        ValueError: bad ``avg``/``select``/``metric``, or no checkpoint has ``metric``.
    """

    exp_dir = Path(exp_dir)
    cfg_path = exp_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; is {exp_dir} an asrkit experiment?")
    cfg = OmegaConf.load(cfg_path)
    info = OmegaConf.to_container(cfg, resolve=True)
    dims = info["model_dims"]
    model = instantiate_model(cfg.model, dims["input_dim"], dims["vocab_size"],
                              from_checkpoint=True)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)["model"]
        used = [Path(checkpoint)]
    else:
        used = select_checkpoints(exp_dir, avg, select=select, metric=metric)
        state = average_checkpoints(used)
    model.load_state_dict(state)
    how = "" if checkpoint is not None else f" ({select}" + (
        f" by {metric})" if select == "best" else ")")
    logger.info("loaded %s from %s%s", type(model).__name__, ", ".join(p.name for p in used),
                how)
    return model.to(device).eval(), info
