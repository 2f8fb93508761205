"""Optimizer and learning-rate schedule of the papers' SGD recipes.

TSN/TRN and TPN train with SGD + momentum, the LR divided by 10 at fixed epochs (``step``);
``cosine`` (with an optional linear warm-up) is offered for from-scratch runs. The schedule is
stepped once per epoch.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from fastvid.config import Config, TrainConfig
from fastvid.errors import FastvidError

__all__ = ["build_optimizer", "build_lr_scheduler", "lr_factor", "load_optimizer_state",
           "supports_device_skip"]


def _fused_ok(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device,
                    apex: bool = False) -> torch.optim.Optimizer:
    """SGD with the model's param-group policy (TSN: bias lr x2, no decay on bias/BN).

    torch's fused SGD is used on CUDA and CPU: one kernel for every parameter, and it accepts
    the ``found_inf`` flag that lets a step with a non-finite loss be skipped on the device,
    without a host synchronisation (:class:`fastvid.training.TrainStep`). Momentum buffers are
    created as zeros up front: the fused kernel skips *everything* on a flagged step, including
    initialising a new buffer, so a first step that is skipped would otherwise leave it
    uninitialised. With dampening 0, a zero buffer gives exactly the usual first step.
    """
    tc = cfg.train
    policy = getattr(model, "optim_param_groups", None)
    if policy is not None:
        groups = policy(tc.lr, tc.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad],
                   "lr": tc.lr, "weight_decay": tc.weight_decay}]
    groups = [g for g in groups if len(list(g["params"]))]
    if apex:
        try:
            from apex.optimizers import FusedSGD
        except ImportError as exc:
            raise FastvidError("--apex: apex is not installed (build it from source with "
                               "--cuda_ext; see README)") from exc
        return FusedSGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                        weight_decay=tc.weight_decay)
    optimizer = torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                                weight_decay=tc.weight_decay,
                                fused=True if _fused_ok(device) else None)
    if tc.momentum:
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format)
    return optimizer


def supports_device_skip(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step`` honours a ``found_inf`` tensor (torch's fused optimizers)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _factor(epoch: int, schedule: str, lr_steps: list, lr_gamma: float, warmup_epochs: int,
            epochs: int) -> float:
    if epoch < warmup_epochs:
        return 0.1 + 0.9 * epoch / warmup_epochs  # linear from lr / 10
    if schedule == "cosine":
        span = max(1, epochs - warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup_epochs, span) / span))
    return float(lr_gamma ** sum(epoch >= s for s in lr_steps))


def lr_factor(epoch: int, tc: TrainConfig) -> float:
    """Multiplier of ``train.lr`` during ``epoch`` (0-based)."""
    return _factor(epoch, tc.lr_schedule, list(tc.lr_steps), tc.lr_gamma, int(tc.warmup_epochs),
                   tc.epochs)


class _Factor:
    """Picklable ``epoch -> factor`` for LambdaLR, whose state_dict keeps an object's fields
    (plain values only, so checkpoints still load with ``weights_only=True``)."""

    def __init__(self, tc: TrainConfig) -> None:
        self.args = (tc.lr_schedule, [int(s) for s in tc.lr_steps], float(tc.lr_gamma),
                     int(tc.warmup_epochs), int(tc.epochs))

    def __call__(self, epoch: int) -> float:
        return _factor(epoch, *self.args)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> Any:
    """Per-epoch LR schedule: the papers' step schedule (MultiStepLR, as checkpoints hold it),
    or cosine / warm-up through :func:`lr_factor`."""
    tc = cfg.train
    if tc.lr_schedule == "step" and not tc.warmup_epochs:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tc.lr_steps),
                                                    gamma=tc.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(tc))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this run's ``fused``/``foreach`` choice.

    Saved param groups carry the implementation flags of the run that wrote them and
    ``load_state_dict`` copies them over: a CPU checkpoint (``fused=None``) resumed on CUDA would
    run the unfused SGD, which GradScaler (that sees the optimizer built with ``fused=True``)
    then hands ``found_inf`` - an AssertionError in fp16 training.
    """
    keep = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, keep):
        group.update(flags)
