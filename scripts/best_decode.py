#!/usr/bin/env python3
"""Print the decode directory with the lowest WER among those given, and its WER.

Usage: ``python scripts/best_decode.py DECODE_DIR ...`` → ``<dir> <wer>`` on stdout.

Recipes use it to pick a decoding setting on dev (an acoustic scale, an LM weight) from the
``score.json`` that ``asrkit score`` wrote in each directory, and then decode test once with
it. Ties go to the directory listed first. Directories without a ``score.json`` are skipped.

Exit status 1 (with a message naming the directories) when none of them has been scored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def best_decode(dirs: list[str]) -> tuple[str, float] | None:
    """The (directory, WER %) with the lowest WER among ``dirs`` that hold ``score.json``;
    None when none does."""
    best: tuple[str, float] | None = None
    for d in dirs:
        score = Path(d) / "score.json"
        if not score.is_file():
            continue
        wer = float(json.loads(score.read_text(encoding="utf-8"))["wer"]["rate"])
        if best is None or wer < best[1]:
            best = (d, wer)
    return best


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    best = best_decode(dirs)
    if best is None:
        print(f"best_decode: no score.json in any of: {' '.join(dirs)}", file=sys.stderr)
        return 1
    print(f"{best[0]} {best[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
