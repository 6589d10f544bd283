#!/usr/bin/env python3
"""Teacher-forced token accuracy of an attention decoder on a data dir: how well the decoder
predicts each reference token from the reference prefix (the training objective's view),
to set beside the WER of free-running attention decoding. A large gap between training and
dev accuracy says the decoder does not generalise; a high dev accuracy with a poor decoding
WER points at the search instead.

    python scripts/attention_accuracy.py EXP DATA_DIR [DATA_DIR ...] --avg 5 [--out FILE.json]

DATA_DIR: a feature data dir of ``asrkit features`` (``feats.scp``, ``utt2num_frames``, ``text``).
Prints, per data dir: token accuracy (``<sos/eos>`` included, as the training log's ``acc``),
decoder cross-entropy per utterance (label smoothing as trained), tokens, utterances.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from asrkit.data.dataset import FeatureDataset, collate, frame_batches
from asrkit.exp.checkpoint import load_model
from asrkit.exp.expdir import load_exp_tokenizer
from asrkit.fileio import atomic_write


def teacher_forced_accuracy(model: torch.nn.Module, ds: FeatureDataset, device: torch.device,
                            max_frames: int = 20000) -> dict:
    """Token accuracy and decoder loss of ``model`` (a CTC/attention model with a decoder) on
    every utterance of ``ds`` under teacher forcing, batched by ``max_frames`` padded frames.

    Returns:
        ``{"accuracy": fraction in [0, 1], "loss_per_utt": float, "tokens": int,
        "utterances": int}``; tokens count each utterance's tokens + ``<sos/eos>``.

    Raises:
        RuntimeError: the model has no attention decoder.
    """
    if getattr(model, "decoder", None) is None:
        raise RuntimeError("this model has no attention decoder (model.decoder is null)")
    model.eval()
    correct = loss = 0.0
    tokens = utts = 0
    with torch.no_grad():
        for idx in frame_batches(ds.lengths, max_frames, shuffle=False):
            b = collate([ds[i] for i in idx])
            enc, lens = model.encode(b["feats"].to(device), b["feat_lens"].to(device))
            tl = b["target_lens"].to(device)
            att, acc = model.attention_loss_from_encoder(enc, lens, b["targets"].to(device), tl)
            n = int((tl + 1).sum())  # + <sos/eos> per utterance, as the loss counts them
            correct += float(acc) * n
            loss += float(att) * len(idx)
            tokens += n
            utts += len(idx)
    return {"accuracy": correct / max(tokens, 1), "loss_per_utt": loss / max(utts, 1),
            "tokens": tokens, "utterances": utts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exp", type=Path)
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--avg", type=int, default=1, help="average the last N epoch checkpoints")
    ap.add_argument("--checkpoint", type=Path, help="or this checkpoint file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-frames", type=int, default=20000)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    model, cfg = load_model(args.exp, checkpoint=args.checkpoint, avg=args.avg, device=dev)
    tok = load_exp_tokenizer(args.exp, cfg)
    rows = []
    for d in args.data:
        r = teacher_forced_accuracy(model, FeatureDataset(d, tok, max_frames=10**9), dev,
                                    args.max_frames)
        rows.append({"data": str(d), **r})
        print(f"{d}: teacher-forced token accuracy {100 * r['accuracy']:.1f} %, decoder loss "
              f"{r['loss_per_utt']:.3f} per utterance ({r['tokens']} tokens, "
              f"{r['utterances']} utterances)")
    if args.out:
        with atomic_write(args.out) as f:
            json.dump({"exp": str(args.exp), "avg": args.avg, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
