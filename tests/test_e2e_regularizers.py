"""Frame-rate reduction ×4/×6/×8, intermediate and self-conditioned CTC, SpecAugment time
warping (issue 15 item 2): shapes, lengths, loss mixing and train/eval behaviour."""

import pytest
import torch

from asrkit.models.conformer import ConformerCTC
from asrkit.models.modules.specaug import SpecAugment, time_warp
from asrkit.models.modules.subsampling import SUBSAMPLING_FACTORS, Conv2dSubsampling
from asrkit.models.transformer import TransformerCTC

F = 20


def conformer(**kw) -> ConformerCTC:
    torch.manual_seed(0)
    return ConformerCTC(F, 9, d_model=16, num_heads=2, ffn_dim=32, num_layers=3,
                        depthwise_conv_kernel_size=3, dropout=0.0, **kw)


def transformer(**kw) -> TransformerCTC:
    torch.manual_seed(0)
    return TransformerCTC(F, 9, d_model=16, nhead=2, num_layers=3, dim_feedforward=32,
                          dropout=0.0, **kw)


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 130, F, generator=g)
    lens = torch.tensor([130, 97, 64])
    y = torch.randint(1, 9, (3, 6), generator=g)
    return x, lens, y, torch.tensor([6, 5, 3])


@pytest.mark.parametrize("factor", SUBSAMPLING_FACTORS)
def test_subsampling_lengths_match_the_convolutions(factor):
    sub = Conv2dSubsampling(F, 8, factor=factor)
    assert sub.stride == factor
    for t in range(sub.min_frames, 200, 7):
        y, lens = sub(torch.randn(1, t, F), torch.tensor([t]))
        assert y.shape[1] == int(lens[0]) == int(sub.output_lengths(torch.tensor([t]))[0])
        assert abs(t / factor - y.shape[1]) < 3  # about T / factor frames
    with pytest.raises(ValueError, match="too short"):
        sub(torch.randn(1, sub.min_frames - 1, F), torch.tensor([sub.min_frames - 1]))


def test_bad_subsampling_factor_raises():
    with pytest.raises(ValueError, match="4, 6, 8"):
        Conv2dSubsampling(F, 8, factor=3)


@pytest.mark.parametrize("build", [conformer, transformer])
@pytest.mark.parametrize("factor", [6, 8])
def test_family_output_lengths_with_larger_factors(build, factor):
    model = build(subsampling_factor=factor).eval()
    x, lens, _, _ = batch()
    assert model.encoder_frame_stride() == (factor, 1)
    with torch.inference_mode():
        lp, out_lens = model.ctc_log_probs(x, lens)
    assert torch.equal(out_lens, model.encoder_output_lengths(lens))
    assert lp.shape[1] == int(out_lens.max())


@pytest.mark.parametrize("build", [conformer, transformer])
def test_interctc_loss_mixes_the_intermediate_losses(build):
    w = 0.4
    model = build(interctc_layers=[1, 2], interctc_weight=w).train()
    x, lens, y, ylens = batch()
    torch.manual_seed(3)
    out = model(x, lens, y, ylens)
    assert "interctc" in out
    torch.manual_seed(3)  # same SpecAugment masks: the same encoder output
    enc, elens = model.encode(x, lens)
    plain = model.ctc_loss_from_encoder(enc, elens, y, ylens)
    torch.testing.assert_close(out["loss"], (1 - w) * plain + w * out["interctc"])
    assert abs(float(out["interctc"]) - float(plain.detach())) > 1e-4  # other layers, other losses
    out["loss"].backward()  # the intermediate losses reach the lower layers' weights
    # evaluation keeps no intermediate posteriors: the loss is the plain CTC loss
    model.eval()
    with torch.no_grad():
        ev = model(x, lens, y, ylens)
        enc, elens = model.encode(x, lens)
        torch.testing.assert_close(ev["loss"], model.ctc_loss_from_encoder(enc, elens, y, ylens))
    assert "interctc" not in ev and model._inter == []


def test_without_interctc_nothing_changes():
    a, b = conformer(), conformer(interctc_layers=[2], interctc_weight=0.0)
    assert a.state_dict().keys() == b.state_dict().keys()
    x, lens, y, ylens = batch()
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x, lens, y, ylens)["loss"],
                                   b.eval()(x, lens, y, ylens)["loss"])


@pytest.mark.parametrize("build", [conformer, transformer])
def test_self_conditioning_feeds_the_posteriors_back(build):
    plain = build(interctc_layers=[1], interctc_weight=0.3).eval()
    cond = build(interctc_layers=[1], interctc_weight=0.3, self_condition=True).eval()
    assert "cond_proj.weight" in cond.state_dict() and "cond_proj.weight" not in plain.state_dict()
    cond.load_state_dict({**plain.state_dict(), **{k: v for k, v in cond.state_dict().items()
                                                  if k.startswith("cond_proj")}})
    x, lens, _, _ = batch()
    with torch.no_grad():
        a, _ = plain.ctc_log_probs(x, lens)
        b, _ = cond.ctc_log_probs(x, lens)
        assert (a - b).abs().max() > 1e-3  # decoding sees the conditioning too
        torch.nn.init.zeros_(cond.cond_proj.weight)
        torch.nn.init.zeros_(cond.cond_proj.bias)
        c, _ = cond.ctc_log_probs(x, lens)
    torch.testing.assert_close(a, c)


def test_interctc_arguments_are_checked():
    with pytest.raises(ValueError, match="need interctc_layers"):
        conformer(interctc_weight=0.3)
    with pytest.raises(ValueError, match="need interctc_layers"):
        transformer(self_condition=True)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        conformer(interctc_layers=[1], interctc_weight=1.0)
    with pytest.raises(ValueError, match="past the encoder"):
        transformer(interctc_layers=[4], interctc_weight=0.3)
    with pytest.raises(ValueError, match="1-based"):
        conformer(interctc_layers=[0], interctc_weight=0.3)


def test_transformer_layer_loop_equals_torch_transformer_encoder():
    model = transformer().eval()
    x, lens, _, _ = batch()
    with torch.no_grad():
        enc, _ = model.encoder_forward(x, lens)
        h, hl = model.subsample(x, lens)
        mask = torch.arange(h.size(1))[None] >= hl[:, None]
        ref = model.norm(model.encoder(model.pos(h), src_key_padding_mask=mask))
    valid = ~mask
    torch.testing.assert_close(enc[valid], ref[valid], atol=1e-5, rtol=1e-5)


def test_time_warp_keeps_length_and_order():
    ramp = torch.arange(100.0)[:, None].expand(100, 3).clone()
    g = torch.Generator().manual_seed(0)
    changed = 0
    for _ in range(20):
        y = time_warp(ramp, 5, generator=g)
        assert y.shape == ramp.shape
        assert bool((y[1:, 0] >= y[:-1, 0] - 1e-5).all())  # time order kept: monotone ramp
        assert (y[:, 0] - ramp[:, 0]).abs().max() <= 6.0   # no frame moves more than W + 1
        changed += int(not torch.allclose(y, ramp))
    assert changed > 10
    assert time_warp(ramp[:8], 5) is not None and torch.equal(time_warp(ramp[:8], 5), ramp[:8])
    assert torch.equal(time_warp(ramp, 0), ramp)


def test_specaugment_warps_valid_frames_only_and_is_identity_in_eval():
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=5)
    x = torch.arange(80.0)[None, :, None].expand(2, 80, 4).clone()
    x[1, 50:] = -7.0  # padding of the shorter utterance
    lens = torch.tensor([80, 50])
    torch.manual_seed(0)
    outs = [aug(x, lens) for _ in range(10)]
    assert all(o.shape == x.shape for o in outs)
    assert all(torch.equal(o[1, 50:], x[1, 50:]) for o in outs)
    assert any(not torch.equal(o[0], x[0]) for o in outs)
    assert torch.equal(aug(x), x)  # no lengths: masks only (none here), no warping
    aug.eval()
    assert torch.equal(aug(x, lens), x)
    with pytest.raises(ValueError, match="time_warp"):
        SpecAugment(time_warp=-1)
