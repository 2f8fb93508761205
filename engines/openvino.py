"""OpenVINO backend (CPU): ``ExportedProgram`` -> OpenVINO IR (``.xml`` + ``.bin``) -> compiled model.

The IR is converted with ``openvino.convert_model`` straight from the ``ExportedProgram`` that
every backend starts from, not through an ``.onnx`` file: it validates to ~1e-7 relative on TRN
and TPN (fp32), needs no ``onnx``/``onnxscript`` install, and converts in seconds where the
dynamo ONNX exporter takes tens of seconds. The IR keeps float32 weights (``save_model``'s default
would compress them to fp16) and the batch dimension dynamic in ``[1, max_batch]``; the other
input dimensions are fixed to the engine's sample shape.

Precision is a *runtime* setting in OpenVINO: the graph and its input stay float32 and
``INFERENCE_PRECISION_HINT`` picks the kernels. OpenVINO silently runs bf16 on CPUs that have
AVX512_BF16/AMX when no hint is given, so the hint is always set to the requested precision and
the precision the compiled model reports is checked against it and recorded (``runtime_info``:
the engine JSON's ``runtime`` and every bench record).

At run time a batch of 1 goes to a model compiled with ``PERFORMANCE_HINT=LATENCY`` (all
threads on one request); a larger batch to a model compiled with ``THROUGHPUT`` (several CPU
streams), split into one chunk per stream and run concurrently. Both compile the saved IR with
its dynamic batch: reshaping to a static batch of 1 measured no faster (TPN-SlowOnly 112 px,
interleaved runs, fp32 and bf16, within 1%), and compiling from the file lets OpenVINO's
``CACHE_DIR`` (:func:`cache_dir`) key the compiled blob by the file instead of hashing the
whole in-memory model, so a second ``eval``/``predict`` imports it instead of compiling again.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from fastvid.cpu import available_cores

__all__ = ["unavailable_reason", "precision_unsupported", "compile_and_save", "load_runner",
           "ARTIFACT_COMPANIONS", "TOLERANCES", "PRECISION_HINTS", "cache_dir", "default_threads",
           "OpenVINORunner"]

log = logging.getLogger(__name__)

# Files written beside the artifact (suffixes for ``out_path.with_suffix``): the IR's weights. The
# core hashes, renames and removes them together with the artifact.
ARTIFACT_COMPANIONS: tuple[str, ...] = (".bin",)

# Validation tolerances (relative to the eager logit scale, as in engines.core.TOLERANCES) that
# replace the core's defaults for this backend. fp32 runs the same float32 arithmetic as eager
# (measured ~1e-7 on TRN and TPN); bf16 keeps 8 mantissa bits in convolution inputs with float32
# accumulation (measured 0.2-1% on TRN and TPN): 5e-2 leaves room for deeper trained models.
TOLERANCES = {"fp32": 1e-4, "bf16": 5e-2}

# fastvid precision -> OpenVINO INFERENCE_PRECISION_HINT, and back (what the compiled model says).
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
_RUNTIME_PRECISION = {"float32": "fp32", "f32": "fp32", "bfloat16": "bf16", "bf16": "bf16",
                      "float16": "fp16", "f16": "fp16"}

INPUT_NAME = "video"
OUTPUT_NAME = "logits"

# FASTVID_OPENVINO_CACHE overrides the compiled-model cache folder; "" or "off" disables it.
CACHE_ENV = "FASTVID_OPENVINO_CACHE"
# FASTVID_OPENVINO_THREADS overrides the inference thread count of every engine loaded.
THREADS_ENV = "FASTVID_OPENVINO_THREADS"


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None on a CPU with the ``openvino`` package, else why not."""
    if importlib.util.find_spec("openvino") is None:
        return "package openvino not installed (pip install fastvid[openvino])"
    if device.type != "cpu":
        return (f"fastvid's OpenVINO engines run on the CPU only, not {device.type} "
                f"(run with --device cpu, or use trt, aoti or onnx on {device.type})")
    return None


@functools.lru_cache(maxsize=1)
def _cpu_capabilities() -> tuple[str, ...]:
    # A Core loads OpenVINO's plugins; the CPU's capabilities cannot change within a process.
    import openvino as ov

    return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    """Why OpenVINO cannot run ``precision`` here (fp16 never; bf16 without BF16 in the CPU), or None."""
    if precision not in PRECISION_HINTS:
        return (f"OpenVINO engines are fp32 or bf16 on a CPU, not {precision} (fp16 on a CPU is "
                f"emulated and slower than fp32); use --precision fp32 or bf16")
    if precision == "bf16" and "BF16" not in _cpu_capabilities():
        return ("this CPU has no native bf16 (OpenVINO's CPU OPTIMIZATION_CAPABILITIES lack BF16: "
                "needs AVX512_BF16 or AMX); use --precision fp32")
    return None


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    """Convert ``exported`` (float32) to IR at ``out_path`` and ``out_path.with_suffix('.bin')``.

    ``precision`` is applied when the IR is compiled (:func:`load_runner`), never to the IR.
    """
    import openvino as ov

    from .core import EngineError

    if example.dtype != torch.float32:
        raise EngineError(f"OpenVINO IR is converted from the float32 graph, got a {example.dtype} "
                          f"example (the engine registry entry must say cast_graph=False)")
    model = ov.convert_model(exported)
    model.reshape({model.inputs[0]: ov.PartialShape([ov.Dimension(1, max_batch),
                                                     *(int(s) for s in example.shape[1:])])})
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    bin_path = out_path.with_suffix(".bin")
    # save_model insists on a name ending in .xml and derives the .bin from it, while out_path may
    # be a temporary name: write into a scratch folder beside it, then move both files.
    scratch = Path(tempfile.mkdtemp(prefix=".openvino-", dir=out_path.parent))
    try:
        ov.save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
        os.replace(scratch / "model.bin", bin_path)
        os.replace(scratch / "model.xml", out_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cache_dir() -> Optional[Path]:
    """The compiled-model cache: ``$FASTVID_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME`` (or
    ``~/.cache``) ``/fastvid/openvino``; None when the variable is ``""``/``off`` or the folder
    cannot be created (then every load compiles)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.strip().lower() in ("", "off", "0", "none"):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = Path(env) if env else base / "fastvid" / "openvino"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("OpenVINO compiled-model cache disabled: cannot create %s (%s)", root, exc.strerror)
        return None
    return root


def default_threads() -> int:
    """Inference threads when the caller says nothing: ``$FASTVID_OPENVINO_THREADS``, else every
    core this process may use (``fastvid bench`` and ``predict``; ``eval`` passes its own count
    through ``engines.load(..., cpu_threads=)`` to leave room for its loader)."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            from .core import EngineError

            raise EngineError(f"${THREADS_ENV}={env!r} is not a whole number of threads") from None
    return available_cores()


def _runtime_precision(compiled: Any) -> str:
    """What the compiled model runs in, as a fastvid precision name (``fp32``, ``bf16``, ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _RUNTIME_PRECISION.get(name, name)


class OpenVINORunner:
    """``video -> logits`` on an OpenVINO IR: LATENCY model for a batch of 1, THROUGHPUT otherwise.

    Args:
        path: the ``.xml`` (its ``.bin`` beside it).
        precision: ``fp32`` | ``bf16`` (INFERENCE_PRECISION_HINT, checked after compiling).
        max_batch: the engine's largest batch.
        threads: INFERENCE_NUM_THREADS. ``pin``: ENABLE_CPU_PINNING (pinned threads stall when a
            loader shares their cores, so the caller turns it off beside a loader).
    """

    def __init__(self, path: Path, precision: str, max_batch: int, threads: int, pin: bool) -> None:
        import openvino as ov

        self.path = path
        self.precision = precision
        self.max_batch = max_batch
        self.threads = threads
        self.pin = pin
        self.core = ov.Core()
        self.cache = cache_dir()
        if self.cache is not None:
            self.core.set_property({"CACHE_DIR": str(self.cache)})
        self._compiled: dict[str, Any] = {}
        self._queue: Any = None
        self._lock = threading.Lock()
        self.runtime_info: dict[str, Any] = {
            "runtime": "openvino", "openvino": ov.get_version().split("-")[0],
            "precision_hint": PRECISION_HINTS[precision], "num_threads": threads, "cpu_pinning": pin,
            "cache_dir": str(self.cache) if self.cache else None, "compiled": {}}

    def compiled(self, hint: str) -> Any:
        """The IR compiled for ``LATENCY`` or ``THROUGHPUT`` (from the cache when there)."""
        with self._lock:
            if hint not in self._compiled:
                import openvino as ov

                config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
                          "INFERENCE_NUM_THREADS": self.threads, "ENABLE_CPU_PINNING": self.pin}
                # From the path (the .bin beside it): the cache is keyed by the file.
                compiled = self.core.compile_model(str(self.path), "CPU", config)
                used = _runtime_precision(compiled)
                if used != self.precision:
                    from .core import EngineError

                    raise EngineError(f"{self.path}: OpenVINO compiled this {self.precision} engine to run "
                                      f"in {used} (INFERENCE_PRECISION_HINT was "
                                      f"{PRECISION_HINTS[self.precision]}); refusing to run it mislabelled")
                streams = int(compiled.get_property("NUM_STREAMS"))
                requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                self.runtime_info["compiled"][hint] = {
                    "inference_precision": used, "streams": streams, "infer_requests": requests,
                    "loaded_from_cache": bool(compiled.get_property("LOADED_FROM_CACHE"))}
                self.runtime_info["inference_precision"] = used
                self._compiled[hint] = compiled
                if hint == "THROUGHPUT":
                    self._queue = ov.AsyncInferQueue(compiled, max(1, requests))
            return self._compiled[hint]

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        import numpy as np

        x = video.detach().cpu().float().contiguous().numpy()
        if x.shape[0] == 1:
            out = self.compiled("LATENCY")(x)[0]
            return torch.from_numpy(np.array(out, copy=True))
        self.compiled("THROUGHPUT")
        queue = self._queue
        chunks = np.array_split(x, min(len(queue), x.shape[0]))
        results: list[Any] = [None] * len(chunks)

        def done(request: Any, index: int) -> None:
            results[index] = np.array(request.get_output_tensor(0).data, copy=True)

        queue.set_callback(done)
        for i, chunk in enumerate(chunks):
            queue.start_async({0: np.ascontiguousarray(chunk)}, i)
        queue.wait_all()
        return torch.from_numpy(np.concatenate(results))


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The IR as ``video -> logits`` (CPU tensors); compiles (or imports from the cache) the model
    for the engine's opt batch now, so the precision actually used is known at load.

    ``meta["cpu_threads"]`` (set by ``engines.load(..., cpu_threads=N)`` beside a loader): inference
    threads, not pinned to cores (a pinned thread stalls the whole parallel region when a loader
    process takes its core); default :func:`default_threads`, pinned. ``$FASTVID_OPENVINO_THREADS``
    overrides both.
    """
    from .core import EngineError

    bin_path = path.with_suffix(".bin")
    if not bin_path.is_file():
        raise EngineError(f"{path}: its weights {bin_path.name} are missing (an OpenVINO engine is the "
                          f".xml and the .bin beside it); rebuild it with `fastvid build-engine`")
    # OpenVINO maps the .bin and reads a truncated one without an error (garbage weights): the
    # constants the .xml places in it must fit.
    import re

    try:
        xml = path.read_text(errors="replace")
    except OSError as exc:
        raise EngineError(f"{path}: cannot read it ({exc.strerror})") from None
    need = max((int(o) + int(n) for o, n in re.findall(r'offset="(\d+)"\s+size="(\d+)"', xml)), default=0)
    have = bin_path.stat().st_size
    if have < need:
        raise EngineError(f"{path}: cannot load this openvino engine, its weights {bin_path.name} hold "
                          f"{have} bytes where the model needs {need} (truncated or overwritten); "
                          f"rebuild it with `fastvid build-engine`")
    precision = str(meta["precision"])
    beside_loader = meta.get("cpu_threads") is not None
    threads = (default_threads() if not beside_loader or os.environ.get(THREADS_ENV)
               else max(1, int(meta["cpu_threads"])))
    runner = OpenVINORunner(path, precision, int(meta["batch_range"][1]), threads, pin=not beside_loader)
    runner.compiled("LATENCY" if int(meta.get("opt_batch", 1)) == 1 else "THROUGHPUT")
    return runner
