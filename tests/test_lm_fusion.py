"""Word n-gram shallow fusion in CTC prefix beam search (asrkit.lm.fusion)."""

from __future__ import annotations

import math

import pytest
import torch

from asrkit.decode.ctc import ctc_prefix_beam_search
from asrkit.lm.fusion import WordNgramScorer
from asrkit.lm.ngram import estimate_ngram

PIECES = ["<blank>", "<unk>", "<sos/eos>", "\u2581A", "\u2581B", "C", "\u2581AC"]


@pytest.fixture(scope="module")
def lm():
    return estimate_ngram(["A B"] * 8 + ["B A"] + ["AC B", "A BC"], order=2)


def test_scorer_sums_to_the_sentence_log_probability(lm):
    sc = WordNgramScorer(lm, PIECES, word_bonus=0.5)
    prefix, total = (), 0.0
    for tok in (3, 5, 4, 5, 3):  # "▁A C ▁B C ▁A" = AC BC A
        total += sc(prefix, tok)
        prefix = (*prefix, tok)
    total += sc.final(prefix)
    assert sc.words(prefix) == ["AC", "BC", "A"]
    assert total == pytest.approx(lm.score_sentence("AC BC A") + 3 * 0.5)
    # A word piece that continues a word scores nothing until the word ends.
    assert sc((3,), 5) == 0.0
    # A fresh scorer rebuilds state for a prefix it has not seen step by step.
    assert WordNgramScorer(lm, PIECES).final((3, 4)) == pytest.approx(
        lm.score_sentence("A B") - lm.score(lm.start_state(), "A")[0])
    with pytest.raises(ValueError):
        WordNgramScorer(lm, [])


def _posteriors(frames: list[dict[int, float]], vocab: int = len(PIECES)) -> torch.Tensor:
    rows = []
    for f in frames:
        rest = (1.0 - sum(f.values())) / (vocab - len(f))
        rows.append([math.log(f.get(i, rest)) for i in range(vocab)])
    return torch.tensor(rows)


def test_fusion_changes_the_best_hypothesis_toward_the_lm(lm):
    # Acoustics slightly prefer "B A"; the LM saw "A B" eight times as often.
    lp = _posteriors([{4: 0.5, 3: 0.4}, {0: 0.9}, {3: 0.5, 4: 0.4}, {0: 0.9}])
    plain = ctc_prefix_beam_search(lp, beam=8)
    assert plain[0][0] == [4, 3]
    sc = WordNgramScorer(lm, PIECES)
    fused = ctc_prefix_beam_search(lp, beam=8, scorer=sc, lm_weight=1.0, final_scorer=sc.final)
    assert fused[0][0] == [3, 4]
    # The returned score is the acoustic score plus the weighted LM score of the words.
    ac = {tuple(h): s for h, s in plain}
    assert fused[0][1] == pytest.approx(ac[(3, 4)] + lm.score_sentence("A B"))
    # Weight 0 is the plain search.
    assert ctc_prefix_beam_search(lp, beam=8, scorer=sc, lm_weight=0.0,
                                  final_scorer=sc.final) == plain


def test_word_bonus_trades_deletions_for_insertions(lm):
    # One frame that may or may not be a second word.
    lp = _posteriors([{3: 0.8}, {0: 0.9}, {4: 0.3, 0: 0.6}])
    sc0 = WordNgramScorer(lm, PIECES, word_bonus=0.0)
    sc9 = WordNgramScorer(lm, PIECES, word_bonus=9.0)
    short = ctc_prefix_beam_search(lp, beam=8, scorer=sc0, lm_weight=0.1,
                                   final_scorer=sc0.final)[0][0]
    long = ctc_prefix_beam_search(lp, beam=8, scorer=sc9, lm_weight=0.1,
                                  final_scorer=sc9.final)[0][0]
    assert len(long) > len(short)
