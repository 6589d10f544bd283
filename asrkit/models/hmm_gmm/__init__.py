"""Monophone HMM-GMM acoustic models, Kaldi style: topology, GMMs, graphs, alignment, training.

The pieces, one idea per module, in the order a monophone system is built:

* :mod:`.features`  MFCC -> per-speaker CMN -> deltas and delta-deltas (``apply-cmvn |
  add-deltas``), the 39-dimensional GMM features.
* :mod:`.topology`  HMM topologies, transition states and ids, transition probabilities
  (Kaldi's ``HmmTopology`` and ``TransitionModel``).
* :mod:`.gmm`       diagonal GMMs of all pdfs as tensors: likelihoods, statistics, M-step,
  mix-up (``AmDiagGmm``, ``gmm-acc-stats-ali``, ``gmm-est``).
* :mod:`.model`     transition model + GMMs with save/load (``final.mdl``).
* :mod:`.graph`     per-utterance training graphs with optional silence and pronunciation
  variants (``compile-train-graphs``).
* :mod:`.align`     equal and Viterbi forced alignment (``align-equal-compiled``,
  ``gmm-align-compiled``).
* :mod:`.ali_io`    alignment files: tids, pdfs, phones, CTM (``ali-to-pdf``,
  ``ali-to-phones``).
* :mod:`.mono`      flat-start monophone training (``steps/train_mono.sh``).

Everything is vectorised in torch and runs on the device of the model (CPU by default).
"""

from asrkit.models.hmm_gmm.ali_io import (
    AlignmentFileError,
    read_ctm,
    read_int_vectors,
    write_alignment_dir,
    write_ctm,
    write_failed,
    write_int_vectors,
)
from asrkit.models.hmm_gmm.align import (
    Alignment,
    AlignmentError,
    Segment,
    align_equal,
    align_viterbi,
)
from asrkit.models.hmm_gmm.features import (
    add_deltas,
    delta_filters,
    gmm_features,
    load_gmm_features,
)
from asrkit.models.hmm_gmm.gmm import DiagGMM, GmmStats, GmmUpdateInfo, split_targets
from asrkit.models.hmm_gmm.graph import GraphCompiler, GraphError, UttGraph
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.mono import REALIGN_ITERS, IterationStats, MonoResult, train_mono
from asrkit.models.hmm_gmm.topology import PhoneHmm, PhoneTopology, Topology, TransitionModel

__all__ = [
    "REALIGN_ITERS",
    "AcousticModel",
    "Alignment",
    "AlignmentError",
    "AlignmentFileError",
    "DiagGMM",
    "GmmStats",
    "GmmUpdateInfo",
    "GraphCompiler",
    "GraphError",
    "IterationStats",
    "MonoResult",
    "PhoneHmm",
    "PhoneTopology",
    "Segment",
    "Topology",
    "TransitionModel",
    "UttGraph",
    "add_deltas",
    "align_equal",
    "align_viterbi",
    "delta_filters",
    "gmm_features",
    "load_gmm_features",
    "read_ctm",
    "read_int_vectors",
    "split_targets",
    "train_mono",
    "write_alignment_dir",
    "write_ctm",
    "write_failed",
    "write_int_vectors",
]
