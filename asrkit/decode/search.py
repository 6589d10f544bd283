"""One search object for a neural model's encoder output: the method, its options, its LM or
graph, built once and called per batch; with word time spans from the CTC posteriors.

:class:`CtcModelSearch` runs the searchers of :mod:`asrkit.decode.ctc`,
:mod:`asrkit.decode.attention` and :mod:`asrkit.decode.wfst` as ``asrkit decode`` does
(:func:`asrkit.decode.run.decode_data_dir`, same methods and options, same shallow-fusion
scorers from :func:`asrkit.lm.fusion.fusion_scorer`) and returns the 1-best of each
utterance as words with their encoder-frame spans:

* ``wfst``: the spans of the graph's best path (:class:`asrkit.decode.wfst.CtcWfstResult`);
* every other method: the hypothesis' tokens are force-aligned to the CTC posteriors with
  ``torchaudio.functional.forced_align`` (Viterbi CTC alignment, as in Kürzinger et al.,
  2020, "CTC-segmentation") and ``merge_tokens`` gives each token's frames and mean
  posterior; a word runs from the first frame of its first token to the last frame of its
  last token (tokens grouped at sentencepiece's ``▁`` word starts). For ``ctc_greedy`` this
  is the best path itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID, Tokenizer

__all__ = ["SEARCH_METHODS", "CtcModelSearch", "WordSpan", "word_spans"]

logger = logging.getLogger(__name__)

SEARCH_METHODS = ("ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint_ctc_attention",
                  "wfst")
"""Methods of :class:`CtcModelSearch` (``asrkit decode``'s, without the Flashlight backend)."""
_WORD_START = "\u2581"


@dataclass
class WordSpan:
    """A recognised word: encoder frames ``start`` to ``end`` (end exclusive) and the mean
    CTC posterior of its tokens' frames (``conf``, None when unknown)."""

    word: str
    start: int
    end: int
    conf: float | None = None


def word_spans(log_probs: torch.Tensor, ids: list[int], tok: Tokenizer) -> list[WordSpan]:
    """Words of a token sequence with their frames, by CTC forced alignment.

    Args:
        log_probs: ``(T', V)`` CTC log posteriors of one utterance (valid frames only).
        ids: the hypothesis' token ids (no blank).
        tok: the tokenizer (pieces starting with ``▁`` start a word).

    Returns:
        One :class:`WordSpan` per word of ``tok.decode(ids)``. When the tokens cannot be
        aligned (more tokens than frames allow), the words share the frames evenly, with
        ``conf`` None.
    """
    ids = [i for i in ids if i not in (BLANK_ID, SOS_EOS_ID)]
    if not ids:
        return []
    pieces = tok.pieces(ids)
    groups: list[list[int]] = []
    for k, p in enumerate(pieces):
        if p.startswith(_WORD_START) or not groups:
            groups.append([k])
        else:
            groups[-1].append(k)
    spans = None
    T = log_probs.shape[0]
    try:
        lp = log_probs.detach().float().cpu().unsqueeze(0)
        ali, scores = AF.forced_align(lp, torch.tensor([ids], dtype=torch.int32), blank=BLANK_ID)
        spans = AF.merge_tokens(ali[0], scores[0].exp(), blank=BLANK_ID)
        if len(spans) != len(ids):
            spans = None
    except (RuntimeError, ValueError) as e:  # infeasible: T' < U + repeats
        logger.debug("no CTC alignment for %d tokens over %d frames: %s", len(ids), T, e)
    out: list[WordSpan] = []
    for gi, g in enumerate(groups):
        word = tok.decode([ids[k] for k in g]).strip()
        if not word:
            continue  # a lone "▁"
        if spans is None:
            out.append(WordSpan(word, T * gi // len(groups), T * (gi + 1) // len(groups)))
            continue
        body = [k for k in g if pieces[k] != _WORD_START] or g
        s = [spans[k] for k in body]
        conf = sum(x.score * (x.end - x.start) for x in s) / sum(x.end - x.start for x in s)
        out.append(WordSpan(word, s[0].start, s[-1].end, float(conf)))
    return out


class CtcModelSearch:
    """The 1-best search of ``asrkit decode`` for a CTC (or hybrid CTC/attention) model.

    Args:
        model: an :class:`asrkit.models.base.CTCModel` in eval mode.
        tok: its tokenizer.
        method: one of :data:`SEARCH_METHODS`.
        beam: beam size of the beam methods (default 10); for ``wfst`` the search beam in
            cost units (default 16).
        token_topk, ctc_weight, length_penalty, maxlen_ratio: as for
            :func:`asrkit.decode.run.decode_data_dir`.
        lm: shallow-fusion LM for the beam methods (ARPA file over words or pieces, or an
            ``asrkit train-lm`` neural LM dir), or None.
        lm_weight: weight of the LM (``wfst``: the graph's LM weight, acoustic scale
            ``1 / lm_weight``).
        word_bonus: per-word bonus inside the LM weight (word n-grams).
        graph: ``wfst``: the ``asrkit mkgraph --ctc`` graph dir.
        max_active, blank_penalty: ``wfst`` options.
        device: where the LM scorer runs.

    Raises:
        ValueError: an unknown method or bad option combination (the checks of
            ``decode_data_dir``), an attention method for a CTC-only model.
        FileNotFoundError: a missing LM or graph.
    """

    def __init__(self, model, tok: Tokenizer, method: str = "ctc_greedy", *,
                 beam: float | None = None, token_topk: int | None = None,
                 ctc_weight: float = 0.3, length_penalty: float = 0.0,
                 maxlen_ratio: float = 1.0, lm: str | os.PathLike | None = None,
                 lm_weight: float = 0.5, word_bonus: float = 0.0,
                 graph: str | os.PathLike | None = None, max_active: int = 7000,
                 blank_penalty: float = 0.0, device: torch.device | str = "cpu") -> None:
        if method not in SEARCH_METHODS:
            raise ValueError(f"unknown decoding method {method!r}; choose from "
                             f"{SEARCH_METHODS}")
        if lm is not None and method in ("ctc_greedy", "wfst"):
            raise ValueError(f"an LM needs a beam method (ctc_prefix_beam, attention_beam, "
                             f"joint_ctc_attention), not {method}"
                             + (" (wfst takes its LM from the graph)" if method == "wfst"
                                else ""))
        if method in ("attention_beam", "joint_ctc_attention") and not getattr(
                model, "has_decoder", False):
            raise ValueError(f"{method} needs a model with an attention decoder; this one "
                             "is CTC-only (use ctc_greedy or ctc_prefix_beam)")
        self.model, self.tok, self.method = model, tok, method
        self.beam = int(10 if beam is None else beam)
        if method != "wfst" and self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.topk = self.beam if token_topk is None else token_topk
        self.ctc_weight, self.length_penalty = ctc_weight, length_penalty
        self.maxlen_ratio = maxlen_ratio
        self.fusion: dict = {}
        if method == "wfst":
            if graph is None:
                raise ValueError("method wfst needs a graph dir (asrkit mkgraph --ctc "
                                 "TOKENIZER LM.arpa OUT)")
            if not lm_weight > 0:
                raise ValueError(f"wfst: lm_weight must be > 0, got {lm_weight}")
            from asrkit.decode.wfst import CtcDecodingGraph

            self.graph = CtcDecodingGraph.load(graph, tokenizer=tok)
            self.wfst_opts = {"acoustic_scale": 1.0 / lm_weight,
                              "beam": 16.0 if beam is None else float(beam),
                              "max_active": max_active, "blank_penalty": blank_penalty}
        elif lm is not None:
            from asrkit.lm.fusion import fusion_scorer

            scorer = fusion_scorer(lm, tok, torch.device(device), word_bonus=word_bonus)
            self.fusion = {"scorer": scorer, "lm_weight": lm_weight}
            if method == "ctc_prefix_beam":
                self.fusion["final_scorer"] = scorer.final

    @torch.inference_mode()
    def __call__(self, enc: torch.Tensor, lens: torch.Tensor) -> list[list[WordSpan]]:
        """Decode a batch of encoder outputs.

        Args:
            enc: ``(B, T', D)`` encoder output (``model.encode``).
            lens: ``(B,)`` valid frames.

        Returns:
            Per utterance, its words with encoder-frame spans (:class:`WordSpan`).
        """
        log_probs = self.model.ctc_log_probs_from_encoder(enc)
        lp_cpu = log_probs.float().cpu()
        lens_cpu = lens.cpu()
        if self.method == "wfst":
            from asrkit.decode.wfst import decode_ctc_wfst_batch

            out = []
            for b, r in enumerate(decode_ctc_wfst_batch(lp_cpu, lens_cpu, self.graph,
                                                        **self.wfst_opts)):
                if r.segments is not None:
                    out.append([WordSpan(w, s, e) for w, (s, e) in zip(r.words, r.segments)])
                else:  # word spans from the path's tokens
                    out.append(word_spans(lp_cpu[b, :int(lens_cpu[b])], r.tokens, self.tok))
            return out
        if self.method == "ctc_greedy":
            from asrkit.decode.ctc import ctc_greedy

            ids = ctc_greedy(log_probs, lens)
        else:
            if self.method == "ctc_prefix_beam":
                from asrkit.decode.ctc import ctc_prefix_beam_search_batch

                res = ctc_prefix_beam_search_batch(lp_cpu, lens_cpu, self.beam,
                                                   token_topk=self.topk, **self.fusion)
            elif self.method == "attention_beam":
                from asrkit.decode.attention import attention_beam_search

                res = attention_beam_search(self.model, enc, lens, self.beam,
                                            maxlen_ratio=self.maxlen_ratio,
                                            length_penalty=self.length_penalty, **self.fusion)
            else:
                from asrkit.decode.attention import joint_ctc_attention_beam_search

                res = joint_ctc_attention_beam_search(
                    self.model, enc, lens, self.beam, self.ctc_weight, ctc_log_probs=log_probs,
                    maxlen_ratio=self.maxlen_ratio, length_penalty=self.length_penalty,
                    **self.fusion)
            if self.fusion:
                self.fusion["scorer"].reset()
            ids = [r[0][0] if r else [] for r in res]
        return [word_spans(lp_cpu[b, :int(lens_cpu[b])], list(i), self.tok)
                for b, i in enumerate(ids)]
