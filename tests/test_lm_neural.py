"""Neural token LMs (asrkit/models/lm.py, asrkit/lm/neural.py): training through the CLI,
perplexity, resume, causality, sentence scores, rescoring with asrkit:EXP."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from asrkit.cli import main
from asrkit.decode.nbest import write_nbest
from asrkit.lm.neural import load_lm
from asrkit.lm.rescore import load_sentence_lm
from asrkit.models.lm import LSTMLM, TransformerLM
from asrkit.text.tokenizer import SOS_EOS_ID, train_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Counting sentences ("ONE TWO THREE ...") starting anywhere: a next word the LM can
    learn exactly."""
    root = tmp_path_factory.mktemp("lmdata")
    words = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX"]
    rng = random.Random(0)

    def write(name, n):
        lines = []
        for i in range(n):
            s = rng.randrange(4)
            lines.append(f"u{i:04d} " + " ".join(words[s:s + rng.randint(2, 6 - s)]))
        (root / name).write_text("\n".join(lines) + "\n")
        return root / name

    train, dev = write("train.txt", 300), write("dev.txt", 40)
    tok = train_tokenizer(train, root / "tok" / "char", model_type="char")
    return {"root": root, "train": train, "dev": dev, "tok": tok}


def _args(corpus, exp, model, *extra):
    return ["train-lm", f"model={model}", f"data.train={corpus['train']}",
            f"data.dev={corpus['dev']}", f"data.tokenizer={corpus['tok']}", f"exp_dir={exp}",
            "trainer.num_threads=1", "trainer.device=cpu", "data.max_tokens=200",
            "optim.lr=0.01", *extra]


SMALL = {"lstm_lm": ["model.embed_dim=32", "model.hidden_size=32", "model.num_layers=1"],
         "transformer_lm": ["model.d_model=32", "model.nhead=2", "model.num_layers=1",
                            "model.dim_feedforward=64", "model.dropout=0.0"]}


@pytest.mark.parametrize("model", ["lstm_lm", "transformer_lm"])
def test_train_lm_learns_and_resumes(corpus, tmp_path, model):
    exp = tmp_path / model
    assert main([*_args(corpus, exp, model, "trainer.max_epochs=2", *SMALL[model])]) == 0
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    _, tok = load_lm(exp)
    # far below a uniform guess over the vocabulary, and falling
    assert rows[-1]["dev_ppl"] < rows[0]["dev_ppl"] < tok.vocab_size
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["epochs"] == 2 and summary["num_params"] > 0
    # resume: more epochs continue from last.pt (no restart from epoch 1)
    (exp / ".done").unlink()
    assert main([*_args(corpus, exp, model, "trainer.max_epochs=4", *SMALL[model])]) == 0
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert "resuming" in (exp / "train.log").read_text()
    assert rows[-1]["dev_ppl"] < 4.0  # counting is predictable
    # killed after the last checkpoint, before .done: the rerun only finishes the stage
    (exp / ".done").unlink()
    (exp / "train_summary.json").unlink()
    assert main([*_args(corpus, exp, model, "trainer.max_epochs=4", *SMALL[model])]) == 0
    assert json.loads((exp / "train_summary.json").read_text())["epochs"] == 4
    assert (exp / ".done").is_file()


def test_sentence_logprob_and_causality():
    torch.manual_seed(0)
    for lm in (LSTMLM(12, 8, 8, 1, 0.0), TransformerLM(12, 8, 2, 1, 16, 0.0, 32)):
        lm.eval()
        seqs = [[3, 4, 5], [6], []]
        got = lm.sentence_logprob(seqs, batch_size=2)
        for s, v in zip(seqs, got):
            ids = torch.tensor([[SOS_EOS_ID, *s, SOS_EOS_ID]])
            with torch.no_grad():
                lp = lm(ids[:, :-1]).log_softmax(-1)[0]
            ref = sum(float(lp[i, ids[0, i + 1]]) for i in range(len(s) + 1))
            assert v == pytest.approx(ref, abs=1e-5)
        a = torch.tensor([[2, 3, 4, 5]])
        b = torch.tensor([[2, 3, 9, 9]])
        with torch.no_grad():
            assert torch.allclose(lm(a)[0, :2], lm(b)[0, :2], atol=1e-6)  # no peeking ahead
    with pytest.raises(ValueError, match="tie_weights"):
        LSTMLM(10, 8, 16)


def test_rescore_with_a_trained_neural_lm(corpus, tmp_path):
    exp = tmp_path / "lm"
    assert main([*_args(corpus, exp, "lstm_lm", "trainer.max_epochs=6",
                        *SMALL["lstm_lm"])]) == 0
    nb = tmp_path / "nbest"
    # the acoustic scores slightly prefer the non-counting order
    write_nbest(nb, {"a": [("ONE THREE TWO", -1.0), ("ONE TWO THREE", -1.2)]})
    assert main(["rescore", str(nb), str(tmp_path / "out"), "--lm", f"asrkit:{exp}",
                 "--lm-weight", "1.0", "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "text").read_text() == "a ONE TWO THREE\n"
    scores = load_sentence_lm(f"asrkit:{exp}", device="cpu").score(["ONE TWO", "TWO ONE"])
    assert scores[0] > scores[1] and all(math.isfinite(s) for s in scores)


def test_neural_scorer_for_shallow_fusion_sums_to_the_sentence_score():
    from asrkit.lm.fusion import NeuralTokenScorer

    torch.manual_seed(1)
    for lm in (LSTMLM(12, 8, 8, 2, 0.0), TransformerLM(12, 8, 2, 1, 16, 0.0, 32)):
        lm.eval()
        sc = NeuralTokenScorer(lm)
        seq, prefix, total = [3, 7, 7, 4], (), 0.0
        for t in seq:
            total += sc(prefix, t)
            prefix = (*prefix, t)
        total += sc.final(prefix)
        assert total == pytest.approx(lm.sentence_logprob([seq])[0], abs=1e-4)
        sc.reset()
        assert sc((), 3) == pytest.approx(sc((), 3))
