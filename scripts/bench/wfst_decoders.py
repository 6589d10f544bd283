#!/usr/bin/env python3
"""Compare WFST decoders for HMM-GMM on one data dir: asrkit's search, Kaldi's FasterDecoder
(the kaldi backend) and pocketsphinx as the outside reference, in one run on one CPU core.

Usage:
    python scripts/bench/wfst_decoders.py --model EXP/tri2 --graph EXP/tri2/graph_kn3 \\
        --data-dir dump/mfcc/test [--acwt 0.083] [--beam 13] [--max-active 7000] \\
        [--lm data/lm/kn3.arpa] [--dict AN4/etc/an4.dic] [--no-pocketsphinx] \\
        [--batch-size 16] [--out bench_results/wfst_decoders.json]

``--data-dir`` is a feature data dir (``feats.scp`` of the model's features, ``text``,
``wav.scp``; ``utt2dur`` for the audio seconds). All decoders run in this process with
``torch.set_num_threads(1)`` (set ``OMP_NUM_THREADS=1`` too):

* ``asrkit_1``: :func:`asrkit.decode.wfst.decode_fst` over ``HCLG.fst``, one utterance at
  a time (:class:`~asrkit.decode.wfst.DecodingGraph` converted once, not timed);
* ``asrkit``: :func:`asrkit.decode.wfst.decode_fst_batch`, the utterances sorted by length
  in batches of ``--batch-size`` (16), as ``asrkit decode`` runs it by default;
* ``kaldi``: :class:`asrkit.decode.kaldi.KaldiFasterDecoder` (Kaldi's C++ ``FasterDecoder``
  from ``kaldi-decoder``; the graph read once, not timed), the same model, graph,
  ``--acwt``, ``--beam``, ``--max-active``;
* ``pocketsphinx``: its bundled ``en-us`` continuous acoustic model, ``--dict`` as
  dictionary (default: ``$AN4_DIR/etc/an4.dic``)
  and ``--lm`` as language model (default: the ARPA file the graph was built from, from
  ``graph.json``), decoding the 16-kHz audio of ``wav.scp`` (``process_raw``, whole
  utterances).

Times are CPU seconds of this process (so other load on the machine does not count; wall
seconds are reported too), per core: for asrkit and kaldi the GMM log-likelihoods (computed once and shared, the
features read from ``feats.scp`` beforehand) plus the search, as ``asrkit decode`` reports
its RTF; the search alone in its own column. Pocketsphinx's time is its whole decoding of
the samples (its MFCC front end and GMM scoring included; reading the wav files excluded).
WER with :func:`asrkit.score.score_texts` against the data dir's ``text``. Prints a
markdown table and writes JSON (atomically) to ``--out``; also how many 1-best word sequences
and alignments of kaldi and of the one-at-a-time search equal the batched search's. Needs the kaldi and bench extras
(``pip install -e '.[kaldi,bench]'``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asrkit.data.datadir import read_kaldi_map
from asrkit.decode.gmm import model_file
from asrkit.decode.kaldi import KaldiFasterDecoder
from asrkit.decode.wfst import DecodingGraph, decode_fst, decode_fst_batch
from asrkit.decode.wfst.fstio import read_fst
from asrkit.fileio import atomic_write
from asrkit.models.hmm_gmm import AcousticModel
from asrkit.score import score_texts
from asrkit.text.lexicon import read_symbol_table

logger = logging.getLogger("wfst_decoders")


def _graph_lm(graph_dir: Path) -> Path | None:
    """The ARPA file named in ``graph.json`` (relative paths tried against the working dir
    and the graph dir's ancestors)."""
    meta = graph_dir / "graph.json"
    if not meta.is_file():
        return None
    lm = Path(json.loads(meta.read_text())["lm"])
    for base in (Path.cwd(), *graph_dir.resolve().parents):
        cand = lm if lm.is_absolute() else base / lm
        if cand.is_file():
            return cand
    return None


def _an4_dict() -> Path | None:
    """``$AN4_DIR/etc/an4.dic`` if it exists."""
    an4 = os.environ.get("AN4_DIR")
    cand = Path(an4) / "etc" / "an4.dic" if an4 else None
    return cand if cand is not None and cand.is_file() else None


class _Clock:
    """CPU seconds of this process (the RTF per core, robust to other load on the machine)
    and wall seconds, between ``with`` entry and exit."""

    def __enter__(self):
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self._cpu
        self.wall = time.perf_counter() - self._wall


def _wfst(name: str, search, loglikes: dict, ll: _Clock, words: dict, audio: float,
          batch_size: int = 1):
    """Run ``search`` (a list of (T, S) scores -> a list of results) over ``loglikes`` in
    batches of ``batch_size`` utterances sorted by length."""
    hyps, tids = {}, {}
    order = sorted(loglikes, key=lambda u: loglikes[u].shape[0])
    with _Clock() as c:
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            for u, r in zip(batch, search([loglikes[u] for u in batch])):
                hyps[u] = " ".join(words[w] for w in r.words)
                tids[u] = r.tids
    logger.info("%s: search %.2f s CPU, %.2f s wall", name, c.cpu, c.wall)
    return hyps, tids, {"search_cpu_seconds": c.cpu, "decode_cpu_seconds": c.cpu + ll.cpu,
                        "decode_wall_seconds": c.wall + ll.wall,
                        "rtf_search": c.cpu / audio, "rtf": (c.cpu + ll.cpu) / audio}


def _pocketsphinx(wavs: dict[str, str], lm: Path, dic: Path, hmm: Path | None
                  ) -> tuple[dict[str, str], float, dict]:
    import pocketsphinx

    hmm = hmm or Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"
    config = pocketsphinx.Config(hmm=str(hmm), lm=str(lm), dict=str(dic), samprate=16000,
                                 logfn=os.devnull)
    dec = pocketsphinx.Decoder(config)
    audio = {}
    for u, path in wavs.items():
        x, sr = sf.read(path, dtype="int16")
        if sr != 16000 or x.ndim != 1:
            raise ValueError(f"{path}: expected 16-kHz mono audio, got {sr} Hz, shape {x.shape}")
        audio[u] = np.ascontiguousarray(x).tobytes()
    hyps = {}
    with _Clock() as c:
        for u, raw in audio.items():
            dec.start_utt()
            dec.process_raw(raw, full_utt=True)
            dec.end_utt()
            hyp = dec.hyp()
            words = hyp.hypstr.split() if hyp is not None else []
            hyps[u] = " ".join(w for w in words if not w.startswith(("<", "[")))
    info = {"hmm": str(hmm), "lm": str(lm), "dict": str(dic),
            "pocketsphinx_version": getattr(pocketsphinx, "__version__", None)}
    return hyps, c, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="final.mdl or its stage dir")
    ap.add_argument("--graph", type=Path, required=True, help="graph dir with HCLG.fst")
    ap.add_argument("--data-dir", type=Path, required=True,
                    help="feature data dir (feats.scp, text, wav.scp)")
    ap.add_argument("--acwt", type=float, default=0.1)
    ap.add_argument("--beam", type=float, default=13.0)
    ap.add_argument("--max-active", type=int, default=7000)
    ap.add_argument("--batch-size", type=int, default=16,
                    help="utterances per batch of the batched asrkit search")
    ap.add_argument("--lm", type=Path, help="pocketsphinx's ARPA LM (default: the graph's)")
    ap.add_argument("--dict", type=Path, help="pocketsphinx's dictionary (default: "
                    "$AN4_DIR/etc/an4.dic)")
    ap.add_argument("--ps-hmm", type=Path, help="pocketsphinx acoustic model dir (default: "
                    "its bundled en-us)")
    ap.add_argument("--no-pocketsphinx", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench_results/wfst_decoders.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    from asrkit.models.hmm_gmm.features import load_features

    mpath = model_file(args.model)
    gpath = args.graph / "HCLG.fst"
    am = AcousticModel.load(mpath, torch.device("cpu"))
    words = {i: w for w, i in read_symbol_table(args.graph / "words.txt").items()}
    refs = read_kaldi_map(args.data_dir / "text")
    utts = [u for u in read_kaldi_map(args.data_dir / "feats.scp") if u in refs]
    feats = load_features(args.data_dir, am.meta.get("features") or {}, utt_ids=utts)
    utts = [u for u in utts if u in feats]
    durs = (read_kaldi_map(args.data_dir / "utt2dur")
            if (args.data_dir / "utt2dur").is_file() else {})
    audio = (sum(float(durs[u]) for u in utts) if durs
             else sum(feats[u].shape[0] for u in utts) * 0.01)
    with _Clock() as ll_clock:
        loglikes = {u: am.loglik(feats[u]) for u in utts}
    opts = {"acoustic_scale": args.acwt, "beam": args.beam, "max_active": args.max_active}
    refs = {u: refs[u] for u in utts}
    rows, results = [], {}

    graph = DecodingGraph.from_fst(read_fst(gpath))
    tid2pdf = am.tmodel.tid2pdf
    ours, ours_tids, t = _wfst(
        "asrkit", lambda lls: decode_fst_batch(graph, lls, tid2pdf, **opts), loglikes,
        ll_clock, words, audio, args.batch_size)
    t["batch_size"] = args.batch_size
    results["asrkit"] = t
    hyps = {"asrkit": ours}
    kaldi_dec = KaldiFasterDecoder(gpath, tid2pdf, **opts)
    for name, search in (("asrkit_1", lambda lls: [decode_fst(graph, lls[0], tid2pdf, **opts)]),
                         ("kaldi", lambda lls: [kaldi_dec.decode(lls[0])])):
        hyps[name], other_tids, results[name] = _wfst(name, search, loglikes, ll_clock, words,
                                                      audio)
        results[name]["same_words_as_asrkit"] = sum(hyps[name][u] == ours[u] for u in utts)
        results[name]["same_alignment_as_asrkit"] = sum(
            torch.equal(other_tids[u], ours_tids[u]) for u in utts)
    if not args.no_pocketsphinx:
        lm = args.lm or _graph_lm(args.graph)
        dic = args.dict or _an4_dict()
        if lm is None or dic is None:
            ap.error("pocketsphinx needs --lm and --dict (or --no-pocketsphinx)")
        wavs = read_kaldi_map(args.data_dir / "wav.scp")
        ps, c, info = _pocketsphinx({u: wavs[u] for u in utts}, lm, dic, args.ps_hmm)
        results["pocketsphinx"] = {"decode_cpu_seconds": c.cpu, "decode_wall_seconds": c.wall,
                                   "rtf": c.cpu / audio, **info}
        hyps["pocketsphinx"] = ps
    for name, h in hyps.items():
        rep = score_texts(refs, h)
        r = results[name]
        r["wer"] = round(rep.wer.rate, 2)
        r["wer_counts"] = {k: getattr(rep.wer, k)
                           for k in ("ref_units", "sub", "dele", "ins", "sent_err")}
        rows.append((name, r))
    print(f"\n{len(utts)} utterances, {audio:.1f} s of audio; model {mpath}, graph {gpath}, "
          f"acwt {args.acwt}, beam {args.beam}, max-active {args.max_active}; 1 thread; "
          f"GMM log-likelihoods {ll_clock.cpu:.2f} s CPU (RTF {ll_clock.cpu / audio:.4f}, in "
          "asrkit's and kaldi's times); RTF per core = CPU seconds / audio seconds\n")
    print("| decoder | WER % | RTF per core | search RTF | decode CPU s | decode wall s "
          "| audio s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        srtf = f"{r['rtf_search']:.4f}" if "rtf_search" in r else "-"
        print(f"| {name} | {r['wer']:.2f} | {r['rtf']:.4f} | {srtf} | "
              f"{r['decode_cpu_seconds']:.2f} | {r['decode_wall_seconds']:.2f} | {audio:.1f} |")
    for name in ("asrkit_1", "kaldi"):
        print(f"{name} vs asrkit (batch {args.batch_size}): same words "
              f"{results[name]['same_words_as_asrkit']}/{len(utts)}, same alignment "
              f"{results[name]['same_alignment_as_asrkit']}/{len(utts)}")
    out = {"model": str(mpath), "graph": str(gpath), "data_dir": str(args.data_dir),
           "acwt": args.acwt, "beam": args.beam, "max_active": args.max_active,
           "num_utts": len(utts), "audio_seconds": audio,
           "loglik_cpu_seconds": ll_clock.cpu, "loglik_wall_seconds": ll_clock.wall,
           "threads": 1, "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "torch": torch.__version__,
           "decoders": results}
    with atomic_write(args.out) as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
