"""Precise BN: BN running statistics recomputed as exact averages before evaluation."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.distributed import DistInfo
from fastvid.precision import Precision

from .step import to_input_format

__all__ = ["recompute_bn_stats"]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: Any, num_batches: int, precision: Precision,
                       memory_format: Optional[torch.memory_format] = None,
                       dist_info: Optional[DistInfo] = None) -> int:
    """Replace the running statistics of the *trainable* BN layers by exact averages.

    Runs ``num_batches`` batches of ``loader`` (the training loader: the statistics must come
    from training data) through ``model`` in training mode without gradients, with each BN's
    ``momentum`` set to None (cumulative average). Layers that partial BN keeps in eval mode are
    left alone. Under DDP every rank averages its own shard, then the statistics are averaged
    over ranks. Returns the number of batches used. (SlowFast's BN.USE_PRECISE_STATS.)
    """
    model.train()  # applies partial BN: frozen layers stay in eval mode
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if not bns or num_batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    used = 0
    try:
        for video, *_ in loader:
            with precision.autocast():
                model(to_input_format(video, memory_format))
            used += 1
            if used >= num_batches:
                break
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
    if dist_info is not None and dist_info.distributed:
        for m in bns:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(dist_info.world_size)
    return used
