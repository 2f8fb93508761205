"""ONNX Runtime backend: ``ExportedProgram`` -> ``.onnx`` (dynamo exporter) -> InferenceSession.

Uses the CUDAExecutionProvider for CUDA devices (onnxruntime-gpu) and the CPU provider otherwise.
fp32 everywhere, fp16 on CUDA only; bf16 is refused because ONNX Runtime has no bf16 kernels for
convolution and batch norm on either provider.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch

__all__ = ["unavailable_reason", "precision_unsupported", "compile_and_save", "load_runner"]

INPUT_NAME = "video"
OUTPUT_NAME = "logits"


def _missing_packages() -> list[str]:
    return [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None when ONNX export and an ONNX Runtime provider for ``device`` are present, else why not."""
    missing = _missing_packages()
    if missing:
        return f"package(s) {', '.join(missing)} not installed (pip install fastvid[onnx])"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available (torch.cuda.is_available() is False)"
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return ("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu matching the "
                    "CUDA version)")
    elif device.type != "cpu":
        return f"device type {device.type!r} is not supported"
    return None


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    """Why ONNX Runtime cannot run ``precision`` on ``device``, or None."""
    if precision == "bf16":
        return "ONNX Runtime has no bf16 convolution kernels; use --precision fp32 (or fp16 on CUDA)"
    if precision == "fp16" and device.type != "cuda":
        return "ONNX Runtime fp16 needs the CUDA provider; use --precision fp32 on CPU"
    return None


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    """Translate ``exported`` to ONNX (weights inside the file) at ``out_path``."""
    # The exported program already carries the dynamic batch. The exporter prints progress lines
    # and its optimiser logs every pass at INFO: keep both out of the user's terminal.
    noisy = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(exported, (example,), str(out_path), dynamo=True, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _session(path: Path, device: torch.device) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if device.type == "cuda":
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                                "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if device.type == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        # ONNX Runtime falls back to the CPU provider when the CUDA one fails to load (e.g. an
        # onnxruntime-gpu built for another CUDA/cuDNN major), logging it only; the IO binding
        # below hands it CUDA buffers, and a benchmark would time the CPU.
        from fastvid.errors import BackendUnavailable

        raise BackendUnavailable(
            f"onnxruntime could not create its CUDAExecutionProvider (session providers: "
            f"{', '.join(sess.get_providers())}); install an onnxruntime-gpu built for this CUDA "
            f"version (torch {torch.__version__}, CUDA {torch.version.cuda})")
    return sess


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX Runtime session as ``video -> logits`` (a torch tensor on ``device``)."""
    import numpy as np

    sess = _session(path, device)
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    num_classes = int(meta["num_classes"])

    if device.type != "cuda":
        def run_cpu(video: torch.Tensor) -> torch.Tensor:
            out = sess.run([out_name], {in_name: video.detach().cpu().numpy()})[0]
            return torch.from_numpy(out)

        return run_cpu

    np_dtype = {torch.float32: np.float32, torch.float16: np.float16}

    def run_cuda(video: torch.Tensor) -> torch.Tensor:
        # IO binding hands ONNX Runtime the torch CUDA buffers: no host round trip.
        binding = sess.io_binding()
        video = video.contiguous()
        out = torch.empty((video.shape[0], num_classes), dtype=video.dtype, device=device)
        binding.bind_input(in_name, "cuda", device.index or 0, np_dtype[video.dtype],
                           tuple(video.shape), video.data_ptr())
        binding.bind_output(out_name, "cuda", device.index or 0, np_dtype[out.dtype],
                            tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(device).synchronize()
        sess.run_with_iobinding(binding)
        return out

    return run_cuda
