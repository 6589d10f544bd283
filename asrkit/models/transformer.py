"""Transformer encoder with a CTC head (``model=transformer``).

Conv2d ×4 subsampling → sinusoidal positions → pre-LayerNorm Transformer encoder layers
(Vaswani et al., 2017; the speech recipe of Karita et al., 2019, "A comparative study on
Transformer vs RNN in speech applications") → linear CTC output (Graves et al., 2006).

Global CMVN and SpecAugment live inside the model, so a checkpoint is self-contained: decoding
needs only ``config.yaml`` and the weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from asrkit.features.cmvn import GlobalCMVN
from asrkit.models.modules.masks import pad_mask
from asrkit.models.modules.positional import SinusoidalPositionalEncoding
from asrkit.models.modules.specaug import SpecAugment
from asrkit.models.modules.subsampling import Conv2dSubsampling
from asrkit.text.tokenizer import BLANK_ID

__all__ = ["TransformerCTC"]


class TransformerCTC(nn.Module):
    """Transformer-CTC acoustic model.

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        d_model: model dimension D.
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: hidden size of each feed-forward block.
        dropout: dropout in attention, feed-forward and after positions.
        subsampling_channels: channels of the ×4 conv front end (default D). On CPU this
            front end dominates the cost; 32–64 channels train 2–3× faster at D = 144–256.
        specaug: keyword arguments of :class:`SpecAugment`, or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1); None starts with identity
            normalisation (the trained values are restored from the checkpoint).
    """

    def __init__(self, input_dim: int, vocab_size: int, d_model: int = 256, nhead: int = 4,
                 num_layers: int = 12, dim_feedforward: int = 2048, dropout: float = 0.1,
                 subsampling_channels: int | None = None, specaug: dict | None = None,
                 cmvn_stats: np.ndarray | None = None):
        super().__init__()
        if cmvn_stats is None:
            cmvn_stats = np.zeros((2, input_dim + 1))
            cmvn_stats[0, -1] = 1.0
            cmvn_stats[1, :-1] = 1.0
        self.normalize = GlobalCMVN(cmvn_stats)
        self.specaug = SpecAugment(**specaug) if specaug else None
        self.subsample = Conv2dSubsampling(input_dim, d_model, subsampling_channels)
        self.pos = SinusoidalPositionalEncoding(d_model, dropout)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.ctc_out = nn.Linear(d_model, vocab_size)
        self.ctc_loss = nn.CTCLoss(blank=BLANK_ID, reduction="sum", zero_infinity=True)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode features.

        Args:
            feats: (B, T, F) raw (un-normalised) features, 10 ms frames.
            feat_lens: (B,) valid frames.

        Returns:
            Encoder output (B, T', D) at 40 ms frames and its lengths (B,).
        """
        x = self.normalize(feats)
        if self.specaug is not None:
            x = self.specaug(x)
        x, lens = self.subsample(x, feat_lens)
        x = self.pos(x)
        x = self.encoder(x, src_key_padding_mask=pad_mask(lens, x.size(1)))
        return self.norm(x), lens

    def ctc_log_probs(self, feats: torch.Tensor, feat_lens: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log posteriors (B, T', V) and their lengths (B,) for features (B, T, F)."""
        enc, lens = self.encode(feats, feat_lens)
        return self.ctc_out(enc).float().log_softmax(-1), lens

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """CTC loss averaged over the utterances of the batch.

        Args:
            feats: (B, T, F) features; feat_lens: (B,).
            targets: (B, U) token ids padded with any value; target_lens: (B,).

        Returns:
            ``{"loss": scalar, "ctc": scalar}`` (summed CTC loss / B).
        """
        log_probs, lens = self.ctc_log_probs(feats, feat_lens)
        loss = self.ctc_loss(log_probs.transpose(0, 1), targets, lens, target_lens)
        loss = loss / feats.size(0)
        return {"loss": loss, "ctc": loss.detach()}
