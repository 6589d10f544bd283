"""CTC search algorithms over frame posteriors."""

from __future__ import annotations

import torch

from asrkit.text.tokenizer import BLANK_ID

__all__ = ["ctc_greedy"]


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = BLANK_ID
               ) -> list[list[int]]:
    """Best-path CTC decoding (Graves et al., 2006): argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) log posteriors (or any scores; only the argmax matters).
        lengths: (B,) valid frames.
        blank: blank id.

    Returns:
        One token-id list per utterance.
    """
    best = log_probs.argmax(-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(best[b, :n])
        out.append(path[path != blank].tolist())
    return out
