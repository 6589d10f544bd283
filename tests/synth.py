"""Synthetic, learnable data for training/decoding tests (no corpus needed).

Each letter of a small alphabet owns a fixed random feature pattern; an utterance is its
letters' patterns, each held for a few frames, plus noise. A CTC model can learn this in a few
seconds, so tests can check that training really learns (CER falls) without real speech.
"""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np

from asrkit.features.cmvn import compute_cmvn_stats, write_cmvn_stats

ALPHABET = "ABCDE"


def make_feature_dir(path: Path, n_utts: int = 40, feat_dim: int = 20, seed: int = 0,
                     frames_per_letter: int = 12, n_letters: int | None = None,
                     n_speakers: int = 4) -> Path:
    """Write a Kaldi feature data dir: feats.scp/ark, utt2num_frames, utt2dur, feat_dim,
    cmvn.ark, text, utt2spk, spk2utt. Returns ``path``.

    Each utterance has 2–4 letters, or exactly ``n_letters`` (then every utterance has
    ``4 + n_letters * (frames_per_letter + 4)`` frames); speakers ``spk0…`` round-robin."""
    rng = np.random.default_rng(seed)
    proto = np.random.default_rng(1234).normal(size=(len(ALPHABET), feat_dim)) * 3
    path.mkdir(parents=True, exist_ok=True)
    feats, texts = {}, {}
    for i in range(n_utts):
        utt = f"spk{i % n_speakers}-utt{i:03d}"
        size = n_letters if n_letters is not None else rng.integers(2, 5)
        letters = rng.choice(list(ALPHABET), size=size)
        frames = [np.repeat(proto[ALPHABET.index(c)][None], frames_per_letter, 0)
                  for c in letters]
        gap = np.zeros((4, feat_dim))
        seq = np.concatenate([gap] + [x for f in frames for x in (f, gap)])
        feats[utt] = (seq + rng.normal(scale=0.3, size=seq.shape)).astype(np.float32)
        texts[utt] = " ".join(letters)
    ids = _write_feature_files(path, feats, texts)
    write_cmvn_stats(path / "cmvn.ark", compute_cmvn_stats(feats[u] for u in ids))
    return path


def _write_feature_files(path: Path, feats: dict, texts: dict) -> list[str]:
    """feats.scp/ark, utt2num_frames, utt2dur, feat_dim, text, utt2spk, spk2utt (speaker =
    the utterance id's prefix before '-'); returns the sorted ids."""
    ids = sorted(feats)
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as w:
        for u in ids:
            w(u, feats[u])
    (path / "utt2num_frames").write_text("".join(f"{u} {len(feats[u])}\n" for u in ids))
    (path / "utt2dur").write_text("".join(f"{u} {len(feats[u]) * 0.01:.2f}\n" for u in ids))
    (path / "feat_dim").write_text(f"{feats[ids[0]].shape[1]}\n")
    (path / "text").write_text("".join(f"{u} {texts[u]}\n" for u in ids))
    (path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in ids))
    spks = sorted({u.split("-")[0] for u in ids})
    (path / "spk2utt").write_text("".join(
        f"{s} {' '.join(u for u in ids if u.startswith(s + '-'))}\n" for s in spks))
    return ids


def make_text_file(path: Path, lines: dict[str, str]) -> Path:
    """Write a Kaldi ``text`` file from ``{utt: transcript}`` (sorted)."""
    path.write_text("".join(f"{u} {t}\n" for u, t in sorted(lines.items())), encoding="utf-8")
    return path


PHONE_LEXICON = {"AB": "A B", "CA": "C A", "BCD": "B C D", "D": "D", "DA": "D A"}
"""Words over four phones for HMM-GMM tests (with SIL: five "phones")."""


def make_phone_feature_dir(path: Path, n_utts: int = 40, seed: int = 0, feat_dim: int = 13,
                           n_speakers: int = 4) -> tuple[Path, dict[str, list[tuple]]]:
    """Write a feature data dir of 13-dim "cepstra" spoken from :data:`PHONE_LEXICON` words:
    each phone (and SIL) has three sub-state means (a fixed pattern, seed 99) held for a third
    of the phone's 5-11 frames each, plus unit noise; utterances are 1-3 words with silence at
    the ends (and sometimes between words). Files: feats.scp/ark, utt2num_frames, utt2dur,
    feat_dim, text, utt2spk, spk2utt.

    Returns:
        ``(path, truth)`` with ``truth[utt] = [(word, start_frame, end_frame), ...]``.
    """
    rng = np.random.default_rng(seed)
    pat = np.random.default_rng(99)
    mu = {p: pat.normal(size=(3, feat_dim)) * 2.5 for p in ("SIL", "A", "B", "C", "D")}
    words = sorted(PHONE_LEXICON)
    feats, texts, truth = {}, {}, {}
    for i in range(n_utts):
        ws = list(rng.choice(words, size=int(rng.integers(1, 4))))
        frames, spans, t = [], [], 0

        def say(p: str, d: int, frames: list = frames) -> None:
            cuts = np.linspace(0, d, 4).astype(int)
            for s in range(3):
                frames.append(mu[p][s] + rng.normal(size=(cuts[s + 1] - cuts[s], feat_dim)))

        for k, w in enumerate(ws):
            if k == 0 or rng.random() < 0.3:
                d = int(rng.integers(8, 15))
                say("SIL", d)
                t += d
            start = t
            for p in PHONE_LEXICON[w].split():
                d = int(rng.integers(6, 12))
                say(p, d)
                t += d
            spans.append((w, start, t))
        d = int(rng.integers(8, 15))
        say("SIL", d)
        utt = f"spk{i % n_speakers}-utt{i:03d}"
        feats[utt] = np.concatenate(frames).astype(np.float32)
        texts[utt] = " ".join(ws)
        truth[utt] = spans
    path.mkdir(parents=True, exist_ok=True)
    _write_feature_files(path, feats, texts)
    return path, truth


def train_tiny_ctc(root: Path, *, n_train: int = 32, n_dev: int = 8, epochs: int = 3
                   ) -> dict[str, Path]:
    """A tiny character Transformer-CTC trained for ``epochs`` on synthetic letters, for tests
    of the decoding paths. Returns ``{"exp", "train", "dev", "tok"}`` paths (the tokenizer's
    ``.model`` as ``tok``)."""
    from asrkit.cli import compose_train_config
    from asrkit.text.tokenizer import train_tokenizer
    from asrkit.train.loop import train

    train_dir = make_feature_dir(root / "train", n_utts=n_train, seed=0)
    dev_dir = make_feature_dir(root / "dev", n_utts=n_dev, seed=1)
    tok = train_tokenizer(train_dir / "text", root / "tok" / "char", model_type="char")
    exp = root / "exp"
    train(compose_train_config([
        f"exp_dir={exp}", f"data.train={train_dir}", f"data.dev={dev_dir}",
        f"data.tokenizer={tok}", "model.d_model=32", "model.nhead=2", "model.num_layers=1",
        "model.dim_feedforward=64", "model.specaug=null", f"trainer.max_epochs={epochs}",
        "trainer.num_threads=1", "data.max_frames=1500"]))
    return {"exp": exp, "train": train_dir, "dev": dev_dir, "tok": Path(tok)}
