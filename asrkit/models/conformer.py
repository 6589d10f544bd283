"""Conformer encoder with a CTC head, optionally hybrid CTC/attention (``model=conformer``).

Conv2d ×4 (or ×6, ×8) subsampling (its linear layer maps to D) → absolute sinusoidal positions + dropout →
``torchaudio.models.Conformer`` layers (Gulati et al., 2020, "Conformer: Convolution-augmented
Transformer for Speech Recognition") → linear CTC output (Graves et al., 2006).

Two departures from torchaudio's ``Conformer.forward``, both about positions and padding:

- torchaudio's Conformer has no positional encoding of its own, so absolute sinusoidal
  positions (:class:`~asrkit.models.modules.positional.SinusoidalPositionalEncoding`) are added
  before the first layer. The paper uses relative positional self-attention (Transformer-XL,
  Dai et al., 2019), which generalises better to utterances longer than those seen in training;
  torchaudio does not provide it, and the absolute version is what ESPnet's first Conformer
  recipes used.
- torchaudio's convolution module runs its depthwise conv over padded frames, so a short
  utterance's last valid frames see whatever the padding holds and the output depends on the
  batch it is in. :meth:`ConformerCTC.encoder_forward` therefore runs the torchaudio layers
  itself (same order and weights, :func:`_conformer_layer`) and zeroes padded frames just before
  each depthwise conv. It also builds the attention mask for the full T', where torchaudio's
  mask has ``lengths.max()`` columns and fails on a batch padded past its longest utterance.
  The parameters are exactly ``torchaudio.models.Conformer``'s, under ``conformer.``. In
  training mode the BatchNorm of the conv module still counts padded frames in its statistics
  (as ESPnet's does); eval mode uses running statistics.

With ``decoder`` set the model is a hybrid CTC/attention model (Watanabe et al., 2017): the same
encoder and CTC head plus an attention decoder (ESPnet's Conformer recipes use a Transformer
decoder). The class keeps its name so configs and checkpoints keep working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from asrkit.models.base import CTCModel
from asrkit.models.modules.masks import pad_mask
from asrkit.models.modules.positional import SinusoidalPositionalEncoding
from asrkit.models.modules.subsampling import Conv2dSubsampling

__all__ = ["ConformerCTC"]


def _conformer_layer(layer: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """One ``torchaudio.models.conformer.ConformerLayer`` (conv after attention), masked.

    Mirrors ``ConformerLayer.forward`` step for step: ½ FFN → MHSA → conv module → ½ FFN →
    LayerNorm, with padded frames zeroed before the conv module's depthwise conv.

    Args:
        layer: a torchaudio ``ConformerLayer`` built with ``convolution_first=False``.
        x: (T, B, D), time first as torchaudio's layers expect.
        pad: (B, T) boolean, True at padded frames.

    Returns:
        (T, B, D).
    """
    x = x + 0.5 * layer.ffn1(x)
    y = layer.self_attn_layer_norm(x)
    y, _ = layer.self_attn(y, y, y, key_padding_mask=pad, need_weights=False)
    x = x + layer.self_attn_dropout(y)
    conv = layer.conv_module
    y = conv.layer_norm(x).permute(1, 2, 0)  # (B, D, T)
    for module in conv.sequential:
        if isinstance(module, nn.Conv1d) and module.groups > 1:  # the depthwise conv
            y = y.masked_fill(pad.unsqueeze(1), 0.0)
        y = module(y)
    x = x + y.permute(2, 0, 1)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


class ConformerCTC(CTCModel):
    """Conformer-CTC acoustic model (Gulati et al., 2020; defaults near Conformer-S); hybrid
    CTC/attention when ``decoder`` is set.

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        d_model: model dimension D.
        num_heads: attention heads.
        ffn_dim: hidden size of each (macaron half-step) feed-forward module.
        num_layers: Conformer layers.
        depthwise_conv_kernel_size: kernel of the conv module's depthwise conv, in 40 ms
            frames; must be odd (torchaudio's "same" padding).
        dropout: dropout after positions and inside every layer.
        subsampling_channels: channels of the conv front end (default D).
        subsampling_factor: frame-rate reduction of the front end, 4, 6 or 8 (40, 60 or 80 ms
            encoder frames; :class:`~asrkit.models.modules.subsampling.Conv2dSubsampling`).
        specaug: keyword arguments of :class:`asrkit.models.modules.specaug.SpecAugment`,
            or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1), or None (identity until loaded).
        decoder: attention decoder spec (``{"type": "transformer" | "lstm", ...}``) for the
            hybrid CTC/attention objective, or None for CTC only; see
            :class:`asrkit.models.base.CTCModel`.
        ctc_weight: CTC weight λ of the hybrid loss (1.0 = CTC only; < 1 needs a decoder).
        lsm_weight: label smoothing of the decoder's cross-entropy.
        interctc_layers, interctc_weight, self_condition: intermediate / self-conditioned CTC
            after the listed Conformer layers (1-based); see :class:`asrkit.models.base.CTCModel`.

    Raises:
        ValueError: if ``depthwise_conv_kernel_size`` is even (from torchaudio), or ``d_model``
            is not divisible by ``num_heads`` (from ``nn.MultiheadAttention``; an
            AssertionError in some PyTorch versions); a bad ``decoder`` / ``ctc_weight`` /
            ``subsampling_factor`` / intermediate CTC setting, or a layer past ``num_layers``.
    """

    def __init__(self, input_dim: int, vocab_size: int, d_model: int = 144, num_heads: int = 4,
                 ffn_dim: int = 576, num_layers: int = 16, depthwise_conv_kernel_size: int = 31,
                 dropout: float = 0.1, subsampling_channels: int | None = None,
                 specaug: dict | None = None, cmvn_stats: np.ndarray | None = None,
                 decoder: Mapping[str, Any] | None = None, ctc_weight: float = 1.0,
                 lsm_weight: float = 0.1, subsampling_factor: int = 4,
                 interctc_layers: Sequence[int] = (), interctc_weight: float = 0.0,
                 self_condition: bool = False):
        super().__init__(input_dim, vocab_size, d_model, specaug, cmvn_stats, decoder=decoder,
                         ctc_weight=ctc_weight, lsm_weight=lsm_weight,
                         interctc_layers=interctc_layers, interctc_weight=interctc_weight,
                         self_condition=self_condition)
        self.check_interctc_layers(num_layers)
        self.subsample = Conv2dSubsampling(input_dim, d_model, subsampling_channels,
                                           subsampling_factor)
        self.pos = SinusoidalPositionalEncoding(d_model, dropout)
        self.conformer = torchaudio.models.Conformer(
            input_dim=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
            depthwise_conv_kernel_size=depthwise_conv_kernel_size, dropout=dropout)

    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) normalised features → (B, T', D) at 40 ms frames (60 / 80 ms for ×6 / ×8
        subsampling), lengths (B,).

        Raises:
            ValueError: if T is too short for the subsampling front end (7 frames for ×4).
        """
        x, lens = self.subsample(x, lengths)
        pad = pad_mask(lens, x.size(1))
        x = self.pos(x).transpose(0, 1)  # (T', B, D)
        for i, layer in enumerate(self.conformer.conformer_layers):
            x = self.intermediate(_conformer_layer(layer, x, pad), i + 1, time_first=True)
        return x.transpose(0, 1), lens
