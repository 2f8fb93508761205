"""An inference callable replayed from one CUDA graph: serving a fixed batch without launch overhead.

At batch 1 a TRN forward is a few hundred small kernels; launched one by one from Python the
H200 idles between them (eager fp32 and fp16 take the same 9 ms). Captured once and replayed,
the whole forward is one launch. :class:`GraphedRunner` wraps any ``video -> logits`` callable
(the eager model, an AOTInductor or TensorRT engine):

* the first call, for the input's shape and dtype, runs ``warmup`` calls on a side stream
  (cuDNN autotuning, lazy initialisation, allocator growth), then captures one call reading a
  static input buffer;
* every call copies its input into that buffer and replays the graph (the copy is part of the
  call, as it is for a server: the benchmark times it);
* it returns the graph's static output, overwritten by the next call: read or clone it first.

Capture and warm-up go through the :class:`fastvid.training.cuda_graphs.GraphBackend` protocol
of the training step's graphs (``warmup_context()``, ``capture(fn) -> replay``), so the CPU
tests drive this class with a stand-in and the GPU uses the same ``CudaGraphBackend``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from fastvid.errors import FastvidError

__all__ = ["GraphedRunner", "cuda_graph_unsupported"]

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], Any]


def cuda_graph_unsupported(device: torch.device | str) -> Optional[str]:
    """Why an inference callable cannot be replayed from a CUDA graph on ``device``, or None."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (device is {device})"
    if not torch.cuda.is_available():
        return "CUDA graphs need a CUDA device (torch.cuda.is_available() is False)"
    return None


def _cuda_backend(device: torch.device) -> Any:
    from fastvid.training import CudaGraphBackend

    return CudaGraphBackend(device)


class GraphedRunner:
    """``runner`` captured in a CUDA graph on its first call and replayed on every call.

    Args:
        runner: ``video -> logits``; must not synchronise with the host or change shapes
            between calls (the eager model in eval mode, an engine's runner).
        device: where the graph runs (a CUDA device, unless ``backend`` is a stand-in).
        warmup: untimed calls before capture (>= 1: cuDNN autotunes on the first).
        backend: a ``GraphBackend`` (``warmup_context``, ``capture``); default
            ``CudaGraphBackend(device)``.
    """

    def __init__(self, runner: Runner, device: torch.device | str, *, warmup: int = 3,
                 backend: Optional[Any] = None) -> None:
        if warmup < 1:
            raise ValueError("warmup must be >= 1 (cuDNN autotuning and lazy state happen there)")
        self.runner = runner
        self.device = torch.device(device)
        self.warmup = warmup
        if backend is None:
            reason = cuda_graph_unsupported(self.device)
            if reason:
                raise FastvidError(reason)
            backend = _cuda_backend(self.device)
        self.backend = backend
        self.replays = 0
        self._replay: Optional[Callable[[], None]] = None
        self._static: Optional[torch.Tensor] = None
        self._out: Any = None

    @property
    def captured(self) -> bool:
        return self._replay is not None

    @property
    def static_input(self) -> Optional[torch.Tensor]:
        """The buffer the graph reads (a caller may write its next batch into it directly)."""
        return self._static

    def _capture(self, video: torch.Tensor) -> None:
        # empty_like keeps the input's memory format (a channels_last batch stays one).
        self._static = torch.empty_like(video)
        self._static.copy_(video)
        with self.backend.warmup_context():
            for _ in range(self.warmup):
                self.runner(self._static)

        def body() -> None:
            self._out = self.runner(self._static)

        self._replay = self.backend.capture(body)
        log.info("captured %s in a CUDA graph for input %s %s after %d warm-up calls",
                 getattr(self.runner, "__name__", type(self.runner).__name__), tuple(video.shape),
                 video.dtype, self.warmup)

    def __call__(self, video: torch.Tensor) -> Any:
        if self._replay is None:
            self._capture(video)
        else:
            assert self._static is not None
            if video.shape != self._static.shape or video.dtype != self._static.dtype:
                raise FastvidError(f"this CUDA graph was captured for input {tuple(self._static.shape)} "
                                   f"{self._static.dtype}, got {tuple(video.shape)} {video.dtype}: "
                                   f"capture one GraphedRunner per batch shape")
            if video is not self._static:
                self._static.copy_(video, non_blocking=True)
        assert self._replay is not None
        self._replay()
        self.replays += 1
        return self._out
