"""``asrkit transcribe``: the argument parser and the thin runner over
:class:`asrkit.decode.transcribe.Transcriber` (wired into :mod:`asrkit.cli`).

Kept apart from ``cli.py`` only for size; it imports nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_DESCRIPTION = """Transcribe audio files with a trained experiment (no data dir needed).

AUDIO is a file (any format and rate libsndfile reads: WAV, FLAC, OGG, MP3, SPHERE, ...),
a directory (every audio file below it, sorted), or @LIST (one path per line, relative
paths from the list file's folder). Utterance ids are the file stems (made unique).

Output: Kaldi text (utt-id WORDS...) on stdout, or in -o FILE, or in --out DIR (DIR/text,
DIR/ctm, DIR/transcripts.json, DIR/failed). --ctm writes a word CTM
(<utt> 1 <start> <dur> <word> [conf], seconds), --json per file: text, words with start/end
seconds, segments.

Multi-channel audio is averaged over its channels (--channel N takes channel N, from 0);
audio at another rate is resampled to the model's (upsampling is warned about).
A file longer than --max-segment seconds is cut into speech segments by a VAD (--vad
silero: Silero VAD, shipped with the silero-vad package; --vad none: only cut at the
quietest points), each at most --max-segment seconds, read block by block: memory stays
flat for recordings of any length.

EXP is a neural experiment (methods as asrkit decode: ctc_greedy, ctc_prefix_beam with
--lm, attention_beam / joint_ctc_attention for models with a decoder, wfst with --graph)
or an HMM-GMM stage dir (exp/gmm/tri2; graph --graph, default EXP/graph; per-file CMN).

Files that cannot be read are reported on stderr (and in DIR/failed) and the others are
transcribed; the exit status is then 1 (0 when every file was transcribed, 2 for bad
arguments or experiments)."""


def add_transcribe_parser(sub) -> None:
    """Register the ``transcribe`` subcommand on an ``argparse`` subparsers object."""
    p = sub.add_parser("transcribe", help="transcribe audio files with a trained experiment",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp", type=Path, help="experiment dir (neural) or HMM-GMM stage dir")
    p.add_argument("audio", nargs="*", help="audio files, directories or @LIST files")
    p.add_argument("--list", action="append", default=[], type=Path, metavar="FILE",
                   help="a list file of audio paths (as @FILE); repeatable")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the Kaldi text here instead of stdout")
    out.add_argument("--out", type=Path, metavar="DIR",
                     help="write DIR/text, DIR/ctm, DIR/transcripts.json and DIR/failed")
    p.add_argument("--ctm", type=Path, help="word CTM file (seconds)")
    p.add_argument("--json", type=Path, help="JSON file: per file text, words with times")
    d = p.add_argument_group("decoding (as asrkit decode)")
    d.add_argument("--method", default=None,
                   choices=["ctc_greedy", "ctc_prefix_beam", "attention_beam",
                            "joint_ctc_attention", "wfst"],
                   help="neural search (default ctc_greedy)")
    d.add_argument("--beam", type=float, help="beam size (default 10); wfst / HMM-GMM: beam "
                   "in cost units (default 16 / 13)")
    d.add_argument("--lm", type=Path, help="shallow fusion LM (ARPA or neural LM dir)")
    d.add_argument("--lm-weight", type=float, help="as asrkit decode (default 0.5)")
    d.add_argument("--word-bonus", type=float, help="as asrkit decode (default 0)")
    d.add_argument("--graph", type=Path, help="wfst: TLG graph dir; HMM-GMM: HCLG graph dir "
                   "(default EXP/graph)")
    d.add_argument("--ctc-weight", type=float, help="joint_ctc_attention (default 0.3)")
    d.add_argument("--blank-penalty", type=float, help="wfst (default 0)")
    d.add_argument("--max-active", type=int, help="wfst and HMM-GMM (default 7000)")
    d.add_argument("--acwt", type=float, default=0.1, help="HMM-GMM acoustic scale")
    d.add_argument("--cmn", choices=["segment", "recording"], default="segment",
                   help="HMM-GMM: cepstral mean normalisation per segment (default; speakers "
                   "may change within a recording) or per recording (one speaker)")
    d.add_argument("--avg", type=int, default=1, help="average the last N epoch checkpoints")
    d.add_argument("--checkpoint", type=Path, help="use this checkpoint file")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda:0 ...")
    s = p.add_argument_group("long audio")
    s.add_argument("--vad", choices=["silero", "none"], default="silero",
                   help="segmentation of files longer than --max-segment (default "
                   "%(default)s)")
    s.add_argument("--max-segment", type=float, default=30.0,
                   help="longest segment in seconds (default %(default)s)")
    s.add_argument("--block", type=float, default=30.0,
                   help="seconds of audio read at a time (default %(default)s)")
    s.add_argument("--batch-seconds", type=float, default=120.0,
                   help="neural: segments decoded together, seconds of audio (default "
                   "%(default)s)")
    s.add_argument("--channel", type=int, help="take this channel (from 0) instead of the "
                   "average of all")
    s.add_argument("--vad-threshold", type=float, default=0.5, help="default %(default)s")
    s.add_argument("--min-silence", type=float, default=0.5,
                   help="seconds of silence that end a speech region (default %(default)s)")
    s.add_argument("--speech-pad", type=float, default=0.2,
                   help="seconds the VAD adds around each speech region; regions that then "
                   "overlap are merged (default %(default)s)")
    s.add_argument("--vad-context", type=float, default=0.5,
                   help="seconds of audio decoded around each region, at most up to the "
                   "middle of the pause to the next (default %(default)s)")


def run_transcribe(args) -> int:
    """Run ``asrkit transcribe`` (see :data:`_DESCRIPTION`); returns the exit status."""
    from tqdm import tqdm

    from asrkit.decode.transcribe import (
        Transcriber,
        expand_inputs,
        write_ctm,
        write_json,
        write_text,
    )
    from asrkit.fileio import atomic_write

    paths = expand_inputs([*args.audio, *(f"@{f}" for f in args.list)])
    if not paths:
        raise ValueError("no audio: give files, directories, @LIST or --list FILE")
    asr = Transcriber.from_exp(
        args.exp, method=args.method, beam=args.beam, lm=args.lm, lm_weight=args.lm_weight,
        word_bonus=args.word_bonus, graph=args.graph, ctc_weight=args.ctc_weight,
        blank_penalty=args.blank_penalty, max_active=args.max_active, acwt=args.acwt, cmn=args.cmn,
        avg=args.avg, checkpoint=args.checkpoint, device=args.device, vad=args.vad,
        max_segment=args.max_segment, block_seconds=args.block,
        batch_seconds=args.batch_seconds, channel=args.channel,
        vad_options={"threshold": args.vad_threshold, "min_silence": args.min_silence,
                     "speech_pad": args.speech_pad, "context": args.vad_context})
    with tqdm(total=len(paths), desc="transcribe", unit="file", file=sys.stderr,
              dynamic_ncols=True, disable=None) as bar:
        results = asr.transcribe(paths, on_error="continue",
                                 progress=lambda _t: bar.update(1))
    ctm, js = args.ctm, args.json
    if args.out:
        write_text(args.out / "text", results)
        ctm, js = ctm or args.out / "ctm", js or args.out / "transcripts.json"
        with atomic_write(args.out / "failed") as f:
            f.write("".join(f"{t.id}\t{t.path}\t{' '.join(t.error.split())}\n"
                            for t in results if t.error is not None))
    elif args.output:
        write_text(args.output, results)
    else:
        write_text(sys.stdout, results)
    if ctm:
        write_ctm(ctm, results)
    if js:
        write_json(js, results)
    failed = [t for t in results if t.error is not None]
    audio = sum(t.duration for t in results)
    print(f"transcribed {len(results) - len(failed)} of {len(results)} file(s), "
          f"{audio:.1f} s of audio" + (f" -> {args.out}" if args.out else ""),
          file=sys.stderr)
    for t in failed:
        print(f"asrkit transcribe: failed: {t.error}", file=sys.stderr)
    return 1 if failed else 0
