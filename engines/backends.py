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
from typing import Any, Callable, Mapping, Optional, Protocol

import torch

from fastvid.errors import FastvidError

__all__ = ["EngineBackend", "EngineBackendEntry", "register_engine", "engine_backends",
           "engine_backend", "engine_names", "engine_extensions", "backend_help", "precision_help", "UnknownEngineBackend"]

Runner = Callable[[torch.Tensor], torch.Tensor]


class UnknownEngineBackend(FastvidError, ValueError):
    """No engine backend of that name is registered."""


class EngineBackend(Protocol):
    """What a backend module provides (module-level functions)."""

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        """None when the backend can build and run engines on ``device``, else why not."""

    def precision_unsupported(self, precision: str, device: torch.device) -> Optional[str]:
        """Why ``precision`` cannot be built for ``device`` by this backend, or None. Only the
        backend's own restrictions: :func:`fastvid.precision.usable_precisions` (the device's
        rule) is checked before it."""

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

    ``description``: one line, shown by ``fastvid build-engine --help`` for ``--backend``.
    ``device_bound``: an engine runs only on the device type it was built for (AOTInductor's
    generated kernels are C++ or Triton); loading it elsewhere is refused with a rebuild hint.
    ``packages``: the pip distributions it needs beyond fastvid's own requirements, which are
    its extra in ``setup.py`` (``pip install fastvid[<name>]``).
    ``build_note``: ``{device type: note}`` logged when a build starts (a slow compile).

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
    device_bound: bool = False
    packages: tuple[str, ...] = ()
    build_note: Mapping[str, str] = field(default_factory=dict)

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


def engine_extensions() -> tuple[str, ...]:
    """The artifact extensions of every registered backend (``.ep``, ``.pt2``, ...)."""
    return tuple(e.extension for e in _ENGINES.values())


def engine_names() -> tuple[str, ...]:
    return tuple(_ENGINES)


def backend_help() -> str:
    """``fastvid build-engine --backend``'s help: each backend's description, then what
    ``auto`` picks per device type (by ``preference``)."""
    lines = [f"{e.name}: {e.description}" for e in _ENGINES.values()]
    device_types = sorted({d for e in _ENGINES.values() for d in e.preference},
                          key=lambda d: (d != "cuda", d))
    order = "; ".join(
        f"{d.upper()}: " + ", ".join(e.name for e in sorted(
            (e for e in _ENGINES.values() if d in e.preference), key=lambda e: e.preference[d]))
        for d in device_types)
    return "; ".join(lines + [f"auto: the fastest available for the device and precision ({order})"]) + "."


def precision_help() -> str:
    """``fastvid build-engine --precision``'s help: the device rule, and how the precision is
    applied (cast as a whole, or by the runtime for backends with ``cast_graph=False``); which
    precisions each backend builds is in its description (``--backend``'s help)."""
    runtime = [e.name for e in _ENGINES.values() if not e.cast_graph]
    how = ("model and input are cast as a whole"
           + (f" ({', '.join(runtime)}: the graph stays fp32 and the runtime computes in the "
              f"precision)" if runtime else ""))
    return (f"Engine precision: fp16 needs CUDA, bf16 a device with native bf16; --backend's help "
            f"says which each backend builds; {how}.")


def engine_backend(name: str) -> EngineBackendEntry:
    """The entry of ``name``; :class:`UnknownEngineBackend` lists the known ones."""
    if name not in _ENGINES:
        raise UnknownEngineBackend(f"unknown engine backend {name!r}; expected one of "
                                   f"{', '.join(_ENGINES)}")
    return _ENGINES[name]


register_engine(EngineBackendEntry(
    "trt", ".ep", "engines.tensorrt",
    "Torch-TensorRT (.ep, CUDA only; fp32, fp16, bf16)",
    tuned_per_batch=True, cuda_graphs=True, preference={"cuda": 10}, packages=("torch-tensorrt",)))
register_engine(EngineBackendEntry(
    "aoti", ".pt2", "engines.aoti",
    "AOTInductor (.pt2, CPU or CUDA; runs on the device type it was built for; fp32, bf16, fp16 on CUDA)",
    cuda_graphs=True, preference={"cuda": 20, "cpu": 20}, device_bound=True,
    build_note={"cpu": "AOTInductor on a CPU: a minute or more"}))
register_engine(EngineBackendEntry(
    "onnx", ".onnx", "engines.onnx_rt",
    "ONNX Runtime (.onnx; CPU, or CUDA with onnxruntime-gpu; fp32, fp16 on CUDA)", preference={"cuda": 30, "cpu": 30},
    packages=("onnx", "onnxruntime", "onnxscript")))
register_engine(EngineBackendEntry(
    "openvino", ".xml", "engines.openvino",
    "OpenVINO IR (.xml + .bin, CPU only; fp32, bf16)",
    cast_graph=False, preference={"cpu": 10}, packages=("openvino",)))
