"""Padding masks."""

from __future__ import annotations

import torch

__all__ = ["pad_mask"]


def pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask (B, T), True at padded positions (PyTorch's ``key_padding_mask`` sense).

    Args:
        lengths: valid lengths (B,).
        max_len: T; defaults to ``lengths.max()``.
    """
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
