"""Training data: features from ``feats.scp`` read lazily, batches by total frames.

Features stay on disk in Kaldi ark files and are read on demand through ``kaldiio`` (one seek
per utterance), so a corpus larger than memory trains the same way as AN4. Each process keeps
its ark files open (:class:`FeatureDataset`), so a read is a seek, not an ``open()`` per
utterance (a metadata round trip on a network filesystem). What stays in memory is
O(#utterances) but compact: the ids, lengths and a dict id -> row as Python objects (about
160 bytes an utterance), the ark positions and token ids in numpy arrays (12 bytes an
utterance, 4 a token; arrays hold no per-item objects, so forked DataLoader workers do not
copy them page by page as reference counts change). Measured (scripts/bench/data_scaling.py):
200 bytes an utterance with AN4's 6 tokens, 480 with mini LibriSpeech's 76 BPE tokens, that is
55-130 MB for LibriSpeech 960 h (281k utterances). Batches are formed
by length, ESPnet's ``batch_bins`` idea: utterances sorted by frames are grouped so that
``longest × count`` (padded frames) stays under ``max_frames``; the batch order is shuffled per
epoch with a seed, so it is reproducible and a resumed run can skip batches already seen.
"""

from __future__ import annotations

import logging
import os
import re
from array import array
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

import kaldiio
import numpy as np
import torch
from torch.utils.data import Dataset

from asrkit.data.datadir import read_kaldi_map
from asrkit.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["FeatureDataset", "PackedTokens", "collate", "frame_batches", "shard_batches"]

# "<ark path>:<byte offset>", what asrkit features (and Kaldi's ark,scp: wspecifiers) write;
# anything else (pipes, "[...]" slices) is kept verbatim and read by kaldiio.load_mat
_ARK_OFFSET = re.compile(r"^(?P<ark>[^|\[\]]*[^|\[\]\s]):(?P<off>[0-9]+)$")


class PackedTokens(Sequence):
    """Token id lists of many utterances in one flat int32 array plus offsets.

    A list of Python int lists costs about 36 bytes per token (an int object and a pointer)
    plus 56 per utterance; this costs 4 and 8, and holds no Python object per utterance.
    ``tokens[i]`` is utterance i's ids as a new ``list[int]``.
    """

    def __init__(self) -> None:
        self._flat = array("i")
        self._ends = array("q")

    def append(self, ids: list[int]) -> None:
        """Add one utterance's ids."""
        self._flat.extend(ids)
        self._ends.append(len(self._flat))

    def freeze(self) -> PackedTokens:
        """Move the ids into numpy arrays (after the last :meth:`append`); returns self."""
        self._flat = np.frombuffer(self._flat, dtype=np.int32).copy()
        self._ends = np.frombuffer(self._ends, dtype=np.int64).copy()
        return self

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._ends)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"token list index {i} out of range ({n} utterances)")
        start = int(self._ends[i - 1]) if i else 0
        return [int(t) for t in self._flat[start:int(self._ends[i])]]

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return self._flat.itemsize * len(self._flat) + self._ends.itemsize * len(self._ends)


class _OpenFiles(MutableMapping):
    """``{ark path: open file}`` for ``kaldiio.load_mat(fd_dict=...)``, at most ``maxsize``
    open; the least recently used one is closed to make room."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._files: OrderedDict = OrderedDict()

    def __getitem__(self, key):
        f = self._files[key]
        self._files.move_to_end(key)
        return f

    def __setitem__(self, key, f) -> None:
        while len(self._files) >= self.maxsize:
            self._files.popitem(last=False)[1].close()
        self._files[key] = f

    def __delitem__(self, key) -> None:
        self._files.pop(key).close()

    def __iter__(self):
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()


class FeatureDataset(Dataset):
    """Utterances of a feature data dir (``feats.scp``, ``utt2num_frames``, optional ``text``).

    Args:
        data_dir: output of ``asrkit features`` (a Kaldi data dir with ``feats.scp``).
        tokenizer: tokenizer for ``text``; None for decoding without references.
        max_frames: utterances longer than this (10 ms frames) are skipped and logged.
        min_frames: utterances shorter than this are skipped and logged (the ×4 front end
            needs at least 7 frames).
        max_open_files: ark files each process keeps open (least recently used closed
            first); ``asrkit features`` writes one ark per job, so this is rarely reached.
        targets: ``{utt: ids}`` given instead of a tokenizer (per-frame pdf ids of
            ``model=hybrid``): ``tokens[i]`` is then ``targets[ids[i]]``, and utterances
            without an entry are skipped and logged.

    Attributes:
        ids: utterance ids (list of str), C-sorted, of the utterances kept.
        lengths: their frame counts (list of int).
        tokens: their token ids (:class:`PackedTokens`; ``tokens[i]`` is a list of int).

    Reads: an entry ``<ark>:<offset>`` of ``feats.scp`` is read by a seek in a file this
    process keeps open (``kaldiio.load_mat`` with ``fd_dict``), not an ``open()`` per
    utterance. The handles belong to the process that opened them: a forked DataLoader
    worker opens its own (a shared file position would mix up reads), and pickling (spawned
    workers) drops them. Other entries (``cmd |`` pipes, ``[...]`` slices) are read as
    ``kaldiio`` reads them. One process reads from one thread at a time.

    Raises:
        FileNotFoundError: when ``feats.scp`` is missing (run ``asrkit features`` first).
        asrkit.data.datadir.DataDirError: malformed ``text`` / ``utt2num_frames`` lines.
    """

    def __init__(self, data_dir: str | os.PathLike, tokenizer: Tokenizer | None = None, *,
                 max_frames: int = 100000, min_frames: int = 7, max_open_files: int = 64,
                 targets: Mapping[str, Sequence[int]] | None = None):
        if targets is not None and tokenizer is not None:
            raise ValueError("FeatureDataset: give a tokenizer or targets, not both")
        d = Path(data_dir)
        if not (d / "feats.scp").is_file():
            raise FileNotFoundError(f"{d}/feats.scp not found; run 'asrkit features' first")
        scp = _read_feats_scp(d / "feats.scp")
        frames = {u: int(n) for u, n in read_kaldi_map(d / "utt2num_frames").items()}
        texts = read_kaldi_map(d / "text") if (d / "text").is_file() and tokenizer else {}
        self.ids: list[str] = []
        self.lengths: list[int] = []
        self.tokens = PackedTokens()
        # where each utterance's matrix is: row _row[utt] of _ark (an index into _arks, or -1
        # when _raw[row] holds the scp entry) and _offset. Looked up by id, so code that
        # thins ids/lengths/tokens in step (loop._thin_dataset) still reads the right rows.
        self._arks: list[str] = []
        ark_index: dict[str, int] = {}
        ark, offset = array("i"), array("q")
        self._raw: dict[int, str] = {}
        self._row: dict[str, int] = {}
        self.max_open_files = max_open_files
        self._files: _OpenFiles | None = None
        self._files_pid: int | None = None
        skipped = 0
        for utt in sorted(frames, key=lambda u: u.encode("utf-8")):
            n = frames[utt]
            if not min_frames <= n <= max_frames:
                skipped += 1
                logger.warning("%s: utterance %s has %d frames, outside [%d, %d]; skipped",
                               d, utt, n, min_frames, max_frames)
                continue
            toks: list[int] = []
            if targets is not None:
                if utt not in targets:
                    logger.warning("%s: utterance %s has no targets; skipped", d, utt)
                    skipped += 1
                    continue
                toks = list(targets[utt])
            elif tokenizer is not None:
                if utt not in texts:
                    logger.warning("%s: utterance %s has no text; skipped", d, utt)
                    skipped += 1
                    continue
                toks = tokenizer.encode(texts[utt])
                if not toks:
                    logger.warning("%s: utterance %s tokenises to nothing; skipped", d, utt)
                    skipped += 1
                    continue
            entry = scp.pop(utt, None)
            if entry is None:
                logger.warning("%s: utterance %s has no feats.scp entry; skipped", d, utt)
                skipped += 1
                continue
            self._row[utt] = len(ark)
            m = _ARK_OFFSET.match(entry)
            if m:
                k = ark_index.setdefault(m["ark"], len(ark_index))
                if k == len(self._arks):
                    self._arks.append(m["ark"])
                ark.append(k)
                offset.append(int(m["off"]))
            else:
                self._raw[len(ark)] = entry
                ark.append(-1)
                offset.append(0)
            self.ids.append(utt)
            self.lengths.append(n)
            self.tokens.append(toks)
        if not self.ids:
            raise ValueError(f"{d}: no usable utterances ({skipped} skipped)")
        self.tokens.freeze()
        self._ark = np.frombuffer(ark, dtype=np.int32).copy()
        self._offset = np.frombuffer(offset, dtype=np.int64).copy()
        logger.info("%s: %d utterances, %d skipped", d, len(self.ids), skipped)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, list[int]]:
        """(utt id, features (T, F) float32, token ids)."""
        return self.ids[i], torch.from_numpy(self.read_feats(i)).float(), self.tokens[i]

    def read_feats(self, i: int) -> np.ndarray:
        """Features (T, F) of utterance ``ids[i]``, a writable array of the ark's dtype."""
        row = self._row[self.ids[i]]
        k = int(self._ark[row])
        if k < 0:
            return np.array(kaldiio.load_mat(self._raw[row]))
        if self._files_pid != os.getpid():  # first read here, or in a forked worker
            self._files, self._files_pid = _OpenFiles(self.max_open_files), os.getpid()
        return np.array(kaldiio.load_mat(f"{self._arks[k]}:{int(self._offset[row])}",
                                         fd_dict=self._files))

    def close(self) -> None:
        """Close the ark files this process opened (reads reopen them)."""
        if self._files is not None and self._files_pid == os.getpid():
            self._files.close()
        self._files = self._files_pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = state["_files_pid"] = None  # open files do not pickle
        return state


def _read_feats_scp(path: Path) -> dict[str, str]:
    """``{utt: rxspecifier}`` of a ``feats.scp`` (kaldiio.load_scp's parsing)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            parts = line.split(None, 1)
            if len(parts) != 2 or not parts[1].strip():
                raise ValueError(f"{path}:{no}: expected '<utt> <ark>:<offset>', got "
                                 f"{line.rstrip()!r}")
            out[parts[0]] = parts[1].strip()
    return out


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
