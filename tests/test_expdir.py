"""Experiments that can move: the tokenizer (and CMVN stats) live inside the experiment dir,
so a moved experiment decodes from any working directory (asrkit/exp/expdir.py)."""

from __future__ import annotations

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from asrkit.cli import main
from asrkit.data.datadir import read_kaldi_map
from asrkit.exp.expdir import exp_tokenizer_path, resolve_tokenizer
from asrkit.lm.neural import load_lm
from asrkit.text.tokenizer import train_tokenizer
from tests.synth import make_feature_dir, make_text_file

torch.set_num_threads(1)

TINY = ["model.d_model=16", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=32",
        "model.specaug=null", "trainer.max_epochs=1", "trainer.num_threads=1",
        "trainer.device=cpu", "trainer.tensorboard=false", "trainer.plot=false",
        "data.max_frames=1500"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe dir with relative data/, dump/ and an experiment trained from there with
    relative paths (as recipes/an4/run.sh does), then moved elsewhere."""
    root = tmp_path_factory.mktemp("recipe")
    make_feature_dir(root / "dump" / "train", n_utts=8, seed=0)
    make_feature_dir(root / "dump" / "test", n_utts=4, seed=1)
    train_tokenizer(root / "dump" / "train" / "text", root / "data" / "token" / "char",
                    model_type="char")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        rc = main(["train", "exp_dir=exp/quick", "data.train=dump/train",
                   "data.tokenizer=data/token/char.model", *TINY])
    assert rc == 0
    return root


def test_experiment_holds_its_tokenizer_and_cmvn(recipe):
    exp = recipe / "exp" / "quick"
    cfg = OmegaConf.load(exp / "config.yaml")
    assert cfg.data.tokenizer == "data/token/char.model"  # provenance kept as given
    assert cfg.exp_files.tokenizer == "tokenizer/char.model"
    assert cfg.exp_files.cmvn == "cmvn.ark"
    assert (exp / "tokenizer" / "char.model").read_bytes() == \
        (recipe / "data" / "token" / "char.model").read_bytes()
    assert (exp / "cmvn.ark").read_bytes() == (recipe / "dump" / "train" / "cmvn.ark").read_bytes()


def test_moved_experiment_decodes_from_another_directory(recipe, tmp_path, monkeypatch, capsys):
    moved = tmp_path / "elsewhere" / "quick"
    moved.parent.mkdir()
    shutil.copytree(recipe / "exp" / "quick", tmp_path / "copy")
    shutil.move(str(tmp_path / "copy"), str(moved))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data = recipe / "dump" / "test"
    rc = main(["decode", str(moved), str(data), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    hyps = read_kaldi_map(moved / "decode_test_ctc_greedy" / "text", allow_empty_value=True)
    assert set(hyps) == set(read_kaldi_map(data / "text"))
    # mkgraph --ctc / train-lm ngram --tokenizer accept the experiment dir for its tokenizer
    assert resolve_tokenizer(moved) == moved / "tokenizer" / "char.model"


def test_old_experiment_without_copy_falls_back_or_names_what_is_missing(recipe, tmp_path,
                                                                         monkeypatch, capsys):
    old = recipe / "exp" / "old"  # inside the recipe dir: data.tokenizer resolves from there
    shutil.copytree(recipe / "exp" / "quick", old)
    shutil.rmtree(old / "tokenizer")
    cfg = OmegaConf.load(old / "config.yaml")
    del cfg["exp_files"]
    OmegaConf.save(cfg, old / "config.yaml")
    data = recipe / "dump" / "test"
    monkeypatch.chdir(recipe)
    assert exp_tokenizer_path(old).resolve() == (recipe / "data/token/char.model").resolve()
    assert main(["decode", "exp/old", str(data), "--device", "cpu"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # the relative path no longer resolves
    assert main(["decode", str(old), str(data), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no tokenizer found" in err and "data.tokenizer=data/token/char.model" in err
    assert f"{old}/tokenizer/" in err


def test_moved_neural_lm_loads_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "lm").mkdir()
    text = make_text_file(tmp_path / "lm" / "text", {f"u{i}": "A B C D"[: 1 + 2 * (i % 4)]
                                                     for i in range(20)})
    train_tokenizer(text, tmp_path / "lm" / "tok" / "char", model_type="char")
    monkeypatch.chdir(tmp_path / "lm")
    assert main(["train-lm", "model=lstm_lm", "data.train=text", "data.tokenizer=tok/char.model",
                 "exp_dir=exp/lm", "trainer.max_epochs=1", "trainer.device=cpu",
                 "trainer.num_threads=1", "model.embed_dim=8", "model.hidden_size=8",
                 "model.num_layers=1"]) == 0
    shutil.move(str(tmp_path / "lm" / "exp" / "lm"), str(tmp_path / "moved_lm"))
    shutil.rmtree(tmp_path / "lm" / "tok")  # the original is gone too
    monkeypatch.chdir(tmp_path)
    model, tok = load_lm(tmp_path / "moved_lm")
    assert tok.model_path == tmp_path / "moved_lm" / "tokenizer" / "char.model"
    assert tok.vocab_size == model.vocab_size
