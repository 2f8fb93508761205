"""Inference engines: one ``torch.export`` step, then AOTInductor, ONNX Runtime, TensorRT or OpenVINO.

``build_engine`` exports, compiles, saves, reloads and validates an engine; ``load`` returns an
:class:`Engine`, a callable with the batch contract's input (video -> logits on its device).
``torch_tensorrt`` is imported only by :mod:`engines.tensorrt`, lazily.
"""
from .core import (TOLERANCES, Engine, EngineError, EngineValidationError,
                   auto_backend, available_backends, backend_versions, build_engine,
                   check_supported, cpu_threads_beside_loader, load, meta_path, precision_reason, read_meta,
                   require_backend, tolerance)
from .export import ExportError, export_model, graph_problems, validation_batch

__all__ = ["TOLERANCES", "Engine", "EngineError", "EngineValidationError",
           "auto_backend", "cpu_threads_beside_loader", "tolerance",
           "ExportError", "available_backends", "backend_versions", "build_engine", "check_supported", "export_model",
           "graph_problems", "load", "meta_path", "precision_reason", "read_meta", "require_backend", "validation_batch"]
