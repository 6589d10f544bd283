"""Neural token language models over the acoustic model's sentencepiece units: an LSTM LM
(Mikolov et al., 2010; Sundermeyer et al., 2012) and a causal Transformer LM (Vaswani et al.,
2017; as ESPnet's ``TransformerLM``).

Sequences are ``<sos/eos> t_1 ... t_n <sos/eos>`` with the tokenizer's id 2 as both ends
(:data:`asrkit.text.tokenizer.SOS_EOS_ID`); the model predicts every next token, so the
log-probability of a sentence includes its end. Shapes: ``B`` batch, ``L`` tokens, ``V``
vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asrkit.text.tokenizer import SOS_EOS_ID

__all__ = ["LSTMLM", "TokenLM", "TransformerLM"]


class TokenLM(nn.Module):
    """Shared interface: subclasses map ``(B, L)`` token ids to ``(B, L, V)`` logits of the
    next token at each position in ``forward``; :meth:`sentence_logprob` scores whole
    sentences."""

    vocab_size: int

    @torch.inference_mode()
    def sentence_logprob(self, sentences: list[list[int]], batch_size: int = 64
                         ) -> list[float]:
        """Natural-log probability of each token sequence, ``<sos>`` prepended and ``<eos>``
        scored at the end.

        Args:
            sentences: token ids without the markers.
            batch_size: sequences per forward pass (padded on the right; padding ignored).
        """
        dev = next(self.parameters()).device
        out: list[float] = []
        for i in range(0, len(sentences), batch_size):
            chunk = [[SOS_EOS_ID, *s, SOS_EOS_ID] for s in sentences[i:i + batch_size]]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), SOS_EOS_ID, dtype=torch.long)
            mask = torch.zeros(len(chunk), width - 1)
            for b, s in enumerate(chunk):
                ids[b, :len(s)] = torch.tensor(s)
                mask[b, :len(s) - 1] = 1
            ids, mask = ids.to(dev), mask.to(dev)
            logp = self(ids[:, :-1]).float().log_softmax(-1)
            tok = logp.gather(2, ids[:, 1:, None])[..., 0]
            out += (tok * mask).sum(1).tolist()
        return out


class LSTMLM(TokenLM):
    """Embedding -> stacked LSTM -> linear (tied to the embedding when sizes match).

    Args:
        vocab_size: ``V``.
        embed_dim: embedding size.
        hidden_size: LSTM units per layer.
        num_layers: LSTM layers.
        dropout: on embeddings, between layers and before the output.
        tie_weights: share the output matrix with the embedding (needs ``embed_dim ==
            hidden_size``).

    Raises:
        ValueError: ``tie_weights`` with different sizes.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_size: int = 256,
                 num_layers: int = 2, dropout: float = 0.2, tie_weights: bool = True) -> None:
        super().__init__()
        if tie_weights and embed_dim != hidden_size:
            raise ValueError(f"tie_weights needs embed_dim == hidden_size, got {embed_dim} "
                             f"and {hidden_size}")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor, state=None) -> torch.Tensor:
        """``(B, L)`` -> ``(B, L, V)`` logits (``state``: an LSTM ``(h, c)`` to continue)."""
        y, _ = self.lstm(self.drop(self.embed(tokens)), state)
        return self.out(self.drop(y))


class TransformerLM(TokenLM):
    """Embedding + sinusoidal positions -> causal pre-LN Transformer encoder -> linear.

    Args:
        vocab_size: ``V``.
        d_model: model width.
        nhead: attention heads.
        num_layers: layers.
        dim_feedforward: feed-forward width.
        dropout: dropout.
        max_len: longest sequence (positions).
    """

    def __init__(self, vocab_size: int, d_model: int = 256, nhead: int = 4,
                 num_layers: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1,
                 max_len: int = 1024) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_model)
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` -> ``(B, L, V)`` logits; position ``i`` sees tokens ``0..i`` only.

        Raises:
            ValueError: ``L`` beyond ``max_len``.
        """
        n = tokens.shape[1]
        if n > self.pe.shape[0]:
            raise ValueError(f"sequence of {n} tokens exceeds max_len {self.pe.shape[0]}")
        x = self.embed(tokens) * self.scale + self.pe[:n]
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device)
        return self.out(self.norm(self.encoder(x, mask=causal, is_causal=True)))
