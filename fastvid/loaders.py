"""The one factory that picks a data loader, and the registry of loader backends.

Every loader yields the batch contract (``docs/design.md``): ``(video, label)`` with ``video``
float32 on the target device, ``(N, T, C, H, W)`` for 2D models and ``(N, C, T, H, W)`` for 3D
models (``cfg.spec.input_layout``), normalized per ``cfg.input_spec``, plus a views axis
``(N, V, ...)`` when ``views`` is given; ``label`` int64 ``(N,)``, -1 for evaluation samples that
could not be decoded. The training loop and the evaluator never ask which backend they got.

A backend is registered once (:func:`register_loader`) with its name, an availability check
that says why it cannot run, and a factory; the CLI's ``--loader`` choices, ``auto``'s order of
preference and the benchmark's lists are derived from the registry. The factories import
``dali_pipelines`` / ``fastvid.data.torch_loader`` only when chosen, so the torch loader works
without DALI installed.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, runtime_checkable

import torch

from fastvid.config import Config
from fastvid.data.lists import DatasetInfo, VideoRecord
from fastvid.data.sampling import SamplingSpec
from fastvid.data.transforms import SamplePlanner
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["VideoLoader", "LoaderBackend", "register_loader", "loader_backends", "loader_backend",
           "loader_names", "close_loader",
           "build_loader", "resolve_loader_name", "dali_available", "planner_for", "list_codecs",
           "DALI_GPU_CODECS"]

log = logging.getLogger(__name__)


@runtime_checkable
class VideoLoader(Protocol):
    """What every backend's loader object provides."""

    backend: str  # the registered backend name
    num_samples: int  # samples this shard yields per epoch (padding included when sharded)

    @property
    def bad_samples(self) -> list[tuple[str, str]]: ...  # (path, reason) failed this epoch

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def set_epoch(self, epoch: int) -> None: ...

    # Begin ``epoch`` at batch ``first_batch`` in the background (workers/pipelines start now);
    # the next ``iter()`` yields batches first_batch .. end without decoding the skipped ones.
    def start(self, epoch: int, first_batch: int = 0) -> None: ...

    # Shut down workers / pipelines (and their processes) now; idempotent. Loaders are also
    # context managers (``with build_loader(...) as loader:``) that close on exit.
    def close(self) -> None: ...


def close_loader(loader: Optional[Any]) -> None:
    """``loader.close()`` when there is a loader and it has one (a caller's own loader may not).

    Every command closes the loaders it built, on success, error and Ctrl-C alike, so no
    worker process outlives it (or prints a traceback when its parent's resources vanish).
    """
    close = getattr(loader, "close", None)
    if close is not None:
        close()


# The factory's keyword arguments, the same for every backend (see build_loader).
LoaderFactory = Callable[..., VideoLoader]


@dataclass(frozen=True)
class LoaderBackend:
    """A registered loader backend.

    Attributes:
        name: ``--loader`` value.
        description: One line for ``--help``.
        unavailable_reason: ``f(device) -> None`` when it can run for that target device, else
            why not (naming what to install or use instead).
        factory: ``f(records, planner, options=..., **common) -> VideoLoader``; imports its
            package lazily. ``options`` are the caller's backend tuning knobs (``dali_options``
            of :func:`build_loader`); a backend without any ignores them.
        preference: ``auto`` takes the available backend with the lowest value.
        threads_option: the option that sets its CPU threads (DALI: ``num_threads``); None when
            its threads are its worker processes (the torch DataLoader's ``workers``).
    """

    name: str
    description: str
    unavailable_reason: Callable[[torch.device], Optional[str]]
    factory: LoaderFactory
    preference: int = 100
    threads_option: Optional[str] = None
    # The video codecs it decodes on a device (FFmpeg names, as the container headers give
    # them); None: any codec (PyAV). Frame folders (JPEG) every backend reads.
    video_codecs: Optional[Callable[[torch.device], frozenset]] = None


_BACKENDS: dict[str, LoaderBackend] = {}


def register_loader(backend: LoaderBackend) -> LoaderBackend:
    """Add a loader backend; its name becomes a ``--loader`` choice."""
    if backend.name in _BACKENDS or backend.name == "auto":
        raise ValueError(f"loader backend {backend.name!r} registered twice (or named 'auto')")
    _BACKENDS[backend.name] = backend
    return backend


def loader_backends() -> list[LoaderBackend]:
    """Registered backends, in ``auto``'s order of preference."""
    return sorted(_BACKENDS.values(), key=lambda b: (b.preference, b.name))


def loader_backend(name: str) -> LoaderBackend:
    """The registered backend ``name``; BackendUnavailable lists the known ones."""
    if name not in _BACKENDS:
        raise BackendUnavailable(f"unknown loader {name!r}; choose one of {', '.join(loader_names())}")
    return _BACKENDS[name]


def loader_names(auto: bool = True) -> tuple[str, ...]:
    """``--loader`` choices: ``auto`` (when asked for) and every registered backend."""
    return (("auto",) if auto else ()) + tuple(b.name for b in loader_backends())


def dali_available() -> bool:
    """True when the ``nvidia.dali`` package can be found (it is not imported here)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def _torch_factory(records: Sequence[VideoRecord], planner: SamplePlanner, options: dict[str, Any],
                   **common: Any) -> VideoLoader:
    from fastvid.data.torch_loader import TorchVideoLoader

    return TorchVideoLoader(records, planner, **common)


def _dali_factory(use_gpu: bool) -> LoaderFactory:
    def make(records: Sequence[VideoRecord], planner: SamplePlanner, options: dict[str, Any],
             **common: Any) -> VideoLoader:
        from dali_pipelines import DaliVideoLoader

        return DaliVideoLoader(records, planner, use_gpu=use_gpu, **common, **options)

    return make


def _dali_reason(device: torch.device) -> Optional[str]:
    if not dali_available():
        return "the nvidia-dali package is not installed (pip install 'fastvid[dali]')"
    return None


def _dali_gpu_reason(device: torch.device) -> Optional[str]:
    reason = _dali_reason(device)
    if reason is None and not (device.type == "cuda" and torch.cuda.is_available()):
        reason = (f"it needs a CUDA GPU as the target device (device is {device}, CUDA available: "
                  f"{torch.cuda.is_available()})")
    return reason


# What NVDEC (DALI's GPU video decoder) takes; MPEG-4 part 2 and others it does not.
DALI_GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg"})


def _dali_cpu_codecs(device: torch.device) -> frozenset:
    from dali_pipelines.sources import DALI_CPU_CODECS  # no nvidia.dali import

    return DALI_CPU_CODECS


register_loader(LoaderBackend(
    "dali", "NVIDIA DALI on the GPU: nvJPEG / NVDEC decode, crop, resize and normalize on the device",
    _dali_gpu_reason, _dali_factory(use_gpu=True), preference=0, threads_option="num_threads",
    video_codecs=lambda device: DALI_GPU_CODECS))
register_loader(LoaderBackend(
    "dali-cpu", "NVIDIA DALI on the CPU (JPEG frames; VP8/VP9/MJPEG videos)",
    _dali_reason, _dali_factory(use_gpu=False), preference=10, threads_option="num_threads",
    video_codecs=_dali_cpu_codecs))
register_loader(LoaderBackend(
    "torch", "PyTorch DataLoader workers: libjpeg-turbo / PyAV decode, augment on the target device",
    lambda device: None, _torch_factory, preference=20))


# How many of a list's videos auto reads the container headers of: datasets come in one codec
# (Kinetics: H.264, Sth-v2: VP9), so a spread sample finds it without opening 240k files.
CODEC_SAMPLE = 16


def list_codecs(records: Sequence[VideoRecord], sample: int = CODEC_SAMPLE) -> dict[str, str]:
    """``{codec: an example path}`` of up to ``sample`` video records spread over the list,
    from their container headers (:mod:`fastvid.data.video_headers`, no decoding, no PyAV).
    Frame folders and files whose headers cannot be read (bad samples, reported when loaded)
    add nothing."""
    from fastvid.data.video_headers import probe_video_headers

    videos = [r for r in records if r.is_video]
    if not videos:
        return {}
    step = max(1, len(videos) // sample)
    found: dict[str, str] = {}
    for record in videos[::step][:sample]:
        try:
            codec = probe_video_headers(record.path).codec
        except (DataError, OSError):
            continue
        found.setdefault(codec, record.path)
    return found


def resolve_loader_name(name: str, device: torch.device,
                        records: Optional[Sequence[VideoRecord]] = None) -> str:
    """``auto`` -> the first available backend in order of preference that decodes the codecs
    of ``records`` (their container headers, sampled by :func:`list_codecs`): H.264 videos on
    a CPU go to the torch loader rather than to DALI-on-CPU, which cannot decode them. An
    explicit name is checked, and :class:`BackendUnavailable` says what is missing and what
    else works."""
    device = torch.device(device)
    if name == "auto":
        codecs = list_codecs(records) if records else {}
        for backend in loader_backends():
            reason = backend.unavailable_reason(device)
            if reason is None and codecs and backend.video_codecs is not None:
                can = backend.video_codecs(device)
                cannot = sorted(c for c in codecs if c not in can)
                if cannot:
                    log.info("loader auto: not %s: it cannot decode %s videos (e.g. %s); it "
                              "decodes %s", backend.name, ", ".join(cannot), codecs[cannot[0]],
                              ", ".join(sorted(can)))
                    continue
            if reason is None:
                what = f" for {', '.join(sorted(codecs))} videos" if codecs else ""
                log.info("loader auto -> %s%s (%s)", backend.name, what, backend.description)
                return backend.name
            log.debug("loader auto: not %s: %s", backend.name, reason)
        raise BackendUnavailable("no loader backend can run here")  # torch always can
    reason = loader_backend(name).unavailable_reason(device)
    if reason is not None:
        usable = [b.name for b in loader_backends() if b.unavailable_reason(device) is None]
        raise BackendUnavailable(f"--loader {name}: {reason}; use --loader {' or '.join(usable)}")
    return name


def planner_for(cfg: Config, split: str, views: Optional[tuple[int, int]]) -> SamplePlanner:
    """The sampling/augmentation plan of ``split`` as configured (shared by all backends)."""
    d = cfg.data
    spec = SamplingSpec(d.sampling, cfg.model.num_segments, d.clip_len, d.frame_interval)
    flip_map = None
    if d.flip_label_map:
        try:
            flip_map = tuple(sorted((int(k), int(v)) for k, v in d.flip_label_map.items()))
        except (TypeError, ValueError):
            raise DataError(f"data.flip_label_map must map class indices to class indices, got "
                            f"{d.flip_label_map!r}") from None
    train = split == "train"
    if views is not None:
        clips, crops = int(views[0]), int(views[1])
        if clips < 1 or crops not in (1, 3, 10):
            raise DataError(f"views must be (clips >= 1, crops in 1/3/10), got {views}")
        views = (clips, crops)
    return SamplePlanner(spec, train, d.image_size, d.scale_size, d.train_aug, d.flip, flip_map,
                         None if train else views, cfg.train.seed)


_UPSCALE_WARNED: set[tuple[int, int, int]] = set()


def _frame_size(record: VideoRecord, frame_tmpl: str) -> Optional[tuple[int, int]]:
    """(height, width) of a record's frames from its first JPEG's or the video's headers."""
    import os

    try:
        if record.is_video:
            from fastvid.data.video_headers import probe_video_headers

            info = probe_video_headers(record.path)
            return int(info.height), int(info.width)
        from fastvid.data.video_io import jpeg_size

        with open(os.path.join(record.path, frame_tmpl.format(1)), "rb") as fh:
            return jpeg_size(fh.read(1 << 16))
    except (OSError, ValueError, DataError):
        return None  # unreadable: reported as a bad sample when it is loaded


def _warn_upscaling(record: VideoRecord, crop: int, frame_tmpl: str) -> None:
    """One warning (per process and frame size) when the crop is larger than the frames: every
    sample would be upscaled, which costs compute and adds no detail."""
    size = _frame_size(record, frame_tmpl)
    if size is None or min(size) >= crop or (crop, *size) in _UPSCALE_WARNED:
        return
    _UPSCALE_WARNED.add((crop, *size))
    log.warning("data.image_size %d is larger than the frames (%dx%d, e.g. %s): every crop is "
                "upscaled x%.2g; lower data.image_size (and data.scale_size) or use larger frames",
                crop, size[1], size[0], record.path, crop / min(size))


def build_loader(cfg: Config, dataset: DatasetInfo, split: str, *, loader: str = "auto",
                 device: torch.device, batch_size: Optional[int] = None,
                 views: Optional[tuple[int, int]] = None, shard_id: int = 0, num_shards: int = 1,
                 workers: Optional[int] = None, drop_last: Optional[bool] = None,
                 records: Optional[Sequence[VideoRecord]] = None,
                 dali_options: Optional[dict] = None) -> VideoLoader:
    """A loader for ``split`` of ``dataset`` (or for ``records``) yielding the batch contract.

    ``split="train"``: random sampling and augmentation, shuffled per epoch, ``drop_last`` True
    by default; any other split: fixed sampling, centre crop or ``views=(clips, crops)``, list
    order (when ``num_shards`` is 1), every sample kept. ``workers`` defaults to
    ``cfg.train.workers``; ``batch_size`` to ``cfg.train.batch_size``. ``dali_options`` go to
    :class:`dali_pipelines.loader.DaliVideoLoader` (``num_threads``, ``prefetch``,
    ``hw_decoder_load``, ``decoder_pipelines``); the torch loader ignores them.
    """
    device = torch.device(device)
    if records is None:
        records = dataset.records(split, frame_tmpl=cfg.data.frame_tmpl)
    records = list(records)
    name = resolve_loader_name(loader, device, records)
    if not records:
        raise DataError(f"no samples to load for split {split!r}")
    train = split == "train"
    _warn_upscaling(records[0], cfg.data.image_size, cfg.data.frame_tmpl)
    planner = planner_for(cfg, split, views)
    spec = cfg.input_spec
    common = dict(
        device=device,
        batch_size=int(batch_size or cfg.train.batch_size),
        workers=cfg.train.workers if workers is None else int(workers),
        mean=spec["mean"], std=spec["std"], bgr=spec["color"] == "BGR",
        channels_first=cfg.spec.is_3d, shuffle=train,
        drop_last=train if drop_last is None else bool(drop_last),
        shard_id=shard_id, num_shards=num_shards, frame_tmpl=cfg.data.frame_tmpl,
        max_bad_fraction=cfg.data.max_bad_fraction, seed=cfg.train.seed,
    )
    return _BACKENDS[name].factory(records, planner, options=dict(dali_options or {}), **common)
