"""One way to build a training step from a config: :func:`build_train_step`.

``fastvid train``, ``fastvid bench --train`` (:func:`bench.train.bench_training`) and the
loader benchmark's training feed (``bench/loader.py``) all build their step here, so they run
the same recipe: the model on the device in training mode, channels-last weights, the papers'
SGD (torch's fused SGD, apex's FusedSGD with ``apex``), the config's auxiliary-loss weight,
gradient clipping and label smoothing, then optionally ``torch.compile``, DDP and the whole
step captured in a CUDA graph.

It lives in its own module because it wraps :class:`~fastvid.training.TrainStep` in
:class:`~fastvid.training.GraphedTrainStep`, whose module imports :mod:`.step`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn as nn

from fastvid.config import Config
from fastvid.distributed import DistInfo
from fastvid.errors import FastvidError
from fastvid.models import memory_format, to_channels_last
from fastvid.precision import Precision

from .cuda_graphs import GraphedTrainStep, cuda_graphs_unsupported
from .optim import build_optimizer
from .step import TrainStep

__all__ = ["StepOptions", "build_train_step", "configure_compile_cache", "AnyTrainStep"]

log = logging.getLogger("fastvid.train")

#: What :func:`build_train_step` returns: the step, or the step replayed from a CUDA graph.
AnyTrainStep = Union[TrainStep, GraphedTrainStep]


@dataclass(frozen=True)
class StepOptions:
    """How the step runs, besides what the config says (``fastvid train``'s switches)."""

    #: Convolution weights channels-last (per weight rank) and the batch in the model's format.
    channels_last: bool = True
    #: ``torch.compile`` the model (Inductor), in ``compile_mode`` (None: its default mode).
    compile: bool = False
    compile_mode: Optional[str] = None
    #: Capture the whole step in a CUDA graph after ``graph_warmup`` eager steps.
    cuda_graphs: bool = False
    graph_warmup: int = 3
    #: apex's FusedSGD instead of torch's fused SGD (raises when apex is not importable).
    apex: bool = False


def configure_compile_cache() -> str:
    """Keep Inductor's compiled kernels and FX/AOTAutograd graph caches across runs.

    ``TORCHINDUCTOR_CACHE_DIR`` (when unset) becomes ``$XDG_CACHE_HOME/fastvid/inductor``
    (``~/.cache/...``) instead of a per-user folder under /tmp that reboots clear, so a second
    ``fastvid train --compile`` of the same model starts from the cache. Returns the folder.
    """
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "fastvid" / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def build_train_step(cfg: Config, model: nn.Module, *, device: torch.device, precision: Precision,
                     options: StepOptions = StepOptions(), dist_info: Optional[DistInfo] = None,
                     restore: Optional[Callable[[nn.Module, torch.optim.Optimizer], None]] = None,
                     ) -> AnyTrainStep:
    """The training step of ``model`` as ``cfg`` and ``options`` configure it.

    ``model`` is moved to ``device`` and put in training mode (in place). The returned step
    holds everything a caller needs afterwards: ``.model`` (compiled / DDP-wrapped as asked;
    :func:`fastvid.distributed.unwrap` gives the plain one), ``.optimizer``, ``.scaler``,
    ``.precision`` and ``.memory_format`` (of the batch; None without channels-last).

    Args:
        cfg: ``train.*`` (SGD recipe, ``clip_grad_norm``, ``label_smoothing``) and
            ``model.aux_loss_weight``.
        model: The plain model (not compiled or wrapped).
        device: Where it trains; on CUDA cuDNN's autotuning is switched on (fixed input shapes).
        precision: Autocast dtype and GradScaler (:func:`fastvid.precision.resolve_precision`).
        options: Channels-last, compile, CUDA graphs, apex.
        dist_info: Under DDP (``dist_info.distributed``) the model is wrapped in
            DistributedDataParallel and the ranks agree on skipping a non-finite step.
        restore: Called with the plain model and its optimizer before anything wraps them: a
            resumed run loads its checkpoint there (a CUDA-graph step turns the learning rates
            into device tensors, which an optimizer state loaded later would replace).

    Raises:
        FastvidError: ``options.cuda_graphs`` where the step cannot be captured.
    """
    device = torch.device(device)
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN time its algorithms once (torchvision's reference does).
        torch.backends.cudnn.benchmark = True
    model = model.to(device).train()
    fmt: Optional[torch.memory_format] = None
    if options.channels_last:
        # Per weight rank (TPN-TSM mixes 2D and 3D convolutions); the batch follows the model.
        model, fmt = to_channels_last(model), memory_format(model)
    optimizer = build_optimizer(model, cfg, device, apex=options.apex)
    if restore is not None:
        restore(model, optimizer)
    if options.cuda_graphs:
        reason = cuda_graphs_unsupported(device, dist_info, optimizer)
        if reason:
            raise FastvidError(reason)
    runnable: nn.Module = model
    if options.compile:
        log.info("torch.compile (mode %s), kernels cached in %s", options.compile_mode or "default",
                 configure_compile_cache())
        runnable = torch.compile(model, mode=options.compile_mode)  # type: ignore[assignment]
    if dist_info is not None and dist_info.distributed:
        runnable = nn.parallel.DistributedDataParallel(
            runnable, device_ids=[device.index] if device.type == "cuda" else None)
    step: AnyTrainStep = TrainStep(runnable, optimizer, precision,
                                   aux_loss_weight=cfg.model.aux_loss_weight,
                                   clip_grad_norm=cfg.train.clip_grad_norm,
                                   label_smoothing=cfg.train.label_smoothing, memory_format=fmt,
                                   dist_info=dist_info)
    if options.cuda_graphs:
        step = GraphedTrainStep(step, warmup=options.graph_warmup)
    return step
