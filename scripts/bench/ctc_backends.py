#!/usr/bin/env python3
"""Compare CTC beam search backends: asrkit's prefix beam search and Flashlight's decoder.

Usage:
    python scripts/bench/ctc_backends.py [--utts 100] [--vocab 150] [--beam 10]
        [--token-topk K] [--fl-beam B] [--lm ARPA | --no-lm] [--lm-weight 0.5]
        [--word-bonus 0] [--seed 0] [--out bench_results/ctc_backends.json]
    python scripts/bench/ctc_backends.py --exp EXP --data DATA_DIR [--device cpu] [...]

Posteriors. Without ``--exp``, synthetic but shaped like a trained model's: a made-up language
(pseudo-words from syllables, sentences from a sparse word bigram chain so that an LM helps), a
BPE tokenizer of ``--vocab`` pieces trained on 2000 of its sentences, and for each of ``--utts``
test sentences, spiky CTC posteriors of its pieces (1-2 frames per piece, 1-3 blank frames
between, noise on every frame, and in 20% of the pieces a confusable token almost as likely as
the right one). The word trigram (interpolated Kneser-Ney, ``asrkit.lm.ngram``) is estimated on
the training sentences unless ``--lm`` gives an ARPA file. With ``--exp`` and ``--data``, the
posteriors are those of a trained experiment (``asrkit.exp.checkpoint.load_model``, the last
checkpoint) on a feature data dir, as ``asrkit decode`` computes them, and ``--lm`` is optional.

Backends, all on one CPU thread, over the same posteriors (decoder construction not timed):

* ``asrkit``: :func:`asrkit.decode.ctc.ctc_prefix_beam_search_batch` (``--beam`` prefixes,
  ``--token-topk`` tokens per frame, default the beam), and with the LM, word n-gram shallow
  fusion (:class:`asrkit.lm.fusion.WordNgramScorer`);
* ``flashlight``: :class:`asrkit.decode.flashlight.FlashlightCTCDecoder` lexicon-free
  (``--fl-beam`` states, default twice the beam since Flashlight counts prefixes twice; token
  beam ``token_topk + 1``), with the LM through asrkit's NgramLM;
* ``flashlight-lexicon``: lexicon mode over the LM's words (its 1-grams), with KenLM when
  compiled in (``kenlm``) and with asrkit's NgramLM (``asrkit``).

For each: utterances/s, the agreement of its 1-best with the asrkit backend of the same LM
setting (identical token ids, and identical text), and the WER against the references (the
synthetic sentences, or the data dir's ``text``). Prints a markdown table and appends JSON lines
to ``--out``; numbers depend on the machine, so compare runs from the same one. Needs
``pip install 'asrkit[flashlight]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from asrkit.decode.ctc import ctc_prefix_beam_search_batch
from asrkit.decode.flashlight import FlashlightCTCDecoder, kenlm_available
from asrkit.fileio import atomic_write
from asrkit.lm.fusion import WordNgramScorer
from asrkit.lm.ngram import BOS, EOS, UNK, estimate_ngram, read_arpa, write_arpa
from asrkit.score import score_texts
from asrkit.text.tokenizer import BLANK_ID, Tokenizer, train_tokenizer

BATCH = 16


def make_language(seed: int, n_words: int = 300, n_train: int = 2000
                  ) -> tuple[list[str], Callable[[random.Random], str]]:
    """Pseudo-words and a sentence sampler (a sparse bigram chain); returns the training
    sentences and ``sample(rng) -> sentence``."""
    rng = random.Random(seed)
    syl = [c + v for c in "BDFGKLMNPRSTVZ" for v in "AEIOU"]
    words = sorted({"".join(rng.choice(syl) for _ in range(rng.randint(1, 3)))
                    for _ in range(n_words * 2)})[:n_words]
    nxt = {w: rng.sample(words, 4) for w in words}

    def sample(r: random.Random) -> str:
        w = r.choice(words)
        out = [w]
        for _ in range(r.randint(2, 9)):
            w = r.choice(nxt[w]) if r.random() < 0.9 else r.choice(words)
            out.append(w)
        return " ".join(out)

    return [sample(rng) for _ in range(n_train)], sample


def synth_posteriors(ids: list[int], vocab: int, g: torch.Generator) -> torch.Tensor:
    """(T, V) spiky CTC log posteriors for token ids (see the module docstring)."""
    frames, confusers = [], []
    for tok in ids:
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            frames.append(tok)
            confusers.append(int(torch.randint(3, vocab, (1,), generator=g))
                             if float(torch.rand(1, generator=g)) < 0.2 else -1)
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            frames.append(BLANK_ID)
            confusers.append(-1)
    logits = torch.randn(len(frames), vocab, generator=g) * 1.0
    rows = torch.arange(len(frames))
    logits[rows, torch.tensor(frames)] += 7.0
    for t, c in enumerate(confusers):
        if c >= 0:
            logits[t, c] += 7.0 - float(torch.rand(1, generator=g)) * 1.5
    return logits.log_softmax(-1)


def synthetic(args, tmp: Path) -> tuple[Tokenizer, list[str], list[torch.Tensor], list[str],
                                         Path | None]:
    """Tokenizer, utterance ids, posteriors, references and LM path of the synthetic set."""
    train, sample = make_language(args.seed)
    text = tmp / "text"
    text.write_text("".join(f"t{i:05d} {s}\n" for i, s in enumerate(train)))
    tok = Tokenizer(train_tokenizer(text, tmp / "bpe", model_type="bpe", vocab_size=args.vocab))
    rng, g = random.Random(args.seed + 1), torch.Generator().manual_seed(args.seed)
    refs = [sample(rng) for _ in range(args.utts)]
    posts = [synth_posteriors(tok.encode(s), tok.vocab_size, g) for s in refs]
    lm = args.lm
    if lm is None and not args.no_lm:
        lm = tmp / "lm.arpa"
        write_arpa(estimate_ngram(train, order=3), lm)
    return tok, [f"u{i:05d}" for i in range(args.utts)], posts, refs, lm


@torch.inference_mode()
def from_experiment(args) -> tuple[Tokenizer, list[str], list[torch.Tensor], list[str] | None]:
    """Tokenizer, utterance ids, posteriors and references (None without ``text``) of a
    trained experiment on a feature data dir."""
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.data.dataset import FeatureDataset, collate, frame_batches
    from asrkit.decode.run import pick_device
    from asrkit.exp.checkpoint import load_model
    from asrkit.exp.expdir import load_exp_tokenizer

    dev = pick_device(args.device)
    model, cfg = load_model(args.exp, device=dev)
    tok = load_exp_tokenizer(args.exp, cfg)
    ds = FeatureDataset(args.data, None, max_frames=10**9)
    ids, posts = [], []
    for idx in frame_batches(ds.lengths, 60000, shuffle=False):
        batch = collate([ds[i] for i in idx])
        lp, lens = model.ctc_log_probs(batch["feats"].to(dev), batch["feat_lens"].to(dev))
        lp = lp.cpu()
        for b, utt in enumerate(batch["ids"]):
            ids.append(utt)
            posts.append(lp[b, :int(lens[b])].clone())
    text = Path(args.data) / "text"
    refs = None
    if text.is_file():
        ref_map = read_kaldi_map(text)
        refs = [ref_map.get(u, "") for u in ids]
    return tok, ids, posts, refs


def run(decode, posts: list[torch.Tensor]) -> tuple[list[list[int]], float]:
    """1-best token ids of every utterance, in batches of BATCH, and the wall time."""
    out = []
    start = time.perf_counter()
    for i in range(0, len(posts), BATCH):
        chunk = posts[i:i + BATCH]
        lens = torch.tensor([p.size(0) for p in chunk])
        padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        out += [res[0][0] for res in decode(padded, lens)]
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, help="trained experiment (with --data)")
    p.add_argument("--data", type=Path, help="feature data dir to decode (with --exp)")
    p.add_argument("--device", default="cpu", help="for the acoustic model (--exp)")
    p.add_argument("--utts", type=int, default=100, help="synthetic utterances")
    p.add_argument("--vocab", type=int, default=150, help="synthetic BPE vocabulary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--token-topk", type=int, default=None)
    p.add_argument("--fl-beam", type=int, default=None, help="Flashlight beam (2 x --beam)")
    p.add_argument("--lm", type=Path, help="word n-gram ARPA (synthetic: estimated if absent)")
    p.add_argument("--no-lm", action="store_true", help="skip the LM runs")
    p.add_argument("--lm-weight", type=float, default=0.5)
    p.add_argument("--word-bonus", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=Path("bench_results/ctc_backends.json"))
    args = p.parse_args(argv)
    if (args.exp is None) != (args.data is None):
        p.error("--exp and --data go together")
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    topk = args.token_topk or args.beam
    fl_beam = args.fl_beam or 2 * args.beam

    with tempfile.TemporaryDirectory() as tmp:
        if args.exp is not None:
            tok, ids, posts, refs = from_experiment(args)
            lm_path, source = (None if args.no_lm else args.lm), str(args.data)
        else:
            tok, ids, posts, refs, lm_path = synthetic(args, Path(tmp))
            source = f"synthetic(vocab={tok.vocab_size},seed={args.seed})"
        pieces = tok.pieces(list(range(tok.vocab_size)))
        frames = sum(x.size(0) for x in posts)
        lm = read_arpa(lm_path) if lm_path else None

        # (name, lm on?, decode function) -- constructed before timing
        runs = [("asrkit", False, lambda x, n: ctc_prefix_beam_search_batch(
                    x, n, args.beam, token_topk=topk)),
                ("flashlight", False, FlashlightCTCDecoder(
                    pieces, beam=fl_beam, beam_size_token=topk + 1).decode)]
        if lm is not None:
            scorer = WordNgramScorer(lm, pieces, word_bonus=args.word_bonus)

            def fused(x, n):
                res = ctc_prefix_beam_search_batch(
                    x, n, args.beam, token_topk=topk, scorer=scorer,
                    lm_weight=args.lm_weight, final_scorer=scorer.final)
                scorer.reset()
                return res

            fl = {"beam": fl_beam, "beam_size_token": topk + 1, "lm_weight": args.lm_weight,
                  "word_bonus": args.word_bonus}
            words = sorted(lm.vocab - {BOS, EOS, UNK})
            runs += [("asrkit", True, fused),
                     ("flashlight", True, FlashlightCTCDecoder(pieces, lm=lm, **fl).decode)]
            lex = [("flashlight-lexicon-asrkitlm", "asrkit")]
            if kenlm_available():
                lex.insert(0, ("flashlight-lexicon-kenlm", "kenlm"))
            for name, backend in lex:
                dec = FlashlightCTCDecoder.from_tokenizer(
                    tok, lexicon=words, lm=lm_path if backend == "kenlm" else lm,
                    lm_backend=backend, **fl)
                runs.append((name, True, dec.decode))

        rows, base = [], {}
        for name, with_lm, decode in runs:
            hyps, wall = run(decode, posts)
            texts = [" ".join(tok.decode(h).split()) for h in hyps]
            if name == "asrkit":
                base[with_lm] = (hyps, texts)
            ref_ids, ref_texts = base[with_lm]
            row = {"backend": name, "lm": str(lm_path) if with_lm else None,
                   "lm_weight": args.lm_weight if with_lm else None,
                   "word_bonus": args.word_bonus if with_lm else None,
                   "beam": args.beam if name == "asrkit" else fl_beam, "token_topk": topk,
                   "source": source, "utts": len(posts), "frames": frames,
                   "wall_s": round(wall, 3), "utts_per_s": round(len(posts) / wall, 1),
                   "agree_ids": round(sum(a == b for a, b in zip(hyps, ref_ids)) / len(hyps), 4),
                   "agree_text": round(sum(a == b for a, b in zip(texts, ref_texts))
                                       / len(texts), 4),
                   "wer": None, "threads": 1, "machine": platform.processor()
                   or platform.machine(), "torch": torch.__version__}
            if refs is not None:
                rep = score_texts(dict(zip(ids, refs)), dict(zip(ids, texts)))
                row["wer"] = round(rep.wer.rate, 2)
            rows.append(row)

    print(f"CTC backends on {source}: {len(posts)} utterances, {frames} frames, beam "
          f"{args.beam} (Flashlight {fl_beam}), token top-k {topk}, 1 thread")
    print("| backend | LM | utts/s | speed-up | agree (ids) | agree (text) | WER % |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    speed = {r["lm"] is not None: r["utts_per_s"] for r in rows if r["backend"] == "asrkit"}
    for r in rows:
        with_lm = r["lm"] is not None
        print(f"| {r['backend']} | {'yes' if with_lm else 'no'} | {r['utts_per_s']:.1f} | "
              f"{r['utts_per_s'] / speed[with_lm]:.1f}x | {100 * r['agree_ids']:.1f}% | "
              f"{100 * r['agree_text']:.1f}% | "
              f"{'-' if r['wer'] is None else format(r['wer'], '.2f')} |")
    old = args.out.read_text() if args.out.is_file() else ""
    with atomic_write(args.out) as f:
        f.write(old + "".join(json.dumps(r) + "\n" for r in rows))
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
