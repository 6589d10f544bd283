"""Kneser-Ney estimation and entropy pruning for corpora of hundreds of millions of words.

:func:`asrkit.lm.ngram.estimate_ngram` keeps every n-gram as a Python tuple in a dict (about
200 bytes each): fine for a few million words, far too big for LibriSpeech's LM corpus. This
module computes the same model, interpolated modified Kneser-Ney (Chen & Goodman 1998) in
KenLM ``lmplz``'s form, with the same ``<s>``/``</s>``/``<unk>`` conventions and the same
probabilities (to rounding), over flat numpy arrays:

1. **Text** (the one streaming pass over it): words get ids in order of appearance and are
   counted; the id stream (``<s>`` and ``</s>`` around each sentence) goes to ``tmp_dir`` as
   int32 ``.npy`` chunks of whole sentences (4 bytes a word). Then the vocabulary: the
   ``vocab_size`` most frequent words (ties by spelling), the rest become ``<unk>``; ids
   ``<s>`` 0, ``</s>`` 1, ``<unk>`` 2, then the words by falling count. An n-gram is one
   int64 key, its word ids packed ``B = bit_length(V - 1)`` bits each, first word highest,
   so sorted keys are grouped by history (``key >> B``) and the suffix is
   ``key & (2**(B (n-1)) - 1)``. When ``order * B`` exceeds 63 bits (a 4-gram over more
   than 32k words), the highest order is keyed instead by the index of its first
   ``order - 1`` words in the sorted table of the text's ``(order-1)``-word windows
   (counted in one more pass over the id chunks) and its last id, which keeps the same sort
   order.
2. **Counting** (external sort over the id chunks, remapped to vocabulary ids): each
   chunk's highest-order n-grams (and its sentence-initial ``<s> w1 ..`` n-grams of lower
   orders, whose raw counts Kneser-Ney keeps) are sorted and counted (``np.unique``).
   Sorted runs are merged in memory while they fit ``memory_gb`` and spilled to
   ``tmp_dir`` as ``.npy`` runs otherwise; the runs are then merged key range by key range
   through memory maps, so the counting memory is bounded by ``memory_gb`` and the result
   by the number of distinct n-grams, whatever the text size.
3. **Adjusted counts**: for each lower order, the number of distinct left extensions
   ``N1+(. w2..wn)``: the suffixes of the distinct (n+1)-grams, counted with the same merger;
   ``<s>``-initial n-grams keep their raw counts.
4. **Discounts** ``D1, D2, D3+`` per order from the count-of-counts (C&G eq. 26), the
   interpolated probabilities and the backoff weights (the interpolation weights) with
   vectorised numpy over the sorted arrays: ``reduceat`` per history, ``searchsorted`` for the
   lower-order estimate of each suffix.
5. **Pruning** (:meth:`ArrayNgramLM.prune`): Stolcke's relative-entropy criterion with SRILM's
   threshold, exactly as :func:`asrkit.lm.ngram.prune_ngram` (deltas against the unpruned
   model, ``P(h)`` by the chain rule over the lower orders with a leading ``<s>`` scored as
   ``</s>``, prefixes of kept n-grams kept, backoff weights recomputed lower orders first).
6. **ARPA** written streaming and atomically (:meth:`ArrayNgramLM.write_arpa`), and perplexity
   computed on the arrays (:meth:`ArrayNgramLM.perplexity`, SRILM's ``-ppl`` conventions), so a
   model with 100M n-grams is never turned into Python objects.

Memory: about 40 bytes per distinct n-gram of the estimate (key, probability, backoff and the
temporaries of one order), plus ``memory_gb`` of counting buffers; disk: 4 bytes a word of
text plus the spilled runs. Time is dominated by the Python pass over the text (splitting
and numbering words), sorting and the ARPA text formatting.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asrkit.lm.ngram import (
    _PROB_EPSILON,
    BOS,
    EOS,
    KN_DISCOUNT_FALLBACK,
    LOG10_ZERO,
    OOV_LOG10PROB,
    UNK,
    NgramLM,
    PerplexityResult,
    _check_discount,
    _kn_discounts_from_coc,
    write_text_atomic,
)

__all__ = ["ArrayNgramLM", "LargeEstimateStats", "estimate_ngram_large", "read_lm_lines"]

logger = logging.getLogger(__name__)

BOS_ID, EOS_ID, UNK_ID = 0, 1, 2
_LN10 = math.log(10.0)


# ------------------------------------------------------------------------------ text
def read_lm_lines(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                  utt_ids: bool = False) -> Iterator[list[str]]:
    """Stream the sentences of text files as word lists (blank lines skipped).

    Args:
        paths: one file or several, UTF-8, one sentence a line.
        utt_ids: lines are Kaldi ``text`` (``utt-id WORDS...``): the first field is dropped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if utt_ids:
                    words = words[1:]
                if words:
                    yield words


# ------------------------------------------------------------------ sorted counting
def _unique_counts(keys: np.ndarray, counts: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and their summed counts (each key counts 1 when ``counts`` is
    None)."""
    if len(keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if counts is None:
        k = np.sort(keys)
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        c = np.diff(np.append(starts, len(k)))
        return k[starts], c.astype(np.int64)
    order = np.argsort(keys, kind="stable")  # timsort: linear on concatenated sorted runs
    k = keys[order]
    c = np.asarray(counts, np.int64)[order]
    del order
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.add.reduceat(c, starts)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(parts) == 1:
        return np.asarray(parts[0][0]), np.asarray(parts[0][1])
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    return _unique_counts(keys, counts)


class _SortedRuns:
    """Counts of int64 keys, accumulated as sorted runs: merged in memory up to ``budget``
    pairs, spilled to ``tmp_dir`` beyond, merged key range by key range at the end."""

    def __init__(self, tmp_dir: Path, name: str, budget: int) -> None:
        self.tmp_dir, self.name, self.budget = tmp_dir, name, max(int(budget), 1024)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_items = 0
        self.runs: list[tuple[Path, Path]] = []
        self.spilled_items = 0

    def add(self, keys: np.ndarray, counts: np.ndarray | None = None) -> None:
        k, c = _unique_counts(keys, counts)
        self.pending.append((k, c))
        self.pending_items += len(k)
        if self.pending_items > self.budget:
            merged = _merge(self.pending)
            self.pending = [merged]
            self.pending_items = len(merged[0])
            if self.pending_items > self.budget // 2:
                self._spill()

    def _spill(self) -> None:
        k, c = _merge(self.pending)
        self.pending, self.pending_items = [], 0
        if not len(k):
            return
        i = len(self.runs)
        kp, cp = self.tmp_dir / f"{self.name}.{i}.keys.npy", self.tmp_dir / f"{self.name}.{i}.counts.npy"
        np.save(kp, k)
        np.save(cp, c)
        self.runs.append((kp, cp))
        self.spilled_items += len(k)
        logger.debug("%s: spilled run %d (%d keys)", self.name, i, len(k))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """All distinct keys (sorted) and their counts; the run files are removed."""
        if not self.runs:
            k, c = _merge(self.pending)
            self.pending = []
            return k, c
        self._spill()
        runs = [(np.load(kp, mmap_mode="r"), np.load(cp, mmap_mode="r")) for kp, cp in self.runs]
        total = sum(len(k) for k, _ in runs)
        n_ranges = max(1, -(-total // max(self.budget // 2, 1)))
        biggest = max((k for k, _ in runs), key=len)
        bounds = sorted({int(biggest[len(biggest) * i // n_ranges]) for i in range(1, n_ranges)})
        lo = [0] * len(runs)
        pieces: list[tuple[Path, Path, int]] = []
        for j, bound in enumerate([*bounds, None]):
            parts = []
            for r, (k, c) in enumerate(runs):
                hi = len(k) if bound is None else int(np.searchsorted(k, bound))
                parts.append((np.asarray(k[lo[r]:hi]), np.asarray(c[lo[r]:hi])))
                lo[r] = hi
            k_, c_ = _merge(parts)
            del parts
            kp = self.tmp_dir / f"{self.name}.m{j}.keys.npy"
            cp = self.tmp_dir / f"{self.name}.m{j}.counts.npy"
            np.save(kp, k_)
            np.save(cp, c_)
            pieces.append((kp, cp, len(k_)))
        del runs
        n = sum(p[2] for p in pieces)
        keys = np.empty(n, np.int64)
        counts = np.empty(n, np.int64)
        at = 0
        for kp, cp, m in pieces:
            keys[at:at + m] = np.load(kp)
            counts[at:at + m] = np.load(cp)
            at += m
            kp.unlink()
            cp.unlink()
        for kp, cp in self.runs:
            kp.unlink()
            cp.unlink()
        logger.info("%s: merged %d runs (%d keys) into %d distinct keys", self.name,
                    len(self.runs), total, n)
        self.runs = []
        return keys, counts


# ------------------------------------------------------------------------- helpers
def _lookup(table: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in the sorted ``table`` and whether it is there."""
    if len(table) == 0:
        return np.zeros(len(queries), np.int64), np.zeros(len(queries), bool)
    idx = np.searchsorted(table, queries)
    np.minimum(idx, len(table) - 1, out=idx)
    return idx, table[idx] == queries


def _sorted_lookup(table: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted(table, queries)`` for non-decreasing ``queries`` (contexts of sorted
    keys): each distinct query is searched once."""
    if len(queries) == 0:
        return np.zeros(0, np.int64)
    change = np.flatnonzero(queries[1:] != queries[:-1]) + 1
    first = np.concatenate(([0], change))
    pos = np.searchsorted(table, queries[first])
    return np.repeat(pos, np.diff(np.append(first, len(queries))))


def _kn_discounts_np(counts: np.ndarray, n: int, fallback: Sequence[float] | None
                     ) -> tuple[float, float, float]:
    """:func:`asrkit.lm.ngram._kn_discounts` over a count array (C&G eq. 26)."""
    small = counts[counts <= 4]
    t = [int(x) for x in np.bincount(small.astype(np.int64), minlength=5)[:5]]
    return _kn_discounts_from_coc(t, n, fallback)


def _fmt_column(x: np.ndarray) -> list[str]:
    """ARPA numbers as :func:`asrkit.lm.ngram.write_arpa` writes them (7 significant
    digits, ``-99`` for log 0, ``0`` for zero)."""
    x = np.where(np.isneginf(x), LOG10_ZERO, x) + 0.0  # -0.0 -> 0.0
    return [f"{v:.7g}" for v in x.tolist()]


def _ctx_keys(k: np.ndarray, bits: int, prefix: np.ndarray | None) -> np.ndarray:
    """Packed (n-1)-gram keys of the contexts of n-gram keys ``k`` (``prefix``: the sorted
    (n-1)-gram keys that index a top order whose packed keys would not fit 63 bits)."""
    c = k >> bits
    return c if prefix is None else prefix[c]


def _suffix_keys(k: np.ndarray, n: int, bits: int, prefix: np.ndarray | None) -> np.ndarray:
    """Packed (n-1)-gram keys of the suffixes (all words but the first) of n-gram keys."""
    if prefix is None:
        return k & ((1 << (bits * (n - 1))) - 1)
    return (((prefix[k >> bits] & ((1 << (bits * (n - 2))) - 1)) << bits)
            | (k & ((1 << bits) - 1)))


# --------------------------------------------------------------------------- model
@dataclass
class LargeEstimateStats:
    """What :func:`estimate_ngram_large` read and did.

    Attributes:
        sentences, tokens: sentences and words read (``<s>``/``</s>`` excluded).
        vocab: words in the model (``<s>``, ``</s>``, ``<unk>`` included); oov_tokens: training
            words mapped to ``<unk>``.
        counts: n-grams per order; discounts: ``(D1, D2, D3+)`` per order.
        spilled: n-gram counts written to disk in sorted runs (0: all fitted in memory).
        seconds: wall time per stage.
    """

    sentences: int = 0
    tokens: int = 0
    vocab: int = 0
    oov_tokens: int = 0
    counts: list[int] = field(default_factory=list)
    discounts: list[tuple[float, float, float]] = field(default_factory=list)
    spilled: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class ArrayNgramLM:
    """A backoff n-gram model held in sorted numpy arrays (see the module docstring).

    Attributes:
        words: the vocabulary by id (``<s>`` 0, ``</s>`` 1, ``<unk>`` 2).
        bits: bits per word id in the packed keys.
        keys: per order, the sorted packed n-gram keys (order 1: ``arange(V)``); when
            ``prefix`` is set, a highest-order key is ``(index of its first n-1 words in
            prefix) << bits | last word`` instead (orders whose packed keys need > 63 bits).
        prefix: None, or the sorted packed (n-1)-gram keys the highest order is indexed by.
        logprob: per order, log10 probabilities (``-99`` for ``<s>``).
        backoff: per order below the highest, log10 backoff weights (0 where none).
        unk: the unknown-word token.
    """

    def __init__(self, words: list[str], keys: list[np.ndarray], logprob: list[np.ndarray],
                 backoff: list[np.ndarray], unk: str = UNK,
                 prefix: np.ndarray | None = None) -> None:
        self.words = words
        self.prefix = prefix
        self.bits = max(1, (len(words) - 1).bit_length())
        self.keys, self.logprob, self.backoff = keys, logprob, backoff
        self.unk = unk
        self._ids = {w: i for i, w in enumerate(words)}

    @property
    def order(self) -> int:
        return len(self.keys)

    @property
    def counts(self) -> list[int]:
        """n-grams per order (the ARPA ``ngram n=`` values)."""
        return [len(k) for k in self.keys]

    def _mask(self, n: int) -> int:
        return (1 << (self.bits * n)) - 1

    def _key(self, ids: Sequence[int]) -> int:
        """The key of an n-gram of ids (-1 for a highest-order one whose prefix is not
        indexed)."""
        if self.prefix is not None and len(ids) == self.order:
            p = self._key(ids[:-1])
            j = int(np.searchsorted(self.prefix, p))
            if j >= len(self.prefix) or int(self.prefix[j]) != p:
                return -1
            return (j << self.bits) | ids[-1]
        k = 0
        for i in ids:
            k = (k << self.bits) | i
        return k

    def _top(self, n: int) -> np.ndarray | None:
        return self.prefix if n == self.order else None

    def decode(self, n: int, keys: np.ndarray) -> np.ndarray:
        """The word ids of order-``n`` keys, shape ``(len(keys), n)``."""
        m = self._mask(1)
        if self._top(n) is not None:
            ctx = self.decode(n - 1, self.prefix[keys >> self.bits])  # type: ignore[index]
            return np.concatenate([ctx, (keys & m)[:, None]], axis=1)
        return np.stack([(keys >> (self.bits * (n - 1 - j))) & m for j in range(n)], axis=1)

    # ----------------------------------------------------------------- scoring
    def _find(self, n: int, key: int) -> int:
        table = self.keys[n - 1]
        i = int(np.searchsorted(table, key))
        return i if i < len(table) and int(table[i]) == key else -1

    def log10prob_ids(self, word: int, context: Sequence[int]) -> float:
        """log10 P(word | context) by the backoff recursion over ids (context: at most
        ``order - 1`` ids, oldest first)."""
        bow = 0.0
        k = len(context)
        for i in range(k + 1):
            ctx = context[i:]
            j = self._find(len(ctx) + 1, self._key([*ctx, word]))
            if j >= 0:
                return float(self.logprob[len(ctx)][j]) + bow
            if ctx:
                c = self._find(len(ctx), self._key(ctx))
                if c >= 0:
                    bow += float(self.backoff[len(ctx) - 1][c])
        return OOV_LOG10PROB

    def perplexity(self, sentences: Iterable[Sequence[str] | str]) -> PerplexityResult:
        """Corpus perplexity, OOVs (and ``<unk>`` itself) counted apart and not scored, as
        :meth:`asrkit.lm.ngram.NgramLM.perplexity` and SRILM ``ngram -ppl``."""
        n_sent = n_words = n_oov = 0
        total = 0.0
        ids, unk_id, keep = self._ids, self._ids.get(self.unk, UNK_ID), self.order - 1
        for sentence in sentences:
            words = sentence.split() if isinstance(sentence, str) else sentence
            n_sent += 1
            ctx: list[int] = [BOS_ID]
            for w in words:
                n_words += 1
                i = ids.get(w)
                if i is None or i == unk_id:
                    n_oov += 1
                    i = unk_id
                else:
                    total += self.log10prob_ids(i, ctx[-keep:] if keep else [])
                ctx.append(i)
            total += self.log10prob_ids(EOS_ID, ctx[-keep:] if keep else [])
        denom1 = n_words - n_oov
        denom = denom1 + n_sent
        ppl = 10.0 ** (-total / denom) if denom > 0 else math.nan
        ppl1 = 10.0 ** (-total / denom1) if denom1 > 0 else math.nan
        return PerplexityResult(n_sent, n_words, n_oov, 0, total, ppl, ppl1)

    def to_ngram_lm(self) -> NgramLM:
        """The same model as an :class:`~asrkit.lm.ngram.NgramLM` (small models only)."""
        tables = []
        for n in range(1, self.order + 1):
            ids = self.decode(n, self.keys[n - 1]).tolist()
            lp = self.logprob[n - 1].tolist()
            bo = self.backoff[n - 1].tolist() if n < self.order else [0.0] * len(lp)
            tables.append({tuple(self.words[i] for i in g): (p, b)
                           for g, p, b in zip(ids, lp, bo)})
        return NgramLM(tables, unk=self.unk)

    # ------------------------------------------------------------------- ARPA
    def write_arpa(self, path: str | os.PathLike, chunk: int = 1 << 20) -> None:
        """Write the model as ARPA, streaming and atomically (gzip when the name ends in
        ``.gz``), in :func:`asrkit.lm.ngram.write_arpa`'s layout."""
        path = Path(path)
        words = np.array(self.words, dtype=object)
        order = self.order

        def write_to(f: io.TextIOBase) -> None:
            f.write("\n\\data\\\n")
            f.writelines(f"ngram {n}={c}\n" for n, c in enumerate(self.counts, start=1))
            for n in range(1, order + 1):
                f.write(f"\n\\{n}-grams:\n")
                keys = self.keys[n - 1]
                for s in range(0, len(keys), chunk):
                    ids = self.decode(n, keys[s:s + chunk])
                    text = words[ids[:, 0]]
                    for j in range(1, n):
                        text = text + " " + words[ids[:, j]]
                    probs = _fmt_column(self.logprob[n - 1][s:s + chunk])
                    if n < order:
                        bo = self.backoff[n - 1][s:s + chunk]
                        bos = _fmt_column(bo)
                        skip = ((bo == 0.0) & (ids[:, -1] == EOS_ID)).tolist()
                        lines = [f"{p}\t{t}" if sk else f"{p}\t{t}\t{b}"
                                 for p, t, b, sk in zip(probs, text.tolist(), bos, skip)]
                    else:
                        lines = [f"{p}\t{t}" for p, t in zip(probs, text.tolist())]
                    f.write("\n".join(lines) + "\n")
            f.write("\n\\end\\\n")

        write_text_atomic(path, write_to)

    # ---------------------------------------------------------------- pruning
    def _backoff_logprob(self, n: int, q: np.ndarray, keys: list[np.ndarray],
                         logprob: list[np.ndarray], backoff: list[np.ndarray]) -> np.ndarray:
        """log10 P(last word | the first n-1 words) of order-``n`` keys ``q`` by the backoff
        recursion over the given tables."""
        res = np.empty(len(q))
        acc = np.zeros(len(q))
        todo = np.arange(len(q))
        for m in range(n, 0, -1):
            if not len(todo):
                break
            qm = q[todo] & self._mask(m)
            idx, found = _lookup(keys[m - 1], qm)
            res[todo[found]] = acc[todo[found]] + logprob[m - 1][idx[found]]
            nf = ~found
            todo, qm = todo[nf], qm[nf]
            if m > 1 and len(todo):
                cidx, cfound = _lookup(keys[m - 2], qm >> self.bits)
                acc[todo[cfound]] += backoff[m - 2][cidx[cfound]]
        if len(todo):
            res[todo] = OOV_LOG10PROB
        return res

    def prune(self, threshold: float, chunk: int = 1 << 24) -> ArrayNgramLM:
        """Relative-entropy pruning (Stolcke 1998) with SRILM's threshold, as
        :func:`asrkit.lm.ngram.prune_ngram` (see there); returns a new model."""
        threshold = float(threshold)
        if not math.isfinite(threshold) or threshold < 0.0:
            raise ValueError(f"pruning threshold must be a finite number >= 0, got {threshold!r}")
        N, B = self.order, self.bits
        if threshold == 0.0 or N == 1:
            return ArrayNgramLM(self.words, list(self.keys), [x.copy() for x in self.logprob],
                                [x.copy() for x in self.backoff], self.unk, self.prefix)
        # log10 P(h) of every n-gram of orders 1..N-1 (chain rule; leading <s> as </s>)
        hist = [self.logprob[0].copy()]
        hist[0][BOS_ID] = self.logprob[0][EOS_ID]
        for n in range(2, N):
            pidx = np.searchsorted(self.keys[n - 2], self.keys[n - 1] >> B)
            hist.append(hist[-1][pidx] + self.logprob[n - 1])
        new_keys: list[np.ndarray] = [None] * N  # type: ignore[list-item]
        new_lp: list[np.ndarray] = [None] * N  # type: ignore[list-item]
        needed: np.ndarray | None = None
        for n in range(N, 1, -1):
            keys, lp = self.keys[n - 1], self.logprob[n - 1]
            lower = self.keys[n - 2]
            m = len(lower)
            sp = np.zeros(m)
            sb = np.zeros(m)
            cache = []  # per slice: context index, log10 p(w | h')
            for s in range(0, len(keys), chunk):
                k = keys[s:s + chunk]
                ci = _sorted_lookup(lower, _ctx_keys(k, B, self._top(n)))
                b = self._suffix_logprob(n, k)
                sp += np.bincount(ci, weights=10.0 ** lp[s:s + chunk], minlength=m)
                sb += np.bincount(ci, weights=10.0 ** b, minlength=m)
                cache.append((ci.astype(np.int32) if m < 2**31 else ci, b))
            num, den = 1.0 - sp, 1.0 - sb
            num[(num > -_PROB_EPSILON) & (num < 0.0)] = 0.0
            den[(den > -_PROB_EPSILON) & (den < 0.0)] = 0.0
            improper = (num < 0.0) | ((den <= 0.0) & (num > _PROB_EPSILON))
            zero = (den <= 0.0) & ~improper
            num[zero] = 0.0
            den[zero] = 0.0
            num[improper] = np.nan
            del sp, sb
            n_improper = int(improper.sum())
            if n_improper:
                logger.warning("%d contexts of %d-grams have improper backoff weights; their "
                               "%d-grams are kept", n_improper, n, n)
            hp = 10.0 ** hist[n - 2]
            bow_h = self.backoff[n - 2]
            keep = np.empty(len(keys), bool)
            for s in range(0, len(keys), chunk):
                ci, b = cache.pop(0)
                lpj = lp[s:s + chunk]
                p = 10.0 ** lpj
                nj = num[ci]
                a = nj + p
                d = den[ci] + 10.0 ** b
                ok = (a > 0.0) & (d > 0.0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    new_bow = np.log10(a) - np.log10(d)
                    delta = -hp[ci] * (p * (b + new_bow - lpj) + nj * (new_bow - bow_h[ci]))
                    drop = ok & (np.expm1(delta * _LN10) < threshold)
                if needed is not None:
                    drop &= ~needed[s:s + chunk]
                keep[s:s + chunk] = ~drop
            new_keys[n - 1] = keys[keep]
            new_lp[n - 1] = lp[keep].copy()
            needed = np.zeros(m, bool)
            needed[np.searchsorted(lower, _ctx_keys(new_keys[n - 1], B, self._top(n)))] = True
            logger.info("pruning %d-grams at threshold %g: kept %d of %d", n, threshold,
                        len(new_keys[n - 1]), len(keys))
            del keep, num, den, improper, hp
        new_keys[0] = self.keys[0]
        new_lp[0] = self.logprob[0].copy()
        new_bo = [np.zeros(len(new_keys[n])) for n in range(N - 1)]
        pruned = ArrayNgramLM(self.words, new_keys, new_lp, new_bo, self.unk, self.prefix)
        pruned._recompute_backoffs()
        return pruned

    def _suffix_logprob(self, n: int, k: np.ndarray) -> np.ndarray:
        """log10 p(w | h') of order-``n`` keys ``(h, w)`` (``h'`` = ``h`` without its first
        word), by the backoff recursion (the suffix is listed in an unpruned estimate)."""
        sfx = _suffix_keys(k, n, self.bits, self._top(n))
        idx, found = _lookup(self.keys[n - 2], sfx)
        if found.all():
            return self.logprob[n - 2][idx]
        return self._backoff_logprob(n - 1, sfx, self.keys, self.logprob, self.backoff)

    def _recompute_backoffs(self) -> None:
        """Recompute every backoff weight from the listed probabilities, lower orders first
        (:func:`asrkit.lm.ngram._recompute_backoffs`, SRILM ``recomputeBOWs``)."""
        B = self.bits
        for k in range(1, self.order):
            table, children = self.keys[k - 1], self.keys[k]
            m = len(table)
            ci = np.searchsorted(table, _ctx_keys(children, B, self._top(k + 1)))
            b = self._backoff_logprob(k, _suffix_keys(children, k + 1, B, self._top(k + 1)),
                                      self.keys, self.logprob, self.backoff)
            lpc = self.logprob[k]
            sp = np.bincount(ci, weights=10.0 ** lpc, minlength=m)
            sb = np.bincount(ci, weights=10.0 ** b, minlength=m)
            has = np.bincount(ci, minlength=m) > 0
            del b
            num_raw, den_raw = 1.0 - sp, 1.0 - sb
            num, den = num_raw.copy(), den_raw.copy()
            num[(num > -_PROB_EPSILON) & (num < 0.0)] = 0.0
            den[(den > -_PROB_EPSILON) & (den < 0.0)] = 0.0
            bad = has & ((num < 0.0) | ((den <= 0.0) & (num > _PROB_EPSILON)))
            rescale = bad & (num_raw >= 0.0) & (den_raw > -_PROB_EPSILON)
            improper = bad & ~rescale
            zero = has & ~bad & (den <= 0.0)
            normal = has & ~bad & ~zero
            bow = np.zeros(m)
            with np.errstate(divide="ignore"):
                bow[normal] = np.log10(num[normal]) - np.log10(den[normal])
            bow[improper] = LOG10_ZERO
            self.backoff[k - 1] = bow
            if rescale.any():
                logger.warning("%d contexts of %d-grams leave no backoff mass; scaled their "
                               "probabilities to sum to one", int(rescale.sum()), k + 1)
                scale = np.zeros(m)
                scale[rescale] = -np.log10(sp[rescale])
                self.logprob[k] = lpc + scale[ci]
            if improper.any():
                logger.warning("%d contexts of %d-grams have probabilities summing past one; "
                               "backoff weight set to zero", int(improper.sum()), k + 1)


# ---------------------------------------------------------------------- estimation
def _read_ids(paths, utt_ids: bool, vocab_size: int | None, vocabulary: Iterable[str] | None,
              unk: str, tmp: Path, chunk_tokens: int, st: LargeEstimateStats
              ) -> tuple[list[str], np.ndarray, list[Path]]:
    """The one pass over the text: words get ids in order of appearance, the id stream
    (``<s>`` 0, ``</s>`` 1 around each sentence) is written to ``tmp`` in chunks of whole
    sentences, words are counted. Returns the vocabulary (``<s>``, ``</s>``, ``unk``, then
    the kept words by falling count, ties by spelling), the map from stream ids to
    vocabulary ids (dropped words -> ``<unk>``) and the chunk files."""
    seen: dict[str, int] = {}
    setdef = seen.setdefault
    files: list[Path] = []
    buf: list[int] = []
    counts = np.zeros(2, np.int64)

    def flush() -> None:
        nonlocal counts, buf
        a = np.array(buf, dtype=np.int32)
        buf = []
        c = np.bincount(a, minlength=len(seen) + 2)
        if len(counts) < len(c):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), np.int64)])
        counts[:len(c)] += c
        f = tmp / f"ids.{len(files)}.npy"
        np.save(f, a)
        files.append(f)

    n_sent = 0
    for words in read_lm_lines(paths, utt_ids=utt_ids):
        buf.append(BOS_ID)
        buf.extend([setdef(w, len(seen) + 2) for w in words])
        buf.append(EOS_ID)
        n_sent += 1
        if len(buf) >= chunk_tokens:
            flush()
    if buf:
        flush()
    if not n_sent:
        raise ValueError("no training sentences")
    for marker in (BOS, EOS):
        if marker in seen:
            raise ValueError(f"the training text contains {marker!r}; pass the words only")
    if len(counts) < len(seen) + 2:
        counts = np.concatenate([counts, np.zeros(len(seen) + 2 - len(counts), np.int64)])
    raw = list(seen)  # stream id - 2 -> word
    cnt = counts[2:].tolist()
    n_tokens = int(sum(cnt))
    if vocabulary is not None:
        closed = sorted(set(vocabulary) - {BOS, EOS, unk})
        for w in closed:
            if not w or any(ch.isspace() for ch in w):
                raise ValueError(f"word {w!r} is empty or contains whitespace")
        kept = sorted(closed, key=lambda w: (-(cnt[seen[w] - 2] if w in seen else 0), w))
    else:
        order = sorted((i for i, w in enumerate(raw) if w != unk),
                       key=lambda i: (-cnt[i], raw[i]))
        if vocab_size is not None:
            order = order[:vocab_size]
        kept = [raw[i] for i in order]
    remap = np.full(len(seen) + 2, UNK_ID, np.int64)
    remap[BOS_ID], remap[EOS_ID] = BOS_ID, EOS_ID
    in_vocab = 0
    for new_id, w in enumerate(kept, start=3):
        r = seen.get(w)
        if r is not None:
            remap[r] = new_id
            in_vocab += cnt[r - 2]
    st.sentences, st.tokens, st.oov_tokens = n_sent, n_tokens, n_tokens - in_vocab
    return [BOS, EOS, unk, *kept], remap, files


def _window_keys(t: np.ndarray, sid: np.ndarray, n: int, bits: int,
                 prefix: np.ndarray | None = None) -> np.ndarray:
    """Keys of every n-word window of ``t`` inside one sentence: packed ids, or with
    ``prefix`` the index of the first n-1 words in it, then the last id."""
    m = len(t) - n + 1
    if m <= 0:
        return np.empty(0, np.int64)
    key = t[:m].copy()
    for k in range(1, n if prefix is None else n - 1):
        key <<= bits
        key |= t[k:k + m]
    valid = sid[:m] == sid[n - 1:]
    if prefix is None:
        return key[valid]
    return (np.searchsorted(prefix, key[valid]) << bits) | t[n - 1:][valid]


def _interpolate_order(n: int, k: np.ndarray, c: np.ndarray, dtab: np.ndarray, lower_keys: np.ndarray,
                       prob_lower: np.ndarray, lower_backoff: np.ndarray, bits: int,
                       prefix: np.ndarray | None, want_linear: bool,
                       chunk: int = 1 << 24) -> np.ndarray:
    """Interpolated KN probabilities of order ``n >= 2`` (linear, or log10 for the highest
    order), in slices; writes the log10 interpolation weights into ``lower_backoff``.

    ``P(w | h) = (c - D(c)) / Z(h) + gamma(h) P(w | h')`` with ``Z(h) = sum c``,
    ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / Z(h)`` over the n-grams of ``h``.
    """
    M = len(k)
    new = np.empty(M, bool)
    new[0] = True
    for s in range(1, M, chunk):
        e = min(s + chunk, M)
        new[s:e] = (k[s:e] >> bits) != (k[s - 1:e - 1] >> bits)
    starts = np.flatnonzero(new)
    del new
    z = np.add.reduceat(c, starts).astype(np.float64)
    cls = np.minimum(c, 3).astype(np.int8)
    freed = np.zeros(len(starts))
    for j in (1, 2, 3):
        freed += dtab[j] * np.add.reduceat(cls == j, starts, dtype=np.int64)
    del cls
    gamma = freed / z
    del freed
    out = np.empty(M)
    for s in range(0, M, chunk):
        e = min(s + chunk, M)
        ks, cs = k[s:e], c[s:e]
        g = np.searchsorted(starts, np.arange(s, e), side="right") - 1
        li = np.searchsorted(lower_keys, _suffix_keys(ks, n, bits, prefix))
        p = (cs - dtab[np.minimum(cs, 3)]) / z[g] + gamma[g] * prob_lower[li]
        if want_linear:
            out[s:e] = p
        else:
            with np.errstate(divide="ignore"):
                out[s:e] = np.log10(p)
    cidx = np.searchsorted(lower_keys, _ctx_keys(k[starts], bits, prefix))
    lower_backoff[cidx] = np.log10(gamma)
    return out


def estimate_ngram_large(text: str | os.PathLike | Sequence[str | os.PathLike], order: int = 3,
                         *, utt_ids: bool = False, vocab_size: int | None = None,
                         vocabulary: Iterable[str] | None = None, unk: str = UNK,
                         discount: Sequence[float] | None = None,
                         discount_fallback: Sequence[float] | None = KN_DISCOUNT_FALLBACK,
                         tmp_dir: str | os.PathLike | None = None, memory_gb: float = 4.0,
                         chunk_tokens: int | None = None,
                         stats: LargeEstimateStats | None = None,
                         _index_top: bool = False) -> ArrayNgramLM:
    """Interpolated modified Kneser-Ney from text files too big for
    :func:`asrkit.lm.ngram.estimate_ngram`, with the same result.

    Args:
        text: training text file(s), one sentence a line (streamed twice).
        order: model order, >= 2.
        utt_ids: the lines are Kaldi ``text`` (first field dropped).
        vocab_size: keep the most frequent words only (``<s>``, ``</s>``, ``<unk>`` not
            counted); the others become ``unk``. None: every word.
        vocabulary: a closed vocabulary instead (as ``estimate_ngram(vocabulary=)``).
        unk: the unknown-word token.
        discount: fixed ``(D1, D2, D3+)`` for every order.
        discount_fallback: discounts for an order whose count-of-counts give none (None:
            raise).
        tmp_dir: where sorted runs are spilled (a temporary folder inside it, removed at the
            end; default: the system's).
        memory_gb: the counting buffers' budget (runs beyond it go to ``tmp_dir``).
        chunk_tokens: ids per counting chunk (default from ``memory_gb``).
        stats: filled with :class:`LargeEstimateStats` when given.

    When ``order`` packed word ids need more than 63 bits (a 4-gram over more than 32k
    words), the highest order is keyed by the index of its first ``order - 1`` words in the
    sorted table of all ``(order-1)``-word windows of the text, counted in an extra pass
    (``_index_top`` forces this, for tests).

    Returns:
        The model (:class:`ArrayNgramLM`).

    Raises:
        ValueError: bad arguments, no sentences, ``<s>``/``</s>`` in the text, or even
            ``order - 1`` packed ids need more than 63 bits (lower ``vocab_size``).
    """
    if order < 2:
        raise ValueError(f"order must be >= 2, got {order} (use estimate_ngram for unigrams)")
    if vocab_size is not None and vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if vocabulary is not None and vocab_size is not None:
        raise ValueError("vocabulary= and vocab_size= exclude each other")
    if discount is not None:
        discount = _check_discount(discount)
    if memory_gb <= 0:
        raise ValueError(f"memory_gb must be > 0, got {memory_gb}")
    st = stats if stats is not None else LargeEstimateStats()
    budget = int(memory_gb * 1e9 / 48)  # ~48 bytes per pair while merging
    chunk_tokens = chunk_tokens or max(100_000, min(budget // 4, 20_000_000))
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    tmp_root = tempfile.mkdtemp(prefix="asrkit-ngram-", dir=tmp_dir)
    try:
        tmp = Path(tmp_root)
        t0 = time.perf_counter()
        words, remap, id_files = _read_ids(text, utt_ids, vocab_size, vocabulary, unk, tmp,
                                           chunk_tokens, st)
        V = st.vocab = len(words)
        bits = max(1, (V - 1).bit_length())
        index_top = _index_top or bits * order > 63
        if bits * (order - 1) > 63:
            raise ValueError(f"{V} words need {bits} bits per word id: a {order - 1}-gram "
                             f"key needs {bits * (order - 1)} > 63 bits; lower vocab_size to "
                             f"at most {(1 << (63 // (order - 1))) - 3} words")
        st.seconds["read_text"] = time.perf_counter() - t0

        def id_chunks() -> Iterator[np.ndarray]:
            for f in id_files:
                yield remap[np.load(f)]

        t0 = time.perf_counter()
        prefix = None
        if index_top:  # the sorted (order-1)-word windows that index the highest order
            pre = _SortedRuns(tmp, f"{order - 1}prefix", budget)
            for t in id_chunks():
                pre.add(_window_keys(t, np.cumsum(t == BOS_ID), order - 1, bits))
            st.spilled += pre.spilled_items
            prefix = pre.result()[0]
            del pre
            if (len(prefix) - 1).bit_length() + bits > 63:
                raise ValueError(f"{len(prefix)} distinct {order - 1}-grams: too many to index")
            st.seconds["prefix"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        top = _SortedRuns(tmp, f"{order}gram", budget)
        bos_runs = {n: _SortedRuns(tmp, f"bos{n}", budget) for n in range(2, order)}
        for t in id_chunks():
            is_bos = t == BOS_ID
            sid = np.cumsum(is_bos)
            top.add(_window_keys(t, sid, order, bits, prefix))
            starts = np.flatnonzero(is_bos)
            lens = np.diff(np.append(starts, len(t)))
            for n, runs in bos_runs.items():
                s = starts[lens >= n]
                key = t[s].copy()
                for j in range(1, n):
                    key = (key << bits) | t[s + j]
                runs.add(key)
            del t, sid, is_bos
        keys: list[np.ndarray] = [np.arange(V, dtype=np.int64)] + [None] * (order - 1)  # type: ignore[list-item]
        counts: list[np.ndarray] = [None] * order  # type: ignore[list-item]
        st.spilled += top.spilled_items
        keys[order - 1], counts[order - 1] = top.result()
        st.seconds["count"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # adjusted counts: distinct left extensions, raw counts for <s>-initial n-grams
        for n in range(order - 1, 1, -1):
            runs = bos_runs[n]
            hk = keys[n]
            step = max(budget // 4, 1 << 20)
            for s in range(0, len(hk), step):
                runs.add(_suffix_keys(hk[s:s + step], n + 1, bits,
                                      prefix if n + 1 == order else None))
            st.spilled += runs.spilled_items
            keys[n - 1], counts[n - 1] = runs.result()
        c1 = np.bincount(_suffix_keys(keys[1], 2, bits, prefix if order == 2 else None),
                         minlength=V).astype(np.int64)
        c1[BOS_ID] = 0  # <s> is never predicted
        counts[0] = c1
        st.seconds["adjust"] = time.perf_counter() - t0
        t0 = time.perf_counter()

        # discounts and interpolated probabilities, lowest order first
        logprob: list[np.ndarray] = []
        backoff: list[np.ndarray] = [np.zeros(len(keys[n])) for n in range(order - 1)]
        prob_lower = None
        for n in range(1, order + 1):
            c = counts[n - 1]
            d = discount if discount is not None else _kn_discounts_np(
                c[1:] if n == 1 else c, n, discount_fallback)
            st.discounts.append(tuple(d))  # type: ignore[arg-type]
            logger.info("Kneser-Ney discounts for %d-grams: D1=%.4f D2=%.4f D3+=%.4f", n, *d)
            dtab = np.array([0.0, *d])
            if n == 1:
                disc = dtab[np.minimum(c, 3)]
                z0 = float(c[1:].sum())
                freed = float(disc[1:].sum())
                uniform = (freed / z0 if z0 else 1.0) / (V - 1)
                p = ((c - disc) / z0 if z0 else np.zeros(V)) + uniform
                p[BOS_ID] = 0.0
                del disc
            else:
                p = _interpolate_order(n, keys[n - 1], c, dtab, keys[n - 2], prob_lower,
                                       backoff[n - 2], bits, prefix if n == order else None,
                                       want_linear=n < order)
            counts[n - 1] = None  # type: ignore[call-overload]
            del c
            if n < order:
                with np.errstate(divide="ignore"):
                    lp = np.log10(p)
            else:
                lp, p = p, None
            if n == 1:
                lp[BOS_ID] = LOG10_ZERO
            logprob.append(lp)
            prob_lower = p
            del p, lp
        st.counts = [len(k) for k in keys]
        st.seconds["probabilities"] = time.perf_counter() - t0
        logger.info("estimated %d-gram Kneser-Ney model: %s n-grams, %d words, %d sentences",
                    order, "/".join(map(str, st.counts)), V, st.sentences)
        return ArrayNgramLM(words, keys, logprob, backoff, unk, prefix)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
