"""Weighted finite-state transducers for HMM-GMM decoding (Kaldi's graph construction).

Built with pynini (OpenFst): tropical-semiring FSTs whose weights are costs ``-ln p``, labels
being the ids of the lang directory's ``phones.txt`` and ``words.txt``.

* :mod:`~asrkit.decode.wfst.graph`: ``L`` (:func:`make_lexicon_fst`), ``G``
  (:func:`arpa_to_fst`), ``LG`` (:func:`make_lg`) and the OpenFst steps of ``mkgraph.sh``
  (:func:`table_compose`, :func:`determinize_star`, :func:`minimize_encoded`,
  :func:`remove_disambig`) on which ``HCLG`` is built.
* :mod:`~asrkit.decode.wfst.hclg`: ``C`` (:func:`make_context_fst`, :func:`compose_context`),
  ``H`` (:func:`make_h_fst`), self-loops (:func:`add_self_loops`) and ``HCLG``
  (:func:`make_hclg`, Kaldi's ``mkgraph.sh``).
* :mod:`~asrkit.decode.wfst.decoder`: Viterbi beam search over ``HCLG`` vectorised in torch
  (:func:`decode_fst`; :func:`decode_fst_batch` for many short utterances at once;
  :class:`DecodingGraph`).
* :mod:`~asrkit.decode.wfst.tlg`: ``TLG`` for CTC models (EESEN): the token FST ``T``
  (:func:`make_ctc_token_fst`), the sentencepiece-piece lexicon (:func:`make_piece_lexicon`),
  ``TLG`` (:func:`make_tlg`), the graph dir (:func:`make_tlg_graph`) and the search over CTC
  log-posteriors (:func:`decode_ctc_wfst`, :class:`CtcDecodingGraph`).
* :mod:`~asrkit.decode.wfst.fstio`: atomic binary FST I/O and symbol tables.
"""

from asrkit.decode.wfst.decoder import (
    DecodeResult,
    DecodingError,
    DecodingGraph,
    FrameScores,
    decode_fst,
    decode_fst_batch,
)
from asrkit.decode.wfst.fstio import read_fst, read_symbols, symbol_table, write_fst
from asrkit.decode.wfst.graph import (
    DELTA,
    GraphError,
    add_word_paths,
    arpa_to_fst,
    determinize_star,
    disambig_ids,
    make_lexicon_fst,
    make_lg,
    minimize_encoded,
    remove_disambig,
    table_compose,
)
from asrkit.decode.wfst.hclg import (
    ContextDependencyLike,
    HclgInfo,
    MonophoneContext,
    add_self_loops,
    compose_context,
    make_context_fst,
    make_h_fst,
    make_hclg,
    reduce_ilabels,
)
from asrkit.decode.wfst.tlg import (
    TOPOLOGIES,
    CtcDecodingGraph,
    CtcWfstResult,
    PieceLexicon,
    TlgInfo,
    decode_ctc_wfst,
    decode_ctc_wfst_batch,
    make_ctc_token_fst,
    make_piece_lexicon,
    make_piece_lexicon_fst,
    make_tlg,
    make_tlg_graph,
)

__all__ = [
    "DELTA",
    "TOPOLOGIES",
    "ContextDependencyLike",
    "CtcDecodingGraph",
    "CtcWfstResult",
    "DecodeResult",
    "DecodingError",
    "DecodingGraph",
    "FrameScores",
    "GraphError",
    "HclgInfo",
    "MonophoneContext",
    "PieceLexicon",
    "TlgInfo",
    "add_self_loops",
    "add_word_paths",
    "arpa_to_fst",
    "compose_context",
    "decode_ctc_wfst",
    "decode_ctc_wfst_batch",
    "decode_fst",
    "decode_fst_batch",
    "determinize_star",
    "disambig_ids",
    "make_context_fst",
    "make_ctc_token_fst",
    "make_h_fst",
    "make_hclg",
    "make_lexicon_fst",
    "make_lg",
    "make_piece_lexicon",
    "make_piece_lexicon_fst",
    "make_tlg",
    "make_tlg_graph",
    "minimize_encoded",
    "read_fst",
    "read_symbols",
    "reduce_ilabels",
    "remove_disambig",
    "symbol_table",
    "table_compose",
    "write_fst",
]
