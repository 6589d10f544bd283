"""Utterance graphs for training: the HMM states a transcript can pass through (Kaldi
``compile-train-graphs``, which composes ``H``, the context ``C`` (trivial for monophones), the
lexicon ``L`` and the transcript's linear acceptor).

With a context-dependent transition model (``tmodel.ctx`` a triphone tree) every phone
occurrence is expanded in its contexts, as ``C`` does: the occurrence gets one copy of its HMM
per (left, right) context its neighbours in the graph allow (optional silence and pronunciation
variants give a phone at a word boundary several), each copy with the tree's pdfs for that
context, linked only to the copies of its neighbours whose contexts agree; ``0`` is the context
beyond the utterance's ends. When all contexts of an occurrence give the same pdfs (silence, a
context-independent phone) one copy serves them all.

A graph is a small list of HMM-state nodes, each emitting one frame per visit, with the
transitions allowed between them: inside a phone those of its topology, between phones of a
word an edge from each exiting state of one phone to state 0 of the next, between words
optional silence (Kaldi's ``L.fst`` with ``--sil-prob``) and pronunciation variants as
parallel branches. Graph edges carry a transition id (tid, for the HMM transition probability,
which changes as the model is re-estimated) and a fixed graph log-probability (silence and
pronunciation probabilities). Self-loops are edges from a node to itself.

For every node the incoming edges are stored as a padded table, which is what a
frame-synchronous Viterbi pass vectorised over nodes needs (:mod:`.align`)::

    score_t[j] = max_p (score_{t-1}[preds[j, p]] + edge score[j, p]) + emission_t[j]

Optional silence follows Kaldi's lexicon FST: before the first word, between words and after
the last word the path goes through the optional-silence phone (e.g. ``SIL``) with probability
``sil_prob`` or skips it with ``1 - sil_prob``. A word's pronunciations are alternatives with
their lexicon probabilities (``lexiconp.txt``; 1.0 each otherwise, as Kaldi).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asrkit.models.hmm_gmm.topology import TransitionModel
from asrkit.text.lexicon import Lang

__all__ = ["GraphCompiler", "TranscriptGraphError", "UttGraph"]

logger = logging.getLogger(__name__)

_START = -1


class UtteranceError(ValueError):
    """A problem with one utterance; the message is ``<utt>: <reason>``. The base of
    :class:`TranscriptGraphError` and :class:`asrkit.models.hmm_gmm.align.AlignmentError`.

    Attributes:
        utt_id: the utterance.
        reason: the message without the utterance prefix.
    """

    def __init__(self, utt_id: str, reason: str) -> None:
        self.utt_id = utt_id
        self.reason = reason
        super().__init__(f"{utt_id}: {reason}")

    def __reduce__(self):
        return (type(self), (self.utt_id, self.reason))


class TranscriptGraphError(UtteranceError):
    """A transcript cannot be turned into a graph.

    The message has the form ``<utt>: <reason>``, e.g. ``utt1: word 'FOO' is not in the
    lexicon and the lang has no OOV word``.

    Attributes:
        utt_id: the utterance.
        reason: the message without the utterance prefix.
    """


@dataclass(frozen=True, eq=False)
class UttGraph:
    """The HMM-state graph of one utterance (CPU tensors; ``N`` nodes, ``P`` the largest
    in-degree).

    Attributes:
        utt_id: the utterance.
        words: the transcript after OOV mapping.
        pdf: ``(N,)`` pdf of each node.
        phone: ``(N,)`` ``phones.txt`` id of each node.
        phone_inst: ``(N,)`` index of the phone occurrence a node belongs to (nodes of one
            occurrence of a phone share it; used for the phone segmentation).
        word_inst: ``(N,)`` position in :attr:`words` of the node's word, -1 for optional
            silence.
        preds: ``(N, P)`` source node of each incoming edge (padding 0).
        pred_tid: ``(N, P)`` tid of each incoming edge (padding 0).
        pred_logp: ``(N, P)`` graph log-probability of each incoming edge (padding
            ``-inf``), float64.
        start_nodes: ``(Ns,)`` nodes a path may start in; ``start_logp`` ``(Ns,)`` their
            graph log-probabilities.
        final_nodes: ``(Nf,)`` nodes a path may end in; ``final_tid`` ``(Nf,)`` the exit
            tid taken on the last frame; ``final_logp`` ``(Nf,)`` graph log-probabilities.
        equal_path: nodes of the path :func:`.align.align_equal` uses, one visit each
            (first pronunciations, optional silence at the two ends only).
        min_frames: fewest frames any path needs.
    """

    utt_id: str
    words: tuple[str, ...]
    pdf: torch.Tensor
    phone: torch.Tensor
    phone_inst: torch.Tensor
    word_inst: torch.Tensor
    preds: torch.Tensor
    pred_tid: torch.Tensor
    pred_logp: torch.Tensor
    start_nodes: torch.Tensor
    start_logp: torch.Tensor
    final_nodes: torch.Tensor
    final_tid: torch.Tensor
    final_logp: torch.Tensor
    equal_path: torch.Tensor
    min_frames: int

    @property
    def num_nodes(self) -> int:
        """``N``."""
        return self.pdf.shape[0]

    def edge_tid(self, src: int, dst: int) -> int:
        """The tid of the edge ``src -> dst``.

        Raises:
            KeyError: no such edge.
        """
        row = self.preds[dst]
        hit = ((row == src) & (self.pred_logp[dst] > float("-inf"))).nonzero()
        if hit.numel() == 0:
            raise KeyError(f"{self.utt_id}: no edge from node {src} to node {dst}")
        return int(self.pred_tid[dst, hit[0, 0]])


class GraphCompiler:
    """Turns transcripts into :class:`UttGraph` objects (Kaldi ``TrainingGraphCompiler``).

    Args:
        lang: from :func:`asrkit.text.lexicon.make_lang`; its lexicon (position-dependent
            phones when the lang has them), optional-silence phone and OOV word are used.
        tmodel: the transition model built from ``lang.phone_set`` (monophone or over a tree).
        sil_prob: probability of optional silence at each word boundary and at both ends (Kaldi
            ``prepare_lang.sh --sil-prob``, 0.5); 0 for none, 1 for always.
        all_prons: allow every pronunciation of a word (else only the first).

    Raises:
        ValueError: ``sil_prob`` outside ``[0, 1]``; a lexicon phone the transition model does
            not know.
    """

    def __init__(self, lang: Lang, tmodel: TransitionModel, *, sil_prob: float = 0.5,
                 all_prons: bool = True) -> None:
        if not 0.0 <= sil_prob <= 1.0:
            raise ValueError(f"sil_prob must be in [0, 1], got {sil_prob}")
        self.tmodel = tmodel
        self.sil_prob = sil_prob
        self.oov_word = lang.oov_word
        sil = lang.phone_set.optional_silence
        if sil not in tmodel.phones:
            raise ValueError(f"optional silence {sil!r} is not a phone of the transition model")
        self.sil_phone = tmodel.phones[sil]
        self._prons: dict[str, list[tuple[float, tuple[int, ...]]]] = {}
        for word, prob, pron in lang.lexicon.prob_entries():
            prons = self._prons.setdefault(word, [])
            if prons and not all_prons:
                continue
            try:
                ids = tuple(tmodel.phones[p] for p in pron)
            except KeyError as e:
                raise ValueError(f"phone {e.args[0]!r} of word {word!r} is not a phone of the "
                                 "transition model") from None
            prons.append((math.log(prob), ids))

    def compile(self, utt_id: str, transcript: str | Sequence[str]) -> UttGraph:
        """The graph of one utterance.

        Args:
            utt_id: the utterance id (kept in the graph and in error messages).
            transcript: the words, as a string (split on whitespace) or a sequence. Words not
                in the lexicon become the lang's OOV word (Kaldi ``sym2int.pl --map-oov``).

        Raises:
            TranscriptGraphError: a word is not in the lexicon and the lang has no OOV word; the
                transcript is empty and ``sil_prob`` is 0 (no path has any frame).
        """
        words = transcript.split() if isinstance(transcript, str) else list(transcript)
        mapped = []
        for w in words:
            if w not in self._prons:
                if self.oov_word is None or self.oov_word not in self._prons:
                    raise TranscriptGraphError(utt_id, f"word {w!r} is not in the lexicon and the lang has "
                                             "no OOV word")
                logger.debug("%s: mapping OOV word %r to %r", utt_id, w, self.oov_word)
                w = self.oov_word
            mapped.append(w)
        b = _Builder(self.tmodel)
        lsil = math.log(self.sil_prob) if self.sil_prob > 0 else None
        lskip = math.log1p(-self.sil_prob) if self.sil_prob < 1 else None

        def junction(at_end: bool) -> list[tuple[float, tuple[int, ...], int]]:
            """Optional-silence alternatives at a word boundary (or an end)."""
            alts = []
            if lsil is not None:
                alts.append((lsil, (self.sil_phone,), -1))
            if lskip is not None:
                alts.append((lskip, (), -1))
            # The equal path takes silence at the two ends, skips it between words.
            if not at_end and lskip is not None:
                alts.reverse()
            return alts

        items = [junction(True)]
        for k, w in enumerate(mapped):
            items.append([(lp, pron, k) for lp, pron in self._prons[w]])
            items.append(junction(k == len(mapped) - 1))
        return b.build(utt_id, tuple(mapped), items)


class _Builder:
    """Builds a graph in two passes. ``build`` chains a sequence of alternative sets into a
    lattice of phone occurrences (each item is a list of ``(log prob, phone ids, word
    position)`` alternatives; an empty phone tuple skips the item; the first alternative of each
    item is on the equal path). ``_expand`` then gives every occurrence one copy of its phone's
    HMM per context it can be in (Kaldi's ``C`` composed with ``H``): for a monophone model one
    copy; for a context-dependent model one per (left context, right context) pair of the
    lattice, or a single copy when the pdfs of all pairs agree (silence, context-independent
    phones) and the context reaches no further than the neighbours."""

    def __init__(self, tmodel: TransitionModel) -> None:
        self.tmodel = tmodel
        self.occ_phone: list[int] = []
        self.occ_word: list[int] = []
        self.arcs: list[tuple[int, int, float]] = []  # (source occurrence or _START, dest, logp)

    def _occ(self, pid: int, winst: int) -> int:
        self.occ_phone.append(pid)
        self.occ_word.append(winst)
        return len(self.occ_phone) - 1

    def build(self, utt_id: str, words: tuple[str, ...],
              items: list[list[tuple[float, tuple[int, ...], int]]]) -> UttGraph:
        """Chain the items (each a set of alternatives) into one graph."""
        frontier: list[tuple[int, float]] = [(_START, 0.0)]
        equal: list[int] = []
        for item in items:
            new: list[tuple[int, float]] = []
            for a, (alt_lp, phones, winst) in enumerate(item):
                if not phones:
                    new += [(s, lp + alt_lp) for s, lp in frontier]
                    continue
                prev = _START
                for i, pid in enumerate(phones):
                    o = self._occ(pid, winst)
                    if i == 0:
                        self.arcs += [(s, o, lp + alt_lp) for s, lp in frontier]
                    else:
                        self.arcs.append((prev, o, 0.0))
                    prev = o
                    if a == 0:
                        equal.append(o)
                new.append((prev, 0.0))
            frontier = new
        finals = [(o, lp) for o, lp in frontier if o != _START]
        if not finals or not self.occ_phone:
            raise TranscriptGraphError(utt_id, "empty transcript and no optional silence: the graph has "
                                     "no path")
        return self._expand(utt_id, words, finals, equal)

    def _expand(self, utt_id: str, words: tuple[str, ...], finals: list[tuple[int, float]],
                equal_occs: list[int]) -> UttGraph:
        """HMM copies of the occurrences in their contexts, and the edges between them."""
        tm = self.tmodel
        nl = tm.ctx.central_position
        nr = tm.ctx.context_width - 1 - nl
        n_occ = len(self.occ_phone)
        ph = self.occ_phone
        zero_l, zero_r = (0,) * nl, (0,) * nr
        is_final = {o for o, _ in finals}
        # Contexts each occurrence can be in: left ones forwards (occurrences are numbered in
        # topological order), right ones backwards.
        left: list[set[tuple[int, ...]]] = [set() for _ in range(n_occ)]
        right: list[set[tuple[int, ...]]] = [set() for _ in range(n_occ)]
        for src, dst, _ in self.arcs:
            if src == _START:
                left[dst].add(zero_l)
        succ: list[list[int]] = [[] for _ in range(n_occ)]
        for src, dst, _ in self.arcs:
            if src != _START:
                succ[src].append(dst)
        for o in range(n_occ):
            for d in succ[o]:
                left[d].update((lc + (ph[o],))[1:] for lc in left[o])
        for o in range(n_occ - 1, -1, -1):
            if o in is_final:
                right[o].add(zero_r)
            for d in succ[o]:
                right[o].update(((ph[d],) + rc)[:nr] for rc in right[d])
        mergeable = max(nl, nr) <= 1
        # Copies: (entry node, exits [(node, tid)], left set, right set).
        pdf: list[int] = []
        phone: list[int] = []
        pinst: list[int] = []
        winst: list[int] = []
        inc: list[list[tuple[int, int, float]]] = []
        copies: list[list[tuple[int, list[tuple[int, int]], set, set]]] = []
        lin_of: dict[tuple[int, int], list[int]] = {}
        ncopy = 0
        for o in range(n_occ):
            pairs = [(lc, rc) for lc in sorted(left[o]) for rc in sorted(right[o])]
            hmms = [tm.context_hmm(lc + (ph[o],) + rc) for lc, rc in pairs]
            if mergeable and len({h.pdfs for h in hmms}) == 1:
                groups = [(hmms[0], set(left[o]), set(right[o]))]
            else:
                groups = [(h, {lc}, {rc}) for h, (lc, rc) in zip(hmms, pairs)]
            topo = tm.topology.for_phone(tm.phone_base[tm.phone_names[ph[o]]]
                                         in tm.silence_bases)
            occ_copies = []
            for hmm, lset, rset in groups:
                base = len(pdf)
                n = hmm.num_states
                for st in range(n):
                    pdf.append(hmm.pdfs[st])
                    phone.append(ph[o])
                    pinst.append(ncopy)
                    winst.append(self.occ_word[o])
                    inc.append([])
                exits = []
                for st, row in enumerate(hmm.transitions):
                    for d, tid in row:
                        if d < n:
                            inc[base + d].append((base + st, tid, 0.0))
                        else:
                            exits.append((base + st, tid))
                lin_of[(o, len(occ_copies))] = [base + st for st in topo.linear_path]
                occ_copies.append((base, exits, lset, rset))
                ncopy += 1
            copies.append(occ_copies)
        # Edges between copies whose contexts agree with the arc's two phones.
        starts: list[tuple[int, float]] = []
        for src, dst, lp in self.arcs:
            if src == _START:
                starts += [(entry, lp) for entry, _, lset, _ in copies[dst] if zero_l in lset]
                continue
            for _, exits, ls, rs in copies[src]:
                shifted = {(lc + (ph[src],))[1:] for lc in ls}
                for entry, _, ld, rd in copies[dst]:
                    if shifted & ld and {((ph[dst],) + rc)[:nr] for rc in rd} & rs:
                        inc[entry] += [(x, tid, lp) for x, tid in exits]
        final_rows: list[tuple[int, int, float]] = []
        for o, lp in finals:
            for _, exits, _, rs in copies[o]:
                if zero_r in rs:
                    final_rows += [(x, tid, lp) for x, tid in exits]
        equal: list[int] = []
        seq = [ph[o] for o in equal_occs]
        padded = [0] * nl + seq + [0] * nr
        for i, o in enumerate(equal_occs):
            lc, rc = tuple(padded[i:i + nl]), tuple(padded[i + nl + 1:i + nl + 1 + nr])
            k = next(k for k, (_, _, ls, rs) in enumerate(copies[o]) if lc in ls and rc in rs)
            equal += lin_of[(o, k)]
        return self._finish(utt_id, words, pdf, phone, pinst, winst, inc, starts, final_rows,
                            equal)

    def _finish(self, utt_id: str, words: tuple[str, ...], pdf: list[int], phone: list[int],
                pinst: list[int], winst: list[int], inc: list[list[tuple[int, int, float]]],
                starts: list[tuple[int, float]], finals: list[tuple[int, int, float]],
                equal: list[int]) -> UttGraph:
        """Pack the node lists into an :class:`UttGraph`."""
        n_nodes = len(pdf)
        width = max(1, max(len(e) for e in inc))
        preds = torch.zeros(n_nodes, width, dtype=torch.int64)
        ptid = torch.zeros(n_nodes, width, dtype=torch.int64)
        plogp = torch.full((n_nodes, width), float("-inf"), dtype=torch.float64)
        for j, edges in enumerate(inc):
            for p, (src, tid, lp) in enumerate(edges):
                preds[j, p] = src
                ptid[j, p] = tid
                plogp[j, p] = lp
        min_frames = _min_frames(inc, [s for s, _ in starts], {n for n, _, _ in finals})

        def long(xs: list[int]) -> torch.Tensor:
            """An int64 tensor."""
            return torch.tensor(xs, dtype=torch.int64)

        return UttGraph(
            utt_id=utt_id, words=words, pdf=long(pdf), phone=long(phone),
            phone_inst=long(pinst), word_inst=long(winst), preds=preds,
            pred_tid=ptid, pred_logp=plogp, start_nodes=long([s for s, _ in starts]),
            start_logp=torch.tensor([lp for _, lp in starts], dtype=torch.float64),
            final_nodes=long([n for n, _, _ in finals]), final_tid=long([t for _, t, _ in finals]),
            final_logp=torch.tensor([lp for _, _, lp in finals], dtype=torch.float64),
            equal_path=long(equal), min_frames=min_frames)


def _min_frames(inc: list[list[tuple[int, int, float]]], starts: list[int],
                finals: set[int]) -> int:
    """Fewest frames of a path from a start node to a final node (breadth first)."""
    succ: list[list[int]] = [[] for _ in inc]
    for j, edges in enumerate(inc):
        for src, _, _ in edges:
            succ[src].append(j)
    dist = dict.fromkeys(starts, 1)
    queue = list(dict.fromkeys(starts))
    for s in queue:
        if s in finals:
            return dist[s]
        for d in succ[s]:
            if d not in dist:
                dist[d] = dist[s] + 1
                queue.append(d)
    raise ValueError("the graph has no path from a start node to a final node")
