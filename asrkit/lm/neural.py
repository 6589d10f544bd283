"""Neural LM training (``asrkit train-lm model=lstm_lm|transformer_lm``) and loading.

Experiment layout (``exp_dir``), like the acoustic models':

* ``config.yaml``        the resolved config plus ``vocab_size`` and ``exp_files``
* ``tokenizer/<name>.model`` a copy of ``data.tokenizer``, so the LM works after a move
  (:mod:`asrkit.exp.expdir`)
* ``checkpoints/last.pt`` model, optimiser, epoch, metrics (resume point, every epoch)
* ``checkpoints/best.pt`` the model weights with the best dev perplexity (or the last epoch's
  when there is no dev set)
* ``metrics.jsonl``      per epoch: train loss per token, dev perplexity, seconds
* ``train_summary.json`` parameters, epochs, wall seconds, best dev perplexity
* ``train.log``, ``.done``

Perplexity is ``exp(-log P / tokens)`` over the dev sentences' tokens and their ends
(``<eos>``), in the tokenizer's units (not words).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asrkit.exp.checkpoint import load_checkpoint, pick_device, save_checkpoint
from asrkit.exp.expdir import EXP_FILES_KEY, TOKENIZER_DIR, copy_into_exp, load_exp_tokenizer
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log
from asrkit.models.lm import TokenLM
from asrkit.text.tokenizer import SOS_EOS_ID, Tokenizer, read_transcripts

__all__ = ["NeuralSentenceLM", "load_lm", "run_lm_stage", "train_lm", "write_lm_config"]

logger = logging.getLogger(__name__)


def _batches(seqs: list[list[int]], max_tokens: int, rng: random.Random | None
             ) -> list[list[int]]:
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, len(seqs[i]) + 2)
        if cur and w * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, w = [], len(seqs[i]) + 2
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _tensors(seqs: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[SOS_EOS_ID, *seqs[i], SOS_EOS_ID] for i in idx]
    width = max(len(r) for r in rows)
    inp = torch.full((len(rows), width - 1), SOS_EOS_ID, dtype=torch.long)
    tgt = torch.full((len(rows), width - 1), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        inp[b, :len(r) - 1] = torch.tensor(r[:-1])
        tgt[b, :len(r) - 1] = torch.tensor(r[1:])
    return inp, tgt


def perplexity(model: TokenLM, seqs: list[list[int]]) -> float:
    """Token perplexity (ends included) of id sequences under ``model``."""
    was = model.training
    model.eval()
    total = sum(model.sentence_logprob(seqs))
    model.train(was)
    return math.exp(-total / max(1, sum(len(s) + 1 for s in seqs)))


def write_lm_config(cfg: DictConfig, exp: Path, tok: Tokenizer) -> Path:
    """Write ``exp/config.yaml`` (the resolved config plus ``vocab_size`` and ``exp_files``)
    and copy ``data.tokenizer`` into the experiment.

    Returns:
        The experiment's copy of the tokenizer.
    """
    rel = copy_into_exp(cfg.data.tokenizer, exp, f"{TOKENIZER_DIR}/{Path(cfg.data.tokenizer).name}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["vocab_size"] = tok.vocab_size
    resolved[EXP_FILES_KEY] = {"tokenizer": rel}
    with atomic_write(exp / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    return exp / rel


def train_lm(cfg: DictConfig) -> Path:
    """Train a neural token LM on sentence batches, epoch by epoch (layout in the module
    docstring); resumes from ``checkpoints/last.pt``; a finished experiment (``.done``) is
    left as it is. Text larger than memory: :func:`asrkit.lm.pretrain.pretrain_lm`
    (``data.block_size`` set, as ``model=gpt`` does).

    Args:
        cfg: composed ``conf/lm/config.yaml`` + overrides.

    Returns:
        ``exp_dir``.

    Raises:
        FileNotFoundError: missing text or tokenizer.
        ValueError: no training sentence.
    """
    return run_lm_stage(cfg, _train)


def run_lm_stage(cfg: DictConfig, body) -> Path:
    """Run ``body(cfg, exp_dir)`` as an LM training stage: skipped when ``exp_dir/.done``
    exists, logged to ``exp_dir/train.log``.

    Returns:
        ``exp_dir``.
    """
    exp = Path(cfg.exp_dir)
    if is_done(exp):
        logger.info("%s is complete (.done exists); nothing to train", exp)
        return exp
    exp.mkdir(parents=True, exist_ok=True)
    with stage_log(exp / "train.log"):
        return body(cfg, exp)


def _train(cfg: DictConfig, exp: Path) -> Path:
    tr, dc = cfg.trainer, cfg.data
    dev = pick_device(tr.device)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = Tokenizer(dc.tokenizer)
    train_seqs = [tok.encode(s) for s in read_transcripts(dc.train, utt_ids=dc.utt_ids)]
    if not train_seqs:
        raise ValueError(f"{dc.train}: no training sentence")
    dev_seqs = [tok.encode(s) for s in read_transcripts(dc.dev, utt_ids=dc.utt_ids)] if dc.dev else []
    write_lm_config(cfg, exp, tok)
    model: TokenLM = instantiate(cfg.model, vocab_size=tok.vocab_size).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    ckdir = exp / "checkpoints"
    ckdir.mkdir(exist_ok=True)
    start_epoch, best, bad, seconds = 1, math.inf, 0, 0.0
    if (ckdir / "last.pt").is_file():
        ck = load_checkpoint(ckdir / "last.pt", map_location=dev)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best, bad = ck["epoch"] + 1, ck["best"], ck["bad"]
        seconds = ck["seconds"]
        rng.setstate((ck["rng"][0], tuple(ck["rng"][1]), ck["rng"][2]))
        logger.info("resuming %s after epoch %d", exp, ck["epoch"])
    logger.info("LM %s: %d parameters; %d train / %d dev sentences; device %s",
                type(model).__name__, n_params, len(train_seqs), len(dev_seqs), dev)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="sum")
    epoch = start_epoch - 1  # a run killed after its last checkpoint resumes with no epoch left
    for epoch in range(start_epoch, int(tr.max_epochs) + 1):
        t0 = time.perf_counter()
        model.train()
        tot_loss, tot_tok = 0.0, 0
        for idx in _batches(train_seqs, int(dc.max_tokens), rng):
            inp, tgt = _tensors(train_seqs, idx)
            inp, tgt = inp.to(dev), tgt.to(dev)
            logits = model(inp)
            n = int((tgt != -100).sum())
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1))
            opt.zero_grad()
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.optim.clip))
            opt.step()
            tot_loss += float(loss.detach())
            tot_tok += n
        ppl = perplexity(model, dev_seqs) if dev_seqs else None
        seconds += time.perf_counter() - t0
        improved = ppl is None or ppl < best
        if improved:
            best, bad = (ppl if ppl is not None else best), 0
            save_checkpoint(ckdir / "best.pt", {"model": model.state_dict()})
        else:
            bad += 1
        row = {"epoch": epoch, "train_loss_per_token": tot_loss / max(1, tot_tok),
               "dev_ppl": ppl, "seconds": round(time.perf_counter() - t0, 2)}
        with open(exp / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        logger.info("epoch %d: train loss %.4f per token, dev perplexity %s%s", epoch,
                    row["train_loss_per_token"], f"{ppl:.3f}" if ppl is not None else "-",
                    " (best)" if improved and ppl is not None else "")
        state = rng.getstate()
        save_checkpoint(ckdir / "last.pt", {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
            "best": best, "bad": bad, "seconds": seconds,
            "rng": [state[0], list(state[1]), state[2]]})
        if dev_seqs and bad >= int(tr.patience):
            logger.info("dev perplexity has not improved for %d epochs; stopping", bad)
            break
    with atomic_write(exp / "train_summary.json") as f:
        json.dump({"model": type(model).__name__, "num_params": n_params,
                   "epochs": epoch, "train_seconds": round(seconds, 1),
                   "best_dev_ppl": best if dev_seqs else None}, f, indent=1)
    mark_done(exp)
    return exp


def load_lm(exp_dir: str | os.PathLike, device: str | torch.device = "cpu"
            ) -> tuple[TokenLM, Tokenizer]:
    """The best checkpoint of a trained LM experiment and its tokenizer (the experiment's
    copy, :func:`asrkit.exp.expdir.exp_tokenizer_path`).

    Raises:
        FileNotFoundError: no ``config.yaml``, ``checkpoints/best.pt`` or tokenizer.
    """
    exp = Path(exp_dir)
    for f in ("config.yaml", "checkpoints/best.pt"):
        if not (exp / f).is_file():
            raise FileNotFoundError(f"{exp / f} not found; expected an asrkit train-lm "
                                    "experiment")
    cfg = OmegaConf.load(exp / "config.yaml")
    model = instantiate(cfg.model, vocab_size=int(cfg.vocab_size))
    ck = load_checkpoint(exp / "checkpoints" / "best.pt")
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), load_exp_tokenizer(exp, cfg)


class NeuralSentenceLM:
    """Sentence log-probabilities (natural log, ends included) from an ``asrkit train-lm``
    experiment, for :func:`asrkit.lm.rescore.rescore_nbest`.

    Args:
        exp_dir: the LM experiment.
        device: where to run it.
    """

    def __init__(self, exp_dir: str | os.PathLike, device: str = "auto") -> None:
        self.model, self.tok = load_lm(exp_dir, pick_device(device))

    def score(self, texts, batch_size: int = 64) -> list[float]:
        """Natural-log ``P(text <eos>)`` of each text."""
        return self.model.sentence_logprob([self.tok.encode(t) for t in texts], batch_size)
