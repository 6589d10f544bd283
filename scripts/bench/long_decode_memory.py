#!/usr/bin/env python3
"""Peak memory of decoding one long utterance (1, 10, 60 minutes) through each decode path.

Usage:
    python scripts/bench/long_decode_memory.py [--minutes 1 10 60]
        [--paths ctc_greedy ctc_prefix_beam wfst gmm] [--exp EXP [--graph TLG_DIR]]
        [--data-dir FEATS_DIR] [--gmm-exp EXP/tri1 --gmm-graph EXP/tri1/graph]
        [--chunk-seconds 30] [--chunk-overlap 4] [--unchunked]
        [--out bench_results/long_decode_memory.json]

Each (path, length) runs in a fresh process. After the setup (model, graph and the
utterance's features in memory, as ``asrkit decode`` holds them) the process's peak RSS is
reset (``/proc/self/clear_refs``), the utterance is decoded, and the peak RSS of the decoding
is read (``VmHWM``); ``setup MB`` is the RSS before it.

* neural paths (``ctc_greedy``, ``ctc_prefix_beam`` beam 10, ``wfst``): the CTC posteriors
  from :func:`asrkit.decode.chunked.chunked_ctc_log_probs` (windows of ``--chunk-seconds``
  + 2 x ``--chunk-overlap``; with ``--unchunked`` one encoder pass over the whole utterance,
  the path before chunking), then the search, as :func:`asrkit.decode.run.decode_data_dir`
  runs them for a long utterance. The model is ``--exp``'s; without it a randomly
  initialised Transformer-CTC (D = 144, 4 layers, 80-dim input, V = ``--vocab``) whose CTC
  layer is scaled so that its posteriors are peaked like a trained model's. ``wfst`` searches
  ``--graph`` (a ``TLG`` dir of ``--exp``'s tokenizer) or, without one, the bare CTC token FST
  ``T`` (words = tokens), beam 10, max-active 1000.
* ``gmm``: GMM log-likelihoods and the Viterbi search over ``HCLG`` as
  :func:`asrkit.decode.gmm.decode_gmm_data_dir` does them for a long utterance (blocks of
  frames, partial traceback). With ``--gmm-exp``/``--gmm-graph``, that model and graph;
  without, a synthetic system built here: a lexicon of 100 random words over 40 phones, a
  bigram from random sentences, a monophone ``HCLG`` (~120 pdfs), one 39-dim Gaussian per
  pdf, and features drawn from those Gaussians along a random walk through ``HCLG`` (so the
  search sees speech-like, decodable input).

Features: ``--data-dir`` (a feature data dir of the model's feature type; its utterances are
concatenated, repeated as needed, to the length asked; HMM-GMM features through
:func:`asrkit.models.hmm_gmm.features.load_features` with the model's options); without it, random
features of the model's dimension (normal, or drawn along the random walk for the
synthetic GMM system). Prints a table and writes ``--out`` (JSON, atomically).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from asrkit.fileio import atomic_write

PATHS = ("ctc_greedy", "ctc_prefix_beam", "wfst", "gmm")


def _status(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _concat_feats(feats: list[torch.Tensor], frames: int) -> torch.Tensor:
    out, have, i = [], 0, 0
    while have < frames:
        x = feats[i % len(feats)][: frames - have]
        out.append(x)
        have += x.shape[0]
        i += 1
    return torch.cat(out)


# --- neural ------------------------------------------------------------------------------------

def _neural_setup(args: dict, frames: int):
    from asrkit.models.transformer import TransformerCTC

    if args["exp"]:
        from asrkit.exp.checkpoint import load_model

        model, cfg = load_model(args["exp"])
        vocab = cfg["model_dims"]["vocab_size"]
    else:
        torch.manual_seed(0)
        vocab = args["vocab"]
        model = TransformerCTC(80, vocab, d_model=144, nhead=4, num_layers=4,
                               dim_feedforward=576, subsampling_channels=32).eval()
        cfg = None
        with torch.no_grad():
            model.ctc_out.weight.mul_(20.0)
    if args["data_dir"]:
        from asrkit.data.dataset import FeatureDataset

        ds = FeatureDataset(args["data_dir"], None, max_frames=10**9)
        feats = _concat_feats([ds[i][1] for i in range(len(ds))], frames)
    else:
        dim = cfg["model_dims"]["input_dim"] if cfg else 80
        feats = torch.randn(frames, dim, generator=torch.Generator().manual_seed(1))
    graph = None
    if args["path"] == "wfst":
        if args["graph"]:
            from asrkit.decode.wfst import CtcDecodingGraph
            from asrkit.text.tokenizer import Tokenizer

            graph = CtcDecodingGraph.load(args["graph"],
                                          tokenizer=Tokenizer(cfg["data"]["tokenizer"]))
        else:
            from asrkit.decode.wfst import DecodingGraph, make_ctc_token_fst

            graph = DecodingGraph.from_fst(make_ctc_token_fst(vocab))
    return model, feats, graph


def _neural_run(args: dict, model, feats: torch.Tensor, graph) -> dict:
    from asrkit.decode.chunked import chunked_ctc_log_probs
    from asrkit.decode.ctc import ctc_greedy, ctc_prefix_beam_search
    from asrkit.decode.wfst import decode_ctc_wfst

    if args["unchunked"]:
        with torch.inference_mode():
            lp, _ = model.ctc_log_probs(feats[None], torch.tensor([feats.shape[0]]))
        lp = lp[0]
    else:
        lp = chunked_ctc_log_probs(model, feats, chunk_frames=round(args["chunk_seconds"] * 100),
                                   context_frames=round(args["chunk_overlap"] * 100))
    path = args["path"]
    if path == "ctc_greedy":
        n = len(ctc_greedy(lp[None], torch.tensor([lp.shape[0]]))[0])
    elif path == "ctc_prefix_beam":
        n = len(ctc_prefix_beam_search(lp, 10, token_topk=10)[0][0])
    else:
        n = len(decode_ctc_wfst(lp, graph, acoustic_scale=2.0, beam=10.0,
                                max_active=1000).words)
    return {"encoder_frames": int(lp.shape[0]), "vocab": int(lp.shape[1]), "output_len": n}


# --- HMM-GMM -----------------------------------------------------------------------------------

def _synthetic_gmm(frames: int, tmp: Path):
    """A monophone system on random words, and features along a random walk of its HCLG."""
    from asrkit.decode.wfst import DecodingGraph, MonophoneContext, arpa_to_fst, make_hclg
    from asrkit.lm.ngram import estimate_ngram
    from asrkit.models.hmm_gmm import AcousticModel, TransitionModel
    from asrkit.models.hmm_gmm.gmm import DiagGMM
    from asrkit.text.lexicon import Lexicon, make_lang

    rng = random.Random(0)
    phones = [f"P{i}" for i in range(40)]
    words = {}
    while len(words) < 100:
        pron = rng.choices(phones, k=rng.randint(2, 6))
        words[f"W{len(words)}"] = pron
    lang = make_lang(Lexicon(list(words.items())))
    sents = [" ".join(rng.choices(list(words), k=rng.randint(3, 12))) for _ in range(1000)]
    G = arpa_to_fst(estimate_ngram(sents, order=2), lang.words, oov="skip")
    tm = TransitionModel.from_phone_set(lang.phone_set)
    hclg, _ = make_hclg(lang, G, tm, MonophoneContext(tm))
    # a random walk: one tid per emitting arc, restarting at dead ends
    adj: dict[int, list[tuple[int, int]]] = {}
    for s in hclg.states():
        adj[s] = [(a.ilabel, a.nextstate) for a in hclg.arcs(s)]
    tids: list[int] = []
    s = hclg.start()
    while len(tids) < frames:
        if not adj[s]:
            s = hclg.start()
            continue
        ilabel, s = rng.choice(adj[s])
        if ilabel:
            tids.append(ilabel)
    pdfs = tm.tid2pdf[torch.tensor(tids)]
    dim, num_pdfs = 39, tm.num_pdfs
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(num_pdfs, 1, dim, generator=gen) * 1.5
    gmm = DiagGMM(torch.ones(num_pdfs, 1), means, torch.ones(num_pdfs, 1, dim))
    feats = means[pdfs, 0] + torch.randn(frames, dim, generator=gen)
    return AcousticModel(tm, gmm), DecodingGraph.from_fst(hclg), feats


def _gmm_setup(args: dict, frames: int, tmp: Path):
    if not args["gmm_exp"]:
        return _synthetic_gmm(frames, tmp)
    from asrkit.decode.gmm import model_file
    from asrkit.decode.wfst import DecodingGraph
    from asrkit.decode.wfst.fstio import read_fst
    from asrkit.models.hmm_gmm import AcousticModel

    am = AcousticModel.load(model_file(args["gmm_exp"]))
    graph = DecodingGraph.from_fst(read_fst(Path(args["gmm_graph"]) / "HCLG.fst"))
    if args["data_dir"]:
        from asrkit.models.hmm_gmm.features import load_features

        feats = _concat_feats(list(load_features(args["data_dir"],
                                                 am.meta.get("features") or {}).values()),
                              frames)
    else:
        feats = torch.randn(frames, am.feat_dim, generator=torch.Generator().manual_seed(1))
    return am, graph, feats


def _gmm_run(am, graph, feats: torch.Tensor) -> dict:
    from asrkit.decode import gmm
    from asrkit.decode.wfst import FrameScores, decode_fst

    n = feats.shape[0]
    loglikes = am.loglik(feats) if n <= gmm.WHOLE_LOGLIK_FRAMES else FrameScores(
        n, am.num_pdfs, lambda t0, t1: am.loglik(feats[t0:t1]), gmm.LOGLIK_BLOCK_FRAMES)
    r = decode_fst(graph, loglikes, am.tmodel.tid2pdf, acoustic_scale=0.1, beam=13.0,
                   max_active=7000)
    return {"num_pdfs": am.num_pdfs, "graph_states": graph.num_states,
            "output_len": len(r.words), "max_active_seen": int(r.num_active.max())}


# --- driver ------------------------------------------------------------------------------------

def _measure(args: dict) -> dict:
    torch.set_num_threads(args["threads"])
    frames = round(args["minutes"] * 6000)
    with tempfile.TemporaryDirectory() as tmp:
        if args["path"] == "gmm":
            am, graph, feats = _gmm_setup(args, frames, Path(tmp))
        else:
            model, feats, graph = _neural_setup(args, frames)
        setup = _status("VmRSS")
        reset = _reset_peak()
        t0 = time.perf_counter()
        info = (_gmm_run(am, graph, feats) if args["path"] == "gmm"
                else _neural_run(args, model, feats, graph))
        wall = time.perf_counter() - t0
    return {"path": args["path"], "minutes": args["minutes"], "frames": frames,
            "setup_rss_mb": round(setup, 1), "peak_rss_mb": round(_status("VmHWM"), 1),
            "peak_is_decoding_only": reset, "wall_s": round(wall, 2), **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--exp", type=Path, help="neural experiment (default: random Transformer)")
    ap.add_argument("--graph", type=Path, help="TLG graph dir for wfst (with --exp)")
    ap.add_argument("--data-dir", type=Path, help="feature data dir (default: random features)")
    ap.add_argument("--gmm-exp", type=Path, help="HMM-GMM stage dir (default: synthetic)")
    ap.add_argument("--gmm-graph", type=Path, help="its graph dir (with --gmm-exp)")
    ap.add_argument("--vocab", type=int, default=128, help="V of the random model")
    ap.add_argument("--chunk-seconds", type=float, default=30.0)
    ap.add_argument("--chunk-overlap", type=float, default=4.0)
    ap.add_argument("--unchunked", action="store_true",
                    help="encode the whole utterance at once (the path before chunking)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench_results/long_decode_memory.json"))
    args = ap.parse_args()
    if bool(args.gmm_exp) != bool(args.gmm_graph):
        ap.error("--gmm-exp and --gmm-graph go together")
    if args.graph and not args.exp:
        ap.error("--graph needs --exp (its tokenizer)")
    common = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("minutes", "paths", "out")}
    ctx = mp.get_context("spawn")
    rows = []
    print(f"{'path':>16} {'min':>5} {'frames':>8} {'setup MB':>9} {'peak MB':>8} {'wall s':>7}")
    for minutes in args.minutes:
        for path in args.paths:
            with ctx.Pool(1) as pool:
                row = pool.apply(_measure, ({**common, "path": path, "minutes": minutes},))
            rows.append(row)
            print(f"{path:>16} {minutes:>5g} {row['frames']:>8} {row['setup_rss_mb']:>9} "
                  f"{row['peak_rss_mb']:>8} {row['wall_s']:>7}", flush=True)
    result = {"benchmark": "long_decode_memory", "unchunked": args.unchunked,
              "chunk_seconds": args.chunk_seconds, "chunk_overlap": args.chunk_overlap,
              "exp": str(args.exp) if args.exp else "random Transformer-CTC",
              "gmm": str(args.gmm_exp) if args.gmm_exp else "synthetic monophone system",
              "features": str(args.data_dir) if args.data_dir else "random",
              "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=1)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
