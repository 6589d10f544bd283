"""Token streams for LM pretraining on text larger than memory.

:func:`tokenize_to_bin` reads a text file line by line (one sentence a line, or Kaldi
``text`` with utterance ids) and writes its sentencepiece ids, each sentence followed by
``<sos/eos>`` (id 2), as one flat little-endian array on disk: ``uint16`` while the vocabulary
fits, ``uint32`` otherwise. Memory stays bounded by one chunk of lines whatever the text's
size. :class:`PackedBlocks` memory-maps that array and draws training blocks of ``L + 1``
consecutive tokens at random offsets (GPT-2 / nanoGPT-style packing: sentences run on across
block boundaries, separated by ``<sos/eos>``), reproducibly from ``(seed, step)`` so that a
resumed run draws exactly the blocks the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from asrkit.fileio import atomic_write
from asrkit.text.tokenizer import SOS_EOS_ID, Tokenizer, iter_transcripts

__all__ = ["PackedBlocks", "tokenize_to_bin"]

logger = logging.getLogger(__name__)

_CHUNK_LINES = 20000


def _source_stamp(path: Path, tokenizer: Tokenizer, utt_ids: bool) -> dict:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime),
            "tokenizer": str(tokenizer.model_path.resolve()),
            "tokenizer_size": tokenizer.model_path.stat().st_size, "utt_ids": utt_ids,
            "vocab_size": tokenizer.vocab_size}


def tokenize_to_bin(text_path: str | os.PathLike, tokenizer: Tokenizer,
                    out_path: str | os.PathLike, *, utt_ids: bool = False) -> dict:
    """Tokenize a text file into a flat id array ``out_path`` (+ ``out_path.json``, its
    description), streaming; skipped when the description says the same text and tokenizer
    made it (resumable: the array is renamed into place only when complete).

    Args:
        text_path: UTF-8 text, one sentence a line (blank lines skipped) or, with
            ``utt_ids``, Kaldi ``text``.
        tokenizer: the sentencepiece tokenizer (ids as in :mod:`asrkit.text.tokenizer`).
        out_path: the array file.
        utt_ids: lines start with an utterance id (dropped).

    Returns:
        The description: ``tokens``, ``sentences``, ``words``, ``dtype`` and the source stamp.

    Raises:
        FileNotFoundError: no ``text_path``.
        ValueError: a Kaldi line without words (file and line named), or no sentence at all.
    """
    text_path, out = Path(text_path), Path(out_path)
    if not text_path.is_file():
        raise FileNotFoundError(f"LM text {text_path} not found")
    stamp = _source_stamp(text_path, tokenizer, utt_ids)
    meta_path = out.with_name(out.name + ".json")
    if out.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if all(meta.get(k) == v for k, v in stamp.items()):
            return meta
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.uint32
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n_tok = n_sent = n_words = 0
    with open(tmp, "wb") as f:
        chunk: list[str] = []

        def flush() -> None:
            nonlocal n_tok
            ids = tokenizer.sp.encode(chunk, out_type=int)
            flat = np.fromiter((t for s in ids for t in (*s, SOS_EOS_ID)), dtype=dtype)
            f.write(flat.tobytes())
            n_tok += len(flat)
            chunk.clear()

        for sent in iter_transcripts(text_path, utt_ids=utt_ids):
            chunk.append(sent)
            n_sent += 1
            n_words += sent.count(" ") + 1
            if len(chunk) >= _CHUNK_LINES:
                flush()
        if chunk:
            flush()
        f.flush()
        os.fsync(f.fileno())
    if n_sent == 0:
        tmp.unlink()
        raise ValueError(f"{text_path}: no sentence to train on")
    os.replace(tmp, out)
    meta = {**stamp, "tokens": n_tok, "sentences": n_sent, "words": n_words,
            "dtype": np.dtype(dtype).name}
    with atomic_write(meta_path) as f:
        json.dump(meta, f, indent=1)
    logger.info("%s: %d sentences, %d words -> %d tokens (%.2f per word) in %s", text_path,
                n_sent, n_words, n_tok, n_tok / max(1, n_words), out)
    return meta


class PackedBlocks:
    """Random blocks of a token array written by :func:`tokenize_to_bin`, memory-mapped.

    Args:
        bin_path: the array file (its ``.json`` description beside it).
        block_size: ``L``: each sample is ``L + 1`` consecutive tokens (inputs ``0..L-1``,
            targets ``1..L``).
        seed: with the step number, fixes every batch.

    Raises:
        FileNotFoundError: no array or description.
        ValueError: fewer than ``L + 1`` tokens.
    """

    def __init__(self, bin_path: str | os.PathLike, block_size: int, seed: int = 0) -> None:
        bin_path = Path(bin_path)
        meta_path = bin_path.with_name(bin_path.name + ".json")
        if not bin_path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"{bin_path} (and {meta_path.name}) not found; write it "
                                    "with asrkit.lm.textdata.tokenize_to_bin")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.data = np.memmap(bin_path, dtype=meta["dtype"], mode="r")
        self.block_size, self.seed = int(block_size), int(seed)
        if len(self.data) < self.block_size + 1:
            raise ValueError(f"{bin_path}: {len(self.data)} tokens, fewer than block_size + 1 "
                             f"= {self.block_size + 1}")

    def __len__(self) -> int:
        """Tokens in the array."""
        return len(self.data)

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of training step ``step``: ``(B, L)`` inputs and ``(B, L)`` targets
        (int64), the same for the same ``(seed, step)``."""
        g = np.random.default_rng([self.seed, int(step)])
        starts = g.integers(0, len(self.data) - self.block_size, size=batch_size)
        rows = np.stack([self.data[s:s + self.block_size + 1] for s in starts]).astype(np.int64)
        x = torch.from_numpy(rows)
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()
