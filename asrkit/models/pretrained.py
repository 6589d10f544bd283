"""A pretrained wav2vec 2.0 / HuBERT encoder fine-tuned with a CTC head
(``model=pretrained_encoder``).

Baevski et al., 2020, "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
Representations"; Hsu et al., 2021, "HuBERT: Self-Supervised Speech Representation Learning by
Masked Prediction of Hidden Units". Both pretrain the same network (a convolutional feature
encoder over the raw waveform, 20 ms frames, then a Transformer with convolutional positions);
fine-tuning for ASR adds a linear CTC layer (Graves et al., 2006) on the Transformer's output.
The network is ``torchaudio.models.Wav2Vec2Model``, built by torchaudio's factory functions
(``arch``) or by ``wav2vec2_model(**arch_config)`` (``arch: custom``); the CTC layer, the loss and
the optional attention decoder come from :class:`asrkit.models.base.CTCModel`.

Input. The model reads raw-waveform features (``asrkit features --conf
conf/features/raw.yaml``): (B, T, F) frames of F = 160 samples (10 ms at 16 kHz), which
:meth:`PretrainedEncoderCTC.encoder_forward` flattens back to a (B, T·F) waveform with
``lengths · F`` valid samples. The front end's global CMVN is replaced by the identity (the
``cmvn_stats`` the trainer passes are ignored); ``normalize_waveform`` instead standardises
each utterance to zero mean and unit variance over its valid samples, which the models
pretrained on normalised audio expect (fairseq's ``normalize: true``: the large LV-60k
wav2vec 2.0 and the large/xlarge HuBERT; the base models were pretrained without it).

Weights. ``pretrained`` names a local file or directory, never a download:

- a torchaudio-format ``state_dict`` saved with ``torch.save`` (``.pt``/``.pth``; read with
  ``weights_only=True``), bare or under a ``"state_dict"`` or ``"model"`` key; keys may carry
  torchaudio's ``HuBERTPretrainModel`` prefix ``wav2vec2.``; the weight-norm names of older
  torchaudio versions (``weight_g``/``weight_v``) are accepted;
- a Hugging Face model directory (``config.json`` + weights; ``model_type`` ``wav2vec2`` or
  ``hubert``), loaded by ``transformers`` with ``local_files_only=True`` and converted by
  ``torchaudio.models.wav2vec2.utils.import_huggingface_model``.

Parameters that only pretraining (or another vocabulary's fine-tuning) uses are ignored: the
quantizer, ``project_q``/``project_hid``/``final_proj``, HuBERT's label embeddings and logit
generator, a CTC head (``aux``, ``lm_head``). The pretrained mask embedding (fairseq
``mask_emb``, HF ``masked_spec_embed``, torchaudio ``mask_generator.mask_embedding``) is kept:
fine-tuning's time masks replace frames with it, as in fairseq and HF (without one the embedding
starts uniform in [0, 1), as fairseq initialises it). Any other missing or unexpected key, a
shape mismatch or (HF) a different ``layer_norm_first`` raises :class:`PretrainedWeightsError`
naming the file and keys. A fairseq checkpoint must first be converted
(``torchaudio.models.wav2vec2.utils.import_fairseq_model``, then ``torch.save`` its
``state_dict()``).

The file is read when the model is built with ``pretrained`` set, i.e. when training starts.
A resumed run and a trained experiment do not need it:
:func:`asrkit.exp.checkpoint.instantiate_model` builds the model with ``pretrained=None``
when a checkpoint will supply every weight, so resuming and decoding work after the
pretrained file is gone.

Fine-tuning (training mode only):

- masking (the pretraining masks, reused when fine-tuning as a SpecAugment-like regulariser
  in wav2vec 2.0 and HuBERT): after the feature projection, spans of ``mask_time_length``
  frames start at about ``mask_time_prob · T' / mask_time_length`` random positions per
  utterance (at least ``mask_time_min_spans``; overlaps allowed, so
  ``mask_time_prob`` is an upper bound on the masked fraction) and are replaced by the mask
  embedding; channel spans of ``mask_channel_length`` dimensions, drawn the same way with
  ``mask_channel_prob`` over D, are zeroed for all frames of the utterance. Not asrkit's
  SpecAugment: the masks fall on the latent features (B, T', D) and use the embedding the
  Transformer was pretrained to see there.
- freezing: ``freeze_feature_extractor`` (the convolutional feature encoder; fairseq's
  ``feature_grad_mult: 0.0`` and HF's ``freeze_feature_encoder()``), ``freeze_layers`` = N (the
  feature projection, the positional convolution, the mask embedding and Transformer layers
  0 … N-1; the Transformer's own LayerNorm stays trainable), and ``freeze_encoder_updates`` = N
  (fairseq's ``freeze_finetune_updates``: the whole pretrained encoder runs without gradient
  for the first N training batches, so only the head learns while it is random).
- learning rates: :meth:`PretrainedEncoderCTC.param_groups` puts the head (CTC layer,
  decoder) and the pretrained encoder in separate optimiser groups, the encoder's with
  ``lr_scale = encoder_lr_scale``; the trainer multiplies each group's lr by its scale and the
  schedulers scale every group alike, so the ratio holds throughout.

Data-parallel training (torchrun) needs ``trainer.ddp_find_unused_parameters=true``: LayerDrop
(``dropouts.encoder_layer_drop`` > 0) and ``freeze_encoder_updates`` leave parameters without a
gradient in some batches, which DDP otherwise rejects.

Padding: in ``group_norm`` mode (the base models) the first convolution's GroupNorm normalises
over the whole padded waveform, so an utterance's encoding depends slightly on the padding of
its batch, as in fairseq and HF (whose docs tell to pad such models with zeros and pass no
attention mask). Batches group utterances of similar length, which keeps the effect small.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from asrkit.models.base import CTCModel
from asrkit.models.modules.masks import pad_mask

logger = logging.getLogger(__name__)

__all__ = ["ARCHS", "DROPOUT_KEYS", "PretrainedEncoderCTC", "PretrainedWeights",
           "PretrainedWeightsError", "build_wav2vec2", "normalize_waveform",
           "read_pretrained", "span_mask"]

ARCHS = ("wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "wav2vec2_xlsr_300m",
         "wav2vec2_xlsr_1b", "wav2vec2_xlsr_2b", "hubert_base", "hubert_large", "hubert_xlarge")
"""Named architectures: torchaudio's factory functions of the same name (plus ``custom``)."""

DROPOUT_KEYS = ("encoder_projection_dropout", "encoder_attention_dropout",
                "encoder_ff_interm_dropout", "encoder_dropout", "encoder_layer_drop")
"""Fine-tuning regularisation arguments of torchaudio's factories (``model.dropouts``)."""

_IGNORED_PREFIXES = ("quantizer.", "project_q.", "project_hid.", "final_proj.",
                     "label_embs_concat", "logit_generator.", "aux.", "lm_head.")
"""Keys of pretraining-only parameters and of another vocabulary's CTC head."""
_MASK_EMB_KEYS = ("mask_emb", "masked_spec_embed", "mask_generator.mask_embedding")
_OLD_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0",
                    "weight_v": "parametrizations.weight.original1"}
_HF_TYPES = ("wav2vec2", "hubert")
_MAX_KEYS_SHOWN = 8


class PretrainedWeightsError(ValueError):
    """Pretrained weights that cannot be used: unreadable file, wrong layout or architecture.

    The message names the file or directory and the offending keys.
    """


@dataclass
class PretrainedWeights:
    """Encoder weights read by :func:`read_pretrained`.

    Attributes:
        source: the file or directory read.
        state: ``torchaudio.models.Wav2Vec2Model`` state dict (name → tensor).
        mask_emb: the pretrained mask embedding (D,), or None when the source has none.
        layer_norm_first: the architecture's ``layer_norm_first`` when the source states it
            (HF configs), else None (a state dict does not: pre- and post-LN models have the
            same parameter names).
        ignored: keys skipped as pretraining-only or another head.
        do_normalize: an HF ``preprocessor_config.json``'s ``do_normalize``, else None.
    """

    source: Path
    state: dict[str, torch.Tensor]
    mask_emb: torch.Tensor | None = None
    layer_norm_first: bool | None = None
    ignored: tuple[str, ...] = ()
    do_normalize: bool | None = None


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f" … and {more} more" if more > 0 else "")


def build_wav2vec2(arch: str, arch_config: Mapping[str, Any] | None = None,
                   dropouts: Mapping[str, float] | None = None) -> nn.Module:
    """A randomly initialised ``torchaudio.models.Wav2Vec2Model`` without a head.

    Args:
        arch: one of :data:`ARCHS` (torchaudio's factory of that name), or ``"custom"``.
        arch_config: for ``custom`` only: the arguments of
            ``torchaudio.models.wav2vec2_model`` except ``aux_num_out`` and the
            :data:`DROPOUT_KEYS` (``extractor_mode``, ``extractor_conv_layer_config`` as
            ``[[channels, kernel, stride], ...]``, ``extractor_conv_bias``,
            ``encoder_embed_dim``, ``encoder_pos_conv_kernel``, ``encoder_pos_conv_groups``,
            ``encoder_num_layers``, ``encoder_num_heads``, ``encoder_ff_interm_features``,
            ``encoder_layer_norm_first``).
        dropouts: any of :data:`DROPOUT_KEYS` (probabilities in [0, 1)); missing ones take
            torchaudio's defaults for a named arch, 0.0 for ``custom``.

    Returns:
        The ``Wav2Vec2Model`` (``aux`` is None).

    Raises:
        ValueError: unknown ``arch``, ``arch_config`` given for a named arch or missing for
            ``custom``, an ``arch_config`` holding ``aux_num_out`` or a dropout key, or an
            unknown dropout key.
        TypeError: a missing or unknown ``wav2vec2_model`` argument in ``arch_config``.
    """
    drop = dict(dropouts or {})
    unknown = sorted(set(drop) - set(DROPOUT_KEYS))
    if unknown:
        raise ValueError(f"unknown model.dropouts keys {unknown}; known: {list(DROPOUT_KEYS)}")
    drop = {k: float(v) for k, v in drop.items()}
    if arch == "custom":
        if not arch_config:
            raise ValueError("arch=custom needs model.arch_config: the arguments of "
                             "torchaudio.models.wav2vec2_model")
        cfg = dict(arch_config)
        clash = sorted(set(cfg) & ({"aux_num_out"} | set(DROPOUT_KEYS)))
        if clash:
            raise ValueError(f"model.arch_config must not set {clash}: the head is asrkit's "
                             "CTC layer, and dropouts go under model.dropouts")
        layers = cfg.get("extractor_conv_layer_config")
        if layers is not None:
            cfg["extractor_conv_layer_config"] = [tuple(int(v) for v in layer)
                                                  for layer in layers]
        return torchaudio.models.wav2vec2_model(
            **cfg, **{k: drop.get(k, 0.0) for k in DROPOUT_KEYS}, aux_num_out=None)
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; one of {ARCHS} or 'custom'")
    if arch_config:
        raise ValueError(f"model.arch_config is only for arch=custom (arch={arch!r})")
    return getattr(torchaudio.models, arch)(**drop, aux_num_out=None)


def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict, or the one under ``"state_dict"`` / ``"model"``."""
    for _ in range(2):
        if isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in ("state_dict", "model") if k in obj), None)
            if isinstance(inner, Mapping):
                obj = inner
                continue
        break
    raise PretrainedWeightsError(
        f"{path}: expected a state_dict (parameter name -> tensor), bare or under a "
        f"'state_dict' or 'model' key; got {type(obj).__name__}"
        + (f" with keys {_few(sorted(map(str, obj)))}" if isinstance(obj, Mapping) else ""))


def _split_state(state: dict[str, torch.Tensor], path: Path) -> PretrainedWeights:
    """Torchaudio-named keys → encoder state, mask embedding and ignored keys."""
    if any(k.startswith("wav2vec2.") for k in state):  # torchaudio's HuBERTPretrainModel
        state = {k.removeprefix("wav2vec2."): v for k, v in state.items()}
    enc: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    mask_emb = None
    for k, v in state.items():
        if k in _MASK_EMB_KEYS:
            mask_emb = v
        elif k.startswith(_IGNORED_PREFIXES):
            ignored.append(k)
        else:
            prefix, _, last = k.rpartition(".")
            if prefix.endswith("pos_conv_embed.conv") and last in _OLD_WEIGHT_NORM:
                k = f"{prefix}.{_OLD_WEIGHT_NORM[last]}"
            enc[k] = v
    return PretrainedWeights(source=path, state=enc, mask_emb=mask_emb, ignored=tuple(ignored))


def _read_state_file(path: Path) -> PretrainedWeights:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickled objects refused by weights_only
        raise PretrainedWeightsError(
            f"cannot read {path} as a torchaudio state_dict (torch.load, weights_only=True): "
            f"{e}. A fairseq checkpoint must be converted first (torchaudio.models.wav2vec2."
            "utils.import_fairseq_model, then torch.save(model.state_dict(), ...))") from e
    return _split_state(_unwrap_state(obj, path), path)


def _read_hf_dir(path: Path) -> PretrainedWeights:
    if not (path / "config.json").is_file():
        raise PretrainedWeightsError(f"{path} is a directory without config.json; expected a "
                                     "Hugging Face model directory (save_pretrained) or a "
                                     "torchaudio state_dict file")
    try:
        import transformers
    except ImportError:
        raise ImportError(f"loading the Hugging Face model {path} needs the transformers "
                          "package: pip install -e '.[llm]' in the asrkit checkout") from None
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise PretrainedWeightsError(f"{path}/config.json: {e}") from e
    if config.model_type not in _HF_TYPES:
        raise PretrainedWeightsError(f"{path}: model_type {config.model_type!r} is not "
                                     f"supported; one of {_HF_TYPES}")
    try:
        hf = transformers.AutoModel.from_pretrained(path, config=config, local_files_only=True)
    except (OSError, ValueError) as e:
        raise PretrainedWeightsError(f"{path}: cannot load the Hugging Face model: {e}") from e
    # torchaudio warns that a bare encoder has no "lm_head" to import: that is what we want
    ta_log = logging.getLogger(import_huggingface_model.__module__)
    level = ta_log.level
    ta_log.setLevel(logging.ERROR)
    try:
        imported = import_huggingface_model(hf.eval())
    finally:
        ta_log.setLevel(level)
    mask = getattr(hf, "masked_spec_embed", None)
    do_normalize = None
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        do_normalize = json.loads(pre.read_text(encoding="utf-8")).get("do_normalize")
    return PretrainedWeights(
        source=path, state=imported.state_dict(),
        mask_emb=mask.detach().clone() if mask is not None else None,
        layer_norm_first=bool(imported.encoder.transformer.layer_norm_first),
        do_normalize=do_normalize)


def read_pretrained(path: str | os.PathLike) -> PretrainedWeights:
    """Read pretrained wav2vec 2.0 / HuBERT encoder weights from a local file or directory.

    Args:
        path: a torchaudio-format state dict file (``.pt``/``.pth``), or a Hugging Face model
            directory (``config.json`` and weights); see the module docstring.

    Returns:
        The weights in ``torchaudio.models.Wav2Vec2Model`` naming (:class:`PretrainedWeights`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PretrainedWeightsError: unreadable file, not a state dict, a directory without
            ``config.json``, or an unsupported HF ``model_type``.
        ImportError: a Hugging Face directory without ``transformers`` installed.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"pretrained weights {p} not found (model.pretrained)")
    return _read_hf_dir(p) if p.is_dir() else _read_state_file(p)


def normalize_waveform(wav: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5
                       ) -> torch.Tensor:
    """Standardise each utterance to zero mean, unit variance over its valid samples.

    As fairseq's ``normalize: true`` (``layer_norm`` over the whole utterance, eps 1e-5).

    Args:
        wav: (B, N) padded waveforms; lengths: (B,) valid samples.
        eps: added to the variance.

    Returns:
        (B, N), zero past each length.
    """
    valid = (~pad_mask(lengths, wav.size(1))).to(wav.dtype)
    n = lengths.clamp(min=1).to(wav.dtype)[:, None]
    mean = (wav * valid).sum(1, keepdim=True) / n
    var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (wav - mean) / torch.sqrt(var + eps) * valid


def span_mask(lengths: torch.Tensor, size: int, prob: float, span: int,
              min_spans: int = 0) -> torch.Tensor:
    """Random spans to mask, drawn as wav2vec 2.0 fine-tuning does (Baevski et al., 2020).

    Utterance b gets ``n = floor(prob · L_b / span + u)`` spans (u ~ U[0, 1), so n is
    ``prob · L_b / span`` on average), at least ``min_spans``, at most ``(L_b - 1) // span``
    (never the whole utterance); each starts uniformly in ``[0, L_b - span]`` and spans may
    overlap. Utterances shorter than ``span + 1`` get none. Uses the global torch RNG.

    Args:
        lengths: (B,) valid positions ``L_b`` (frames, or channels for channel masks).
        size: the padded size of the masked axis (T' or D).
        prob: fraction of positions that start a span, in [0, 1].
        span: span length, >= 1.
        min_spans: lower bound on the spans of an utterance long enough for one.

    Returns:
        (B, size) boolean mask on ``lengths``' device, True where masked.
    """
    mask = torch.zeros(len(lengths), size, dtype=torch.bool)
    if prob <= 0.0:
        return mask.to(lengths.device)
    for b, valid in enumerate(lengths.tolist()):
        n = max(int(prob * valid / span + float(torch.rand(()))), min_spans)
        n = min(n, (valid - 1) // span)
        if n <= 0:
            continue
        starts = torch.randint(0, valid - span + 1, (n,))
        mask[b, (starts[:, None] + torch.arange(span)).flatten()] = True
    return mask.to(lengths.device)


class PretrainedEncoderCTC(CTCModel):
    """A wav2vec 2.0 / HuBERT encoder (Baevski et al., 2020; Hsu et al., 2021) with a CTC head,
    optionally hybrid CTC/attention; see the module docstring.

    Args:
        input_dim: F, samples per raw-waveform frame (``sample_rate / 100``, 160 at 16 kHz).
        vocab_size: output vocabulary V including the CTC blank at id 0.
        arch: one of :data:`ARCHS` or ``"custom"`` (see :func:`build_wav2vec2`).
        arch_config: ``wav2vec2_model`` arguments for ``custom``; None otherwise.
        pretrained: local path of the pretrained weights (:func:`read_pretrained`), read
            here; None keeps the random initialisation (and is what decoding uses).
        sample_rate: Hz of the audio the encoder was pretrained on; the features must be raw
            10 ms frames at this rate.
        normalize_waveform: standardise every utterance (:func:`normalize_waveform`); true for
            the models pretrained on normalised audio (large LV-60k, HuBERT large/xlarge).
        dropouts: fine-tuning values of :data:`DROPOUT_KEYS` (None: torchaudio's defaults).
        mask_time_prob, mask_time_length, mask_time_min_spans: time masking of the latent
            frames (20 ms each) with the mask embedding (:func:`span_mask`); prob 0 disables.
        mask_channel_prob, mask_channel_length: channel masking (zeros) over D; 0 disables.
        freeze_feature_extractor: no training of the convolutional feature encoder.
        freeze_layers: freeze the feature projection, positional convolution, mask embedding
            and the first N Transformer layers (0: none).
        freeze_encoder_updates: the whole encoder runs without gradient for this many
            training batches (forward passes in training mode; updates × ``accum_grad``),
            counted in the ``num_updates`` buffer, which checkpoints keep.
        encoder_lr_scale: the encoder's lr relative to the head's (> 0), applied by the
            trainer through :meth:`param_groups`.
        cmvn_stats: ignored (global CMVN means nothing on samples); accepted because the
            trainer passes every family the training set's stats.
        decoder, ctc_weight, lsm_weight: hybrid CTC/attention, see
            :class:`asrkit.models.base.CTCModel`.

    Raises:
        ValueError: ``input_dim`` is not ``sample_rate / 100`` (features other than raw), a
            bad arch/dropout/masking/freezing option, or a bad decoder spec.
        FileNotFoundError, PretrainedWeightsError, ImportError: from :meth:`load_pretrained`.
    """

    def __init__(self, input_dim: int, vocab_size: int, arch: str = "wav2vec2_base",
                 arch_config: Mapping[str, Any] | None = None, pretrained: str | None = None,
                 sample_rate: int = 16000, normalize_waveform: bool = False,
                 dropouts: Mapping[str, float] | None = None, mask_time_prob: float = 0.5,
                 mask_time_length: int = 10, mask_time_min_spans: int = 2,
                 mask_channel_prob: float = 0.1, mask_channel_length: int = 64,
                 freeze_feature_extractor: bool = True, freeze_layers: int = 0,
                 freeze_encoder_updates: int = 0, encoder_lr_scale: float = 0.1,
                 cmvn_stats: np.ndarray | None = None,
                 decoder: Mapping[str, Any] | None = None, ctc_weight: float = 1.0,
                 lsm_weight: float = 0.1):
        frame = sample_rate // 100
        if input_dim != frame or sample_rate % 100:
            raise ValueError(
                f"model=pretrained_encoder reads raw-waveform features: F must be {frame} "
                f"samples per 10 ms frame at {sample_rate} Hz, got F={input_dim} (fbank "
                "features? compute them with: asrkit features DATA OUT --conf "
                "conf/features/raw.yaml)")
        for name, p in (("mask_time_prob", mask_time_prob),
                        ("mask_channel_prob", mask_channel_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if mask_time_length < 1 or mask_channel_length < 1 or mask_time_min_spans < 0:
            raise ValueError("mask_time_length and mask_channel_length must be >= 1 and "
                             "mask_time_min_spans >= 0")
        if freeze_layers < 0 or freeze_encoder_updates < 0:
            raise ValueError("freeze_layers and freeze_encoder_updates must be >= 0")
        if not encoder_lr_scale > 0:
            raise ValueError(f"encoder_lr_scale must be > 0, got {encoder_lr_scale}")
        wav2vec2 = build_wav2vec2(arch, arch_config, dropouts)
        dim = wav2vec2.encoder.feature_projection.projection.out_features
        super().__init__(input_dim, vocab_size, dim, specaug=None, cmvn_stats=None,
                         decoder=decoder, ctc_weight=ctc_weight, lsm_weight=lsm_weight)
        self.normalize = nn.Identity()  # no global CMVN on samples
        self.wav2vec2 = wav2vec2
        self.frame_samples = frame
        num_layers = len(wav2vec2.encoder.transformer.layers)
        if freeze_layers > num_layers:
            raise ValueError(f"freeze_layers={freeze_layers} exceeds the {num_layers} layers "
                             f"of arch={arch}")
        self.mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.arch = arch
        self.normalize_waveform = bool(normalize_waveform)
        self.mask_time_prob = float(mask_time_prob)
        self.mask_time_length = int(mask_time_length)
        self.mask_time_min_spans = int(mask_time_min_spans)
        self.mask_channel_prob = float(mask_channel_prob)
        self.mask_channel_length = int(mask_channel_length)
        self.freeze_encoder_updates = int(freeze_encoder_updates)
        self.encoder_lr_scale = float(encoder_lr_scale)
        if pretrained:
            self.load_pretrained(pretrained)
        frozen: list[nn.Module] = []
        if freeze_feature_extractor:
            frozen.append(wav2vec2.feature_extractor)
        if freeze_layers:
            frozen += [wav2vec2.encoder.feature_projection,
                       wav2vec2.encoder.transformer.pos_conv_embed,
                       *wav2vec2.encoder.transformer.layers[:freeze_layers]]
            self.mask_emb.requires_grad_(False)
        for module in frozen:
            module.requires_grad_(False)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load the encoder (and mask embedding) from a local pretrained file or directory.

        The CTC head and decoder keep their initialisation.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            PretrainedWeightsError: unreadable weights, missing or unexpected keys, shape
                mismatches or a different ``layer_norm_first`` than ``arch`` (named with
                the file).
            ImportError: an HF directory without ``transformers``.
        """
        w = read_pretrained(path)
        own = self.wav2vec2.state_dict()
        missing = sorted(set(own) - set(w.state))
        unexpected = sorted(set(w.state) - set(own))
        if missing or unexpected:
            raise PretrainedWeightsError(
                f"{w.source} does not match model.arch={self.arch}: "
                + "; ".join(f"{what} keys: {_few(keys)}" for what, keys in
                            (("missing", missing), ("unexpected", unexpected)) if keys))
        bad = [f"{k} {tuple(w.state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
               if w.state[k].shape != v.shape]
        if bad:
            raise PretrainedWeightsError(f"{w.source} does not match model.arch={self.arch}: "
                                         f"shapes (file vs model) differ: {_few(bad)}")
        lnf = bool(self.wav2vec2.encoder.transformer.layer_norm_first)
        if w.layer_norm_first is not None and w.layer_norm_first != lnf:
            raise PretrainedWeightsError(
                f"{w.source} is a {'pre' if w.layer_norm_first else 'post'}-LayerNorm model "
                f"(do_stable_layer_norm={w.layer_norm_first}); model.arch={self.arch} is not")
        self.wav2vec2.load_state_dict(w.state)
        if w.mask_emb is not None:
            if w.mask_emb.shape != self.mask_emb.shape:
                raise PretrainedWeightsError(f"{w.source}: mask embedding of shape "
                                             f"{tuple(w.mask_emb.shape)}, expected "
                                             f"{tuple(self.mask_emb.shape)}")
            with torch.no_grad():
                self.mask_emb.copy_(w.mask_emb)
        if w.do_normalize is not None and bool(w.do_normalize) != self.normalize_waveform:
            logger.warning("%s/preprocessor_config.json has do_normalize=%s but "
                           "model.normalize_waveform=%s", w.source, w.do_normalize,
                           self.normalize_waveform)
        logger.info("loaded pretrained %s encoder from %s: %d tensors%s%s", self.arch, w.source,
                    len(w.state), "" if w.mask_emb is not None else ", no mask embedding",
                    f"; ignored {_few(w.ignored)}" if w.ignored else "")

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the head, then the pretrained encoder.

        The trainer (:func:`asrkit.train.loop.train`) uses this hook when a model has it:
        each group's lr becomes the optimiser's lr × ``lr_scale``.

        Returns:
            ``[{"name": "head", "params": [...], "lr_scale": 1.0}, {"name": "encoder",
            "params": [...], "lr_scale": encoder_lr_scale}]``, trainable parameters only
            (frozen ones are left out; ``freeze_encoder_updates`` does not freeze, the
            encoder's parameters are in the group and get no gradient while it lasts);
            an empty group is left out.
        """
        enc, head = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (enc if name.startswith("wav2vec2.") or name == "mask_emb" else head).append(p)
        groups = [{"name": "head", "params": head, "lr_scale": 1.0},
                  {"name": "encoder", "params": enc, "lr_scale": self.encoder_lr_scale}]
        return [g for g in groups if g["params"]]

    def _mask(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Time masks (mask embedding) and channel masks (zeros) on (B, T', D)."""
        if self.mask_time_prob > 0:
            m = span_mask(lengths, x.size(1), self.mask_time_prob, self.mask_time_length,
                          self.mask_time_min_spans)
            x = torch.where(m.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        if self.mask_channel_prob > 0:
            dims = torch.full_like(lengths, x.size(2))
            m = span_mask(dims, x.size(2), self.mask_channel_prob, self.mask_channel_length)
            x = x.masked_fill(m.unsqueeze(1), 0.0)
        return x

    def encoder_frame_stride(self) -> tuple[int, int]:
        """``(n_in, n_out)`` of :meth:`asrkit.models.base.CTCModel.encoder_frame_stride` for
        the convolutional feature encoder: its total stride ``S`` samples (320, 20 ms) against
        frames of ``F`` samples (160): ``(lcm(S, F) / F, lcm(S, F) / S)``, ``(2, 1)`` for the
        standard encoder."""
        s = math.prod(int(layer.stride) for layer in self.wav2vec2.feature_extractor.conv_layers)
        step = math.lcm(s, self.frame_samples)
        return step // self.frame_samples, step // s

    def encoder_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B,) of ``lengths`` (B,) raw frames: each convolution of the feature
        encoder maps ``n`` samples to ``max(0, (n - kernel) // stride + 1)``, as torchaudio's
        ``ConvLayerBlock`` counts them."""
        n = lengths * self.frame_samples
        for layer in self.wav2vec2.feature_extractor.conv_layers:
            n = (torch.div(n - int(layer.kernel_size), int(layer.stride), rounding_mode="floor")
                 + 1).clamp(min=0)
        return n

    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-waveform frames (B, T, F) → encoder output (B, T', D) at 20 ms, lengths (B,).

        The frames are joined into (B, T·F) samples with ``lengths · F`` valid, normalised
        per utterance if configured, then: convolutional feature encoder → feature projection
        → masks (training only) → padded frames zeroed → Transformer with padded keys masked.
        ``T' = floor((T·F - 400) / 320) + 1`` for the standard feature encoder.
        """
        b, t, f = x.shape
        wav = x.reshape(b, t * f)
        wav_lens = lengths * f
        if self.normalize_waveform:
            wav = normalize_waveform(wav, wav_lens)
        freeze = False
        if self.training and torch.is_grad_enabled():
            self.num_updates += 1
            freeze = (self.freeze_encoder_updates > 0
                      and int(self.num_updates) <= self.freeze_encoder_updates)
        with torch.no_grad() if freeze else contextlib.nullcontext():
            feats, lens = self.wav2vec2.feature_extractor(wav, wav_lens)
            enc = self.wav2vec2.encoder
            y = enc.feature_projection(feats)
            if self.training:
                y = self._mask(y, lens)
            pad = pad_mask(lens, y.size(1))
            y = y.masked_fill(pad.unsqueeze(-1), 0.0)
            # additive attention mask (B, 1, T', T') over padded keys, as torchaudio builds it
            att = (pad[:, None, None, :].to(y.dtype) * -10000.0).expand(b, 1, y.size(1),
                                                                       y.size(1))
            y = enc.transformer(y, attention_mask=att)
        return y, lens
