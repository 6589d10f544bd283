"""Tests for asrkit.text.books: LM text from Project Gutenberg books (synthetic books)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrkit.cli import main
from asrkit.text.books import (
    librispeech_books,
    normalize_sentence,
    normalize_title,
    read_book,
    split_sentences,
    strip_gutenberg,
    write_lm_text,
)


def _book(title: str, number: int | None, body: str, *, old_style: bool = False) -> str:
    ebook = f"  [EBook #{number}]" if number is not None else ""
    if old_style:
        head = (f"The Project Gutenberg Etext of {title}\n\nLEGALESE legalese\n"
                "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n")
        foot = f"\nEnd of the Project Gutenberg Etext of {title}\nMore licence text here.\n"
    else:
        head = (f"The Project Gutenberg EBook of {title}\n\nTitle: {title}\n\n"
                f"Release Date: May 1, 2003{ebook}\n\n"
                f"*** START OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\n")
        foot = (f"\n*** END OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\n"
                "Licence: you may copy it, give it away. Section 1.\n")
    return head + body + foot


BODY = ("CHAPTER I\n\nMr. Smith went to\nthe market. He bought 3 apples!\n\n"
        "\u201cWhere is the caf\u00e9?\u201d she asked the dogs' owner. Don't go there.\n")


def test_strip_gutenberg_new_and_old_markers():
    book = strip_gutenberg(_book("A Tale", 1234, BODY))
    assert book.ebook_no == 1234 and book.marked
    assert "LICENCE" not in book.body.upper() and "START OF" not in book.body
    assert book.body.strip().startswith("CHAPTER I")
    old = strip_gutenberg(_book("Old Tale", None, BODY, old_style=True))
    assert old.marked and old.ebook_no is None
    assert "legalese" not in old.body and "More licence" not in old.body
    bare = strip_gutenberg("just some text\nwithout markers\n")
    assert not bare.marked and "without markers" in bare.body


def test_split_and_normalize_like_librispeech_lm_norm():
    sents = list(split_sentences(BODY))
    # "Mr." does not end a sentence; paragraph lines are joined
    assert sents[1] == "MISTER Smith went to the market."
    norm = [normalize_sentence(s) for s in sents]
    assert norm[0] is None  # "CHAPTER I": too short
    assert norm[1] == "MISTER SMITH WENT TO THE MARKET"
    assert norm[2] is None  # a digit: dropped, never a wrong spelling
    assert norm[3] == "WHERE IS THE CAFE"  # accent removed, quotes gone
    assert norm[4] == "SHE ASKED THE DOGS OWNER"  # trailing apostrophe removed
    assert norm[5] == "DON'T GO THERE"
    assert normalize_sentence("Don't go there.", min_words=2) == "DON'T GO THERE"
    assert normalize_sentence("Hello, world -- again; yes.") == "HELLO WORLD AGAIN YES"


def test_read_book_latin1_fallback(tmp_path):
    p = tmp_path / "b.txt"
    p.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    assert read_book(p) == "caf\u00e9 au lait"


CHAPTERS = """\
;ID     |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE    | PROJECT TITLE
1000   | 1970 | 12.0  | train-clean-5    | 1    | 1234  | Chapter 1    | A Tale
1001   | 3664 | 11.0  | train-clean-5    | 2    | 999   | Chapter 2    | Secret | Places
1002   | 118  | 10.0  | train-clean-5    | 3    | 555   | Chapter 3    | Kept Book
"""


def test_librispeech_books_and_missing_reader(tmp_path):
    ch = tmp_path / "CHAPTERS.TXT"
    ch.write_text(CHAPTERS)
    ids, titles = librispeech_books(ch, ["1970", "3664"])
    assert ids == {1234, 999}
    assert titles == {"a tale", "secret places"}  # a '|' inside the title is kept
    with pytest.raises(ValueError, match="4242"):
        librispeech_books(ch, ["1970", "4242"])


def _library(root: Path) -> Path:
    books = root / "books"
    words = "the quick brown fox jumps over the lazy dog again"
    for i, (title, no) in enumerate([("A Tale", 1234), ("Secret Places", None),
                                     ("Kept Book", 555), ("Other Book", 777)]):
        d = books / f"Author {i}"
        d.mkdir(parents=True)
        body = "".join(f"{words} {title} sentence {'x' * (k % 3 + 1)}.\n\n" for k in range(50))
        (d / f"{title}.txt").write_text(_book(title, no, body))
    return books


def test_write_lm_text_excludes_evaluation_books(tmp_path):
    books = _library(tmp_path)
    out = tmp_path / "lm.txt"
    st = write_lm_text(books, out, exclude_ids={1234}, exclude_titles={"secret places"})
    text = out.read_text()
    assert st.books == 2 and st.excluded == 2
    assert "A TALE" not in text and "SECRET PLACES" not in text
    assert "KEPT BOOK" in text and "OTHER BOOK" in text
    lines = text.splitlines()
    assert st.sentences == len(lines) == 100
    assert st.words == sum(len(line.split()) for line in lines)
    # a slice stops after the book that reaches max_words, and the order is reproducible
    st2 = write_lm_text(books, tmp_path / "s.txt", max_words=10)
    assert st2.books == 1
    again = write_lm_text(books, tmp_path / "s2.txt", max_words=10)
    assert (tmp_path / "s.txt").read_text() == (tmp_path / "s2.txt").read_text()
    assert again.books == 1
    with pytest.raises(FileNotFoundError):
        write_lm_text(tmp_path / "nothing", tmp_path / "x.txt")


def test_cli_lm_text(tmp_path, capsys):
    books = _library(tmp_path)
    ch = tmp_path / "CHAPTERS.TXT"
    ch.write_text(CHAPTERS)
    out = tmp_path / "lm.txt"
    assert main(["lm-text", str(books), str(out), "--chapters", str(ch),
                 "--exclude-readers", "1970,3664"]) == 0
    msg = capsys.readouterr().out
    assert "2 left out" in msg and "A Tale.txt" in msg
    assert "KEPT BOOK" in out.read_text() and "A TALE" not in out.read_text()
    assert main(["lm-text", str(books), str(out), "--exclude-readers", "1970"]) == 2
    assert "--chapters" in capsys.readouterr().err


def test_normalize_title():
    assert normalize_title("  Northanger Abbey. ") == normalize_title("NORTHANGER  ABBEY")
