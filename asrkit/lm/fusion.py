"""Shallow fusion of a word n-gram LM or a neural token LM into token-level searches (CTC
prefix beam search, attention and joint CTC/attention beam search).

Acoustic models emit sentencepiece pieces; a word starts at a piece that begins with ``▁``
(U+2581). :class:`WordNgramScorer` turns a word-level :class:`asrkit.lm.ngram.NgramLM` into
the search's :data:`asrkit.decode.ctc.PrefixScorer`: a word is scored when it is complete,
i.e. when the next word's first piece extends the prefix, and the last word plus ``</s>``
when the hypothesis ends (:meth:`WordNgramScorer.final`). Each scored word also adds
``word_bonus`` (an insertion reward, the usual counterweight to the LM's per-word cost). The
fused score of a hypothesis is (Gulcehre et al., 2015, "On using monolingual corpora in neural
machine translation", arXiv:1503.03535; Hannun et al., 2014)::

    log P_ctc(y) + lm_weight * (log P_lm(words(y)) + word_bonus * |words(y)|)

Scoring whole words after they end keeps the LM exact (no partial-word guesses) at the cost of
one word of delay in pruning; with word-piece units where most words are one piece (AN4's
BPE-150) the delay is one token.

Every scorer caches its state per prefix. ``rebase(prefix)`` (where ``can_rebase`` is true)
makes ``prefix`` the new empty prefix and forgets the rest of the cache: the CTC prefix beam
search calls it, on a long utterance, with the tokens all its hypotheses share
(:func:`asrkit.decode.ctc.ctc_prefix_beam_search`), so the cache and its keys stay small
however long the utterance.

:func:`fusion_scorer` builds the scorer for an LM path (ARPA over words or pieces, or an
``asrkit train-lm`` neural LM dir): the one place every decoder gets its LM from.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from asrkit.lm.ngram import LMState, NgramLM, read_arpa
from asrkit.text.tokenizer import SOS_EOS_ID, Tokenizer

__all__ = ["WORD_START", "CombinedScorer", "NeuralTokenScorer", "TokenNgramScorer", "WordNgramScorer",
           "fused_scorer", "fusion_scorer", "is_token_lm", "load_hf_token_lm"]

WORD_START = "\u2581"
"""Sentencepiece's word-start marker."""


class WordNgramScorer:
    """A word n-gram as a prefix scorer for token searches (see the module docstring).

    Args:
        lm: the word-level model (:func:`asrkit.lm.ngram.read_arpa`).
        pieces: the text of every token id (``pieces[i]`` for id ``i``; special tokens such
            as ``<blank>`` are never emitted by the search and may be anything).
        word_bonus: added (inside the LM weight) for every word scored.
        eos: the end-of-sentence token id (``<sos/eos>``, 2): label-synchronous searches
            (:mod:`asrkit.decode.attention`) end a hypothesis by asking for it, and get
            :meth:`final`'s score.

    Raises:
        ValueError: ``pieces`` is empty.
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], *, word_bonus: float = 0.0,
                 eos: int = SOS_EOS_ID) -> None:
        if not pieces:
            raise ValueError("pieces is empty; expected the tokenizer's vocabulary")
        self.lm = lm
        self.word_bonus = float(word_bonus)
        self.eos = eos
        self._starts = [p.startswith(WORD_START) for p in pieces]
        self._text = [p.lstrip(WORD_START) if s else p
                      for p, s in zip(pieces, self._starts)]
        # prefix -> (LM state after the complete words, text of the word in progress)
        self._states: dict[tuple[int, ...], tuple[LMState, str]] = {
            (): (lm.start_state(), "")}

    def _state(self, prefix: tuple[int, ...]) -> tuple[LMState, str]:
        st = self._states.get(prefix)
        if st is None:  # not built incrementally (e.g. a new search): build from the start
            st = self._states[()]
            for i, tok in enumerate(prefix):
                st = self._advance(st, tok)[1]
                self._states[prefix[:i + 1]] = st
        return st

    def _advance(self, st: tuple[LMState, str], token: int) -> tuple[float, tuple[LMState, str]]:
        state, word = st
        score = 0.0
        if self._starts[token] and word:
            lp, state = self.lm.score(state, word)
            score = lp + self.word_bonus
            word = ""
        return score, (state, word + self._text[token])

    def __call__(self, prefix: tuple[int, ...], token: int) -> float:
        """The LM score (natural log, bonus included) that ``token`` adds to ``prefix``: the
        completed previous word's when ``token`` starts a word, else 0; for ``eos``, the
        score of :meth:`final`."""
        if token == self.eos:
            return self.final(prefix)
        score, st = self._advance(self._state(prefix), token)
        self._states[(*prefix, token)] = st
        return score

    def final(self, prefix: tuple[int, ...]) -> float:
        """The score that ends ``prefix``: its last word (with the bonus) and ``</s>``."""
        state, word = self._state(prefix)
        score = 0.0
        if word:
            lp, state = self.lm.score(state, word)
            score = lp + self.word_bonus
        return score + self.lm.final_score(state)

    def words(self, prefix: tuple[int, ...]) -> list[str]:
        """The words ``prefix`` spells (for tests and logs)."""
        out, word = [], ""
        for tok in prefix:
            if self._starts[tok] and word:
                out.append(word)
                word = ""
            word += self._text[tok]
        return out + ([word] if word else [])

    def reset(self) -> None:
        """Forget cached prefixes (call between utterances to bound memory)."""
        self._states = {(): (self.lm.start_state(), "")}

    can_rebase = True

    def rebase(self, prefix: Sequence[int]) -> None:
        """Make ``prefix`` the empty prefix and forget every other (module docstring)."""
        self._states = {(): self._state(tuple(prefix))}


def is_token_lm(lm: NgramLM) -> bool:
    """True when ``lm`` is over sentencepiece pieces (``asrkit train-lm ngram --tokenizer``):
    some 1-gram starts with ``▁``, which word-level text never holds."""
    return any(w.startswith(WORD_START) for w in lm.vocab)


class TokenNgramScorer:
    """A token-level n-gram (over the acoustic model's sentencepiece pieces, ``asrkit train-lm
    ngram --tokenizer``) as a prefix scorer: every token is scored as it is emitted,
    ``log P(piece | previous pieces)``, and ``</s>`` at the end (:meth:`final`). Unlike
    :class:`WordNgramScorer` there is no word delay, and it is open-vocabulary (any piece
    sequence gets a probability).

    Args:
        lm: the token-level model.
        pieces: the text of every token id (``pieces[i]`` for id ``i``).
        eos: the ``<sos/eos>`` id, answered with :meth:`final`'s score.

    Raises:
        ValueError: ``pieces`` is empty.
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], *, eos: int = SOS_EOS_ID) -> None:
        if not pieces:
            raise ValueError("pieces is empty; expected the tokenizer's vocabulary")
        self.lm = lm
        self.pieces = list(pieces)
        self.eos = eos
        self.reset()

    def reset(self) -> None:
        """Forget cached prefixes (call between utterances to bound memory)."""
        self._states: dict[tuple[int, ...], LMState] = {(): self.lm.start_state()}

    def _state(self, prefix: tuple[int, ...]) -> LMState:
        st = self._states.get(prefix)
        if st is None:
            st = self._state(prefix[:-1])
            st = self.lm.score(st, self.pieces[prefix[-1]])[1]
            self._states[prefix] = st
        return st

    def __call__(self, prefix: tuple[int, ...], token: int) -> float:
        """``log P(token | prefix)`` (natural log); for ``eos``, :meth:`final`'s score."""
        if token == self.eos:
            return self.final(prefix)
        lp, st = self.lm.score(self._state(prefix), self.pieces[token])
        self._states[(*prefix, token)] = st
        return lp

    def final(self, prefix: tuple[int, ...]) -> float:
        """``log P(</s> | prefix)``."""
        return self.lm.final_score(self._state(prefix))

    can_rebase = True

    def rebase(self, prefix: Sequence[int]) -> None:
        """Make ``prefix`` the empty prefix and forget every other (module docstring)."""
        self._states = {(): self._state(tuple(prefix))}


class NeuralTokenScorer:
    """A neural token LM (``asrkit train-lm``, the acoustic model's tokenizer) as a prefix
    scorer: ``log P(token | <sos> prefix)``, and ``log P(<eos> | <sos> prefix)`` at the end
    (:meth:`final`). The LM's distribution after each prefix is computed once and cached: an
    LSTM continues from its parent prefix's state; a Hugging Face model (GPT, ``hf:DIR``)
    continues from the key/value cache of its nearest cached ancestor (the last
    ``kv_cache_size`` prefixes' caches are kept, least recently used dropped), so extending a
    hypothesis by one token costs one token's forward pass; another Transformer re-reads the
    prefix.

    Args:
        model: a :class:`asrkit.models.lm.TokenLM` in eval mode.
        kv_cache_size: prefixes whose key/value caches are kept (Hugging Face models).
    """

    def __init__(self, model, kv_cache_size: int = 512) -> None:
        self.model = model
        self._lstm = hasattr(model, "lstm")
        self._hf = hasattr(model, "hf")
        self.kv_cache_size = int(kv_cache_size)
        self.reset()

    def reset(self) -> None:
        """Forget cached prefixes (call between utterances to bound memory)."""
        self._cache: dict[tuple[int, ...], tuple[list[float], object]] = {}
        self._kv: OrderedDict[tuple[int, ...], list] = OrderedDict()

    def _hf_logp(self, prefix: tuple[int, ...], dev) -> torch.Tensor:
        from transformers import DynamicCache

        seq = (SOS_EOS_ID, *prefix)
        cut = len(prefix)  # the longest cached ancestor: seq[:cut] has its cache
        while cut > 0 and prefix[:cut - 1] not in self._kv:
            cut -= 1
        parent = prefix[:cut - 1] if cut > 0 else None
        cache = DynamicCache(ddp_cache_data=self._kv[parent]) if parent is not None else None
        if parent is not None:
            self._kv.move_to_end(parent)
        ids = torch.tensor([seq[cut:]], device=dev)
        out = self.model.hf(input_ids=ids, cache=cache, use_cache=True)
        self._kv[prefix] = [(layer.keys, layer.values) for layer in out.cache.layers]
        while len(self._kv) > self.kv_cache_size:
            self._kv.popitem(last=False)
        return out.logits[0, -1].float().log_softmax(-1)

    def _dist(self, prefix: tuple[int, ...]) -> list[float]:
        hit = self._cache.get(prefix)
        if hit is not None:
            return hit[0]
        dev = next(self.model.parameters()).device
        state = None
        with torch.inference_mode():
            if self._lstm:
                if prefix:
                    self._dist(prefix[:-1])
                    state = self._cache[prefix[:-1]][1]
                    tok = prefix[-1]
                else:
                    state, tok = None, SOS_EOS_ID
                emb = self.model.embed(torch.tensor([[tok]], device=dev))
                y, state = self.model.lstm(emb, state)
                logp = self.model.out(y[0, -1]).float().log_softmax(-1)
            elif self._hf:
                logp = self._hf_logp(prefix, dev)
            else:
                ids = torch.tensor([[SOS_EOS_ID, *prefix]], device=dev)
                logp = self.model(ids)[0, -1].float().log_softmax(-1)
        row = logp.tolist()
        self._cache[prefix] = (row, state)
        return row

    def __call__(self, prefix: tuple[int, ...], token: int) -> float:
        """``log P(token | <sos> prefix)``."""
        return self._dist(prefix)[token]

    def final(self, prefix: tuple[int, ...]) -> float:
        """``log P(<eos> | <sos> prefix)``."""
        return self._dist(prefix)[SOS_EOS_ID]

    @property
    def can_rebase(self) -> bool:
        """True for an LSTM LM (its state summarises the prefix); a Transformer LM rereads
        the whole prefix, so it cannot continue from a shorter one."""
        return self._lstm

    def rebase(self, prefix: Sequence[int]) -> None:
        """Make ``prefix`` the empty prefix and forget every other (module docstring).

        Raises:
            ValueError: a Transformer LM (:attr:`can_rebase` is false).
        """
        if not self._lstm:
            raise ValueError("a Transformer LM rereads the whole prefix; it cannot rebase")
        prefix = tuple(prefix)
        self._dist(prefix)
        self._cache = {(): self._cache[prefix]}


class CombinedScorer:
    """Several LMs fused at once (e.g. a word n-gram and a neural token LM): the score of a
    token is ``Σ_i w_i · scorer_i(prefix, token)``, and likewise for :meth:`final`. Use it
    with ``lm_weight = 1`` in the search, the weights being inside.

    Args:
        parts: ``(scorer, weight)`` pairs; every scorer has ``__call__``, ``final`` and
            ``reset`` (the scorers of this module).

    Raises:
        ValueError: ``parts`` is empty.
    """

    def __init__(self, parts: Sequence[tuple[object, float]]) -> None:
        if not parts:
            raise ValueError("CombinedScorer needs at least one (scorer, weight) pair")
        self.parts = [(sc, float(w)) for sc, w in parts]

    def __call__(self, prefix: tuple[int, ...], token: int) -> float:
        """``Σ_i w_i · scorer_i(prefix, token)``."""
        return sum(w * sc(prefix, token) for sc, w in self.parts if w)

    def final(self, prefix: tuple[int, ...]) -> float:
        """``Σ_i w_i · scorer_i.final(prefix)``."""
        return sum(w * sc.final(prefix) for sc, w in self.parts if w)

    def reset(self) -> None:
        """Reset every scorer's cache."""
        for sc, _ in self.parts:
            sc.reset()

    @property
    def can_rebase(self) -> bool:
        """True when every scorer can rebase."""
        return all(getattr(sc, "can_rebase", False) for sc, _ in self.parts)

    def rebase(self, prefix: Sequence[int]) -> None:
        """Rebase every scorer (module docstring)."""
        for sc, _ in self.parts:
            sc.rebase(prefix)


def load_hf_token_lm(path: str | os.PathLike, tok: Tokenizer, device: torch.device):
    """A Hugging Face causal LM in a local directory (e.g. ``asrkit train-lm model=gpt``'s
    ``EXP/hf``) as a :class:`asrkit.models.lm.HFTokenLM`, after checking that its tokenizer
    is ``tok`` (the same piece for every id) and its BOS is ``<sos/eos>``: token-level
    fusion needs the acoustic model's ids.

    Raises:
        ImportError: no ``transformers``.
        FileNotFoundError: ``path`` is not a directory or has no ``config.json``.
        ValueError: another vocabulary or BOS id.
    """
    from asrkit.lm.hf import load_hf_causal_lm
    from asrkit.models.lm import HFTokenLM

    model, hf_tok = load_hf_causal_lm(path)
    ids = list(range(tok.vocab_size))
    if len(hf_tok) != tok.vocab_size or hf_tok.convert_ids_to_tokens(ids) != tok.pieces(ids):
        raise ValueError(f"{path}: its tokenizer ({len(hf_tok)} tokens) is not the acoustic "
                         f"model's ({tok.vocab_size}, {tok.model_path}); token-level fusion "
                         "needs the same pieces (asrkit train-lm model=gpt with that "
                         "tokenizer), n-best rescoring (asrkit rescore --lm hf:DIR) does not")
    if hf_tok.bos_token_id != SOS_EOS_ID:
        raise ValueError(f"{path}: BOS id {hf_tok.bos_token_id}, expected <sos/eos> "
                         f"({SOS_EOS_ID})")
    return HFTokenLM(model).to(device).eval()


def fusion_scorer(lm: str | os.PathLike, tok: Tokenizer, device: torch.device, *,
                  word_bonus: float = 0.0):
    """The shallow-fusion scorer for an LM path, the one place scorers are built (``asrkit
    decode --lm``, :class:`asrkit.decode.search.CtcModelSearch`): an ``asrkit train-lm``
    neural LM directory or ``hf:DIR``, a Hugging Face causal LM with the acoustic model's
    tokenizer (:func:`load_hf_token_lm`; both :class:`NeuralTokenScorer`), or an ARPA file
    over the tokenizer's pieces (:class:`TokenNgramScorer`) or over words
    (:class:`WordNgramScorer`, with ``word_bonus``).

    Raises:
        ValueError: a neural LM with another vocabulary size or tokenizer, or ``word_bonus``
            with a token n-gram.
        FileNotFoundError, asrkit.lm.ngram.ArpaError: unreadable files.
    """
    if str(lm).startswith("hf:"):
        return NeuralTokenScorer(load_hf_token_lm(str(lm)[3:], tok, device))
    if Path(lm).is_dir():
        from asrkit.lm.neural import load_lm

        lm_model, lm_tok = load_lm(lm, device)
        if lm_tok.vocab_size != tok.vocab_size:
            raise ValueError(f"the LM {lm} has {lm_tok.vocab_size} tokens, the acoustic "
                             f"model {tok.vocab_size}; train it with the same tokenizer")
        return NeuralTokenScorer(lm_model)
    ngram = read_arpa(lm)
    pieces = tok.pieces(list(range(tok.vocab_size)))
    if is_token_lm(ngram):  # asrkit train-lm ngram --tokenizer
        if word_bonus:
            raise ValueError(f"word_bonus applies to word n-grams; {lm} is over tokens")
        return TokenNgramScorer(ngram, pieces)
    return WordNgramScorer(ngram, pieces, word_bonus=word_bonus)


def fused_scorer(lm: str | os.PathLike, tok: Tokenizer, device: torch.device, *,
                 lm_weight: float = 0.5, word_bonus: float = 0.0,
                 extra_lms: Sequence[tuple[str | os.PathLike, float]] = ()):
    """The scorer and weight a beam search fuses: ``lm`` alone (:func:`fusion_scorer`,
    weight ``lm_weight``), or with ``extra_lms`` a :class:`CombinedScorer` of all of them
    carrying the weights itself (weight 1.0).

    Returns:
        ``(scorer, weight)``: the search adds ``weight · scorer(...)``.

    Raises:
        As :func:`fusion_scorer`, for any of the LMs.
    """
    scorer = fusion_scorer(lm, tok, device, word_bonus=word_bonus)
    if not extra_lms:
        return scorer, lm_weight
    return CombinedScorer([(scorer, lm_weight)]
                          + [(fusion_scorer(p, tok, device), float(w)) for p, w in extra_lms]
                          ), 1.0
