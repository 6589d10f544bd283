"""Kaldi's ``FasterDecoder`` as an optional, fast backend beside
:func:`asrkit.decode.wfst.decode_fst` for HMM-GMM decoding over ``HCLG``.

The search is Kaldi's ``FasterDecoder`` (``gmm-decode-faster``; Povey et al., 2011, "The
Kaldi speech recognition toolkit", ASRU) in C++, from k2-fsa's ``kaldi-decoder`` package,
over the graph read by ``kaldifst`` (both wheels: ``pip install -e '.[kaldi]'`` in the asrkit
checkout). Same inputs and outputs as ``decode_fst``: ``(T, S)`` log-likelihoods of pdfs,
``tid2pdf``, and a :class:`asrkit.decode.wfst.DecodeResult` (words, per-frame transition
ids, costs).

How the scores reach it: ``kaldi_decoder`` exposes one decodable, ``DecodableCtc(matrix)``,
whose ``LogLikelihood(t, i)`` is ``matrix[t, i - 1]`` (input labels are 1-based). We give it
the ``(T, L - 1)`` float32 matrix of scaled scores per *transition id*,
``acoustic_scale * loglikes[t, tid2pdf[i]]`` in column ``i - 1`` (Kaldi's
``DecodableAmDiagGmmScaled`` computes the same values on demand). It takes ``4 T (L - 1)``
bytes: 20 MB for a 60-s utterance with 1,445 transition ids (AN4 tri2), so the backend is for
utterances of ordinary length (a warning beyond :data:`LONG_FRAMES`).

What differs from ``decode_fst`` (none of it changes the 1-best on AN4, see
``scripts/bench/wfst_decoders.py``):

* Kaldi scores in float32 (ours in float64): near-ties can break the other way.
* ``max_active``: Kaldi keeps the ``max_active`` best tokens by an adaptive cutoff (and the
  next frame's beam narrows to it plus ``beam_delta``); ours keeps exactly the ``max_active``
  best. Kaldi also widens the beam to keep ``min_active`` tokens (1 here by default, so that
  with a beam wide enough both keep the same tokens).
* No n-best (``FasterDecoder`` keeps no lattice) and no token counts:
  ``DecodeResult.num_active`` is all ``-1``.

Shapes: ``T`` frames (10 ms), ``S`` pdfs, ``L`` entries of ``tid2pdf`` (transition ids plus
the unused entry 0).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pynini
import torch

from asrkit.decode.wfst.decoder import (
    DecodeResult,
    DecodingError,
    FrameScores,
    _read_vector_fst,
)

__all__ = ["KaldiFasterDecoder", "kaldi_decoder_available", "require_kaldi_decoder"]

logger = logging.getLogger(__name__)

#: Utterances longer than this (10 min at 10 ms) get a warning: their whole score matrix is
#: held (module docstring).
LONG_FRAMES = 60_000

_INSTALL_HINT = ("the kaldi decoding backend needs the kaldi-decoder and kaldifst packages: "
                 "pip install -e '.[kaldi]' in the asrkit checkout (or pip install "
                 "kaldi-decoder kaldifst)")


def kaldi_decoder_available() -> bool:
    """Whether ``kaldi-decoder`` and ``kaldifst`` are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("kaldi_decoder", "kaldifst"))


def require_kaldi_decoder() -> None:
    """Raise ImportError naming the install command unless the backend's packages are
    installed."""
    _modules()


def _modules():
    """``(kaldi_decoder, kaldifst)``, or ImportError with the install hint."""
    try:
        import kaldi_decoder
        import kaldifst
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    return kaldi_decoder, kaldifst


class KaldiFasterDecoder:
    """Kaldi's ``FasterDecoder`` over one graph, reused for many utterances.

    Args:
        graph: ``HCLG.fst`` (OpenFst binary, tropical, as :func:`asrkit.decode.gmm.make_graph`
            writes it) or the same as a pynini FST.
        tid2pdf: ``(L,)`` int64 pdf of each transition id (entry 0 unused):
            ``TransitionModel.tid2pdf``; must cover every input label of the graph.
        acoustic_scale: weight of the acoustic log-likelihoods (Kaldi's ``--acoustic-scale``,
            0.1).
        beam: decoding beam in cost units (13).
        max_active: most tokens per frame (7000).
        min_active: fewest tokens per frame; the beam widens to keep them (1; Kaldi's
            default is 20).
        beam_delta: Kaldi's ``--beam-delta`` (0.5), used when ``max_active`` prunes.

    Raises:
        ImportError: ``kaldi-decoder`` or ``kaldifst`` is not installed (the message names the
            install command).
        FileNotFoundError: no graph file.
        ValueError: a bad option value, or a graph that kaldifst cannot read.
    """

    def __init__(self, graph: str | os.PathLike | pynini.Fst, tid2pdf: torch.Tensor, *,
                 acoustic_scale: float = 0.1, beam: float = 13.0, max_active: int = 7000,
                 min_active: int = 1, beam_delta: float = 0.5) -> None:
        kd, kfst = _modules()
        if not (beam > 0):
            raise ValueError(f"beam must be > 0, got {beam}")
        if not (isinstance(max_active, int) and max_active >= 1):
            raise ValueError(f"max_active must be an integer >= 1, got {max_active!r}")
        if not (isinstance(min_active, int) and 0 <= min_active <= max_active):
            raise ValueError(f"min_active must be an integer in 0..max_active, got "
                             f"{min_active!r}")
        self._kd = kd
        self.acoustic_scale = float(acoustic_scale)
        self.tid2pdf = torch.as_tensor(tid2pdf, dtype=torch.int64).cpu()
        if self.tid2pdf.dim() != 1 or self.tid2pdf.numel() < 2:
            raise ValueError(f"tid2pdf must be (L,) with L >= 2, got shape "
                             f"{tuple(self.tid2pdf.shape)}")
        with tempfile.TemporaryDirectory() as tmp:
            path = _graph_file(graph, Path(tmp))
            fst = _read_graph(path, kfst)
            top = _max_ilabel(path)
        self._fst = kfst.StdConstFst(fst)  # what Kaldi's decoders read: faster arc access
        self._kfst = kfst
        if top >= self.tid2pdf.numel():
            raise ValueError(f"the graph has input label {top} but tid2pdf has "
                             f"only {self.tid2pdf.numel()} entries; expected the transition "
                             "model the graph was built with")
        self._opts = kd.FasterDecoderOptions(beam=float(beam), max_active=max_active,
                                             min_active=min_active, beam_delta=beam_delta)
        self._decoder = kd.FasterDecoder(self._fst, self._opts)

    def decode(self, loglikes: torch.Tensor | FrameScores) -> DecodeResult:
        """The best path for one utterance.

        Args:
            loglikes: ``(T, S)`` natural-log likelihoods of the pdfs
                (:meth:`asrkit.models.hmm_gmm.AcousticModel.loglik`), any float dtype and
                device, or the same as :class:`asrkit.decode.wfst.FrameScores`.

        Returns:
            :class:`asrkit.decode.wfst.DecodeResult`: ``words``, ``tids``, ``cost``,
            ``am_cost`` (float64 sum of the path's unscaled scores, as ``decode_fst``),
            ``lm_cost`` (Kaldi's graph cost, float32 sums), ``reached_final``;
            ``num_active`` all ``-1`` (not reported by Kaldi), ``nbest`` None.

        Raises:
            ValueError: ``loglikes`` has another number of columns than ``tid2pdf`` needs.
            DecodingError: no path survives (``-inf``/NaN scores or a dead-end graph).
        """
        scores = _scores(loglikes)
        T, S = scores.shape
        top = int(self.tid2pdf[1:].max())
        if top >= S:
            raise ValueError(f"tid2pdf maps transition ids to pdfs up to {top}, but loglikes "
                             f"has {S} columns")
        if T > LONG_FRAMES:
            logger.warning("the kaldi backend holds the scores of all %d frames (%.0f MB); "
                           "segment long recordings or use the asrkit backend", T,
                           4 * T * (self.tid2pdf.numel() - 1) / 2**20)
        if T == 0:
            raise DecodingError("no frames to decode")
        mat = (scores[:, self.tid2pdf[1:]] * self.acoustic_scale).to(torch.float32)
        if not bool(torch.isfinite(mat).any(1).all()):
            t = int(torch.nonzero(~torch.isfinite(mat).any(1))[0])
            raise DecodingError(f"frame {t}: every score is -inf or NaN")
        decodable = self._kd.DecodableCtc(np.ascontiguousarray(mat.numpy()))
        dec = self._decoder
        dec.decode(decodable)
        if dec.num_frames_decoded() != T:
            raise DecodingError(f"Kaldi's FasterDecoder stopped after "
                                f"{dec.num_frames_decoded()} of {T} frames")
        reached_final = bool(dec.reached_final())
        ok, lat = dec.get_best_path(use_final_probs=True)
        if not ok:
            raise DecodingError(f"no token survived the {T} frames (every path is impossible: "
                                "-inf or NaN log-likelihoods, or a graph with dead ends)")
        linear, tids, words, weight = self._kfst.get_linear_symbol_sequence(lat)
        if not linear:
            raise DecodingError("Kaldi's best path is not linear")
        lm_cost = float(weight.value1)  # value2: the scaled acoustic cost
        if len(tids) != T:
            raise DecodingError(f"the traced path reads {len(tids)} labels for {T} frames")
        if not reached_final:
            logger.warning("no token reached a final state after %d frames; using the best "
                           "non-final token (the output may be a partial sentence)", T)
        tids_t = torch.tensor(tids, dtype=torch.int64)
        am_cost = -float(scores[torch.arange(T), self.tid2pdf[tids_t]].sum())
        return DecodeResult(words=words, tids=tids_t, cost=lm_cost + self.acoustic_scale * am_cost,
                            am_cost=am_cost, lm_cost=lm_cost, reached_final=reached_final,
                            num_active=torch.full((T,), -1, dtype=torch.int64))


def _scores(loglikes: torch.Tensor | FrameScores) -> torch.Tensor:
    """``(T, S)`` float64 CPU scores of a tensor or of :class:`FrameScores` blocks."""
    if isinstance(loglikes, FrameScores):
        blocks = [b.detach().to("cpu", torch.float64) for _, b in loglikes.blocks()]
        return torch.cat(blocks) if blocks else torch.zeros(0, loglikes.num_columns,
                                                            dtype=torch.float64)
    if loglikes.dim() != 2:
        raise ValueError(f"loglikes must be (T, S), got shape {tuple(loglikes.shape)}")
    return loglikes.detach().to("cpu", torch.float64)


def _graph_file(graph: str | os.PathLike | pynini.Fst, tmp: Path) -> Path:
    """The graph's file: ``graph`` itself, or a pynini FST written into ``tmp``."""
    if isinstance(graph, pynini.Fst):
        if graph.arc_type() != "standard":
            raise ValueError(f"expected a tropical ('standard') FST, got arc type "
                             f"{graph.arc_type()!r}")
        path = tmp / "graph.fst"
        graph.write(str(path))
        return path
    return Path(graph)


def _read_graph(path: Path, kfst):
    """A ``kaldifst.StdVectorFst`` of a graph file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; build it with asrkit mkgraph")
    try:
        fst = kfst.StdVectorFst.read(str(path))
    except Exception as e:  # pybind raises RuntimeError or others
        raise ValueError(f"{path}: kaldifst cannot read it as a tropical vector FST: {e}") from e
    if fst is None or fst.num_states == 0 or fst.start < 0:
        raise ValueError(f"{path}: an empty graph (no start state), or not an OpenFst "
                         "tropical FST")
    return fst


def _max_ilabel(path: Path) -> int:
    """Largest input label of the graph file (checked against ``tid2pdf``), from OpenFst's
    binary format as :class:`asrkit.decode.wfst.DecodingGraph` parses it."""
    fst = pynini.Fst.read(str(path))
    if fst.input_symbols() is not None or fst.output_symbols() is not None:
        fst = fst.copy()
        fst.set_input_symbols(None)
        fst.set_output_symbols(None)
    arcs = _read_vector_fst(fst.write_to_string())[4]
    return int(arcs["i"].max()) if arcs.size else 0
