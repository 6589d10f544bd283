"""Convolutional front ends that shorten the frame sequence before the encoder."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SUBSAMPLING_FACTORS", "Conv2dSubsampling"]

#: (kernel, stride) of the time/frequency convolutions for each factor, as ESPnet's
#: ``Conv2dSubsampling`` (×4), ``Conv2dSubsampling6`` (×6) and ``Conv2dSubsampling8`` (×8)
_LAYERS = {4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}
SUBSAMPLING_FACTORS = tuple(_LAYERS)


def _conv_out(n: torch.Tensor | int, layers) -> torch.Tensor | int:
    """Length after unpadded convolutions: ``(n - kernel) // stride + 1`` for each layer."""
    for k, s in layers:
        n = (n - k) // s + 1
    return n


class Conv2dSubsampling(nn.Module):
    """2-D convolutions with ReLU that reduce time and frequency ×4, ×6 or ×8.

    The front end of the speech Transformer (Dong et al., 2018, "Speech-Transformer") as used
    by ESPnet: ×4 = two 3x3 stride-2 convolutions (``Conv2dSubsampling``; frames in at 10 ms
    come out at 40 ms), ×6 = a 3x3 stride-2 then a 5x5 stride-3 one (``Conv2dSubsampling6``,
    60 ms), ×8 = three 3x3 stride-2 ones (``Conv2dSubsampling8``, 80 ms). A larger factor
    suits large output units (BPE pieces that are whole words) and makes the encoder cheaper.

    Args:
        input_dim: feature dimension F (e.g. 80 for fbank).
        d_model: output dimension D.
        channels: convolution channels (defaults to ``d_model``).
        factor: 4, 6 or 8.

    Raises:
        ValueError: another ``factor``, or ``input_dim`` too small for it.
    """

    def __init__(self, input_dim: int, d_model: int, channels: int | None = None,
                 factor: int = 4):
        super().__init__()
        if factor not in _LAYERS:
            raise ValueError(f"subsampling factor must be one of {SUBSAMPLING_FACTORS}, got "
                             f"{factor}")
        self.layers = _LAYERS[factor]
        #: input frames per output frame
        self.stride = factor
        #: shortest input that gives one output frame
        self.min_frames = next(t for t in range(1, 64) if _conv_out(t, self.layers) >= 1)
        channels = channels or d_model
        mods: list[nn.Module] = []
        for i, (k, s) in enumerate(self.layers):
            mods += [nn.Conv2d(1 if i == 0 else channels, channels, k, s), nn.ReLU()]
        # channels-last (NHWC) convolutions: oneDNN's native layout on CPU (and cuDNN's
        # fastest with mixed precision), so no layout copy before each convolution's backward;
        # same results up to float rounding; a whole training step 1.04x (Conformer) / 1.06x
        # (Transformer) faster on the 2-core CPU (scripts/bench/train_throughput.py, RESULTS.md)
        self.conv = nn.Sequential(*mods).to(memory_format=torch.channels_last)
        freq = _conv_out(input_dim, self.layers)
        if freq < 1:
            raise ValueError(f"input_dim {input_dim} is too small for ×{factor} subsampling")
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after subsampling for input lengths (B,) (×4: ``((T - 1) // 2 - 1) // 2``;
        ×6: ``((T - 1) // 2 - 2) // 3``; ×8: ``(((T - 1) // 2 - 1) // 2 - 1) // 2``)."""
        n = lengths
        for k, s in self.layers:
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n

    def forward(self, x: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample.

        Args:
            x: features (B, T, F).
            lengths: valid frames per utterance (B,).

        Returns:
            (B, T', D) with T' from :meth:`output_lengths`, and the new lengths (B,), at
            least 1.

        Raises:
            ValueError: if T is too short to subsample (7 frames for ×4, 11 for ×6, 15 for ×8).
        """
        if x.size(1) < self.min_frames:
            raise ValueError(f"input of {x.size(1)} frames is too short for ×{self.stride} "
                             f"subsampling (≥{self.min_frames})")
        y = self.conv(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (B, C, T', F')
        b, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(b, t, c * f))
        return y, self.output_lengths(lengths).clamp(min=1)
