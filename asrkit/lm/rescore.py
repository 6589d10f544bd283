"""N-best rescoring with a language model: a large pretrained causal LM (Hugging Face
``transformers``, e.g. GPT-2 or a Llama-family model saved in a local directory) or an ARPA
n-gram.

Each hypothesis of an ``nbest`` file (:mod:`asrkit.decode.nbest`) gets::

    new score = decoder score + lm_weight * log P_lm(text) + length_bonus * words

and the best new score per utterance is the rescored 1-best (second-pass rescoring as in
Kaldi's ``lmrescore`` and ESPnet's n-best rescoring; with large pretrained LMs e.g. Salazar
et al., 2020, "Masked Language Model Scoring", and Udagawa et al., 2022, "Effect and analysis
of large-scale language model rescoring on competitive ASR systems"). ``log P_lm(text)`` is the
natural-log probability of the whole sentence including its end: for a causal LM the sum of
``log p(token_i | <bos>, token_<i)`` over the text's tokens and the end-of-text token, so
hypotheses of different lengths compare fairly.

LM specs: ``hf:DIR`` loads ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local
directory (``save_pretrained`` layout) with ``local_files_only=True`` and the hub offline, so
nothing is ever downloaded at run time; ``ngram:FILE`` reads an ARPA file; ``asrkit:EXP``
loads a neural LM trained with ``asrkit train-lm model=lstm_lm|transformer_lm``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from asrkit.decode.nbest import NBest
from asrkit.train.checkpoint import pick_device

__all__ = ["HFCausalLM", "NgramSentenceLM", "load_sentence_lm", "rescore_nbest"]

logger = logging.getLogger(__name__)

_CASES = ("keep", "lower", "upper")


def _recase(text: str, case: str) -> str:
    return text.lower() if case == "lower" else text.upper() if case == "upper" else text


class HFCausalLM:
    """Sentence log-probabilities from a Hugging Face causal LM in a local directory.

    Args:
        path: the model directory (``config.json``, weights, tokenizer files).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda:0``...
        case: ``keep``, ``lower`` or ``upper``: recase hypotheses before scoring (ASR corpora
            are often upper case, pretrained LMs are trained on natural text).

    Raises:
        ImportError: ``transformers`` is not installed (``pip install -e '.[llm]'`` in the asrkit checkout).
        FileNotFoundError: ``path`` is not a directory.
        ValueError: bad ``case``.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto",
                 case: str = "keep") -> None:
        if case not in _CASES:
            raise ValueError(f"case must be one of {_CASES}, got {case!r}")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory; expected a causal LM saved "
                                    "with save_pretrained (nothing is downloaded)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("rescoring with hf: LMs needs transformers: pip install -e "
                              "'.[llm]' in the asrkit checkout") from e
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.eval().to(self.device)
        self.case = case
        tok = self.tokenizer
        self.bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.eos = tok.eos_token_id
        if self.bos is None or self.eos is None:
            raise ValueError(f"{path}: the tokenizer has neither a BOS nor an EOS token; "
                             "expected a causal LM tokenizer")
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos

    @torch.inference_mode()
    def score(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """Natural-log ``P(text)`` of each text: ``<bos> tokens <eos>``, batched (padded on
        the right, padding masked out).

        Args:
            texts: sentences (words separated by spaces; may be empty).
            batch_size: sentences per forward pass.

        Returns:
            One float per text.
        """
        out: list[float] = []
        for i in range(0, len(texts), batch_size):
            chunk = [_recase(t, self.case) for t in texts[i:i + batch_size]]
            ids = [[self.bos, *self.tokenizer(t, add_special_tokens=False)["input_ids"],
                    self.eos] for t in chunk]
            width = max(len(x) for x in ids)
            inp = torch.full((len(ids), width), self.pad, dtype=torch.long)
            mask = torch.zeros(len(ids), width, dtype=torch.long)
            for b, x in enumerate(ids):
                inp[b, :len(x)] = torch.tensor(x)
                mask[b, :len(x)] = 1
            inp, mask = inp.to(self.device), mask.to(self.device)
            logits = self.model(input_ids=inp, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1).gather(2, inp[:, 1:, None])[..., 0]
            out += (logp * mask[:, 1:]).sum(1).tolist()
        return out


class NgramSentenceLM:
    """Sentence log-probabilities (natural log, ``<s> ... </s>``) from an ARPA n-gram.

    Args:
        path: the ARPA file (``.gz`` allowed).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from asrkit.lm.ngram import read_arpa

        self.lm = read_arpa(path)

    def score(self, texts: Sequence[str], batch_size: int = 0) -> list[float]:
        """Natural-log ``P(text </s>)`` of each text (``batch_size`` is ignored)."""
        return [self.lm.score_sentence(t) for t in texts]


def load_sentence_lm(spec: str, *, device: str = "auto", case: str = "keep"):
    """An LM from a spec: ``hf:DIR`` (:class:`HFCausalLM`), ``ngram:FILE``
    (:class:`NgramSentenceLM`) or ``asrkit:EXP_DIR`` (an ``asrkit train-lm`` neural LM,
    :class:`asrkit.lm.neural.NeuralSentenceLM`).

    Raises:
        ValueError: an unknown prefix.
    """
    kind, _, path = spec.partition(":")
    if kind == "hf" and path:
        return HFCausalLM(path, device=device, case=case)
    if kind == "ngram" and path:
        return NgramSentenceLM(path)
    if kind == "asrkit" and path:
        from asrkit.lm.neural import NeuralSentenceLM

        return NeuralSentenceLM(path, device=device)
    raise ValueError(f"unknown LM spec {spec!r}; expected hf:DIR, ngram:ARPA_FILE or "
                     "asrkit:EXP_DIR")


def rescore_nbest(nbest: NBest, lm, *, lm_weight: float = 0.5, length_bonus: float = 0.0,
                  batch_size: int = 16) -> tuple[dict[str, str], NBest, dict]:
    """Rescore every utterance's list (formula in the module docstring).

    Args:
        nbest: ``{utt: [(text, decoder score), ...]}`` (:func:`asrkit.decode.nbest.read_nbest`).
        lm: an object with ``score(texts, batch_size) -> [log P]``.
        lm_weight: weight of the LM log-probability.
        length_bonus: added per word.
        batch_size: hypotheses per LM batch (all utterances' hypotheses are batched together).

    Returns:
        ``(best, rescored, info)``: the new 1-best text per utterance, the lists re-ranked
        with their new scores, and ``{"hypotheses", "lm_seconds", "changed"}`` (utterances
        whose 1-best changed).
    """
    flat = [(u, t, s) for u, hyps in nbest.items() for t, s in hyps]
    start = time.perf_counter()
    lm_scores = lm.score([t for _, t, _ in flat], batch_size=batch_size)
    seconds = time.perf_counter() - start
    rescored: NBest = {}
    for (u, t, s), ls in zip(flat, lm_scores):
        rescored.setdefault(u, []).append(
            (t, s + lm_weight * ls + length_bonus * len(t.split())))
    best, changed = {}, 0
    for u, hyps in rescored.items():
        hyps.sort(key=lambda h: -h[1])
        best[u] = hyps[0][0]
        changed += best[u] != nbest[u][0][0]
    logger.info("rescored %d hypotheses of %d utterances in %.2f s; %d 1-best changed",
                len(flat), len(rescored), seconds, changed)
    return best, rescored, {"hypotheses": len(flat), "lm_seconds": round(seconds, 3),
                            "changed": changed}
