"""HMM-GMM graph building and decoding over Kaldi dirs (``asrkit mkgraph``, and ``asrkit
decode`` of an HMM-GMM stage).

``make_graph`` is Kaldi's ``utils/mkgraph.sh``: a lang dir, an ARPA n-gram and a trained
model give a graph dir:

* ``HCLG.fst``   the decoding graph (OpenFst binary, tropical; transition ids -> word ids)
* ``words.txt``  the word symbol table of its output labels
* ``graph.json`` what was built from what: model, LM (order, n-gram counts), lang, sizes,
  seconds and peak resident memory (MiB, cumulative) of each stage, context windows and HMM
  ilabels (:func:`asrkit.decode.wfst.reduce_ilabels`),
  LM words left out because the lexicon lacks them

``decode_gmm_data_dir`` is ``steps/decode.sh`` without lattice files: GMM log-likelihoods of
each utterance's features (the options saved with the model: per-speaker CMN, deltas), a
Viterbi beam search over ``HCLG`` (:func:`asrkit.decode.wfst.decode_fst`; memory bounded for
utterances of any length: log-likelihoods in blocks beyond :data:`WHOLE_LOGLIK_FRAMES`, the
best path traced back as the search goes), and in the output dir:

* ``text``                Kaldi text, ``utt-id WORD1 WORD2 ...``
* ``ctm``                 word CTM ``utt-id 1 start duration WORD`` in seconds (word
  boundaries from the position-dependent phones of the best path; Kaldi's
  ``lattice-align-words`` does the same with ``word_boundary.int``)
* ``nbest``               with ``nbest > 1``: the n-best lists (:mod:`asrkit.decode.nbest`
  format), from a state-level lattice of the search (Kaldi's ``lattice-to-nbest`` on
  ``--lattice-beam`` lattices); score ``-(graph cost + acoustic_scale * acoustic cost)``
* ``decode_summary.json`` options, utterances, audio and wall seconds, real-time factor
* ``failed``              ``utt<TAB>reason`` of utterances without output (kept going)
* ``decode.log``
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from asrkit.data.datadir import read_kaldi_map, split_evenly, write_kaldi_map
from asrkit.decode.nbest import write_or_clear_nbest
from asrkit.decode.run import DecodeReport
from asrkit.decode.wfst import (
    DecodingError,
    DecodingGraph,
    FrameScores,
    arpa_to_fst,
    decode_fst,
    decode_fst_batch,
    make_hclg,
)
from asrkit.decode.wfst.fstio import read_fst, write_fst
from asrkit.fileio import atomic_write, stage_log
from asrkit.lm.ngram import read_arpa
from asrkit.models.hmm_gmm import AcousticModel, Segment, load_features, write_ctm, write_failed
from asrkit.models.hmm_gmm.fmllr import (
    adapt_features,
    compose_fmllr,
    pdf_alignments,
    silence_pdf_weights,
    speaker_transforms,
    write_fmllr,
)
from asrkit.models.hmm_gmm.topology import TransitionModel
from asrkit.models.hybrid import HybridScorer, is_hybrid_exp
from asrkit.text.lexicon import read_lang, read_symbol_table, write_symbol_table

__all__ = ["decode_gmm_data_dir", "is_gmm_exp", "make_graph", "model_file", "word_segments"]

logger = logging.getLogger(__name__)

_POS = re.compile(r"_([BEIS])$")

#: Utterances up to this many frames (1 min at 10 ms) get their GMM log-likelihoods in one
#: (T, S) tensor, as always; longer ones :data:`LOGLIK_BLOCK_FRAMES` at a time during the
#: search (:class:`asrkit.decode.wfst.FrameScores`), so a 1-hour recording with 2,500 pdfs
#: needs 10 MB of them at a time instead of 3.6 GB.
WHOLE_LOGLIK_FRAMES = 6000
LOGLIK_BLOCK_FRAMES = 1000
#: batched search (``batch_size``): at most this many utterances x graph states per batch
#: (its per-state buffers take 16 bytes an entry: 256 MB; a 2.9 M-state 20 k-word HCLG gets
#: batches of 5, AN4's graphs the full batch)
MAX_BATCH_STATES = 1 << 24


def model_file(exp: str | os.PathLike) -> Path:
    """``final.mdl`` of an HMM-GMM stage dir (or the file itself).

    Raises:
        FileNotFoundError: no model there.
    """
    p = Path(exp)
    if p.is_file():
        return p
    if (p / "final.mdl").is_file():
        return p / "final.mdl"
    raise FileNotFoundError(f"no HMM-GMM model at {p} (expected {p / 'final.mdl'}, written "
                            "by asrkit train model=hmm_gmm into exp_dir/<stage>/)")


def is_gmm_exp(exp: str | os.PathLike) -> bool:
    """Whether ``exp`` is an HMM-GMM stage dir (holds ``final.mdl``) or model file; a hybrid
    DNN-HMM experiment (``model=hybrid``) holds its GMM's ``final.mdl`` too and decodes here,
    with the network's pseudo-likelihoods (:class:`asrkit.models.hybrid.HybridScorer`)."""
    p = Path(exp)
    return (p / "final.mdl").is_file() or (p.is_file() and p.suffix == ".mdl")


def make_graph(lang_dir: str | os.PathLike, lm: str | os.PathLike,
               model: str | os.PathLike, out_dir: str | os.PathLike, *,
               self_loop_scale: float = 0.1, transition_scale: float = 1.0,
               sil_prob: float = 0.5) -> Path:
    """Build ``HCLG`` for a model and an ARPA LM into a graph dir (Kaldi ``mkgraph.sh``).

    LM words that the lexicon lacks are left out of ``G`` with a warning naming them
    (``arpa2fst --read-symbol-table`` does the same); ``graph.json`` lists them, except the
    LM's unknown-word token (``<unk>``, which ``asrkit train-lm ngram`` always adds): unless
    the lexicon has it, it is left out too, so the decoder never outputs it.

    Args:
        lang_dir: the lang dir the model was trained with (``asrkit lang``).
        lm: ARPA file (any order, ``.gz`` allowed), e.g. ``etc/an4.lm`` or ``asrkit train-lm
            ngram`` output.
        model: ``final.mdl`` or its stage dir; monophone or tree-based triphone.
        out_dir: the graph dir to write.
        self_loop_scale: ``mkgraph.sh --self-loop-scale`` (0.1).
        transition_scale: ``mkgraph.sh --transition-scale`` (1.0).
        sil_prob: optional-silence probability of ``L`` (0.5, ``prepare_lang.sh``).

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: a missing input.
        asrkit.lm.ngram.ArpaError, asrkit.text.lexicon.LexiconError: malformed inputs (file
            and line named).
        asrkit.decode.wfst.GraphError: pieces that do not fit (phones of the lang and model).
    """
    out = Path(out_dir)
    mpath = model_file(model)
    with stage_log(out / "mkgraph.log"):
        start = time.perf_counter()
        lang = read_lang(lang_dir)
        am = AcousticModel.load(mpath)
        ngram = read_arpa(lm)
        missing = sorted(w for ((w,), _, _) in ngram.ngrams(1)
                         if w not in ("<s>", "</s>", "<unk>", "<UNK>") and w not in lang.words)
        G = arpa_to_fst(ngram, lang.words, oov="skip")
        order, counts = ngram.order, ngram.counts
        del ngram  # the n-gram tables can be larger than G: free them before composing
        HCLG, info = make_hclg(lang, G, am.tmodel, self_loop_scale=self_loop_scale,
                               transition_scale=transition_scale, sil_prob=sil_prob)
        write_fst(HCLG, out / "HCLG.fst")
        write_symbol_table(lang.words, out / "words.txt")
        meta = {"model": str(mpath), "lm": str(lm), "lang": str(lang_dir),
                "lm_order": order, "lm_counts": counts,
                "lm_words_missing_from_lexicon": missing,
                "self_loop_scale": self_loop_scale, "transition_scale": transition_scale,
                "sil_prob": sil_prob, "context_width": info.context_width,
                "sizes": {k: list(v) for k, v in info.sizes.items()},
                "seconds": {k: round(v, 3) for k, v in info.seconds.items()},
                "peak_rss_mb": {k: round(v, 1) for k, v in info.peak_rss_mb.items()},
                "context_windows": len(info.ilabel_info) - 1,
                "hmm_ilabels": len(info.h_ilabel_info) - 1,
                "total_seconds": round(time.perf_counter() - start, 3)}
        with atomic_write(out / "graph.json") as f:
            json.dump(meta, f, indent=1)
        logger.info("%s: HCLG %d states, %d arcs, built in %.1f s", out, *info.sizes["HCLG"],
                    meta["total_seconds"])
    return out


def word_segments(tids: torch.Tensor, words: Sequence[str], tmodel: TransitionModel
                  ) -> list[Segment]:
    """Word time spans of a decoded path from its position-dependent phones.

    A word starts at a phone marked ``_B`` or ``_S`` and ends at the next ``_E`` or ``_S``
    (Kaldi ``word_boundary.txt`` semantics: ``begin``, ``singleton``, ``end``); unmarked
    phones (optional silence) are between words.

    Args:
        tids: ``(T,)`` transition ids of the path.
        words: the path's words, in order.
        tmodel: the model's transition model.

    Returns:
        ``[Segment(start_frame, end_frame, word)]``, one per word.

    Raises:
        ValueError: the phones carry no position markers, or their word spans do not match
            ``words`` in number.
    """
    spans: list[tuple[int, int]] = []
    open_at = None
    for s, e, ph in tmodel.split_to_phones(tids):
        m = _POS.search(tmodel.phone_names[ph])
        if m is None:
            continue
        pos = m.group(1)
        if pos in "BS":
            open_at = s
        if pos in "ES" and open_at is not None:
            spans.append((open_at, e))
            open_at = None
    if len(spans) != len(words):
        raise ValueError(f"{len(spans)} word spans from the phones but {len(words)} words "
                         "(expected position-dependent phones, prepare_lang's default)")
    return [Segment(s, e, w) for (s, e), w in zip(spans, words)]


def _decode_job(model_path: str, graph_path: str, data_dir: str, utts: list[str],
                opts: dict, threads: int | None, device: str, backend: str = "asrkit",
                transforms: dict[str, torch.Tensor] | None = None) -> dict:
    """Decode ``utts`` (one job; also run in a worker process for ``nj > 1``) with the
    ``backend`` search (``asrkit``: :func:`decode_fst_batch` over batches of
    ``opts["batch_size"]`` utterances of similar length, :func:`decode_fst` for n-best
    lists and long utterances; ``kaldi``: :class:`asrkit.decode.kaldi.KaldiFasterDecoder`,
    CPU, 1-best); ``transforms``: per-speaker fMLLR transforms applied to the features
    (``utt2spk`` of the data dir)."""

    if threads:
        torch.set_num_threads(threads)
    opts = dict(opts)
    batch_size = opts.pop("batch_size", 1)
    word_ins_penalty = opts.pop("word_ins_penalty", 0.0)  # asrkit backend only (checked)
    weights = opts.pop("weights", {})  # hybrid: which checkpoints (HybridScorer.load)
    dev = torch.device(device)
    hybrid = is_hybrid_exp(Path(model_path).parent)  # final.mdl of a model=hybrid exp dir
    am = HybridScorer.load(Path(model_path).parent, dev, **weights) if hybrid else \
        AcousticModel.load(model_path, dev)
    if backend == "kaldi":
        from asrkit.decode.kaldi import KaldiFasterDecoder

        kaldi = KaldiFasterDecoder(graph_path, am.tmodel.tid2pdf,
                                   acoustic_scale=opts["acoustic_scale"], beam=opts["beam"],
                                   max_active=opts["max_active"])

        def search(scores: list) -> list:
            return [_or_error(kaldi.decode, x) for x in scores]
        batch_size = 1
    else:
        graph = DecodingGraph.from_fst(read_fst(graph_path), word_ins_penalty).to(dev)
        tid2pdf = am.tmodel.tid2pdf.to(dev)
        if opts["nbest"] > 1 or opts.get("posteriors"):
            batch_size = 1
        # the batch's per-state buffers hold batch x states entries (16 bytes each)
        batch_size = max(1, min(batch_size, MAX_BATCH_STATES // graph.num_states))

        def search(scores: list) -> list:
            if len(scores) == 1:
                return [_or_error(lambda x: decode_fst(graph, x, tid2pdf, **opts), scores[0])]
            return decode_fst_batch(graph, scores, tid2pdf, acoustic_scale=opts["acoustic_scale"],
                                    beam=opts["beam"], max_active=opts["max_active"])
    id2word = {i: w for w, i in read_symbol_table(Path(graph_path).parent / "words.txt").items()}
    feats = am.load_features(data_dir, utts) if hybrid else \
        load_features(data_dir, am.meta.get("features") or {}, utt_ids=utts)
    if transforms is not None:
        feats = adapt_features(feats, transforms, read_kaldi_map(Path(data_dir) / "utt2spk"))
    out = {"hyps": {}, "ctm": {}, "failed": {}, "nbest": {}, "tids": {}, "posts": {},
           "frames": 0, "seconds": 0.0, "am_cost": 0.0}
    for u in utts:
        x = feats.get(u)
        if x is None:
            out["failed"][u] = "no features (or no CMVN stats for its speaker)"
        elif x.shape[1] != am.feat_dim:
            raise ValueError(f"{data_dir}: features of {u} have dimension {x.shape[1]}, the "
                             f"model {am.feat_dim}; expected the training features")
    start = time.perf_counter()
    for batch in _batches([u for u in utts if u in feats], feats, batch_size):
        scores = []
        for u in batch:
            xd = feats[u].to(dev)
            scores.append(am.loglik(xd) if xd.shape[0] <= WHOLE_LOGLIK_FRAMES else FrameScores(
                xd.shape[0], am.num_pdfs, lambda t0, t1, xd=xd: am.loglik(xd[t0:t1]),
                LOGLIK_BLOCK_FRAMES))
        for u, res in zip(batch, search(scores)):
            _collect(out, u, res, feats[u].shape[0], id2word, am.tmodel)
    out["seconds"] = time.perf_counter() - start
    return out


def _or_error(search: Callable, scores):
    """``search(scores)``, or the :class:`DecodingError` it raised."""
    try:
        return search(scores)
    except DecodingError as e:
        return e


def _batches(utts: list[str], feats: dict, size: int) -> Iterator[list[str]]:
    """``utts`` in batches of up to ``size`` of similar length (sorted by frames), each
    utterance longer than :data:`WHOLE_LOGLIK_FRAMES` alone."""
    order = sorted(utts, key=lambda u: feats[u].shape[0])
    batch: list[str] = []
    for u in order:
        if feats[u].shape[0] > WHOLE_LOGLIK_FRAMES:
            yield [u]
            continue
        batch.append(u)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _collect(out: dict, u: str, res, frames: int, id2word: dict[int, str],
             tmodel: TransitionModel) -> None:
    """Add utterance ``u``'s search result (or :class:`DecodingError`) to a job's ``out``."""
    if isinstance(res, DecodingError):
        out["failed"][u] = str(res)
        logger.warning("%s: not decoded: %s", u, res)
        return
    words = [id2word[w] for w in res.words]
    out["hyps"][u] = " ".join(words)
    out["tids"][u] = res.tids.cpu()
    if res.nbest is not None:
        out["nbest"][u] = [(" ".join(id2word[w] for w in ws), -c) for ws, c in res.nbest]
    if res.posteriors is not None:
        out["posts"][u] = res.posteriors
    out["frames"] += frames
    out["am_cost"] += res.am_cost
    if not res.reached_final:
        logger.warning("%s: no final state reached; partial output", u)
    try:
        out["ctm"][u] = word_segments(res.tids, words, tmodel)
    except ValueError as e:
        logger.warning("%s: no CTM: %s", u, e)


def decode_gmm_data_dir(exp: str | os.PathLike, graph_dir: str | os.PathLike,
                        data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                        *, acoustic_scale: float = 0.1, beam: float = 13.0,
                        max_active: int = 7000, nj: int = 1, device: str | None = "cpu",
                        nbest: int = 1, lattice_beam: float = 8.0, backend: str = "asrkit",
                        fmllr_passes: int = 2, fmllr_silence_weight: float = 0.01,
                        fmllr_stats: str = "1best", fmllr_lattice_beam: float = 4.0,
                        batch_size: int = 16, word_ins_penalty: float = 0.0,
                        avg: int = 1, checkpoint: str | os.PathLike | None = None,
                        select: str = "best", metric: str = "dev_loss",
                        progress: Callable[[int], None] | None = None) -> DecodeReport:
    """Decode a feature data dir with an HMM-GMM model and a graph dir (Kaldi
    ``steps/decode.sh`` 1-best; outputs in the module docstring).

    Args:
        exp: an HMM-GMM stage dir (``exp/<tag>/tri1``) or its ``final.mdl``.
        graph_dir: ``make_graph`` output for this model.
        data_dir: feature data dir (``feats.scp`` of the training feature type, ``spk2utt``;
            ``utt2dur`` for the real-time factor).
        out_dir: default ``<exp>/decode_<data dir name>_<graph dir name>``.
        acoustic_scale: weight of the acoustic log-likelihoods against the graph costs
            (Kaldi's ``--acwt`` 0.1; the inverse of the LM weight).
        beam: decoding beam (13).
        max_active: tokens kept per frame (7000).
        nj: parallel jobs (spawned single-threaded processes, utterances split Kaldi style);
            1 decodes in this process.
        device: ``cpu`` (default), ``cuda``, ``auto``.
        nbest: with ``nbest > 1`` also write ``out_dir/nbest``: up to ``nbest`` distinct
            word sequences per utterance (all jobs merged, utterances sorted), scored
            ``-(graph cost + acoustic_scale * acoustic cost)`` (natural log, higher better;
            rank 1 is the ``text`` line); with 1 a stale ``nbest`` file is removed.
        lattice_beam: ``nbest > 1``: lattice pruning beam in cost units (Kaldi's
            ``--lattice-beam``, 8.0).
        backend: the search: ``"asrkit"`` (:func:`asrkit.decode.wfst.decode_fst`, the
            default) or ``"kaldi"`` (Kaldi's C++ ``FasterDecoder``,
            :mod:`asrkit.decode.kaldi`; the kaldi extra; 1-best only, on the CPU).
        fmllr_passes: SAT models (``final.mdl`` of a ``sat`` stage): adapted decoding
            passes after the speaker-independent one (Kaldi ``decode_fmllr.sh``: 2 -- the
            first transform from the SI pass, a second from the first adapted pass; 1 is
            faster). Outputs of the SI pass are in ``out_dir/si/text``, the transforms in
            ``out_dir/trans.ark``.
        fmllr_silence_weight: weight of silence frames in the test speakers' fMLLR
            statistics (``decode_fmllr.sh --silence-weight`` 0.01).
        fmllr_stats: where the test speakers' fMLLR statistics come from: ``"1best"``
            (each frame's pdf on the previous pass's best path) or ``"lattice"`` (every
            transition id's posterior in that pass's lattice, Kaldi's ``lattice-to-post
            --acoustic-scale`` in ``decode_fmllr.sh``; the passes that feed a transform then
            search one utterance at a time, recording a lattice). ``asrkit`` backend.
        fmllr_lattice_beam: ``fmllr_stats="lattice"``: the lattice beam of those passes
            (4.0: ``decode_fmllr.sh``'s ``--first-lattice-beam`` and the beam of its
            ``lattice-determinize-pruned`` before the second transform).
        batch_size: ``asrkit`` backend, 1-best: utterances of similar length searched
            together (:func:`asrkit.decode.wfst.decode_fst_batch`; the same output as one
            at a time, several times faster per core), at most
            :data:`MAX_BATCH_STATES` // graph states; 1 searches one at a time.
        word_ins_penalty: graph cost added per output word (Kaldi's scoring
            ``--word-ins-penalty``, swept over 0.0 / 0.5 / 1.0 beside the LM weight by its
            ``score.sh``); ``asrkit`` backend only.
        avg, select, metric, checkpoint: hybrid DNN-HMM experiments only: the network's
            weights are the average of ``avg`` epoch checkpoints chosen by ``select``
            (``"best"``: lowest ``metric``, ``"dev_loss"`` or ``"dev_wer"`` -- the hybrid's
            frame error %; ``"last"``: the latest), or the file ``checkpoint``
            (:func:`asrkit.exp.checkpoint.load_model`). Default: the single best epoch by
            dev loss.
        progress: called with the number of utterances of each finished job.

    Returns:
        :class:`asrkit.decode.run.DecodeReport`; its wall time is the jobs' decoding time
        (loading excluded) summed over jobs, so RTF is per core.

    Raises:
        FileNotFoundError: a missing model, graph or data file.
        ValueError: checkpoint options (``avg != 1``, ``checkpoint``, ``select``, ``metric``
            other than the defaults) for an HMM-GMM model, which has no checkpoints; an
            unknown ``select`` / ``metric``; ``nj < 1``, ``batch_size < 1``, ``nbest < 1``, a word insertion
            penalty with the ``kaldi`` backend, ``lattice_beam <= 0``, an unknown
            ``backend`` or ``nbest > 1`` with ``kaldi``, an unknown ``fmllr_stats``,
            ``"lattice"`` with ``kaldi`` or ``fmllr_lattice_beam <= 0``, or features of
            another dimension than the model's.
        ImportError: ``backend="kaldi"`` without kaldi-decoder/kaldifst (the message names
            the install command).
    """
    _check_options(nj, batch_size, nbest, lattice_beam, backend, word_ins_penalty)
    if fmllr_stats not in ("1best", "lattice"):
        raise ValueError(f"fmllr_stats must be '1best' or 'lattice', got {fmllr_stats!r}")
    if fmllr_stats == "lattice" and backend != "asrkit":
        raise ValueError("fmllr_stats='lattice' needs the asrkit backend (Kaldi's "
                         "FasterDecoder keeps no lattice); use '1best'")
    if not fmllr_lattice_beam > 0:
        raise ValueError(f"fmllr_lattice_beam must be > 0, got {fmllr_lattice_beam}")
    mpath = model_file(exp)
    graph_dir, data_dir = Path(graph_dir), Path(data_dir)
    gpath = graph_dir / "HCLG.fst"
    if not gpath.is_file():
        raise FileNotFoundError(f"{gpath} not found; build it with asrkit mkgraph")
    out = Path(out_dir) if out_dir else mpath.parent / f"decode_{data_dir.name}_{graph_dir.name}"
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else (
        "cpu" if device in (None, "auto") else device)
    utts = list(read_kaldi_map(data_dir / "feats.scp"))
    weights = _hybrid_weights(mpath, avg, checkpoint, select, metric)
    opts = {"acoustic_scale": acoustic_scale, "beam": beam, "max_active": max_active,
            "nbest": nbest, "lattice_beam": lattice_beam, "batch_size": batch_size,
            "word_ins_penalty": word_ins_penalty, "weights": weights}
    fmllr = not is_hybrid_exp(mpath.parent) and bool(
        (AcousticModel.load(mpath).meta.get("features") or {}).get("fmllr"))
    if fmllr and fmllr_passes < 1:
        raise ValueError(f"fmllr_passes must be >= 1, got {fmllr_passes}")
    with stage_log(out / "decode.log"):
        logger.info("decoding %d utterances of %s with %s and %s (acwt %g, beam %g, "
                    "max-active %d, %d job(s), %s search)", len(utts), data_dir, mpath, gpath,
                    acoustic_scale, beam, max_active, nj, backend)
        wall_start = time.perf_counter()

        def run(model_path: Path, transforms: dict | None = None,
                posteriors: bool = False) -> list[dict]:
            o = opts if not posteriors else {**opts, "nbest": 1, "posteriors": True,
                                             "lattice_beam": fmllr_lattice_beam}
            return _run_jobs(model_path, gpath, data_dir, utts, o, nj, dev, backend,
                             transforms, progress)

        results, adapt_seconds = _fmllr_passes(
            mpath, run, data_dir, out, fmllr_passes, fmllr_silence_weight,
            fmllr_stats == "lattice") if fmllr else (run(mpath), 0.0)
        wall = time.perf_counter() - wall_start
        hyps, failed, nbest_path = _write_outputs(out, results, nbest)
        search_seconds = sum(r["seconds"] for r in results) + adapt_seconds
        durs = read_kaldi_map(data_dir / "utt2dur") if (data_dir / "utt2dur").is_file() else {}
        frames = sum(r["frames"] for r in results)
        audio = sum(float(durs[u]) for u in hyps if u in durs) if durs else frames * 0.01
        report = DecodeReport(out / "text", len(hyps), audio, search_seconds, nbest_path)
        summary = {"method": "wfst_viterbi", "backend": backend, "model": str(mpath),
                   "graph": str(gpath),
                   "acoustic_scale": acoustic_scale, "beam": beam, "max_active": max_active,
                   "nbest": nbest, "lattice_beam": lattice_beam if nbest > 1 else None,
                   "batch_size": batch_size if backend == "asrkit" and nbest == 1 else 1,
                   "word_ins_penalty": word_ins_penalty,
                   "fmllr_passes": fmllr_passes if fmllr else None,
                   "fmllr_stats": fmllr_stats if fmllr else None,
                   "fmllr_lattice_beam": (fmllr_lattice_beam
                                          if fmllr and fmllr_stats == "lattice" else None),
                   "checkpoints": ({k: str(v) for k, v in weights.items()}
                                   if is_hybrid_exp(mpath.parent) else None),
                   "nj": nj, "num_utts": len(hyps), "num_failed": len(failed),
                   "audio_seconds": round(audio, 3), "wall_seconds": round(search_seconds, 3),
                   "elapsed_seconds": round(wall, 3), "rtf": round(report.rtf, 6),
                   "device": dev, "threads": 1 if nj > 1 else torch.get_num_threads(),
                   "avg_am_cost_per_frame": (sum(r["am_cost"] for r in results) / frames
                                             if frames else None)}
        with atomic_write(out / "decode_summary.json") as f:
            json.dump(summary, f, indent=1)
        logger.info("decoded %d utterances (%d failed, %.1f s of audio): search %.1f s, RTF "
                    "%.4f per core; elapsed %.1f s", len(hyps), len(failed), audio,
                    search_seconds, report.rtf, wall)
    return report


def _hybrid_weights(mpath: Path, avg: int, checkpoint: str | os.PathLike | None,
                    select: str, metric: str) -> dict:
    """The checkpoint choice of a hybrid experiment, as :meth:`HybridScorer.load` keywords;
    for an HMM-GMM model (no checkpoints) anything but the defaults is an error."""
    if not is_hybrid_exp(mpath.parent):
        if (avg, checkpoint, select, metric) != (1, None, "best", "dev_loss"):
            raise ValueError(f"{mpath} is an HMM-GMM model: avg / checkpoint / select / metric "
                             "choose the checkpoints of a hybrid DNN-HMM experiment")
        return {}
    if select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {select!r}")
    if metric not in ("dev_loss", "dev_wer"):
        raise ValueError(f"metric must be 'dev_loss' or 'dev_wer', got {metric!r}")
    if not (isinstance(avg, int) and avg >= 1):
        raise ValueError(f"avg must be an integer >= 1, got {avg!r}")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        return {"checkpoint": str(checkpoint)}
    return {"avg": avg, "select": select, "metric": metric}


def _check_options(nj: int, batch_size: int, nbest: int, lattice_beam: float, backend: str,
                   word_ins_penalty: float) -> None:
    """The argument checks of :func:`decode_gmm_data_dir` (its Raises), before any work."""
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(nbest, int) and nbest >= 1):
        raise ValueError(f"nbest must be an integer >= 1, got {nbest!r}")
    if not lattice_beam > 0:
        raise ValueError(f"lattice_beam must be > 0, got {lattice_beam}")
    if backend not in ("asrkit", "kaldi"):
        raise ValueError(f"unknown backend {backend!r}; choose asrkit or kaldi")
    if backend == "kaldi":
        if word_ins_penalty:
            raise ValueError("word_ins_penalty needs the asrkit backend")
        if nbest > 1:
            raise ValueError("nbest > 1 needs the asrkit backend (Kaldi's FasterDecoder "
                             "keeps no lattice)")
        from asrkit.decode.kaldi import require_kaldi_decoder

        require_kaldi_decoder()  # the install hint before any work


def _write_outputs(out: Path, results: list[dict], nbest: int
                   ) -> tuple[dict[str, str], dict[str, str], Path | None]:
    """Merge the jobs' results and write ``text``, ``ctm``, ``nbest`` (or remove a stale
    one) and ``failed``; returns the hypotheses, the failed utterances and the n-best
    path."""
    hyps: dict[str, str] = {}
    ctm: dict[str, list[Segment]] = {}
    failed: dict[str, str] = {}
    nbests: dict[str, list[tuple[str, float]]] = {}
    for r in results:
        hyps.update(r["hyps"])
        nbests.update(r["nbest"])
        ctm.update(r["ctm"])
        failed.update(r["failed"])
    write_kaldi_map(out / "text", hyps)
    write_ctm(out / "ctm", ctm)
    nbest_path = write_or_clear_nbest(out / "nbest", nbests, nbest)
    write_failed(out / "failed", failed)
    return hyps, failed, nbest_path


def _run_jobs(model_path: Path, gpath: Path, data_dir: Path, utts: list[str], opts: dict,
              nj: int, dev: str, backend: str, transforms: dict | None,
              progress: Callable[[int], None] | None) -> list[dict]:
    """Decode ``utts`` in ``nj`` jobs (this process for 1, spawned processes otherwise)."""
    jobs = [j for j in split_evenly(utts, nj) if j]
    if nj == 1:
        results = [_decode_job(str(model_path), str(gpath), str(data_dir), utts, opts, None,
                               dev, backend, transforms)]
        if progress:
            progress(len(utts))
        return results
    results = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futs = {pool.submit(_decode_job, str(model_path), str(gpath), str(data_dir), j,
                            opts, 1, dev, backend, transforms): len(j) for j in jobs}
        for fut in cf.as_completed(futs):
            results.append(fut.result())
            if progress:
                progress(futs[fut])
    return results


def _fmllr_passes(mpath: Path, run: Callable[..., list[dict]], data_dir: Path, out: Path,
                  passes: int, silence_weight: float, lattice: bool = False
                  ) -> tuple[list[dict], float]:
    """Kaldi ``decode_fmllr.sh``: decode with the speaker-independent ``final.alimdl``,
    then ``passes`` times estimate each speaker's fMLLR transform with ``final.mdl`` from
    the last pass's best paths, or with ``lattice`` from its lattice posteriors (silence
    weighted ``silence_weight``), compose it with the speaker's previous one and decode the
    adapted features again.

    Returns:
        ``(the last pass's job results, seconds of all passes but the last plus estimation)``.

    Raises:
        FileNotFoundError: no ``final.alimdl`` beside ``final.mdl``.
    """

    alimdl = mpath.with_name("final.alimdl")
    if not alimdl.is_file():
        raise FileNotFoundError(f"{alimdl} not found: a SAT model (sat stage) decodes its "
                                "first pass with the speaker-independent final.alimdl")
    results = run(alimdl, posteriors=lattice)
    write_kaldi_map(out / "si" / "text", {u: h for r in results for u, h in r["hyps"].items()})
    spent = sum(r["seconds"] for r in results)
    model = AcousticModel.load(mpath)
    spk_of = read_kaldi_map(data_dir / "utt2spk")
    start = time.perf_counter()
    feats = load_features(data_dir, model.meta["features"])
    transforms: dict[str, torch.Tensor] = {}
    for p in range(passes):
        cur = adapt_features(feats, transforms, spk_of) if transforms else feats
        if lattice:
            cur, pdfs, weights = _posterior_frames(model, cur, results, silence_weight)
        else:
            tids = {u: t for r in results for u, t in r["tids"].items()}
            pdfs, weights = pdf_alignments(model.tmodel, tids, silence_weight)
        new, impr = speaker_transforms(model.gmm, cur, pdfs, weights, spk_of)
        transforms = {s: compose_fmllr(W, transforms[s]) if s in transforms else W
                      for s, W in new.items()}
        logger.info("fMLLR pass %d: transforms of %d speakers (auxf +%.4f per frame)", p + 1,
                    len(transforms), impr)
        spent += time.perf_counter() - start
        if p:
            spent += sum(r["seconds"] for r in results)
        results = run(mpath, transforms, posteriors=lattice and p + 1 < passes)
        start = time.perf_counter()
    write_fmllr(out / "trans.ark", transforms)
    return results, spent


def _posterior_frames(model: AcousticModel, feats: dict[str, torch.Tensor],
                      results: list[dict], silence_weight: float
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                 dict[str, torch.Tensor]]:
    """Lattice posteriors as weighted frames for :func:`speaker_transforms`: per utterance
    one row per (frame, transition id) with posterior mass -- the frame's features, the
    pdf, the posterior times the silence weight (Kaldi's ``weight-silence-post``). The fMLLR
    statistics are sums over rows, so this equals accumulating soft posteriors."""
    t2p = model.tmodel.tid2pdf
    rows, pdfs, weights = {}, {}, {}
    for r in results:
        for u, (frames, tids, post) in r["posts"].items():
            if u not in feats:
                continue
            rows[u] = feats[u][frames]
            pdfs[u] = t2p[tids]
            weights[u] = post * silence_pdf_weights(model.tmodel, tids, silence_weight)
    return rows, pdfs, weights
