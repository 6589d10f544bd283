"""Integration: the LibriSpeech recipes on the shared stage template (recipes/TEMPLATE/asr.sh).

* recipes/mini_librispeech/run.sh: its early stages (prep -> MFCC -> lang/LM -> monophone) on
  the real two-speaker Mini LibriSpeech slice in ../shared/corpora (skipped when absent).
* recipes/librispeech/run.sh: every stage on a synthetic corpus in the official layout, parts
  and LM files fetched with --download from file:// mirrors with a checksum file, a tiny
  Conformer, TLG decoding of the four evaluation sets with the LM weight tuned on dev-clean.
Neither measures accuracy (RESULTS.md has the real runs); they prove the stages run, hand off
the right files and skip completed work on a rerun.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from asrkit.data.datadir import read_kaldi_map

ROOT = Path(__file__).resolve().parents[1]
SLICE = Path(os.environ.get("LIBRISPEECH_SLICE_DIR",
                            ROOT.parent / "shared" / "corpora" / "librispeech-mini-slice"))


def _run(recipe: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    return subprocess.run(["bash", str(ROOT / "recipes" / recipe / "run.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


MONO_QUICK = ["~model.stages.tri1", "~model.stages.tri2", "~model.stages.tri3",
              "model.stages.mono.num_iters=6",
              "model.stages.mono.max_iter_inc=4", "model.stages.mono.realign_iters=[1,2,4]",
              "model.stages.mono.max_gauss=200", "trainer.num_threads=2"]


@pytest.mark.skipif(not (SLICE / "LibriSpeech" / "train-clean-5").is_dir(),
                    reason=f"Mini LibriSpeech slice not found at {SLICE}")
def test_mini_librispeech_early_stages_on_real_audio(tmp_path):
    """Speaker split (dev = test = 1737 here, train the other speaker), MFCC, a CMU-dictionary
    lang over the LM text's words, the transcript trigram, and a monophone system."""
    args = ["--data-dir", str(SLICE), "--work-dir", str(tmp_path), "--dev-speakers", "1737",
            "--test-speakers", "1737", "--conf",
            str(ROOT / "recipes" / "mini_librispeech" / "conf" / "gmm.yaml"), "--stop-stage", "3",
            "--", *MONO_QUICK]
    res = _run("mini_librispeech", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    spk = {d: set(read_kaldi_map(tmp_path / "data" / d / "utt2spk").values())
           for d in ("train", "dev", "test")}
    assert spk == {"train": {"7312"}, "dev": {"1737"}, "test": {"1737"}}
    train_utts = read_kaldi_map(tmp_path / "data" / "train" / "text")
    feats = read_kaldi_map(tmp_path / "dump" / "mfcc" / "train" / "feats.scp")
    assert set(feats) == set(train_utts)
    # the LM text is the training transcripts (no --books-dir); the lang keeps their words
    lm_text = (tmp_path / "data" / "local" / "lm_text.txt").read_text().splitlines()
    assert sorted(lm_text) == sorted(train_utts.values())
    words = {line.split()[0] for line in
             (tmp_path / "data" / "lang" / "words.txt").read_text().splitlines()}
    train_words = {w for t in train_utts.values() for w in t.split()}
    assert len(train_words & words) >= 0.9 * len(train_words)  # cmudict covers most of them
    assert (tmp_path / "data" / "lm" / "tg.arpa").stat().st_size > 0
    mono = tmp_path / "exp" / "gmm" / "mono"
    assert (mono / ".done").is_file() and not (tmp_path / "exp" / "gmm" / "tri1").exists()
    ali = read_kaldi_map(mono / "ali" / "ali.txt")
    assert len(ali) >= 0.9 * len(train_utts)
    # a rerun redoes nothing
    before = (mono / "final.mdl").stat().st_mtime_ns
    res2 = _run("mini_librispeech", *args)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert (mono / "final.mdl").stat().st_mtime_ns == before
    bad = _run("mini_librispeech", "--data-dir", str(tmp_path / "nowhere"), "--work-dir",
               str(tmp_path / "w2"), "--stop-stage", "0")
    assert bad.returncode != 0 and "LibriSpeech/train-clean-5" in bad.stderr


WORDS = ["HELLO", "WORLD", "READ", "BOOKS", "GOOD", "MORNING", "THE", "CAT"]
PARTS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
TINY = ["model.d_model=32", "model.num_heads=2", "model.ffn_dim=64", "model.num_layers=1",
        "model.subsampling_channels=8", "model.depthwise_conv_kernel_size=3",
        "trainer.max_epochs=1", "trainer.num_threads=2", "data.num_workers=0",
        "data.dev_max_utts=2", "data.max_frames=2000"]


def _synthetic_librispeech(root: Path, write_audio) -> tuple[Path, Path, Path]:
    """Five parts of two speakers x two utterances in the official layout, tarred as OpenSLR
    serves them, OpenSLR 11's lexicon and a gzipped 3-gram, and a sha256sum file of all."""
    mirror, lm_mirror = root / "mirror", root / "lm_mirror"
    mirror.mkdir(parents=True)
    lm_mirror.mkdir()
    build = root / "build"
    texts = []
    for i, part in enumerate(PARTS):
        for s in range(2):
            spk, ch = str(100 + 10 * i + s), str(500 + i)
            lines = []
            for u in range(2):
                uid = f"{spk}-{ch}-{u:04d}"
                words = " ".join(WORDS[(i + s + u + k) % len(WORDS)] for k in range(3))
                write_audio(build / "LibriSpeech" / part / spk / ch / f"{uid}.flac",
                            seconds=0.6 + 0.1 * u, freq=200.0 + 50 * u + 30 * s)
                lines.append(f"{uid} {words}\n")
                texts.append(words)
            (build / "LibriSpeech" / part / spk / ch / f"{spk}-{ch}.trans.txt").write_text(
                "".join(lines))
        with tarfile.open(mirror / f"{part}.tar.gz", "w:gz") as tar:
            tar.add(build / "LibriSpeech" / part, arcname=f"LibriSpeech/{part}")
    prons = {"HELLO": "HH AH0 L OW1", "WORLD": "W ER1 L D", "READ": "R IY1 D",
             "BOOKS": "B UH1 K S", "GOOD": "G UH1 D", "MORNING": "M AO1 R N IH0 NG",
             "THE": "DH AH0", "CAT": "K AE1 T"}
    (lm_mirror / "librispeech-lexicon.txt").write_text(
        "".join(f"{w}\t{p}\n" for w, p in sorted(prons.items())))
    text = root / "lm_text.txt"
    text.write_text("".join(t + "\n" for t in texts))
    arpa = root / "tg.arpa"
    from asrkit.cli import main

    assert main(["train-lm", "ngram", str(text), str(arpa), "--order", "3", "--no-utt-ids"]) == 0
    with open(arpa, "rb") as f, gzip.open(lm_mirror / "3-gram.pruned.3e-7.arpa.gz", "wb") as g:
        g.write(f.read())
    fg = root / "fg.arpa"  # the rescoring LM (OpenSLR 11's 4-gram.arpa.gz)
    assert main(["train-lm", "ngram", str(text), str(fg), "--order", "4", "--no-utt-ids"]) == 0
    with open(fg, "rb") as f, gzip.open(lm_mirror / "4-gram.arpa.gz", "wb") as g:
        g.write(f.read())
    sums = root / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                            for d in (mirror, lm_mirror) for p in sorted(d.iterdir())))
    return mirror, lm_mirror, sums


GPT_TINY = ("model.n_layer=1 model.n_embd=16 model.n_head=2 model.n_positions=64 "
            "data.block_size=16 data.batch_tokens=64 trainer.max_steps=4 trainer.eval_every=2 "
            "trainer.device=cpu")


def test_librispeech_recipe_all_stages_with_download(tmp_path, data_write_audio):
    mirror, lm_mirror, sums = _synthetic_librispeech(tmp_path / "src", data_write_audio)
    work, dl = tmp_path / "work", tmp_path / "corpus"
    args = ["--data-dir", str(dl), "--download", "--base-url", mirror.as_uri(),
            "--lm-base-url", lm_mirror.as_uri(), "--checksums", str(sums), "--work-dir",
            str(work), "--token-type", "char", "--vocab-size", "40", "--lm-weights", "0.3 0.8",
            "--rescore-lms", "fglarge gpt", "--gpt-opts", GPT_TINY, "--", *TINY]
    res = _run("librispeech", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    for part in PARTS:
        assert (dl / f"{part}.tar.gz").is_file() and (dl / f".{part}.extracted").is_file()
    assert len(read_kaldi_map(work / "data" / "train" / "text")) == 4
    exp = work / "exp" / "conformer_100h"
    for part in ("dev_other", "test_clean", "test_other"):
        d = exp / f"decode_{part}_tlg_tgsmall"
        assert len(read_kaldi_map(d / "text", allow_empty_value=True)) == 4
        assert (d / "dev_best").read_text().startswith("decode_dev_clean_tlg_tgsmall_lm-weight")
        # second pass: the n-best lists rescored with the 4-gram in place of tgsmall
        r = exp / f"decode_{part}_tlg_tgsmall_rescore_fglarge"
        assert set(read_kaldi_map(r / "text", allow_empty_value=True)) == set(
            read_kaldi_map(d / "text", allow_empty_value=True))
        tune = exp / "decode_dev_clean_tlg_tgsmall_nbest" / "tune_rescore_fglarge.json"
        best = json.loads(tune.read_text())["best"]["lm_weight"]
        assert (r / "lm-weight").read_text().strip() == f"{best:g}"
        assert (r / "score.json").is_file()
        # and with a GPT pretrained by the recipe on its LM text (hf:exp/lm_gpt/hf)
        g = exp / f"decode_{part}_tlg_tgsmall_rescore_gpt"
        assert set(read_kaldi_map(g / "text", allow_empty_value=True)) == set(
            read_kaldi_map(d / "text", allow_empty_value=True))
        assert (g / "score.json").is_file()
    assert (work / "exp" / "lm_gpt" / "hf" / "config.json").is_file()
    table = (work / "exp" / "RESULTS.md").read_text()
    assert "| dev_clean WER % | dev_other WER % | test_clean WER % | test_other WER %" in table
    assert "| dev_clean WER % rescored fglarge | dev_other WER % rescored fglarge |" in table
    assert "rescored gpt" in table
    assert "tlg_tgsmall (lm-weight" in table and "ctc_greedy" in table
    # a rerun downloads, trains and decodes nothing again
    stamp = [(p, p.stat().st_mtime_ns) for p in
             (dl / "dev-clean.tar.gz", exp / "checkpoints" / "last.pt",
              exp / "decode_test_clean_tlg_tgsmall" / "text")]
    res2 = _run("librispeech", *args)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert [(p, p.stat().st_mtime_ns) for p, _ in stamp] == stamp
    # a corrupted mirror archive is caught by its checksum before anything is unpacked
    (mirror / "test-other.tar.gz").write_bytes(b"broken")
    res3 = _run("librispeech", "--data-dir", str(tmp_path / "dl2"), "--download", "--base-url",
                mirror.as_uri(), "--checksums", str(sums), "--work-dir", str(tmp_path / "w3"),
                "--stop-stage", "0")
    assert res3.returncode != 0 and "test-other.tar.gz" in res3.stderr
