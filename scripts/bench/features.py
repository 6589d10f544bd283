#!/usr/bin/env python3
"""Benchmark the feature stage on one CPU core.

Usage:
    python scripts/bench/features.py --data-dir DATA_DIR [--limit N] [--repeat R]
                                     [--out RESULTS_FILE]
    python scripts/bench/features.py --an4-dir /path/to/an4 [--limit N] [--repeat R]
                                     [--out RESULTS_FILE]

Measures, each with ``torch.set_num_threads(1)``:

  a) asrkit ``compute_features`` (nj=1) end to end into a temporary directory: read audio,
     80-dim fbank, write ark/scp, merge, global CMVN;
  a0) the audio reading alone (``asrkit.data.audio.load_audio``), to split (a) into I/O and
     compute;
  b) ``torchaudio.compliance.kaldi.fbank`` per utterance on preloaded audio (compute only);
  c) ``kaldi_native_fbank.OnlineFbank`` per utterance on preloaded audio, if installed
     (``pip install kaldi-native-fbank``); its largest difference from (b) is printed too.

Each method runs ``--repeat`` times (default 3) and the fastest wall time is reported (all
are kept in the JSON). Prints a table (method, seconds of audio, wall seconds, x real time
per core) and writes it to ``--out``: JSON lines for ``.json``/``.jsonl``, a markdown table
for ``.md``.

``--an4-dir`` prepares AN4 into a temporary directory with ``asrkit.data.corpora.an4`` and
benchmarks all 948 utterances of AN4 train (our train + dev splits; the corpus is only read).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchaudio.compliance import kaldi

from asrkit.data.audio import load_audio
from asrkit.data.corpora.an4 import prepare_an4
from asrkit.data.datadir import DataDir
from asrkit.features.compute import INT16_SCALE, FeatureConfig, compute_features
from asrkit.fileio import atomic_write


def build_an4_train(an4_dir: Path, out: Path) -> Path:
    """Prepare AN4 with ``prepare_an4`` and merge its train and dev splits (all 948 utterances
    of AN4 train) into the data dir ``out/train_all``."""
    dirs = prepare_an4(an4_dir, out / "an4")
    parts = [DataDir.load(dirs["train"]), DataDir.load(dirs["dev"])]
    merged = DataDir(wav_scp={k: v for d in parts for k, v in d.wav_scp.items()},
                     text={k: v for d in parts for k, v in d.text.items()},
                     utt2spk={k: v for d in parts for k, v in d.utt2spk.items()})
    merged.write(out / "train_all")
    return out / "train_all"


def _row(method: str, seconds_audio: float, walls: list[float], **extra) -> dict:
    wall = min(walls)
    return {"method": method, "seconds_audio": round(seconds_audio, 2), "wall_s": round(wall, 3),
            "x_real_time_per_core": round(seconds_audio / wall, 1),
            "wall_s_all": [round(w, 3) for w in walls], **extra}


def _timed(fn, repeat: int) -> tuple[list[float], object]:
    """Run ``fn()`` ``repeat`` times; return the wall times and the last result."""
    walls, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
    return walls, result


def _read_all(data: DataDir) -> list[tuple[torch.Tensor, int]]:
    audio = []
    for utt in data.utt_ids:
        spec, start, end = data.wav_scp.get(utt), 0.0, None
        if data.segments is not None:
            rec, start, end = data.segments[utt]
            spec = data.wav_scp[rec]
        try:
            audio.append(load_audio(spec, start=start, end=end))
        except Exception as e:  # noqa: BLE001 - bad audio is reported by (a); skip it here
            print(f"skipping {utt}: {e}", file=sys.stderr)
    return audio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="Kaldi data dir (wav.scp, text, utt2spk)")
    src.add_argument("--an4-dir", type=Path, help="AN4 corpus root; benchmarks AN4 train")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each method this many times and report the fastest (default 3)")
    ap.add_argument("--out", type=Path, default=Path("bench_results/features.json"),
                    help="results file: .json/.jsonl (JSON lines) or .md (markdown)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    torch.set_num_threads(1)
    cfg = FeatureConfig()

    with tempfile.TemporaryDirectory(prefix="asrkit-bench-feats-") as tmp:
        tmp = Path(tmp)
        data_dir = args.data_dir or build_an4_train(args.an4_dir, tmp)
        data = DataDir.load(data_dir)
        if args.limit is not None:
            data = data.subset(data.utt_ids[:args.limit])
            data.write(tmp / "subset")
            data_dir = tmp / "subset"
        n = len(data.utt_ids)
        rows = []

        # (a0) read audio only; the first pass also warms the page cache for (a)
        walls, audio = _timed(lambda: _read_all(data), args.repeat)
        secs = sum(w.numel() / sr for w, sr in audio)
        if any(sr != cfg.sample_rate for _, sr in audio):
            print(f"note: some audio is not {cfg.sample_rate} Hz; (b)/(c) use native rates",
                  file=sys.stderr)
        rows.append(_row("load_audio only (soundfile read)", secs, walls, utts=len(audio)))

        # (a) end to end, a fresh output dir each time
        runs = iter(range(args.repeat))
        walls, report = _timed(
            lambda: compute_features(data_dir, tmp / f"feats{next(runs)}", cfg, nj=1),
            args.repeat)
        rows.insert(0, _row("asrkit compute_features nj=1 (read+fbank+ark+cmvn)",
                            report.seconds_audio, walls, utts=report.num_done))

        # (b) torchaudio compute only
        def ta_fbank(wav: torch.Tensor, sr: int) -> torch.Tensor:
            return kaldi.fbank((wav * INT16_SCALE).unsqueeze(0), num_mel_bins=cfg.num_mel_bins,
                               energy_floor=cfg.energy_floor, dither=0.0,
                               sample_frequency=float(sr))

        ta_fbank(*audio[0])  # warm-up
        walls, _ = _timed(lambda: [ta_fbank(w, sr) for w, sr in audio], args.repeat)
        rows.append(_row("torchaudio.compliance.kaldi.fbank (compute only)", secs, walls,
                         utts=len(audio)))

        # (c) kaldi-native-fbank compute only
        try:
            import kaldi_native_fbank as knf
        except ImportError:
            knf = None
            print("kaldi-native-fbank: not installed (pip install kaldi-native-fbank)")
        if knf is not None:
            def knf_fbank(wav: torch.Tensor, sr: int) -> np.ndarray:
                opts = knf.FbankOptions()
                opts.frame_opts.dither = 0.0
                opts.frame_opts.samp_freq = float(sr)
                opts.mel_opts.num_bins = cfg.num_mel_bins
                opts.energy_floor = cfg.energy_floor
                fb = knf.OnlineFbank(opts)
                fb.accept_waveform(float(sr), (wav * INT16_SCALE).numpy())
                fb.input_finished()
                return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])

            diff = float(np.abs(knf_fbank(*audio[0]) - ta_fbank(*audio[0]).numpy()).max())
            walls, _ = _timed(lambda: [knf_fbank(w, sr) for w, sr in audio], args.repeat)
            version = getattr(knf, "__version__", "")
            rows.append(_row(f"kaldi-native-fbank {version} (compute only)".replace("  ", " "),
                             secs, walls, utts=len(audio),
                             max_abs_diff_vs_torchaudio=round(diff, 5)))

    meta = {"data_dir": str(args.data_dir or args.an4_dir), "utts": n, "repeat": args.repeat,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    header = "| method | seconds of audio | wall s | x real time per core |"
    lines = [header, "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['method']} | {r['seconds_audio']:.1f} | {r['wall_s']:.2f} | "
              f"{r['x_real_time_per_core']:.0f} |" for r in rows]
    print(f"features benchmark: {n} utterances from {meta['data_dir']}, 1 thread, "
          f"torch {meta['torch']}, best of {args.repeat}")
    print("\n".join(lines))
    for r in rows:
        if "max_abs_diff_vs_torchaudio" in r:
            print(f"kaldi-native-fbank vs torchaudio max |diff| on the first utterance: "
                  f"{r['max_abs_diff_vs_torchaudio']}")

    with atomic_write(args.out) as f:
        if args.out.suffix == ".md":
            f.write(f"Features benchmark, {n} utterances of {meta['data_dir']}, one core, "
                    f"torch {meta['torch']}, {meta['time']}\n\n" + "\n".join(lines) + "\n")
        else:
            for r in rows:
                f.write(json.dumps({**r, **meta}) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
