"""Training curves of an experiment as one PNG, from ``exp_dir/metrics.jsonl``.

The training loop calls :func:`plot_training_curves` after every epoch, so
``exp_dir/training_curves.png`` always shows the run so far; it can also be drawn by hand::

    python -m asrkit.train.plot exp/tf            # writes exp/tf/training_curves.png

Three panels against the epoch: train and dev loss (per utterance), dev WER (%), and the
learning rate at the end of the epoch. Matplotlib's non-interactive Agg canvas is used
directly (no ``pyplot``, no global backend switch), so this works on machines without a
display and does not disturb a caller's own matplotlib setup.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asrkit.exp.checkpoint import read_metrics
from asrkit.fileio import atomic_write

__all__ = ["PNG_NAME", "main", "plot_training_curves"]

PNG_NAME = "training_curves.png"


def plot_training_curves(exp_dir: str | os.PathLike, out: str | os.PathLike | None = None
                         ) -> Path:
    """Draw loss, dev WER and learning rate per epoch into a PNG (written atomically).

    Args:
        exp_dir: experiment directory holding ``metrics.jsonl``.
        out: output path; default ``exp_dir/training_curves.png``.

    Returns:
        The PNG path.

    Raises:
        FileNotFoundError: ``metrics.jsonl`` is missing or has no epoch yet.
        ValueError: ``metrics.jsonl`` is malformed (see :func:`read_metrics`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    exp_dir = Path(exp_dir)
    records = read_metrics(exp_dir)
    if not records:
        raise FileNotFoundError(f"{exp_dir / 'metrics.jsonl'} is missing or empty; nothing "
                                "to plot")
    epochs = sorted(records)

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(e, float(records[e][key])) for e in epochs if records[e].get(key) is not None]
        return [e for e, _ in pts], [v for _, v in pts]

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_wer, ax_lr = fig.subplots(1, 3)
    for key, label in (("train_loss", "train"), ("dev_loss", "dev")):
        x, y = series(key)
        if x:
            ax_loss.plot(x, y, marker="o", markersize=3, label=label)
    ax_loss.set(title="loss per utterance", xlabel="epoch", ylabel="loss")
    ax_loss.legend()
    x, y = series("dev_wer")
    if x:
        ax_wer.plot(x, y, marker="o", markersize=3, color="tab:red")
        best = min(range(len(y)), key=lambda i: (y[i], -x[i]))
        ax_wer.annotate(f"best {y[best]:.2f}% (epoch {x[best]})", (x[best], y[best]),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    else:
        ax_wer.text(0.5, 0.5, "no dev set", ha="center", va="center",
                    transform=ax_wer.transAxes)
    ax_wer.set(title="dev WER", xlabel="epoch", ylabel="WER (%)")
    x, y = series("lr")
    if x:
        ax_lr.plot(x, y, marker="o", markersize=3, color="tab:green")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    for ax in (ax_loss, ax_wer, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(exp_dir.name)
    path = Path(out) if out is not None else exp_dir / PNG_NAME
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m asrkit.train.plot EXP_DIR [--out PNG]``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m asrkit.train.plot",
                                description="Plot loss, dev WER and learning rate per epoch "
                                "from EXP_DIR/metrics.jsonl into a PNG.")
    p.add_argument("exp_dir", type=Path, help="experiment directory (asrkit train output)")
    p.add_argument("--out", type=Path, help=f"output PNG (default EXP_DIR/{PNG_NAME})")
    args = p.parse_args(argv)
    try:
        path = plot_training_curves(args.exp_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
