"""Several training processes (DDP under ``torchrun`` or ``accelerate launch``): who writes, and agreeing on a stop.

``torchrun --nproc_per_node N -m trainer ...`` and ``accelerate launch --multi_gpu --num_processes N
-m trainer ...`` start one process per GPU with ``RANK`` and ``WORLD_SIZE`` set, and the Trainer
wraps the model in DistributedDataParallel: each process trains on its share of every batch. The
run directory has one writer: rank 0 writes the config, status, metrics, checkpoints' bookkeeping,
adapter and card; the other ranks train and stay silent. A stop request (STOP file or signal) seen
by any process stops all of them after the same step; otherwise the others would wait forever in
the next gradient all-reduce.
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank (0 without a distributed launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    """Whether this process writes the run directory."""
    return rank() == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on at least one (a collective: all ranks must call it)."""
    if not _initialized():
        return flag
    import torch
    import torch.distributed as dist

    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def wait_for_everyone() -> None:
    if _initialized():
        import torch.distributed as dist

        dist.barrier()
