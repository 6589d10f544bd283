"""HMM topologies of phones (Kaldi ``hmm/hmm-topology.h``): which emitting states a phone
has and how they connect, with their initial transition probabilities.

A **phone topology** (:class:`PhoneTopology`) has emitting states ``0 .. n-1``; a phone is
entered at state 0 and left by a transition to state ``n``, Kaldi's non-emitting final state.
:class:`Topology` holds the one for silence phones and the one for all others (Kaldi's
``gen_topo.pl``: 5 and 3 states). The transition model over them is
:class:`.topology.TransitionModel`; the decision tree (:mod:`.tree`) reads only this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from asrkit.text.lexicon import PhoneSet

__all__ = ["PhoneTopology", "Topology"]

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
