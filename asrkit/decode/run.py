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

Each method has its options object (:mod:`asrkit.decode.options`, which owns its defaults
and checks) and its searcher (:mod:`asrkit.decode.search`); this module loads the model,
encodes the data set and writes the outputs. Every beam method can also write an n-best list (``nbest``, format in
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
from dataclasses import dataclass
from pathlib import Path

import torch

from asrkit.data.datadir import read_kaldi_map, write_kaldi_map
from asrkit.data.dataset import FeatureDataset, collate, frame_batches
from asrkit.decode.chunked import chunked_ctc_log_probs
from asrkit.decode.nbest import write_or_clear_nbest
from asrkit.decode.options import (
    ATTENTION_METHODS,
    METHODS,
    WHOLE_UTTERANCE_METHODS,
    LmFusionOptions,
    SearchOptions,
    decode_options,
)
from asrkit.decode.search import build_search
from asrkit.decode.search import distinct_texts as _distinct_texts  # noqa: F401 (tests)
from asrkit.exp.checkpoint import load_model, pick_device
from asrkit.exp.expdir import load_exp_tokenizer
from asrkit.fileio import atomic_write, stage_log

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_METHODS", "METHODS", "DecodeReport", "LongUtteranceError",
           "decode_data_dir", "pick_device"]


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


@dataclass
class _Chunking:
    """Which utterances of a data set are encoded in windows, in encoder-input frames."""

    seconds: float | None
    overlap: float
    shift: float  # seconds per encoder-input frame
    chunk: int | None  # frames of a window's kept centre (None: no chunking)
    context: int  # frames of context on each side
    long_idx: list[int]  # indices of the utterances over ``chunk``


def _chunking(ds: FeatureDataset, cfg, seconds: float | None, overlap: float) -> _Chunking:
    shift = float((cfg.get("features") or {}).get("frame_shift", 10.0)) / 1000.0
    chunk = round(seconds / shift) if seconds and seconds > 0 else None
    long_idx = [i for i, n in enumerate(ds.lengths) if chunk is not None and n > chunk]
    return _Chunking(seconds, overlap, shift, chunk, round(overlap / shift), long_idx)


def _refuse_long(ds: FeatureDataset, data_dir: Path, ch: _Chunking, method: str,
                 scorer, lm) -> None:
    """Raise :class:`LongUtteranceError` when the longest utterance over ``chunk_seconds``
    cannot be decoded in windows: an attention method, or an LM that rereads whole
    hypotheses (cannot rebase)."""
    if not ch.long_idx:
        return
    i = max(ch.long_idx, key=lambda j: ds.lengths[j])
    seconds = ds.lengths[i] * ch.shift
    if method in WHOLE_UTTERANCE_METHODS:
        raise LongUtteranceError(
            f"{data_dir}: utterance {ds.ids[i]} is {seconds:.1f} s long "
            f"({ds.lengths[i]} frames; {len(ch.long_idx)} utterance(s) over chunk_seconds="
            f"{ch.seconds:g}); {method} attends over the whole utterance and is not "
            "decoded in chunks. Segment the recording first (asrkit transcribe, which "
            "cuts it with a VAD, or a segments file in the data dir), or decode it with "
            "a CTC method (ctc_greedy, ctc_prefix_beam, wfst), which encode long "
            "utterances in overlapping windows")
    if scorer is not None and not getattr(scorer, "can_rebase", False):
        raise LongUtteranceError(
            f"{data_dir}: utterance {ds.ids[i]} is {seconds:.1f} s long "
            f"(over chunk_seconds={ch.seconds:g}), and the LM {lm} rereads every "
            "hypothesis whole (a Transformer LM), which grows without bound on a long "
            "utterance; use an n-gram or LSTM LM, or segment the recording first "
            "(asrkit transcribe, or a segments file)")
    logger.info("%d utterance(s) over %g s: encoded in windows of %g s + 2 x %g s context",
                len(ch.long_idx), ch.seconds, ch.seconds, ch.overlap)


def _encoded(model, ds: FeatureDataset, ch: _Chunking, max_frames: int, dev: torch.device):
    """``(utt ids, enc (B, T', D) or None, lens (B,), CTC log-posteriors (B, T', V))`` of the
    whole data set: the utterances up to ``ch.chunk`` frames in length-sorted batches of at
    most ``max_frames`` padded frames, as always; then each longer one (``ch.long_idx``)
    alone, encoded in windows (:func:`asrkit.decode.chunked.chunked_ctc_log_probs`; no
    encoder output, on the CPU)."""
    skip = set(ch.long_idx)
    rest = [i for i in range(len(ds)) if i not in skip]
    for idx in frame_batches([ds.lengths[i] for i in rest], max_frames, shuffle=False):
        batch = collate([ds[rest[j]] for j in idx])
        enc, lens = model.encode(batch["feats"].to(dev), batch["feat_lens"].to(dev))
        yield batch["ids"], enc, lens, model.ctc_log_probs_from_encoder(enc)
    for i in ch.long_idx:
        utt, feats, _ = ds[i]
        log_probs = chunked_ctc_log_probs(model, feats, chunk_frames=ch.chunk,
                                          context_frames=ch.context, max_frames=max_frames,
                                          device=dev, utt=utt)
        yield [utt], None, torch.tensor([log_probs.shape[0]]), log_probs[None]


def _summary(opts: SearchOptions, lm: LmFusionOptions | None, ch: _Chunking,
             report: DecodeReport, dev: torch.device, checkpoint, avg: int,
             select: str = "last", metric: str = "dev_loss") -> dict:
    """``decode_summary.json``: the options and what the run measured."""
    wfst = opts.method == "wfst"
    return {"method": opts.method,
            "beam": 1 if opts.method == "ctc_greedy" else opts.beam,
            "ctc_weight": getattr(opts, "ctc_weight", None),
            "checkpoint": checkpoint, "avg": avg,
            "select": None if checkpoint else (select if select == "last" else f"best:{metric}"),
            "num_utts": report.num_utts,
            "lm": str(lm.lm) if lm else None,
            "extra_lms": lm.summary()["extra_lms"] if lm else None,
            "lm_weight": opts.lm_weight if wfst else (lm.lm_weight if lm else None),
            "word_bonus": lm.word_bonus if lm else None,
            "graph": str(opts.graph) if wfst else None,
            "backend": opts.backend,
            "lexicon": str(opts.lexicon) if getattr(opts, "lexicon", None) else None,
            "chunk_seconds": ch.seconds if ch.chunk else None,
            "chunk_overlap": ch.overlap if ch.chunk else None,
            "num_chunked_utts": len(ch.long_idx),
            "audio_seconds": round(report.audio_seconds, 3),
            "wall_seconds": round(report.wall_seconds, 3),
            "rtf": round(report.rtf, 6), "device": str(dev),
            "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "options": opts.summary()}


@torch.inference_mode()
def decode_data_dir(exp_dir: str | os.PathLike, data_dir: str | os.PathLike,
                    out_dir: str | os.PathLike | None = None, *, method: str = "ctc_greedy",
                    backend: str = "asrkit", opts: SearchOptions | None = None,
                    fusion: LmFusionOptions | None = None,
                    checkpoint: str | os.PathLike | None = None, avg: int = 1,
                    select: str = "last", metric: str = "dev_loss",
                    device: str | None = "auto", max_frames: int = 60000,
                    chunk_seconds: float | None = 30.0, chunk_overlap: float = 4.0,
                    progress=None, **options) -> DecodeReport:
    """Decode every utterance of a feature data dir and write ``out_dir/text`` (1-best).

    With ``nbest > 1`` it also writes ``out_dir/nbest`` (``<utt-id>-<N> <score> <WORDS…>``,
    see :mod:`asrkit.decode.nbest`); with ``nbest == 1`` a ``nbest`` file left there by an
    earlier run is removed, so the directory stays consistent. ``decode_summary.json``
    records the options and the real-time factor.

    Args:
        exp_dir: experiment written by ``asrkit train`` (``config.yaml``, ``checkpoints/``).
        data_dir: data dir with ``feats.scp`` and ``utt2num_frames`` (``asrkit features``).
        out_dir: default ``exp_dir/decode_<data dir name>_<method>``.
        method, backend, **options: the search, built by
            :func:`asrkit.decode.options.decode_options` (e.g. ``method="joint_ctc_attention",
            beam=10, ctc_weight=0.3, lm="lm.arpa", lm_weight=0.5``; each method's options
            and defaults are its options class's fields: beam sizes, ``nbest``, ``graph``
            and cost beams for ``wfst``, ``lexicon`` for ``backend="flashlight"``…).
        opts, fusion: or the options objects themselves (then no ``**options``).
        checkpoint: decode this checkpoint instead of an average of epoch checkpoints.
        avg, select, metric: average ``avg`` epoch checkpoints, the latest
            (``select="last"``) or the lowest by ``metric`` (``"best"``; ``dev_loss`` or
            ``dev_wer``), as :func:`asrkit.exp.checkpoint.load_model`.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:0"``…
        max_frames: padded frames per batch.
        chunk_seconds: utterances longer than this are encoded in windows whose kept centres
            are this long (:func:`asrkit.decode.chunked.chunked_ctc_log_probs`; 30 s = 3000
            frames of 10 ms, or of the experiment's ``features.frame_shift``) and the CTC
            search runs on the stitched posteriors; the attention methods refuse them. None
            or <= 0: every utterance is encoded whole.
        chunk_overlap: seconds of context on each side of a window's kept centre (4 s);
            discarded after encoding, except at the utterance's ends.
        progress: optional callable receiving the number of utterances just decoded.

    Returns:
        A :class:`DecodeReport` (RTF = wall time / audio time, model loading excluded).

    Raises:
        ValueError: bad options (:func:`asrkit.decode.options.decode_options`), an attention
            method for a model without an attention decoder, ``chunk_overlap < 0``.
        TypeError: an option no method takes, or ``opts`` together with ``**options``.
        LongUtteranceError: an utterance over ``chunk_seconds`` with an attention method,
            or with a Transformer LM (whose cost grows with the hypothesis).
        FileNotFoundError: missing experiment files, ``feats.scp``, LM or graph.
    """
    if opts is None:
        opts, fusion = decode_options(method, backend, **options)
    elif options:
        raise TypeError(f"give either opts or options, not both ({sorted(options)})")
    if not chunk_overlap >= 0:
        raise ValueError(f"chunk_overlap must be >= 0 seconds, got {chunk_overlap}")
    exp_dir, data_dir = Path(exp_dir), Path(data_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / f"decode_{data_dir.name}_{opts.method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage_log(out_dir / "decode.log"):
        dev = pick_device(device)
        model, cfg = load_model(exp_dir, checkpoint=checkpoint, avg=avg, select=select,
                                metric=metric, device=dev)
        tok = load_exp_tokenizer(exp_dir, cfg)  # the experiment's copy
        if opts.method in ATTENTION_METHODS and not getattr(model, "has_decoder", False):
            raise ValueError(f"{opts.method} needs a model with an attention decoder; "
                             f"{exp_dir} is CTC-only (use ctc_greedy or ctc_prefix_beam)")
        ds = FeatureDataset(data_dir, None, max_frames=10**9)
        ch = _chunking(ds, cfg, chunk_seconds, chunk_overlap)
        _refuse_long(ds, data_dir, ch, opts.method, None, None)  # before loading an LM
        search = build_search(opts, model, tok, fusion, dev)
        _refuse_long(ds, data_dir, ch, opts.method, search.scorer, fusion and fusion.lm)
        logger.info("%s: %s", opts.method, opts)
        hyps: dict[str, str] = {}
        nbests: dict[str, list[tuple[str, float]]] = {}
        start = time.perf_counter()
        for utts, enc, lens, log_probs in _encoded(model, ds, ch, max_frames, dev):
            for utt, h in zip(utts, search(enc, lens, log_probs)):
                hyps[utt] = h.text
                if h.nbest is not None:
                    nbests[utt] = h.nbest
            if progress:
                progress(len(utts))
        wall = time.perf_counter() - start
        write_kaldi_map(out_dir / "text", hyps)
        nbest_path = write_or_clear_nbest(out_dir / "nbest", nbests, opts.nbest)
        durs = read_kaldi_map(data_dir / "utt2dur") if (data_dir / "utt2dur").is_file() else {}
        audio = sum(float(durs[u]) if u in durs else n * 0.01
                    for u, n in zip(ds.ids, ds.lengths))
        report = DecodeReport(out_dir / "text", len(hyps), audio, wall, nbest_path)
        logger.info("decoded %d utterances (%.1f s of audio) in %.1f s on %s, RTF %.4f",
                    report.num_utts, audio, wall, dev, report.rtf)
        with atomic_write(out_dir / "decode_summary.json") as f:
            json.dump(_summary(opts, fusion, ch, report, dev, checkpoint, avg, select, metric),
                      f, indent=1)
        return report
