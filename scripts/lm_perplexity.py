#!/usr/bin/env python3
"""Word-level perplexity of several language models on the same texts, counted the same way.

Usage:
    python scripts/lm_perplexity.py --lm hf:exp/gpt/hf --lm ngram:data/lm/tg.arpa \
        --text data/dev/text --text data/test/text [--out bench_results/lm_perplexity.json]

Every LM spec of ``asrkit rescore`` works (``hf:DIR``, ``ngram:ARPA``, ``asrkit:EXP``). Each
sentence (Kaldi ``text``; ``--no-utt-ids`` for plain lines) is scored whole, its end included
(natural log), and the perplexity is ``exp(-Σ log P / (words + sentences))``: the denominator of
SRILM's ``ppl`` for a model without OOVs. A token LM covers every word; an n-gram scores a word
outside its vocabulary as ``<unk>`` (SRILM ``-unk``), which flatters it: the OOV rate of each
n-gram on each text is printed beside it (SRILM's default, OOVs left out of the count, is what
``asrkit train-lm ngram --dev`` reports). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from asrkit.fileio import atomic_write
from asrkit.lm.rescore import NgramSentenceLM, load_sentence_lm
from asrkit.text.tokenizer import read_transcripts


def perplexity(lm, sentences: list[str], batch_size: int = 32) -> dict:
    """``{"ppl", "log_prob", "words", "sentences", "seconds"}`` of ``sentences`` under ``lm``
    (an object with ``score(texts, batch_size)``, natural-log sentence probabilities)."""
    t0 = time.perf_counter()
    logp = sum(lm.score(sentences, batch_size))
    n = sum(len(s.split()) + 1 for s in sentences)
    return {"ppl": math.exp(-logp / max(1, n)), "log_prob": logp,
            "words": n - len(sentences), "sentences": len(sentences),
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", action="append", required=True, help="LM spec (repeatable)")
    p.add_argument("--text", action="append", type=Path, required=True,
                   help="text to score (repeatable)")
    p.add_argument("--no-utt-ids", action="store_true", help="plain sentences, no utt ids")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench_results/lm_perplexity.json"))
    args = p.parse_args(argv)
    texts = {str(t): read_transcripts(t, utt_ids=not args.no_utt_ids) for t in args.text}
    rows = []
    for spec in args.lm:
        lm = load_sentence_lm(spec, device=args.device)
        for name, sents in texts.items():
            row = {"lm": spec, "text": name, **perplexity(lm, sents)}
            if isinstance(lm, NgramSentenceLM):
                lm.score(sents[:1])  # reads the vocabulary
                words = [w for s in sents for w in s.split()]
                row["oov_rate"] = sum(w not in lm._vocab for w in words) / max(1, len(words))
            rows.append(row)
    print("| LM | text | word perplexity | words | OOV rate (n-gram) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        oov = f"{100 * r['oov_rate']:.2f} %" if "oov_rate" in r else ""
        print(f"| {r['lm']} | {r['text']} | {r['ppl']:.1f} | {r['words']} | {oov} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
