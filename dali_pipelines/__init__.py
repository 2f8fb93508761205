"""NVIDIA DALI loaders (GPU: nvJPEG/NVDEC; CPU fallback). The only package that imports DALI.

``DaliVideoLoader`` is resolved lazily so that importing this package (e.g. by a parallel
external-source worker unpickling :class:`dali_pipelines.sources.BatchSource`) does not pull in
``nvidia.dali`` or torch-side code it does not need.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DaliVideoLoader"]


def __getattr__(name: str) -> Any:
    if name == "DaliVideoLoader":
        from dali_pipelines.loader import DaliVideoLoader

        return DaliVideoLoader
    raise AttributeError(f"module 'dali_pipelines' has no attribute {name!r}")
