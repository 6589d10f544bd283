"""SpecAugment (Park et al., 2019) on batched features, via ``torchaudio.transforms``."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

__all__ = ["SpecAugment"]


class SpecAugment(nn.Module):
    """Frequency and time masking applied only in training mode.

    Wraps ``torchaudio.transforms.SpecAugment`` with independent masks per utterance. Masked
    values are set to the utterance mean (torchaudio's default), i.e. about zero after CMVN.
    Time warping is not applied (torchaudio offers none; ESPnet's gain from it is small).

    Args:
        num_freq_masks: frequency masks per utterance.
        freq_mask_width: maximum width of one frequency mask, in bins.
        num_time_masks: time masks per utterance.
        time_mask_width: maximum width of one time mask, in frames (10 ms).
        time_mask_ratio: upper bound of one time mask as a fraction of the utterance.
    """

    def __init__(self, num_freq_masks: int = 2, freq_mask_width: int = 27,
                 num_time_masks: int = 2, time_mask_width: int = 40,
                 time_mask_ratio: float = 0.05):
        super().__init__()
        self.aug = torchaudio.transforms.SpecAugment(
            n_time_masks=num_time_masks, time_mask_param=time_mask_width,
            n_freq_masks=num_freq_masks, freq_mask_param=freq_mask_width,
            iid_masks=True, p=time_mask_ratio, zero_masking=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask features (B, T, F) → (B, T, F); identity in eval mode."""
        if not self.training:
            return x
        return self.aug(x.transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2)
