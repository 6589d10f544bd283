"""Cepstral mean and variance normalisation (CMVN) statistics in Kaldi's format.

The statistics follow Kaldi's ``compute-cmvn-stats``: a ``(2, F+1)`` float64 matrix whose
row 0 holds the per-dimension sum of the features over all frames followed by the frame count,
and row 1 holds the per-dimension sum of squares followed by a 0. Global stats are stored as
one binary Kaldi matrix (what ``compute-cmvn-stats scp:feats.scp cmvn.ark`` writes and what
ESPnet's ``global_cmvn`` reads with ``kaldiio.load_mat``); per-speaker stats are an ark/scp
pair keyed by speaker id (Kaldi's ``cmvn.scp``). Normalisation follows ``apply-cmvn``.

Also hosts the small ark/scp writing helpers (:func:`write_ark`, :func:`write_scp`) used by
the feature stage: kaldiio writes every matrix, these only make the files atomic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import kaldiio
import numpy as np
import torch

from asrkit.fileio import atomic_write

__all__ = [
    "GlobalCMVN",
    "apply_cmvn",
    "compute_cmvn_stats",
    "compute_cmvn_stats_per_speaker",
    "read_cmvn_stats",
    "read_cmvn_stats_per_speaker",
    "read_spk2utt",
    "write_ark",
    "write_cmvn_stats",
    "write_cmvn_stats_per_speaker",
    "write_scp",
]

logger = logging.getLogger(__name__)

#: Variance floor of Kaldi's ``apply-cmvn`` (``ApplyCmvn`` in ``transform/cmvn.cc``).
VAR_FLOOR = 1e-20


def compute_cmvn_stats(feats_iter: Iterable[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Accumulate CMVN statistics over feature matrices, like Kaldi's ``compute-cmvn-stats``.

    Args:
        feats_iter: feature matrices, each ``(T, F)`` with the same ``F``; ``T`` may be 0.

    Returns:
        ``(2, F+1)`` float64 array: ``[[sum_t x_t..., T_total], [sum_t x_t**2..., 0]]``.

    Raises:
        ValueError: if the iterable is empty, a matrix is not 2-D, or dimensions disagree.
    """
    stats: np.ndarray | None = None
    for i, feats in enumerate(feats_iter):
        x = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else feats
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"feature matrix {i} has shape {x.shape}, expected (T, F)")
        if stats is None:
            stats = np.zeros((2, x.shape[1] + 1), dtype=np.float64)
        elif x.shape[1] != stats.shape[1] - 1:
            raise ValueError(
                f"feature matrix {i} has dim {x.shape[1]}, expected {stats.shape[1] - 1}")
        stats[0, :-1] += x.sum(axis=0)
        stats[1, :-1] += np.square(x).sum(axis=0)
        stats[0, -1] += x.shape[0]
    if stats is None:
        raise ValueError("no feature matrices given: cannot compute CMVN stats")
    return stats


def _check_stats(stats: np.ndarray, where: str = "stats") -> np.ndarray:
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
        raise ValueError(f"{where}: CMVN stats have shape {stats.shape}, expected (2, F+1)")
    return stats


def write_ark(ark_path: str | os.PathLike,
              items: Iterable[tuple[str, np.ndarray]]) -> dict[str, str]:
    """Write matrices to a binary Kaldi ark atomically and return their scp entries.

    kaldiio writes every record (``key <space> binary matrix``); the file appears at
    ``ark_path`` only once all items were written (:func:`asrkit.fileio.atomic_write`).
    ``items`` may be a generator: records stream to disk as it yields.

    Args:
        ark_path: output ``.ark`` path.
        items: ``(key, matrix)`` pairs; keys must not contain whitespace.

    Returns:
        ``{key: "<absolute ark path>:<byte offset>"}`` in write order, i.e. the scp lines
        Kaldi's ``ark,scp:`` wspecifier would have written (pass to :func:`write_scp`).

    Raises:
        ValueError: for an empty key or one containing whitespace.
    """
    ark_abs = Path(ark_path).resolve()
    entries: dict[str, str] = {}
    with atomic_write(ark_path, "wb") as f:
        for key, mat in items:
            if not key or len(key.split()) != 1 or key.strip() != key:
                raise ValueError(f"invalid ark key {key!r}: must be non-empty without spaces")
            # kaldiio's own scp offset: position after "key " where the matrix header starts.
            offset = f.tell() + len((key + " ").encode("utf-8"))
            kaldiio.save_ark(f, {key: mat})
            entries[key] = f"{ark_abs}:{offset}"
    return entries


def write_scp(scp_path: str | os.PathLike, entries: Mapping[str, str]) -> None:
    """Write a Kaldi scp file (``key value`` lines, in the mapping's order) atomically."""
    with atomic_write(scp_path) as f:
        for key, value in entries.items():
            f.write(f"{key} {value}\n")


def write_cmvn_stats(path: str | os.PathLike, stats: np.ndarray) -> None:
    """Write global CMVN stats as one binary Kaldi double matrix (``kaldiio.save_mat`` format).

    This is the file ``compute-cmvn-stats scp:feats.scp cmvn.ark`` writes (no key), readable
    with Kaldi's ``copy-matrix``, ``kaldiio.load_mat`` and :func:`read_cmvn_stats`.

    Args:
        path: output file, conventionally ``cmvn.ark``.
        stats: ``(2, F+1)`` array from :func:`compute_cmvn_stats`.

    Raises:
        ValueError: if ``stats`` does not have shape ``(2, F+1)``.
    """
    stats = _check_stats(stats, str(path))
    with atomic_write(path, "wb") as f:
        kaldiio.save_mat(f, stats)


def read_cmvn_stats(path: str | os.PathLike) -> np.ndarray:
    """Read global CMVN stats written by :func:`write_cmvn_stats` or Kaldi.

    Returns:
        ``(2, F+1)`` float64 array.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the matrix is not ``(2, F+1)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CMVN stats file not found: {path}")
    return _check_stats(kaldiio.load_mat(str(path)), str(path))


def read_spk2utt(spk2utt: Mapping[str, Sequence[str]] | str | os.PathLike
                 ) -> dict[str, list[str]]:
    """``{speaker: [utts]}`` from a Kaldi ``spk2utt`` file (or a copy of a mapping).

    Raises:
        ValueError: a line without an utterance (``path:line`` named).
    """
    if isinstance(spk2utt, Mapping):
        return {spk: list(utts) for spk, utts in spk2utt.items()}
    out: dict[str, list[str]] = {}
    with open(spk2utt, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{spk2utt}:{lineno}: expected 'spk utt1 [utt2 ...]', "
                                 f"got {line.rstrip()!r}")
            out[fields[0]] = fields[1:]
    return out


def compute_cmvn_stats_per_speaker(
        feats_scp: str | os.PathLike,
        spk2utt: Mapping[str, Sequence[str]] | str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-speaker CMVN stats, like ``compute-cmvn-stats --spk2utt=ark:spk2utt scp:feats.scp``.

    Utterances missing from ``feats_scp`` are skipped with a warning (as Kaldi does); a speaker
    left without any features is omitted with a warning.

    Args:
        feats_scp: Kaldi ``feats.scp`` with ``(T, F)`` matrices.
        spk2utt: mapping speaker -> utterance ids, or the path of a ``spk2utt`` file.

    Returns:
        ``{speaker: (2, F+1) float64 stats}`` in ``spk2utt`` order.

    Raises:
        ValueError: if no speaker has any features, or feature dims disagree.
    """
    feats = kaldiio.load_scp(str(feats_scp))
    out: dict[str, np.ndarray] = {}
    for spk, utts in read_spk2utt(spk2utt).items():
        present = [u for u in utts if u in feats]
        for u in utts:
            if u not in feats:
                logger.warning("no features for utterance %s (speaker %s) in %s", u, spk,
                               feats_scp)
        if not present:
            logger.warning("speaker %s has no features in %s; no CMVN stats", spk, feats_scp)
            continue
        out[spk] = compute_cmvn_stats(feats[u] for u in present)
    if not out:
        raise ValueError(f"no speaker of spk2utt has features in {feats_scp}")
    return out


def write_cmvn_stats_per_speaker(ark_path: str | os.PathLike, scp_path: str | os.PathLike,
                                 stats: Mapping[str, np.ndarray]) -> None:
    """Write per-speaker stats as a binary ark plus scp (Kaldi's ``cmvn_<set>.ark``/``cmvn.scp``).

    Args:
        ark_path: output ark path.
        scp_path: output scp path (absolute ark paths inside, as Kaldi's ``make_absolute``).
        stats: ``{speaker: (2, F+1) stats}``.

    Raises:
        ValueError: if any stats matrix has the wrong shape.
    """
    checked = {spk: _check_stats(s, f"speaker {spk}") for spk, s in stats.items()}
    write_scp(scp_path, write_ark(ark_path, sorted(checked.items())))


def read_cmvn_stats_per_speaker(scp_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read per-speaker CMVN stats from a Kaldi ``cmvn.scp``: ``{speaker: (2, F+1) stats}``."""
    return {spk: _check_stats(m, f"{scp_path}: {spk}")
            for spk, m in kaldiio.load_scp(str(scp_path)).items()}


def _mean_scale(stats: np.ndarray, norm_vars: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(mean, scale)`` of shape ``(F,)`` so that ``(x - mean) * scale`` normalises."""
    stats = _check_stats(stats)
    count = stats[0, -1]
    if count < 1.0:
        raise ValueError(f"insufficient CMVN stats: frame count {count} < 1")
    mean = stats[0, :-1] / count
    if not norm_vars:
        return mean, np.ones_like(mean)
    var = stats[1, :-1] / count - mean ** 2
    n_floored = int((var < VAR_FLOOR).sum())
    if n_floored:
        logger.warning("flooring %d CMVN variances to %g", n_floored, VAR_FLOOR)
    return mean, 1.0 / np.sqrt(np.maximum(var, VAR_FLOOR))


def apply_cmvn(feats: np.ndarray | torch.Tensor, stats: np.ndarray,
               norm_vars: bool = True) -> np.ndarray | torch.Tensor:
    """Normalise features with CMVN stats, like Kaldi's ``apply-cmvn``.

    ``mean = sum / count``; with ``norm_vars``, ``var = sumsq / count - mean**2`` floored at
    ``1e-20`` and the output is ``(x - mean) / sqrt(var)``, else ``x - mean``.

    Args:
        feats: ``(T, F)`` numpy array or tensor (any leading dims ``(..., F)`` broadcast).
        stats: ``(2, F+1)`` stats from :func:`compute_cmvn_stats`.
        norm_vars: also normalise the variance (Kaldi ``--norm-vars``; default True here,
            Kaldi's default is false).

    Returns:
        Normalised features of the same type, shape, dtype (and device) as ``feats``.

    Raises:
        ValueError: if stats are malformed, count < 1, or ``F`` does not match.
    """
    mean, scale = _mean_scale(stats, norm_vars)
    if feats.shape[-1] != mean.shape[0]:
        raise ValueError(f"features have dim {feats.shape[-1]}, CMVN stats dim {mean.shape[0]}")
    if isinstance(feats, torch.Tensor):
        m = torch.as_tensor(mean, dtype=feats.dtype, device=feats.device)
        s = torch.as_tensor(scale, dtype=feats.dtype, device=feats.device)
        return (feats - m) * s
    return ((feats - mean) * scale).astype(feats.dtype, copy=False)


class GlobalCMVN(torch.nn.Module):
    """Apply fixed global CMVN in a model's front end: ``(x - mean) * istd``.

    Args:
        stats: ``(2, F+1)`` Kaldi CMVN stats (numpy or tensor).
        norm_vars: normalise variance too (else ``istd`` is all ones).

    Buffers ``mean`` and ``istd`` (shape ``(F,)``, float32) are saved with the state dict.
    """

    def __init__(self, stats: np.ndarray | torch.Tensor, norm_vars: bool = True) -> None:
        super().__init__()
        if isinstance(stats, torch.Tensor):
            stats = stats.detach().cpu().numpy()
        mean, scale = _mean_scale(stats, norm_vars)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("istd", torch.as_tensor(scale, dtype=torch.float32))

    @classmethod
    def from_file(cls, path: str | os.PathLike, norm_vars: bool = True) -> GlobalCMVN:
        """Build from a global ``cmvn.ark`` (see :func:`read_cmvn_stats`)."""
        return cls(read_cmvn_stats(path), norm_vars=norm_vars)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(B, T, F)`` (or any ``(..., F)``); returns the same shape."""
        return (x - self.mean) * self.istd

    def extra_repr(self) -> str:
        return f"feat_dim={self.mean.shape[0]}"
