"""model=pretrained_encoder: raw-waveform features, pretrained wav2vec 2.0 / HuBERT weights
(torchaudio state_dict files and Hugging Face directories), masking, freezing, the encoder's
own learning rate, training with the real engine and decoding without the pretrained file.

Everything is tiny and synthetic (a random 2-layer encoder of width 32, tones for audio): no
network, no corpus, one thread.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate

from asrkit.cli import compose_train_config
from asrkit.data.datadir import read_kaldi_map, spk2utt_from_utt2spk, write_kaldi_map
from asrkit.decode.run import decode_data_dir
from asrkit.exp.checkpoint import load_checkpoint, load_model
from asrkit.features.compute import FeatureConfig, compute_features, extract
from asrkit.models.pretrained import (
    PretrainedEncoderCTC,
    PretrainedWeightsError,
    build_wav2vec2,
    normalize_waveform,
    span_mask,
)
from asrkit.text.tokenizer import Tokenizer, train_tokenizer
from asrkit.train.loop import train

torch.set_num_threads(1)

SR = 16000
F = 160  # samples per 10 ms frame
TINY = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2,
    "extractor_conv_bias": False,
    "encoder_embed_dim": 32,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 2,
    "encoder_num_heads": 2,
    "encoder_ff_interm_features": 64,
    "encoder_layer_norm_first": False,
}
NO_DROPOUT = dict.fromkeys(("encoder_projection_dropout", "encoder_attention_dropout",
                            "encoder_ff_interm_dropout", "encoder_dropout",
                            "encoder_layer_drop"), 0.0)


def tiny_model(**kw) -> PretrainedEncoderCTC:
    kw = {"arch": "custom", "arch_config": TINY, "dropouts": NO_DROPOUT, **kw}
    return PretrainedEncoderCTC(F, 12, **kw)


def tiny_torchaudio(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_wav2vec2("custom", TINY, NO_DROPOUT).eval()


def assert_encoder_equal(model: PretrainedEncoderCTC, state: dict[str, torch.Tensor]) -> None:
    own = model.wav2vec2.state_dict()
    assert own.keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


# ----------------------------------------------------------------------------- features


def test_raw_features_are_the_samples_in_10ms_frames():
    cfg = FeatureConfig(type="raw")
    assert cfg.feat_dim == F
    n = SR // 2 + 37  # a partial last frame
    wav = torch.rand(n) * 2 - 1
    feats = extract(wav, SR, cfg)
    assert feats.shape == (math.ceil(n / F), F) and feats.dtype == torch.float32
    flat = feats.flatten()
    torch.testing.assert_close(flat[:n], wav)        # unscaled samples, in order
    assert not flat[n:].any()                        # zero-padded, not dropped
    # other rates are resampled to 16 kHz first
    assert extract(torch.rand(4000) - 0.5, 8000, cfg).shape == (50, F)
    assert FeatureConfig(type="raw", sample_rate=8000).feat_dim == 80
    with pytest.raises(ValueError, match="whole number of samples"):
        FeatureConfig(type="raw", frame_shift=10.03)
    with pytest.raises(ValueError, match="raw"):
        FeatureConfig(type="plp")


# ----------------------------------------------------------------------------- weights


def test_torchaudio_state_dict_is_loaded(tmp_path):
    src = tiny_torchaudio(seed=1)
    state = src.state_dict()
    bare, wrapped = tmp_path / "bare.pt", tmp_path / "wrapped.pth"
    torch.save(state, bare)
    # torchaudio's HuBERTPretrainModel layout: "wav2vec2." prefix, mask embedding, logits
    emb = torch.randn(32)
    torch.save({"model": {**{f"wav2vec2.{k}": v for k, v in state.items()},
                          "mask_generator.mask_embedding": emb,
                          "logit_generator.final_proj.weight": torch.randn(5, 32)},
                "epoch": 3}, wrapped)
    torch.manual_seed(2)
    model = tiny_model(pretrained=str(bare))
    assert_encoder_equal(model, state)
    model = tiny_model(pretrained=str(wrapped))
    assert_encoder_equal(model, state)
    torch.testing.assert_close(model.mask_emb.detach(), emb)
    # also under "state_dict"
    torch.save({"state_dict": state}, tmp_path / "sd.pt")
    assert_encoder_equal(tiny_model(pretrained=str(tmp_path / "sd.pt")), state)


def test_encoder_forward_matches_torchaudio(tmp_path):
    """Eval-mode encoding equals torchaudio's Wav2Vec2Model on the same weights, padded batch
    included (the flattening, lengths and attention mask are right)."""
    src = tiny_torchaudio(seed=3)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    model = tiny_model(pretrained=str(tmp_path / "w.pt")).eval()
    lens = torch.tensor([60, 45])                     # 10 ms frames
    feats = torch.randn(2, 60, F) * 0.1
    feats[1, 45:] = 0.0
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        ref, ref_lens = src(feats.reshape(2, -1), lens * F)
    assert enc_lens.tolist() == ref_lens.tolist() == [29, 22]
    for b, n in enumerate(enc_lens.tolist()):
        torch.testing.assert_close(enc[b, :n], ref[b, :n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wav2vec2_pretraining"])
def test_hugging_face_dir_is_loaded(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "conv_dim": [16] * 7, "conv_bias": False,
              "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
              "feat_extract_norm": "group", "do_stable_layer_norm": False}
    torch.manual_seed(4)
    if kind == "hubert":
        hf = transformers.HubertModel(transformers.HubertConfig(**common))
    elif kind == "wav2vec2":
        hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    else:  # quantizer, project_q, project_hid: pretraining-only, ignored
        hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(
            **common, codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8))
    hf.save_pretrained(tmp_path / "hf")
    base = hf.wav2vec2 if kind == "wav2vec2_pretraining" else hf
    model = tiny_model(pretrained=str(tmp_path / "hf")).eval()
    torch.testing.assert_close(model.mask_emb.detach(), base.masked_spec_embed.detach())
    torch.testing.assert_close(model.wav2vec2.encoder.feature_projection.projection.weight,
                               base.feature_projection.projection.weight)
    wav = torch.randn(1, 50 * F) * 0.1
    with torch.no_grad():
        enc, _ = model.encode(wav.reshape(1, 50, F), torch.tensor([50]))
        ref = base.eval()(wav).last_hidden_state
    torch.testing.assert_close(enc, ref, rtol=1e-4, atol=1e-5)

    # a pre-LayerNorm checkpoint cannot go into a post-LayerNorm arch (same parameter names)
    stable = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        **{**common, "do_stable_layer_norm": True}))
    stable.save_pretrained(tmp_path / "stable")
    with pytest.raises(PretrainedWeightsError, match="stable.*LayerNorm"):
        tiny_model(pretrained=str(tmp_path / "stable"))


def test_bad_pretrained_paths_and_keys_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        tiny_model(pretrained=str(tmp_path / "nowhere.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="junk.pt"):
        tiny_model(pretrained=str(junk))
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(PretrainedWeightsError, match="nostate.pt.*state_dict"):
        tiny_model(pretrained=str(tmp_path / "nostate.pt"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(PretrainedWeightsError, match="config.json"):
        tiny_model(pretrained=str(tmp_path / "emptydir"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "wav2vec2"}')
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ImportError, match=r"transformers.*pip install -e .\.\[llm\]. in the asrkit checkout"):
        tiny_model(pretrained=str(tmp_path / "hf"))
    monkeypatch.undo()

    state = tiny_torchaudio().state_dict()
    broken = dict(state)
    del broken["encoder.transformer.layers.1.final_layer_norm.bias"]
    broken["encoder.transformer.layers.2.attention.k_proj.weight"] = torch.zeros(32, 32)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(PretrainedWeightsError,
                       match=r"broken.pt.*missing keys: encoder.transformer.layers.1."
                             r"final_layer_norm.bias.*unexpected keys: "
                             r"encoder.transformer.layers.2"):
        tiny_model(pretrained=str(tmp_path / "broken.pt"))
    wide = build_wav2vec2("custom", {**TINY, "encoder_embed_dim": 48}, NO_DROPOUT)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(PretrainedWeightsError, match="wide.pt.*shapes"):
        tiny_model(pretrained=str(tmp_path / "wide.pt"))
    # fbank features into a raw-waveform model
    with pytest.raises(ValueError, match="raw"):
        PretrainedEncoderCTC(80, 12, arch="custom", arch_config=TINY)
    with pytest.raises(ValueError, match="arch"):
        PretrainedEncoderCTC(F, 12, arch="wav2vec3")


# ----------------------------------------------------------------------------- fine-tuning


def test_span_mask_and_waveform_normalisation():
    torch.manual_seed(0)
    lens = torch.tensor([100, 40, 9])
    m = span_mask(lens, 100, prob=0.5, span=10, min_spans=2)
    assert m.shape == (3, 100)
    assert not m[1, 40:].any() and not m[2].any()    # in the valid part; too short: none
    assert 0 < m[1].sum() < 40 and 10 <= m[0].sum() <= 99
    assert not span_mask(lens, 100, prob=0.0, span=10, min_spans=2).any()
    wav = torch.randn(2, 1000) * 3 + 1
    out = normalize_waveform(wav, torch.tensor([1000, 600]))
    assert abs(out[1, :600].mean()) < 1e-4 and abs(out[1, :600].std() - 1) < 1e-2
    assert not out[1, 600:].any()


def test_masks_in_training_only_and_freeze_encoder_updates():
    torch.manual_seed(0)
    model = tiny_model(mask_time_prob=0.5, mask_time_length=2, mask_channel_prob=0.5,
                       mask_channel_length=4, freeze_encoder_updates=2)
    feats, lens = torch.randn(2, 60, F) * 0.1, torch.tensor([60, 50])
    model.eval()
    with torch.no_grad():
        a, _ = model.encode(feats, lens)
        b, _ = model.encode(feats, lens)
    torch.testing.assert_close(a, b)                 # no masks at evaluation
    assert int(model.num_updates) == 0
    model.train()
    grads = [model.encode(feats, lens)[0].requires_grad for _ in range(3)]
    assert grads == [False, False, True]             # frozen for the first 2 batches
    assert int(model.state_dict()["num_updates"]) == 3
    assert not torch.allclose(model.encode(feats, lens)[0], model.encode(feats, lens)[0])


def test_freezing_and_param_groups():
    model = tiny_model(freeze_layers=1, encoder_lr_scale=0.25)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("wav2vec2.feature_extractor.", "wav2vec2.encoder.feature_projection.",
                             "wav2vec2.encoder.transformer.pos_conv_embed.",
                             "wav2vec2.encoder.transformer.layers.0.")) or n == "mask_emb"
               for n in frozen)
    assert any(n.startswith("wav2vec2.encoder.transformer.layers.0.") for n in frozen)
    assert "mask_emb" in frozen
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["head", "encoder"]
    assert [g["lr_scale"] for g in groups] == [1.0, 0.25]
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in model.parameters() if p.requires_grad}
    head = {id(p) for p in groups[0]["params"]}
    assert head == {id(model.ctc_out.weight), id(model.ctc_out.bias)}


# ----------------------------------------------------------------------------- end to end

LETTERS = "ABCDE"


def _make_wav_data_dir(root: Path, n_utts: int, seed: int) -> Path:
    """A Kaldi data dir of synthesized 16 kHz WAVs: each letter is a 0.2 s tone of its own
    pitch, with short pauses, so the transcripts are learnable."""
    rng = np.random.default_rng(seed)
    wav_dir, data = root / "wav", root / "data"
    wav_dir.mkdir(parents=True)
    wav_scp, text, utt2spk = {}, {}, {}
    t = np.arange(int(0.2 * SR)) / SR
    for i in range(n_utts):
        spk = f"spk{i % 2}"
        utt = f"{spk}-u{i:02d}"
        letters = list(rng.choice(list(LETTERS), size=int(rng.integers(2, 4))))
        pause = np.zeros(int(0.05 * SR))
        parts = [pause]
        for c in letters:
            parts += [0.3 * np.sin(2 * np.pi * (300 + 250 * LETTERS.index(c)) * t), pause]
        x = np.concatenate(parts) + 0.01 * rng.normal(size=sum(len(p) for p in parts))
        path = wav_dir / f"{utt}.wav"
        sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
        wav_scp[utt], text[utt], utt2spk[utt] = str(path), " ".join(letters), spk
    write_kaldi_map(data / "wav.scp", wav_scp)
    write_kaldi_map(data / "text", text)
    write_kaldi_map(data / "utt2spk", utt2spk)
    write_kaldi_map(data / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    return data


def test_train_freezes_scales_lr_and_decodes_without_the_pretrained_file(tmp_path):
    raw = FeatureConfig(type="raw")
    train_dir = compute_features(_make_wav_data_dir(tmp_path / "tr", 12, seed=0),
                                 tmp_path / "dump" / "train", raw,
                                 speed_perturb=[0.9, 1.0]).out_dir
    dev_dir = compute_features(_make_wav_data_dir(tmp_path / "dv", 4, seed=1),
                               tmp_path / "dump" / "dev", raw).out_dir
    # the raw features stage: every file fbank has, 160-sample frames, T = ceil(N / 160)
    assert (train_dir / "feat_dim").read_text().split() == ["160"]
    assert len(read_kaldi_map(train_dir / "feats.scp")) == 24   # 12 + 12 sp0.9 copies
    assert (train_dir / "cmvn.ark").is_file()
    frames = read_kaldi_map(dev_dir / "utt2num_frames")
    durs = read_kaldi_map(dev_dir / "utt2dur")
    for utt, mat in kaldiio.load_scp(str(dev_dir / "feats.scp")).items():
        assert mat.shape == (int(frames[utt]), F)
        assert int(frames[utt]) == math.ceil(round(float(durs[utt]) * SR) / F)
    tok = train_tokenizer(train_dir / "text", tmp_path / "tok" / "char", model_type="char")

    pretrained = tmp_path / "pretrained.pt"
    src = tiny_torchaudio(seed=5).state_dict()
    torch.save(src, pretrained)
    exp = tmp_path / "exp"
    cfg = compose_train_config([
        "model=pretrained_encoder", "features=raw", f"model.pretrained={pretrained}",
        "model.arch=custom", "model.freeze_layers=1", "model.encoder_lr_scale=0.1",
        "model.mask_time_length=2", "model.mask_channel_length=4",
        f"exp_dir={exp}", f"data.train={train_dir}", f"data.dev={dev_dir}",
        f"data.tokenizer={tok}", "data.max_frames=400", "trainer.max_epochs=1",
        "trainer.num_threads=1", "trainer.log_interval=1", "trainer.save_every_batches=0",
        "trainer.tensorboard=false", "trainer.plot=false", "trainer.keep_best_by=[]",
        "optim.optimizer.lr=0.001", "optim.scheduler.warmup_steps=5"])
    cfg.model.arch_config = TINY
    cfg.model.dropouts = NO_DROPOUT
    train(cfg)
    assert (exp / ".done").is_file()

    last = load_checkpoint(exp / "checkpoints" / "last.pt")
    st = {k.removeprefix("wav2vec2."): v for k, v in last["model"].items()
          if k.startswith("wav2vec2.")}
    assert last["step"] > 2
    frozen = ("feature_extractor.", "encoder.feature_projection.",
              "encoder.transformer.pos_conv_embed.", "encoder.transformer.layers.0.")
    for k, v in src.items():
        if k.startswith(frozen):
            torch.testing.assert_close(st[k], v, rtol=0, atol=0, msg=k)  # frozen: as loaded
    changed = [k for k in src if k.startswith("encoder.transformer.layers.1.")
               and not torch.equal(st[k], src[k])]
    assert len(changed) >= 10                       # trainable encoder layer: fine-tuned
    torch.manual_seed(cfg.seed)                      # the head the trainer started from
    start = instantiate(cfg.model, input_dim=F, vocab_size=Tokenizer(tok).vocab_size)
    assert_encoder_equal(start, src)
    assert not torch.equal(start.ctc_out.weight, last["model"]["ctc_out.weight"])
    groups = last["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["head", "encoder"]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    assert groups[1]["initial_lr"] == pytest.approx(1e-4)
    assert groups[0]["initial_lr"] == pytest.approx(1e-3)
    metrics = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lr"] == pytest.approx(groups[0]["lr"])
    assert int(last["model"]["num_updates"]) == last["step"]

    # decoding rebuilds the model from config.yaml without reading the pretrained file
    pretrained.unlink()
    model, _ = load_model(exp)
    torch.testing.assert_close(model.ctc_out.weight, last["model"]["ctc_out.weight"])
    rep = decode_data_dir(exp, dev_dir, device="cpu")
    lines = rep.text.read_text().splitlines()
    assert sorted(line.split(" ", 1)[0] for line in lines) == \
        sorted(read_kaldi_map(dev_dir / "text"))
    assert rep.num_utts == 4 and len(lines) == 4
