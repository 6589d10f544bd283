"""Transcribe your own audio files with a trained experiment: no data dir, any length.

:class:`Transcriber` loads an experiment once and turns audio (files of any format and sample
rate libsndfile reads, or arrays) into :class:`Transcript` objects: the text and each word's
start and end in seconds. It is the library behind ``asrkit transcribe``::

    from asrkit import Transcriber

    asr = Transcriber.from_exp("exp/conformer", method="ctc_prefix_beam", lm="lm.arpa")
    for r in asr.transcribe(["a.wav", "b.flac"]):
        print(r.text, [(w.word, w.start, w.end) for w in r.words])

Experiments: a neural one (``asrkit train``; every :data:`asrkit.decode.search.SEARCH_METHODS`
method, ``wfst`` with ``graph``) or an HMM-GMM stage dir (``exp/x/tri2``, decoded over
``graph/HCLG.fst`` as ``asrkit decode`` does).

Per recording:

* Audio: read with soundfile (:class:`asrkit.data.segment.AudioFile`); several channels are
  averaged (or ``channel`` picks one); the features are computed as the experiment's training
  features were (:func:`asrkit.features.compute.extract` with its :class:`FeatureConfig`),
  which resamples to the feature rate with ``torchaudio.functional.resample`` (a warning is
  logged when that means upsampling: the model never heard the missing band).
* Length: a recording no longer than ``max_segment`` seconds is decoded whole, as
  ``asrkit decode`` decodes an utterance. A longer one is cut into speech segments of at most
  ``max_segment`` seconds by a VAD, read block by block (:mod:`asrkit.data.segment`);
  segments are decoded in batches of at most ``batch_seconds`` of audio and their word times
  shifted by the segment start; the words are joined into one transcript. Memory is bounded
  by one block, one batch and the model, whatever the recording's length.
* HMM-GMM: MFCC, then CMN per segment (``cmn="segment"``, the default: each segment is its own
  "speaker", as a data dir without speaker information is decoded; safe when speakers change
  within a recording) or per recording (``cmn="recording"``: stats over all its segments, a
  first pass; for one-speaker recordings), deltas or splicing + LDA/MLLT as the model's ``meta["features"]``
  say (:func:`asrkit.models.hmm_gmm.gmm_features`), a Viterbi beam search over ``HCLG``
  (:func:`asrkit.decode.wfst.decode_fst`) and the word times of its best path
  (:func:`asrkit.decode.gmm.word_segments`).
* Word times of neural models: see :mod:`asrkit.decode.search` (CTC forced alignment of the
  hypothesis, encoder frames of ``subsampling × frame_shift`` seconds).

Files that cannot be read are errors of that file only: with ``on_error="continue"`` their
:class:`Transcript` carries ``error`` and the others are transcribed (the CLI's choice); with
``on_error="raise"`` (the API default) the first one raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
from omegaconf import OmegaConf

from asrkit.data.audio import AudioError
from asrkit.data.segment import VAD_METHODS, AudioSegment, _Audio, open_audio, segment_audio
from asrkit.features.compute import FeatureConfig, FeatureError, extract
from asrkit.fileio import atomic_write

__all__ = ["AUDIO_EXTENSIONS", "Transcriber", "Transcript", "Word", "expand_inputs",
           "experiment_feature_config", "utterance_ids", "write_ctm", "write_json",
           "write_text"]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist", ".raw")
"""Extensions of the files taken from a directory input (formats libsndfile reads; ``.raw``
is headerless 16 kHz 16-bit big-endian PCM as in :mod:`asrkit.data.audio`)."""
MIN_FRAMES = 9
"""Segments with fewer feature frames (90 ms) are skipped: too short for a word."""


@dataclass
class Word:
    """A recognised word with its ``start`` and ``end`` in seconds from the beginning of the
    recording, and a confidence in [0, 1] when the decoder gives one (neural: the mean CTC
    posterior of its tokens' frames)."""

    word: str
    start: float
    end: float
    conf: float | None = None


@dataclass
class Transcript:
    """The result for one recording.

    Attributes:
        id: utterance id (the file stem, made unique; ``array<N>`` for arrays).
        path: the file, or None for an array.
        text: the words joined by spaces (empty when nothing was recognised or on error).
        words: :class:`Word` list in time order.
        duration: the recording's length in seconds.
        segments: the decoded segments (one for a recording decoded whole).
        error: why the recording failed (``on_error="continue"``), else None.
    """

    id: str
    path: str | None
    text: str = ""
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0
    segments: list[AudioSegment] = field(default_factory=list)
    error: str | None = None


# ----------------------------------------------------------------------------- inputs


def expand_inputs(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Audio paths from command-line items: a file; ``@LIST`` (a list file: one path per
    line, blank lines and ``#`` comments skipped, relative paths taken from the list file's
    directory); a directory (every file below it with an :data:`AUDIO_EXTENSIONS` extension,
    any case, sorted).

    Returns:
        The paths in order (files that do not exist are kept: transcribing them reports
        the error by name).

    Raises:
        FileNotFoundError: a missing list file or directory given as ``DIR/``.
    """
    out: list[Path] = []
    for item in items:
        s = str(item)
        if s.startswith("@"):
            lst = Path(s[1:])
            if not lst.is_file():
                raise FileNotFoundError(f"list file {lst} not found")
            with open(lst, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        p = Path(line)
                        out.append(p if p.is_absolute() else lst.parent / p)
        elif Path(s).is_dir():
            out += sorted(p for p in Path(s).rglob("*")
                          if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            out.append(Path(s))
    return out


def utterance_ids(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Kaldi utterance ids for files: the stem, whitespace replaced by ``_``; stems that
    collide are prefixed with as many parent folder names as make them unique
    (``a/x.wav``, ``b/x.wav`` → ``a_x``, ``b_x``), then numbered if still equal.

    Returns:
        One id per path, unique, in the paths' order.
    """
    def clean(s: str) -> str:
        return re.sub(r"\s+", "_", s) or "_"

    parts = [[clean(p) for p in Path(x).parent.parts if p not in ("/", ".")]
             + [clean(Path(x).stem)] for x in paths]
    ids = [p[-1] for p in parts]
    depth = 1
    while len(set(ids)) < len(ids) and depth < max(len(p) for p in parts):
        depth += 1
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        ids = ["_".join(p[-depth:]) if counts[i] > 1 else i for p, i in zip(parts, ids)]
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}-{seen[i]}")
    return out


# ----------------------------------------------------------------------------- outputs


def _sorted(transcripts: Iterable[Transcript]) -> list[Transcript]:
    return sorted(transcripts, key=lambda t: t.id.encode("utf-8"))


def _emit(path: str | os.PathLike | IO[str], text: str) -> None:
    if hasattr(path, "write"):
        path.write(text)  # type: ignore[union-attr]
        return
    with atomic_write(path) as f:
        f.write(text)


def write_text(path: str | os.PathLike | IO[str], transcripts: Iterable[Transcript]) -> None:
    """Kaldi ``text`` (``utt-id WORD…`` per line, sorted by id in C order) of the successful
    transcripts, to a file (written atomically) or an open stream."""
    _emit(path, "".join(f"{t.id} {t.text}".rstrip() + "\n"
                        for t in _sorted(transcripts) if t.error is None))


def write_ctm(path: str | os.PathLike | IO[str], transcripts: Iterable[Transcript]) -> None:
    """Word CTM, NIST format: ``<utt-id> 1 <start> <duration> <word> [<conf>]`` per word,
    seconds with 3 decimals, sorted by utterance then time (file written atomically)."""
    lines = []
    for t in _sorted(transcripts):
        for w in t.words:
            conf = "" if w.conf is None else f" {w.conf:.3f}"
            lines.append(f"{t.id} 1 {w.start:.3f} {max(0.0, w.end - w.start):.3f} "
                         f"{w.word}{conf}\n")
    _emit(path, "".join(lines))


def write_json(path: str | os.PathLike | IO[str], transcripts: Iterable[Transcript]) -> None:
    """JSON: ``{"files": [{"id", "path", "duration", "text", "words": [{"word", "start",
    "end", "conf"}], "segments": [[start, end]]}], "failed": [{"id", "path", "error"}]}``,
    files sorted by id, times in seconds (file written atomically)."""
    files, failed = [], []
    for t in _sorted(transcripts):
        if t.error is not None:
            failed.append({"id": t.id, "path": t.path, "error": t.error})
            continue
        files.append({"id": t.id, "path": t.path, "duration": round(t.duration, 3),
                      "text": t.text,
                      "words": [{"word": w.word, "start": round(w.start, 3),
                                 "end": round(w.end, 3),
                                 "conf": None if w.conf is None else round(w.conf, 4)}
                                for w in t.words],
                      "segments": [[round(s.start, 3), round(s.end, 3)] for s in t.segments]})
    _emit(path, json.dumps({"files": files, "failed": failed}, indent=1, ensure_ascii=False)
          + "\n")


# ----------------------------------------------------------------------------- features


def _load_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def experiment_feature_config(exp_dir: str | os.PathLike, cfg: dict | None = None, *,
                              feat_dim: int | None = None) -> FeatureConfig:
    """The :class:`FeatureConfig` an experiment was trained on.

    Looks, in order, at ``exp_dir/feature_config.yaml`` (a copy, if the experiment has
    one), the training data dir's ``feature_config.yaml`` (``data.train``, written by
    ``asrkit features``: what the features really were), and the ``features`` group of
    ``config.yaml``; the first whose dimension is ``feat_dim`` (when given) wins.

    Args:
        exp_dir: the experiment (for an HMM-GMM stage dir, its parent holds ``config.yaml``).
        cfg: its resolved config; None reads ``exp_dir/config.yaml``.
        feat_dim: the feature dimension the model expects, to check against.

    Raises:
        FileNotFoundError: none found; ValueError: none with dimension ``feat_dim``.
    """
    exp_dir = Path(exp_dir)
    if cfg is None:
        cfg = _load_yaml(exp_dir / "config.yaml") or {}
    found: list[tuple[str, dict]] = []
    own = _load_yaml(exp_dir / "feature_config.yaml")
    if own:
        found.append((str(exp_dir / "feature_config.yaml"), own))
    train = (cfg.get("data") or {}).get("train")
    if train and str(train) != "???":
        d = _load_yaml(Path(str(train)) / "feature_config.yaml")
        if d:
            found.append((f"{train}/feature_config.yaml", d))
    if isinstance(cfg.get("features"), dict):
        found.append((f"{exp_dir / 'config.yaml'} (features)", cfg["features"]))
    if not found:
        raise FileNotFoundError(f"{exp_dir}: no feature config (looked at feature_config.yaml, "
                                "data.train/feature_config.yaml, config.yaml features)")
    for where, d in found:
        fc = FeatureConfig.from_dict(d)
        if feat_dim is None or fc.feat_dim == feat_dim:
            logger.info("features of %s: %s %d-dim at %d Hz (%s)", exp_dir, fc.type,
                        fc.feat_dim, fc.sample_rate, where)
            return fc
    raise ValueError(f"{exp_dir}: the model expects {feat_dim}-dim features but "
                     + "; ".join(f"{w} gives {FeatureConfig.from_dict(d).feat_dim}"
                                 for w, d in found)
                     + "; copy the training features' feature_config.yaml into the experiment")


# ----------------------------------------------------------------------------- backends


class _NeuralBackend:
    """A neural CTC model and its search (:class:`asrkit.decode.search.CtcModelSearch`)."""

    needs_file_stats = False

    def __init__(self, model, search, fcfg: FeatureConfig, device: torch.device) -> None:
        self.model, self.search, self.fcfg, self.device = model, search, fcfg, device

    @torch.inference_mode()
    def decode(self, feats: list[torch.Tensor], stats=None) -> list[list[Word]]:
        lens = torch.tensor([x.shape[0] for x in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        enc, enc_lens = self.model.encode(x.to(self.device), lens.to(self.device))
        stride = max(1, round(int(lens.max()) / max(1, enc.shape[1])))
        frame = stride * self.fcfg.frame_shift / 1000.0
        out = []
        for spans, n in zip(self.search(enc, enc_lens), lens.tolist()):
            dur = n * self.fcfg.frame_shift / 1000.0
            out.append([Word(s.word, min(dur, s.start * frame), min(dur, s.end * frame),
                             s.conf) for s in spans])
        return out


class _GmmBackend:
    """An HMM-GMM stage and a graph dir (``asrkit decode``'s HMM-GMM path, per recording)."""

    def __init__(self, am, graph_dir: Path, fcfg: FeatureConfig, *, acoustic_scale: float,
                 beam: float, max_active: int, device: torch.device, cmn: str = "segment"
                 ) -> None:
        from asrkit.decode.wfst import DecodingGraph
        from asrkit.decode.wfst.fstio import read_fst
        from asrkit.text.lexicon import read_symbol_table

        gpath = graph_dir / "HCLG.fst"
        if not gpath.is_file():
            raise FileNotFoundError(f"{gpath} not found; build it with asrkit mkgraph")
        self.am, self.fcfg, self.device = am.to(device), fcfg, device
        self.graph = DecodingGraph.from_fst(read_fst(gpath)).to(device)
        self.id2word = {i: w for w, i in read_symbol_table(graph_dir / "words.txt").items()}
        self.tid2pdf = am.tmodel.tid2pdf.to(device)
        self.opts = {"acoustic_scale": acoustic_scale, "beam": beam, "max_active": max_active}
        self.fopts = am.meta.get("features") or {}
        if cmn not in ("segment", "recording"):
            raise ValueError(f"cmn must be 'segment' or 'recording', got {cmn!r}")
        self.needs_file_stats = cmn == "recording"

    def file_stats(self, feats: Iterable[torch.Tensor]) -> np.ndarray | None:
        """Per-recording CMN stats (the recording is the speaker), Kaldi layout."""
        from asrkit.features.cmvn import compute_cmvn_stats

        stats = None
        for x in feats:  # one segment at a time: memory stays flat
            s = compute_cmvn_stats([x.numpy()])
            stats = s if stats is None else stats + s
        return stats

    def _gmm_feats(self, x: torch.Tensor, stats: np.ndarray | None) -> torch.Tensor:
        from asrkit.models.hmm_gmm import gmm_features
        from asrkit.models.hmm_gmm.features import splice

        o = self.fopts
        ctx = o.get("splice")
        y = gmm_features(x, stats, norm_vars=bool(o.get("norm_vars", False)),
                         delta_order=0 if ctx is not None else int(o.get("delta_order", 2)),
                         delta_window=int(o.get("delta_window", 2)))
        if ctx is None:
            return y
        y = splice(y, int(ctx))
        t = o.get("transform")
        return y if t is None else y @ torch.as_tensor(t, dtype=torch.float32).T

    def decode(self, feats: list[torch.Tensor], stats=None) -> list[list[Word]]:
        from asrkit.decode.gmm import word_segments
        from asrkit.decode.wfst import DecodingError, decode_fst

        shift = self.fcfg.frame_shift / 1000.0
        out = []
        for x in feats:
            if not self.needs_file_stats:  # per-segment CMN
                from asrkit.features.cmvn import compute_cmvn_stats

                stats = compute_cmvn_stats([x.numpy()])
            y = self._gmm_feats(x, stats)
            if y.shape[1] != self.am.feat_dim:
                raise ValueError(f"features have dimension {y.shape[1]}, the model "
                                 f"{self.am.feat_dim}; expected the training features")
            try:
                res = decode_fst(self.graph, self.am.loglik(y.to(self.device)), self.tid2pdf,
                                 **self.opts)
            except DecodingError as e:
                logger.warning("a segment was not decoded: %s", e)
                out.append([])
                continue
            words = [self.id2word[w] for w in res.words]
            try:
                segs = word_segments(res.tids, words, self.am.tmodel)
                out.append([Word(s.label, s.start * shift, s.end * shift) for s in segs])
            except ValueError as e:  # no word boundaries: words spread over the segment
                logger.warning("no word times: %s", e)
                n, T = len(words), y.shape[0]
                out.append([Word(w, T * i // n * shift, T * (i + 1) // n * shift)
                            for i, w in enumerate(words)])
        return out


# ----------------------------------------------------------------------------- transcriber


class Transcriber:
    """A loaded experiment that transcribes recordings (module docstring).

    Build it with :meth:`from_exp`; the constructor takes a ready backend.

    Args:
        backend: the model and search (internal).
        vad: ``"silero"`` or ``"none"`` (:mod:`asrkit.data.segment`), for recordings longer
            than ``max_segment``.
        max_segment: longest segment in seconds; also the longest recording decoded whole.
        block_seconds: seconds of audio read at a time during segmentation.
        batch_seconds: neural models: segments decoded together, at most this much audio.
        channel: None averages the channels of multi-channel audio; N takes channel N (0-based).
        vad_options: ``threshold``, ``min_silence``, ``speech_pad``, ``min_speech``
            (:func:`asrkit.data.segment.speech_regions`) and ``context``
            (:func:`asrkit.data.segment.with_context`).

    Raises:
        ValueError: an unknown ``vad`` or ``max_segment <= 1``.
    """

    def __init__(self, backend, *, vad: str = "silero", max_segment: float = 30.0,
                 block_seconds: float = 30.0, batch_seconds: float = 120.0,
                 channel: int | None = None, vad_options: dict | None = None) -> None:
        if vad not in VAD_METHODS:
            raise ValueError(f"unknown vad {vad!r}; choose from {VAD_METHODS}")
        if not max_segment > 1.0:
            raise ValueError(f"max_segment must be > 1 second, got {max_segment}")
        self.backend = backend
        self.vad, self.max_segment, self.channel = vad, float(max_segment), channel
        self.block_seconds, self.batch_seconds = float(block_seconds), float(batch_seconds)
        self.vad_options = dict(vad_options or {})
        self._vad_model = None

    @property
    def feature_config(self) -> FeatureConfig:
        """The features the model reads (sample rate, frame shift, type)."""
        return self.backend.fcfg

    @classmethod
    def from_exp(cls, exp: str | os.PathLike, *, method: str | None = None,
                 beam: float | None = None, lm: str | os.PathLike | None = None,
                 lm_weight: float | None = None, word_bonus: float | None = None,
                 graph: str | os.PathLike | None = None, ctc_weight: float | None = None,
                 token_topk: int | None = None, length_penalty: float | None = None,
                 maxlen_ratio: float | None = None, blank_penalty: float | None = None,
                 max_active: int | None = None, acwt: float = 0.1, avg: int = 1,
                 cmn: str = "segment", checkpoint: str | os.PathLike | None = None,
                 device: str | None = "auto", **kwargs) -> Transcriber:
        """Load an experiment once for transcribing.

        Args:
            exp: a neural experiment dir (``config.yaml``, ``checkpoints/``) or an HMM-GMM
                stage dir (``final.mdl``).
            method: neural search method (:data:`asrkit.decode.search.SEARCH_METHODS`,
                default ``ctc_greedy``); ignored for HMM-GMM. The neural search options
                (None: the defaults of the method's options class,
                :mod:`asrkit.decode.options`) are built by
                :func:`asrkit.decode.options.decode_options`.
            beam: beam size (neural beam methods, default 10), or the WFST beam in cost
                units (``wfst`` default 16, HMM-GMM default 13).
            lm, lm_weight, word_bonus: shallow fusion for the beam methods; ``lm_weight`` is
                also ``wfst``'s graph LM weight.
            graph: ``wfst``: the TLG graph dir; HMM-GMM: the HCLG graph dir (default
                ``exp/graph``).
            ctc_weight, token_topk, length_penalty, maxlen_ratio, blank_penalty, max_active:
                as for ``asrkit decode``.
            acwt: HMM-GMM acoustic scale.
            cmn: HMM-GMM cepstral mean normalisation per ``"segment"`` or per
                ``"recording"`` (module docstring).
            avg: average the last ``avg`` epoch checkpoints; checkpoint: or load this one.
            device: ``auto`` (CUDA if present; HMM-GMM: CPU), ``cpu``, ``cuda:0``…
            **kwargs: the constructor's options (``vad``, ``max_segment``, ``block_seconds``,
                ``batch_seconds``, ``channel``, ``vad_options``).

        Raises:
            FileNotFoundError: missing experiment, checkpoint, graph or tokenizer files.
            ValueError: bad options (see :func:`asrkit.decode.options.decode_options` and
                :class:`asrkit.decode.search.CtcModelSearch`).
        """
        from asrkit.decode.gmm import is_gmm_exp, model_file
        from asrkit.exp.checkpoint import pick_device

        exp = Path(exp)
        if is_gmm_exp(exp):
            from asrkit.models.hmm_gmm import AcousticModel

            mpath = model_file(exp)
            dev = torch.device("cpu") if device in (None, "auto") else torch.device(device)
            am = AcousticModel.load(mpath)
            fo = am.meta.get("features") or {}
            if fo.get("splice") is not None and fo.get("transform") is not None:
                ceps = len(fo["transform"][0]) // (2 * int(fo["splice"]) + 1)
            elif fo.get("splice") is not None:
                ceps = am.feat_dim // (2 * int(fo["splice"]) + 1)
            else:
                ceps = am.feat_dim // (int(fo.get("delta_order", 2)) + 1)
            stage_dir = mpath.parent
            if (stage_dir / "feature_config.yaml").is_file():
                fcfg = experiment_feature_config(stage_dir, {}, feat_dim=ceps)
            else:
                fcfg = experiment_feature_config(stage_dir.parent, feat_dim=ceps)
            backend = _GmmBackend(am, Path(graph) if graph else stage_dir / "graph", fcfg,
                                  acoustic_scale=acwt, beam=13.0 if beam is None else beam,
                                  max_active=7000 if max_active is None else max_active,
                                  device=dev, cmn=cmn)
            logger.info("HMM-GMM %s, graph %s", mpath, Path(graph) if graph else stage_dir / "graph")
            return cls(backend, **kwargs)
        from asrkit.decode.options import decode_options
        from asrkit.decode.search import CtcModelSearch
        from asrkit.exp.checkpoint import load_model
        from asrkit.exp.expdir import load_exp_tokenizer

        dev = pick_device(device)
        model, cfg = load_model(exp, checkpoint=checkpoint, avg=avg, device=dev)
        tok = load_exp_tokenizer(exp, cfg)
        fcfg = experiment_feature_config(exp, cfg, feat_dim=cfg["model_dims"]["input_dim"])
        if beam is not None and (method or "ctc_greedy") != "wfst":
            beam = int(beam)
        opts, fusion = decode_options(
            method or "ctc_greedy", beam=beam, token_topk=token_topk, ctc_weight=ctc_weight,
            length_penalty=length_penalty, maxlen_ratio=maxlen_ratio, lm=lm,
            lm_weight=lm_weight, word_bonus=word_bonus, graph=graph, max_active=max_active,
            blank_penalty=blank_penalty)
        search = CtcModelSearch(model, tok, opts, fusion, device=dev)
        return cls(_NeuralBackend(model, search, fcfg, dev), **kwargs)

    # -- one recording

    def _features(self, audio: _Audio, seg: AudioSegment) -> torch.Tensor | None:
        sr = audio.sample_rate
        x = audio.read(round(seg.start * sr), round(seg.duration * sr))
        try:
            feats = extract(torch.from_numpy(x), sr, self.feature_config, utt_id=audio.name)
        except FeatureError as e:
            logger.debug("%s: segment %.2f-%.2f s skipped: %s", audio.name, seg.start,
                         seg.end, e)
            return None
        return feats if feats.shape[0] >= MIN_FRAMES else None

    def _batches(self, segs: list[AudioSegment]) -> Iterable[list[AudioSegment]]:
        batch: list[AudioSegment] = []
        total = 0.0
        for s in segs:
            if batch and total + s.duration > self.batch_seconds:
                yield batch
                batch, total = [], 0.0
            batch.append(s)
            total += s.duration
        if batch:
            yield batch

    def _transcribe_audio(self, audio: _Audio) -> tuple[list[Word], list[AudioSegment]]:
        fsr = self.feature_config.sample_rate
        if audio.sample_rate < fsr:
            logger.warning("%s: %d Hz audio upsampled to the model's %d Hz; the band above "
                           "%d Hz is empty, expect more errors", audio.name,
                           audio.sample_rate, fsr, audio.sample_rate // 2)
        if audio.duration <= self.max_segment:
            segs = [AudioSegment(0.0, audio.duration)]
        else:
            if self.vad == "silero" and self._vad_model is None:
                from asrkit.data.segment import load_silero_vad

                self._vad_model = load_silero_vad()
            segs = segment_audio(audio, vad=self.vad, max_segment=self.max_segment,
                                 model=self._vad_model, block_seconds=self.block_seconds,
                                 **self.vad_options)
        stats = None
        if self.backend.needs_file_stats:
            stats = self.backend.file_stats(
                f for f in (self._features(audio, s) for s in segs) if f is not None)
        words: list[Word] = []
        used: list[AudioSegment] = []
        for batch in self._batches(segs):
            feats, kept = [], []
            for s in batch:
                f = self._features(audio, s)
                if f is not None:
                    feats.append(f)
                    kept.append(s)
            if not feats:
                continue
            for s, ws in zip(kept, self.backend.decode(feats, stats)):
                words += [Word(w.word, s.start + w.start, s.start + w.end, w.conf) for w in ws]
            used += kept
        if not used and len(segs) == 1:
            raise FeatureError(f"{audio.name}: {audio.duration:.3f} s is too short to "
                               f"decode (need at least {MIN_FRAMES} frames)")
        return words, used

    def transcribe(self, audio, sample_rate: int | None = None, *,
                   ids: Sequence[str] | None = None, on_error: str = "raise",
                   progress: Callable[[Transcript], None] | None = None) -> list[Transcript]:
        """Transcribe recordings.

        Args:
            audio: a path, a list of paths, a ``(N,)`` or ``(N, channels)`` numpy array or
                torch tensor of samples, or a list of such arrays.
            sample_rate: Hz of array input (required for arrays; files carry their own).
            ids: utterance ids (default: :func:`utterance_ids` of the paths; ``array<N>``).
            on_error: ``"raise"``: the first unreadable recording raises; ``"continue"``:
                its :class:`Transcript` gets ``error`` and the others go on.
            progress: called with each finished :class:`Transcript`.

        Returns:
            One :class:`Transcript` per recording, in input order.

        Raises:
            asrkit.data.audio.AudioError: unreadable audio (``on_error="raise"``), naming
                the file.
            asrkit.features.compute.FeatureError: audio too short (``on_error="raise"``).
            ValueError: bad ``on_error`` or ``ids`` of the wrong length.
        """
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', got {on_error!r}")
        items = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        if ids is None:
            paths = [x for x in items if isinstance(x, (str, os.PathLike))]
            path_ids = iter(utterance_ids(paths))
            arr = iter(range(len(items)))
            ids = [next(path_ids) if isinstance(x, (str, os.PathLike)) else f"array{next(arr)}"
                   for x in items]
        elif len(ids) != len(items):
            raise ValueError(f"{len(ids)} ids for {len(items)} recordings")
        out = []
        for utt, item in zip(ids, items):
            is_path = isinstance(item, (str, os.PathLike))
            t = Transcript(utt, str(item) if is_path else None)
            start = time.perf_counter()
            try:
                with open_audio(item, None if is_path else sample_rate, self.channel,
                                name=None if is_path else utt) as a:
                    t.duration = a.duration
                    t.words, t.segments = self._transcribe_audio(a)
            except (AudioError, FeatureError) as e:
                if on_error == "raise":
                    raise
                t.error = str(e)
                logger.error("%s", e)
            t.text = " ".join(w.word for w in t.words)
            logger.debug("%s: %.1f s of audio in %.2f s", utt, t.duration,
                         time.perf_counter() - start)
            if progress is not None:
                progress(t)
            out.append(t)
        return out
