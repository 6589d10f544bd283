"""N-best hypothesis lists in one Kaldi-style file.

Format of ``nbest`` (written beside the 1-best ``text`` of a decode directory), UTF-8, one
hypothesis per line::

    <utt-id>-<N> <score> <WORDS…>

* ``<utt-id>-<N>``: the utterance id, a dash and the rank ``N`` (1 = best), as Kaldi's
  ``lattice-to-nbest`` names n-best entries. The rank is split off at the *last* dash, so
  utterance ids may contain dashes themselves.
* ``<score>``: the decoder's total score of the hypothesis, a natural-log probability (for
  CTC prefix beam search ``log P_ctc + lm_weight * LM``); higher is better.
* ``<WORDS…>``: the hypothesis text, possibly empty (then the line ends after the score).

Utterances are sorted by id (byte order, like Kaldi's ``sort``); an utterance's lines are
consecutive with ranks ``1, 2, …`` in order, best first. The decode stage writes distinct
texts (token sequences that spell the same words are merged, keeping the best score), so an
utterance may have fewer lines than the n-best size asked for. Rank 1 is the hypothesis written
to ``text``.

Kaldi and ESPnet also use one directory or file per rank (ESPnet's ``1best_recog/``,
``2best_recog/``, …); asrkit keeps a single file so that a rescoring stage reads one file
and sees each utterance's list together.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from asrkit.fileio import atomic_write

__all__ = ["read_nbest", "write_nbest", "write_or_clear_nbest"]

logger = logging.getLogger(__name__)

NBest = dict[str, list[tuple[str, float]]]


def write_nbest(path: str | os.PathLike, nbest: NBest) -> Path:
    """Write ``{utt: [(text, score), ...]}`` (each list best first) atomically as ``path``.

    Args:
        path: output file (usually ``<decode dir>/nbest``).
        nbest: hypotheses per utterance, best first; scores are natural-log probabilities.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: an utterance id that is empty or contains whitespace, an empty list, a text
            containing a newline, or a NaN score (naming the utterance).
    """
    path = Path(path)
    for utt, hyps in nbest.items():
        if not utt or utt != "".join(utt.split()):
            raise ValueError(f"utterance id {utt!r} must be non-empty without whitespace")
        if not hyps:
            raise ValueError(f"{utt}: empty n-best list")
        for text, score in hyps:
            if "\n" in text or "\r" in text:
                raise ValueError(f"{utt}: hypothesis text contains a newline: {text!r}")
            if math.isnan(score):
                raise ValueError(f"{utt}: NaN score for hypothesis {text!r}")
    with atomic_write(path) as f:
        for utt in sorted(nbest, key=lambda u: u.encode("utf-8")):
            for rank, (text, score) in enumerate(nbest[utt], 1):
                words = " ".join(text.split())
                f.write(f"{utt}-{rank} {score:.6f} {words}".rstrip(" ") + "\n")
    return path


def write_or_clear_nbest(path: str | os.PathLike, nbest: NBest, n: int) -> Path | None:
    """The decode stages' n-best output: with ``n > 1`` write ``nbest`` to ``path``
    (:func:`write_nbest`) and return it; with ``n == 1`` remove a ``path`` left by an earlier
    run, so the decode dir stays consistent, and return None.

    Raises:
        ValueError: as :func:`write_nbest`.
    """
    if n > 1:
        return write_nbest(path, nbest)
    path = Path(path)
    if path.is_file():
        logger.info("removing stale %s (this run asked for the 1-best only)", path)
        path.unlink()
    return None


def read_nbest(path: str | os.PathLike) -> NBest:
    """Read an ``nbest`` file written by :func:`write_nbest` (format in the module docstring).

    Args:
        path: the ``nbest`` file.

    Returns:
        ``{utt: [(text, score), ...]}`` with each list in rank order (best first).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed line, naming ``file:line``: fewer than two fields, a key without
            a ``-<rank>`` suffix, a rank that is not the next one for its utterance (ranks start
            at 1 and are consecutive), an utterance whose lines are not together, or a score
            that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"n-best file {path} not found")
    out: NBest = {}
    prev_utt = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            where = f"{path}:{n}"
            parts = line.rstrip("\n").split(maxsplit=2)
            if len(parts) < 2:
                raise ValueError(f"{where}: expected '<utt-id>-<rank> <score> [words…]', "
                                 f"got {line.rstrip()!r}")
            key, score_s = parts[0], parts[1]
            text = parts[2].strip() if len(parts) == 3 else ""
            utt, dash, rank_s = key.rpartition("-")
            if not dash or not utt or not rank_s.isdigit():
                raise ValueError(f"{where}: key {key!r} is not '<utt-id>-<rank>'")
            try:
                score = float(score_s)
            except ValueError:
                raise ValueError(f"{where}: score {score_s!r} is not a number") from None
            if math.isnan(score):
                raise ValueError(f"{where}: score is NaN")
            hyps = out.setdefault(utt, [])
            if hyps and utt != prev_utt:
                raise ValueError(f"{where}: lines of utterance {utt!r} are not consecutive")
            if int(rank_s) != len(hyps) + 1:
                raise ValueError(f"{where}: rank {int(rank_s)} of {utt!r}, expected "
                                 f"{len(hyps) + 1}")
            hyps.append((text, score))
            prev_utt = utt
    return out
