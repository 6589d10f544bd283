"""What every neural acoustic model family shares: CMVN, SpecAugment, CTC head, loss.

A family (one file under ``asrkit/models/``) subclasses :class:`CTCModel` and implements
:meth:`CTCModel.encoder_forward`: normalised, augmented features (B, T, F) in, encoder output
(B, T', D) and its lengths out. Everything else (global CMVN from the training set's Kaldi
stats, SpecAugment in training mode only, the CTC output layer and loss) is here, so decoding
and training code talk to every family through the same three methods:

- ``encode(feats, feat_lens) -> (enc (B, T', D), enc_lens (B,))``
- ``ctc_log_probs(feats, feat_lens) -> (log_probs (B, T', V), lens (B,))``
- ``forward(feats, feat_lens, targets, target_lens) -> {"loss": scalar, ...}``
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import nn

from asrkit.features.cmvn import GlobalCMVN
from asrkit.models.modules.specaug import SpecAugment
from asrkit.text.tokenizer import BLANK_ID

__all__ = ["CTCModel", "identity_cmvn_stats"]


def identity_cmvn_stats(dim: int) -> np.ndarray:
    """Kaldi CMVN stats (2, dim + 1) that normalise nothing (mean 0, variance 1)."""
    stats = np.zeros((2, dim + 1))
    stats[0, -1] = 1.0
    stats[1, :-1] = 1.0
    return stats


class CTCModel(nn.Module, abc.ABC):
    """Base of the neural families: front end + ``encoder_forward`` + CTC (Graves et al., 2006).

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        encoder_dim: D, the width of ``encoder_forward``'s output.
        specaug: keyword arguments of :class:`SpecAugment`, or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1); None starts with identity
            normalisation (a checkpoint restores the trained values).
    """

    def __init__(self, input_dim: int, vocab_size: int, encoder_dim: int,
                 specaug: dict | None = None, cmvn_stats: np.ndarray | None = None):
        super().__init__()
        stats = identity_cmvn_stats(input_dim) if cmvn_stats is None else cmvn_stats
        self.normalize = GlobalCMVN(stats)
        self.specaug = SpecAugment(**specaug) if specaug else None
        self.ctc_out = nn.Linear(encoder_dim, vocab_size)
        self.ctc_loss = nn.CTCLoss(blank=BLANK_ID, reduction="sum", zero_infinity=True)

    @abc.abstractmethod
    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Family-specific encoder: (B, T, F) normalised features → (B, T', D), lengths (B,)."""

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """CMVN → SpecAugment (training only) → encoder.

        Args:
            feats: (B, T, F) raw features, 10 ms frames; feat_lens: (B,) valid frames.

        Returns:
            Encoder output (B, T', D) and its lengths (B,).
        """
        x = self.normalize(feats)
        if self.specaug is not None:
            x = self.specaug(x)
        return self.encoder_forward(x, feat_lens)

    def ctc_log_probs(self, feats: torch.Tensor, feat_lens: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log posteriors (B, T', V) in float32 and their lengths (B,)."""
        enc, lens = self.encode(feats, feat_lens)
        return self.ctc_out(enc).float().log_softmax(-1), lens

    def ctc_loss_from_encoder(self, enc: torch.Tensor, enc_lens: torch.Tensor,
                              targets: torch.Tensor, target_lens: torch.Tensor) -> torch.Tensor:
        """Summed CTC loss / B for encoder output (B, T', D) and targets (B, U) padded."""
        log_probs = self.ctc_out(enc).float().log_softmax(-1)
        loss = self.ctc_loss(log_probs.transpose(0, 1), targets, enc_lens, target_lens)
        return loss / enc.size(0)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """CTC loss averaged over the utterances of the batch.

        Args:
            feats: (B, T, F) features; feat_lens: (B,).
            targets: (B, U) token ids padded with any value; target_lens: (B,).

        Returns:
            ``{"loss": scalar, "ctc": detached scalar}``.
        """
        enc, lens = self.encode(feats, feat_lens)
        loss = self.ctc_loss_from_encoder(enc, lens, targets, target_lens)
        return {"loss": loss, "ctc": loss.detach()}
