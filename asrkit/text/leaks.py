"""Leak check: does LM training text hold evaluation transcripts?

A language model evaluated on LibriSpeech dev/test speech must not have seen the books those
speakers read (:func:`asrkit.text.books.librispeech_books` leaves them out by Gutenberg number
and title). Numbers and titles miss other editions of the same book, anthologies and
quotations, so :func:`find_leaks` checks the text itself: every transcript of the given data
dirs is looked for as a whole line of the LM text (LibriSpeech-LM normalisation makes one
sentence a line), and every run of ``n`` consecutive transcript words (``n = 10`` by default)
is looked for anywhere inside a line. The LM text is streamed once; memory holds only the
transcripts' n-grams.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LeakReport", "RunMatcher", "find_leaks", "read_eval_transcripts"]

logger = logging.getLogger(__name__)


@dataclass
class LeakReport:
    """What :func:`find_leaks` found.

    Attributes:
        n: the run length checked (words).
        utterances: transcripts checked; ngrams: distinct ``n``-word runs of them.
        lines: LM text lines read; words: LM text words read.
        sentences_found: distinct transcripts that occur as a whole LM line.
        ngrams_found: distinct transcript ``n``-word runs that occur in the LM text.
        utterances_hit: transcripts with at least one run found (or found whole).
        lines_hit: LM lines holding a transcript or one of its runs.
        examples: up to 20 ``(LM line number, run or sentence)`` hits, first ones first.
    """

    n: int
    utterances: int = 0
    ngrams: int = 0
    lines: int = 0
    words: int = 0
    sentences_found: int = 0
    ngrams_found: int = 0
    utterances_hit: int = 0
    lines_hit: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing was found."""
        return self.sentences_found == 0 and self.ngrams_found == 0

    def __str__(self) -> str:
        return (f"{self.lines} LM lines, {self.words} words checked against {self.utterances} "
                f"transcripts ({self.ngrams} distinct {self.n}-word runs): "
                f"{self.sentences_found} transcripts found as a line, {self.ngrams_found} "
                f"{self.n}-word runs found, {self.utterances_hit} transcripts hit, "
                f"{self.lines_hit} LM lines hit")


def read_eval_transcripts(data_dirs: Iterable[str | os.PathLike]) -> list[str]:
    """The transcripts of Kaldi data dirs (their ``text`` files, utterance ids dropped), or of
    ``text`` files given directly.

    Raises:
        FileNotFoundError: a dir without a ``text`` file.
    """
    out: list[str] = []
    for d in data_dirs:
        path = Path(d)
        if path.is_dir():
            path = path / "text"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no Kaldi text file")
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split()[1:]
                if words:
                    out.append(" ".join(words))
    return out


class RunMatcher:
    """Finds evaluation transcripts, and ``n``-word runs of them, in sentences.

    Args:
        transcripts: the evaluation sentences, normalised as the LM text.
        n: run length; transcripts shorter than ``n`` words are matched as whole sentences
            only.
    """

    def __init__(self, transcripts: Iterable[str], n: int = 10) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.sentences: dict[str, int] = {}
        self.runs: dict[tuple[str, ...], list[int]] = {}
        self.utterances = 0
        for u, text in enumerate(transcripts):
            words = text.split()
            self.utterances += 1
            self.sentences.setdefault(" ".join(words), u)
            for i in range(len(words) - n + 1):
                self.runs.setdefault(tuple(words[i:i + n]), []).append(u)
        # cheap filters before building a tuple: a run's first word and first two words
        self._first = {g[0] for g in self.runs}
        self._first2 = {g[:2] for g in self.runs}

    def runs_in(self, words: list[str]) -> list[tuple[str, ...]]:
        """The transcript runs found in a sentence (in order, repeats included)."""
        n, first, first2, runs = self.n, self._first, self._first2, self.runs
        out = []
        for i in range(len(words) - n + 1):
            w = words[i]
            if w not in first or (n > 1 and (w, words[i + 1]) not in first2):
                continue
            g = tuple(words[i:i + n])
            if g in runs:
                out.append(g)
        return out

    def utterances_in(self, words: list[str]) -> set[int]:
        """Indices of the transcripts that the sentence is, or holds a run of."""
        out = {u for g in self.runs_in(words) for u in self.runs[g]}
        u = self.sentences.get(" ".join(words))
        if u is not None:
            out.add(u)
        return out

    def hit(self, words: list[str]) -> bool:
        """True when the sentence is a transcript or holds a transcript run."""
        return " ".join(words) in self.sentences or bool(self.runs_in(words))


def find_leaks(lm_text: str | os.PathLike, transcripts: Iterable[str], *, n: int = 10,
               max_examples: int = 20) -> LeakReport:
    """Count evaluation transcripts, and ``n``-word runs of them, in an LM text.

    Args:
        lm_text: one sentence a line (``asrkit lm-text``), streamed.
        transcripts: the evaluation sentences (:func:`read_eval_transcripts`), normalised as
            the LM text (upper case, no punctuation).
        n: run length; transcripts shorter than ``n`` words are checked as whole lines only.
        max_examples: hits kept in :attr:`LeakReport.examples`.

    Returns:
        :class:`LeakReport`.
    """
    m = RunMatcher(transcripts, n)
    report = LeakReport(n=n, utterances=m.utterances, ngrams=len(m.runs))
    found_sents: set[str] = set()
    found_grams: set[tuple[str, ...]] = set()
    hit_utts: set[int] = set()
    with open(lm_text, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            words = line.split()
            report.lines += 1
            report.words += len(words)
            hit = False
            s = " ".join(words)
            if s in m.sentences:
                hit = True
                if s not in found_sents:
                    found_sents.add(s)
                    hit_utts.add(m.sentences[s])
                if len(report.examples) < max_examples:
                    report.examples.append((no, s))
            for g in m.runs_in(words):
                hit = True
                if g not in found_grams:
                    found_grams.add(g)
                    hit_utts.update(m.runs[g])
                    if len(report.examples) < max_examples:
                        report.examples.append((no, " ".join(g)))
            report.lines_hit += hit
    report.sentences_found = len(found_sents)
    report.ngrams_found = len(found_grams)
    report.utterances_hit = len(hit_utts)
    logger.info("%s: %s", lm_text, report)
    return report
