"""AOTInductor backend: ``ExportedProgram`` -> ``.pt2`` package of generated C++/Triton kernels.

Works on CPU (needs a C++ compiler) and on CUDA. The package is compiled for one device type.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

from fastvid.cpu import cxx_compiler_missing

__all__ = ["unavailable_reason", "precision_unsupported", "compile_and_save", "load_runner"]


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None when AOTInductor can build for ``device``, else why not."""
    if device.type not in ("cpu", "cuda"):
        return f"device type {device.type!r} is not supported"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available (torch.cuda.is_available() is False)"
    # The C++ wrapper is compiled on both device types.
    missing = cxx_compiler_missing()
    if missing:
        return f"AOTInductor on {device.type.upper()} needs a C++ compiler ({missing} not found on PATH)"
    if device.type == "cuda":
        from torch.utils import cpp_extension

        # On CUDA that wrapper includes the CUDA toolkit's headers (cpp_extension.include_paths
        # raises "CUDA_HOME environment variable is not set" without one); pip wheels ship none.
        if cpp_extension.CUDA_HOME is None:
            return ("AOTInductor on CUDA needs the CUDA toolkit headers: no toolkit found (set "
                    "CUDA_HOME to the CUDA install root, or put its nvcc on PATH)")
    return None


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    """None: AOTInductor builds every precision that :func:`fastvid.precision.usable_precisions`
    allows on the device."""
    return None


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    """Compile ``exported`` with AOTInductor into the package ``out_path``."""
    import torch._inductor

    out_path.unlink(missing_ok=True)
    torch._inductor.aoti_compile_and_package(exported, package_path=str(out_path))


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loaded package as ``video -> logits``."""
    import logging
    import zipfile

    import torch._inductor

    from .core import EngineError

    # A .pt2 package is a zip archive. torch tries its loader on anything, and on failure logs
    # "Loading outdated pt2 file. Please regenerate" before failing again: misleading for a
    # truncated or overwritten file, so such files are refused here.
    if not zipfile.is_zipfile(path):
        raise EngineError(f"{path}: not an AOTInductor package (not a zip archive: truncated or "
                          f"overwritten?); rebuild it with `fastvid build-engine`")
    index = device.index if device.type == "cuda" and device.index is not None else -1
    package_log = logging.getLogger("torch._inductor.package.package")
    level = package_log.level
    package_log.setLevel(logging.ERROR)
    try:
        # The default runner guards its model instances with host-side waits on CUDA events,
        # which a CUDA graph capture forbids; single-threaded mode skips them (PyTorch's advice
        # for graphs).
        compiled = torch._inductor.aoti_load_package(
            str(path), device_index=index, run_single_threaded=bool(meta.get("cuda_graph")))
    finally:
        package_log.setLevel(level)

    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = compiled(video)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run
