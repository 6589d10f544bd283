#!/usr/bin/env python3
"""Oracle WER of an n-best file: the WER if every utterance's best hypothesis (fewest word
errors against the reference) were picked — the ceiling any rescoring LM could reach.

Usage:
    python scripts/nbest_oracle.py NBEST REF_TEXT

NBEST is ``asrkit decode --nbest N`` output (:mod:`asrkit.decode.nbest`), REF_TEXT a Kaldi
``text``. Prints the 1-best WER (rank 1), the oracle WER and the average list length.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.nbest import read_nbest
from asrkit.score import score_texts


def oracle(nbest: dict[str, list[tuple[str, float]]], refs: dict[str, str]
           ) -> tuple[float, float]:
    """``(1-best WER %, oracle WER %)`` over the utterances of ``refs`` (an utterance missing
    from ``nbest`` counts as an empty hypothesis)."""
    first, best = {}, {}
    for utt, ref in refs.items():
        hyps = [t for t, _ in nbest.get(utt, [])] or [""]
        first[utt] = hyps[0]
        best[utt] = min(hyps, key=lambda h: score_texts({utt: ref}, {utt: h}).wer.err)
    return score_texts(refs, first).wer.rate, score_texts(refs, best).wer.rate


def main(argv: list[str] | None = None) -> int:
    """Print the 1-best and oracle WER of an n-best file; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("nbest", type=Path)
    p.add_argument("ref", type=Path)
    args = p.parse_args(argv)
    nbest = read_nbest(args.nbest)
    refs = read_kaldi_map(args.ref, allow_empty_value=True)
    one, orc = oracle(nbest, refs)
    avg = sum(len(v) for v in nbest.values()) / max(len(nbest), 1)
    print(f"{args.nbest}: 1-best WER {one:.2f} %, oracle WER {orc:.2f} % "
          f"({len(refs)} utterances, {avg:.1f} hypotheses each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
