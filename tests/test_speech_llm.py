"""Speech-LLM (asrkit/models/speech_llm.py, model=speech_llm): a trained asrkit encoder, a
projector and tiny Hugging Face LLMs built in a temp dir (GPT-2 through asrkit's own export,
and a Llama-architecture model), LoRA through peft; train, resume, decode with llm_beam, all
offline."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from synth import train_tiny_ctc

from asrkit.cli import main
from asrkit.exp.checkpoint import load_checkpoint, load_model
from asrkit.models.lm import GPTLM, HFTokenLM
from asrkit.text.tokenizer import SOS_EOS_ID, Tokenizer, train_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny trained CTC encoder on synthetic letters, and two tiny random LLMs whose
    tokenizer is a BPE over the letters' transcripts."""
    root = tmp_path_factory.mktemp("speech_llm")
    d = train_tiny_ctc(root, n_train=32, n_dev=8, epochs=2)
    tok_model = train_tokenizer(d["train"] / "text", root / "llm_tok" / "bpe", model_type="char")
    tok = Tokenizer(tok_model)
    torch.manual_seed(0)
    gpt = GPTLM(tok.vocab_size, n_layer=1, n_embd=32, n_head=2, n_positions=256, dropout=0.0)
    gpt.save_hf(root / "gpt2", tok_model)
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=SOS_EOS_ID, eos_token_id=SOS_EOS_ID, pad_token_id=0))
    HFTokenLM(llama).save_hf(root / "llama", tok_model)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    qwen = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=SOS_EOS_ID, eos_token_id=SOS_EOS_ID, pad_token_id=0))
    HFTokenLM(qwen).save_hf(root / "qwen2", tok_model)
    return {**d, "root": root}


def _train_args(s, exp, llm, *extra):
    return ["train", "model=speech_llm", f"model.llm={s['root'] / llm}",
            f"model.encoder_exp={s['exp']}", f"data.train={s['train']}", f"data.dev={s['dev']}",
            f"exp_dir={exp}", "model.projector_hidden=64", "model.stack=2",
            "model.max_new_tokens=20", "trainer.num_threads=1", "data.max_frames=1500",
            "optim.optimizer.lr=0.005", "optim.scheduler.warmup_steps=5", *extra]


@pytest.mark.parametrize("llm", ["gpt2", "llama", "qwen2"])
def test_speech_llm_trains_resumes_and_decodes(setup, tmp_path, llm):
    exp = tmp_path / llm
    assert main(_train_args(setup, exp, llm, "trainer.max_epochs=2")) == 0
    import yaml

    saved = yaml.safe_load((exp / "config.yaml").read_text())["model"]
    assert saved["llm"] == str((setup["root"] / llm).resolve())  # decodes from anywhere
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(r.get("dev_wer") is not None for r in rows)
    # checkpoints hold the projector and LoRA weights only, not the frozen LLM or encoder
    ck = load_checkpoint(max((exp / "checkpoints").glob("epoch*.pt")))["model"]
    assert any(k.startswith("projector.") for k in ck)
    assert any("lora_" in k for k in ck)
    assert not any(k.startswith("encoder.") for k in ck)
    assert not [k for k in ck if k.startswith("llm.") and "lora_" not in k]
    # the LLM's own weights did not move; LoRA's did
    model, _ = load_model(exp)
    from asrkit.lm.hf import load_hf_causal_lm

    base, _ = load_hf_causal_lm(setup["root"] / llm)
    base_sd = base.state_dict()
    for name, p in model.llm.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base_sd[key]), name
    # resume: one more epoch from last.pt (.done removed, as after raising max_epochs)
    (exp / ".done").unlink()
    assert main(_train_args(setup, exp, llm, "trainer.max_epochs=3")) == 0
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]

    out = tmp_path / f"dec_{llm}"
    assert main(["decode", str(exp), str(setup["dev"]), "--method", "llm_beam", "--beam", "2",
                 "--nbest", "2", "--out", str(out), "--device", "cpu"]) == 0
    hyps = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (out / "text").read_text().splitlines())
    refs = {line.split()[0] for line in (setup["dev"] / "text").read_text().splitlines()}
    assert set(hyps) == refs and len(refs) == 8
    summary = json.loads((out / "decode_summary.json").read_text())
    assert summary["method"] == "llm_beam" and summary["beam"] == 2
    assert (out / "nbest").is_file()


def test_batched_generation_equals_one_at_a_time(setup, tmp_path):
    exp = tmp_path / "g"
    assert main(_train_args(setup, exp, "gpt2", "trainer.max_epochs=1")) == 0
    model, _ = load_model(exp)
    from asrkit.data.dataset import FeatureDataset, collate

    ds = FeatureDataset(setup["dev"], None, max_frames=10**9)
    batch = collate([ds[i] for i in range(len(ds))])
    together = model.recognize(batch["feats"], batch["feat_lens"], beam=3)
    for i in range(len(ds)):
        b = collate([ds[i]])
        alone = model.recognize(b["feats"], b["feat_lens"], beam=3)
        assert alone[0][0][0] == together[i][0][0]
        assert alone[0][0][1] == pytest.approx(together[i][0][1], abs=1e-4)


def test_speech_llm_refuses_what_it_cannot_use(setup, tmp_path, capsys):
    # features of another dimension than the encoder's
    from synth import make_feature_dir

    other = make_feature_dir(tmp_path / "other", n_utts=4, feat_dim=13)
    assert main(["train", "model=speech_llm", f"model.llm={setup['root'] / 'gpt2'}",
                 f"model.encoder_exp={setup['exp']}", f"data.train={other}",
                 f"exp_dir={tmp_path / 'x'}", "trainer.max_epochs=1"]) != 0
    assert "the features have 13 dims" in capsys.readouterr().err
    # a missing LLM dir, named
    assert main(_train_args(setup, tmp_path / "y", "no_such_llm", "trainer.max_epochs=1")) != 0
    assert "no_such_llm is not a directory" in capsys.readouterr().err
    # a CTC method on a speech-LLM
    exp = tmp_path / "z"
    assert main(_train_args(setup, exp, "gpt2", "trainer.max_epochs=1")) == 0
    assert main(["decode", str(exp), str(setup["dev"]), "--method", "ctc_greedy",
                 "--out", str(tmp_path / "d"), "--device", "cpu"]) != 0
    assert "decodes with method llm_beam" in capsys.readouterr().err


def test_generative_error_correction_learns_from_nbest_lists(setup, tmp_path):
    """N-best lists of random wrong hypotheses whose reference is always "A B C D": LoRA
    training lowers the loss of the references (a random 1-layer 32-wide LLM learns too little
    to write them reliably, so the WER is checked for consistency, not for a gain), and
    correct writes what the training's dev pass measured."""
    import random

    from asrkit.decode.nbest import write_nbest

    rng = random.Random(0)
    nbest, refs = {}, {}
    for i in range(60):
        hyps = [" ".join(rng.choice("ABCDE") for _ in range(rng.randint(2, 5))) for _ in range(3)]
        nbest[f"u{i:03d}"] = [(h, -1.0 - k) for k, h in enumerate(hyps)]
        refs[f"u{i:03d}"] = "A B C D"
    d = tmp_path / "ger"
    d.mkdir()
    (d / "text").write_text("".join(f"{u} {r}\n" for u, r in sorted(refs.items())[:48]))
    (d / "dev_text").write_text("".join(f"{u} {r}\n" for u, r in sorted(refs.items())[48:]))
    write_nbest(d / "nbest", dict(sorted(nbest.items())[:48]))
    write_nbest(d / "dev_nbest", dict(sorted(nbest.items())[48:]))
    exp = tmp_path / "ger_exp"
    assert main(["train-ger", "--nbest", str(d / "nbest"), "--text", str(d / "text"),
                 "--dev-nbest", str(d / "dev_nbest"), "--dev-text", str(d / "dev_text"),
                 "--lm", f"hf:{setup['root'] / 'gpt2'}", "--out", str(exp), "--epochs", "4", "--batch-size", "4",
                 "--lr", "0.01", "--lora-r", "8", "--lora-targets", "c_attn,c_proj,c_fc",
                 "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["dev_loss"] < rows[0]["dev_loss"] - 0.5
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert (exp / "adapter" / "adapter_config.json").is_file()
    out = tmp_path / "corrected"
    assert main(["correct", str(d / "dev_nbest"), str(out), "--lm", str(exp),
                 "--device", "cpu"]) == 0
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.score import score_texts

    hyps = read_kaldi_map(out / "text")
    dev_refs = read_kaldi_map(d / "dev_text")
    assert set(hyps) == set(dev_refs)
    assert score_texts(dev_refs, hyps).wer.rate == pytest.approx(rows[-1]["dev_wer"])
    # zero-shot with the base LLM: every utterance gets a transcript (the 1-best when the
    # generation is empty or does not end)
    zs = tmp_path / "zero_shot"
    assert main(["correct", str(d / "dev_nbest"), str(zs), "--lm",
                 f"hf:{setup['root'] / 'gpt2'}", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert set(read_kaldi_map(zs / "text")) == set(dev_refs)
    # a finished experiment is left alone; a bad spec is refused
    assert main(["train-ger", "--nbest", str(d / "nbest"), "--text", str(d / "text"),
                 "--lm", f"hf:{setup['root'] / 'gpt2'}", "--out", str(exp)]) == 0
    assert main(["train-ger", "--nbest", str(d / "nbest"), "--text", str(d / "text"),
                 "--lm", str(setup["root"] / "gpt2"), "--out", str(tmp_path / "x")]) != 0


def test_stage_wise_projector_first_then_lora(setup, tmp_path):
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    assert main(_train_args(setup, stage1, "gpt2", "trainer.max_epochs=1", "model.lora=null")) == 0
    ck1 = load_checkpoint(stage1 / "checkpoints" / "epoch1.pt")["model"]
    assert ck1 and all(k.startswith("projector.") for k in ck1)
    from hydra.utils import instantiate

    from asrkit.cli import compose_train_config
    from asrkit.lm.hf import HFTextTokenizer

    cfg = compose_train_config(_train_args(setup, stage2, "gpt2", f"model.pretrained={stage1}")[1:])
    vocab = HFTextTokenizer(setup["root"] / "gpt2").vocab_size
    model = instantiate(cfg.model, input_dim=20, vocab_size=vocab)
    sd = model.state_dict()
    for k, v in ck1.items():
        assert torch.equal(sd[k], v), k
    assert any("lora_" in k for k in sd)
    assert main(_train_args(setup, stage2, "gpt2", "trainer.max_epochs=1",
                            f"model.pretrained={stage1}")) == 0


def test_speech_llm_on_a_hugging_face_wav2vec2_encoder(setup, tmp_path):
    """encoder_conf: a (tiny, random) Hugging Face wav2vec 2.0 directory as the frozen speech
    encoder, raw-waveform features."""
    transformers = pytest.importorskip("transformers")
    from test_pretrained_encoder import NO_DROPOUT, TINY, _make_wav_data_dir

    from asrkit.features.compute import FeatureConfig, compute_features

    raw = FeatureConfig(type="raw")
    tr = compute_features(_make_wav_data_dir(tmp_path / "tr", 6, seed=0), tmp_path / "d" / "tr",
                          raw).out_dir
    dv = compute_features(_make_wav_data_dir(tmp_path / "dv", 2, seed=1), tmp_path / "d" / "dv",
                          raw).out_dir
    torch.manual_seed(4)
    hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=[16] * 7, conv_bias=False, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="group", do_stable_layer_norm=False))
    hf.save_pretrained(tmp_path / "w2v")
    exp = tmp_path / "exp"
    enc = ("{arch: custom, pretrained: " + str(tmp_path / "w2v") + ", arch_config: "
           + json.dumps(TINY).replace('"', "") + ", dropouts: "
           + json.dumps(NO_DROPOUT).replace('"', "") + "}")
    assert main(["train", "model=speech_llm", "features=raw",
                 f"model.llm={setup['root'] / 'gpt2'}", f"model.encoder_conf={enc}",
                 f"data.train={tr}", f"data.dev={dv}", f"exp_dir={exp}", "model.stack=1",
                 "model.projector_hidden=32", "model.max_new_tokens=10", "trainer.max_epochs=1",
                 "trainer.num_threads=1", "data.max_frames=2000"]) == 0
    ck = load_checkpoint(exp / "checkpoints" / "epoch1.pt")["model"]
    assert not any(k.startswith("encoder.") for k in ck)  # frozen: read from the HF dir
    import yaml

    saved = yaml.safe_load((exp / "config.yaml").read_text())["model"]
    assert saved["encoder_conf"]["pretrained"] == str((tmp_path / "w2v").resolve())
    out = tmp_path / "dec"
    assert main(["decode", str(exp), str(dv), "--method", "llm_beam", "--beam", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert len((out / "text").read_text().splitlines()) == 2
