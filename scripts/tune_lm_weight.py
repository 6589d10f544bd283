#!/usr/bin/env python3
"""Sweep LM weight and word bonus on a dev set and report the best (shallow fusion in CTC
prefix beam search, or n-best rescoring).

Usage:
    # shallow fusion: decode dev once per (weight, bonus) pair
    python scripts/tune_lm_weight.py fusion EXP DEV_FEATS DEV_TEXT --lm LM.arpa|LM_EXP \\
        [--weights 0.1,0.2,0.3,0.5] [--bonuses 0,0.5,1] [--beam 10] [--avg 5] [--out F.json] \\
        [--method ctc_prefix_beam|attention_beam|joint_ctc_attention] [--ctc-weight 0.3] \\
        [--backend asrkit|flashlight] [--lexicon WORDS]
    # the LM weight of WFST decoding over a TLG graph (its LM is in the graph; no bonus)
    python scripts/tune_lm_weight.py fusion EXP DEV_FEATS DEV_TEXT --method wfst --graph DIR \\
        --bonuses 0
    # n-best rescoring: rescore one n-best file per pair (cheap; no decoding)
    python scripts/tune_lm_weight.py rescore NBEST DEV_TEXT --lm hf:DIR|ngram:FILE \\
        [--old-lm ngram:FIRST_PASS.arpa] [--weights ...] [--bonuses ...] [--case lower] \\
        [--out F.json]

    # the best weight of an earlier sweep (recipes read it so)
    python scripts/tune_lm_weight.py best F.json

Prints one line per pair (WER %) and the best pair, and writes all of them as JSON to
``--out`` (default ``tune_lm_weight.json`` in the current directory). The best pair is the
lowest WER, ties broken by the smaller weight, then the smaller bonus. Weights and bonuses are
what ``asrkit decode --lm-weight --word-bonus`` and ``asrkit rescore --lm-weight
--length-bonus`` take.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from asrkit.data.datadir import write_kaldi_map
from asrkit.fileio import atomic_write
from asrkit.score import score_files


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _wer(ref: Path, hyp: Path) -> float:
    return score_files(ref, hyp).wer.rate


def sweep_fusion(args) -> list[dict]:
    """Decode dev once per pair with :func:`asrkit.decode.run.decode_data_dir`."""
    from asrkit.decode.run import decode_data_dir

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.weights:
            for b in args.bonuses:
                out = Path(tmp) / f"w{w}_b{b}"
                extra = {"graph": args.graph} if args.method == "wfst" else {
                    "lm": args.lm, "word_bonus": b, "backend": args.backend,
                    "lexicon": args.lexicon,
                    "ctc_weight": args.ctc_weight if args.method == "joint_ctc_attention"
                    else None}
                rep = decode_data_dir(args.exp, args.feats, out, method=args.method,
                                      beam=None if args.method == "wfst" else args.beam,
                                      avg=args.avg, lm_weight=w,
                                      device=args.device, **extra)
                rows.append({"lm_weight": w, "word_bonus": b, "wer": _wer(args.text, rep.text),
                             "rtf": round(rep.rtf, 5)})
                print(f"weight {w:g} bonus {b:g}: WER {rows[-1]['wer']:.2f} % "
                      f"(RTF {rep.rtf:.4f})", flush=True)
    return rows


def sweep_rescore(args) -> list[dict]:
    """Rescore the n-best once per pair with :func:`asrkit.lm.rescore.rescore_nbest` (the LM
    scores are computed once)."""
    from asrkit.decode.nbest import read_nbest
    from asrkit.lm.rescore import load_sentence_lm, rescore_nbest

    nbest = read_nbest(args.nbest)
    lm = load_sentence_lm(args.lm, device=args.device, case=args.case)
    texts = sorted({t for hyps in nbest.values() for t, _ in hyps})

    class Cached:
        def __init__(self, scores: dict[str, float]) -> None:
            self.scores = scores

        def score(self, ts, batch_size=0):
            return [self.scores[t] for t in ts]

    new = Cached(dict(zip(texts, lm.score(texts))))
    old = None
    if args.old_lm:
        old_lm = load_sentence_lm(args.old_lm, device=args.device, case=args.case)
        old = Cached(dict(zip(texts, old_lm.score(texts))))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.weights:
            for b in args.bonuses:
                best, _, _ = rescore_nbest(nbest, new, lm_weight=w, length_bonus=b,
                                           old_lm=old, old_lm_weight=args.old_lm_weight)
                hyp = Path(tmp) / "text"
                write_kaldi_map(hyp, best)
                rows.append({"lm_weight": w, "length_bonus": b, "wer": _wer(args.text, hyp)})
                print(f"weight {w:g} bonus {b:g}: WER {rows[-1]['wer']:.2f} %", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fusion", help="shallow fusion in a beam search, or WFST decoding")
    f.add_argument("exp", type=Path)
    f.add_argument("feats", type=Path, help="dev feature data dir")
    f.add_argument("text", type=Path, help="dev reference text")
    f.add_argument("--lm", type=Path, help="word n-gram (ARPA) or neural LM dir")
    f.add_argument("--method", default="ctc_prefix_beam",
                   choices=["ctc_prefix_beam", "attention_beam", "joint_ctc_attention", "wfst"])
    f.add_argument("--ctc-weight", type=float, default=0.3, help="joint_ctc_attention")
    f.add_argument("--backend", choices=["asrkit", "flashlight"], default="asrkit")
    f.add_argument("--lexicon", type=Path, help="--backend flashlight: word list")
    f.add_argument("--graph", type=Path, help="--method wfst: TLG graph dir")
    f.add_argument("--beam", type=int, default=10)
    f.add_argument("--avg", type=int, default=1)
    r = sub.add_parser("rescore", help="n-best rescoring")
    r.add_argument("nbest", type=Path)
    r.add_argument("text", type=Path, help="dev reference text")
    r.add_argument("--lm", required=True, help="hf:DIR or ngram:FILE")
    r.add_argument("--case", choices=["keep", "lower", "upper"], default="keep")
    r.add_argument("--old-lm", help="first-pass LM taken out of the scores (asrkit rescore "
                   "--old-lm)")
    r.add_argument("--old-lm-weight", type=float, default=1.0)
    b = sub.add_parser("best", help="print the best LM weight of a sweep's JSON")
    b.add_argument("json", type=Path)
    for q in (f, r):
        q.add_argument("--weights", type=_floats, default=_floats("0.1,0.2,0.3,0.5,0.8"))
        q.add_argument("--bonuses", type=_floats, default=_floats("0,0.5,1"))
        q.add_argument("--device", default="auto")
        q.add_argument("--out", type=Path, default=Path("tune_lm_weight.json"))
    args = p.parse_args(argv)
    if args.mode == "best":
        print(f"{json.loads(args.json.read_text(encoding='utf-8'))['best']['lm_weight']:g}")
        return 0
    if args.mode == "fusion" and (args.graph is None) == (args.method == "wfst"):
        p.error("--graph goes with --method wfst (and only with it)")
    if args.mode == "fusion" and args.method != "wfst" and args.lm is None:
        p.error("fusion needs --lm (except --method wfst, whose LM is in --graph)")
    rows = sweep_fusion(args) if args.mode == "fusion" else sweep_rescore(args)
    bonus_key = "word_bonus" if args.mode == "fusion" else "length_bonus"
    best = min(rows, key=lambda r: (round(r["wer"], 6), r["lm_weight"], r[bonus_key]))
    print(f"best: weight {best['lm_weight']:g} bonus {best[bonus_key]:g}: WER "
          f"{best['wer']:.2f} %")
    with atomic_write(args.out) as fh:
        info = {"mode": args.mode, "lm": str(args.lm)}
        if args.mode == "fusion":
            info.update(method=args.method, backend=args.backend,
                        graph=str(args.graph) if args.graph else None)
        json.dump({**info, "rows": rows, "best": best}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
