"""Relative-entropy pruning of backoff n-gram models (Stolcke 1998, SRILM ``ngram -prune``)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from asrkit.cli import main
from asrkit.lm.ngram import (
    BOS,
    EOS,
    NgramLM,
    _pruning_deltas,
    estimate_ngram,
    prune_ngram,
    read_arpa,
    write_arpa,
)


def _corpus(seed: int = 0, n: int = 400) -> list[list[str]]:
    """Sentences with some structure: frequent words, and 'x' mostly followed by 'y'."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(12)]
    out = []
    for _ in range(n):
        sent: list[str] = []
        for _ in range(rng.randint(1, 8)):
            if sent and sent[-1] == "x" and rng.random() < 0.8:
                sent.append("y")
            elif rng.random() < 0.5:
                sent.append(rng.choice(words[:4]))
            else:
                sent.append(rng.choice([*words, "x"]))
        out.append(sent)
    return out


@pytest.fixture(scope="module", params=["kneser_ney", "witten_bell"])
def lm(request) -> NgramLM:
    return estimate_ngram(_corpus(), order=3, method=request.param)


def _table(model: NgramLM) -> dict[tuple[str, ...], tuple[float, float]]:
    return {w: (p, b) for n in range(1, model.order + 1) for w, p, b in model.ngrams(n)}


def _keys(model: NgramLM) -> set[tuple[str, ...]]:
    return {w for n in range(1, model.order + 1) for w, _, _ in model.ngrams(n)}


def _histories(model: NgramLM) -> list[tuple[str, ...]]:
    """Every listed context of order 1 and 2, the empty one and an unlisted one."""
    hists = [(), ("w11", "x"), ("x", "x")]
    for n in (1, 2):
        hists += [w for w, _, _ in model.ngrams(n) if w[-1] != EOS]
    return hists


def _dist(model: NgramLM, h: tuple[str, ...]) -> dict[str, float]:
    return {w: 10.0 ** model.log10prob(w, h) for w in sorted(model.vocab) if w != BOS}


def test_threshold_zero_keeps_everything(lm: NgramLM) -> None:
    pruned = prune_ngram(lm, 0)
    assert pruned is not lm
    assert _table(pruned) == _table(lm)
    assert pruned.unk == lm.unk


def test_distributions_sum_to_one_after_pruning(lm: NgramLM) -> None:
    for threshold in (1e-5, 1e-4, 1e-3, 1e-2):
        pruned = prune_ngram(lm, threshold)
        assert pruned.counts[1] < lm.counts[1] or pruned.counts[2] < lm.counts[2]
        for h in _histories(pruned):
            assert sum(_dist(pruned, h).values()) == pytest.approx(1.0, abs=1e-9), (threshold, h)


def test_pruned_is_subset_with_prefixes_and_same_probs(lm: NgramLM) -> None:
    full = _table(lm)
    for threshold in (1e-4, 1e-3):
        pruned = prune_ngram(lm, threshold)
        table = _table(pruned)
        assert set(table) <= set(full)
        assert pruned.counts[0] == lm.counts[0]  # 1-grams are never pruned
        for words, (prob, _) in table.items():
            assert prob == full[words][0]  # kept probabilities are unchanged
            if len(words) > 1:
                assert words[:-1] in pruned  # the context of a kept n-gram is kept
        assert pruned.order == lm.order and pruned.unk == lm.unk


def test_prune_does_not_modify_input(lm: NgramLM) -> None:
    before = _table(lm)
    prune_ngram(lm, 1e-3)
    assert _table(lm) == before


def _context_prob(model: NgramLM, h: tuple[str, ...]) -> float:
    """P(h) by the chain rule, a leading <s> counted with P(</s>) (SRILM)."""
    p = 1.0
    for i, w in enumerate(h):
        p *= 10.0 ** model.log10prob(EOS if i == 0 and w == BOS else w, h[:i])
    return p


def _without(model: NgramLM, ngram: tuple[str, ...]) -> NgramLM:
    """``model`` without ``ngram``, the backoff weight of its context renormalised by
    enumerating the vocabulary."""
    tables = [{w: (p, b) for w, p, b in model.ngrams(n)} for n in range(1, model.order + 1)]
    del tables[len(ngram) - 1][ngram]
    h = ngram[:-1]
    listed = {g[-1] for g in tables[len(ngram) - 1] if g[:-1] == h}
    vocab = [w for w in model.vocab if w != BOS]
    mass_listed = sum(10.0 ** tables[len(ngram) - 1][(*h, w)][0] for w in listed)
    mass_backoff = sum(10.0 ** model.log10prob(w, h[1:]) for w in vocab if w not in listed)
    prob, _ = tables[len(h) - 1][h]
    tables[len(h) - 1][h] = (prob, math.log10((1.0 - mass_listed) / mass_backoff))
    return NgramLM(tables, unk=model.unk)


def test_delta_matches_brute_force_relative_entropy(lm: NgramLM) -> None:
    rng = random.Random(1)
    for n in (2, 3):
        ngrams = [w for w, _, _ in lm.ngrams(n)]
        deltas = _pruning_deltas(lm, n)
        assert len(deltas) == len(ngrams)
        for j in rng.sample(range(len(ngrams)), 8):
            g = ngrams[j]
            h = g[:-1]
            p, q = _dist(lm, h), _dist(_without(lm, g), h)
            assert sum(q.values()) == pytest.approx(1.0, abs=1e-12)
            kl = sum(pw * math.log(pw / q[w]) for w, pw in p.items() if pw > 0)
            expected = _context_prob(lm, h) * kl  # nats
            assert expected > 0
            assert deltas[j] * math.log(10.0) == pytest.approx(expected, rel=1e-6, abs=1e-15), g


def test_threshold_is_srilm_relative_perplexity_change(lm: NgramLM) -> None:
    """An n-gram goes when exp(D) - 1 < threshold (D in nats), unless it is a context of a
    kept higher-order n-gram; exactly that, order by order from the top."""
    deltas = {n: dict(zip([w for w, _, _ in lm.ngrams(n)], _pruning_deltas(lm, n),
                          strict=True)) for n in (2, 3)}
    for threshold in (3e-5, 3e-4):
        pruned = prune_ngram(lm, threshold)
        kept3 = {g for g, d in deltas[3].items() if not math.expm1(d * math.log(10)) < threshold}
        kept2 = {g for g, d in deltas[2].items() if not math.expm1(d * math.log(10)) < threshold}
        assert {w for w, _, _ in pruned.ngrams(3)} == kept3
        rescued = {g[:-1] for g in kept3} - kept2
        assert {w for w, _, _ in pruned.ngrams(2)} == kept2 | rescued
    # some bigram below the threshold is kept as the context of a kept trigram
    assert rescued


def test_larger_thresholds_prune_more(lm: NgramLM) -> None:
    previous = _keys(lm)
    sizes = []
    for threshold in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1.0):
        kept = _keys(prune_ngram(lm, threshold))
        assert kept <= previous
        sizes.append(len(kept))
        previous = kept
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert sizes[-1] == lm.counts[0]  # everything above the 1-grams gone: a unigram model


def test_pruned_unigram_only_model_is_the_unigram_distribution(lm: NgramLM) -> None:
    pruned = prune_ngram(lm, 1.0)
    assert pruned.counts[1:] == [0, 0]
    for w in ("w0", EOS, "y"):
        assert pruned.log10prob(w, [BOS, "x"]) == pytest.approx(lm.log10prob(w))


def test_training_perplexity_grows_with_threshold(lm: NgramLM) -> None:
    # the criterion bounds the increase of the model's own (training-set) perplexity
    train = _corpus()
    ppl = [prune_ngram(lm, t).perplexity(train).ppl for t in (0, 1e-4, 1e-3, 1e-2)]
    assert ppl == sorted(ppl) and ppl[0] < ppl[-1]


def test_prune_arguments() -> None:
    lm = estimate_ngram(_corpus(), order=2)
    for bad in (-1e-7, math.nan, math.inf):
        with pytest.raises(ValueError, match="threshold"):
            prune_ngram(lm, bad)
    unigram = estimate_ngram(_corpus(), order=1)
    assert _table(prune_ngram(unigram, 0.5)) == _table(unigram)


def test_write_read_roundtrip(lm: NgramLM, tmp_path: Path, caplog) -> None:
    pruned = prune_ngram(lm, 1e-3)
    write_arpa(pruned, tmp_path / "p.arpa")
    back = read_arpa(tmp_path / "p.arpa")
    assert "missing as prefixes" not in caplog.text
    assert back.counts == pruned.counts
    for h in _histories(back):
        assert sum(_dist(back, h).values()) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------- CLI
def _write_text(path: Path, sentences: list[list[str]]) -> Path:
    path.write_text("".join(f"utt{i:04d} {' '.join(s)}\n" for i, s in enumerate(sentences)),
                    encoding="utf-8")
    return path


def test_cli_train_lm_ngram_prune(tmp_path: Path, capsys) -> None:
    text = _write_text(tmp_path / "text", _corpus())
    dev = _write_text(tmp_path / "dev", _corpus(seed=7, n=50))
    assert main(["train-lm", "ngram", str(text), str(tmp_path / "full.arpa")]) == 0
    assert main(["train-lm", "ngram", str(text), str(tmp_path / "lm.arpa"), "--prune", "1e-3",
                 "--dev", str(dev)]) == 0
    out = capsys.readouterr().out
    assert "pruned at 0.001:" in out and "ppl=" in out
    full, pruned = read_arpa(tmp_path / "full.arpa"), read_arpa(tmp_path / "lm.arpa")
    assert pruned.counts[0] == full.counts[0] and pruned.counts[2] < full.counts[2]
    assert _keys(pruned) <= _keys(full)


def test_cli_train_lm_prune(tmp_path: Path, capsys) -> None:
    lm = estimate_ngram(_corpus(), order=3)
    write_arpa(lm, tmp_path / "lm.arpa")
    dev = _write_text(tmp_path / "dev", _corpus(seed=7, n=50))
    assert main(["train-lm", "prune", str(tmp_path / "lm.arpa"), str(tmp_path / "small.arpa.gz"),
                 "--threshold", "1e-3", "--dev", str(dev)]) == 0
    out = capsys.readouterr().out
    assert "(unpruned):" in out and "(pruned):" in out
    assert f"3-grams {prune_ngram(read_arpa(tmp_path / 'lm.arpa'), 1e-3).counts[2]} of " in out
    small = read_arpa(tmp_path / "small.arpa.gz")
    assert small.counts[2] < lm.counts[2]
    # a negative threshold is an input error (exit 2, one line)
    assert main(["train-lm", "prune", str(tmp_path / "lm.arpa"), str(tmp_path / "x.arpa"),
                 "--threshold", "-1"]) == 2
    assert "threshold" in capsys.readouterr().err
