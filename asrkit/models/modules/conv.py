"""1-D convolution blocks over time that keep padded frames out of valid ones."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TimeChannelSeparableConv1d", "mask_padding"]


def mask_padding(x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded frames of a channels-first sequence.

    Args:
        x: (B, C, T).
        pad: (B, T) boolean, True at padded frames (:func:`asrkit.models.modules.masks.pad_mask`),
            or None for no padding.

    Returns:
        (B, C, T) with ``x[b, :, t] = 0`` wherever ``pad[b, t]``.
    """
    if pad is None:
        return x
    return x.masked_fill(pad.unsqueeze(1), 0.0)


class TimeChannelSeparableConv1d(nn.Module):
    """Depthwise conv over time (kernel K) then pointwise 1x1 conv across channels.

    The time-channel separable convolution of QuartzNet (Kriman et al., 2020, sec. 2). The
    depthwise conv has "same" padding, so T is kept. Padded frames are zeroed before it: a valid
    frame near the end of a short utterance then sees exactly the zeros it would see unbatched,
    which makes the output on valid frames independent of how much padding follows. Neither conv
    has a bias (a BatchNorm follows in QuartzNet).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: K, in frames; must be odd.

    Raises:
        ValueError: if ``kernel_size`` is even or < 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and ≥ 1 for 'same' padding, "
                             f"got {kernel_size}")
        self.depthwise = nn.Conv1d(in_channels, in_channels, kernel_size,
                                   padding=kernel_size // 2, groups=in_channels, bias=False)
        self.pointwise = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, T) → (B, C_out, T); ``pad`` (B, T) True at padded frames, or None."""
        return self.pointwise(self.depthwise(mask_padding(x, pad)))
