"""The host CPU as fastvid's runtimes see it: usable cores and the C++ compiler torch generates code for.

The one place that answers "how many cores may this process use" (engines' threads, the loader
benchmark's thread sweep) and "can Inductor compile C++ here" (``torch.compile`` on CPU,
AOTInductor on CPU and CUDA): their answers must agree across commands.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

import torch

__all__ = ["available_cores", "cxx_compiler_missing", "compile_unsupported"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share),
    not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cxx_compiler_missing() -> Optional[str]:
    """The C++ compiler Inductor is configured with when it is not on PATH, else None."""
    from torch._inductor import config

    cxx = config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else config.cpp.cxx
    if cxx and shutil.which(cxx):
        return None
    return cxx or "g++"


def compile_unsupported(device: torch.device | str) -> Optional[str]:
    """Why ``torch.compile`` (Inductor) cannot generate code for ``device`` here, or None.

    On CUDA Inductor writes Triton kernels: it needs Triton and a GPU Triton supports, not a C++
    compiler or the CUDA toolkit (those are AOTInductor's). On CPU it writes C++ and needs the
    compiler it is configured with.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch.compile on CUDA needs a CUDA device (torch.cuda.is_available() is False)"
        from torch.utils._triton import has_triton, has_triton_package

        if not has_triton_package():
            return "torch.compile on CUDA needs Triton (pip install triton; torch's CUDA wheels bring it)"
        if not has_triton():
            return "torch.compile on CUDA: Triton does not support this GPU"
        return None
    if device.type == "cpu":
        missing = cxx_compiler_missing()
        return f"torch.compile on CPU needs a C++ compiler ({missing} not found on PATH)" if missing else None
    return f"torch.compile is not set up for device type {device.type!r} here"
