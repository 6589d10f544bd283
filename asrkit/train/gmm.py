"""``asrkit train model=hmm_gmm`` and ``asrkit align``: HMM-GMM stages over Kaldi dirs.

The config's ``model.stages`` (``conf/model/hmm_gmm.yaml``) run in order, each into
``exp_dir/<stage>/``, as Kaldi's ``steps/train_mono.sh`` then ``steps/train_deltas.sh``:

* ``final.mdl``      the acoustic model (:class:`asrkit.models.hmm_gmm.AcousticModel`)
* ``ali/``           forced alignments of the training data with ``final.mdl``
  (:func:`asrkit.models.hmm_gmm.write_alignment_dir`: ``ali.txt`` transition ids,
  ``pdf_ali.txt``, ``phone_ali.txt``, ``phone.ctm``, ``word.ctm``, ``failed``), the frame
  targets of hybrid neural models and the start of the next stage
* ``final.alimdl``, ``trans.ark``/``trans.scp``  (``sat`` stages) the speaker-independent
  alignment model and the training speakers' fMLLR transforms (Kaldi matrices)
* ``history.json``   per-iteration log-likelihood per frame, Gaussians, aligned/failed counts
* ``train_summary.json``  pdfs, Gaussians, training wall seconds, aligned/failed utterances
* ``train.log``      the stage's log; ``.done`` when the stage completed

A stage whose ``.done`` exists is loaded instead of retrained, so a killed run resumes at the
stage it was in. Features are the data dir's cepstra (``feats.scp``, e.g. 13 MFCCs) with
per-speaker CMN (``spk2utt``; Kaldi ``apply-cmvn``) and deltas (``add-deltas``); the options
are saved in the model's ``meta["features"]`` so decoding and alignment use the same ones.

A stage dir needs nothing outside it to decode after a move (``final.mdl`` holds the model and
its feature options; a graph dir holds ``HCLG.fst`` and ``words.txt``); the lang dir is an
argument of ``asrkit mkgraph`` and ``asrkit align``, as in Kaldi (:mod:`asrkit.exp.expdir`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from asrkit.data.datadir import read_kaldi_map
from asrkit.exp.checkpoint import pick_device
from asrkit.exp.expdir import copy_into_exp
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log
from asrkit.models.hmm_gmm import (
    AcousticModel,
    GraphCompiler,
    TranscriptGraphError,
    align_viterbi,
    feature_options,
    load_features,
    read_int_vectors,
    train_mono,
    train_sat,
    train_tri,
    write_alignment_dir,
)
from asrkit.models.hmm_gmm.fmllr import (
    adapt_features,
    pdf_alignments,
    read_fmllr,
    speaker_transforms,
    write_fmllr,
)
from asrkit.models.hmm_gmm.mono import MonoOptions
from asrkit.models.hmm_gmm.sat import SatOptions
from asrkit.models.hmm_gmm.tri import LdaMlltOptions, TriOptions, train_lda_mllt
from asrkit.text.lexicon import Lang, find_oovs, read_lang

__all__ = ["STAGE_TYPES", "align_data_dir", "train_hmm_gmm"]

logger = logging.getLogger(__name__)

STAGE_TYPES = ("mono", "tri", "lda_mllt", "sat")
"""Stage types of ``model.stages``: flat-start monophone (``train_mono.sh``), decision-tree
triphone on deltas (``train_deltas.sh``), triphone on LDA+MLLT spliced features
(``train_lda_mllt.sh``), speaker-adaptive training on fMLLR-adapted LDA+MLLT features
(``train_sat.sh``; after an ``lda_mllt`` or ``sat`` stage)."""



def _stage_options(name: str, stage: Mapping, cls: type):
    """``cls(**options)`` of ``model.stages.<name>`` (its keys but ``type``).

    Raises:
        ValueError: an option that is not a field of ``cls``, naming the stage.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(stage) - fields - {"type"})
    if unknown:
        raise ValueError(f"model.stages.{name}: unknown options {unknown}; known: "
                         f"{sorted(fields)}")
    return cls(**{k: v for k, v in stage.items() if k != "type"})


def _write_history(path: Path, history) -> None:
    rows = [dict(vars(h)) for h in history]
    with atomic_write(path) as f:
        json.dump(rows, f, indent=1)


def _load_stage(sdir: Path) -> tuple[AcousticModel, dict[str, torch.Tensor]]:
    model = AcousticModel.load(sdir / "final.mdl")
    return model, read_int_vectors(sdir / "ali" / "ali.txt")


def train_hmm_gmm(cfg: DictConfig) -> Path:
    """Run the HMM-GMM stages of ``cfg.model.stages`` (layout in the module docstring).

    Args:
        cfg: the composed training config with ``model=hmm_gmm``: ``exp_dir``,
            ``data.train`` (feature data dir with ``feats.scp``, ``text``, ``spk2utt``),
            ``data.lang`` (``asrkit lang`` output), ``model.stages`` (ordered
            ``{name: {type: mono|tri, ...options}}``; the first must be ``mono``) and the
            feature options.

    Returns:
        ``exp_dir``.

    Raises:
        ValueError: no stages, an unknown stage type or option, a ``tri`` stage first, no
            ``data.lang``, or training errors (no usable utterance).
        FileNotFoundError: missing data or lang files.
    """
    exp_dir = Path(cfg.exp_dir)
    mc = cfg.model
    stages = OmegaConf.to_container(mc.stages, resolve=True) if mc.get("stages") else {}
    if not stages:
        raise ValueError("model.stages is empty; expected e.g. {mono: {type: mono}, tri1: "
                         "{type: tri}}")
    for name, st in stages.items():
        if st.get("type") not in STAGE_TYPES:
            raise ValueError(f"model.stages.{name}.type must be one of {STAGE_TYPES}, got "
                             f"{st.get('type')!r}")
    types = [st["type"] for st in stages.values()]
    for name, kind, before in zip(list(stages)[1:], types[1:], types):
        if kind == "sat" and before not in ("lda_mllt", "sat"):
            raise ValueError(f"model.stages.{name}: a sat stage must follow an lda_mllt or sat "
                             f"stage, not {before!r} (remove it with ~model.stages.{name})")
    if next(iter(stages.values()))["type"] != "mono":
        raise ValueError("the first HMM-GMM stage must be a monophone (type: mono) stage")
    if not cfg.data.get("lang"):
        raise ValueError("model=hmm_gmm needs data.lang=<lang dir> (asrkit lang)")
    exp_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(exp_dir / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    device = pick_device(mc.get("device"))
    lang = read_lang(cfg.data.lang)
    feat_opts = feature_options(mc)
    train_dir = Path(cfg.data.train)
    if (train_dir / "feature_config.yaml").is_file():  # asrkit transcribe computes the same
        copy_into_exp(train_dir / "feature_config.yaml", exp_dir, "feature_config.yaml")
    data = _TrainData(train_dir)
    text = data.text
    oovs = find_oovs(lang.words, text)
    if oovs:
        logger.warning("%s: %d OOV running words (%.2f%%) map to %s: %s", train_dir / "text",
                       oovs.num_oov_tokens, 100 * oovs.rate, lang.oov_word, oovs.summary())

    prev: tuple[AcousticModel, dict[str, torch.Tensor]] | None = None
    prev_dir: Path | None = None
    for name, st in stages.items():
        sdir = exp_dir / name
        if is_done(sdir):
            logger.info("%s: complete (.done exists); loading it", sdir)
            prev, prev_dir = _load_stage(sdir), sdir
            continue
        with stage_log(sdir / "train.log"):
            start = time.perf_counter()
            res, stage_feats = _STAGES[st["type"]](name, st, data, lang, feat_opts, prev,
                                                   prev_dir, device)
            wall = time.perf_counter() - start
            model = res.model.to("cpu")
            model.meta.update({"features": stage_feats, "stage": name, "lang": str(cfg.data.lang),
                               "train_seconds": round(wall, 1), "device": str(device)})
            sdir.mkdir(parents=True, exist_ok=True)
            model.save(sdir / "final.mdl")
            if st["type"] == "sat":
                si = res.si_model.to("cpu")
                si.meta.update({k: v for k, v in model.meta.items() if k != "type"})
                si.save(sdir / "final.alimdl")
                write_fmllr(sdir / "trans.ark", res.spk_transforms)
            write_alignment_dir(sdir / "ali", res.alignments, res.failed)
            _write_history(sdir / "history.json", res.history)
            summary = {"type": st["type"], "num_pdfs": model.num_pdfs,
                       "num_gauss": model.num_gauss, "train_seconds": round(wall, 1),
                       "num_aligned": len(res.alignments), "num_failed": len(res.failed),
                       "final_avg_loglik": res.history[-1].avg_loglik if res.history else None,
                       "device": str(device), "threads": torch.get_num_threads()
                       if device.type == "cpu" else None}
            with atomic_write(sdir / "train_summary.json") as f:
                json.dump(summary, f, indent=1)
            logger.info("%s: %s stage done in %.1f s: %d Gaussians, %d pdfs, %d utterances "
                        "aligned, %d failed", sdir, st["type"], wall, model.num_gauss,
                        model.num_pdfs, len(res.alignments), len(res.failed))
        mark_done(sdir)
        prev, prev_dir = (model, {u: a.tids for u, a in res.alignments.items()}), sdir
    return exp_dir


class _TrainData:
    """The training data dir of a run: its ``text`` and its features, loaded once per set
    of feature options (consecutive stages with the same options share them)."""

    def __init__(self, path: Path) -> None:
        self.dir = Path(path)
        self.text = read_kaldi_map(self.dir / "text")
        self._cache: tuple[str, dict[str, torch.Tensor]] | None = None

    def features(self, opts: Mapping) -> dict[str, torch.Tensor]:
        key = json.dumps(opts, sort_keys=True)
        if self._cache is None or self._cache[0] != key:
            self._cache = None  # free the previous set first
            self._cache = (key, load_features(self.dir, opts))
        return self._cache[1]


def _mono_stage(name, st, data, lang, feat_opts, prev, prev_dir, device):
    """A ``mono`` stage (``train_mono.sh``) on MFCC + deltas."""
    return train_mono(data.features(feat_opts), data.text, lang, _stage_options(name, st, MonoOptions),
                      device=device), feat_opts


def _tri_stage(name, st, data, lang, feat_opts, prev, prev_dir, device):
    """A ``tri`` stage (``train_deltas.sh``) on the previous stage's alignments."""
    model0, alis0 = prev
    return train_tri(data.features(feat_opts), data.text, lang, alis0, _stage_options(name, st, TriOptions),
                     ali_model=model0, device=device), feat_opts


def _lda_mllt_stage(name, st, data, lang, feat_opts, prev, prev_dir, device):
    """An ``lda_mllt`` stage (``train_lda_mllt.sh``) on spliced CMN'd cepstra."""
    opts = _stage_options(name, st, LdaMlltOptions)
    model0, alis0 = prev
    spliced = data.features({**feat_opts, "splice": opts.splice})
    res = train_lda_mllt(spliced, data.text, lang, alis0, opts, ali_model=model0, device=device)
    return res, {**feat_opts, "delta_order": 0, "splice": opts.splice,
                 "transform": res.transform.tolist()}


def _sat_stage(name, st, data, lang, feat_opts, prev, prev_dir, device):
    """A ``sat`` stage (``train_sat.sh``) from the previous LDA+MLLT or SAT stage: its
    features, alignments and (for a SAT stage) its speakers' transforms."""
    opts = _stage_options(name, st, SatOptions)
    model0, alis0 = prev
    if "splice" not in (model0.meta.get("features") or {}):
        raise ValueError(f"model.stages.{name}: a sat stage must follow an lda_mllt or sat "
                         "stage")
    si_opts = {k: v for k, v in model0.meta["features"].items() if k != "fmllr"}
    feats = data.features(si_opts)
    init = read_fmllr(prev_dir / "trans.ark") if (prev_dir / "trans.ark").is_file() else None
    res = train_sat(feats, data.text, lang, alis0, opts,
                    spk_of=read_kaldi_map(data.dir / "utt2spk"), ali_model=model0,
                    init_transforms=init, device=device)
    return res, {**si_opts, "fmllr": True}


_STAGES = {"mono": _mono_stage, "tri": _tri_stage, "lda_mllt": _lda_mllt_stage,
           "sat": _sat_stage}
"""Stage type -> ``(name, stage options, training data, lang, feature options, previous
(model, tids), previous stage dir, device) -> (training result, the stage's feature
options)``."""


def align_data_dir(model_path: str | os.PathLike, lang_dir: str | os.PathLike,
                   data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   beam: float = 10.0, retry_beam: float = 40.0, sil_prob: float | None = None,
                   device: str | None = "auto") -> tuple[Path, int, int]:
    """Forced-align a data dir with a trained model (Kaldi ``steps/align_si.sh``; for a SAT
    model ``steps/align_fmllr.sh``: a first alignment with the speaker-independent
    ``final.alimdl``, per-speaker fMLLR transforms from it (silence weight 0, written to
    ``out_dir/trans.ark``), then the alignment of the adapted features with ``final.mdl``).

    Args:
        model_path: ``final.mdl`` of an ``asrkit train model=hmm_gmm`` stage.
        lang_dir: the lang dir the model was trained with.
        data_dir: feature data dir (``feats.scp``, ``text``, ``spk2utt``).
        out_dir: alignment dir to write (layout of
            :func:`asrkit.models.hmm_gmm.write_alignment_dir`, plus ``final.mdl``).
        beam: Viterbi beam (Kaldi 10).
        retry_beam: beam of the retry for utterances that fail (Kaldi 40).
        sil_prob: optional-silence probability of the graphs (default: the model's).
        device: ``auto``, ``cpu``, ``cuda:0`` ...

    Returns:
        ``(out_dir, aligned utterances, failed utterances)``; failures (no features, OOV-only
        graph errors, no path within the beams) are listed in ``out_dir/failed``.

    Raises:
        FileNotFoundError: missing model, lang or data files.
        ValueError: features of another dimension than the model's.
    """
    out = Path(out_dir)
    dev = pick_device(device)
    model = AcousticModel.load(model_path, dev)
    lang: Lang = read_lang(lang_dir)
    opts = model.meta.get("features") or feature_options({})
    feats = load_features(data_dir, opts)
    text = read_kaldi_map(Path(data_dir) / "text")
    failed: dict[str, str] = {u: "no transcript" for u in feats if u not in text}
    failed.update({u: "no features" for u in text if u not in feats})
    compiler = GraphCompiler(lang, model.tmodel,
                             sil_prob=float(model.meta.get("sil_prob", 0.5)
                                            if sil_prob is None else sil_prob))
    graphs, xs = [], {}
    for u in text:
        if u not in feats:
            continue
        x = feats[u]
        if x.shape[1] != model.feat_dim:
            raise ValueError(f"{data_dir}: features of {u} have dimension {x.shape[1]}, the "
                             f"model {model.feat_dim}; expected the training features")
        try:
            graphs.append(compiler.compile(u, text[u]))
        except TranscriptGraphError as e:
            failed[u] = e.reason
            continue
        xs[u] = x.to(dev)
    scale = {"acoustic_scale": float(model.meta.get("acoustic_scale", 0.1)),
             "transition_scale": float(model.meta.get("transition_scale", 0.1))}
    with stage_log(out / "align.log"):
        if (model.meta.get("features") or {}).get("fmllr"):
            xs = _fmllr_adapt_for_alignment(Path(model_path), model, graphs, xs,
                                            Path(data_dir), out, beam, retry_beam, scale)
        alis, ali_failed = align_viterbi(model, graphs, xs, beam=beam, retry_beam=retry_beam,
                                         **scale)
        failed.update(ali_failed)
        write_alignment_dir(out, alis, failed, model=model.to("cpu"))
        logger.info("%s: aligned %d utterances, %d failed", out, len(alis), len(failed))
    return out, len(alis), len(failed)


def _fmllr_adapt_for_alignment(model_path: Path, model: AcousticModel, graphs: list,
                               xs: dict[str, torch.Tensor], data_dir: Path, out: Path,
                               beam: float, retry_beam: float, scale: dict
                               ) -> dict[str, torch.Tensor]:
    """``align_fmllr.sh``'s first two steps: align with ``final.alimdl``, estimate the
    speakers' transforms with ``model``; returns the adapted features."""
    alimdl = model_path.with_name("final.alimdl")
    if not alimdl.is_file():
        raise FileNotFoundError(f"{alimdl} not found: a SAT model aligns first with its "
                                "speaker-independent final.alimdl")
    si = AcousticModel.load(alimdl, model.device)
    si_alis, _ = align_viterbi(si, graphs, xs, beam=beam, retry_beam=retry_beam, **scale)
    spk_of = read_kaldi_map(data_dir / "utt2spk")
    pdfs, weights = pdf_alignments(model.tmodel, {u: a.tids for u, a in si_alis.items()}, 0.0)
    transforms, impr = speaker_transforms(model.gmm, xs, pdfs, weights, spk_of)
    logger.info("fMLLR transforms of %d speakers from the SI alignment (auxf +%.4f per "
                "frame)", len(transforms), impr)
    write_fmllr(out / "trans.ark", transforms)
    return {u: x.to(torch.float32) for u, x in adapt_features(xs, transforms, spk_of).items()}
