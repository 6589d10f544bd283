#!/usr/bin/env python3
"""Benchmark HMM-GMM decoding of one long file on one CPU core.

Usage:
    python scripts/bench/gmm_decode_1min.py --model EXP/tri1 --graph EXP/tri1/graph_kn3 \\
        --data-dir data/test --features-from dump/mfcc/train [--seconds 60] [--repeat 3] \\
        [--out bench_results/gmm_decode_1min.json]

Builds one recording of ``--seconds`` of real speech by concatenating the utterances of
``--data-dir`` (a Kaldi data dir with ``wav.scp``, ``text``; e.g. AN4 test) in order and
cutting the last one at the limit, writes it as a one-utterance data dir in a temporary
directory, computes its features with the feature config of ``--features-from`` (the
training feature dir's ``feature_config.yaml``), and decodes it with
:func:`asrkit.decode.gmm.decode_gmm_data_dir` (``nj=1``, ``torch.set_num_threads(1)``),
``--repeat`` times. Reports the fastest decoding wall time (GMM likelihoods + Viterbi
search, the model, graph and features already loaded), the feature extraction time, and the
real-time factor of each (wall / audio seconds), and the WER of the recording against its
concatenated transcripts as a sanity check (the cut last utterance makes its tail words
partly missing). Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
import yaml

from asrkit.data.audio import load_audio
from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.gmm import decode_gmm_data_dir
from asrkit.features.compute import FeatureConfig, compute_features
from asrkit.fileio import atomic_write
from asrkit.score import score_files


def build_recording(data_dir: Path, seconds: float, out: Path, sr: int = 16000) -> tuple[Path, str]:
    """Concatenate ``data_dir``'s utterances into ``seconds`` of audio; write a data dir at
    ``out`` (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``) and return it with the
    transcript of the utterances used."""
    wavs, text = read_kaldi_map(data_dir / "wav.scp"), read_kaldi_map(data_dir / "text")
    need = int(seconds * sr)
    parts, words, have = [], [], 0
    for utt, spec in wavs.items():
        x, _ = load_audio(spec, target_sr=sr)
        parts.append(x[: need - have])
        words.append(text.get(utt, ""))
        have += parts[-1].numel()
        if have >= need:
            break
    if have < need:
        raise ValueError(f"{data_dir} holds only {have / sr:.1f} s of audio, asked for {seconds}")
    out.mkdir(parents=True, exist_ok=True)
    wav = out / "long.wav"
    sf.write(wav, torch.cat(parts).numpy(), sr, subtype="PCM_16")
    transcript = " ".join(" ".join(words).split())
    (out / "wav.scp").write_text(f"long {wav}\n")
    (out / "text").write_text(f"long {transcript}\n")
    (out / "utt2spk").write_text("long long\n")
    (out / "spk2utt").write_text("long long\n")
    return out, transcript


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="HMM-GMM stage dir or final.mdl")
    ap.add_argument("--graph", type=Path, required=True, help="graph dir (asrkit mkgraph)")
    ap.add_argument("--data-dir", type=Path, required=True, help="data dir with wav.scp, text")
    ap.add_argument("--features-from", type=Path, required=True,
                    help="training feature dir holding feature_config.yaml")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--acwt", type=float, default=0.1)
    ap.add_argument("--beam", type=float, default=13.0)
    ap.add_argument("--max-active", type=int, default=7000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_results/gmm_decode_1min.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.features_from / "feature_config.yaml", encoding="utf-8") as f:
        fcfg = FeatureConfig(**yaml.safe_load(f))
    with tempfile.TemporaryDirectory() as tmp:
        raw, _ = build_recording(args.data_dir, args.seconds, Path(tmp) / "raw")
        t0 = time.perf_counter()
        compute_features(raw, Path(tmp) / "feats", fcfg, nj=1)
        feat_wall = time.perf_counter() - t0
        walls, report = [], None
        for i in range(args.repeat):
            report = decode_gmm_data_dir(args.model, args.graph, Path(tmp) / "feats",
                                         Path(tmp) / f"dec{i}", acoustic_scale=args.acwt,
                                         beam=args.beam, max_active=args.max_active, nj=1)
            walls.append(report.wall_seconds)
        wer = score_files(raw / "text", report.text).wer
        hyp_words = len(read_kaldi_map(report.text).get("long", "").split())
    audio = report.audio_seconds
    row = {"benchmark": "gmm_decode_1min", "model": str(args.model), "graph": str(args.graph),
           "audio_seconds": round(audio, 2), "decode_wall_s": round(min(walls), 3),
           "decode_rtf": round(min(walls) / audio, 4),
           "decode_wall_s_all": [round(w, 3) for w in walls],
           "features_wall_s": round(feat_wall, 3), "features_rtf": round(feat_wall / audio, 4),
           "acwt": args.acwt, "beam": args.beam, "max_active": args.max_active,
           "wer_vs_concatenated_refs": round(wer.rate, 2),
           "ref_words": wer.ref_units, "hyp_words": hyp_words, "threads": 1,
           "cpu": platform.processor() or platform.machine(),
           "torch": torch.__version__}
    print(f"{'audio s':>8} {'decode s':>9} {'RTF':>7} {'feats s':>8} {'WER %':>6}")
    print(f"{row['audio_seconds']:>8} {row['decode_wall_s']:>9} {row['decode_rtf']:>7} "
          f"{row['features_wall_s']:>8} {row['wer_vs_concatenated_refs']:>6}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(row, f, indent=1)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
