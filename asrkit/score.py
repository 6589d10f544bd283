"""WER / CER scoring with jiwer and sclite-style result tables.

Hypotheses and references are Kaldi ``text`` files (``utt-id WORDS…``). The summary follows the
columns of NIST sclite's ``.sys`` report as printed in Kaldi/ESPnet ``RESULTS.md``:
``#Snt #Wrd Corr Sub Del Ins Err S.Err`` (percentages of reference words / sentences).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import jiwer

from asrkit.data.datadir import read_kaldi_map
from asrkit.fileio import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "ErrorCounts",
    "ScoreReport",
    "append_results",
    "format_table",
    "score_files",
    "score_texts",
    "write_score_dir",
]


@dataclass
class ErrorCounts:
    """Edit-distance totals over a test set for one unit (words or characters).

    Attributes:
        sentences: number of scored utterances (#Snt).
        ref_units: number of reference units (#Wrd or #Chr).
        correct, sub, dele, ins: alignment counts.
        sent_err: utterances with at least one error.
    """

    sentences: int = 0
    ref_units: int = 0
    correct: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    sent_err: int = 0

    @property
    def err(self) -> int:
        """Total errors S + D + I."""
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent: 100 (S + D + I) / N."""
        return 100.0 * self.err / max(self.ref_units, 1)

    def pct(self, n: int) -> float:
        """``n`` as a percentage of the reference units."""
        return 100.0 * n / max(self.ref_units, 1)


@dataclass
class ScoreReport:
    """WER and CER totals plus the per-utterance alignments (one text block each)."""

    wer: ErrorCounts
    cer: ErrorCounts
    alignments: list[str]
    missing_hyps: list[str]


def _count(refs: list[str], hyps: list[str], unit: str) -> tuple[ErrorCounts, list]:
    counts = ErrorCounts(sentences=len(refs))
    per_utt = []
    for ref, hyp in zip(refs, hyps):
        if unit == "char":
            ref_u, hyp_u = ref.replace(" ", ""), hyp.replace(" ", "")
            out = jiwer.process_characters(ref_u, hyp_u)
        else:
            out = jiwer.process_words(ref, hyp)
        counts.ref_units += out.hits + out.substitutions + out.deletions
        counts.correct += out.hits
        counts.sub += out.substitutions
        counts.dele += out.deletions
        counts.ins += out.insertions
        counts.sent_err += int(out.substitutions + out.deletions + out.insertions > 0)
        per_utt.append(out)
    return counts, per_utt


def score_texts(refs: dict[str, str], hyps: dict[str, str]) -> ScoreReport:
    """Score hypotheses against references, utterance by utterance.

    Args:
        refs: utterance id → reference transcript (non-empty).
        hyps: utterance id → hypothesis (may be empty). An utterance missing from ``hyps`` is
            scored as an empty hypothesis (all deletions) and listed in ``missing_hyps``;
            hypotheses for ids not in ``refs`` are ignored with a warning.

    Returns:
        A :class:`ScoreReport` with word (WER) and character (CER, spaces removed) counts.

    Raises:
        ValueError: if ``refs`` is empty or holds an empty reference.
    """
    if not refs:
        raise ValueError("no reference utterances to score")
    ids = sorted(refs, key=lambda u: u.encode("utf-8"))
    empty = [u for u in ids if not refs[u].strip()]
    if empty:
        raise ValueError(f"empty reference transcript for utterance {empty[0]!r}")
    missing = [u for u in ids if u not in hyps]
    if missing:
        logger.warning("%d reference utterances have no hypothesis (scored as deletions), "
                       "first: %s", len(missing), missing[0])
    extra = [u for u in hyps if u not in refs]
    if extra:
        logger.warning("%d hypotheses have no reference and are ignored, first: %s",
                       len(extra), extra[0])
    ref_l = [" ".join(refs[u].split()) for u in ids]
    hyp_l = [" ".join(hyps.get(u, "").split()) for u in ids]
    wer, word_out = _count(ref_l, hyp_l, "word")
    cer, _ = _count(ref_l, hyp_l, "char")
    alignments = []
    for u, out in zip(ids, word_out):
        block = jiwer.visualize_alignment(out, show_measures=False, skip_correct=False)
        # jiwer heads the block "=== SENTENCE 1 ==="; name the utterance instead.
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("===")]
        alignments.append(f"id: {u}\n" + "\n".join(lines) + "\n")
    return ScoreReport(wer=wer, cer=cer, alignments=alignments, missing_hyps=missing)


def score_files(ref_path: str | os.PathLike, hyp_path: str | os.PathLike) -> ScoreReport:
    """Score two Kaldi ``text`` files (see :func:`score_texts`).

    Raises:
        asrkit.data.datadir.DataDirError: malformed/duplicate/non-UTF-8 lines (file and line).
    """
    refs = read_kaldi_map(ref_path)
    hyps = read_kaldi_map(hyp_path, allow_empty_value=True)
    return score_texts(refs, hyps)


_HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"


def format_table(rows: list[tuple[str, ErrorCounts]], unit: str = "Wrd") -> str:
    """Markdown sclite-style table: one row per (name, counts), numbers in percent.

    Args:
        rows: ``(dataset name, ErrorCounts)`` pairs.
        unit: column title for the reference-unit count, ``"Wrd"`` or ``"Chr"``.
    """
    lines = [_HEADER.replace("Wrd", unit), "|---|---|---|---|---|---|---|---|---|"]
    for name, c in rows:
        lines.append(
            f"|{name}|{c.sentences}|{c.ref_units}|{c.pct(c.correct):.1f}|{c.pct(c.sub):.1f}|"
            f"{c.pct(c.dele):.1f}|{c.pct(c.ins):.1f}|{c.rate:.1f}|"
            f"{100.0 * c.sent_err / max(c.sentences, 1):.1f}|")
    return "\n".join(lines) + "\n"


def write_score_dir(report: ScoreReport, out_dir: str | os.PathLike, name: str) -> str:
    """Write ``score.txt`` (WER and CER tables), ``score.json`` (the same counts, machine
    readable: ``{"name", "wer": {...}, "cer": {...}}`` with ``rate`` in %) and ``per_utt``
    alignments into ``out_dir``.

    Returns:
        The text written to ``score.txt``.
    """
    out_dir = Path(out_dir)
    text = (f"## WER\n\n{format_table([(name, report.wer)])}\n"
            f"## CER\n\n{format_table([(name, report.cer)], unit='Chr')}")
    with atomic_write(out_dir / "score.txt") as f:
        f.write(text)
    with atomic_write(out_dir / "score.json") as f:
        json.dump({"name": name, "wer": _counts_dict(report.wer),
                   "cer": _counts_dict(report.cer)}, f, indent=1)
    with atomic_write(out_dir / "per_utt") as f:
        f.write("\n".join(report.alignments))
    return text


def _counts_dict(c: ErrorCounts) -> dict:
    return {"sentences": c.sentences, "ref_units": c.ref_units, "correct": c.correct,
            "sub": c.sub, "del": c.dele, "ins": c.ins, "sent_err": c.sent_err,
            "rate": round(c.rate, 4)}


def append_results(results_md: str | os.PathLike, title: str, body: str) -> None:
    """Append a titled, time-stamped section to a ``RESULTS.md`` (rewritten atomically)."""
    results_md = Path(results_md)
    old = results_md.read_text(encoding="utf-8") if results_md.exists() else "# RESULTS\n"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with atomic_write(results_md) as f:
        f.write(f"{old.rstrip()}\n\n### {title} ({stamp})\n\n{body.rstrip()}\n")
