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
from dataclasses import dataclass, field

import torch

from asrkit.models.hmm_gmm.tree import ContextDependency
from asrkit.text.lexicon import PhoneSet

__all__ = ["PhoneHmm", "PhoneTopology", "Topology", "TransitionModel"]

_PROB_TOL = 1e-4


@dataclass(frozen=True)
class PhoneTopology:
    """The HMM of one phone: per emitting state, its transitions ``(destination, probability)``.

    ``transitions[i]`` lists the transitions out of state ``i``; a destination equal to
    :attr:`num_states` is the exit (Kaldi's final, non-emitting state). Probabilities are the
    initial values (Kaldi's ``<Transition>`` entries in ``lang/topo``).

    Raises:
        ValueError: no state; a destination outside ``0 .. n``, repeated, or with a
            probability not in ``(0, 1]``; a state whose probabilities do not sum to 1; a state
            not reachable from state 0 or from which the exit cannot be reached.
    """

    transitions: tuple[tuple[tuple[int, float], ...], ...]

    def __post_init__(self) -> None:
        trans = tuple(tuple((int(d), float(p)) for d, p in row) for row in self.transitions)
        object.__setattr__(self, "transitions", trans)
        n = len(trans)
        if n == 0:
            raise ValueError("a phone topology needs at least one emitting state")
        for i, row in enumerate(trans):
            if not row:
                raise ValueError(f"state {i} has no transition")
            dests = [d for d, _ in row]
            if len(set(dests)) != len(dests):
                raise ValueError(f"state {i} lists a destination twice: {dests}")
            for d, p in row:
                if not 0 <= d <= n:
                    raise ValueError(f"state {i}: destination {d} is outside 0..{n}")
                if not (math.isfinite(p) and 0.0 < p <= 1.0):
                    raise ValueError(f"state {i}: probability {p} of the transition to {d} is "
                                     "not in (0, 1]")
            total = sum(p for _, p in row)
            if abs(total - 1.0) > _PROB_TOL:
                raise ValueError(f"state {i}: transition probabilities sum to {total}, "
                                 "expected 1")
        reach = self._distances([0], forward=True)
        back = self._distances([n], forward=False)
        for i in range(n):
            if i not in reach:
                raise ValueError(f"state {i} cannot be reached from state 0")
            if i not in back:
                raise ValueError(f"the exit cannot be reached from state {i}")

    def _distances(self, sources: list[int], *, forward: bool) -> dict[int, int]:
        """Breadth-first number of transitions from ``sources`` (or to them, backwards)."""
        edges: dict[int, list[int]] = {}
        for i, row in enumerate(self.transitions):
            for d, _ in row:
                a, b = (i, d) if forward else (d, i)
                edges.setdefault(a, []).append(b)
        dist = {s: 0 for s in sources}
        queue = list(sources)
        for s in queue:
            for d in edges.get(s, ()):
                if d not in dist:
                    dist[d] = dist[s] + 1
                    queue.append(d)
        return dist

    @property
    def num_states(self) -> int:
        """Number of emitting states ``n``."""
        return len(self.transitions)

    @property
    def min_frames(self) -> int:
        """Fewest frames a phone with this topology can occupy (shortest path to the exit)."""
        return self._distances([0], forward=True)[self.num_states]

    @property
    def linear_path(self) -> tuple[int, ...]:
        """The states an equal (flat-start) alignment visits, in order: ``0, 1, .., n-1`` when
        each state moves to the next and the last exits (left-to-right and Kaldi's silence
        topology), else a shortest path from state 0 to the exit."""
        n = self.num_states
        succ = [{d for d, _ in row} for row in self.transitions]
        if all(i + 1 in succ[i] for i in range(n)):
            return tuple(range(n))
        # Shortest path by breadth-first search with parents.
        parent = {0: -1}
        queue = [0]
        for s in queue:
            for d in sorted(succ[s]):
                if d not in parent:
                    parent[d] = s
                    queue.append(d)
        path, s = [], parent[n]
        while s != -1:
            path.append(s)
            s = parent[s]
        return tuple(reversed(path))

    @classmethod
    def left_to_right(cls, num_states: int = 3, self_loop: float = 0.75) -> PhoneTopology:
        """Left-to-right HMM: each state has a self-loop (``self_loop``) and a transition to
        the next state (``1 - self_loop``); the last state exits. Kaldi's non-silence topology
        for ``num_states=3`` (``utils/gen_topo.pl``).

        Raises:
            ValueError: ``num_states < 1`` or ``self_loop`` not in ``(0, 1)``.
        """
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        if not 0.0 < self_loop < 1.0:
            raise ValueError(f"self_loop must be in (0, 1), got {self_loop}")
        return cls(tuple(((i, self_loop), (i + 1, 1.0 - self_loop)) for i in range(num_states)))

    @classmethod
    def kaldi_silence(cls, num_states: int = 5) -> PhoneTopology:
        """Kaldi's silence topology (``utils/gen_topo.pl``): state 0 goes to ``0 .. n-2``;
        the middle states ``1 .. n-2`` are fully connected to ``1 .. n-1``; the last state has
        a self-loop 0.75 and exits with 0.25. Equal probabilities ``1 / (n-1)`` elsewhere. With
        ``num_states < 3`` it is left-to-right.

        Raises:
            ValueError: ``num_states < 1``.
        """
        if num_states < 3:
            return cls.left_to_right(num_states)
        n = num_states
        p = 1.0 / (n - 1)
        rows = [tuple((d, p) for d in range(n - 1))]
        rows += [tuple((d, p) for d in range(1, n)) for _ in range(1, n - 1)]
        rows.append(((n - 1, 0.75), (n, 0.25)))
        return cls(tuple(rows))

    def to_list(self) -> list[list[list[float]]]:
        """Plain nested lists ``[[[dest, prob], ...], ...]`` (for saving)."""
        return [[[d, p] for d, p in row] for row in self.transitions]

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[Sequence[float]]]) -> PhoneTopology:
        """Inverse of :meth:`to_list`."""
        return cls(tuple(tuple((int(d), float(p)) for d, p in row) for row in rows))


@dataclass(frozen=True)
class Topology:
    """HMM topologies of the phone set: one for silence phones, one for all others.

    The default is Kaldi's (``utils/prepare_lang.sh``): 3-state left-to-right non-silence
    phones and 5-state silence phones (:meth:`PhoneTopology.kaldi_silence`). Use
    ``Topology(silence=PhoneTopology.left_to_right(3))`` for 3-state left-to-right silence.
    """

    nonsilence: PhoneTopology = field(default_factory=PhoneTopology.left_to_right)
    silence: PhoneTopology = field(default_factory=PhoneTopology.kaldi_silence)

    def for_phone(self, is_silence: bool) -> PhoneTopology:
        """The topology of a silence (``True``) or non-silence phone."""
        return self.silence if is_silence else self.nonsilence

    def to_dict(self) -> dict[str, list]:
        """Plain data for saving: ``{"nonsilence": [...], "silence": [...]}``."""
        return {"nonsilence": self.nonsilence.to_list(), "silence": self.silence.to_list()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence]) -> Topology:
        """Inverse of :meth:`to_dict`."""
        return cls(nonsilence=PhoneTopology.from_list(d["nonsilence"]),
                   silence=PhoneTopology.from_list(d["silence"]))

    def to_kaldi(self, phone_set: PhoneSet) -> str:
        """The lang dir's ``topo`` file: these topologies in Kaldi's text format
        (``HmmTopology::Read``), as ``utils/gen_topo.pl`` writes it for ``prepare_lang.sh``.

        One ``<TopologyEntry>`` for the non-silence phones, then one for the silence phones;
        each lists its phones' ``phones.txt`` ids on one line between ``<ForPhones>`` and
        ``</ForPhones>``, then one line per emitting state, ``<State> i <PdfClass> i
        <Transition> DEST PROB ... </State>``, and the final non-emitting state
        ``<State> n </State>``. Probabilities are written as Python's shortest float repr
        (``0.75``, ``0.25``). With the default topology the file is byte for byte the output of
        ``gen_topo.pl 3 5 NONSIL_CSL SIL_CSL``. ``utils/validate_lang.pl`` requires every
        silence and non-silence phone, and nothing else, to be listed once.

        Args:
            phone_set: the lang's phones (``lang.phone_set``).

        Returns:
            The text, ending in a newline.
        """
        def entry(topo: PhoneTopology, phones: Sequence[str]) -> list[str]:
            out = ["<TopologyEntry>", "<ForPhones>",
                   " ".join(str(phone_set.phones[p]) for p in phones), "</ForPhones>"]
            for i, row in enumerate(topo.transitions):
                trans = " ".join(f"<Transition> {d} {p!r}" for d, p in row)
                out.append(f"<State> {i} <PdfClass> {i} {trans} </State>")
            out += [f"<State> {topo.num_states} </State>", "</TopologyEntry>"]
            return out

        lines = ["<Topology>", *entry(self.nonsilence, phone_set.nonsilence),
                 *entry(self.silence, phone_set.silence), "</Topology>"]
        return "\n".join(lines) + "\n"


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

