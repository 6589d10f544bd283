"""The acoustic model of an HMM-GMM system: transition model plus GMMs (Kaldi's ``final.mdl``,
with the ``tree`` inside).

Saved with :func:`torch.save` as a dict of tensors and plain data, read back with
``torch.load(..., weights_only=True)``::

    {"format": "asrkit.hmm_gmm", "version": 1,
     "transitions": {"phones": {phone: id}, "phone_base": {phone: base}, "base_phones": [...],
                     "silence_bases": [...], "topology": {"nonsilence": [...],
                     "silence": [...]}, "log_probs": float64 (num_tids + 1,),
                     "ctx": {"context_width": N, "central_position": P, "base_phones": [...],
                             "phone_to_base": int64, "num_pdf_classes": [...],
                             "roots": int64, "node_key": int64, "node_set": bool,
                             "node_yes": int64, "node_no": int64, "node_pdf": int64}},
     "gmm": {"weights": (S, M), "means": (S, M, F), "variances": (S, M, F)},
     "meta": {str: str | int | float | bool | list}}

``ctx`` is the decision tree (:meth:`.tree.ContextDependency.to_dict`); files without it (written
before triphones existed) load as monophone models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from asrkit.fileio import atomic_write
from asrkit.models.hmm_gmm.gmm import DiagGMM
from asrkit.models.hmm_gmm.topology import TransitionModel

__all__ = ["FORMAT", "AcousticModel"]

FORMAT = "asrkit.hmm_gmm"
"""The ``format`` field of saved models."""
_VERSION = 1


class AcousticModel:
    """Transition model and pdfs of an HMM-GMM system.

    Args:
        tmodel: the transition model (phones, topology, tids, transition probabilities).
        gmm: one GMM per pdf of ``tmodel``.
        meta: plain metadata saved with the model (e.g. feature type, training options).

    Raises:
        ValueError: ``gmm`` has a different number of pdfs than ``tmodel``.
    """

    def __init__(self, tmodel: TransitionModel, gmm: DiagGMM,
                 meta: Mapping[str, object] | None = None) -> None:
        if gmm.num_pdfs != tmodel.num_pdfs:
            raise ValueError(f"the GMM has {gmm.num_pdfs} pdfs, the transition model "
                             f"{tmodel.num_pdfs}")
        self.tmodel = tmodel
        self.gmm = gmm
        self.meta = dict(meta or {})

    @property
    def device(self) -> torch.device:
        """Device of the GMM parameters."""
        return self.gmm.device

    @property
    def feat_dim(self) -> int:
        """Feature dimension ``F``."""
        return self.gmm.feat_dim

    @property
    def num_pdfs(self) -> int:
        """Number of pdfs ``S``."""
        return self.gmm.num_pdfs

    @property
    def num_gauss(self) -> int:
        """Total number of Gaussians."""
        return self.gmm.num_gauss

    def loglik(self, feats: torch.Tensor) -> torch.Tensor:
        """``(T, S)`` log-likelihoods of ``(T, F)`` frames under every pdf."""
        return self.gmm.loglik(feats)

    def to(self, device: torch.device | str) -> AcousticModel:
        """The model with its GMM on ``device`` (the transition model stays on the CPU)."""
        return AcousticModel(self.tmodel, self.gmm.to(device), self.meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (format in the module docstring); returns ``path``."""
        path = Path(path)
        obj = {"format": FORMAT, "version": _VERSION, "transitions": self.tmodel.to_dict(),
               "gmm": self.gmm.state_dict(), "meta": dict(self.meta)}
        with atomic_write(path, "wb") as f:
            torch.save(obj, f)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> AcousticModel:
        """Read a model written by :meth:`save` (``weights_only`` loading, so a file cannot run
        code).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not an asrkit HMM-GMM model or has another version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"{path}: not an asrkit HMM-GMM model (format field "
                             f"{obj.get('format') if isinstance(obj, dict) else None!r})")
        if obj.get("version") != _VERSION:
            raise ValueError(f"{path}: model version {obj.get('version')!r}, expected "
                             f"{_VERSION}")
        return cls(TransitionModel.from_dict(obj["transitions"]),
                   DiagGMM.from_state_dict(obj["gmm"], device), obj.get("meta", {}))

    def __repr__(self) -> str:
        return f"AcousticModel({self.tmodel!r}, {self.gmm!r})"
