"""CNN (QuartzNet-style), LSTM and Conformer CTC families: shapes, padding, training, configs.

Everything is tiny (F = 20, D ≤ 32, ≤ 100 frames) and single-threaded.
"""

import hydra
import numpy as np
import pytest
import torch

from asrkit.cli import compose_train_config
from asrkit.models.base import CTCModel
from asrkit.models.cnn import CNNCTC
from asrkit.models.conformer import ConformerCTC
from asrkit.models.lstm import LSTMCTC
from asrkit.models.modules.subsampling import Conv2dSubsampling

torch.set_num_threads(1)

F, V = 20, 9
TINY = {
    "cnn": lambda **kw: CNNCTC(F, V, **{
        "encoder_dim": 16, "channels": [16, 24], "kernel_sizes": [5, 7], "repeats": 2,
        "dropout": 0.0, "subsampling_channels": 8, "specaug": None, **kw}),
    "lstm": lambda **kw: LSTMCTC(F, V, **{
        "hidden_size": 16, "num_layers": 2, "bidirectional": True, "dropout": 0.0,
        "subsampling_channels": 8, "specaug": None, **kw}),
    "conformer": lambda **kw: ConformerCTC(F, V, **{
        "d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
        "depthwise_conv_kernel_size": 7, "dropout": 0.0, "subsampling_channels": 8,
        "specaug": None, **kw}),
}
# extra LSTM variants that must behave like the others
VARIANTS = {
    **TINY,
    "lstm_uni_proj": lambda **kw: TINY["lstm"](bidirectional=False, proj_dim=12, **kw),
    "lstm_nosub": lambda **kw: TINY["lstm"](subsampling="none", **kw),
}
SUBSAMPLES = {"lstm_nosub": False}


def expected_lengths(name: str, lengths: torch.Tensor) -> torch.Tensor:
    if not SUBSAMPLES.get(name, True):
        return lengths
    return Conv2dSubsampling(80, 8).output_lengths(lengths)


@pytest.mark.parametrize("name", VARIANTS)
def test_output_shapes_and_lengths(name):
    torch.manual_seed(0)
    m = VARIANTS[name]().eval()
    lengths = torch.tensor([37, 64, 100])
    with torch.no_grad():
        lp, lens = m.ctc_log_probs(torch.randn(3, 100, F), lengths)
    exp = expected_lengths(name, lengths)
    assert torch.equal(lens, exp)
    assert lp.shape == (3, int(exp.max()), V)
    enc, _ = m.encode(torch.randn(3, 100, F), lengths)
    assert enc.shape[:2] == lp.shape[:2] and enc.shape[2] == m.ctc_out.in_features


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_output_independent_of_padding(name):
    """An utterance alone = the same utterance padded (with garbage) next to a longer one."""
    torch.manual_seed(0)
    m = VARIANTS[name]()
    # a few training-mode passes so BatchNorm running statistics are not the identity
    with torch.no_grad():
        for _ in range(3):
            m.encode(torch.randn(2, 60, F) * 2 + 1, torch.tensor([60, 45]))
    m.eval()
    a = torch.randn(50, F)
    feats = torch.randn(2, 100, F) * 3  # padding holds noise, not zeros
    feats[0, :50] = a
    lengths = torch.tensor([50, 90])  # and the batch is padded past its longest utterance
    with torch.no_grad():
        lp, lens = m.ctc_log_probs(feats, lengths)
        lp_a, len_a = m.ctc_log_probs(a[None], torch.tensor([50]))
    assert int(lens[0]) == int(len_a[0]) == lp_a.size(1)
    torch.testing.assert_close(lp[0, : lens[0]], lp_a[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_finite_and_backward(name):
    torch.manual_seed(0)
    m = VARIANTS[name]().train()
    feats, lengths = torch.randn(2, 60, F), torch.tensor([60, 48])
    targets, target_lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    out = m(feats, lengths, targets, target_lens)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", TINY)
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    m = TINY[name]().train()
    feats, lengths = torch.randn(2, 60, F), torch.tensor([60, 56])
    targets, target_lens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]]), torch.tensor([4, 3])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = m(feats, lengths, targets, target_lens)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", TINY)
def test_state_dict_with_cmvn_loads_into_model_without(name):
    """Training builds with the training set's CMVN stats; decoding builds without and loads."""
    rng = np.random.default_rng(0)
    stats = np.zeros((2, F + 1))
    stats[0, -1] = 100
    stats[0, :F] = rng.normal(size=F) * 100
    stats[1, :F] = (rng.uniform(1, 4, size=F) + (stats[0, :F] / 100) ** 2) * 100
    torch.manual_seed(0)
    trained = TINY[name](cmvn_stats=stats).eval()
    torch.manual_seed(1)
    fresh = TINY[name]().eval()
    fresh.load_state_dict(trained.state_dict())
    feats, lengths = torch.randn(2, 40, F) * 3, torch.tensor([40, 30])
    with torch.no_grad():
        torch.testing.assert_close(fresh.ctc_log_probs(feats, lengths)[0],
                                   trained.ctc_log_probs(feats, lengths)[0])
    torch.testing.assert_close(fresh.normalize.mean, trained.normalize.mean)


@pytest.mark.parametrize("name,cls", [("cnn", CNNCTC), ("lstm", LSTMCTC),
                                      ("conformer", ConformerCTC)])
def test_yaml_composes_and_instantiates(name, cls):
    cfg = compose_train_config([f"model={name}", "exp_dir=x"])
    m = hydra.utils.instantiate(cfg.model, input_dim=80, vocab_size=30)
    assert isinstance(m, cls) and isinstance(m, CTCModel)
    assert m.specaug is not None
    n = sum(p.numel() for p in m.parameters())
    assert 5e6 <= n <= 10e6, n
    m.eval()
    with torch.no_grad():
        lp, lens = m.ctc_log_probs(torch.randn(1, 60, 80), torch.tensor([60]))
    assert lp.shape == (1, 14, 30) and int(lens[0]) == 14


@pytest.mark.parametrize("subsampling", ["none", "conv2d"])
def test_unidirectional_lstm_is_causal(subsampling):
    torch.manual_seed(0)
    m = TINY["lstm"](bidirectional=False, subsampling=subsampling).eval()
    x = torch.randn(1, 60, F)
    # output frame t' sees input frames up to 4t' + 6 through the conv front end
    t_out = 25 if subsampling == "none" else 6
    first_changed = t_out if subsampling == "none" else 4 * (t_out - 1) + 7
    y = x.clone()
    y[:, first_changed:] = torch.randn(1, 60 - first_changed, F)
    lengths = torch.tensor([60])
    with torch.no_grad():
        lx, _ = m.ctc_log_probs(x, lengths)
        ly, _ = m.ctc_log_probs(y, lengths)
    torch.testing.assert_close(lx[:, :t_out], ly[:, :t_out], atol=0, rtol=0)
    assert not torch.allclose(lx[:, t_out:], ly[:, t_out:])
    # the bidirectional model, by contrast, looks ahead
    bi = TINY["lstm"](subsampling=subsampling).eval()
    with torch.no_grad():
        assert not torch.allclose(bi.ctc_log_probs(x, lengths)[0][:, :t_out],
                                  bi.ctc_log_probs(y, lengths)[0][:, :t_out])


def test_conformer_layers_match_torchaudio_without_padding():
    """The masked layer loop computes torchaudio's ``Conformer.forward`` when nothing is padded."""
    torch.manual_seed(0)
    m = TINY["conformer"]().eval()
    x, lengths = torch.randn(2, 60, F), torch.tensor([60, 60])
    with torch.no_grad():
        enc, _ = m.encoder_forward(x, lengths)
        sub, sub_lens = m.subsample(x, lengths)
        ref, _ = m.conformer(m.pos(sub), sub_lens)
    torch.testing.assert_close(enc, ref, atol=1e-5, rtol=1e-5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="odd"):
        TINY["cnn"](kernel_sizes=[5, 6])
    with pytest.raises(ValueError, match="equally long"):
        TINY["cnn"](kernel_sizes=[5])
    with pytest.raises(ValueError, match="repeats"):
        TINY["cnn"](repeats=0)
    with pytest.raises(ValueError, match="subsampling"):
        TINY["lstm"](subsampling="conv1d")
    with pytest.raises(ValueError, match="odd"):
        TINY["conformer"](depthwise_conv_kernel_size=8)
