#!/usr/bin/env python3
"""Time, peak memory, size and perplexity of Kneser-Ney n-gram builds at growing corpus sizes.

Usage:
    python scripts/bench/lm_build.py TEXT [--sizes 10M,50M,all] [--order 3]
        [--vocab-size 200000] [--prune 3e-7] [--memory-gb 4] [--lm-dir /work/data/lm]
        [--dev DEV_TEXT] [--test TEST_TEXT] [--no-unpruned] [--max-memory-gb 16]
        [--out bench_results/lm_build.json]

``TEXT`` is LM text, one sentence a line (``asrkit lm-text``: Gutenberg books with the
evaluation readers' books left out; its books are in a seeded random order, so its first N
words are a random sample of books). For each size the first N words (whole sentences) are
copied to ``LM_DIR/books_<size>.txt`` (``all``: ``TEXT`` itself), then one child process
runs :func:`asrkit.lm.ngram_large.estimate_ngram_large` (``--vocab-size`` most frequent
words, the rest ``<unk>``), writes the unpruned model ``LM_DIR/<size>_<order>gram.arpa``,
prunes it (Stolcke, SRILM threshold ``--prune``: Kaldi's LibriSpeech ``tgsmall`` is 3e-7) and
writes ``LM_DIR/<size>_<order>gram_p<threshold>.arpa``, and reports the perplexity of both on
``--dev``/``--test`` (Kaldi text; OOVs not scored, as SRILM ``-ppl``). The child's address
space is capped at ``--max-memory-gb``; its peak RSS and CPU time (user + system) come from
``wait4``; wall and CPU time cover the whole child (estimation, pruning, ARPA writing,
perplexity), stage wall times are reported too. On a shared machine the CPU time is the
figure to compare: wall time grows with the other jobs' load.

Prints a table and writes ``--out`` (JSON, atomically; rows of earlier runs with other
sizes/orders are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_size(s: str) -> int | None:
    s = s.strip().upper()
    if s == "ALL":
        return None
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "KMG" else s) * mult)


def head_words(src: Path, dst: Path, n_words: int) -> int:
    """Copy whole lines of ``src`` to ``dst`` (atomically) until ``n_words`` are copied;
    reuse ``dst`` when it exists. Returns the words copied."""
    if dst.exists():
        with open(dst, encoding="utf-8") as f:
            return sum(line.count(" ") + 1 for line in f if line.strip())
    sys.path.insert(0, str(REPO))
    from asrkit.fileio import atomic_write

    words = 0
    with open(src, encoding="utf-8") as f, atomic_write(dst) as out:
        for line in f:
            if not line.strip():
                continue
            out.write(line)
            words += line.count(" ") + 1
            if words >= n_words:
                break
    return words


def child(args: argparse.Namespace) -> None:
    """Build, prune, write and score one model; print one JSON line."""
    sys.path.insert(0, str(REPO))
    import logging

    from asrkit.lm.ngram_large import LargeEstimateStats, estimate_ngram_large
    from asrkit.text.tokenizer import read_transcripts

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    res: dict = {"seconds": {}}
    t0 = time.perf_counter()
    st = LargeEstimateStats()
    lm = estimate_ngram_large(args.text, order=args.order, vocab_size=args.vocab_size,
                              memory_gb=args.memory_gb, tmp_dir=args.tmp_dir, stats=st)
    res["seconds"]["estimate"] = time.perf_counter() - t0
    res["seconds"].update({f"estimate_{k}": v for k, v in st.seconds.items()})
    res.update(words=st.tokens, sentences=st.sentences, vocab=st.vocab,
               oov_tokens=st.oov_tokens, spilled=st.spilled,
               discounts=[list(d) for d in st.discounts], counts=lm.counts)
    evals = {k: read_transcripts(p) for k, p in (("dev", args.dev), ("test", args.test)) if p}

    def ppl(model) -> dict:
        out = {}
        for k, sents in evals.items():
            r = model.perplexity(sents)
            out[k] = {"ppl": r.ppl, "oovs": r.oovs, "words": r.words, "sentences": r.sentences}
        return out

    log = logging.getLogger("lm_build")
    res["ppl"] = ppl(lm)
    log.info("estimated in %.0f s: counts %s, ppl %s", res["seconds"]["estimate"], lm.counts,
             res["ppl"])
    full = lm
    if args.prune:  # pruned model first: the figures come before the long unpruned write
        t0 = time.perf_counter()
        lm = full.prune(args.prune)
        res["seconds"]["prune"] = time.perf_counter() - t0
        res["pruned_counts"] = lm.counts
        res["pruned_ppl"] = ppl(lm)
        log.info("pruned in %.0f s: counts %s, ppl %s", res["seconds"]["prune"], lm.counts,
                 res["pruned_ppl"])
        t0 = time.perf_counter()
        lm.write_arpa(args.pruned_arpa)
        res["seconds"]["write_pruned"] = time.perf_counter() - t0
        log.info("wrote %s in %.0f s", args.pruned_arpa, res["seconds"]["write_pruned"])
        del lm
    if args.unpruned_arpa:
        t0 = time.perf_counter()
        full.write_arpa(args.unpruned_arpa)
        res["seconds"]["write_unpruned"] = time.perf_counter() - t0
        log.info("wrote %s in %.0f s", args.unpruned_arpa, res["seconds"]["write_unpruned"])
    print("RESULT " + json.dumps(res), flush=True)


def run_child(cmd: list[str], max_memory_gb: float, log: Path
              ) -> tuple[int, float, float, float, str]:
    """Run ``cmd`` capped at ``max_memory_gb`` of address space; (status, wall s, CPU s
    (user + system), peak RSS MB, stdout)."""
    cap = int(max_memory_gb * 2**30)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)  # a shell's ulimit -v is lower

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=limit)  # noqa: PLW1509
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        return p.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, out.read()


def fmt_counts(c: list[int] | None) -> str:
    return "/".join(f"{x / 1e6:.2f}M" if x >= 1e5 else str(x) for x in c) if c else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text", type=Path)
    ap.add_argument("--sizes", default="10M,50M,all")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=200_000)
    ap.add_argument("--prune", type=float, default=3e-7)
    ap.add_argument("--memory-gb", type=float, default=4.0)
    ap.add_argument("--max-memory-gb", type=float, default=18.0)
    ap.add_argument("--lm-dir", type=Path, default=Path("/work/data/lm"))
    ap.add_argument("--tmp-dir", type=Path)
    ap.add_argument("--dev", type=Path, default=Path("/work/exps/mini/data/dev/text"))
    ap.add_argument("--test", type=Path, default=Path("/work/exps/mini/data/test/text"))
    ap.add_argument("--no-unpruned", action="store_true",
                    help="do not write the unpruned ARPA (its time is then not included)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "lm_build.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--unpruned-arpa", help=argparse.SUPPRESS)
    ap.add_argument("--pruned-arpa", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    args.lm_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = args.tmp_dir or args.lm_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in args.sizes.split(","):
        n = parse_size(label)
        if n is None:
            text = args.text
        else:
            text = args.lm_dir / f"books_{label}.txt"
            head_words(args.text, text, n)
        tag = f"{label}_{args.order}gram"
        unpruned = None if args.no_unpruned else args.lm_dir / f"{tag}.arpa"
        pruned = args.lm_dir / f"{tag}_p{args.prune:g}.arpa"
        cmd = [sys.executable, __file__, str(text), "--child", "--order", str(args.order),
               "--vocab-size", str(args.vocab_size), "--prune", str(args.prune),
               "--memory-gb", str(args.memory_gb), "--tmp-dir", str(tmp_dir),
               "--dev", str(args.dev), "--test", str(args.test),
               "--pruned-arpa", str(pruned)]
        if unpruned:
            cmd += ["--unpruned-arpa", str(unpruned)]
        log = args.lm_dir / f"{tag}.log"
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(cmd)} (log {log})", flush=True)
        rc, wall, cpu, rss, out = run_child(cmd, args.max_memory_gb, log)
        row = {"size": label, "order": args.order, "text": str(text), "status": rc,
               "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(rss, 1),
               "vocab_size": args.vocab_size, "prune": args.prune,
               "memory_gb": args.memory_gb, "unpruned_arpa": str(unpruned) if unpruned else None,
               "pruned_arpa": str(pruned), "log": str(log)}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                row.update(json.loads(line[7:]))
        if rc != 0:
            row["error_tail"] = log.read_text(errors="replace")[-2000:]
        rows.append(row)
        print(json.dumps(row), flush=True)

    # merge with earlier results, then write atomically
    old = []
    if args.out.exists():
        old = json.loads(args.out.read_text()).get("rows", [])
    keys = {(r["size"], r["order"], r["prune"]) for r in rows}
    merged = [r for r in old if (r["size"], r["order"], r["prune"]) not in keys] + rows
    doc = {"benchmark": "lm_build", "estimator": "asrkit.lm.ngram_large (interpolated modified "
           "Kneser-Ney, sorted runs on disk)", "cpu": platform.machine(),
           "cpus": os.cpu_count(), "text": str(args.text), "rows": merged}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".lm_build.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, args.out)

    hdr = (f"{'size':>6} {'ord':>3} {'words':>11} {'wall s':>8} {'CPU s':>7} {'peak RSS':>9} "
           f"{'n-grams (unpruned)':>24} {'dev ppl':>8} {'test ppl':>8} "
           f"{'n-grams (pruned ' + format(args.prune, 'g') + ')':>26} {'dev ppl':>8} "
           f"{'test ppl':>8}")
    print(hdr)
    for r in merged:
        def p(key: str, split: str, r: dict = r) -> str:
            v = r.get(key, {}).get(split, {}).get("ppl")
            return f"{v:8.1f}" if v else f"{'-':>8}"
        cpu_s = f"{r['cpu_s']:>7.0f}" if "cpu_s" in r else f"{'-':>7}"
        print(f"{r['size']:>6} {r['order']:>3} {r.get('words', 0):>11} {r['wall_s']:>8.0f} {cpu_s} "
              f"{r['peak_rss_mb'] / 1024:>7.2f}GB {fmt_counts(r.get('counts')):>24} "
              f"{p('ppl', 'dev')} {p('ppl', 'test')} {fmt_counts(r.get('pruned_counts')):>26} "
              f"{p('pruned_ppl', 'dev')} {p('pruned_ppl', 'test')}"
              + ("" if r["status"] == 0 else f"  FAILED (status {r['status']})"))
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
