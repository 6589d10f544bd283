"""Hybrid DNN-HMM acoustic model (``model=hybrid``): a neural network estimates the posteriors
of the pdfs (tied HMM states) of a trained HMM-GMM, and decoding divides them by the pdf
priors to get scaled likelihoods for the GMM's own HCLG graph and WFST decoder (Bourlard &
Morgan, 1994, "Connectionist Speech Recognition: A Hybrid Approach"; Kaldi's nnet3 recipes,
``steps/nnet3/train_dnn.py`` and ``nnet3-am-compute``).

Training (``asrkit train model=hybrid data.alignment=exp/<gmm>/tri2``) runs the shared engine
(:mod:`asrkit.train.loop`): the targets of an utterance are the per-frame pdf ids of the GMM's
alignment (``ali/pdf_ali.txt``, :mod:`asrkit.models.hmm_gmm.ali_io`) instead of tokens; the
loss is frame cross-entropy with label smoothing, averaged over the frames of the batch; the
per-epoch "dev WER" of a hybrid model is its dev *frame error rate* (%, argmax pdf against
the alignment). The pdf counts of the training alignments give the priors (Kaldi's
``--class-frame-counts``), kept in the model as the buffer ``log_priors``, so every
checkpoint carries them; the GMM's ``final.mdl`` (transition model, tree) is copied into the
experiment, which then decodes after a move.

Encoders (``model.encoder``), all giving one output per 10 ms input frame:

- ``tdnn`` (default): Kaldi nnet3-style TDNN (Peddinti et al., 2015, "A time delay neural
  network architecture for efficient modeling of long temporal contexts"): 1-D dilated
  convolutions, each followed by ReLU and batch norm (Kaldi's ``relu-batchnorm-layer``); the
  spliced context is the receptive field of the layers (±13 frames with the default layers).
- ``cnn`` / ``lstm`` / ``transformer`` / ``conformer``: the encoder of that CTC family
  (:mod:`asrkit.models.cnn` ...) built from ``model.encoder_conf`` (its constructor
  arguments); its ``encoder_forward`` output at 40 ms (×4 subsampling front end) is repeated
  4 times and cut to the input length, so each 10 ms frame gets the output of the encoder
  frame that covers it (an LSTM built with ``subsampling: none`` is used as is).

Scoring: :meth:`HybridModel.pseudo_loglik` = ``log_softmax(logits) - prior_scale *
log_prior`` (natural log, per frame); pdfs never seen in the alignments get a prior of ``+inf``
(in practice ``1e10``), so they are never chosen (Kaldi's ``PdfPrior``). Decoding with
``asrkit decode EXP DATA --graph exp/<gmm>/tri2/graph_kn3`` uses it through
:class:`HybridScorer`; ``asrkit align EXP LANG DATA OUT`` aligns with it
(:func:`align_hybrid_data_dir`), which also gives network realignments to train on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asrkit.features.cmvn import GlobalCMVN
from asrkit.models.base import identity_cmvn_stats
from asrkit.models.modules.specaug import SpecAugment

__all__ = [
    "ENCODERS",
    "TDNN",
    "HybridModel",
    "HybridScorer",
    "align_hybrid_data_dir",
    "is_hybrid_exp",
    "load_frame_targets",
    "pdf_counts",
]

logger = logging.getLogger(__name__)

ENCODERS = {"tdnn": None, "cnn": "asrkit.models.cnn.CNNCTC",
            "lstm": "asrkit.models.lstm.LSTMCTC",
            "transformer": "asrkit.models.transformer.TransformerCTC",
            "conformer": "asrkit.models.conformer.ConformerCTC"}
"""``model.encoder`` names and the CTC family whose encoder they use (None: :class:`TDNN`)."""

#: Log prior given to pdfs that never occur in the training alignments (their pseudo
#: log-likelihood is then about -1e10: never on a best path).
UNSEEN_LOG_PRIOR = 1e10


class TDNN(nn.Module):
    """Kaldi nnet3-style TDNN: dilated 1-D convolutions, each + ReLU + batch norm + dropout.

    Args:
        input_dim: F.
        hidden_dim: channels of every layer (Kaldi's ``dim``).
        layers: ``[[kernel, dilation], ...]``: layer ``i`` splices ``kernel`` frames
            ``dilation`` apart (Kaldi ``tdnn2 input=Append(-3,0,3)`` is ``[3, 3]``); kernels
            must be odd (symmetric context).
        dropout: dropout after each layer.

    Shapes: ``forward(x (B, T, F), lengths (B,)) -> (B, T, hidden_dim)``; padded frames
    (``t >= lengths[b]``) are zeroed before every layer, so an utterance's output does not
    depend on the batch it is in except through batch-norm statistics in training mode.

    Raises:
        ValueError: an even kernel or a dilation < 1.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 512,
                 layers: Sequence[Sequence[int]] = ((5, 1), (3, 1), (3, 1), (3, 3), (3, 3),
                                                    (3, 3)),
                 dropout: float = 0.1):
        super().__init__()
        convs, norms = [], []
        d = input_dim
        for i, (k, dil) in enumerate(layers):
            if k % 2 == 0 or dil < 1:
                raise ValueError(f"model.tdnn.layers[{i}] = [{k}, {dil}]: the kernel must be "
                                 "odd and the dilation >= 1")
            convs.append(nn.Conv1d(d, hidden_dim, k, dilation=dil, padding=dil * (k // 2)))
            norms.append(nn.BatchNorm1d(hidden_dim))
            d = hidden_dim
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = hidden_dim
        self.context = sum(c.dilation[0] * (c.kernel_size[0] // 2) for c in convs)
        """Frames of context on each side (the receptive field is ``2 * context + 1``)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F), (B,) → (B, T, hidden_dim)."""
        keep = (torch.arange(x.shape[1], device=x.device)[None, :]
                < lengths.to(x.device)[:, None]).unsqueeze(1)  # (B, 1, T)
        h = x.transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(norm(F.relu(conv(h * keep))))
        return (h * keep).transpose(1, 2)


class HybridModel(nn.Module):
    """Frame classifier over the pdfs of an HMM-GMM: CMVN → SpecAugment → encoder → linear.

    Args:
        input_dim: F of the features.
        vocab_size: number of pdfs ``S`` of the GMM whose alignments are the targets (the
            engine passes it under this name).
        family: must be ``"hybrid"`` (the config key that dispatches training).
        encoder: one of :data:`ENCODERS`.
        tdnn: :class:`TDNN` arguments (``hidden_dim``, ``layers``, ``dropout``).
        encoder_conf: constructor arguments of the CTC family for the other encoders (e.g.
            ``{d_model: 144, num_layers: 8}`` for ``conformer``).
        specaug: :class:`SpecAugment` arguments, or None.
        cmvn_stats: global Kaldi CMVN stats (2, F + 1) of the training features.
        lsm_weight: label smoothing of the frame cross-entropy, in [0, 1).
        prior_scale: exponent of the priors in ``posterior / prior ** prior_scale`` (1.0).

    Raises:
        ValueError: unknown encoder, ``lsm_weight`` outside [0, 1), ``family`` not hybrid.
    """

    frame_targets = True
    """Tells the training engine the targets are per-frame pdf ids (see the module doc)."""

    def __init__(self, input_dim: int, vocab_size: int, family: str = "hybrid",
                 encoder: str = "tdnn", tdnn: Mapping[str, Any] | None = None,
                 encoder_conf: Mapping[str, Any] | None = None, specaug: dict | None = None,
                 cmvn_stats: np.ndarray | None = None, lsm_weight: float = 0.1,
                 prior_scale: float = 1.0):
        super().__init__()
        if family != "hybrid":
            raise ValueError(f"model.family must be 'hybrid' for HybridModel, got {family!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {sorted(ENCODERS)}, got "
                             f"{encoder!r}")
        if not 0.0 <= lsm_weight < 1.0:
            raise ValueError(f"model.lsm_weight must be in [0, 1), got {lsm_weight}")
        stats = identity_cmvn_stats(input_dim) if cmvn_stats is None else cmvn_stats
        self.normalize = GlobalCMVN(stats)
        self.specaug = SpecAugment(**specaug) if specaug else None
        self.encoder_name = encoder
        if encoder == "tdnn":
            self.encoder = TDNN(input_dim, **dict(tdnn or {}))
            dim = self.encoder.output_dim
            self.repeat = 1
        else:
            from hydra.utils import get_class

            cls = get_class(ENCODERS[encoder])
            # vocab_size=1: the family's CTC layer is unused (a D-parameter leftover)
            self.encoder = cls(input_dim=input_dim, vocab_size=1, **dict(encoder_conf or {}))
            dim = self.encoder.ctc_out.in_features
            self.repeat = self.encoder.encoder_frame_stride()[0]
        self.output = nn.Linear(dim, vocab_size)
        self.lsm_weight = float(lsm_weight)
        self.prior_scale = float(prior_scale)
        self.register_buffer("log_priors", torch.zeros(vocab_size))

    @property
    def num_pdfs(self) -> int:
        """Number of output pdfs ``S``."""
        return self.output.out_features

    def set_priors(self, counts: torch.Tensor) -> None:
        """Set ``log_priors`` from per-pdf frame counts ``(S,)`` (unseen pdfs: ``1e10``).

        Raises:
            ValueError: ``counts`` is not ``(S,)`` or has no frames.
        """
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.shape != (self.num_pdfs,) or counts.sum() <= 0:
            raise ValueError(f"pdf counts must be ({self.num_pdfs},) with frames, got shape "
                             f"{tuple(counts.shape)} summing to {float(counts.sum())}")
        lp = (counts / counts.sum()).log()
        lp[counts <= 0] = UNSEEN_LOG_PRIOR
        self.log_priors.copy_(lp.float())

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """CMVN → SpecAugment (training only) → encoder, at 10 ms frames.

        Args:
            feats: (B, T, F) features; feat_lens: (B,) valid frames.

        Returns:
            (B, T, D) encoder output and its lengths (B,) (= ``feat_lens``).
        """
        x = self.normalize(feats)
        if self.specaug is not None:
            x = self.specaug(x)
        if self.encoder_name == "tdnn":
            return self.encoder(x, feat_lens), feat_lens
        enc, _ = self.encoder.encoder_forward(x, feat_lens)
        if self.repeat > 1:
            enc = enc.repeat_interleave(self.repeat, dim=1)
        t = feats.shape[1]
        if enc.shape[1] < t:  # the subsampling front end drops a few trailing frames
            enc = torch.cat([enc, enc[:, -1:].expand(-1, t - enc.shape[1], -1)], dim=1)
        return enc[:, :t], feat_lens

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frame cross-entropy averaged over the valid frames of the batch.

        Args:
            feats: (B, T, F); feat_lens: (B,).
            targets: (B, T) pdf ids padded with -1; target_lens: (B,) equal to ``feat_lens``.

        Returns:
            ``{"loss": scalar, "acc": detached frame accuracy, "errors": int, "frames": int}``
            (wrong argmax frames and valid frames of the batch).
        """
        enc, lens = self.encode(feats, feat_lens)
        return self.loss_from_encoder(enc, lens, targets, target_lens)

    def loss_from_encoder(self, enc: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor,
                          target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of :meth:`forward` for an encoder output (B, T, D).

        Raises:
            ValueError: targets and features of different lengths.
        """
        if not torch.equal(target_lens.cpu(), lens.cpu()):
            raise ValueError(f"frame targets of {target_lens.tolist()} frames for features of "
                             f"{lens.tolist()} frames")
        logits = self.output(enc).float()
        t = min(logits.shape[1], targets.shape[1])
        logits, targets = logits[:, :t], targets[:, :t]
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-1,
                               label_smoothing=self.lsm_weight)
        valid = targets != -1
        errors = ((logits.detach().argmax(-1) != targets) & valid).sum()
        frames = valid.sum()
        # errors/frames as ints: summed by evaluation, not logged as per-batch scalars
        return {"loss": loss, "acc": 1.0 - errors.float() / frames.clamp(min=1).float(),
                "errors": int(errors), "frames": int(frames)}

    def log_posteriors(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        """(B, T, S) log pdf posteriors, float32."""
        enc, _ = self.encode(feats, feat_lens)
        return self.output(enc).float().log_softmax(-1)

    @torch.no_grad()
    def pseudo_loglik(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, S) scaled log-likelihoods ``log p(s|x) - prior_scale * log p(s)`` of one
        utterance's (T, F) features (call in eval mode)."""
        x = feats.to(self.log_priors.device, torch.float32)[None]
        lp = self.log_posteriors(x, torch.tensor([x.shape[1]], device=x.device))[0]
        return lp - self.prior_scale * self.log_priors


# ---------------------------------------------------------------------------------------------
# Training targets


def _pdf_ali_and_model(ali: str | os.PathLike) -> tuple[Path, Path]:
    """``(pdf_ali.txt, final.mdl)`` of a GMM stage dir (``ali/pdf_ali.txt``) or ali dir."""
    d = Path(ali)
    for pdf in (d / "ali" / "pdf_ali.txt", d / "pdf_ali.txt"):
        if pdf.is_file():
            for mdl in (pdf.parent / "final.mdl", d / "final.mdl", pdf.parent.parent / "final.mdl"):
                if mdl.is_file():
                    return pdf, mdl
            raise FileNotFoundError(f"{pdf} has no final.mdl beside it or in {d}; the "
                                    "alignments need the GMM they were made with")
    raise FileNotFoundError(f"no pdf alignments at {d} (expected {d / 'ali' / 'pdf_ali.txt'} of "
                            "an asrkit train model=hmm_gmm stage, or pdf_ali.txt of asrkit "
                            "align output)")


def load_frame_targets(ali: str | os.PathLike, data_dir: str | os.PathLike, num_pdfs: int
                       ) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Per-frame pdf targets of a feature data dir's utterances from a GMM alignment.

    Args:
        ali: a GMM stage dir (``exp/<tag>/tri2``, reads ``ali/pdf_ali.txt``) or an alignment
            dir (``asrkit align`` output) holding ``pdf_ali.txt``.
        data_dir: the feature data dir (``utt2num_frames``).
        num_pdfs: ``S`` of the GMM; every id must be in ``[0, S)``.

    Returns:
        ``(targets, skipped)``: ``{utt: pdf ids}`` of the utterances whose alignment has as
        many frames as their features, and ``{utt: reason}`` of the others (a frame-count
        mismatch, e.g. features computed with other frame options, or no alignment), each
        also logged as a warning.

    Raises:
        FileNotFoundError: no alignment, no ``utt2num_frames``.
        ValueError: a pdf id outside ``[0, S)`` (names the file and utterance), or no
            utterance usable.
    """
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.models.hmm_gmm.ali_io import read_int_vectors

    pdf_path, _ = _pdf_ali_and_model(ali)
    nf_path = Path(data_dir) / "utt2num_frames"
    if not nf_path.is_file():
        raise FileNotFoundError(f"{nf_path} not found; run asrkit features on {data_dir}")
    frames = {u: int(n) for u, n in read_kaldi_map(nf_path).items()}
    alis = read_int_vectors(pdf_path)
    targets: dict[str, list[int]] = {}
    skipped: dict[str, str] = {}
    for u, n in frames.items():
        a = alis.get(u)
        if a is None:
            skipped[u] = f"no alignment in {pdf_path}"
        elif a.numel() != n:
            skipped[u] = (f"{a.numel()} aligned frames in {pdf_path} but {n} feature frames "
                          f"in {nf_path}")
        else:
            if a.numel() and (int(a.min()) < 0 or int(a.max()) >= num_pdfs):
                raise ValueError(f"{pdf_path}: utterance {u} has pdf ids outside [0, "
                                 f"{num_pdfs}) of the GMM beside it")
            targets[u] = a.tolist()
    for u, why in sorted(skipped.items()):
        logger.warning("%s: skipped for training: %s", u, why)
    if not targets:
        raise ValueError(f"no utterance of {data_dir} has an alignment in {pdf_path} of the "
                         "same length; were the alignments made from this data?")
    logger.info("%s: frame targets of %d utterances (%d skipped)", pdf_path, len(targets),
                len(skipped))
    return targets, skipped


def pdf_counts(targets: Mapping[str, Sequence[int]], num_pdfs: int) -> torch.Tensor:
    """(S,) int64 frame counts of every pdf over the targets (Kaldi ``ali-to-pdf | analyze-counts``)."""
    counts = torch.zeros(num_pdfs, dtype=torch.int64)
    for t in targets.values():
        counts += torch.bincount(torch.as_tensor(t, dtype=torch.int64), minlength=num_pdfs)
    return counts


def prepare_training(cfg, exp_dir: Path | None) -> dict:
    """What :func:`asrkit.train.loop.train` needs for ``model=hybrid``: targets of the
    train (and dev) data from ``data.alignment`` (``data.dev_alignment``), the number of pdfs,
    their counts, and (when ``exp_dir`` is given, rank 0) the GMM's ``final.mdl`` copied to
    ``exp_dir/final.mdl`` and the counts written to ``exp_dir/pdf_counts.txt``.

    Raises:
        ValueError: ``data.alignment`` not set.
        FileNotFoundError, ValueError: as :func:`load_frame_targets`.
    """
    from asrkit.exp.expdir import copy_into_exp
    from asrkit.fileio import atomic_write
    from asrkit.models.hmm_gmm import AcousticModel

    dc = cfg.data
    if not dc.get("alignment"):
        raise ValueError("model=hybrid needs data.alignment: a GMM stage dir (exp/<tag>/tri2) "
                         "or an asrkit align output dir for data.train")
    _, mdl = _pdf_ali_and_model(dc.alignment)
    num_pdfs = AcousticModel.load(mdl).num_pdfs
    train_t, _ = load_frame_targets(dc.alignment, dc.train, num_pdfs)
    dev_t = None
    if dc.get("dev"):
        if not dc.get("dev_alignment"):
            raise ValueError("model=hybrid with data.dev needs data.dev_alignment (asrkit align "
                             "<gmm stage> <lang> <dev data> <out>), for the dev loss")
        _, dev_mdl = _pdf_ali_and_model(dc.dev_alignment)
        if AcousticModel.load(dev_mdl).num_pdfs != num_pdfs:
            raise ValueError(f"{dc.dev_alignment}: made with a model of another number of pdfs "
                             f"than {mdl}")
        dev_t, _ = load_frame_targets(dc.dev_alignment, dc.dev, num_pdfs)
    counts = pdf_counts(train_t, num_pdfs)
    out = {"train": train_t, "dev": dev_t, "num_pdfs": num_pdfs, "counts": counts}
    if exp_dir is not None:
        out["final_mdl"] = copy_into_exp(mdl, exp_dir, "final.mdl")
        with atomic_write(exp_dir / "pdf_counts.txt") as f:  # Kaldi vector text form
            f.write("[ " + " ".join(map(str, counts.tolist())) + " ]\n")
        unseen = int((counts == 0).sum())
        if unseen:
            logger.warning("%d of %d pdfs never occur in the training alignments; they get "
                           "prior +inf (never decoded)", unseen, num_pdfs)
    return out


# ---------------------------------------------------------------------------------------------
# Decoding and alignment


def is_hybrid_exp(exp: str | os.PathLike) -> bool:
    """Whether ``exp`` (a dir or its ``config.yaml``) is a ``model=hybrid`` experiment."""
    p = Path(exp)
    cfg_path = p if p.is_file() and p.name == "config.yaml" else p / "config.yaml"
    if not cfg_path.is_file():
        return False
    from omegaconf import OmegaConf
    from yaml import YAMLError

    try:
        return OmegaConf.load(cfg_path).get("model", {}).get("family") == "hybrid"
    except (OSError, ValueError, AttributeError, YAMLError):  # unreadable, not a YAML mapping: not ours
        return False


class HybridScorer:
    """A hybrid experiment seen as an acoustic model of the HMM-GMM decoder and aligner:
    ``.tmodel``, ``.num_pdfs``, ``.feat_dim``, ``.meta`` and ``.loglik(feats (T, F)) -> (T, S)``
    pseudo log-likelihoods (:meth:`HybridModel.pseudo_loglik`).

    Utterances longer than the decoder's block size are scored block by block without
    context across block edges (a TDNN loses ±13 frames of context there).
    """

    def __init__(self, model: HybridModel, tmodel, meta: Mapping | None = None):
        self.model = model.eval()
        self.tmodel = tmodel
        self.meta = dict(meta or {})
        self.meta.setdefault("features", {})

    @property
    def num_pdfs(self) -> int:
        return self.model.num_pdfs

    @property
    def feat_dim(self) -> int:
        return int(self.model.normalize.mean.numel())

    @property
    def device(self) -> torch.device:
        return self.model.log_priors.device

    def loglik(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, S) pseudo log-likelihoods of (T, F) features."""
        return self.model.pseudo_loglik(feats)

    @classmethod
    def load(cls, exp: str | os.PathLike, device: str | torch.device = "cpu", *,
             avg: int = 1, select: str = "best", metric: str = "dev_loss",
             checkpoint: str | os.PathLike | None = None) -> HybridScorer:
        """The model of a hybrid experiment (``select``/``avg``/``checkpoint`` as
        :func:`asrkit.exp.checkpoint.load_model`; ``best`` falls back to ``last`` when no
        checkpoint has ``metric``) and the transition model of its ``final.mdl``.

        Raises:
            FileNotFoundError: no ``config.yaml``, checkpoint or ``final.mdl``.
        """
        from asrkit.exp.checkpoint import load_model
        from asrkit.models.hmm_gmm import AcousticModel

        p = Path(exp)
        d = p.parent if p.is_file() else p
        mdl = d / "final.mdl"
        if not mdl.is_file():
            raise FileNotFoundError(f"{mdl} not found: a hybrid experiment holds the GMM's "
                                    "final.mdl (copied by asrkit train model=hybrid)")
        try:
            model, _ = load_model(d, avg=avg, select=select, metric=metric, device=device,
                                  checkpoint=checkpoint)
        except ValueError:
            if select != "best" or checkpoint is not None:
                raise
            model, _ = load_model(d, avg=avg, select="last", device=device)
        if not isinstance(model, HybridModel):
            raise TypeError(f"{d}: not a hybrid model ({type(model).__name__})")
        return cls(model, AcousticModel.load(mdl).tmodel, {"exp": str(d)})

    @staticmethod
    def load_features(data_dir: str | os.PathLike, utt_ids: Sequence[str] | None = None
                      ) -> dict[str, torch.Tensor]:
        """``{utt: (T, F) float32}`` features of a feature data dir (``feats.scp``; the model
        applies its own CMVN).

        Raises:
            FileNotFoundError: no ``feats.scp``.
        """
        import kaldiio

        scp = Path(data_dir) / "feats.scp"
        if not scp.is_file():
            raise FileNotFoundError(f"{scp} not found; run asrkit features on {data_dir}")
        want = None if utt_ids is None else set(utt_ids)
        return {u: torch.from_numpy(np.array(m)).float()
                for u, m in kaldiio.load_scp_sequential(str(scp))
                if want is None or u in want}


class _ScoreTable:
    """Precomputed (T, S) scores as the ``gmm`` of :func:`~asrkit.models.hmm_gmm.align.
    align_viterbi`: its "features" are the score rows, ``loglik(x, pdfs)`` picks columns."""

    def __init__(self, tmodel, num_pdfs: int, device: torch.device):
        self.tmodel, self.feat_dim, self.device = tmodel, num_pdfs, device
        self.gmm = self
        self.dtype = torch.float32

    def loglik(self, x: torch.Tensor, pdf_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        return x if pdf_ids is None else x[:, torch.as_tensor(pdf_ids, device=self.device)]


def align_hybrid_data_dir(exp: str | os.PathLike, lang_dir: str | os.PathLike,
                          data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                          beam: float = 10.0, retry_beam: float = 40.0,
                          acoustic_scale: float = 0.1, device: str | None = "cpu"
                          ) -> tuple[Path, int, int]:
    """Forced alignment with a hybrid model (Kaldi ``steps/nnet3/align.sh``): the network's
    pseudo log-likelihoods in the Viterbi aligner of the HMM-GMM
    (:func:`asrkit.models.hmm_gmm.align.align_viterbi`).

    Args:
        exp: the hybrid experiment dir.
        lang_dir: the lang dir of its GMM.
        data_dir: feature data dir (``feats.scp`` of the training feature type, ``text``).
        out_dir: alignment dir to write (:func:`asrkit.models.hmm_gmm.write_alignment_dir`,
            with the GMM's ``final.mdl``, so it can be ``data.alignment`` of a new hybrid run).
        beam, retry_beam: Viterbi beams (Kaldi 10 / 40).
        acoustic_scale: scale of the pseudo log-likelihoods (0.1, Kaldi's nnet3 align).
        device: ``cpu``, ``cuda``, ``auto``.

    Returns:
        ``(out_dir, aligned, failed)``; failures are listed in ``out_dir/failed``.

    Raises:
        FileNotFoundError: missing experiment, lang or data files.
    """
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.exp.checkpoint import pick_device
    from asrkit.fileio import stage_log
    from asrkit.models.hmm_gmm import AcousticModel
    from asrkit.models.hmm_gmm.ali_io import write_alignment_dir
    from asrkit.models.hmm_gmm.align import align_viterbi
    from asrkit.models.hmm_gmm.graph import GraphCompiler, TranscriptGraphError
    from asrkit.text.lexicon import read_lang

    out = Path(out_dir)
    dev = pick_device(device)
    scorer = HybridScorer.load(exp, dev)
    gmm = AcousticModel.load(Path(scorer.meta["exp"]) / "final.mdl")
    text_path = Path(data_dir) / "text"
    if not text_path.is_file():
        raise FileNotFoundError(f"{text_path} not found; alignment needs transcripts")
    text = read_kaldi_map(text_path)
    feats = scorer.load_features(data_dir)
    failed: dict[str, str] = {u: "no transcript" for u in feats if u not in text}
    failed.update({u: "no features" for u in text if u not in feats})
    compiler = GraphCompiler(read_lang(lang_dir), gmm.tmodel,
                             sil_prob=float(gmm.meta.get("sil_prob", 0.5)))
    with stage_log(out / "align.log"):
        graphs, scores = [], {}
        for u in text:
            if u not in feats:
                continue
            try:
                graphs.append(compiler.compile(u, text[u]))
            except TranscriptGraphError as e:
                failed[u] = e.reason
                continue
            scores[u] = scorer.loglik(feats[u])
        table = _ScoreTable(gmm.tmodel, scorer.num_pdfs, dev)
        alis, ali_failed = align_viterbi(
            table, graphs, scores, beam=beam, retry_beam=retry_beam,
            acoustic_scale=acoustic_scale,
            transition_scale=float(gmm.meta.get("transition_scale", 0.1)))
        failed.update(ali_failed)
        write_alignment_dir(out, alis, failed, model=gmm)
        logger.info("%s: aligned %d utterances with %s, %d failed", out, len(alis), exp,
                    len(failed))
    return out, len(alis), len(failed)
