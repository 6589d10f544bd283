"""Convolutional front ends that shorten the frame sequence before the encoder."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2dSubsampling"]


class Conv2dSubsampling(nn.Module):
    """Two 3x3 stride-2 2-D convolutions with ReLU: time and frequency reduced ×4.

    The front end of the speech Transformer (Dong et al., 2018, "Speech-Transformer") as used
    by ESPnet's ``Conv2dSubsampling``. Frames in at 10 ms come out at 40 ms.

    Args:
        input_dim: feature dimension F (e.g. 80 for fbank).
        d_model: output dimension D.
        channels: convolution channels (defaults to ``d_model``).
    """

    #: input frames per output frame (two stride-2 convolutions without padding)
    stride = 4

    def __init__(self, input_dim: int, d_model: int, channels: int | None = None):
        super().__init__()
        channels = channels or d_model
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2), nn.ReLU(),
        )
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Frames after subsampling for input lengths (B,): ``((T - 1) // 2 - 1) // 2``."""
        return torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 1, 2,
                         rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample.

        Args:
            x: features (B, T, F).
            lengths: valid frames per utterance (B,).

        Returns:
            (B, T', D) with T' = ((T - 1) // 2 - 1) // 2, and the new lengths (B,).

        Raises:
            ValueError: if T < 7 (too short to subsample).
        """
        if x.size(1) < 7:
            raise ValueError(f"input of {x.size(1)} frames is too short for ×4 subsampling (≥7)")
        y = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(b, t, c * f))
        return y, self.output_lengths(lengths).clamp(min=1)
