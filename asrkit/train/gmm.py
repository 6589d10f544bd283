"""``asrkit train model=hmm_gmm`` and ``asrkit align``: HMM-GMM stages over Kaldi dirs.

The config's ``model.stages`` (``conf/model/hmm_gmm.yaml``) run in order, each into
``exp_dir/<stage>/``, as Kaldi's ``steps/train_mono.sh`` then ``steps/train_deltas.sh``:

* ``final.mdl``      the acoustic model (:class:`asrkit.models.hmm_gmm.AcousticModel`)
* ``ali/``           forced alignments of the training data with ``final.mdl``
  (:func:`asrkit.models.hmm_gmm.write_alignment_dir`: ``ali.txt`` transition ids,
  ``pdf_ali.txt``, ``phone_ali.txt``, ``phone.ctm``, ``word.ctm``, ``failed``), the frame
  targets of hybrid neural models and the start of the next stage
* ``history.json``   per-iteration log-likelihood per frame, Gaussians, aligned/failed counts
* ``train_summary.json``  pdfs, Gaussians, training wall seconds, aligned/failed utterances
* ``train.log``      the stage's log; ``.done`` when the stage completed

A stage whose ``.done`` exists is loaded instead of retrained, so a killed run resumes at the
stage it was in. Features are the data dir's cepstra (``feats.scp``, e.g. 13 MFCCs) with
per-speaker CMN (``spk2utt``; Kaldi ``apply-cmvn``) and deltas (``add-deltas``); the options
are saved in the model's ``meta["features"]`` so decoding and alignment use the same ones.

A stage dir needs nothing outside it to decode after a move (``final.mdl`` holds the model and
its feature options; a graph dir holds ``HCLG.fst`` and ``words.txt``); the lang dir is an
argument of ``asrkit mkgraph`` and ``asrkit align``, as in Kaldi (:mod:`asrkit.train.expdir`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from asrkit.data.datadir import read_kaldi_map
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log
from asrkit.models.hmm_gmm import (
    AcousticModel,
    GraphCompiler,
    GraphError,
    align_viterbi,
    load_gmm_features,
    read_int_vectors,
    train_mono,
    train_tri,
    write_alignment_dir,
)
from asrkit.models.hmm_gmm.lda_mllt import accumulate_lda_stats, estimate_lda, splice
from asrkit.text.lexicon import Lang, find_oovs, read_lang
from asrkit.train.checkpoint import pick_device
from asrkit.train.expdir import copy_into_exp

__all__ = ["STAGE_TYPES", "align_data_dir", "feature_options", "load_features",
           "train_hmm_gmm"]

logger = logging.getLogger(__name__)

STAGE_TYPES = ("mono", "tri", "lda_mllt")
"""Stage types of ``model.stages``: flat-start monophone (``train_mono.sh``), decision-tree
triphone on deltas (``train_deltas.sh``), triphone on LDA+MLLT spliced features
(``train_lda_mllt.sh``)."""

_MONO_KEYS = ("num_iters", "max_gauss", "max_iter_inc", "realign_iters", "power", "sil_prob", "initial_beam",
              "beam", "retry_factor", "acoustic_scale", "transition_scale", "var_floor",
              "perturb", "min_count", "all_prons")
_LDA_KEYS = ("splice", "lda_dim")
_TRI_KEYS = ("num_leaves", "tot_gauss", "num_iters", "max_iter_inc", "realign_iters",
             "mllt_iters", "context_width",
             "central_position", "min_gain", "min_leaf_count", "cluster_thresh",
             "tree_var_floor", "power", "sil_prob", "all_prons", "beam", "retry_factor",
             "acoustic_scale", "transition_scale", "var_floor", "perturb", "min_count")


def feature_options(model_cfg: Mapping) -> dict:
    """The feature options saved in a model's ``meta["features"]``: ``delta_order``,
    ``delta_window``, ``norm_vars`` (per-speaker CMVN)."""
    return {"delta_order": int(model_cfg.get("delta_order", 2)),
            "delta_window": int(model_cfg.get("delta_window", 2)),
            "norm_vars": bool(model_cfg.get("norm_vars", False)), "cmvn": "speaker"}


def load_features(data_dir: str | os.PathLike, options: Mapping,
                  utt_ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """GMM features of a feature data dir: ``{utt: (T, F * (delta_order + 1))}`` at 10 ms,
    or with ``options["splice"]`` the CMN'd cepstra spliced over ``+-splice`` frames and
    multiplied by ``options["transform"]`` (LDA+MLLT, ``(dim, F * (2 * splice + 1))``).

    Args:
        data_dir: a data dir with ``feats.scp`` (cepstra, ``asrkit features --type mfcc``)
            and ``spk2utt``; ``cmvn_spk.scp`` is used when present, else per-speaker stats are
            computed from the features.
        options: :func:`feature_options` (``model.meta["features"]``).
        utt_ids: only these utterances (default: all of ``feats.scp``).

    Raises:
        FileNotFoundError: ``feats.scp`` or ``spk2utt`` is missing.
    """
    d = Path(data_dir)
    for name in ("feats.scp", "spk2utt"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found; expected a feature data dir "
                                    "(asrkit features --type mfcc)")
    cmvn = d / "cmvn_spk.scp"
    splice_ctx = options.get("splice")
    feats = load_gmm_features(d / "feats.scp", d / "spk2utt",
                              cmvn_scp=cmvn if cmvn.is_file() else None,
                              norm_vars=bool(options.get("norm_vars", False)),
                              delta_order=0 if splice_ctx is not None
                              else int(options.get("delta_order", 2)),
                              delta_window=int(options.get("delta_window", 2)),
                              utt_ids=utt_ids)
    if splice_ctx is None:
        return feats
    transform = options.get("transform")
    mat = None if transform is None else torch.as_tensor(transform, dtype=torch.float32)
    out = {}
    for u, x in feats.items():
        y = splice(x, int(splice_ctx))
        out[u] = y if mat is None else y @ mat.T
    return out


def _stage_options(name: str, stage: Mapping, keys: tuple[str, ...]) -> dict:
    unknown = sorted(set(stage) - set(keys) - {"type"})
    if unknown:
        raise ValueError(f"model.stages.{name}: unknown options {unknown}; known: "
                         f"{sorted(keys)}")
    return {k: v for k, v in stage.items() if k != "type"}


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
    if next(iter(stages.values()))["type"] != "mono":
        raise ValueError("the first HMM-GMM stage must be a monophone (type: mono) stage")
    if not cfg.data.get("lang"):
        raise ValueError("model=hmm_gmm needs data.lang=<lang dir> (asrkit lang)")
    exp_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(exp_dir / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("trainer") and cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    device = pick_device(mc.get("device"))
    lang = read_lang(cfg.data.lang)
    feat_opts = feature_options(mc)
    train_dir = Path(cfg.data.train)
    if (train_dir / "feature_config.yaml").is_file():  # asrkit transcribe computes the same
        copy_into_exp(train_dir / "feature_config.yaml", exp_dir, "feature_config.yaml")
    feats: dict[str, torch.Tensor] | None = None
    text = read_kaldi_map(train_dir / "text")
    oovs = find_oovs(lang.words, text)
    if oovs:
        logger.warning("%s: %d OOV running words (%.2f%%) map to %s: %s", train_dir / "text",
                       oovs.num_oov_tokens, 100 * oovs.rate, lang.oov_word, oovs.summary())

    prev: tuple[AcousticModel, dict[str, torch.Tensor]] | None = None
    for name, st in stages.items():
        sdir = exp_dir / name
        if is_done(sdir):
            logger.info("%s: complete (.done exists); loading it", sdir)
            prev = _load_stage(sdir)
            continue
        if feats is None and st["type"] != "lda_mllt":  # lda_mllt splices its own
            feats = load_features(train_dir, feat_opts)
        with stage_log(sdir / "train.log"):
            start = time.perf_counter()
            if st["type"] == "mono":
                opts = _stage_options(name, st, _MONO_KEYS)
                stage_feats = feat_opts
                res = train_mono(feats, text, lang, device=device, **opts)
            elif st["type"] == "tri":
                opts = _stage_options(name, st, _TRI_KEYS)
                stage_feats = feat_opts
                model0, alis0 = prev
                res = train_tri(feats, text, lang, alis0, ali_model=model0, device=device,
                                **opts)
            else:
                opts = _stage_options(name, st, _TRI_KEYS + _LDA_KEYS)
                ctx, dim = int(opts.pop("splice", 3)), int(opts.pop("lda_dim", 40))
                model0, alis0 = prev
                raw = load_features(train_dir, {**feat_opts, "splice": ctx})
                lda = estimate_lda(accumulate_lda_stats(
                    raw, {u: model0.tmodel.tid2pdf[t] for u, t in alis0.items()},
                    model0.num_pdfs), dim)
                lda_feats = {u: x @ lda.T for u, x in raw.items()}
                del raw
                opts.setdefault("mllt_iters", (2, 4, 6, 12))
                res = train_tri(lda_feats, text, lang, alis0, ali_model=model0,
                                device=device, **opts)
                del lda_feats
                total = lda if res.transform is None else res.transform.to(lda) @ lda
                stage_feats = {**feat_opts, "delta_order": 0, "splice": ctx,
                               "transform": total.tolist()}
            wall = time.perf_counter() - start
            model = res.model.to("cpu")
            model.meta.update({"features": stage_feats, "stage": name, "lang": str(cfg.data.lang),
                               "train_seconds": round(wall, 1), "device": str(device)})
            sdir.mkdir(parents=True, exist_ok=True)
            model.save(sdir / "final.mdl")
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
        prev = (model, {u: a.tids for u, a in res.alignments.items()})
    return exp_dir


def align_data_dir(model_path: str | os.PathLike, lang_dir: str | os.PathLike,
                   data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   beam: float = 10.0, retry_beam: float = 40.0, sil_prob: float | None = None,
                   device: str | None = "auto") -> tuple[Path, int, int]:
    """Forced-align a data dir with a trained model (Kaldi ``steps/align_si.sh``).

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
        except GraphError as e:
            failed[u] = e.reason
            continue
        xs[u] = x.to(dev)
    with stage_log(out / "align.log"):
        alis, ali_failed = align_viterbi(
            model, graphs, xs, beam=beam, retry_beam=retry_beam,
            acoustic_scale=float(model.meta.get("acoustic_scale", 0.1)),
            transition_scale=float(model.meta.get("transition_scale", 0.1)))
        failed.update(ali_failed)
        write_alignment_dir(out, alis, failed, model=model.to("cpu"))
        logger.info("%s: aligned %d utterances, %d failed", out, len(alis), len(failed))
    return out, len(alis), len(failed)
