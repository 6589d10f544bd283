"""The disk-backed Kneser-Ney estimator and array pruning against the exact in-memory ones."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from asrkit.cli import main
from asrkit.lm.ngram import NgramLM, estimate_ngram, prune_ngram, read_arpa
from asrkit.lm.ngram_large import LargeEstimateStats, estimate_ngram_large


def _zipf_corpus(seed: int = 0, n: int = 3000, vocab: int = 400) -> list[list[str]]:
    """Zipf-distributed words with some bigram structure (each word often followed by a
    fixed successor), so that every order has counts of counts 1..4."""
    rng = random.Random(seed)
    words = [f"W{i}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    out = []
    for _ in range(n):
        sent: list[str] = []
        for _ in range(rng.randint(1, 12)):
            if sent and rng.random() < 0.4:
                sent.append(words[(int(sent[-1][1:]) * 7 + 1) % vocab])
            else:
                sent.append(rng.choices(words, weights)[0])
        out.append(sent)
    return out


def _write(path: Path, sents: list[list[str]]) -> Path:
    path.write_text("".join(" ".join(s) + "\n" for s in sents), encoding="utf-8")
    return path


def _table(model: NgramLM) -> dict[tuple[str, ...], tuple[float, float]]:
    return {w: (p, b) for n in range(1, model.order + 1) for w, p, b in model.ngrams(n)}


def _max_diff(a: NgramLM, b: NgramLM) -> float:
    ta, tb = _table(a), _table(b)
    assert set(ta) == set(tb)
    return max(max(abs(ta[k][0] - tb[k][0]), abs(ta[k][1] - tb[k][1])) for k in ta)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[list[str]], Path]:
    sents = _zipf_corpus()
    return sents, _write(tmp_path_factory.mktemp("lm") / "text.txt", sents)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_matches_exact_estimator(corpus, order: int) -> None:
    sents, path = corpus
    ref = estimate_ngram(sents, order=order)
    big = estimate_ngram_large(path, order=order)
    assert big.counts == ref.counts
    assert _max_diff(ref, big.to_ngram_lm()) < 1e-9


def test_spilled_runs_give_the_same_model(corpus, tmp_path: Path) -> None:
    """A tiny memory budget forces many sorted runs on disk and a range-by-range merge."""
    sents, path = corpus
    st = LargeEstimateStats()
    big = estimate_ngram_large(path, order=3, memory_gb=1e-7, chunk_tokens=2000,
                               tmp_dir=tmp_path, stats=st)
    assert st.spilled > 0
    assert _max_diff(estimate_ngram(sents, order=3), big.to_ngram_lm()) < 1e-9
    assert list(tmp_path.iterdir()) == []  # runs removed


def test_vocab_size_maps_the_rest_to_unk(corpus) -> None:
    sents, path = corpus
    counts = Counter(w for s in sents for w in s)
    top = sorted(counts, key=lambda w: (-counts[w], w))[:50]
    st = LargeEstimateStats()
    big = estimate_ngram_large(path, order=3, vocab_size=50, stats=st)
    ref = estimate_ngram(sents, order=3, vocabulary=top)
    assert big.counts[0] == 53  # 50 words, <s>, </s>, <unk>
    assert st.oov_tokens == sum(c for w, c in counts.items() if w not in set(top))
    assert _max_diff(ref, big.to_ngram_lm()) < 1e-9


def test_arpa_and_perplexity_match(corpus, tmp_path: Path) -> None:
    sents, path = corpus
    ref = estimate_ngram(sents, order=3)
    big = estimate_ngram_large(path, order=3)
    big.write_arpa(tmp_path / "lm.arpa.gz")
    assert _max_diff(ref, read_arpa(tmp_path / "lm.arpa.gz")) < 1e-5
    dev = [*sents[:40], ["W1", "NOT_A_WORD", "W2"]]
    a, b = ref.perplexity(dev), big.perplexity(dev)
    assert (a.sentences, a.words, a.oovs) == (b.sentences, b.words, b.oovs)
    assert b.ppl == pytest.approx(a.ppl, rel=1e-9)


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("threshold", [1e-6, 1e-5, 1e-4, 1e-3])
def test_pruning_matches_prune_ngram(corpus, order: int, threshold: float) -> None:
    sents, path = corpus
    ref = prune_ngram(estimate_ngram(sents, order=order), threshold)
    big = estimate_ngram_large(path, order=order).prune(threshold)
    assert big.counts == ref.counts
    assert _max_diff(ref, big.to_ngram_lm()) < 1e-9


def test_pruning_keeps_prefixes_and_shrinks(corpus) -> None:
    _, path = corpus
    full = estimate_ngram_large(path, order=3)
    small = full.prune(1e-4)
    assert small.counts[0] == full.counts[0]
    assert small.counts[1] < full.counts[1] and small.counts[2] < full.counts[2]
    for n in (2, 3):  # every context of a kept n-gram is kept
        assert np.isin(small.keys[n - 1] >> small.bits, small.keys[n - 2]).all()
    assert full.prune(0.0).counts == full.counts


@pytest.mark.parametrize("order", [3, 4])
def test_indexed_top_order_matches(corpus, tmp_path: Path, order: int) -> None:
    """Keys of the highest order indexed by its (n-1)-word prefix (for 4-grams over more
    than 32k words): same model, same pruning, same ARPA, same perplexity."""
    sents, path = corpus
    ref = estimate_ngram(sents, order=order)
    big = estimate_ngram_large(path, order=order, _index_top=True, memory_gb=1e-7,
                               chunk_tokens=3000, tmp_dir=tmp_path)
    assert big.prefix is not None
    assert _max_diff(ref, big.to_ngram_lm()) < 1e-9
    assert _max_diff(prune_ngram(ref, 1e-5), big.prune(1e-5).to_ngram_lm()) < 1e-9
    big.write_arpa(tmp_path / "lm.arpa")
    assert _max_diff(ref, read_arpa(tmp_path / "lm.arpa")) < 1e-5
    assert big.perplexity(sents[:30]).ppl == pytest.approx(ref.perplexity(sents[:30]).ppl)


def test_wide_vocabulary_four_gram(tmp_path: Path) -> None:
    """40k words: 16-bit ids, 4 x 16 > 63 bits, so the 4-grams are indexed automatically."""
    rng = random.Random(1)
    sents = [[f"w{i}" for i in range(j, j + 5)] for j in range(0, 40000, 5)]
    sents += [[f"w{rng.randrange(200)}" for _ in range(rng.randint(2, 9))] for _ in range(3000)]
    ref = estimate_ngram(sents, order=4)
    big = estimate_ngram_large(_write(tmp_path / "t.txt", sents), order=4)
    assert big.bits == 16 and big.prefix is not None
    assert _max_diff(ref, big.to_ngram_lm()) < 1e-9


def test_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.txt", [["a", "<s>", "b"]])
    with pytest.raises(ValueError, match="<s>"):
        estimate_ngram_large(path, order=3)
    with pytest.raises(ValueError, match="order"):
        estimate_ngram_large(path, order=1)
    with pytest.raises(ValueError, match="no training sentences"):
        estimate_ngram_large(_write(tmp_path / "e.txt", []), order=3)


def test_cli_large(corpus, tmp_path: Path, capsys) -> None:
    _, path = corpus
    out = tmp_path / "lm.arpa"
    assert main(["train-lm", "ngram", str(path), str(out), "--no-utt-ids", "--large",
                 "--order", "3", "--vocab-size", "100", "--prune", "1e-5",
                 "--unpruned-out", str(tmp_path / "full.arpa"), "--dev", str(path),
                 "--tmp-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "pruned at 1e-05" in printed and "ppl=" in printed
    pruned, full = read_arpa(out), read_arpa(tmp_path / "full.arpa")
    assert full.counts[0] == pruned.counts[0] == 103
    assert sum(pruned.counts) < sum(full.counts)
