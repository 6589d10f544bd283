"""Buffered (chunked) CTC inference: the CTC posteriors of an utterance of any length in
memory bounded by a window.

Self-attention costs O(T²) memory in the encoder frames T (a 1-hour utterance asked one
Transformer for 127 GB), so a long utterance is encoded in overlapping windows, as NeMo's
buffered CTC inference does (``FrameBatchASR`` in
``nemo/collections/asr/parts/utils/streaming_utils.py``; ``examples/asr/asr_chunked_inference``
in the NeMo repository, whose README sets out the chunk / context-buffer trade-off): the encoder
and CTC layer see a window of ``chunk`` frames plus ``context`` frames on each side, only the
posteriors of the centre ``chunk`` are kept, and the kept parts, concatenated, are the
utterance's posterior sequence, which any CTC search then reads as if it came from one
encoder pass. At the two ends of the utterance the missing context is simply not there, as
in the unchunked pass.

Frames line up exactly: windows start at multiples of the front end's input stride
(:meth:`asrkit.models.base.CTCModel.encoder_frame_stride`, ×4 for the shared conv front end,
×2 frames of 160 samples for wav2vec 2.0), so a window's encoder frame ``j`` is encoder frame
``offset + j`` of the whole utterance, and the last window ends where the utterance ends, so
the stitched sequence has exactly the unchunked length
(:meth:`~asrkit.models.base.CTCModel.encoder_output_lengths`). A model whose receptive field
fits in the context (a CNN, :class:`asrkit.models.cnn.CNNCTC` with small kernels) gives the
unchunked posteriors up to float rounding; with attention or bidirectional recurrence each
frame sees its window instead of the whole utterance, the approximation buffered inference
makes (more context: closer to the unchunked posteriors, more compute per kept frame).

Memory: the features of the utterance, the stitched ``(T', V)`` float32 posteriors (92 MB an
hour at 40 ms frames and V = 256) and one batch of windows (at most ``max_frames`` padded
input frames) at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Window", "chunked_ctc_log_probs", "plan_windows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One encoder window of a chunked utterance.

    Attributes:
        start: first input frame (10 ms) of the window.
        end: input frame past its last one.
        offset: encoder frame of the whole utterance that is the window's encoder frame 0.
        keep_start: first encoder frame of the whole utterance taken from this window.
        keep_end: encoder frame past the last one taken (the next window's ``keep_start``).
    """

    start: int
    end: int
    offset: int
    keep_start: int
    keep_end: int


def plan_windows(num_frames: int, chunk_frames: int, context_frames: int,
                 stride: tuple[int, int], output_length: Callable[[int], int]) -> list[Window]:
    """The windows that cover an utterance, their kept parts tiling its encoder frames.

    Kept parts hold ``chunk_frames // n_in * n_out`` encoder frames (the last one the rest);
    each window adds ``ceil(context_frames / n_in) * n_out`` encoder frames of context on
    either side where the utterance has them, and extends its input until the encoder
    yields them (the front end's own lookahead, e.g. 3 frames for the ×4 conv).

    Args:
        num_frames: T, input frames of the utterance.
        chunk_frames: input frames of each kept part (>= ``n_in``).
        context_frames: input frames of context on each side (>= 0).
        stride: ``(n_in, n_out)`` of :meth:`asrkit.models.base.CTCModel.encoder_frame_stride`.
        output_length: encoder frames of an input of ``n`` frames (a non-decreasing function,
            :meth:`~asrkit.models.base.CTCModel.encoder_output_lengths` for one length).

    Returns:
        Windows in order; ``windows[0].keep_start == 0``, ``windows[-1].keep_end ==
        output_length(num_frames)`` and ``windows[-1].end == num_frames``.

    Raises:
        ValueError: ``chunk_frames < n_in`` or ``context_frames < 0``.
    """
    n_in, n_out = stride
    if chunk_frames < n_in:
        raise ValueError(f"chunk of {chunk_frames} frames is shorter than the encoder's "
                         f"stride of {n_in} frames")
    if context_frames < 0:
        raise ValueError(f"context must be >= 0 frames, got {context_frames}")
    total = output_length(num_frames)
    keep = chunk_frames // n_in * n_out
    ctx = -(-context_frames // n_in) * n_out
    windows = []
    for s in range(0, total, keep):
        e = min(s + keep, total)
        offset = max(0, s - ctx)  # a multiple of n_out, as s and ctx are
        start = offset // n_out * n_in
        want = min(e + ctx, total) - offset
        if e + ctx >= total:  # its right context reaches the end: take the whole tail
            end = num_frames
        else:
            end = min(num_frames, start + -(-want // n_out) * n_in)
            while end < num_frames and output_length(end - start) < want:
                end += 1
        windows.append(Window(start, end, offset, s, e))
    return windows


@torch.inference_mode()
def chunked_ctc_log_probs(model, feats: torch.Tensor, *, chunk_frames: int,
                          context_frames: int, max_frames: int = 60000,
                          device: torch.device | str | None = None,
                          utt: str = "utterance") -> torch.Tensor:
    """CTC log-posteriors of one utterance, encoded window by window (module docstring).

    Args:
        model: a :class:`asrkit.models.base.CTCModel` in eval mode.
        feats: (T, F) features of the utterance, 10 ms frames (on any device).
        chunk_frames: input frames of each window's kept centre (e.g. 3000 = 30 s).
        context_frames: input frames of context on each side of it (e.g. 400 = 4 s).
        max_frames: padded input frames per batch of windows (at least one window a batch).
        device: where the model runs (default: its parameters' device).
        utt: the utterance id, for messages.

    Returns:
        (T', V) float32 log-posteriors on the CPU, T' = ``model.encoder_output_lengths(T)``.

    Raises:
        TypeError: the model does not say how it subsamples time.
        ValueError: bad ``chunk_frames`` / ``context_frames``.
        RuntimeError: a window's encoder output is shorter than its frame arithmetic says
            (a family whose ``encoder_output_lengths`` is wrong).
    """
    if feats.dim() != 2:
        raise ValueError(f"{utt}: features must be (T, F), got shape {tuple(feats.shape)}")
    if device is None:
        device = next(model.parameters()).device

    def output_length(n: int) -> int:
        return int(model.encoder_output_lengths(torch.tensor([n]))[0])

    num_frames = feats.shape[0]
    windows = plan_windows(num_frames, chunk_frames, context_frames,
                           model.encoder_frame_stride(), output_length)
    total = windows[-1].keep_end if windows else 0
    logger.info("%s: %d frames encoded in %d windows of %d + 2 x %d context frames", utt,
                num_frames, len(windows), chunk_frames, context_frames)
    parts: list[torch.Tensor] = []
    i = 0
    while i < len(windows):
        group = [windows[i]]
        longest = windows[i].end - windows[i].start
        while i + len(group) < len(windows):
            nxt = windows[i + len(group)]
            longest_next = max(longest, nxt.end - nxt.start)
            if longest_next * (len(group) + 1) > max_frames:
                break
            group.append(nxt)
            longest = longest_next
        i += len(group)
        x = feats.new_zeros(len(group), longest, feats.shape[1])
        for k, w in enumerate(group):
            x[k, :w.end - w.start] = feats[w.start:w.end]
        lens = torch.tensor([w.end - w.start for w in group])
        log_probs, out_lens = model.ctc_log_probs(x.to(device), lens.to(device))
        log_probs, out_lens = log_probs.cpu(), out_lens.cpu()
        for k, w in enumerate(group):
            lo, hi = w.keep_start - w.offset, w.keep_end - w.offset
            if int(out_lens[k]) < hi:
                raise RuntimeError(f"{utt}: the window of input frames {w.start}..{w.end} gave "
                                   f"{int(out_lens[k])} encoder frames, expected >= {hi}")
            parts.append(log_probs[k, lo:hi].clone())  # not a view: frees the batch
    out = torch.cat(parts) if parts else feats.new_zeros(0, 0)
    if out.shape[0] != total:  # an invariant of plan_windows
        raise RuntimeError(f"{utt}: stitched {out.shape[0]} encoder frames, expected {total}")
    return out
