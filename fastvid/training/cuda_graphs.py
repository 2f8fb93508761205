"""The whole training step captured in one CUDA graph (``fastvid train --cuda-graphs``).

A TRN step at batch 24 launches thousands of small kernels; on an H200 the GPU idles between
them. Capturing forward, loss, backward, clipping, GradScaler and the fused SGD update once and
replaying the graph removes the launch overhead (PyTorch's "whole-network capture" recipe):

* the first ``warmup`` batches run eagerly on a side stream (cuDNN autotuning, torch.compile,
  GradScaler's lazy state, allocator warm-up happen there), each a real training step;
* the next batch is copied into static input buffers, the step is captured (capture records
  kernels without running them) and the graph is replayed for it; every later batch is copied
  into the same buffers and replayed;
* the step must not synchronise with the host, which :class:`~fastvid.training.TrainStep`
  guarantees (its loss and non-finite flag stay on the device; the fused SGD skips a flagged
  step through ``found_inf``);
* learning rates become 0-d device tensors, which fused SGD reads on the device and LR schedulers
  update in place (``fill_``), so the captured graph follows the schedule;
* TRN's training-time relation sampling draws its random frame subsets *outside* the graph,
  before each replay, into buffers the graph reads (``RelationModuleMultiScale.presampled``);
  dropout uses the default CUDA generator, whose state capture supports.

With ``--compile`` too, the compiled model's step is captured: Inductor compiles forward and
backward during the warm-up steps (default mode, no CUDA graphs of its own), and a recompilation
during capture is a clear error rather than a broken graph.

Not supported (refused with a clear message): CPU devices, DDP (use ``--compile``), optimizers
that are not torch's fused SGD (apex), batches of changing shape.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Callable, ContextManager, Iterator, Optional, Protocol, Sequence

import torch
import torch.nn as nn

from fastvid.distributed import DistInfo
from fastvid.errors import FastvidError
from fastvid.precision import Precision

from .optim import supports_device_skip
from .step import StepOutput, TrainStep, to_input_format

__all__ = ["GraphedTrainStep", "cuda_graphs_unsupported", "lr_to_tensors", "lr_to_floats",
           "GraphBackend", "CudaGraphBackend"]

log = logging.getLogger(__name__)


def cuda_graphs_unsupported(device: torch.device, dist_info: Optional[DistInfo],
                            optimizer: Optional[torch.optim.Optimizer] = None) -> Optional[str]:
    """Why the training step cannot be captured here, or None (``optimizer``: checked when given)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return (f"--cuda-graphs needs a CUDA device (device is {device}, CUDA available: "
                f"{torch.cuda.is_available()}); drop --cuda-graphs on this machine")
    if dist_info is not None and dist_info.distributed:
        return "--cuda-graphs is not supported under DDP (torchrun) yet; use --compile there"
    if optimizer is not None and not supports_device_skip(optimizer):
        return (f"--cuda-graphs needs torch's fused SGD ({type(optimizer).__name__} cannot skip a "
                f"step on the device); drop --apex")
    return None


def lr_to_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make every group's learning rate a 0-d tensor on ``device`` (updated in place from now on)."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)


def lr_to_floats(param_groups: Sequence[dict[str, Any]]) -> None:
    """Plain-float learning rates in a state dict's param groups (checkpoints stay portable)."""
    for group in param_groups:
        for key in ("lr", "initial_lr"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = float(group[key])


class GraphBackend(Protocol):
    """How a graph is captured and replayed: CUDA graphs, or a stand-in in CPU tests."""

    def warmup_context(self) -> ContextManager: ...

    def capture(self, fn: Callable[[], Any]) -> Callable[[], None]: ...


class CudaGraphBackend:
    """``torch.cuda.CUDAGraph`` capture; warm-up on a side stream, as PyTorch's docs require."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream: Optional[torch.cuda.Stream] = None
        self.pool: Any = None

    @contextlib.contextmanager
    def warmup_context(self) -> Any:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            yield
        current.wait_stream(self._stream)

    def capture(self, fn: Callable[[], Any]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        # thread_local: the loader's threads (pin-memory, DALI's executor) keep making CUDA calls
        # while this thread captures; the default "global" mode would fail the capture on them.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            fn()
        self.pool = graph.pool()
        return graph.replay


@contextlib.contextmanager
def _no_compilation() -> Iterator[None]:
    """Make a torch.compile recompilation during capture a clear error.

    A compiled model (``--compile --cuda-graphs``) is compiled during the eager warm-up steps;
    a guard failing during capture would compile again there (Triton builds, host syncs, new
    allocations), which breaks the capture with an obscure CUDA error, or worse, records a graph
    that is not the step. With Dynamo's ``error_on_recompile`` the guard failure says so.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:  # nothing was compiled in this process
        yield
        return
    try:
        with dynamo.config.patch(error_on_recompile=True):
            yield
    except dynamo.exc.RecompileError as exc:
        raise FastvidError(f"--compile --cuda-graphs: the compiled model recompiled while the "
                           f"step was being captured ({str(exc).splitlines()[0]}); the warm-up "
                           f"steps must see the same shapes, dtypes and modes") from exc


def _relation_samplers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if callable(getattr(m, "resample_relations", None))]


class GraphedTrainStep:
    """A :class:`TrainStep` replayed from a CUDA graph after ``warmup`` eager steps.

    Returns the same :class:`StepOutput` as the step; after capture its tensors are the graph's
    static outputs, overwritten by the next call (read or accumulate them before that, on the
    same stream -- the training loop does).
    """

    def __init__(self, step: TrainStep, *, warmup: int = 3,
                 backend: Optional[GraphBackend] = None) -> None:
        if warmup < 1:
            raise ValueError("warmup must be >= 1 (cuDNN autotuning and lazy state happen there)")
        self.step = step
        self.warmup = warmup
        device = next(step.model.parameters()).device
        self.backend = backend if backend is not None else CudaGraphBackend(device)
        self.samplers = _relation_samplers(step.model)
        for m in self.samplers:
            m.presampled = True  # draw relation subsets outside the graph, before each replay
        lr_to_tensors(step.optimizer, device)
        self.steps_run = 0
        self.replays = 0
        self._replay: Optional[Callable[[], None]] = None
        self._video: Optional[torch.Tensor] = None
        self._label: Optional[torch.Tensor] = None
        self._out: Optional[StepOutput] = None

    @property
    def model(self) -> nn.Module:
        return self.step.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.step.scaler

    @property
    def precision(self) -> Precision:
        return self.step.precision

    @property
    def memory_format(self) -> Optional[torch.memory_format]:
        return self.step.memory_format

    @property
    def captured(self) -> bool:
        return self._replay is not None

    def _resample(self) -> None:
        for m in self.samplers:
            m.resample_relations()

    def _static_inputs(self, video: torch.Tensor, label: torch.Tensor) -> None:
        self._video = torch.empty_like(to_input_format(video, self.step.memory_format))
        self._label = torch.empty_like(label)

    def _copy_in(self, video: torch.Tensor, label: torch.Tensor) -> None:
        assert self._video is not None and self._label is not None
        if video.shape != self._video.shape or label.shape != self._label.shape:
            raise FastvidError(f"--cuda-graphs replays a step captured for a batch of "
                               f"{tuple(self._video.shape)}, got {tuple(video.shape)}: the "
                               f"training loader must drop its last partial batch")
        self._video.copy_(video, non_blocking=True)
        self._label.copy_(label, non_blocking=True)

    def __call__(self, video: torch.Tensor, label: torch.Tensor) -> StepOutput:
        self._resample()
        if self._replay is None and self.steps_run < self.warmup:
            with self.backend.warmup_context():
                out = self.step(video, label)
            self.steps_run += 1
            return out
        if self._replay is None:
            self._static_inputs(video, label)
            self._copy_in(video, label)

            def body() -> None:
                self._out = self.step(self._video, self._label)

            with _no_compilation():
                self._replay = self.backend.capture(body)
                log.info("training step captured in a CUDA graph after %d eager steps", self.steps_run)
                self._replay()
        else:
            self._copy_in(video, label)
            self._replay()
        self.replays += 1
        self.steps_run += 1
        assert self._out is not None
        return self._out
