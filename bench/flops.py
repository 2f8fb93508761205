"""How far a measured figure is from the chip's limit: FLOPs per video and % of a dense peak.

* :func:`forward_gflop_per_video`: ``torch.utils.flop_counter`` on one video (batch 1) of an
  eval-mode copy of the model on the meta device (no compute, no memory; the model's own device
  when an op has no meta kernel), cached per model and input shape. It counts 2 FLOPs per
  multiply-add of convolutions and matrix products, the convention of MFU figures.
* :data:`PEAK_TFLOPS` / :func:`peak_tflops`: dense (no 2:4 sparsity) peaks by GPU name and
  precision class, from the vendor's datasheets.
* :func:`annotate` / :func:`annotate_record`: add ``gflop_per_video``, ``tflops`` (achieved),
  ``peak_tflops``, ``peak_basis`` and ``pct_of_peak`` to a benchmark record. A training step is
  counted as 3x the forward (forward + backward of activations and of weights), the usual MFU
  convention; the record says so in ``flop_basis``. ``pct_of_peak`` is None on a CPU or a GPU
  that is not in the table, with the reason in ``peak_basis``.
"""
from __future__ import annotations

import copy
import logging
import re
import weakref
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["PEAK_TFLOPS", "TRAIN_FLOP_FACTOR", "forward_gflop_per_video", "peak_tflops",
           "precision_class", "annotate", "annotate_record"]

log = logging.getLogger(__name__)

# A training step ~ forward + backward (activation and weight gradients, each ~ the forward).
TRAIN_FLOP_FACTOR = 3

# Dense peak TFLOP/s by device-name pattern (first match wins, so the specific names come
# first) and precision class: "fp16"/"bf16" (tensor cores, fp32 accumulate), "tf32" (tensor
# cores on fp32 data), "fp32" (CUDA cores). The datasheets print tensor-core figures "with
# sparsity"; the dense figure is half of it. Sources (NVIDIA datasheets):
#   H100 / H200 SXM: "NVIDIA H100 Tensor Core GPU" datasheet (FP32 67, TF32 989*, BF16/FP16
#     1,979*); "NVIDIA H200 Tensor Core GPU" datasheet (the same compute figures; NVL: FP32 60,
#     TF32 835*, BF16/FP16 1,671*). H100 PCIe: FP32 51, TF32 756*, BF16/FP16 1,513*; H100 NVL:
#     FP32 60, TF32 835*, BF16/FP16 1,671*. (* with sparsity)
#   A100 (SXM and PCIe, 40/80 GB): "NVIDIA A100 Tensor Core GPU" datasheet: FP32 19.5,
#     TF32 156, BF16/FP16 312 (dense figures printed beside the sparse ones).
#   L40S: "NVIDIA L40S GPU" datasheet: FP32 91.6, TF32 183, BF16/FP16 362.05 (dense).
#   L4: "NVIDIA L4 Tensor Core GPU" datasheet: FP32 30.3, TF32 120*, BF16/FP16 242*.
#   V100: "NVIDIA Tesla V100 GPU Accelerator" datasheet: SXM2 FP32 15.7 / tensor (fp16) 125,
#     PCIe FP32 14 / 112; V100S PCIe FP32 16.4 / 130. Volta has no bf16 and no tf32.
PEAK_TFLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H200 NVL", "NVIDIA H200 NVL", {"fp16": 835.5, "bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", "NVIDIA H200 SXM", {"fp16": 989.5, "bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"H100.*PCIe", "NVIDIA H100 PCIe", {"fp16": 756.5, "bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"H100 NVL", "NVIDIA H100 NVL", {"fp16": 835.5, "bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100", "NVIDIA H100 SXM", {"fp16": 989.5, "bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"A100", "NVIDIA A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "NVIDIA L40S", {"fp16": 362.05, "bf16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", "NVIDIA L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"V100S", "NVIDIA V100S PCIe", {"fp16": 130.0, "fp32": 16.4}),
    (r"V100.*PCI", "NVIDIA V100 PCIe", {"fp16": 112.0, "fp32": 14.0}),
    (r"V100", "NVIDIA V100 SXM2", {"fp16": 125.0, "fp32": 15.7}),
)

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], float]]" = weakref.WeakKeyDictionary()


def _count(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def forward_gflop_per_video(model: nn.Module, sample_shape: Sequence[int]) -> float:
    """GFLOP of one video's forward pass (eval mode), counted by ``torch.utils.flop_counter``.

    ``sample_shape`` is one sample of the batch contract, e.g. ``(8, 3, 224, 224)``. The model
    is not changed (a copy is counted). Cached per model object and shape.
    """
    shape = tuple(int(s) for s in sample_shape)
    cached = _CACHE.setdefault(model, {})
    if shape in cached:
        return cached[shape]
    try:
        meta = copy.deepcopy(model).eval().to("meta")
        flops = _count(meta, torch.empty((1, *shape), device="meta"))
    except (NotImplementedError, RuntimeError) as exc:  # an op without a meta kernel
        log.info("FLOPs on the meta device failed (%s); counting on the model's device", exc)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        try:
            flops = _count(model.eval(), torch.zeros((1, *shape), device=device))
        finally:
            model.train(was_training)
    cached[shape] = flops / 1e9
    return cached[shape]


def precision_class(precision: str, device_type: str = "cuda") -> str:
    """The peak that bounds a run in ``precision``: fp16/bf16 run on tensor cores; fp32
    convolutions run as TF32 on tensor cores while cuDNN may use TF32
    (``torch.backends.cudnn.allow_tf32``, on by default; these models are mostly convolutions),
    else on the CUDA cores."""
    if precision in ("fp16", "bf16"):
        return precision
    if device_type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"


def peak_tflops(device_name: str, peak_class: str) -> tuple[Optional[float], str]:
    """``(dense peak TFLOP/s, what it is)``, or ``(None, why there is none)``."""
    for pattern, label, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            if peak_class == "tf32" and "tf32" not in peaks:
                peak_class = "fp32"  # Volta: fp32 convolutions run on the CUDA cores
            if peak_class not in peaks:
                return None, f"{label} has no {peak_class} tensor cores"
            kind = "CUDA cores" if peak_class == "fp32" else "tensor cores, dense"
            return peaks[peak_class], f"{label} {peak_class} {kind}: {peaks[peak_class]:g} TFLOP/s (datasheet)"
    return None, f"no peak known for {device_name!r} (bench/flops.py PEAK_TFLOPS)"


def _sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (a tiny test model's GFLOP is not 0.0)."""
    return float(f"{value:.{digits}g}")


def annotate(record: dict[str, Any], gflop_per_video: Optional[float], device_name: str,
             precision: str, *, training: bool, device_type: str = "cuda") -> dict[str, Any]:
    """Add the FLOP figures to ``record`` (in place; returned too).

    Keys: ``gflop_per_video`` (forward), ``flop_basis``, and for a measured record (with
    ``video_per_s`` or ``videos_per_s``) ``tflops`` = videos/s x GFLOP (x3 when ``training``)
    / 1000, ``peak_tflops``, ``peak_basis`` and ``pct_of_peak`` (None with the reason in
    ``peak_basis`` on a CPU or an unknown GPU).
    """
    if gflop_per_video is None:
        return record
    record["gflop_per_video"] = _sig(gflop_per_video)
    factor = TRAIN_FLOP_FACTOR if training else 1
    record["flop_basis"] = ("torch.utils.flop_counter forward, batch 1"
                            + (f"; x{factor} for a training step" if training else ""))
    rate = record.get("video_per_s", record.get("videos_per_s"))
    if rate is None:
        return record
    tflops = rate * gflop_per_video * factor / 1e3
    record["tflops"] = _sig(tflops)
    if device_type != "cuda":
        peak, basis = None, f"no peak table for {device_type.upper()}s"
    else:
        peak, basis = peak_tflops(device_name, precision_class(precision, device_type))
    record["peak_tflops"] = peak
    record["peak_basis"] = basis
    record["pct_of_peak"] = _sig(100 * tflops / peak) if peak else None
    return record


def annotate_record(record: dict[str, Any], model: nn.Module, sample_shape: Sequence[int], *,
                    training: bool) -> dict[str, Any]:
    """:func:`annotate` with what a stamped record already says (device, device_type, precision).

    Only measured records (``status`` ok) are annotated. A model the FLOP counter cannot trace
    leaves the record without FLOP figures (the reason in ``flop_basis``): the timing is still a
    result.
    """
    if record.get("status", "ok") != "ok":
        return record
    try:
        gflop = forward_gflop_per_video(model, sample_shape)
    except Exception as exc:  # noqa: BLE001 - a counting failure must not lose a measurement
        log.warning("FLOP count failed for %s: %s", type(model).__name__, exc)
        record["flop_basis"] = f"FLOP count failed: {type(exc).__name__}: {exc}"
        return record
    return annotate(record, gflop, str(record.get("device", "")), str(record.get("precision", "fp32")),
                    training=training, device_type=str(record.get("device_type", "cpu")))
