"""Speech-LLM: a speech encoder, a projector and a decoder-only LLM (``model=speech_llm``).

The SLAM-ASR design (Ma et al., 2024, "An embarrassingly simple approach for LLM with strong
ASR capacity") as icefall's Zipformer + Qwen2 recipe also uses it:

* **encoder**: a trained asrkit acoustic model (``encoder_exp``: our Conformer, Transformer,
  CNN, LSTM or ``pretrained_encoder`` experiment; its own CMVN and checkpoint), or a
  self-supervised wav2vec 2.0 / HuBERT encoder from local weights (``encoder_conf``, e.g. a
  Hugging Face directory; raw-waveform features), its ``encode`` output ``(B, T', D)``,
  frozen by default;
* **projector**: ``stack`` consecutive encoder frames concatenated (``(B, T'/k, k·D)``, a
  k-fold lower frame rate) then ``Linear → ReLU → Linear`` to the LLM's embedding width;
* **LLM**: any Hugging Face causal LM in a local directory (``llm``: asrkit's own
  ``train-lm model=gpt`` export, GPT-2, Llama, Qwen2...), its weights frozen, with LoRA
  adapters (Hu et al., 2022; the ``peft`` library) when ``lora`` is set.

The LLM reads ``[prompt] [speech embeddings] [BOS]`` and is trained to write the transcript
then EOS (cross-entropy on those tokens only; the loss is summed over tokens and divided by
the batch size, per utterance like the other families). The prompt is text in the LLM's
tokenizer (``prompt``). Training batches are padded on the right, generation batches on the
left (positions follow the attention mask), so each utterance sees the same positions either
way. Recognition is ``transformers``' ``generate``: beam search over a batch of utterances
with the KV cache (:meth:`SpeechLLM.recognize`).

Checkpoints hold only what training changes (the projector, the LoRA weights, and the encoder
when it is trained): the frozen LLM and encoder are read again from ``llm`` and
``encoder_exp`` / ``encoder_conf.pretrained``, which must stay where they were (decoding needs
them too).

Targets are the LLM tokenizer's ids (:class:`asrkit.lm.hf.HFTextTokenizer`, with
``text_case: lower`` for an LLM trained on natural text: hypotheses are upper-cased back, as
Kaldi-style references are).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["SpeechLLM"]

logger = logging.getLogger(__name__)


class SpeechLLM(nn.Module):
    """Encoder → projector → LLM with LoRA (module docstring).

    Args:
        input_dim: feature dimension F (must be the encoder experiment's).
        vocab_size: the LLM tokenizer's size (given by the trainer; checked).
        llm: local Hugging Face causal LM directory.
        encoder_exp: asrkit acoustic-model experiment whose encoder is used; or
        encoder_conf: a self-supervised speech encoder read from local weights instead:
            :class:`asrkit.models.pretrained.PretrainedEncoderCTC` arguments (``arch``,
            ``arch_config``, ``pretrained``: a torchaudio state dict or a Hugging Face
            wav2vec 2.0 / HuBERT directory, required; raw-waveform features, F = 160).
        cmvn_stats: unused (the encoder normalises with its own training statistics).
        stack: encoder frames per LLM input embedding (k).
        projector_hidden: the projector's hidden width.
        lora: None (the LLM frozen whole: only the projector trains, icefall's first stage)
            or ``{"r", "alpha", "dropout", "target_modules"}`` (``target_modules`` None:
            ``peft``'s default for the architecture: GPT-2 ``c_attn``, Llama/Qwen2
            ``q_proj``/``v_proj``).
        freeze_encoder: keep the encoder's weights (and its eval mode) fixed.
        prompt: text the LLM reads before the speech.
        text_case: ``keep`` or ``lower`` (module docstring).
        max_new_tokens: longest transcript generated (LLM tokens).
        ctc_weight: must be 1.0 (no CTC/attention interpolation here; present so configs and
            tools that read it find it).
        family: must be ``"speech_llm"`` (the config key the trainer and decoders dispatch on).
        pretrained: initial trainable weights from an earlier speech-LLM experiment (its last
            epoch checkpoint) or checkpoint file, e.g. a projector-only first stage (icefall's
            stage-wise training): the weights it has are loaded (a LoRA the file lacks starts
            new). Not read when resuming or decoding (the trainer sets it to None then).

    Raises:
        FileNotFoundError: no ``llm`` or ``encoder_exp`` (or their files).
        ValueError: neither or both of ``encoder_exp`` and ``encoder_conf``, or
            ``encoder_conf`` without ``pretrained``.
        ImportError: ``transformers`` (or, with ``lora``, ``peft``) not installed.
        ValueError: ``input_dim`` or ``vocab_size`` not matching, ``stack < 1``, a bad
            ``text_case`` or ``family``, an LLM tokenizer without EOS.
    """

    family = "speech_llm"
    has_decoder = False

    def __init__(self, input_dim: int, vocab_size: int, llm: str | os.PathLike,
                 encoder_exp: str | os.PathLike | None = None,
                 encoder_conf: Mapping[str, Any] | None = None, cmvn_stats=None, stack: int = 4,
                 projector_hidden: int = 1024, lora: Mapping[str, Any] | None = None,
                 freeze_encoder: bool = True, prompt: str = "Transcribe the speech:",
                 text_case: str = "keep", max_new_tokens: int = 200,
                 ctc_weight: float = 1.0, family: str = "speech_llm",
                 pretrained: str | os.PathLike | None = None) -> None:
        super().__init__()
        if family != "speech_llm":
            raise ValueError(f"family must be speech_llm, got {family!r}")
        from asrkit.exp.checkpoint import load_model
        from asrkit.lm.hf import add_lora, load_hf_causal_lm

        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        if text_case not in ("keep", "lower"):
            raise ValueError(f"text_case must be keep or lower, got {text_case!r}")
        if (encoder_exp is None) == (encoder_conf is None):
            raise ValueError("give one speech encoder: model.encoder_exp (an asrkit "
                             "experiment) or model.encoder_conf (pretrained local weights)")
        if encoder_conf is not None:
            from asrkit.models.pretrained import PretrainedEncoderCTC

            if not encoder_conf.get("pretrained"):
                raise ValueError("model.encoder_conf.pretrained: the speech encoder's weights "
                                 "(a torchaudio state dict or a Hugging Face model dir)")
            self.encoder = PretrainedEncoderCTC(input_dim, 3, **encoder_conf).eval()
        else:
            self.encoder, enc_cfg = load_model(encoder_exp, device="cpu")
            enc_dim = int(enc_cfg["model_dims"]["input_dim"])
            if enc_dim != input_dim:
                raise ValueError(f"the features have {input_dim} dims, the encoder "
                                 f"{encoder_exp} was trained on {enc_dim}")
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
        base, tok = load_hf_causal_lm(llm)
        if len(tok) != vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is not {llm}'s tokenizer size {len(tok)}")
        if tok.eos_token_id is None:
            raise ValueError(f"{llm}: the tokenizer has no EOS token")
        self.eos = int(tok.eos_token_id)
        self.sep = int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
        self.pad = int(tok.pad_token_id if tok.pad_token_id is not None else self.eos)
        base.requires_grad_(False)
        if lora:
            base = add_lora(base, lora)
        self.llm = base
        width = self.llm.get_input_embeddings().embedding_dim
        enc_width = self._encoder_width(input_dim)
        self.stack = int(stack)
        self.projector = nn.Sequential(nn.Linear(enc_width * stack, projector_hidden),
                                       nn.ReLU(), nn.Linear(projector_hidden, width))
        self.register_buffer("prompt_ids", torch.tensor(
            tok(prompt, add_special_tokens=False)["input_ids"], dtype=torch.long),
            persistent=False)
        self.max_new_tokens = int(max_new_tokens)
        self.ctc_weight = float(ctc_weight)
        if pretrained is not None:
            self._load_pretrained(pretrained)

    def _load_pretrained(self, path: str | os.PathLike) -> None:
        from pathlib import Path

        from asrkit.exp.checkpoint import load_checkpoint, select_checkpoints

        p = Path(path)
        ck = select_checkpoints(p)[-1] if p.is_dir() else p
        state = load_checkpoint(ck)["model"]
        res = super().load_state_dict(state, strict=False)
        if res.unexpected_keys:
            raise ValueError(f"{ck}: weights this model does not have: "
                             f"{res.unexpected_keys[:5]}")
        loaded = len(state)
        logger.info("initialised %d tensors from %s (new: %s)", loaded, ck,
                    sorted({k.split(".")[0] for k in res.missing_keys
                            if k not in self._frozen_keys()}) or "none")

    def _encoder_width(self, input_dim: int) -> int:
        with torch.no_grad():
            x = torch.zeros(1, 200, input_dim)
            enc, _ = self.encoder.encode(x, torch.tensor([200]))
        return int(enc.shape[-1])

    # -- what stays out of checkpoints ------------------------------------------------------
    def _frozen_keys(self, prefix: str = "") -> set[str]:
        keys = {prefix + n for n, p in self.named_parameters(remove_duplicate=False)
                if not p.requires_grad}  # tied weights (lm_head = embedding) under each name
        if self.freeze_encoder:
            keys |= {prefix + "encoder." + n for n, _ in self.encoder.named_buffers()}
        keys |= {prefix + "llm." + n for n, _ in self.llm.named_buffers()}
        return keys

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """The trainable weights only (module docstring): the projector, LoRA, and the
        encoder when it trains."""
        sd = super().state_dict(*args, destination=destination, prefix=prefix,
                                keep_vars=keep_vars)
        for k in self._frozen_keys(prefix):
            sd.pop(k, None)
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False):
        """Load trainable weights; the frozen ones are the ``llm`` / ``encoder_exp`` files'.

        Raises:
            RuntimeError: with ``strict``, a trainable weight missing or an unknown key.
        """
        res = super().load_state_dict(state_dict, strict=False, assign=assign)
        frozen = self._frozen_keys()
        missing = [k for k in res.missing_keys if k not in frozen]
        if strict and (missing or res.unexpected_keys):
            raise RuntimeError(f"speech_llm checkpoint: missing {missing[:5]}, unexpected "
                               f"{res.unexpected_keys[:5]}")
        return res

    def param_groups(self) -> list[dict[str, Any]]:
        """One optimiser group of the trainable parameters (the trainer's hook)."""
        return [{"name": "trainable", "params": [p for p in self.parameters()
                                                 if p.requires_grad]}]

    def train(self, mode: bool = True) -> SpeechLLM:
        """Train mode, except a frozen encoder, which stays in eval mode (no dropout,
        SpecAugment or batch-norm updates)."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    # -- the forward passes -----------------------------------------------------------------
    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's output ``(B, T', D)`` and lengths ``(B,)`` for features
        ``(B, T, F)`` (10 ms frames)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return self.encoder.encode(feats, feat_lens)

    def ctc_log_probs_from_encoder(self, enc: torch.Tensor) -> None:
        """None: the speech-LLM has no CTC output (decoders pass the encoder output to
        :meth:`recognize_from_encoder`)."""
        return

    def speech_embeds(self, enc: torch.Tensor, lens: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack ``k`` frames and project: ``(B, T', D)`` → ``(B, ceil(T'/k), H)`` and
        lengths ``ceil(lens / k)``."""
        b, t, d = enc.shape
        pad = (-t) % self.stack
        if pad:
            enc = torch.cat([enc, enc.new_zeros(b, pad, d)], dim=1)
        x = enc.reshape(b, (t + pad) // self.stack, d * self.stack)
        return self.projector(x), (lens + self.stack - 1) // self.stack

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss.

        Args:
            feats: ``(B, T, F)``; feat_lens: ``(B,)``.
            targets: ``(B, U)`` LLM token ids (padded); target_lens: ``(B,)``.

        Returns:
            ``{"loss": summed token cross-entropy / B, "acc": token accuracy}``.
        """
        enc, lens = self.encode(feats, feat_lens)
        return self.loss_from_encoder(enc, lens, targets, target_lens)

    def loss_from_encoder(self, enc: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor,
                          target_lens: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`forward` from the encoder's output."""
        speech, slens = self.speech_embeds(enc, lens)
        dev = speech.device
        p = self._embed(self.prompt_ids.to(dev))
        sep = self._embed(torch.tensor([self.sep], device=dev))
        rows, labels = [], []
        for i in range(speech.shape[0]):
            y = targets[i, :int(target_lens[i])].to(dev)
            ye = self._embed(y)
            rows.append(torch.cat([p, speech[i, :int(slens[i])], sep, ye]))
            n_ctx = p.shape[0] + int(slens[i]) + 1  # prompt, speech, sep
            lab = torch.full((rows[-1].shape[0] + 1,), -100, dtype=torch.long, device=dev)
            lab[n_ctx:n_ctx + len(y)] = y
            lab[n_ctx + len(y)] = self.eos
            labels.append(lab)
        # + 1: room for the EOS label, predicted from the last transcript token
        width = max(r.shape[0] for r in rows) + 1
        x = speech.new_zeros(len(rows), width, speech.shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        lab = torch.full((len(rows), width), -100, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            x[i, :r.shape[0]] = r
            mask[i, :r.shape[0]] = 1
            lab[i, :labels[i].shape[0]] = labels[i]
        logits = self.llm(inputs_embeds=x, attention_mask=mask).logits
        pred, gold = logits[:, :-1].float(), lab[:, 1:]
        loss = nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), gold.reshape(-1),
                                           ignore_index=-100, reduction="sum")
        scored = gold != -100
        acc = (pred.argmax(-1)[scored] == gold[scored]).float().mean()
        return {"loss": loss / len(rows), "acc": acc.detach()}

    @torch.no_grad()
    def recognize_from_encoder(self, enc: torch.Tensor, lens: torch.Tensor, *,
                               beam: int = 1, nbest: int = 1,
                               max_new_tokens: int | None = None
                               ) -> list[list[tuple[list[int], float]]]:
        """Beam search (``transformers`` ``generate``: batched, KV cache, the default length
        penalty 1.0, i.e. scores divided by length) for a batch of utterances.

        Args:
            enc: ``(B, T', D)`` encoder output; lens: ``(B,)``.
            beam: beam size (1: greedy).
            nbest: hypotheses returned per utterance (<= ``beam``).
            max_new_tokens: longest output (default the model's).

        Returns:
            Per utterance, ``nbest`` pairs ``(token ids without EOS, score)``, best first
            (greedy: score 0.0).

        Raises:
            ValueError: ``nbest > beam``.
        """
        if nbest > beam:
            raise ValueError(f"nbest ({nbest}) must be <= beam ({beam})")
        speech, slens = self.speech_embeds(enc, lens)
        dev = speech.device
        p = self._embed(self.prompt_ids.to(dev))
        sep = self._embed(torch.tensor([self.sep], device=dev))
        rows = [torch.cat([p, speech[i, :int(slens[i])], sep]) for i in range(len(speech))]
        width = max(r.shape[0] for r in rows)
        x = speech.new_zeros(len(rows), width, speech.shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):  # left padding for generation
            x[i, width - r.shape[0]:] = r
            mask[i, width - r.shape[0]:] = 1
        out = self.llm.generate(
            inputs_embeds=x, attention_mask=mask, num_beams=beam, num_return_sequences=nbest,
            max_new_tokens=max_new_tokens or self.max_new_tokens, eos_token_id=self.eos,
            pad_token_id=self.pad, do_sample=False, return_dict_in_generate=True,
            output_scores=beam > 1)
        seqs = out.sequences.tolist()
        scores = out.sequences_scores.tolist() if beam > 1 else [0.0] * len(seqs)
        res = []
        for i in range(len(rows)):
            hyps = []
            for j in range(i * nbest, (i + 1) * nbest):
                ids = seqs[j]
                if self.eos in ids:
                    ids = ids[:ids.index(self.eos)]
                hyps.append((ids, float(scores[j])))
            res.append(hyps)
        return res

    def recognize(self, feats: torch.Tensor, feat_lens: torch.Tensor, *, beam: int = 1,
                  nbest: int = 1) -> list[list[tuple[list[int], float]]]:
        """:meth:`recognize_from_encoder` from features ``(B, T, F)``."""
        enc, lens = self.encode(feats, feat_lens)
        return self.recognize_from_encoder(enc, lens, beam=beam, nbest=nbest)
