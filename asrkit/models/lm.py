"""Neural token language models over the acoustic model's sentencepiece units: an LSTM LM
(Mikolov et al., 2010; Sundermeyer et al., 2012) and a causal Transformer LM (Vaswani et al.,
2017; as ESPnet's ``TransformerLM``).

Sequences are ``<sos/eos> t_1 ... t_n <sos/eos>`` with the tokenizer's id 2 as both ends
(:data:`asrkit.text.tokenizer.SOS_EOS_ID`); the model predicts every next token, so the
log-probability of a sentence includes its end. Shapes: ``B`` batch, ``L`` tokens, ``V``
vocabulary. :class:`GPTLM` is a GPT-2 (Radford et al., 2019) built with Hugging Face
``transformers``, so a trained one is saved as a standard model directory
(:meth:`GPTLM.save_hf`) that ``AutoModelForCausalLM`` and ``hf:DIR`` load unchanged.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID

__all__ = ["GPTLM", "LSTMLM", "HFTokenLM", "TokenLM", "TransformerLM"]


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


class HFTokenLM(TokenLM):
    """A Hugging Face causal LM (any ``transformers`` ``*ForCausalLM``) whose token ids are
    asrkit's (:mod:`asrkit.text.tokenizer`: ``<sos/eos>`` = 2), as a :class:`TokenLM`, so
    that sentence scoring and shallow fusion use it like our own LMs.

    Args:
        hf_model: the ``transformers`` model.
    """

    def __init__(self, hf_model) -> None:
        super().__init__()
        self.hf = hf_model
        self.vocab_size = int(hf_model.config.vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` -> ``(B, L, V)`` logits; position ``i`` sees tokens ``0..i`` only.

        Raises:
            ValueError: ``L`` beyond the model's positions (``n_positions`` or
                ``max_position_embeddings``).
        """
        n_pos = getattr(self.hf.config, "n_positions", None) or getattr(
            self.hf.config, "max_position_embeddings", None)
        if n_pos is not None and tokens.shape[1] > n_pos:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds the model's "
                             f"{n_pos} positions")
        return self.hf(input_ids=tokens).logits

    def save_hf(self, out_dir: str | os.PathLike, tokenizer_model: str | os.PathLike) -> Path:
        """Write a Hugging Face model directory: ``config.json`` and ``model.safetensors``
        (``save_pretrained``) and the sentencepiece tokenizer as a ``transformers``
        ``SentencePieceBackend`` (``tokenizer.model``, ``tokenizer_config.json``), whose ids
        are exactly :class:`asrkit.text.tokenizer.Tokenizer`'s. Written into a temporary
        sibling and renamed, so ``out_dir`` is never half written.

        Args:
            out_dir: the directory (replaced if it exists).
            tokenizer_model: the sentencepiece ``.model`` the LM was trained with.

        Returns:
            ``out_dir``.
        """
        from transformers import SentencePieceBackend

        out = Path(out_dir)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.hf.save_pretrained(tmp)
        SentencePieceBackend(vocab_file=str(tokenizer_model), bos_token="<sos/eos>",
                             eos_token="<sos/eos>", unk_token="<unk>",
                             pad_token="<blank>").save_pretrained(tmp)
        old = out.with_name(out.name + ".old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return out


class GPTLM(HFTokenLM):
    """A GPT-2 decoder-only Transformer (``transformers.GPT2LMHeadModel``: learned positions,
    pre-LayerNorm blocks, GELU, output tied to the token embedding) over the tokenizer's ids,
    with ``<sos/eos>`` (id 2) as both BOS and EOS and ``<blank>`` (id 0) as padding;
    :meth:`save_hf` exports it.

    Args:
        vocab_size: ``V``.
        n_layer: Transformer blocks.
        n_embd: model width.
        n_head: attention heads.
        n_positions: longest sequence (tokens), the training block size or more.
        dropout: residual, embedding and attention dropout.

    Raises:
        ImportError: ``transformers`` is not installed (the ``llm`` extra).
    """

    def __init__(self, vocab_size: int, n_layer: int = 6, n_embd: int = 384, n_head: int = 6,
                 n_positions: int = 512, dropout: float = 0.1) -> None:
        try:
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("model=gpt needs transformers: pip install -e '.[llm]' in the "
                              "asrkit checkout") from e
        config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                            n_layer=n_layer, n_head=n_head, resid_pdrop=dropout,
                            embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=SOS_EOS_ID,
                            eos_token_id=SOS_EOS_ID, pad_token_id=BLANK_ID)
        super().__init__(GPT2LMHeadModel(config))
