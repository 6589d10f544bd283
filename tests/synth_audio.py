"""Synthetic *audio* a tiny model learns in seconds, for tests of the audio-in paths
(``asrkit transcribe``): each letter of :data:`LETTERS` is a harmonic tone of its own pitch
(a "word"), utterances are letters separated by short pauses, written as WAV files in a Kaldi
data dir. :func:`train_tiny_audio_ctc` computes fbank features with the features stage and
trains a tiny character Transformer-CTC on them; :func:`train_tiny_audio_gmm` trains a
monophone HMM-GMM on MFCCs of the same kind of audio (each letter a one-phone word) and
builds its graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

LETTERS = {"A": 300.0, "B": 550.0, "C": 900.0, "D": 1400.0, "E": 2100.0}
"""Letter -> fundamental frequency in Hz (harmonics 2f and 3f added, all below 8 kHz)."""
SR = 16000


def letter_tone(letter: str, seconds: float, sr: int = SR) -> np.ndarray:
    """``seconds`` of the letter's tone at ``sr`` Hz, float32, 10 ms fades."""
    t = np.arange(round(seconds * sr)) / sr
    f = LETTERS[letter]
    x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(4 * np.pi * f * t) \
        + 0.25 * np.sin(6 * np.pi * f * t)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    return (0.2 * x * fade).astype(np.float32)


def synth_speech(letters: list[str], rng: np.random.Generator, sr: int = SR, *,
                 lead: float = 0.2, gap: tuple[float, float] = (0.12, 0.3),
                 noise: float = 0.002) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """An utterance: ``lead`` seconds of quiet, then each letter (0.18-0.3 s) followed by a
    pause drawn from ``gap``; light white noise throughout.

    Returns:
        ``(samples, [(letter, start s, end s), ...])``.
    """
    parts, spans, t = [np.zeros(round(lead * sr), np.float32)], [], lead
    for c in letters:
        x = letter_tone(c, float(rng.uniform(0.18, 0.3)), sr)
        spans.append((c, t, t + x.size / sr))
        t += x.size / sr
        pause = np.zeros(round(float(rng.uniform(*gap)) * sr), np.float32)
        parts += [x, pause]
        t += pause.size / sr
    y = np.concatenate(parts)
    y += rng.normal(scale=noise, size=y.size).astype(np.float32)
    return y, spans


def make_audio_data_dir(path: Path, n_utts: int = 40, seed: int = 0, n_speakers: int = 4
                        ) -> Path:
    """A Kaldi data dir of ``n_utts`` synthetic utterances (2-4 letters, 16 kHz WAV files in
    ``path/wav``): ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``."""
    rng = np.random.default_rng(seed)
    (path / "wav").mkdir(parents=True, exist_ok=True)
    wav, text, spk = {}, {}, {}
    for i in range(n_utts):
        utt = f"spk{i % n_speakers}-utt{i:03d}"
        letters = list(rng.choice(list(LETTERS), size=int(rng.integers(2, 5))))
        y, _ = synth_speech(letters, rng)
        f = path / "wav" / f"{utt}.wav"
        sf.write(f, y, SR)
        wav[utt], text[utt], spk[utt] = str(f), " ".join(letters), utt.split("-")[0]
    ids = sorted(wav)
    (path / "wav.scp").write_text("".join(f"{u} {wav[u]}\n" for u in ids))
    (path / "text").write_text("".join(f"{u} {text[u]}\n" for u in ids))
    (path / "utt2spk").write_text("".join(f"{u} {spk[u]}\n" for u in ids))
    spks = sorted(set(spk.values()))
    (path / "spk2utt").write_text("".join(
        f"{s} {' '.join(u for u in ids if spk[u] == s)}\n" for s in spks))
    return path


def train_tiny_audio_ctc(root: Path, *, n_train: int = 48, epochs: int = 12) -> Path:
    """A tiny character Transformer-CTC on 20-dim fbank of :func:`make_audio_data_dir`
    audio. Returns the experiment dir."""
    from asrkit.cli import compose_train_config
    from asrkit.features.compute import FeatureConfig, compute_features
    from asrkit.text.tokenizer import train_tokenizer
    from asrkit.train.loop import train

    data = make_audio_data_dir(root / "data" / "train", n_utts=n_train, seed=0)
    feats = root / "dump" / "train"
    compute_features(data, feats, FeatureConfig(type="fbank", num_mel_bins=20))
    tok = train_tokenizer(feats / "text", root / "tok" / "char", model_type="char")
    exp = root / "exp"
    train(compose_train_config([
        f"exp_dir={exp}", f"data.train={feats}", f"data.tokenizer={tok}",
        "model.d_model=32", "model.nhead=2", "model.num_layers=1",
        "model.dim_feedforward=64", "model.specaug=null", f"trainer.max_epochs={epochs}",
        "model.dropout=0.0", "optim.optimizer.lr=0.005", "optim.scheduler.warmup_steps=20",
        "trainer.num_threads=1", "data.max_frames=600", "trainer.plot=false",
        "trainer.tensorboard=false"]))
    return exp


GMM_TRAIN_OPTS = [
    "model.stages.mono.num_iters=10", "model.stages.mono.max_gauss=40",
    "model.stages.mono.max_iter_inc=6", "model.stages.mono.realign_iters=[1,2,3,4,6,8]",
    "~model.stages.tri1", "model.stages.tri2.num_leaves=20", "model.stages.tri2.tot_gauss=40",
    "model.stages.tri2.num_iters=4", "model.stages.tri2.max_iter_inc=3",
    "model.stages.tri2.realign_iters=[2]", "model.stages.tri2.min_gain=20",
    "model.stages.tri2.mllt_iters=[2]", "model.stages.tri2.lda_dim=20", "model.device=cpu"]
"""A monophone stage, then an LDA+MLLT triphone stage (``tri2``), both tiny."""


def train_tiny_audio_gmm(root: Path, *, n_train: int = 40) -> dict[str, Path]:
    """HMM-GMM stages (:data:`GMM_TRAIN_OPTS`) on 13 MFCCs of :func:`make_audio_data_dir`
    audio, each letter a word of one phone, with a bigram graph per stage
    (``<stage>/graph``). Returns ``{"exp", "mono", "tri2", "lang"}``."""
    from asrkit.cli import main
    from asrkit.features.compute import FeatureConfig, compute_features

    data = make_audio_data_dir(root / "data" / "train", n_utts=n_train, seed=0)
    feats = root / "dump" / "mfcc_train"
    compute_features(data, feats, FeatureConfig(type="mfcc"))
    lex = root / "lexicon.txt"
    lex.write_text("".join(f"{c} p{c.lower()}\n" for c in LETTERS))
    lang, lm, exp = root / "lang", root / "lm.arpa", root / "gmm"
    for args in (["lang", str(lex), str(lang), "--text", str(feats / "text")],
                 ["train-lm", "ngram", str(feats / "text"), str(lm), "--order", "2"],
                 ["train", "model=hmm_gmm", f"data.train={feats}", f"data.lang={lang}",
                  f"exp_dir={exp}", *GMM_TRAIN_OPTS]):
        assert main(args) == 0, args
    for stage in ("mono", "tri2"):
        assert main(["mkgraph", str(lang), str(lm), str(exp / stage),
                     str(exp / stage / "graph")]) == 0
    return {"exp": exp, "mono": exp / "mono", "tri2": exp / "tri2", "lang": lang}


VOWEL_FORMANTS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
                  "o": (570, 840, 2410), "u": (300, 870, 2240)}
"""Formant frequencies (Hz) of five vowels (Peterson & Barney, 1952, male averages)."""


def vowel_speech(vowels: str, sr: int = SR, *, vowel_seconds: float = 0.15) -> np.ndarray:
    """Speech-like audio that Silero VAD detects: a glottal pulse train at a falling pitch
    (150 -> 115 Hz) through three formant resonators per vowel (Klatt-style source-filter
    synthesis), the vowels chained without pauses, 30 ms fades, peak 0.3."""
    import torch
    import torchaudio.functional as AF

    seg = round(vowel_seconds * sr)
    n = seg * len(vowels)
    t = np.arange(n) / sr
    f0 = 154.0 * (1.0 - 0.25 * t / t[-1])
    src = (np.diff(np.floor(np.cumsum(f0) / sr), prepend=0) > 0).astype(np.float64)
    y = np.zeros(n)
    for k, v in enumerate(vowels):
        x = torch.tensor(src[k * seg:(k + 1) * seg])
        for f, bw in zip(VOWEL_FORMANTS[v], (80, 100, 140)):
            r, th = np.exp(-np.pi * bw / sr), 2 * np.pi * f / sr
            y[k * seg:(k + 1) * seg] += AF.lfilter(
                x, torch.tensor([1.0, -2 * r * np.cos(th), r * r], dtype=torch.float64),
                torch.tensor([1.0 - r, 0.0, 0.0], dtype=torch.float64), clamp=False).numpy()
    y *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)
