"""The one factory that picks a data loader, and the registry of loader backends.

Every loader yields the batch contract (``docs/design.md``): ``(video, label)`` with ``video``
float32 on the target device, ``(N, T, C, H, W)`` for 2D models and ``(N, C, T, H, W)`` for 3D
models (``cfg.spec.input_layout``), normalized per ``cfg.input_spec``, plus a views axis
``(N, V, ...)`` when ``views`` is given; ``label`` int64 ``(N,)``, -1 for evaluation samples that
could not be decoded. The training loop and the evaluator never ask which backend they got.

A backend is registered once (:func:`register_loader`) with its name, an availability check
that says why it cannot run, a factory ``factory(records, planner, settings)`` taking one
:class:`LoaderSettings`, and its capabilities (target devices, video codecs, CPU threads,
windowed streaming for ``fastvid predict``, the benchmark's baseline); the CLI's ``--loader``
choices, ``auto``'s order of preference, predict's decoder and the benchmark's lists and
baseline are derived from the registry, so no module outside a backend's own asks for it by
name. The factories import ``dali_pipelines`` / ``fastvid.data.torch_loader`` only when chosen,
so the torch loader works without DALI installed.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, Union

import torch

from fastvid.config import Config
from fastvid.data.lists import DatasetInfo, VideoRecord
from fastvid.data.loader_settings import LoaderSettings, LoaderTuning
from fastvid.data.sampling import SamplingSpec
from fastvid.data.transforms import SamplePlanner
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["VideoLoader", "LoaderBackend", "LoaderSettings", "LoaderTuning", "LoaderRequest",
           "register_loader", "loader_backends", "loader_backend", "baseline_loader",
           "streaming_loader", "frame_stream", "loader_names", "loader_help", "close_loader",
           "build_loader", "resolve_loader_name", "dali_available", "planner_for", "list_codecs",
           "DALI_GPU_CODECS"]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class LoaderRequest:
    """What a caller of :func:`build_loader` asks for beyond the config (all optional).

    Attributes:
        split: ``"train"`` (random sampling and augmentation, shuffled, ``drop_last``) or any
            other split (fixed sampling, centre crop or ``views``, list order, every sample).
        batch_size: default ``cfg.train.batch_size``.
        views: ``(clips, crops)`` per evaluation sample; None: one centre view.
        shard_id, num_shards: this process's share of the list.
        workers: default ``cfg.train.workers``.
        drop_last: default True for ``train``, else False.
        records: the samples to load instead of ``dataset.records(split)``.
        tuning: backend tuning knobs (:class:`LoaderTuning`).
    """

    split: str = "train"
    batch_size: Optional[int] = None
    views: Optional[tuple[int, int]] = None
    shard_id: int = 0
    num_shards: int = 1
    workers: Optional[int] = None
    drop_last: Optional[bool] = None
    records: Optional[Sequence[VideoRecord]] = None
    tuning: LoaderTuning = field(default_factory=LoaderTuning)


LoaderFactory = Callable[[Sequence[VideoRecord], SamplePlanner, LoaderSettings], VideoLoader]
# stream(path, device, chunk_frames, info) -> the video's frames in order, as (F, H, W, 3) uint8
# RGB chunks on the device the backend decodes to.
FrameStream = Callable[[str, torch.device, int, Any], Iterator[torch.Tensor]]


@dataclass(frozen=True)
class LoaderBackend:
    """A registered loader backend: its name, how to build it, and what it can do.

    Attributes:
        name: ``--loader`` value; the loader's ``backend`` (given in :class:`LoaderSettings`).
        description: One line for ``--help``.
        unavailable_reason: ``f(device) -> None`` when it can run for that target device, else
            why not (naming what to install or use instead).
        factory: ``f(records, planner, settings) -> VideoLoader``; imports its package lazily.
        preference: ``auto`` takes the available backend with the lowest value.
        devices: target device types it feeds (``torch.device.type``).
        threads: True when :attr:`LoaderTuning.threads` sets its CPU threads (DALI's pipeline
            threads); False when its CPU work runs in its ``workers`` processes (the torch
            DataLoader). The benchmark's thread sweep sets one or the other.
        video_codecs: the video codecs it decodes on a device (FFmpeg names, as the container
            headers give them); None: any codec (PyAV). Frame folders (JPEG) every backend reads.
        stream: how ``fastvid predict --window`` reads a long video with it, a chunk of frames at
            a time (:data:`FrameStream`); None: it cannot, and predict refuses it for windows.
        baseline: the benchmark's reference (``ratio_to_<name>``): the backend that runs
            everywhere. One entry has it.
    """

    name: str
    description: str
    unavailable_reason: Callable[[torch.device], Optional[str]]
    factory: LoaderFactory
    preference: int = 100
    devices: tuple[str, ...] = ("cpu", "cuda")
    threads: bool = False
    video_codecs: Optional[Callable[[torch.device], frozenset]] = None
    stream: Optional[FrameStream] = None
    baseline: bool = False

    def decodes(self, codec: str, device: torch.device) -> bool:
        """Whether it decodes ``codec`` videos for ``device``."""
        return self.video_codecs is None or codec in self.video_codecs(device)

    def reason(self, device: torch.device) -> Optional[str]:
        """Why it cannot feed ``device`` (a device type it does not run on, or its own check)."""
        device = torch.device(device)
        reason = self.unavailable_reason(device)
        if reason is None and device.type not in self.devices:
            reason = f"it feeds {' or '.join(self.devices)} devices, not {device}"
        return reason


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


def loader_help(streaming: bool = False) -> str:
    """``--loader``'s help: each backend's description, then what ``auto`` picks (for
    ``streaming``, ``fastvid predict``: among the backends that stream a video in windows)."""
    entries = loader_backends()
    lines = [f"{b.name}: {b.description}" for b in entries]
    order = [b.name for b in entries if b.stream is not None or not streaming]
    what = ("streams a video in windows and decodes H.264" if streaming
            else "decodes the list's videos")
    return "; ".join(lines + [f"auto: the first of {', '.join(order)} that runs here and {what}"]) + "."


def dali_available() -> bool:
    """True when the ``nvidia.dali`` package can be found (it is not imported here)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def _torch_factory(records: Sequence[VideoRecord], planner: SamplePlanner,
                   settings: LoaderSettings) -> VideoLoader:
    from fastvid.data.torch_loader import TorchVideoLoader

    return TorchVideoLoader(records, planner, settings)


def _torch_stream(path: str, device: torch.device, chunk_frames: int,
                  info: Any) -> Iterator[torch.Tensor]:
    from fastvid.data.video_io import stream_video_frames

    return stream_video_frames(path, chunk_frames)


def _dali_factory(use_gpu: bool) -> LoaderFactory:
    def make(records: Sequence[VideoRecord], planner: SamplePlanner,
             settings: LoaderSettings) -> VideoLoader:
        from dali_pipelines import DaliVideoLoader

        return DaliVideoLoader(records, planner, settings, use_gpu=use_gpu)

    return make


def _dali_stream(use_gpu: bool) -> FrameStream:
    def stream(path: str, device: torch.device, chunk_frames: int,
               info: Any) -> Iterator[torch.Tensor]:
        from dali_pipelines.stream import video_chunks

        return video_chunks(path, use_gpu=use_gpu, device=device, chunk_frames=chunk_frames,
                            info=info)

    return stream


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
    _dali_gpu_reason, _dali_factory(use_gpu=True), preference=0, devices=("cuda",), threads=True,
    video_codecs=lambda device: DALI_GPU_CODECS, stream=_dali_stream(use_gpu=True)))
register_loader(LoaderBackend(
    "dali-cpu", "NVIDIA DALI on the CPU (JPEG frames; VP8/VP9/MJPEG videos)",
    _dali_reason, _dali_factory(use_gpu=False), preference=10, threads=True,
    video_codecs=_dali_cpu_codecs, stream=_dali_stream(use_gpu=False)))
register_loader(LoaderBackend(
    "torch", "PyTorch DataLoader workers: libjpeg-turbo / PyAV decode, augment on the target device",
    lambda device: None, _torch_factory, preference=20, stream=_torch_stream, baseline=True))


def baseline_loader() -> LoaderBackend:
    """The benchmark's reference backend (the entry registered with ``baseline=True``)."""
    for backend in loader_backends():
        if backend.baseline:
            return backend
    raise BackendUnavailable("no loader backend is registered as the baseline")


# The codec ``fastvid predict``'s auto assumes of a user's footage before opening it: phones,
# cameras and screen recorders write H.264, which DALI's CPU decoder cannot read.
FOOTAGE_CODEC = "h264"


def streaming_loader(name: str, device: torch.device) -> LoaderBackend:
    """The backend ``fastvid predict`` decodes with: ``name`` (checked to run here), or for
    ``auto`` the first available backend (in order of preference) that streams windows and
    decodes H.264 on ``device`` (DALI on a GPU; elsewhere the torch loader's PyAV). Whether an
    explicit backend streams is asked when windows are read (:func:`frame_stream`): a whole
    input goes through its loader.

    Raises:
        BackendUnavailable: an explicit backend that cannot run here.
    """
    device = torch.device(device)
    if name != "auto":
        return loader_backend(resolve_loader_name(name, device))
    for backend in loader_backends():
        if (backend.stream is not None and backend.reason(device) is None
                and backend.decodes(FOOTAGE_CODEC, device)):
            log.debug("loader auto -> %s for predict", backend.name)
            return backend
    raise BackendUnavailable("no registered loader backend can stream video frames here")


def frame_stream(backend: LoaderBackend) -> FrameStream:
    """``backend.stream``; BackendUnavailable naming the backends that have one when it has not."""
    if backend.stream is None:
        usable = [b.name for b in loader_backends() if b.stream is not None]
        raise BackendUnavailable(f"--loader {backend.name} cannot read a video as a stream of "
                                 f"frames (fastvid predict --window); use --loader "
                                 f"{' or '.join(usable)}")
    return backend.stream


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
            reason = backend.reason(device)
            if reason is None and codecs:
                cannot = sorted(c for c in codecs if not backend.decodes(c, device))
                if cannot:
                    log.info("loader auto: not %s: it cannot decode %s videos (e.g. %s); it "
                              "decodes %s", backend.name, ", ".join(cannot), codecs[cannot[0]],
                              ", ".join(sorted(backend.video_codecs(device))))
                    continue
            if reason is None:
                what = f" for {', '.join(sorted(codecs))} videos" if codecs else ""
                log.info("loader auto -> %s%s (%s)", backend.name, what, backend.description)
                return backend.name
            log.debug("loader auto: not %s: %s", backend.name, reason)
        raise BackendUnavailable("no loader backend can run here")  # torch always can
    reason = loader_backend(name).reason(device)
    if reason is not None:
        usable = [b.name for b in loader_backends() if b.reason(device) is None]
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
    if record.is_video:
        from fastvid.data.video_headers import probe_video_headers

        try:
            info = probe_video_headers(record.path)
        except (OSError, ValueError, DataError):
            return None  # unreadable: reported as a bad sample when it is loaded
        return int(info.height), int(info.width)
    from fastvid.data.video_io import first_frame_size

    return first_frame_size([record.path], frame_tmpl)


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


def build_loader(cfg: Config, dataset: Optional[DatasetInfo],
                 request: Union[LoaderRequest, str] = "train", *, loader: str = "auto",
                 device: torch.device) -> VideoLoader:
    """A loader for ``request.split`` of ``dataset`` (or for ``request.records``) yielding the
    batch contract; ``request`` may be just the split's name.

    ``train``: random sampling and augmentation, shuffled per epoch, ``drop_last`` True by
    default; any other split: fixed sampling, centre crop or ``views=(clips, crops)``, list order
    (when ``num_shards`` is 1), every sample kept. The backend (``loader``, or ``auto``: see
    :func:`resolve_loader_name`) gets one :class:`LoaderSettings`.
    """
    if isinstance(request, str):
        request = LoaderRequest(request)
    device = torch.device(device)
    split = request.split
    records = request.records
    if records is None:
        records = dataset.records(split, frame_tmpl=cfg.data.frame_tmpl)
    records = list(records)
    name = resolve_loader_name(loader, device, records)
    if not records:
        raise DataError(f"no samples to load for split {split!r}")
    train = split == "train"
    _warn_upscaling(records[0], cfg.data.image_size, cfg.data.frame_tmpl)
    planner = planner_for(cfg, split, request.views)
    spec = cfg.input_spec
    settings = LoaderSettings(
        backend=name, device=device,
        batch_size=int(request.batch_size or cfg.train.batch_size),
        workers=cfg.train.workers if request.workers is None else int(request.workers),
        mean=tuple(spec["mean"]), std=tuple(spec["std"]), bgr=spec["color"] == "BGR",
        channels_first=cfg.spec.is_3d, shuffle=train,
        drop_last=train if request.drop_last is None else bool(request.drop_last),
        shard_id=request.shard_id, num_shards=request.num_shards, frame_tmpl=cfg.data.frame_tmpl,
        max_bad_fraction=cfg.data.max_bad_fraction, seed=cfg.train.seed, tuning=request.tuning)
    return _BACKENDS[name].factory(records, planner, settings)
