"""Process-group helpers for data-parallel training launched by PyTorch's ``torchrun``.

asrkit has no launcher of its own: ``torchrun`` starts one process per GPU (or CPU worker) and
sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``) in
each one's environment::

    torchrun --nproc_per_node=4 -m asrkit.cli train exp_dir=exp/x ...            # one node
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
        --master_addr=host0 --master_port=29500 -m asrkit.cli train ...          # node 0 of 2

:func:`distributed` reads that environment, initialises the default process group (NCCL on
CUDA, Gloo on CPU; ``init_method="env://"``), pins each process to GPU ``LOCAL_RANK`` and
tears the group down afterwards. Without ``WORLD_SIZE > 1`` it does nothing, and every other
helper here is then a no-op, so the training loop has one code path for 1 and N processes.

Multi-node runs assume a filesystem shared by all nodes for the data dirs and ``exp_dir``
(every rank reads the features and, when resuming, ``checkpoints/last.pt``; only rank 0
writes), as Kaldi/ESPnet cluster setups do.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce",
    "all_true",
    "barrier",
    "broadcast_object",
    "distributed",
    "env_info",
    "unwrap",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``; rank 0 writes all outputs.
        world_size: number of processes (1 = ordinary single-process training).
        local_rank: rank within this node; the CUDA device index on GPUs.
        backend: ``"nccl"``, ``"gloo"`` or None when no process group is used.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when collectives run (a process group with more than one process)."""
        return self.world_size > 1 and self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes config, checkpoints, logs and metrics."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer "
                         "(torchrun sets WORLD_SIZE, RANK and LOCAL_RANK)") from None


def env_info() -> DistInfo:
    """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` as set by ``torchrun``.

    Returns:
        A :class:`DistInfo` with ``backend=None`` (nothing is initialised here); world size 1
        and rank 0 when the variables are absent.

    Raises:
        ValueError: a variable is not an integer, or ``RANK``/``LOCAL_RANK`` is out of range.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: WORLD_SIZE={world}, RANK={rank}, "
                         f"LOCAL_RANK={local}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def _resolve_device(preference: str | None, info: DistInfo) -> torch.device:
    """``auto``/None → CUDA when available else CPU; under DDP CUDA means ``cuda:LOCAL_RANK``."""
    if preference in (None, "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(preference)
    if device.type == "cuda" and info.world_size > 1:
        n = torch.cuda.device_count()
        if info.local_rank >= n:
            raise ValueError(f"LOCAL_RANK={info.local_rank} but this node has {n} CUDA "
                             "device(s); start at most that many processes per node")
        if device.index is not None and device.index != info.local_rank:
            logger.warning("device %s ignored under torchrun: rank %d uses cuda:%d (LOCAL_RANK)",
                           device, info.rank, info.local_rank)
        device = torch.device("cuda", info.local_rank)
    return device


@contextlib.contextmanager
def distributed(device: str | None = "auto", *, timeout_s: float = 3600.0
                ) -> Iterator[tuple[DistInfo, torch.device]]:
    """Initialise the process group ``torchrun`` asked for; yield ``(info, device)``.

    With ``WORLD_SIZE > 1`` in the environment: pins this process to ``cuda:LOCAL_RANK``
    (``torch.cuda.set_device``) on GPUs, calls ``torch.distributed.init_process_group``
    with ``nccl`` (CUDA) or ``gloo`` (CPU) and ``init_method="env://"``, and destroys the
    group on exit (also after an exception). A process group that already exists (e.g. set
    up by a test or an outer program) is reused and left alone. Without ``WORLD_SIZE > 1``
    nothing is initialised and ``info.world_size == 1``.

    Args:
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; under
            torchrun a CUDA device always becomes ``cuda:LOCAL_RANK``.
        timeout_s: collective timeout in seconds (rank 0 evaluates the dev set while the
            others wait on a barrier, so this must exceed one dev evaluation).

    Yields:
        ``(DistInfo, torch.device)`` for this process.

    Raises:
        ValueError: malformed torchrun environment, or more processes per node than GPUs.
        RuntimeError: the process group could not be initialised (from PyTorch).
    """
    info = env_info()
    dev = _resolve_device(device, info)
    if info.world_size == 1:
        yield info, dev
        return
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    created = False
    if dist.is_initialized():
        backend = dist.get_backend()
        if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
            raise RuntimeError(f"existing process group (rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}) disagrees with RANK={info.rank} "
                               f"WORLD_SIZE={info.world_size}")
    else:
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
        created = True
    info = DistInfo(rank=info.rank, world_size=info.world_size, local_rank=info.local_rank,
                    backend=str(backend))
    logger.info("process group: rank %d of %d (local rank %d), backend %s, device %s",
                info.rank, info.world_size, info.local_rank, info.backend, dev)
    try:
        yield info, dev
        if created:  # leave together: a rank tearing gloo down while another still talks to
            dist.barrier()  # it can abort ("terminate called without an active exception")
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device, *,
               find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap ``model`` (already on ``device``) in ``DistributedDataParallel`` when distributed.

    DDP broadcasts rank 0's parameters and buffers at construction and averages gradients
    over ranks in ``backward`` (the mean of the per-rank gradients). ``find_unused_parameters``
    is needed only by models whose forward leaves parameters without a gradient (e.g. an
    attention decoder trained with CTC weight 1).

    Returns:
        The DDP wrapper, or ``model`` itself when not distributed.
    """
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None,
                                   find_unused_parameters=find_unused_parameters)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (for ``state_dict``, evaluation, ``ctc_log_probs``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    """Block until every rank arrives (no-op when not distributed)."""
    if not info.enabled:
        return
    if info.backend == "nccl":
        dist.barrier(device_ids=[info.local_rank])
    else:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` elsewhere is ignored)."""
    if not info.enabled:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's picklable ``obj``, indexed by rank (``[obj]`` when not distributed)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce(values: list[float], info: DistInfo, device: torch.device, op: str = "sum"
               ) -> list[float]:
    """Element-wise ``sum`` or ``max`` of ``values`` over ranks, as float64.

    Raises:
        ValueError: unknown ``op``.
    """
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=ops[op])
    return t.tolist()


def all_true(flag: bool | torch.Tensor, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (so all ranks take the same branch)."""
    value = bool(flag.item()) if isinstance(flag, torch.Tensor) else bool(flag)
    if not info.enabled:
        return value
    return all_reduce([1.0 if value else 0.0], info, device, op="min")[0] > 0.5
