"""Backoff n-gram language models: ARPA I/O, scoring for decoders, Kneser-Ney estimation.

The n-gram layer serves two decoders: the HMM-GMM WFST decoder reads an ARPA file and turns it
into ``G.fst``, and CTC/attention beam search adds an n-gram score by shallow fusion through
the state API (:meth:`NgramLM.start_state`, :meth:`NgramLM.score`, :meth:`NgramLM.final_score`).

**ARPA format** (Doug Paul's format, as written by SRILM ``ngram-count`` and KenLM ``lmplz``)::

    any header text
    \\data\\
    ngram 1=<count>
    ngram 2=<count>
    \\1-grams:
    <log10 prob>  <w1>  [<log10 backoff>]
    \\2-grams:
    <log10 prob>  <w1> <w2>  [<log10 backoff>]
    \\end\\

Fields are separated by spaces or tabs; blank lines, ``\\r\\n`` line endings and text before
``\\data\\`` are accepted, as SRILM's and KenLM's readers accept them. Files must be UTF-8
(gzip-compressed files are read and written when the data or the name says ``.gz``). A
malformed line, a section count that disagrees with ``\\data\\``, an n-gram over a word that is
not a 1-gram, or a missing ``\\end\\`` raises :class:`ArpaError`, whose message names the
file and the 1-based line. ``<s>`` conventionally has log10 probability ``-99`` (SRILM's
spelling of log 0; it is never predicted), ``</s>`` is predicted like a word, and the unknown
word is ``<unk>`` (or CMU Sphinx's ``<UNK>``).

**Log bases.** ARPA files store log10. :meth:`NgramLM.log10prob` returns log10;
:meth:`NgramLM.logprob`, :meth:`NgramLM.score`, :meth:`NgramLM.final_score` and
:meth:`NgramLM.score_sentence` return natural logs, the unit of the CTC/attention scores they
are added to (``asrkit.decode`` works in nats). :class:`PerplexityResult` reports log10, as
SRILM's ``ngram -ppl`` does.

**Backoff** (Katz 1987; the recursion of SRILM and KenLM): for a word ``w`` after context
``h = w_1 .. w_k``, ``log P(w | h) = log p(w_1 .. w_k w)`` if that n-gram is listed, else
``log bo(w_1 .. w_k) + log P(w | w_2 .. w_k)``, with ``log bo = 0`` for contexts not listed.
Only the last ``order - 1`` words of a context matter. A word outside the vocabulary is scored
as ``<unk>`` when the model has it, else with log10 probability :data:`OOV_LOG10PROB` (-100,
KenLM's substitute for a missing ``<unk>``).

**Decoder state** (KenLM's ``State``): the context, truncated to its longest suffix that is an
n-gram of the model; a tuple of words, hashable, so hypotheses with equal states can be merged.
The truncation is exact because an ARPA model lists every prefix of its n-grams (missing
prefixes, which some pruned SRILM models lack, are inserted on load with their backed-off
probability and a zero backoff, as KenLM does).

**Estimation** (:func:`estimate_ngram`): interpolated modified Kneser-Ney smoothing (Chen and
Goodman 1998, "An empirical study of smoothing techniques for language modeling", TR-10-98,
sections 3-4) computed as KenLM's ``lmplz`` does (Heafield et al. 2013, "Scalable modified
Kneser-Ney language model estimation", ACL): adjusted counts (the number of distinct left
extensions for every order below the highest, raw counts for the highest order and for n-grams
starting with ``<s>``), three discounts per order ``D1, D2, D3+`` from the count-of-counts
``t_k`` of the adjusted counts (C&G eq. 26: ``Y = t1 / (t1 + 2 t2)``,
``Dk = k - (k + 1) Y t_{k+1} / t_k``), interpolation of every order with the next lower one and
of the unigrams with the uniform distribution over the vocabulary (``<unk>`` and ``</s>``
included, ``<s>`` excluded), and the interpolated model written in backoff form (the
interpolation weight of a context becomes its ARPA backoff), so that for every context the
probabilities over the vocabulary and ``</s>`` sum to one. Interpolated Witten-Bell (SRILM's
``ngram-count -wbdiscount -interpolate``) is the simple alternative.

**Pruning** (:func:`prune_ngram`): Stolcke's (1998) relative-entropy pruning as SRILM's
``ngram -prune THRESHOLD`` does it, with SRILM's threshold convention (the relative increase
of the model's own perplexity), so ``3e-7``/``1e-7`` give Kaldi's LibriSpeech
``tgsmall``/``tgmed`` pruning.

Why our own estimator: of the packages on PyPI, ``kenlm`` builds only the query module (its
estimator ``lmplz`` is a C++ program that needs Boost and is not part of the Python package),
``nltk.lm`` has ``KneserNeyInterpolated`` with a single discount, no ARPA export and a
per-query recursion too slow for a million words, ``arpabo``'s "Kneser-Ney" is one fixed
discount without interpolation weights (its distributions do not sum to one), ``kaldilm`` only
converts ARPA to FST and ``arpa`` only reads. Counting with dictionaries keeps a 1M-word
trigram estimate within seconds.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from asrkit.fileio import FileLineError, atomic_write

__all__ = [
    "BOS",
    "EOS",
    "KN_DISCOUNT_FALLBACK",
    "LOG10_ZERO",
    "OOV_LOG10PROB",
    "UNK",
    "ArpaError",
    "LMState",
    "NgramLM",
    "PerplexityResult",
    "Sentence",
    "estimate_ngram",
    "ngrams_of_sentences",
    "prune_ngram",
    "read_arpa",
    "write_arpa",
]

logger = logging.getLogger(__name__)

BOS = "<s>"
"""Sentence-start token; it conditions the first word and is never predicted."""

EOS = "</s>"
"""Sentence-end token; it is predicted after the last word."""

UNK = "<unk>"
"""Unknown-word token written by :func:`estimate_ngram` (SRILM and KenLM spelling)."""

_UNK_SPELLINGS = (UNK, "<UNK>")

OOV_LOG10PROB = -100.0
"""log10 probability of a word outside a vocabulary that has no ``<unk>`` (KenLM's value)."""

LOG10_ZERO = -99.0
"""How ARPA files spell log10(0) (SRILM): the ``<s>`` 1-gram and any zero probability."""

KN_DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)
"""``D1, D2, D3+`` used when count-of-counts give no valid discounts (``lmplz
--discount_fallback``), which happens on small or artificial corpora."""

_LN10 = math.log(10.0)

LMState = tuple[str, ...]
"""Decoder state: the context words (oldest first), at most ``order - 1`` of them."""

Sentence = Sequence[str] | str
"""A sentence: a sequence of words, or a string split on whitespace; no ``<s>``/``</s>``."""

_NGRAM_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


class ArpaError(FileLineError):
    """An ARPA file is malformed.

    The message has the form ``<path>:<line>: <what is wrong>`` (or ``<path>: ...`` when no
    single line is at fault), e.g. ``lm.arpa:12: expected '<log10 prob> <2 words> [<log10
    backoff>]', found 1 field``.

    Attributes:
        path: the offending file.
        line: 1-based line number, or None.
        reason: the message without the location prefix.
    """


@dataclass(frozen=True)
class PerplexityResult:
    """Corpus statistics of :meth:`NgramLM.perplexity`, as SRILM's ``ngram -ppl`` reports them.

    Attributes:
        sentences: number of sentences (each contributes one scored ``</s>``).
        words: number of words, OOVs included, sentence markers excluded.
        oovs: words outside the vocabulary; they are not scored and not counted in the
            perplexity denominators.
        zeroprobs: in-vocabulary tokens with probability zero (also left out).
        log10prob: total log10 probability of the scored words and ``</s>`` tokens.
        ppl: ``10 ** (-log10prob / (words - oovs - zeroprobs + sentences))``.
        ppl1: ``10 ** (-log10prob / (words - oovs - zeroprobs))`` (``</s>`` excluded).
    """

    sentences: int
    words: int
    oovs: int
    zeroprobs: int
    log10prob: float
    ppl: float
    ppl1: float

    def __str__(self) -> str:
        return (f"{self.sentences} sentences, {self.words} words, {self.oovs} OOVs\n"
                f"{self.zeroprobs} zeroprobs, logprob= {self.log10prob:.6g} "
                f"ppl= {self.ppl:.6g} ppl1= {self.ppl1:.6g}")


def _as_words(sentence: Sentence) -> Sequence[str]:
    return sentence.split() if isinstance(sentence, str) else sentence


class NgramLM:
    """A backoff n-gram model (the content of an ARPA file) with scoring for decoders.

    Args:
        ngrams: one mapping per order (1-grams first): word tuple of length n ->
            ``(log10 prob, log10 backoff)``; use backoff ``0.0`` where there is none. The
            mappings are copied. Every word of a higher-order n-gram must be a 1-gram.
        unk: the unknown-word token; by default ``<unk>`` or ``<UNK>`` when the 1-grams have
            it, else None (words outside the vocabulary then score :data:`OOV_LOG10PROB`).

    Raises:
        ValueError: no 1-grams, a key of the wrong length, a word with whitespace, a higher
            n-gram over a word that is not a 1-gram, or ``unk`` not among the 1-grams.

    Missing prefixes of listed n-grams are inserted with their backed-off probability and a
    zero backoff (see the module docstring), which leaves every probability unchanged.
    """

    def __init__(self, ngrams: Sequence[Mapping[tuple[str, ...], tuple[float, float]]],
                 unk: str | None = None) -> None:
        if not ngrams or not ngrams[0]:
            raise ValueError("an n-gram model needs at least one 1-gram")
        tables: list[dict[tuple[str, ...], tuple[float, float]]] = []
        for n, table in enumerate(ngrams, start=1):
            table = dict(table)
            bad = next((key for key in table if len(key) != n), None)
            if bad is not None:
                raise ValueError(f"{n}-gram table holds the key {bad!r} of length {len(bad)}")
            tables.append(table)
        for (word,) in tables[0]:
            if not word or any(ch.isspace() for ch in word):
                raise ValueError(f"word {word!r} is empty or contains whitespace")
        self._tables = tables
        self._order = len(tables)
        self._vocab = frozenset(word for (word,) in tables[0])
        if unk is None:
            unk = next((u for u in _UNK_SPELLINGS if u in self._vocab), None)
        elif unk not in self._vocab:
            raise ValueError(f"unknown-word token {unk!r} is not a 1-gram of the model")
        self.unk: str | None = unk
        """The unknown-word token, or None for a closed vocabulary."""
        self._fill_missing_prefixes()

    @classmethod
    def _trusted(cls, tables: list[dict[tuple[str, ...], tuple[float, float]]],
                 unk: str | None) -> NgramLM:
        """A model that takes ownership of ``tables`` without copying or checking them
        (they must be valid, every prefix listed, ``unk`` a 1-gram or None)."""
        self = cls.__new__(cls)
        self._tables = tables
        self._order = len(tables)
        self._vocab = frozenset(word for (word,) in tables[0])
        self.unk = unk
        return self

    # ----------------------------------------------------------------- structure
    @property
    def order(self) -> int:
        """The model order N (the longest n-gram)."""
        return self._order

    @property
    def vocab(self) -> frozenset[str]:
        """The 1-gram words, ``<s>``, ``</s>`` and the unknown word included."""
        return self._vocab

    @property
    def counts(self) -> list[int]:
        """Number of n-grams of each order, 1-grams first (the ``ngram n=`` lines)."""
        return [len(t) for t in self._tables]

    def ngrams(self, n: int) -> Iterator[tuple[tuple[str, ...], float, float]]:
        """Yield ``(words, log10 prob, log10 backoff)`` for every n-gram of order ``n``."""
        if not 1 <= n <= self._order:
            raise ValueError(f"order {n} outside 1..{self._order}")
        return ((words, prob, bow) for words, (prob, bow) in self._tables[n - 1].items())

    def __contains__(self, ngram: object) -> bool:
        """True when the word tuple ``ngram`` is listed in the model."""
        return (isinstance(ngram, tuple) and 1 <= len(ngram) <= self._order
                and ngram in self._tables[len(ngram) - 1])

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}-grams={c}" for n, c in enumerate(self.counts, start=1))
        return f"NgramLM(order={self._order}, {counts}, unk={self.unk!r})"

    def _fill_missing_prefixes(self) -> None:
        tables = self._tables
        missing: list[set[tuple[str, ...]]] = [set() for _ in tables]
        for n in range(self._order, 1, -1):
            lower = tables[n - 2]
            for key in [*tables[n - 1], *missing[n - 1]]:
                ctx = key[:-1]
                if ctx not in lower:
                    if n == 2:
                        raise ValueError(f"{n}-gram {' '.join(key)!r} has the word {ctx[0]!r} "
                                         "which is not a 1-gram")
                    missing[n - 2].add(ctx)
                if key[-1] not in self._vocab:
                    raise ValueError(f"{n}-gram {' '.join(key)!r} has the word {key[-1]!r} "
                                     "which is not a 1-gram")
        total = sum(len(m) for m in missing)
        if not total:
            return
        for n in range(2, self._order):  # low orders first: each uses the ones below
            for ctx in sorted(missing[n - 1]):
                tables[n - 1][ctx] = (self._log10prob_mapped(ctx[-1], ctx[:-1]), 0.0)
        logger.warning("inserted %d n-grams that were missing as prefixes of listed n-grams "
                       "(a pruned model?) with their backed-off probabilities", total)

    # ------------------------------------------------------------------- scoring
    def _map(self, word: str) -> str:
        if word in self._vocab or self.unk is None:
            return word
        return self.unk

    def _log10prob_mapped(self, word: str, context: tuple[str, ...]) -> float:
        """Backoff recursion; ``word`` and ``context`` are mapped, len(context) < order."""
        tables = self._tables
        bow = 0.0
        k = len(context)
        for i in range(k + 1):
            ctx = context[i:]
            entry = tables[k - i].get(ctx + (word,))
            if entry is not None:
                return entry[0] + bow
            if ctx:
                ctx_entry = tables[k - i - 1].get(ctx)
                if ctx_entry is not None:
                    bow += ctx_entry[1]
        return OOV_LOG10PROB

    def _context(self, context: Iterable[str]) -> tuple[str, ...]:
        if self._order == 1:
            return ()
        ctx = tuple(context)[-(self._order - 1):]
        return tuple(self._map(w) for w in ctx)

    def log10prob(self, word: str, context: Iterable[str] = ()) -> float:
        """log10 P(word | context) by the backoff recursion.

        Args:
            word: the predicted word (``</s>`` for the sentence end); mapped to ``<unk>`` when
                outside the vocabulary.
            context: preceding words, oldest first, ``<s>`` included where the sentence
                starts; only the last ``order - 1`` are used.

        Returns:
            log10 probability; :data:`OOV_LOG10PROB` for an unknown word without ``<unk>``.
        """
        word = self._map(word)
        if word not in self._vocab:
            return OOV_LOG10PROB
        return self._log10prob_mapped(word, self._context(context))

    def logprob(self, word: str, context: Iterable[str] = ()) -> float:
        """Natural-log P(word | context); see :meth:`log10prob`."""
        return self.log10prob(word, context) * _LN10

    def start_state(self) -> LMState:
        """Decoder state at the start of a sentence: ``("<s>",)`` (``()`` for a unigram model).

        ``()`` is the null context (no sentence start), as KenLM's ``NullContextState``.
        """
        if self._order > 1 and BOS in self._vocab:
            return (BOS,)
        return ()

    def _next_state(self, state: LMState, word: str) -> LMState:
        if self._order == 1:
            return ()
        full = (*state, word)[-(self._order - 1):]
        tables = self._tables
        for i in range(len(full)):
            suffix = full[i:]
            if suffix in tables[len(suffix) - 1]:
                return suffix
        return ()

    def score(self, state: LMState, word: str) -> tuple[float, LMState]:
        """Score ``word`` after ``state`` and advance the state.

        Args:
            state: from :meth:`start_state` or a previous :meth:`score` (not an arbitrary
                word tuple: its words must already be mapped and truncated).
            word: the next word; outside the vocabulary it is scored as ``<unk>``.

        Returns:
            ``(natural-log P(word | state), new state)``; the new state is the longest suffix
            of ``state + (word,)`` (at most ``order - 1`` words) listed in the model, so equal
            states give equal scores for every continuation.
        """
        word = self._map(word)
        if word not in self._vocab:
            return OOV_LOG10PROB * _LN10, ()
        return (self._log10prob_mapped(word, state) * _LN10, self._next_state(state, word))

    def final_score(self, state: LMState) -> float:
        """Natural-log P(``</s>`` | state): the score that ends a hypothesis."""
        if EOS not in self._vocab:
            return OOV_LOG10PROB * _LN10
        return self._log10prob_mapped(EOS, state) * _LN10

    def score_sentence(self, words: Sentence, bos: bool = True, eos: bool = True) -> float:
        """Total natural-log probability of a sentence.

        Args:
            words: the words (a sequence, or a string split on whitespace), without markers.
            bos: condition the first word on ``<s>`` (else on the null context).
            eos: add the probability of ``</s>`` after the last word.

        Returns:
            The sum of the natural-log word probabilities; unknown words without ``<unk>``
            contribute :data:`OOV_LOG10PROB` (in nats) each.
        """
        state = self.start_state() if bos else ()
        total = 0.0
        for word in _as_words(words):
            lp, state = self.score(state, word)
            total += lp
        if eos:
            total += self.final_score(state)
        return total

    def perplexity(self, sentences: Iterable[Sentence], score_unk: bool = False
                   ) -> PerplexityResult:
        """Corpus perplexity with OOVs counted apart, as SRILM's ``ngram -ppl``.

        Each sentence is scored from ``<s>`` to ``</s>``. A word outside the vocabulary (or
        the unknown-word token itself) is an OOV: not scored, not in the denominators, and it
        stays in the context of the following words (as ``<unk>`` when the model has it),
        like SRILM.

        Args:
            sentences: iterable of sentences (word sequences or whitespace-split strings).
            score_unk: score OOVs as ``<unk>`` instead (SRILM ``-unk``, for open-vocabulary
                models); no effect when the model has no ``<unk>``.

        Returns:
            A :class:`PerplexityResult`; ``ppl``/``ppl1`` are NaN when nothing was scored.
        """
        n_sent = n_words = n_oov = n_zero = 0
        total = 0.0
        vocab = self._vocab
        scorable_unk = score_unk and self.unk is not None
        for sentence in sentences:
            n_sent += 1
            state = self.start_state()
            for word in _as_words(sentence):
                n_words += 1
                mapped = self._map(word)
                if (word not in vocab or word == self.unk) and not scorable_unk:
                    n_oov += 1
                else:
                    lp = self._log10prob_mapped(mapped, state)
                    if lp == -math.inf:
                        n_zero += 1
                    else:
                        total += lp
                state = self._next_state(state, mapped)
            lp = self._log10prob_mapped(EOS, state) if EOS in vocab else -math.inf
            if lp == -math.inf:
                n_zero += 1
            else:
                total += lp
        denom1 = n_words - n_oov - n_zero
        denom = denom1 + n_sent
        ppl = 10.0 ** (-total / denom) if denom > 0 else math.nan
        ppl1 = 10.0 ** (-total / denom1) if denom1 > 0 else math.nan
        return PerplexityResult(n_sent, n_words, n_oov, n_zero, total, ppl, ppl1)


# ----------------------------------------------------------------------- ARPA read
def _parse_float(path: Path, no: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(path, no, f"{what} {text!r} is not a number") from None
    if math.isnan(value):
        raise ArpaError(path, no, f"{what} is NaN")
    return value


def read_arpa(path: str | os.PathLike, unk: str | None = None, *,
              keep: Container[tuple[str, ...]] | None = None) -> NgramLM:
    """Read an ARPA backoff model of any order (plain or gzip-compressed UTF-8 text).

    The file is streamed line by line, so memory holds the model, not the file's text.

    Args:
        path: the ARPA file (``.arpa`` or ``.arpa.gz``; gzip is detected from the data).
        unk: unknown-word token, as for :class:`NgramLM` (default ``<unk>``/``<UNK>``).
        keep: when given, only the 1-grams and the higher-order n-grams in ``keep`` are
            kept (every line is still checked). :func:`ngrams_of_sentences` gives the
            n-grams that scoring some sentences needs, so a model far larger than memory
            scores them exactly as the whole model would (second-pass rescoring with a big
            LM, as Kaldi's ``lmrescore_const_arpa.sh`` does without loading the whole model
            either). Section counts are then checked against the lines read, not kept.

    Returns:
        The model.

    Raises:
        ArpaError: unreadable or non-UTF-8 file, no ``\\data\\``, a malformed ``ngram n=c``
            line, a section out of order or undeclared, a malformed n-gram line (field count,
            non-numeric or positive log10 probability), a duplicate n-gram, an n-gram over a
            word that is not a 1-gram, a count that disagrees with ``\\data\\``, or a missing
            ``\\end\\``; the message names the file and line.
    """
    path = Path(path)
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise ArpaError(path, None, "file not found") from None
    except OSError as e:
        raise ArpaError(path, None, f"cannot read file: {e.strerror or e}") from e
    with raw:
        try:
            gz = raw.peek(2)[:2] == b"\x1f\x8b"
        except OSError as e:
            raise ArpaError(path, None, f"cannot read file: {e.strerror or e}") from e
        f = gzip.GzipFile(fileobj=raw) if gz else raw
        tables = _parse_arpa(path, _decoded_lines(path, f), keep)
    return NgramLM(tables, unk=unk)


def _decoded_lines(path: Path, f: BinaryIO) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of ``f``, decoded as UTF-8 (a leading BOM
    dropped); errors name the line and column."""
    no = 0
    try:
        for no, data in enumerate(f, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ArpaError(path, no, f"invalid UTF-8 byte {data[e.start:e.start + 1]!r} "
                                          f"at column {e.start + 1}; ARPA files must be UTF-8 "
                                          "(convert with iconv)") from None
            yield no, (line.removeprefix("\ufeff") if no == 1 else line)
    except (OSError, EOFError) as e:
        if isinstance(e, ArpaError):
            raise
        raise ArpaError(path, no + 1 if no else None,
                        f"corrupt gzip data or read error: {e}") from None


def ngrams_of_sentences(sentences: Iterable[Sentence], order: int, *, bos: bool = True,
                        eos: bool = True) -> set[tuple[str, ...]]:
    """Every n-gram (``1 <= n <= order``) of the word sequences ``<s> words </s>`` that ends
    at a word: what :meth:`NgramLM.score_sentence` looks up (probabilities and the backoff
    weights of their contexts), for :func:`read_arpa`'s ``keep``.

    Args:
        sentences: strings (split on whitespace) or word sequences.
        order: the model order.
        bos: prepend ``<s>``; eos: append ``</s>`` (as :meth:`NgramLM.score_sentence`).

    Returns:
        The set of word tuples. Words are taken as written: a model that maps unknown
        words to ``<unk>`` needs ``<unk>`` spelled in (:meth:`NgramLM.score_sentence` maps
        them; pass the words mapped when the model has an unknown-word token).
    """
    out: set[tuple[str, ...]] = set()
    for sentence in sentences:
        words = list(_as_words(sentence))
        seq = ([BOS] if bos else []) + words + ([EOS] if eos else [])
        for i in range(len(seq)):
            for n in range(1, min(order, i + 1) + 1):
                out.add(tuple(seq[i - n + 1:i + 1]))
    return out


def _parse_arpa(path: Path, lines: Iterable[tuple[int, str]],
                keep: Container[tuple[str, ...]] | None = None
                ) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    lines = iter(lines)
    no = 0
    for no, raw in lines:
        if raw.strip() == "\\data\\":
            break
    else:
        raise ArpaError(path, None, "no '\\data\\' line: not an ARPA file")

    declared: dict[int, tuple[int, int]] = {}  # order -> (count, line)
    tables: list[dict[tuple[str, ...], tuple[float, float]]] = []
    order = 0  # highest declared order, known once the first section starts
    cur = 0  # order of the current section; 0 while in \data\
    section_line = 0
    warned_top_backoff = False
    vocab: dict[tuple[str, ...], tuple[float, float]] = {}
    entries = 0  # lines of the current section

    def close_section(end_line: int) -> None:
        count, decl_line = declared[cur]
        if entries != count:
            raise ArpaError(path, decl_line,
                            f"'ngram {cur}={count}' but the \\{cur}-grams: section (lines "
                            f"{section_line}-{end_line}) has {entries} entries")

    for no, raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line[0] == "\\":
            if cur:
                close_section(no - 1)
            if line == "\\end\\":
                if cur == 0:
                    raise ArpaError(path, no, "'\\end\\' before any n-gram section")
                if cur != order:
                    raise ArpaError(path, no, f"'\\end\\' before the \\{cur + 1}-grams: "
                                              "section")
                return tables
            m = _SECTION.fullmatch(line)
            if m is None:
                raise ArpaError(path, no, f"unexpected line {line!r}; expected '\\N-grams:' or "
                                          "'\\end\\'")
            n = int(m.group(1))
            if cur == 0:
                if not declared:
                    raise ArpaError(path, no, "section before any 'ngram N=count' line")
                order = max(declared)
                gaps = sorted(set(range(1, order + 1)) - set(declared))
                if gaps:
                    raise ArpaError(path, no, f"'\\data\\' declares orders up to {order} but "
                                              f"no 'ngram {gaps[0]}=count' line")
            if n != cur + 1 or n > order:
                want = f"\\{cur + 1}-grams:" if cur < order else "\\end\\"
                raise ArpaError(path, no, f"section \\{n}-grams: out of place; expected {want}")
            cur = n
            section_line = no
            entries = 0
            tables.append({})
            if n == 1:
                vocab = tables[0]
            continue
        if cur == 0:
            m = _NGRAM_COUNT.fullmatch(line)
            if m is None:
                raise ArpaError(path, no, f"expected 'ngram N=count' in the \\data\\ block, "
                                          f"found {line!r}")
            n, count = int(m.group(1)), int(m.group(2))
            if n < 1:
                raise ArpaError(path, no, f"n-gram order {n} < 1")
            if n in declared:
                raise ArpaError(path, no, f"order {n} declared twice (first on line "
                                          f"{declared[n][1]})")
            declared[n] = (count, no)
            continue
        fields = line.split()
        if len(fields) == cur + 1:
            bow = 0.0
        elif len(fields) == cur + 2:
            bow = _parse_float(path, no, fields[-1], "log10 backoff")
            if cur == order and not warned_top_backoff:
                logger.warning("%s:%d: backoff weight on a highest-order n-gram ignored",
                               path, no)
                warned_top_backoff = True
        else:
            found = f"{len(fields)} field" + ("s" if len(fields) != 1 else "")
            raise ArpaError(path, no, f"expected '<log10 prob> <{cur} word"
                                      f"{'s' if cur > 1 else ''}> [<log10 backoff>]', "
                                      f"found {found}")
        prob = _parse_float(path, no, fields[0], "log10 probability")
        if prob > 0.0:
            raise ArpaError(path, no, f"positive log10 probability {fields[0]} (P > 1)")
        words = tuple(fields[1:cur + 1])
        table = tables[-1]
        kept = cur == 1 or keep is None or words in keep
        if words in table:  # (duplicates among the lines not kept are not detected)
            raise ArpaError(path, no, f"duplicate {cur}-gram {' '.join(words)!r}")
        if cur > 1:
            for w in words:
                if (w,) not in vocab:
                    raise ArpaError(path, no, f"word {w!r} of this {cur}-gram is not in the "
                                              "\\1-grams: section")
        entries += 1
        if kept:
            table[words] = (prob, bow)
    raise ArpaError(path, no, "file ends before '\\end\\'")


# ---------------------------------------------------------------------- ARPA write
def _fmt(x: float, digits: int) -> str:
    if x == -math.inf:
        return f"{LOG10_ZERO:g}"
    if x == 0.0:
        return "0"
    return f"{x:.{digits}g}"


def write_arpa(lm: NgramLM, path: str | os.PathLike, digits: int = 7) -> None:
    """Write ``lm`` as an ARPA file, atomically (gzip-compressed when ``path`` ends in .gz).

    Layout follows SRILM: ``<log10 prob>\\t<words>\\t<log10 backoff>`` with the backoff written
    for every n-gram below the highest order except where it is zero on an n-gram ending in
    ``</s>`` (never a context); zero probabilities are written ``-99``.

    Args:
        lm: the model.
        path: output file; its directory is created if missing.
        digits: significant digits of the numbers (SRILM writes 7).
    """
    path = Path(path)
    order = lm.order

    def write_to(f: io.TextIOBase) -> None:
        f.write("\n\\data\\\n")
        f.writelines(f"ngram {n}={count}\n" for n, count in enumerate(lm.counts, start=1))
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            lines = []
            for words, prob, bow in lm.ngrams(n):
                text = f"{_fmt(prob, digits)}\t{' '.join(words)}"
                if n < order and not (bow == 0.0 and words[-1] == EOS):
                    text += f"\t{_fmt(bow, digits)}"
                lines.append(text)
                if len(lines) >= 65536:
                    f.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                f.write("\n".join(lines) + "\n")
        f.write("\n\\end\\\n")

    write_text_atomic(path, write_to)


def write_text_atomic(path: Path, write_to: Callable[[io.TextIOBase], None]) -> None:
    """Call ``write_to(f)`` on a UTF-8 text stream that becomes ``path`` only once complete
    (:func:`asrkit.fileio.atomic_write`), gzip-compressed (level 6, no timestamp) when the
    name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        with atomic_write(path, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz, \
                io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as f:
            write_to(f)
    else:
        with atomic_write(path) as f:
            write_to(f)


# ----------------------------------------------------------------------- estimation
def _kn_discounts(counts: Iterable[int], n: int, fallback: Sequence[float] | None
                  ) -> tuple[float, float, float]:
    """Modified-KN discounts ``(D1, D2, D3+)`` of order ``n`` from adjusted counts (C&G eq. 26)."""
    coc = Counter(c for c in counts if c <= 4)
    return _kn_discounts_from_coc([coc.get(k, 0) for k in range(5)], n, fallback)


def _kn_discounts_from_coc(t: Sequence[int], n: int, fallback: Sequence[float] | None
                           ) -> tuple[float, float, float]:
    """:func:`_kn_discounts` from the count-of-counts ``t[k]`` (n-grams of adjusted count
    ``k``, ``k = 0..4``); ``fallback`` where they give none (None: raise ValueError)."""
    reason = None
    if t[1] == 0 or t[2] == 0 or t[3] == 0:
        k = next(k for k in (1, 2, 3) if t[k] == 0)
        reason = f"no {n}-grams with adjusted count {k}"
    else:
        y = t[1] / (t[1] + 2.0 * t[2])
        d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        bad = next((k for k in (1, 2, 3) if not 0.0 <= d[k - 1] <= k), None)
        if bad is None:
            return d  # type: ignore[return-value]
        reason = f"D{bad} = {d[bad - 1]:.4g} outside [0, {bad}]"
    if fallback is None:
        raise ValueError(f"cannot compute Kneser-Ney discounts for {n}-grams: {reason} "
                         f"(count-of-counts {t[1:]}); is the corpus small or artificial? "
                         "Pass discount= or discount_fallback=")
    logger.warning("Kneser-Ney discounts for %d-grams: %s (count-of-counts %s); using the "
                   "fallback %s", n, reason, t[1:], tuple(fallback))
    return _check_discount(fallback)


def _check_discount(discount: Sequence[float]) -> tuple[float, float, float]:
    d = tuple(float(x) for x in discount)
    if len(d) != 3 or any(not 0.0 <= d[k - 1] <= k for k in (1, 2, 3)):
        raise ValueError(f"discounts must be (D1, D2, D3+) with 0 <= Dk <= k, got {discount!r}")
    return d  # type: ignore[return-value]


def _log10(x: float) -> float:
    return math.log10(x) if x > 0.0 else -math.inf


def _interpolate(counts: list[dict[tuple[str, ...], int]], n_vocab: int,
                 discounts: list[tuple[float, float, float] | None]
                 ) -> tuple[list[dict[tuple[str, ...], float]], list[dict[tuple[str, ...], float]]]:
    """Interpolated estimate from per-order counts; returns linear probabilities and
    interpolation weights (keyed by context) per order.

    Each n-gram ``hw`` with count ``c > 0`` keeps mass ``kept`` and frees mass ``freed``:
    Kneser-Ney (``discounts[n - 1] = (D1, D2, D3+)``): ``kept = c - D(c)``, ``freed = D(c)``;
    Witten-Bell (``None``): ``kept = c``, ``freed = 1``. Then ``Z(h) = sum (kept + freed)``
    over the extensions of ``h``, ``gamma(h) = sum freed / Z(h)`` and
    ``P(w | h) = kept(hw) / Z(h) + gamma(h) P(w | h')``; the unigrams are interpolated with
    the uniform distribution over ``n_vocab`` words.
    """
    probs: list[dict[tuple[str, ...], float]] = []
    gammas: list[dict[tuple[str, ...], float]] = []
    for n, table in enumerate(counts, start=1):
        d = discounts[n - 1]
        dk = (0.0, 0.0, 0.0, 0.0) if d is None else (0.0, *d)
        d3 = dk[3]
        add = 1.0 if d is None else 0.0  # Witten-Bell: each distinct extension adds 1 to Z
        fixed = 1.0 if d is None else None  # Witten-Bell: freed mass 1 per extension
        acc: dict[tuple[str, ...], list[float]] = {}  # context -> [Z, freed]
        for g, c in table.items():
            if not c:
                continue
            f = fixed if fixed is not None else (dk[c] if c < 3 else d3)
            h = g[:-1]
            sums = acc.get(h)
            if sums is None:
                acc[h] = [c + add, f]
            else:
                sums[0] += c + add
                sums[1] += f
        gamma = {h: f / z for h, (z, f) in acc.items()}
        z_of = {h: z for h, (z, _) in acc.items()}
        if d is None:
            kept = {g: float(c) for g, c in table.items()}
        else:
            kept = {g: c - (dk[c] if c < 3 else d3) for g, c in table.items()}
        if n == 1:
            z0 = z_of.get((), 0.0)
            uniform = gamma.get((), 1.0) / n_vocab
            p = {g: (k / z0 if z0 else 0.0) + uniform for g, k in kept.items()}
        else:
            lower = probs[-1]
            p = {g: k / z_of[g[:-1]] + gamma[g[:-1]] * lower[g[1:]] for g, k in kept.items()}
        probs.append(p)
        gammas.append(gamma)
    return probs, gammas


def estimate_ngram(sentences: Iterable[Sentence], order: int = 3, method: str = "kneser_ney",
                   discount: Sequence[float] | None = None,
                   vocabulary: Iterable[str] | None = None, unk: str = UNK,
                   discount_fallback: Sequence[float] | None = KN_DISCOUNT_FALLBACK) -> NgramLM:
    """Estimate a backoff n-gram model from text (interpolated, written in backoff form).

    Args:
        sentences: training sentences (word sequences or whitespace-split strings) without
            ``<s>``/``</s>``; each is padded with one ``<s>`` and one ``</s>``.
        order: model order N >= 1.
        method: ``"kneser_ney"`` (interpolated modified Kneser-Ney, Chen & Goodman 1998, as
            KenLM ``lmplz``) or ``"witten_bell"`` (interpolated Witten-Bell, as SRILM
            ``ngram-count -wbdiscount -interpolate``).
        discount: Kneser-Ney only: fixed ``(D1, D2, D3+)`` for every order instead of the
            count-of-counts estimate; ``0 <= Dk <= k``.
        vocabulary: a closed vocabulary: training words outside it become ``unk``, and its
            unseen words get the uniform share of the unigram mass. Default: the words seen.
        unk: the unknown-word token; always in the model (with only the uniform share when no
            training word maps to it), as KenLM does.
        discount_fallback: Kneser-Ney ``(D1, D2, D3+)`` for an order whose count-of-counts
            give no valid discounts (a count-of-count is zero or a discount is outside
            ``[0, k]``), with a warning; None raises ValueError instead (``lmplz`` without
            ``--discount_fallback``).

    Returns:
        The model: every n-gram seen in training, ``<s>`` with log10 probability ``-99``,
        interpolation weights as backoffs; for every context the probabilities of the
        vocabulary (``<s>`` excluded) and ``</s>`` sum to one.

    Raises:
        ValueError: bad ``order``/``method``/``discount``, no sentences, a sentence holding
            ``<s>`` or ``</s>``, a word with whitespace, or (with ``discount_fallback=None``)
            invalid count-of-count discounts.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if method not in ("kneser_ney", "witten_bell"):
        raise ValueError(f"unknown method {method!r}; expected 'kneser_ney' or 'witten_bell'")
    if discount is not None:
        if method != "kneser_ney":
            raise ValueError("discount= applies to method='kneser_ney' only")
        discount = _check_discount(discount)
    closed = None
    if vocabulary is not None:
        closed = set(vocabulary) - {BOS, EOS}
        closed.add(unk)

    # Raw counts: all orders for Witten-Bell; the highest order plus the sentence-initial
    # n-grams (<s> w1 .. w_{n-1}) for Kneser-Ney, whose other lower-order counts are adjusted.
    n_orders = order if method == "witten_bell" else 1
    raw: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(n_orders)]
    bos_prefix: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    n_sent = 0
    for i, sentence in enumerate(sentences):
        words = _as_words(sentence)
        if BOS in words or EOS in words:
            raise ValueError(f"sentence {i} contains {BOS!r} or {EOS!r}; pass the words only")
        if closed is not None:
            words = [w if w in closed else unk for w in words]
        padded = (BOS, *words, EOS)
        for j, n in enumerate(range(order, order - n_orders, -1)):
            raw[j].update(zip(*(padded[k:] for k in range(n))))
        if method == "kneser_ney":
            for n in range(1, min(order, len(padded) + 1)):
                bos_prefix[n - 1][padded[:n]] += 1
        n_sent += 1
    if not n_sent:
        raise ValueError("no training sentences")

    if method == "witten_bell":
        counts: list[dict[tuple[str, ...], int]] = list(reversed(raw))
    else:
        counts = [{} for _ in range(order)]
        counts[order - 1] = raw[0]
        for n in range(order - 1, 0, -1):  # adjusted count: distinct left extensions
            adjusted = Counter(g[1:] for g in counts[n])
            adjusted.update(bos_prefix[n - 1])  # disjoint keys: these start with <s>
            counts[n - 1] = adjusted
    del raw, bos_prefix
    counts[0].pop((BOS,), None)  # <s> is never predicted

    vocab = {w for (w,) in counts[0]} | {EOS, unk}
    if closed is not None:
        vocab |= closed
    for w in vocab:
        if not w or any(ch.isspace() for ch in w):
            raise ValueError(f"word {w!r} is empty or contains whitespace")
    for w in sorted(vocab):
        counts[0].setdefault((w,), 0)

    discounts: list[tuple[float, float, float] | None] = []
    for n, table in enumerate(counts, start=1):
        if method == "witten_bell":
            discounts.append(None)
            continue
        d = discount if discount is not None else _kn_discounts(table.values(), n,
                                                                discount_fallback)
        logger.info("Kneser-Ney discounts for %d-grams: D1=%.4f D2=%.4f D3+=%.4f", n, *d)
        discounts.append(d)

    probs, gammas = _interpolate(counts, len(vocab), discounts)
    tables: list[dict[tuple[str, ...], tuple[float, float]]] = []
    for n in range(1, order + 1):
        prob = probs[n - 1]
        if n == 1:
            prob[(BOS,)] = -math.inf  # written as -99
        nxt = gammas[n] if n < order else {}
        tables.append({g: (_log10(prob[g]) if g != (BOS,) else LOG10_ZERO,
                           _log10(nxt[g]) if g in nxt else 0.0) for g in sorted(prob)})
    logger.info("estimated %d-gram %s model: %s n-grams, %d words, %d sentences", order,
                method, "/".join(str(len(t)) for t in tables), len(vocab), n_sent)
    return NgramLM(tables, unk=unk)


# ------------------------------------------------------------------------- pruning
_PROB_EPSILON = 3e-6
"""SRILM's ``Prob_Epsilon``: rounding tolerance on the backoff-weight numerator and
denominator (``Ngram::computeBOW``)."""


def _bow_terms(sum_prob: float, sum_backoff: float) -> tuple[float, float] | None:
    """Numerator and denominator of a context's backoff weight, checked as SRILM does.

    ``sum_prob`` is ``sum p(w | h)`` over the words listed after ``h``, ``sum_backoff`` the sum
    of their backed-off estimates ``p(w | h')``. Returns ``(1 - sum_prob, 1 - sum_backoff)``
    with rounding noise below :data:`_PROB_EPSILON` clamped to zero, ``(0, 0)`` when neither
    has mass left (backoff weight one), or None when the context is improper: the listed
    probabilities sum past one, or the backoff distribution has no mass left for the
    unlisted words while the context has (SRILM then rescales the listed probabilities).
    """
    num = 1.0 - sum_prob
    den = 1.0 - sum_backoff
    if -_PROB_EPSILON < num < 0.0:
        num = 0.0
    if -_PROB_EPSILON < den < 0.0:
        den = 0.0
    if num < 0.0 or (den <= 0.0 and num > _PROB_EPSILON):
        return None
    if den <= 0.0:
        return 0.0, 0.0
    return num, den


def _context_log10prob(lm: NgramLM, context: tuple[str, ...]) -> float:
    """log10 of the marginal probability ``P(h)`` of a context, as SRILM's
    ``LM::contextProb``: the product of the model's conditional probabilities of its words,
    each given the words before it, where a leading ``<s>`` counts with ``P(</s>)`` (its own
    probability is zero) and a zero-probability ``<s>`` elsewhere is skipped."""
    total = 0.0
    for i, word in enumerate(context):
        if i == 0 and word == BOS and EOS in lm.vocab:
            word = EOS
        lp = lm._log10prob_mapped(word, context[:i])
        if lp <= LOG10_ZERO and word == BOS:
            continue
        total += lp
    return total


def _pruning_deltas(lm: NgramLM, n: int,
                    ctx_index: Mapping[tuple[str, ...], int] | None = None) -> array:
    """Stolcke's relative-entropy change of removing each listed ``n``-gram on its own.

    Args:
        lm: the model (n-grams of order ``n`` and below are read, never changed).
        n: the order, ``2 <= n <= lm.order``.
        ctx_index: position of every ``(n - 1)``-gram in iteration order of that table
            (built here when None).

    Returns:
        One value per ``n``-gram in the table's iteration order: SRILM's ``deltaH`` in log10
        units, ``-P(h) [p(w|h) (log p'(w|h) - log p(w|h)) + (1 - sum_v p(v|h))
        (log bo'(h) - log bo(h))]`` (multiply by ln 10 for nats), or NaN where the n-gram
        must not be pruned (an improper context, see :func:`_bow_terms`, or a zero backoff
        estimate).
    """
    tables = lm._tables
    table, lower = tables[n - 1], tables[n - 2]
    if ctx_index is None:
        ctx_index = {h: i for i, h in enumerate(lower)}
    m = len(lower)
    sum_prob = array("d", bytes(8 * m))
    sum_backoff = array("d", bytes(8 * m))
    backoff_lp = array("d", bytes(8 * len(table)))
    has_words = bytearray(m)
    prob_bo = lm._log10prob_mapped
    # Pass 1: per context h, sum p(w|h) and p(w|h') over its listed words.
    for j, (g, (lp, _)) in enumerate(table.items()):
        i = ctx_index[g[:-1]]
        b = prob_bo(g[-1], g[1:-1])
        backoff_lp[j] = b
        sum_prob[i] += 10.0 ** lp
        sum_backoff[i] += 10.0 ** b
        has_words[i] = 1
    # Per context: the backoff-weight numerator/denominator, P(h) and the stored bo(h).
    nan = math.nan
    numer = array("d", bytes(8 * m))
    denom = array("d", bytes(8 * m))
    hist_prob = array("d", bytes(8 * m))
    bow_of = array("d", bytes(8 * m))
    improper = 0
    for i, (h, (_, bow)) in enumerate(lower.items()):
        if not has_words[i]:
            continue
        terms = _bow_terms(sum_prob[i], sum_backoff[i])
        if terms is None:
            improper += 1
            numer[i] = nan
            continue
        numer[i], denom[i] = terms
        hist_prob[i] = 10.0 ** _context_log10prob(lm, h)
        bow_of[i] = bow
    del sum_prob, sum_backoff, has_words
    if improper:
        logger.warning("%d contexts of %d-grams have improper backoff weights (their "
                       "probabilities sum past one); their %d-grams are kept", improper, n, n)
    # Pass 2: the entropy change of each n-gram (SRILM Ngram::pruneProbs).
    log10 = math.log10
    deltas = array("d", bytes(8 * len(table)))
    for j, (g, (lp, _)) in enumerate(table.items()):
        i = ctx_index[g[:-1]]
        num = numer[i]
        b = backoff_lp[j]
        p = 10.0 ** lp
        a, d = num + p, denom[i] + 10.0 ** b
        if not (a > 0.0 and d > 0.0):  # improper context (num is NaN) or zero mass: keep
            deltas[j] = nan
            continue
        new_bow = log10(a) - log10(d)
        deltas[j] = -hist_prob[i] * (p * (b + new_bow - lp) + num * (new_bow - bow_of[i]))
    return deltas


def _recompute_backoffs(lm: NgramLM) -> None:
    """Renormalise ``lm`` in place: recompute every backoff weight from the listed
    probabilities, lower orders first (SRILM ``Ngram::recomputeBOWs``).

    ``bo(h) = (1 - sum_w p(w|h)) / (1 - sum_w p(w|h'))`` over the words ``w`` listed after
    ``h``, with the lower-order estimates taken from the already renormalised lower orders;
    zero for a context with no listed words. An improper context gets ``bo = 0`` (log10
    ``-99``) with a warning, and one whose backoff distribution has no mass left for the
    unlisted words has its probabilities scaled to sum to one, as SRILM does. The 1-grams
    are not changed.
    """
    tables = lm._tables
    prob_bo = lm._log10prob_mapped
    for k in range(1, lm.order):
        table, children = tables[k - 1], tables[k]
        idx = {h: i for i, h in enumerate(table)}
        m = len(table)
        sum_prob = array("d", bytes(8 * m))
        sum_backoff = array("d", bytes(8 * m))
        has_words = bytearray(m)
        for g, (lp, _) in children.items():
            i = idx[g[:-1]]
            sum_prob[i] += 10.0 ** lp
            sum_backoff[i] += 10.0 ** prob_bo(g[-1], g[1:-1])
            has_words[i] = 1
        rescale: dict[int, float] = {}
        improper = 0
        for i, (h, (lp, _)) in enumerate(table.items()):
            if not has_words[i]:
                bow = 0.0
            else:
                terms = _bow_terms(sum_prob[i], sum_backoff[i])
                if terms is None:
                    if 1.0 - sum_prob[i] >= 0.0 and 1.0 - sum_backoff[i] > -_PROB_EPSILON:
                        # the backoff distribution has no mass left: scale to sum to one
                        rescale[i] = -math.log10(sum_prob[i])
                        bow = 0.0
                    else:
                        improper += 1
                        bow = LOG10_ZERO
                elif terms == (0.0, 0.0):
                    bow = 0.0
                else:
                    bow = _log10(terms[0]) - math.log10(terms[1])
            table[h] = (lp, bow)  # same keys: safe while iterating
        if rescale:
            logger.warning("%d contexts of %d-grams leave no backoff mass; scaled their "
                           "probabilities to sum to one", len(rescale), k + 1)
            for g, (lp, bow) in children.items():
                scale = rescale.get(idx[g[:-1]])
                if scale is not None:
                    children[g] = (lp + scale, bow)
        if improper:
            logger.warning("%d contexts of %d-grams have probabilities summing past one; "
                           "backoff weight set to zero", improper, k + 1)


def prune_ngram(lm: NgramLM, threshold: float) -> NgramLM:
    """Relative-entropy pruning of a backoff model (Stolcke 1998; SRILM ``ngram -prune``).

    Stolcke, "Entropy-based pruning of backoff language models", DARPA Broadcast News
    Transcription and Understanding Workshop, 1998. Every listed n-gram ``(h, w)`` of order
    2 and above is scored by the relative entropy between the model and the model without
    it, ``w`` then being predicted by the backoff estimate ``bo'(h) p(w | h')`` with ``bo'(h)``
    recomputed so that ``P(. | h)`` still sums to one::

        D = -P(h) [ p(w|h) (log p'(w|h) - log p(w|h))
                    + (1 - sum_{v listed after h} p(v|h)) (log bo'(h) - log bo(h)) ]
        bo'(h) = (1 - sum_v p(v|h) + p(w|h)) / (1 - sum_v p(v|h') + p(w|h'))

    where ``h'`` is ``h`` without its first word and ``P(h)`` the product of the model's
    conditional probabilities of the words of ``h`` (a leading ``<s>`` counts with
    ``P(</s>)``), as SRILM's ``Ngram::pruneProbs`` computes them. Each n-gram is scored
    against the unpruned model, independently of the others.

    **The threshold is SRILM's**: an n-gram is removed when ``exp(D) - 1 < threshold`` with
    ``D`` in nats (SRILM computes ``D`` in log10 units and tests ``10 ** D - 1``), i.e. when
    removing it raises the model's own (training-set) perplexity by a relative amount below
    ``threshold``; for such small values that is ``D < threshold`` in nats. So ``3e-7`` and
    ``1e-7`` are Kaldi's LibriSpeech ``tgsmall`` and ``tgmed`` settings (``ngram -prune
    3e-7``). SRILM's caveat applies: a Kneser-Ney model's lower orders are poor estimates of
    ``P(h)``, so it loses more perplexity under pruning than a Katz or Witten-Bell model
    (SRILM's ``-prune-history-lm`` remedy is not implemented).

    Orders are pruned from the highest down; an n-gram that is the context (prefix) of a
    kept higher-order n-gram is kept, so the result lists every prefix of its n-grams. The
    1-grams are never pruned. Afterwards every backoff weight is recomputed from the kept
    probabilities, lower orders first (SRILM ``recomputeBOWs``), so that each conditional
    distribution sums to one again; the kept probabilities themselves are unchanged.

    Time and memory: two passes over each order with per-context sums in flat arrays; the
    result shares its n-gram keys with ``lm``, which is not modified.

    Args:
        lm: the model to prune.
        threshold: relative perplexity increase below which an n-gram is removed; 0 keeps
            every n-gram (the model is returned as a copy, backoff weights untouched).

    Returns:
        The pruned model (a new :class:`NgramLM`).

    Raises:
        ValueError: ``threshold`` negative or not a finite number.
    """
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0.0:
        raise ValueError(f"pruning threshold must be a finite number >= 0, got {threshold!r}")
    tables = lm._tables
    order = lm.order
    if threshold == 0.0 or order == 1:
        return NgramLM(tables, unk=lm.unk)
    new_tables: list[dict[tuple[str, ...], tuple[float, float]]] = [{} for _ in tables]
    needed: bytearray | None = None  # n-grams that are contexts of kept (n+1)-grams
    expm1, ln10 = math.expm1, _LN10
    for n in range(order, 1, -1):
        table, lower = tables[n - 1], tables[n - 2]
        ctx_index = {h: i for i, h in enumerate(lower)}
        deltas = _pruning_deltas(lm, n, ctx_index)
        lower_needed = bytearray(len(lower))
        kept = new_tables[n - 1]
        for j, (g, value) in enumerate(table.items()):
            # NaN deltas (never prune) fail the comparison and are kept.
            if (needed is not None and needed[j]) or not expm1(deltas[j] * ln10) < threshold:
                kept[g] = value
                lower_needed[ctx_index[g[:-1]]] = 1
        needed = lower_needed
        del ctx_index, deltas
        logger.info("pruning %d-grams at threshold %g: kept %d of %d", n, threshold,
                    len(kept), len(table))
    new_tables[0] = dict(tables[0])
    pruned = NgramLM._trusted(new_tables, lm.unk)
    _recompute_backoffs(pruned)
    return pruned
