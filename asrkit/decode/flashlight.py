"""Flashlight's CTC beam search decoder as an optional, fast backend beside
:func:`asrkit.decode.ctc.ctc_prefix_beam_search`.

The search itself is Flashlight's C++ beam search decoder (Kahn et al., 2022, "Flashlight:
Enabling innovation in tools for machine learning", ICML, arXiv:2201.12465), reached through
torchaudio's :func:`torchaudio.models.decoder.ctc_decoder` (see torchaudio's "CTC Decoder"
documentation). It needs the ``flashlight-text`` wheel (``pip install -e '.[flashlight]'`` in the asrkit checkout); the
PyPI wheel has KenLM compiled in, so an ARPA or KenLM binary file can be used as LM without the
``kenlm`` Python package.

Two modes, as in Flashlight:

* **lexicon-free** (``lexicon=None``): any token sequence. With ``log_add=True`` (the default
  here; Flashlight's own default is ``False``) the decoder keeps, for every token prefix, the
  summed probability of its alignments ending in blank and in its last token and merges them
  at the end: the same quantities as prefix beam search, so with beams wide enough to keep
  every prefix the two give the same n-best and scores. A word n-gram is used through
  :class:`asrkit.lm.fusion.WordNgramScorer` wrapped as torchaudio's ``CTCDecoderLM``: Flashlight
  queries the LM on every emitted token, and the scorer finds word boundaries itself from
  sentencepiece's ``▁`` pieces, so no word-separator token is needed. KenLM cannot be used in
  this mode: Flashlight would score every *token* as a word, which needs a token-level LM.
* **lexicon** (``lexicon=`` words or a lexicon file): only words of the lexicon, each spelled
  in the tokenizer's pieces, can be emitted (Flashlight builds a trie of the spellings); the
  word LM is scored when a word's last piece is emitted, with the trie's best unigram score as
  look-ahead (smearing) before that. The LM is KenLM (an ARPA/binary path; fast, C++) or an
  :class:`asrkit.lm.ngram.NgramLM` wrapped as ``CTCDecoderLM``.

Scores are natural-log, as in :mod:`asrkit.decode.ctc`:
``log P_ctc + lm_weight * (log P_lm(words) + word_bonus * |words|)``. KenLM returns log10, so
its weight is multiplied by ``ln 10``; Flashlight's ``word_score`` (outside the LM weight) is
``lm_weight * word_bonus``.

What cannot agree exactly with :func:`~asrkit.decode.ctc.ctc_prefix_beam_search`:

* **Beam units.** Flashlight's ``beam`` counts (prefix, ends-in-blank) states, ours counts
  prefixes; Flashlight's ``beam_size_token`` picks the most probable tokens of a frame *blank
  included* and does not always score the repeat of a prefix's last token (ours does);
  Flashlight also prunes by ``beam_threshold``. So with narrow beams the two prune different
  hypotheses, and a hypothesis's score — its CTC probability summed over the alignments the
  beam kept, a lower bound of the exact one — differs a little between them; with wider beams
  both converge to the exact sum.
* **Lexicon mode** searches a smaller, different space: (a) only lexicon words, spelled as the
  tokenizer spells them; (b) Flashlight's lexicon decoder returns to the trie root when a word's
  last piece is emitted and from there scores a repeated frame as the *silence* token, not as a
  repeat of that piece, so with word-piece lexicons (no ``|`` word-separator token) the last
  piece of every word occupies exactly one frame: alignments where it spans several frames are
  lost, and where pieces last several frames the 1-best can change (a piece held over two
  frames can come out as two words); (c) at word boundaries the silence token (``<sos/eos>``
  here, whose CTC posterior is about 0) may be emitted and is dropped from the output; (d) when
  no hypothesis ends on a word boundary, Flashlight ends mid-word and returns the partial word's
  pieces. The LM scores of a given word sequence are the same as ours; the 1-best agrees on
  spiky posteriors (each piece one frame, the usual shape of a trained CTC model) over
  in-lexicon words.
* Float32 emissions and LM scores (Flashlight's LM interface returns float): scores differ from
  ours at about 1e-6 relative.

Shapes: ``B`` batch, ``T`` frames, ``V`` vocabulary (blank included).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID

__all__ = ["FlashlightCTCDecoder", "flashlight_available", "kenlm_available"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = ("the flashlight CTC decoder needs the flashlight-text package: "
                 "pip install -e '.[flashlight]' in the asrkit checkout (or pip install "
                 "flashlight-text)")

LexiconLike = str | os.PathLike | Iterable[str] | Mapping[str, Sequence[str]]
"""A lexicon: a file (``WORD`` or ``WORD piece piece ...`` per line), an iterable of words
(spelled with the tokenizer) or a mapping ``word -> pieces``."""


def flashlight_available() -> bool:
    """Whether ``flashlight-text`` (Flashlight's decoder bindings) is installed."""
    try:
        return importlib.util.find_spec("flashlight.lib.text") is not None
    except ImportError:  # the parent package "flashlight" is missing
        return False


def kenlm_available() -> bool:
    """Whether the installed ``flashlight-text`` has KenLM compiled in (the PyPI wheel does)."""
    if not flashlight_available():
        return False
    return importlib.util.find_spec(
        "flashlight.lib.text.flashlight_lib_text_decoder_kenlm") is not None


def _torchaudio_decoder():
    """torchaudio's decoder module, or ImportError with the install hint."""
    if not flashlight_available():
        raise ImportError(_INSTALL_HINT)
    import torchaudio.models.decoder as tad

    return tad


@contextlib.contextmanager
def _stderr_to_log(what: str):
    """Send what C++ code writes to file descriptor 2 (KenLM's loading progress bar) to the log
    at DEBUG level instead of the terminal: the library never prints."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("%s: %s", what, text)


class _MemoNgram:
    """The scoring API of an :class:`asrkit.lm.ngram.NgramLM` (``start_state``, ``score``,
    ``final_score``) with its answers kept until :meth:`clear` (called per utterance).
    Flashlight asks the same (context, word) question for many hypotheses: about ten times per
    distinct question on BPE posteriors, and NgramLM's Python lookup dominates the search."""

    def __init__(self, lm) -> None:
        self.lm = lm
        self.clear()

    def clear(self) -> None:
        """Forget the kept answers."""
        self._score: dict = {}
        self._final: dict = {}

    def start_state(self):
        """The LM's sentence-start state."""
        return self.lm.start_state()

    def score(self, state, word: str):
        """``(log P(word | state), next state)``, natural log."""
        hit = self._score.get((state, word))
        if hit is None:
            hit = self._score[state, word] = self.lm.score(state, word)
        return hit

    def final_score(self, state) -> float:
        """``log P(</s> | state)``, natural log."""
        hit = self._final.get(state)
        if hit is None:
            hit = self._final[state] = self.lm.final_score(state)
        return hit


@functools.cache
def _lm_classes():
    """Our ``CTCDecoderLM`` subclasses, built on first use (torchaudio's base class can only be
    imported when flashlight-text is installed).

    Flashlight merges hypotheses whose LM states are the same object, and its own LMs (ZeroLM,
    KenLM) create one state per history with ``state.child(index)``. These wrappers do the same,
    so a merged pair always shares its whole history — exact, as in prefix beam search — and
    keep the Python-side information of every state in a dict that :meth:`start` (called at the
    start of every utterance) clears.
    """
    tad = _torchaudio_decoder()

    class WordLM(tad.CTCDecoderLM):
        """A word n-gram for lexicon mode: ``index`` is a word of ``words`` (Flashlight's word
        dictionary order); natural-log scores from a :class:`_MemoNgram`."""

        def __init__(self, lm: _MemoNgram, words: Sequence[str]) -> None:
            tad.CTCDecoderLM.__init__(self)
            self.lm, self.words = lm, list(words)
            self._ngram_state: dict = {}

        def start(self, start_with_nothing: bool):
            state = tad.CTCDecoderLMState()
            self.lm.clear()
            self._ngram_state = {state: self.lm.start_state()}
            return state

        def score(self, state, index: int):
            logp, nxt = self.lm.score(self._ngram_state[state], self.words[index])
            child = state.child(index)
            self._ngram_state.setdefault(child, nxt)
            return child, logp

        def finish(self, state):
            child = state.child(-1)
            self._ngram_state.setdefault(child, ())
            return child, self.lm.final_score(self._ngram_state[state])

    class PieceWordLM(tad.CTCDecoderLM):
        """A word n-gram over sentencepiece pieces for lexicon-free mode: ``index`` is a token
        id; the words, the bonus and ``</s>`` are scored by ``scorer``, a
        :class:`asrkit.lm.fusion.WordNgramScorer` (the scorer asrkit's own search uses) over
        the :class:`_MemoNgram` ``lm``."""

        def __init__(self, scorer, lm: _MemoNgram) -> None:
            tad.CTCDecoderLM.__init__(self)
            self.scorer, self.lm = scorer, lm
            self._prefix: dict = {}
            self._ext: dict = {}

        def start(self, start_with_nothing: bool):
            state = tad.CTCDecoderLMState()
            self.lm.clear()
            self.scorer.reset()
            self._prefix, self._ext = {state: ()}, {}
            return state

        def score(self, state, index: int):
            hit = self._ext.get((state, index))  # asked again on every frame the state lives
            if hit is None:
                prefix = self._prefix[state]
                child = state.child(index)
                self._prefix[child] = (*prefix, index)
                hit = self._ext[state, index] = (child, self.scorer(prefix, index))
            return hit

        def finish(self, state):
            return state, self.scorer.final(self._prefix[state])

    return WordLM, PieceWordLM


def _read_lexicon(path: Path) -> list[tuple[str, list[str] | None, str]]:
    """``(word, pieces or None, "file:line")`` per non-empty line of a lexicon / word-list
    file."""
    if not path.is_file():
        raise FileNotFoundError(f"lexicon file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            fields = line.split()
            if fields:
                out.append((fields[0], fields[1:] or None, f"{path}:{no}"))
    if not out:
        raise ValueError(f"{path}: empty lexicon")
    return out


class FlashlightCTCDecoder:
    """CTC beam search with Flashlight's decoder (torchaudio ``ctc_decoder``), returning what
    :func:`asrkit.decode.ctc.ctc_prefix_beam_search_batch` returns. See the module docstring for
    the modes and for what agrees exactly with asrkit's prefix beam search.

    Args:
        pieces: the text of every token id (``pieces[i]`` for id ``i``), e.g.
            ``tok.pieces(list(range(tok.vocab_size)))``; unique; ``pieces[blank]`` is the blank.
        lexicon: None for lexicon-free decoding, else the words that may be emitted: a file
            (one ``WORD`` or ``WORD piece piece ...`` per line), an iterable of words or a
            mapping ``word -> list of pieces``. Words without a spelling are spelled with
            ``tokenizer`` (sentencepiece's segmentation of the word); a word whose spelling
            holds ``<unk>`` is left out with a warning. Several spellings of a word (repeated
            file lines) are allowed; Flashlight then sums over them.
        tokenizer: a :class:`asrkit.text.tokenizer.Tokenizer`; needed only to spell words.
        lm: None, a word n-gram as an ARPA path (or, with KenLM, a KenLM binary path), or an
            :class:`asrkit.lm.ngram.NgramLM`.
        lm_backend: ``"auto"`` (KenLM for a path in lexicon mode when compiled in, else
            asrkit's NgramLM), ``"kenlm"`` (lexicon mode only; KenLM needs order >= 2) or
            ``"asrkit"``.
        beam: Flashlight's ``beam_size``: hypotheses, i.e. (prefix, ends-in-blank) states, kept
            per frame; about twice as many as the prefixes of asrkit's ``beam``.
        beam_size_token: tokens (blank included) tried per frame, the most probable first;
            None tries all. asrkit's ``token_topk=k`` corresponds to ``k + 1``.
        beam_threshold: hypotheses more than this (nats) below the frame's best are dropped.
        lm_weight: weight of the LM's natural-log probabilities.
        word_bonus: added per word inside the LM weight (asrkit's ``--word-bonus``); only with
            an LM.
        nbest: hypotheses returned per utterance (at most ``beam``).
        log_add: sum alignment probabilities when hypotheses merge (prefix-search scores, the
            default); False keeps the best alignment only (Viterbi; torchaudio's default).
        blank: the blank id.
        sil_token: lexicon mode only: the token Flashlight uses as silence between words; it
            must not appear in a spelling and should have a CTC posterior of about 0. Default
            ``<sos/eos>`` when it is in ``pieces``. Lexicon-free mode uses the blank (exact).
        unk_word: the LM's unknown word (lexicon mode).

    Attributes:
        pieces: the token list.
        lexicon_free: True without a lexicon.
        lm_backend: ``"kenlm"``, ``"asrkit"`` or None (no LM): what ``"auto"`` resolved to.
        words: lexicon mode: the words Flashlight may emit (``unk_word`` last); else None.

    Raises:
        ImportError: flashlight-text is not installed (the message names the install command).
        FileNotFoundError: a missing lexicon or LM file.
        ValueError: empty or duplicated ``pieces``, ``blank`` out of range, a bad option value,
            a lexicon word spelled with a piece that is not a token (file and line named), a
            lexicon that needs ``tokenizer``, KenLM asked for in lexicon-free mode or not
            compiled in, or no usable ``sil_token``.
    """

    def __init__(self, pieces: Sequence[str], *, lexicon: LexiconLike | None = None,
                 tokenizer=None, lm=None, lm_backend: str = "auto", beam: int = 10,
                 beam_size_token: int | None = None, beam_threshold: float = 50.0,
                 lm_weight: float = 0.5, word_bonus: float = 0.0, nbest: int = 1,
                 log_add: bool = True, blank: int = BLANK_ID, sil_token: str | None = None,
                 unk_word: str = "<unk>") -> None:
        tad = _torchaudio_decoder()
        self.pieces = list(pieces)
        if not self.pieces:
            raise ValueError("pieces is empty; expected the tokenizer's vocabulary")
        if len(set(self.pieces)) != len(self.pieces):
            seen: set[str] = set()
            dup = next(p for p in self.pieces if p in seen or seen.add(p))
            raise ValueError(f"token {dup!r} appears twice in pieces; ids must be unique")
        if not 0 <= blank < len(self.pieces):
            raise ValueError(f"blank id {blank} out of range for {len(self.pieces)} tokens")
        if beam < 1 or nbest < 1 or (beam_size_token is not None and beam_size_token < 1):
            raise ValueError(f"beam, nbest and beam_size_token must be >= 1, got {beam}, "
                             f"{nbest}, {beam_size_token}")
        if lm_backend not in ("auto", "kenlm", "asrkit"):
            raise ValueError(f"lm_backend must be 'auto', 'kenlm' or 'asrkit', got {lm_backend!r}")
        self.blank = blank
        self.nbest = nbest
        self.lexicon_free = lexicon is None
        self.lm_backend: str | None = None
        self.words: list[str] | None = None
        use_lm = lm is not None
        self._drop = {blank}
        # decode() reads every final hypothesis from Flashlight's decoder itself; the n-best is
        # cut after mapping and de-duplication
        common = {"beam_size": beam, "beam_size_token": beam_size_token,
                  "beam_threshold": beam_threshold, "log_add": log_add,
                  "blank_token": self.pieces[blank], "unk_word": unk_word}

        if self.lexicon_free:
            if sil_token is not None:
                raise ValueError("sil_token is for lexicon mode; lexicon-free decoding uses the "
                                 "blank as Flashlight's silence, which keeps it exact")
            fl_lm = None
            if use_lm:
                if lm_backend == "kenlm":
                    raise ValueError(
                        "KenLM works in lexicon mode only: in lexicon-free mode Flashlight "
                        "scores every token as an LM word; pass lexicon= or lm_backend='asrkit'")
                from asrkit.lm.fusion import WordNgramScorer

                _, piece_lm_cls = _lm_classes()
                memo = _MemoNgram(self._ngram(lm))
                fl_lm = piece_lm_cls(WordNgramScorer(memo, self.pieces, word_bonus=word_bonus),
                                     memo)
                self.lm_backend = "asrkit"
            self._decoder = tad.ctc_decoder(
                lexicon=None, tokens=self.pieces, lm=fl_lm, lm_weight=lm_weight if use_lm else 0.0,
                sil_token=self.pieces[blank], **common)
            return

        if sil_token is None:
            if SOS_EOS_ID < len(self.pieces) and self.pieces[SOS_EOS_ID] == "<sos/eos>":
                sil_token = "<sos/eos>"
            else:
                raise ValueError("lexicon mode needs sil_token=: a token never used in a "
                                 "spelling whose posterior is about 0 (asrkit uses <sos/eos>)")
        if sil_token not in self.pieces or sil_token == self.pieces[blank]:
            raise ValueError(f"sil_token {sil_token!r} must be a token of pieces other than "
                             "the blank")
        self._drop.add(self.pieces.index(sil_token))
        entries = self._spell(lexicon, tokenizer, sil_token)
        words = list(dict.fromkeys(w for w, _ in entries))
        if unk_word not in words:
            words.append(unk_word)
        if use_lm:
            is_path = isinstance(lm, (str, os.PathLike))
            want_kenlm = lm_backend == "kenlm" or (lm_backend == "auto" and is_path
                                                   and kenlm_available())
            if want_kenlm and not kenlm_available():
                raise ValueError("lm_backend='kenlm' but the installed flashlight-text has no "
                                 "KenLM; use lm_backend='asrkit'")
            if want_kenlm and not is_path:
                raise ValueError("lm_backend='kenlm' needs an ARPA or KenLM binary path, "
                                 "not an NgramLM object")
            self.lm_backend = "kenlm" if want_kenlm else "asrkit"
        with tempfile.TemporaryDirectory(prefix="asrkit-flashlight-") as tmp:
            lex_path, dict_path = Path(tmp) / "lexicon.txt", Path(tmp) / "words.txt"
            lex_path.write_text("".join(f"{w} {' '.join(sp)}\n" for w, sp in entries),
                                encoding="utf-8")
            dict_path.write_text("".join(f"{w}\n" for w in words), encoding="utf-8")
            if self.lm_backend == "kenlm":
                if not Path(lm).is_file():
                    raise FileNotFoundError(f"LM file not found: {lm}")
                fl_lm, fl_weight = str(lm), lm_weight * math.log(10.0)  # KenLM gives log10
            elif self.lm_backend == "asrkit":
                word_lm_cls, _ = _lm_classes()
                fl_lm, fl_weight = word_lm_cls(_MemoNgram(self._ngram(lm)), words), lm_weight
            else:
                fl_lm, fl_weight = None, 0.0
            with _stderr_to_log(f"building the Flashlight decoder (LM {lm})"):
                self._decoder = tad.ctc_decoder(
                    lexicon=str(lex_path), tokens=self.pieces, lm=fl_lm, lm_dict=str(dict_path),
                    lm_weight=fl_weight, word_score=lm_weight * word_bonus if use_lm else 0.0,
                    sil_token=sil_token, **common)
        self.words = words

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> FlashlightCTCDecoder:
        """Build from an :class:`asrkit.text.tokenizer.Tokenizer` (its pieces, and it spells
        lexicon words); ``kwargs`` as for the constructor."""
        pieces = tokenizer.pieces(list(range(tokenizer.vocab_size)))
        return cls(pieces, tokenizer=tokenizer, **kwargs)

    @staticmethod
    def _ngram(lm):
        """An NgramLM from an NgramLM or an ARPA path."""
        if not isinstance(lm, (str, os.PathLike)):
            return lm
        from asrkit.lm.ngram import read_arpa

        if not Path(lm).is_file():
            raise FileNotFoundError(f"LM file not found: {lm}")
        return read_arpa(lm)

    def _spell(self, lexicon: LexiconLike, tokenizer, sil_token: str
               ) -> list[tuple[str, list[str]]]:
        """``(word, pieces)`` lexicon entries, checked against the token list."""
        if isinstance(lexicon, (str, os.PathLike)):
            raw = _read_lexicon(Path(lexicon))
        elif isinstance(lexicon, Mapping):
            raw = [(w, list(sp), f"lexicon entry {w!r}") for w, sp in lexicon.items()]
        else:
            raw = [(w, None, f"word {w!r}") for w in lexicon]
        if not raw:
            raise ValueError("empty lexicon")
        known = set(self.pieces)
        out = []
        for word, spelling, where in raw:
            if not word or any(ch.isspace() for ch in word):
                raise ValueError(f"{where}: word {word!r} is empty or contains whitespace")
            if spelling is None:
                if tokenizer is None:
                    raise ValueError(f"{where}: no spelling given; pass tokenizer= (or use "
                                     "FlashlightCTCDecoder.from_tokenizer) to spell words")
                spelling = tokenizer.pieces(tokenizer.encode(word))
                if "<unk>" in spelling:
                    logger.warning("%s: left out, the tokenizer spells it with <unk>: %s",
                                   where, " ".join(spelling))
                    continue
            if not spelling:
                raise ValueError(f"{where}: empty spelling")
            bad = next((p for p in spelling if p not in known), None)
            if bad is not None:
                raise ValueError(f"{where}: piece {bad!r} is not in the token list")
            if sil_token in spelling or self.pieces[self.blank] in spelling:
                raise ValueError(f"{where}: a spelling may not use the silence token "
                                 f"{sil_token!r} or the blank")
            out.append((word, spelling))
        if not out:
            raise ValueError("no lexicon word has a usable spelling")
        return out

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor
               ) -> list[list[tuple[list[int], float]]]:
        """Decode a padded batch.

        Args:
            log_probs: (B, T, V) CTC log posteriors (natural log; ``V == len(pieces)``); they
                are copied to a contiguous float32 CPU tensor if they are not one.
            lengths: (B,) valid frames of each utterance.

        Returns:
            Per utterance, up to ``nbest`` ``(token ids, score)`` pairs, best first, unique, in
            the tokenizer's ids without blanks (and without the silence token in lexicon mode);
            ``score`` in nats as in :func:`asrkit.decode.ctc.ctc_prefix_beam_search`. A
            zero-length utterance gives the empty hypothesis.

        Raises:
            ValueError: ``log_probs`` not 3-D or its V is not ``len(pieces)``, ``lengths`` not
                (B,) or a length outside ``0..T``.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
        if log_probs.size(2) != len(self.pieces):
            raise ValueError(f"log_probs have V={log_probs.size(2)} tokens but the decoder was "
                             f"built with {len(self.pieces)} pieces; use the acoustic model's "
                             "tokenizer")
        if lengths.shape != (log_probs.size(0),):
            raise ValueError(f"lengths must be ({log_probs.size(0)},), got {tuple(lengths.shape)}")
        lens = lengths.detach().to("cpu", torch.int64)
        if bool(((lens < 0) | (lens > log_probs.size(1))).any()):
            raise ValueError(f"lengths {lens.tolist()} outside 0..{log_probs.size(1)} frames")
        emissions = log_probs.detach().to("cpu", torch.float32).contiguous()
        _, frames, vocab = emissions.shape
        # Flashlight's own decoder object (torchaudio's CTCDecoder holds it as .decoder):
        # calling it directly skips torchaudio's per-hypothesis Python post-processing
        # (timesteps of every hypothesis), which costs as much as the search on short inputs.
        search = self._decoder.decoder
        out = []
        for b, n in enumerate(lens.tolist()):
            ptr = emissions.data_ptr() + emissions.element_size() * b * frames * vocab
            seen: set[tuple[int, ...]] = set()
            nbest = []
            for res in search.decode(ptr, n, vocab):  # sorted, best first
                ids = tuple(self._labels(res.tokens))
                if ids not in seen:
                    seen.add(ids)
                    nbest.append((list(ids), float(res.score)))
                    if len(nbest) == self.nbest:
                        break
            out.append(nbest)
        return out

    def _labels(self, path: Sequence[int]) -> list[int]:
        """Flashlight's per-frame token path (silence at both ends) -> CTC labels: merge
        repeats, then drop blanks and the silence token."""
        out, prev = [], None
        for token in path:
            if token != prev and token >= 0 and token not in self._drop:
                out.append(token)
            prev = token
        return out
