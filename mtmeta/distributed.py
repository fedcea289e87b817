"""Data-parallel training with torch.distributed, launched by `torchrun`.

    torchrun --nproc_per_node 2 -m mtmeta.cli train --config recipes/quick.yaml

Every worker holds a full copy of the model and draws its own batches
(its task sampler is seeded with `rank_seed`); after each worker's backward
the gradients are averaged across workers before the one optimiser step, so
the parameters stay identical everywhere. Rank 0 alone validates, writes
checkpoints and logs; its decisions (budget, early stop, an interrupt seen
by any worker) are shared so every worker stops on the same step.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a
no-op and training is the plain single-process loop.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

# The process group is the only state: made by init_from_env, gone after shutdown.


def available() -> bool:
    return dist.is_available()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, and in a single-process run."""
    return get_rank() == 0


def is_distributed() -> bool:
    return get_world_size() > 1


def init_from_env(timeout_minutes: float | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT in the environment); returns (rank, world_size).

    Single process (no WORLD_SIZE, or 1): does nothing and returns (0, 1).
    Calling it again once joined returns the group's (rank, world_size).
    Backend: gloo on CPU; with CUDA, NCCL for CUDA tensors and gloo for CPU
    tensors (the engine's small control messages, and a model kept on CPU).
    """
    if is_initialized():
        return get_rank(), get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or "RANK" not in os.environ:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if timeout_minutes is None:  # validation on rank 0 makes the others wait: be generous
        timeout_minutes = float(os.environ.get("MTMETA_DIST_TIMEOUT_MIN", "60"))
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    """Leave the process group (no-op when not in one)."""
    if is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each worker; rank 0 keeps `seed`, so rank 0's
    batches are those a single-process run with the same seed would draw."""
    return int(seed) + 1_000_003 * int(rank)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _tensors(module_or_tensors: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(module_or_tensors, nn.Module):
        return list(module_or_tensors.parameters()) + list(module_or_tensors.buffers())
    return list(module_or_tensors)


@torch.no_grad()
def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite the tensors on every rank with rank `src`'s values, in place."""
    if not is_distributed():
        return
    seen: set[int] = set()
    for t in tensors:
        if id(t) in seen:  # shared (tied) weights: once
            continue
        seen.add(id(t))
        data = t.data
        if data.is_contiguous():
            dist.broadcast(data, src)
        else:
            buf = data.contiguous()
            dist.broadcast(buf, src)
            data.copy_(buf)


def broadcast_parameters(model: nn.Module | Iterable[torch.Tensor], src: int = 0) -> None:
    """Rank 0's parameters and buffers to every rank (at the start of training)."""
    broadcast_tensors(_tensors(model), src)


@torch.no_grad()
def all_reduce_gradients(params: Iterable[torch.Tensor], bucket_elements: int = 1 << 24) -> None:
    """Average `.grad` over all ranks, in place.

    A parameter whose grad is None on some ranks (a per-language embedding
    table only the other ranks' languages touched) counts as a zero gradient
    there and gets the averaged gradient on every rank. One that no rank
    touched keeps grad None everywhere, so the optimiser skips it on every
    rank alike, as it would in a single process. Grads are averaged (sum /
    world size), like DistributedDataParallel.
    """
    world = get_world_size()
    if world <= 1:
        return
    params = list({id(p): p for p in params}.values())  # unique (tied weights once), in order
    if not params:
        return
    # Which parameters have a gradient anywhere: one small all-reduce.
    device = params[0].grad.device if params[0].grad is not None else params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # Flatten into buckets of one dtype and device, reduce, copy back.
    groups: dict[tuple, list[nn.Parameter]] = {}
    for p in live:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in groups.values():
        bucket: list[nn.Parameter] = []
        size = 0
        for p in group:
            bucket.append(p)
            size += p.grad.numel()
            if size >= bucket_elements:
                _reduce_bucket(bucket, world)
                bucket, size = [], 0
        if bucket:
            _reduce_bucket(bucket, world)


def _reduce_bucket(bucket: list[torch.Tensor], world: int) -> None:
    flat = torch.cat([p.grad.reshape(-1) for p in bucket])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    offset = 0
    for p in bucket:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (float64)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(values: list[float]) -> list[float]:
    """Element-wise maximum of a few numbers over all ranks (float64)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable object, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
