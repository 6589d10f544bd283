"""The command line: help texts, exit codes and error messages, prep with --download."""

from __future__ import annotations

import tarfile

import pytest

from asrkit.cli import build_parser, compose_train_config, main
from asrkit.data.datadir import read_kaldi_map
from tests.synth import make_text_file
from tests.test_prep_corpora import _make_an4, _make_librispeech

SUBCOMMANDS = ["prep", "validate", "features", "tokenizer", "train", "decode", "score"]


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd,words", [
    ("prep", ["an4", "librispeech", "kaldi"]),
    ("validate", ["--no-audio", "--allow-pipe"]),
    ("features", ["--type", "--nj", "--num-mel-bins", "--sample-rate", "--speed-perturb"]),
    ("tokenizer", ["--model-type", "--vocab-size", "blank"]),
    ("train", ["conf=", "exp_dir", "resumes"]),
    ("decode", ["--avg", "--checkpoint", "--device", "--method"]),
    ("score", ["#Snt", "--results", "per_utt"]),
])
def test_subcommand_help(capsys, cmd, words):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in out, (cmd, w)


def test_bad_input_gives_exit_2_and_names_file_and_line(tmp_path, capsys, data_write_audio):
    d = tmp_path / "data"
    d.mkdir()
    wav = data_write_audio(tmp_path / "a.wav")
    (d / "wav.scp").write_text(f"u1 {wav}\nu2 {wav}\n")
    (d / "utt2spk").write_text("u1 s\nu2 s\n")
    (d / "spk2utt").write_text("s u1 u2\n")
    (d / "text").write_bytes(b"u1 HELLO\nu2 \xff\xfeBAD\n")
    assert main(["validate", str(d)]) == 2
    err = capsys.readouterr().err
    assert "text:2" in err and "UTF-8" in err


def test_score_command_writes_tables(tmp_path, capsys):
    ref = make_text_file(tmp_path / "ref", {"a": "ONE TWO THREE", "b": "FOUR"})
    exp = tmp_path / "exp" / "decode_test_ctc_greedy"
    exp.mkdir(parents=True)
    hyp = make_text_file(exp / "text", {"a": "ONE TOO THREE", "b": "FOUR"})
    assert main(["score", str(ref), str(hyp)]) == 0
    out = capsys.readouterr().out
    assert "|decode_test_ctc_greedy|2|4|75.0|25.0|0.0|0.0|25.0|50.0|" in out
    assert (exp / "score.txt").is_file() and (exp / "per_utt").is_file()
    assert "|decode_test_ctc_greedy|2|4|" in (tmp_path / "exp" / "RESULTS.md").read_text()


def test_train_config_composition_with_recipe_file_and_overrides(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "an4" / "conf" / "train_quick.yaml"
    cfg = compose_train_config([f"conf={recipe}", "model.num_layers=3", "exp_dir=exp/x"])
    assert cfg.model.num_layers == 3           # command line wins over the recipe file
    assert cfg.model.d_model == 144            # the recipe file wins over conf/model
    assert cfg.optim.optimizer._target_ == "torch.optim.AdamW"  # from the package conf
    with pytest.raises(FileNotFoundError):
        compose_train_config([f"conf={tmp_path}/nope.yaml"])


def test_prep_an4_download_from_local_archive(tmp_path, capsys, data_write_audio):
    """--download fetches (here from a file:// URL: no network in tests) and prepares."""
    src = _make_an4(tmp_path / "build" / "an4", data_write_audio, ext=".raw")
    archive = tmp_path / "an4_sphere.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="an4")
    out = tmp_path / "data"
    rc = main(["prep", "an4", "unused", str(out), "--download", str(tmp_path / "dl"),
               "--url", archive.as_uri(), "--dev-utts", "2"])
    assert rc == 0, capsys.readouterr().err
    assert len(read_kaldi_map(out / "test" / "text")) == 3
    train = read_kaldi_map(out / "train" / "text")
    dev = read_kaldi_map(out / "dev" / "text")
    assert len(train) + len(dev) == 10 and dev


def test_parser_builds_without_heavy_imports():
    # every subcommand is registered and parses its minimal arguments
    p = build_parser()
    assert p.parse_args(["decode", "exp", "data"]).avg == 1
    assert p.parse_args(["features", "d", "o"]).nj == 1


def test_decoding_imports_nothing_from_training():
    """asrkit.decode (every module) and the LM and model layers load no asrkit.train module:
    the experiment dir (checkpoints, model loading) lives below both, in asrkit.exp."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, asrkit.decode, asrkit.lm, asrkit.models\n"
            "for pkg in (asrkit.decode, asrkit.lm, asrkit.models):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('asrkit.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_prep_librispeech_download_from_local_mirror_then_features(tmp_path, capsys,
                                                                   data_write_audio):
    """The LibriSpeech layout via --download from a file:// mirror, then the feature stage."""
    src = _make_librispeech(tmp_path / "build", data_write_audio)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(src / "LibriSpeech", arcname="LibriSpeech")
    from asrkit.data.corpora import librispeech

    # the real archive's checksum cannot match our fixture; verification is tested elsewhere
    saved = dict(librispeech.LIBRISPEECH_SHA256)
    librispeech.LIBRISPEECH_SHA256["dev-clean"] = None
    try:
        rc = main(["prep", "librispeech", "unused", str(tmp_path / "data"), "--parts",
                   "dev-clean", "--download", str(tmp_path / "dl"), "--base-url",
                   mirror.as_uri()])
    finally:
        librispeech.LIBRISPEECH_SHA256.update(saved)
    assert rc == 0, capsys.readouterr().err
    assert "dev-clean: " in capsys.readouterr().out
    data = tmp_path / "data" / "dev_clean"
    assert len(read_kaldi_map(data / "text")) == 4  # 2 of the 6 files are unpaired: skipped
    assert (tmp_path / "data" / "log" / "prep_librispeech.log").is_file()
    out = tmp_path / "fbank"
    assert main(["features", str(data), str(out), "--type", "mfcc"]) == 0
    assert set(read_kaldi_map(out / "feats.scp")) == set(read_kaldi_map(data / "text"))
    assert (out / "feat_dim").read_text().strip() == "13"
    assert (out / "log" / "features.log").is_file()
    sp = tmp_path / "fbank_sp"
    assert main(["features", str(data), str(sp), "--speed-perturb", "0.9,1.0,1.1"]) == 0
    ids = set(read_kaldi_map(sp / "feats.scp"))
    base = set(read_kaldi_map(data / "text"))
    assert ids == base | {f"sp0.9-{u}" for u in base} | {f"sp1.1-{u}" for u in base}
    assert main(["features", str(data), str(sp), "--speed-perturb", "fast"]) == 2
