"""torchrun/DDP plumbing shared by training and evaluation: process group, device, rank agreement.

fastvid never starts processes itself: ``torchrun`` does, and :func:`init_distributed` joins the
job it describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with NCCL on GPUs and gloo on CPUs.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.errors import FastvidError

__all__ = ["DistInfo", "init_distributed", "process_group", "any_rank", "unwrap"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Join the torchrun job if there is one (NCCL on GPU, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise FastvidError("--device cuda: no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=10))
    return DistInfo(rank, world, local_rank, device)


@contextmanager
def process_group(device_pref: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for one command, leaving torchrun's process group at the end."""
    info = init_distributed(device_pref)
    try:
        yield info
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()


def any_rank(flag: bool, dist_info: DistInfo) -> bool:
    """True when ``flag`` is set on any rank, so that every rank stops at the same step.

    Under DDP this is a collective (and a host synchronisation): every rank must call it at the
    same steps.
    """
    if not dist_info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=dist_info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers (whose state_dict keys are clean)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
