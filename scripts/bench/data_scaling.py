#!/usr/bin/env python3
"""Does the data path scale? Peak memory, speed and file opens of the feature stage and of
neural training on AN4 replicated ×1, ×4, ×16.

Usage:
    python scripts/bench/data_scaling.py [--src /work/exps/demo1/data/train]
        [--tokenizer /work/exps/demo1/data/token/bpe_150.model] [--factors 1,4,16]
        [--steps 150] [--max-frames 3000] [--nice 15] [--reuse-features]
        [--feature-factors 1,4,16]
        [--override KEY=VALUE ...] [--probe-index FEATS_DIR,TOKENIZER ...]
        [--out /tmp/data_scaling]

For each factor N a data dir ``OUT/data/xN`` is written with :class:`asrkit.data.datadir.DataDir`:
the utterances of ``--src`` (a Kaldi data dir, the AN4 train set) repeated N times under new
ids (utterance and speaker ids prefixed ``rK-``), all pointing at the same audio files. Then,
each as a subprocess of the real CLI, one at a time, under ``nice``:

* features: ``asrkit features OUT/data/xN OUT/fbank/xN --type fbank --nj 1`` (recomputed
  unless ``--reuse-features``). A factor not in ``--feature-factors`` (default: all) gets its
  feature dir without the stage, for a machine too busy to compute it in time: ×1's
  matrices written again, ``N`` times, under the new ids (a real ark of ``N``× the size;
  fbank has no dither, so the stage would write the same numbers);
* dataset index: a small Python process that builds :class:`asrkit.data.dataset.FeatureDataset`
  (with the tokenizer) for ``OUT/fbank/xN`` under ``tracemalloc``: the bytes it keeps per
  utterance, extrapolated to LibriSpeech 960 h (281,241 utterances); ``--probe-index``
  measures the same on other feature dirs (e.g. LibriSpeech transcripts, longer than AN4's);
* training: ``asrkit train`` (a fixed 2 M-parameter Conformer-CTC, ``data.max_frames``,
  ``trainer.max_steps`` updates, one CPU thread, no dev set, no TensorBoard/plots) started
  through a launcher that counts, with a Python audit hook, every ``open()`` of a feature
  ``.ark`` file, so ``ark opens/step`` shows whether each utterance read opens a file.

Measured: peak RSS of the process tree (``ru_maxrss`` of the largest process from
``os.wait4``, and the polled sum of ``VmRSS`` over the tree every 0.1 s), wall time, the
maximum number of open file descriptors of the tree (polled ``/proc/PID/fd``), and for
training updates/s (``train_summary.json``: updates / training seconds, model start-up
excluded). Prints a markdown table and writes ``OUT/data_scaling.json`` (``--json``).
Scratch data goes under ``--out``; nothing is written in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRISPEECH_960_UTTS = 281241  # train-clean-100 + train-clean-360 + train-other-500

# A fixed small model: the AN4 demo Conformer-CTC (2.05 M parameters), spelled out so that
# recipe edits do not change the benchmark.
MODEL = ["model=conformer", "model.d_model=144", "model.num_heads=4", "model.ffn_dim=576",
         "model.num_layers=4", "model.depthwise_conv_kernel_size=15",
         "model.subsampling_channels=32", "optim.optimizer.lr=0.002",
         "optim.scheduler.warmup_steps=250"]

# Runs `asrkit` (asrkit.cli.main, as the console script does) and counts open() calls of
# .ark files with an audit hook; the counts go to $ASRKIT_BENCH_COUNTS at exit.
LAUNCHER = r'''
import atexit, json, os, sys
counts = {"ark_opens": 0, "feats_ark_opens": 0}
def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.fsdecode(args[0])
        if p.endswith(".ark"):
            counts["ark_opens"] += 1
            if os.path.basename(p).startswith("feats."):
                counts["feats_ark_opens"] += 1
sys.addaudithook(_hook)
def _dump():
    with open(os.environ["ASRKIT_BENCH_COUNTS"], "w") as f:
        json.dump(counts, f)
atexit.register(_dump)
from asrkit.cli import main
sys.exit(main())
'''

# Builds FeatureDataset under tracemalloc; prints JSON.
INDEX_PROBE = r'''
import gc, json, sys, time, tracemalloc
from asrkit.text.tokenizer import Tokenizer
from asrkit.data.dataset import FeatureDataset
tok = Tokenizer(sys.argv[2])
gc.collect()
tracemalloc.start()
t0 = time.perf_counter()
ds = FeatureDataset(sys.argv[1], tok, max_frames=3000)
secs = time.perf_counter() - t0
gc.collect()
cur, peak = tracemalloc.get_traced_memory()
toks = sum(len(ds.tokens[i]) for i in range(len(ds)))
print(json.dumps({"utts": len(ds), "index_bytes": cur, "build_peak_bytes": peak,
                  "build_s": secs, "tokens_per_utt": toks / len(ds)}))
'''


def probe_index(feats: Path, tokenizer: Path, nice: int, env: dict) -> dict:
    """Bytes per utterance that FeatureDataset keeps for ``feats`` (INDEX_PROBE)."""
    probe = subprocess.run(["nice", "-n", str(nice), sys.executable, "-c", INDEX_PROBE,
                            str(feats), str(tokenizer)], capture_output=True, text=True,
                           env=env, check=True)
    idx = json.loads(probe.stdout.strip().splitlines()[-1])
    idx["bytes_per_utt"] = round(idx["index_bytes"] / idx["utts"], 1)
    idx["librispeech_960h_mb"] = round(idx["bytes_per_utt"] * LIBRISPEECH_960_UTTS / 2**20, 1)
    return idx


def replicate_features(x1: Path, data: Path, out: Path, factor: int) -> None:
    """Write feature dir ``out`` for replicated data dir ``data`` from ×1's features ``x1``."""
    import kaldiio

    from asrkit.data.datadir import read_kaldi_map, write_kaldi_map
    from asrkit.features.cmvn import read_cmvn_stats, write_ark, write_cmvn_stats, write_scp

    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    src = kaldiio.load_scp(str(x1 / "feats.scp"))
    frames = read_kaldi_map(x1 / "utt2num_frames")
    ids = sorted(read_kaldi_map(data / "utt2spk"), key=lambda u: u.encode("utf-8"))
    orig = {u: "r00-" + u.split("-", 1)[1] for u in ids}  # ×1's ids are r00-<utt>
    entries = write_ark(out / "data" / "feats.1.ark", ((u, src[orig[u]]) for u in ids))
    write_scp(out / "feats.scp", entries)
    write_kaldi_map(out / "utt2num_frames", {u: frames[orig[u]] for u in ids})
    write_cmvn_stats(out / "cmvn.ark", read_cmvn_stats(x1 / "cmvn.ark") * factor)
    for name in ("feat_dim", "feature_config.yaml"):
        shutil.copy(x1 / name, out / name)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
        if (data / name).is_file():
            shutil.copy(data / name, out / name)
    (out / ".done").write_text("replicated\n")


def replicate(src: Path, out: Path, factor: int) -> dict:
    """Write ``out``: ``src``'s utterances ``factor`` times under ids ``r{k}-<id>``."""
    from asrkit.data.datadir import DataDir

    d = DataDir.load(src)
    wav, text, u2s, dur, seg = {}, {}, {}, {} if d.utt2dur is not None else None, \
        {} if d.segments is not None else None
    for k in range(factor):
        p = f"r{k:02d}-"
        for u in d.utt2spk:
            text[p + u] = d.text[u]
            u2s[p + u] = p + d.utt2spk[u]
            if dur is not None:
                dur[p + u] = d.utt2dur[u]
            if seg is not None:
                rec, s, e = d.segments[u]
                seg[p + u] = (p + rec, s, e)
        for r, spec in d.wav_scp.items():
            wav[p + r] = spec  # the same audio file
    DataDir(wav_scp=wav, text=text, utt2spk=u2s, utt2dur=dur, segments=seg).write(out)
    hours = sum(dur.values()) / 3600 if dur else None
    return {"utts": len(u2s), "hours": hours}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (via /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> tuple[int, int]:
    """(open fds, open fds on .ark files) of ``pid``."""
    n = ark = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            n += 1
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".ark"):
                    ark += 1
            except OSError:
                pass
    except OSError:
        pass
    return n, ark


def run_monitored(cmd: list[str], log: Path, env: dict | None = None,
                  nice: int = 15) -> dict:
    """Run ``cmd`` under ``nice``; return wall s, peak RSS (MB) and max open fds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = {"tree_rss_kb": 0, "fds": 0, "ark_fds": 0}
    with open(log, "w") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["nice", "-n", str(nice), *cmd], stdout=lf,
                                stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                pids = _tree(proc.pid)
                peak["tree_rss_kb"] = max(peak["tree_rss_kb"], sum(_rss_kb(p) for p in pids))
                fds = [_fds(p) for p in pids]
                peak["fds"] = max(peak["fds"], sum(f[0] for f in fds))
                peak["ark_fds"] = max(peak["ark_fds"], sum(f[1] for f in fds))
                done.wait(0.1)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed ({proc.returncode}); see {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-15:]))
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "peak_tree_rss_mb": round(peak["tree_rss_kb"] / 1024, 1),
            "max_open_fds": peak["fds"], "max_open_ark_fds": peak["ark_fds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=Path("/work/exps/demo1/data/train"),
                   help="Kaldi data dir to replicate (AN4 train)")
    p.add_argument("--tokenizer", type=Path,
                   default=Path("/work/exps/demo1/data/token/bpe_150.model"))
    p.add_argument("--factors", default="1,4,16")
    p.add_argument("--steps", type=int, default=150, help="optimizer updates per training run")
    p.add_argument("--max-frames", type=int, default=3000, help="data.max_frames")
    p.add_argument("--nice", type=int, default=15)
    p.add_argument("--feature-factors", help="factors whose features the features stage "
                   "computes (default: all); the others replicate x1's (see above)")
    p.add_argument("--reuse-features", action="store_true",
                   help="keep OUT/fbank/xN when complete (features columns then empty)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra asrkit train override")
    p.add_argument("--probe-index", action="append", default=[], metavar="FEATS_DIR,TOKENIZER",
                   help="also measure FeatureDataset's bytes/utterance on this feature dir")
    p.add_argument("--out", type=Path, default=Path("/tmp/data_scaling"))
    p.add_argument("--json", type=Path, help="results file (default OUT/data_scaling.json)")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    asrkit = [py, "-m", "asrkit.cli"] if not (Path(py).parent / "asrkit").is_file() \
        else [str(Path(py).parent / "asrkit")]
    launcher = out / "count_opens_launcher.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    factors = [int(f) for f in args.factors.split(",") if f]
    feature_factors = [int(f) for f in args.feature_factors.split(",") if f] \
        if args.feature_factors else factors
    if any(n not in feature_factors for n in factors) and 1 not in factors + feature_factors:
        p.error("factors left out of --feature-factors are made from x1's features: add 1")
    rows = []
    feat_rate = None  # audio seconds per wall second of the feature stage, from the first run
    for n in factors:
        row: dict = {"factor": n}
        data = out / "data" / f"x{n}"
        row.update(replicate(args.src, data, n))
        fb = out / "fbank" / f"x{n}"
        if args.reuse_features and (fb / ".done").is_file():
            print(f"x{n}: reusing {fb}", flush=True)
        elif n not in feature_factors:
            x1 = out / "fbank" / "x1"
            if not (x1 / ".done").is_file():
                raise SystemExit(f"x{n}: --feature-factors leaves it out, which needs {x1}")
            t0 = time.perf_counter()
            replicate_features(x1, data, fb, n)
            row["features_replicated_s"] = round(time.perf_counter() - t0, 1)
            print(f"x{n}: features replicated from {x1} in {row['features_replicated_s']} s",
                  flush=True)
        else:
            shutil.rmtree(fb, ignore_errors=True)
            if feat_rate and row["hours"]:
                print(f"x{n}: features for {row['hours']:.2f} h, estimated "
                      f"{row['hours'] * 3600 / feat_rate:.0f} s", flush=True)
            r = run_monitored([*asrkit, "features", str(data), str(fb), "--type", "fbank",
                               "--nj", "1"], out / "logs" / f"features_x{n}.log", env,
                              args.nice)
            row["features"] = r
            if row["hours"]:
                feat_rate = row["hours"] * 3600 / r["wall_s"]
            print(f"x{n}: features {r}", flush=True)
        if not row["hours"]:
            frames = sum(int(line.split()[1]) for line in
                         (fb / "utt2num_frames").read_text().splitlines())
            row["hours"] = frames / 100 / 3600

        idx = probe_index(fb, args.tokenizer, args.nice, env)
        row["index"] = idx
        print(f"x{n}: dataset index {idx}", flush=True)

        exp = out / "exp" / f"x{n}"
        shutil.rmtree(exp, ignore_errors=True)
        counts = out / "logs" / f"train_x{n}.counts.json"
        cmd = [py, str(launcher), "train", f"exp_dir={exp}", f"data.train={fb}",
               f"data.tokenizer={args.tokenizer}", *MODEL, f"data.max_frames={args.max_frames}",
               f"trainer.max_steps={args.steps}", "trainer.max_epochs=100000",
               "trainer.num_threads=1", "trainer.device=cpu", "trainer.tensorboard=false",
               "trainer.plot=false", "trainer.save_every_batches=0", "trainer.log_interval=50",
               "trainer.keep_checkpoints=1", "trainer.keep_best_by=[]", "data.num_workers=0",
               *args.override]
        r = run_monitored(cmd, out / "logs" / f"train_x{n}.log",
                          {**env, "ASRKIT_BENCH_COUNTS": str(counts)}, args.nice)
        summ = json.loads((exp / "train_summary.json").read_text())
        c = json.loads(counts.read_text())
        r.update(updates=summ["updates"], train_seconds=round(summ["train_seconds"], 2),
                 steps_per_s=round(summ["updates"] / summ["train_seconds"], 3),
                 epochs_done=summ["epochs"], feats_ark_opens=c["feats_ark_opens"],
                 ark_opens_per_step=round(c["feats_ark_opens"] / max(summ["updates"], 1), 2))
        row["train"] = r
        print(f"x{n}: train {r}", flush=True)
        rows.append(row)

    print(f"\ndata path scaling: AN4 train replicated, {platform.machine()} "
          f"{os.cpu_count()} CPUs, nice {args.nice}; training {args.steps} updates, "
          f"data.max_frames={args.max_frames}, 1 thread")
    print("| factor | hours | utts | feats peak RSS MB | feats wall s | index B/utt "
          "(960 h MB) | train peak RSS MB | train steps/s | max fds (ark) | ark opens/step |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        f, t, i = r.get("features"), r["train"], r["index"]
        print(f"| {r['factor']} | {r['hours']:.2f} | {r['utts']} | "
              f"{f['peak_rss_mb'] if f else '-'} | {f['wall_s'] if f else '-'} | "
              f"{i['bytes_per_utt']:.0f} ({i['librispeech_960h_mb']:.0f}) | "
              f"{t['peak_rss_mb']} | {t['steps_per_s']:.2f} | "
              f"{t['max_open_fds']} ({t['max_open_ark_fds']}) | {t['ark_opens_per_step']} |")
    probes = []
    for spec in args.probe_index:
        feats_dir, tok_path = spec.split(",")
        probes.append({"feats": feats_dir, "tokenizer": tok_path,
                       **probe_index(Path(feats_dir), Path(tok_path), args.nice, env)})
        i = probes[-1]
        print(f"index of {feats_dir} ({i['utts']} utts, {i['tokens_per_utt']:.1f} tokens/utt): "
              f"{i['bytes_per_utt']:.0f} B/utt, {i['librispeech_960h_mb']:.0f} MB at 960 h")
    res = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
           "steps": args.steps, "max_frames": args.max_frames, "model": MODEL,
           "overrides": args.override, "src": str(args.src), "rows": rows,
           "index_probes": probes,
           "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = args.json or out / "data_scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
