"""Second-pass rescoring with a big n-gram: the ARPA reader that keeps only the n-grams some
sentences need (read_arpa keep=, NgramSentenceLM) and the first-pass LM taken out of the
decoder scores (rescore_nbest old_lm=, asrkit rescore --old-lm)."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from asrkit.cli import main
from asrkit.decode.nbest import write_nbest
from asrkit.lm import ngram as ngram_mod
from asrkit.lm.ngram import ArpaError, estimate_ngram, ngrams_of_sentences, read_arpa, write_arpa
from asrkit.lm.rescore import NgramSentenceLM, rescore_nbest

WORDS = ["THE", "A", "CAT", "DOG", "SAT", "RAN", "ON", "MAT", "LOG", "AND"]


def _text(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def arpa4(tmp_path_factory):
    """A Kneser-Ney 4-gram with an unknown-word token."""
    path = tmp_path_factory.mktemp("lm") / "fg.arpa"
    write_arpa(estimate_ngram(_text(0, 400), order=4, unk="<UNK>"), path)
    return path


def test_ngrams_of_sentences():
    got = ngrams_of_sentences(["A B"], 3)
    assert got == {("<s>",), ("A",), ("<s>", "A"), ("B",), ("A", "B"), ("<s>", "A", "B"),
                   ("</s>",), ("B", "</s>"), ("A", "B", "</s>")}
    assert ngrams_of_sentences([["A"]], 2, bos=False, eos=False) == {("A",)}


def test_keep_scores_like_the_whole_model(arpa4):
    full = read_arpa(arpa4)
    sents = _text(1, 30) + ["CAT ZEBRA MAT", "THE THE THE THE THE", "MAT"]
    mapped = [[w if w in full.vocab else "<UNK>" for w in s.split()] for s in sents]
    part = read_arpa(arpa4, keep=ngrams_of_sentences(mapped, full.order))
    assert part.counts[0] == full.counts[0]  # every 1-gram is kept
    assert sum(part.counts[1:]) < sum(full.counts[1:]) / 2
    for s in sents:
        assert part.score_sentence(s) == pytest.approx(full.score_sentence(s), abs=1e-9)
    # A sentence whose n-grams were not kept backs off to lower orders: a different score.
    other = "DOG AND LOG ON THE CAT SAT"
    if not ngrams_of_sentences([other], 4) <= ngrams_of_sentences(mapped, 4):
        assert part.score_sentence(other) != pytest.approx(full.score_sentence(other))


def test_streaming_reader_errors_name_the_line(tmp_path, arpa4):
    lines = arpa4.read_text().splitlines()
    bad = tmp_path / "bad.arpa"
    i = next(k for k, line in enumerate(lines) if line == "\\2-grams:") + 1
    bad.write_text("\n".join(lines[:i] + ["-0.5 CAT"] + lines[i + 1:]) + "\n")
    with pytest.raises(ArpaError, match=f"bad.arpa:{i + 1}:.*field"):
        read_arpa(bad, keep=set())  # checked even where nothing is kept
    cut = tmp_path / "cut.arpa"
    cut.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(ArpaError, match="ends before"):
        read_arpa(cut)
    broken = tmp_path / "broken.arpa.gz"
    broken.write_bytes(gzip.compress(arpa4.read_bytes())[:200])
    with pytest.raises(ArpaError, match="corrupt gzip|ends before"):
        read_arpa(broken)


def test_sentence_lm_loads_only_what_it_needs(arpa4, tmp_path, monkeypatch):
    gz = tmp_path / "fg.arpa.gz"
    gz.write_bytes(gzip.compress(arpa4.read_bytes()))
    full = read_arpa(arpa4)
    calls = []
    real = ngram_mod.read_arpa

    def counting(*a, **k):
        calls.append(k.get("keep"))
        return real(*a, **k)

    monkeypatch.setattr(ngram_mod, "read_arpa", counting)
    lm = NgramSentenceLM(gz)
    texts = ["THE CAT SAT ON THE MAT", "A ZEBRA RAN", ""]
    got = lm.score(texts)
    assert got == pytest.approx([full.score_sentence(t) for t in texts])
    assert len(calls) == 1 and calls[0] is not None
    assert sum(lm.lm.counts[1:]) < sum(full.counts[1:])
    lm.score(texts[:1])  # all loaded already: no second pass over the file
    assert len(calls) == 1
    lm.score(["DOG AND LOG"])  # new n-grams: one more pass
    assert len(calls) == 2
    with pytest.raises(ArpaError, match="file not found"):
        NgramSentenceLM(tmp_path / "none.arpa").score(["A"])


def test_old_lm_is_replaced_not_added(arpa4, tmp_path):
    """Decoder scores = acoustic + old LM; rescoring with the old LM taken out and a new LM
    added ranks by acoustic + new LM exactly."""
    old_path = tmp_path / "bg.arpa"
    write_arpa(estimate_ngram(_text(5, 50), order=2, unk="<UNK>"), old_path)
    old, new = NgramSentenceLM(old_path), NgramSentenceLM(arpa4)
    rng = random.Random(3)
    nbest, am = {}, {}
    for u in range(20):
        hyps = list(dict.fromkeys(_text(100 + u, 6)))
        am[u] = [rng.uniform(-30, -10) for _ in hyps]
        olds = old.score(hyps)
        nbest[f"u{u}"] = [(h, a + o) for h, a, o in zip(hyps, am[u], olds)]
    best, rescored, _ = rescore_nbest(nbest, new, lm_weight=1.0, old_lm=old)
    for u in range(20):
        hyps = [h for h, _ in nbest[f"u{u}"]]
        want = max(zip(hyps, am[u], new.score(hyps)), key=lambda x: x[1] + x[2])[0]
        assert best[f"u{u}"] == want
        top = dict(rescored[f"u{u}"])[want]
        assert top == pytest.approx(am[u][hyps.index(want)] + new.score([want])[0], abs=1e-6)
    # Without old_lm the first-pass LM stays in: some 1-best differ.
    plain, _, _ = rescore_nbest(nbest, new, lm_weight=1.0)
    assert plain != best


def test_rescore_cli_old_lm(arpa4, tmp_path):
    old_path = tmp_path / "bg.arpa"
    write_arpa(estimate_ngram(["CAT SAT"] * 20 + ["THE DOG"], order=2, unk="<UNK>"), old_path)
    old = NgramSentenceLM(old_path)
    hyps = ["CAT SAT", "THE CAT SAT ON THE MAT"]
    # Equal acoustic scores; the old LM favours "CAT SAT" by a wide margin.
    nb = tmp_path / "nbest"
    write_nbest(nb, {"u": [(h, -20.0 + s) for h, s in zip(hyps, old.score(hyps))]})
    new_scores = NgramSentenceLM(arpa4).score(hyps)
    want = hyps[max(range(2), key=lambda i: new_scores[i])]
    out = tmp_path / "out"
    assert main(["rescore", str(nb), str(out), "--lm", f"ngram:{arpa4}", "--lm-weight", "1",
                 "--old-lm", f"ngram:{old_path}"]) == 0
    assert (out / "text").read_text() == f"u {want}\n"
    summary = json.loads((out / "rescore_summary.json").read_text())
    assert summary["old_lm"] == f"ngram:{old_path}" and summary["old_lm_weight"] == 1.0
