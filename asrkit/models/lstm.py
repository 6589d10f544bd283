"""Stacked (B)LSTM encoder with a CTC head, optionally hybrid CTC/attention (``model=lstm``).

Optional Conv2d ×4 subsampling → stacked LSTM (Hochreiter & Schmidhuber, 1997), bidirectional
as in Graves et al., 2013, "Speech recognition with deep recurrent neural networks", or
unidirectional for streaming → optional linear projection → linear CTC output (Graves et al.,
2006). The conv front end + BLSTM is the CTC encoder of ESPnet's RNN recipes (Watanabe et al.,
2017, "Hybrid CTC/attention").

Sequences are packed (``nn.utils.rnn.pack_padded_sequence``), so the recurrence stops at each
utterance's last valid frame: padding never changes outputs, in training or eval mode.

With ``decoder`` set (``{type: lstm}``: Listen, Attend and Spell, Chan et al., 2016) the model
is ESPnet's RNN hybrid CTC/attention model (Watanabe et al., 2017). The class keeps its name so
configs and checkpoints keep working.

Streaming: with ``bidirectional: false`` frame t' depends only on input up to its own window.
The conv front end looks 6 input frames (60 ms) past the first frame of each 40 ms output
frame; with ``subsampling: none`` the model is strictly causal at 10 ms frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from asrkit.models.base import CTCModel
from asrkit.models.modules.subsampling import Conv2dSubsampling

__all__ = ["LSTMCTC"]


class LSTMCTC(CTCModel):
    """(B)LSTM-CTC acoustic model (hybrid CTC/attention when ``decoder`` is set).

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0.
        hidden_size: LSTM cell size per direction; also the output width of the conv front end.
        num_layers: stacked LSTM layers.
        bidirectional: True for a BLSTM, False for a unidirectional (causal) LSTM.
        dropout: dropout between LSTM layers and on the last layer's output.
        subsampling: ``"conv2d"`` (×4, 40 ms frames, T' = ((T - 1) // 2 - 1) // 2) or
            ``"none"`` (T' = T, 10 ms frames).
        subsampling_channels: channels of the conv front end (default ``hidden_size``);
            32–64 keep it cheap on CPU.
        proj_dim: if set, a linear projection of the LSTM output to this D; otherwise
            D = ``hidden_size`` × (2 if bidirectional else 1).
        specaug: keyword arguments of :class:`asrkit.models.modules.specaug.SpecAugment`,
            or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1), or None (identity until loaded).
        decoder: attention decoder spec (``{"type": "transformer" | "lstm", ...}``) for the
            hybrid CTC/attention objective, or None for CTC only; see
            :class:`asrkit.models.base.CTCModel`.
        ctc_weight: CTC weight λ of the hybrid loss (1.0 = CTC only; < 1 needs a decoder).
        lsm_weight: label smoothing of the decoder's cross-entropy.

    Raises:
        ValueError: if ``subsampling`` is not ``"conv2d"`` or ``"none"``; a bad ``decoder`` /
            ``ctc_weight``.
    """

    def __init__(self, input_dim: int, vocab_size: int, hidden_size: int = 256,
                 num_layers: int = 4, bidirectional: bool = True, dropout: float = 0.2,
                 subsampling: str = "conv2d", subsampling_channels: int | None = 64,
                 proj_dim: int | None = None, specaug: dict | None = None,
                 cmvn_stats: np.ndarray | None = None, decoder: Mapping[str, Any] | None = None,
                 ctc_weight: float = 1.0, lsm_weight: float = 0.1):
        lstm_out = hidden_size * (2 if bidirectional else 1)
        super().__init__(input_dim, vocab_size, proj_dim or lstm_out, specaug, cmvn_stats,
                         decoder=decoder, ctc_weight=ctc_weight, lsm_weight=lsm_weight)
        if subsampling == "conv2d":
            self.subsample = Conv2dSubsampling(input_dim, hidden_size, subsampling_channels)
            lstm_in = hidden_size
        elif subsampling == "none":
            self.subsample = None
            lstm_in = input_dim
        else:
            raise ValueError(f"subsampling must be 'conv2d' or 'none', got {subsampling!r}")
        self.lstm = nn.LSTM(lstm_in, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0,
                            bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(lstm_out, proj_dim) if proj_dim else None

    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) normalised features → (B, T', D), lengths (B,).

        T' is T/4 (40 ms frames) with conv2d subsampling, T otherwise. Padded output frames
        are zero (before the optional projection).

        Raises:
            ValueError: if T < 7 with conv2d subsampling.
        """
        if self.subsample is not None:
            x, lens = self.subsample(x, lengths)
        else:
            lens = lengths
        packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        out = self.dropout(out)
        if self.proj is not None:
            out = self.proj(out)
        return out, lens
