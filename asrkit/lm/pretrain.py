"""LM pretraining on large text in packed blocks (``asrkit train-lm model=gpt``), continued in
pieces.

Chosen by ``data.block_size`` (``conf/lm/model/gpt.yaml`` sets it): the training text is
tokenized once, streaming, into ``exp_dir/data/train.bin`` (:func:`asrkit.lm.textdata.
tokenize_to_bin`), and every step trains on ``data.batch_tokens // block_size`` random blocks
of ``block_size`` tokens (:class:`asrkit.lm.textdata.PackedBlocks`), GPT-2 / nanoGPT style:
AdamW (weight decay on matrices only), linear warm-up then cosine decay to
``optim.min_lr_ratio × lr`` at ``trainer.max_steps``, gradient-norm clipping, bf16 autocast on
CUDA. Every ``trainer.eval_every`` steps: dev perplexity (whole dev sentences, ``<sos/eos>``
first, their end scored) per token and per word (``exp(-log P / (words + sentences))``, the
denominator of SRILM's ``ppl`` for an n-gram without OOVs), a ``metrics.jsonl`` row,
``checkpoints/last.pt`` (model, optimiser, scheduler, step: the resume point) and
``checkpoints/best.pt`` on a new best dev perplexity, and ``lm_curve.png``.
``trainer.max_minutes`` ends a piece early (checkpoint, export, no ``.done``); rerunning the
same command continues at the saved step with the batches the uninterrupted run would have
drawn.

At the end of each piece the best model (the last without a dev set) is exported when it is a
:class:`asrkit.models.lm.GPTLM`: ``exp_dir/hf`` is a Hugging Face model directory
(``save_pretrained``: config, weights, tokenizer) for ``asrkit rescore --lm hf:EXP/hf``,
``transformers`` and any HF tool. ``train_summary.json``: parameters, steps, tokens seen,
training seconds and tokens/s, best dev perplexities.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from asrkit.exp.checkpoint import load_checkpoint, pick_device, save_checkpoint
from asrkit.fileio import atomic_write, mark_done
from asrkit.lm.neural import run_lm_stage, write_lm_config
from asrkit.lm.textdata import PackedBlocks, tokenize_to_bin
from asrkit.models.lm import GPTLM, TokenLM
from asrkit.text.tokenizer import Tokenizer, read_transcripts

__all__ = ["CURVE_PNG", "dev_perplexity", "plot_lm_curve", "pretrain_lm"]

logger = logging.getLogger(__name__)

CURVE_PNG = "lm_curve.png"


def dev_perplexity(model: TokenLM, tok: Tokenizer, sentences: list[str],
                   batch_size: int = 32) -> dict:
    """Perplexity of whole sentences (``<sos/eos>`` first, the end scored).

    Returns:
        ``{"token_ppl", "word_ppl", "tokens", "words", "sentences"}``: per token (the
        tokenizer's units plus one end per sentence) and per word (words plus one end per
        sentence, as SRILM counts an n-gram's ``ppl``).
    """
    seqs = [tok.encode(s) for s in sentences]
    was = model.training
    model.eval()
    logp = sum(model.sentence_logprob(seqs, batch_size))
    model.train(was)
    n_tok = sum(len(s) + 1 for s in seqs)
    n_words = sum(len(s.split()) + 1 for s in sentences)
    return {"token_ppl": math.exp(-logp / max(1, n_tok)),
            "word_ppl": math.exp(-logp / max(1, n_words)),
            "tokens": n_tok, "words": n_words, "sentences": len(sentences)}


def _lr_lambda(warmup: int, max_steps: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


def _optimizer(model: torch.nn.Module, oc: DictConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": float(oc.weight_decay)},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=float(oc.lr), betas=(0.9, 0.95))


def pretrain_lm(cfg: DictConfig) -> Path:
    """Train (or continue) a token LM on packed blocks (the module docstring); a finished
    experiment (``.done``) is left as it is.

    Args:
        cfg: composed ``conf/lm/config.yaml`` with ``data.block_size`` set (``model=gpt``).

    Returns:
        ``exp_dir``.

    Raises:
        FileNotFoundError: missing text or tokenizer.
        ValueError: no training sentence, a text shorter than one block, a bad size
            (``block_size`` over the model's positions, ``batch_tokens`` under one block).
    """
    return run_lm_stage(cfg, _pretrain)


def _pretrain(cfg: DictConfig, exp: Path) -> Path:
    tr, dc, oc = cfg.trainer, cfg.data, cfg.optim
    block, max_steps = int(dc.block_size), int(tr.max_steps)
    batch = int(dc.batch_tokens) // block
    if batch < 1:
        raise ValueError(f"data.batch_tokens ({dc.batch_tokens}) is under one block "
                         f"(data.block_size {block})")
    dev = pick_device(tr.device)
    torch.manual_seed(cfg.seed)
    tok = Tokenizer(dc.tokenizer)
    meta = tokenize_to_bin(dc.train, tok, exp / "data" / "train.bin", utt_ids=dc.utt_ids)
    blocks = PackedBlocks(exp / "data" / "train.bin", block, seed=cfg.seed)
    dev_utt_ids = dc.utt_ids if dc.get("dev_utt_ids") is None else dc.dev_utt_ids
    dev_text = read_transcripts(dc.dev, utt_ids=dev_utt_ids) if dc.dev else []
    tok_path = write_lm_config(cfg, exp, tok)
    model: TokenLM = instantiate(cfg.model, vocab_size=tok.vocab_size).to(dev)
    if isinstance(model, GPTLM) and block > model.hf.config.n_positions:
        raise ValueError(f"data.block_size {block} exceeds the model's n_positions "
                         f"{model.hf.config.n_positions}")
    opt = _optimizer(model, oc)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(
        int(oc.warmup_steps), max_steps, float(oc.min_lr_ratio)))
    n_params = sum(p.numel() for p in model.parameters())
    ckdir = exp / "checkpoints"
    ckdir.mkdir(exist_ok=True)
    step, best, seconds, seen = 0, math.inf, 0.0, 0
    if (ckdir / "last.pt").is_file():
        ck = load_checkpoint(ckdir / "last.pt", map_location=dev)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, seconds, seen = ck["step"], ck["best"], ck["seconds"], ck["tokens_seen"]
        logger.info("resuming %s at step %d (%d tokens seen)", exp, step, seen)
    logger.info("LM %s: %d parameters; %d training tokens (%d sentences); block %d x %d per "
                "step, %d steps; %d dev sentences; device %s", type(model).__name__, n_params,
                meta["tokens"], meta["sentences"], batch, block, max_steps, len(dev_text), dev)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    loss_fn = torch.nn.CrossEntropyLoss()
    deadline = (None if tr.get("max_minutes") is None
                else time.monotonic() + 60 * float(tr.max_minutes))
    eval_every = int(tr.eval_every)
    run_loss, run_n, t0 = 0.0, 0, time.perf_counter()
    model.train()
    while step < max_steps:
        x, y = blocks.batch(step, batch)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast:
            logits = model(x)
        loss = loss_fn(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{exp}: training loss is {float(loss)} at step {step}; "
                                     "lower optim.lr or raise optim.warmup_steps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(oc.clip))
        opt.step()
        sched.step()
        step += 1
        seen += x.numel()
        run_loss, run_n = run_loss + float(loss.detach()), run_n + 1
        out_of_time = deadline is not None and time.monotonic() > deadline
        if step % eval_every and step < max_steps and not out_of_time:
            continue
        train_s = time.perf_counter() - t0
        seconds += train_s
        ppl = dev_perplexity(model, tok, dev_text) if dev_text else None
        improved = ppl is None or ppl["token_ppl"] < best
        if improved:
            best = ppl["token_ppl"] if ppl else best
            save_checkpoint(ckdir / "best.pt", {"model": model.state_dict(), "step": step})
        row = {"step": step, "tokens_seen": seen, "train_loss": run_loss / max(1, run_n),
               "lr": sched.get_last_lr()[0], "tokens_per_s": run_n * x.numel() / train_s,
               "dev_token_ppl": ppl and ppl["token_ppl"], "dev_word_ppl": ppl and ppl["word_ppl"],
               "train_seconds": round(seconds, 1)}
        with open(exp / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        logger.info("step %d/%d: train loss %.4f, %.0f tokens/s, dev ppl %s", step, max_steps,
                    row["train_loss"], row["tokens_per_s"],
                    f"{ppl['token_ppl']:.3f} per token, {ppl['word_ppl']:.2f} per word"
                    if ppl else "-")
        save_checkpoint(ckdir / "last.pt", {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "step": step, "best": best, "seconds": seconds,
            "tokens_seen": seen})
        plot_lm_curve(exp)
        run_loss, run_n, t0 = 0.0, 0, time.perf_counter()
        if out_of_time:
            logger.info("trainer.max_minutes reached at step %d; rerun to continue", step)
            break
    if isinstance(model, GPTLM):
        if dev_text:
            model.load_state_dict(load_checkpoint(ckdir / "best.pt", map_location=dev)["model"])
        model.save_hf(exp / "hf", tok_path)
        logger.info("exported %s (Hugging Face model directory)", exp / "hf")
    with atomic_write(exp / "train_summary.json") as f:
        json.dump({"model": type(model).__name__, "num_params": n_params, "steps": step,
                   "max_steps": max_steps, "tokens_seen": seen,
                   "train_seconds": round(seconds, 1),
                   "tokens_per_s": round(seen / max(seconds, 1e-9), 1),
                   "training_tokens": meta["tokens"], "training_words": meta["words"],
                   "best_dev_token_ppl": best if dev_text else None}, f, indent=1)
    if step >= max_steps:
        mark_done(exp)
    return exp


def plot_lm_curve(exp_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw training loss and dev perplexity against tokens seen (millions) from
    ``exp_dir/metrics.jsonl`` of :func:`pretrain_lm` into a PNG (written atomically).

    Returns:
        The PNG path (default ``exp_dir/lm_curve.png``).

    Raises:
        FileNotFoundError: no ``metrics.jsonl`` rows.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    exp_dir = Path(exp_dir)
    path = exp_dir / "metrics.jsonl"
    rows = ([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()] if path.is_file() else [])
    if not rows:
        raise FileNotFoundError(f"{path} is missing or empty; nothing to plot")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_ppl = fig.subplots(1, 2)
    x = [r["tokens_seen"] / 1e6 for r in rows]
    ax_loss.plot(x, [r["train_loss"] for r in rows], marker="o", markersize=3)
    ax_loss.set(title="training loss (nats per token)", xlabel="tokens seen (M)",
                ylabel="cross-entropy")
    dev = [(xi, r["dev_word_ppl"]) for xi, r in zip(x, rows) if r.get("dev_word_ppl")]
    if dev:
        ax_ppl.plot([d[0] for d in dev], [d[1] for d in dev], marker="o", markersize=3,
                    color="tab:red")
        ax_ppl.set_yscale("log")
    ax_ppl.set(title="dev perplexity per word", xlabel="tokens seen (M)", ylabel="perplexity")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
    fig.suptitle(exp_dir.name)
    png = Path(out) if out is not None else exp_dir / CURVE_PNG
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return png
