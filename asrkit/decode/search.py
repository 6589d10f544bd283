"""One searcher per decoding method of a neural model, built in one place
(:func:`build_search`) from the method's options object (:mod:`asrkit.decode.options`) and
called per batch of encoder output; ``asrkit decode``
(:func:`asrkit.decode.run.decode_data_dir`), ``asrkit transcribe`` and the benchmarks all
use them.

=========================  ==========================================================
searcher                   algorithm
=========================  ==========================================================
:class:`CtcGreedySearch`   best path (:func:`asrkit.decode.ctc.ctc_greedy`)
:class:`CtcPrefixBeamSearch`  CTC prefix beam search (Hannun et al., 2014)
:class:`FlashlightSearch`  Flashlight's C++ CTC beam search (torchaudio)
:class:`AttentionSearch`   attention-decoder beam search, alone or joint with CTC prefix
                           scores (Watanabe et al., 2017)
:class:`WfstSearch`        Viterbi beam search over a TLG graph (EESEN, Miao et al., 2015)
=========================  ==========================================================

Each returns one :class:`Hypothesis` per utterance (its text, token ids, the n-best texts).
Shallow-fusion scorers come from :func:`asrkit.lm.fusion.fused_scorer`.

:class:`CtcModelSearch` (``asrkit transcribe``) adds word time spans from the CTC posteriors:

* ``wfst``: the spans of the graph's best path (:class:`asrkit.decode.wfst.CtcWfstResult`);
* every other method: the hypothesis' tokens are force-aligned to the CTC posteriors with
  ``torchaudio.functional.forced_align`` (Viterbi CTC alignment, as in Kürzinger et al.,
  2020, "CTC-segmentation") and ``merge_tokens`` gives each token's frames and mean
  posterior; a word runs from the first frame of its first token to the last frame of its
  last token (tokens grouped at sentencepiece's ``▁`` word starts). For ``ctc_greedy`` this
  is the best path itself.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.functional as AF

from asrkit.decode.options import (
    METHODS,
    AttentionBeamOptions,
    CtcGreedyOptions,
    CtcPrefixBeamOptions,
    FlashlightOptions,
    JointCtcAttentionOptions,
    LlmBeamOptions,
    LmFusionOptions,
    SearchOptions,
    WfstOptions,
)
from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID, Tokenizer

__all__ = ["SEARCH_METHODS", "AttentionSearch", "CtcGreedySearch", "CtcModelSearch",
           "CtcPrefixBeamSearch", "FlashlightSearch", "Hypothesis", "WfstSearch", "WordSpan",
           "build_search", "word_spans"]

logger = logging.getLogger(__name__)

SEARCH_METHODS = METHODS
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


@dataclass
class Hypothesis:
    """One utterance's search result.

    Attributes:
        text: the 1-best words, as written to ``text``.
        ids: the 1-best's token ids (for ``wfst``, the tokens of the graph's best path).
        nbest: distinct texts with natural-log scores, best first, when ``nbest > 1``
            was asked for; else None.
        segments: ``wfst``: the words' encoder-frame spans ``(start, end)`` when the graph
            gives them; else None.
    """

    text: str
    ids: list[int]
    nbest: list[tuple[str, float]] | None = None
    segments: list[tuple[int, int]] | None = None


def distinct_texts(nbest: list[tuple[list[int], float]], tok: Tokenizer, n: int
                   ) -> list[tuple[str, float]]:
    """The first ``n`` distinct texts of a token-level n-best list (best first).

    Different token sequences can spell the same words (e.g. with and without a trailing word
    boundary piece); a text keeps the score of its best token sequence.
    """
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for ids, score in nbest:
        text = " ".join(tok.decode(ids).split())
        if text not in seen:
            seen.add(text)
            out.append((text, score))
            if len(out) == n:
                break
    return out


class _TokenSearch(abc.ABC):
    """Base of the searches over tokens: each utterance's beam of ``(ids, score)`` becomes a
    :class:`Hypothesis`; the fusion scorer's cache is reset after every batch."""

    def __init__(self, opts: SearchOptions, tok: Tokenizer, scorer=None,
                 lm_weight: float = 0.0) -> None:
        self.opts, self.tok, self.scorer = opts, tok, scorer
        self.fusion = {"scorer": scorer, "lm_weight": lm_weight} if scorer is not None else {}

    @abc.abstractmethod
    def _beams(self, enc, lens, log_probs) -> list[list[tuple[list[int], float]]]:
        """Per utterance of the batch, its hypotheses ``(token ids, score)``, best first
        (arguments as :meth:`__call__`)."""

    def __call__(self, enc: torch.Tensor | None, lens: torch.Tensor,
                 log_probs: torch.Tensor) -> list[Hypothesis]:
        """Search a batch: ``enc`` ``(B, T', D)`` encoder output (None for utterances encoded
        in windows; only the attention searches need it), ``lens`` ``(B,)``, ``log_probs``
        ``(B, T', V)`` CTC log-posteriors. Returns one :class:`Hypothesis` per utterance."""
        beams = self._beams(enc, lens, log_probs)
        if self.scorer is not None:
            self.scorer.reset()
        n = self.opts.nbest
        return [Hypothesis(self.tok.decode(r[0][0]) if r else "", list(r[0][0]) if r else [],
                           distinct_texts(r, self.tok, n) if n > 1 else None) for r in beams]


class CtcGreedySearch(_TokenSearch):
    """Best path: argmax per frame, repeats merged, blanks dropped."""

    def _beams(self, enc, lens, log_probs):
        from asrkit.decode.ctc import ctc_greedy

        return [[(list(ids), 0.0)] for ids in ctc_greedy(log_probs, lens)]


class CtcPrefixBeamSearch(_TokenSearch):
    """CTC prefix beam search (:func:`asrkit.decode.ctc.ctc_prefix_beam_search_batch`), with
    shallow fusion (the LM's end-of-sentence score added at the end)."""

    def __init__(self, opts: CtcPrefixBeamOptions, tok: Tokenizer, scorer=None,
                 lm_weight: float = 0.0) -> None:
        super().__init__(opts, tok, scorer, lm_weight)
        if scorer is not None:
            self.fusion["final_scorer"] = scorer.final

    def _beams(self, enc, lens, log_probs):
        from asrkit.decode.ctc import ctc_prefix_beam_search_batch

        return ctc_prefix_beam_search_batch(log_probs, lens.cpu(), self.opts.beam,
                                            token_topk=self.opts.topk, **self.fusion)


class AttentionSearch(_TokenSearch):
    """Attention-decoder beam search alone (:class:`AttentionBeamOptions`) or joint with CTC
    prefix scores (:class:`JointCtcAttentionOptions`), with shallow fusion.

    Raises:
        ValueError: the model has no attention decoder.
    """

    def __init__(self, opts: AttentionBeamOptions, model, tok: Tokenizer, scorer=None,
                 lm_weight: float = 0.0) -> None:
        if not getattr(model, "has_decoder", False):
            raise ValueError(f"{opts.method} needs a model with an attention decoder; this "
                             "one is CTC-only (use ctc_greedy or ctc_prefix_beam)")
        super().__init__(opts, tok, scorer, lm_weight)
        self.model = model

    def _beams(self, enc, lens, log_probs):
        from asrkit.decode.attention import (
            attention_beam_search,
            joint_ctc_attention_beam_search,
        )

        o = self.opts
        common = {"maxlen_ratio": o.maxlen_ratio, "length_penalty": o.length_penalty,
                  **self.fusion}
        if isinstance(o, JointCtcAttentionOptions):
            return joint_ctc_attention_beam_search(self.model, enc, lens, o.beam, o.ctc_weight,
                                                   ctc_log_probs=log_probs, **common)
        return attention_beam_search(self.model, enc, lens, o.beam, **common)


class LlmSearch(_TokenSearch):
    """A speech-LLM's beam search (:class:`LlmBeamOptions`; the model's
    ``recognize_from_encoder``).

    Raises:
        ValueError: the model is not a speech-LLM.
    """

    def __init__(self, opts: LlmBeamOptions, model, tok) -> None:
        if not hasattr(model, "recognize_from_encoder"):
            raise ValueError("llm_beam needs a model=speech_llm experiment; use a CTC or "
                             "attention method for this model")
        super().__init__(opts, tok)
        self.model = model

    def _beams(self, enc, lens, log_probs):
        return self.model.recognize_from_encoder(enc, lens, beam=self.opts.beam,
                                                 nbest=self.opts.nbest,
                                                 max_new_tokens=self.opts.max_new_tokens)


class FlashlightSearch(_TokenSearch):
    """CTC beam search on Flashlight's C++ decoder (torchaudio), lexicon-free or constrained
    to ``opts.lexicon``, with a word n-gram (KenLM's when a lexicon is given and kenlm is
    installed).

    Raises:
        ValueError: a neural LM, ``extra_lms``, or an n-gram over tokens.
        ImportError: torchaudio's Flashlight decoder is missing.
    """

    def __init__(self, opts: FlashlightOptions, tok: Tokenizer,
                 lm: LmFusionOptions | None = None) -> None:
        super().__init__(opts, tok)
        from asrkit.decode.flashlight import FlashlightCTCDecoder, kenlm_available
        from asrkit.lm.fusion import is_token_lm
        from asrkit.lm.ngram import read_arpa

        if lm is not None and (Path(lm.lm).is_dir() or str(lm.lm).startswith("hf:")):
            raise ValueError("backend flashlight takes a word n-gram (ARPA), not the neural "
                             f"LM dir {lm.lm}")
        fl_lm = None if lm is None else read_arpa(lm.lm)
        if fl_lm is not None and is_token_lm(fl_lm):
            raise ValueError(f"backend flashlight takes a word n-gram; {lm.lm} is over tokens "
                             "(use the asrkit backend)")
        if fl_lm is not None and opts.lexicon is not None and kenlm_available():
            fl_lm = lm.lm  # a path: KenLM reads it (C++)
        self.decoder = FlashlightCTCDecoder.from_tokenizer(
            tok, lexicon=opts.lexicon, lm=fl_lm, lm_weight=lm.lm_weight if lm else 0.5,
            word_bonus=lm.word_bonus if lm else 0.0, beam=2 * opts.beam,
            beam_size_token=opts.topk + 1, nbest=opts.beam)
        logger.info("flashlight backend: %s, LM %s", f"lexicon {opts.lexicon}"
                    if opts.lexicon else "lexicon-free", lm.lm if lm else None)

    def _beams(self, enc, lens, log_probs):
        return self.decoder.decode(log_probs, lens)


class WfstSearch:
    """Viterbi beam search of the CTC posteriors over a TLG graph
    (:func:`asrkit.decode.wfst.decode_ctc_wfst_batch`), on the CPU, one thread while it runs
    (its per-frame tensor operations are tiny: more threads only contend); the thread count
    is restored after each batch.

    Raises:
        FileNotFoundError: a missing graph file.
    """

    scorer = None

    def __init__(self, opts: WfstOptions, tok: Tokenizer) -> None:
        from asrkit.decode.wfst import CtcDecodingGraph

        self.opts, self.tok = opts, tok
        self.graph = CtcDecodingGraph.load(opts.graph, tokenizer=tok)
        logger.info("wfst: %s, LM weight %g (acoustic scale %g), beam %g, max-active %d",
                    opts.graph, opts.lm_weight, 1.0 / opts.lm_weight, opts.beam,
                    opts.max_active)

    def __call__(self, enc, lens: torch.Tensor, log_probs: torch.Tensor) -> list[Hypothesis]:
        """As :meth:`_TokenSearch.__call__`; also the words' frame spans."""
        from asrkit.decode.wfst import decode_ctc_wfst_batch

        o = self.opts
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = decode_ctc_wfst_batch(
                log_probs.float().cpu(), lens.cpu(), self.graph,
                acoustic_scale=1.0 / o.lm_weight, beam=o.beam, max_active=o.max_active,
                blank_penalty=o.blank_penalty, nbest=o.nbest, lattice_beam=o.lattice_beam)
        finally:
            torch.set_num_threads(threads)
        return [Hypothesis(" ".join(r.words), list(r.tokens),
                           None if r.nbest is None else
                           [(" ".join(w), score) for w, score in r.nbest],
                           None if r.segments is None else [tuple(s) for s in r.segments])
                for r in results]


def build_search(opts: SearchOptions, model, tok: Tokenizer,
                 lm: LmFusionOptions | None = None, device: torch.device | str = "cpu"):
    """The searcher for ``opts`` (the one place searchers and their LM scorers are built).

    Args:
        opts: an options object of :mod:`asrkit.decode.options`.
        model: the :class:`asrkit.models.base.CTCModel` (the attention searches call its
            decoder).
        tok: its tokenizer.
        lm: shallow fusion (every method but ``ctc_greedy`` and ``wfst``), or None.
        device: where a neural LM runs.

    Returns:
        A callable ``(enc, lens, log_probs) -> list[Hypothesis]``; its ``scorer`` attribute
        is the fused LM scorer (None without one).

    Raises:
        ValueError: an attention method for a CTC-only model, an LM the method cannot take
            (the checks of :func:`asrkit.decode.options.decode_options`, the scorers').
        FileNotFoundError: a missing LM or graph.
    """
    if isinstance(opts, WfstOptions):
        return WfstSearch(opts, tok)
    if isinstance(opts, LlmBeamOptions):
        return LlmSearch(opts, model, tok)
    if hasattr(model, "recognize_from_encoder"):
        raise ValueError(f"a speech-LLM decodes with method llm_beam, not {opts.method}")
    if isinstance(opts, FlashlightOptions):
        return FlashlightSearch(opts, tok, lm)
    scorer, weight = None, 0.0
    if lm is not None:
        if isinstance(opts, CtcGreedyOptions):
            raise ValueError("an LM needs a beam method, not ctc_greedy")
        from asrkit.lm.fusion import fused_scorer

        scorer, weight = fused_scorer(lm.lm, tok, torch.device(device), lm_weight=lm.lm_weight,
                                      word_bonus=lm.word_bonus, extra_lms=lm.extra_lms)
        logger.info("shallow fusion: %s, weight %g, word bonus %g%s", lm.lm, lm.lm_weight,
                    lm.word_bonus, "".join(f"; {p}, weight {w:g}" for p, w in lm.extra_lms))
    if isinstance(opts, CtcGreedyOptions):
        return CtcGreedySearch(opts, tok)
    if isinstance(opts, CtcPrefixBeamOptions):
        return CtcPrefixBeamSearch(opts, tok, scorer, weight)
    return AttentionSearch(opts, model, tok, scorer, weight)


class CtcModelSearch:
    """The 1-best search of ``asrkit decode`` for a CTC (or hybrid CTC/attention) model, with
    word time spans (module docstring).

    Args:
        model: an :class:`asrkit.models.base.CTCModel` in eval mode.
        tok: its tokenizer.
        opts: the method's options (:func:`asrkit.decode.options.decode_options`; not the
            Flashlight backend); ``nbest`` is not used.
        lm: shallow fusion options, or None.
        device: where the LM scorer runs.

    Raises:
        ValueError, FileNotFoundError: as :func:`build_search`.
    """

    def __init__(self, model, tok: Tokenizer, opts: SearchOptions,
                 lm: LmFusionOptions | None = None, device: torch.device | str = "cpu") -> None:
        if isinstance(opts, FlashlightOptions):
            raise TypeError("transcribe searches with the asrkit backend, not flashlight")
        self.model, self.tok, self.method = model, tok, opts.method
        self.search = build_search(opts, model, tok, lm, device)

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
        out = []
        for b, h in enumerate(self.search(enc, lens, log_probs)):
            if h.segments is not None:
                out.append([WordSpan(w, s, e) for w, (s, e) in zip(h.text.split(), h.segments)])
            else:  # word spans from the hypothesis' tokens
                out.append(word_spans(lp_cpu[b, :int(lens_cpu[b])], h.ids, self.tok))
        return out
