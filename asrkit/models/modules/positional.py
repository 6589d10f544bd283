"""Positional encodings."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalPositionalEncoding"]


class SinusoidalPositionalEncoding(nn.Module):
    """Absolute sinusoidal positions (Vaswani et al., 2017, sec. 3.5), input scaled by √D.

    Args:
        d_model: model dimension D.
        dropout: dropout applied after adding positions.
        max_len: initial table length in frames; grown on demand for longer inputs.
    """

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", self._table(max_len), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32)
                        * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(length, self.d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add positions to ``x`` (B, T, D) → (B, T, D)."""
        if x.size(1) > self.pe.size(0):
            self.pe = self._table(x.size(1)).to(self.pe.device)
        return self.dropout(x * math.sqrt(self.d_model) + self.pe[: x.size(1)].to(x.dtype))
