#!/usr/bin/env python3
"""Training throughput of each model family at a fixed batch (frames of 10 ms per second).

Usage:
    python scripts/bench/train_throughput.py [--families transformer,conformer,cnn,lstm]
        [--batch 16] [--frames 500] [--tokens 40] [--steps 5] [--device auto|cpu|cuda]
        [--threads N] [--override KEY=VALUE ...] [--out bench_results/train_throughput.json]
        [--baseline REV [--repeats N]]

Each family is built from its Hydra config (``conf/model/<family>.yaml`` plus ``--override``s,
e.g. ``--override model.d_model=144``) with 80-dim input and a 30-token vocabulary, then timed
over ``--steps`` full training updates (forward, CTC loss, backward, AdamW step) on one random
batch of ``--batch`` utterances × ``--frames`` frames, after one warm-up update. On CUDA the
updates run under bf16 autocast like the trainer, and peak memory is reported. Results are
printed as a markdown table and written as JSON lines to ``--out`` so later changes can be
compared; the numbers depend on the machine, so compare only runs from the same one.

``--baseline REV`` times the code of git revision ``REV`` too, in the same run: a temporary
``git worktree`` of ``REV``, each family timed in a fresh process per tree (``PYTHONPATH``
pointing at the tree, so ``import asrkit`` is that revision's), the two trees alternating
``--repeats`` times; the table gives each tree's median frames/s and the speed-up
(before/after of a change, on the same machine, minutes apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from asrkit.cli import compose_train_config
from asrkit.decode.run import pick_device
from asrkit.fileio import atomic_write


def bench_family(family: str, overrides: list[str], args, device: torch.device) -> dict:
    """Time ``args.steps`` updates of one family; return a result row."""
    cfg = compose_train_config([f"model={family}", "exp_dir=unused", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_dim=80, vocab_size=30).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    feats = torch.randn(args.batch, args.frames, 80, device=device)
    feat_lens = torch.full((args.batch,), args.frames, device=device)
    targets = torch.randint(3, 30, (args.batch, args.tokens), device=device)
    target_lens = torch.full((args.batch,), args.tokens, device=device)
    use_amp = device.type == "cuda"

    def update() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = model(feats, feat_lens, targets, target_lens)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    update()  # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    row = {"family": family, "params": params, "device": str(device),
           "threads": torch.get_num_threads(), "batch": args.batch, "frames": args.frames,
           "steps": args.steps, "wall_s": round(wall, 3),
           "frames_per_s": round(args.batch * args.frames * args.steps / wall, 1)}
    if device.type == "cuda":
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


ROOT = Path(__file__).resolve().parents[2]


def _in_tree(tree: Path, family: str, argv: list[str]) -> dict:
    """One family timed in a fresh process whose ``asrkit`` is ``tree``'s."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run([sys.executable, __file__, "--families", family, "--json-row",
                          *argv], env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark of {family} in {tree} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(args, argv: list[str]) -> list[dict]:
    """Time every family in a worktree of ``args.baseline`` and in this checkout."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.baseline], check=True, capture_output=True)
        try:
            for fam in (f for f in args.families.split(",") if f):
                runs = {"baseline": [], "current": []}
                for _ in range(args.repeats):
                    runs["baseline"].append(_in_tree(base, fam, argv))
                    runs["current"].append(_in_tree(ROOT, fam, argv))
                for tree, rs in runs.items():
                    fps = statistics.median(r["frames_per_s"] for r in rs)
                    rows.append({**rs[0], "tree": tree, "rev": args.baseline
                                 if tree == "baseline" else "HEAD+worktree",
                                 "frames_per_s": round(fps, 1),
                                 "frames_per_s_runs": [r["frames_per_s"] for r in rs]})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    return rows


def main() -> None:
    """Parse arguments, run every family, print and save the table."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="transformer,conformer,cnn,lstm")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=Path("bench_results/train_throughput.json"))
    p.add_argument("--baseline", metavar="REV", help="also time git revision REV (module "
                   "docstring)")
    p.add_argument("--repeats", type=int, default=3, help="with --baseline: runs per tree")
    p.add_argument("--json-row", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.baseline:
        argv = [f"--{k}={v}" for k, v in (("batch", args.batch), ("frames", args.frames),
                                           ("tokens", args.tokens), ("steps", args.steps),
                                           ("device", args.device), ("threads", args.threads))]
        argv += [f"--override={o}" for o in args.override]
        rows = compare(args, argv)
        print(f"training throughput, batch {args.batch} x {args.frames} frames, {args.steps} "
              f"updates x {args.repeats} runs per tree (median), torch {torch.__version__}")
        print(f"| family | params (M) | frames/s {args.baseline} | frames/s now | speed-up |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for b, c in zip(rows[0::2], rows[1::2]):
            print(f"| {b['family']} | {c['params'] / 1e6:.2f} | {b['frames_per_s']:.0f} | "
                  f"{c['frames_per_s']:.0f} | {c['frames_per_s'] / b['frames_per_s']:.2f}x |")
        _append(args.out, rows)
        return
    rows = [bench_family(f, args.override, args, device) for f in args.families.split(",") if f]
    if args.json_row:
        print(json.dumps(rows[0]))
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"training throughput, batch {args.batch} x {args.frames} frames, {args.steps} "
          f"updates, {device} ({name or platform.machine()}), torch {torch.__version__}")
    print("| family | params (M) | frames/s | wall s |" +
          (" peak MiB |" if device.type == "cuda" else ""))
    print("| --- | ---: | ---: | ---: |" + (" ---: |" if device.type == "cuda" else ""))
    for r in rows:
        print(f"| {r['family']} | {r['params'] / 1e6:.2f} | {r['frames_per_s']:.0f} | "
              f"{r['wall_s']:.2f} |" + (f" {r['peak_mem_mb']:.0f} |" if "peak_mem_mb" in r
                                        else ""))
    _append(args.out, rows)


def _append(out: Path, rows: list[dict]) -> None:
    old = out.read_text() if out.is_file() else ""
    with atomic_write(out) as f:
        f.write(old + "".join(json.dumps(r) + "\n" for r in rows))
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
