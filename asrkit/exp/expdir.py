"""The files an experiment dir carries so that it decodes from any directory after a move.

DESIGN.md: "An experiment dir is self-contained: config, checkpoints, tokenizer, CMVN stats".
At train time ``asrkit train`` (neural acoustic models) and ``asrkit train-lm model=...``
(neural LMs) copy their outside inputs into ``exp_dir``:

* ``tokenizer/<name>.model``  the sentencepiece model of ``data.tokenizer``
* ``cmvn.ark``                (acoustic models) the training features' global CMVN stats. A
  copy for the record and for other tools only: the model holds the same stats as buffers of
  its :class:`~asrkit.features.cmvn.GlobalCMVN`, so every checkpoint carries them and
  decoding never reads a CMVN file.

``config.yaml`` keeps ``data.tokenizer`` as given (where the model came from) and lists the
copies under :data:`EXP_FILES_KEY` as paths relative to ``exp_dir``, e.g.
``exp_files: {tokenizer: tokenizer/bpe_150.model, cmvn: cmvn.ark}``.

Loaders find the tokenizer with :func:`exp_tokenizer_path` (or :func:`load_exp_tokenizer`):
the copy ``config.yaml`` names, else the only ``.model`` in ``exp_dir/tokenizer/``, else, for
experiments trained before the copies existed, ``data.tokenizer`` as written (relative to the
current directory). When none of these exists the error names each place looked at.

HMM-GMM experiments (``model=hmm_gmm``) need no copy: a stage's ``final.mdl`` holds the
transition model, the GMMs and the feature options (deltas, splicing, the LDA+MLLT
transform), per-speaker CMN is computed from the data dir being decoded, and a graph dir
(``HCLG.fst`` + ``words.txt``, by default ``<stage>/graph``) is complete in itself, so
``asrkit decode EXP/STAGE DATA --graph G`` reads nothing else. ``asrkit mkgraph`` and
``asrkit align`` take the lang dir as an argument, as Kaldi's ``utils/mkgraph.sh`` and
``steps/align_si.sh`` do: it is an input of those stages, not part of the model.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from asrkit.fileio import atomic_write

__all__ = ["EXP_FILES_KEY", "TOKENIZER_DIR", "copy_into_exp", "exp_tokenizer_path",
           "load_exp_tokenizer", "resolve_tokenizer"]

logger = logging.getLogger(__name__)

EXP_FILES_KEY = "exp_files"
"""Top-level ``config.yaml`` key: ``{name: path relative to exp_dir}`` of copied inputs."""
TOKENIZER_DIR = "tokenizer"
"""Folder of ``exp_dir`` holding the copy of the sentencepiece model."""


def copy_into_exp(src: str | os.PathLike, exp_dir: str | os.PathLike, rel: str) -> str:
    """Copy ``src`` to ``exp_dir/rel`` atomically (skipped when an identical copy is there).

    Args:
        src: the file to copy (e.g. ``data/token/bpe_150.model``).
        exp_dir: the experiment directory.
        rel: destination relative to ``exp_dir``, POSIX style (``tokenizer/bpe_150.model``).

    Returns:
        ``rel``, to be stored in ``config.yaml`` under :data:`EXP_FILES_KEY`.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    src, dst = Path(src), Path(exp_dir) / rel
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found (to copy into the experiment as {dst})")
    if dst.is_file() and (os.path.samefile(src, dst) or filecmp.cmp(src, dst, shallow=False)):
        return rel
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    logger.info("copied %s into the experiment: %s", src, dst)
    return rel


def _get(cfg: Mapping, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node


def exp_tokenizer_path(exp_dir: str | os.PathLike, cfg: Mapping | None = None) -> Path:
    """The sentencepiece model of an experiment (acoustic model or neural LM).

    Looks, in order, at: the copy ``config.yaml`` lists under ``exp_files.tokenizer``
    (relative to ``exp_dir``); the only ``.model`` file in ``exp_dir/tokenizer/``; the
    training-time ``data.tokenizer`` path as written (old experiments without a copy; a
    relative path is taken from the current directory, so run from where they were trained).

    Args:
        exp_dir: the experiment directory.
        cfg: its config (``DictConfig`` or the plain dict :func:`load_model` returns); None
            reads ``exp_dir/config.yaml``.

    Returns:
        The path of an existing ``.model`` file.

    Raises:
        FileNotFoundError: no tokenizer in any of those places; the message names each.
    """
    exp_dir = Path(exp_dir)
    if cfg is None:
        from omegaconf import OmegaConf

        cfg_path = exp_dir / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found; is {exp_dir} an asrkit experiment?")
        cfg = OmegaConf.load(cfg_path)
    tried = []
    rel = _get(cfg, f"{EXP_FILES_KEY}.tokenizer")
    if rel:
        p = exp_dir / str(rel)
        if p.is_file():
            return p
        tried.append(str(p))
    models = sorted((exp_dir / TOKENIZER_DIR).glob("*.model"))
    if len(models) == 1:
        return models[0]
    tried.append(f"{exp_dir / TOKENIZER_DIR}/*.model ({len(models)} found, expected 1)")
    orig = _get(cfg, "data.tokenizer")
    if orig and str(orig) != "???":
        p = Path(str(orig))
        if p.is_file():
            logger.info("%s holds no copy of its tokenizer (trained before asrkit copied it); "
                        "using data.tokenizer=%s", exp_dir, p)
            return p
        tried.append(f"data.tokenizer={orig} from {Path.cwd()}")
    raise FileNotFoundError(
        f"{exp_dir}: no tokenizer found (looked at {'; '.join(tried)}); copy the "
        f"sentencepiece .model it was trained with into {exp_dir / TOKENIZER_DIR}/")


def load_exp_tokenizer(exp_dir: str | os.PathLike, cfg: Mapping | None = None):
    """:class:`asrkit.text.tokenizer.Tokenizer` of :func:`exp_tokenizer_path`; for a
    ``model=speech_llm`` experiment (``cfg`` given) its LLM's tokenizer
    (:class:`asrkit.lm.hf.HFTextTokenizer`).

    Raises:
        FileNotFoundError: as :func:`exp_tokenizer_path`.
        ValueError: the file is not an asrkit sentencepiece model.
    """
    model = (cfg or {}).get("model") or {}
    if model.get("family") == "speech_llm":  # its units are the LLM's tokens
        from asrkit.lm.hf import HFTextTokenizer

        return HFTextTokenizer(model["llm"], case=model.get("text_case", "keep"))
    from asrkit.text.tokenizer import Tokenizer

    return Tokenizer(exp_tokenizer_path(exp_dir, cfg))


def resolve_tokenizer(path: str | os.PathLike) -> Path:
    """A command-line TOKENIZER argument: a ``.model`` file, or an experiment dir (acoustic
    model or neural LM) whose tokenizer is used (:func:`exp_tokenizer_path`).

    Raises:
        FileNotFoundError: neither a file nor an experiment dir with a tokenizer.
    """
    p = Path(path)
    if p.is_dir():
        return exp_tokenizer_path(p)
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer {p} not found (expected a sentencepiece .model "
                                "or an experiment dir)")
    return p
