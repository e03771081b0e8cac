"""Multi-process training with ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node N -m lightunetr_core train ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`init_distributed` then joins the process group. Every rank samples its own
batches (generators seeded with ``seed + rank``), the model starts identical on every rank (same
seed), gradients are averaged by DDP, and only rank 0 writes events, checkpoints and the bundle.
Cancellation is agreed on by all ranks at iteration boundaries (an all-reduce of the flag), so a
cancel file seen by one rank stops all of them at the same iteration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; otherwise a no-op."""
    if not requested():
        return DistInfo()
    if dist.is_initialized():
        return DistInfo(True, dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                        dist.get_backend())
    backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(True, dist.get_rank(), dist.get_world_size(), local_rank, backend)


def device_for(device: str, info: DistInfo) -> torch.device:
    """``cuda`` becomes ``cuda:<local_rank>`` under torchrun."""
    dev = torch.device(device)
    if info.enabled and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", info.local_rank)
    return dev


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = None
    param_device = next(model.parameters()).device
    if param_device.type == "cuda":
        device_ids = [param_device.index]
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def any_rank(flag: bool, info: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is true on at least one rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parameters_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """Whether every rank holds the same parameters (a float64 checksum gathered from all ranks)."""
    if not info.enabled:
        return True
    device = next(unwrap(model).parameters()).device if info.backend == "nccl" else torch.device("cpu")
    total = torch.zeros(1, dtype=torch.float64, device=device)
    for i, p in enumerate(unwrap(model).parameters()):
        total += (p.detach().double().to(device) * (1.0 + 1e-3 * (i % 97))).sum()
    gathered = [torch.zeros_like(total) for _ in range(info.world_size)]
    dist.all_gather(gathered, total)
    return all(bool(torch.equal(g, gathered[0])) for g in gathered)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
