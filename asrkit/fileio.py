"""Atomic file writing and stage-completion markers shared by every stage.

Every stage writes its outputs through :func:`atomic_write` (write to a temporary file in the
same directory, ``fsync``, then ``os.replace``), so a process killed mid-write never leaves a
half-written file that a later stage would trust. A stage that finished writes a ``.done``
marker with :func:`mark_done`; rerunning it with :func:`is_done` true skips the work, which is
Kaldi's ``--stage`` habit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["FileLineError", "atomic_write", "is_done", "mark_done", "stage_log"]


class FileLineError(ValueError):
    """Bad content in an input file, located: ``<path>:<line>: <what is wrong>``.

    The base of the errors that name the exact bad line (Kaldi's validate_data_dir.sh habit):
    :class:`asrkit.data.datadir.DataDirError`, :class:`asrkit.text.lexicon.LexiconError`,
    :class:`asrkit.lm.ngram.ArpaError`. The message is ``<path>: <reason>`` when no single line
    is at fault and just ``<reason>`` when no file is involved.

    Attributes:
        path: the offending file (or directory), or None.
        line: 1-based line number, or None.
        reason: the message without the location prefix.
    """

    def __init__(self, path: str | os.PathLike | None, line: int | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = reason
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(f"{where}{reason}")

    def __reduce__(self):  # keep picklable across worker processes
        return (type(self), (self.path, self.line, self.reason))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
                 ) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it over ``path`` only on success.

    The file gets the permissions ``open()`` would give it (0666 less the umask).

    Args:
        path: final file path; its parent directory is created if missing.
        mode: ``"w"`` (text, default) or ``"wb"`` (binary).
        encoding: text encoding for text mode (ignored in binary mode).

    Yields:
        The open temporary file object.

    Raises:
        Whatever the body raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file open()'s mode
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else "\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def mark_done(out_dir: str | os.PathLike, name: str = ".done") -> None:
    """Write the completion marker ``out_dir/name`` atomically (after all outputs exist)."""
    with atomic_write(Path(out_dir) / name) as f:
        f.write("ok\n")


def is_done(out_dir: str | os.PathLike, name: str = ".done") -> bool:
    """Return True when ``out_dir/name`` exists, i.e. the stage writing there completed."""
    return (Path(out_dir) / name).is_file()


@contextlib.contextmanager
def stage_log(log_path: str | os.PathLike, level: int = logging.INFO) -> Iterator[Path]:
    """Copy the ``asrkit`` logger's records to ``log_path`` while the ``with`` body runs.

    One log file per stage lives in that stage's output directory (DESIGN.md); the file is
    appended to, so a resumed stage keeps the history of its earlier runs.

    Yields:
        The log file path.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("asrkit")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield log_path
    finally:
        logger.removeHandler(handler)
        handler.close()
