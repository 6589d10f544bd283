#!/usr/bin/env python3
"""Size, time and peak memory of each stage of a triphone (or monophone) ``HCLG`` build.

Usage:
    python scripts/bench/hclg_memory.py LANG ARPA MODEL
        [--variant default|no-remap|old ...] [--random-tree DEPTH]
        [--max-memory-gb 12] [--timeout 3600] [--out bench_results/hclg_memory.json]

``LANG`` is a lang dir (``asrkit lang``), ``ARPA`` an n-gram LM over its words (words the
lexicon lacks are left out of ``G``, as ``asrkit mkgraph`` does), ``MODEL`` a ``final.mdl`` or
its stage dir (the tree and transition model are used, not the GMMs).

Each variant is built by :func:`asrkit.decode.wfst.make_hclg` in a fresh child process whose
address space is capped at ``--max-memory-gb`` (``RLIMIT_AS``), so a build that blows up fails
there instead of taking the machine's memory; the child's own peak RSS comes from
``wait4``. Variants:

* ``default``: the current pipeline: ``CLG``'s context windows relabelled with one ilabel
  per distinct HMM and determinized (``remap_ilabels=True``), quantization delta
  :data:`asrkit.decode.wfst.DELTA` (``2 ** -13``).
* ``no-remap``: ``Ha`` over every context window composed with ``CLG`` as composed
  (``remap_ilabels=False``), delta ``DELTA``.
* ``old``: the pipeline before the fix: no remapping and delta ``1e-6``.

Per stage (``G``, ``L``, ``LG``, ``CLG``, ``CLGr``, ``Ha``, ``HCLGa``, ``HCLG``): states, arcs,
wall seconds and the process's peak RSS when the stage ended (``ru_maxrss``, cumulative);
plus the lexicon (words, pronunciations) and LM (n-gram counts) sizes and the numbers of
ilabels (context windows and the labels ``Ha`` was built over). A failed build (memory cap,
timeout) is reported with its exit status, peak RSS and last log lines.

``--random-tree DEPTH`` replaces the model's tree by a random one over the same phones and
topology (seeded): the first HMM state of each non-silence phone asks ``DEPTH`` random
questions about the left phone, the last ``DEPTH`` about the right one, the middle ones
``DEPTH // 2`` about each, so each state has up to ``2 ** DEPTH`` pdfs (depth 3 gives ~800
pdfs for 33 phones, a Kaldi-sized tree): a stress test of graph building with far more
distinct HMMs than a small corpus's tree.

Prints a table and writes ``--out`` (JSON, atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"default": (True, None), "no-remap": (False, None), "old": (False, 1e-6)}


def random_tree_model(tm, depth: int, seed: int = 0):
    """A :class:`TransitionModel` over ``tm``'s phones and topology whose tree asks random
    questions about the context (see the module docstring)."""
    import torch

    from asrkit.models.hmm_gmm.topology import TransitionModel
    from asrkit.models.hmm_gmm.tree import PDF_CLASS, ContextDependency

    ctx = tm.ctx
    bases = list(ctx.base_phones)
    width = len(bases) + 1
    rng = random.Random(seed)
    key: list[int] = []
    sets: list[list[bool]] = []
    yes: list[int] = []
    no: list[int] = []
    pdf: list[int] = []

    def node(k: int, s: list[bool] | None = None, p: int = -1) -> int:
        key.append(k)
        sets.append(s or [False] * width)
        yes.append(-1)
        no.append(-1)
        pdf.append(p)
        return len(key) - 1

    def leaf() -> int:
        return node(-2, p=sum(1 for p in pdf if p >= 0))

    def context_tree(positions: list[int]) -> int:
        if not positions:
            return leaf()
        i = node(positions[0], [False] + [rng.random() < 0.5 for _ in bases])
        yes[i] = context_tree(positions[1:])
        no[i] = context_tree(positions[1:])
        return i

    roots = [-1]
    for b in bases:
        n = tm.topology.for_phone(b in tm.silence_bases).num_states
        subs = []
        for c in range(n):
            if b in tm.silence_bases:
                subs.append(leaf())
            elif c == 0:
                subs.append(context_tree([0] * depth))
            elif c == n - 1:
                subs.append(context_tree([2] * depth))
            else:
                subs.append(context_tree([0] * (depth // 2) + [2] * (depth // 2)))

        # pdf-class questions {0}, {0, 1}, ...: state c goes to subs[c]
        top = subs[-1]
        for c in range(n - 2, -1, -1):
            i = node(PDF_CLASS, [k <= c for k in range(width)])
            yes[i], no[i] = subs[c], top
            top = i
        roots.append(top)
    num_classes = [tm.topology.for_phone(b in tm.silence_bases).num_states for b in bases]
    cd = ContextDependency(3, 1, bases, ctx.phone_to_base, num_classes, roots, key,
                           torch.tensor(sets), yes, no, pdf)
    return TransitionModel(tm.phones, tm.phone_base, tm.base_phones, tm.silence_bases,
                           tm.topology, None, cd)


def _child(args: argparse.Namespace) -> None:
    """Build one variant and write its result as JSON to ``args.child_out``."""
    import logging

    from asrkit.decode.gmm import model_file
    from asrkit.decode.wfst import DELTA, arpa_to_fst, make_hclg
    from asrkit.lm.ngram import read_arpa
    from asrkit.models.hmm_gmm.model import AcousticModel
    from asrkit.text.lexicon import read_lang

    limit = int(args.max_memory_gb * 1024 ** 3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    remap, delta = VARIANTS[args.child_variant]
    delta = DELTA if delta is None else delta
    lang = read_lang(args.lang)
    tm = AcousticModel.load(model_file(args.model)).tmodel
    if args.random_tree:
        tm = random_tree_model(tm, args.random_tree)
    t0 = time.perf_counter()
    lm = read_arpa(args.arpa)
    G = arpa_to_fst(lm, lang.words, oov="skip")
    g_seconds = time.perf_counter() - t0
    g_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    _hclg, info = make_hclg(lang, G, tm, remap_ilabels=remap, delta=delta)
    seconds = {"G": g_seconds, **info.seconds}
    peak = {"G": g_peak, **info.peak_rss_mb}
    stages = [{"stage": k, "states": s, "arcs": a, "seconds": round(seconds.get(k, 0.0), 2),
               "peak_rss_mb": round(peak.get(k, 0.0), 1)} for k, (s, a) in info.sizes.items()]
    result = {
        "variant": args.child_variant, "remap_ilabels": remap, "delta": delta,
        "lexicon_words": len(lang.lexicon), "lexicon_prons": lang.lexicon.num_prons,
        "lm_order": lm.order, "lm_counts": list(lm.counts),
        "num_pdfs": int(tm.num_pdfs), "context_width": info.context_width,
        "context_windows": len(info.ilabel_info) - 1, "h_ilabels": len(info.h_ilabel_info) - 1,
        "stages": stages, "total_seconds": round(sum(seconds.values()), 1),
    }
    Path(args.child_out).write_text(json.dumps(result))


def _run_variant(args: argparse.Namespace, variant: str) -> dict:
    """Run one variant in a child process under the memory cap; its result or failure."""
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        cmd = [sys.executable, __file__, args.lang, args.arpa, args.model,
               "--child-variant", variant, "--child-out", str(out),
               "--max-memory-gb", str(args.max_memory_gb)]
        if args.random_tree:
            cmd += ["--random-tree", str(args.random_tree)]
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
            status, usage = None, None
            while status is None:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, usage = st, ru
                elif time.perf_counter() - start > args.timeout:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                else:
                    time.sleep(0.5)
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4
        peak = usage.ru_maxrss / 1024.0
        if out.exists():
            result = json.loads(out.read_text())
        else:
            tail = log.read_text(errors="replace").splitlines()[-8:]
            result = {"variant": variant, "failed": True, "exit_status": code,
                      "log_tail": tail}
        result["peak_rss_mb"] = round(peak, 1)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        return result


def _print(result: dict) -> None:
    print(f"\n== {result['variant']}: peak RSS {result['peak_rss_mb'] / 1024:.2f} GiB, "
          f"{result['wall_seconds']:.0f} s wall")
    if result.get("failed"):
        print(f"FAILED (exit status {result['exit_status']}); last log lines:")
        print("\n".join("  " + line for line in result["log_tail"]))
        return
    print(f"lexicon {result['lexicon_words']} words / {result['lexicon_prons']} prons; "
          f"LM order {result['lm_order']} counts {result['lm_counts']}; "
          f"{result['num_pdfs']} pdfs; {result['context_windows']} ilabels in CLG, "
          f"{result['h_ilabels']} in Ha")
    print(f"{'stage':8s} {'states':>11s} {'arcs':>11s} {'seconds':>8s} {'peak MiB':>9s}")
    for s in result["stages"]:
        print(f"{s['stage']:8s} {s['states']:11d} {s['arcs']:11d} {s['seconds']:8.1f} "
              f"{s['peak_rss_mb']:9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lang")
    ap.add_argument("arpa")
    ap.add_argument("model")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                    help="pipeline variant(s) to build (repeatable; default: default)")
    ap.add_argument("--random-tree", type=int, default=0, metavar="DEPTH",
                    help="replace the model's tree by a random one of this depth")
    ap.add_argument("--max-memory-gb", type=float, default=12.0,
                    help="address-space cap of each build (RLIMIT_AS)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per build")
    ap.add_argument("--out", default="bench_results/hclg_memory.json")
    ap.add_argument("--child-variant", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_variant:
        _child(args)
        return

    from asrkit.fileio import atomic_write

    results = []
    for variant in args.variant or ["default"]:
        results.append(_run_variant(args, variant))
        _print(results[-1])
    meta = {"lang": args.lang, "arpa": args.arpa, "model": args.model,
            "random_tree": args.random_tree, "max_memory_gb": args.max_memory_gb,
            "host": platform.node(), "cpus": os.cpu_count(), "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        json.dump(meta, f, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
