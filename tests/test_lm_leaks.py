"""The leak check: evaluation transcripts and their 10-word runs in an LM text."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrkit.cli import main
from asrkit.text.books import write_lm_text
from asrkit.text.leaks import find_leaks, read_eval_transcripts

EVAL = ["ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE",
        "SHORT ONE HERE",
        "A B C D E F G H I J"]


def _data_dir(root: Path) -> Path:
    d = root / "dev"
    d.mkdir()
    (d / "text").write_text("".join(f"utt{i} {t}\n" for i, t in enumerate(EVAL)))
    return d


def _lm(root: Path, lines: list[str]) -> Path:
    p = root / "lm.txt"
    p.write_text("".join(x + "\n" for x in lines))
    return p


def test_clean_text_has_no_leaks(tmp_path: Path) -> None:
    lm = _lm(tmp_path, ["ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE", "SHORT ONE", "X Y Z"])
    rep = find_leaks(lm, read_eval_transcripts([_data_dir(tmp_path)]))
    assert rep.clean and rep.lines == 3 and rep.words == 14
    assert rep.utterances == 3 and rep.ngrams == 3 + 1  # 12 words: 3 runs; 10 words: 1


def test_sentences_and_runs_are_found(tmp_path: Path) -> None:
    lm = _lm(tmp_path, [
        "SO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN SAID HE",  # run inside a line
        "SHORT ONE HERE",  # a whole (short) transcript
        "A B C D E F G H I J",  # a whole transcript, also a run
        "NOTHING TO SEE HERE AT ALL IN THIS LINE OF TEXT",
        "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN",  # same run again
    ])
    rep = find_leaks(lm, read_eval_transcripts([_data_dir(tmp_path)]))
    assert not rep.clean
    assert rep.sentences_found == 2
    assert rep.ngrams_found == 2  # "ONE .. TEN" and "A .. J", each counted once
    assert rep.utterances_hit == 3
    assert rep.lines_hit == 4
    assert rep.examples[0] == (1, "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN")


def test_run_length_and_errors(tmp_path: Path) -> None:
    lm = _lm(tmp_path, ["X THREE FOUR FIVE Y"])
    assert find_leaks(lm, EVAL, n=3).ngrams_found == 1
    assert find_leaks(lm, EVAL, n=4).clean
    with pytest.raises(ValueError):
        find_leaks(lm, EVAL, n=0)
    with pytest.raises(FileNotFoundError):
        read_eval_transcripts([tmp_path / "missing"])


def test_lm_text_left_out_book_is_not_leaked(tmp_path: Path) -> None:
    """A book excluded by Gutenberg number leaves no run of its sentences in the LM text."""
    books = tmp_path / "books"
    books.mkdir()
    secret = "The quick brown fox jumps over the lazy dog near the river bank today."
    for no, body in ((11, "It was a dark and stormy night with rain. Nobody came."),
                     (22, secret)):
        (books / f"b{no}.txt").write_text(
            f"The Project Gutenberg EBook of Book {no}\n[EBook #{no}]\n\n"
            f"*** START OF THIS PROJECT GUTENBERG EBOOK B ***\n\n{body}\n\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK B ***\n")
    ref = ["THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG NEAR THE RIVER BANK TODAY"]
    out = tmp_path / "all.txt"
    write_lm_text(books, out)
    assert find_leaks(out, ref).ngrams_found == 5  # 14 words: 5 runs of 10
    write_lm_text(books, out, exclude_ids={22})
    assert find_leaks(out, ref).clean


def test_cli_lm_leaks(tmp_path: Path, capsys) -> None:
    d = _data_dir(tmp_path)
    lm = _lm(tmp_path, ["SHORT ONE HERE", "NOTHING ELSE"])
    assert main(["lm-leaks", str(lm), str(d)]) == 1
    out = capsys.readouterr().out
    assert "1 transcripts found as a line" in out and "line 1: SHORT ONE HERE" in out
    assert main(["lm-leaks", str(_lm(tmp_path, ["NOTHING ELSE"])), str(d / "text")]) == 0


def _book(books: Path, no: int, body: str) -> None:
    (books / f"b{no}.txt").write_text(
        f"The Project Gutenberg EBook of Book {no}\n[EBook #{no}]\n\n"
        f"*** START OF THIS PROJECT GUTENBERG EBOOK B ***\n\n{body}\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK B ***\n")


def test_leak_filter_drops_books_and_sentences(tmp_path: Path) -> None:
    """A collection holding an evaluation chapter (many runs) is left out whole; a book that
    quotes one transcript loses only that sentence; the result has no leak."""
    books = tmp_path / "books"
    books.mkdir()
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    chapter = [f"{w} and more words in the line called {w} of the chapter here." for w in
               names]
    evaluation = [" ".join(s.upper().rstrip(".").split()) for s in chapter]
    _book(books, 1, "A collection. " + " ".join(chapter) + " The end of it all today.")
    _book(books, 2, f"Some other story begins. {chapter[3]} It goes on and on then.")
    _book(books, 3, "Nothing to see in this one. Nor in this sentence here.")
    out = tmp_path / "lm.txt"
    st = write_lm_text(books, out, leak_transcripts=evaluation, leak_book_runs=5,
                       leak_book_utterances=99)
    assert st.leak_books == 1 and st.excluded == 1 and st.excluded_names == ["b1.txt"]
    assert st.leak_sentences == 1 and st.books == 2
    text = out.read_text()
    assert "SOME OTHER STORY BEGINS" in text and "IT GOES ON AND ON THEN" in text
    assert find_leaks(out, evaluation).clean
    write_lm_text(books, out)
    assert not find_leaks(out, evaluation).clean


def test_cli_lm_text_exclude_transcripts(tmp_path: Path, capsys) -> None:
    books = tmp_path / "books"
    books.mkdir()
    _book(books, 1, "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN. Other words here.")
    d = _data_dir(tmp_path)
    out = tmp_path / "lm.txt"
    assert main(["lm-text", str(books), str(out), "--exclude-transcripts", str(d)]) == 0
    assert "1 sentences dropped" in capsys.readouterr().out
    assert out.read_text() == "OTHER WORDS HERE\n"


def test_leak_filter_book_by_distinct_transcripts(tmp_path: Path) -> None:
    """Runs of 3 different transcripts make a book an evaluation book (another edition);
    a quotation hitting fewer is only dropped sentence by sentence."""
    books = tmp_path / "books"
    books.mkdir()
    lines = ["Tom said nothing at all to the old man by the river bank",
             "the cat sat on the warm mat near the kitchen door all day",
             "a storm came over the hills and the rain fell on the roofs",
             "she wrote a long letter to her brother who lived in the north"]
    evaluation = [x.upper() for x in lines]
    _book(books, 1, ". ".join(lines[:3]) + ". Then they went home for good.")
    _book(books, 2, f"{lines[3]}. Then she went home for good.")
    out = tmp_path / "lm.txt"
    st = write_lm_text(books, out, leak_transcripts=evaluation)
    assert st.excluded_names == ["b1.txt"] and st.leak_sentences == 1
    assert out.read_text() == "THEN SHE WENT HOME FOR GOOD\n"
    assert find_leaks(out, evaluation).clean
