"""Peak memory of a benchmarked section, labelled with how it was measured.

CPU: the process's peak resident set (``VmHWM`` in ``/proc/self/status``), reset at the start of
the section through ``/proc/self/clear_refs`` when the kernel allows it (else the peak since the
process started). It is process-wide: it includes the interpreter, other models still alive and
the loader. GPU: PyTorch's ``torch.cuda.max_memory_allocated`` (caching allocator only, blind to
TensorRT's and ONNX Runtime's own allocations) and the device's used memory sampled every few ms
(NVML through pynvml when importable, else ``torch.cuda.mem_get_info``), which sees everything
on the GPU, other processes included.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

import torch

__all__ = ["PeakMemory", "read_vm_hwm_mb", "reset_vm_hwm"]

_MB = 1024 * 1024


def read_vm_hwm_mb() -> Optional[float]:
    """Peak resident set of this process in MiB (``VmHWM``), or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def reset_vm_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _device_used_reader(device: torch.device) -> tuple[Callable[[], float], str]:
    """A function giving the device's used memory in MiB, and its label."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    # NVML numbers every GPU of the machine; a CUDA index counts only CUDA_VISIBLE_DEVICES.
    # torch.cuda.device_memory_used maps one to the other (and uses pynvml).
    try:
        torch.cuda.device_memory_used(index)
        return (lambda: torch.cuda.device_memory_used(index) / _MB,
                "NVML device used memory (all processes), sampled every 5 ms")
    except Exception:  # noqa: BLE001 - no pynvml (ModuleNotFoundError) or NVML (NVMLError, RuntimeError)
        pass  # fall back to the CUDA runtime's view

    def used() -> float:
        free, total = torch.cuda.mem_get_info(index)
        return (total - free) / _MB

    return used, "torch.cuda.mem_get_info device used memory (all processes), sampled every 5 ms"


class PeakMemory:
    """``with PeakMemory(device) as pm: ...`` then ``pm.result()`` -> dict of fields for a record."""

    def __init__(self, device: torch.device | str, interval_s: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._peak_used = 0.0
        self._baseline_used = 0.0
        self._reset_ok = False
        self._fields: dict[str, Any] = {}

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._read_used, self._used_method = _device_used_reader(self.device)
            self._baseline_used = self._peak_used = self._read_used()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._reset_ok = reset_vm_hwm()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_used = max(self._peak_used, self._read_used())

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._peak_used = max(self._peak_used, self._read_used())
            self._fields = {
                "peak_mem_mb": round(self._peak_used, 1),
                "peak_mem_method": self._used_method,
                "device_mem_baseline_mb": round(self._baseline_used, 1),
                "torch_peak_mem_mb": round(torch.cuda.max_memory_allocated(self.device) / _MB, 1),
                "torch_peak_mem_method": "torch.cuda.max_memory_allocated (PyTorch caching allocator "
                                         "only; misses TensorRT/ONNX Runtime allocations)",
            }
        else:
            hwm = read_vm_hwm_mb()
            how = ("reset via /proc/self/clear_refs at the start of this backend" if self._reset_ok
                   else "not resettable here: peak since the process started")
            self._fields = {"peak_mem_mb": round(hwm, 1) if hwm is not None else None,
                            "peak_mem_method": f"VmHWM process peak RSS ({how}); process-wide, includes "
                                               f"the interpreter and other loaded models"}

    def result(self) -> dict[str, Any]:
        """The measured fields (empty before the ``with`` block ends)."""
        return dict(self._fields)
