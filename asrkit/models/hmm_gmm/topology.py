"""HMM topologies and the transition model: which states a phone has, how they connect, and
the transition probabilities (Kaldi ``hmm/hmm-topology.h`` and ``hmm/transition-model.h``).

Terms, as in Kaldi:

* A **phone topology** (:class:`PhoneTopology`) has emitting states ``0 .. n-1``; a phone is
  entered at state 0 and left by a transition to state ``n``, Kaldi's non-emitting final
  state. Every transition out of a state consumes the frame that state emits, so a phone
  occupying ``T`` frames takes ``T`` transitions, the last one to state ``n``.
* A **transition state** (tstate) is one ``(phone, HMM state, pdf)`` triple, with ``phone`` a
  ``phones.txt`` id (position-dependent phones such as ``AA_B`` and ``AA_E`` are distinct
  phones with distinct transition probabilities, as in Kaldi) and ``pdf`` one of the pdfs the
  tree allows for that state (exactly one in a monophone system, so there a tstate is a
  ``(phone, HMM state)`` pair).
* A **pdf** is an emission distribution (one GMM). In the monophone system every
  ``(base phone, HMM state)`` has its own pdf and the position variants of a base phone share it
  (Kaldi's ``gmm-init-mono --shared-phones=phones/sets.int``); pdfs are numbered ``0 .. S-1``
  base phone by base phone (silence first, the order of :attr:`PhoneSet.base_phones`), state
  by state. In a context-dependent system (triphones) a decision tree
  (:class:`.tree.ContextDependency`) gives the pdf of an HMM state from the phone's context;
  the monophone numbering is :meth:`.tree.ContextDependency.monophone`.
* A **transition id** (tid, ``1 .. num_tids``; 0 is never used) is one transition of one
  tstate. An alignment is one tid per frame: the transition taken out of the state that
  emitted the frame at the end of that frame (a self-loop, a move to another state of the
  phone, or the exit of the phone). So a tid gives the frame's pdf, phone and HMM state, and the
  exits mark the phone boundaries (:meth:`TransitionModel.split_to_phones`), exactly as
  Kaldi's transition-ids do; the numbering is ours (phone id, then state, then pdf, then
  transition in topology order), not Kaldi's.

:meth:`TransitionModel.update` re-estimates transition probabilities from tid counts like
Kaldi's ``TransitionModel::MleUpdate`` (``gmm-est``, floor 0.01, minimum count 5).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from asrkit.models.hmm_gmm.hmm_topology import PhoneTopology, Topology
from asrkit.models.hmm_gmm.tree import ContextDependency
from asrkit.text.lexicon import PhoneSet

__all__ = ["PhoneHmm", "PhoneTopology", "Topology", "TransitionModel"]

_PROB_TOL = 1e-4


@dataclass(frozen=True)
class PhoneHmm:
    """One phone's HMM in terms of model indices (what a graph compiler needs).

    Attributes:
        phone: the ``phones.txt`` id.
        pdfs: pdf of each HMM state, ``(n,)``.
        transitions: per state, ``((destination state, tid), ...)``; destination ``n`` is
            the exit.
    """

    phone: int
    pdfs: tuple[int, ...]
    transitions: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def num_states(self) -> int:
        """Number of emitting states."""
        return len(self.pdfs)


class TransitionModel:
    """Transition states, transition ids, pdf numbering and transition probabilities of an HMM
    set (Kaldi ``TransitionModel``), monophone or context-dependent.

    Build it with :meth:`from_phone_set` (monophone) or with ``ctx`` a triphone tree
    (:func:`.tree.build_tree`). Index tables are CPU ``int64`` tensors indexed by tid
    (``num_tids + 1`` entries, entry 0 unused and 0): :attr:`tid2pdf`, :attr:`tid2phone`,
    :attr:`tid2state` (HMM state), :attr:`tid2dest` (destination state), :attr:`tid2tstate`,
    and the bool :attr:`tid_is_exit`. :attr:`log_probs` (float64, ``(num_tids + 1,)``, entry 0
    is 0) holds the natural-log transition probabilities. :attr:`ctx` is the context
    dependency (the monophone one when none is given); :attr:`tstates` lists the ``(phone, HMM
    state)`` of each tstate and :attr:`tstate_pdf` its pdf.

    Args:
        phones: ``{phone: id}`` of the emitting phones (silence and non-silence phones of
            ``phones.txt``; ``<eps>`` and ``#n`` excluded).
        phone_base: ``{phone: base phone}`` for each of ``phones``.
        base_phones: the base phones in pdf order.
        silence_bases: the base phones that are silence.
        topology: the HMM topologies.
        log_probs: transition log probabilities ``(num_tids + 1,)``, or None for the
            topology's initial probabilities.
        ctx: the context dependency (decision tree) giving the pdfs; None for the monophone
            numbering (:meth:`.tree.ContextDependency.monophone`).

    Raises:
        ValueError: a phone without a base phone, a base phone not in ``base_phones``,
            ``log_probs`` of the wrong size, a ``ctx`` with other base phones, another phone
            table or other numbers of pdf classes than the topology's states.
    """

    def __init__(self, phones: Mapping[str, int], phone_base: Mapping[str, str],
                 base_phones: Sequence[str], silence_bases: Collection[str],
                 topology: Topology, log_probs: torch.Tensor | None = None,
                 ctx: ContextDependency | None = None) -> None:
        self.phones = dict(sorted(phones.items(), key=lambda kv: kv[1]))
        self.phone_base = {p: phone_base[p] for p in self.phones if p in phone_base}
        missing = [p for p in self.phones if p not in self.phone_base]
        if missing:
            raise ValueError(f"phones without a base phone: {missing}")
        self.base_phones = tuple(base_phones)
        self.silence_bases = frozenset(silence_bases)
        self.topology = topology
        self.phone_names = {i: p for p, i in self.phones.items()}
        for p, b in self.phone_base.items():
            if b not in self.base_phones:
                raise ValueError(f"base phone {b!r} of phone {p!r} is not in base_phones")
        if ctx is None:
            ctx = ContextDependency.monophone(self)
        self._check_ctx(ctx)
        self.ctx = ctx
        info = ctx.pdf_info()
        #: Base phone of each pdf and its lowest pdf class (the HMM state, for a monophone).
        self.pdf_base = tuple(b for b, _ in info)
        self.pdf_state = tuple(c[0] if c else 0 for _, c in info)
        #: The first pdf of each base phone (a monophone's pdf of state ``s`` is offset + s).
        self.pdf_offset: dict[str, int] = {}
        for pdf, b in enumerate(self.pdf_base):
            self.pdf_offset.setdefault(b, pdf)

        tid_rows: list[tuple[int, int, int, int, int, bool]] = [(0, 0, 0, 0, 0, False)]
        init: list[float] = [0.0]
        self._trans: dict[tuple[int, int, int], tuple[tuple[int, int], ...]] = {}
        self._hmms: dict[tuple[int, tuple[int, ...]], PhoneHmm] = {}
        self._ctx_hmms: dict[tuple[int, ...], PhoneHmm] = {}
        self._state_pdfs: dict[int, tuple[tuple[int, ...], ...]] = {}
        self.tstates: list[tuple[int, int]] = []
        tstate_pdf: list[int] = []
        for p, pid in self.phones.items():
            b = self.phone_base[p]
            topo = topology.for_phone(b in self.silence_bases)
            n = topo.num_states
            state_pdfs = []
            for s, row in enumerate(topo.transitions):
                pdfs = ctx.pdfs_of(pid, s)
                state_pdfs.append(pdfs)
                for pdf in pdfs:
                    ts = len(self.tstates)
                    self.tstates.append((pid, s))
                    tstate_pdf.append(pdf)
                    out = []
                    for d, prob in row:
                        tid = len(tid_rows)
                        tid_rows.append((ts, pdf, pid, s, d, d == n))
                        init.append(math.log(prob))
                        out.append((d, tid))
                    self._trans[(pid, s, pdf)] = tuple(out)
            self._state_pdfs[pid] = tuple(state_pdfs)
        self.tstate_pdf = tuple(tstate_pdf)
        cols = list(zip(*tid_rows))
        self.tid2tstate = torch.tensor(cols[0], dtype=torch.int64)
        self.tid2pdf = torch.tensor(cols[1], dtype=torch.int64)
        self.tid2phone = torch.tensor(cols[2], dtype=torch.int64)
        self.tid2state = torch.tensor(cols[3], dtype=torch.int64)
        self.tid2dest = torch.tensor(cols[4], dtype=torch.int64)
        self.tid_is_exit = torch.tensor(cols[5], dtype=torch.bool)
        if log_probs is None:
            log_probs = torch.tensor(init, dtype=torch.float64)
        log_probs = torch.as_tensor(log_probs, dtype=torch.float64).detach().cpu().clone()
        if log_probs.shape != (len(tid_rows),):
            raise ValueError(f"log_probs has shape {tuple(log_probs.shape)}, expected "
                             f"({len(tid_rows)},) for this phone set and topology")
        log_probs[0] = 0.0
        self.log_probs = log_probs

    def _check_ctx(self, ctx: ContextDependency) -> None:
        """Raise ValueError unless ``ctx`` fits these phones and topologies."""
        if ctx.base_phones != self.base_phones:
            raise ValueError(f"the context dependency has base phones {ctx.base_phones}, the "
                             f"transition model {self.base_phones}")
        index = {b: i + 1 for i, b in enumerate(self.base_phones)}
        for p, pid in self.phones.items():
            b = self.phone_base[p]
            want = index[b]
            if not pid < ctx.phone_to_base.numel() or int(ctx.phone_to_base[pid]) != want:
                raise ValueError(f"the context dependency does not map phone {p!r} (id {pid}) "
                                 f"to its base phone {b!r}")
            n = self.topology.for_phone(b in self.silence_bases).num_states
            if ctx.num_pdf_classes(pid) != n:
                raise ValueError(f"phone {p!r} has {n} HMM states but "
                                 f"{ctx.num_pdf_classes(pid)} pdf classes in the tree")

    @classmethod
    def from_phone_set(cls, phone_set: PhoneSet, topology: Topology | None = None
                       ) -> TransitionModel:
        """The transition model of a lang's phones (:func:`asrkit.text.lexicon.make_lang`).

        Args:
            phone_set: ``lang.phone_set``.
            topology: HMM topologies; None for Kaldi's default (:class:`Topology`).
        """
        emitting = (*phone_set.silence, *phone_set.nonsilence)
        phones = {p: phone_set.phones[p] for p in emitting}
        silence_bases = {phone_set.to_base[p] for p in phone_set.silence}
        return cls(phones, {p: phone_set.to_base[p] for p in emitting},
                   phone_set.base_phones, silence_bases, topology or Topology())

    @property
    def num_pdfs(self) -> int:
        """Number of pdfs ``S``."""
        return len(self.pdf_base)

    @property
    def num_tids(self) -> int:
        """Number of transition ids (they are ``1 .. num_tids``)."""
        return len(self.log_probs) - 1

    @property
    def num_tstates(self) -> int:
        """Number of transition states."""
        return len(self.tstates)

    @property
    def context_width(self) -> int:
        """``N`` of :attr:`ctx` (1 for a monophone model, 3 for triphones)."""
        return self.ctx.context_width

    def _hmm(self, phone: int, pdfs: tuple[int, ...]) -> PhoneHmm:
        key = (phone, pdfs)
        hmm = self._hmms.get(key)
        if hmm is None:
            try:
                trans = tuple(self._trans[(phone, s, pdf)] for s, pdf in enumerate(pdfs))
            except KeyError:
                raise KeyError(f"phone id {phone} with pdfs {pdfs} is not a transition state "
                               "sequence of the model") from None
            hmm = self._hmms[key] = PhoneHmm(phone, pdfs, trans)
        return hmm

    def phone_hmm(self, phone: int) -> PhoneHmm:
        """The HMM of the phone with ``phones.txt`` id ``phone``: its states, their pdfs and the
        tids of their transitions. For a phone whose pdfs depend on its context (a triphone
        model) the states and destinations are the same in every context but the pdfs and tids
        are not: this gives the lowest pdf of each state, :meth:`context_hmm` the HMM of a
        context and :meth:`transition_id` the tid of any pdf.

        Raises:
            KeyError: not an emitting phone of this model.
        """
        state_pdfs = self._state_pdfs.get(phone)
        if state_pdfs is None:
            raise KeyError(f"phone id {phone} is not an emitting phone of the model")
        return self._hmm(phone, tuple(p[0] for p in state_pdfs))

    def context_hmm(self, phones: Sequence[int]) -> PhoneHmm:
        """The HMM of a phone in context: pdfs from :attr:`ctx`, tids of those tstates (what
        Kaldi's ``GetHmmAsFsa`` builds for one context-dependent phone of ``H``). For a
        monophone model ``context_hmm((p,))`` is :meth:`phone_hmm` ``(p)``.

        Args:
            phones: ``N`` ``phones.txt`` ids, the phone at ``ctx.central_position``, 0 where
                there is no phone (see :meth:`.tree.ContextDependency.pdf_id`).

        Raises:
            KeyError: the central phone is not an emitting phone of this model.
            ValueError: not ``N`` phones or an id that is not a phone.
        """
        key = tuple(int(p) for p in phones)
        hmm = self._ctx_hmms.get(key)
        if hmm is None:
            if len(key) != self.ctx.context_width:
                raise ValueError(f"expected {self.ctx.context_width} phones, got {key}")
            phone = key[self.ctx.central_position]
            if phone not in self._state_pdfs:
                raise KeyError(f"phone id {phone} is not an emitting phone of the model")
            n = len(self._state_pdfs[phone])
            pdfs = tuple(self.ctx.pdf_id(key, s) for s in range(n))
            hmm = self._ctx_hmms[key] = self._hmm(phone, pdfs)
        return hmm

    def transition_id(self, phone: int, hmm_state: int, pdf: int, dest: int) -> int:
        """The transition id of the tstate ``(phone, hmm_state, pdf)`` to state ``dest``
        (``num_states`` for the exit); Kaldi's ``PairToTransitionId`` of
        ``TupleToTransitionState``.

        Raises:
            KeyError: no such tstate or transition.
        """
        for d, tid in self._trans.get((phone, hmm_state, pdf), ()):
            if d == dest:
                return tid
        raise KeyError(f"no transition from state {hmm_state} (pdf {pdf}) of phone id {phone} "
                       f"to state {dest}")

    def pdf_name(self, pdf: int) -> str:
        """``"<base phone>.<state>"``, e.g. ``"AA.1"``, for logs and reports."""
        return f"{self.pdf_base[pdf]}.{self.pdf_state[pdf]}"

    def transition_counts(self, tids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """How often each tid occurs: ``(num_tids + 1,)`` float64 (Kaldi's transition
        accumulators of ``gmm-acc-stats-ali``).

        Raises:
            ValueError: a tid outside ``1 .. num_tids``.
        """
        t = torch.as_tensor(tids, dtype=torch.int64).reshape(-1).cpu()
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.num_tids):
            raise ValueError(f"transition ids must be in 1..{self.num_tids}, got "
                             f"{int(t.min())}..{int(t.max())}")
        return torch.bincount(t, minlength=self.num_tids + 1).to(torch.float64)

    def update(self, counts: torch.Tensor, *, floor: float = 0.01, min_count: float = 5.0
               ) -> TransitionModel:
        """Maximum-likelihood transition probabilities from tid counts (Kaldi
        ``TransitionModel::MleUpdate``).

        For every tstate whose total count is at least ``min_count``, the probabilities become
        ``count / total``, each floored at ``floor`` and renormalised; other tstates keep
        theirs.

        Args:
            counts: ``(num_tids + 1,)`` counts, e.g. summed :meth:`transition_counts`.
            floor: probability floor.
            min_count: fewest observations of a tstate to re-estimate it.

        Returns:
            A new model with the updated :attr:`log_probs`.

        Raises:
            ValueError: ``counts`` of the wrong shape.
        """
        c = torch.as_tensor(counts, dtype=torch.float64).cpu()
        if c.shape != self.log_probs.shape:
            raise ValueError(f"counts have shape {tuple(c.shape)}, expected "
                             f"{tuple(self.log_probs.shape)}")
        ts = self.tid2tstate[1:]
        c = c[1:]
        total = torch.zeros(self.num_tstates, dtype=torch.float64).index_add_(0, ts, c)
        prob = (c / total[ts].clamp_min(1e-300)).clamp_min(floor)
        norm = torch.zeros(self.num_tstates, dtype=torch.float64).index_add_(0, ts, prob)
        new = (prob / norm[ts]).log()
        keep = total[ts] < min_count
        lp = self.log_probs.clone()
        lp[1:] = torch.where(keep, lp[1:], new)
        return self._with_log_probs(lp)

    def _with_log_probs(self, log_probs: torch.Tensor) -> TransitionModel:
        return TransitionModel(self.phones, self.phone_base, self.base_phones,
                               self.silence_bases, self.topology, log_probs, self.ctx)

    def split_to_phones(self, tids: torch.Tensor | Sequence[int]
                        ) -> list[tuple[int, int, int]]:
        """Phone segmentation of an alignment (Kaldi ``SplitToPhones``, ``ali-to-phones``).

        Args:
            tids: ``(T,)`` transition ids of one utterance.

        Returns:
            ``[(start frame, end frame (exclusive), phone id), ...]`` in order.

        Raises:
            ValueError: a tid out of range, a phone that does not start in HMM state 0, a
                phone whose frames change phone id, or a last phone that does not exit.
        """
        t = torch.as_tensor(tids, dtype=torch.int64).reshape(-1).cpu()
        if t.numel() == 0:
            return []
        if int(t.min()) < 1 or int(t.max()) > self.num_tids:
            raise ValueError(f"transition ids must be in 1..{self.num_tids}")
        phone = self.tid2phone[t].tolist()
        state = self.tid2state[t].tolist()
        exits = self.tid_is_exit[t].tolist()
        segs, start = [], 0
        for i, is_exit in enumerate(exits):
            if i == start and state[i] != 0:
                raise ValueError(f"frame {i}: phone {self.phone_names[phone[i]]} starts in "
                                 f"HMM state {state[i]}, expected 0")
            if phone[i] != phone[start]:
                raise ValueError(f"frame {i}: phone changes from {phone[start]} to "
                                 f"{phone[i]} without an exit transition")
            if is_exit:
                segs.append((start, i + 1, phone[start]))
                start = i + 1
        if start != len(exits):
            raise ValueError("the alignment ends inside a phone (last tid is not an exit)")
        return segs

    def to_dict(self) -> dict:
        """Plain data and tensors for :func:`torch.save` (loadable with ``weights_only``); the
        tree is under ``"ctx"`` (:meth:`.tree.ContextDependency.to_dict`)."""
        return {"phones": dict(self.phones), "phone_base": dict(self.phone_base),
                "base_phones": list(self.base_phones),
                "silence_bases": sorted(self.silence_bases),
                "topology": self.topology.to_dict(), "log_probs": self.log_probs.clone(),
                "ctx": self.ctx.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> TransitionModel:
        """Inverse of :meth:`to_dict` (a dict without ``"ctx"``, as older files, is a monophone
        model)."""
        ctx = ContextDependency.from_dict(d["ctx"]) if d.get("ctx") is not None else None
        return cls(d["phones"], d["phone_base"], d["base_phones"], d["silence_bases"],
                   Topology.from_dict(d["topology"]), d["log_probs"], ctx)

    def __repr__(self) -> str:
        ctx = f", context width {self.ctx.context_width}" if self.ctx.context_width > 1 else ""
        return (f"TransitionModel({len(self.phones)} phones, {self.num_pdfs} pdfs, "
                f"{self.num_tstates} tstates, {self.num_tids} tids{ctx})")

