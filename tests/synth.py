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
    """Write a Kaldi feature data dir: feats.scp/ark, utt2num_frames, feat_dim, cmvn.ark,
    text, utt2spk, spk2utt. Returns ``path``.

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
    ids = sorted(feats)
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as w:
        for u in ids:
            w(u, feats[u])
    (path / "utt2num_frames").write_text("".join(f"{u} {len(feats[u])}\n" for u in ids))
    (path / "feat_dim").write_text(f"{feat_dim}\n")
    (path / "text").write_text("".join(f"{u} {texts[u]}\n" for u in ids))
    (path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in ids))
    spks = sorted({u.split("-")[0] for u in ids})
    (path / "spk2utt").write_text("".join(
        f"{s} {' '.join(u for u in ids if u.startswith(s + '-'))}\n" for s in spks))
    write_cmvn_stats(path / "cmvn.ark", compute_cmvn_stats(feats[u] for u in ids))
    return path


def make_text_file(path: Path, lines: dict[str, str]) -> Path:
    """Write a Kaldi ``text`` file from ``{utt: transcript}`` (sorted)."""
    path.write_text("".join(f"{u} {t}\n" for u, t in sorted(lines.items())), encoding="utf-8")
    return path
