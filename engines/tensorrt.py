"""Torch-TensorRT backend: ``ExportedProgram`` -> TensorRT engines inside a saved ``.ep`` program.

The only module that imports ``torch_tensorrt`` (lazily: its import initialises CUDA). Written
against the Torch-TensorRT 2.14 documentation:

* AOT path, ``docsrc/user_guide/runtime_performance/saving_models.rst``: compile an
  ``ExportedProgram`` with ``torch_tensorrt.dynamo.compile``, save with
  ``torch_tensorrt.save(trt_gm, path, output_format="exported_program", arg_inputs=...)``, load
  with ``torch_tensorrt.load(path).module()``.
* Dynamic batch, ``examples/dynamo/save_dynamic_shapes_both_methods.py`` ("Method 2"): pass the
  same ``torch_tensorrt.Input(min_shape, opt_shape, max_shape, dtype)`` objects to compile and to
  save with ``retrace=True``; the saved program keeps the batch range.
* Precision, ``user_guide/compilation/compilation_settings``: strong typing builds each layer
  in the dtype of the graph (``use_explicit_typing``: default True since 2.10; 2.13 removed it
  and ``enabled_precisions`` from ``dynamo.compile``, where strong typing is simply the
  behaviour, so passing it only matters to older releases). So fp16/bf16 engines come from a
  model and input cast to that dtype by :func:`engines.export.cast_for_precision`; fp32
  disables TF32 so that fp32 means fp32.
* Saving with ``retrace=True`` re-exports from the Inputs' opt shapes: see
  :func:`_save_opt_batch`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

import torch

__all__ = ["unavailable_reason", "precision_unsupported", "compile_and_save", "load_runner"]


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None when Torch-TensorRT can build for ``device``, else what is missing (package and/or CUDA)."""
    missing = []
    if importlib.util.find_spec("torch_tensorrt") is None:
        missing.append("package torch-tensorrt is not installed (pip install fastvid[trt] on a CUDA "
                       "machine with NVIDIA's index reachable)")
    if device.type != "cuda" or not torch.cuda.is_available():
        missing.append("TensorRT needs a CUDA GPU (torch.cuda.is_available() is "
                       f"{torch.cuda.is_available()}, device {device})")
    if missing:
        return "; ".join(missing)
    try:
        import torch_tensorrt  # noqa: F401
    except (ImportError, OSError, RuntimeError) as exc:  # a broken install fails in its CUDA/TRT libs
        return f"torch_tensorrt does not import: {type(exc).__name__}: {exc}"
    return None


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    """None: TensorRT builds every precision that :func:`fastvid.precision.usable_precisions`
    allows on a GPU (strongly typed engines from the cast graph)."""
    return None


def _shape_range(sample: tuple[int, ...], batch: int, max_batch: int) -> dict[str, tuple[int, ...]]:
    """``torch_tensorrt.Input`` shape keywords for batch in [1, max_batch] optimised for ``batch``."""
    return {"min_shape": (1, *sample), "opt_shape": (batch, *sample), "max_shape": (max_batch, *sample)}


def _save_opt_batch(batch: int, max_batch: int) -> int:
    """Opt batch of the Input given to ``torch_tensorrt.save(retrace=True)``.

    save re-exports the compiled module with an example tensor of the Input's opt shape, and
    torch.export specialises a dimension whose example size is 1 (a ``Dim(min=1)`` batch then fails
    with "specialized it to be a constant (1)"); so the example gets 2 rows whenever the range allows.
    The engines are already built: this does not change their optimisation profile.
    """
    return max(batch, min(2, max_batch))


def _input_spec(example: torch.Tensor, batch: int, max_batch: int) -> Any:
    import torch_tensorrt

    return torch_tensorrt.Input(**_shape_range(tuple(example.shape[1:]), batch, max_batch),
                                dtype=example.dtype)


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    """Build TensorRT engines for ``exported`` with batch in [1, max_batch] and save ``out_path``."""
    import torch_tensorrt

    inputs = [_input_spec(example, batch, max_batch)]
    with torch.cuda.device(device):  # save's example inputs go to the current device
        trt_gm = torch_tensorrt.dynamo.compile(
            exported,
            arg_inputs=inputs,
            device=device,
            use_explicit_typing=True,
            disable_tf32=(precision == "fp32"),
            # Run the whole network in TensorRT when possible; tiny leftover blocks stay in PyTorch.
            min_block_size=1,
        )
        save_inputs = [_input_spec(example, _save_opt_batch(batch, max_batch), max_batch)]
        torch_tensorrt.save(trt_gm, str(out_path), output_format="exported_program",
                            arg_inputs=save_inputs, retrace=True)


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The saved TensorRT program as ``video -> logits`` on ``device``."""
    import torch_tensorrt

    with torch.cuda.device(device):
        module = torch_tensorrt.load(str(path)).module()

    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = module(video)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run
