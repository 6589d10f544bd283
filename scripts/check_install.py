#!/usr/bin/env python3
"""Import smoke test: every asrkit module and every compiled dependency, in seconds.

``make test`` runs this before pytest, so a broken binary (a torchaudio built against another
torch, a missing ``libsndfile``) fails at once with the package named, instead of as hundreds
of collection errors. Each compiled dependency is also exercised once (a 1-second fbank, an
FST composition, a sentencepiece round trip), because some binaries import fine and fail on
first use.

Usage: ``python scripts/check_install.py [--optional]``; exit 0 when everything works, 1 with
one line per failure otherwise. ``--optional`` also requires the optional extras
(``flashlight-text``, ``transformers``) to import.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _torch() -> None:
    import torch

    x = torch.randn(4, 4)
    torch.testing.assert_close(x @ torch.eye(4), x)


def _torchaudio() -> None:
    import torch
    import torchaudio.functional as F
    from torchaudio.compliance import kaldi

    feats = kaldi.fbank(torch.randn(1, 16000), num_mel_bins=80)
    assert feats.shape == (98, 80), feats.shape
    assert F.resample(torch.randn(1, 16000), 16000, 8000).shape == (1, 8000)
    emissions = torch.randn(1, 20, 5).log_softmax(-1)
    F.forced_align(emissions, torch.tensor([[1, 2]]), blank=0)  # loads libtorchaudio


def _pynini() -> None:
    import pynini

    fst = pynini.accep("ab") @ pynini.accep("ab")
    assert fst.num_states() == 3


def _sentencepiece() -> None:
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp, "t.txt")
        text.write_text("hello world\nhello there\n" * 20)
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=f"{tmp}/m",
                                       vocab_size=12, model_type="char", minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=f"{tmp}/m.model")
        assert sp.decode(sp.encode("hello")) == "hello"


def _soundfile() -> None:
    import numpy as np
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        sf.write(f"{tmp}/a.flac", np.zeros(160, dtype="float32"), 16000)
        assert sf.info(f"{tmp}/a.flac").samplerate == 16000


def _kaldiio() -> None:
    import kaldiio
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        kaldiio.save_ark(f"{tmp}/a.ark", {"u": np.ones((2, 3), dtype="float32")},
                         scp=f"{tmp}/a.scp")
        assert kaldiio.load_scp(f"{tmp}/a.scp")["u"].shape == (2, 3)


# (distribution name, module to import, first-use check or None, required?)
DEPENDENCIES: list[tuple[str, str, Callable[[], None] | None, bool]] = [
    ("numpy", "numpy", None, True),
    ("torch", "torch", _torch, True),
    ("torchaudio", "torchaudio", _torchaudio, True),
    ("pynini", "pynini", _pynini, True),
    ("sentencepiece", "sentencepiece", _sentencepiece, True),
    ("soundfile", "soundfile", _soundfile, True),
    ("kaldiio", "kaldiio", _kaldiio, True),
    ("hydra-core", "hydra", None, True),
    ("omegaconf", "omegaconf", None, True),
    ("jiwer", "jiwer", None, True),
    ("flashlight-text", "flashlight.lib.text.decoder", None, False),
    ("kaldi-decoder", "kaldi_decoder", None, False),
    ("kaldifst", "kaldifst", None, False),
    ("transformers", "transformers", None, False),
]


def check(optional: bool = False) -> list[str]:
    """Import and exercise each dependency, then import every ``asrkit`` module.

    Returns one message per failure (empty when all is well): ``"<package> <version>: <error>"``
    for a dependency, ``"asrkit module <name>: <error>"`` for our own code. Optional
    dependencies that are not installed are skipped unless ``optional`` is true.
    """
    failures = []
    for dist, module, use, required in DEPENDENCIES:
        version = _version(dist)
        if not required and not optional and version == "not installed":
            continue
        try:
            importlib.import_module(module)
            if use is not None:
                use()
        except Exception as err:  # noqa: BLE001 - report every kind of breakage by name
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            failures.append(f"{dist} {version}: {last}")
    if failures:  # asrkit's modules would only repeat the same failures
        return failures
    import asrkit

    for info in pkgutil.walk_packages(asrkit.__path__, "asrkit."):
        try:
            importlib.import_module(info.name)
        except Exception as err:  # noqa: BLE001
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            failures.append(f"asrkit module {info.name}: {last}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optional", action="store_true",
                        help="also require the optional extras (flashlight-text, transformers, "
                        "kaldi-decoder, kaldifst)")
    args = parser.parse_args()
    failures = check(args.optional)
    versions = ", ".join(f"{d} {_version(d)}" for d, _, _, req in DEPENDENCIES if req)
    if failures:
        print("check_install: FAILED (" + versions + ")", file=sys.stderr)
        for line in failures:
            print("  " + line, file=sys.stderr)
        print("  Reinstall from the lock: make clean-venv install (README: Installation)",
              file=sys.stderr)
        return 1
    print(f"check_install: ok ({versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
