"""The lexicon and grammar transducers of an HMM-GMM decoding graph, and their composition.

This is the ``L``, ``G`` and ``LG`` part of Kaldi's graph construction (``utils/prepare_lang.sh``
builds ``L.fst``/``L_disambig.fst``, ``utils/format_lm.sh`` builds ``G.fst`` with ``arpa2fst``,
``utils/mkgraph.sh`` composes ``LG``), done with pynini (OpenFst). Every FST here is a
``standard`` (tropical semiring) FST: a weight is a cost ``-ln p`` in nats, paths combine by
adding costs and alternatives by taking the minimum.

Symbol ids are those of the lang directory (:func:`asrkit.text.lexicon.make_lang`): phone labels
are ids of ``phones.txt`` (:attr:`Lang.phones`), word labels ids of ``words.txt``
(:attr:`Lang.words`), and ``0`` is ``<eps>`` on both sides. The FSTs carry no symbol tables
(Kaldi's ``fstcompile --keep_isymbols=false --keep_osymbols=false``); attach them for printing
with :func:`asrkit.decode.wfst.fstio.symbol_table`.

The transducers, input side first:

* ``L`` (:func:`make_lexicon_fst`): phones -> words, with optional silence between words.
* ``G`` (:func:`arpa_to_fst`): words -> words, the n-gram model; backoff arcs read ``#0``.
* ``LG`` (:func:`make_lg`): phones -> words, determinized and minimized.

Disambiguation symbols. Homophones (``O``, ``OH`` both ``OW``) and pronunciations that are
prefixes of others make ``L`` non-determinizable; ``#1 #2 ...`` at the end of their
pronunciations (``lexicon_disambig.txt``) tell them apart, and the last phone-side symbol
``#N`` follows the optional silence. G's backoff arcs read the word symbol ``#0``; ``L`` passes
it through with a ``#0:#0`` self-loop (Kaldi's ``fstaddselfloops``), so that ``LG`` reads the
phone symbol ``#0`` wherever ``G`` backs off. With these symbols ``L o G`` is determinizable.
They are removed (relabelled to ``<eps>``) only at the end of ``HCLG`` construction
(:func:`remove_disambig`).

Later work (issue 4) adds ``C`` and ``H`` on the input side, as Kaldi's ``mkgraph.sh`` does:
``CLG = C o LG`` with ``C`` the context-dependency transducer (context-dependent phones ->
phones, passing the phone disambiguation symbols through; for a monophone system ``C`` is the
identity over phones), ``HCLG = H o CLG`` with ``H`` the HMM transducer (transition ids ->
context-dependent phones, its own disambiguation symbols replacing the phone ones), then
:func:`determinize_star`, :func:`remove_disambig`, :func:`minimize_encoded` and self-loops. A
``make_hclg(H, C, LG)`` reuses :func:`table_compose` and these helpers unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import pynini

from asrkit.lm.ngram import BOS, EOS, NgramLM, read_arpa
from asrkit.text.lexicon import Lang, read_symbol_table

__all__ = [
    "DELTA",
    "GraphError",
    "StageTimer",
    "add_word_paths",
    "arpa_to_fst",
    "determinize_star",
    "disambig_ids",
    "fst_size",
    "make_lexicon_fst",
    "make_lg",
    "minimize_encoded",
    "peak_rss_mb",
    "remove_disambig",
    "table_compose",
]

logger = logging.getLogger(__name__)

_LN10 = math.log(10.0)
_EPS = 0

DELTA = 2.0 ** -13
"""Quantization delta of weights in determinization, epsilon removal and minimization, in cost
units (about ``1.2e-4``; Kaldi's and OpenFst's ``kDelta`` is ``2 ** -10``): well above the
rounding noise of 32-bit float costs below 1000 (see :func:`determinize_star`)."""


class GraphError(ValueError):
    """A decoding graph cannot be built from the given pieces, or an FST file is unusable.

    The message names what is wrong and what was expected, e.g. ``ARPA words missing from
    words.txt: 'FOO', 'BAR' (2 of 9 words); expected every 1-gram of the model except <s>
    and </s> in the word symbol table``.
    """


def _as_words(words: Mapping[str, int] | str | os.PathLike) -> Mapping[str, int]:
    if isinstance(words, Mapping):
        return words
    return read_symbol_table(words)


def disambig_ids(table: Mapping[str, int]) -> list[int]:
    """Ids of the disambiguation symbols of a symbol table: the symbols starting with ``#``.

    For ``phones.txt`` these are ``#0 #1 ... #N`` (Kaldi's ``phones/disambig.int``), for
    ``words.txt`` just ``#0`` (``phones/wdisambig_words.int``).

    Args:
        table: a symbol table ``{symbol: id}`` such as :attr:`Lang.phones` or :attr:`Lang.words`.

    Returns:
        The ids in increasing order.
    """
    return sorted(i for sym, i in table.items() if sym.startswith("#"))


# --- L -----------------------------------------------------------------------------------------

def make_lexicon_fst(lang: Lang, *, sil_prob: float = 0.5, disambig: bool = True) -> pynini.Fst:
    """The lexicon transducer ``L`` (or ``L_disambig``) of a lang, as Kaldi's
    ``utils/lang/make_lexicon_fst.py`` builds it (plus ``fstaddselfloops`` for ``L_disambig``).

    Topology (``sil_prob > 0``): a start state with ``<eps>:<eps>`` arcs to the loop state (cost
    ``-ln(1 - sil_prob)``) and to the silence state (cost ``-ln sil_prob``), so an utterance may
    begin with silence; each pronunciation leaves the loop state, emitting its word on the first
    phone (with the cost ``-ln`` of its pronunciation probability), and its last phone returns
    to the loop state (cost ``-ln(1 - sil_prob)``) or goes to the silence state (cost
    ``-ln sil_prob``); the silence state reads the optional-silence phone (``SIL``) and, in
    ``L_disambig``, then the last phone disambiguation symbol ``#N`` (``--sil-disambig``),
    back to the loop state. The loop state is the only final state (cost 0). With
    ``sil_prob == 0`` there is no silence: one loop state is start and final, and each
    pronunciation is a cycle through it (Kaldi's ``write_fst_no_silence``).

    Accepts: phone-id strings (:attr:`Lang.phones`), position-dependent phones when the lang
    has them, and with ``disambig`` the disambiguation symbols of ``lexicon_disambig.txt``
    after homophones and prefix pronunciations, ``#N`` after the optional silence, and the
    phone ``#0`` at word boundaries (the self-loop ``#0:#0`` on the loop state, which passes
    ``G``'s backoff symbol through). Outputs: word ids (:attr:`Lang.words`), one per word, on
    the word's first phone; every other arc outputs ``<eps>``. Semiring: tropical, costs in
    ``-ln`` probability. Arcs are sorted by output label (``fstarcsort --sort_type=olabel``),
    ready for composition with ``G``.

    Args:
        lang: from :func:`asrkit.text.lexicon.make_lang`; pronunciation probabilities are
            used when its lexicon has them (``lexiconp.txt``), else every one is 1.
        sil_prob: probability of optional silence before the first word and after each word,
            in ``[0, 1)`` (``prepare_lang.sh --sil-prob``, default 0.5).
        disambig: build ``L_disambig.fst`` (for composing with ``G``); False builds ``L.fst``
            (for training alignments) from ``lexicon.txt`` without any disambiguation symbol.

    Returns:
        The transducer.

    Raises:
        ValueError: ``sil_prob`` outside ``[0, 1)``.
        GraphError: a phone of the lexicon, the optional silence or ``#0`` is missing from the
            phone table, or ``#0`` from the word table (a lang not made by ``make_lang``).
    """
    if not (isinstance(sil_prob, (int, float)) and 0.0 <= sil_prob < 1.0):
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob!r}")
    phones, words = lang.phones, lang.words
    lexicon = lang.lexicon_disambig if disambig else lang.lexicon

    def phone_id(p: str, word: str | None = None) -> int:
        i = phones.get(p)
        if i is None:
            whose = f" of word {word!r}" if word is not None else ""
            raise GraphError(f"phone {p!r}{whose} is not in the lang's phone table "
                             "(phones.txt); expected a lang made by make_lang")
        return i

    fst = pynini.Fst()
    one = pynini.Weight.one(fst.weight_type())

    def arc(src: int, ilabel: int, olabel: int, cost: float, dst: int) -> None:
        _add_arc(fst, src, ilabel, olabel, cost, dst)

    if sil_prob > 0.0:
        sil_cost, no_sil_cost = -math.log(sil_prob), -math.log1p(-sil_prob)
        start, loop, sil = fst.add_state(), fst.add_state(), fst.add_state()
        arc(start, _EPS, _EPS, no_sil_cost, loop)
        arc(start, _EPS, _EPS, sil_cost, sil)
        sil_phone = phone_id(lang.phone_set.optional_silence)
        if disambig:
            sil_disambig = phone_id(lang.phone_set.disambig[-1])
            after_sil = fst.add_state()
            arc(sil, sil_phone, _EPS, 0.0, after_sil)
            arc(after_sil, sil_disambig, _EPS, 0.0, loop)
        else:
            arc(sil, sil_phone, _EPS, 0.0, loop)
        ends = ((loop, no_sil_cost), (sil, sil_cost))
    else:
        start = loop = fst.add_state()
        ends = ((loop, 0.0),)
    fst.set_start(start)
    fst.set_final(loop, one)

    def entries() -> Iterable[tuple[int, float, list[int]]]:
        for word, prob, pron in lexicon.prob_entries():
            wid = words.get(word)
            if wid is None:  # make_lang puts every lexicon word in words.txt
                raise GraphError(f"word {word!r} of the lexicon is not in the lang's word "
                                 "table (words.txt)")
            yield wid, -math.log(prob), [phone_id(p, word) for p in pron]

    add_word_paths(fst, entries(), loop=loop, ends=ends)

    if disambig:  # fstaddselfloops phones/wdisambig_phones.int phones/wdisambig_words.int
        if "#0" not in words:
            raise GraphError("word '#0' is not in the lang's word table (words.txt); "
                             "expected a lang made by make_lang")
        arc(loop, phone_id("#0"), words["#0"], 0.0, loop)
    fst.arcsort("olabel")
    logger.info("L%s: %d states, %d arcs (sil_prob %g)", "_disambig" if disambig else "",
                fst.num_states(), _num_arcs(fst), sil_prob)
    return fst


def _add_arc(fst: pynini.Fst, src: int, ilabel: int, olabel: int, cost: float, dst: int
             ) -> None:
    """Add an arc of cost ``cost`` (tropical; 0 is written as the exact ``One``)."""
    wtype = fst.weight_type()
    weight = pynini.Weight.one(wtype) if cost == 0.0 else pynini.Weight(wtype, cost)
    fst.add_arc(src, pynini.Arc(ilabel, olabel, weight, dst))


def add_word_paths(fst: pynini.Fst, entries: Iterable[tuple[int, float, Sequence[int]]], *,
                   loop: int, ends: Iterable[tuple[int, float]]) -> int:
    """Add one path per pronunciation to a lexicon transducer under construction: the loop
    of Kaldi's ``make_lexicon_fst.py``, shared by the phone lexicon (:func:`make_lexicon_fst`)
    and the sentencepiece-piece lexicon of ``TLG`` (:mod:`asrkit.decode.wfst.tlg`).

    Each path leaves ``loop``, reads the pronunciation's labels one arc each, writes the word
    id on the first arc (with the pronunciation cost) and ``<eps>`` on the others; its last
    arc goes to every ``(state, cost)`` of ``ends`` (e.g. back to the loop state, and to the
    optional-silence state), adding that cost.

    Args:
        fst: a tropical FST; states are added to it.
        entries: ``(word id, pronunciation cost -ln p, input labels)``; at least one label
            each.
        loop: the state the paths leave.
        ends: ``(destination state, cost)`` of the last arc's copies.

    Returns:
        The number of paths added.

    Raises:
        GraphError: an entry without labels.
    """
    ends = tuple(ends)
    n = 0
    for wid, pron_cost, labels in entries:
        if not labels:
            raise GraphError(f"word id {wid} has an empty pronunciation; expected at least "
                             "one label")
        src = loop
        for k, label in enumerate(labels[:-1]):
            dst = fst.add_state()
            _add_arc(fst, src, label, wid if k == 0 else _EPS, pron_cost if k == 0 else 0.0,
                     dst)
            src = dst
        first = len(labels) == 1
        for dst, cost in ends:
            _add_arc(fst, src, labels[-1], wid if first else _EPS,
                     cost + (pron_cost if first else 0.0), dst)
        n += 1
    return n


# --- G -----------------------------------------------------------------------------------------

def _longest_state_suffix(words: tuple[str, ...], states: Mapping[tuple[str, ...], int]
                          ) -> tuple[str, ...]:
    """The longest suffix of ``words`` that has a state (``()`` always has one)."""
    for i in range(len(words)):
        if words[i:] in states:
            return words[i:]
    return ()


def arpa_to_fst(lm: NgramLM | str | os.PathLike, words: Mapping[str, int] | str | os.PathLike,
                *, disambig_symbol: str | None = "#0", backoff_output: str = "eps",
                oov: str = "error") -> pynini.Fst:
    """The grammar ``G`` of a backoff n-gram model, as Kaldi's ``arpa2fst
    --disambig-symbol=#0 --read-symbol-table=words.txt`` builds it.

    One state per history (an n-gram of order below the model's, not ending in ``</s>``),
    plus the empty history (the unigram state). The start state is the history ``<s>``
    (the empty history when the model has no ``<s>``); ``<s>`` is never read. An n-gram
    ``h w`` with log10 probability ``p`` is an arc ``w:w`` with cost ``-ln(10) * p`` from the
    state of ``h`` to the state of the longest suffix of ``h w`` that is a history (Kaldi's
    shortcut for highest-order n-grams); ``h </s>`` is the final cost of ``h``'s state. Each
    state but the empty history has a backoff arc with cost ``-ln(10) * log10 backoff`` to the
    state of its longest proper suffix that is a history, reading ``disambig_symbol``. A
    state with no arc but its backoff and no final cost (a history never extended) is
    bypassed: arcs into it go on to its backoff state with the backoff cost added, as
    ``arpa2fst``'s ``RemoveRedundantStates`` does; every path keeps its cost. Arcs with
    infinite cost (log10 probability ``-inf``) are left out.

    For a word string, the one path that reads ``#0`` exactly where the backoff recursion of
    :meth:`NgramLM.log10prob` backs off costs ``-ln P(string </s>)``
    (:meth:`NgramLM.score_sentence` negated). With a disambiguation symbol the FST is
    input-deterministic; arcs are sorted by input label, ready for composition with ``L``.

    Args:
        lm: the model, or the path of an ARPA file (read with
            :func:`asrkit.lm.ngram.read_arpa`).
        words: the word symbol table (:attr:`Lang.words`, or the path of a ``words.txt``).
        disambig_symbol: the word symbol backoff arcs read; None reads ``<eps>`` (``arpa2fst``
            without ``--disambig-symbol``; such a ``G`` is not determinizable after ``L``).
        backoff_output: what backoff arcs write: ``"eps"`` writes ``<eps>``, as ``arpa2fst``
            does (``#0:<eps>``), so that ``LG`` outputs only words; ``"disambig"`` writes
            ``disambig_symbol`` too, making ``G`` an acceptor (then remove ``#0`` from the
            output of the final graph with :func:`remove_disambig`).
        oov: what to do with words of the model missing from ``words``: ``"error"`` raises
            :class:`GraphError` naming them; ``"skip"`` leaves out every n-gram holding one,
            with a warning naming them, as ``arpa2fst --read-symbol-table`` does (e.g. AN4's
            ``an4.lm`` has five words that ``an4.dic`` lacks).

    Returns:
        ``G``: input and output labels are word ids of ``words``; an acceptor except for the
        backoff arcs' output (see ``backoff_output``).

    Raises:
        GraphError: words of the model (1-grams other than ``<s>``, ``</s>``) are missing
            from ``words`` with ``oov="error"``, or ``disambig_symbol`` is missing; the
            message names them.
        ValueError: ``backoff_output`` is neither ``"eps"`` nor ``"disambig"``, or ``oov``
            neither ``"error"`` nor ``"skip"``.
        asrkit.lm.ngram.ArpaError: ``lm`` is a path to a malformed ARPA file.
        asrkit.text.lexicon.LexiconError: ``words`` is a path to a malformed ``words.txt``.
    """
    if backoff_output not in ("eps", "disambig"):
        raise ValueError(f"backoff_output must be 'eps' or 'disambig', got {backoff_output!r}")
    if oov not in ("error", "skip"):
        raise ValueError(f"oov must be 'error' or 'skip', got {oov!r}")
    source = "" if isinstance(lm, NgramLM) else f"{lm}: "
    if not isinstance(lm, NgramLM):
        lm = read_arpa(lm)
    table = _as_words(words)
    skip = _missing_words(lm, table, oov, source)

    def ngrams(n: int) -> Iterable[tuple[tuple[str, ...], float, float]]:
        if not skip:
            return lm.ngrams(n)
        return (e for e in lm.ngrams(n) if skip.isdisjoint(e[0]))

    backoff_label = _EPS
    if disambig_symbol is not None:
        if disambig_symbol not in table:
            raise GraphError(f"disambiguation symbol {disambig_symbol!r} is not in words.txt; "
                             "expected the lang's word table, which ends with #0 <s> </s>")
        backoff_label = table[disambig_symbol]
    backoff_olabel = backoff_label if backoff_output == "disambig" else _EPS
    g = _GrammarBuilder(ngrams, lm.order)
    fst = g.build(table, backoff_label, backoff_olabel)
    logger.info("G: %d states, %d arcs (%d word arcs) from a %d-gram model with %s n-grams; "
                "%d histories bypassed", fst.num_states(), _num_arcs(fst), g.num_word_arcs,
                lm.order, "/".join(str(c) for c in lm.counts), len(g.backoff) - len(g.states))
    return fst


def _missing_words(lm: NgramLM, table: Mapping[str, int], oov: str, source: str
                   ) -> frozenset[str]:
    """Words of the model's 1-grams (but ``<s>``, ``</s>``) missing from ``table``: raise
    (``oov="error"``) or warn and return them to be left out (``"skip"``)."""
    vocab = [w for ((w,), _, _) in lm.ngrams(1) if w not in (BOS, EOS)]
    missing = [w for w in vocab if w not in table]
    if missing:
        shown = ", ".join(repr(w) for w in missing[:10])
        shown += f"{', ...' if len(missing) > 10 else ''} ({len(missing)} of {len(vocab)} words)"
        if oov == "error":
            raise GraphError(f"{source}ARPA words missing from words.txt: {shown}; expected "
                             "every 1-gram of the model except <s> and </s> in the word symbol "
                             "table (add them to the lexicon, or pass oov='skip')")
        logger.warning("%sARPA words missing from words.txt: %s; n-grams holding them are "
                       "left out of G", source, shown)
    return frozenset(missing)


class _GrammarBuilder:
    """The states and arcs of :func:`arpa_to_fst`'s ``G`` from the model's n-grams."""

    def __init__(self, ngrams, order: int) -> None:
        self.ngrams, self.order = ngrams, order
        # Histories: the empty one and every n-gram below the highest order not ending in
        # </s>.
        self.backoff: dict[tuple[str, ...], float] = {(): 0.0}
        for n in range(1, order):
            for ngram, _, bow in ngrams(n):
                if ngram[-1] != EOS:
                    self.backoff[ngram] = bow
        self.extended = {ngram[:-1] for n in range(2, order + 1) for ngram, _, _ in ngrams(n)
                         if ngram[-1] != BOS}
        self.start_key = (BOS,) if order > 1 and (BOS,) in self.backoff else ()
        self.resolved: dict[tuple[str, ...], tuple[tuple[str, ...], float]] = {}
        self.states: dict[tuple[str, ...], int] = {}
        self.num_word_arcs = 0

    def backoff_key(self, h: tuple[str, ...]) -> tuple[str, ...]:
        return _longest_state_suffix(h[1:], self.backoff)

    def kept(self, h: tuple[str, ...]) -> bool:
        """A history other than the empty one and the start that no n-gram extends has only
        its backoff arc: arcs into it go on to where it backs off (arpa2fst
        RemoveRedundantStates)."""
        return h == () or h == self.start_key or h in self.extended

    def resolve(self, h: tuple[str, ...]) -> tuple[tuple[str, ...], float]:
        """``(kept history reached from h by backoff arcs, their summed cost)``."""
        out = self.resolved.get(h)
        if out is None:
            if self.kept(h):
                out = (h, 0.0)
            else:
                to, cost = self.resolve(self.backoff_key(h))
                out = (to, cost - _LN10 * self.backoff[h])
            self.resolved[h] = out
        return out

    def build(self, table: Mapping[str, int], backoff_label: int,
              backoff_olabel: int) -> pynini.Fst:
        fst = pynini.Fst()
        wtype = fst.weight_type()
        one = pynini.Weight.one(wtype)
        states = self.states
        for h in self.backoff:
            if self.kept(h):
                states[h] = fst.add_state()
        fst.set_start(states[self.start_key])

        def weight(cost: float) -> pynini.Weight:
            return one if cost == 0.0 else pynini.Weight(wtype, cost)

        for h, s in states.items():
            if h:
                to, cost = self.resolve(self.backoff_key(h))
                cost -= _LN10 * self.backoff[h]
                if math.isfinite(cost):
                    fst.add_arc(s, pynini.Arc(backoff_label, backoff_olabel, weight(cost),
                                              states[to]))
        for n in range(1, self.order + 1):
            for ngram, prob, _ in self.ngrams(n):
                h, w = ngram[:-1], ngram[-1]
                if w == BOS or h not in states:  # <s> is never read; unkept h not extended
                    continue
                cost = -_LN10 * prob
                if w == EOS:
                    if math.isfinite(cost):
                        fst.set_final(states[h], weight(cost))
                    continue
                dest = ngram if n < self.order else _longest_state_suffix(ngram[1:],
                                                                          self.backoff)
                to, extra = self.resolve(dest)
                cost += extra
                if math.isfinite(cost):
                    label = table[w]
                    fst.add_arc(states[h], pynini.Arc(label, label, weight(cost), states[to]))
                    self.num_word_arcs += 1
        fst.connect()
        fst.arcsort("ilabel")
        return fst


# --- composition and optimisation --------------------------------------------------------------

def _num_arcs(fst: pynini.Fst) -> int:
    return sum(fst.num_arcs(s) for s in fst.states())


def fst_size(fst: pynini.Fst) -> tuple[int, int]:
    """``(states, arcs)`` of an FST."""
    return fst.num_states(), _num_arcs(fst)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far in MiB (``getrusage`` ``ru_maxrss``;
    0.0 where the ``resource`` module is missing)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StageTimer:
    """Sizes, wall seconds and peak memory of the stages of a graph build (``L``, ``G``,
    ``LG``, …), logged as each finishes.

    Attributes:
        sizes: ``{stage: (states, arcs)}``.
        seconds: ``{stage: seconds since the previous stage ended (or the timer started)}``.
        peak_rss_mb: ``{stage: peak resident memory of the process so far, in MiB}`` when
            the stage ended (``getrusage``'s ``ru_maxrss``: the peak since the process
            started, so a stage's own peak only where it exceeds the earlier ones).
    """

    def __init__(self) -> None:
        self.sizes: dict[str, tuple[int, int]] = {}
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self._clock = time.perf_counter()

    def done(self, stage: str, fst: pynini.Fst) -> None:
        """Record that ``stage`` produced ``fst`` now."""
        now = time.perf_counter()
        self.sizes[stage] = fst_size(fst)
        self.seconds[stage] = now - self._clock
        self.peak_rss_mb[stage] = peak_rss_mb()
        self._clock = now
        logger.info("%s: %d states, %d arcs (%.2f s, peak RSS %.0f MiB)", stage,
                    *self.sizes[stage], self.seconds[stage], self.peak_rss_mb[stage])


def table_compose(fst1: pynini.Fst, fst2: pynini.Fst) -> pynini.Fst:
    """Compose ``fst1 o fst2`` (``fst1``'s output read by ``fst2``'s input), arc-sorting as
    needed, like Kaldi's ``fsttablecompose``.

    If neither ``fst1`` is sorted by output label nor ``fst2`` by input label, a copy of
    ``fst2`` is sorted by input label; the arguments are not modified. The result is trimmed
    (``connect``). Both must have the same arc type; weights multiply (tropical: costs add).

    Args:
        fst1: the left (input-side) transducer, e.g. ``L``.
        fst2: the right transducer, e.g. ``G``.

    Returns:
        The composition: ``fst1``'s input to ``fst2``'s output.

    Raises:
        pynini.FstOpError: OpenFst rejects the composition (e.g. different arc types).
    """
    if not (fst1.properties(pynini.O_LABEL_SORTED, True)
            or fst2.properties(pynini.I_LABEL_SORTED, True)):
        fst2 = fst2.copy().arcsort("ilabel")
    return pynini.compose(fst1, fst2)


def determinize_star(fst: pynini.Fst, *, delta: float = DELTA, copy: bool = True
                     ) -> pynini.Fst:
    """Remove ``<eps>:<eps>`` arcs and determinize on the input side, like Kaldi's
    ``fstdeterminizestar`` (which does both in one pass).

    Determinization is OpenFst's functional determinization in the tropical semiring: of
    paths with the same input and output strings the cheapest is kept; an input string with
    two outputs is an error of the graph (missing disambiguation symbols), which OpenFst may
    report as an error or not terminate on. (Kaldi determinizes ``LG`` in the log semiring,
    summing such paths; with disambiguation symbols they do not occur.)

    The residual weights of a subset are quantized to multiples of ``delta`` to compare
    subsets. Weights are 32-bit floats, spaced ``2 ** -17`` (7.6e-6) at costs of 64 to 128:
    with a ``delta`` below the rounding noise of the costs involved, equal subsets look
    different, so the output grows, and where a subset of several paths goes round a cycle
    its residuals can drift by an ulp per turn and determinization never ends, filling the
    memory (``delta = 1e-6``, this function's former default, did so on ``Ha o CLG`` of a
    20 k-word triphone graph with one ilabel per HMM, :func:`asrkit.decode.wfst.make_hclg`;
    so did ``2 ** -15``, while ``2 ** -14`` and up gave the same 0.95 M states in 3 s). The
    default :data:`DELTA` (``2 ** -13``) is safe for costs below about 1000; a path's cost
    may change by up to ``delta / 2`` where it leaves a subset in which it was not the
    cheapest (Kaldi's ``fstdeterminizestar`` uses ``2 ** -10``).

    Args:
        fst: a functional transducer or an acceptor (tropical); not modified unless
            ``copy`` is False.
        delta: quantization delta of the residual weights (and of ``rmepsilon``'s shortest
            distances), in cost units (see above).
        copy: False removes the epsilons of ``fst`` itself (modifying it) instead of a copy,
            which saves a copy's memory on large graphs.

    Returns:
        An input-deterministic, epsilon-free (on the input) equivalent.

    Raises:
        pynini.FstOpError: OpenFst fails (e.g. a non-functional input).
    """
    out = fst.copy() if copy else fst
    out.rmepsilon(delta=delta)
    return pynini.determinize(out, delta=delta, det_type="functional")


def minimize_encoded(fst: pynini.Fst, *, delta: float = DELTA, copy: bool = True
                     ) -> pynini.Fst:
    """Minimize a deterministic FST with labels and weights encoded, like Kaldi's
    ``fstminimizeencoded``.

    Each ``(input, output, weight)`` triple (and each final weight) is one symbol of an
    unweighted acceptor, which is minimized and decoded: states are merged only where their
    futures agree arc by arc, and no weight or label is pushed (plain ``minimize`` of a
    weighted transducer would push weights and output labels).

    Args:
        fst: an input-deterministic FST; not modified unless ``copy`` is False.
        delta: quantization delta for comparing weights (:func:`determinize_star`).
        copy: False minimizes ``fst`` itself (modifying it) instead of a copy.

    Returns:
        The minimized FST (``fst`` itself with ``copy=False``), equivalent to ``fst`` path
        by path.

    Raises:
        pynini.FstOpError: OpenFst fails.
    """
    out = fst.copy() if copy else fst
    mapper = pynini.EncodeMapper(out.arc_type(), encode_labels=True, encode_weights=True)
    out.encode(mapper)
    out.minimize(delta=delta)
    out.decode(mapper)
    return out


def make_lg(L: pynini.Fst, G: pynini.Fst, *, minimize: bool = True, delta: float = DELTA
            ) -> pynini.Fst:
    """The lexicon-grammar transducer ``LG = min(det(L o G))``, as Kaldi's ``mkgraph.sh``
    (``fsttablecompose L_disambig.fst G.fst | fstdeterminizestar | fstminimizeencoded``).

    Accepts: phone-id strings with the disambiguation symbols of ``L_disambig`` (homophone
    ``#1 #2 ...``, ``#N`` after optional silence, ``#0`` where ``G`` backs off). Outputs: word
    ids. Semiring: tropical, costs ``-ln p`` (pronunciation, silence and n-gram costs added).
    The result is input-deterministic and sorted by input label, ready for composition with
    ``C`` (``CLG = C o LG``; then ``H o CLG`` makes ``HCLG``). Keep the disambiguation
    symbols until ``HCLG`` is determinized; :func:`remove_disambig` removes them at the end.

    Args:
        L: :func:`make_lexicon_fst` with ``disambig=True``.
        G: :func:`arpa_to_fst` (with a disambiguation symbol, ``#0``).
        minimize: minimize after determinizing (:func:`minimize_encoded`).
        delta: quantization delta of the determinization and minimization
            (:func:`determinize_star`).

    Returns:
        ``LG``.

    Raises:
        GraphError: the composition is empty (``L``'s words and ``G``'s words share no
            sentence: different word tables?).
        pynini.FstOpError: OpenFst fails, e.g. determinizing without disambiguation symbols.
    """
    lg = table_compose(L, G)
    if lg.start() == pynini.NO_STATE_ID:
        raise GraphError("L o G is empty: no word sequence of G is spelled by L; expected L "
                         "and G built over the same words.txt")
    logger.info("L o G: %d states, %d arcs", lg.num_states(), _num_arcs(lg))
    lg = determinize_star(lg, delta=delta, copy=False)
    logger.info("det(L o G): %d states, %d arcs", lg.num_states(), _num_arcs(lg))
    if minimize:
        lg = minimize_encoded(lg, delta=delta, copy=False)
        logger.info("LG = min(det(L o G)): %d states, %d arcs", lg.num_states(),
                    _num_arcs(lg))
    return lg.arcsort("ilabel")


def remove_disambig(fst: pynini.Fst, disambig_ids: Iterable[int], *,
                    output_ids: Iterable[int] = (), copy: bool = True) -> pynini.Fst:
    """Relabel disambiguation symbols to ``<eps>``, like Kaldi's ``fstrmsymbols`` (which
    ``mkgraph.sh`` runs on ``HCLG`` once it is determinized).

    Only labels are changed; the arcs stay (now ``<eps>`` on the input), so the FST is no
    longer input-deterministic; ``rmepsilon`` or :func:`minimize_encoded` may follow.

    Args:
        fst: the FST; not modified unless ``copy`` is False.
        disambig_ids: input label ids to remove, e.g. ``disambig_ids(lang.phones)`` on ``LG``
            (or the transition-id disambiguation symbols on ``HCLG``).
        output_ids: output label ids to remove, e.g. ``disambig_ids(lang.words)`` when ``G``
            was built with ``backoff_output="disambig"``. Input and output ids are separate
            because phone and word ids overlap.
        copy: False relabels ``fst`` itself.

    Returns:
        A relabelled copy (unchanged copy when both id lists are empty), or ``fst`` itself
        with ``copy=False``.
    """
    ipairs = [(int(i), _EPS) for i in disambig_ids]
    opairs = [(int(i), _EPS) for i in output_ids]
    out = fst.copy() if copy else fst
    if ipairs or opairs:
        out.relabel_pairs(ipairs=ipairs or None, opairs=opairs or None)
    return out
