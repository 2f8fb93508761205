"""Build, validate, save and load inference engines (AOTInductor, ONNX Runtime, TensorRT, OpenVINO).

An engine is an artifact file plus ``<artifact>.json`` with what it was built for. Every build
goes model -> :func:`engines.export.export_model` -> backend compile -> save -> load the saved
file -> compare with the eager model on a seeded batch; a build whose error exceeds the
precision's tolerance is removed and raises :class:`EngineValidationError`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.atomic import fsync_dir, write_text_atomic
from fastvid.errors import BackendUnavailable, FastvidError, is_write_failure, write_error_message
from fastvid.models import input_layout
from fastvid.cpu import available_cores
from fastvid.precision import DTYPES, precision_unusable
from fastvid.version import __version__

from .backends import EngineBackend, engine_backend, engine_backends, engine_names
from .export import cast_for_precision, export_model, graph_problems, validation_batch

__all__ = ["Engine", "EngineError", "EngineValidationError", "TOLERANCES", "precision_reason", "available_backends", "build_engine", "load", "meta_path",
           "backend_versions", "require_backend", "read_meta", "check_supported", "auto_backend",
           "tolerance", "cpu_threads_beside_loader",
           "artifact_companions", "artifact_digest", "verify_artifact"]

log = logging.getLogger(__name__)

# Allowed max |engine - eager fp32| divided by the logit scale max |eager fp32 logits|. fp32 on CUDA is
# looser because cuDNN convolutions may run in TF32 (10-bit mantissa) in the engine; fp16 keeps
# 10 mantissa bits and bf16 only 7, through ~100 layers. A backend module may define its own
# ``TOLERANCES = {precision: rel}`` (OpenVINO: fp32 1e-4, bf16 5e-2), which :func:`tolerance` prefers.
TOLERANCES = {("fp32", "cpu"): 1e-3, ("fp32", "cuda"): 5e-3,
              ("fp16", "cpu"): 3e-2, ("fp16", "cuda"): 3e-2,
              ("bf16", "cpu"): 1e-1, ("bf16", "cuda"): 1e-1}

META_FORMAT = 1


class EngineError(FastvidError):
    """An engine file is missing/invalid, or an input does not fit what the engine was built for."""


class EngineValidationError(EngineError):
    """A freshly built engine disagrees with the eager model beyond the precision's tolerance."""


def _backend_module(backend: str) -> EngineBackend:
    return engine_backend(backend).load()


def precision_reason(backend: str, precision: str, device: torch.device | str) -> Optional[str]:
    """Why ``backend`` cannot build or run ``precision`` on ``device``: the device's rule
    (:func:`fastvid.precision.usable_precisions`), then the backend's own restrictions; or None."""
    device = torch.device(device)
    return (precision_unusable(precision, device)
            or _backend_module(backend).precision_unsupported(precision, device))


def tolerance(backend: str, precision: str, device: torch.device) -> float:
    """The validation tolerance (relative to the logit scale) of a ``backend`` engine."""
    own = getattr(_backend_module(backend), "TOLERANCES", None) or {}
    return float(own[precision]) if precision in own else TOLERANCES[(precision, device.type)]


def cpu_threads_beside_loader(loader_threads: int) -> int:
    """CPU threads for an engine that runs while a loader uses ``loader_threads`` (worker
    processes or DALI threads): every core this process may use, less the loader's, but never
    less than half of them (on a CPU, inference is most of an evaluation's work)."""
    cores = available_cores()
    return max(1, cores - min(max(0, int(loader_threads)), cores // 2))


def auto_backend(device: torch.device | str | None = None, precision: str = "fp32") -> str:
    """The engine backend ``--backend auto`` picks on ``device`` (default: CUDA when available,
    else CPU): the available one of lowest ``EngineBackendEntry.preference`` for the device type
    that can build ``precision`` (CUDA: trt, aoti, onnx; CPU: openvino, aoti, onnx)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    ranked = sorted((e for e in engine_backends() if device.type in e.preference),
                    key=lambda e: e.preference[device.type])
    tried = []
    for entry in ranked:  # probed in order: a usable first choice spares the others' imports
        reason = (_backend_module(entry.name).unavailable_reason(device)
                  or precision_reason(entry.name, precision, device))
        if reason is None:
            return entry.name
        tried.append(f"{entry.name}: {reason}")
    raise BackendUnavailable(f"no engine backend can build {precision} on {device}: " + "; ".join(tried))


def available_backends(device: torch.device | str | None = None) -> dict[str, Optional[str]]:
    """``{backend: None if usable on device else the reason}`` for every registered backend.

    ``device`` defaults to CUDA when available, else CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return {name: _backend_module(name).unavailable_reason(device) for name in engine_names()}


def require_backend(backend: str, device: torch.device | str) -> None:
    """Raise :class:`BackendUnavailable` naming what is missing and which backends do work."""
    engine_backend(backend)  # an unknown name raises, listing the known ones
    # Only this backend is probed when it works: probing the others imports their toolchains
    # (AOTInductor's config imports torch._inductor), seconds off every eval/predict start.
    reason = _backend_module(backend).unavailable_reason(torch.device(device))
    if reason is not None:
        status = available_backends(device)
        usable = [b for b, r in status.items() if r is None]
        raise BackendUnavailable(f"engine backend {backend!r} is unavailable on {torch.device(device)}: "
                                 f"{reason}. Available backends here: "
                                 f"{', '.join(usable) if usable else 'none'}")


def check_supported(backend: str, precision: str, device: torch.device | str) -> None:
    """Raise :class:`BackendUnavailable` when ``backend`` cannot build ``precision`` on ``device``."""
    require_backend(backend, device)
    reason = precision_reason(backend, precision, device)
    if reason:
        raise BackendUnavailable(f"{backend} {precision} on {torch.device(device)}: {reason}")


def backend_versions() -> dict[str, Optional[str]]:
    """Versions of torch, onnxruntime and tensorrt without importing the optional packages."""
    from importlib import metadata

    def version(dist: str) -> Optional[str]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"torch": torch.__version__, "onnxruntime": version("onnxruntime") or version("onnxruntime-gpu"),
            "onnx": version("onnx"), "torch_tensorrt": version("torch-tensorrt") or version("torch_tensorrt"),
            "tensorrt": version("tensorrt") or version("tensorrt-cu13") or version("tensorrt-cu12"),
            "fastvid": __version__}


def meta_path(artifact: str | Path) -> Path:
    """``model.pt2`` -> ``model.pt2.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


class Engine:
    """A loaded engine: ``engine(video) -> logits`` on its device, with the batch contract's input.

    Args:
        runner: the backend's callable on a correctly shaped/typed input tensor.
        meta: the ``<artifact>.json`` contents.
        device: where inputs are moved and logits returned.
    """

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], meta: dict[str, Any],
                 device: torch.device) -> None:
        self.runner = runner
        self.meta = meta
        self.device = device
        # Backends that apply the precision themselves (OpenVINO) take float32 at every precision.
        self.dtype: torch.dtype = _input_dtype(meta)
        self.sample_shape: tuple[int, ...] = tuple(meta["input_shape"][1:])
        self.min_batch, self.max_batch = (int(b) for b in meta["batch_range"])
        self.num_classes: int = int(meta["num_classes"])
        self.input_layout: str = meta.get("input_layout", "")

    @property
    def runtime_info(self) -> dict[str, Any]:
        """What the backend's runtime reports about this engine (OpenVINO: the precision it
        actually computes in, threads, streams); empty for backends that report nothing."""
        return dict(getattr(self.runner, "runtime_info", None) or {})

    def __repr__(self) -> str:
        return (f"Engine({self.meta['backend']}, {self.meta['precision']}, input "
                f"{_fmt_shape(('B',) + self.sample_shape)} B in [{self.min_batch},{self.max_batch}], "
                f"{self.device})")

    def check_input(self, video: torch.Tensor) -> None:
        """Raise :class:`EngineError` naming expected vs got when ``video`` does not fit."""
        expected = (f"engine built for input {_fmt_shape(('B',) + self.sample_shape)} with B in "
                    f"[{self.min_batch},{self.max_batch}]")
        if not isinstance(video, torch.Tensor):
            raise EngineError(f"{expected}, got a {type(video).__name__} instead of a tensor")
        shape = tuple(video.shape)
        if (len(shape) != len(self.sample_shape) + 1 or shape[1:] != self.sample_shape
                or not self.min_batch <= shape[0] <= self.max_batch):
            raise EngineError(f"{expected}, got {_fmt_shape(shape)}")
        # float32 is what every loader yields; reduced-precision engines cast it on the way in.
        if video.dtype not in (self.dtype, torch.float32):
            raise EngineError(f"engine built for {self.meta['precision']} input "
                              f"({self.dtype} or float32), got {video.dtype}")

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        self.check_input(video)
        video = video.to(device=self.device, dtype=self.dtype, non_blocking=True).contiguous()
        logits = self.runner(video)
        return logits.float()


def _input_dtype(meta: dict[str, Any]) -> torch.dtype:
    name = meta.get("input_dtype")
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else DTYPES[meta["precision"]]


def _validate(runner: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, batch: torch.Tensor,
              device: torch.device, dtype: torch.dtype, tol: float) -> dict[str, Any]:
    """Compare engine and fp32 eager logits on ``batch`` and on its first sample alone
    (``dtype``: the engine's input dtype; ``tol``: the allowed relative error)."""
    errs, agree, total, scale = [], 0, 0, 1e-6
    # The reference is true fp32: TF32 would put the eager model's own error into the comparison.
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for x in (batch, batch[:1]):
            with torch.no_grad():
                ref = model(x.to(device)).float()
            got = runner(x.to(device=device, dtype=dtype).contiguous()).float()
            if got.shape != ref.shape:
                raise EngineValidationError(f"engine output {tuple(got.shape)} != eager output "
                                            f"{tuple(ref.shape)} for input {tuple(x.shape)}")
            errs.append(float((got - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
            agree += int((got.argmax(1) == ref.argmax(1)).sum())
            total += ref.shape[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    max_err = max(errs)
    finite = all(e == e and e != float("inf") for e in errs)
    return {"max_abs_err": max_err, "logit_scale": scale, "rel_err": max_err / scale,
            "tolerance_rel": tol, "top1_agreement": agree / total,
            "batch_sizes": [int(batch.shape[0]), 1], "seed": 0,
            "passed": bool(finite and max_err / scale <= tol)}


def build_engine(model: nn.Module, example_input: torch.Tensor, backend: str, precision: str = "fp32",
                 batch: int = 1, max_batch: Optional[int] = None, out_path: str | Path = "model",
                 meta: Optional[dict[str, Any]] = None) -> Path:
    """Export ``model``, compile it with ``backend``, save it, reload it and validate it.

    Args:
        model: eval-mode model on the target device (its device decides CPU vs CUDA engine).
        example_input: one batch in the model's input layout; only its per-sample shape is used.
        backend: a registered engine backend (``engines.backends.engine_names()``).
        precision: ``fp32`` | ``fp16`` | ``bf16``; the whole graph and the input are cast.
        batch: the batch size to optimise for (TensorRT's opt shape); the engine takes [1, max_batch].
        max_batch: largest batch the engine accepts (default ``batch``).
        out_path: artifact path; the backend's extension is added when missing.
        meta: extra keys for ``<artifact>.json`` (model_name, classes, checkpoint, config, mean, std).
            The engine is validated on a seeded batch in the model's value range (pixels 0-255
            normalized with ``meta['mean']``/``meta['std']`` when given).

    Returns:
        The artifact path. ``<artifact>.json`` holds the build description and validation numbers.
    """
    meta = dict(meta or {})
    max_batch = int(max_batch or batch)
    if not 1 <= batch <= max_batch:
        raise EngineError(f"--batch {batch} must be in [1, --max-batch {max_batch}]")
    device = next(iter(model.parameters()), example_input).device
    check_supported(backend, precision, device)
    mod = _backend_module(backend)
    out = Path(out_path)
    ext = engine_backend(backend).extension
    if out.suffix != ext:
        out = out.with_name(out.name + ext)
    out.parent.mkdir(parents=True, exist_ok=True)
    layout = input_layout(model, default=meta.get("input_layout") or "NTCHW")
    sample_shape = tuple(example_input.shape[1:])
    validation_input = validation_batch((max_batch,) + sample_shape, meta.get("mean"), meta.get("std"),
                                        layout=layout, seed=0).to(device)

    companions = artifact_companions(backend)
    _remove_stale_partials(out, companions)
    # Built, loaded and validated under a temporary name beside the target; renamed into place
    # only after validation passed (docs/design.md, "Engine"): an interrupted build leaves no
    # engine at the final path, and a rebuild never puts an unvalidated file beside the old JSON.
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}-{secrets.token_hex(3)}{out.suffix}")
    try:
        return _build_into(model, example_input, _BuildJob(
            backend, mod, precision, batch, max_batch, out, tmp, companions, meta, device, layout,
            sample_shape, validation_input))
    finally:
        _remove_artifact(tmp, companions)
        _remove_artifact(Path(f"{tmp}.json"), ())


@dataclass(frozen=True)
class _BuildJob:
    """What :func:`build_engine` settled before the work: backend, precision, batch range,
    paths (``tmp``: the partial artifact beside ``out``), the target device and input."""

    backend: str
    mod: EngineBackend
    precision: str
    batch: int
    max_batch: int
    out: Path
    tmp: Path
    companions: tuple[str, ...]
    meta: dict[str, Any]
    device: torch.device
    layout: str
    sample_shape: tuple[int, ...]
    validation_input: torch.Tensor


def _build_into(model: nn.Module, example_input: torch.Tensor, job: _BuildJob) -> Path:
    """:func:`build_engine`'s work: compile to ``job.tmp``, validate, then move the pair to ``job.out``."""
    (backend, mod, precision, batch, max_batch, out, tmp, companions, meta, device, layout,
     sample_shape, validation_input) = (
        job.backend, job.mod, job.precision, job.batch, job.max_batch, job.out, job.tmp,
        job.companions, job.meta, job.device, job.layout, job.sample_shape, job.validation_input)
    t0 = time.perf_counter()
    log.info("%s %s engine -> %s: exporting %s with torch.export", backend, precision, out,
             type(model).__name__)
    typed_model, typed_example = cast_for_precision(model, example_input.to(device),
                                                    precision if engine_backend(backend).cast_graph
                                                    else "fp32")
    exported = export_model(typed_model, typed_example, max_batch)
    problems = graph_problems(exported)
    if problems:
        raise EngineError(f"the exported graph of {type(model).__name__} is unfit for an engine: "
                          + "; ".join(problems[:10]))
    t_export = time.perf_counter() - t0
    with torch.no_grad():
        num_classes = int(getattr(model, "num_classes", 0) or model(example_input[:1].to(device)).shape[-1])
    input_shape = [batch, *sample_shape]
    note = engine_backend(backend).build_note.get(device.type)
    log.info("compiling with %s for %s, batch 1-%d%s", backend, device, max_batch,
             f" ({note})" if note else "")
    try:
        mod.compile_and_save(exported, typed_example, precision=precision, batch=batch,
                             max_batch=max_batch, out_path=tmp, device=device)
    except Exception as exc:  # exporters wrap the OSError of a full disk in their own errors
        if not is_write_failure(exc, tmp):
            raise
        raise EngineError(write_error_message("engine", out, exc)) from exc
    t_build = time.perf_counter() - t0

    info: dict[str, Any] = {
        "format": META_FORMAT, "artifact": out.name, "backend": backend, "precision": precision,
        "device": device.type, "input_shape": input_shape, "batch_range": [1, max_batch],
        "opt_batch": batch, "input_layout": layout, "input_dtype": str(typed_example.dtype).replace("torch.", ""),
        "num_classes": num_classes, "model_class": type(model).__name__,
        "versions": backend_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_s": round(t_export, 3), "build_s": round(t_build, 3),
    }
    info.update({k: v for k, v in meta.items() if k not in info})
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    log.info("validating the saved engine against the eager model on %d seeded inputs",
             int(validation_input.shape[0]))
    runner = mod.load_runner(tmp, device, info)
    runtime = dict(getattr(runner, "runtime_info", None) or {})
    if runtime:  # e.g. the precision OpenVINO actually computes in: recorded, never assumed
        info["runtime"] = runtime
    try:
        check = _validate(runner, model, validation_input, device, typed_example.dtype,
                          tolerance(backend, precision, device))
    except EngineValidationError as exc:
        check = {"passed": False, "error": str(exc)}
    del runner  # the session/package may hold the temporary file open
    info["validation"] = check
    info["valid"] = check["passed"]
    if not check["passed"]:
        # An engine already at ``out`` stays usable: the numbers go beside it, not over its JSON.
        kept = out.exists() and meta_path(out).is_file()
        numbers = out.with_name(out.name + ".failed.json") if kept else meta_path(out)
        write_text_atomic(numbers, json.dumps(info, indent=2, default=str), "engine description",
                          error=EngineError)
        detail = check.get("error") or (
            f"max |engine - eager| = {check['max_abs_err']:.3g} at logit scale {check['logit_scale']:.3g} "
            f"(relative {check['rel_err']:.3g} > tolerance {check['tolerance_rel']:g} for {precision}); "
            f"top-1 agreement {100 * check['top1_agreement']:.1f}%")
        where = f"; the engine already at {out} is unchanged" if kept else ""
        raise EngineValidationError(f"{backend} {precision} engine failed validation and was removed "
                                    f"({numbers} keeps the numbers{where}): {detail}")
    info.update(artifact_digest(tmp, companions))
    _install(tmp, out, companions, json.dumps(info, indent=2, default=str))
    log.info("built %s: max |engine - eager| %.3g (relative %.3g), top-1 agreement %.1f%%, %.1f s",
             out, check["max_abs_err"], check["rel_err"], 100 * check["top1_agreement"], t_build)
    return out


def artifact_companions(backend: str) -> tuple[str, ...]:
    """Suffixes of the files an artifact of ``backend`` comes with (its module's
    ``ARTIFACT_COMPANIONS``, e.g. OpenVINO's ``(".bin",)`` beside ``model.xml``); () by default."""
    found = getattr(_backend_module(backend), "ARTIFACT_COMPANIONS", ())
    return tuple(str(s) for s in found)


def _companion_paths(path: Path, companions: Sequence[str]) -> list[Path]:
    return [path.with_suffix(suffix) for suffix in companions]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_digest(path: Path, companions: Sequence[str] = ()) -> dict[str, Any]:
    """``artifact_size``, ``artifact_sha256`` and ``companions`` (``{suffix: {size, sha256}}``)
    of an artifact file and its companion files, as recorded in ``<artifact>.json``."""
    if path.is_dir():  # a backend that saves a folder: not hashed (none of the built-in ones)
        return {}
    out: dict[str, Any] = {"artifact_size": path.stat().st_size, "artifact_sha256": _sha256(path)}
    if companions:
        out["companions"] = {suffix: {"size": p.stat().st_size, "sha256": _sha256(p)}
                             for suffix, p in zip(companions, _companion_paths(path, companions))}
    return out


def _install(tmp: Path, out: Path, companions: Sequence[str], meta_text: str) -> None:
    """Move a validated artifact (and its companions) from ``tmp`` to ``out``, then its JSON.

    The old JSON goes first: at every instant the final path holds either no description (the
    engine is refused: "description missing") or a description whose size and hash are those of
    the files beside it. Never an old JSON that vouches for a new file.
    """
    json_tmp = Path(f"{tmp}.json")
    try:
        with open(json_tmp, "w") as fh:
            fh.write(meta_text)
            fh.flush()
            os.fsync(fh.fileno())
        for p in [tmp, *_companion_paths(tmp, companions)]:
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        meta_path(out).unlink(missing_ok=True)
        for src, dst in zip(_companion_paths(tmp, companions), _companion_paths(out, companions)):
            os.replace(src, dst)
        if out.is_dir() and not tmp.is_dir():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
        os.replace(json_tmp, meta_path(out))
    except OSError as exc:
        raise EngineError(write_error_message("engine", out, exc,
                                              needed=sum(p.stat().st_size for p in
                                                         [tmp, *_companion_paths(tmp, companions)]
                                                         if p.is_file()))) from exc
    fsync_dir(out.parent)


def _remove_stale_partials(out: Path, companions: Sequence[str]) -> None:
    """Temporary files of builds of ``out`` whose process is gone (killed with -9)."""
    for p in out.parent.glob(f".{out.stem}.partial-*{out.suffix}"):
        try:
            pid = int(p.name[len(f".{out.stem}.partial-"):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            log.info("removing %s, left by an interrupted build (PID %d)", p, pid)
            _remove_artifact(p, companions)
            _remove_artifact(Path(f"{p}.json"), ())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_artifact(path: Path, companions: Sequence[str] = ()) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    for extra in _companion_paths(path, companions):
        extra.unlink(missing_ok=True)
    for extra in path.parent.glob(path.name + ".data"):  # ONNX external weights
        extra.unlink(missing_ok=True)


# (resolved path, inode, size, mtime_ns, ctime_ns, sha256) of the files this process hashed and
# found as built.
_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()


def verify_artifact(path: Path, meta: dict[str, Any]) -> None:
    """Refuse an artifact whose files are not the ones ``meta`` was written for (size, sha256).

    Descriptions from before the hash was recorded are not checked.
    """
    if "artifact_sha256" not in meta or path.is_dir():
        return
    companions = tuple((meta.get("companions") or {}).keys())
    files = [(path, meta.get("artifact_size"), meta["artifact_sha256"])]
    for suffix, p in zip(companions, _companion_paths(path, companions)):
        rec = meta["companions"][suffix] or {}
        files.append((p, rec.get("size"), rec.get("sha256")))
    for p, size, sha in files:
        if not p.is_file():
            raise EngineError(f"engine {path}: {p.name} is missing (its {meta_path(path).name} lists "
                              f"it); rebuild it with `fastvid build-engine`")
        st = p.stat()
        # One command reads an engine's description several times (eval: the config, the fit
        # check, the load); a file already hashed and unchanged since (same inode, size, mtime
        # and ctime) is not read again.
        key = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha)
        if key in _VERIFIED:
            continue
        if (size is not None and st.st_size != int(size)) or _sha256(p) != sha:
            raise EngineError(f"engine {p} was changed after it was built (size/hash differ from "
                              f"{meta_path(path).name}): rebuild it with `fastvid build-engine`")
        _VERIFIED.add(key)


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(artifact path, meta)`` from an artifact or its ``.json``; clear errors when absent/invalid."""
    path = Path(path)
    if path.suffix == ".json" and path.name[:-5].endswith(tuple(e.extension for e in engine_backends())):
        path = path.with_name(path.name[:-5])
    mpath = meta_path(path)
    if not mpath.is_file():
        if not path.exists():
            raise EngineError(f"engine not found: {path}")
        raise EngineError(f"{path}: its description {mpath.name} is missing; rebuild with "
                          f"`fastvid build-engine`")
    try:
        meta = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise EngineError(f"{mpath}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    missing = [k for k in ("backend", "precision", "input_shape", "batch_range", "num_classes")
               if k not in meta]
    if missing:
        raise EngineError(f"{mpath}: missing keys {', '.join(missing)}")
    if not meta.get("valid", False):
        val = meta.get("validation", {})
        raise EngineError(f"{path}: this engine failed validation at build time "
                          f"(relative error {val.get('rel_err', '?')}, tolerance {val.get('tolerance_rel', '?')}); "
                          f"rebuild it")
    if not path.exists():
        raise EngineError(f"engine not found: {path} (its {mpath.name} exists)")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or len(classes) != int(meta["num_classes"])):
        got = f"{len(classes)} names" if isinstance(classes, list) else type(classes).__name__
        raise EngineError(f"{mpath}: \"classes\" has {got} but the engine outputs "
                          f"{meta['num_classes']} classes (was the file edited?); rebuild it with "
                          f"`fastvid build-engine`")
    verify_artifact(path, meta)
    return path, meta


def load(path: str | Path, device: torch.device | str | None = None, *, cuda_graph: bool = False,
         cpu_threads: Optional[int] = None) -> Engine:
    """Load an engine built by :func:`build_engine` onto ``device`` (default: where it was built).

    ``cuda_graph``: the engine will be captured in a CUDA graph (``bench.graphed``); its backend
    must support that (``EngineBackendEntry.cuda_graphs``) and may load it differently.
    ``cpu_threads``: CPU threads the engine may use because a loader runs beside it (OpenVINO
    honours it as ``meta["cpu_threads"]``; other backends ignore it).
    """
    path, meta = read_meta(path)
    if cpu_threads is not None:
        meta = dict(meta, cpu_threads=int(cpu_threads))
    if cuda_graph:
        if not engine_backend(meta["backend"]).cuda_graphs:
            raise EngineError(f"{path}: {meta['backend']} engines cannot be captured in a CUDA graph")
        meta = dict(meta, cuda_graph=True)
    device = torch.device(device if device is not None else meta.get("device", "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    backend = meta["backend"]
    require_backend(backend, device)
    if engine_backend(backend).device_bound and meta.get("device") != device.type:
        raise EngineError(f"{path}: {backend} engine built for {meta.get('device')}; it cannot run on "
                          f"{device.type} (rebuild it with --device {device.type})")
    reason = precision_reason(backend, meta["precision"], device)
    if reason:
        raise BackendUnavailable(f"{path}: {reason}")
    try:
        runner = _backend_module(backend).load_runner(path, device, meta)
    except FastvidError:
        raise
    except Exception as exc:  # a truncated or overwritten file fails deep in the backend's reader
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise EngineError(f"{path}: cannot load this {backend} engine, the file is damaged or not "
                          f"an engine ({type(exc).__name__}: {first}); rebuild it with "
                          f"`fastvid build-engine`") from exc
    return Engine(runner, meta, device)
