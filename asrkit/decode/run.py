"""The decode stage: a trained experiment + a feature data dir → Kaldi ``text`` hypotheses.

Methods (:data:`METHODS`):

* ``ctc_greedy`` — best path (:func:`asrkit.decode.ctc.ctc_greedy`);
* ``ctc_prefix_beam`` — CTC prefix beam search (Hannun et al., 2014;
  :func:`asrkit.decode.ctc.ctc_prefix_beam_search`);
* ``attention_beam`` — beam search with the attention decoder alone
  (:func:`asrkit.decode.attention.attention_beam_search`; needs a model with a decoder);
* ``joint_ctc_attention`` — one-pass joint CTC/attention beam search with CTC prefix scoring
  (Watanabe et al., 2017; :func:`asrkit.decode.attention.joint_ctc_attention_beam_search`);
* ``wfst`` — Viterbi beam search of the CTC posteriors over a ``TLG`` graph (EESEN, Miao et al.,
  2015; :func:`asrkit.decode.wfst.decode_ctc_wfst`), the graph built by ``asrkit mkgraph
  --ctc`` from the tokenizer and an ARPA LM; 1-best only.

Every beam method can also write an n-best list (``nbest``, format in
:mod:`asrkit.decode.nbest`) and take a language model by shallow fusion (``lm``: a word
n-gram in ARPA format or an ``asrkit train-lm`` neural LM; :mod:`asrkit.lm.fusion`).
``ctc_prefix_beam`` also runs on Flashlight's C++ beam search (``backend="flashlight"``,
:mod:`asrkit.decode.flashlight`, ``pip install -e '.[flashlight]'``), lexicon-free or
constrained to a ``lexicon``.

Long utterances (over ``chunk_seconds``, 30 s): the CTC methods encode them in overlapping
windows and search the stitched posteriors (:mod:`asrkit.decode.chunked`, NeMo's buffered CTC
inference), so an utterance of any length decodes in memory bounded by the window; shorter
ones take exactly the path they always took. The attention methods attend over the whole
utterance and are refused for such utterances (:class:`LongUtteranceError`): segment the
recording first (``asrkit transcribe``, or a ``segments`` file).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from asrkit.data.datadir import read_kaldi_map, write_kaldi_map
from asrkit.data.dataset import FeatureDataset, collate, frame_batches
from asrkit.decode.attention import attention_beam_search, joint_ctc_attention_beam_search
from asrkit.decode.chunked import chunked_ctc_log_probs
from asrkit.decode.ctc import ctc_greedy, ctc_prefix_beam_search_batch
from asrkit.decode.nbest import write_or_clear_nbest
from asrkit.exp.checkpoint import load_model, pick_device
from asrkit.exp.expdir import load_exp_tokenizer
from asrkit.fileio import atomic_write, stage_log
from asrkit.lm.fusion import fusion_scorer
from asrkit.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_METHODS", "METHODS", "DecodeReport", "LongUtteranceError",
           "decode_data_dir", "pick_device"]

METHODS = ("ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint_ctc_attention", "wfst")
ATTENTION_METHODS = ("attention_beam", "joint_ctc_attention")


class LongUtteranceError(ValueError):
    """An attention method was asked to decode an utterance longer than ``chunk_seconds``
    (the message names it, its length, and what to do instead)."""


@dataclass
class DecodeReport:
    """What a decode run did: output ``text`` path, utterances, audio seconds, wall seconds,
    and the ``nbest`` file when one was written (else None)."""

    text: Path
    num_utts: int
    audio_seconds: float
    wall_seconds: float
    nbest: Path | None = None

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding wall time / audio duration."""
        return self.wall_seconds / max(self.audio_seconds, 1e-9)


def _distinct_texts(nbest: list[tuple[list[int], float]], tok: Tokenizer, n: int
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


def _encoded(model, ds: FeatureDataset, long_idx: list[int], max_frames: int,
             dev: torch.device, chunk: int | None, context: int):
    """``(utt ids, enc (B, T', D) or None, lens (B,), CTC log-posteriors (B, T', V))`` of the
    whole data set: the utterances up to ``chunk`` frames in length-sorted batches of at most
    ``max_frames`` padded frames, as always; then each longer one (``long_idx``) alone,
    encoded in windows (:func:`asrkit.decode.chunked.chunked_ctc_log_probs`; no encoder
    output, on the CPU)."""
    skip = set(long_idx)
    rest = [i for i in range(len(ds)) if i not in skip]
    for idx in frame_batches([ds.lengths[i] for i in rest], max_frames, shuffle=False):
        batch = collate([ds[rest[j]] for j in idx])
        enc, lens = model.encode(batch["feats"].to(dev), batch["feat_lens"].to(dev))
        yield batch["ids"], enc, lens, model.ctc_log_probs_from_encoder(enc)
    for i in long_idx:
        utt, feats, _ = ds[i]
        log_probs = chunked_ctc_log_probs(model, feats, chunk_frames=chunk,
                                          context_frames=context, max_frames=max_frames,
                                          device=dev, utt=utt)
        yield [utt], None, torch.tensor([log_probs.shape[0]]), log_probs[None]


@torch.inference_mode()
def decode_data_dir(exp_dir: str | os.PathLike, data_dir: str | os.PathLike,
                    out_dir: str | os.PathLike | None = None, *, method: str = "ctc_greedy",
                    beam: int = 10, nbest: int = 1, token_topk: int | None = None,
                    ctc_weight: float = 0.3, length_penalty: float = 0.0,
                    maxlen_ratio: float = 1.0,
                    checkpoint: str | os.PathLike | None = None, avg: int = 1,
                    device: str | None = "auto", max_frames: int = 60000,
                    lm: str | os.PathLike | None = None, lm_weight: float = 0.5,
                    extra_lms: Sequence[tuple[str | os.PathLike, float]] = (),
                    word_bonus: float = 0.0, graph: str | os.PathLike | None = None,
                    wfst_beam: float = 16.0, max_active: int = 7000,
                    blank_penalty: float = 0.0, lattice_beam: float = 8.0, backend: str = "asrkit",
                    lexicon: str | os.PathLike | None = None,
                    chunk_seconds: float | None = 30.0, chunk_overlap: float = 4.0,
                    progress=None) -> DecodeReport:
    """Decode every utterance of a feature data dir and write ``out_dir/text`` (1-best).

    With a beam method and ``nbest > 1`` it also writes ``out_dir/nbest``
    (``<utt-id>-<N> <score> <WORDS…>``, see :mod:`asrkit.decode.nbest`); with ``nbest == 1``
    a ``nbest`` file left there by an earlier run is removed, so the directory stays
    consistent.

    Args:
        exp_dir: experiment written by ``asrkit train`` (``config.yaml``, ``checkpoints/``).
        data_dir: data dir with ``feats.scp`` and ``utt2num_frames`` (``asrkit features``).
        out_dir: default ``exp_dir/decode_<data dir name>_<method>``.
        method: one of :data:`METHODS`.
        beam: hypotheses kept by the beam methods (ignored by ``ctc_greedy``).
        nbest: distinct hypothesis texts per utterance to write to ``nbest``
            (``1 <= nbest <= beam``; > 1 only with a beam method or ``wfst``). For
            ``wfst`` they are the ``nbest`` best distinct word sequences of a lattice
            (:func:`asrkit.decode.wfst.decode_ctc_wfst`; any ``nbest >= 1``, ``beam``
            unused), scored ``-(graph cost + acoustic cost / lm_weight)`` (natural log,
            higher better; rank 1 is the 1-best with minus its cost). For the other beam
            methods they are taken from
            the ``beam`` token sequences the search ends with; token sequences spelling the
            same text are merged (the best one's score is kept), so an utterance gets fewer
            lines when the beam holds fewer distinct texts; a beam of 2-3 × ``nbest`` avoids
            that in practice.
        token_topk: how many of each frame's most probable non-blank tokens may extend a
            prefix in ``ctc_prefix_beam`` (default: ``beam``); see
            :func:`asrkit.decode.ctc.ctc_prefix_beam_search`.
        ctc_weight: λ of ``joint_ctc_attention``: ``(1 - λ) log p_att + λ log p_ctc``.
        length_penalty: added per output token by the attention methods (> 0 favours longer
            hypotheses).
        maxlen_ratio: the attention methods stop at ``maxlen_ratio × T'`` output tokens.
        checkpoint: decode this checkpoint instead of the average of the last ``avg`` epochs.
        avg: number of last epoch checkpoints to average.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:0"``…
        max_frames: padded frames per batch.
        lm: for shallow fusion in any beam method (``ctc_prefix_beam``, ``attention_beam``,
            ``joint_ctc_attention``): an ARPA n-gram over words
            (:class:`asrkit.lm.fusion.WordNgramScorer`; words are the tokenizer's ``▁``-pieces
            joined) or over the tokenizer's pieces (``asrkit train-lm ngram --tokenizer``,
            recognised by its ``▁`` pieces; :class:`asrkit.lm.fusion.TokenNgramScorer`, no
            ``word_bonus``), or the directory of an ``asrkit train-lm`` neural LM trained
            with the same tokenizer (:class:`asrkit.lm.fusion.NeuralTokenScorer`;
            ``word_bonus`` is not used), or None.
        lm_weight: weight of the LM's natural-log probabilities.
        extra_lms: more LMs fused at the same time as ``lm``, as ``(path, weight)`` pairs
            (e.g. a word n-gram as ``lm`` and a neural LM here): the search adds
            ``lm_weight · log P_lm + Σ weight_i · log P_i``
            (:class:`asrkit.lm.fusion.CombinedScorer`); ``word_bonus`` goes with ``lm``.
        word_bonus: added per word inside the LM weight.
        graph: ``wfst``: the graph dir of ``asrkit mkgraph --ctc`` (``TLG.fst``,
            ``words.txt``, ``tokens.txt``); its LM is searched with weight ``lm_weight``
            (acoustic scale ``1 / lm_weight``, the ranking of shallow fusion with that weight).
        wfst_beam: ``wfst``: the search beam in graph-cost units (natural log).
        max_active: ``wfst``: most tokens kept per frame.
        blank_penalty: ``wfst``: added to the cost of every blank frame.
        lattice_beam: ``wfst`` with ``nbest > 1``: lattice pruning beam in cost units.
        backend: ``ctc_prefix_beam``'s implementation: ``"asrkit"``
            (:func:`asrkit.decode.ctc.ctc_prefix_beam_search`) or ``"flashlight"``
            (:class:`asrkit.decode.flashlight.FlashlightCTCDecoder`; word n-gram LMs only; its
            beam counts prefix states, so it gets ``2 × beam`` and ``token_topk + 1``).
        lexicon: ``backend="flashlight"``: a word list or lexicon file (``WORD`` or ``WORD
            piece…`` per line) to constrain the output to; with an ``lm`` the LM is then
            KenLM's (C++). None: lexicon-free.
        chunk_seconds: utterances longer than this are encoded in windows whose kept centres
            are this long (:func:`asrkit.decode.chunked.chunked_ctc_log_probs`; 30 s = 3000
            frames of 10 ms, or of the experiment's ``features.frame_shift``) and the CTC
            search runs on the stitched posteriors; the attention methods refuse them. None
            or <= 0: every utterance is encoded whole, as before.
        chunk_overlap: seconds of context on each side of a window's kept centre (4 s);
            discarded after encoding, except at the utterance's ends.
        progress: optional callable receiving the number of utterances just decoded.

    Returns:
        A :class:`DecodeReport` (RTF = wall time / audio time, model loading excluded).

    Raises:
        ValueError: unknown ``method``, ``beam < 1``, ``nbest`` outside ``1..beam``,
            ``nbest > 1`` with ``ctc_greedy``, an attention method for a model without
            an attention decoder, ``lm`` with ``ctc_greedy``, an unknown ``backend`` or
            ``flashlight`` with another method or a neural LM, ``lexicon`` without it, ``wfst`` without ``graph`` or
            with ``lm`` / ``word_bonus`` / ``lm_weight <= 0``, ``chunk_overlap < 0``.
        LongUtteranceError: an utterance over ``chunk_seconds`` with an attention method,
            or with a Transformer LM (whose cost grows with the hypothesis).
        FileNotFoundError: missing experiment files or ``feats.scp``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 1 <= nbest <= (10**9 if method == "wfst" else beam):
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")
    if nbest > 1 and method == "ctc_greedy":
        raise ValueError("nbest > 1 needs a beam method, not ctc_greedy")
    if extra_lms and (lm is None or backend != "asrkit"):
        raise ValueError("extra_lms need lm (the first LM) and the asrkit backend")
    if lm is not None and method == "ctc_greedy":
        raise ValueError("an LM needs a beam method (ctc_prefix_beam, attention_beam, "
                         "joint_ctc_attention), not ctc_greedy")
    if backend not in ("asrkit", "flashlight"):
        raise ValueError(f"unknown backend {backend!r}; choose asrkit or flashlight")
    if backend == "flashlight" and method != "ctc_prefix_beam":
        raise ValueError(f"backend flashlight implements ctc_prefix_beam, not {method}")
    if lexicon is not None and backend != "flashlight":
        raise ValueError("lexicon needs backend flashlight (the asrkit searches are "
                         "lexicon-free; use --method wfst for a lexicon-constrained graph)")
    if method == "wfst":
        if graph is None:
            raise ValueError("method wfst needs a graph dir (asrkit mkgraph --ctc TOKENIZER "
                             "LM.arpa OUT)")
        if lm is not None or word_bonus != 0.0:
            raise ValueError("method wfst takes its LM from the graph: no lm or word_bonus")
        if not lm_weight > 0:
            raise ValueError(f"wfst: lm_weight must be > 0 (acoustic scale 1/lm_weight), got "
                             f"{lm_weight}")
    if not chunk_overlap >= 0:
        raise ValueError(f"chunk_overlap must be >= 0 seconds, got {chunk_overlap}")
    topk = beam if token_topk is None else token_topk
    exp_dir, data_dir = Path(exp_dir), Path(data_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / f"decode_{data_dir.name}_{method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage_log(out_dir / "decode.log"):
        dev = pick_device(device)
        model, cfg = load_model(exp_dir, checkpoint=checkpoint, avg=avg, device=dev)
        tok = load_exp_tokenizer(exp_dir, cfg)  # the experiment's copy (train.expdir)
        if method in ATTENTION_METHODS and not getattr(model, "has_decoder", False):
            raise ValueError(f"{method} needs a model with an attention decoder; {exp_dir} "
                             "is CTC-only (use ctc_greedy or ctc_prefix_beam)")
        ds = FeatureDataset(data_dir, None, max_frames=10**9)
        shift = float((cfg.get("features") or {}).get("frame_shift", 10.0)) / 1000.0
        chunk = round(chunk_seconds / shift) if chunk_seconds and chunk_seconds > 0 else None
        context = round(chunk_overlap / shift)
        long_idx = [i for i, n in enumerate(ds.lengths) if chunk is not None and n > chunk]
        if long_idx and method in ATTENTION_METHODS:
            i = max(long_idx, key=lambda j: ds.lengths[j])
            raise LongUtteranceError(
                f"{data_dir}: utterance {ds.ids[i]} is {ds.lengths[i] * shift:.1f} s long "
                f"({ds.lengths[i]} frames; {len(long_idx)} utterance(s) over chunk_seconds="
                f"{chunk_seconds:g}); {method} attends over the whole utterance and is not "
                "decoded in chunks. Segment the recording first (asrkit transcribe, which "
                "cuts it with a VAD, or a segments file in the data dir), or decode it with "
                "a CTC method (ctc_greedy, ctc_prefix_beam, wfst), which encode long "
                "utterances in overlapping windows")
        if long_idx:
            logger.info("%d utterance(s) over %g s: encoded in windows of %g s + 2 x %g s "
                        "context", len(long_idx), chunk_seconds, chunk_seconds, chunk_overlap)
        if method == "wfst":
            from asrkit.decode.wfst import CtcDecodingGraph, decode_ctc_wfst_batch

            ctc_graph = CtcDecodingGraph.load(graph, tokenizer=tok)  # searched on the CPU
            logger.info("wfst: %s, LM weight %g (acoustic scale %g), beam %g, max-active %d",
                        graph, lm_weight, 1.0 / lm_weight, wfst_beam, max_active)
        fusion = {}
        fl_decoder = None
        if backend == "flashlight":
            if lm is not None and Path(lm).is_dir():
                raise ValueError("backend flashlight takes a word n-gram (ARPA), not the neural "
                                 f"LM dir {lm}")
            from asrkit.decode.flashlight import FlashlightCTCDecoder, kenlm_available
            from asrkit.lm.fusion import is_token_lm
            from asrkit.lm.ngram import read_arpa

            fl_lm = None if lm is None else read_arpa(lm)
            if fl_lm is not None and is_token_lm(fl_lm):
                raise ValueError(f"backend flashlight takes a word n-gram; {lm} is over tokens "
                                 "(use the asrkit backend)")
            if fl_lm is not None and lexicon is not None and kenlm_available():
                fl_lm = lm  # a path: KenLM reads it (C++)
            fl_decoder = FlashlightCTCDecoder.from_tokenizer(
                tok, lexicon=lexicon, lm=fl_lm, lm_weight=lm_weight, word_bonus=word_bonus,
                beam=2 * beam, beam_size_token=topk + 1, nbest=beam)
            logger.info("flashlight backend: %s, LM %s, weight %g, word bonus %g",
                        f"lexicon {lexicon}" if lexicon else "lexicon-free", lm, lm_weight,
                        word_bonus)
        elif lm is not None:
            scorer = fusion_scorer(lm, tok, dev, word_bonus=word_bonus)
            if extra_lms:  # the weights go inside the CombinedScorer
                from asrkit.lm.fusion import CombinedScorer

                scorer = CombinedScorer(
                    [(scorer, lm_weight)]
                    + [(fusion_scorer(p, tok, dev), float(w)) for p, w in extra_lms])
            fusion = {"scorer": scorer, "lm_weight": 1.0 if extra_lms else lm_weight}
            if method == "ctc_prefix_beam":  # label-synchronous searches ask for <eos> instead
                fusion["final_scorer"] = scorer.final
            logger.info("shallow fusion: %s, weight %g, word bonus %g%s", lm, lm_weight,
                        word_bonus, "".join(f"; {p}, weight {w:g}" for p, w in extra_lms))
        if long_idx and fusion and not getattr(fusion["scorer"], "can_rebase", False):
            i = max(long_idx, key=lambda j: ds.lengths[j])
            raise LongUtteranceError(
                f"{data_dir}: utterance {ds.ids[i]} is {ds.lengths[i] * shift:.1f} s long "
                f"(over chunk_seconds={chunk_seconds:g}), and the LM {lm} rereads every "
                "hypothesis whole (a Transformer LM), which grows without bound on a long "
                "utterance; use an n-gram or LSTM LM, or segment the recording first "
                "(asrkit transcribe, or a segments file)")
        if method not in ("ctc_greedy", "wfst"):
            logger.info("%s: beam %d, n-best %d%s", method, beam, nbest,
                        f", CTC weight {ctc_weight}" if method == "joint_ctc_attention" else "")
        hyps: dict[str, str] = {}
        nbests: dict[str, list[tuple[str, float]]] = {}
        start = time.perf_counter()
        for utts, enc, lens, log_probs in _encoded(model, ds, long_idx, max_frames, dev,
                                                   chunk, context):
            if method == "ctc_greedy":
                for utt, ids in zip(utts, ctc_greedy(log_probs, lens)):
                    hyps[utt] = tok.decode(ids)
            elif method == "wfst":
                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # tiny per-frame tensor ops: threads only contend
                try:
                    results = decode_ctc_wfst_batch(
                        log_probs.cpu(), lens.cpu(), ctc_graph, acoustic_scale=1.0 / lm_weight,
                        beam=wfst_beam, max_active=max_active, blank_penalty=blank_penalty,
                        nbest=nbest, lattice_beam=lattice_beam)
                finally:
                    torch.set_num_threads(threads)
                for utt, r in zip(utts, results):
                    hyps[utt] = " ".join(r.words)
                    if r.nbest is not None:
                        nbests[utt] = [(" ".join(w), score) for w, score in r.nbest]
            else:
                if fl_decoder is not None:
                    results = fl_decoder.decode(log_probs, lens)
                elif method == "ctc_prefix_beam":
                    results = ctc_prefix_beam_search_batch(log_probs, lens.cpu(), beam,
                                                           token_topk=topk, **fusion)
                elif method == "attention_beam":
                    results = attention_beam_search(
                        model, enc, lens, beam, maxlen_ratio=maxlen_ratio,
                        length_penalty=length_penalty, **fusion)
                else:
                    results = joint_ctc_attention_beam_search(
                        model, enc, lens, beam, ctc_weight, ctc_log_probs=log_probs,
                        maxlen_ratio=maxlen_ratio, length_penalty=length_penalty, **fusion)
                if fusion:
                    fusion["scorer"].reset()
                for utt, res in zip(utts, results):
                    hyps[utt] = tok.decode(res[0][0])
                    if nbest > 1:
                        nbests[utt] = _distinct_texts(res, tok, nbest)
            if progress:
                progress(len(utts))
        wall = time.perf_counter() - start
        write_kaldi_map(out_dir / "text", hyps)
        nbest_path = write_or_clear_nbest(out_dir / "nbest", nbests, nbest)
        durs = read_kaldi_map(data_dir / "utt2dur") if (data_dir / "utt2dur").is_file() else {}
        audio = sum(float(durs[u]) if u in durs else n * 0.01
                    for u, n in zip(ds.ids, ds.lengths))
        report = DecodeReport(out_dir / "text", len(hyps), audio, wall, nbest_path)
        logger.info("decoded %d utterances (%.1f s of audio) in %.1f s on %s, RTF %.4f",
                    report.num_utts, audio, wall, dev, report.rtf)
        summary = {"method": method,
                   "beam": {"ctc_greedy": 1, "wfst": wfst_beam}.get(method, beam),
                   "ctc_weight": ctc_weight if method == "joint_ctc_attention" else None,
                   "checkpoint": checkpoint, "avg": avg, "num_utts": report.num_utts,
                   "lm": str(lm) if lm else None,
                   "extra_lms": [[str(p), float(w)] for p, w in extra_lms] or None,
                   "lm_weight": lm_weight if lm or method == "wfst" else None,
                   "word_bonus": word_bonus if lm else None,
                   "graph": str(graph) if method == "wfst" else None,
                   "backend": backend, "lexicon": str(lexicon) if lexicon else None,
                   "chunk_seconds": chunk_seconds if chunk else None,
                   "chunk_overlap": chunk_overlap if chunk else None,
                   "num_chunked_utts": len(long_idx),
                   "audio_seconds": round(audio, 3), "wall_seconds": round(wall, 3),
                   "rtf": round(report.rtf, 6), "device": str(dev),
                   "threads": torch.get_num_threads() if dev.type == "cpu" else None}
        with atomic_write(out_dir / "decode_summary.json") as f:
            json.dump(summary, f, indent=1)
        return report
