"""SpecAugment (Park et al., 2019) on batched features: masks via ``torchaudio.transforms``,
time warping as ESPnet's ``TimeWarp`` (interpolation, since torchaudio offers none)."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

__all__ = ["SpecAugment", "time_warp"]


def time_warp(x: torch.Tensor, window: int, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """Warp one utterance's features (T, F) along time (SpecAugment's time warping).

    A centre frame ``c`` is drawn uniformly from ``[window, T - window)`` and moved to
    ``c + w`` with ``w`` uniform in ``[-window, window]``: frames ``[0, c)`` are stretched to
    ``c + w`` frames and ``[c, T)`` to ``T - c - w`` by linear interpolation, so the length stays
    ``T`` (ESPnet's ``time_warp``, which interpolates bicubically over the whole image; Park et
    al. use a sparse image warp).

    Args:
        x: (T, F) features.
        window: the largest shift W, in frames (10 ms); ESPnet's default is 5.
        generator: random source (default: torch's global one).

    Returns:
        (T, F); ``x`` itself when ``T <= 2 * window`` or ``window == 0``.
    """
    t = x.size(0)
    if window <= 0 or t <= 2 * window:
        return x
    c = int(torch.randint(window, t - window, (1,), generator=generator))
    w = int(torch.randint(-window, window + 1, (1,), generator=generator))
    if w == 0:
        return x
    y = x.t().unsqueeze(0)  # (1, F, T)
    left = F.interpolate(y[..., :c], size=c + w, mode="linear", align_corners=False)
    right = F.interpolate(y[..., c:], size=t - c - w, mode="linear", align_corners=False)
    return torch.cat([left, right], dim=-1).squeeze(0).t()


class SpecAugment(nn.Module):
    """Time warping, frequency and time masking applied only in training mode.

    Masks come from ``torchaudio.transforms.SpecAugment`` with independent masks per utterance;
    masked values are set to the utterance mean (torchaudio's default), i.e. about zero after
    CMVN. Time warping (:func:`time_warp`) runs first, on each utterance's valid frames only
    (padding untouched), when ``time_warp`` > 0 and lengths are given.

    Args:
        num_freq_masks: frequency masks per utterance.
        freq_mask_width: maximum width of one frequency mask, in bins.
        num_time_masks: time masks per utterance.
        time_mask_width: maximum width of one time mask, in frames (10 ms).
        time_mask_ratio: upper bound of one time mask as a fraction of the utterance.
        time_warp: the largest time-warp shift W in frames (ESPnet: 5); 0 disables it.

    Raises:
        ValueError: a negative ``time_warp``.
    """

    def __init__(self, num_freq_masks: int = 2, freq_mask_width: int = 27,
                 num_time_masks: int = 2, time_mask_width: int = 40,
                 time_mask_ratio: float = 0.05, time_warp: int = 0):
        super().__init__()
        if time_warp < 0:
            raise ValueError(f"time_warp must be >= 0 frames, got {time_warp}")
        self.time_warp = int(time_warp)
        self.aug = torchaudio.transforms.SpecAugment(
            n_time_masks=num_time_masks, time_mask_param=time_mask_width,
            n_freq_masks=num_freq_masks, freq_mask_param=freq_mask_width,
            iid_masks=True, p=time_mask_ratio, zero_masking=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Augment features (B, T, F) → (B, T, F); identity in eval mode.

        Args:
            x: (B, T, F) features.
            lengths: (B,) valid frames per utterance; without them no time warping.
        """
        if not self.training:
            return x
        if self.time_warp > 0 and lengths is not None:
            x = x.clone()
            for b, n in enumerate(lengths.tolist()):
                x[b, :n] = time_warp(x[b, :n], self.time_warp)
        return self.aug(x.transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2)
