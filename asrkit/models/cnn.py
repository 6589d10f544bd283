"""QuartzNet-style fully convolutional encoder with a CTC head (``model=cnn``).

Conv2d ×4 subsampling → B residual blocks of R time-channel separable convolutions (the
Jasper / QuartzNet line: Li et al., 2019, "Jasper"; Kriman et al., 2020, "QuartzNet") → 1x1
conv to D → linear CTC output (Graves et al., 2006).

Differences from the paper, all deliberate:

- The prologue C1 (stride-2 conv, K = 33) is replaced by the shared
  :class:`~asrkit.models.modules.subsampling.Conv2dSubsampling` (×4, 40 ms frames), so every
  family starts from the same front end. QuartzNet runs at 20 ms; kernels given here count
  40 ms frames, so the paper's K = 33…75 become about 17…37 for the same receptive field.
- The dilated epilogue C2 (K = 87) is left out; C3 is the final 1x1 conv to D (+ BN + ReLU)
  and C4 is the base class's linear CTC layer.
- Blocks are listed one by one (``channels`` / ``kernel_sizes``) instead of repeated S times.

Padding: padded frames are zeroed before every convolution over time, so in eval mode an
utterance gets the same output on its valid frames whether or not it is batched with longer
ones. In training mode BatchNorm statistics are taken over all frames of the batch, padded
(zeroed, then BN-shifted) frames included; this biases the statistics slightly toward zero in
batches with much padding. Length-bucketed batches keep the effect small, and eval mode uses
the running statistics, so decoding is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from asrkit.models.base import CTCModel
from asrkit.models.modules.conv import TimeChannelSeparableConv1d, mask_padding
from asrkit.models.modules.masks import pad_mask
from asrkit.models.modules.subsampling import Conv2dSubsampling

__all__ = ["CNNCTC", "QuartzNetBlock"]


class QuartzNetBlock(nn.Module):
    """One QuartzNet block B_i: R × (separable conv → BN → ReLU → dropout) plus a residual.

    The residual (pointwise conv + BN of the block input) is added after the last BN, before
    the last ReLU (Kriman et al., 2020, fig. 1).

    Args:
        in_channels: C_in.
        out_channels: C_out (every sub-block after the first keeps C_out).
        kernel_size: K of the depthwise convs, in frames; odd.
        repeats: R, sub-blocks in the block (≥ 1).
        dropout: dropout after each ReLU.

    Raises:
        ValueError: if ``repeats`` < 1 or ``kernel_size`` is even.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, repeats: int,
                 dropout: float):
        super().__init__()
        if repeats < 1:
            raise ValueError(f"repeats must be ≥ 1, got {repeats}")
        self.convs = nn.ModuleList(
            TimeChannelSeparableConv1d(in_channels if i == 0 else out_channels, out_channels,
                                       kernel_size)
            for i in range(repeats))
        self.norms = nn.ModuleList(nn.BatchNorm1d(out_channels) for _ in range(repeats))
        self.residual = nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False),
                                      nn.BatchNorm1d(out_channels))
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """(B, C_in, T) → (B, C_out, T); ``pad`` (B, T) True at padded frames, or None."""
        skip = self.residual(x)
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x, pad))
            if i == last:
                x = x + skip
            x = self.dropout(self.relu(x))
        return x


class CNNCTC(CTCModel):
    """QuartzNet-style CNN-CTC acoustic model (Kriman et al., 2020).

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        encoder_dim: D, channels of the final 1x1 conv fed to the CTC layer.
        channels: output channels of each block (B entries); the subsampling front end
            outputs ``channels[0]``.
        kernel_sizes: depthwise kernel of each block in 40 ms frames (B odd entries).
        repeats: R, separable-conv sub-blocks per block.
        dropout: dropout after each ReLU.
        subsampling_channels: channels of the ×4 conv front end (default ``channels[0]``);
            32–64 keep the front end cheap on CPU.
        specaug: keyword arguments of :class:`asrkit.models.modules.specaug.SpecAugment`,
            or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1), or None (identity until loaded).

    Raises:
        ValueError: if ``channels`` is empty, ``channels`` and ``kernel_sizes`` differ in
            length, a kernel size is even, or ``repeats`` < 1.
    """

    def __init__(self, input_dim: int, vocab_size: int, encoder_dim: int = 512,
                 channels: Sequence[int] = (256, 256, 512, 512, 512),
                 kernel_sizes: Sequence[int] = (17, 19, 25, 31, 37), repeats: int = 5,
                 dropout: float = 0.1, subsampling_channels: int | None = 64,
                 specaug: dict | None = None, cmvn_stats: np.ndarray | None = None):
        super().__init__(input_dim, vocab_size, encoder_dim, specaug, cmvn_stats)
        channels, kernel_sizes = [int(c) for c in channels], [int(k) for k in kernel_sizes]
        if not channels or len(channels) != len(kernel_sizes):
            raise ValueError(f"channels ({len(channels)} entries) and kernel_sizes "
                             f"({len(kernel_sizes)} entries) must be non-empty and equally long")
        self.subsample = Conv2dSubsampling(input_dim, channels[0], subsampling_channels)
        ins = [channels[0]] + channels[:-1]
        self.blocks = nn.ModuleList(
            QuartzNetBlock(c_in, c_out, k, repeats, dropout)
            for c_in, c_out, k in zip(ins, channels, kernel_sizes))
        self.final = nn.Sequential(nn.Conv1d(channels[-1], encoder_dim, 1, bias=False),
                                   nn.BatchNorm1d(encoder_dim), nn.ReLU(), nn.Dropout(dropout))

    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) normalised features → (B, T', D) at 40 ms frames, lengths (B,).

        Raises:
            ValueError: if T < 7 (from the subsampling front end).
        """
        x, lens = self.subsample(x, lengths)
        pad = pad_mask(lens, x.size(1))
        x = x.transpose(1, 2)  # (B, C, T')
        for block in self.blocks:
            x = block(x, pad)
        x = mask_padding(self.final(x), pad)
        return x.transpose(1, 2), lens
