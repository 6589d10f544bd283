"""What every neural acoustic model family shares: CMVN, SpecAugment, CTC head, loss, decoder.

A family (one file under ``asrkit/models/``) subclasses :class:`CTCModel` and implements
:meth:`CTCModel.encoder_forward`: normalised, augmented features (B, T, F) in, encoder output
(B, T', D) and its lengths out. Everything else (global CMVN from the training set's Kaldi
stats, SpecAugment in training mode only, the CTC output layer and loss, and the optional
attention decoder of the hybrid CTC/attention objective) is here, so decoding and training
code talk to every family through the same methods:

- ``encode(feats, feat_lens) -> (enc (B, T', D), enc_lens (B,))``
- ``ctc_log_probs(feats, feat_lens) -> (log_probs (B, T', V), lens (B,))``
- ``forward(feats, feat_lens, targets, target_lens) -> {"loss": scalar, ...}``
- ``has_decoder`` and ``decoder.score(enc, enc_lens, prefixes)`` for attention search
  (:mod:`asrkit.decode.attention`).
- ``encoder_frame_stride()`` and ``encoder_output_lengths(lengths)``: how input frames map to
  encoder frames, for decoding a long utterance in overlapping windows
  (:mod:`asrkit.decode.chunked`).

Hybrid CTC/attention (Watanabe et al., 2017, "Hybrid CTC/attention architecture for end-to-end
speech recognition"; ESPnet's ``ctc_weight``): with a ``decoder`` spec the model also owns an
attention decoder (:mod:`asrkit.models.modules.decoder`) trained with label-smoothed
cross-entropy, and the loss is ``ctc_weight * ctc + (1 - ctc_weight) * att``. The family classes
keep their ``…CTC`` names (so configs and checkpoints keep working) but are hybrid models when a
decoder is configured. Without a decoder nothing changes: no new parameters, the same
``state_dict`` keys, the same loss.

Intermediate CTC (Lee & Watanabe, 2021, "Intermediate loss regularization for CTC-based
speech recognition"; ESPnet's ``interctc_layer_idx`` / ``interctc_weight``): families that
call :meth:`CTCModel.intermediate` after each encoder layer get, at the layers listed in
``interctc_layers``, CTC log-posteriors from the shared CTC head, and the CTC term of the loss
becomes ``(1 - interctc_weight) · ctc + interctc_weight · mean(intermediate ctc)``. With
``self_condition`` (Nozaki & Komatsu, 2021, "Relaxing the conditional independence assumption
of CTC-based ASR by conditioning on intermediate predictions") the posteriors are also fed back:
``x += Linear(softmax(logits))``, in training and decoding alike.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asrkit.features.cmvn import GlobalCMVN
from asrkit.models.modules.decoder import build_decoder
from asrkit.models.modules.specaug import SpecAugment
from asrkit.models.modules.subsampling import Conv2dSubsampling
from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID

__all__ = ["CTCModel", "add_sos_eos", "identity_cmvn_stats"]


def identity_cmvn_stats(dim: int) -> np.ndarray:
    """Kaldi CMVN stats (2, dim + 1) that normalise nothing (mean 0, variance 1)."""
    stats = np.zeros((2, dim + 1))
    stats[0, -1] = 1.0
    stats[1, :-1] = 1.0
    return stats


def add_sos_eos(targets: torch.Tensor, target_lens: torch.Tensor, sos_eos: int = SOS_EOS_ID,
                ignore_id: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input and output sequences from padded targets.

    Args:
        targets: (B, U) token ids, padded with any value past ``target_lens``.
        target_lens: (B,) valid tokens.
        sos_eos: the ``<sos/eos>`` id (2).
        ignore_id: value of the padded output positions.

    Returns:
        ``ys_in`` (B, U + 1) = ``[sos, y_1 … y_n]`` padded with ``sos_eos`` (a valid id for the
        embedding; causal decoders never look at it), and ``ys_out`` (B, U + 1) =
        ``[y_1 … y_n, eos]`` padded with ``ignore_id``.
    """
    b, u = targets.shape
    pos = torch.arange(u + 1, device=targets.device)[None, :]
    lens = target_lens.to(targets.device)[:, None]
    body = torch.cat([targets, targets.new_full((b, 1), sos_eos)], dim=1)
    ys_out = torch.where(pos < lens, body, torch.full_like(body, ignore_id))
    ys_out = torch.where(pos == lens, torch.full_like(body, sos_eos), ys_out)
    shifted = torch.cat([targets.new_full((b, 1), sos_eos), targets], dim=1)
    ys_in = torch.where(pos <= lens, shifted, torch.full_like(shifted, sos_eos))
    return ys_in, ys_out


class CTCModel(nn.Module, abc.ABC):
    """Base of the neural families: front end + ``encoder_forward`` + CTC (Graves et al., 2006),
    optionally + an attention decoder (hybrid CTC/attention, Watanabe et al., 2017).

    Args:
        input_dim: feature dimension F.
        vocab_size: output vocabulary V including the CTC blank at id 0 and ``<sos/eos>`` at 2.
        encoder_dim: D, the width of ``encoder_forward``'s output.
        specaug: keyword arguments of :class:`SpecAugment`, or None to disable it.
        cmvn_stats: Kaldi global CMVN stats (2, F + 1); None starts with identity
            normalisation (a checkpoint restores the trained values).
        decoder: None for a CTC-only model, or a plain spec
            ``{"type": "transformer" | "lstm", **kwargs}`` given to
            :func:`asrkit.models.modules.decoder.build_decoder` (``vocab_size`` and the encoder
            width are filled in). A plain dict rather than a Hydra ``_target_``: the decoder's
            sizes depend on the model's, and Hydra would instantiate a nested ``_target_``
            before the model exists.
        ctc_weight: λ in ``loss = λ · ctc + (1 - λ) · att``, in [0, 1]. Must be 1.0 without a
            decoder; 0.0 trains the decoder alone (the CTC head is then untrained, and its loss
            is still reported, computed without gradient).
        lsm_weight: label smoothing ε of the decoder's cross-entropy, in [0, 1). PyTorch's
            ``label_smoothing`` (ε spread over all V classes, the target included); ESPnet's
            ``LabelSmoothingLoss`` spreads it over the V - 1 others, a negligible difference.
        interctc_layers: encoder layers (1-based) whose output gets an intermediate CTC loss
            (module docstring); () for none. Only families that call :meth:`intermediate`
            support it (Conformer, Transformer).
        interctc_weight: weight of the intermediate CTC losses within the CTC term, in [0, 1).
        self_condition: feed the intermediate posteriors back into the encoder (self-
            conditioned CTC); needs ``interctc_layers``.

    Raises:
        ValueError: on ``ctc_weight`` outside [0, 1], ``ctc_weight != 1`` without a decoder,
            ``lsm_weight`` outside [0, 1), a bad decoder spec (see ``build_decoder``),
            ``interctc_weight`` outside [0, 1), ``interctc_weight > 0`` or ``self_condition``
            without ``interctc_layers``, or a layer number < 1.
    """

    def __init__(self, input_dim: int, vocab_size: int, encoder_dim: int,
                 specaug: dict | None = None, cmvn_stats: np.ndarray | None = None,
                 decoder: Mapping[str, Any] | None = None, ctc_weight: float = 1.0,
                 lsm_weight: float = 0.1, interctc_layers: Sequence[int] = (),
                 interctc_weight: float = 0.0, self_condition: bool = False):
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if decoder is None and ctc_weight != 1.0:
            raise ValueError(f"ctc_weight={ctc_weight} needs an attention decoder; set "
                             "model.decoder (see conf/model/*.yaml) or ctc_weight=1.0")
        if not 0.0 <= lsm_weight < 1.0:
            raise ValueError(f"lsm_weight must be in [0, 1), got {lsm_weight}")
        stats = identity_cmvn_stats(input_dim) if cmvn_stats is None else cmvn_stats
        self.normalize = GlobalCMVN(stats)
        self.specaug = SpecAugment(**specaug) if specaug else None
        self.ctc_out = nn.Linear(encoder_dim, vocab_size)
        self.ctc_loss = nn.CTCLoss(blank=BLANK_ID, reduction="sum", zero_infinity=True)
        self.ctc_weight = float(ctc_weight)
        self.lsm_weight = float(lsm_weight)
        # created after ctc_out and registered only when configured, so a CTC-only model has
        # exactly the parameters, state_dict keys and initial values it always had
        self.decoder = (build_decoder(decoder, vocab_size, encoder_dim)
                        if decoder is not None else None)
        self.interctc_layers = tuple(int(i) for i in (interctc_layers or ()))
        if not 0.0 <= interctc_weight < 1.0:
            raise ValueError(f"interctc_weight must be in [0, 1), got {interctc_weight}")
        if (interctc_weight > 0 or self_condition) and not self.interctc_layers:
            raise ValueError("interctc_weight / self_condition need interctc_layers (encoder "
                             "layers, 1-based, e.g. [6] of 12)")
        if any(i < 1 for i in self.interctc_layers):
            raise ValueError(f"interctc_layers are 1-based layer numbers, got "
                             f"{list(self.interctc_layers)}")
        self.interctc_weight = float(interctc_weight)
        # registered only when asked for: other models keep their state_dict keys
        self.cond_proj = nn.Linear(vocab_size, encoder_dim) if self_condition else None
        self._inter: list[torch.Tensor] = []  # (B, T', V) log-posteriors of the last encode

    def intermediate(self, x: torch.Tensor, layer: int, *, time_first: bool = False,
                     norm: nn.Module | None = None) -> torch.Tensor:
        """Called by a family after encoder layer ``layer`` (1-based) with its output ``x``
        (``(B, T', D)``, or ``(T', B, D)`` with ``time_first``): at an ``interctc_layers``
        layer, keeps (in training mode) the CTC log-posteriors of ``norm(x)`` for the loss and,
        with ``self_condition``, returns ``x + Linear(softmax(logits))``; else ``x``
        unchanged."""
        if layer not in self.interctc_layers:
            return x
        logits = self.ctc_out(norm(x) if norm is not None else x)
        if self.training:  # only training adds the intermediate losses (no memory kept in eval)
            lp = logits.float().log_softmax(-1)
            self._inter.append(lp.transpose(0, 1) if time_first else lp)
        if self.cond_proj is not None:
            x = x + self.cond_proj(logits.softmax(-1))
        return x

    def check_interctc_layers(self, num_layers: int) -> None:
        """Raise ValueError when an ``interctc_layers`` entry is past the encoder's
        ``num_layers`` (a family calls this once it knows its depth)."""
        bad = [i for i in self.interctc_layers if i > num_layers]
        if bad:
            raise ValueError(f"interctc_layers {bad} past the encoder's {num_layers} layers")

    @property
    def has_decoder(self) -> bool:
        """True when the model has an attention decoder (hybrid CTC/attention)."""
        return self.decoder is not None

    @abc.abstractmethod
    def encoder_forward(self, x: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Family-specific encoder: (B, T, F) normalised features → (B, T', D), lengths (B,)."""

    def encoder_frame_stride(self) -> tuple[int, int]:
        """``(n_in, n_out)``: every ``n_in`` input frames (10 ms) make ``n_out`` encoder frames,
        and an input window that starts at input frame ``k · n_in`` yields, from its first
        encoder frame on, the encoder frames of the whole utterance from ``k · n_out`` on (up
        to the context the encoder sees), as unpadded strided convolutions do.

        This default covers the shared front end in ``self.subsample``:
        :class:`~asrkit.models.modules.subsampling.Conv2dSubsampling` gives ``(factor, 1)``, None
        (no subsampling) ``(1, 1)``. A family with another front end overrides this and
        :meth:`encoder_output_lengths`.

        Raises:
            TypeError: a subclass with another front end that does not override this
                (a broken family class, not a missing feature: every family in asrkit
                has ``subsample`` or overrides both methods).
        """
        if not hasattr(self, "subsample"):
            raise TypeError(f"{type(self).__name__} does not say how its encoder "
                                      "subsamples time (encoder_frame_stride)")
        if self.subsample is None:
            return 1, 1
        if isinstance(self.subsample, Conv2dSubsampling):
            return self.subsample.stride, 1
        raise TypeError(f"{type(self).__name__}: unknown front end "
                                  f"{type(self.subsample).__name__}")

    def encoder_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B,) of utterances of ``lengths`` (B,) input frames, as
        :meth:`encoder_forward` returns them (at least 1; for ×4
        :class:`~asrkit.models.modules.subsampling.Conv2dSubsampling`
        ``((T - 1) // 2 - 1) // 2``; ``T`` without subsampling).

        Raises:
            TypeError: as :meth:`encoder_frame_stride`.
        """
        if self.encoder_frame_stride() == (1, 1):
            return lengths.clone()
        return self.subsample.output_lengths(lengths).clamp(min=1)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """CMVN → SpecAugment (training only) → encoder.

        Args:
            feats: (B, T, F) raw features, 10 ms frames; feat_lens: (B,) valid frames.

        Returns:
            Encoder output (B, T', D) and its lengths (B,).
        """
        x = self.normalize(feats)
        if self.specaug is not None:
            x = self.specaug(x, feat_lens)
        self._inter = []
        return self.encoder_forward(x, feat_lens)

    def ctc_log_probs(self, feats: torch.Tensor, feat_lens: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log posteriors (B, T', V) in float32 and their lengths (B,)."""
        enc, lens = self.encode(feats, feat_lens)
        return self.ctc_log_probs_from_encoder(enc), lens

    def ctc_log_probs_from_encoder(self, enc: torch.Tensor) -> torch.Tensor:
        """CTC log posteriors (B, T', V) in float32 for encoder output (B, T', D)."""
        return self.ctc_out(enc).float().log_softmax(-1)

    def ctc_loss_from_encoder(self, enc: torch.Tensor, enc_lens: torch.Tensor,
                              targets: torch.Tensor, target_lens: torch.Tensor) -> torch.Tensor:
        """Summed CTC loss / B for encoder output (B, T', D) and targets (B, U) padded."""
        log_probs = self.ctc_log_probs_from_encoder(enc)
        loss = self.ctc_loss(log_probs.transpose(0, 1), targets, enc_lens, target_lens)
        return loss / enc.size(0)

    def attention_loss_from_encoder(self, enc: torch.Tensor, enc_lens: torch.Tensor,
                                    targets: torch.Tensor, target_lens: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Label-smoothed decoder cross-entropy and token accuracy.

        The decoder reads ``[sos, y_1 … y_n]`` and is trained to emit ``[y_1 … y_n, eos]``
        (:func:`add_sos_eos`); padded positions are ignored.

        Args:
            enc: (B, T', D) encoder output; enc_lens: (B,).
            targets: (B, U) token ids padded with any value; target_lens: (B,).

        Returns:
            (loss, acc): the cross-entropy summed over tokens / B (ESPnet's
            ``normalize_length=False``), and the detached fraction of output tokens (eos
            included) whose argmax is right.

        Raises:
            RuntimeError: if the model has no decoder.
        """
        if self.decoder is None:
            raise RuntimeError("this model has no attention decoder (model.decoder is null)")
        ys_in, ys_out = add_sos_eos(targets, target_lens)
        logits = self.decoder(enc, enc_lens, ys_in).float()
        loss = F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=-1,
                               reduction="sum", label_smoothing=self.lsm_weight)
        valid = ys_out != -1
        correct = (logits.detach().argmax(-1) == ys_out) & valid
        acc = correct.sum().float() / valid.sum().clamp(min=1).float()
        return loss / enc.size(0), acc

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss averaged over the utterances of the batch.

        CTC-only: the CTC loss. Hybrid: ``ctc_weight * ctc + (1 - ctc_weight) * att``.

        Args:
            feats: (B, T, F) features; feat_lens: (B,).
            targets: (B, U) token ids padded with any value; target_lens: (B,).

        Returns:
            CTC-only: ``{"loss": scalar, "ctc": detached scalar}``. Hybrid: also
            ``"att"`` (detached decoder loss) and ``"acc"`` (decoder token accuracy in [0, 1]).
        """
        enc, lens = self.encode(feats, feat_lens)
        return self.loss_from_encoder(enc, lens, targets, target_lens)

    def loss_from_encoder(self, enc: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor,
                          target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of :meth:`forward` for an encoder output (B, T', D) with lengths (B,)
        (lets evaluation reuse one encoder pass for the loss and for decoding)."""
        extra: dict[str, torch.Tensor] = {}
        if self.decoder is None:
            loss = self._ctc_term(enc, lens, targets, target_lens, extra)
            return {"loss": loss, "ctc": loss.detach(), **extra}
        if self.ctc_weight > 0.0:
            ctc = self._ctc_term(enc, lens, targets, target_lens, extra)
        else:
            with torch.no_grad():
                ctc = self._ctc_term(enc, lens, targets, target_lens, extra)
        att, acc = self.attention_loss_from_encoder(enc, lens, targets, target_lens)
        if self.ctc_weight == 1.0:
            loss = ctc
        elif self.ctc_weight == 0.0:
            loss = att
        else:
            loss = self.ctc_weight * ctc + (1.0 - self.ctc_weight) * att
        return {"loss": loss, "ctc": ctc.detach(), "att": att.detach(), "acc": acc, **extra}

    def _ctc_term(self, enc: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor,
                  target_lens: torch.Tensor, extra: dict) -> torch.Tensor:
        """The CTC loss, mixed with the intermediate CTC losses of the last :meth:`encode`
        when there are any (``extra["interctc"]`` gets their mean, detached)."""
        ctc = self.ctc_loss_from_encoder(enc, lens, targets, target_lens)
        if not self._inter or self.interctc_weight == 0.0:
            return ctc
        inter = torch.stack([
            self.ctc_loss(lp.transpose(0, 1), targets, lens, target_lens) / enc.size(0)
            for lp in self._inter]).mean()
        extra["interctc"] = inter.detach()
        return (1.0 - self.interctc_weight) * ctc + self.interctc_weight * inter
