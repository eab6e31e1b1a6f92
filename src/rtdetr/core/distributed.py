"""Multi-process training through `torchrun` (PyTorch DDP). No launcher of our own: torchrun
sets RANK, WORLD_SIZE and LOCAL_RANK, and every process runs the same training code."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str) -> torch.device:
    """Join the process group when started by torchrun; returns this process's device."""
    if not launched_by_torchrun() or dist.is_initialized():
        return _local_device(device)
    use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _local_device(device)


def _local_device(device: str) -> torch.device:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if launched_by_torchrun():
            index = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
    return torch.device(device)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs across processes (every process gets the result)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / world_size() for k, v in zip(keys, t.tolist())}


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of parameters that DDP does not wrap (a run's extra modules) over the
    processes, so that they step alike everywhere; a missing gradient counts as zeros."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_gather(obj) -> list:
    """Every process's `obj` (picklable), in rank order, on every process; `[obj]` in a single process.
    With NCCL, `torch.cuda.set_device` must have been called first (`init_distributed` does)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj):
    """Rank 0's `obj` on every process."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
