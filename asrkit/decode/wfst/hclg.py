"""The context and HMM transducers ``C`` and ``H``, and the decoding graph ``HCLG`` (Kaldi's
``fstcomposecontext``, ``make-h-transducer``, ``add-self-loops`` and ``utils/mkgraph.sh``).

All FSTs are pynini (OpenFst) ``standard`` FSTs: tropical semiring, weights are costs
``-ln p`` in nats, paths add costs, alternatives take the minimum; label 0 is ``<eps>``.

The transducers, input side first (see :mod:`asrkit.decode.wfst.graph` for ``L``, ``G``):

* ``C`` (:func:`make_context_fst`, or composed on the fly with :func:`compose_context`):
  context windows -> phones. A **context window** is a tuple of ``N`` ``phones.txt`` ids
  (``N`` the context width), the phone at index ``P`` (the central position) being the one
  modelled and the others its left and right context, ``0`` meaning "no context" (utterance
  start or end). ``N = 1, P = 0`` is the monophone case (``C`` is the identity); ``N = 3,
  P = 1`` is triphones. The windows are numbered by an **ilabel table** (Kaldi's
  ``ilabel_info``): ``ilabel_info[i]`` is the window of input label ``i`` of ``C`` and
  ``CLG``; ``ilabel_info[0] = ()`` is ``<eps>``, and a phone disambiguation symbol ``#k`` with
  phone id ``d`` is the one-element entry ``(-d,)``, passed through ``C`` by a self-loop on
  every state, as Kaldi does.
* ``H`` (:func:`make_h_fst`): transition ids -> ilabel indices, one HMM per context window
  (pdfs from a context-dependency object, :class:`ContextDependencyLike`), without
  self-loops; the disambiguation entries of the ilabel table become transition-id
  disambiguation symbols ``num_tids + 1, num_tids + 2, ...`` (Kaldi's ``disambig_tid.int``).
* ``HCLG`` (:func:`make_hclg`): transition ids -> word ids, built as ``utils/mkgraph.sh``
  does: ``LG = min(det(L o G))``, ``CLG = C o LG``, its windows relabelled with one label per
  distinct HMM and determinized (:func:`reduce_ilabels`, Kaldi's ``make-ilabel-transducer``),
  ``HCLGa = min(det(Ha o CLG))``, disambiguation symbols removed, then self-loops added
  (:func:`add_self_loops`).

Self-loops are added in the **natural order** (Kaldi's ``add-self-loops --reorder=false``;
``mkgraph.sh`` uses ``--reorder=true``, which puts the self-loops after the transition leaving
the state): an HMM state visited for ``m`` frames reads its self-loop transition id ``m - 1``
times and then the transition leaving it, which is the convention of the alignments of
:mod:`asrkit.models.hmm_gmm` (:meth:`TransitionModel.split_to_phones`), so a decoded
transition-id path splits into phones directly. Where a graph state has outgoing arcs of
more than one HMM state, Kaldi splits it with epsilon arcs to per-HMM-state copies
(``MakeFollowingInputSymbolsSameClass``); here the copy is entered by the first self-loop
instead, so no epsilon arc is added (:func:`add_self_loops`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pynini
import torch

from asrkit.decode.wfst.graph import (
    DELTA,
    GraphError,
    StageTimer,
    determinize_star,
    disambig_ids,
    fst_size,
    make_lexicon_fst,
    make_lg,
    minimize_encoded,
    remove_disambig,
    table_compose,
)
from asrkit.text.lexicon import Lang

__all__ = [
    "ContextDependencyLike",
    "HclgInfo",
    "MonophoneContext",
    "add_self_loops",
    "compose_context",
    "make_context_fst",
    "make_h_fst",
    "make_hclg",
    "reduce_ilabels",
]

logger = logging.getLogger(__name__)

_EPS = 0
Window = tuple[int, ...]


# --- protocols ---------------------------------------------------------------------------------

@runtime_checkable
class ContextDependencyLike(Protocol):
    """What :func:`make_h_fst` needs of a context-dependency model (Kaldi's
    ``ContextDependency``, the phonetic decision tree).

    Attributes:
        context_width: ``N``, the window length (1 monophone, 3 triphone).
        central_position: ``P``, the index of the modelled phone in a window.
    """

    context_width: int
    central_position: int

    def pdf_id(self, phones: tuple[int, ...], pdf_class: int) -> int:
        """The pdf of HMM state ``pdf_class`` of the central phone of the window ``phones``
        (``N`` ``phones.txt`` ids, ``0`` = no context)."""
        ...


class MonophoneContext:
    """The monophone context dependency of a transition model: ``N = 1``, ``P = 0``, the pdf of
    HMM state ``k`` of phone ``p`` being ``transition_model.phone_hmm(p).pdfs[k]``.

    Args:
        transition_model: a :class:`asrkit.models.hmm_gmm.TransitionModel`.
    """

    context_width = 1
    central_position = 0

    def __init__(self, transition_model) -> None:
        self.transition_model = transition_model

    @property
    def num_pdfs(self) -> int:
        """Number of pdfs ``S`` of the transition model."""
        return int(self.transition_model.num_pdfs)

    def pdf_id(self, phones: tuple[int, ...], pdf_class: int) -> int:
        """The pdf of HMM state ``pdf_class`` of ``phones[0]``.

        Raises:
            ValueError: ``phones`` is not one phone.
            KeyError: not an emitting phone of the transition model.
        """
        if len(phones) != 1:
            raise ValueError(f"a monophone window has one phone, got {phones}")
        return self.transition_model.phone_hmm(phones[0]).pdfs[pdf_class]


# --- helpers -----------------------------------------------------------------------------------

def _check_context(N: int, P: int) -> None:
    if not (isinstance(N, int) and N >= 1):
        raise ValueError(f"context width N must be an integer >= 1, got {N!r}")
    if not (isinstance(P, int) and 0 <= P < N):
        raise ValueError(f"central position P must be in 0..{N - 1}, got {P!r}")


class _IlabelTable:
    """Assigns ilabel indices to windows in order of first use (index 0 is ``()``)."""

    def __init__(self) -> None:
        self.info: list[Window] = [()]
        self._index: dict[Window, int] = {(): 0}

    def __call__(self, window: Window) -> int:
        i = self._index.get(window)
        if i is None:
            i = len(self.info)
            self.info.append(window)
            self._index[window] = i
        return i


def _identity_info(phone_ids: Iterable[int], disambig: Iterable[int]) -> list[Window]:
    """The ``N = 1`` ilabel table in which ilabel ``i`` is phone (or symbol) ``i``."""
    phones, dis = set(phone_ids), set(disambig)
    top = max(phones | dis | {0})
    return [(i,) if i in phones else (-i,) if i in dis else () for i in range(top + 1)]


def _label_sets(phone_ids: Iterable[int], disambig: Iterable[int]
                ) -> tuple[frozenset[int], frozenset[int]]:
    phones, dis = frozenset(int(i) for i in phone_ids), frozenset(int(i) for i in disambig)
    if 0 in phones or 0 in dis:
        raise ValueError("0 is <eps>, not a phone or disambiguation symbol")
    if phones & dis:
        raise ValueError(f"ids both phones and disambiguation symbols: {sorted(phones & dis)}")
    if not phones:
        raise ValueError("no phone ids given")
    return phones, dis


def _window_label(table: _IlabelTable, window: Window, P: int) -> int:
    """The ilabel of ``window``, or ``<eps>`` when its central phone is padding."""
    return table(window) if window[P] != 0 else _EPS


# --- C -----------------------------------------------------------------------------------------

def make_context_fst(N: int, P: int, phone_ids: Iterable[int], disambig_ids: Iterable[int]
                     ) -> tuple[pynini.Fst, list[Window]]:
    """The full context transducer ``C`` (context windows -> phones), Kaldi's
    ``fstmakecontextfst``.

    A state remembers the last ``N - 1`` phones (``0``-padded at the start); reading phone
    ``p`` on the output side, ``C`` reads on its input the window that ends with ``p`` (whose
    central phone is ``N - 1 - P`` phones back), or ``<eps>`` while that central phone is
    still start padding. At the end, ``N - 1 - P`` flush arcs (output ``<eps>``) read the
    windows of the last phones, right-padded with ``0``. Every non-flush state has a
    self-loop ``(-d,):d`` for each disambiguation symbol ``d``. ``N = 1`` is the identity on
    phones and disambiguation symbols, with ilabel ``i`` the window ``(i,)`` (or ``(-i,)``).

    The machine has ``sum(|phones|^k, k < N)`` main states and ``|phones|`` arcs each: use it
    on small phone sets (tests); :func:`compose_context` builds ``C o LG`` without it.

    Args:
        N: context width (1 monophone, 3 triphone).
        P: central position, ``0 <= P < N`` (1 for triphones).
        phone_ids: the ``phones.txt`` ids of the phones (not ``<eps>`` nor ``#k``).
        disambig_ids: the ids of the disambiguation symbols (:func:`disambig_ids`).

    Returns:
        ``(C, ilabel_info)``: ``C`` sorted by output label; ``ilabel_info[i]`` the window of
        input label ``i``, numbered in order of construction (but the identity for ``N = 1``).

    Raises:
        ValueError: bad ``N``/``P``; ``0`` or an id both phone and disambiguation symbol.
    """
    _check_context(N, P)
    phones, dis = _label_sets(phone_ids, disambig_ids)
    fst = pynini.Fst()
    one = pynini.Weight.one(fst.weight_type())
    if N == 1:
        info = _identity_info(phones, dis)
        s = fst.add_state()
        fst.set_start(s)
        fst.set_final(s, one)
        for i in sorted(phones | dis):
            fst.add_arc(s, pynini.Arc(i, i, one, s))
        return fst.arcsort("olabel"), info

    table = _IlabelTable()
    R = N - 1 - P
    states: dict[tuple[Window, int], int] = {}
    queue: list[tuple[Window, int]] = []

    def state(key: tuple[Window, int]) -> int:
        s = states.get(key)
        if s is None:
            s = states[key] = fst.add_state()
            queue.append(key)
        return s

    fst.set_start(state(((0,) * (N - 1), 0)))
    sorted_phones, sorted_dis = sorted(phones), sorted(dis)
    for key in queue:
        h, k = key
        s = states[key]
        if k == R:
            fst.set_final(s, one)
        if k == 0:
            for p in sorted_phones:
                w = h + (p,)
                fst.add_arc(s, pynini.Arc(_window_label(table, w, P), p, one,
                                          state((w[1:], 0))))
            for d in sorted_dis:
                fst.add_arc(s, pynini.Arc(table((-d,)), d, one, s))
        if k < R:
            w = h + (0,)
            fst.add_arc(s, pynini.Arc(_window_label(table, w, P), _EPS, one,
                                      state((w[1:], k + 1))))
    fst.arcsort("olabel")
    logger.info("C (N=%d, P=%d): %d states, %d arcs, %d ilabels", N, P, *fst_size(fst),
                len(table.info))
    return fst, table.info


def compose_context(LG: pynini.Fst, N: int, P: int, phone_ids: Iterable[int],
                    disambig_ids: Iterable[int]) -> tuple[pynini.Fst, list[Window]]:
    """``CLG = C o LG`` built on the fly from ``LG``'s reachable states, as Kaldi's
    ``fstcomposecontext`` does (``C`` of :func:`make_context_fst`, never built in full).

    A ``CLG`` state is a pair (last ``N - 1`` phones read, ``LG`` state). An ``LG`` arc
    reading phone ``p`` becomes an arc reading the window ending with ``p`` (``<eps>`` while
    its central phone is start padding); an ``LG`` arc reading a disambiguation symbol ``d``
    reads ``(-d,)``, one reading ``<eps>`` reads ``<eps>``; output labels and weights are
    ``LG``'s. Where ``LG`` is final, a chain of ``N - 1 - P`` arcs (output ``<eps>``, the
    first carrying the final weight) reads the windows of the last phones with right context
    ``0`` (Kaldi's subsequential symbol ``$``, written ``0`` in ``ilabel_info``). For
    ``N = 1`` the result is ``LG`` itself (a copy): input label ``i`` is the window ``(i,)``.

    Args:
        LG: :func:`asrkit.decode.wfst.make_lg` (phones with disambiguation symbols -> words).
        N: context width.
        P: central position.
        phone_ids: ids of the phones (``lang.phone_set.silence`` and ``nonsilence``).
        disambig_ids: ids of the disambiguation symbols (``disambig_ids(lang.phones)``).

    Returns:
        ``(CLG, ilabel_info)``: ``CLG`` reads ilabel indices (windows) and writes words;
        ``ilabel_info[i]`` is the window of input label ``i`` (``()`` for ``<eps>`` and, with
        ``N = 1``, for unused ids).

    Raises:
        ValueError: bad ``N``/``P``/ids.
        GraphError: ``LG`` reads a label that is neither ``<eps>``, a phone nor a
            disambiguation symbol, or has no start state.
    """
    _check_context(N, P)
    phones, dis = _label_sets(phone_ids, disambig_ids)
    if LG.start() == pynini.NO_STATE_ID:
        raise GraphError("LG has no start state (an empty FST)")
    t0 = time.perf_counter()

    def unknown(label: int) -> GraphError:
        return GraphError(f"LG reads label {label}, which is neither <eps>, a phone nor a "
                          "disambiguation symbol of the given ids; expected LG built over "
                          "the same phones.txt")

    if N == 1:
        for s in LG.states():
            for a in LG.arcs(s):
                if a.ilabel and a.ilabel not in phones and a.ilabel not in dis:
                    raise unknown(a.ilabel)
        return LG.copy(), _identity_info(phones, dis)

    table = _IlabelTable()
    R = N - 1 - P
    out = pynini.Fst()
    one = pynini.Weight.one(out.weight_type())
    zero = pynini.Weight.zero(out.weight_type())
    states: dict[tuple, int] = {}
    queue: list[tuple[Window, int]] = []

    def state(key: tuple[Window, int]) -> int:
        s = states.get(key)
        if s is None:
            s = states[key] = out.add_state()
            queue.append(key)
        return s

    flush: dict[tuple[Window, int], int] = {}

    def flush_state(h: Window, k: int) -> int:
        s = flush.get((h, k))
        if s is None:
            s = flush[(h, k)] = out.add_state()
            if k == R:
                out.set_final(s, one)
            else:
                w = h + (0,)
                out.add_arc(s, pynini.Arc(_window_label(table, w, P), _EPS, one,
                                          flush_state(w[1:], k + 1)))
        return s

    out.set_start(state(((0,) * (N - 1), LG.start())))
    for key in queue:
        h, q = key
        s = states[key]
        for a in LG.arcs(q):
            i = a.ilabel
            if i == _EPS:
                label, h2 = _EPS, h
            elif i in dis:
                label, h2 = table((-i,)), h
            elif i in phones:
                w = h + (i,)
                label, h2 = _window_label(table, w, P), w[1:]
            else:
                raise unknown(i)
            out.add_arc(s, pynini.Arc(label, a.olabel, a.weight, state((h2, a.nextstate))))
        final = LG.final(q)
        if final != zero:
            if R == 0:
                out.set_final(s, final)
            else:
                w = h + (0,)
                out.add_arc(s, pynini.Arc(_window_label(table, w, P), _EPS, final,
                                          flush_state(w[1:], 1)))
    out.connect()
    logger.info("CLG = C o LG (N=%d, P=%d): %d states, %d arcs, %d ilabels (%.2f s)", N, P,
                *fst_size(out), len(table.info), time.perf_counter() - t0)
    return out, table.info


# --- H -----------------------------------------------------------------------------------------

TidLookup = Callable[[int, int, int, int], int]


def _tid_lookup(transition_model) -> TidLookup:
    """``f(phone, hmm_state, pdf, dest) -> tid``: the model's ``transition_id`` when it has
    one (context-dependent pdfs), else the monophone tids of ``phone_hmm``, checked against
    the pdf."""
    fn = getattr(transition_model, "transition_id", None)
    if callable(fn):
        return fn

    def mono(phone: int, hmm_state: int, pdf: int, dest: int) -> int:
        hmm = transition_model.phone_hmm(phone)
        if hmm.pdfs[hmm_state] != pdf:
            raise GraphError(f"phone {phone} state {hmm_state}: the context dependency gives "
                             f"pdf {pdf}, the transition model {hmm.pdfs[hmm_state]}; a "
                             "transition model for context-dependent pdfs needs a "
                             "transition_id(phone, hmm_state, pdf, dest) method")
        for d, tid in hmm.transitions[hmm_state]:
            if d == dest:
                return tid
        raise GraphError(f"phone {phone} state {hmm_state} has no transition to {dest}")

    return mono


def _tid(tid_of: TidLookup, window: Window, phone: int, hmm_state: int, pdf: int, dest: int
         ) -> int:
    try:
        return int(tid_of(phone, hmm_state, pdf, dest))
    except KeyError as e:
        raise GraphError(f"context window {window}: {e.args[0] if e.args else e}; expected "
                         "a transition model built with the same context dependency") from None


def _hmm(transition_model, phone: int):
    try:
        return transition_model.phone_hmm(phone)
    except KeyError:
        raise GraphError(f"phone id {phone} of a context window is not an emitting phone of "
                         "the transition model; expected the lang the model was built "
                         "for") from None


def make_h_fst(ilabel_info: Sequence[Window], context_dependency: ContextDependencyLike,
               transition_model, *, transition_scale: float = 1.0
               ) -> tuple[pynini.Fst, list[int]]:
    """The HMM transducer ``Ha`` (transition ids -> ilabel indices) without self-loops,
    Kaldi's ``make-h-transducer``.

    One state (start and final) loops through one HMM per window of ``ilabel_info``: the arcs
    leaving HMM state 0 start at the loop state and write the window's ilabel index, the
    others write ``<eps>``; a transition to the phone's exit returns to the loop state. The
    central phone ``w[P]`` gives the topology (``transition_model.phone_hmm(phone)``), the
    context dependency the pdf of each HMM state, and the transition model the transition id
    of each ``(phone, state, pdf, destination)``. Self-loop transitions are left out (added
    to ``HCLG`` by :func:`add_self_loops`); the cost of a transition ``i -> j`` is
    ``-transition_scale * ln(p(i -> j) / (1 - p(i -> i)))`` (Kaldi's
    ``GetTransitionLogProbIgnoringSelfLoops``). Each disambiguation entry ``(-d,)`` becomes a
    self-loop of the loop state reading a new transition-id disambiguation symbol
    ``num_tids + 1, num_tids + 2, ...`` and writing its ilabel index.

    The transition model needs ``num_tids``, ``log_probs`` (``(num_tids + 1,)`` natural-log
    transition probabilities) and ``phone_hmm(phone)`` (a
    :class:`asrkit.models.hmm_gmm.PhoneHmm`: per state ``((dest, tid), ...)``, ``dest = n``
    the exit); tids of context-dependent pdfs come from its ``transition_id(phone,
    hmm_state, pdf, dest)`` method when it has one, else from ``phone_hmm`` (monophones,
    whose pdfs must then agree with the context dependency).

    Args:
        ilabel_info: the ilabel table of :func:`compose_context`.
        context_dependency: gives ``pdf_id(window, hmm_state)`` (:class:`MonophoneContext`
            for a monophone model); its ``context_width`` must be the windows' length.
        transition_model: e.g. :class:`asrkit.models.hmm_gmm.TransitionModel`.
        transition_scale: scale of the transition log-probabilities (``mkgraph.sh
            --transition-scale``, 1.0).

    Returns:
        ``(Ha, disambig_tids)``: ``Ha`` sorted by output label; the transition-id
        disambiguation symbols in order (Kaldi's ``disambig_tid.int``).

    Raises:
        GraphError: a window of the wrong length, a central phone the transition model does
            not know, a pdf the transition model has no transition for.
    """
    N, P = int(context_dependency.context_width), int(context_dependency.central_position)
    _check_context(N, P)
    tid_of = _tid_lookup(transition_model)
    log_probs = torch.as_tensor(transition_model.log_probs, dtype=torch.float64).tolist()
    next_disambig = int(transition_model.num_tids) + 1
    fst = pynini.Fst()
    wtype = fst.weight_type()
    one = pynini.Weight.one(wtype)
    loop = fst.add_state()
    fst.set_start(loop)
    fst.set_final(loop, one)
    disambig_tids: list[int] = []
    for j, window in enumerate(ilabel_info):
        if j == 0 or not window:
            continue
        if len(window) == 1 and window[0] < 0:
            fst.add_arc(loop, pynini.Arc(next_disambig, j, one, loop))
            disambig_tids.append(next_disambig)
            next_disambig += 1
            continue
        if len(window) != N:
            raise GraphError(f"ilabel {j} has window {window} of length {len(window)}; the "
                             f"context dependency has context width {N}")
        phone = int(window[P])
        hmm = _hmm(transition_model, phone)
        n = hmm.num_states
        dests = [[d for d, _ in row] for row in hmm.transitions]
        entered = {d for k in range(n) for d in dests[k] if d != k and d < n}
        inner = {k: fst.add_state() for k in range(n) if k > 0 or k in entered}
        for k in range(n):
            pdf = int(context_dependency.pdf_id(tuple(window), k))
            loop_lp = 0.0
            if k in dests[k]:
                p_loop = math.exp(log_probs[_tid(tid_of, window, phone, k, pdf, k)])
                loop_lp = math.log1p(-p_loop) if p_loop < 1.0 else -math.inf
            sources = [(inner[k], _EPS)] if k in inner else []
            if k == 0:
                sources.append((loop, j))
            for d in dests[k]:
                if d == k:
                    continue
                tid = _tid(tid_of, window, phone, k, pdf, d)
                cost = -transition_scale * (log_probs[tid] - loop_lp)
                weight = one if cost == 0.0 else pynini.Weight(wtype, cost)
                dst = loop if d == n else inner[d]
                for src, olabel in sources:
                    fst.add_arc(src, pynini.Arc(tid, olabel, weight, dst))
    fst.arcsort("olabel")
    logger.info("Ha: %d states, %d arcs, %d disambiguation symbols", *fst_size(fst),
                len(disambig_tids))
    return fst, disambig_tids


# --- ilabel reduction --------------------------------------------------------------------------

def reduce_ilabels(ilabel_info: Sequence[Window], context_dependency: ContextDependencyLike,
                   transition_model) -> tuple[list[Window], list[int]]:
    """One ilabel per distinct HMM: merge the context windows whose HMMs are the same,
    Kaldi's ``make-ilabel-transducer`` (its ``ilabels_remapped``).

    :func:`make_h_fst` builds the HMM of a window from its central phone (topology, transition
    ids) and the pdf of each HMM state (``context_dependency.pdf_id(window, k)``), so windows
    with the same central phone and the same pdfs spell the same transition-id sequences with
    the same costs. A tied tree gives most windows such twins (and a tree asks about base
    phones, so the word-position variants of a context phone always agree): the ``CLG`` of a
    20 k-word lexicon and a trigram has 88,927 windows, which AN4's triphone tree (141 pdfs)
    gives 299 distinct HMMs. :func:`make_hclg` relabels ``CLG`` with the map and determinizes
    it, which does at the label level the subset construction that ``det(Ha o CLG)`` would
    otherwise do transition by transition over the (several times larger) composition.

    Nothing is lost: the central phones of consecutive windows are the phone sequence, which
    gives back the windows, and disambiguation entries ``(-d,)`` keep a label each.

    Args:
        ilabel_info: the ilabel table of :func:`compose_context` (``ilabel_info[0] = ()``).
        context_dependency: gives the pdfs (:class:`ContextDependencyLike`), as for
            :func:`make_h_fst`.
        transition_model: gives each central phone's number of HMM states
            (``phone_hmm(phone).num_states``).

    Returns:
        ``(reduced_info, ilabel_map)``: ``reduced_info`` is the ilabel table of the merged
        labels, numbered in order of first use in ``ilabel_info``, each the first window of
        its class (``reduced_info[0] = ()``), a table for :func:`make_h_fst`;
        ``ilabel_map[i]`` is the merged label of label ``i`` of ``ilabel_info`` (``0`` for
        ``<eps>`` and for unused ``()`` entries), so that ``reduced_info[ilabel_map[i]]``
        has the HMM of ``ilabel_info[i]``.

    Raises:
        GraphError: a window of the wrong length, or a central phone the transition model
            does not know (as :func:`make_h_fst`).
    """
    N, P = int(context_dependency.context_width), int(context_dependency.central_position)
    _check_context(N, P)
    index: dict[tuple, int] = {}
    reduced: list[Window] = [()]
    ilabel_map = [_EPS] * len(ilabel_info)
    num_states: dict[int, int] = {}
    for j, window in enumerate(ilabel_info):
        if j == 0 or not window:
            continue
        window = tuple(int(p) for p in window)
        if len(window) == 1 and window[0] < 0:
            key: tuple = window
        else:
            if len(window) != N:
                raise GraphError(f"ilabel {j} has window {window} of length {len(window)}; the "
                                 f"context dependency has context width {N}")
            phone = window[P]
            n = num_states.get(phone)
            if n is None:
                n = num_states[phone] = _hmm(transition_model, phone).num_states
            key = (phone, tuple(int(context_dependency.pdf_id(window, k)) for k in range(n)))
        r = index.get(key)
        if r is None:
            r = index[key] = len(reduced)
            reduced.append(window)
        ilabel_map[j] = r
    logger.info("ilabels: %d context windows and disambiguation symbols -> %d distinct",
                len(ilabel_info) - 1, len(reduced) - 1)
    return reduced, ilabel_map


def _relabel_input(fst: pynini.Fst, ilabel_map: Sequence[int]) -> pynini.Fst:
    """Relabel the input side of ``fst`` in place, ``i -> ilabel_map[i]`` (Kaldi composes
    with ``make-ilabel-transducer``'s one-state map instead)."""
    pairs = [(i, int(r)) for i, r in enumerate(ilabel_map) if i != r]
    if pairs:
        fst.relabel_pairs(ipairs=pairs)
    return fst


# --- self-loops --------------------------------------------------------------------------------

def add_self_loops(fst: pynini.Fst, transition_model, *, self_loop_scale: float = 0.1
                   ) -> pynini.Fst:
    """Add the HMM self-loops to ``HCLGa`` in the natural order, Kaldi's ``add-self-loops
    --reorder=false`` without its epsilon arcs.

    Arcs are grouped by the transition state (HMM state of a phone) of their transition id.
    Where every arc leaving a non-final state ``s`` belongs to one transition state ``k``
    with a self-loop, ``s`` gets that self-loop. Otherwise each such ``k`` gets a new state
    ``s_k``: ``s`` reads the self-loop tid into ``s_k``, ``s_k`` has the self-loop and copies
    of ``s``'s arcs of ``k``; the arcs of ``s`` stay, for a single frame in ``k``. The
    self-loop costs ``-self_loop_scale * ln p(k -> k)``, and every arc of ``k`` (on ``s`` and
    on ``s_k``) ``-self_loop_scale * ln(1 - p(k -> k))`` more (``Ha``'s arcs are normalised
    without the self-loops, :func:`make_h_fst`). The result stays input-deterministic
    wherever ``fst`` is.

    The transition model needs ``num_tids`` and the tid tables ``tid2tstate``,
    ``tid2state`` (HMM state), ``tid2dest`` (destination) and ``log_probs`` of
    :class:`asrkit.models.hmm_gmm.TransitionModel` (a self-loop is a tid whose destination is
    its own state).

    Args:
        fst: ``HCLGa``: input labels transition ids or ``<eps>`` (disambiguation symbols
            removed); not modified.
        transition_model: the transition model the tids belong to.
        self_loop_scale: scale of the self-loop and leaving log-probabilities (``mkgraph.sh
            --self-loop-scale``, 0.1).

    Returns:
        ``HCLG``.

    Raises:
        GraphError: an input label above ``num_tids`` (a disambiguation symbol left in).
    """
    num_tids = int(transition_model.num_tids)
    tstate = transition_model.tid2tstate.tolist()
    is_loop = (transition_model.tid2state == transition_model.tid2dest).tolist()
    log_probs = torch.as_tensor(transition_model.log_probs, dtype=torch.float64).tolist()
    loop_of: dict[int, int] = {tstate[t]: t for t in range(1, num_tids + 1) if is_loop[t]}
    # per looped tstate: (self-loop tid, its cost, extra cost of the arcs leaving it)
    loop_info: dict[int, tuple[int, float, float]] = {}
    for ts, tid in loop_of.items():
        p = math.exp(log_probs[tid])
        leave = -self_loop_scale * math.log1p(-p) if p < 1.0 else math.inf
        loop_info[ts] = (tid, -self_loop_scale * log_probs[tid], leave)

    out = fst.copy()
    wtype = out.weight_type()
    zero = pynini.Weight.zero(wtype)

    def w(cost: float) -> pynini.Weight:
        return pynini.Weight(wtype, cost)

    num_split = 0
    for s in range(out.num_states()):
        arcs = list(out.arcs(s))
        classes: list[int | None] = []
        for a in arcs:
            if a.ilabel > num_tids:
                raise GraphError(f"state {s} has input label {a.ilabel} > num_tids "
                                 f"{num_tids}: remove the disambiguation symbols first")
            ts = tstate[a.ilabel] if a.ilabel else None
            classes.append(ts if ts in loop_info else None)
        looped = {c for c in classes if c is not None}
        if not looped:
            continue
        out.delete_arcs(s)
        scaled = [a if c is None else pynini.Arc(a.ilabel, a.olabel,
                                                 w(float(a.weight) + loop_info[c][2]),
                                                 a.nextstate)
                  for a, c in zip(arcs, classes)]
        for a in scaled:
            out.add_arc(s, a)
        if len(looped) == 1 and None not in classes and out.final(s) == zero:
            tid, cost, _ = loop_info[classes[0]]
            out.add_arc(s, pynini.Arc(tid, _EPS, w(cost), s))
            continue
        for c in sorted(looped):
            tid, cost, _ = loop_info[c]
            s_k = out.add_state()
            num_split += 1
            out.add_arc(s, pynini.Arc(tid, _EPS, w(cost), s_k))
            out.add_arc(s_k, pynini.Arc(tid, _EPS, w(cost), s_k))
            for a, ac in zip(scaled, classes):
                if ac == c:
                    out.add_arc(s_k, a)
    out.arcsort("ilabel")
    logger.info("add_self_loops (scale %g): %d states (%d added for mixed states), %d arcs",
                self_loop_scale, out.num_states(), num_split, fst_size(out)[1])
    return out


# --- HCLG --------------------------------------------------------------------------------------

@dataclass
class HclgInfo:
    """What :func:`make_hclg` built besides ``HCLG``.

    Attributes:
        ilabel_info: the windows of the input labels of ``C o LG`` as composed
            (:func:`compose_context`).
        disambig_tids: the transition-id disambiguation symbols of ``Ha`` (removed from
            ``HCLG``).
        context_width: ``N``.
        central_position: ``P``.
        sizes: ``{stage: (states, arcs)}`` for ``G``, ``L``, ``LG``, ``CLG`` (as composed),
            ``CLGr`` (relabelled by ``ilabel_map``, determinized and minimized; only where the
            ilabels were remapped), ``Ha``, ``HCLGa`` and ``HCLG``.
        seconds: ``{stage: seconds}`` spent building each.
        ilabel_map: None where ``CLG``'s labels were kept, else the map of
            :func:`reduce_ilabels`: ``ilabel_map[i]`` is the label of ``Ha`` (and ``CLGr``)
            that stands for label ``i`` of ``ilabel_info``.
        h_ilabel_info: the ilabel table ``Ha`` was built from (:func:`make_h_fst`):
            ``ilabel_info`` itself, or :func:`reduce_ilabels`'s table of one window per
            distinct HMM.
        peak_rss_mb: ``{stage: peak resident memory of the process in MiB}`` when the stage
            ended (:class:`asrkit.decode.wfst.graph.StageTimer`).
    """

    ilabel_info: list[Window]
    disambig_tids: list[int]
    context_width: int
    central_position: int
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ilabel_map: list[int] | None = None
    h_ilabel_info: list[Window] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


def make_hclg(lang: Lang, G: pynini.Fst, transition_model,
              context_dependency: ContextDependencyLike | None = None, *,
              self_loop_scale: float = 0.1, transition_scale: float = 1.0,
              sil_prob: float = 0.5, remap_ilabels: bool = True, delta: float = DELTA
              ) -> tuple[pynini.Fst, HclgInfo]:
    """The decoding graph ``HCLG`` (transition ids -> word ids), as Kaldi's
    ``utils/mkgraph.sh``::

        LG    = min(det(L_disambig o G))                     make_lg
        CLG   = C o LG                                       compose_context (N, P)
        CLGr  = min(det(M o CLG))                            reduce_ilabels (remap_ilabels)
        Ha    = H without self-loops                         make_h_fst (transition_scale)
        HCLGa = min(det(Ha o CLGr)), disambiguation removed  fstrmsymbols disambig_tid.int
        HCLG  = add self-loops                               add_self_loops (self_loop_scale)

    ``M`` maps each context window to one label per distinct HMM (central phone and pdfs,
    :func:`reduce_ilabels`; Kaldi's ``make-ilabel-transducer``), so ``Ha`` has one HMM per
    distinct HMM rather than per window and most of the determinization is done on ``CLGr``
    rather than on the larger ``Ha o CLG``. It changes no path: ``HCLG`` is equivalent to
    the one built without it (``remap_ilabels=False``: ``Ha`` over every window, ``Ha o
    CLG``). With a monophone model (or any tree where no two windows share an HMM) there is
    nothing to merge and the stage is skipped.

    Input labels: transition ids ``1 .. num_tids`` of ``transition_model`` or ``<eps>``
    (where disambiguation symbols were), so a decoder scores an arc with the pdf
    ``transition_model.tid2pdf[ilabel]`` (:func:`asrkit.decode.wfst.decode_fst`). Output
    labels: word ids of ``lang.words``. Semiring: tropical, costs ``-ln p``: n-gram,
    pronunciation and silence costs, plus ``transition_scale`` times the HMM transition costs
    and ``self_loop_scale`` times the self-loop ones. The graph is input-deterministic except
    for the ``<eps>`` arcs; sizes of every stage are logged and returned.

    Memory: the composition ``Ha o CLG`` and its determinization are the peak; each
    intermediate FST is released once the next is built and large ones are modified in place.
    With AN4's triphone tree (141 pdfs), a 20 k-word lexicon and a trigram of 1 M n-grams
    (``LG`` 3.4 M arcs, ``HCLG`` 7.1 M states, 19.6 M arcs) the process peaks at 3.4 GiB,
    1 GiB of it the ARPA model and ``G`` (``scripts/bench/hclg_memory.py``).

    Differences from ``mkgraph.sh``: determinization is in the tropical semiring (Kaldi's
    ``fstdeterminizestar --use-log=true`` sums the weights of paths with the same labels;
    the disambiguation symbols leave no such paths but for ties); ``HCLGa`` is minimized
    before its disambiguation symbols are removed (Kaldi removes them, runs
    ``fstrmepslocal``, then minimizes); self-loops are in the natural order (module
    docstring).

    Args:
        lang: the lang (:func:`asrkit.text.lexicon.make_lang`); ``L_disambig`` is built
            from it (:func:`asrkit.decode.wfst.make_lexicon_fst`).
        G: the grammar over ``lang.words`` (:func:`asrkit.decode.wfst.arpa_to_fst`, with
            ``#0`` backoff arcs).
        transition_model: e.g. :class:`asrkit.models.hmm_gmm.TransitionModel` (see
            :func:`make_h_fst` and :func:`add_self_loops` for what is used).
        context_dependency: ``N``, ``P`` and the pdfs (:class:`ContextDependencyLike`); None
            for the transition model's own (its ``ctx`` attribute, e.g. a triphone tree), or
            the monophone one (:class:`MonophoneContext`) when it has none.
        self_loop_scale: ``mkgraph.sh --self-loop-scale`` (0.1; 1.0 for alignment graphs).
        transition_scale: ``mkgraph.sh --transition-scale`` (1.0).
        sil_prob: optional-silence probability of ``L`` (``prepare_lang.sh --sil-prob``).
        remap_ilabels: merge the windows with the same HMM before composing with ``Ha``
            (see above); False composes ``Ha`` over every window with ``CLG``.
        delta: quantization delta of the determinizations and minimizations (``LG`` too)
            (:data:`asrkit.decode.wfst.DELTA`, ``2 ** -13``; values near float rounding noise,
            such as ``1e-6``, make ``det(Ha o CLG)`` blow up, see
            :func:`asrkit.decode.wfst.determinize_star`).

    Returns:
        ``(HCLG, info)`` (:class:`HclgInfo`).

    Raises:
        GraphError: the pieces do not fit (words of ``G`` and ``lang``, phones of ``lang``
            and the transition model, pdfs and tids); see the functions above.
        pynini.FstOpError: OpenFst fails (e.g. determinizing a graph without disambiguation
            symbols).
    """
    if context_dependency is None:
        context_dependency = getattr(transition_model, "ctx", None)
        if context_dependency is None:
            context_dependency = MonophoneContext(transition_model)
    N = int(context_dependency.context_width)
    P = int(context_dependency.central_position)
    _check_context(N, P)
    timer = StageTimer()
    done, sizes, seconds = timer.done, timer.sizes, timer.seconds

    sizes["G"] = fst_size(G)
    L = make_lexicon_fst(lang, sil_prob=sil_prob)
    done("L", L)
    LG = make_lg(L, G, delta=delta)
    del L
    done("LG", LG)
    phone_ids = [lang.phones[p] for p in (*lang.phone_set.silence, *lang.phone_set.nonsilence)]
    phone_disambig = disambig_ids(lang.phones)
    CLG, ilabel_info = compose_context(LG, N, P, phone_ids, phone_disambig)
    del LG
    done("CLG", CLG)
    h_info, ilabel_map = ilabel_info, None
    if remap_ilabels:
        reduced, mapping = reduce_ilabels(ilabel_info, context_dependency, transition_model)
        if len(reduced) < len(ilabel_info):
            h_info, ilabel_map = reduced, mapping
            CLG = determinize_star(_relabel_input(CLG, mapping), delta=delta, copy=False)
            CLG = minimize_encoded(CLG, delta=delta, copy=False).arcsort("ilabel")
            done("CLGr", CLG)
    Ha, disambig_tids = make_h_fst(h_info, context_dependency, transition_model,
                                   transition_scale=transition_scale)
    done("Ha", Ha)
    HCLGa = table_compose(Ha, CLG)
    del CLG, Ha
    if HCLGa.start() == pynini.NO_STATE_ID:
        raise GraphError("Ha o CLG is empty: no HMM sequence spells a sentence of CLG; "
                         "expected H and CLG built over the same ilabel table")
    HCLGa = determinize_star(HCLGa, delta=delta, copy=False)
    HCLGa = minimize_encoded(HCLGa, delta=delta, copy=False)
    HCLGa = remove_disambig(HCLGa, disambig_tids, copy=False)
    done("HCLGa", HCLGa)
    HCLG = add_self_loops(HCLGa, transition_model, self_loop_scale=self_loop_scale)
    del HCLGa
    done("HCLG", HCLG)
    logger.info("HCLG (N=%d, P=%d): %d states, %d arcs; built in %.2f s", N, P,
                *sizes["HCLG"], sum(seconds.values()))
    return HCLG, HclgInfo(ilabel_info, disambig_tids, N, P, sizes, seconds, ilabel_map,
                          h_info, timer.peak_rss_mb)
