"""Phonetic context dependency and decision-tree state tying (Kaldi ``tree/`` with
``acc-tree-stats``, ``cluster-phones``, ``compile-questions`` and ``build-tree``; Young, Odell and
Woodland, *Tree-based state tying for high accuracy acoustic modelling*, HLT 1994).

Terms, as in Kaldi:

* A **context** is a window of ``N`` phones (the context width; 3 for triphones) with the
  modelled phone at the central position ``P`` (1 for triphones): ``(left, centre, right)``.
  Phones are ``phones.txt`` ids; the tree sees only their base phones (``AA_B`` and ``AA_E`` are
  both ``AA``, :attr:`asrkit.text.lexicon.PhoneSet.to_base`), and ``0`` stands for "no phone",
  beyond an utterance boundary (Kaldi's ``ContextDependency::Compute``). Inside this module a
  phone is a **base value**: ``1 + `` its index in the base phones, 0 for no phone.
* A **key** is what a question asks about: a context position ``0 .. N-1`` or ``-1`` for the
  pdf class (the HMM state; Kaldi's ``kPdfClass``). A **question** is a set of values: base
  phones for positions, pdf classes ``{0 .. i}`` for key ``-1`` (``compile-questions``).
* The **tree** has one root per base phone (Kaldi's default ``roots.txt``, "shared split": all
  states of a phone share the root and may be split apart by pdf-class questions). Each inner
  node asks one question, each leaf names a pdf. Leaves merged by the clustering after the
  splitting (``build-tree --cluster-thresh``) share a pdf.

Building a tree, as ``steps/train_deltas.sh`` does:

1. :func:`accumulate_tree_stats` (``acc-tree-stats``): from alignments, one single-Gaussian
   statistic (count, sum, sum of squares) per distinct ``(context, pdf class)``. Silence phones
   are context-independent (``--ci-phones``): their contexts are recorded as 0.
2. :func:`cluster_phones` (``cluster-phones``): questions by top-down binary clustering of the
   phones' Gaussian statistics, silence and non-silence phones apart, plus every singleton and
   the silence and non-silence sets (Kaldi's ``extra_questions.txt``).
3. :func:`build_tree` (``build-tree``): greedy likelihood-based splitting of the leaf with the
   largest gain ``L(yes) + L(no) - L(parent)`` (:func:`gauss_loglik`) until ``num_leaves`` or the
   gain falls below ``min_gain``, then bottom-up merging of leaves of the same root whose merge
   loses less than ``cluster_thresh``.

:class:`ContextDependency` is the result (Kaldi's ``tree`` file): ``pdf_id(phones, pdf_class)``
for any context, saved as plain tensors (:meth:`ContextDependency.to_dict`).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from asrkit.models.hmm_gmm.hmm_topology import Topology
from asrkit.text.lexicon import PhoneSet

if TYPE_CHECKING:
    from asrkit.models.hmm_gmm.align import Alignment
    from asrkit.models.hmm_gmm.topology import TransitionModel

__all__ = ["PDF_CLASS", "ContextDependency", "TreeBuildInfo", "TreeStats",
           "accumulate_tree_stats", "build_tree", "cluster_phones", "frame_contexts",
           "gauss_loglik"]

logger = logging.getLogger(__name__)

PDF_CLASS = -1
"""The key of questions about the pdf class (HMM state), Kaldi's ``kPdfClass``."""
_LEAF = -2
_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------ context dependency

class ContextDependency:
    """Maps a phone in context and a pdf class to a pdf (Kaldi ``ContextDependency``).

    The tree is stored as flat CPU tensors over ``K`` nodes; build one with :func:`build_tree`
    or :meth:`monophone`, save it with :meth:`to_dict`.

    Args:
        context_width: ``N``, phones in a context (1 monophone, 3 triphone).
        central_position: ``P``, the position of the modelled phone (0 monophone, 1 triphone).
        base_phones: the base phones; base value ``v`` is ``base_phones[v - 1]``.
        phone_to_base: ``(num phone ids,)`` base value of each ``phones.txt`` id: 0 for
            ``<eps>`` (no phone), -1 for ids that are not phones (disambiguation symbols).
        num_pdf_classes: pdf classes (HMM states) of each base phone, in base order.
        roots: ``(B + 1,)`` root node of each base value (entry 0 unused, -1).
        node_key: ``(K,)`` position ``0 .. N-1`` asked about, ``-1`` for the pdf class,
            ``-2`` for a leaf.
        node_set: ``(K, W)`` bool, the question of each inner node as a membership row over
            values (base values for positions, pdf classes for key -1).
        node_yes: ``(K,)`` child when the answer is yes (-1 for leaves).
        node_no: ``(K,)`` child when the answer is no (-1 for leaves).
        node_pdf: ``(K,)`` pdf of each leaf (-1 for inner nodes).

    Raises:
        ValueError: inconsistent sizes, a child or root out of range, a cycle, a leaf without a
            pdf, pdf ids that are not exactly ``0 .. num_pdfs-1``, or a question set too narrow
            for the values it must test.
    """

    def __init__(self, context_width: int, central_position: int, base_phones: Sequence[str],
                 phone_to_base: torch.Tensor | Sequence[int],
                 num_pdf_classes: Sequence[int], roots: torch.Tensor | Sequence[int],
                 node_key: torch.Tensor | Sequence[int], node_set: torch.Tensor,
                 node_yes: torch.Tensor | Sequence[int], node_no: torch.Tensor | Sequence[int],
                 node_pdf: torch.Tensor | Sequence[int]) -> None:
        n, p = int(context_width), int(central_position)
        if n < 1 or not 0 <= p < n:
            raise ValueError(f"need context_width >= 1 and 0 <= central_position < "
                             f"context_width, got {n}, {p}")
        self.context_width = n
        self.central_position = p
        self.base_phones = tuple(base_phones)
        nb = len(self.base_phones)

        def long(x: torch.Tensor | Sequence[int]) -> torch.Tensor:
            return torch.as_tensor(x, dtype=torch.int64).detach().cpu().clone().reshape(-1)

        self.phone_to_base = long(phone_to_base)
        self._num_classes = tuple(int(c) for c in num_pdf_classes)
        self.roots = long(roots)
        self.node_key = long(node_key)
        self.node_yes = long(node_yes)
        self.node_no = long(node_no)
        self.node_pdf = long(node_pdf)
        self.node_set = torch.as_tensor(node_set, dtype=torch.bool).detach().cpu().clone()
        k = self.node_key.numel()
        if len(self._num_classes) != nb or min(self._num_classes, default=1) < 1:
            raise ValueError(f"num_pdf_classes needs one positive entry per base phone ({nb})")
        if self.roots.shape != (nb + 1,):
            raise ValueError(f"roots has {self.roots.numel()} entries, expected {nb + 1}")
        if (self.node_yes.numel(), self.node_no.numel(), self.node_pdf.numel()) != (k, k, k) \
                or self.node_set.dim() != 2 or self.node_set.shape[0] != k:
            raise ValueError("node_key, node_set, node_yes, node_no and node_pdf must all have "
                             f"one row per node ({k})")
        if self.phone_to_base.numel() and (int(self.phone_to_base.min()) < -1
                                           or int(self.phone_to_base.max()) > nb):
            raise ValueError(f"phone_to_base values must be in -1..{nb}")
        width = max(nb + 1, max(self._num_classes, default=1))
        if self.node_set.shape[1] < width:
            raise ValueError(f"node_set has {self.node_set.shape[1]} columns, expected at least "
                             f"{width}")
        if bool(((self.node_key < _LEAF) | (self.node_key >= n)).any()):
            raise ValueError(f"node keys must be -2 (leaf), -1 (pdf class) or 0..{n - 1}")
        leaf = self.node_key == _LEAF
        inner = ~leaf
        for name, child in (("yes", self.node_yes), ("no", self.node_no)):
            if bool(((child[inner] < 0) | (child[inner] >= k)).any()):
                raise ValueError(f"an inner node has a {name} child outside 0..{k - 1}")
        if bool((self.node_pdf[leaf] < 0).any()):
            raise ValueError("a leaf has no pdf (node_pdf < 0)")
        if bool(((self.roots[1:] < 0) | (self.roots[1:] >= k)).any()):
            raise ValueError(f"a base phone's root is outside 0..{k - 1}")
        used = self.node_pdf[leaf].unique()
        self.num_pdfs = int(used.numel())
        if not torch.equal(used, torch.arange(self.num_pdfs)):
            raise ValueError("leaf pdf ids must be exactly 0 .. num_pdfs-1")
        # Python copies for scalar look-ups, and the depth (checks for cycles).
        self._key = self.node_key.tolist()
        self._yes = self.node_yes.tolist()
        self._no = self.node_no.tolist()
        self._pdf = self.node_pdf.tolist()
        self._set = self.node_set.tolist()
        self._roots = self.roots.tolist()
        self._p2b = self.phone_to_base.tolist()
        self._depth = 0
        for v in range(1, nb + 1):
            stack = [(self._roots[v], 0)]
            while stack:
                node, d = stack.pop()
                if d > k:
                    raise ValueError(f"the tree of base phone {self.base_phones[v - 1]!r} has a "
                                     "cycle")
                self._depth = max(self._depth, d)
                if self._key[node] != _LEAF:
                    stack += [(self._yes[node], d + 1), (self._no[node], d + 1)]
        self._info: list[tuple[int, tuple[int, ...]]] | None = None

    # ------------------------------------------------------------------ look-ups
    def _base_value(self, phone: int, *, central: bool) -> int:
        if not 0 <= phone < len(self._p2b) or self._p2b[phone] < 0:
            raise ValueError(f"phone id {phone} is not a phone of this context dependency "
                             "(expected a phones.txt id of a silence or non-silence phone, or "
                             "0 for no phone)")
        v = self._p2b[phone]
        if central and v == 0:
            raise ValueError("the central phone of a context cannot be 0 (no phone)")
        return v

    def num_pdf_classes(self, phone: int) -> int:
        """Number of pdf classes (HMM states) of the phone with ``phones.txt`` id ``phone``.

        Raises:
            ValueError: not a phone.
        """
        return self._num_classes[self._base_value(phone, central=True) - 1]

    def pdf_id(self, phones: Sequence[int], pdf_class: int) -> int:
        """The pdf of a phone in context (Kaldi ``ContextDependency::Compute``).

        Args:
            phones: ``N`` ``phones.txt`` ids, the modelled phone at :attr:`central_position`;
                position-dependent ids are allowed (mapped to base phones), 0 where there is no
                phone (utterance boundary).
            pdf_class: the HMM state's pdf class, ``0 .. num_pdf_classes - 1``.

        Raises:
            ValueError: not ``N`` phones, an id that is not a phone, a central 0, or a pdf class
                out of range.
        """
        if len(phones) != self.context_width:
            raise ValueError(f"expected {self.context_width} phones, got {len(phones)}: "
                             f"{tuple(phones)}")
        vals = [self._base_value(int(ph), central=i == self.central_position)
                for i, ph in enumerate(phones)]
        c = int(pdf_class)
        nc = self._num_classes[vals[self.central_position] - 1]
        if not 0 <= c < nc:
            raise ValueError(f"pdf class {c} is out of range for phone {phones[self.central_position]}"
                             f" ({nc} pdf classes)")
        node = self._roots[vals[self.central_position]]
        while self._key[node] != _LEAF:
            key = self._key[node]
            v = c if key == PDF_CLASS else vals[key]
            node = self._yes[node] if self._set[node][v] else self._no[node]
        return self._pdf[node]

    def pdf_ids(self, phones: torch.Tensor, pdf_classes: torch.Tensor) -> torch.Tensor:
        """Vectorised :meth:`pdf_id`.

        Args:
            phones: ``(K, N)`` ``phones.txt`` ids (0 for no phone).
            pdf_classes: ``(K,)`` pdf classes.

        Returns:
            ``(K,)`` int64 pdf ids (CPU).

        Raises:
            ValueError: wrong shapes, ids that are not phones, a central 0, a pdf class out of
                range.
        """
        ph = torch.as_tensor(phones, dtype=torch.int64).cpu()
        cl = torch.as_tensor(pdf_classes, dtype=torch.int64).cpu().reshape(-1)
        if ph.dim() != 2 or ph.shape[1] != self.context_width or ph.shape[0] != cl.numel():
            raise ValueError(f"expected phones (K, {self.context_width}) and pdf_classes (K,), "
                             f"got {tuple(ph.shape)} and {tuple(cl.shape)}")
        if ph.numel() and (int(ph.min()) < 0 or int(ph.max()) >= self.phone_to_base.numel()):
            raise ValueError("a phone id is outside the phone table")
        vals = self.phone_to_base[ph]
        if bool((vals < 0).any()):
            raise ValueError("a phone id is not a silence or non-silence phone")
        return self.pdf_ids_of_values(vals, cl)

    def pdf_ids_of_values(self, values: torch.Tensor, pdf_classes: torch.Tensor) -> torch.Tensor:
        """:meth:`pdf_ids` on base values (``(K, N)``, 0 for no phone) instead of phone ids.

        Raises:
            ValueError: wrong shapes, a value out of range, a central 0 or a pdf class out of
                range.
        """
        vals = torch.as_tensor(values, dtype=torch.int64).cpu()
        cl = torch.as_tensor(pdf_classes, dtype=torch.int64).cpu().reshape(-1)
        if vals.dim() != 2 or vals.shape[1] != self.context_width or vals.shape[0] != cl.numel():
            raise ValueError(f"expected values (K, {self.context_width}) and pdf_classes (K,), "
                             f"got {tuple(vals.shape)} and {tuple(cl.shape)}")
        if vals.numel() == 0:
            return torch.zeros(0, dtype=torch.int64)
        if int(vals.min()) < 0 or int(vals.max()) > len(self.base_phones):
            raise ValueError(f"base values must be in 0..{len(self.base_phones)}")
        centre = vals[:, self.central_position]
        if bool((centre <= 0).any()):
            raise ValueError("the central phone of a context cannot be 0 (no phone)")
        nc = torch.tensor(self._num_classes)[centre - 1]
        if bool(((cl < 0) | (cl >= nc)).any()):
            raise ValueError("a pdf class is out of range for its phone")
        cur = self.roots[centre]
        rows = torch.arange(vals.shape[0])
        for _ in range(self._depth):
            key = self.node_key[cur]
            inner = key != _LEAF
            if not bool(inner.any()):
                break
            v = torch.where(key == PDF_CLASS, cl, vals[rows, key.clamp_min(0)])
            nxt = torch.where(self.node_set[cur, v], self.node_yes[cur], self.node_no[cur])
            cur = torch.where(inner, nxt, cur)
        return self.node_pdf[cur]

    def _reachable(self, value: int, pdf_class: int) -> list[int]:
        """Pdfs reachable from the root of base value ``value`` with a fixed pdf class and
        central phone, every other position taking any value."""
        out: set[int] = set()
        stack = [self._roots[value]]
        while stack:
            node = stack.pop()
            key = self._key[node]
            if key == _LEAF:
                out.add(self._pdf[node])
            elif key == PDF_CLASS or key == self.central_position:
                v = pdf_class if key == PDF_CLASS else value
                stack.append(self._yes[node] if self._set[node][v] else self._no[node])
            else:
                stack += [self._yes[node], self._no[node]]
        return sorted(out)

    def pdfs_of(self, phone: int, pdf_class: int) -> tuple[int, ...]:
        """The pdfs a phone's HMM state may use in some context, ascending (what Kaldi's
        ``GetPdfInfo`` gives the transition model).

        Raises:
            ValueError: not a phone, or a pdf class out of range.
        """
        v = self._base_value(int(phone), central=True)
        if not 0 <= pdf_class < self._num_classes[v - 1]:
            raise ValueError(f"pdf class {pdf_class} is out of range for phone {phone}")
        return tuple(self._reachable(v, pdf_class))

    def pdf_info(self) -> list[tuple[str, tuple[int, ...]]]:
        """Per pdf: its base phone and the pdf classes that may use it, e.g. ``("B", (1,))``."""
        if self._info is None:
            classes: list[set[int]] = [set() for _ in range(self.num_pdfs)]
            base = [0] * self.num_pdfs
            for v in range(len(self.base_phones), 0, -1):
                for c in range(self._num_classes[v - 1]):
                    for pdf in self._reachable(v, c):
                        classes[pdf].add(c)
                        base[pdf] = v
            self._info = [(b, tuple(sorted(c))) for b, c in zip(base, classes)]
        return [(self.base_phones[b - 1] if b else "", c) for b, c in self._info]

    def questions_of(self, base_phone: str) -> list[tuple[int, frozenset]]:
        """The questions of a base phone's tree, top-down (breadth first): ``(key, set)`` with
        base phone names for a position key, pdf classes for key :data:`PDF_CLASS`.

        Raises:
            KeyError: not a base phone.
        """
        try:
            v = self.base_phones.index(base_phone) + 1
        except ValueError:
            raise KeyError(f"{base_phone!r} is not a base phone") from None
        out: list[tuple[int, frozenset]] = []
        queue = [self._roots[v]]
        for node in queue:
            key = self._key[node]
            if key == _LEAF:
                continue
            members = [i for i, m in enumerate(self._set[node]) if m]
            if key == PDF_CLASS:
                out.append((key, frozenset(members)))
            else:
                out.append((key, frozenset(self.base_phones[i - 1] for i in members if i > 0)))
            queue += [self._yes[node], self._no[node]]
        return out

    # ------------------------------------------------------------------ construction
    @classmethod
    def monophone(cls, source: TransitionModel | PhoneSet, topology: Topology | None = None
                  ) -> ContextDependency:
        """The context-independent tree of a monophone system (Kaldi
        ``MonophoneContextDependencyShared`` with the position variants of a phone shared):
        ``N = 1``, ``P = 0``, pdfs numbered base phone by base phone in
        :attr:`PhoneSet.base_phones` order, state by state, exactly as
        :class:`.topology.TransitionModel` numbers monophone pdfs.

        Args:
            source: a transition model (its phones, base phones and topology are used) or a
                lang's phone set.
            topology: with a phone set, the HMM topologies (None for Kaldi's default); ignored
                for a transition model.

        Raises:
            TypeError: ``source`` is neither.
        """
        if isinstance(source, PhoneSet):
            topology = topology or Topology()
            emitting = (*source.silence, *source.nonsilence)
            phones = {p: source.phones[p] for p in emitting}
            phone_base = {p: source.to_base[p] for p in emitting}
            base_phones = source.base_phones
            silence = {source.to_base[p] for p in source.silence}
        elif hasattr(source, "phone_base") and hasattr(source, "topology"):
            phones, phone_base = source.phones, source.phone_base
            base_phones, silence = source.base_phones, source.silence_bases
            topology = source.topology
        else:
            raise TypeError(f"expected a TransitionModel or a PhoneSet, got "
                            f"{type(source).__name__}")
        num_classes = [topology.for_phone(b in silence).num_states for b in base_phones]
        width = max(len(base_phones) + 1, max(num_classes))
        keys, sets, yes, no, pdfs = [], [], [], [], []
        roots = [-1]
        offset = 0
        for nc in num_classes:
            roots.append(len(keys))
            # A chain: class in {0}? -> leaf 0; else class in {0, 1}? -> leaf 1; ...
            for c in range(nc - 1):
                here = len(keys)
                keys += [PDF_CLASS, _LEAF]
                sets += [[i <= c for i in range(width)], [False] * width]
                last = c == nc - 2
                yes += [here + 1, -1]
                no += [here + 2, -1]
                pdfs += [-1, offset + c]
                if last:
                    keys.append(_LEAF)
                    sets.append([False] * width)
                    yes.append(-1)
                    no.append(-1)
                    pdfs.append(offset + c + 1)
            if nc == 1:
                keys.append(_LEAF)
                sets.append([False] * width)
                yes.append(-1)
                no.append(-1)
                pdfs.append(offset)
            offset += nc
        return cls(1, 0, base_phones, _phone_table(phones, phone_base, base_phones), num_classes,
                   roots, keys, torch.tensor(sets, dtype=torch.bool).reshape(-1, width), yes, no,
                   pdfs)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict:
        """Plain data and tensors for :func:`torch.save` (loadable with ``weights_only``)."""
        return {"context_width": self.context_width, "central_position": self.central_position,
                "base_phones": list(self.base_phones),
                "phone_to_base": self.phone_to_base.clone(),
                "num_pdf_classes": list(self._num_classes), "roots": self.roots.clone(),
                "node_key": self.node_key.clone(), "node_set": self.node_set.clone(),
                "node_yes": self.node_yes.clone(), "node_no": self.node_no.clone(),
                "node_pdf": self.node_pdf.clone()}

    @classmethod
    def from_dict(cls, d: Mapping) -> ContextDependency:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: a missing field; ValueError: an inconsistent tree.
        """
        return cls(d["context_width"], d["central_position"], d["base_phones"],
                   d["phone_to_base"], d["num_pdf_classes"], d["roots"], d["node_key"],
                   d["node_set"], d["node_yes"], d["node_no"], d["node_pdf"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContextDependency):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                   for k in a)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"ContextDependency(N={self.context_width}, P={self.central_position}, "
                f"{self.num_pdfs} pdfs, {int((self.node_key == _LEAF).sum())} leaves, "
                f"{len(self.base_phones)} base phones)")


def _phone_table(phones: Mapping[str, int], phone_base: Mapping[str, str],
                 base_phones: Sequence[str]) -> list[int]:
    """``phones.txt`` id -> base value (0 for id 0, -1 for ids that are not phones)."""
    index = {b: i + 1 for i, b in enumerate(base_phones)}
    size = max(phones.values(), default=0) + 1
    table = [-1] * size
    table[0] = 0
    for p, i in phones.items():
        table[i] = index[phone_base[p]]
    return table


# --------------------------------------------------------------------------- statistics

def gauss_loglik(count: torch.Tensor, sum_x: torch.Tensor, sum_x2: torch.Tensor,
                 var_floor: float = 0.01) -> torch.Tensor:
    """Log-likelihood of data under the maximum-likelihood diagonal Gaussian of its statistics
    (the objective of Kaldi's ``GaussClusterable``, exact also where the variance is floored).

    With ``mean = sum_x / n`` and ``var = max(sum_x2 / n - mean^2, var_floor)``:
    ``-0.5 * (n F log 2 pi + n sum log var + sum (sum_x2 - 2 mean sum_x + n mean^2) / var)``.

    Args:
        count: ``(...)`` frame counts ``n``.
        sum_x: ``(..., F)`` sums of frames.
        sum_x2: ``(..., F)`` sums of squared frames.
        var_floor: variance floor (Kaldi ``acc-tree-stats --var-floor``, 0.01).

    Returns:
        ``(...)`` float64 natural-log likelihoods, 0 where ``count <= 0``.
    """
    n = count.double()
    safe = n.clamp_min(1e-300)[..., None]
    mean = sum_x.double() / safe
    var = (sum_x2.double() / safe - mean * mean).clamp_min(0.0)
    floored = var.clamp_min(var_floor)
    f = sum_x.shape[-1]
    ll = -0.5 * n * (f * _LOG_2PI + floored.log().sum(-1) + (var / floored).sum(-1))
    return torch.where(n > 0, ll, torch.zeros_like(ll))


@dataclass(frozen=True, eq=False)
class TreeStats:
    """Tree-building statistics (Kaldi's ``treeacc``): one single-Gaussian statistic per
    distinct ``(context, pdf class)`` seen in the alignments (``E`` entries, CPU float64).

    Attributes:
        context_width: ``N``.
        central_position: ``P``.
        base_phones: the base phones (base value ``v`` is ``base_phones[v - 1]``).
        silence_bases: the silence base phones (kept apart when clustering questions).
        phone_to_base: ``phones.txt`` id -> base value table of the transition model.
        num_pdf_classes: pdf classes of each base phone.
        contexts: ``(E, N)`` base values of each entry (0 for no phone).
        pdf_class: ``(E,)`` pdf class of each entry.
        count: ``(E,)`` frames.
        sum_x: ``(E, F)`` sums of frames.
        sum_x2: ``(E, F)`` sums of squared frames.
    """

    context_width: int
    central_position: int
    base_phones: tuple[str, ...]
    silence_bases: frozenset[str]
    phone_to_base: tuple[int, ...]
    num_pdf_classes: tuple[int, ...]
    contexts: torch.Tensor
    pdf_class: torch.Tensor
    count: torch.Tensor
    sum_x: torch.Tensor
    sum_x2: torch.Tensor

    @property
    def num_entries(self) -> int:
        """``E``."""
        return self.count.numel()

    @property
    def num_frames(self) -> float:
        """Total count."""
        return float(self.count.sum())

    @property
    def feat_dim(self) -> int:
        """``F``."""
        return self.sum_x.shape[1]

    def sum_by_pdf(self, ctx: ContextDependency) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
        """The statistics summed over the entries each pdf of ``ctx`` covers (what Kaldi's
        ``gmm-init-model`` initialises each pdf's Gaussian from).

        Returns:
            ``count (S,)``, ``sum_x (S, F)``, ``sum_x2 (S, F)`` (float64, zeros for pdfs no
            entry reaches).

        Raises:
            ValueError: ``ctx`` has another context window or other base phones.
        """
        if (ctx.context_width, ctx.central_position) != (self.context_width,
                                                        self.central_position) \
                or ctx.base_phones != self.base_phones:
            raise ValueError("the tree and the statistics differ in context window or base "
                             "phones")
        pdf = ctx.pdf_ids_of_values(self.contexts, self.pdf_class)
        s = ctx.num_pdfs
        count = torch.zeros(s, dtype=torch.float64).index_add_(0, pdf, self.count)
        sx = torch.zeros(s, self.feat_dim, dtype=torch.float64).index_add_(0, pdf, self.sum_x)
        sx2 = torch.zeros(s, self.feat_dim, dtype=torch.float64).index_add_(0, pdf, self.sum_x2)
        return count, sx, sx2


def frame_contexts(tmodel: TransitionModel, tids: torch.Tensor, lengths: Sequence[int],
                   context_width: int = 3, central_position: int = 1) -> torch.Tensor:
    """The phone context of every frame of concatenated alignments (the phone sequence of each
    utterance from its exit transitions, as ``acc-tree-stats`` and ``convert-ali`` see it).

    Args:
        tmodel: the transition model of the alignments.
        tids: ``(T,)`` transition ids of the utterances, one after the other.
        lengths: frames of each utterance (summing to ``T``).
        context_width: ``N``.
        central_position: ``P``.

    Returns:
        ``(T, N)`` int64 ``phones.txt`` ids, column ``P`` the frame's own phone, 0 beyond the
        utterance's first or last phone.

    Raises:
        ValueError: lengths that do not sum to ``T``, a tid out of range, or an utterance whose
            last frame is not an exit transition (it ends inside a phone).
    """
    t = torch.as_tensor(tids, dtype=torch.int64).reshape(-1).cpu()
    lens = torch.as_tensor(list(lengths), dtype=torch.int64)
    if int(lens.sum()) != t.numel() or bool((lens < 0).any()):
        raise ValueError(f"utterance lengths sum to {int(lens.sum())}, expected {t.numel()}")
    if t.numel() == 0:
        return torch.zeros(0, context_width, dtype=torch.int64)
    if int(t.min()) < 1 or int(t.max()) > tmodel.num_tids:
        raise ValueError(f"transition ids must be in 1..{tmodel.num_tids}")
    exits = tmodel.tid_is_exit[t]
    ends = lens.cumsum(0)[lens > 0] - 1
    if not bool(exits[ends].all()):
        raise ValueError("an alignment ends inside a phone (its last tid is not an exit)")
    phone = tmodel.tid2phone[t]
    utt = torch.repeat_interleave(torch.arange(lens.numel()), lens)
    starts = torch.ones(t.numel(), dtype=torch.bool)
    starts[1:] = exits[:-1] | (utt[1:] != utt[:-1])
    seg = starts.cumsum(0) - 1
    seg_phone = phone[starts]
    seg_utt = utt[starts]
    nseg = seg_phone.numel()
    cols = []
    for k in range(context_width):
        j = seg + (k - central_position)
        ok = (j >= 0) & (j < nseg)
        jc = j.clamp(0, nseg - 1)
        ok &= seg_utt[jc] == utt
        cols.append(torch.where(ok, seg_phone[jc], torch.zeros_like(jc)))
    return torch.stack(cols, 1)


def accumulate_tree_stats(tmodel: TransitionModel,
                          feats: Mapping[str, torch.Tensor | np.ndarray],
                          alignments: Mapping[str, Alignment | torch.Tensor], *,
                          context_width: int = 3, central_position: int = 1,
                          ci_phones: Collection[str] | None = None,
                          chunk_frames: int = 1 << 20) -> TreeStats:
    """Accumulate tree statistics from alignments (Kaldi ``acc-tree-stats``).

    Every frame adds itself to the statistic of its ``(context, pdf class)``: the context is
    its phone's window of base phones (:func:`frame_contexts`), the pdf class its HMM state.
    Accumulation is vectorised: keys are encoded as integers, made unique and the statistics
    added with ``index_add_``, a chunk of utterances at a time.

    Args:
        tmodel: the transition model of the alignments (normally the monophone model).
        feats: ``{utt: (T, F) frames}``; utterances without an alignment are ignored.
        alignments: ``{utt: Alignment or (T,) tids}``; utterances without features are ignored.
        context_width: ``N`` (Kaldi ``--context-width``, 3).
        central_position: ``P`` (Kaldi ``--central-position``, 1).
        ci_phones: context-independent base phones, whose contexts are recorded as 0 (Kaldi
            ``--ci-phones``); None for the silence base phones.
        chunk_frames: frames per chunk (memory).

    Returns:
        The :class:`TreeStats`.

    Raises:
        ValueError: no utterance with both, an alignment whose length differs from its
            features, features of different dimensions, or a bad context window.
    """
    if context_width < 1 or not 0 <= central_position < context_width:
        raise ValueError(f"need context_width >= 1 and 0 <= central_position < context_width, "
                         f"got {context_width}, {central_position}")
    utts = sorted(feats.keys() & alignments.keys(), key=lambda u: u.encode("utf-8"))
    if not utts:
        raise ValueError("no utterance has both features and an alignment")
    nb = len(tmodel.base_phones)
    v = nb + 1
    num_classes = tuple(tmodel.topology.for_phone(b in tmodel.silence_bases).num_states
                        for b in tmodel.base_phones)
    nc = max(num_classes)
    if float(v) ** context_width * nc >= 2.0 ** 62:
        raise ValueError(f"{nb} base phones with context width {context_width} are too many to "
                         "encode a context in 64 bits")
    table = torch.tensor(_phone_table(tmodel.phones, tmodel.phone_base, tmodel.base_phones))
    ci = set(tmodel.silence_bases if ci_phones is None else ci_phones)
    unknown = ci - set(tmodel.base_phones)
    if unknown:
        raise ValueError(f"ci_phones {sorted(unknown)} are not base phones")
    is_ci = torch.tensor([False] + [b in ci for b in tmodel.base_phones])
    mult = torch.tensor([v ** (context_width - 1 - k) * nc for k in range(context_width)],
                        dtype=torch.int64)
    keys_acc = torch.zeros(0, dtype=torch.int64)
    stats_acc: torch.Tensor | None = None
    dim = None
    chunk: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal keys_acc, stats_acc, dim
        xs, tids, lens = [], [], []
        for u in chunk:
            x = feats[u]
            x = x.detach() if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x))
            a = alignments[u]
            t = a.tids if hasattr(a, "tids") else torch.as_tensor(a, dtype=torch.int64)
            if x.dim() != 2 or x.shape[0] != t.numel():
                raise ValueError(f"{u}: the alignment has {t.numel()} frames, the features "
                                 f"{tuple(x.shape)}; expected (T, F) with the same T")
            if dim is None:
                dim = x.shape[1]
            elif x.shape[1] != dim:
                raise ValueError(f"{u}: feature dimension {x.shape[1]}, expected {dim}")
            xs.append(x.cpu())
            tids.append(t.cpu().reshape(-1))
            lens.append(t.numel())
        x = torch.cat(xs).double()
        t = torch.cat(tids)
        vals = table[frame_contexts(tmodel, t, lens, context_width, central_position)]
        centre = vals[:, central_position]
        vals = torch.where(is_ci[centre][:, None], torch.zeros_like(vals), vals)
        vals[:, central_position] = centre
        key = (vals * mult).sum(1) + tmodel.tid2state[t]
        uniq, inv = key.unique(return_inverse=True)
        part = torch.zeros(uniq.numel(), 1 + 2 * dim, dtype=torch.float64)
        part[:, 0] = torch.bincount(inv, minlength=uniq.numel()).double()
        part[:, 1:1 + dim].index_add_(0, inv, x)
        part[:, 1 + dim:].index_add_(0, inv, x * x)
        if stats_acc is None:
            keys_acc, stats_acc = uniq, part
            return
        both, inv2 = torch.cat([keys_acc, uniq]).unique(return_inverse=True)
        new = torch.zeros(both.numel(), 1 + 2 * dim, dtype=torch.float64)
        new.index_add_(0, inv2[:keys_acc.numel()], stats_acc)
        new.index_add_(0, inv2[keys_acc.numel():], part)
        keys_acc, stats_acc = both, new

    for u in utts:
        chunk.append(u)
        a = alignments[u]
        size += a.tids.numel() if hasattr(a, "tids") else torch.as_tensor(a).numel()
        if size >= chunk_frames:
            flush()
            chunk, size = [], 0
    if chunk:
        flush()
    assert stats_acc is not None and dim is not None
    cls = keys_acc % nc
    rest = keys_acc // nc
    cols = []
    for _ in range(context_width):
        cols.append(rest % v)
        rest = rest // v
    contexts = torch.stack(cols[::-1], 1)
    stats = TreeStats(context_width=context_width, central_position=central_position,
                      base_phones=tuple(tmodel.base_phones),
                      silence_bases=frozenset(tmodel.silence_bases),
                      phone_to_base=tuple(table.tolist()), num_pdf_classes=num_classes,
                      contexts=contexts, pdf_class=cls, count=stats_acc[:, 0].clone(),
                      sum_x=stats_acc[:, 1:1 + dim].clone(),
                      sum_x2=stats_acc[:, 1 + dim:].clone())
    logger.info("tree stats: %d distinct (context, pdf class) entries over %.0f frames of %d "
                "utterances", stats.num_entries, stats.num_frames, len(utts))
    return stats


# ---------------------------------------------------------------------------- questions

def _refine_two(items: list[int], z: torch.Tensor, var_floor: float, iters: int = 20
                ) -> tuple[list[int], list[int]]:
    """Split ``items`` (rows of ``z = [count, sum, sum2]``) into two clusters: the most
    dissimilar pair as seeds, every other item to the seed it costs less to join, then moves
    of single items between the clusters while they raise the likelihood (k-means with the
    Gaussian objective, Kaldi's ``ClusterKMeans`` / ``RefineClusters``)."""
    f = (z.shape[1] - 1) // 2

    def ll(s: torch.Tensor) -> torch.Tensor:
        return gauss_loglik(s[..., 0], s[..., 1:1 + f], s[..., 1 + f:], var_floor)

    zi = z[items]
    own = ll(zi)
    pair = own[:, None] + own[None, :] - ll(zi[:, None, :] + zi[None, :, :])
    pair.fill_diagonal_(-1.0)
    a, b = divmod(int(pair.argmax()), len(items))
    sums = [zi[a].clone(), zi[b].clone()]
    assign = [0] * len(items)
    assign[b] = 1
    for i in range(len(items)):
        if i in (a, b):
            continue
        cost = [float(own[i] + ll(sums[c]) - ll(sums[c] + zi[i])) for c in (0, 1)]
        c = 0 if cost[0] <= cost[1] else 1
        assign[i] = c
        sums[c] = sums[c] + zi[i]
    for _ in range(iters):
        moved = False
        for i in range(len(items)):
            c = assign[i]
            if sum(1 for x in assign if x == c) == 1:
                continue
            o = 1 - c
            before = ll(sums[c]) + ll(sums[o])
            after = ll(sums[c] - zi[i]) + ll(sums[o] + zi[i])
            if float(after - before) > 1e-9 * max(1.0, abs(float(before))):
                sums[c] = sums[c] - zi[i]
                sums[o] = sums[o] + zi[i]
                assign[i] = o
                moved = True
        if not moved:
            break
    return ([it for it, c in zip(items, assign) if c == 0],
            [it for it, c in zip(items, assign) if c == 1])


def cluster_phones(stats: TreeStats, *, pdf_classes: Collection[int] = (1,),
                   var_floor: float = 0.01) -> list[tuple[str, ...]]:
    """Questions by clustering the phones (Kaldi ``cluster-phones``, then ``compile-questions``
    adds the pdf-class questions itself).

    Each base phone is one Gaussian statistic: its entries with that phone at the central
    position and a pdf class in ``pdf_classes`` (Kaldi ``--pdf-class-list``, the middle state
    1), summed; a phone without such entries uses all its entries, a phone without any is left
    out of the clustering. Silence and non-silence phones are clustered apart: each group is
    split top-down in two, recursively (2-means with the Gaussian likelihood as objective: the
    two most dissimilar phones as seeds, the others to the seed they cost less to join, then
    single-phone moves while they help), and every set of the resulting trees is a question. Every singleton, the silence set and the non-silence set are added
    (Kaldi's ``extra_questions.txt``).

    Args:
        stats: from :func:`accumulate_tree_stats`.
        pdf_classes: pdf classes whose statistics describe a phone.
        var_floor: variance floor of the Gaussian objective.

    Returns:
        The questions: sorted tuples of base phone names, sorted, without duplicates.
    """
    nb = len(stats.base_phones)
    f = stats.feat_dim
    z = torch.cat([stats.count[:, None], stats.sum_x, stats.sum_x2], 1)
    centre = stats.contexts[:, stats.central_position]
    wanted = torch.zeros_like(stats.pdf_class, dtype=torch.bool)
    for c in pdf_classes:
        wanted |= stats.pdf_class == c
    per = torch.zeros(nb + 1, 1 + 2 * f, dtype=torch.float64).index_add_(
        0, centre[wanted], z[wanted])
    all_per = torch.zeros_like(per).index_add_(0, centre, z)
    per = torch.where((per[:, :1] > 0), per, all_per)
    sets: set[tuple[str, ...]] = set()

    def name(vals: list[int]) -> tuple[str, ...]:
        return tuple(sorted(stats.base_phones[x - 1] for x in vals))

    groups = [[v for v in range(1, nb + 1) if stats.base_phones[v - 1] in stats.silence_bases],
              [v for v in range(1, nb + 1)
               if stats.base_phones[v - 1] not in stats.silence_bases]]
    for group in groups:
        if group:
            sets.add(name(group))
        seen = [v for v in group if float(per[v, 0]) > 0]
        todo = [seen] if seen else []
        while todo:
            items = todo.pop()
            sets.add(name(items))
            if len(items) < 2:
                continue
            left, right = _refine_two(items, per, var_floor)
            todo += [left, right]
    for v in range(1, nb + 1):
        sets.add((stats.base_phones[v - 1],))
    out = sorted(sets, key=lambda s: (len(s), s))
    logger.info("cluster-phones: %d questions over %d base phones", len(out), nb)
    return out


# ---------------------------------------------------------------------------- the tree

@dataclass(frozen=True)
class TreeBuildInfo:
    """What :func:`build_tree` did.

    Attributes:
        num_leaves: leaves after splitting (unseen phones' leaves included).
        num_pdfs: pdfs after the merging of leaves.
        num_frames: frames in the statistics.
        loglik_gain: total log-likelihood gain of the splits.
        smallest_split: the smallest gain of a split made (inf when none).
        cluster_thresh: the merge threshold used (0 when no merging).
        num_merged: leaves removed by merging.
        unseen_phones: base phones without statistics (one leaf per pdf class each).
    """

    num_leaves: int
    num_pdfs: int
    num_frames: float
    loglik_gain: float
    smallest_split: float
    cluster_thresh: float
    num_merged: int
    unseen_phones: tuple[str, ...]


class _Node:
    """A node while building: the statistics entries it covers and, once split, its question."""

    __slots__ = ("idx", "key", "ll", "no", "order", "pdf", "qset", "root", "split", "tot",
                 "yes")

    def __init__(self, root: int, idx: torch.Tensor, tot: torch.Tensor, ll: float) -> None:
        self.root = root
        self.idx = idx
        self.tot = tot
        self.ll = ll
        self.key = _LEAF
        self.qset: list[bool] | None = None
        self.yes: _Node | None = None
        self.no: _Node | None = None
        self.pdf = -1
        self.split: tuple[float, int, list[bool], torch.Tensor] | None = None
        self.order = 0


def build_tree(stats: TreeStats, questions: Sequence[Collection[str]], *,
               num_leaves: int = 2000, min_gain: float = 300.0, min_count: float = 10.0,
               cluster_thresh: float = -1.0, var_floor: float = 0.01
               ) -> tuple[ContextDependency, TreeBuildInfo]:
    """Build the decision tree (Kaldi ``build-tree``).

    Roots: one per base phone, all its pdf classes together. Splits: at each step the leaf
    whose best question gains most (:func:`gauss_loglik` of the two halves minus that of the
    leaf) is split, over all roots, while there are fewer than ``num_leaves`` leaves and the gain
    exceeds ``min_gain``; a question is allowed only if both halves have at least ``min_count``
    frames. Questions are ``questions`` about each non-central context position and the
    prefixes ``{0 .. i}`` about the pdf class. Merging: within each root, the two leaves whose
    union loses least likelihood are merged while that loss is below ``cluster_thresh``
    (negative: the smallest split gain; 0: no merging), Kaldi's
    ``ClusterEventMapRestrictedByMap``. A phone without statistics gets one pdf per pdf class.
    Pdfs are numbered root by root (base phone order), within a root by lowest pdf class, then
    tree order.

    Args:
        stats: from :func:`accumulate_tree_stats`.
        questions: sets of base phone names (:func:`cluster_phones`).
        num_leaves: most leaves (Kaldi ``--max-leaves``; ``train_deltas.sh`` ``numleaves``).
        min_gain: smallest gain of a split (Kaldi ``--thresh``, 300).
        min_count: fewest frames on each side of a split.
        cluster_thresh: merge threshold (Kaldi ``--cluster-thresh``, -1).
        var_floor: variance floor of the objective.

    Returns:
        The :class:`ContextDependency` and a :class:`TreeBuildInfo`.

    Raises:
        ValueError: a question with a phone that is not a base phone, or ``num_leaves < 1``.
    """
    if num_leaves < 1:
        raise ValueError(f"num_leaves must be >= 1, got {num_leaves}")
    builder = _TreeBuilder(stats, questions, min_count, var_floor)
    num_split_leaves, total_gain, smallest = builder.grow(num_leaves, min_gain)
    thresh = cluster_thresh
    if thresh < 0:
        thresh = smallest if math.isfinite(smallest) else 0.0
    groups_of, merged = builder.cluster(thresh)
    ctx = builder.flatten(groups_of)
    info = TreeBuildInfo(num_leaves=num_split_leaves, num_pdfs=ctx.num_pdfs,
                         num_frames=stats.num_frames, loglik_gain=total_gain,
                         smallest_split=smallest, cluster_thresh=max(thresh, 0.0),
                         num_merged=merged, unseen_phones=tuple(builder.unseen))
    logger.info("build-tree: %d leaves after splitting (gain %.4g per frame over %.0f frames, "
                "smallest split %.4g); %d merged below %.4g -> %d pdfs", num_split_leaves,
                total_gain / max(stats.num_frames, 1.0), stats.num_frames, smallest, merged,
                thresh, ctx.num_pdfs)
    return ctx, info


class _TreeBuilder:
    """The state of one :func:`build_tree` run: the candidate questions as membership
    matrices, the roots (one per seen base phone), splitting, merging and the flat node
    arrays of the finished :class:`ContextDependency`."""

    def __init__(self, stats: TreeStats, questions: Sequence[Collection[str]],
                 min_count: float, var_floor: float) -> None:
        self.stats, self.min_count, self.var_floor = stats, min_count, var_floor
        self.nb = nb = len(stats.base_phones)
        n = stats.context_width
        self.width = width = max(nb + 1, max(stats.num_pdf_classes))
        index = {b: i + 1 for i, b in enumerate(stats.base_phones)}
        qrows = []
        for q in questions:
            row = [False] * width
            for b in q:
                if b not in index:
                    raise ValueError(f"question {sorted(q)} has {b!r}, which is not a base "
                                     "phone")
                row[index[b]] = True
            if any(row) and row not in qrows:
                qrows.append(row)
        maxc = max(stats.num_pdf_classes)
        crows = [[i <= c for i in range(width)] for c in range(maxc - 1)]
        # Candidates per key: (key, column of entry_vals it reads, membership matrix, rows).
        self.kinds = [(k, k, qrows) for k in range(n) if k != stats.central_position and qrows]
        if crows:
            self.kinds.append((PDF_CLASS, n, crows))
        self.mats = [torch.tensor(rows, dtype=torch.float64).reshape(-1, width)
                     for _, _, rows in self.kinds]
        self.z = torch.cat([stats.count[:, None], stats.sum_x, stats.sum_x2], 1)
        # Per entry, the values the keys read: (E, n + 1), column n the pdf class.
        self.entry_vals = torch.cat([stats.contexts, stats.pdf_class[:, None]], 1)
        self.roots: dict[int, _Node] = {}
        self.unseen: list[str] = []

    def ll_of(self, s: torch.Tensor) -> torch.Tensor:
        f = self.stats.feat_dim
        return gauss_loglik(s[..., 0], s[..., 1:1 + f], s[..., 1 + f:], self.var_floor)

    def node(self, root: int, idx: torch.Tensor) -> _Node:
        """A leaf over entries ``idx`` with its best split found."""
        tot = self.z[idx].sum(0)
        node = _Node(root, idx, tot, float(self.ll_of(tot)))
        self.best_split(node)
        return node

    def best_split(self, node: _Node) -> None:
        """The best question of a leaf: the statistics summed per value of each key, then
        every question's "yes" statistics as one small matrix product."""
        node.split = None
        if not self.kinds or node.idx.numel() < 2:
            return
        zi = self.z[node.idx]
        vals = self.entry_vals[node.idx]
        ys = torch.cat([mat @ torch.zeros(self.width, zi.shape[1], dtype=torch.float64)
                        .index_add_(0, vals[:, col], zi)
                        for (_, col, _), mat in zip(self.kinds, self.mats)])  # (Q, 1 + 2F)
        ns = node.tot[None, :] - ys
        floor = max(self.min_count, 1e-9)
        ok = (ys[:, 0] >= floor) & (ns[:, 0] >= floor)
        if not bool(ok.any()):
            return
        gain = self.ll_of(ys) + self.ll_of(ns) - node.ll
        gain = torch.where(ok, gain, torch.full_like(gain, -math.inf))
        q = int(gain.argmax())
        for (key, col, rows), mat in zip(self.kinds, self.mats):
            if q < mat.shape[0]:
                break
            q -= mat.shape[0]
        mask = mat[q][vals[:, col]] > 0
        node.split = (float(gain.max()), key, rows[q], mask)

    def grow(self, num_leaves: int, min_gain: float) -> tuple[int, float, float]:
        """Split the best leaf over all roots while there are fewer than ``num_leaves``
        leaves and the gain exceeds ``min_gain``; returns ``(leaves, total gain, smallest
        gain)``."""
        stats = self.stats
        centre = stats.contexts[:, stats.central_position]
        heap: list[tuple[float, int, _Node]] = []
        counter = 0
        leaves = 0
        for v in range(1, self.nb + 1):
            idx = (centre == v).nonzero().flatten()
            if idx.numel() == 0:
                self.unseen.append(stats.base_phones[v - 1])
                leaves += stats.num_pdf_classes[v - 1]
                continue
            node = self.roots[v] = self.node(v, idx)
            leaves += 1
            if node.split is not None:
                heapq.heappush(heap, (-node.split[0], counter, node))
                counter += 1
        if self.unseen:
            logger.warning("no tree statistics for base phone(s) %s: one pdf per state, "
                           "without data", " ".join(self.unseen))
        total_gain = 0.0
        smallest = math.inf
        while heap and leaves < num_leaves:
            neg, _, node = heapq.heappop(heap)
            gain = -neg
            if gain <= min_gain:
                break
            assert node.split is not None
            _, key, row, mask = node.split
            node.key, node.qset = key, row
            node.yes = self.node(node.root, node.idx[mask])
            node.no = self.node(node.root, node.idx[~mask])
            for child in (node.yes, node.no):
                if child.split is not None:
                    heapq.heappush(heap, (-child.split[0], counter, child))
                    counter += 1
            node.split = None
            leaves += 1
            total_gain += gain
            smallest = min(smallest, gain)
        return leaves, total_gain, smallest

    def cluster(self, thresh: float) -> tuple[dict[int, list[list[_Node]]], int]:
        """Leaves of each root in tree order, merged within the root below ``thresh``;
        returns ``({root: groups of leaves}, number merged)``."""
        merged = 0
        groups_of: dict[int, list[list[_Node]]] = {}
        for v, root in self.roots.items():
            order: list[_Node] = []
            stack = [root]
            while stack:
                node = stack.pop()
                if node.key == _LEAF:
                    node.order = len(order)
                    order.append(node)
                else:
                    assert node.yes is not None and node.no is not None
                    stack += [node.no, node.yes]
            groups = [[leaf] for leaf in order]
            if thresh > 0 and len(order) > 1:
                groups = _merge_leaves(order, thresh, self.ll_of)
                merged += len(order) - len(groups)
            groups_of[v] = groups
        return groups_of, merged

    def flatten(self, groups_of: dict[int, list[list[_Node]]]) -> ContextDependency:
        """Number the pdfs (root by root, within a root by lowest pdf class, then tree order)
        and write the tree as flat node arrays."""
        stats, width = self.stats, self.width
        keys: list[int] = []
        sets: list[list[bool]] = []
        yes_l: list[int] = []
        no_l: list[int] = []
        pdf_l: list[int] = []
        root_ids = [-1] * (self.nb + 1)
        next_pdf = 0

        def add_node(key: int, row: list[bool] | None, pdf: int) -> int:
            keys.append(key)
            sets.append(row if row is not None else [False] * width)
            yes_l.append(-1)
            no_l.append(-1)
            pdf_l.append(pdf)
            return len(keys) - 1

        def first_class(group: list[_Node]) -> tuple[int, int]:
            """Sort key of a pdf within its root: lowest pdf class, then tree order."""
            return (min(int(stats.pdf_class[g.idx].min()) for g in group),
                    min(g.order for g in group))

        for v in range(1, self.nb + 1):
            nc = stats.num_pdf_classes[v - 1]
            root_ids[v] = len(keys)
            if v not in self.roots:
                # Unseen: a chain of pdf-class questions, one pdf per class (as the monophone
                # tree).
                for c in range(nc):
                    if c < nc - 1:
                        here = add_node(PDF_CLASS, [i <= c for i in range(width)], -1)
                        yes_l[here] = add_node(_LEAF, None, next_pdf)
                        no_l[here] = len(keys)
                    else:
                        add_node(_LEAF, None, next_pdf)
                    next_pdf += 1
                continue
            for group in sorted(groups_of[v], key=first_class):
                for leaf in group:
                    leaf.pdf = next_pdf
                next_pdf += 1
            todo: list[tuple[_Node, int, bool]] = [(self.roots[v], -1, True)]
            while todo:  # pre-order, yes before no
                node, parent, is_yes = todo.pop()
                if node.key == _LEAF:
                    here = add_node(_LEAF, None, node.pdf)
                else:
                    assert node.yes is not None and node.no is not None
                    here = add_node(node.key, node.qset, -1)
                    todo += [(node.no, here, False), (node.yes, here, True)]
                if parent >= 0:
                    (yes_l if is_yes else no_l)[parent] = here
        return ContextDependency(stats.context_width, stats.central_position, stats.base_phones,
                                 list(stats.phone_to_base), stats.num_pdf_classes, root_ids,
                                 keys, torch.tensor(sets, dtype=torch.bool).reshape(-1, width),
                                 yes_l, no_l, pdf_l)


def _merge_leaves(leaves: list[_Node], thresh: float, ll_of) -> list[list[_Node]]:
    """Bottom-up merging of one root's leaves while the cheapest merge loses less than
    ``thresh`` (Kaldi ``ClusterBottomUp`` within a root)."""
    tots = torch.stack([leaf.tot for leaf in leaves])
    lls = torch.tensor([leaf.ll for leaf in leaves], dtype=torch.float64)
    k = len(leaves)
    cost = lls[:, None] + lls[None, :] - ll_of(tots[:, None, :] + tots[None, :, :])
    alive = torch.ones(k, dtype=torch.bool)
    cost.fill_diagonal_(math.inf)
    members = [[leaf] for leaf in leaves]
    while int(alive.sum()) > 1:
        i, j = divmod(int(cost.argmin()), k)
        if not float(cost[i, j]) < thresh:
            break
        i, j = min(i, j), max(i, j)
        tots[i] = tots[i] + tots[j]
        lls[i] = ll_of(tots[i])
        members[i] += members[j]
        members[j] = []
        alive[j] = False
        cost[j, :] = math.inf
        cost[:, j] = math.inf
        row = lls[i] + lls - ll_of(tots[i][None, :] + tots)
        row = torch.where(alive, row, torch.full_like(row, math.inf))
        row[i] = math.inf
        cost[i, :] = row
        cost[:, i] = row
    return [m for m in members if m]
