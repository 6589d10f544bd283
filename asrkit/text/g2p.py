"""Grapheme-to-phoneme conversion with a joint-sequence n-gram model (Phonetisaurus style).

Pronunciations for words a dictionary lacks, learned from the dictionary itself. The method
is Phonetisaurus's (Novak, Minematsu and Hirose 2012, "WFST-based grapheme-to-phoneme
conversion: open source tools for alignment, model-building and decoding", FSMNLP; 2016,
"Phonetisaurus: exploring grapheme-to-phoneme conversion with joint n-gram models in the WFST
framework", Natural Language Engineering 22(6)), itself a WFST form of the joint-sequence
models of Bisani and Ney (2008, "Joint-sequence models for grapheme-to-phoneme conversion",
Speech Communication 50(5)):

1. **Alignment** (:func:`align_entries`): every dictionary entry is segmented into *joint
   tokens*, pairs of a letter chunk and a phone chunk, by EM over all many-to-many
   segmentations (Jiampojamarn, Kondrak and Sherif 2007, "Applying many-to-many alignments and
   hidden Markov models to letter-to-phoneme conversion", NAACL; Phonetisaurus's
   ``phonetisaurus-align``). The edit operations are Phonetisaurus's defaults: 1 or 2 letters
   to 1 or 2 phones, never 2 to 2 (``--restrict``), and one letter to no phone (a silent
   letter, ``--seq1_del``); a phone without a letter is not allowed (``--seq2_del=false``).
   EM estimates a joint distribution over the chunk pairs (uniform start, forward-backward
   expected counts); the final segmentation of each entry is its Viterbi path.
2. **Joint n-gram** (:func:`train_g2p`): the token sequences are the sentences of an n-gram
   model estimated by :func:`asrkit.lm.ngram.estimate_ngram` (interpolated modified
   Kneser-Ney with its discount fallback for orders whose count-of-counts give no valid
   discounts, or Witten-Bell), order 7 by default.
3. **Decoding** (:meth:`G2PModel.pronounce`): the word's letters as a linear acceptor ``A``,
   composed with ``T`` (letters -> joint tokens), the n-gram as a WFST ``G``
   (:func:`asrkit.decode.wfst.graph.arpa_to_fst`, backoff arcs reading epsilon: the usual
   approximation that also lets a path back off where the model lists the n-gram) and ``P``
   (joint tokens -> phones); the output projection's shortest paths (distinct phone strings)
   are the pronunciations, ``A o T o G o P`` in the tropical semiring.

**Joint tokens** are spelled as Phonetisaurus spells them: the letters, ``}``, the phones,
where chunk members are joined by ``|`` and an empty side is ``_``: ``P|H}F``, ``X}K|S``,
``E}_``. So ``|``, ``}`` and ``_`` may not be letters or phones, and letters and phones may
hold no whitespace (:class:`G2PError` otherwise).

**Model directory** (:meth:`G2PModel.save`, :meth:`G2PModel.load`; no pickle):

* ``g2p.json``: format name and version, letters, phones, letter case, order, smoothing,
  alignment options and training statistics;
* ``joint.arpa.gz``: the joint-token n-gram in ARPA format;
* ``tokens.txt``: the joint-token symbol table of ``G.fst`` (``<eps>`` 0);
* ``G.fst``: the n-gram as an OpenFst binary (rebuilt from the ARPA when missing).

Figures on the CMU Pronouncing Dictionary (``scripts/bench/g2p_cmudict.py``; stress removed,
5 % of the words held out, order 7, 5 EM iterations): phone error rate 6.1 %, word error rate
25.2 %, as Phonetisaurus reports on such splits; training takes about 1.5 min of CPU and 1.6 GB.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asrkit.fileio import atomic_write
from asrkit.lm.ngram import UNK, NgramLM, estimate_ngram, read_arpa, write_arpa
from asrkit.text.lexicon import Lexicon, read_symbol_table, write_symbol_table

__all__ = [
    "CHUNK_SEP",
    "EMPTY",
    "FORMAT",
    "JOINT_SEP",
    "AlignOptions",
    "G2PError",
    "G2PModel",
    "G2PScore",
    "align_entries",
    "edit_distance",
    "evaluate_g2p",
    "joint_token",
    "pronounce_missing",
    "split_lexicon",
    "split_token",
    "train_g2p",
]

logger = logging.getLogger(__name__)

JOINT_SEP = "}"
"""Separates the letter and phone sides of a joint token (Phonetisaurus)."""

CHUNK_SEP = "|"
"""Joins the letters (or phones) of a multi-symbol chunk (Phonetisaurus)."""

EMPTY = "_"
"""An empty side of a joint token (a silent letter: ``E}_``)."""

FORMAT = "asrkit-g2p"
"""The ``format`` field of ``g2p.json``."""

_VERSION = 1
_RESERVED = (JOINT_SEP, CHUNK_SEP)
_BATCH_CELLS = 4_000_000  # lattice cells (entries x letters x phones x ops) per EM batch


class G2PError(ValueError):
    """Bad G2P input or model: a letter or phone with a reserved character, an empty
    dictionary, a missing or malformed model directory. The message names the word, file or
    field at fault."""


def joint_token(letters: Sequence[str], phones: Sequence[str]) -> str:
    """The joint token of a letter chunk and a phone chunk: ``("P", "H"), ("F",)`` ->
    ``"P|H}F"``; an empty side is ``_`` (``("E",), ()`` -> ``"E}_"``)."""
    return (CHUNK_SEP.join(letters) or EMPTY) + JOINT_SEP + (CHUNK_SEP.join(phones) or EMPTY)


def split_token(token: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Inverse of :func:`joint_token`: ``"X}K|S"`` -> ``(("X",), ("K", "S"))``.

    Raises:
        G2PError: ``token`` has no ``}``.
    """
    left, sep, right = token.rpartition(JOINT_SEP)
    if not sep:
        raise G2PError(f"joint token {token!r} has no {JOINT_SEP!r}")

    def side(s: str) -> tuple[str, ...]:
        return () if s == EMPTY else tuple(s.split(CHUNK_SEP))

    return side(left), side(right)


def _check_symbols(word: str, letters: Sequence[str], pron: Sequence[str]) -> None:
    for kind, syms in (("letter", letters), ("phone", pron)):
        for s in syms:
            if not s or s == EMPTY or any(r in s for r in _RESERVED) or any(
                    ch.isspace() for ch in s):
                raise G2PError(f"word {word!r}: {kind} {s!r} is empty, holds whitespace or a "
                               f"reserved character ({JOINT_SEP!r}, {CHUNK_SEP!r}) or is "
                               f"{EMPTY!r}, which spell joint tokens")
    if not letters:
        raise G2PError(f"word {word!r} has no letters")
    if not pron:
        raise G2PError(f"word {word!r} has an empty pronunciation")


# ----------------------------------------------------------------------------- alignment

@dataclass(frozen=True)
class AlignOptions:
    """Edit operations and EM iterations of :func:`align_entries` (Phonetisaurus
    ``phonetisaurus-align`` defaults).

    Attributes:
        max_letters: longest letter chunk (``--seq1_max``), >= 1.
        max_phones: longest phone chunk (``--seq2_max``), >= 1.
        letter_deletion: allow one letter to map to no phone (``--seq1_del``).
        many_to_many: allow chunks with several letters *and* several phones (the opposite of
            ``--restrict``).
        iterations: EM iterations (``--iter``; Phonetisaurus defaults to 11, the likelihood
            hardly moves after 3 to 5 on CMUdict).
        penalize: in the final Viterbi pass, multiply the cost ``-log p`` of a chunk pair by
            its number of symbols (letters + phones; a silent letter by 1), as
            Phonetisaurus's ``--penalize`` does, so that long chunks, which make paths of
            fewer factors, must earn their place (``--penalize``, default true).
        penalize_em: apply the same penalty during EM (``--penalize_em``, default false).
    """

    max_letters: int = 2
    max_phones: int = 2
    letter_deletion: bool = True
    many_to_many: bool = False
    iterations: int = 5
    penalize: bool = True
    penalize_em: bool = False

    def ops(self) -> list[tuple[int, int]]:
        """The edit operations ``(letters, phones)`` consumed by one joint token.

        Raises:
            ValueError: ``max_letters`` or ``max_phones`` below 1, ``iterations`` below 0.
        """
        if self.max_letters < 1 or self.max_phones < 1:
            raise ValueError(f"max_letters and max_phones must be >= 1, got "
                             f"{self.max_letters}, {self.max_phones}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        return [(a, b) for a in range(1, self.max_letters + 1)
                for b in range(self.max_phones + 1)
                if (b > 0 or (a == 1 and self.letter_deletion))
                and (self.many_to_many or a == 1 or b <= 1)]


Alignment = list[tuple[tuple[str, ...], tuple[str, ...]]]
"""One entry's segmentation: ``[(letter chunk, phone chunk), ...]`` in order."""


def _batches(lengths: np.ndarray, plens: np.ndarray, n_ops: int) -> list[np.ndarray]:
    """Entry indices grouped by similar lengths, each group within :data:`_BATCH_CELLS`."""
    order = np.lexsort((plens, lengths))
    out: list[np.ndarray] = []
    start = 0
    while start < len(order):
        stop = start + 1
        m, n = lengths[order[start]], plens[order[start]]
        while stop < len(order):
            m2 = max(m, lengths[order[stop]])
            n2 = max(n, plens[order[stop]])
            if (stop + 1 - start) * (m2 + 1) * (n2 + 1) * n_ops > _BATCH_CELLS:
                break
            m, n = m2, n2
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


class _Batch:
    """Padded arrays of one batch: key ids of every edge ``(entry, i, j, op)`` (``-1`` where
    the edge leaves the entry's lattice), lengths."""

    def __init__(self, idx: np.ndarray, letters: list[np.ndarray], phones: list[np.ndarray],
                 ops: list[tuple[int, int]], lbase: int, pbase: int, pmax: int) -> None:
        self.idx = idx
        self.m = np.array([len(letters[k]) for k in idx], dtype=np.int64)
        self.n = np.array([len(phones[k]) for k in idx], dtype=np.int64)
        B, M, N = len(idx), int(self.m.max()), int(self.n.max())
        amax = max(a for a, _ in ops)
        L = np.zeros((B, M + amax + 1), dtype=np.int64)
        P = np.zeros((B, N + pmax + 1), dtype=np.int64)
        for r, k in enumerate(idx):
            L[r, :len(letters[k])] = letters[k]
            P[r, :len(phones[k])] = phones[k]
        keys = np.full((B, M + 1, N + 1, len(ops)), -1, dtype=np.int64)
        i = np.arange(M + 1)[None, :, None]
        j = np.arange(N + 1)[None, None, :]
        for k, (a, b) in enumerate(ops):
            lc = sum(L[:, t:t + M + 1] * lbase ** t for t in range(a))
            pc = sum((P[:, t:t + N + 1] * pbase ** t for t in range(b)),
                     np.zeros((B, N + 1), dtype=np.int64))
            valid = (i + a <= self.m[:, None, None]) & (j + b <= self.n[:, None, None])
            code = lc[:, :, None] * pbase ** pmax + pc[:, None, :]
            keys[..., k] = np.where(valid, code, -1)
        self.keys = keys
        self.M, self.N = M, N


def _forward(W: np.ndarray, ops: list[tuple[int, int]], viterbi: bool
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Forward scores ``alpha[b, i, j]`` (log-sum or max over paths into node ``(i, j)``) of
    edge scores ``W[b, i, j, op]``; with ``viterbi`` also the best op into each node."""
    B, M1, N1, _ = W.shape
    alpha = np.full((B, M1, N1), -np.inf)
    alpha[:, 0, 0] = 0.0
    back = np.full((B, M1, N1), -1, dtype=np.int8) if viterbi else None
    for i in range(1, M1):
        row = alpha[:, i]
        for k, (a, b) in enumerate(ops):
            if i - a < 0:
                continue
            cand = alpha[:, i - a, :N1 - b] + W[:, i - a, :N1 - b, k]
            if viterbi:
                better = cand > row[:, b:]
                row[:, b:] = np.where(better, cand, row[:, b:])
                back[:, i, b:][better] = k
            else:
                row[:, b:] = np.logaddexp(row[:, b:], cand)
    return alpha, back


def _backward(W: np.ndarray, ops: list[tuple[int, int]], m: np.ndarray, n: np.ndarray
              ) -> np.ndarray:
    """Backward scores ``beta[b, i, j]``: log-sum over paths from ``(i, j)`` to ``(m, n)``."""
    B, M1, N1, _ = W.shape
    beta = np.full((B, M1, N1), -np.inf)
    beta[np.arange(B), m, n] = 0.0
    for i in range(M1 - 2, -1, -1):
        row = beta[:, i]
        for k, (a, b) in enumerate(ops):
            if i + a >= M1:
                continue
            cand = W[:, i, :N1 - b, k] + beta[:, i + a, b:]
            row[:, :N1 - b] = np.logaddexp(row[:, :N1 - b], cand)
    return beta


def align_entries(entries: Sequence[tuple[Sequence[str], Sequence[str]]],
                  options: AlignOptions = AlignOptions()) -> list[Alignment | None]:
    """Many-to-many EM alignment of letter sequences to phone sequences.

    Follows ``phonetisaurus-align`` (Novak et al. 2012, after Jiampojamarn et al. 2007): the
    segmentations of an entry into ``(letter chunk, phone chunk)`` pairs allowed by
    ``options`` form a lattice; EM starts from a uniform joint distribution over the chunk
    pairs, collects expected counts by forward-backward over every entry's lattice and
    renormalises; the result is each entry's Viterbi path under the final distribution. The
    lattices of entries of similar length are padded into arrays and processed together, a
    letter row at a time (every operation consumes a letter): the 135 k CMUdict entries take
    about 5-10 s of CPU per iteration and about 1 GB of memory.

    Args:
        entries: ``(letters, phones)`` pairs, each a sequence of symbols (a word's
            pronunciations are separate entries).
        options: edit operations and the number of EM iterations.

    Returns:
        One alignment per entry, in order (``[(letter chunk, phone chunk), ...]``, the
        chunks' concatenations giving back the entry), or None for an entry no segmentation
        covers (e.g. more than ``max_phones`` phones per letter: ``X -> EH K S``).

    Raises:
        ValueError: bad ``options`` (see :meth:`AlignOptions.ops`).
    """
    ops = options.ops()
    lsyms = sorted({s for letters, _ in entries for s in letters})
    psyms = sorted({s for _, pron in entries for s in pron})
    lid = {s: i for i, s in enumerate(lsyms, start=1)}
    pid = {s: i for i, s in enumerate(psyms, start=1)}
    letters = [np.array([lid[s] for s in e[0]], dtype=np.int64) for e in entries]
    phones = [np.array([pid[s] for s in e[1]], dtype=np.int64) for e in entries]
    if not entries:
        return []
    lbase, pbase = len(lsyms) + 1, len(psyms) + 1
    pmax = max(b for _, b in ops)
    if (lbase ** options.max_letters) * (pbase ** pmax) >= 2 ** 62:
        raise ValueError("too many letters/phones or too long chunks for 64-bit chunk keys")
    lengths = np.array([len(x) for x in letters])
    plens = np.array([len(x) for x in phones])
    batches = [_Batch(idx, letters, phones, ops, lbase, pbase, pmax)
               for idx in _batches(lengths, plens, len(ops))]
    # Compact key ids over all batches; id V is the "no edge" slot with score -inf.
    vocab = np.unique(np.concatenate([b.keys[b.keys >= 0] for b in batches]))
    V = len(vocab)
    for b in batches:
        ids = np.searchsorted(vocab, b.keys)
        b.keys = np.where(b.keys >= 0, ids, V).astype(np.int32)
    logw = np.full(V + 1, -math.log(V))
    logw[V] = -np.inf
    factor = np.array([a + b if b > 0 else 1 for a, b in ops], dtype=np.float64)
    for it in range(options.iterations):
        counts = np.zeros(V + 1)
        loglik, n_ok = 0.0, 0
        with np.errstate(invalid="ignore", divide="ignore"):
            for b in batches:
                W = logw[b.keys]
                if options.penalize_em:
                    W = W * factor
                alpha, _ = _forward(W, ops, viterbi=False)
                beta = _backward(W, ops, b.m, b.n)
                Z = alpha[np.arange(len(b.idx)), b.m, b.n]
                ok = np.isfinite(Z)
                loglik += float(Z[ok].sum())
                n_ok += int(ok.sum())
                Zs = np.where(ok, Z, np.inf)[:, None, None]
                N1 = b.N + 1
                for k, (a, c) in enumerate(ops):
                    shifted = np.full_like(alpha, -np.inf)
                    shifted[:, :b.M + 1 - a, :N1 - c] = beta[:, a:, c:]
                    post = np.exp(alpha + W[..., k] + shifted - Zs)
                    keys = b.keys[..., k]
                    sel = keys < V
                    counts += np.bincount(keys[sel], weights=post[sel], minlength=V + 1)
        counts[V] = 0.0
        total = counts.sum()
        with np.errstate(divide="ignore"):
            logw = np.log(counts / total)
        logw[V] = -np.inf
        logger.info("alignment EM iteration %d/%d: log-likelihood per entry %.4f (%d of %d "
                    "entries alignable), %d chunk pairs in use", it + 1, options.iterations,
                    loglik / max(n_ok, 1), n_ok, len(entries), int((counts > 0).sum()))

    results: list[Alignment | None] = [None] * len(entries)
    op_a = np.array([a for a, _ in ops])
    op_b = np.array([b for _, b in ops])
    for b in batches:
        W = logw[b.keys]
        if options.penalize:
            W = W * factor
        alpha, back = _forward(W, ops, viterbi=True)
        rows = np.arange(len(b.idx))
        ok = np.isfinite(alpha[rows, b.m, b.n])
        i, j = b.m.copy(), b.n.copy()
        steps = []
        while True:
            live = ok & (i > 0)
            if not live.any():
                break
            k = np.where(live, back[rows, i, j], -1)
            steps.append((k, i.copy(), j.copy()))
            i = np.where(live, i - op_a[k], i)
            j = np.where(live, j - op_b[k], j)
        for r, e in enumerate(b.idx):
            if not ok[r]:
                continue
            word, pron = entries[e]
            chunks: Alignment = []
            for k, ie, je in reversed(steps):
                if k[r] < 0:
                    continue
                a, c = ops[k[r]]
                chunks.append((tuple(word[ie[r] - a:ie[r]]), tuple(pron[je[r] - c:je[r]])))
            results[e] = chunks
    return results


# ------------------------------------------------------------------------------- the model

def _normalise_case(word: str, case: str | None) -> str:
    if case == "upper":
        return word.upper()
    if case == "lower":
        return word.lower()
    return word


class G2PModel:
    """A trained joint-sequence G2P model: the decoding WFSTs and their symbol tables.

    Build one with :func:`train_g2p` or :meth:`load`; pronounce with :meth:`pronounce`.

    Args:
        lm: the joint-token n-gram (its 1-grams other than ``<s>``, ``</s>``, ``<unk>`` are
            the joint tokens), or the path of its ARPA file (read only when ``G`` or
            ``tokens`` is None or :attr:`lm` is asked for).
        config: the ``g2p.json`` content: at least ``letters`` and ``phones`` (lists),
            ``case`` (``"upper"``, ``"lower"`` or None: how words are case-normalised before
            decoding).
        G: the n-gram WFST over ``tokens`` (built from ``lm`` when None).
        tokens: symbol table of ``G`` (built from ``lm`` when None).

    Raises:
        G2PError: a 1-gram that is not a joint token over ``letters`` and ``phones``.

    Attributes:
        config: the configuration and, after :func:`train_g2p`, ``stats``.
        tokens: ``{joint token: id}``, ``<eps>`` 0 (the labels of ``G``).
        G: the joint n-gram as a ``pynini.Fst`` (:func:`~asrkit.decode.wfst.graph.arpa_to_fst`
            with epsilon backoff arcs; start state ``<s>``, final costs ``</s>``).
    """

    def __init__(self, lm: NgramLM | str | os.PathLike, config: Mapping, G=None,
                 tokens: Mapping[str, int] | None = None) -> None:
        import pynini

        self._lm = lm
        self.config = dict(config)
        letters = list(self.config["letters"])
        phones = list(self.config["phones"])
        self._letter_id = {s: i for i, s in enumerate(letters, start=1)}
        self._phones = [None, *phones]
        phone_id = {s: i for i, s in enumerate(phones, start=1)}
        if tokens is None:
            names = sorted(w for ((w,), _, _) in self.lm.ngrams(1)
                           if w not in ("<s>", "</s>"))
            tokens = {"<eps>": 0, **{w: i for i, w in enumerate(names, start=1)}}
        self.tokens = dict(tokens)
        if G is None:
            from asrkit.decode.wfst.graph import arpa_to_fst

            G = arpa_to_fst(self.lm, self.tokens, disambig_symbol=None)
        self.G = G
        one = pynini.Weight.one("tropical")
        T, P = pynini.Fst(), pynini.Fst()
        t0 = T.add_state()
        T.set_start(t0)
        T.set_final(t0)
        p0 = P.add_state()
        P.set_start(p0)
        P.set_final(p0)
        mid: dict[tuple[int, ...], int] = {}
        for tok, t in self.tokens.items():
            if t == 0 or tok in (UNK, "<UNK>"):
                continue
            lets, phs = split_token(tok)
            if (not lets or any(s not in self._letter_id for s in lets)
                    or any(s not in phone_id for s in phs)):
                raise G2PError(f"token {tok!r} of the joint n-gram is not a joint token over "
                               "the model's letters and phones")
            src = t0
            for n in range(1, len(lets)):  # a state per letter prefix of multi-letter chunks
                prefix = tuple(self._letter_id[s] for s in lets[:n])
                if prefix not in mid:
                    mid[prefix] = T.add_state()
                    T.add_arc(src, pynini.Arc(prefix[-1], 0, one, mid[prefix]))
                src = mid[prefix]
            T.add_arc(src, pynini.Arc(self._letter_id[lets[-1]], t, one, t0))
            src = p0
            for k, s in enumerate(phs):
                dst = p0 if k == len(phs) - 1 else P.add_state()
                P.add_arc(src, pynini.Arc(t if k == 0 else 0, phone_id[s], one, dst))
                src = dst
            if not phs:
                P.add_arc(p0, pynini.Arc(t, 0, one, p0))
        T.arcsort("ilabel")
        P.arcsort("ilabel")
        self._T, self._P = T, P

    @property
    def lm(self) -> NgramLM:
        """The joint-token n-gram (read from the ARPA file on first use after
        :meth:`load`)."""
        if not isinstance(self._lm, NgramLM):
            self._lm = read_arpa(self._lm)
        return self._lm

    @property
    def letters(self) -> list[str]:
        """The letters the model knows (words with others get no pronunciation)."""
        return list(self.config["letters"])

    @property
    def phones(self) -> list[str]:
        """The phones the model writes."""
        return list(self.config["phones"])

    def pronounce(self, word: str, nbest: int = 1) -> list[tuple[tuple[str, ...], float]]:
        """The ``nbest`` most likely pronunciations of ``word``.

        Args:
            word: the spelling; case-normalised as the training words were (``case`` of the
                config), then split into characters.
            nbest: how many distinct pronunciations (fewer when the lattice has fewer).

        Returns:
            ``[(phones, cost), ...]``, best first; ``cost`` is ``-ln P(joint tokens)`` of the
            best token path writing those phones. Empty when the word has a letter the model
            never saw or no path (an empty word).

        Raises:
            ValueError: ``nbest`` < 1.
        """
        import pynini

        if nbest < 1:
            raise ValueError(f"nbest must be >= 1, got {nbest}")
        spelled = _normalise_case(word, self.config.get("case"))
        labels = [self._letter_id.get(ch) for ch in spelled]
        if not labels or None in labels:
            return []
        one = pynini.Weight.one("tropical")
        A = pynini.Fst()
        s = A.add_state()
        A.set_start(s)
        for lab in labels:
            t = A.add_state()
            A.add_arc(s, pynini.Arc(lab, lab, one, t))
            s = t
        A.set_final(s)
        lat = pynini.compose(pynini.compose(A, self._T), self.G)
        lat = pynini.compose(lat.arcsort("olabel"), self._P)
        if lat.start() == pynini.NO_STATE_ID:
            return []
        lat.project("output").rmepsilon()
        best = pynini.shortestpath(lat, nshortest=nbest, unique=True)
        it = best.paths()
        out = []
        while not it.done():
            out.append((tuple(self._phones[p] for p in it.olabels() if p),
                        float(it.weight())))
            it.next()
        out.sort(key=lambda x: x[1])
        return out

    # ------------------------------------------------------------------------- files
    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write the model directory (``g2p.json``, ``joint.arpa.gz``, ``tokens.txt``,
        ``G.fst``; see the module docstring), each file atomically, ``g2p.json`` last.

        Returns:
            The directory.
        """
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        arpa = model_dir / "joint.arpa.gz"
        if isinstance(self._lm, NgramLM) or not arpa.exists() or not arpa.samefile(self._lm):
            write_arpa(self.lm, arpa)
        write_symbol_table(self.tokens, model_dir / "tokens.txt")
        with atomic_write(model_dir / "G.fst", "wb") as f:
            f.write(self.G.write_to_string())
        with atomic_write(model_dir / "g2p.json") as f:
            json.dump({"format": FORMAT, "version": _VERSION, **self.config}, f, indent=1)
            f.write("\n")
        return model_dir

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> G2PModel:
        """Read a model directory written by :meth:`save`.

        ``G.fst`` is read when present with ``tokens.txt``, else rebuilt from the ARPA file
        (which is otherwise read only when :attr:`lm` is asked for).

        Raises:
            G2PError: the directory or ``g2p.json`` is missing, not valid JSON, not of format
                ``asrkit-g2p`` (version 1) or lacks ``letters``/``phones``; the joint n-gram
                is missing; ``G.fst`` is not a readable FST.
            asrkit.lm.ngram.ArpaError: a malformed ARPA file.
            asrkit.text.lexicon.LexiconError: a malformed ``tokens.txt``.
        """
        import pynini

        model_dir = Path(model_dir)
        cfg_path = model_dir / "g2p.json"
        if not model_dir.is_dir():
            raise G2PError(f"{model_dir}: G2P model directory not found (train one with "
                           "'asrkit g2p train')")
        if not cfg_path.is_file():
            raise G2PError(f"{cfg_path}: missing; {model_dir} is not a G2P model directory "
                           "(expected g2p.json, joint.arpa.gz, tokens.txt, G.fst)")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise G2PError(f"{cfg_path}: not valid JSON: {e}") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise G2PError(f"{cfg_path}: expected an object with \"format\": \"{FORMAT}\"")
        if config.get("version") != _VERSION:
            raise G2PError(f"{cfg_path}: unsupported version {config.get('version')!r} "
                           f"(this asrkit reads {_VERSION})")
        for key in ("letters", "phones"):
            if not isinstance(config.get(key), list):
                raise G2PError(f"{cfg_path}: field {key!r} missing or not a list")
        config = {k: v for k, v in config.items() if k not in ("format", "version")}
        arpa = model_dir / "joint.arpa.gz"
        if not arpa.is_file():
            raise G2PError(f"{arpa}: missing (the joint-token n-gram of the model)")
        G = tokens = None
        if (model_dir / "G.fst").is_file() and (model_dir / "tokens.txt").is_file():
            tokens = read_symbol_table(model_dir / "tokens.txt")
            try:
                G = pynini.Fst.read(str(model_dir / "G.fst"))
            except OSError as e:  # pynini.FstIOError
                raise G2PError(f"{model_dir / 'G.fst'}: not a readable OpenFst file ({e}); "
                               "delete it to rebuild it from joint.arpa.gz") from None
        return cls(arpa, config, G=G, tokens=tokens)


# ---------------------------------------------------------------------------- training

def _entries(lexicon: Lexicon | Iterable[tuple[str, Sequence[str]]]
             ) -> list[tuple[str, tuple[str, ...]]]:
    items = lexicon.entries() if isinstance(lexicon, Lexicon) else lexicon
    return [(w, tuple(p)) for w, p in items]


def _case_of(words: Iterable[str]) -> str | None:
    has_upper = has_lower = False
    for w in words:
        has_upper = has_upper or any(ch.isupper() for ch in w)
        has_lower = has_lower or any(ch.islower() for ch in w)
    if has_upper and not has_lower:
        return "upper"
    if has_lower and not has_upper:
        return "lower"
    return None


def train_g2p(lexicon: Lexicon | Iterable[tuple[str, Sequence[str]]], *, order: int = 7,
              method: str = "kneser_ney", align: AlignOptions = AlignOptions()) -> G2PModel:
    """Train a joint-sequence G2P model on a pronunciation dictionary (Phonetisaurus recipe:
    EM alignment, joint-token n-gram, WFST decoder; see the module docstring).

    Args:
        lexicon: the dictionary: a :class:`~asrkit.text.lexicon.Lexicon` or ``(word,
            phones)`` pairs; words are spelled by their characters, every pronunciation of
            a word is one training entry.
        order: n-gram order over joint tokens (Phonetisaurus uses 7-8 for CMUdict).
        method: ``"kneser_ney"`` (modified Kneser-Ney; an order whose count-of-counts give
            no valid discounts falls back to ``D = 0.5, 1, 1.5`` with a warning) or
            ``"witten_bell"`` (:func:`asrkit.lm.ngram.estimate_ngram`).
        align: alignment options.

    Returns:
        The model; its ``config["stats"]`` holds the number of entries, of entries left out
        as unalignable, of joint tokens, the n-gram counts and the seconds each step took.

    Raises:
        G2PError: no entries, or a letter/phone that is empty, holds whitespace or a reserved
            character (``}``, ``|``) or is ``_``; the message names the word.
        ValueError: bad ``order``, ``method`` or ``align``.
    """
    entries = _entries(lexicon)
    if not entries:
        raise G2PError("no dictionary entries to train a G2P model on")
    for word, pron in entries:
        _check_symbols(word, list(word), pron)
    t0 = time.perf_counter()
    alignments = align_entries([(list(w), p) for w, p in entries], align)
    t1 = time.perf_counter()
    sentences = [[joint_token(a, b) for a, b in al] for al in alignments if al is not None]
    skipped = [w for (w, _), al in zip(entries, alignments) if al is None]
    if skipped:
        logger.warning("%d of %d entries have no alignment with these operations and are left "
                       "out: %s%s", len(skipped), len(entries), ", ".join(skipped[:10]),
                       ", ..." if len(skipped) > 10 else "")
    if not sentences:
        raise G2PError("no dictionary entry could be aligned")
    lm = estimate_ngram(sentences, order=order, method=method)
    t2 = time.perf_counter()
    config = {
        "letters": sorted({ch for w, _ in entries for ch in w}),
        "phones": sorted({p for _, pron in entries for p in pron}),
        "case": _case_of(w for w, _ in entries),
        "order": order,
        "method": method,
        "align": asdict(align),
    }
    model = G2PModel(lm, config)
    t3 = time.perf_counter()
    model.config["stats"] = {
        "entries": len(entries),
        "words": len({w for w, _ in entries}),
        "unaligned": len(skipped),
        "joint_tokens": len(model.tokens) - 2,
        "ngrams": lm.counts,
        "align_s": round(t1 - t0, 2),
        "ngram_s": round(t2 - t1, 2),
        "fst_s": round(t3 - t2, 2),
    }
    logger.info("G2P model: %s", model.config["stats"])
    return model


# ---------------------------------------------------------------------- use and scoring

def pronounce_missing(lexicon: Lexicon, words: Iterable[str], model: G2PModel,
                      nbest: int = 1) -> tuple[int, list[str]]:
    """Add G2P pronunciations to ``lexicon`` (in place) for the ``words`` it lacks.

    Args:
        lexicon: the lexicon to extend.
        words: candidate words (duplicates and words already in ``lexicon`` are skipped).
        model: the G2P model.
        nbest: pronunciations per word.

    Returns:
        ``(number of words added, words the model could not pronounce)`` (a letter it
        never saw).
    """
    added, failed = 0, []
    for word in dict.fromkeys(words):
        if word in lexicon:
            continue
        prons = model.pronounce(word, nbest)
        if not prons:
            failed.append(word)
            continue
        for pron, _ in prons:
            lexicon.add(word, pron)
        added += 1
    return added, failed


def split_lexicon(lexicon: Lexicon, fraction: float = 0.05, seed: int = 0
                  ) -> tuple[Lexicon, Lexicon]:
    """Hold out a random ``fraction`` of the *words* (all their pronunciations together).

    Args:
        lexicon: the dictionary.
        fraction: share of words held out, ``0 < fraction < 1``.
        seed: seed of :class:`random.Random` (the words are shuffled in C order first, so
            the split does not depend on the lexicon's order).

    Returns:
        ``(train, test)`` lexicons, words in the order of ``lexicon``.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    words = sorted(lexicon.words(), key=lambda w: w.encode("utf-8"))
    test = set(random.Random(seed).sample(words, round(fraction * len(words))))
    train, held = Lexicon(), Lexicon()
    for word, pron in lexicon.entries():
        (held if word in test else train).add(word, pron)
    return train, held


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions, each cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


@dataclass
class G2PScore:
    """Phone and word error rates of a G2P model on held-out dictionary words.

    Attributes:
        words: words scored.
        word_errors: words whose 1-best is none of their reference pronunciations (a word
            with no hypothesis counts as an error, its reference phones as deletions).
        phone_errors: summed edit distance of each 1-best to its closest reference.
        ref_phones: summed length of those closest references.
        no_pron: words the model gave no pronunciation.
        examples: up to 20 ``(word, hypothesis, closest reference)`` errors.
    """

    words: int = 0
    word_errors: int = 0
    phone_errors: int = 0
    ref_phones: int = 0
    no_pron: int = 0
    examples: list = field(default_factory=list)

    @property
    def wer(self) -> float:
        """Word error rate, in percent."""
        return 100.0 * self.word_errors / max(self.words, 1)

    @property
    def per(self) -> float:
        """Phone error rate (edit distance / reference phones), in percent."""
        return 100.0 * self.phone_errors / max(self.ref_phones, 1)


def evaluate_g2p(model: G2PModel, references: Lexicon) -> G2PScore:
    """Score the 1-best pronunciation of every word of ``references`` (Phonetisaurus's
    ``calculateER``: a word with several references is scored against the closest one).

    Returns:
        The :class:`G2PScore`.
    """
    score = G2PScore()
    for word in references:
        refs = references[word]
        prons = model.pronounce(word)
        hyp: tuple[str, ...] = prons[0][0] if prons else ()
        dist, ref = min(((edit_distance(hyp, r), r) for r in refs), key=lambda x: x[0])
        score.words += 1
        score.no_pron += not prons
        score.phone_errors += dist
        score.ref_phones += len(ref)
        if hyp not in refs:
            score.word_errors += 1
            if len(score.examples) < 20:
                score.examples.append((word, " ".join(hyp), " ".join(ref)))
    return score
