"""GPT LM pretraining on packed blocks (asrkit/lm/textdata.py, asrkit/lm/pretrain.py,
asrkit.models.lm.GPTLM): streaming tokenization, reproducible blocks, training through the CLI,
resume in pieces, the Hugging Face export loaded by transformers and by ``hf:DIR`` rescoring."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from asrkit.cli import main
from asrkit.decode.nbest import read_nbest, write_nbest
from asrkit.exp.checkpoint import load_checkpoint
from asrkit.lm import textdata
from asrkit.lm.rescore import HFCausalLM
from asrkit.models.lm import GPTLM
from asrkit.text.tokenizer import SOS_EOS_ID, Tokenizer, train_tokenizer

torch.set_num_threads(1)
WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Counting sentences ("THREE FOUR FIVE"): plain book-style lines for training, Kaldi text
    for dev, and a BPE tokenizer."""
    root = tmp_path_factory.mktemp("gpt")
    rng = random.Random(0)

    def sentence():
        s = rng.randrange(5)
        return " ".join(WORDS[s:s + rng.randint(2, 8 - s)])

    (root / "books.txt").write_text("\n".join(sentence() for _ in range(1500)) + "\n\n")
    (root / "dev").write_text("".join(f"d{i:03d} {sentence()}\n" for i in range(30)))
    (root / "kaldi_text").write_text("".join(f"u{i} {sentence()}\n" for i in range(200)))
    tok = train_tokenizer(root / "kaldi_text", root / "tok" / "bpe", model_type="bpe",
                          vocab_size=30)
    return {"root": root, "books": root / "books.txt", "dev": root / "dev", "tok": tok}


def _args(corpus, exp, *extra):
    return ["train-lm", "model=gpt", f"data.train={corpus['books']}", "data.utt_ids=false",
            f"data.dev={corpus['dev']}", "data.dev_utt_ids=true",
            f"data.tokenizer={corpus['tok']}", f"exp_dir={exp}", "trainer.num_threads=1",
            "trainer.device=cpu", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
            "model.n_positions=64", "data.block_size=32", "data.batch_tokens=512",
            "optim.warmup_steps=5", "optim.lr=0.01", "trainer.eval_every=20", *extra]


def test_tokenize_to_bin_streams_sentences_with_ends(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(textdata, "_CHUNK_LINES", 7)  # several chunks
    tok = Tokenizer(corpus["tok"])
    meta = textdata.tokenize_to_bin(corpus["books"], tok, tmp_path / "t.bin")
    lines = [x for x in corpus["books"].read_text().splitlines() if x.strip()]
    want = [t for s in lines for t in (*tok.encode(s), SOS_EOS_ID)]
    got = np.fromfile(tmp_path / "t.bin", dtype=np.uint16)
    assert got.tolist() == want
    assert (meta["tokens"], meta["sentences"]) == (len(want), len(lines))
    assert meta["words"] == sum(len(x.split()) for x in lines)
    # unchanged source and tokenizer: not rewritten
    mtime = (tmp_path / "t.bin").stat().st_mtime_ns
    assert textdata.tokenize_to_bin(corpus["books"], tok, tmp_path / "t.bin") == meta
    assert (tmp_path / "t.bin").stat().st_mtime_ns == mtime


def test_tokenize_to_bin_names_a_bad_kaldi_line(corpus, tmp_path):
    bad = tmp_path / "text"
    bad.write_text("u1 ONE TWO\nu2\n")
    with pytest.raises(ValueError, match=r"text:2"):
        textdata.tokenize_to_bin(bad, Tokenizer(corpus["tok"]), tmp_path / "t.bin",
                                 utt_ids=True)
    assert not (tmp_path / "t.bin").exists()
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        textdata.tokenize_to_bin(tmp_path / "missing.txt", Tokenizer(corpus["tok"]),
                                 tmp_path / "t.bin")


def test_packed_blocks_are_shifted_and_reproducible(corpus, tmp_path):
    tok = Tokenizer(corpus["tok"])
    textdata.tokenize_to_bin(corpus["books"], tok, tmp_path / "t.bin")
    data = np.fromfile(tmp_path / "t.bin", dtype=np.uint16)
    blocks = textdata.PackedBlocks(tmp_path / "t.bin", block_size=16, seed=3)
    x, y = blocks.batch(7, 5)
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x.tolist(), y.tolist()):  # each row is a real stretch of text
        s = next(i for i in range(len(data) - 16) if data[i:i + 17].tolist() == row_x + row_y[-1:])
        assert s >= 0
    x2, _ = textdata.PackedBlocks(tmp_path / "t.bin", 16, seed=3).batch(7, 5)
    assert torch.equal(x, x2)
    assert not torch.equal(x, blocks.batch(8, 5)[0])
    with pytest.raises(ValueError, match="block_size"):
        textdata.PackedBlocks(tmp_path / "t.bin", block_size=len(data))


@pytest.fixture(scope="module")
def gpt_exp(corpus):
    exp = corpus["root"] / "gpt_exp"
    assert main(_args(corpus, exp, "trainer.max_steps=60")) == 0
    return exp


def test_gpt_pretrains_exports_and_rescores(corpus, gpt_exp, tmp_path):
    exp = gpt_exp
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert rows[-1]["dev_token_ppl"] < rows[0]["dev_token_ppl"] < 30
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    summary = json.loads((exp / "train_summary.json").read_text())
    assert summary["tokens_seen"] == 60 * 512 and summary["steps"] == 60
    assert (exp / ".done").is_file() and (exp / "lm_curve.png").stat().st_size > 1000

    # the export: transformers loads it; its tokenizer gives asrkit's ids; same scores
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = exp / "hf"
    tok = Tokenizer(corpus["tok"])
    hf_tok = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    texts = ["ONE TWO THREE", "FIVE SIX SEVEN EIGHT", "EIGHT ONE", "TWO"]
    for t in texts:
        assert hf_tok(t, add_special_tokens=False)["input_ids"] == tok.encode(t)
    assert hf_tok.bos_token_id == hf_tok.eos_token_id == SOS_EOS_ID
    assert AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True
                                                ).config.model_type == "gpt2"
    cfg = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64, "dropout": 0.0}
    model = GPTLM(tok.vocab_size, **cfg)
    model.load_state_dict(load_checkpoint(exp / "checkpoints" / "best.pt")["model"])
    ours = model.eval().sentence_logprob([tok.encode(t) for t in texts])
    theirs = HFCausalLM(hf_dir, device="cpu").score(texts)
    assert np.allclose(ours, theirs, atol=1e-4)
    # the LM has learnt to count: the counting order beats its reverse
    assert theirs[0] > HFCausalLM(hf_dir, device="cpu").score(["THREE TWO ONE"])[0]

    # asrkit rescore --lm hf:DIR picks the in-order hypothesis
    nb = tmp_path / "nbest"
    write_nbest(nb, {"u1": [("THREE TWO ONE", -1.0), ("ONE TWO THREE", -1.5)]})
    out = tmp_path / "rescored"
    assert main(["rescore", str(nb), str(out), "--lm", f"hf:{hf_dir}", "--lm-weight", "1.0"]) == 0
    assert (out / "text").read_text().split() == ["u1", "ONE", "TWO", "THREE"]
    assert read_nbest(nb)  # the input is left as it was


def test_pretraining_resumes_in_pieces_to_the_same_model(corpus, tmp_path):
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert main(_args(corpus, whole, "trainer.max_steps=40")) == 0
    # a piece that ends at once (max_minutes=0: one step, checkpoint, no .done) ...
    assert main(_args(corpus, pieces, "trainer.max_steps=40", "trainer.max_minutes=0")) == 0
    assert not (pieces / ".done").exists()
    assert load_checkpoint(pieces / "checkpoints" / "last.pt")["step"] == 1
    assert (pieces / "hf" / "config.json").is_file()  # each piece leaves a usable export
    # ... and a second one that runs to the end
    assert main(_args(corpus, pieces, "trainer.max_steps=40")) == 0
    assert (pieces / ".done").is_file()
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(pieces / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_block_size_beyond_positions_is_refused(corpus, tmp_path, capsys):
    assert main(_args(corpus, tmp_path / "g", "trainer.max_steps=2",
                      "data.block_size=128")) != 0
    assert "data.block_size 128 exceeds the model's n_positions 64" in capsys.readouterr().err
    assert not (tmp_path / "g" / "checkpoints" / "last.pt").exists()


def test_hf_export_fuses_token_by_token_like_the_experiment(corpus, gpt_exp, tmp_path):
    from asrkit.lm.fusion import NeuralTokenScorer, fusion_scorer
    from asrkit.lm.neural import load_lm

    tok = Tokenizer(corpus["tok"])
    via_hf = fusion_scorer(f"hf:{gpt_exp / 'hf'}", tok, torch.device("cpu"))
    via_exp = fusion_scorer(gpt_exp, tok, torch.device("cpu"))
    assert isinstance(via_hf, NeuralTokenScorer) and isinstance(via_exp, NeuralTokenScorer)
    prefix = tuple(tok.encode("ONE TWO"))
    for t in range(tok.vocab_size):
        assert via_hf(prefix, t) == pytest.approx(via_exp(prefix, t), abs=1e-4)
    assert via_hf.final(prefix) == pytest.approx(via_exp.final(prefix), abs=1e-4)
    # the sum of fused token scores is the sentence log-probability
    ids = tok.encode("ONE TWO THREE")
    total = sum(via_hf(tuple(ids[:i]), ids[i]) for i in range(len(ids))) + via_hf.final(tuple(ids))
    model, _ = load_lm(gpt_exp)
    assert total == pytest.approx(model.sentence_logprob([ids])[0], abs=1e-4)
    # another tokenizer: refused, naming both
    other = Tokenizer(train_tokenizer(corpus["root"] / "kaldi_text", tmp_path / "char",
                                      model_type="char"))
    with pytest.raises(ValueError, match="not the acoustic model's"):
        fusion_scorer(f"hf:{gpt_exp / 'hf'}", other, torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        fusion_scorer(f"hf:{tmp_path}", tok, torch.device("cpu"))


def test_perplexity_script_counts_words_alike_for_gpt_and_ngram(corpus, gpt_exp, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "lm_perplexity", Path(__file__).resolve().parents[1] / "scripts" / "lm_perplexity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    arpa = tmp_path / "tg.arpa"
    assert main(["train-lm", "ngram", str(corpus["books"]), str(arpa), "--order", "3",
                 "--no-utt-ids"]) == 0
    out = tmp_path / "ppl.json"
    assert mod.main(["--lm", f"hf:{gpt_exp / 'hf'}", "--lm", f"ngram:{arpa}",
                     "--text", str(corpus["dev"]), "--device", "cpu", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["lm"].split(":")[0] for r in rows] == ["hf", "ngram"]
    assert rows[0]["words"] == rows[1]["words"] == sum(
        len(x.split()) - 1 for x in corpus["dev"].read_text().splitlines())
    assert rows[1]["oov_rate"] == 0.0
    # the GPT's figure is the one its training measured on the same text (best checkpoint)
    metrics = [json.loads(x) for x in (gpt_exp / "metrics.jsonl").read_text().splitlines()]
    best = min(metrics, key=lambda r: r["dev_token_ppl"])
    assert rows[0]["ppl"] == pytest.approx(best["dev_word_ppl"], rel=1e-4)
    # counting sentences: both LMs beat a uniform guess over the 8 words + end
    assert rows[0]["ppl"] < 9 and rows[1]["ppl"] < 9


def test_kv_cached_fusion_equals_rereading_the_prefix(corpus, gpt_exp):
    """The GPT scorer continues from cached keys/values of the nearest cached ancestor: any
    order of requests and any cache size give the scores of a full forward pass."""
    from asrkit.lm.fusion import NeuralTokenScorer
    from asrkit.lm.neural import load_lm

    model, tok = load_lm(gpt_exp)
    ids = tok.encode("ONE TWO THREE FOUR FIVE SIX")

    def full(prefix):
        x = torch.tensor([[SOS_EOS_ID, *prefix]])
        with torch.no_grad():
            return model(x)[0, -1].float().log_softmax(-1)

    for size in (512, 2, 0):
        sc = NeuralTokenScorer(model, kv_cache_size=size)
        order = [len(ids), 3, 4, 1, 0, len(ids) - 1, 2]  # long first: no ancestor cached yet
        for n in order:
            p = tuple(ids[:n])
            want = full(p)
            assert sc.final(p) == pytest.approx(float(want[SOS_EOS_ID]), abs=1e-4)
            assert sc(p, ids[0]) == pytest.approx(float(want[ids[0]]), abs=1e-4)
        assert len(sc._kv) <= max(size, 0) or size == 0
