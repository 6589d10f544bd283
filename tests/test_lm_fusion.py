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


def test_token_ngram_scorer_scores_every_piece():
    from asrkit.lm.fusion import TokenNgramScorer, is_token_lm

    tlm = estimate_ngram([["\u2581A", "C", "\u2581B"], ["\u2581B", "\u2581A"]] * 3, order=2)
    assert is_token_lm(tlm) and not is_token_lm(estimate_ngram(["A B"], order=2))
    sc = TokenNgramScorer(tlm, PIECES)
    prefix, total = (), 0.0
    for tok in (3, 5, 4):
        total += sc(prefix, tok)
        prefix = (*prefix, tok)
    assert sc(prefix, 2) == pytest.approx(sc.final(prefix))
    total += sc.final(prefix)
    assert total == pytest.approx(tlm.score_sentence("\u2581A C \u2581B"))
    sc.reset()
    assert TokenNgramScorer(tlm, PIECES).final((3, 5, 4)) == pytest.approx(sc.final((3, 5, 4)))


def test_combined_scorer_is_the_weighted_sum(lm):
    from asrkit.lm.fusion import CombinedScorer

    a, b = WordNgramScorer(lm, PIECES), WordNgramScorer(lm, PIECES, word_bonus=1.0)
    both = CombinedScorer([(a, 0.3), (b, 0.5)])
    for prefix, tok in [((), 3), ((3,), 4), ((3, 4), 2)]:
        assert both(prefix, tok) == pytest.approx(0.3 * a(prefix, tok) + 0.5 * b(prefix, tok))
    assert both.final((3, 4)) == pytest.approx(0.3 * a.final((3, 4)) + 0.5 * b.final((3, 4)))
    both.reset()
    with pytest.raises(ValueError):
        CombinedScorer([])


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


def test_fusion_in_label_synchronous_search(lm):
    """The same LM moves joint CTC/attention search (here CTC-only: no decoder needed) to the
    LM's word order; <sos/eos> gets the scorer's final score."""
    from asrkit.decode.attention import joint_ctc_attention_beam_search

    sc = WordNgramScorer(lm, PIECES)
    assert sc((3, 4), 2) == pytest.approx(sc.final((3, 4)))
    lp = _posteriors([{4: 0.5, 3: 0.4}, {0: 0.9}, {3: 0.5, 4: 0.4}, {0: 0.9}])
    enc, lens = torch.zeros(1, lp.size(0), 1), torch.tensor([lp.size(0)])

    def search(**kw):
        return joint_ctc_attention_beam_search(None, enc, lens, beam=8, ctc_weight=1.0,
                                               ctc_log_probs=lp[None], **kw)[0]

    plain = search()
    assert plain[0][0] == [4, 3]
    fused = search(scorer=sc, lm_weight=1.0)
    assert fused[0][0] == [3, 4]
    ac = {tuple(h): s for h, s in plain}
    assert fused[0][1] == pytest.approx(ac[(3, 4)] + lm.score_sentence("A B"))


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


def test_decode_with_lm_through_the_cli_and_the_tuning_script(tmp_path, capsys):
    """A tiny model trained for a few epochs on synthetic letters; `asrkit decode --lm` and
    scripts/tune_lm_weight.py run end to end, weight 0 equals plain beam search, and an LM
    with a bad method is refused."""
    import importlib.util
    import json
    from pathlib import Path

    from asrkit.cli import main
    from asrkit.lm.ngram import write_arpa
    from tests.synth import train_tiny_ctc

    tiny = train_tiny_ctc(tmp_path)
    exp, train_dir, dev_dir, tok = tiny["exp"], tiny["train"], tiny["dev"], tiny["tok"]
    sentences = [line.split(maxsplit=1)[1] for line in (train_dir / "text").read_text()
                 .splitlines()]
    arpa = tmp_path / "lm.arpa"
    write_arpa(estimate_ngram(sentences, order=2), arpa)
    base = ["decode", str(exp), str(dev_dir), "--method", "ctc_prefix_beam", "--beam", "4"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "w0"), "--lm", str(arpa),
                 "--lm-weight", "0"]) == 0
    assert (tmp_path / "w0" / "text").read_text() == (tmp_path / "plain" / "text").read_text()
    # Hydra-style decode.KEY=VALUE options mean the same as --KEY VALUE
    assert main(["decode", str(exp), str(dev_dir), "decode.method=ctc_prefix_beam",
                 "decode.beam=4", f"decode.lm={arpa}", "decode.lm_weight=0",
                 "--out", str(tmp_path / "w0h")]) == 0
    assert (tmp_path / "w0h" / "text").read_text() == (tmp_path / "plain" / "text").read_text()
    assert main([*base, "--out", str(tmp_path / "w1"), "--lm", str(arpa), "--lm-weight", "0.5",
                 "--word-bonus", "1"]) == 0
    summary = json.loads((tmp_path / "w1" / "decode_summary.json").read_text())
    assert summary["lm"] == str(arpa) and summary["lm_weight"] == 0.5
    assert main(["decode", str(exp), str(dev_dir), "--lm", str(arpa)]) == 2
    assert "ctc_prefix_beam" in capsys.readouterr().err

    # a token-level n-gram (asrkit train-lm ngram --tokenizer) is fused per token
    tarpa = tmp_path / "tok.arpa"
    assert main(["train-lm", "ngram", str(train_dir / "text"), str(tarpa), "--order", "3",
                 "--tokenizer", str(tok), "--dev", str(dev_dir / "text")]) == 0
    assert "token 3-gram" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "t0"), "--lm", str(tarpa),
                 "--lm-weight", "0"]) == 0
    assert (tmp_path / "t0" / "text").read_text() == (tmp_path / "plain" / "text").read_text()
    assert main([*base, "--out", str(tmp_path / "t1"), "--lm", str(tarpa),
                 "--lm-weight", "0.5"]) == 0
    # two LMs at once: the word bigram plus the token trigram with weight 0 is the bigram alone
    assert main([*base, "--out", str(tmp_path / "two"), "--lm", str(arpa), "--lm-weight", "0.5",
                 "--word-bonus", "1", "--extra-lm", str(tarpa), "0"]) == 0
    assert (tmp_path / "two" / "text").read_text() == (tmp_path / "w1" / "text").read_text()
    assert main([*base, "--out", str(tmp_path / "two2"), "--lm", str(arpa),
                 "--extra-lm", str(tarpa), "0.3"]) == 0
    assert json.loads((tmp_path / "two2" / "decode_summary.json").read_text())["extra_lms"] == [
        [str(tarpa), 0.3]]
    assert main([*base, "--extra-lm", str(tarpa), "x", "--lm", str(arpa)]) == 2
    # TLG graph from the tokenizer and the ARPA, and WFST decoding over it
    assert main(["mkgraph", "--ctc", str(tok), str(arpa), str(tmp_path / "tlg")]) == 0
    assert main([*base[:3], "--method", "wfst", "--graph", str(tmp_path / "tlg"),
                 "--lm-weight", "0.5", "--out", str(tmp_path / "wfst")]) == 0
    vocab = {w for s_ in sentences for w in s_.split()}
    hyp_lines = (tmp_path / "wfst" / "text").read_text().splitlines()
    assert len(hyp_lines) == len((dev_dir / "text").read_text().splitlines())
    assert {w for line in hyp_lines for w in line.split()[1:]} <= vocab
    assert json.loads((tmp_path / "wfst" / "decode_summary.json").read_text())["graph"] == \
        str(tmp_path / "tlg")
    assert main([*base[:3], "--method", "wfst"]) == 2  # no --graph
    assert "graph" in capsys.readouterr().err
    assert main(["mkgraph", "--ctc", str(tok), str(arpa)]) == 2

    # Flashlight backend (optional extra): lexicon-free and lexicon-constrained with the LM
    from asrkit.decode.flashlight import flashlight_available

    if flashlight_available():
        lex = tmp_path / "words.txt"
        lex.write_text("".join(f"{w}\n" for w in sorted(vocab)))
        assert main([*base, "--backend", "flashlight", "--out", str(tmp_path / "fl")]) == 0
        assert main([*base, "--backend", "flashlight", "--lm", str(arpa), "--lexicon", str(lex),
                     "--lm-weight", "0.5", "--out", str(tmp_path / "fl_lex")]) == 0
        for d in ("fl", "fl_lex"):
            lines = (tmp_path / d / "text").read_text().splitlines()
            assert len(lines) == len(hyp_lines)
        assert {w for line in (tmp_path / "fl_lex" / "text").read_text().splitlines()
                for w in line.split()[1:]} <= vocab
        assert json.loads((tmp_path / "fl_lex" / "decode_summary.json").read_text())[
            "backend"] == "flashlight"
    assert main([*base[:3], "--method", "ctc_greedy", "--backend", "flashlight"]) == 2
    assert "flashlight" in capsys.readouterr().err

    script = Path(__file__).resolve().parents[1] / "scripts" / "tune_lm_weight.py"
    spec = importlib.util.spec_from_file_location("tune_lm_weight", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "tune.json"
    assert mod.main(["fusion", str(exp), str(dev_dir), str(dev_dir / "text"), "--lm", str(arpa),
                     "--weights", "0,0.5", "--bonuses", "0", "--beam", "4", "--device", "cpu",
                     "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 2 and res["best"]["wer"] == min(r["wer"] for r in res["rows"])
    out3 = tmp_path / "tune3.json"
    assert mod.main(["fusion", str(exp), str(dev_dir), str(dev_dir / "text"), "--method", "wfst",
                     "--graph", str(tmp_path / "tlg"), "--weights", "0.5,1", "--bonuses", "0",
                     "--device", "cpu", "--out", str(out3)]) == 0
    res3 = json.loads(out3.read_text())
    assert res3["method"] == "wfst" and [r["lm_weight"] for r in res3["rows"]] == [0.5, 1.0]
    with pytest.raises(SystemExit):  # wfst needs --graph
        mod.main(["fusion", str(exp), str(dev_dir), str(dev_dir / "text"), "--method", "wfst"])
    # rescore mode over an n-best written by the decoder
    assert main([*base, "--out", str(tmp_path / "nb"), "--nbest", "3"]) == 0
    out2 = tmp_path / "tune2.json"
    assert mod.main(["rescore", str(tmp_path / "nb" / "nbest"), str(dev_dir / "text"),
                     "--lm", f"ngram:{arpa}", "--weights", "0,1", "--bonuses", "0,1",
                     "--out", str(out2)]) == 0
    rows = json.loads(out2.read_text())["rows"]
    assert len(rows) == 4
    plain = mod._wer(dev_dir / "text", tmp_path / "plain" / "text")
    assert [r["wer"] for r in rows if r["lm_weight"] == 0 and r["length_bonus"] == 0] == [plain]
    # --old-lm: weight w with the same LM taken out at weight w is the plain first pass
    out4 = tmp_path / "tune4.json"
    assert mod.main(["rescore", str(tmp_path / "nb" / "nbest"), str(dev_dir / "text"),
                     "--lm", f"ngram:{arpa}", "--old-lm", f"ngram:{arpa}", "--old-lm-weight",
                     "1", "--weights", "1", "--bonuses", "0", "--out", str(out4)]) == 0
    assert [r["wer"] for r in json.loads(out4.read_text())["rows"]] == [plain]
    assert mod.main(["best", str(out2)]) == 0
    best_weight = json.loads(out2.read_text())["best"]["lm_weight"]
    assert capsys.readouterr().out.splitlines()[-1] == f"{best_weight:g}"
