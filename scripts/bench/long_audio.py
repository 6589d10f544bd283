#!/usr/bin/env python3
"""Benchmark ``asrkit transcribe`` on long recordings: WER against per-utterance decoding,
real-time factor and peak memory at 1 minute, 10 minutes and 1 hour.

Usage:
    python scripts/bench/long_audio.py --exp exp/full_conformer --an4-dir $AN4_DIR \\
        [--lengths 60,600,3600] [--method ctc_greedy] [--work-dir bench_work/long_audio]
    python scripts/bench/long_audio.py --exp exp/gmm/tri2 --graph exp/gmm/tri2/graph_kn3 \\
        --an4-dir $AN4_DIR --acwt 0.083
    python scripts/bench/long_audio.py --exp EXP --data data/test       # any Kaldi data dir

For each length L (seconds) a recording is built from the test utterances (AN4 test,
prepared with ``asrkit prep an4`` into ``WORK/data``, or ``--data``: ``wav.scp`` + ``text``)
in order, back to back with their natural audio (AN4 files begin and end with their own
silence; ``--gap`` adds a pause of low-level noise after each), repeated from the start as
often as needed; the utterance that would cross L is left out, so the recording is up to one
utterance shorter than L (its real length is reported), and the reference is the
transcripts of the utterances used, in order. The recording is written block by block as 16-bit WAV (``WORK/long_<L>.wav``,
kept for reruns).

Each recording is transcribed by ``asrkit transcribe`` in a child process of its own
(``python -m asrkit.cli transcribe EXP long.wav --out …``), waited for with ``os.wait4`` so
that its own peak RSS is read (``ru_maxrss``), and timed (RTF = the child's wall time,
model loading included, / audio seconds). The baseline is the same experiment and options
on the same utterances transcribed one file at a time (in this process, the model loaded
once: each AN4 utterance is shorter than ``--max-segment`` and decoded whole, as ``asrkit
decode`` decodes it); its WER is computed over the same (repeated) utterances as the long
recording's reference. The long-form WER should be within about 1 point of it.

Prints a table and writes ``--out`` (default ``bench_results/long_audio.json``) atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asrkit.data.audio import load_audio
from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.transcribe import Transcriber
from asrkit.fileio import atomic_write
from asrkit.score import score_texts

DECODE_OPTS = ("method", "beam", "lm", "lm_weight", "graph", "acwt", "cmn", "avg", "device",
               "vad", "max_segment")
SEGMENTER_OPTS = ("speech_pad", "vad_threshold", "vad_context", "batch_seconds")  # long recordings only


def test_set(args) -> tuple[dict[str, str], dict[str, str]]:
    """``(wav.scp, text)`` of the utterances: ``--data`` or AN4 test prepared in WORK."""
    if args.data:
        d = Path(args.data)
    else:
        from asrkit.data.corpora.an4 import prepare_an4

        d = Path(args.work_dir) / "data" / "test"
        if not (d / "text").is_file():
            d = prepare_an4(args.an4_dir, Path(args.work_dir) / "data")["test"]
    wavs, text = read_kaldi_map(d / "wav.scp"), read_kaldi_map(d / "text")
    utts = [u for u in wavs if u in text and text[u].strip()]
    if not utts:
        raise SystemExit(f"{d}: no utterance with audio and a transcript")
    return {u: wavs[u] for u in utts}, {u: text[u] for u in utts}


def build_recording(wavs: dict[str, str], seconds: float, gap: float, out: Path,
                    sr: int) -> list[str]:
    """Write ``seconds`` of concatenated utterances (module docstring) to ``out``; return
    the utterance ids used, in order (repeats included). Reuses ``out`` when its sidecar
    ``.json`` matches."""
    meta_path = out.with_suffix(".json")
    meta = {"seconds": seconds, "gap": gap, "sr": sr, "utts": list(wavs)}
    if out.is_file() and meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} == meta:
            return old["used"]
    need = round(seconds * sr)
    used, have = [], 0
    # a pause is low-level noise (about -60 dBFS), not digital zeros: real recordings have
    # a noise floor, and MFCCs of exact zeros are values no model saw in training
    silence = np.random.default_rng(0).normal(0.0, 1e-3, round(gap * sr)).astype(np.float32)
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    order = list(wavs.items())
    with sf.SoundFile(tmp, "w", sr, 1, "PCM_16", format="WAV") as f:
        while True:
            utt, spec = order[len(used) % len(order)]
            x, _ = load_audio(spec, target_sr=sr)
            piece = np.concatenate([x.numpy(), silence])
            if have + piece.size > need:
                break
            f.write(piece)
            have += piece.size
            used.append(utt)
        # the utterance that did not fit is left out: the recording ends up to one
        # utterance short of ``seconds`` (its real length is reported)
    if not used:
        tmp.unlink()
        raise SystemExit(f"the first utterance is longer than {seconds} s")
    os.replace(tmp, out)
    with atomic_write(meta_path) as fm:
        json.dump({**meta, "used": used}, fm)
    return used


def run_child(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of that child, exit status)."""
    start = time.perf_counter()
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024.0, p.returncode  # Linux: ru_maxrss in KiB


def child_command(args, wav: Path, out_dir: Path) -> list[str]:
    """``python -m asrkit.cli transcribe`` with the decoding options of ``args``."""
    cmd = [sys.executable, "-m", "asrkit.cli", "transcribe", str(args.exp), str(wav),
           "--out", str(out_dir)]
    for k in DECODE_OPTS + SEGMENTER_OPTS:
        v = getattr(args, k)
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, type=Path,
                   help="neural experiment or HMM-GMM stage dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--an4-dir", type=Path, help="AN4 corpus root (its test set is used)")
    src.add_argument("--data", type=Path, help="a Kaldi data dir (wav.scp, text) instead")
    p.add_argument("--lengths", default="60,600,3600", help="seconds, comma-separated")
    p.add_argument("--gap", type=float, default=0.0,
                   help="pause (s, low-level noise) after each utterance; AN4 files start and "
                   "end with their own silence (default %(default)s: back to back)")
    p.add_argument("--sample-rate", type=int, default=16000, help="of the long recordings")
    p.add_argument("--work-dir", type=Path, default=Path("bench_work/long_audio"))
    p.add_argument("--out", type=Path, default=Path("bench_results/long_audio.json"))
    p.add_argument("--method", help="neural search method (asrkit transcribe --method)")
    p.add_argument("--beam", type=float)
    p.add_argument("--lm", type=Path)
    p.add_argument("--lm-weight", type=float)
    p.add_argument("--graph", type=Path, help="wfst / HMM-GMM graph dir")
    p.add_argument("--acwt", type=float, help="HMM-GMM acoustic scale")
    p.add_argument("--cmn", choices=["segment", "recording"], help="HMM-GMM CMN")
    p.add_argument("--avg", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--vad", choices=["silero", "none"])
    p.add_argument("--max-segment", type=float)
    p.add_argument("--speech-pad", type=float, help="asrkit transcribe --speech-pad")
    p.add_argument("--vad-threshold", type=float, help="asrkit transcribe --vad-threshold")
    p.add_argument("--vad-context", type=float, help="asrkit transcribe --vad-context")
    p.add_argument("--batch-seconds", type=float, help="asrkit transcribe --batch-seconds")
    args = p.parse_args(argv)
    lengths = [float(x) for x in args.lengths.split(",") if x]
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    wavs, text = test_set(args)

    opts = {k: getattr(args, k) for k in DECODE_OPTS if getattr(args, k) is not None}
    asr = Transcriber.from_exp(args.exp, **opts)
    start = time.perf_counter()
    base = asr.transcribe(
        [str(Path(s)) for s in wavs.values()], ids=list(wavs), on_error="continue")
    base_wall = time.perf_counter() - start
    base_hyp = {t.id: t.text for t in base}
    base_audio = sum(t.duration for t in base)

    rows = []
    for L in lengths:
        wav = work / f"long_{int(L)}.wav"
        used = build_recording(wavs, L, args.gap, wav, args.sample_rate)
        out_dir = work / f"out_{int(L)}"
        wall, rss, rc = run_child(child_command(args, wav, out_dir), work / f"log_{int(L)}.txt")
        if rc != 0:
            raise SystemExit(f"transcribe failed for {L} s (exit {rc}); see "
                             f"{work / f'log_{int(L)}.txt'}")
        hyp = read_kaldi_map(out_dir / "text", allow_empty_value=True).get(wav.stem, "")
        ref = " ".join(text[u] for u in used)
        long_wer = score_texts({"long": ref}, {"long": hyp}).wer
        keys = [f"{k:06d}-{u}" for k, u in enumerate(used)]
        per_utt = score_texts({k: text[u] for k, u in zip(keys, used)},
                              {k: base_hyp.get(u, "") for k, u in zip(keys, used)}).wer
        segs = json.loads((out_dir / "transcripts.json").read_text())["files"][0]["segments"]
        rows.append({"audio_seconds": round(sf.info(str(wav)).duration, 2),
                     "utterances": len(used), "ref_words": long_wer.ref_units,
                     "long_form_wer": round(long_wer.rate, 2),
                     "per_utterance_wer": round(per_utt.rate, 2),
                     "wer_gap": round(long_wer.rate - per_utt.rate, 2),
                     "segments": len(segs),
                     "max_segment_seconds": round(max((e - s for s, e in segs), default=0), 2),
                     "wall_seconds": round(wall, 2), "rtf": round(wall / L, 4),
                     "peak_rss_mb": round(rss, 1)})
        print(f"{L:>7.0f} s: long-form WER {long_wer.rate:6.2f} %  per-utterance "
              f"{per_utt.rate:6.2f} %  RTF {wall / L:.4f}  peak RSS {rss:8.1f} MB  "
              f"({len(segs)} segments)", flush=True)
    result = {"exp": str(args.exp), "options": {k: str(v) for k, v in opts.items()},
              "source": str(args.data or args.an4_dir), "gap_seconds": args.gap,
              "baseline": {"utterances": len(base), "audio_seconds": round(base_audio, 2),
                           "wall_seconds": round(base_wall, 2),
                           "rtf": round(base_wall / max(base_audio, 1e-9), 4)},
              "lengths": rows, "threads": torch.get_num_threads(),
              "machine": platform.platform(), "cpus": os.cpu_count(),
              "note": "rtf and peak_rss_mb are of the whole `asrkit transcribe` process "
                      "(Python, torch and model loading included)"}
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=1)
    print("\n| audio | long-form WER | per-utterance WER | RTF | peak RSS |\n"
          "|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['audio_seconds']:.0f} s | {r['long_form_wer']:.2f} % | "
              f"{r['per_utterance_wer']:.2f} % | {r['rtf']:.4f} | {r['peak_rss_mb']:.0f} MB |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
