"""The registry of engine backends and the contract each backend module fulfils.

A backend is one module implementing :class:`EngineBackend` (four functions) plus one
:func:`register_engine` line below. The module is imported on first use, never at
``import engines``: Torch-TensorRT's import initialises CUDA, and ONNX Runtime is an optional
package. ``fastvid build-engine --backend``, ``fastvid bench --backends`` and the benchmark's
lists are derived from this registry.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, runtime_checkable

import torch

from fastvid.errors import FastvidError

__all__ = ["EngineBackend", "EngineBackendEntry", "register_engine", "engine_backends",
           "engine_backend", "engine_names", "UnknownEngineBackend"]

Runner = Callable[[torch.Tensor], torch.Tensor]


class UnknownEngineBackend(FastvidError, ValueError):
    """No engine backend of that name is registered."""


@runtime_checkable
class EngineBackend(Protocol):
    """What a backend module provides (module-level functions)."""

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        """None when the backend can build and run engines on ``device``, else why not."""

    def precision_unsupported(self, precision: str, device: torch.device) -> Optional[str]:
        """Why ``precision`` (fp32/fp16/bf16) cannot be built for ``device``, or None."""

    def compile_and_save(self, exported: torch.export.ExportedProgram, example: torch.Tensor, *,
                         precision: str, batch: int, max_batch: int, out_path: Path,
                         device: torch.device) -> None:
        """Compile the exported program (batch in [1, max_batch], tuned for ``batch``) to ``out_path``."""

    def load_runner(self, path: Path, device: torch.device, meta: dict[str, Any]) -> Runner:
        """The saved engine as ``video -> logits`` on ``device`` (``meta["cuda_graph"]``: the
        runner will be captured in a CUDA graph)."""


@dataclass(frozen=True)
class EngineBackendEntry:
    """A registered backend: ``--backend`` name, artifact extension, and its module.

    ``tuned_per_batch``: its engines are optimised for one batch size (TensorRT's opt shape), so
    a benchmark builds one per batch instead of one for every batch.
    ``cuda_graphs``: its runner can be captured in a CUDA graph and replayed (it launches work on
    the caller's stream and never waits for the host), so ``fastvid bench`` offers
    ``<name>+cudagraph``; its ``load_runner`` then gets ``meta["cuda_graph"] = True``.
    ``cast_graph``: fp16/bf16 engines are exported from the model and input cast as a whole
    (strongly typed engines); False: the backend always gets the float32 graph and input and
    applies the precision itself when compiling (OpenVINO's INFERENCE_PRECISION_HINT).
    ``preference``: ``{device type: rank}`` for ``build-engine --backend auto`` (lowest available
    wins); a device type not listed is never chosen automatically.
    """

    name: str
    extension: str
    module: str  # import path of the EngineBackend module, imported on first use
    description: str
    tuned_per_batch: bool = False
    cuda_graphs: bool = False
    cast_graph: bool = True
    preference: Mapping[str, int] = field(default_factory=dict)

    def load(self) -> EngineBackend:
        """Import the backend module and check that it fulfils :class:`EngineBackend`."""
        mod = importlib.import_module(self.module)
        missing = [f for f in ("unavailable_reason", "precision_unsupported", "compile_and_save",
                               "load_runner") if not callable(getattr(mod, f, None))]
        if missing:
            raise TypeError(f"engine backend module {self.module} lacks {', '.join(missing)}")
        return mod  # type: ignore[return-value]


_ENGINES: dict[str, EngineBackendEntry] = {}


def register_engine(entry: EngineBackendEntry) -> EngineBackendEntry:
    """Add an engine backend (name and extension must be new)."""
    if entry.name in _ENGINES or any(e.extension == entry.extension for e in _ENGINES.values()):
        raise ValueError(f"engine backend {entry.name!r} / {entry.extension} registered twice")
    _ENGINES[entry.name] = entry
    return entry


def engine_backends() -> list[EngineBackendEntry]:
    """Registered backends in registration order (the order ``fastvid demo`` prefers)."""
    return list(_ENGINES.values())


def engine_names() -> tuple[str, ...]:
    return tuple(_ENGINES)


def engine_backend(name: str) -> EngineBackendEntry:
    """The entry of ``name``; :class:`UnknownEngineBackend` lists the known ones."""
    if name not in _ENGINES:
        raise UnknownEngineBackend(f"unknown engine backend {name!r}; expected one of "
                                   f"{', '.join(_ENGINES)}")
    return _ENGINES[name]


register_engine(EngineBackendEntry(
    "trt", ".ep", "engines.tensorrt",
    "Torch-TensorRT: TensorRT engines inside a saved ExportedProgram (CUDA only)",
    tuned_per_batch=True, cuda_graphs=True, preference={"cuda": 10}))
register_engine(EngineBackendEntry(
    "aoti", ".pt2", "engines.aoti",
    "AOTInductor: a .pt2 package of generated C++/Triton kernels (CPU or CUDA)",
    cuda_graphs=True, preference={"cuda": 20, "cpu": 20}))
register_engine(EngineBackendEntry(
    "onnx", ".onnx", "engines.onnx_rt",
    "ONNX Runtime (CPU, or CUDA with onnxruntime-gpu)", preference={"cuda": 30, "cpu": 30}))
register_engine(EngineBackendEntry(
    "openvino", ".xml", "engines.openvino",
    "OpenVINO: IR (.xml + .bin) compiled by OpenVINO's CPU plugin (CPU only; fp32, bf16)",
    cast_graph=False, preference={"cpu": 10}))
