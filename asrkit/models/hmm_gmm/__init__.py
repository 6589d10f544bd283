"""HMM-GMM acoustic models, Kaldi style: topology, GMMs, graphs, alignment, monophone and
triphone training.

The pieces, one idea per module, in the order a system is built:

* :mod:`.features`  MFCC -> per-speaker CMN -> deltas and delta-deltas (``apply-cmvn |
  add-deltas``), the 39-dimensional GMM features.
* :mod:`.tree`      phonetic context dependency and decision-tree state tying
  (``ContextDependency``, ``acc-tree-stats``, ``cluster-phones``, ``build-tree``).
* :mod:`.topology`  HMM topologies, transition states and ids, transition probabilities
  (Kaldi's ``HmmTopology`` and ``TransitionModel``), monophone or over a tree.
* :mod:`.gmm`       diagonal GMMs of all pdfs as tensors: likelihoods, statistics, M-step,
  mix-up (``AmDiagGmm``, ``gmm-acc-stats-ali``, ``gmm-est``).
* :mod:`.model`     transition model + GMMs with save/load (``final.mdl``).
* :mod:`.graph`     per-utterance training graphs with optional silence and pronunciation
  variants, phones expanded in their contexts (``compile-train-graphs``).
* :mod:`.align`     equal and Viterbi forced alignment (``align-equal-compiled``,
  ``gmm-align-compiled``).
* :mod:`.ali_io`    alignment files: tids, pdfs, phones, CTM (``ali-to-pdf``,
  ``ali-to-phones``).
* :mod:`.em`        the one Viterbi-EM loop every stage runs (realign, transform steps,
  accumulate, update, mix up) and :class:`EmOptions`, the options all stages share.
* :mod:`.mono`      flat-start monophone training (``steps/train_mono.sh``).
* :mod:`.tri`       triphone training from alignments (``steps/train_deltas.sh``), and on
  LDA+MLLT features (``steps/train_lda_mllt.sh``).
* :mod:`.lda_mllt`  spliced features, LDA and MLLT (``splice-feats``, ``est-lda``,
  ``est-mllt``).
* :mod:`.fmllr`     per-speaker feature-space MLLR (``gmm-est-fmllr``, ``transform-feats``,
  ``trans.ark``).
* :mod:`.sat`       speaker-adaptive training on fMLLR features and its speaker-independent
  alignment model (``steps/train_sat.sh``, ``final.alimdl``).

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
from asrkit.models.hmm_gmm.em import EmOptions, EmResult, IterationStats, run_em
from asrkit.models.hmm_gmm.features import (
    add_deltas,
    delta_filters,
    feature_options,
    gmm_features,
    load_features,
    load_gmm_features,
    splice,
)
from asrkit.models.hmm_gmm.gmm import DiagGMM, GmmStats, GmmUpdateInfo, split_targets
from asrkit.models.hmm_gmm.graph import GraphCompiler, TranscriptGraphError, UttGraph
from asrkit.models.hmm_gmm.lda_mllt import (
    accumulate_lda_stats,
    accumulate_mllt_stats,
    estimate_lda,
    estimate_mllt,
)
from asrkit.models.hmm_gmm.model import AcousticModel
from asrkit.models.hmm_gmm.mono import REALIGN_ITERS, MonoOptions, MonoResult, train_mono
from asrkit.models.hmm_gmm.sat import (
    SAT_FMLLR_ITERS,
    SatOptions,
    SatResult,
    estimate_si_model,
    train_sat,
)
from asrkit.models.hmm_gmm.topology import PhoneHmm, PhoneTopology, Topology, TransitionModel
from asrkit.models.hmm_gmm.tree import (
    PDF_CLASS,
    ContextDependency,
    TreeBuildInfo,
    TreeStats,
    accumulate_tree_stats,
    build_tree,
    cluster_phones,
    frame_contexts,
    gauss_loglik,
)
from asrkit.models.hmm_gmm.tri import (
    TRI_REALIGN_ITERS,
    LdaMlltOptions,
    TriIterationStats,
    TriOptions,
    TriResult,
    convert_alignments,
    train_lda_mllt,
    train_tri,
)

__all__ = [
    "PDF_CLASS",
    "REALIGN_ITERS",
    "SAT_FMLLR_ITERS",
    "TRI_REALIGN_ITERS",
    "AcousticModel",
    "Alignment",
    "AlignmentError",
    "AlignmentFileError",
    "ContextDependency",
    "DiagGMM",
    "EmOptions",
    "EmResult",
    "GmmStats",
    "GmmUpdateInfo",
    "GraphCompiler",
    "IterationStats",
    "LdaMlltOptions",
    "MonoOptions",
    "MonoResult",
    "PhoneHmm",
    "PhoneTopology",
    "SatOptions",
    "SatResult",
    "Segment",
    "Topology",
    "TranscriptGraphError",
    "TransitionModel",
    "TreeBuildInfo",
    "TreeStats",
    "TriIterationStats",
    "TriOptions",
    "TriResult",
    "UttGraph",
    "accumulate_lda_stats",
    "accumulate_mllt_stats",
    "accumulate_tree_stats",
    "add_deltas",
    "align_equal",
    "align_viterbi",
    "build_tree",
    "cluster_phones",
    "convert_alignments",
    "delta_filters",
    "estimate_lda",
    "estimate_mllt",
    "estimate_si_model",
    "feature_options",
    "frame_contexts",
    "gauss_loglik",
    "gmm_features",
    "load_features",
    "load_gmm_features",
    "read_ctm",
    "read_int_vectors",
    "run_em",
    "splice",
    "split_targets",
    "train_lda_mllt",
    "train_mono",
    "train_sat",
    "train_tri",
    "write_alignment_dir",
    "write_ctm",
    "write_failed",
    "write_int_vectors",
]
