"""Language-model text from Project Gutenberg books, normalised as LibriSpeech's LM corpus.

LibriSpeech's ``librispeech-lm-norm.txt`` (Panayotov et al., 2015, section 4) is one sentence
per line, upper case, punctuation removed but for apostrophes inside words. This module
produces the same kind of text from raw Gutenberg ``.txt`` files:

1. :func:`strip_gutenberg` keeps the text between the ``*** START OF ...`` and
   ``*** END OF ...`` marker lines (older books: ``*END*THE SMALL PRINT`` for the start and
   ``End of (the) Project Gutenberg ...`` for the end) and reads the ``[EBook #N]`` number.
2. :func:`split_sentences` joins each paragraph's lines and splits after ``.``, ``!``,
   ``?`` (and ``;``/``:`` are kept inside sentences), not after common abbreviations.
3. :func:`normalize_sentence` upper-cases, expands the title abbreviations
   (``MR.`` -> ``MISTER``), removes punctuation and **drops any sentence holding a digit**
   (LibriSpeech spelled numbers out with a normaliser; dropping never writes a wrong
   reading), and sentences of fewer than ``min_words`` (headings, "CHAPTER I").

Books read by the speakers an LM is evaluated on must be left out
(:func:`librispeech_books`); :func:`write_lm_text` does it by Gutenberg number and by title.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asrkit.fileio import atomic_write

__all__ = [
    "BookText",
    "LmTextStats",
    "librispeech_books",
    "normalize_sentence",
    "normalize_title",
    "read_book",
    "split_sentences",
    "strip_gutenberg",
    "write_lm_text",
]

logger = logging.getLogger(__name__)

_START = re.compile(r"^\s*\*+\s*START OF (THE|THIS) PROJECT GUTENBERG|^\s*\*+\s*START\*?\s*OF",
                    re.IGNORECASE)
_OLD_START = re.compile(r"^\s*\*?END\*?\s*THE SMALL PRINT", re.IGNORECASE)
_END = re.compile(r"^\s*\*+\s*END OF (THE|THIS) PROJECT GUTENBERG|^\s*End of (the )?Project "
                  r"Gutenberg|^\s*\*+\s*END\*?\s*OF", re.IGNORECASE)
_EBOOK_NO = re.compile(r"E(?:-)?(?:Book|Text)\s*#\s*(\d+)", re.IGNORECASE)
_ABBREV = {"MR": "MISTER", "MRS": "MISSUS", "DR": "DOCTOR", "ST": "SAINT", "MESSRS": "MESSIEURS",
           "CAPT": "CAPTAIN", "COL": "COLONEL", "GEN": "GENERAL", "LIEUT": "LIEUTENANT",
           "REV": "REVEREND", "PROF": "PROFESSOR", "SGT": "SERGEANT", "GOV": "GOVERNOR",
           "HON": "HONOURABLE", "JR": "JUNIOR", "SR": "SENIOR"}
_ABBREV_DOT = re.compile(r"\b(" + "|".join(_ABBREV) + r")\.", re.IGNORECASE)
_SENT_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")
_NOT_WORD = re.compile(r"[^A-Z']+")
_DIGIT = re.compile(r"\d")


@dataclass
class BookText:
    """A book's body with its Gutenberg number.

    Attributes:
        body: the text between the header and the footer (the whole text when no marker was
            found).
        ebook_no: the ``[EBook #N]`` number of the header, or None.
        marked: True when both a start and an end marker were found.
    """

    body: str
    ebook_no: int | None
    marked: bool


def strip_gutenberg(text: str) -> BookText:
    """Remove the Project Gutenberg header and footer from a book's text.

    Args:
        text: the whole ``.txt`` file (any line endings).

    Returns:
        :class:`BookText`. Without a start marker the text from the first line is kept,
        without an end marker the text to the last line.
    """
    lines = text.splitlines()
    head = "\n".join(lines[:120])
    m = _EBOOK_NO.search(head)
    ebook_no = int(m.group(1)) if m else None
    start, end = 0, len(lines)
    found_start = found_end = False
    for i, line in enumerate(lines[:1000]):
        if _START.match(line) or _OLD_START.match(line):
            start, found_start = i + 1, True
            # a start marker may run on over the next line ("...EBOOK TITLE\nMORE***")
            if "***" not in line[3:] and i + 1 < len(lines) and lines[i + 1].rstrip().endswith("*"):
                start += 1
            break
    for i in range(len(lines) - 1, start - 1, -1):
        if _END.match(lines[i]):
            end, found_end = i, True
    # the earliest end marker after the start wins (the licence may repeat the phrase)
    return BookText("\n".join(lines[start:end]), ebook_no, found_start and found_end)


def split_sentences(body: str) -> Iterator[str]:
    """Split a book body into sentences.

    Paragraphs (separated by blank lines) are joined into one line each; a sentence ends
    after ``.``, ``!`` or ``?`` (and any closing quotes or brackets) followed by white space,
    except after a title abbreviation (``Mr.``, ``Dr.`` ...), which is expanded first.

    Args:
        body: the text (:attr:`BookText.body`).

    Yields:
        Sentences with their original case and punctuation, stripped.
    """
    para: list[str] = []
    for line in body.splitlines() + [""]:
        if line.strip():
            para.append(line.strip())
            continue
        if not para:
            continue
        joined = _ABBREV_DOT.sub(lambda m: _ABBREV[m.group(1).upper()], " ".join(para))
        para = []
        for s in _SENT_END.split(joined):
            if s.strip():
                yield s.strip()


def normalize_sentence(sentence: str, *, min_words: int = 3) -> str | None:
    """LibriSpeech-LM normalisation of one sentence.

    Accents are removed (NFKD, é -> E), the text is upper-cased, title abbreviations are
    expanded, every character but ``A-Z`` and the apostrophe becomes a word break, and
    apostrophes not inside a word are removed (``DON'T`` stays, ``'TWAS`` -> ``TWAS``,
    ``DOGS'`` -> ``DOGS``).

    Args:
        sentence: one sentence (:func:`split_sentences`).
        min_words: shorter results are dropped.

    Returns:
        The normalised sentence, or None when it holds a digit (numbers are not spelled out)
        or has fewer than ``min_words`` words.
    """
    if _DIGIT.search(sentence):
        return None
    s = unicodedata.normalize("NFKD", sentence)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = _ABBREV_DOT.sub(lambda m: _ABBREV[m.group(1).upper()], s).upper()
    words = [w for w in (t.strip("'") for t in _NOT_WORD.split(s)) if w]
    if len(words) < min_words:
        return None
    return " ".join(words)


def normalize_title(title: str) -> str:
    """A title reduced for matching: lower-case letters and digits, single spaces
    (``"Northanger Abbey"`` and ``NORTHANGER  ABBEY.`` compare equal)."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", title.lower()).split())


def read_book(path: str | os.PathLike) -> str:
    """A book file's text: UTF-8, or Latin-1 when it is not valid UTF-8 (older Gutenberg
    files are ISO-8859-1)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def librispeech_books(chapters_txt: str | os.PathLike, readers: Iterable[str]
                      ) -> tuple[set[int], set[str]]:
    """The Gutenberg numbers and titles of the books the given LibriSpeech readers read.

    Args:
        chapters_txt: LibriSpeech's ``CHAPTERS.TXT`` (``ID | READER | MINUTES | SUBSET |
            PROJ. | BOOK ID | CH. TITLE | PROJECT TITLE``, ``;`` comments).
        readers: speaker ids.

    Returns:
        ``(book ids, normalised project titles)`` (:func:`normalize_title`).

    Raises:
        ValueError: a listed reader has no chapter in the file (a typo would otherwise leak
            test text into the LM).
    """
    want = {str(r) for r in readers}
    ids: set[int] = set()
    titles: set[str] = set()
    seen: set[str] = set()
    with open(chapters_txt, encoding="utf-8") as f:
        for line in f:
            if line.startswith(";") or not line.strip():
                continue
            cols = [c.strip() for c in line.split("|")]
            if len(cols) < 8 or cols[1] not in want:
                continue
            seen.add(cols[1])
            if cols[5].isdigit():
                ids.add(int(cols[5]))
            titles.add(normalize_title("|".join(cols[7:])))
    missing = want - seen
    if missing:
        raise ValueError(f"{chapters_txt}: no chapter read by speaker(s) "
                         f"{', '.join(sorted(missing))}")
    return ids, titles


@dataclass
class LmTextStats:
    """What :func:`write_lm_text` read and wrote.

    Attributes:
        books: books used; excluded: books left out (number or title of an evaluation book);
        sentences: sentences written; words: running words written; dropped: sentences
        dropped (digits or too short); unmarked: books without Gutenberg markers (kept
        whole); excluded_names: the files left out; leak_books: books left out because
        they hold at least ``leak_book_runs`` distinct runs of the ``leak_transcripts`` or
        runs of ``leak_book_utterances`` distinct transcripts (other editions,
        collections: counted in ``excluded`` too); leak_sentences:
        sentences dropped because they are a transcript or hold one of its runs.
    """

    books: int = 0
    excluded: int = 0
    sentences: int = 0
    words: int = 0
    dropped: int = 0
    unmarked: int = 0
    excluded_names: list[str] = field(default_factory=list)
    leak_books: int = 0
    leak_sentences: int = 0


def _title_of(path: Path, text: str) -> str:
    m = re.search(r"^Title:\s*(.+)$", text[:5000], re.MULTILINE)
    return m.group(1) if m else path.stem


def write_lm_text(books_dir: str | os.PathLike, out: str | os.PathLike, *,
                  exclude_ids: Iterable[int] = (), exclude_titles: Iterable[str] = (),
                  max_words: int | None = None, min_words: int = 3, seed: int = 0,
                  leak_transcripts: Iterable[str] = (), leak_n: int = 10,
                  leak_book_runs: int = 20, leak_book_utterances: int = 3) -> LmTextStats:
    """Normalised LM text (one sentence per line) from a folder of Gutenberg books.

    Books (``*.txt`` under ``books_dir``, any depth) are taken in an order shuffled by
    ``seed`` (a hash of the relative path, so a ``max_words`` slice is a random sample of
    books, the same on every run) and streamed: memory does not grow with the text. A book
    whose ``[EBook #N]`` is in ``exclude_ids`` or whose title (``Title:`` line or file
    name, :func:`normalize_title`) is in ``exclude_titles`` is skipped and logged.

    Args:
        books_dir: the books.
        out: the text file to write (atomically).
        exclude_ids: Gutenberg numbers to leave out (:func:`librispeech_books`).
        exclude_titles: normalised titles to leave out.
        max_words: stop after the book that reaches this many words (None: all books).
        min_words: drop shorter sentences.
        seed: order of the books.
        leak_transcripts: evaluation transcripts (normalised as the output): a book holding
            ``leak_book_runs`` or more distinct ``leak_n``-word runs of them, or runs of
            ``leak_book_utterances`` or more distinct transcripts, is left out whole (an
            edition or collection that the numbers and titles missed), and any
            other sentence that is a transcript or holds such a run is dropped
            (:class:`asrkit.text.leaks.RunMatcher`), so the text has none.
        leak_n: run length in words.
        leak_book_runs: distinct runs that make a whole book an evaluation book.
        leak_book_utterances: distinct transcripts hit that make a whole book an evaluation
            book (a quotation, e.g. of a poem, hits one or two consecutive ones).

    Returns:
        :class:`LmTextStats`.

    Raises:
        FileNotFoundError: ``books_dir`` holds no ``.txt`` file.
    """
    root = Path(books_dir)
    files = sorted(root.rglob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{root}: no .txt books found")
    files.sort(key=lambda p: hashlib.sha1(f"{seed}:{p.relative_to(root)}".encode()).digest())
    bad_ids, bad_titles = set(exclude_ids), set(exclude_titles)
    stats = LmTextStats()
    matcher = None
    leak_transcripts = list(leak_transcripts)
    if leak_transcripts:
        from asrkit.text.leaks import RunMatcher

        matcher = RunMatcher(leak_transcripts, leak_n)
    with atomic_write(out) as f:
        for path in files:
            if max_words is not None and stats.words >= max_words:
                break
            text = read_book(path)
            book = strip_gutenberg(text)
            title = normalize_title(_title_of(path, text))
            if (book.ebook_no is not None and book.ebook_no in bad_ids) or title in bad_titles \
                    or normalize_title(path.stem) in bad_titles:
                stats.excluded += 1
                stats.excluded_names.append(str(path.relative_to(root)))
                logger.info("leaving out %s (an evaluation book)", path.relative_to(root))
                continue
            sents: list[str] = []
            n_dropped = 0
            for s in split_sentences(book.body):
                norm = normalize_sentence(s, min_words=min_words)
                if norm is None:
                    n_dropped += 1
                else:
                    sents.append(norm)
            if matcher is not None:
                leaked = [matcher.hit(s.split()) for s in sents]
                runs = {g for s, bad in zip(sents, leaked) if bad
                        for g in matcher.runs_in(s.split())}
                utts = {u for s, bad in zip(sents, leaked) if bad
                        for u in matcher.utterances_in(s.split())}
                if len(runs) >= leak_book_runs or len(utts) >= leak_book_utterances:
                    stats.excluded += 1
                    stats.leak_books += 1
                    stats.excluded_names.append(str(path.relative_to(root)))
                    logger.info("leaving out %s: %d runs of %d evaluation transcripts",
                                path.relative_to(root), len(runs), len(utts))
                    continue
                if any(leaked):
                    stats.leak_sentences += sum(leaked)
                    logger.info("%s: dropped %d sentences holding evaluation transcripts",
                                path.relative_to(root), sum(leaked))
                    sents = [s for s, bad in zip(sents, leaked) if not bad]
            stats.books += 1
            stats.unmarked += not book.marked
            stats.dropped += n_dropped
            for norm in sents:
                f.write(norm + "\n")
                stats.sentences += 1
                stats.words += norm.count(" ") + 1
    logger.info("%s: %d sentences, %d words from %d books (%d left out, %d of them for "
                "transcript runs, %d without Gutenberg markers, %d sentences dropped, %d for "
                "transcript runs)", out, stats.sentences, stats.words, stats.books,
                stats.excluded, stats.leak_books, stats.unmarked, stats.dropped,
                stats.leak_sentences)
    return stats
