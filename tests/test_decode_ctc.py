"""CTC prefix beam search, n-best files and the ``ctc_prefix_beam`` decode stage."""

import itertools
import json
import math
from collections import defaultdict

import pytest
import torch

from asrkit.cli import build_parser, compose_train_config
from asrkit.decode.ctc import (
    ctc_greedy,
    ctc_prefix_beam_search,
    ctc_prefix_beam_search_batch,
)
from asrkit.decode.nbest import read_nbest, write_nbest
from asrkit.decode.run import decode_data_dir
from asrkit.score import score_files
from asrkit.text.tokenizer import train_tokenizer
from asrkit.train.loop import train
from tests.synth import make_feature_dir
from tests.test_train import TINY

torch.set_num_threads(1)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """P(label sequence) = sum over all V^T frame paths that collapse to it (float64)."""
    p = log_probs.double().exp()
    num_frames, vocab = p.shape
    out: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(vocab), repeat=num_frames):
        prob = math.prod(p[t, s].item() for t, s in enumerate(path))
        labels = tuple(s for i, s in enumerate(path)
                       if s != blank and (i == 0 or s != path[i - 1]))
        out[labels] += prob
    return dict(out)


def random_log_probs(num_frames: int, vocab: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_frames, vocab, generator=g, dtype=torch.float64)
    return (x * scale).log_softmax(-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prefix_beam_matches_brute_force_sum_over_alignments(seed):
    lp = random_log_probs(4, 3, seed)
    exact = brute_force(lp)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-9)
    want = sorted(exact.items(), key=lambda kv: -kv[1])
    got = ctc_prefix_beam_search(lp, beam=64)
    # the beam holds every prefix, so every label sequence's probability is exact
    assert len(got) == len(exact)
    # top-3: same order, same probabilities
    assert [tuple(ids) for ids, _ in got[:3]] == [labels for labels, _ in want[:3]]
    for (_, score), (_, prob) in zip(got[:3], want[:3]):
        assert math.exp(score) == pytest.approx(prob, abs=1e-6)
    # and all of them
    for ids, score in got:
        assert math.exp(score) == pytest.approx(exact[tuple(ids)], abs=1e-6)


def test_prefix_beam_repeated_labels_need_a_blank():
    # 2 frames, tokens {blank, a}: "a a" needs a blank between, so P("a a") = 0 with T=2
    lp = torch.tensor([[0.2, 0.8], [0.3, 0.7]]).log()
    got = {tuple(i): math.exp(s) for i, s in ctc_prefix_beam_search(lp, beam=8)}
    assert (1, 1) not in got
    assert got[(1,)] == pytest.approx(0.8 * 0.3 + 0.8 * 0.7 + 0.2 * 0.7)
    assert got[()] == pytest.approx(0.2 * 0.3)


def test_nbest_sorted_unique_and_bounded_by_beam():
    lp = random_log_probs(30, 6, seed=7, scale=2.0)
    for beam in (1, 3, 8):
        res = ctc_prefix_beam_search(lp, beam=beam)
        assert 1 <= len(res) <= beam
        scores = [s for _, s in res]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in res}) == len(res)
        assert all(0 not in ids for ids, _ in res)
        assert all(s <= 0.0 for s in scores)
    # a wider beam finds a best hypothesis at least as probable
    assert ctc_prefix_beam_search(lp, beam=8)[0][1] >= ctc_prefix_beam_search(lp, beam=1)[0][1]


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_equals_greedy_on_peaked_posteriors(seed):
    g = torch.Generator().manual_seed(seed)
    num_frames, vocab = 40, 7
    best = torch.randint(0, vocab, (num_frames,), generator=g)
    logits = torch.randn(num_frames, vocab, generator=g) * 0.5
    logits[torch.arange(num_frames), best] += 8.0
    lp = logits.log_softmax(-1)
    greedy = ctc_greedy(lp[None], torch.tensor([num_frames]))[0]
    assert ctc_prefix_beam_search(lp, beam=1)[0][0] == greedy
    assert ctc_prefix_beam_search(lp, beam=5, token_topk=2)[0][0] == greedy


def test_pruning_keeps_the_result_on_peaked_posteriors_and_thresholds_candidates():
    lp = random_log_probs(12, 5, seed=3, scale=3.0)
    full = ctc_prefix_beam_search(lp, beam=10)
    assert ctc_prefix_beam_search(lp, beam=10, token_topk=4) == full  # 4 = all non-blank
    # a threshold above every non-blank log-prob leaves only the empty hypothesis
    only_blank = ctc_prefix_beam_search(lp, beam=10, prune=0.5)
    assert only_blank == [([], pytest.approx(lp[:, 0].sum().item()))]
    with pytest.raises(ValueError, match="token_topk"):
        ctc_prefix_beam_search(lp, token_topk=0)


def test_scorer_hook_changes_the_result_and_adds_weighted_lm_scores():
    # Two frames where token 1 is slightly more likely than token 2.
    lp = torch.tensor([[0.1, 0.47, 0.43], [0.8, 0.1, 0.1]]).log()
    plain = ctc_prefix_beam_search(lp, beam=5)
    assert plain[0][0] == [1]
    calls = []

    def favour_two(prefix: tuple[int, ...], token: int) -> float:
        calls.append((prefix, token))
        return math.log(0.9) if token == 2 else math.log(0.05)

    lm = ctc_prefix_beam_search(lp, beam=5, scorer=favour_two, lm_weight=1.0)
    assert lm[0][0] == [2]
    # score = log P_ctc + lm_weight * sum of the scorer over the prefix
    exact = brute_force(lp)
    for ids, score in lm:
        lm_sum = sum(favour_two(tuple(ids[:i]), c) for i, c in enumerate(ids))
        assert score == pytest.approx(math.log(exact[tuple(ids)]) + lm_sum, abs=1e-9)
    # the scorer saw real prefixes, each (prefix, token) pair once per live prefix
    assert ((), 1) in calls and ((), 2) in calls and ((1,), 2) in calls
    # weight 0 (or no scorer) is the plain search
    assert ctc_prefix_beam_search(lp, beam=5, scorer=favour_two, lm_weight=0.0) == plain
    # a small weight is not enough to flip the decision
    assert ctc_prefix_beam_search(lp, beam=5, scorer=favour_two, lm_weight=0.01)[0][0] == [1]


def test_batch_wrapper_respects_lengths():
    lp = random_log_probs(2 * 9, 4, seed=5).view(2, 9, 4)
    lens = torch.tensor([9, 5])
    res = ctc_prefix_beam_search_batch(lp, lens, beam=4)
    assert res[0] == ctc_prefix_beam_search(lp[0], 4)
    assert res[1] == ctc_prefix_beam_search(lp[1, :5], 4)
    assert ctc_prefix_beam_search(lp[0, :0], 4) == [([], 0.0)]
    with pytest.raises(ValueError, match="lengths"):
        ctc_prefix_beam_search_batch(lp, torch.tensor([9, 10]), beam=4)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        ctc_prefix_beam_search_batch(lp[0], lens, beam=4)


def test_nbest_round_trip(tmp_path):
    nb = {"spk1-utt2": [("A B", -1.25), ("A", -2.5), ("", -9.0)],
          "spk0-utt1": [("C  D", -0.5)]}
    path = write_nbest(tmp_path / "nbest", nb)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["spk0-utt1-1 -0.500000 C D", "spk1-utt2-1 -1.250000 A B",
                     "spk1-utt2-2 -2.500000 A", "spk1-utt2-3 -9.000000"]
    back = read_nbest(path)
    assert list(back) == ["spk0-utt1", "spk1-utt2"]
    assert back["spk1-utt2"] == [("A B", -1.25), ("A", -2.5), ("", -9.0)]
    assert back["spk0-utt1"] == [("C D", -0.5)]
    with pytest.raises(ValueError, match="whitespace"):
        write_nbest(tmp_path / "bad", {"a b": [("x", 0.0)]})


def test_decode_stage_merges_token_sequences_with_the_same_text():
    from asrkit.decode.run import _distinct_texts

    class Chars:  # id 3 = word boundary, 4.. = letters
        def decode(self, ids):
            return "".join(" " if i == 3 else "ABCDE"[i - 4] for i in ids).strip()

    res = [([4, 3, 5], -1.0), ([4, 3, 5, 3], -1.5), ([4], -2.0), ([3, 4], -2.5), ([5], -3.0)]
    assert _distinct_texts(res, Chars(), 3) == [("A B", -1.0), ("A", -2.0), ("B", -3.0)]
    assert _distinct_texts(res, Chars(), 5) == [("A B", -1.0), ("A", -2.0), ("B", -3.0)]


@pytest.mark.parametrize("bad, why", [
    ("u1-1 -1.0 A\nu1 -2.0 B\n", "u1"),                # no rank suffix
    ("u1-1 -1.0 A\nu1-3 -2.0 B\n", "rank 3"),          # skipped rank
    ("u1-1 -1.0 A\nu1-2 minus B\n", "not a number"),   # bad score
    ("u1-1 -1.0 A\nu1-2\n", "expected"),               # missing score
    ("u1-1 -1.0 A\nu2-1 -1 B\nu1-2 -2 C\n", "consecutive"),
])
def test_read_nbest_names_file_and_line(tmp_path, bad, why):
    path = tmp_path / "nbest"
    path.write_text(bad, encoding="utf-8")
    line = 3 if "consecutive" in why else 2
    with pytest.raises(ValueError, match=rf"nbest:{line}: .*{why}"):
        read_nbest(path)


def test_cli_decode_documents_method_beam_nbest():
    p = build_parser()
    args = p.parse_args(["decode", "exp", "data", "--method", "ctc_prefix_beam", "--beam", "8",
                         "--nbest", "4"])
    assert (args.method, args.beam, args.nbest) == ("ctc_prefix_beam", 8, 4)
    sub = p._subparsers._group_actions[0].choices["decode"]
    help_text = sub.format_help()
    for word in ("--beam", "--nbest", "ctc_prefix_beam", "<utt-id>-<rank> <score>"):
        assert word in help_text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_ctc")
    train_dir = make_feature_dir(root / "train", n_utts=32, seed=0)
    dev_dir = make_feature_dir(root / "dev", n_utts=8, seed=1)
    tok = train_tokenizer(train_dir / "text", root / "tok" / "char", model_type="char")
    exp = root / "exp"
    train(compose_train_config([
        f"exp_dir={exp}", f"data.train={train_dir}", f"data.dev={dev_dir}",
        f"data.tokenizer={tok}", *TINY, "trainer.max_epochs=8"]))
    return {"exp": exp, "dev": dev_dir}


def test_decode_stage_prefix_beam_writes_text_and_nbest(trained):
    exp, dev = trained["exp"], trained["dev"]
    greedy = decode_data_dir(exp, dev, method="ctc_greedy", device="cpu")
    beam = decode_data_dir(exp, dev, method="ctc_prefix_beam", beam=8, nbest=3, device="cpu")
    assert beam.text == exp / "decode_dev_ctc_prefix_beam" / "text"
    assert beam.num_utts == 8 and beam.rtf > 0
    summary = json.loads((beam.text.parent / "decode_summary.json").read_text())
    assert (summary["method"], summary["beam"], summary["num_utts"]) == ("ctc_prefix_beam", 8, 8)
    assert summary["rtf"] == pytest.approx(beam.rtf, rel=1e-3)
    cer_greedy = score_files(dev / "text", greedy.text).cer.rate
    cer_beam = score_files(dev / "text", beam.text).cer.rate
    assert cer_beam <= cer_greedy + 5.0, (cer_beam, cer_greedy)
    assert beam.nbest == beam.text.parent / "nbest"
    nb = read_nbest(beam.nbest)
    assert len(nb) == 8 and all(len(h) == 3 for h in nb.values())
    text = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in beam.text.read_text().splitlines())
    for utt, hyps in nb.items():
        assert hyps[0][0] == text[utt].strip()
        assert len({t for t, _ in hyps}) == len(hyps)  # distinct texts
        scores = [s for _, s in hyps]
        assert scores == sorted(scores, reverse=True)
    # a 1-best rerun into the same directory removes the stale n-best file
    again = decode_data_dir(exp, dev, method="ctc_prefix_beam", beam=4, device="cpu")
    assert again.nbest is None and not (again.text.parent / "nbest").exists()
    with pytest.raises(ValueError, match="nbest"):
        decode_data_dir(exp, dev, method="ctc_greedy", nbest=2, device="cpu")
    with pytest.raises(ValueError, match="nbest"):
        decode_data_dir(exp, dev, method="ctc_prefix_beam", beam=2, nbest=3, device="cpu")
