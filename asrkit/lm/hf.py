"""Loading Hugging Face causal LMs from local directories only (``hf:DIR`` everywhere in
asrkit): ``AutoModelForCausalLM`` and ``AutoTokenizer`` with ``local_files_only=True`` and the
hub offline, so nothing is ever downloaded at run time."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HFTextTokenizer", "add_lora", "load_hf_causal_lm"]


def _local_dir(path: str | os.PathLike) -> Path:
    """``path`` as a Path after checking it is a directory; the hub set offline."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; expected a Hugging Face model "
                                "saved with save_pretrained (nothing is downloaded)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return path


def load_hf_causal_lm(path: str | os.PathLike):
    """The model (eval mode, CPU) and tokenizer of a causal LM saved with
    ``save_pretrained`` in ``path``.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ImportError: ``transformers`` is not installed (the ``llm`` extra).
        FileNotFoundError: ``path`` is not a directory, or it lacks ``config.json``.
    """
    path = _local_dir(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found; expected a causal LM saved "
                                "with save_pretrained")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("hf: LMs need transformers: pip install -e '.[llm]' in the asrkit "
                          "checkout") from e
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


class HFTextTokenizer:
    """A Hugging Face tokenizer with the interface of :class:`asrkit.text.tokenizer.Tokenizer`
    (``encode``, ``decode``, ``vocab_size``, ``model_path``), for models whose output units
    are an LLM's tokens (``model=speech_llm``).

    Args:
        path: the LLM directory (its tokenizer files).
        case: ``keep``, or ``lower``: text is lower-cased before encoding and decoded text
            upper-cased (an LLM trained on natural text, Kaldi-style upper-case transcripts).

    Raises:
        FileNotFoundError, ImportError: as :func:`load_hf_causal_lm`.
        ValueError: a bad ``case``.
    """

    def __init__(self, path: str | os.PathLike, case: str = "keep") -> None:
        if case not in ("keep", "lower"):
            raise ValueError(f"case must be keep or lower, got {case!r}")
        path = _local_dir(path)
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model_path = path
        self.case = case

    @property
    def vocab_size(self) -> int:
        """Number of ids (added tokens included)."""
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        text = text.lower() if self.case == "lower" else text
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens dropped, whitespace normalised (upper case with
        ``case="lower"``)."""
        text = " ".join(self.tok.decode(ids, skip_special_tokens=True).split())
        return text.upper() if self.case == "lower" else text


def add_lora(model, lora: dict | None):
    """``model`` with LoRA adapters (Hu et al., 2022; ``peft``), its own weights frozen.

    Args:
        model: a ``transformers`` causal LM.
        lora: ``{"r" (8), "alpha" (16), "dropout" (0.05), "target_modules" (None: peft's
            default for the architecture)}``.

    Raises:
        ImportError: ``peft`` is not installed (the ``llm`` extra).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("LoRA needs peft: pip install -e '.[llm]' in the asrkit checkout"
                          ) from e
    lora = dict(lora or {})
    tm = lora.get("target_modules")
    return get_peft_model(model, LoraConfig(
        r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.05)), target_modules=list(tm) if tm else None,
        task_type="CAUSAL_LM", fan_in_fan_out=model.config.model_type == "gpt2"))
