"""Reading and writing FSTs (OpenFst binary format) and their symbol tables.

Graphs are written as OpenFst ``vector`` FSTs in binary format (what Kaldi's ``L.fst``,
``G.fst``, ``HCLG.fst`` are and what ``fstprint``/``fstinfo`` read), atomically: to a temporary
file in the target directory, then ``os.replace``. The FSTs carry no symbol tables (Kaldi
style); the symbols are those of the lang directory's ``phones.txt`` and ``words.txt``
(:func:`asrkit.text.lexicon.write_lang`), which :func:`symbol_table` and :func:`read_symbols`
turn into pynini symbol tables for printing and for ``pynini.accep(..., token_type=...)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pynini

from asrkit.decode.wfst.graph import GraphError
from asrkit.text.lexicon import read_symbol_table

__all__ = ["read_fst", "read_symbols", "symbol_table", "write_fst"]


def write_fst(fst: pynini.Fst, path: str | os.PathLike) -> Path:
    """Write ``fst`` in OpenFst binary format, atomically (Kaldi writes ``*.fst`` the same way).

    The FST is written to a temporary file beside ``path``, flushed to disk and moved over
    ``path``; a failure leaves ``path`` untouched. The file gets ``open()``'s permissions
    (0666 less the umask). Symbol tables attached to ``fst`` are written with it.

    Args:
        fst: any FST (tropical ``standard`` arcs for the decoding graphs).
        path: output file; its parent directory is created if missing.

    Returns:
        ``path`` as a Path.

    Raises:
        pynini.FstIOError: OpenFst cannot write the file.
        OSError: the directory cannot be created or the file replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            mask = os.umask(0o022)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; give the file open()'s mode
        finally:
            os.close(fd)
        fst.write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def read_fst(path: str | os.PathLike, *, arc_type: str | None = "standard") -> pynini.Fst:
    """Read an FST written by :func:`write_fst` (or by OpenFst/Kaldi tools).

    Args:
        path: the ``.fst`` file (OpenFst binary format).
        arc_type: the arc type required (``"standard"``: tropical weights, 32-bit labels), or
            None to accept any.

    Returns:
        The FST (mutable ``vector`` FST).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        GraphError: the file is not an OpenFst FST, or has another arc type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FST file not found")
    try:
        fst = pynini.Fst.read(str(path))
    except pynini.FstIOError:
        raise GraphError(f"{path}: cannot read an FST; expected an OpenFst binary file "
                         "(fst.write, fstcompile)") from None
    if arc_type is not None and fst.arc_type() != arc_type:
        raise GraphError(f"{path}: arc type {fst.arc_type()!r}; expected {arc_type!r}")
    return fst


def symbol_table(table: Mapping[str, int], name: str = "") -> pynini.SymbolTable:
    """A pynini symbol table from ``{symbol: id}`` (:attr:`Lang.phones`, :attr:`Lang.words`).

    Use it to print an FST (``fst.set_input_symbols(st)``) or to compile a string of symbols
    (``pynini.accep("A CAT", token_type=st)``).
    """
    st = pynini.SymbolTable(name)
    for sym, i in table.items():
        st.add_symbol(sym, i)
    return st


def read_symbols(path: str | os.PathLike) -> pynini.SymbolTable:
    """Read a lang's ``phones.txt`` or ``words.txt`` (``SYMBOL ID`` lines) as a pynini symbol
    table named after the file.

    Raises:
        asrkit.text.lexicon.LexiconError: missing or malformed file (names file and line).
    """
    return symbol_table(read_symbol_table(path), name=Path(path).name)
