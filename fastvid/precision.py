"""Precision in one place: AMP dtype, autocast context and GradScaler, for train, eval and bench."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from fastvid.errors import FastvidError

__all__ = ["Precision", "resolve_precision", "DTYPES", "PRECISIONS", "usable_precisions",
           "precision_unusable"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = tuple(DTYPES)


def usable_precisions(device: torch.device | str) -> tuple[str, ...]:
    """The precisions that train, eval, engines and bench may compute in on ``device``.

    The one rule for every command: fp32 always; on CUDA fp16, and bf16 where the GPU has native
    bf16 (Ampere or newer); on CPU bf16 but not fp16 (CPU kernels have no fast fp16 path, and
    fp16 training needs a GradScaler, a CUDA recipe). Other device types are not checked here.
    A backend may refuse more (``EngineBackend.precision_unsupported``).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return ("fp32", "bf16")
    if device.type == "cuda":
        # including_emulation=False: by default pre-Ampere GPUs, which only emulate bf16, say True too.
        native_bf16 = (torch.cuda.is_available()
                       and torch.cuda.is_bf16_supported(including_emulation=False))
        return ("fp32", "fp16") + (("bf16",) if native_bf16 else ())
    return PRECISIONS


def precision_unusable(precision: str, device: torch.device | str,
                       option: str = "--precision") -> Optional[str]:
    """Why ``precision`` is not in :func:`usable_precisions` of ``device`` (with the value of
    ``option`` to use instead), or None."""
    device = torch.device(device)
    if precision not in DTYPES:
        return f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
    if precision in usable_precisions(device):
        return None
    if precision == "fp16":
        return (f"fp16 needs a CUDA device (CPU kernels have no fast fp16 path); use {option} "
                f"fp32 or bf16 on CPU")
    return f"this GPU has no bf16 support; use {option} fp16"


@dataclass(frozen=True)
class Precision:
    """What a run computes in: ``amp_dtype`` None means plain fp32."""

    device_type: str
    amp_dtype: torch.dtype | None

    @property
    def name(self) -> str:
        if self.amp_dtype is None:
            return "fp32"
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
        return self.amp_dtype is torch.float16

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)


def resolve_precision(amp: bool, amp_dtype: str, device: torch.device | str) -> Precision:
    """Check that the requested precision is usable on ``device`` and describe it.

    fp16 autocast with a GradScaler is a CUDA recipe; on CPU it is refused with a clear error
    (use bf16). bf16 on a GPU without bf16 support (pre-Ampere) is refused likewise.
    """
    device = torch.device(device)
    if not amp or amp_dtype == "fp32":
        return Precision(device.type, None)
    if amp_dtype not in ("fp16", "bf16"):
        raise FastvidError(f"unknown AMP dtype {amp_dtype!r}; expected fp16 or bf16")
    if amp_dtype not in usable_precisions(device):
        # training's own hints: fp16 is GradScaler training, and fp32 is --no-amp, not a dtype
        raise FastvidError("--amp-dtype fp16 needs a CUDA device (GradScaler fp16 training); use "
                           "--amp-dtype bf16 on CPU" if amp_dtype == "fp16"
                           else "this GPU does not support bf16; use --amp-dtype fp16")
    return Precision(device.type, DTYPES[amp_dtype])
