import numpy as np
import pytest
import torch

from asrkit.models.modules.specaug import SpecAugment
from asrkit.models.modules.subsampling import Conv2dSubsampling
from asrkit.models.transformer import TransformerCTC
from asrkit.train.schedulers import WarmupLR


def tiny(**kw):
    args = {"input_dim": 20, "vocab_size": 9, "d_model": 32, "nhead": 2, "num_layers": 2,
            "dim_feedforward": 64, "dropout": 0.0, "specaug": None}
    args.update(kw)
    return TransformerCTC(**args)


def test_subsampling_lengths_match_output():
    sub = Conv2dSubsampling(80, 64)
    for t in (7, 8, 9, 10, 101, 1000):
        y, lens = sub(torch.randn(1, t, 80), torch.tensor([t]))
        assert y.shape == (1, int(lens[0]), 64)
        assert int(lens[0]) == ((t - 1) // 2 - 1) // 2
    with pytest.raises(ValueError, match="too short"):
        sub(torch.randn(1, 6, 80), torch.tensor([6]))


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    m = tiny().eval()
    a, b = torch.randn(50, 20), torch.randn(90, 20)
    feats = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    lp, lens = m.ctc_log_probs(feats, torch.tensor([50, 90]))
    lp_a, len_a = m.ctc_log_probs(a[None], torch.tensor([50]))
    assert int(lens[0]) == int(len_a[0])
    torch.testing.assert_close(lp[0, : lens[0]], lp_a[0], atol=1e-5, rtol=1e-4)
    # batch loss is the mean of per-utterance losses
    tg = torch.tensor([[1, 2, 3], [4, 5, -1]])
    tl = torch.tensor([3, 2])
    loss = m(feats, torch.tensor([50, 90]), tg, tl)["loss"]
    la = m(a[None], torch.tensor([50]), tg[:1], tl[:1])["loss"]
    lb = m(b[None], torch.tensor([90]), tg[1:, :2], tl[1:])["loss"]
    torch.testing.assert_close(loss, (la + lb) / 2, atol=1e-4, rtol=1e-4)


def test_cmvn_stats_applied_inside_model():
    stats = np.zeros((2, 21))
    stats[0, :20] = 5.0 * 10
    stats[0, 20] = 10
    stats[1, :20] = (25.0 + 4.0) * 10  # mean 5, var 4
    m = tiny(cmvn_stats=stats)
    x = torch.full((1, 3, 20), 7.0)
    torch.testing.assert_close(m.normalize(x), torch.ones(1, 3, 20))


def test_specaugment_only_in_training():
    aug = SpecAugment(num_freq_masks=2, freq_mask_width=10, num_time_masks=2,
                      time_mask_width=20, time_mask_ratio=0.5)
    x = torch.randn(3, 200, 40)
    assert torch.equal(aug.eval()(x), x)
    torch.manual_seed(0)
    y = aug.train()(x)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_warmup_lr_peaks_at_warmup():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = WarmupLR(opt, warmup_steps=100)
    lrs = []
    for _ in range(400):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert peak in (98, 99) and lrs[peak] == pytest.approx(1.0, rel=0.02)
    assert lrs[10] < lrs[50] < lrs[99] and lrs[399] == pytest.approx(0.5, rel=0.02)
