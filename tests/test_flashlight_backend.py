"""Flashlight's CTC decoder as a backend (asrkit.decode.flashlight) against asrkit's own prefix
beam search: same 1-best without and with a word n-gram, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from asrkit.decode import flashlight as fl_mod
from asrkit.decode.ctc import ctc_prefix_beam_search
from asrkit.decode.flashlight import FlashlightCTCDecoder, flashlight_available, kenlm_available
from asrkit.lm.fusion import WordNgramScorer
from asrkit.lm.ngram import estimate_ngram, write_arpa
from asrkit.text.tokenizer import BLANK_ID, Tokenizer, train_tokenizer
from tests.synth import make_text_file

needs_flashlight = pytest.mark.skipif(not flashlight_available(),
                                      reason="flashlight-text not installed")
needs_kenlm = pytest.mark.skipif(not kenlm_available(), reason="flashlight-text without KenLM")

SENTENCES = ["ONE TWO THREE", "TWO THREE FOUR", "THREE FOUR FIVE", "ONE FIVE",
             "SEVEN ONE TWO", "NINE TEN", "EIGHT ZERO"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    """A BPE model where ONE..FIVE are single pieces and SEVEN, EIGHT, NINE take several."""
    tmp = tmp_path_factory.mktemp("tok")
    text = make_text_file(tmp / "text", {f"u{i:03d}": s for i, s in enumerate(SENTENCES * 20)})
    return Tokenizer(train_tokenizer(text, tmp / "bpe", model_type="bpe", vocab_size=40))


@pytest.fixture(scope="module")
def lm():
    """Prefers "SEVEN ONE TWO" to "SEVEN TWO ONE" eight to one."""
    return estimate_ngram(["SEVEN ONE TWO"] * 8 + ["SEVEN TWO ONE"] + SENTENCES, order=3)


def pieces_of(tok: Tokenizer) -> list[str]:
    return tok.pieces(list(range(tok.vocab_size)))


def spiky(slots: list[dict[int, float]], vocab: int, blank_p: float = 0.9) -> torch.Tensor:
    """(T, V) log posteriors: each slot is one frame with the given token probabilities, then
    a blank frame; leftover mass is spread over the other tokens."""
    rows = []
    for slot in slots:
        for frame in (slot, {BLANK_ID: blank_p}):
            rest = (1.0 - sum(frame.values())) / (vocab - len(frame))
            rows.append([math.log(frame.get(i, rest)) for i in range(vocab)])
    return torch.tensor(rows)


PEAK = 6.0  # logit boost of the right token: a posterior of about 0.85 with V = 40


def random_peaked(vocab: int, seed: int) -> torch.Tensor:
    """(T, V) log posteriors of a random token sequence: each token peaks for 1-3 frames with
    blank runs between, plus noise; peaks are strong but not certain."""
    g = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
        token = int(torch.randint(3, vocab, (1,), generator=g))
        frames += [token] * int(torch.randint(1, 4, (1,), generator=g))
        frames += [BLANK_ID] * int(torch.randint(1, 3, (1,), generator=g))
    logits = torch.randn(len(frames), vocab, generator=g, dtype=torch.float64)
    logits[torch.arange(len(frames)), torch.tensor(frames)] += PEAK
    return logits.log_softmax(-1).float().double()  # float32 values, as Flashlight sees them


def ctc_log_prob(lp: torch.Tensor, ids: list[int]) -> float:
    """Exact log P(ids | lp): the CTC forward algorithm (torch's ctc_loss), all alignments."""
    return -torch.nn.functional.ctc_loss(
        lp[:, None], torch.tensor([ids]), torch.tensor([lp.size(0)]), torch.tensor([len(ids)]),
        blank=BLANK_ID, reduction="sum").item()


def fused_log_prob(lp: torch.Tensor, ids: list[int], lm, pieces: list[str], lm_weight: float,
                   word_bonus: float) -> float:
    """The exact fused score of ``ids``: all-alignment CTC log-prob plus the weighted LM score
    and bonus of the words the pieces spell."""
    words = WordNgramScorer(lm, pieces).words(tuple(ids))
    return ctc_log_prob(lp, ids) + lm_weight * (lm.score_sentence(words)
                                                + word_bonus * len(words))


def one_best(dec: FlashlightCTCDecoder, lp: torch.Tensor) -> tuple[list[int], float]:
    return dec.decode(lp[None], torch.tensor([lp.size(0)]))[0][0]


@needs_flashlight
def test_full_beam_scores_equal_prefix_search_sums():
    """With log_add and beams holding every prefix, Flashlight's lexicon-free n-best is exactly
    the prefix search's: every label sequence with the sum over its alignments."""
    pieces = ["<blank>", "<unk>", "<sos/eos>", "\u2581A", "B"]
    dec = FlashlightCTCDecoder(pieces, beam=100000, nbest=100000, beam_threshold=1e9)
    for seed in range(3):
        lp = (torch.randn(6, 5, generator=torch.Generator().manual_seed(seed)) * 2
              ).log_softmax(-1).double()
        ours = {tuple(ids): s for ids, s in ctc_prefix_beam_search(lp, beam=100000)}
        got = dec.decode(lp[None], torch.tensor([6]))[0]
        assert {tuple(ids) for ids, _ in got} == set(ours)
        for ids, score in got:
            assert score == pytest.approx(ours[tuple(ids)], abs=1e-9)
        assert sum(math.exp(s) for _, s in got) == pytest.approx(1.0, abs=1e-5)


@needs_flashlight
def test_lexicon_free_same_one_best_on_random_peaked_posteriors(tok):
    dec = FlashlightCTCDecoder.from_tokenizer(tok, beam=32, nbest=4)
    batch = [random_peaked(tok.vocab_size, seed) for seed in range(20)]
    lens = torch.tensor([x.size(0) for x in batch])
    padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
    results = dec.decode(padded, lens)
    assert len(results) == 20
    for lp, res in zip(batch, results):
        ours = ctc_prefix_beam_search(lp, beam=16)
        assert res[0][0] == ours[0][0]
        # Both scores are log P(1-best) summed over the alignments their beams kept: at most
        # the exact CTC forward probability, and close to it on peaked posteriors.
        exact = ctc_log_prob(lp, ours[0][0])
        for score in (res[0][1], ours[0][1]):
            assert exact - 0.25 <= score <= exact + 1e-6
        # n-best: unique token sequences, best first, no blanks, at most nbest
        assert 1 <= len(res) <= 4
        assert len({tuple(ids) for ids, _ in res}) == len(res)
        assert [s for _, s in res] == sorted((s for _, s in res), reverse=True)
        assert all(BLANK_ID not in ids for ids, _ in res)


@needs_flashlight
def test_lexicon_free_with_word_lm_agrees_on_random_posteriors(tok, lm):
    """The word n-gram through Flashlight's LM interface scores what asrkit's hook scores."""
    pieces = pieces_of(tok)
    dec = FlashlightCTCDecoder(pieces, lm=lm, lm_weight=0.8, word_bonus=0.5, beam=32)
    for seed in range(10):
        lp = random_peaked(tok.vocab_size, 100 + seed)
        sc = WordNgramScorer(lm, pieces, word_bonus=0.5)
        ours = ctc_prefix_beam_search(lp, beam=16, scorer=sc, lm_weight=0.8,
                                      final_scorer=sc.final)
        ids, score = one_best(dec, lp)
        assert ids == ours[0][0]
        exact = fused_log_prob(lp, ids, lm, pieces, 0.8, 0.5)
        for s in (score, ours[0][1]):
            assert exact - 0.25 <= s <= exact + 1e-4


def _ambiguous(tok: Tokenizer) -> torch.Tensor:
    """"SEVEN" spelled clearly, then two slots where TWO/ONE are 0.5/0.4 and ONE/TWO 0.5/0.4:
    the acoustics prefer SEVEN TWO ONE."""
    one, two = tok.encode("ONE")[0], tok.encode("TWO")[0]
    slots = [{p: 0.9} for p in tok.encode("SEVEN")]
    slots += [{two: 0.5, one: 0.4}, {one: 0.5, two: 0.4}]
    return spiky(slots, tok.vocab_size)


@needs_flashlight
@pytest.mark.parametrize("mode", ["lexicon_free", "lexicon_asrkit",
                                  pytest.param("lexicon_kenlm", marks=needs_kenlm)])
def test_lm_changes_the_one_best_in_both_backends(tok, lm, tmp_path, mode):
    lp = _ambiguous(tok)
    assert len(tok.encode("SEVEN")) > 1  # a multi-piece word is part of the fixture
    pieces = pieces_of(tok)
    ours_plain = ctc_prefix_beam_search(lp, beam=16)[0][0]
    sc = WordNgramScorer(lm, pieces)
    ours_lm = ctc_prefix_beam_search(lp, beam=16, scorer=sc, lm_weight=1.0,
                                     final_scorer=sc.final)[0][0]
    assert tok.decode(ours_plain) == "SEVEN TWO ONE"
    assert tok.decode(ours_lm) == "SEVEN ONE TWO"

    arpa = tmp_path / "lm.arpa"
    write_arpa(lm, arpa)
    kwargs = {"beam": 32}
    if mode != "lexicon_free":
        words = tmp_path / "words.txt"  # a word list: the tokenizer spells the words
        words.write_text("".join(f"{w}\n" for w in sorted({w for s in SENTENCES
                                                               for w in s.split()})))
        kwargs["lexicon"] = words
        kwargs["lm_backend"] = "kenlm" if mode == "lexicon_kenlm" else "asrkit"
    plain = FlashlightCTCDecoder.from_tokenizer(tok, **kwargs)
    fused = FlashlightCTCDecoder.from_tokenizer(tok, lm=arpa, lm_weight=1.0, **kwargs)
    assert fused.lm_backend == ("kenlm" if mode == "lexicon_kenlm" else "asrkit")
    assert one_best(plain, lp)[0] == ours_plain
    ids, score = one_best(fused, lp)
    assert ids == ours_lm
    exact = fused_log_prob(lp, ids, lm, pieces, 1.0, 0.0)
    assert exact - 0.25 <= score <= exact + 1e-4


@needs_flashlight
def test_lexicon_restricts_output_to_its_words(tok, tmp_path):
    """Explicit spellings in a lexicon file; a word outside the lexicon cannot be output."""
    lp = _ambiguous(tok)
    lex = tmp_path / "lexicon.txt"
    spell = {w: tok.pieces(tok.encode(w)) for w in ("SEVEN", "ONE")}
    lex.write_text("".join(f"{w} {' '.join(p)}\n" for w, p in spell.items()))
    ids, _ = one_best(FlashlightCTCDecoder(pieces_of(tok), lexicon=lex, beam=32), lp)
    assert tok.decode(ids).split() == ["SEVEN", "ONE", "ONE"]


@needs_flashlight
def test_errors_are_clear(tok, tmp_path):
    pieces = pieces_of(tok)
    dec = FlashlightCTCDecoder(pieces)
    with pytest.raises(ValueError, match="V=5 tokens but the decoder was built with 40"):
        dec.decode(torch.zeros(1, 3, 5), torch.tensor([3]))
    with pytest.raises(ValueError, match="lengths"):
        dec.decode(torch.zeros(1, 3, 40), torch.tensor([4]))
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        FlashlightCTCDecoder(pieces, lexicon=tmp_path / "nowhere.txt")
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        FlashlightCTCDecoder(pieces, lm=tmp_path / "missing.arpa")
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        FlashlightCTCDecoder(pieces, lexicon={"ONE": ["\u2581ONE"]}, lm=tmp_path / "missing.arpa")
    bad = tmp_path / "bad_lexicon.txt"
    bad.write_text("ONE \u2581ONE\nSIX \u2581SIX\n")
    with pytest.raises(ValueError, match=r"bad_lexicon.txt:2: piece '▁SIX' is not in the token"):
        FlashlightCTCDecoder(pieces, lexicon=bad)
    with pytest.raises(ValueError, match="pass tokenizer="):
        FlashlightCTCDecoder(pieces, lexicon=["ONE"])
    with pytest.raises(ValueError, match="twice"):
        FlashlightCTCDecoder(["<blank>", "a", "a"])
    with pytest.raises(ValueError, match="KenLM works in lexicon mode only"):
        FlashlightCTCDecoder(pieces, lm=tmp_path / "x.arpa", lm_backend="kenlm")


def test_missing_flashlight_names_the_extra(monkeypatch):
    monkeypatch.setattr(fl_mod, "flashlight_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[flashlight\]' in the asrkit"):
        FlashlightCTCDecoder(["<blank>", "a"])
