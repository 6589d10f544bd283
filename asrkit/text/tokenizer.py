"""Sentencepiece tokenizer with explicit CTC ``<blank>`` and ``<unk>`` ids.

The model is trained on a Kaldi ``text`` file (transcripts only, the utterance id removed) with
``sentencepiece`` (Kudo & Richardson, 2018). Ids are fixed so every model family agrees:

=====  ===============  ==========================================
id     piece            role
=====  ===============  ==========================================
0      ``<blank>``      CTC blank (sentencepiece's pad slot)
1      ``<unk>``        unknown
2      ``<sos/eos>``    start/end of sentence for attention decoders
3..    pieces           characters / subwords
=====  ===============  ==========================================
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm

from asrkit.fileio import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["BLANK_ID", "SOS_EOS_ID", "UNK_ID", "Tokenizer", "iter_transcripts", "read_transcripts",
           "train_tokenizer"]

BLANK_ID = 0
UNK_ID = 1
SOS_EOS_ID = 2


def iter_transcripts(path: str | os.PathLike, *, utt_ids: bool = True) -> Iterator[str]:
    """The transcripts of a text file one at a time, words joined by single spaces, streamed
    (for text larger than memory): Kaldi ``text`` (``utt-id WORDS…``; the id is dropped) or,
    with ``utt_ids=False``, one sentence a line (blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a Kaldi line without words (empty transcript or blank line), naming
            ``file:line``.
    """
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            words = line.split()
            if utt_ids:
                if len(words) < 2:
                    raise ValueError(f"{path}:{no}: expected 'utt-id WORDS...', got "
                                     f"{line.rstrip()!r}")
                words = words[1:]
            if words:
                yield " ".join(words)


def read_transcripts(path: str | os.PathLike, *, utt_ids: bool = True) -> list[str]:
    """All transcripts of a text file as a list (:func:`iter_transcripts`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a Kaldi line without words, naming ``file:line``.
    """
    return list(iter_transcripts(path, utt_ids=utt_ids))


def train_tokenizer(text_path: str | os.PathLike, model_prefix: str | os.PathLike, *,
                    vocab_size: int = 30, model_type: str = "char",
                    character_coverage: float = 1.0) -> Path:
    """Train a sentencepiece model on the transcripts of a Kaldi ``text`` file.

    Args:
        text_path: Kaldi ``text`` (``utt-id WORDS…`` per line, UTF-8).
        model_prefix: output prefix; writes ``<prefix>.model`` and ``<prefix>.vocab``.
        vocab_size: target vocabulary including the 3 reserved ids. For ``char`` it is an
            upper bound (``hard_vocab_limit=false``).
        model_type: ``"char"``, ``"bpe"`` or ``"unigram"``.
        character_coverage: sentencepiece's character coverage (1.0 for small alphabets).

    Returns:
        Path of the ``.model`` file.

    Raises:
        ValueError: on a malformed ``text`` line (file and line named) or an empty file.
    """
    if model_type not in {"char", "bpe", "unigram"}:
        raise ValueError(f"model_type must be char, bpe or unigram, got {model_type!r}")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = read_transcripts(text_path)
    if not lines:
        raise ValueError(f"{text_path}: no transcripts to train a tokenizer on")
    with tempfile.TemporaryDirectory(dir=prefix.parent) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp_prefix = Path(tmp) / "sp"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(tmp_prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            pad_id=BLANK_ID, pad_piece="<blank>", unk_id=UNK_ID, bos_id=-1, eos_id=-1,
            control_symbols=["<sos/eos>"], hard_vocab_limit=model_type != "char",
            minloglevel=2,
        )
        for ext in (".model", ".vocab"):
            data = (Path(f"{tmp_prefix}{ext}")).read_bytes()
            with atomic_write(f"{prefix}{ext}", "wb") as f:
                f.write(data)
    model = Path(f"{prefix}.model")
    logger.info("trained %s tokenizer with %d pieces: %s", model_type,
                Tokenizer(model).vocab_size, model)
    return model


class Tokenizer:
    """Thin wrapper over a sentencepiece model with the id layout of this module.

    Args:
        model_path: a ``.model`` file written by :func:`train_tokenizer`.

    Raises:
        ValueError: if the model does not reserve ``<blank>`` at id 0 and ``<unk>`` at id 1.
    """

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        if self.sp.id_to_piece(BLANK_ID) != "<blank>" or self.sp.unk_id() != UNK_ID:
            raise ValueError(f"{model_path}: expected <blank> at id 0 and <unk> at id 1; "
                             "train it with asrkit.text.tokenizer.train_tokenizer")

    @property
    def vocab_size(self) -> int:
        """Number of ids V, including blank, unk and sos/eos."""
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Map a transcript to token ids (never contains blank)."""
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        """Map token ids back to text; blank and sos/eos ids are dropped."""
        return self.sp.decode([i for i in ids if i not in (BLANK_ID, SOS_EOS_ID)])

    def pieces(self, ids: list[int]) -> list[str]:
        """Token ids to their sentencepiece pieces (for n-best and debugging)."""
        return [self.sp.id_to_piece(i) for i in ids]
