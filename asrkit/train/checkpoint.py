"""Checkpoints: atomic saves, safe loads (``weights_only=True``), averaging, model loading."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asrkit.fileio import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "average_checkpoints",
    "epoch_checkpoints",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]


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


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (ESPnet's average_nbest).

    Floating tensors are averaged; integer buffers are taken from the last checkpoint.

    Raises:
        ValueError: if ``paths`` is empty or the checkpoints hold different parameter names.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    avg: dict[str, torch.Tensor] = {}
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
    ref = load_checkpoint(paths[-1])["model"]
    return {k: (v / len(paths)).to(ref[k].dtype) if v.is_floating_point() else v
            for k, v in avg.items()}


def load_model(exp_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
               avg: int = 1, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Build the model of an experiment from ``config.yaml`` and load its weights.

    Args:
        exp_dir: experiment directory written by ``asrkit train``.
        checkpoint: a specific checkpoint file; default: average of the last ``avg`` epochs.
        avg: number of last epoch checkpoints to average (1 = the last one).
        device: where to put the model.

    Returns:
        (model in eval mode, the resolved config as a plain dict).

    Raises:
        FileNotFoundError: no ``config.yaml`` or no checkpoint in ``exp_dir``.
    """
    from hydra.utils import instantiate

    exp_dir = Path(exp_dir)
    cfg_path = exp_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; is {exp_dir} an asrkit experiment?")
    cfg = OmegaConf.load(cfg_path)
    info = OmegaConf.to_container(cfg, resolve=True)
    dims = info["model_dims"]
    model = instantiate(cfg.model, input_dim=dims["input_dim"], vocab_size=dims["vocab_size"])
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)["model"]
        used = [Path(checkpoint)]
    else:
        used = epoch_checkpoints(exp_dir)[-avg:]
        if not used:
            raise FileNotFoundError(f"no epoch checkpoints in {exp_dir}/checkpoints")
        state = average_checkpoints(used)
    model.load_state_dict(state)
    logger.info("loaded %s from %s", type(model).__name__, ", ".join(p.name for p in used))
    return model.to(device).eval(), info
