"""The decode stage: a trained experiment + a feature data dir → Kaldi ``text`` hypotheses."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.ctc import ctc_greedy
from asrkit.fileio import atomic_write, stage_log
from asrkit.text.tokenizer import Tokenizer
from asrkit.train.checkpoint import load_model
from asrkit.train.data import FeatureDataset, collate, frame_batches

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "DecodeReport", "decode_data_dir", "pick_device"]

METHODS = ("ctc_greedy",)


@dataclass
class DecodeReport:
    """What a decode run did: output ``text`` path, utterances, audio seconds, wall seconds."""

    text: Path
    num_utts: int
    audio_seconds: float
    wall_seconds: float

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding wall time / audio duration."""
        return self.wall_seconds / max(self.audio_seconds, 1e-9)


def pick_device(device: str | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def decode_data_dir(exp_dir: str | os.PathLike, data_dir: str | os.PathLike,
                    out_dir: str | os.PathLike | None = None, *, method: str = "ctc_greedy",
                    checkpoint: str | os.PathLike | None = None, avg: int = 1,
                    device: str | None = "auto", max_frames: int = 60000,
                    progress=None) -> DecodeReport:
    """Decode every utterance of a feature data dir and write ``out_dir/text``.

    Args:
        exp_dir: experiment written by ``asrkit train`` (``config.yaml``, ``checkpoints/``).
        data_dir: data dir with ``feats.scp`` and ``utt2num_frames`` (``asrkit features``).
        out_dir: default ``exp_dir/decode_<data dir name>_<method>``.
        method: one of :data:`METHODS`.
        checkpoint: decode this checkpoint instead of the average of the last ``avg`` epochs.
        avg: number of last epoch checkpoints to average.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:0"``…
        max_frames: padded frames per batch.
        progress: optional callable receiving the number of utterances just decoded.

    Returns:
        A :class:`DecodeReport` (RTF = wall time / audio time, model loading excluded).

    Raises:
        ValueError: unknown ``method``.
        FileNotFoundError: missing experiment files or ``feats.scp``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
    exp_dir, data_dir = Path(exp_dir), Path(data_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / f"decode_{data_dir.name}_{method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage_log(out_dir / "decode.log"):
        dev = pick_device(device)
        model, cfg = load_model(exp_dir, checkpoint=checkpoint, avg=avg, device=dev)
        tok = Tokenizer(cfg["data"]["tokenizer"])
        ds = FeatureDataset(data_dir, None, max_frames=10**9)
        hyps: dict[str, str] = {}
        start = time.perf_counter()
        for batch_idx in frame_batches(ds.lengths, max_frames, shuffle=False):
            batch = collate([ds[i] for i in batch_idx])
            log_probs, lens = model.ctc_log_probs(batch["feats"].to(dev),
                                                  batch["feat_lens"].to(dev))
            for utt, ids in zip(batch["ids"], ctc_greedy(log_probs, lens)):
                hyps[utt] = tok.decode(ids)
            if progress:
                progress(len(batch_idx))
        wall = time.perf_counter() - start
        with atomic_write(out_dir / "text") as f:
            for utt in sorted(hyps, key=lambda u: u.encode("utf-8")):
                f.write(f"{utt} {hyps[utt]}\n".replace(" \n", "\n"))
        durs = read_kaldi_map(data_dir / "utt2dur") if (data_dir / "utt2dur").is_file() else {}
        audio = sum(float(durs[u]) if u in durs else n * 0.01
                    for u, n in zip(ds.ids, ds.lengths))
        report = DecodeReport(out_dir / "text", len(hyps), audio, wall)
        logger.info("decoded %d utterances (%.1f s of audio) in %.1f s on %s, RTF %.4f",
                    report.num_utts, audio, wall, dev, report.rtf)
        return report
