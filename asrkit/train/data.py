"""Training data: features from ``feats.scp`` read lazily, batches by total frames.

Features stay on disk in Kaldi ark files and are read on demand through ``kaldiio`` (one seek
per utterance), so a corpus larger than memory trains the same way as AN4. Batches are formed
by length, ESPnet's ``batch_bins`` idea: utterances sorted by frames are grouped so that
``longest × count`` (padded frames) stays under ``max_frames``; the batch order is shuffled per
epoch with a seed, so it is reproducible and a resumed run can skip batches already seen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import kaldiio
import torch
from torch.utils.data import Dataset

from asrkit.data.datadir import read_kaldi_map
from asrkit.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["FeatureDataset", "collate", "frame_batches", "shard_batches"]


class FeatureDataset(Dataset):
    """Utterances of a feature data dir (``feats.scp``, ``utt2num_frames``, optional ``text``).

    Args:
        data_dir: output of ``asrkit features`` (a Kaldi data dir with ``feats.scp``).
        tokenizer: tokenizer for ``text``; None for decoding without references.
        max_frames: utterances longer than this (10 ms frames) are skipped and logged.
        min_frames: utterances shorter than this are skipped and logged (the ×4 front end
            needs at least 7 frames).

    Raises:
        FileNotFoundError: when ``feats.scp`` is missing (run ``asrkit features`` first).
        asrkit.data.datadir.DataDirError: malformed ``text`` / ``utt2num_frames`` lines.
    """

    def __init__(self, data_dir: str | os.PathLike, tokenizer: Tokenizer | None = None, *,
                 max_frames: int = 100000, min_frames: int = 7):
        d = Path(data_dir)
        if not (d / "feats.scp").is_file():
            raise FileNotFoundError(f"{d}/feats.scp not found; run 'asrkit features' first")
        self.feats = kaldiio.load_scp(str(d / "feats.scp"))
        frames = {u: int(n) for u, n in read_kaldi_map(d / "utt2num_frames").items()}
        texts = read_kaldi_map(d / "text") if (d / "text").is_file() and tokenizer else {}
        self.ids: list[str] = []
        self.lengths: list[int] = []
        self.tokens: list[list[int]] = []
        skipped = 0
        for utt in sorted(frames, key=lambda u: u.encode("utf-8")):
            n = frames[utt]
            if not min_frames <= n <= max_frames:
                skipped += 1
                logger.warning("%s: utterance %s has %d frames, outside [%d, %d]; skipped",
                               d, utt, n, min_frames, max_frames)
                continue
            toks: list[int] = []
            if tokenizer is not None:
                if utt not in texts:
                    logger.warning("%s: utterance %s has no text; skipped", d, utt)
                    skipped += 1
                    continue
                toks = tokenizer.encode(texts[utt])
                if not toks:
                    logger.warning("%s: utterance %s tokenises to nothing; skipped", d, utt)
                    skipped += 1
                    continue
            self.ids.append(utt)
            self.lengths.append(n)
            self.tokens.append(toks)
        if not self.ids:
            raise ValueError(f"{d}: no usable utterances ({skipped} skipped)")
        logger.info("%s: %d utterances, %d skipped", d, len(self.ids), skipped)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, list[int]]:
        """(utt id, features (T, F) float32, token ids)."""
        return self.ids[i], torch.from_numpy(self.feats[self.ids[i]].copy()).float(), \
            self.tokens[i]


def frame_batches(lengths: list[int], max_frames: int, *, shuffle: bool = True, seed: int = 0,
                  epoch: int = 0, max_batch_size: int = 512) -> list[list[int]]:
    """Group utterance indices into batches whose padded size stays under ``max_frames``.

    Args:
        lengths: frames (10 ms) per utterance.
        max_frames: bound on ``longest × batch size``; an utterance longer than it forms a
            batch of one.
        shuffle: shuffle the batch order (not the batch contents) with ``seed + epoch``.
        seed, epoch: make the order reproducible per epoch (needed to resume mid-epoch).
        max_batch_size: cap on utterances per batch.

    Returns:
        List of batches, each a list of dataset indices sorted longest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (longest * (len(cur) + 1) > max_frames or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int, *,
                  remainder: str = "drop", skip: int = 0) -> list[list[int]]:
    """This rank's share of an epoch's batch list, the same count on every rank.

    The list is first made a multiple of ``world_size`` long (``remainder="drop"``: the last
    ``len % world_size`` batches are left out; ``"pad"``: the first ones are appended again,
    as ``DistributedSampler`` pads), then the first ``skip`` batches of it are removed (the
    batches all ranks together already trained on before a mid-epoch resume) and rank
    ``rank`` takes every ``world_size``-th batch from position ``rank`` on. With
    ``world_size == 1`` this is ``batches[skip:]``. When the world size changed between a
    kill and the resume, ``skip`` need not be a multiple of it; the rest is trimmed again.

    Args:
        batches: the epoch's batches in the shared seeded order (:func:`frame_batches`).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes.
        remainder: ``"drop"`` or ``"pad"``.
        skip: global batches of this epoch already consumed (``batches_in_epoch × world``).

    Returns:
        ``(len(full) - skip) // world_size`` batches, ``full`` being the trimmed or padded
        list, so every rank gets the same count.

    Raises:
        ValueError: bad ``rank``/``world_size``/``remainder``, or fewer batches than ranks
            with ``remainder="drop"`` (nothing to train on; lower ``data.max_frames``).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if remainder not in ("drop", "pad"):
        raise ValueError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    if world_size == 1:
        return batches[skip:]
    n = len(batches)
    if remainder == "drop":
        if n < world_size:
            raise ValueError(f"{n} batch(es) cannot be shared by {world_size} ranks; lower "
                             "data.max_frames or use data.shard_remainder=pad")
        full = batches[: n - n % world_size]
    else:
        if n == 0:
            raise ValueError("no batches to share")
        pad = (-n) % world_size
        full = batches + [batches[i % n] for i in range(pad)]
    rest = full[skip:]
    rest = rest[: len(rest) - len(rest) % world_size]
    return rest[rank::world_size]


def collate(items: list[tuple[str, torch.Tensor, list[int]]]) -> dict:
    """Pad a list of dataset items.

    Returns:
        dict with ``ids`` (list[str]), ``feats`` (B, T, F), ``feat_lens`` (B,),
        ``targets`` (B, U) padded with −1, ``target_lens`` (B,).
    """
    ids = [it[0] for it in items]
    feats = torch.nn.utils.rnn.pad_sequence([it[1] for it in items], batch_first=True)
    feat_lens = torch.tensor([it[1].shape[0] for it in items])
    toks = [torch.tensor(it[2], dtype=torch.long) for it in items]
    targets = torch.nn.utils.rnn.pad_sequence(toks, batch_first=True, padding_value=-1) \
        if any(len(t) for t in toks) else torch.zeros(len(items), 0, dtype=torch.long)
    target_lens = torch.tensor([len(t) for t in toks])
    return {"ids": ids, "feats": feats, "feat_lens": feat_lens, "targets": targets,
            "target_lens": target_lens}
