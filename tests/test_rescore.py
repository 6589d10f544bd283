"""N-best rescoring (asrkit rescore) with a tiny GPT-2 built and saved by the test, and with
an n-gram."""

from __future__ import annotations

import json
import math

import pytest
import torch

from asrkit.cli import main
from asrkit.decode.nbest import read_nbest, write_nbest
from asrkit.lm.ngram import estimate_ngram, write_arpa
from asrkit.lm.rescore import HFCausalLM, load_sentence_lm, rescore_nbest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["one", "two", "three", "four", "five"]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A 1-layer GPT-2 with a word-level tokenizer, saved with save_pretrained (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_hf_scores_equal_token_by_token_log_probabilities(tiny_gpt2):
    lm = HFCausalLM(tiny_gpt2, device="cpu", case="lower")
    texts = ["ONE TWO THREE", "FIVE", ""]
    got = lm.score(texts, batch_size=2)  # two batches, padding in the first
    model = lm.model
    for text, value in zip(texts, got):
        ids = [0, *[WORDS.index(w) + 2 for w in text.lower().split()], 0]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        ref = sum(float(logits[i, ids[i + 1]]) for i in range(len(ids) - 1))
        assert value == pytest.approx(ref, abs=1e-4)
    assert all(v < 0 for v in got)


def test_rescoring_picks_by_combined_score(tiny_gpt2):
    lm = HFCausalLM(tiny_gpt2, device="cpu", case="lower")
    hyps = ["ONE TWO", "ONE TWO THREE", "FOUR"]
    nbest = {"u1": [(h, -10.0 - i * 0.01) for i, h in enumerate(hyps)]}
    lm_scores = dict(zip(hyps, lm.score(hyps)))
    best, rescored, _ = rescore_nbest(nbest, lm, lm_weight=100.0)
    assert best["u1"] == max(hyps, key=lambda h: lm_scores[h])  # the LM decides
    assert rescored["u1"][0][1] == pytest.approx(
        nbest["u1"][hyps.index(best["u1"])][1] + 100.0 * lm_scores[best["u1"]], rel=1e-6)
    assert [s for _, s in rescored["u1"]] == sorted((s for _, s in rescored["u1"]),
                                                    reverse=True)
    same, _, info0 = rescore_nbest(nbest, lm, lm_weight=0.0)
    assert same["u1"] == "ONE TWO" and info0["changed"] == 0
    longest, _, _ = rescore_nbest(nbest, lm, lm_weight=0.0, length_bonus=5.0)
    assert longest["u1"] == "ONE TWO THREE"


def test_rescore_cli_with_hf_and_ngram(tiny_gpt2, tmp_path, capsys):
    nb = tmp_path / "nbest"
    write_nbest(nb, {"a": [("ONE TWO", -5.0), ("ONE TOO", -5.1)],
                     "b": [("FIVE", -3.0), ("FIVE FIVE", -3.2), ("", -9.0)]})
    out = tmp_path / "hf"
    assert main(["rescore", str(nb), str(out), "--lm", f"hf:{tiny_gpt2}", "--case", "lower",
                 "--lm-weight", "0.3"]) == 0
    text = (out / "text").read_text().splitlines()
    assert [line.split()[0] for line in text] == ["a", "b"]
    assert set(read_nbest(out / "nbest")) == {"a", "b"}
    summary = json.loads((out / "rescore_summary.json").read_text())
    assert summary["hypotheses"] == 5 and summary["lm"].startswith("hf:")
    # An n-gram that has only seen "ONE TOO" flips utterance a.
    arpa = tmp_path / "lm.arpa"
    write_arpa(estimate_ngram(["ONE TOO"] * 5 + ["FIVE"], order=2), arpa)
    assert main(["rescore", str(nb), str(tmp_path / "ng"), "--lm", f"ngram:{arpa}",
                 "--lm-weight", "1.0"]) == 0
    assert (tmp_path / "ng" / "text").read_text().splitlines()[0] == "a ONE TOO"
    # Clear errors: no such directory (nothing is downloaded), an unknown spec.
    assert main(["rescore", str(nb), str(tmp_path / "x"), "--lm", "hf:/no/such/model"]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown LM spec"):
        load_sentence_lm("gpt2")
    assert math.isfinite(load_sentence_lm(f"ngram:{arpa}").score(["ONE"])[0])


def test_rescore_help_documents_the_formats(capsys):
    with pytest.raises(SystemExit):
        main(["rescore", "--help"])
    out = capsys.readouterr().out
    assert "<utt-id>-<rank> <score> <WORDS...>" in out and "OUT/text" in out and "hf:DIR" in out


def test_nbest_oracle_picks_each_utterances_best_hypothesis(tmp_path):
    import importlib.util
    from pathlib import Path

    from asrkit.decode.nbest import write_nbest

    script = Path(__file__).resolve().parents[1] / "scripts" / "nbest_oracle.py"
    spec = importlib.util.spec_from_file_location("nbest_oracle", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    refs = {"u1": "A B C D", "u2": "E F"}
    nbest = {"u1": [("A X C D", -1.0), ("A B C D", -2.0)], "u2": [("E F", -0.5), ("E", -3.0)]}
    assert mod.oracle(nbest, refs) == (pytest.approx(100 / 6), 0.0)
    write_nbest(tmp_path / "nbest", nbest)
    (tmp_path / "text").write_text("u1 A B C D\nu2 E F\n")
    assert mod.main([str(tmp_path / "nbest"), str(tmp_path / "text")]) == 0
