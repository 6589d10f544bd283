"""WFST decoding of CTC outputs with a ``TLG`` graph (EESEN: Miao, Gowayyed and Metze, 2015,
"EESEN: End-to-end speech recognition using deep RNN models and WFST-based decoding", ASRU,
arXiv:1507.08240).

A CTC model emits, per frame, a distribution over the tokenizer's ``V`` ids (``<blank>`` 0,
``<unk>`` 1, ``<sos/eos>`` 2, sentencepiece pieces from 3; :mod:`asrkit.text.tokenizer`). The
decoding graph is built as EESEN does::

    TLG = T o min(det(L o G)), disambiguation symbols then removed

* ``T`` (:func:`make_ctc_token_fst`): frame labels -> tokens; collapses repeated tokens and
  drops blanks (the CTC collapsing rule of Graves et al., 2006).
* ``L`` (:func:`make_piece_lexicon_fst`): tokens -> words; each word spelled with the pieces
  the tokenizer gives it (:func:`make_piece_lexicon`), the segmentation the acoustic model
  was trained on.
* ``G`` (:func:`asrkit.decode.wfst.arpa_to_fst`): the word n-gram; ``LG`` is
  :func:`asrkit.decode.wfst.make_lg`, as for HMM-GMM graphs.

The graph is searched with the Viterbi beam search of :func:`asrkit.decode.wfst.decode_fst`
(:func:`decode_ctc_wfst`). Unlike CTC prefix beam search with shallow fusion
(:mod:`asrkit.lm.fusion`), which sums the probabilities of a token sequence's alignments and
may output any word the pieces spell, the WFST search takes the best single alignment
(Viterbi) and outputs only words of the graph's vocabulary.

**Symbol numbering** (one table for both sides of ``T`` and the input of ``L``, EESEN's
``tokens.txt``):

=================  ===========================================================
``tokens.txt`` id  symbol
=================  ===========================================================
0                  ``<eps>``
``k + 1``          token ``k`` of the tokenizer (``<blank>`` 1, ``<unk>`` 2,
                   ``<sos/eos>`` 3, pieces 4 .. ``V``), named by its piece
``V + 1 + j``      disambiguation symbol ``#j`` (``#0`` for G's backoff arcs,
                   ``#1 #2 ...`` for homophone and prefix spellings)
=================  ===========================================================

So ``TLG``'s input labels are token ids plus one (0 stays ``<eps>``), and a frame with label
``i`` is scored by column ``i - 1`` of the ``(T, V)`` log-posteriors: ``tid2pdf =
torch.arange(V + 1) - 1`` for :func:`asrkit.decode.wfst.decode_fst`. Output labels are the
ids of ``words.txt`` (``<eps>`` 0, the words in C (byte) order from 1, then ``#0``, ``<s>``,
``</s>``, as :func:`asrkit.text.lexicon.make_lang` numbers them). ``T`` passes the
disambiguation symbols through with ``#j:#j`` self-loops (as Kaldi's ``fstaddselfloops`` does
for ``L``), so ``T o LG`` keeps them on its input until :func:`make_tlg` relabels them to
``<eps>`` at the end; the decoder follows those ``<eps>`` arcs by its epsilon closure.
(EESEN's token FST instead reads them as ``<eps>:#j`` loops on its start state, so they
never reach ``TLG``'s input; removing them at the end, the order Kaldi's ``mkgraph.sh``
follows for ``HCLG``, leaves the same paths.)

A graph dir (:func:`make_tlg_graph`, like :func:`asrkit.decode.gmm.make_graph`) holds
``TLG.fst``, ``words.txt``, ``tokens.txt``, ``lexicon.txt`` (the piece spellings, without
disambiguation symbols) and ``graph.json`` (inputs, sizes, seconds, LM words left out);
:meth:`CtcDecodingGraph.load` reads it back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pynini
import torch

from asrkit.data.download import file_checksum
from asrkit.decode.wfst.decoder import DecodingGraph, FrameScores, decode_fst
from asrkit.decode.wfst.fstio import read_fst, write_fst
from asrkit.decode.wfst.graph import (
    GraphError,
    StageTimer,
    add_word_paths,
    arpa_to_fst,
    fst_size,
    make_lg,
    remove_disambig,
    table_compose,
)
from asrkit.fileio import atomic_write, stage_log
from asrkit.lm.fusion import WORD_START
from asrkit.lm.ngram import BOS, EOS, NgramLM, read_arpa
from asrkit.text.lexicon import (
    Lexicon,
    add_disambig_symbols,
    read_symbol_table,
    write_lexicon,
    write_symbol_table,
)
from asrkit.text.tokenizer import BLANK_ID, UNK_ID, Tokenizer

__all__ = [
    "TOPOLOGIES",
    "CtcDecodingGraph",
    "CtcWfstResult",
    "PieceLexicon",
    "TlgInfo",
    "decode_ctc_wfst",
    "decode_ctc_wfst_batch",
    "make_ctc_token_fst",
    "make_piece_lexicon",
    "make_piece_lexicon_fst",
    "make_tlg",
    "make_tlg_graph",
]

logger = logging.getLogger(__name__)

TOPOLOGIES = ("standard", "compact")
"""Token FST topologies of :func:`make_ctc_token_fst`."""

_EPS = 0
_UNK_WORDS = frozenset({"<unk>", "<UNK>"})
_DISAMBIG = re.compile(r"#\d+")
_GRAPH_FILES = ("TLG.fst", "words.txt", "tokens.txt", "lexicon.txt")



# --- T -----------------------------------------------------------------------------------------

def make_ctc_token_fst(num_tokens: int, *, blank: int = BLANK_ID,
                       disambig_ids: Iterable[int] = (), topology: str = "standard",
                       tokens: Iterable[int] | None = None) -> pynini.Fst:
    """The CTC token transducer ``T``: frame label sequences -> token sequences.

    Labels on both sides are ``tokens.txt`` ids, i.e. token id plus one (module docstring);
    ``<eps>`` is 0. A path reads one label per frame and writes each token once, where it
    starts: repeated frames of a token collapse into one token, blanks write nothing.

    Topologies (``U`` tokens besides the blank, ``D`` disambiguation symbols):

    * ``"standard"``: exactly the CTC rule. One state for "the last frame was blank" (the
      start), one per token ``k`` for "the last frame was ``k``"; all final. The blank state
      loops on ``blank:<eps>`` and goes to state ``k`` on ``k:k``; state ``k`` loops on
      ``k:<eps>`` (the token held), returns to the blank state on ``blank:<eps>`` and goes to
      state ``j != k`` on ``j:j``. A token repeated without a blank between is therefore one
      token; a blank must separate two equal tokens. ``(U + 1)^2`` arcs, plus the ``#j:#j``
      self-loops on every state (``(U + 1) D``), which keep the last token across a word
      boundary where ``G`` backs off. EESEN's token FST joins its token states through
      ``<eps>`` arcs instead of the ``U^2`` token-to-token arcs; those ``<eps>`` arcs also let
      ``k k`` read as two tokens (as ``"compact"`` does), which this one does not.
    * ``"compact"``: Compact-CTC (Laptev et al., 2022, "CTC variations through new WFST
      topologies", Interspeech; the size class of k2's ``ctc_topo(modified=True)``): state
      ``k`` returns to the blank state by an ``<eps>:<eps>`` arc instead of the ``U^2``
      token-to-token arcs; ``3U + 1`` arcs, and the ``#j:#j`` self-loops on the blank state
      only (``D``). Smaller, but not exactly CTC: ``k k`` may also read as two tokens (through
      the ``<eps>`` arc), at no cost, so the LM may split a held token.

    Args:
        num_tokens: ``V``, the tokenizer's vocabulary size (blank included).
        blank: the blank token id (0).
        disambig_ids: ``tokens.txt`` ids of the disambiguation symbols to pass through (all
            greater than ``V``).
        topology: ``"standard"`` or ``"compact"`` (:data:`TOPOLOGIES`).
        tokens: the token ids that may be emitted (default: every id but ``blank``); a
            graph needs only those that spell its words, and ``"standard"`` grows with their
            square.

    Returns:
        ``T``, tropical, all weights 0, sorted by output label (ready for ``T o LG``).

    Raises:
        ValueError: ``num_tokens < 2``, ``blank`` or a token outside ``0 .. V-1``, a
            disambiguation id not above ``V``, or an unknown topology.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    if not (isinstance(num_tokens, int) and num_tokens >= 2):
        raise ValueError(f"num_tokens must be an integer >= 2, got {num_tokens!r}")
    if not 0 <= blank < num_tokens:
        raise ValueError(f"blank {blank} is outside 0..{num_tokens - 1}")
    toks = sorted(set(range(num_tokens)) - {blank} if tokens is None
                  else {int(k) for k in tokens} - {blank})
    bad = [k for k in toks if not 0 <= k < num_tokens]
    if bad:
        raise ValueError(f"tokens {bad[:5]} are outside 0..{num_tokens - 1}")
    disambig = sorted({int(d) for d in disambig_ids})
    bad = [d for d in disambig if d <= num_tokens]
    if bad:
        raise ValueError(f"disambiguation ids {bad[:5]} collide with token labels 1..{num_tokens}"
                         f"; expected ids above {num_tokens} (tokens.txt numbering)")

    fst = pynini.Fst()
    one = pynini.Weight.one(fst.weight_type())
    b = fst.add_state()
    fst.set_start(b)
    fst.set_final(b, one)
    state = {}
    for k in toks:
        state[k] = fst.add_state()
        fst.set_final(state[k], one)

    def arc(src: int, ilabel: int, olabel: int, dst: int) -> None:
        fst.add_arc(src, pynini.Arc(ilabel, olabel, one, dst))

    arc(b, blank + 1, _EPS, b)
    for k, s in state.items():
        arc(b, k + 1, k + 1, s)
        arc(s, k + 1, _EPS, s)
        if topology == "standard":
            arc(s, blank + 1, _EPS, b)
            for j, sj in state.items():
                if j != k:
                    arc(s, j + 1, j + 1, sj)
        else:
            arc(s, _EPS, _EPS, b)
    loops = [b, *state.values()] if topology == "standard" else [b]
    for s in loops:
        for d in disambig:
            arc(s, d, d, s)
    fst.arcsort("olabel")
    logger.info("T (%s): %d states, %d arcs for %d tokens", topology, *fst_size(fst), len(toks))
    return fst


# --- L -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PieceLexicon:
    """Words spelled with a tokenizer's sentencepiece pieces, and the symbol tables of ``L``.

    Attributes:
        lexicon: ``word -> [pieces, ...]`` (``lexicon.txt``), words in C (byte) order.
        lexicon_disambig: the same with ``#1 #2 ...`` after homophone and prefix spellings
            (:func:`asrkit.text.lexicon.add_disambig_symbols`, Kaldi's
            ``add_lex_disambig.pl``).
        words: ``words.txt``: ``<eps>`` 0, the words from 1, then ``#0``, ``<s>``, ``</s>``.
        tokens: ``tokens.txt`` (module docstring): ``<eps>`` 0, token ``k``'s piece at
            ``k + 1``, then ``#0 .. #D``.
        num_tokens: ``V``, the tokenizer's vocabulary size.
        unspellable: ``word -> reason`` for the words left out (e.g. characters the
            tokenizer maps to ``<unk>``).
    """

    lexicon: Lexicon
    lexicon_disambig: Lexicon
    words: dict[str, int]
    tokens: dict[str, int]
    num_tokens: int
    unspellable: dict[str, str]

    @property
    def disambig_ids(self) -> list[int]:
        """``tokens.txt`` ids of ``#0 .. #D`` (all above ``V``)."""
        return [i for i in self.tokens.values() if i > self.num_tokens]

    @property
    def used_tokens(self) -> list[int]:
        """Token ids (not labels) that spell some word."""
        return sorted({self.tokens[p] - 1 for _, pron in self.lexicon.entries() for p in pron})


def _as_tokenizer(tokenizer: Tokenizer | str | os.PathLike) -> Tokenizer:
    return tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)


def _spellings(tok: Tokenizer, word: str, n: int) -> list[list[int]]:
    if n > 1:
        try:
            out = tok.sp.nbest_encode_as_ids(word, n)
        except RuntimeError:  # BPE and char models have one segmentation
            out = [tok.encode(word)]
    else:
        out = [tok.encode(word)]
    seen: list[list[int]] = []
    for ids in out:
        if ids not in seen:
            seen.append(list(ids))
    return seen


def make_piece_lexicon(tokenizer: Tokenizer | str | os.PathLike, words: Iterable[str], *,
                       num_spellings: int = 1) -> PieceLexicon:
    """Spell each word with the tokenizer's pieces: the lexicon of a ``TLG`` graph.

    A word is encoded alone with the sentencepiece model (``Tokenizer.encode``): sentencepiece
    segments whitespace-separated words independently, so this is the ``▁``-initial
    segmentation the acoustic model learned for the word inside any sentence. With
    ``num_spellings > 1`` a unigram model's ``num_spellings`` best segmentations are all
    kept (a model trained with subword sampling may emit any of them); BPE and char models
    have one.

    Args:
        tokenizer: a :class:`asrkit.text.tokenizer.Tokenizer` or its ``.model`` path.
        words: the vocabulary (e.g. the LM's 1-grams); ``<s>``, ``</s>``, ``<unk>``,
            ``<UNK>``, ``<eps>`` and ``#0 #1 ...`` are skipped, duplicates ignored.
        num_spellings: spellings per word (>= 1).

    Returns:
        The :class:`PieceLexicon`; words whose every spelling holds ``<unk>`` (a character the
        tokenizer does not know) or is empty are left out and named in ``unspellable``.

    Raises:
        ValueError: ``num_spellings < 1``.
        GraphError: a piece is named like a disambiguation symbol (``#3``).
    """
    if not (isinstance(num_spellings, int) and num_spellings >= 1):
        raise ValueError(f"num_spellings must be an integer >= 1, got {num_spellings!r}")
    tok = _as_tokenizer(tokenizer)
    V = tok.vocab_size
    pieces = tok.pieces(list(range(V)))
    clash = [p for p in pieces if _DISAMBIG.fullmatch(p)]
    if clash:
        raise GraphError(f"{tok.model_path}: pieces {clash[:5]} look like disambiguation "
                         "symbols (#N); tokens.txt cannot hold both")
    skip = {BOS, EOS, "<eps>", *_UNK_WORDS}
    vocab = sorted({w for w in words if w not in skip and not _DISAMBIG.fullmatch(w)},
                   key=lambda w: w.encode("utf-8"))
    lexicon = Lexicon()
    unspellable: dict[str, str] = {}
    for word in vocab:
        good = []
        for ids in _spellings(tok, word, num_spellings):
            if ids and UNK_ID not in ids and BLANK_ID not in ids:
                good.append(ids)
        if not good:
            ids = tok.encode(word)
            if not ids:
                unspellable[word] = "the tokenizer encodes it to no piece"
            else:
                chars = sorted({c for c in word if UNK_ID in tok.encode(c)})
                unspellable[word] = (f"characters {''.join(chars)!r} are not in the "
                                     "tokenizer's pieces (encoded as <unk>)" if chars
                                     else "its encoding holds <unk>")
            continue
        for ids in good:
            lexicon.add(word, [pieces[i] for i in ids])
    if unspellable:
        shown = ", ".join(f"{w!r}" for w in list(unspellable)[:10])
        logger.warning("%d of %d words cannot be spelled with the tokenizer's pieces and are "
                       "left out of the lexicon: %s%s", len(unspellable), len(vocab), shown,
                       ", ..." if len(unspellable) > 10 else "")
    lex_disambig, max_disambig = add_disambig_symbols(lexicon)
    table = {"<eps>": 0}
    table.update({w: i for i, w in enumerate(lexicon.words(), start=1)})
    for sym in ("#0", BOS, EOS):
        table[sym] = len(table)
    tokens = {"<eps>": 0}
    tokens.update({p: k + 1 for k, p in enumerate(pieces)})
    for j in range(max_disambig + 1):
        tokens[f"#{j}"] = V + 1 + j
    logger.info("piece lexicon: %d words, %d spellings over %d pieces, %d disambiguation "
                "symbols", len(lexicon), lexicon.num_prons, V, max_disambig + 1)
    return PieceLexicon(lexicon=lexicon, lexicon_disambig=lex_disambig, words=table,
                        tokens=tokens, num_tokens=V, unspellable=unspellable)


def make_piece_lexicon_fst(lex: PieceLexicon, *, disambig: bool = True) -> pynini.Fst:
    """The lexicon transducer ``L`` over pieces: ``tokens.txt`` ids -> ``words.txt`` ids.

    One state, start and final; each spelling is a cycle through it that writes the word on
    its first piece (:func:`asrkit.decode.wfst.graph.add_word_paths`, as Kaldi's
    ``make_lexicon_fst.py`` without silence). With ``disambig`` the spellings carry their
    ``#1 #2 ...`` and the state loops on ``#0:#0``, passing ``G``'s backoff symbol through.

    Args:
        lex: from :func:`make_piece_lexicon`.
        disambig: build ``L_disambig`` (for ``L o G``); False leaves the symbols out.

    Returns:
        ``L``, tropical, all weights 0, sorted by output label.
    """
    lexicon = lex.lexicon_disambig if disambig else lex.lexicon
    fst = pynini.Fst()
    s = fst.add_state()
    fst.set_start(s)
    fst.set_final(s, pynini.Weight.one(fst.weight_type()))
    add_word_paths(fst, ((lex.words[w], 0.0, [lex.tokens[p] for p in pron])
                         for w, pron in lexicon.entries()), loop=s, ends=((s, 0.0),))
    if disambig:
        fst.add_arc(s, pynini.Arc(lex.tokens["#0"], lex.words["#0"],
                                  pynini.Weight.one(fst.weight_type()), s))
    fst.arcsort("olabel")
    logger.info("L%s over pieces: %d states, %d arcs", "_disambig" if disambig else "",
                *fst_size(fst))
    return fst


# --- TLG ---------------------------------------------------------------------------------------

@dataclass
class TlgInfo:
    """What :func:`make_tlg` built besides ``TLG``.

    Attributes:
        lexicon: the piece lexicon and the symbol tables (:class:`PieceLexicon`).
        topology: of ``T``.
        lm_order: the n-gram order.
        lm_words_left_out: LM words (other than ``<s>``, ``</s>``, ``<unk>``) not in the
            graph: unspellable, or not in the given word list; C order.
        sizes: ``{stage: (states, arcs)}`` for ``L``, ``G``, ``LG``, ``T``, ``TLG``.
        seconds: ``{stage: seconds}`` spent building each.
    """

    lexicon: PieceLexicon
    topology: str
    lm_order: int
    lm_words_left_out: list[str] = field(default_factory=list)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def make_tlg(tokenizer: Tokenizer | str | os.PathLike, lm: NgramLM | str | os.PathLike, *,
             words: Iterable[str] | None = None, topology: str = "standard",
             num_spellings: int = 1, oov: str = "skip") -> tuple[pynini.Fst, TlgInfo]:
    """The CTC decoding graph ``TLG`` (EESEN's order)::

        L    = piece lexicon with #1 #2 ... and a #0:#0 loop    make_piece_lexicon_fst
        G    = the n-gram, backoff arcs reading #0               arpa_to_fst
        LG   = min(det(L o G))                                   make_lg
        TLG  = T o LG, then #0 #1 ... relabelled to <eps>        make_ctc_token_fst,
                                                                 remove_disambig

    Input labels: token ids plus one, or ``<eps>`` where disambiguation symbols were.
    Output labels: ``info.lexicon.words`` ids. Semiring: tropical, costs ``-ln p`` of the
    n-gram (pieces and ``T`` cost nothing). ``TLG`` is not determinized (as in EESEN); it is
    trimmed and sorted by input label.

    Args:
        tokenizer: the acoustic model's tokenizer, or its ``.model`` path.
        lm: an :class:`asrkit.lm.ngram.NgramLM` or an ARPA path.
        words: the graph's vocabulary; default: the LM's 1-grams. LM n-grams over other
            words are left out of ``G`` (``arpa_to_fst(oov="skip")``).
        topology: of ``T`` (:func:`make_ctc_token_fst`).
        num_spellings: spellings per word (:func:`make_piece_lexicon`).
        oov: LM words the pieces cannot spell: ``"skip"`` leaves them out with a warning
            naming them; ``"error"`` raises.

    Returns:
        ``(TLG, info)`` (:class:`TlgInfo`).

    Raises:
        GraphError: unspellable LM words with ``oov="error"`` (named), no word left, or an
            empty ``L o G``.
        ValueError: bad ``topology``, ``num_spellings`` or ``oov``.
        asrkit.lm.ngram.ArpaError: a malformed ARPA file.
    """
    if oov not in ("skip", "error"):
        raise ValueError(f"oov must be 'skip' or 'error', got {oov!r}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    timer = StageTimer()
    done, sizes, seconds = timer.done, timer.sizes, timer.seconds

    tok = _as_tokenizer(tokenizer)
    source = "" if isinstance(lm, NgramLM) else f"{lm}: "
    if not isinstance(lm, NgramLM):
        lm = read_arpa(lm)
    special = {BOS, EOS, *_UNK_WORDS} | ({lm.unk} if lm.unk else set())
    lm_words = sorted((w for w in lm.vocab if w not in special), key=lambda w: w.encode())
    lex = make_piece_lexicon(tok, lm_words if words is None else words,
                             num_spellings=num_spellings)
    bad_lm = [w for w in lm_words if w in lex.unspellable]
    if bad_lm and oov == "error":
        shown = ", ".join(repr(w) for w in bad_lm[:10])
        raise GraphError(f"{source}LM words the tokenizer's pieces cannot spell: {shown}"
                         f"{', ...' if len(bad_lm) > 10 else ''} ({len(bad_lm)} of "
                         f"{len(lm_words)}): {lex.unspellable[bad_lm[0]]} for the first; "
                         "retrain the tokenizer on text holding them, or pass oov='skip'")
    if not len(lex.lexicon):
        raise GraphError(f"{source}no word of the vocabulary can be spelled with the "
                         f"tokenizer's pieces ({tok.model_path})")
    L = make_piece_lexicon_fst(lex)
    done("L", L)
    G = arpa_to_fst(lm, lex.words, oov="skip")
    done("G", G)
    LG = make_lg(L, G)
    done("LG", LG)
    T = make_ctc_token_fst(lex.num_tokens, disambig_ids=lex.disambig_ids, topology=topology,
                           tokens=lex.used_tokens)
    done("T", T)
    TLG = table_compose(T, LG)
    if TLG.start() == pynini.NO_STATE_ID:
        raise GraphError("T o LG is empty; expected T over the tokens.txt ids that L reads")
    TLG = remove_disambig(TLG, lex.disambig_ids).arcsort("ilabel")
    done("TLG", TLG)
    left_out = [w for w in lm_words if w not in lex.lexicon]
    return TLG, TlgInfo(lexicon=lex, topology=topology, lm_order=lm.order,
                        lm_words_left_out=left_out, sizes=sizes, seconds=seconds)


def _read_word_list(path: Path) -> list[str]:
    """First field of each non-empty line (a word list, or a ``words.txt``)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                out.append(fields[0])
    return out


def make_tlg_graph(tokenizer_model: str | os.PathLike, lm: str | os.PathLike,
                   out_dir: str | os.PathLike, *, words: str | os.PathLike | None = None,
                   topology: str = "standard", num_spellings: int = 1, oov: str = "skip",
                   force: bool = False) -> Path:
    """Build ``TLG`` for a tokenizer and an ARPA LM into a graph dir (``asrkit mkgraph
    --ctc``; EESEN's ``ctc_compile_dict_token.sh`` and ``mkgraph``).

    Writes ``TLG.fst``, ``words.txt``, ``tokens.txt``, ``lexicon.txt`` (``WORD PIECE1
    PIECE2 ...``) and, last, ``graph.json``: the inputs (paths and SHA-256 of the tokenizer
    model, LM and word list; options), ``num_tokens``, sizes and seconds of each stage,
    ``lm_words_left_out`` and ``unspellable`` (word -> reason). Every file is written
    atomically, and a dir whose ``graph.json`` records the same inputs (and holds every file)
    is complete: it is left as it is, so a killed recipe resumes here. The log goes to
    ``out_dir/mkgraph.log``.

    Args:
        tokenizer_model: the acoustic model's sentencepiece ``.model``.
        lm: ARPA file (``.gz`` allowed).
        out_dir: the graph dir.
        words: optional word list (one word per line, or a ``words.txt``: the first field is
            used); default: the LM's words.
        topology, num_spellings, oov: see :func:`make_tlg`.
        force: rebuild even when complete.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: a missing input.
        GraphError, ValueError, asrkit.lm.ngram.ArpaError: see :func:`make_tlg`.
    """
    out = Path(out_dir)
    for p in (tokenizer_model, lm, *(() if words is None else (words,))):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: not found")
    inputs = {"tokenizer": str(tokenizer_model), "tokenizer_sha256": file_checksum(tokenizer_model),
              "lm": str(lm), "lm_sha256": file_checksum(lm),
              "words": None if words is None else str(words),
              "words_sha256": None if words is None else file_checksum(words),
              "topology": topology, "num_spellings": num_spellings, "oov": oov}
    meta_path = out / "graph.json"
    if not force and meta_path.is_file() and all((out / f).is_file() for f in _GRAPH_FILES):
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8")).get("inputs")
        except (json.JSONDecodeError, OSError, AttributeError):
            old = None
        if old == inputs:
            logger.info("%s is complete for these inputs; skipping (force=True rebuilds)", out)
            return out
    with stage_log(out / "mkgraph.log"):
        start = time.perf_counter()
        TLG, info = make_tlg(tokenizer_model, lm,
                             words=None if words is None else _read_word_list(Path(words)),
                             topology=topology, num_spellings=num_spellings, oov=oov)
        lex = info.lexicon
        write_fst(TLG, out / "TLG.fst")
        write_symbol_table(lex.words, out / "words.txt")
        write_symbol_table(lex.tokens, out / "tokens.txt")
        write_lexicon(lex.lexicon, out / "lexicon.txt", with_probs=False)
        meta = {"inputs": inputs, "kind": "ctc_tlg", "num_tokens": lex.num_tokens,
                "topology": topology, "lm_order": info.lm_order,
                "num_words": len(lex.lexicon), "num_spellings_total": lex.lexicon.num_prons,
                "num_disambig": len(lex.disambig_ids),
                "lm_words_left_out": info.lm_words_left_out, "unspellable": lex.unspellable,
                "sizes": {k: list(v) for k, v in info.sizes.items()},
                "seconds": {k: round(v, 3) for k, v in info.seconds.items()},
                "total_seconds": round(time.perf_counter() - start, 3)}
        with atomic_write(meta_path) as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
        logger.info("%s: TLG %d states, %d arcs, built in %.1f s", out, *info.sizes["TLG"],
                    meta["total_seconds"])
    return out


# --- decoding ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CtcDecodingGraph:
    """A ``TLG`` ready for :func:`decode_ctc_wfst`: the flat tensors and the symbols.

    Attributes:
        graph: ``TLG`` as a :class:`asrkit.decode.wfst.DecodingGraph`.
        id2word: ``words.txt`` id -> word.
        pieces: token id -> piece (``V`` entries), from ``tokens.txt``.
        topology: of ``T`` when known (``graph.json``), else None.
    """

    graph: DecodingGraph
    id2word: dict[int, str]
    pieces: list[str]
    topology: str | None = None

    @property
    def num_tokens(self) -> int:
        """``V``."""
        return len(self.pieces)

    @classmethod
    def from_fst(cls, fst: pynini.Fst, words: Mapping[str, int], tokens: Mapping[str, int],
                 *, topology: str | None = None) -> CtcDecodingGraph:
        """From ``TLG`` and its ``words.txt`` / ``tokens.txt`` tables (:func:`make_tlg`
        returns them in ``info.lexicon``).

        Raises:
            GraphError: ``tokens`` does not number the tokens ``1 .. V`` contiguously.
        """
        by_id = {i: s for s, i in tokens.items() if i > 0 and not _DISAMBIG.fullmatch(s)}
        V = max(by_id, default=0)
        if sorted(by_id) != list(range(1, V + 1)) or V < 2:
            raise GraphError("tokens.txt must number the tokens 1..V contiguously (token k at "
                             "k + 1), then the #N symbols")
        return cls(graph=DecodingGraph.from_fst(fst), id2word={i: w for w, i in words.items()},
                   pieces=[by_id[k + 1] for k in range(V)], topology=topology)

    @classmethod
    def load(cls, graph_dir: str | os.PathLike, *, device: torch.device | str = "cpu",
             tokenizer: Tokenizer | None = None) -> CtcDecodingGraph:
        """Read a graph dir of :func:`make_tlg_graph`.

        Args:
            graph_dir: the dir.
            device: where the graph's tensors go (the search runs there; CPU is usually
                faster for graphs of a few million arcs or less).
            tokenizer: when given, its pieces must be those of ``tokens.txt``.

        Raises:
            FileNotFoundError: a missing file.
            GraphError: unusable files, or a tokenizer other than the graph's (the first
                differing id named).
        """
        d = Path(graph_dir)
        if not (d / "TLG.fst").is_file():
            raise FileNotFoundError(f"{d / 'TLG.fst'} not found; build it with "
                                    "asrkit.decode.wfst.make_tlg_graph (asrkit mkgraph --ctc)")
        topology = None
        if (d / "graph.json").is_file():
            topology = json.loads((d / "graph.json").read_text(encoding="utf-8")).get(
                "topology")
        g = cls.from_fst(read_fst(d / "TLG.fst"), read_symbol_table(d / "words.txt"),
                         read_symbol_table(d / "tokens.txt"), topology=topology)
        if tokenizer is not None:
            mine = tokenizer.pieces(list(range(tokenizer.vocab_size)))
            if mine != g.pieces:
                k = next((i for i, (a, b) in enumerate(zip(mine, g.pieces)) if a != b),
                         min(len(mine), len(g.pieces)))
                raise GraphError(f"{d / 'tokens.txt'}: the graph was built for another "
                                 f"tokenizer than {tokenizer.model_path} ({len(g.pieces)} vs "
                                 f"{len(mine)} tokens; first difference at token id {k})")
        return g.to(device)

    def to(self, device: torch.device | str) -> CtcDecodingGraph:
        """The graph with its tensors on ``device``."""
        g = self.graph.to(device)
        if g is self.graph:
            return self
        return CtcDecodingGraph(g, self.id2word, self.pieces, self.topology)


@dataclass(frozen=True, eq=False)
class CtcWfstResult:
    """The best path of :func:`decode_ctc_wfst`.

    Attributes:
        words: the words (``words.txt`` names; the ids as text when the graph came without
            symbols).
        word_ids: their ``words.txt`` ids.
        tokens: token ids of the path (frames collapsed, blanks dropped).
        frame_tokens: ``(T,)`` int64 token id (blank included) read at each frame: the CTC
            alignment.
        segments: ``(start frame, end frame)`` of each word, end exclusive, from the first
            frame of its first piece to the last frame of its last piece (trailing blanks
            excluded); None when the pieces are unknown or do not split into ``words`` at
            their ``▁`` word starts (e.g. a ``"compact"`` graph that read a held token twice).
        cost: ``lm_cost + acoustic_scale * am_cost``.
        am_cost: ``-sum_t`` of the (prior- and blank-adjusted) log-posteriors of the path.
        lm_cost: graph cost (n-gram, ``-ln p``).
        reached_final: whether the path ends in a final state.
        nbest: with ``nbest > 1``: up to ``nbest`` distinct word sequences (names like
            ``words``) with their scores ``-cost`` (natural log, higher better: ``-lm_cost -
            acoustic_scale * am_cost`` of the sequence's best path in the lattice), best
            first; the first is ``(words, -cost)``. None with ``nbest == 1``.
    """

    words: list[str]
    word_ids: list[int]
    tokens: list[int]
    frame_tokens: torch.Tensor
    segments: list[tuple[int, int]] | None
    cost: float
    am_cost: float
    lm_cost: float
    reached_final: bool
    nbest: list[tuple[list[str], float]] | None = None


def _token_runs(frames: list[int], blank: int) -> list[tuple[int, int, int]]:
    """``(token, start, end)`` of each run of equal non-blank frames."""
    runs: list[tuple[int, int, int]] = []
    prev = blank
    for t, k in enumerate(frames):
        if k != blank:
            if k == prev:
                runs[-1] = (k, runs[-1][1], t + 1)
            else:
                runs.append((k, t, t + 1))
        prev = k
    return runs


def _word_segments(runs: list[tuple[int, int, int]], pieces: Sequence[str], num_words: int
                   ) -> list[tuple[int, int]] | None:
    segs: list[list[int]] = []
    for k, s, e in runs:
        if pieces[k].startswith(WORD_START) or not segs:
            segs.append([s, e])
        else:
            segs[-1][1] = e
    if len(segs) != num_words:
        return None
    return [(s, e) for s, e in segs]


def decode_ctc_wfst(log_probs: torch.Tensor,
                    graph: CtcDecodingGraph | DecodingGraph | pynini.Fst, *,
                    acoustic_scale: float = 1.0, blank_penalty: float = 0.0,
                    log_priors: torch.Tensor | None = None, prior_scale: float = 1.0,
                    beam: float = 16.0, max_active: int = 7000, blank: int = BLANK_ID,
                    nbest: int = 1, lattice_beam: float = 8.0) -> CtcWfstResult:
    """Decode one utterance's CTC log-posteriors with a ``TLG`` graph (EESEN): the Viterbi
    beam search of :func:`asrkit.decode.wfst.decode_fst` with ``tid2pdf = arange(V + 1) - 1``.

    A path's cost is its graph cost (the n-gram's ``-ln p``) plus ``acoustic_scale`` times
    ``-sum_t s[t, k_t]`` over the token ``k_t`` it reads at frame ``t``, where::

        s[t, k] = log_probs[t, k] - prior_scale * log_priors[k] - blank_penalty * [k == blank]

    ``log_probs - log_priors`` are EESEN's pseudo log-likelihoods (posterior / prior, the
    hybrid-system scaling; priors from token frame counts of the training alignments). With
    ``acoustic_scale = 1 / lm_weight`` the ranking is that of shallow fusion ``log P_ctc +
    lm_weight * log P_lm`` (:mod:`asrkit.lm.fusion`), with the best alignment in place of the
    sum over alignments. ``blank_penalty > 0`` makes blank frames dearer (fewer deletions).

    Args:
        log_probs: ``(T, V)`` natural-log CTC posteriors of ``T`` encoder frames
            (``model.ctc_log_probs_from_encoder`` for one utterance, padding cut). The search
            runs on the graph's device.
        graph: :class:`CtcDecodingGraph` (:meth:`CtcDecodingGraph.load`), or a bare ``TLG``
            (``DecodingGraph`` or FST; then ``words`` are ids as text and ``segments`` None).
        acoustic_scale: weight of the acoustic scores against the graph costs (1.0; EESEN
            tunes it around 0.5-0.9, the inverse of an LM weight).
        blank_penalty: added to the cost of every blank frame, in nats (0).
        log_priors: optional ``(V,)`` natural-log token priors.
        prior_scale: exponent of the priors (1.0).
        beam: tokens more than ``beam`` above the frame's best are dropped (16).
        max_active: tokens kept per frame (7000).
        blank: the blank id (0).
        nbest: also return the ``nbest`` best distinct word sequences from a lattice
            (:func:`asrkit.decode.wfst.decode_fst`), in :attr:`CtcWfstResult.nbest`.
        lattice_beam: ``nbest > 1``: the lattice pruning beam in cost units (8.0).

    Returns:
        :class:`CtcWfstResult`.

    Raises:
        ValueError: ``log_probs`` not ``(T, V)``, ``V`` not the graph's, bad ``log_priors``,
            ``nbest < 1`` or ``lattice_beam <= 0``.
        asrkit.decode.wfst.DecodingError: no path survives (e.g. ``-inf`` everywhere).
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    V = log_probs.shape[1]
    id2word: dict[int, str] | None = None
    pieces: list[str] | None = None
    if isinstance(graph, CtcDecodingGraph):
        if graph.num_tokens != V:
            raise ValueError(f"log_probs has {V} token columns, the graph {graph.num_tokens}; "
                             "expected the tokenizer the graph was built with")
        id2word, pieces, dg = graph.id2word, graph.pieces, graph.graph
    else:
        dg = graph if isinstance(graph, DecodingGraph) else DecodingGraph.from_fst(graph)
    if not 0 <= blank < V:
        raise ValueError(f"blank {blank} outside 0..{V - 1}")
    dev = dg.device
    if log_priors is not None:
        log_priors = torch.as_tensor(log_priors, dtype=torch.float64, device=dev)
        if log_priors.shape != (V,):
            raise ValueError(f"log_priors must be ({V},), got {tuple(log_priors.shape)}")
    lp = log_probs.detach()

    def frame_scores(t0: int, t1: int) -> torch.Tensor:
        # s[t, k] a block of frames at a time: no (T, V) float64 copy of a long utterance
        scores = lp[t0:t1].to(dev, torch.float64)
        if log_priors is not None:
            scores = scores - prior_scale * log_priors
        if blank_penalty:
            scores = scores.clone()
            scores[:, blank] -= blank_penalty
        return scores

    tid2pdf = torch.arange(V + 1, device=dev) - 1
    r = decode_fst(dg, FrameScores(log_probs.shape[0], V, frame_scores), tid2pdf,
                   acoustic_scale=acoustic_scale, beam=beam,
                   max_active=max_active, nbest=nbest, lattice_beam=lattice_beam)
    frames = (r.tids - 1).tolist()
    runs = _token_runs(frames, blank)
    def names(ids: list[int]) -> list[str]:
        return ([id2word.get(w, str(w)) for w in ids] if id2word is not None
                else [str(w) for w in ids])

    words = names(r.words)
    segments = _word_segments(runs, pieces, len(words)) if pieces is not None else None
    if pieces is not None and segments is None and words:
        logger.debug("no word segments: %d piece groups for %d words", len(runs), len(words))
    return CtcWfstResult(words=words, word_ids=list(r.words), tokens=[k for k, _, _ in runs],
                         frame_tokens=r.tids - 1, segments=segments, cost=r.cost,
                         am_cost=r.am_cost, lm_cost=r.lm_cost,
                         reached_final=r.reached_final,
                         nbest=None if r.nbest is None else [(names(w), -c) for w, c in r.nbest])


def decode_ctc_wfst_batch(log_probs: torch.Tensor, lengths: torch.Tensor,
                          graph: CtcDecodingGraph, **kwargs) -> list[CtcWfstResult]:
    """:func:`decode_ctc_wfst` for each utterance of a padded batch.

    Args:
        log_probs: ``(B, T', V)`` CTC log-posteriors (``model.ctc_log_probs_from_encoder``).
        lengths: ``(B,)`` valid frames of each.
        graph: the graph; the batch is moved to its device (once).
        **kwargs: the options of :func:`decode_ctc_wfst`.

    Returns:
        One :class:`CtcWfstResult` per utterance, in batch order.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T', V), got shape {tuple(log_probs.shape)}")
    x = log_probs.detach().to(graph.graph.device)  # float64 a block at a time, in the search
    return [decode_ctc_wfst(x[b, :int(n)], graph, **kwargs)
            for b, n in enumerate(lengths.tolist())]
