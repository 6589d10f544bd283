"""One options object per decoding method of a neural model, each owning its defaults and
checks, and the one function that builds them (:func:`decode_options`).

``asrkit decode``, ``asrkit transcribe``, :func:`asrkit.decode.run.decode_data_dir`,
:class:`asrkit.decode.transcribe.Transcriber` and the benchmarks all build their options here,
so a default lives in exactly one place: the field of its dataclass.

============================  =======================================  =======================
method (backend)              options class                            searcher
============================  =======================================  =======================
``ctc_greedy``                :class:`CtcGreedyOptions`                best path
``ctc_prefix_beam``           :class:`CtcPrefixBeamOptions`            Hannun et al., 2014
``ctc_prefix_beam``           :class:`FlashlightOptions`               Flashlight's C++ search
(``flashlight``)
``attention_beam``            :class:`AttentionBeamOptions`            attention decoder alone
``joint_ctc_attention``       :class:`JointCtcAttentionOptions`        Watanabe et al., 2017
``wfst``                      :class:`WfstOptions`                     TLG Viterbi (EESEN)
``llm_beam``                  :class:`LlmBeamOptions`                  a speech-LLM's beam
                                                                       search (``generate``)
============================  =======================================  =======================

Shallow fusion with language models (every beam method except ``wfst``, whose LM is in its
graph) is :class:`LmFusionOptions`. A decode config file (``conf/decode/<method>.yaml``,
``asrkit decode … decode=<name or file>``) holds ``method``, ``backend`` and any of these
fields; :func:`read_decode_config` reads and checks it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

__all__ = ["ATTENTION_METHODS", "METHODS", "WHOLE_UTTERANCE_METHODS", "AttentionBeamOptions",
           "CtcGreedyOptions", "CtcPrefixBeamOptions", "FlashlightOptions",
           "JointCtcAttentionOptions", "LlmBeamOptions", "LmFusionOptions", "SearchOptions",
           "WfstOptions", "decode_options", "read_decode_config"]

logger = logging.getLogger(__name__)

METHODS = ("ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint_ctc_attention", "wfst",
           "llm_beam")
ATTENTION_METHODS = ("attention_beam", "joint_ctc_attention")
"""Methods that need an attention decoder (and attend over the whole utterance)."""
WHOLE_UTTERANCE_METHODS = (*ATTENTION_METHODS, "llm_beam")
"""Methods that read the whole utterance's encoder output (no decoding in windows)."""
BACKENDS = ("asrkit", "flashlight")


def _check_beam_nbest(beam: int, nbest: int) -> None:
    if beam != int(beam) or beam < 1:
        raise ValueError(f"beam must be a whole number of hypotheses >= 1, got {beam}")
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")


@dataclass(frozen=True)
class SearchOptions:
    """Base of the options classes: ``nbest`` distinct hypotheses per utterance (1: the
    1-best only, no ``nbest`` file)."""

    method: ClassVar[str] = ""
    backend: ClassVar[str] = "asrkit"
    nbest: int = 1

    def summary(self) -> dict:
        """The options as a JSON-ready dict (paths as strings), for ``decode_summary.json``."""
        return {k: str(v) if isinstance(v, os.PathLike) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class CtcGreedyOptions(SearchOptions):
    """``ctc_greedy``: argmax per frame, repeats merged, blanks dropped (no options; 1-best).

    Raises:
        ValueError: ``nbest > 1``.
    """

    method: ClassVar[str] = "ctc_greedy"

    def __post_init__(self) -> None:
        if self.nbest != 1:
            raise ValueError("nbest > 1 needs a beam method, not ctc_greedy")


@dataclass(frozen=True)
class CtcPrefixBeamOptions(SearchOptions):
    """``ctc_prefix_beam``: CTC prefix beam search (Hannun et al., 2014,
    :func:`asrkit.decode.ctc.ctc_prefix_beam_search`).

    Attributes:
        beam: prefixes kept per frame.
        token_topk: how many of each frame's most probable non-blank tokens may extend a
            prefix (None: ``beam``).
        nbest: distinct texts written per utterance, ``1..beam``, taken from the final beam.

    Raises:
        ValueError: ``beam < 1`` or not whole, ``nbest`` outside ``1..beam``,
            ``token_topk < 1``.
    """

    method: ClassVar[str] = "ctc_prefix_beam"
    beam: int = 10
    token_topk: int | None = None

    def __post_init__(self) -> None:
        _check_beam_nbest(self.beam, self.nbest)
        if self.token_topk is not None and self.token_topk < 1:
            raise ValueError(f"token_topk must be >= 1, got {self.token_topk}")

    @property
    def topk(self) -> int:
        """Candidate tokens per frame (``token_topk`` or ``beam``)."""
        return int(self.beam if self.token_topk is None else self.token_topk)


@dataclass(frozen=True)
class FlashlightOptions(CtcPrefixBeamOptions):
    """``ctc_prefix_beam`` on Flashlight's C++ beam search (``backend="flashlight"``,
    :class:`asrkit.decode.flashlight.FlashlightCTCDecoder`). Its beam counts prefix states,
    so it is given ``2 × beam`` and ``topk + 1`` tokens.

    Attributes:
        lexicon: a word list or lexicon file (``WORD`` or ``WORD piece…`` per line) to
            constrain the output to; None: lexicon-free.
    """

    backend: ClassVar[str] = "flashlight"
    lexicon: str | os.PathLike | None = None


@dataclass(frozen=True)
class AttentionBeamOptions(SearchOptions):
    """``attention_beam``: label-synchronous beam search with the attention decoder alone
    (:func:`asrkit.decode.attention.attention_beam_search`).

    Attributes:
        beam: hypotheses kept.
        length_penalty: added per output token (> 0 favours longer hypotheses).
        maxlen_ratio: at most ``maxlen_ratio × T'`` output tokens (``T'`` encoder frames).

    Raises:
        ValueError: ``beam < 1``, ``nbest`` outside ``1..beam``, ``maxlen_ratio <= 0``.
    """

    method: ClassVar[str] = "attention_beam"
    beam: int = 10
    length_penalty: float = 0.0
    maxlen_ratio: float = 1.0

    def __post_init__(self) -> None:
        _check_beam_nbest(self.beam, self.nbest)
        if not self.maxlen_ratio > 0:
            raise ValueError(f"maxlen_ratio must be > 0, got {self.maxlen_ratio}")


@dataclass(frozen=True)
class JointCtcAttentionOptions(AttentionBeamOptions):
    """``joint_ctc_attention``: one-pass joint CTC/attention beam search with CTC prefix
    scores (Watanabe et al., 2017,
    :func:`asrkit.decode.attention.joint_ctc_attention_beam_search`).

    Attributes:
        ctc_weight: λ in ``(1 - λ) log p_att + λ log p_ctc``, in ``[0, 1]``.
    """

    method: ClassVar[str] = "joint_ctc_attention"
    ctc_weight: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")


@dataclass(frozen=True)
class WfstOptions(SearchOptions):
    """``wfst``: Viterbi beam search of the CTC posteriors over a TLG graph (EESEN, Miao et
    al., 2015; :func:`asrkit.decode.wfst.decode_ctc_wfst_batch`).

    Attributes:
        graph: the graph dir of ``asrkit mkgraph --ctc`` (``TLG.fst``, ``words.txt``,
            ``tokens.txt``).
        lm_weight: weight of the graph's LM; the acoustic scale is ``1 / lm_weight``.
        beam: search beam in graph-cost units (natural log).
        max_active: most tokens kept per frame.
        blank_penalty: cost added per blank frame.
        lattice_beam: lattice pruning beam (cost units) for ``nbest > 1``.
        nbest: the ``nbest`` best distinct word sequences of a lattice (any ``>= 1``).

    Raises:
        ValueError: no ``graph``, ``lm_weight <= 0``, ``beam <= 0``, ``max_active < 1``,
            ``nbest < 1``, ``lattice_beam < 0``.
    """

    method: ClassVar[str] = "wfst"
    graph: str | os.PathLike | None = None
    lm_weight: float = 0.5
    beam: float = 16.0
    max_active: int = 7000
    blank_penalty: float = 0.0
    lattice_beam: float = 8.0

    def __post_init__(self) -> None:
        if self.graph is None:
            raise ValueError("method wfst needs a graph dir (asrkit mkgraph --ctc TOKENIZER "
                             "LM.arpa OUT)")
        if not self.lm_weight > 0:
            raise ValueError(f"wfst: lm_weight must be > 0 (acoustic scale 1/lm_weight), got "
                             f"{self.lm_weight}")
        if not self.beam > 0 or self.max_active < 1:
            raise ValueError(f"wfst: beam must be > 0 and max_active >= 1, got {self.beam} "
                             f"and {self.max_active}")
        if self.nbest < 1:
            raise ValueError(f"nbest must be >= 1, got {self.nbest}")
        if not self.lattice_beam >= 0:
            raise ValueError(f"wfst: lattice_beam must be >= 0, got {self.lattice_beam}")


@dataclass(frozen=True)
class LlmBeamOptions(SearchOptions):
    """``llm_beam``: beam search of a speech-LLM's language model over its prompt and speech
    embeddings (``model=speech_llm``, :meth:`asrkit.models.speech_llm.SpeechLLM.
    recognize_from_encoder`: ``transformers`` ``generate``, batched, KV cache, scores divided
    by length). No shallow fusion: the LLM is the language model.

    Attributes:
        beam: hypotheses kept (1: greedy).
        max_new_tokens: longest output in LLM tokens (None: the model's ``max_new_tokens``).

    Raises:
        ValueError: ``beam < 1``, ``nbest`` outside ``1..beam``, ``max_new_tokens < 1``.
    """

    method: ClassVar[str] = "llm_beam"
    beam: int = 4
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_beam_nbest(self.beam, self.nbest)
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class LmFusionOptions:
    """Shallow fusion: ``score = log P_am + lm_weight · (log P_lm + word_bonus · words) +
    Σ weight_i · log P_i`` (:func:`asrkit.lm.fusion.fused_scorer`).

    Attributes:
        lm: an ARPA n-gram over words or over the tokenizer's pieces, the directory of an
            ``asrkit train-lm`` neural LM trained with the same tokenizer, or ``hf:DIR``, a
            Hugging Face causal LM with that tokenizer (``model=gpt``'s ``EXP/hf``).
        lm_weight: weight of ``lm``'s natural-log probabilities.
        word_bonus: added per word inside ``lm_weight`` (word n-grams only).
        extra_lms: more LMs fused together with ``lm``, as ``(path, weight)`` pairs.
    """

    lm: str | os.PathLike
    lm_weight: float = 0.5
    word_bonus: float = 0.0
    extra_lms: Sequence[tuple[str | os.PathLike, float]] = field(default_factory=tuple)

    def summary(self) -> dict:
        """JSON-ready fields for ``decode_summary.json``."""
        return {"lm": str(self.lm), "lm_weight": self.lm_weight, "word_bonus": self.word_bonus,
                "extra_lms": [[str(p), float(w)] for p, w in self.extra_lms] or None}


_CLASSES: dict[str, type[SearchOptions]] = {
    c.method: c for c in (CtcGreedyOptions, CtcPrefixBeamOptions, AttentionBeamOptions,
                          JointCtcAttentionOptions, WfstOptions, LlmBeamOptions)}
_LM_KEYS = ("lm", "lm_weight", "word_bonus", "extra_lms")


def option_names() -> set[str]:
    """Every option name :func:`decode_options` accepts (any method, LM fields included)."""
    names = set(_LM_KEYS)
    for cls in (*_CLASSES.values(), FlashlightOptions):
        names.update(f.name for f in dataclasses.fields(cls))
    return names


def decode_options(method: str = "ctc_greedy", backend: str = "asrkit", **values
                   ) -> tuple[SearchOptions, LmFusionOptions | None]:
    """Build the options object of ``method`` (on ``backend``) and the LM fusion options.

    Values that are None take the options class's default. A value that some other method
    takes but this one does not (e.g. ``ctc_weight`` for ``ctc_prefix_beam``) is ignored
    with a warning; a name no method takes is an error.

    Args:
        method: one of :data:`METHODS`.
        backend: ``"asrkit"`` or ``"flashlight"`` (``ctc_prefix_beam`` only).
        **values: fields of the method's options class and of :class:`LmFusionOptions`
            (``lm``, ``lm_weight``, ``word_bonus``, ``extra_lms``); for ``wfst``,
            ``lm_weight`` is the graph's LM weight.

    Returns:
        ``(search options, LM fusion options or None)``.

    Raises:
        ValueError: unknown method or backend, a bad value (the class's checks), an LM with
            ``ctc_greedy`` or ``wfst``, ``lexicon`` without the flashlight backend,
            ``extra_lms`` without ``lm`` or with flashlight.
        TypeError: an option name no method takes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose asrkit or flashlight")
    if backend == "flashlight" and method != "ctc_prefix_beam":
        raise ValueError(f"backend flashlight implements ctc_prefix_beam, not {method}")
    unknown = sorted(set(values) - option_names())
    if unknown:
        raise TypeError(f"unknown decoding option(s) {unknown}")
    given = {k: v for k, v in values.items() if v is not None and not (
        k == "extra_lms" and not v)}
    cls = FlashlightOptions if backend == "flashlight" else _CLASSES[method]
    names = {f.name for f in dataclasses.fields(cls)}
    if given.get("lexicon") is not None and backend != "flashlight":
        raise ValueError("lexicon needs backend flashlight (the asrkit searches are "
                         "lexicon-free; use --method wfst for a lexicon-constrained graph)")
    lm = None
    if method == "wfst":
        if "lm" in given or given.get("word_bonus", 0.0) != 0.0 or "extra_lms" in given:
            raise ValueError("method wfst takes its LM from the graph: no lm or word_bonus")
    elif "lm" in given:
        if method == "llm_beam":
            raise ValueError("llm_beam fuses no LM: the speech-LLM's own LLM is its language "
                             "model (rescore its n-best list with asrkit rescore instead)")
        if method == "ctc_greedy":
            raise ValueError("an LM needs a beam method (ctc_prefix_beam, attention_beam, "
                             "joint_ctc_attention), not ctc_greedy")
        if "extra_lms" in given and backend != "asrkit":
            raise ValueError("extra_lms need lm (the first LM) and the asrkit backend")
        lm = LmFusionOptions(**{k: given[k] for k in _LM_KEYS if k in given})
    elif "extra_lms" in given:
        raise ValueError("extra_lms need lm (the first LM) and the asrkit backend")
    lm_used = set(_LM_KEYS) if lm is not None else set()
    ignored = sorted(k for k in given if k not in names and k not in lm_used)
    if ignored:
        logger.warning("%s%s ignores option(s) %s", method,
                       f" ({backend})" if backend != "asrkit" else "", ", ".join(ignored))
    return cls(**{k: v for k, v in given.items() if k in names}), lm


def read_decode_config(spec: str | os.PathLike, conf_dir: str | os.PathLike | None = None
                       ) -> dict:
    """Read a decode config: ``spec`` is a YAML file, or the name of one in ``conf_dir``
    (default: the checkout's ``conf/decode/``), e.g. ``joint_ctc_attention``.

    Returns:
        The mapping (``method``, ``backend`` and option fields); the values are checked when
        the options are built (:func:`decode_options`), after command-line overrides.

    Raises:
        FileNotFoundError: no such file or name (the message lists the names there).
        ValueError: not a mapping, an unknown ``method`` or ``backend``, or an unknown key
            (the file and the key are named).
    """
    path = Path(spec)
    if not path.suffix:
        from asrkit.config import CONF_DIR

        base = Path(conf_dir) if conf_dir else CONF_DIR / "decode"
        path = base / f"{spec}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in base.glob("*.yaml")) if base.is_dir() else []
            raise FileNotFoundError(f"no decode config {spec!r} in {base} (there: "
                                    f"{', '.join(names) or 'none'}); give a .yaml file")
    if not path.is_file():
        raise FileNotFoundError(f"decode config {path} does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise TypeError(f"{path}: a decode config is a mapping of option: value")
    data = dict(data)
    unknown = sorted(set(data) - option_names() - {"method", "backend"})
    if unknown:
        raise ValueError(f"{path}: unknown decode option(s) {unknown}; known: "
                         f"{sorted(option_names())}")
    if data.get("method", "ctc_greedy") not in METHODS:
        raise ValueError(f"{path}: method {data['method']!r} is not one of {METHODS}")
    if data.get("backend", "asrkit") not in BACKENDS:
        raise ValueError(f"{path}: backend {data['backend']!r} is not one of {BACKENDS}")
    return data
