"""Viterbi beam search over a decoding graph, vectorised in torch (Kaldi's ``SimpleDecoder``
/ ``FasterDecoder``, ``decode-faster``).

The graph is a tropical-semiring FST (costs ``-ln p``) whose non-``<eps>`` input labels are
scored by the acoustic model once per frame: ``HCLG`` (:func:`asrkit.decode.wfst.make_hclg`)
with transition ids as input labels, scored by the pdf ``tid2pdf[tid]``. It is converted once
to flat tensors (:class:`DecodingGraph`): the emitting arcs (input label not ``<eps>``) as a
CSR table sorted by source state, and the **epsilon closure** of every state (each state
reachable through ``<eps>``-input arcs, with the cheapest such path and its cost) as a second
CSR table, so that epsilon arcs cost one vectorised step per frame instead of an iteration
(``HCLG``'s epsilon arcs are where disambiguation symbols were: short chains at word
boundaries).

Token passing, frame by frame (``T`` frames of 10 ms, ``S`` score columns), one token per
graph state:

1. **Emitting step**: every arc leaving an active token's state is expanded at once
   (``repeat_interleave`` over the CSR rows); its cost is the token's cost plus the arc
   weight plus ``-acoustic_scale * loglikes[t, tid2pdf[ilabel]]``. Candidates above the best
   one plus ``beam`` are dropped; the best candidate per destination state wins (a scatter
   ``amin`` into a dense per-state buffer, which is reset afterwards, so a frame costs
   ``O(arcs expanded)``, not ``O(states)``).
2. **Epsilon step**: the closure entries of the new tokens' states are expanded the same
   way; a closure candidate replaces the token of its state when cheaper (Kaldi's
   ``ProcessNonemitting``, which iterates over the arcs instead).
3. **Pruning**: tokens above the best plus ``beam`` go, then all but the ``max_active``
   best (``topk``). The backpointers of the kept tokens (and of the tokens their epsilon
   paths start from) are stored, one small chunk per frame; when more than
   ``gc_threshold`` are held, or ``gc_frames`` frames after the last time, the chunks are
   compacted to those still reachable from the active tokens, as Kaldi frees unreferenced
   tokens. **Partial traceback**: where the compaction finds that every active token
   descends from one token of an earlier frame (the paths have merged, as they do within a
   second or so of speech), the path up to that token is the same for every final answer:
   it is traced once, kept as two flat tensors (its arc ids and their acoustic scores), and
   its chunks are freed (Kaldi's ``FasterDecoder`` keeps the same "immortal" prefix in its
   token list; the online decoders' partial traceback outputs it). The memory of a search is
   then bounded by ``gc_threshold`` and ``gc_frames`` plus 16 bytes a frame for that prefix,
   so a one-hour utterance (360,000 frames of 10 ms) holds about 6 MB of path instead of a
   chunk of small tensors per frame (Python and torch overhead of ~2.5 KB a frame: 0.9 GB
   an hour, measured by ``scripts/bench/long_decode_memory.py`` against the search without
   it).

**Batches** (:func:`decode_fst_batch`): the per-frame cost is dominated by the fixed cost
of its small torch calls, so several utterances are searched as one token set, token state
``u * N + s`` for utterance ``u``; every reduction that prunes (the beam, ``max_active``,
the closure's beam) is taken per utterance, and ``max_active`` keeps the cheapest tokens in
their original order with ties to the earlier one (in both functions), so each utterance
gets exactly the result of searching it alone. Each utterance is traced back at its own
last frame and its tokens then leave the search.

The scores can come as one ``(T, S)`` tensor or as :class:`FrameScores`, which computes them
``block_frames`` frames at a time (e.g. GMM log-likelihoods of a long utterance, or CTC
posteriors with priors and a blank penalty applied): only one block is converted to float64
at a time, so the scores never exist for the whole utterance in float64 (for a 1-hour HMM-GMM
utterance with 2,500 pdfs that copy alone would be 7.2 GB).

At the end, final weights are added to tokens in final states and the cheapest is traced
back; if no token is in a final state the cheapest token is used, with a warning (Kaldi's
``ReachedFinal() == false``). The trace gives the words (output labels) and one input label
per frame: the transition-id alignment, from which phones (and CTM lines) follow.

**N-best** (``nbest > 1``; Povey et al., 2012, "Generating exact lattices in the WFST
decoding framework", ICASSP, for the idea; ours is a simpler *state-level* lattice without
their determinization of the phone-level lattice): during the search every candidate
transition within ``lattice_beam`` of its frame's best (emitting and epsilon-closure ones,
not only the winner per destination state), and every winner, is recorded as an arc between
two lattice nodes, a node being a graph state at a frame (two layers per frame: after the
emitting step and after the epsilon step). After the search the forward and backward costs
of the nodes give each arc the cost of the best path through it; arcs more than
``lattice_beam`` above the best path go, and the rest becomes an OpenFst acceptor over the
output labels (words), with each arc's cost shifted by the forward costs so that the best
path costs 0 (exact in float32). ``rmepsilon``, ``determinize`` (tropical: each word
sequence keeps its cheapest path) and ``shortestpath(nshortest=n)`` give the ``n`` best
distinct word sequences. The epsilon closure keeps one (the cheapest) epsilon path per pair
of states, so epsilon paths between the same states with other output labels are not in
the lattice.

The same search decodes CTC outputs with a ``TLG`` graph: its input labels are token ids
plus one (``0`` is ``<eps>``; the token FST ``T`` maps a blank and repeated tokens to
``<eps>`` outputs), ``tid2pdf = torch.arange(V + 1) - 1`` maps them to the columns of the
``(T, V)`` CTC log-posteriors, and ``acoustic_scale`` is usually 1. All the decoder requires
is that every frame consumes exactly one non-``<eps>`` input label.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pynini
import torch

__all__ = ["DecodeResult", "DecodingError", "DecodingGraph", "FrameScores", "decode_fst",
           "decode_fst_batch"]

logger = logging.getLogger(__name__)

_MAX_CLOSURE_PUSHES = 100_000  # per state: far beyond any HCLG; a guard against eps cycles
_LONG_LATTICE_FRAMES = 30_000  # n-best lattices of longer utterances get a warning (5 min)


class DecodingError(RuntimeError):
    """The search cannot go on, e.g. ``frame 17: no token survived (every arc from the 3
    active states costs inf or NaN: ...)``."""


@dataclass(frozen=True, eq=False)
class FrameScores:
    """Per-frame scores of one utterance, computed on demand a block of frames at a time.

    :func:`decode_fst` reads frames in order and asks for each block once, so only one block
    of scores needs to exist at a time (plus whatever ``compute`` keeps).

    Attributes:
        num_frames: ``T``.
        num_columns: ``S``, score columns (pdfs, CTC tokens).
        compute: ``compute(t0, t1)`` → ``(t1 - t0, S)`` scores of frames ``t0 .. t1 - 1``
            (natural-log likelihoods or posteriors; any float dtype and device).
        block_frames: frames per ``compute`` call (1000: 10 s at 10 ms).
    """

    num_frames: int
    num_columns: int
    compute: Callable[[int, int], torch.Tensor]
    block_frames: int = 1000

    @classmethod
    def from_tensor(cls, scores: torch.Tensor, block_frames: int = 1000) -> FrameScores:
        """Blocks of the rows of a ``(T, S)`` tensor.

        Raises:
            ValueError: ``scores`` is not 2-D.
        """
        if scores.dim() != 2:
            raise ValueError(f"loglikes must be (T, S), got shape {tuple(scores.shape)}")
        return cls(scores.shape[0], scores.shape[1], lambda t0, t1: scores[t0:t1],
                   block_frames)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(t0, (n, S) scores of frames t0 .. t0 + n - 1)`` for consecutive blocks.

        Raises:
            ValueError: ``block_frames < 1``, or ``compute`` returns another shape.
        """
        if self.block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {self.block_frames}")
        for t0 in range(0, self.num_frames, self.block_frames):
            t1 = min(self.num_frames, t0 + self.block_frames)
            blk = self.compute(t0, t1)
            if tuple(blk.shape) != (t1 - t0, self.num_columns):
                raise ValueError(f"scores of frames {t0}..{t1 - 1}: expected shape "
                                 f"({t1 - t0}, {self.num_columns}), got {tuple(blk.shape)}")
            yield t0, blk


@dataclass(frozen=True, eq=False)
class DecodingGraph:
    """A decoding graph as flat tensors (``N`` states, ``E`` emitting arcs, ``X`` epsilon
    arcs, ``C`` epsilon-closure entries).

    Arc ids: emitting arcs are ``0 .. E-1`` (sorted by source state, so the arcs of state
    ``s`` are ``e_offsets[s] .. e_offsets[s+1]-1``), epsilon arcs ``E .. E+X-1``. The closure
    entries of state ``s`` are ``c_offsets[s] .. c_offsets[s+1]-1``: entry ``c`` reaches
    ``c_dst[c]`` by the epsilon arcs ``c_arcs[c_arc_offsets[c] .. c_arc_offsets[c+1]-1]``,
    the cheapest such path, of cost ``c_weight[c]``.

    Attributes:
        num_states: ``N``.
        start: the start state.
        final: ``(N,)`` float64 final costs, ``inf`` for non-final states.
        e_offsets: ``(N + 1,)`` int64 CSR offsets of the emitting arcs.
        e_dst: ``(E,)`` int64 destination states.
        ilabel: ``(E + X,)`` int64 input labels (``0`` for the epsilon arcs).
        olabel: ``(E + X,)`` int64 output labels (word ids; ``0`` none).
        weight: ``(E + X,)`` float64 arc costs.
        c_offsets: ``(N + 1,)`` int64 CSR offsets of the closure entries.
        c_dst: ``(C,)`` int64 state reached.
        c_weight: ``(C,)`` float64 cost of the epsilon path.
        c_arc_offsets: ``(C + 1,)`` int64 CSR offsets into ``c_arcs``.
        c_arcs: int64 arc ids of the epsilon paths.
    """

    num_states: int
    start: int
    final: torch.Tensor
    e_offsets: torch.Tensor
    e_dst: torch.Tensor
    ilabel: torch.Tensor
    olabel: torch.Tensor
    weight: torch.Tensor
    c_offsets: torch.Tensor
    c_dst: torch.Tensor
    c_weight: torch.Tensor
    c_arc_offsets: torch.Tensor
    c_arcs: torch.Tensor

    @property
    def num_emitting(self) -> int:
        """``E``, the number of emitting arcs."""
        return int(self.e_dst.numel())

    @property
    def num_arcs(self) -> int:
        """``E + X``."""
        return int(self.ilabel.numel())

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""
        return self.e_dst.device

    @classmethod
    def from_fst(cls, fst: pynini.Fst, word_ins_penalty: float = 0.0) -> DecodingGraph:
        """Convert a tropical FST (e.g. ``HCLG``) once; the FST is not modified.

        Args:
            fst: the graph.
            word_ins_penalty: cost added to every arc with an output label (a word), before
                the epsilon closure is computed, so that a path's cost grows by this much per
                word (Kaldi's ``lattice-add-penalty --word-ins-penalty``, which its scoring
                scripts sweep over 0.0, 0.5, 1.0; positive values mean fewer insertions).

        Raises:
            ValueError: ``fst`` has no start state, is not tropical (``standard``), or has
                an epsilon cycle of negative cost.
        """
        if fst.arc_type() != "standard":
            raise ValueError(f"expected a tropical ('standard') FST, got arc type "
                             f"{fst.arc_type()!r}")
        if fst.start() == pynini.NO_STATE_ID:
            raise ValueError("the FST has no start state (an empty graph)")
        if fst.input_symbols() is not None or fst.output_symbols() is not None:
            fst = fst.copy()
            fst.set_input_symbols(None)
            fst.set_output_symbols(None)
        n, start, final, src, arcs = _read_vector_fst(fst.write_to_string())
        final = torch.from_numpy(final.astype(np.float64))
        src = torch.from_numpy(src)
        dst = torch.from_numpy(arcs["d"].astype(np.int64))
        ilab = torch.from_numpy(arcs["i"].astype(np.int64))
        olab = torch.from_numpy(arcs["o"].astype(np.int64))
        wt = torch.from_numpy(arcs["w"].astype(np.float64))
        if word_ins_penalty:
            wt = wt + word_ins_penalty * (olab != 0).to(torch.float64)
        emitting = ilab != 0
        # Emitting arcs first, each group sorted (stably) by source state.
        key = src + (~emitting).to(torch.int64) * n
        order = torch.sort(key, stable=True).indices
        src, dst, ilab, olab, wt = src[order], dst[order], ilab[order], olab[order], wt[order]
        num_e = int(emitting.sum())
        counts = torch.bincount(src[:num_e], minlength=n)
        e_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        closure = _epsilon_closure(src[num_e:].tolist(), dst[num_e:].tolist(),
                                   wt[num_e:].tolist(), num_e)
        return cls(num_states=n, start=start, final=final, e_offsets=e_offsets,
                   e_dst=dst[:num_e], ilabel=ilab, olabel=olab, weight=wt,
                   **_closure_tables(closure, n))

    def to(self, device: torch.device | str) -> DecodingGraph:
        """The graph with its tensors on ``device``."""
        device = torch.device(device)
        if device == self.device:
            return self
        return DecodingGraph(self.num_states, self.start, *(
            t.to(device) for t in (self.final, self.e_offsets, self.e_dst, self.ilabel,
                                   self.olabel, self.weight, self.c_offsets, self.c_dst,
                                   self.c_weight, self.c_arc_offsets, self.c_arcs)))


_ARC_DTYPE = np.dtype([("i", "=i4"), ("o", "=i4"), ("w", "=f4"), ("d", "=i4")])
_VECTOR_MAGIC = 2125659606  # OpenFst's kFstMagicNumber


def _read_vector_fst(data: bytes
                     ) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse OpenFst's binary ``vector`` format of a ``standard`` FST without symbol tables
    (``Fst.write_to_string``): ``(num states, start, (N,) float32 final weights, (A,) int64
    source state of each arc, (A,) arcs with fields i, o, w, d)``. Weights stay exactly
    OpenFst's float32 (the text format rounds them to 6 digits).

    Raises:
        ValueError: the bytes are not such an FST.
    """
    pos = 0

    def unpack(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    def string() -> str:
        nonlocal pos
        (size,) = unpack("=i")
        pos += size
        return data[pos - size:pos].decode("ascii", "replace")

    (magic,) = unpack("=i")
    fst_type, arc_type = string(), string()
    version, flags, _properties, start, num_states, _num_arcs = unpack("=iiQqqq")
    if (magic, fst_type, arc_type, flags) != (_VECTOR_MAGIC, "vector", "standard", 0):
        raise ValueError(f"expected an OpenFst vector FST of standard arcs without symbol "
                         f"tables, got type {fst_type!r}, arc type {arc_type!r}, flags {flags}, "
                         f"version {version}")
    final = np.empty(num_states, dtype=np.float32)
    starts: list[int] = []
    counts: list[int] = []
    head = struct.Struct("=fq")
    for s in range(num_states):
        final[s], count = head.unpack_from(data, pos)
        pos += head.size
        starts.append(pos)
        counts.append(count)
        pos += _ARC_DTYPE.itemsize * count
    if pos != len(data):
        raise ValueError(f"the FST's bytes end at {len(data)}, the states at {pos}")
    size = _ARC_DTYPE.itemsize
    blob = b"".join(data[o:o + size * c] for o, c in zip(starts, counts))
    arcs = np.frombuffer(blob, dtype=_ARC_DTYPE)
    src = np.repeat(np.arange(num_states, dtype=np.int64), counts)
    return int(num_states), int(start), final, src, arcs


def _epsilon_closure(src: list[int], dst: list[int], weight: list[float], first_id: int
                     ) -> dict[int, list[tuple[int, float, tuple[int, ...]]]]:
    """Per state with epsilon arcs: ``[(state reached, cost, arc ids), ...]`` by the
    cheapest epsilon path (label-correcting search; arc ids start at ``first_id``)."""
    adj: dict[int, list[tuple[int, float, int]]] = {}
    for k, (s, d, w) in enumerate(zip(src, dst, weight)):
        adj.setdefault(s, []).append((d, w, first_id + k))
    out: dict[int, list[tuple[int, float, tuple[int, ...]]]] = {}
    for s, arcs in adj.items():
        best: dict[int, tuple[float, tuple[int, ...]]] = {}
        stack = [(d, w, (a,)) for d, w, a in arcs]
        pushes = 0
        while stack:
            q, cost, path = stack.pop()
            if q == s:
                if cost < 0:
                    raise ValueError(f"the graph has an epsilon cycle of negative cost "
                                     f"{cost:g} through state {s}")
                continue
            if q in best and best[q][0] <= cost:
                continue
            best[q] = (cost, path)
            for d, w, a in adj.get(q, ()):
                stack.append((d, cost + w, (*path, a)))
            pushes += 1
            if pushes > _MAX_CLOSURE_PUSHES:
                raise ValueError(f"the epsilon closure of state {s} does not converge (an "
                                 "epsilon cycle of negative cost?)")
        out[s] = sorted((q, c, p) for q, (c, p) in best.items())
    return out


def _closure_tables(closure: dict[int, list[tuple[int, float, tuple[int, ...]]]], n: int
                    ) -> dict[str, torch.Tensor]:
    counts = torch.zeros(n, dtype=torch.int64)
    c_dst: list[int] = []
    c_weight: list[float] = []
    c_len: list[int] = []
    c_arcs: list[int] = []
    for s in sorted(closure):
        counts[s] = len(closure[s])
        for q, cost, path in closure[s]:
            c_dst.append(q)
            c_weight.append(cost)
            c_len.append(len(path))
            c_arcs.extend(path)
    zero = torch.zeros(1, dtype=torch.int64)
    return {"c_offsets": torch.cat([zero, counts.cumsum(0)]),
            "c_dst": torch.tensor(c_dst, dtype=torch.int64),
            "c_weight": torch.tensor(c_weight, dtype=torch.float64),
            "c_arc_offsets": torch.cat([zero, torch.tensor(c_len, dtype=torch.int64).cumsum(0)]),
            "c_arcs": torch.tensor(c_arcs, dtype=torch.int64)}


@dataclass(frozen=True, eq=False)
class DecodeResult:
    """The best path of :func:`decode_fst`.

    Attributes:
        words: output labels of the path (word ids of ``words.txt``), ``<eps>`` dropped.
        tids: ``(T,)`` int64 input label of each frame (transition ids for ``HCLG``: the
            alignment, ready for ``TransitionModel.split_to_phones``).
        cost: the path's total cost, ``lm_cost + acoustic_scale * am_cost``.
        am_cost: acoustic cost, unscaled: ``-sum_t loglikes[t, tid2pdf[tids[t]]]``.
        lm_cost: graph cost (Kaldi's "graph cost"): arc weights plus the final weight, i.e.
            n-gram, pronunciation, silence and scaled HMM transition costs.
        reached_final: whether the path ends in a final state (else the best token of the
            last frame was taken).
        num_active: ``(T,)`` int64 tokens kept after pruning, per frame.
        nbest: with ``nbest > 1``: up to ``nbest`` distinct word sequences, each with its
            total cost (same units as ``cost``: ``lm_cost + acoustic_scale * am_cost`` of its
            best path in the lattice), cheapest first; the first is ``(words, cost)``. Fewer
            when the lattice holds fewer within ``lattice_beam`` of the best. None when
            ``nbest == 1``.
        posteriors: with ``posteriors=True``: ``(frames, ilabels, post)``, three ``(N,)``
            tensors (int64, int64, float64): the lattice's posterior of each input label
            (transition id) at each frame, the entries of a frame summing to 1 (Kaldi's
            ``lattice-to-post``); None otherwise.
    """

    words: list[int]
    tids: torch.Tensor
    cost: float
    am_cost: float
    lm_cost: float
    reached_final: bool
    num_active: torch.Tensor
    nbest: list[tuple[list[int], float]] | None = None
    posteriors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` along dim 0 (``index_select``, several times faster than ``x[idx]`` on
    CPU)."""
    return torch.index_select(x, 0, idx)


def _where(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the true entries of a 1-D mask."""
    return torch.nonzero(mask).squeeze(1)


def _expand(offsets: torch.Tensor, sizes: torch.Tensor, states: torch.Tensor,
            iota: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token index, entry index)`` of every CSR entry (arc) of ``states`` (``sizes``:
    ``offsets[1:] - offsets[:-1]``; ``iota(n)``: ``0 .. n-1``)."""
    starts = _take(offsets, states)
    counts = _take(sizes, states)
    total = int(counts.sum())
    tok = torch.repeat_interleave(counts, output_size=total)
    shift = starts - (counts.cumsum(0) - counts)
    return tok, iota(total) + _take(shift, tok)


class _Chunk:
    """Backpointers of one frame's stored tokens: ``prev`` (index into the previous chunk,
    or -1), ``same`` (index into this chunk of the token an epsilon path starts from, or -1;
    None when all are -1), ``arc`` (an emitting arc id, ``-2 - c`` for closure entry ``c``,
    -1 none), ``ll`` (float64 unscaled score of the emitting arc's column at this frame; NaN
    for the other entries). ``compacted``: :meth:`_Search.gc` compacted it, so the chunks
    before it hold only what it needs (a compaction in ``frame`` does not say that)."""

    __slots__ = ("arc", "compacted", "ll", "prev", "same")

    def __init__(self, prev: torch.Tensor, same: torch.Tensor | None, arc: torch.Tensor,
                 ll: torch.Tensor) -> None:
        self.prev, self.same, self.arc, self.ll = prev, same, arc, ll
        self.compacted = False

    def compact(self, mask: torch.Tensor) -> torch.Tensor:
        """Keep the entries of ``mask`` (closed under ``same``); returns the old -> new index
        map (-1 for dropped entries)."""
        keep = _where(mask)
        remap = torch.full((mask.numel(),), -1, dtype=torch.int64, device=mask.device)
        remap.index_copy_(0, keep, torch.arange(keep.numel(), device=mask.device))
        self.prev, self.arc = _take(self.prev, keep), _take(self.arc, keep)
        self.ll = _take(self.ll, keep)
        if self.same is not None:
            s = _take(self.same, keep)
            self.same = torch.where(s >= 0, _take(remap, s.clamp_min(0)), s)
        return remap


def _mark(size: int, idx: torch.Tensor, same: torch.Tensor | None) -> torch.Tensor:
    """Mask of the entries ``idx`` and the entries their epsilon paths start from (these have
    no ``same`` parent themselves)."""
    mask = torch.zeros(size, dtype=torch.bool, device=idx.device)
    mask.index_fill_(0, idx, True)
    if same is not None:
        p = _take(same, idx)
        mask.index_fill_(0, _take(p, _where(p >= 0)), True)
    return mask


@dataclass
class _PrunedLattice:
    """:meth:`_Lattice._pruned`: node keys, the kept arcs (node ids, costs, word labels,
    input labels, chunk ``bounds`` in layer order), Viterbi forward/backward costs of the
    nodes, the end nodes ``e_id`` with their final costs and path totals, the best total
    and ``limit`` (best + lattice beam), and the start node."""

    keys: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    label: torch.Tensor
    ilabel: torch.Tensor
    bounds: list[tuple[int, int]]
    alpha: torch.Tensor
    beta: torch.Tensor
    e_id: torch.Tensor
    end_final: torch.Tensor
    total: torch.Tensor
    best: float
    limit: float
    start_id: int


class _Lattice:
    """The state-level lattice recorded during the search (``nbest > 1``; module docstring).

    A node is a graph state in a layer, keyed ``layer * N + state``: layer ``2f`` holds the
    tokens of frame ``f`` after the emitting step (``f = 0``: the start state before the
    first frame, ``f = t + 1``: after frame ``t``), layer ``2f + 1`` the tokens after the
    epsilon step. Arcs go from a layer to the next (an identity arc of cost 0 from each
    token to itself, the closure entries, the emitting arcs) and are recorded in layer
    order. A label is a word id (0: none) or ``-1 - c`` for closure entry ``c``, whose words
    are looked up when the lattice is built. Costs are float64, acoustic costs included.
    """

    def __init__(self, g: DecodingGraph, lattice_beam: float, col: torch.Tensor):
        self.g, self.beam, self.n = g, lattice_beam, g.num_states
        self._col = col  # (E,) score column of each emitting arc
        self.layer = 0  # the layer of the current frame's emitting-step tokens
        self.src: list[torch.Tensor] = []
        self.dst: list[torch.Tensor] = []
        self.weight: list[torch.Tensor] = []
        self.label: list[torch.Tensor] = []
        self.ilabel: list[torch.Tensor] = []  # emitting arcs: the input label; others 0

    def _keep(self, cost: torch.Tensor, best: float, winners: torch.Tensor) -> torch.Tensor:
        """Candidates within the lattice beam of ``best``, and the ``winners``."""
        mask = cost <= best + self.beam
        mask.index_fill_(0, winners, True)
        return _where(mask)

    def _add(self, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor,
             label: torch.Tensor, ilabel: torch.Tensor | None = None) -> None:
        base = self.layer * self.n
        self.src.append(src + base)
        self.dst.append(dst + (base + self.n))
        self.weight.append(weight)
        self.label.append(label)
        self.ilabel.append(torch.zeros_like(label) if ilabel is None else ilabel)

    def identity(self, st: torch.Tensor) -> None:
        """The emitting-step tokens ``st`` of the current frame, into the epsilon layer."""
        self._add(st, st, torch.zeros(st.numel(), dtype=torch.float64, device=st.device),
                  torch.zeros_like(st))

    def closure(self, src: torch.Tensor, c: torch.Tensor, cost: torch.Tensor, best: float,
                winners: torch.Tensor) -> None:
        """Closure candidates: entry ``c`` from state ``src``, total cost ``cost``."""
        k = self._keep(cost, best, winners)
        c = _take(c, k)
        self._add(_take(src, k), _take(self.g.c_dst, c), _take(self.g.c_weight, c), -1 - c)

    def emitting(self, src: torch.Tensor, arc: torch.Tensor, cost: torch.Tensor, best: float,
                 winners: torch.Tensor, frame_costs: torch.Tensor) -> None:
        """Emitting candidates: ``arc`` from state ``src`` at total cost ``cost``;
        ``frame_costs`` is the frame's ``(S,)`` scaled acoustic costs. Moves to the next
        frame."""
        g = self.g
        k = self._keep(cost, best, winners)
        arc = _take(arc, k)
        ac = _take(frame_costs, _take(self._col, arc))
        self.layer += 1
        self._add(_take(src, k), _take(g.e_dst, arc), _take(g.weight, arc) + ac,
                  _take(g.olabel, arc), _take(g.ilabel, arc))
        self.layer += 1

    def _closure_words(self, c: int) -> list[int]:
        g = self.g
        arcs = g.c_arcs[int(g.c_arc_offsets[c]):int(g.c_arc_offsets[c + 1])]
        return [int(w) for w in _take(g.olabel, arcs).tolist() if w]

    def _pruned(self, end_states: torch.Tensor, end_final: torch.Tensor) -> _PrunedLattice:
        """The recorded arcs on paths within ``lattice_beam`` of the best, with the nodes'
        forward and backward (Viterbi) costs; ``end_states`` are the last frame's tokens
        after the epsilon step, ``end_final`` their final costs."""
        g = self.g
        dev = end_states.device
        sizes = [x.numel() for x in self.src]
        src, dst = torch.cat(self.src), torch.cat(self.dst)
        weight, label = torch.cat(self.weight), torch.cat(self.label)
        ilabel = torch.cat(self.ilabel)
        num = src.numel()
        end_keys = end_states + (self.layer + 1) * self.n
        keys, inv = torch.unique(
            torch.cat([src, dst, end_keys, torch.tensor([g.start], device=dev)]),
            return_inverse=True)
        s_id, d_id = inv[:num], inv[num:2 * num]
        e_id, start_id = inv[2 * num:-1], int(inv[-1])
        alpha = torch.full((keys.numel(),), math.inf, dtype=torch.float64, device=dev)
        alpha[start_id] = 0.0
        bounds = list(itertools.pairwise([0, *itertools.accumulate(sizes)]))
        for lo, hi in bounds:
            alpha.scatter_reduce_(0, d_id[lo:hi], alpha[s_id[lo:hi]] + weight[lo:hi], "amin")
        beta = torch.full_like(alpha, math.inf)
        beta.scatter_reduce_(0, e_id, end_final, "amin")
        for lo, hi in reversed(bounds):
            beta.scatter_reduce_(0, s_id[lo:hi], beta[d_id[lo:hi]] + weight[lo:hi], "amin")
        total = alpha[e_id] + end_final
        best = float(total.min())
        limit = best + self.beam
        through = alpha[s_id] + weight + beta[d_id]
        k = _where(through <= limit if math.isfinite(limit) else through < math.inf)
        # the kept arcs' chunk boundaries (the arcs stay in layer order)
        kept_before = torch.searchsorted(k, torch.tensor([hi for _, hi in bounds],
                                                         device=dev)).tolist()
        kb = list(itertools.pairwise([0, *kept_before]))
        return _PrunedLattice(keys, s_id[k], d_id[k], weight[k], label[k], ilabel[k], kb,
                              alpha, beta, e_id, end_final, total, best, limit, start_id)

    def posteriors(self, end_states: torch.Tensor, end_final: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Arc posteriors of the lattice (forward-backward in the log semiring over the
        arcs within ``lattice_beam`` of the best path; Kaldi's ``lattice-to-post``, whose
        ``--acoustic-scale`` is already in the recorded costs): ``(frames, ilabels, post)``,
        one entry per frame and input label with posterior mass, each frame's summing to 1.
        """
        lat = self._pruned(end_states, end_final)
        dev = lat.alpha.device
        n_keys = lat.keys.numel()
        # Forward and backward sums relative to the Viterbi costs (alpha/beta): a node's
        # log-semiring forward cost is alpha - log(fwd); every factor below is <= fwd[src],
        # so nothing overflows unless an astronomical number of paths ties.
        fwd = torch.zeros(n_keys, dtype=torch.float64, device=dev)
        fwd[lat.start_id] = 1.0
        rel = lat.alpha[lat.src] + lat.weight - lat.alpha[lat.dst]  # >= 0 on kept arcs
        for lo, hi in lat.bounds:
            fwd.index_add_(0, lat.dst[lo:hi], fwd[lat.src[lo:hi]] * torch.exp(-rel[lo:hi]))
        bwd = torch.zeros_like(fwd)
        end_ok = lat.total <= lat.limit if math.isfinite(lat.limit) else lat.total < math.inf
        e_id, e_fin = lat.e_id[end_ok], lat.end_final[end_ok]
        bwd.index_add_(0, e_id, torch.exp(-(e_fin - lat.beta[e_id])))
        rel_b = lat.weight + lat.beta[lat.dst] - lat.beta[lat.src]  # >= 0
        for lo, hi in reversed(lat.bounds):
            bwd.index_add_(0, lat.src[lo:hi], bwd[lat.dst[lo:hi]] * torch.exp(-rel_b[lo:hi]))
        z = float((fwd[e_id] * torch.exp(-(lat.alpha[e_id] + e_fin - lat.best))).sum())
        em = _where(lat.ilabel != 0)
        s, d = lat.src[em], lat.dst[em]
        through = lat.alpha[s] + lat.weight[em] + lat.beta[d] - lat.best  # >= 0
        post = fwd[s] * bwd[d] * torch.exp(-through) / z
        frame = torch.div(torch.div(lat.keys[s], self.n, rounding_mode="floor") - 1, 2,
                          rounding_mode="floor")
        il = lat.ilabel[em]
        pair, inv = torch.unique(torch.stack([frame, il]), dim=1, return_inverse=True)
        summed = torch.zeros(pair.shape[1], dtype=torch.float64, device=dev)
        summed.index_add_(0, inv, post)
        keep = summed > 1e-8
        return pair[0, keep].cpu(), pair[1, keep].cpu(), summed[keep].cpu()

    def nbest(self, end_states: torch.Tensor, end_final: torch.Tensor, n: int
              ) -> list[tuple[list[int], float]]:
        """The ``n`` best distinct word sequences of the paths ending in ``end_states``
        (the last frame's tokens after the epsilon step, final costs ``end_final``), with
        their costs minus the best path's, cheapest first."""
        lat = self._pruned(end_states, end_final)
        dev = lat.alpha.device
        alpha, s_id, d_id, label = lat.alpha, lat.src, lat.dst, lat.label
        total, best, limit, e_id, start_id = lat.total, lat.best, lat.limit, lat.e_id, lat.start_id
        # Shift by the forward costs: the best path costs 0, every arc >= 0.
        rel = (alpha[s_id] + lat.weight - alpha[d_id]).clamp_min(0.0)
        fk = _where(total <= limit if math.isfinite(limit) else total < math.inf)
        f_id, f_rel = e_id[fk], (total[fk] - best).clamp_min(0.0)
        nodes = torch.unique(torch.cat([s_id, d_id, f_id,
                                        torch.tensor([start_id], device=dev)]))
        fst = pynini.Fst()
        fst.add_states(nodes.numel())
        fst.set_start(int(torch.searchsorted(nodes, start_id)))
        words_of: dict[int, list[int]] = {}
        for s, d, lab, w in zip(torch.searchsorted(nodes, s_id).tolist(),
                                torch.searchsorted(nodes, d_id).tolist(), label.tolist(),
                                rel.tolist()):
            if lab >= 0:
                fst.add_arc(s, pynini.Arc(lab, lab, w, d))
                continue
            c = -1 - lab
            if c not in words_of:
                words_of[c] = self._closure_words(c)
            ws = words_of[c] or [0]
            for i, word in enumerate(ws):  # a chain through new states for several words
                nxt = d if i == len(ws) - 1 else fst.add_state()
                fst.add_arc(s, pynini.Arc(word, word, w if i == 0 else 0.0, nxt))
                s = nxt
        for f, w in zip(torch.searchsorted(nodes, f_id).tolist(), f_rel.tolist()):
            fst.set_final(f, w)
        fst = fst.rmepsilon()
        fst = (pynini.determinize(fst, weight=self.beam) if math.isfinite(self.beam)
               else pynini.determinize(fst))
        paths = _fst_paths(pynini.shortestpath(fst, nshortest=n, unique=True))
        # Arcs on good paths can combine into a path above the beam: leave those out.
        return [(w, c) for w, c in paths if c <= self.beam + 1e-4]


def _fst_paths(fst: pynini.Fst) -> list[tuple[list[int], float]]:
    """``(labels without 0, cost)`` of every path of an acyclic FST, cheapest first."""
    out: list[tuple[list[int], float]] = []
    if fst.start() == pynini.NO_STATE_ID:
        return out
    zero = pynini.Weight.zero(fst.weight_type())
    stack: list[tuple[int, list[int], float]] = [(fst.start(), [], 0.0)]
    while stack:
        s, labels, cost = stack.pop()
        if fst.final(s) != zero:
            out.append((labels, cost + float(fst.final(s))))
        for a in fst.arcs(s):
            stack.append((a.nextstate, labels + [a.olabel] if a.olabel else labels,
                          cost + float(a.weight)))
    out.sort(key=lambda x: (x[1], x[0]))
    return out


class _Search:
    """The token sets of one utterance and their backpointer chunks."""

    def __init__(self, g: DecodingGraph, beam: float, max_active: int,
                 lattice: _Lattice | None = None, batch: int = 1, *,
                 gc_threshold: int = 1_000_000, gc_frames: int = 1000):
        self.g = g
        # compaction schedule (decode_fst's gc_threshold and gc_frames; collect())
        self.gc_threshold, self.gc_frames = gc_threshold, gc_frames
        self._held, self._next_gc, self._next_gc_chunks = 0, gc_threshold, gc_frames
        self.lat = lattice
        self.beam = beam
        self.max_active = max_active
        # batch > 1 (decode_fst_batch): token states are ``u * N + s`` for utterance u, the
        # beam and max_active hold per utterance, and no partial traceback (the paths of
        # different utterances never merge)
        self.batch = batch
        dev = g.device
        n = g.num_states * batch
        self.e_sizes = g.e_offsets[1:] - g.e_offsets[:-1]
        self.c_sizes = g.c_offsets[1:] - g.c_offsets[:-1]
        self.has_closure = self.c_sizes > 0
        self.any_closure = bool(self.has_closure.any())
        self.buf_cost = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
        self.buf_idx = torch.full((n,), -1, dtype=torch.int64, device=dev)
        # read-only buffers sliced instead of allocating per frame (grown on demand)
        self._iota = torch.arange(0, device=dev)
        self._minus = torch.full((0,), -1, dtype=torch.int64, device=dev)
        self._nan = torch.full((0,), math.nan, dtype=torch.float64, device=dev)
        self.chunks: list[_Chunk] = []
        # the traced start of the best path shared by every active token (partial traceback)
        self.prefix_arcs: list[torch.Tensor] = []
        self.prefix_ll: list[torch.Tensor] = []
        self.dev = dev

    def iota(self, n: int, start: int = 0) -> torch.Tensor:
        """``start .. n-1`` (int64), a view of a shared buffer: not to be written to."""
        if n > self._iota.numel():
            self._iota = torch.arange(max(n, 2 * self._iota.numel()), device=self.dev)
        return self._iota[start:n]

    def _fill(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` times -1 (int64) and NaN (float64), views of shared buffers."""
        if n > self._minus.numel():
            size = max(n, 2 * self._minus.numel())
            self._minus = torch.full((size,), -1, dtype=torch.int64, device=self.dev)
            self._nan = torch.full((size,), math.nan, dtype=torch.float64, device=self.dev)
        return self._minus[:n], self._nan[:n]

    def split(self, st: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(graph states, utterance offsets u * N)`` of token states ``st``; the offsets are
        None when the batch is 1 (the states are the graph states)."""
        if self.batch == 1:
            return st, None
        local = torch.remainder(st, self.g.num_states)
        return local, st - local

    def utt_best(self, ut: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` cheapest ``cost`` per utterance ``ut`` (``inf`` where none)."""
        best = torch.full((self.batch,), math.inf, dtype=cost.dtype, device=cost.device)
        return best.scatter_reduce_(0, ut, cost, "amin")

    def within_beam(self, ut: torch.Tensor | None, cost: torch.Tensor, best: float | None
                    ) -> torch.Tensor:
        """Indices of the ``cost`` entries at most ``beam`` above the best of their
        utterance (``ut``: per-entry utterance, None for a batch of 1 with ``best`` its
        best); an utterance whose best is ``inf`` keeps nothing."""
        if ut is None:
            return _where(cost <= best + self.beam)
        if not math.isfinite(self.beam):
            return _where(cost < math.inf)
        limit = (self.utt_best(ut, cost) + self.beam).nan_to_num_(posinf=-math.inf)
        return _where(cost <= _take(limit, ut))

    def top_per_utt(self, ut: torch.Tensor, cost: torch.Tensor) -> torch.Tensor | None:
        """Indices (ascending) of the ``max_active`` cheapest entries of each utterance
        ``ut``, ties to the earlier entry, or None when no utterance has more (Kaldi's
        ``GetCutoff`` per utterance)."""
        counts = torch.bincount(ut, minlength=self.batch)
        if int(counts.max()) <= self.max_active:
            return None
        order = torch.argsort(cost, stable=True)
        order = _take(order, torch.argsort(_take(ut, order), stable=True))
        starts = counts.cumsum(0) - counts
        rank = self.iota(ut.numel()) - _take(starts, _take(ut, order))
        # in the tokens' order, as for a batch of 1, so that ties break the same way
        return torch.sort(_take(order, _where(rank < self.max_active))).values

    def best_per_dst(self, dst: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """Index of the cheapest candidate per destination (one per distinct ``dst``)."""
        best = self.buf_cost
        best.scatter_reduce_(0, dst, cost, "amin")
        cand = _where(cost == _take(best, dst))
        dw = _take(dst, cand)
        self.buf_idx.index_copy_(0, dw, cand)  # one of tied candidates wins
        sel = _take(cand, _where(_take(self.buf_idx, dw) == cand))
        best.index_fill_(0, dw, math.inf)
        return sel

    def _epsilon(self, st, co, prev, arc, ll):
        """Add the closure of the tokens ``st`` (one per state); returns the grown
        ``(st, co, prev, arc, ll, same, active, active states, active costs)`` (``active``:
        indices of the tokens not replaced by a cheaper closure entry, ascending, then the
        closure entries that won), or None when nothing changes.

        The closure candidates and the tokens compete in one :meth:`best_per_dst`, the
        tokens last so that they win ties (a closure entry must be cheaper to replace one)."""
        g = self.g
        local, base = self.split(st)
        fr = _where(_take(self.has_closure, local))
        if not fr.numel():
            return None
        tok, c = _expand(g.c_offsets, self.c_sizes, _take(local, fr), self.iota)
        parent = _take(fr, tok)
        cost = _take(co, parent) + _take(g.c_weight, c)
        if base is None:
            co_best = float(co.min())
            ok = self.within_beam(None, cost, co_best)
        else:  # each utterance's own best token bounds its closure candidates
            ut = _take(base, parent) // g.num_states
            best = self.utt_best(base // g.num_states, co)
            ok = _where(cost <= _take(best, ut) + self.beam)
        if not ok.numel():
            return None
        parent, c, cost = _take(parent, ok), _take(c, ok), _take(cost, ok)
        dst = _take(g.c_dst, c)
        if base is not None:
            dst = dst + _take(base, parent)
        if self.lat is not None:
            self.lat.closure(_take(st, parent), c, cost, co_best, self.best_per_dst(dst, cost))
        k = c.numel()
        sel = self.best_per_dst(torch.cat([dst, st]), torch.cat([cost, co]))  # ascending
        m = int(torch.searchsorted(sel, k))  # closure entries among the winners
        if not m:
            return None
        win = sel[:m]
        keep = sel[m:] - k  # the tokens that stay
        parent, c, cost, dst = _take(parent, win), _take(c, win), _take(cost, win), _take(dst, win)
        n0 = st.numel()
        minus, nan = self._fill(max(n0, m))
        active = torch.cat([keep, self.iota(n0 + m, n0)])
        return (torch.cat([st, dst]), torch.cat([co, cost]), torch.cat([prev, minus[:m]]),
                torch.cat([arc, -2 - c]), torch.cat([ll, nan[:m]]), torch.cat([minus[:n0], parent]),
                active, torch.cat([_take(st, keep), dst]), torch.cat([_take(co, keep), cost]))

    def frame(self, st, co, prev, arc, ll):
        """Epsilon step, pruning and storage of one frame's tokens ``(st, co, prev, arc,
        ll)`` (one per state); returns the active ``(states, costs, chunk indices)``."""
        same = None
        if self.lat is not None:
            self.lat.identity(st)
        grown = self._epsilon(st, co, prev, arc, ll) if self.any_closure else None
        if grown is None:
            n = st.numel()
            if n <= self.max_active:  # the emitting step kept only tokens within the beam
                self.chunks.append(_Chunk(prev, None, arc, ll))
                return st, co, self.iota(n)
            active, a_st, a_co = self.iota(n), st, co
        else:
            st, co, prev, arc, ll, same, active, a_st, a_co = grown
        if self.batch == 1:
            lo, hi = torch.aminmax(a_co)
            best = float(lo)
            if float(hi) > best + self.beam:
                within = _where(a_co <= best + self.beam)
                active, a_st, a_co = (_take(active, within), _take(a_st, within),
                                      _take(a_co, within))
            if active.numel() > self.max_active:
                top = torch.argsort(a_co, stable=True)[:self.max_active]
                top = torch.sort(top).values  # the tokens' order, so ties break the same
                active, a_st, a_co = _take(active, top), _take(a_st, top), _take(a_co, top)
        else:
            ut = a_st // self.g.num_states
            within = self.within_beam(ut, a_co, None)
            if within.numel() < a_co.numel():
                active, a_st, a_co, ut = (_take(active, within), _take(a_st, within),
                                          _take(a_co, within), _take(ut, within))
            top = self.top_per_utt(ut, a_co) if a_co.numel() > self.max_active else None
            if top is not None:
                active, a_st, a_co = _take(active, top), _take(a_st, top), _take(a_co, top)
        # The chunk keeps the pruned tokens too (compacting it here cost more than the
        # search around it); gc() drops them with the rest of the unreachable entries.
        self.chunks.append(_Chunk(prev, same, arc, ll))
        return a_st, a_co, active

    def collect(self, active_idx: torch.Tensor) -> torch.Tensor:
        """After each frame: :meth:`gc` when more than ``gc_threshold`` entries (and twice
        as many as after the last compaction) are held, or ``gc_frames`` chunks were stored
        since; returns the active tokens' (new) indices."""
        self._held += self.chunks[-1].arc.numel()
        if self._held > self._next_gc or len(self.chunks) > self._next_gc_chunks:
            active_idx = self.gc(active_idx)
            self._held = sum(ch.arc.numel() for ch in self.chunks)
            self._next_gc = max(self.gc_threshold, 2 * self._held)
            self._next_gc_chunks = len(self.chunks) + self.gc_frames
        return active_idx

    def gc(self, active_idx: torch.Tensor) -> torch.Tensor:
        """Compact the chunks, newest first, to the entries reachable from the active tokens,
        back to the first already compacted chunk that loses nothing, or to the newest chunk
        whose kept entries all descend from one entry of the chunk before it: the path up to
        that entry is then moved to the traced prefix and its chunks are freed (partial
        traceback, module docstring). Returns the active tokens' new indices."""
        needed = active_idx
        last = len(self.chunks) - 1
        for c in range(last, -1, -1):
            ch = self.chunks[c]
            mask = _mark(ch.arc.numel(), needed, ch.same)
            if ch.compacted and bool(mask.all()):
                break
            remap = ch.compact(mask)
            ch.compacted = True  # the chunks before it will hold only what it needs
            if c == last:
                active_idx = _take(remap, active_idx)
            else:
                p = self.chunks[c + 1].prev
                self.chunks[c + 1].prev = torch.where(p >= 0, _take(remap, p.clamp_min(0)), p)
            needed = torch.unique(_take(ch.prev, _where(ch.prev >= 0)))
            if c > 0 and needed.numel() == 1 and self.batch == 1:  # all paths through one entry
                self._flush(c, int(needed[0]))
                break
        return active_idx

    def _flush(self, c: int, idx: int) -> None:
        """Move the path ending at entry ``idx`` of chunk ``c - 1`` to the traced prefix and
        drop chunks ``0 .. c - 1``; chunk ``c``'s entries then start the held paths."""
        arcs, lls = self.trace(idx, c - 1)
        self.prefix_arcs.append(torch.tensor(arcs, dtype=torch.int64, device=self.dev))
        self.prefix_ll.append(torch.tensor(lls, dtype=torch.float64, device=self.dev))
        del self.chunks[:c]
        first = self.chunks[0]
        first.prev = torch.full_like(first.prev, -1)

    def trace(self, idx: int, c: int | None = None) -> tuple[list[int], list[float]]:
        """Arc ids on the held path ending at entry ``idx`` of chunk ``c`` (default: the
        last), in order, and the unscaled scores of its emitting arcs (one per frame)."""
        g = self.g
        path: list[int] = []
        lls: list[float] = []
        c = len(self.chunks) - 1 if c is None else c
        while True:
            ch = self.chunks[c]
            a = int(ch.arc[idx])
            if a >= 0:
                path.append(a)
                lls.append(float(ch.ll[idx]))
            elif a <= -2:
                k = -2 - a
                lo, hi = int(g.c_arc_offsets[k]), int(g.c_arc_offsets[k + 1])
                path.extend(reversed(g.c_arcs[lo:hi].tolist()))
            s = int(ch.same[idx]) if ch.same is not None else -1
            if s >= 0:
                idx = s
                continue
            p = int(ch.prev[idx])
            if p < 0:
                break
            c -= 1
            idx = p
        path.reverse()
        lls.reverse()
        return path, lls


def decode_fst(graph: pynini.Fst | DecodingGraph, loglikes: torch.Tensor | FrameScores,
               tid2pdf: torch.Tensor, *, acoustic_scale: float = 0.1, beam: float = 13.0,
               max_active: int = 7000, gc_threshold: int = 1_000_000, gc_frames: int = 1000,
               nbest: int = 1, lattice_beam: float = 8.0,
               posteriors: bool = False) -> DecodeResult:
    """Viterbi beam search for the cheapest path of ``graph`` given per-frame scores (Kaldi's
    ``decode-faster`` / ``gmm-decode-faster``); the algorithm is in the module docstring.

    A path's cost is the sum of its arc weights and final weight plus, for the input label
    ``i`` read at frame ``t``, ``-acoustic_scale * loglikes[t, tid2pdf[i]]``. With an infinite
    ``beam`` and ``max_active`` at least the number of states the search is exact.

    Args:
        graph: ``HCLG`` (:func:`asrkit.decode.wfst.make_hclg`), or the same converted once
            with :meth:`DecodingGraph.from_fst` (do that when decoding many utterances).
        loglikes: ``(T, S)`` acoustic log-likelihoods of ``T`` frames (10 ms) under each of
            ``S`` pdfs (:meth:`asrkit.models.hmm_gmm.AcousticModel.loglik`), or CTC
            log-posteriors for a ``TLG`` graph. The search runs on its device. Or the same as
            :class:`FrameScores`, computed block by block (long utterances); the search then
            runs on the graph's device.
        tid2pdf: ``(L,)`` int64 score column of each input label (entry 0 unused):
            ``TransitionModel.tid2pdf`` for ``HCLG``; must cover every input label of the
            graph.
        acoustic_scale: weight of the acoustic scores against the graph costs (0.1, Kaldi's
            ``--acoustic-scale``).
        beam: tokens more than ``beam`` above the best of their frame are dropped (13).
        max_active: at most this many tokens are kept per frame (7000).
        gc_threshold: compact the backpointers when more than this many are held (and
            twice as many as after the previous compaction); each takes 24 to 32 bytes.
        gc_frames: also compact them (with the partial traceback of the module docstring)
            when this many frames were stored since the last compaction (1000), which bounds
            the per-frame overhead of a long utterance.
        nbest: with ``nbest > 1`` a lattice is recorded and the ``nbest`` best distinct word
            sequences are returned in :attr:`DecodeResult.nbest` (module docstring); 1 (the
            default) records nothing and returns the same 1-best as before.
        lattice_beam: ``nbest > 1``: transitions more than this above their frame's best
            are not recorded (winners always are), and word sequences more than this above
            the best path are not returned (8.0, cost units like ``beam``; ``inf`` keeps
            all).
            Memory grows with it: the recorded transitions of all frames are held until the
            end of the utterance (so, unlike the 1-best search, it grows with ``T``).
        posteriors: also record the lattice and return the posterior of every transition
            id at every frame (:attr:`DecodeResult.posteriors`): forward-backward in the log
            semiring over the lattice's arcs within ``lattice_beam`` of the best path, with
            the acoustic costs scaled by ``acoustic_scale`` (Kaldi's ``lattice-to-post
            --acoustic-scale``). A state-level lattice: every alignment of a word sequence
            counts, where Kaldi's determinized lattices keep each word sequence's best one.

    Returns:
        The best path (:class:`DecodeResult`), with the n-best list when asked for.

    Raises:
        ValueError: bad shapes, options (``nbest < 1``, ``lattice_beam <= 0``,
            ``gc_frames < 1``), or an input label ``tid2pdf`` does not map to a column of
            ``loglikes``.
        DecodingError: no token survives a frame (every path is impossible: ``-inf`` or NaN
            scores, or a graph with dead ends).
    """
    if isinstance(loglikes, torch.Tensor):
        dev = loglikes.device
        loglikes = FrameScores.from_tensor(loglikes)
    else:
        dev = None  # the graph's
    _check_search_options(beam=beam, max_active=max_active, gc_threshold=gc_threshold,
                          gc_frames=gc_frames, nbest=nbest, lattice_beam=lattice_beam)
    if isinstance(graph, pynini.Fst):
        graph = DecodingGraph.from_fst(graph)
    dev = graph.device if dev is None else dev
    g = graph.to(dev)
    T = loglikes.num_frames
    col = _emitting_columns(g, tid2pdf, loglikes.num_columns)

    record = nbest > 1 or posteriors
    if record and T > _LONG_LATTICE_FRAMES:
        logger.warning("n-best or posteriors from a lattice of %d frames: the lattice grows with the "
                       "utterance (only the 1-best search is bounded); segment long "
                       "recordings for n-best lists", T)
    lattice = _Lattice(g, float(lattice_beam), col) if record else None
    search = _Search(g, float(beam), max_active, lattice, gc_threshold=gc_threshold,
                     gc_frames=gc_frames)
    e_weight = g.weight[:g.num_emitting]
    z = torch.zeros(1, dtype=torch.int64, device=dev)
    states, costs, idx = search.frame(
        torch.tensor([g.start], device=dev), torch.zeros(1, dtype=torch.float64, device=dev),
        z - 1, z - 1, torch.full((1,), math.nan, dtype=torch.float64, device=dev))
    num_active = torch.zeros(T, dtype=torch.int64)
    for t, lls_t, scores_t in _frames(loglikes, dev, acoustic_scale):
        tok, arc = _expand(g.e_offsets, search.e_sizes, states, search.iota)
        cost = (_take(costs, tok) + _take(e_weight, arc)
                + _take(scores_t, _take(col, arc)))
        best = float(cost.min()) if cost.numel() else math.inf
        if not math.isfinite(best):
            raise DecodingError(f"frame {t}: no token survived (every arc from the "
                                f"{states.numel()} active states costs inf or NaN: -inf or "
                                "NaN log-likelihoods, or a graph state without arcs?)")
        limit = best + beam
        ok = _where(cost <= limit if math.isfinite(limit) else cost < math.inf)
        if ok.numel() < cost.numel():
            tok, arc, cost = _take(tok, ok), _take(arc, ok), _take(cost, ok)
        dst = _take(g.e_dst, arc)
        sel = search.best_per_dst(dst, cost)
        if lattice is not None:
            lattice.emitting(_take(states, tok), arc, cost, best, sel, scores_t)
        tok, arc, cost, dst = _take(tok, sel), _take(arc, sel), _take(cost, sel), _take(dst, sel)
        states, costs, idx = search.frame(dst, cost, _take(idx, tok), arc,
                                          _take(lls_t, _take(col, arc)))
        num_active[t] = states.numel()
        idx = search.collect(idx)

    return _best_path(g, search, lattice, states, costs, idx, num_active, acoustic_scale,
                      nbest, posteriors)


def decode_fst_batch(graph: pynini.Fst | DecodingGraph, loglikes: Sequence[torch.Tensor],
                     tid2pdf: torch.Tensor, *, acoustic_scale: float = 0.1,
                     beam: float = 13.0, max_active: int = 7000,
                     gc_threshold: int = 1_000_000, gc_frames: int = 1000
                     ) -> list[DecodeResult | DecodingError]:
    """:func:`decode_fst` (1-best) of several utterances at once: one search over the union
    of their token sets, so that each torch call of a frame serves every utterance. The
    per-frame work of the search is dominated by the fixed cost of its ~100 small torch
    calls, not by the tokens they process, so ``B`` utterances take little more time per
    frame than one.

    Each utterance is searched exactly as by :func:`decode_fst` with the same options: its
    own beam (relative to its best token), its own ``max_active`` and its own graph states
    (token state ``u * N + s``), so the results are the same (up to the choice between
    exactly tied paths). Utterances may differ in length; each is finished at its last
    frame and its tokens leave the search. Sorting utterances by length before batching
    them keeps the batch full.

    Args:
        graph: as for :func:`decode_fst`.
        loglikes: ``B`` tensors ``(T_b, S)`` of per-frame scores (10 ms frames), the same
            ``S`` for all, on one device (where the search runs). Held whole: use
            :func:`decode_fst` with :class:`FrameScores` for long recordings.
        tid2pdf, acoustic_scale, beam, max_active, gc_threshold, gc_frames: as for
            :func:`decode_fst` (no partial traceback here: batches of long utterances keep
            every frame's backpointer chunk until they end).

    Returns:
        ``B`` results in input order: a :class:`DecodeResult` (``nbest`` None), or the
        :class:`DecodingError` of an utterance whose tokens all died (the others go on).

    Raises:
        ValueError: bad shapes or options, as for :func:`decode_fst`, or scores with
            different column counts or devices.
    """
    _check_search_options(beam=beam, max_active=max_active, gc_threshold=gc_threshold,
                          gc_frames=gc_frames, nbest=1, lattice_beam=1.0)
    B = len(loglikes)
    if not B:
        return []
    if any(x.dim() != 2 for x in loglikes):
        raise ValueError(f"expected (T, S) scores, got shapes {[tuple(x.shape) for x in loglikes]}")
    S, dev = loglikes[0].shape[1], loglikes[0].device
    if any(x.shape[1] != S or x.device != dev for x in loglikes):
        raise ValueError("all utterances' scores need the same number of columns and device")
    if isinstance(graph, pynini.Fst):
        graph = DecodingGraph.from_fst(graph)
    g = graph.to(dev)
    N = g.num_states
    col = _emitting_columns(g, tid2pdf, S)
    lens = [x.shape[0] for x in loglikes]
    T = max(lens)
    scores = torch.zeros(T, B, S, dtype=loglikes[0].dtype, device=dev)
    for b, x in enumerate(loglikes):
        scores[:lens[b], b] = x.detach()
    ending: dict[int, list[int]] = {}
    for b, n in enumerate(lens):
        ending.setdefault(n - 1, []).append(b)
    results: list[DecodeResult | DecodingError | None] = [None] * B

    search = _Search(g, float(beam), max_active, None, batch=B,
                     gc_threshold=gc_threshold, gc_frames=gc_frames)
    e_weight = g.weight[:g.num_emitting]
    base = torch.arange(B, device=dev) * N
    minus = torch.full((B,), -1, dtype=torch.int64, device=dev)
    states, costs, idx = search.frame(
        base + g.start, torch.zeros(B, dtype=torch.float64, device=dev), minus, minus,
        torch.full((B,), math.nan, dtype=torch.float64, device=dev))
    num_active = torch.zeros(T, B, dtype=torch.int64)

    def finish(t: int, ut: torch.Tensor) -> None:
        """Trace the utterances ending at frame ``t`` (-1: those without frames) and set
        the error of those without tokens; their tokens leave the search."""
        nonlocal states, costs, idx
        done = ending.pop(t, [])
        dead = [] if t < 0 else [b for b in _where(num_active[t] == 0).tolist()
                                 if results[b] is None and lens[b] > t]
        for b in dead:
            results[b] = DecodingError(f"frame {t}: no token survived (every arc from the "
                                       "active states costs inf or NaN: -inf or NaN "
                                       "log-likelihoods, or a graph state without arcs?)")
        for b in done:
            if results[b] is None:
                mine = _where(ut == b)
                results[b] = _best_path(g, search, None, _take(states, mine) - b * N,
                                        _take(costs, mine), _take(idx, mine),
                                        num_active[:t + 1, b].clone(), acoustic_scale, 1)
        if done or dead:
            keep = _where(torch.isin(ut, torch.tensor(done + dead, device=dev), invert=True))
            states, costs, idx = _take(states, keep), _take(costs, keep), _take(idx, keep)

    finish(-1, states // N)
    for t in range(T):
        if not states.numel():
            break
        sc = scores[t].reshape(-1)
        local = torch.remainder(states, N)
        tok, arc = _expand(g.e_offsets, search.e_sizes, local, search.iota)
        ut = _take(states // N, tok)
        ll = _take(sc, ut * S + _take(col, arc)).to(torch.float64)
        cost = _take(costs, tok) + _take(e_weight, arc) + ll * -acoustic_scale
        ok = search.within_beam(ut, cost, None)
        if ok.numel() < cost.numel():
            tok, arc, cost, ut, ll = (_take(tok, ok), _take(arc, ok), _take(cost, ok),
                                      _take(ut, ok), _take(ll, ok))
        dst = _take(g.e_dst, arc) + ut * N
        sel = search.best_per_dst(dst, cost)
        tok, arc, cost, dst, ll = (_take(tok, sel), _take(arc, sel), _take(cost, sel),
                                   _take(dst, sel), _take(ll, sel))
        states, costs, idx = search.frame(dst, cost, _take(idx, tok), arc, ll)
        ut = states // N
        num_active[t] = torch.bincount(ut, minlength=B).cpu()
        finish(t, ut)
        idx = search.collect(idx)
    return results  # type: ignore[return-value]


def _frames(scores: FrameScores, dev: torch.device, acoustic_scale: float
            ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(t, (S,) float64 scores, (S,) float64 costs -acoustic_scale * scores)`` of each
    frame, converted one block at a time."""
    for t0, blk in scores.blocks():
        blk = blk.detach().to(dev, torch.float64)
        costs = blk * -acoustic_scale
        for i in range(blk.shape[0]):
            yield t0 + i, blk[i], costs[i]


def _rank_first(hyps: list[tuple[list[int], float]], words: list[int], cost: float, n: int
                ) -> list[tuple[list[int], float]]:
    """Absolute costs of the lattice's n-best (``hyps``: costs relative to the best path),
    the 1-best ``words`` first at exactly ``cost`` (it is first anyway but for ties)."""
    rest = [(w, cost + max(rel, 0.0)) for w, rel in hyps if w != words]
    return [(list(words), cost), *rest][:n]


def _check_search_options(*, beam: float, max_active: int, gc_threshold: int, gc_frames: int,
                          nbest: int, lattice_beam: float) -> None:
    """The :func:`decode_fst` option checks (``ValueError`` naming the option)."""
    if not (beam > 0):
        raise ValueError(f"beam must be > 0, got {beam}")
    for name, v in (("max_active", max_active), ("gc_threshold", gc_threshold),
                    ("gc_frames", gc_frames), ("nbest", nbest)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not (lattice_beam > 0):
        raise ValueError(f"lattice_beam must be > 0, got {lattice_beam}")


def _emitting_columns(g: DecodingGraph, tid2pdf: torch.Tensor, num_columns: int
                      ) -> torch.Tensor:
    """``(E,)`` score column of each emitting arc of ``g``; ``ValueError`` when ``tid2pdf``
    does not cover the graph's input labels or maps them outside ``num_columns``."""
    tid2pdf = torch.as_tensor(tid2pdf, dtype=torch.int64).to(g.ilabel.device)
    e_ilabel = g.ilabel[:g.num_emitting]
    if e_ilabel.numel():
        top = int(e_ilabel.max())
        if top >= tid2pdf.numel():
            raise ValueError(f"the graph has input label {top} but tid2pdf has only "
                             f"{tid2pdf.numel()} entries; expected the transition model the "
                             "graph was built with")
    col = tid2pdf[e_ilabel]
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= num_columns):
        raise ValueError(f"tid2pdf maps graph input labels to columns "
                         f"{int(col.min())}..{int(col.max())}, but loglikes has "
                         f"{num_columns} columns")
    return col


def _best_path(g: DecodingGraph, search: _Search, lattice: _Lattice | None,
               states: torch.Tensor, costs: torch.Tensor, idx: torch.Tensor,
               num_active: torch.Tensor, acoustic_scale: float, nbest: int,
               posteriors: bool = False) -> DecodeResult:
    """The :class:`DecodeResult` of the search's surviving tokens after the last frame: the
    best final token (else the best token, with a warning), its traced arcs, words and
    costs, and the n-best list of the lattice when one was recorded."""
    dev = costs.device
    T = num_active.numel()
    total = costs + g.final[states]
    reached_final = bool(torch.isfinite(total).any())
    if reached_final:
        best_i = int(torch.argmin(total))
        final_cost = float(g.final[states[best_i]])
    else:
        logger.warning("no token reached a final state after %d frames; using the best "
                       "non-final token (the output may be a partial sentence)", T)
        best_i = int(torch.argmin(costs))
        final_cost = 0.0
    tail, tail_ll = search.trace(int(idx[best_i]))
    path = torch.cat([*search.prefix_arcs, torch.tensor(tail, dtype=torch.int64, device=dev)])
    path_ll = torch.cat([*search.prefix_ll,
                         torch.tensor(tail_ll, dtype=torch.float64, device=dev)])
    olabels = g.olabel[path]
    words = [int(w) for w in olabels[olabels != 0].tolist()]
    tids = g.ilabel[path]
    tids = tids[tids != 0]
    if tids.numel() != T or path_ll.numel() != T:  # an invariant of the search
        raise DecodingError(f"the traced path reads {tids.numel()} labels for {T} frames")
    lm_cost = float(g.weight[path].sum()) + final_cost
    # the frames' scores of the path, as stored during the search (the scores themselves
    # are gone): the same float64 vector, summed the same way, as indexing them afterwards
    am_cost = -float(path_ll.sum()) if T else 0.0
    cost = lm_cost + acoustic_scale * am_cost
    nbest_list = posts = None
    if lattice is not None:
        end_final = g.final[states] if reached_final else torch.zeros_like(costs)
        if nbest > 1:
            nbest_list = _rank_first(lattice.nbest(states, end_final, nbest), words, cost,
                                     nbest)
        if posteriors:
            posts = lattice.posteriors(states, end_final)
    return DecodeResult(words=words, tids=tids.cpu(), cost=cost, am_cost=am_cost,
                        lm_cost=lm_cost, reached_final=reached_final, num_active=num_active,
                        nbest=nbest_list, posteriors=posts)
