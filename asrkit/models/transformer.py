"""Transformer encoder with a CTC head, optionally hybrid CTC/attention (``model=transformer``).

Conv2d ×4 (or ×6, ×8) subsampling → sinusoidal positions → pre-LayerNorm Transformer encoder layers
(Vaswani et al., 2017; the speech recipe of Karita et al., 2019, "A comparative study on
Transformer vs RNN in speech applications") → linear CTC output (Graves et al., 2006).

Global CMVN and SpecAugment live inside the model (:class:`asrkit.models.base.CTCModel`), so a
checkpoint is self-contained: decoding needs only ``config.yaml`` and the weights.

With ``decoder`` set the model is a hybrid CTC/attention model (Watanabe et al., 2017; the
speech Transformer of Karita et al., 2019 with ``{type: transformer}``): the same encoder and CTC
head plus an attention decoder. The class keeps its name so configs and checkpoints keep working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from asrkit.models.base import CTCModel
from asrkit.models.modules.masks import pad_mask
from asrkit.models.modules.positional import SinusoidalPositionalEncoding
from asrkit.models.modules.subsampling import Conv2dSubsampling

__all__ = ["TransformerCTC"]


class TransformerCTC(CTCModel):
    """Transformer-CTC acoustic model (hybrid CTC/attention when ``decoder`` is set).

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        d_model: model dimension D.
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: hidden size of each feed-forward block.
        dropout: dropout in attention, feed-forward and after positions.
        subsampling_channels: channels of the conv front end (default D). On CPU this
            front end dominates the cost; 32–64 channels train 2–3× faster at D = 144–256.
        subsampling_factor: frame-rate reduction of the front end, 4, 6 or 8.
        specaug: keyword arguments of :class:`asrkit.models.modules.specaug.SpecAugment`,
            or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1), or None (identity until loaded).
        decoder: attention decoder spec (``{"type": "transformer" | "lstm", ...}``) for the
            hybrid CTC/attention objective, or None for CTC only; see
            :class:`asrkit.models.base.CTCModel`.
        ctc_weight: CTC weight λ of the hybrid loss (1.0 = CTC only; < 1 needs a decoder).
        lsm_weight: label smoothing of the decoder's cross-entropy.
        interctc_layers, interctc_weight, self_condition: intermediate / self-conditioned CTC
            after the listed encoder layers (1-based, taken through the final LayerNorm as in
            ESPnet); see :class:`asrkit.models.base.CTCModel`.

    Raises:
        ValueError: a bad ``decoder`` / ``ctc_weight`` / ``subsampling_factor`` / intermediate
            CTC setting, or an intermediate layer past ``num_layers``.
    """

    def __init__(self, input_dim: int, vocab_size: int, d_model: int = 256, nhead: int = 4,
                 num_layers: int = 12, dim_feedforward: int = 2048, dropout: float = 0.1,
                 subsampling_channels: int | None = None, specaug: dict | None = None,
                 cmvn_stats: np.ndarray | None = None, decoder: Mapping[str, Any] | None = None,
                 ctc_weight: float = 1.0, lsm_weight: float = 0.1, subsampling_factor: int = 4,
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
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) normalised features → (B, T', D) at 40 ms frames (60 / 80 ms for ×6 / ×8
        subsampling), lengths (B,)."""
        x, lens = self.subsample(x, lengths)
        x = self.pos(x)
        pad = pad_mask(lens, x.size(1))
        for i, layer in enumerate(self.encoder.layers):
            x = self.intermediate(layer(x, src_key_padding_mask=pad), i + 1, norm=self.norm)
        return self.norm(x), lens
