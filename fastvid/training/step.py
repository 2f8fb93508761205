"""One training step, shared by ``fastvid train`` and ``fastvid bench --train``.

forward under autocast -> cross-entropy (+ ``aux_loss_weight`` x the auxiliary head's, TPN) ->
backward (GradScaler for fp16) -> gradient clipping -> SGD step. The step never reads a value
back to the host: whether the loss was finite stays a device tensor (agreed across DDP ranks by
an all-reduce that runs on the device), and a step with a non-finite loss is skipped on the
device through the fused optimizer's ``found_inf`` input, as GradScaler does for fp16 overflow.
The caller reads the loss and the flag when it logs (:class:`NonFiniteMonitor`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.distributed import DistInfo
from fastvid.errors import TrainingAborted
from fastvid.models import split_outputs
from fastvid.precision import Precision

from .optim import supports_device_skip

__all__ = ["TrainStep", "StepOutput", "NonFiniteMonitor", "to_input_format"]


def to_input_format(video: torch.Tensor, fmt: Optional[torch.memory_format]) -> torch.Tensor:
    """The batch in the model's memory format.

    3D models get a ``channels_last_3d`` clip; 2D models fold (N, T) into the batch inside
    forward, so their 5-D input stays contiguous and the channels-last weights make the
    convolutions pick the NHWC kernels.
    """
    if fmt is torch.channels_last_3d and video.dim() == 5:
        return video.contiguous(memory_format=fmt)
    return video


@dataclass
class StepOutput:
    loss: torch.Tensor  # () float32, detached; the loss of this step (non-finite when skipped)
    skipped: torch.Tensor  # () bool: the loss was non-finite on some rank and the update skipped


class TrainStep:
    """``step(video, label) -> StepOutput``: one optimisation step of ``model``.

    Args:
        model: The (possibly DDP-wrapped or compiled) model, in training mode.
        optimizer: Its optimizer; torch's fused SGD lets a non-finite step be skipped on the
            device, any other optimizer is checked on the host (one synchronisation per step).
        precision: Autocast dtype and GradScaler (fp16).
        aux_loss_weight: Weight of the auxiliary head's loss (TPN; ``model.aux_loss_weight``).
        clip_grad_norm: Max global gradient norm (None: no clipping).
        label_smoothing: Of the cross-entropy.
        memory_format: Of the input batch (``ModelSpec.memory_format`` when channels-last).
        dist_info: Under DDP, ranks agree on skipping a step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, *,
                 aux_loss_weight: float = 0.0, clip_grad_norm: Optional[float] = None,
                 label_smoothing: float = 0.0, memory_format: Optional[torch.memory_format] = None,
                 dist_info: Optional[DistInfo] = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        self.scaler = precision.grad_scaler()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.aux_loss_weight = float(aux_loss_weight)
        self.clip_grad_norm = clip_grad_norm
        self.memory_format = memory_format
        self.dist_info = dist_info
        self.device_skip = supports_device_skip(optimizer)

    def loss(self, video: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (fp32), under autocast."""
        with self.precision.autocast():
            logits, aux = split_outputs(self.model(to_input_format(video, self.memory_format)))
            loss = self.criterion(logits.float(), label)
            if aux is not None and self.aux_loss_weight:
                loss = loss + self.aux_loss_weight * self.criterion(aux.float(), label)
        return loss

    def _skip_flag(self, loss: torch.Tensor) -> torch.Tensor:
        bad = (~torch.isfinite(loss.detach())).float()
        if self.dist_info is not None and self.dist_info.distributed:
            # Every rank must take the same decision (a rank that skipped alone would pair its
            # next collective with the others' gradient all-reduce); MAX of the flags, on device.
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bad

    def __call__(self, video: torch.Tensor, label: torch.Tensor) -> StepOutput:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(video, label)
        bad = self._skip_flag(loss)
        if not self.device_skip and bool(bad):  # host check: apex or non-fused optimizers
            return StepOutput(loss.detach(), bad > 0)
        scaled = self.scaler.scale(loss)
        if self.scaler.is_enabled():
            # GradScaler skips a step whose gradients are not finite; a non-finite loss on some
            # rank becomes NaN gradients everywhere (x NaN here, then DDP's all-reduce), so the
            # scaler skips it on every rank -- an inf loss alone can have finite gradients.
            scaled = scaled * torch.where(bad > 0, float("nan"), 1.0)
        scaled.backward()
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.device_skip:
            self.optimizer.grad_scale, self.optimizer.found_inf = None, bad
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.grad_scale, self.optimizer.found_inf
        else:
            self.optimizer.step()
        return StepOutput(loss.detach(), bad > 0)


class NonFiniteMonitor:
    """Counts skipped steps on the device; :meth:`check` reads them (one synchronisation) and
    stops the run after ``max_run`` consecutive non-finite losses.

    The training loop checks at every log step, before writing a checkpoint and at the end of
    an epoch, so a run of bad steps is reported at most ``train.log_interval`` steps late and no
    checkpoint is written after the limit was reached.
    """

    def __init__(self, device: torch.device, max_run: int) -> None:
        self.max_run = max_run
        z = torch.zeros((), dtype=torch.int64, device=device)
        self.run, self.worst, self.count = z.clone(), z.clone(), z.clone()
        self.first = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, skipped: torch.Tensor, step: int) -> None:
        """Record step ``step`` (1-based) as skipped or not, on the device."""
        b = skipped.to(torch.int64)
        self.run = (self.run + 1) * b
        self.worst = torch.maximum(self.worst, self.run)
        self.count = self.count + b
        self.first = torch.where((b > 0) & (self.first < 0), step, self.first)

    def check(self, epoch: int, log: logging.Logger) -> int:
        """Warn about skipped steps since the last check; raise after ``max_run`` in a row.

        Returns how many steps were skipped since the last check.
        """
        worst, count, first = torch.stack([self.worst, self.count, self.first]).tolist()
        self.worst, self.count = self.run.clone(), torch.zeros_like(self.count)
        self.first = torch.full_like(self.first, -1)
        if count:
            log.warning("non-finite loss at epoch %d step %d (%d step(s) skipped since the last "
                        "check, at most %d in a row)", epoch, first, count, worst)
        if worst >= self.max_run:
            raise TrainingAborted(
                f"{worst} consecutive non-finite losses (train.max_nonfinite_steps); stopping. "
                f"The last checkpoint was not overwritten; lower train.lr or use --amp-dtype bf16")
        return int(count)
