"""Generative error correction (GER): an LLM reads a recognizer's n-best list and writes the
transcript (HyPoradise, Chen et al., 2023, "HyPoradise: an open baseline for generative speech
recognition with large language models"; LoRA fine-tuning, Hu et al., 2022).

Each example is a prompt (:func:`ger_prompt`) listing the utterance's ``top_k`` hypotheses,
best first, followed by the reference transcript and EOS; a Hugging Face causal LM from a
local directory (asrkit's ``train-lm model=gpt`` export, GPT-2, Llama, Qwen2...) is fine-tuned
on these with LoRA adapters (``peft``; the LLM's own weights frozen) and cross-entropy on the
transcript tokens only. Training n-best lists should carry realistic errors: decode the
training set with models that did not see those utterances (cross-fold), or the LLM learns to
copy the 1-best.

``asrkit train-ger`` (:func:`train_ger`) writes an experiment: ``ger_config.json`` (base LLM,
prompt settings), ``adapter/`` (the LoRA weights, ``peft``'s ``save_pretrained``; replaced
atomically each epoch), ``checkpoints/last.pt`` (adapter weights, optimiser, epoch: the
resume point), ``metrics.jsonl`` (train loss, dev loss and dev WER of the corrected text
per epoch), ``train_summary.json``, ``.done``. ``asrkit correct`` (:func:`correct_nbest`)
generates a transcript per utterance (beam search, batched, KV cache); an empty or
unfinished generation falls back to the 1-best hypothesis.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from asrkit.exp.checkpoint import load_checkpoint, pick_device, save_checkpoint
from asrkit.fileio import atomic_write, is_done, mark_done, stage_log

__all__ = ["GerModel", "correct_nbest", "ger_examples", "ger_prompt", "train_ger"]

logger = logging.getLogger(__name__)

CONFIG = "ger_config.json"


def ger_prompt(hyps: Sequence[str], top_k: int = 5) -> str:
    """The prompt for one utterance: its first ``top_k`` hypotheses, best first, numbered,
    then ``Transcript:``."""
    lines = [f"{i}. {h}" for i, h in enumerate(hyps[:top_k], 1)]
    return "Hypotheses:\n" + "\n".join(lines) + "\nTranscript:"


def ger_examples(nbest: Mapping[str, list[tuple[str, float]]], refs: Mapping[str, str]
                 ) -> list[tuple[str, list[str], str]]:
    """``(utt, hypotheses best first, reference)`` for every utterance in both (sorted).

    Raises:
        ValueError: no utterance in common (names a few ids of each).
    """
    common = sorted(set(nbest) & set(refs))
    if not common:
        raise ValueError(f"no utterance is both in the n-best lists ({sorted(nbest)[:3]}...) "
                         f"and in the references ({sorted(refs)[:3]}...)")
    return [(u, [h for h, _ in nbest[u]], refs[u]) for u in common]


class GerModel:
    """A causal LM with LoRA adapters that corrects n-best lists.

    Args:
        llm: the base model's local directory.
        adapter: a saved adapter directory to load (None: new adapters with ``lora``).
        lora: ``{"r", "alpha", "dropout", "target_modules"}`` for new adapters.
        top_k: hypotheses shown to the LLM.
        case: ``keep`` or ``lower`` (texts lower-cased for the LLM, its output upper-cased).
        device: where to run.

    Raises:
        FileNotFoundError, ImportError: as :func:`asrkit.lm.hf.load_hf_causal_lm`; no peft.
    """

    def __init__(self, llm: str | os.PathLike, *, adapter: str | os.PathLike | None = None,
                 lora: Mapping | None = None, top_k: int = 5, case: str = "keep",
                 device: str | torch.device = "cpu") -> None:
        from peft import PeftModel

        from asrkit.lm.hf import add_lora, load_hf_causal_lm

        base, self.tok = load_hf_causal_lm(llm)
        base.requires_grad_(False)
        if adapter is not None:
            self.model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        else:
            self.model = add_lora(base, lora)
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model.to(self.device)
        self.top_k, self.case = int(top_k), case
        tok = self.tok
        if tok.eos_token_id is None:
            raise ValueError(f"{llm}: the tokenizer has no EOS token")
        self.eos = tok.eos_token_id
        self.bos = tok.bos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos

    def _text(self, s: str) -> str:
        return s.lower() if self.case == "lower" else s

    def _prompt_ids(self, hyps: Sequence[str]) -> list[int]:
        ids = self.tok(self._text(ger_prompt(hyps, self.top_k)),
                       add_special_tokens=False)["input_ids"]
        return ([self.bos] if self.bos is not None else []) + ids

    def loss(self, batch: Sequence[tuple[str, list[str], str]]) -> torch.Tensor:
        """Summed cross-entropy of the references' tokens (and EOS) / batch size."""
        rows, labels = [], []
        for _, hyps, ref in batch:
            p = self._prompt_ids(hyps)
            y = self.tok(" " + self._text(ref), add_special_tokens=False)["input_ids"]
            rows.append(p + y + [self.eos])
            labels.append([-100] * len(p) + y + [self.eos])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, (r, la) in enumerate(zip(rows, labels)):
            ids[i, :len(r)], lab[i, :len(la)], mask[i, :len(r)] = (
                torch.tensor(r), torch.tensor(la), 1)
        ids, lab, mask = ids.to(self.device), lab.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100,
            reduction="sum") / len(rows)

    @torch.no_grad()
    def correct(self, examples: Sequence[tuple[str, list[str]]], *, beam: int = 1,
                batch_size: int = 8, max_new_tokens: int = 128) -> dict[str, str]:
        """``{utt: corrected text}`` for ``(utt, hypotheses)`` pairs: beam search
        (``generate``, left-padded batches, KV cache); an empty output or one that did not
        reach EOS within ``max_new_tokens`` falls back to the 1-best."""
        self.model.eval()
        out: dict[str, str] = {}
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            prompts = [self._prompt_ids(h) for _, h in chunk]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
            mask = torch.zeros(len(prompts), width, dtype=torch.long)
            for j, p in enumerate(prompts):
                ids[j, width - len(p):], mask[j, width - len(p):] = torch.tensor(p), 1
            gen = self.model.generate(input_ids=ids.to(self.device),
                                      attention_mask=mask.to(self.device), num_beams=beam,
                                      max_new_tokens=max_new_tokens, eos_token_id=self.eos,
                                      pad_token_id=self.pad, do_sample=False)
            for (utt, hyps), seq in zip(chunk, gen[:, width:].tolist()):
                done = self.eos in seq
                seq = seq[:seq.index(self.eos)] if done else seq
                text = " ".join(self.tok.decode(seq, skip_special_tokens=True).split())
                text = text.upper() if self.case == "lower" else text
                out[utt] = text if done and text else (hyps[0] if hyps else "")
        return out


def _wer(refs: Mapping[str, str], hyps: Mapping[str, str]) -> float:
    from asrkit.score import score_texts

    return score_texts(dict(refs), dict(hyps)).wer.rate


def train_ger(train: Sequence[tuple[str, list[str], str]], exp_dir: str | os.PathLike, *,
              llm: str | os.PathLike, dev: Sequence[tuple[str, list[str], str]] = (),
              lora: Mapping | None = None, top_k: int = 5, case: str = "keep",
              epochs: int = 3, lr: float = 5e-4, batch_size: int = 8, seed: int = 0,
              device: str = "auto") -> Path:
    """Fine-tune LoRA adapters of ``llm`` on n-best → transcript examples (module
    docstring); resumes from ``checkpoints/last.pt``; a finished experiment (``.done``) is
    left as it is.

    Args:
        train, dev: :func:`ger_examples` lists.
        exp_dir: the experiment directory.
        llm: base causal LM directory.
        lora, top_k, case: as :class:`GerModel`.
        epochs, lr, batch_size, seed: AdamW on the adapters, shuffled batches of examples.
        device: ``auto``, ``cpu``, ``cuda:0``...

    Returns:
        ``exp_dir``.

    Raises:
        ValueError: no training example.
    """
    exp = Path(exp_dir)
    if is_done(exp):
        logger.info("%s is complete (.done exists); nothing to train", exp)
        return exp
    if not train:
        raise ValueError("no training example (n-best lists with references)")
    exp.mkdir(parents=True, exist_ok=True)
    with stage_log(exp / "train.log"):
        torch.manual_seed(seed)
        dev_ = pick_device(device)
        m = GerModel(llm, lora=lora, top_k=top_k, case=case, device=dev_)
        with atomic_write(exp / CONFIG) as f:
            json.dump({"llm": str(Path(llm).resolve()), "top_k": top_k, "case": case,
                       "lora": dict(lora or {})}, f, indent=1)
        params = [p for p in m.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr)
        start, seconds = 1, 0.0
        ck_path = exp / "checkpoints" / "last.pt"
        if ck_path.is_file():
            ck = load_checkpoint(ck_path, map_location=dev_)
            m.model.load_state_dict(ck["adapter"], strict=False)
            opt.load_state_dict(ck["optimizer"])
            start, seconds = ck["epoch"] + 1, ck["seconds"]
            logger.info("resuming %s after epoch %d", exp, ck["epoch"])
        logger.info("GER: %s + LoRA (%d trainable parameters); %d train / %d dev examples",
                    llm, sum(p.numel() for p in params), len(train), len(dev))
        for epoch in range(start, epochs + 1):
            t0 = time.perf_counter()
            m.model.train()
            order = list(range(len(train)))
            random.Random(seed * 1000 + epoch).shuffle(order)
            tot = 0.0
            for i in range(0, len(order), batch_size):
                loss = m.loss([train[j] for j in order[i:i + batch_size]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                tot += float(loss.detach()) * len(order[i:i + batch_size])
            row = {"epoch": epoch, "train_loss": tot / len(train)}
            if dev:
                m.model.eval()
                with torch.no_grad():
                    row["dev_loss"] = sum(float(m.loss(dev[i:i + batch_size])) * len(
                        dev[i:i + batch_size]) for i in range(0, len(dev), batch_size)) / len(dev)
                refs = {u: r for u, _, r in dev}
                row["dev_wer"] = _wer(refs, m.correct([(u, h) for u, h, _ in dev],
                                                      batch_size=batch_size))
                row["dev_wer_1best"] = _wer(refs, {u: (h[0] if h else "") for u, h, _ in dev})
            seconds += time.perf_counter() - t0
            row["seconds"] = round(time.perf_counter() - t0, 2)
            _save_adapter(m, exp / "adapter")
            save_checkpoint(ck_path, {
                "adapter": {k: v for k, v in m.model.state_dict().items() if "lora_" in k},
                "optimizer": opt.state_dict(), "epoch": epoch, "seconds": seconds})
            with open(exp / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("epoch %d: train loss %.3f%s", epoch, row["train_loss"],
                        f", dev loss {row['dev_loss']:.3f}, dev WER {row['dev_wer']:.2f} "
                        f"(1-best {row['dev_wer_1best']:.2f})" if dev else "")
        with atomic_write(exp / "train_summary.json") as f:
            json.dump({"llm": str(llm), "epochs": epochs, "train_seconds": round(seconds, 1),
                       "train_examples": len(train), "dev_examples": len(dev)}, f, indent=1)
        mark_done(exp)
    return exp


def _save_adapter(m: GerModel, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m.model.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def correct_nbest(nbest: Mapping[str, list[tuple[str, float]]], ger_exp: str | os.PathLike,
                  *, beam: int = 1, batch_size: int = 8, max_new_tokens: int = 128,
                  device: str = "auto") -> dict[str, str]:
    """Correct every utterance of an n-best list with a trained GER experiment (or, with
    ``ger_exp="hf:DIR"``, zero-shot with the base LLM of that directory).

    Returns:
        ``{utt: text}``.

    Raises:
        FileNotFoundError: ``ger_exp`` lacks ``ger_config.json`` or ``adapter/`` (or the
            base LLM it names is gone).
    """
    if str(ger_exp).startswith("hf:"):  # zero-shot: the base LLM (new LoRA is the identity)
        m = GerModel(str(ger_exp)[3:], device=device)
        return m.correct([(u, [h for h, _ in hyps]) for u, hyps in sorted(nbest.items())],
                         beam=beam, batch_size=batch_size, max_new_tokens=max_new_tokens)
    exp = Path(ger_exp)
    for f in (CONFIG, "adapter"):
        if not (exp / f).exists():
            raise FileNotFoundError(f"{exp / f} not found; expected an asrkit train-ger "
                                    "experiment")
    cfg = json.loads((exp / CONFIG).read_text(encoding="utf-8"))
    m = GerModel(cfg["llm"], adapter=exp / "adapter", top_k=cfg["top_k"], case=cfg["case"],
                 device=device)
    t0 = time.perf_counter()
    out = m.correct([(u, [h for h, _ in hyps]) for u, hyps in sorted(nbest.items())],
                    beam=beam, batch_size=batch_size, max_new_tokens=max_new_tokens)
    logger.info("corrected %d utterances in %.1f s", len(out), time.perf_counter() - t0)
    return out
