"""N-best rescoring with a language model: a large pretrained causal LM (Hugging Face
``transformers``, e.g. GPT-2 or a Llama-family model saved in a local directory) or an ARPA
n-gram.

Each hypothesis of an ``nbest`` file (:mod:`asrkit.decode.nbest`) gets::

    new score = decoder score + lm_weight * log P_lm(text) + length_bonus * words
                [- old_lm_weight * log P_old(text)]

(the bracketed term with ``--old-lm``: the first pass's LM taken out of the decoder score so
that the new LM replaces it, as Kaldi's ``lmrescore.sh`` does going from ``tgsmall`` to
``tglarge``/``fglarge``)
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

import gzip
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from asrkit.decode.nbest import NBest
from asrkit.exp.checkpoint import pick_device

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
        FileNotFoundError: ``path`` is not a directory or has no ``config.json``.
        ValueError: bad ``case``.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto",
                 case: str = "keep") -> None:
        if case not in _CASES:
            raise ValueError(f"case must be one of {_CASES}, got {case!r}")
        from asrkit.lm.hf import load_hf_causal_lm

        self.device = pick_device(device)
        self.model, self.tokenizer = load_hf_causal_lm(path)
        self.model.to(self.device)
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
    """Sentence log-probabilities (natural log, ``<s> ... </s>``) from an ARPA n-gram of any
    size.

    The model is not loaded whole: each :meth:`score` call streams the file once and keeps
    the 1-grams and only the n-grams its sentences need (:func:`asrkit.lm.ngram.read_arpa`
    with ``keep``), so a 4-gram of hundreds of millions of n-grams rescores an n-best list in
    the memory of its vocabulary (Kaldi's ``lmrescore_const_arpa.sh`` serves the same purpose
    with a memory-mapped ``G.carpa``). Scores are those of the whole model. A later call
    whose n-grams were all loaded before reuses the loaded part.

    Args:
        path: the ARPA file (``.gz`` allowed).

    Raises:
        asrkit.lm.ngram.ArpaError: on the first :meth:`score`, a missing or malformed file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lm = None
        self._vocab: frozenset[str] | None = None
        self._order = 0
        self._loaded: set[tuple[str, ...]] = set()

    def _header(self) -> None:
        """Order and 1-gram words, read from the start of the file."""
        from asrkit.lm.ngram import ArpaError, read_arpa

        if not self.path.is_file():
            raise ArpaError(self.path, None, "file not found")
        vocab, order, section = set(), 0, 0
        with self.path.open("rb") as f:
            opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
        with opener(self.path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("ngram ") and "=" in line:
                    order = max(order, int(line[6:].split("=")[0]))
                elif line == "\\1-grams:":
                    section = 1
                elif line.startswith("\\") and section:
                    break
                elif section and line:
                    fields = line.split()
                    if len(fields) >= 2:
                        vocab.add(fields[1])
        if not order or not vocab:  # let the full reader say what is wrong
            read_arpa(self.path, keep=set())
        self._vocab, self._order = frozenset(vocab), order

    def score(self, texts: Sequence[str], batch_size: int = 0) -> list[float]:
        """Natural-log ``P(text </s>)`` of each text (``batch_size`` is ignored)."""
        from asrkit.lm.ngram import UNK, ngrams_of_sentences, read_arpa

        if self._vocab is None:
            self._header()
        unk = next((u for u in (UNK, UNK.upper()) if u in self._vocab), None)
        mapped = [[w if w in self._vocab or unk is None else unk for w in t.split()]
                  for t in texts]
        need = ngrams_of_sentences(mapped, self._order)
        if self.lm is None or not need <= self._loaded:
            start = time.perf_counter()
            self._loaded = need | self._loaded
            self.lm = read_arpa(self.path, keep=self._loaded)
            logger.info("%s: loaded %s n-grams needed by %d sentences in %.1f s", self.path,
                        "/".join(str(c) for c in self.lm.counts), len(texts),
                        time.perf_counter() - start)
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
                  batch_size: int = 16, old_lm=None, old_lm_weight: float = 1.0
                  ) -> tuple[dict[str, str], NBest, dict]:
    """Rescore every utterance's list (formula in the module docstring).

    Args:
        nbest: ``{utt: [(text, decoder score), ...]}`` (:func:`asrkit.decode.nbest.read_nbest`).
        lm: an object with ``score(texts, batch_size) -> [log P]``.
        lm_weight: weight of the LM log-probability.
        length_bonus: added per word.
        batch_size: hypotheses per LM batch (all utterances' hypotheses are batched together).
        old_lm: the first pass's LM, whose score ``old_lm_weight * log P_old(text)`` is taken
            out of the decoder score so that ``lm`` replaces it rather than adding to it
            (Kaldi's ``lmrescore.sh``: old LM at scale -1, new at +1). For a WFST decode the
            n-best score is ``-(graph cost + acoustic scale * acoustic cost)`` and the graph
            cost holds ``-ln P_old`` at weight 1 (:mod:`asrkit.decode.gmm`), hence the
            default ``old_lm_weight`` of 1.0.
        old_lm_weight: weight of ``old_lm`` in the decoder score.

    Returns:
        ``(best, rescored, info)``: the new 1-best text per utterance, the lists re-ranked
        with their new scores, and ``{"hypotheses", "lm_seconds", "changed"}`` (utterances
        whose 1-best changed).
    """
    flat = [(u, t, s) for u, hyps in nbest.items() for t, s in hyps]
    start = time.perf_counter()
    texts = [t for _, t, _ in flat]
    lm_scores = lm.score(texts, batch_size=batch_size)
    old_scores = old_lm.score(texts, batch_size=batch_size) if old_lm is not None else None
    seconds = time.perf_counter() - start
    rescored: NBest = {}
    for i, ((u, t, s), ls) in enumerate(zip(flat, lm_scores)):
        new = s + lm_weight * ls + length_bonus * len(t.split())
        if old_scores is not None:
            new -= old_lm_weight * old_scores[i]
        rescored.setdefault(u, []).append((t, new))
    best, changed = {}, 0
    for u, hyps in rescored.items():
        hyps.sort(key=lambda h: -h[1])
        best[u] = hyps[0][0]
        changed += best[u] != nbest[u][0][0]
    logger.info("rescored %d hypotheses of %d utterances in %.2f s; %d 1-best changed",
                len(flat), len(rescored), seconds, changed)
    return best, rescored, {"hypotheses": len(flat), "lm_seconds": round(seconds, 3),
                            "changed": changed}
