"""Attention decoders for hybrid CTC/attention models (Watanabe et al., 2017).

Two autoregressive decoders over an encoder output ``enc`` (B, T', D_enc) share one interface,
so :class:`asrkit.models.base.CTCModel` and :mod:`asrkit.decode.attention` treat them alike:

- ``forward(enc, enc_lens, ys_in) -> logits (B, U, V)``: teacher forcing. ``ys_in`` starts with
  ``<sos/eos>`` (id 2); logits at position u predict token u + 1 of the target.
- ``score(enc, enc_lens, prefixes) -> log_probs (N, V)``: next-token log-probabilities for N
  prefixes of equal length u (each starting with ``<sos/eos>``), for beam search. Both decoders
  recompute the whole prefix at every call (O(u) work per call, O(U²) per hypothesis) instead of
  caching per-layer states: simple and exact, and cheap at the lengths of character/BPE ASR
  outputs on CPU. ``enc`` may have batch 1 (broadcast to the N prefixes) or N.

:class:`TransformerDecoder` is the speech Transformer's decoder (Vaswani et al., 2017; Karita et
al., 2019); :class:`LSTMAttentionDecoder` is Listen, Attend and Spell (Chan et al., 2016) with
location-aware attention (Chorowski et al., 2015, "Attention-based models for speech
recognition") or plain additive attention (Bahdanau et al., 2015).

:func:`build_decoder` turns the plain config spec ``{"type": "transformer" | "lstm", ...}`` into
one of them.

Shapes: ``B`` batch, ``T'`` encoder frames, ``D`` widths, ``U`` tokens, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asrkit.models.modules.masks import pad_mask
from asrkit.models.modules.positional import SinusoidalPositionalEncoding

__all__ = ["LSTMAttentionDecoder", "TransformerDecoder", "build_decoder"]


def _expand(enc: torch.Tensor, enc_lens: torch.Tensor, n: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast a batch-1 encoder output (1, T', D) and lengths (1,) to batch n."""
    if enc.size(0) == n:
        return enc, enc_lens
    if enc.size(0) != 1:
        raise ValueError(f"encoder batch {enc.size(0)} matches neither 1 nor the {n} prefixes")
    return enc.expand(n, -1, -1), enc_lens.expand(n)


class _PrefixScoring(nn.Module):
    """``score`` for decoders whose ``forward(enc, enc_lens, ys_in)`` returns (B, U, V) logits."""

    def score(self, enc: torch.Tensor, enc_lens: torch.Tensor, prefixes: torch.Tensor
              ) -> torch.Tensor:
        """Next-token log-probabilities for N prefixes, recomputing each prefix in full
        (no state is cached between steps: O(u) work per call).

        Args:
            enc: (N, T', D_enc) or (1, T', D_enc); enc_lens: (N,) or (1,).
            prefixes: (N, u) token ids, each starting with ``<sos/eos>``.

        Returns:
            (N, V) float32 log-probabilities of the token after each prefix.
        """
        enc, enc_lens = _expand(enc, enc_lens, prefixes.size(0))
        return self(enc, enc_lens, prefixes)[:, -1].float().log_softmax(-1)


class TransformerDecoder(_PrefixScoring):
    """Pre-LN Transformer decoder: causal self-attention, cross-attention to the encoder.

    Token embedding → sinusoidal positions (×√D, as the encoder's) → ``num_layers`` pre-LN
    ``nn.TransformerDecoderLayer`` → LayerNorm → linear output to V.

    Args:
        vocab_size: V, including blank (0), ``<unk>`` (1) and ``<sos/eos>`` (2).
        d_model: decoder width D.
        nhead: attention heads (must divide D).
        num_layers: decoder layers.
        dim_feedforward: hidden size of each feed-forward block.
        dropout: dropout after positions and inside every layer.
        enc_dim: width of the encoder output; if it differs from ``d_model`` a linear layer
            (``enc_proj``) maps the encoder output to D. None means ``d_model``.
    """

    def __init__(self, vocab_size: int, d_model: int = 256, nhead: int = 4,
                 num_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 enc_dim: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, dropout)
        self.enc_proj = (nn.Linear(enc_dim, d_model)
                         if enc_dim is not None and enc_dim != d_model else None)
        layer = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, enc: torch.Tensor, enc_lens: torch.Tensor, ys_in: torch.Tensor
                ) -> torch.Tensor:
        """Teacher-forced logits.

        Args:
            enc: (B, T', D_enc) encoder output; enc_lens: (B,) valid frames (padded frames are
                masked out of the cross-attention).
            ys_in: (B, U) token ids starting with ``<sos/eos>``. Padding after an utterance's
                last token may hold any valid id: the causal mask keeps it out of the
                positions before it, whose logits are the only ones a loss should use.

        Returns:
            Logits (B, U, V); position u depends only on ``ys_in[:, : u + 1]``.
        """
        if self.enc_proj is not None:
            enc = self.enc_proj(enc)
        u = ys_in.size(1)
        causal = torch.ones(u, u, dtype=torch.bool, device=ys_in.device).triu(1)
        x = self.pos(self.embed(ys_in))
        x = self.layers(x, enc, tgt_mask=causal,
                        memory_key_padding_mask=pad_mask(enc_lens, enc.size(1)))
        return self.out(self.norm(x))



class _Attention(nn.Module):
    """Additive attention (Bahdanau et al., 2015), optionally location-aware (Chorowski et al.).

    energy(t) = w · tanh(W_s s + W_h h_t [+ W_f (F * α_prev)_t]); α = softmax over valid t.
    """

    def __init__(self, enc_dim: int, query_dim: int, attention_dim: int, location: bool,
                 channels: int, kernel: int):
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        if location:
            if kernel < 1 or kernel % 2 == 0:
                raise ValueError(f"location_kernel must be odd and ≥ 1, got {kernel}")
            self.loc_conv = nn.Conv1d(1, channels, kernel, padding=kernel // 2, bias=False)
            self.loc_proj = nn.Linear(channels, attention_dim, bias=False)
        else:
            self.loc_conv = self.loc_proj = None
        self.energy = nn.Linear(attention_dim, 1)

    def forward(self, enc: torch.Tensor, enc_keys: torch.Tensor, pad: torch.Tensor,
                query: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """enc (B, T', D_enc), enc_keys = enc_proj(enc) (B, T', A), pad (B, T') True at padding,
        query (B, H), prev (B, T') previous weights → context (B, D_enc), weights (B, T')."""
        e = enc_keys + self.query_proj(query).unsqueeze(1)
        if self.loc_conv is not None:
            loc = self.loc_conv(prev.unsqueeze(1)).transpose(1, 2)  # (B, T', C)
            e = e + self.loc_proj(loc)
        e = self.energy(torch.tanh(e)).squeeze(-1).masked_fill(pad, float("-inf"))
        w = e.softmax(-1)
        return torch.bmm(w.unsqueeze(1), enc).squeeze(1), w


class LSTMAttentionDecoder(_PrefixScoring):
    """Listen, Attend and Spell decoder (Chan et al., 2016) in ESPnet's arrangement.

    At output step u, with decoder state s_{u-1} (top LSTM layer), previous attention weights
    α_{u-1} and previous context c_{u-1}:

    1. attention: c_u, α_u = Attend(s_{u-1}, encoder, α_{u-1}) over valid frames only;
    2. LSTM stack on [embed(y_{u-1}); c_u] → s_u;
    3. logits_u = W [s_u; c_u].

    α_0 is uniform over the valid frames; the LSTM states start at zero.

    Args:
        vocab_size: V, including blank (0), ``<unk>`` (1) and ``<sos/eos>`` (2).
        enc_dim: width of the encoder output D_enc.
        embed_dim: token embedding size.
        hidden_size: LSTM cell size H.
        num_layers: stacked ``nn.LSTMCell`` layers.
        attention_dim: width A of the attention's hidden layer.
        dropout: dropout on the embedding and between/after LSTM layers.
        attention: ``"location"`` (location-aware: a conv over α_{u-1} joins the energy; the
            usual LAS choice in ESPnet) or ``"additive"`` (Bahdanau).
        location_channels: conv channels of location-aware attention.
        location_kernel: conv kernel of location-aware attention, in encoder frames; odd.

    Raises:
        ValueError: on an unknown ``attention`` or an even ``location_kernel``.
    """

    def __init__(self, vocab_size: int, enc_dim: int, embed_dim: int = 256,
                 hidden_size: int = 512, num_layers: int = 1, attention_dim: int = 256,
                 dropout: float = 0.1, attention: str = "location", location_channels: int = 10,
                 location_kernel: int = 31):
        super().__init__()
        if attention not in ("location", "additive"):
            raise ValueError(f"attention must be 'location' or 'additive', got {attention!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embed_dim + enc_dim if i == 0 else hidden_size, hidden_size)
            for i in range(num_layers))
        self.attention = _Attention(enc_dim, hidden_size, attention_dim,
                                    attention == "location", location_channels, location_kernel)
        self.out = nn.Linear(hidden_size + enc_dim, vocab_size)

    def forward(self, enc: torch.Tensor, enc_lens: torch.Tensor, ys_in: torch.Tensor
                ) -> torch.Tensor:
        """Teacher-forced logits, one LSTM step per output token.

        Args:
            enc: (B, T', D_enc) encoder output; enc_lens: (B,) valid frames.
            ys_in: (B, U) token ids starting with ``<sos/eos>``; padding may hold any valid id
                (the recurrence is causal, so it never reaches earlier positions).

        Returns:
            Logits (B, U, V); position u depends only on ``ys_in[:, : u + 1]``.
        """
        b, t = enc.shape[:2]
        pad = pad_mask(enc_lens, t)
        keys = self.attention.enc_proj(enc)
        att = (~pad).to(enc.dtype) / enc_lens.clamp(min=1).to(enc.dtype).unsqueeze(1)
        hidden = enc.new_zeros(b, self.cells[0].hidden_size)
        states = [(hidden, hidden) for _ in self.cells]
        emb = self.dropout(self.embed(ys_in))
        outs = []
        for u in range(ys_in.size(1)):
            ctx, att = self.attention(enc, keys, pad, states[-1][0], att)
            x = torch.cat([emb[:, u], ctx], dim=-1)
            new_states = []
            for cell, state in zip(self.cells, states):
                h, c = cell(x, state)
                new_states.append((h, c))
                x = self.dropout(h)
            states = new_states
            outs.append(torch.cat([x, ctx], dim=-1))
        return self.out(torch.stack(outs, dim=1))



def build_decoder(spec: Mapping[str, Any], vocab_size: int, enc_dim: int) -> nn.Module:
    """Build a decoder from a plain config spec (no Hydra ``_target_``).

    Args:
        spec: ``{"type": "transformer", ...}`` with keyword arguments of
            :class:`TransformerDecoder` (``d_model`` defaults to ``enc_dim``), or
            ``{"type": "lstm", ...}`` with those of :class:`LSTMAttentionDecoder`.
            ``vocab_size`` and ``enc_dim`` come from the model and must not be given.
        vocab_size: V of the model.
        enc_dim: D of the model's encoder output.

    Returns:
        The decoder module.

    Raises:
        ValueError: on a missing or unknown ``type``, or a spec that sets ``vocab_size`` or
            ``enc_dim``.
        TypeError: on an argument the decoder class does not take.
    """
    args = dict(spec)
    kind = args.pop("type", None)
    for key in ("vocab_size", "enc_dim"):
        if key in args:
            raise ValueError(f"decoder spec must not set {key!r}; it comes from the model")
    if kind == "transformer":
        args.setdefault("d_model", enc_dim)
        return TransformerDecoder(vocab_size, enc_dim=enc_dim, **args)
    if kind == "lstm":
        return LSTMAttentionDecoder(vocab_size, enc_dim, **args)
    raise ValueError(f"decoder type must be 'transformer' or 'lstm', got {kind!r} "
                     f"(spec {dict(spec)})")
