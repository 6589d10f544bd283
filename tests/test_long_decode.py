"""Long utterances: chunked (buffered) CTC encoding, the decode stage's long-utterance paths
and the refusal of the attention methods (asrkit.decode.chunked, asrkit.decode.run)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from asrkit.cli import compose_train_config
from asrkit.decode.chunked import chunked_ctc_log_probs, plan_windows
from asrkit.decode.run import LongUtteranceError, decode_data_dir
from asrkit.decode.wfst import make_tlg_graph
from asrkit.exp.checkpoint import instantiate_model, save_checkpoint
from asrkit.features.cmvn import compute_cmvn_stats, read_cmvn_stats, write_cmvn_stats
from asrkit.lm.ngram import estimate_ngram, write_arpa
from asrkit.models.cnn import CNNCTC
from asrkit.models.conformer import ConformerCTC
from asrkit.models.lstm import LSTMCTC
from asrkit.models.pretrained import PretrainedEncoderCTC
from asrkit.models.transformer import TransformerCTC
from asrkit.text.tokenizer import Tokenizer, train_tokenizer
from tests.synth import _write_feature_files, make_feature_dir
from tests.test_pretrained_encoder import NO_DROPOUT
from tests.test_pretrained_encoder import TINY as TINY_W2V

torch.set_num_threads(1)

F = 20
CNN = ["model=cnn", "model.encoder_dim=16", "model.channels=[16,16]",
       "model.kernel_sizes=[5,5]", "model.repeats=1", "model.dropout=0.0",
       "model.subsampling_channels=8", "model.specaug=null"]
"""A CNN whose receptive field is ±4 encoder frames (two kernels of 5) plus the ×4 front
end's 7 input frames: chunked encoding with more context than that is exact."""


def tiny_cnn() -> CNNCTC:
    torch.manual_seed(0)
    return CNNCTC(F, 7, encoder_dim=16, channels=(16, 16), kernel_sizes=(5, 5), repeats=1,
                  dropout=0.0, subsampling_channels=8).eval()


def family_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "transformer": TransformerCTC(F, 7, d_model=16, nhead=2, num_layers=1,
                                      dim_feedforward=32, dropout=0.0),
        "conformer": ConformerCTC(F, 7, d_model=16, num_heads=2, ffn_dim=32, num_layers=1,
                                  depthwise_conv_kernel_size=3, dropout=0.0),
        "conformer_x6": ConformerCTC(F, 7, d_model=16, num_heads=2, ffn_dim=32, num_layers=1,
                                     depthwise_conv_kernel_size=3, dropout=0.0,
                                     subsampling_factor=6),
        "transformer_x8": TransformerCTC(F, 7, d_model=16, nhead=2, num_layers=1,
                                         dim_feedforward=32, dropout=0.0, subsampling_factor=8),
        "cnn": tiny_cnn(),
        "blstm": LSTMCTC(F, 7, hidden_size=8, num_layers=1, dropout=0.0),
        "lstm_no_subsampling": LSTMCTC(F, 7, hidden_size=8, num_layers=1, dropout=0.0,
                                       bidirectional=False, subsampling="none"),
    }


def feats(num_frames: int, dim: int = F, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, dim, generator=torch.Generator().manual_seed(seed))


# --- window arithmetic -------------------------------------------------------------------------

def conv2d_len(n: int) -> int:
    return max(1, ((n - 1) // 2 - 1) // 2)


def w2v_len(n: int) -> int:  # frames of 160 samples through the standard 320-sample stride
    return (n * 160 - 400) // 320 + 1


@pytest.mark.parametrize("stride,length", [((4, 1), conv2d_len), ((1, 1), lambda n: n),
                                           ((2, 1), w2v_len)])
@pytest.mark.parametrize("num_frames", [40, 257, 1000, 1003])
@pytest.mark.parametrize("chunk,context", [(100, 40), (64, 0), (8, 13), (3000, 400)])
def test_windows_tile_the_encoder_frames_and_align(stride, length, num_frames, chunk, context):
    n_in, n_out = stride
    ws = plan_windows(num_frames, chunk, context, stride, length)
    assert ws[0].keep_start == 0 and ws[-1].keep_end == length(num_frames)
    assert ws[-1].end == num_frames
    for a, b in itertools.pairwise(ws):
        assert a.keep_end == b.keep_start
    for w in ws:
        assert w.start % n_in == 0 and w.start // n_in * n_out == w.offset
        assert w.offset <= w.keep_start < w.keep_end
        assert length(w.end - w.start) >= w.keep_end - w.offset  # the window yields them
        if w.end < num_frames:  # context on the right where the utterance has it
            assert w.end - w.start >= (w.keep_end - w.offset) // n_out * n_in
    with pytest.raises(ValueError, match="shorter than the encoder's stride"):
        plan_windows(100, 3, 0, (4, 1), conv2d_len)


# --- chunked encoding --------------------------------------------------------------------------

@pytest.mark.parametrize("max_frames", [200, 10**6])
def test_chunked_cnn_equals_the_unchunked_encoder(max_frames):
    model = tiny_cnn()
    x = feats(1003)
    with torch.inference_mode():
        whole, lens = model.ctc_log_probs(x[None], torch.tensor([1003]))
    # context 40 frames = 10 encoder frames > the receptive field of 4
    got = chunked_ctc_log_probs(model, x, chunk_frames=100, context_frames=40,
                                max_frames=max_frames)
    assert got.shape == (int(lens[0]), 7) == whole[0].shape
    torch.testing.assert_close(got, whole[0], atol=1e-5, rtol=1e-5)
    # without context the window edges see zeros instead of speech: not the same
    blind = chunked_ctc_log_probs(model, x, chunk_frames=100, context_frames=0)
    assert blind.shape == got.shape
    assert (blind - whole[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["transformer", "conformer", "conformer_x6", "transformer_x8",
                                  "cnn", "blstm", "lstm_no_subsampling"])
@pytest.mark.parametrize("num_frames", [301, 1002])
def test_stitched_length_is_the_unchunked_length(name, num_frames):
    model = family_models()[name].eval()
    x = feats(num_frames)
    with torch.inference_mode():
        whole, lens = model.ctc_log_probs(x[None], torch.tensor([num_frames]))
    assert int(model.encoder_output_lengths(torch.tensor([num_frames]))[0]) == int(lens[0])
    got = chunked_ctc_log_probs(model, x, chunk_frames=120, context_frames=30)
    assert got.shape == whole[0].shape
    # one window holding the whole utterance is the unchunked pass
    one = chunked_ctc_log_probs(model, x, chunk_frames=num_frames, context_frames=0)
    torch.testing.assert_close(one, whole[0], atol=1e-5, rtol=1e-5)


def test_stitched_length_of_the_pretrained_encoder():
    torch.manual_seed(0)
    model = PretrainedEncoderCTC(160, 7, arch="custom", arch_config=TINY_W2V,
                                 dropouts=NO_DROPOUT).eval()
    assert model.encoder_frame_stride() == (2, 1)
    for n in (97, 250):
        x = feats(n, 160)
        with torch.inference_mode():
            whole, lens = model.ctc_log_probs(x[None], torch.tensor([n]))
        assert int(model.encoder_output_lengths(torch.tensor([n]))[0]) == int(lens[0])
        got = chunked_ctc_log_probs(model, x, chunk_frames=40, context_frames=10)
        assert got.shape == whole[0].shape


# --- the decode stage --------------------------------------------------------------------------

def _read_feats(d: Path) -> dict[str, np.ndarray]:
    return {u: np.asarray(m) for u, m in kaldiio.load_scp(str(d / "feats.scp")).items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    train = make_feature_dir(root / "train", n_utts=16, seed=0)
    tok = train_tokenizer(train / "text", root / "tok" / "char", model_type="char")
    # a data dir of 4 short utterances (< 0.7 s) and 2 long ones (6.4 s)
    short = make_feature_dir(root / "short", n_utts=4, seed=1)
    long = make_feature_dir(root / "longsrc", n_utts=2, n_letters=40, seed=2)
    fs, texts = _read_feats(short), {}
    fs.update({u.replace("utt", "long"): x for u, x in _read_feats(long).items()})
    for d in (short, long):
        for line in (d / "text").read_text().splitlines():
            u, t = line.split(" ", 1)
            texts[u if d is short else u.replace("utt", "long")] = t
    mixed = root / "mixed"
    mixed.mkdir()
    ids = _write_feature_files(mixed, fs, texts)
    write_cmvn_stats(mixed / "cmvn.ark", compute_cmvn_stats(fs[u] for u in ids))
    arpa = root / "lm.arpa"
    lm_lines = [ln.split(" ", 1)[1] for ln in (train / "text").read_text().splitlines()]
    write_arpa(estimate_ngram(lm_lines, order=2), arpa)
    graph = make_tlg_graph(tok, arpa, root / "graph")
    return {"root": root, "train": train, "tok": tok, "mixed": mixed, "short": short,
            "graph": graph}


def make_exp(root: Path, setup: dict, overrides: list[str]) -> Path:
    """An experiment dir with an untrained model (config.yaml + one checkpoint)."""
    cfg = compose_train_config([f"exp_dir={root}", f"data.train={setup['train']}",
                                f"data.tokenizer={setup['tok']}", *overrides])
    vocab = Tokenizer(setup["tok"]).vocab_size
    info = OmegaConf.to_container(cfg, resolve=True)
    info["model_dims"] = {"input_dim": F, "vocab_size": vocab}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(info)))
    torch.manual_seed(0)
    model = instantiate_model(cfg.model, F, vocab, from_checkpoint=False,
                              cmvn_stats=read_cmvn_stats(setup["train"] / "cmvn.ark"))
    with torch.no_grad():  # untrained: one token everywhere; make the encoder choose them
        model.ctc_out.weight.mul_(300.0)
        model.ctc_out.bias[1:3] = -1e4  # never <unk> or <sos/eos>
    save_checkpoint(root / "checkpoints" / "epoch1.pt",
                    {"model": model.state_dict(), "epoch": 1, "metrics": {}})
    return root


@pytest.mark.parametrize("method", ["ctc_greedy", "ctc_prefix_beam", "wfst"])
def test_decode_chunks_long_utterances_only(setup, tmp_path, method):
    exp = make_exp(tmp_path / "exp", setup, CNN)
    kw = {"method": method, "device": "cpu", "beam": 4}
    if method == "wfst":
        kw.update(graph=setup["graph"], max_active=200)
    # 1 s windows + 0.5 s context (13 encoder frames > the CNN's receptive field of 4)
    chunked = decode_data_dir(exp, setup["mixed"], tmp_path / "chunked", chunk_seconds=1.0,
                              chunk_overlap=0.5, **kw)
    whole = decode_data_dir(exp, setup["mixed"], tmp_path / "whole", chunk_seconds=None, **kw)
    summary = json.loads((tmp_path / "chunked" / "decode_summary.json").read_text())
    assert summary["num_chunked_utts"] == 2 and summary["chunk_seconds"] == 1.0
    assert json.loads((tmp_path / "whole" / "decode_summary.json").read_text())[
        "num_chunked_utts"] == 0
    assert chunked.num_utts == whole.num_utts == 6
    got, want = chunked.text.read_text(), whole.text.read_text()
    assert got == want
    long_hyps = [line for line in got.splitlines() if "-long" in line]
    assert len(long_hyps) == 2
    if method != "wfst":  # (the graph's words need word-start pieces this model rarely emits)
        assert all(len(h) > 40 for h in long_hyps)  # not all blank


def test_short_utterances_take_the_usual_path(setup, tmp_path):
    exp = make_exp(tmp_path / "exp", setup, ["model.d_model=16", "model.nhead=2",
                                             "model.num_layers=1", "model.dim_feedforward=32",
                                             "model.specaug=null"])
    default = decode_data_dir(exp, setup["short"], tmp_path / "a", device="cpu")
    off = decode_data_dir(exp, setup["short"], tmp_path / "b", device="cpu", chunk_seconds=0)
    assert default.text.read_text() == off.text.read_text()
    assert json.loads((tmp_path / "a" / "decode_summary.json").read_text())[
        "num_chunked_utts"] == 0


@pytest.mark.parametrize("method", ["attention_beam", "joint_ctc_attention"])
def test_attention_methods_refuse_long_utterances(setup, tmp_path, method):
    exp = make_exp(tmp_path / "exp", setup, [
        "model.d_model=16", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=32",
        "model.specaug=null", ("model.decoder={type:transformer,num_layers:1,nhead:2,"
                                "dim_feedforward:32}"), "model.ctc_weight=0.3"])
    with pytest.raises(LongUtteranceError) as err:
        decode_data_dir(exp, setup["mixed"], tmp_path / "out", method=method, device="cpu",
                        chunk_seconds=1.0)
    msg = str(err.value)
    assert "spk0-long000" in msg or "spk1-long001" in msg
    assert "6.4 s" in msg and "asrkit transcribe" in msg and "segments" in msg
    # within the limit (or with chunking off) the method runs as before
    rep = decode_data_dir(exp, setup["short"], tmp_path / "ok", method=method, device="cpu",
                          beam=2, chunk_seconds=1.0)
    assert rep.num_utts == 4


# --- the CTC prefix beam search on long posteriors ----------------------------------------------

PIECES = ["<blank>", "<unk>", "<sos/eos>", "\u2581A", "\u2581B", "C", "\u2581AC", "D"]


def _scorers():
    from asrkit.lm.fusion import (
        CombinedScorer,
        NeuralTokenScorer,
        TokenNgramScorer,
        WordNgramScorer,
    )
    from asrkit.lm.ngram import estimate_ngram
    from asrkit.models.lm import LSTMLM, TransformerLM

    words = estimate_ngram(["A B"] * 8 + ["B A", "AC B", "A BC", "ACD A"], order=2)
    toks = estimate_ngram(["\u2581A \u2581B", "\u2581AC D \u2581B", "\u2581A C"] * 3, order=3)
    torch.manual_seed(0)
    lstm = NeuralTokenScorer(LSTMLM(len(PIECES), 8, 8, 1, 0.0).eval())
    return {"none": None, "word": WordNgramScorer(words, PIECES, word_bonus=0.5),
            "token": TokenNgramScorer(toks, PIECES), "lstm": lstm,
            "combined": CombinedScorer([(WordNgramScorer(words, PIECES), 0.5),
                                        (TokenNgramScorer(toks, PIECES), 0.3)]),
            "transformer": NeuralTokenScorer(TransformerLM(len(PIECES), 8, 2, 1, 16,
                                                           0.0).eval()),
            "function": lambda prefix, token: -0.1 * len(prefix)}


@pytest.mark.parametrize("name", ["none", "word", "token", "lstm", "combined", "transformer",
                                  "function"])
def test_prefix_beam_commits_shared_tokens_without_changing_the_result(name, monkeypatch):
    from asrkit.decode import ctc

    gen = torch.Generator().manual_seed(0)
    T = 250 if name == "transformer" else 700  # one commit point is enough there (slow)
    lp = (torch.randn(T, len(PIECES), generator=gen) * 4).log_softmax(-1)
    lp[:, 1:3] = -30.0
    scorer = _scorers()[name]
    kw = {} if scorer is None else {"scorer": scorer, "lm_weight": 0.5,
                                    "final_scorer": getattr(scorer, "final", None)}
    rebases = []
    if hasattr(scorer, "rebase"):
        rebase = scorer.rebase
        monkeypatch.setattr(scorer, "rebase", lambda p: (rebases.append(len(p)), rebase(p)))
    got = ctc.ctc_prefix_beam_search(lp, 6, token_topk=4, **kw)
    if hasattr(scorer, "reset"):
        scorer.reset()
    monkeypatch.setattr(ctc, "_COMMIT_FRAMES", 10**9)  # prefixes stay whole
    want = ctc.ctc_prefix_beam_search(lp, 6, token_topk=4, **kw)
    assert got == want  # the same hypotheses and scores, bit for bit
    assert len(got[0][0]) > T // 7
    if name in ("word", "token", "lstm", "combined"):
        assert len(rebases) >= 2 and sum(rebases) > 50  # the scorer's cache restarted
    elif name == "transformer":
        assert not rebases  # rereads whole prefixes: it cannot continue from a shorter one


def test_prefix_beam_on_a_long_utterance_keeps_prefixes_short(monkeypatch):
    from asrkit.decode import ctc
    from asrkit.lm.fusion import TokenNgramScorer
    from asrkit.lm.ngram import estimate_ngram

    class Spy(TokenNgramScorer):
        longest = 0

        def __call__(self, prefix, token):
            self.longest = max(self.longest, len(prefix))
            return super().__call__(prefix, token)

    gen = torch.Generator().manual_seed(1)
    T = 3000  # > _LONG_FRAMES: prefixes that disagree with the best one long ago are dropped
    lp = (torch.randn(T, len(PIECES), generator=gen) * 4).log_softmax(-1)
    lp[:, 1:3] = -30.0
    lm = estimate_ngram(["\u2581A \u2581B", "\u2581AC D \u2581B", "\u2581A C"] * 3, order=3)
    spy = Spy(lm, PIECES)
    got = ctc.ctc_prefix_beam_search(lp, 6, token_topk=4, scorer=spy, lm_weight=0.5,
                                     final_scorer=spy.final)
    assert len(got[0][0]) > 800
    # the scorer saw prefixes relative to the committed tokens, never the whole hypothesis
    assert spy.longest <= ctc._MAX_DIVERGENCE + ctc._COMMIT_FRAMES
    spy.reset()
    monkeypatch.setattr(ctc, "_COMMIT_FRAMES", 10**9)  # exact: whole prefixes, nothing dropped
    exact = ctc.ctc_prefix_beam_search(lp, 6, token_topk=4, scorer=spy, lm_weight=0.5,
                                       final_scorer=spy.final)
    assert spy.longest > 800
    # dropping stale variants is pruning, not exactness; it scores no worse than 1 % off
    # (here it is better: the freed beam slots hold fresher alternatives)
    assert got[0][1] >= exact[0][1] - 0.01 * abs(exact[0][1])
