#!/usr/bin/env python3
"""Decoding speed and accuracy with and without each language model, on one CPU thread.

Usage:
    python scripts/bench/lm_decode_rtf.py --exp EXP --data DUMP/test --avg 5 \\
        --case none:method=ctc_prefix_beam \\
        --case kn3:method=ctc_prefix_beam,lm=data/lm/kn3.arpa,lm_weight=0.1 \\
        --case lstm:method=ctc_prefix_beam,lm=exp/lm_lstm,lm_weight=0.2 \\
        --case rescore_kn3:method=ctc_prefix_beam,nbest=10,rescore=ngram:data/lm/kn3.arpa,\\
rescore_weight=0.1 \\
        [--threads 1] [--device cpu] [--out bench_results/an4_lm_rtf.json]

Each ``--case NAME:KEY=VALUE,...`` is one run of :func:`asrkit.decode.run.decode_data_dir`
with those keyword arguments (numbers are parsed as numbers), into ``WORK/NAME``
(``--work``, default a temporary directory). ``rescore=SPEC`` (``hf:DIR``, ``ngram:ARPA``,
``asrkit:LM_EXP``, as ``asrkit rescore --lm``) with ``rescore_weight`` / ``rescore_bonus``
rescores the case's n-best list afterwards (:func:`asrkit.lm.rescore.rescore_nbest`); its wall
time (LM loading excluded) is added to the decoding time. The model is loaded by each run and
its loading is not timed (the RTF of ``decode_data_dir`` covers the encoder, the search and the
LM). Prints one line per case (WER %, RTF = wall / audio seconds) and writes them as JSON to
``--out`` with the machine, thread count and command line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from asrkit.data.datadir import write_kaldi_map
from asrkit.decode.nbest import read_nbest
from asrkit.decode.run import decode_data_dir
from asrkit.fileio import atomic_write
from asrkit.score import score_files

_RESCORE_KEYS = ("rescore", "rescore_weight", "rescore_bonus")


def parse_case(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,...`` → (name, kwargs); values that parse as int/float become numbers.

    Raises:
        ValueError: no name, or an item without ``=``.
    """
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"--case {text!r}: expected NAME:KEY=VALUE,...")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--case {text!r}: {item!r} is not KEY=VALUE")
        for conv in (int, float):
            try:
                kwargs[key] = conv(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def _wer(ref: Path, hyp: Path) -> float:
    return round(score_files(ref, hyp).wer.rate, 2)


def run_case(name: str, kwargs: dict, args, work: Path) -> dict:
    """Decode (and optionally rescore) one case; return its row."""
    from asrkit.lm.rescore import load_sentence_lm, rescore_nbest

    kw = {k: v for k, v in kwargs.items() if k not in _RESCORE_KEYS}
    rep = decode_data_dir(args.exp, args.data, work / name, avg=args.avg, device=args.device,
                          **kw)
    row = {"case": name, **kwargs, "num_utts": rep.num_utts,
           "audio_seconds": round(rep.audio_seconds, 2),
           "decode_seconds": round(rep.wall_seconds, 3), "wer": _wer(args.text, rep.text)}
    wall = rep.wall_seconds
    if "rescore" in kwargs:
        if rep.nbest is None:
            raise ValueError(f"case {name}: rescore needs nbest > 1")
        lm = load_sentence_lm(str(kwargs["rescore"]), device=args.device)
        nbest = read_nbest(rep.nbest)
        start = time.perf_counter()
        best, _, _ = rescore_nbest(nbest, lm, lm_weight=float(kwargs.get("rescore_weight", 0.5)),
                                   length_bonus=float(kwargs.get("rescore_bonus", 0.0)))
        row["rescore_seconds"] = round(time.perf_counter() - start, 3)
        wall += row["rescore_seconds"]
        hyp = work / name / "text.rescored"
        write_kaldi_map(hyp, best)
        row["wer"] = _wer(args.text, hyp)
    row["rtf"] = round(wall / max(rep.audio_seconds, 1e-9), 5)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run every ``--case``; print and write the table. Returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", type=Path, required=True, help="asrkit train experiment")
    p.add_argument("--data", type=Path, required=True, help="feature data dir to decode")
    p.add_argument("--text", type=Path, help="reference text (default DATA/text)")
    p.add_argument("--case", action="append", required=True, help="NAME:KEY=VALUE,...")
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", type=Path, help="keep the decode dirs here")
    p.add_argument("--out", type=Path, default=Path("bench_results/lm_decode_rtf.json"))
    args = p.parse_args(argv)
    args.text = args.text or args.data / "text"
    torch.set_num_threads(args.threads)
    cases = [parse_case(c) for c in args.case]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name, kwargs in cases:
            rows.append(run_case(name, kwargs, args, work))
            r = rows[-1]
            print(f"{name:24s} WER {r['wer']:6.2f} %  RTF {r['rtf']:.4f}  "
                  f"({r['audio_seconds']:.0f} s of audio)", flush=True)
    result = {"command": " ".join(["python", *sys.argv]) if argv is None else argv,
              "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "device": args.device, "exp": str(args.exp), "data": str(args.data),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
