"""The DALI loader: built pipelines wrapped in ``__len__``/``__iter__``/``set_epoch``.

Each loader batch is one run of the pipeline(s): ``batch_size`` items x ``V`` views x units (a
frame each for frame folders, a clip each for videos, see :mod:`dali_pipelines.sources`). The
wrapper takes the output without copying it (DLPack; the dynamic executor hands every batch its
own buffers), folds units into the contract's ``(N, [V,] T, C, H, W)`` / ``(N, [V,] C, T, H, W)``,
trims the padding of the last partial batch, zeros failed evaluation samples (label -1) and keeps
the bad-sample log (entries arrive from the source inside the batch, possibly from worker
processes).

``decoder_pipelines`` > 1 splits every batch over that many pipelines (items ``[k N/K, (k+1) N/K)``
each): one DALI video decoder keeps one NVDEC engine busy at best, and Hopper GPUs have seven.
The batches are the same as with one pipeline.

No PyAV anywhere on this path: video headers come from :mod:`fastvid.data.video_headers`, and a
padding or failed video sample decodes a readable file of the list (then zeroed or trimmed).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np
import torch

from dali_pipelines.sources import (DALI_CPU_CODECS, UNSUPPORTED_MARK, BatchSource,
                                    cpu_codec_message, decode_bad, items_per_epoch)
from fastvid.cpu import available_cores
from fastvid.data.bad_samples import BadSampleLog
from fastvid.data.lists import VideoRecord
from fastvid.data.sampling import shard_indices
from fastvid.data.transforms import SamplePlanner
from fastvid.data.video_io import first_frame_size
from fastvid.errors import BackendUnavailable, DataError, FastvidError

if TYPE_CHECKING:
    from fastvid.data.loader_settings import LoaderSettings

__all__ = ["DaliVideoLoader", "default_num_threads"]

log = logging.getLogger(__name__)


def default_num_threads() -> int:
    """DALI CPU threads: every core this process may run on, shared among local DDP ranks.

    :func:`fastvid.cpu.available_cores` honours taskset/cgroup CPU sets;
    ``LOCAL_WORLD_SIZE`` (torchrun) splits the cores between the ranks of one machine.
    """
    cores = available_cores()
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // ranks)


def _placeholder_jpeg(size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (0, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def _dali_reason(text: str) -> str:
    """The operator's own message from a DALI pipeline error (after "encountered:")."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "encountered:" in lines:
        after = lines[lines.index("encountered:") + 1:]
        if after:
            return after[0][:300]
    return (lines[-1] if lines else text)[:300]


class _DecodeFailure(RuntimeError):
    """DALI failed inside a video batch (not in the source): a file is corrupt past its headers."""


def _share(total: int, parts: int) -> list[int]:
    """``total`` threads/workers over ``parts`` pipelines as evenly as possible, at least 1 each."""
    return [max(1, total // parts + (1 if k < total % parts else 0)) for k in range(parts)]


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, non-empty ranges covering ``[0, n)`` (sizes differ by at most 1)."""
    parts = max(1, min(parts, n))
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


class DaliVideoLoader:
    """Batch-contract loader over DALI pipelines (decoding on the GPU with ``use_gpu``, else on
    the CPU); its ``backend`` name is the registry's, from ``settings``.

    ``settings.tuning`` (:class:`fastvid.loaders.LoaderTuning`): ``threads``, DALI CPU threads
    (default :func:`default_num_threads`), and ``settings.workers``, spawned Python processes
    building batches (0: the main process builds them, no start-up cost), both split over
    ``decoder_pipelines``; ``prefetch``: batches DALI runs ahead; ``hw_decoder_load``: nvJPEG
    hardware-decoder share (GPU only; None: DALI's default).
    """

    def __init__(self, records: Sequence[VideoRecord], planner: SamplePlanner,
                 settings: "LoaderSettings", *, use_gpu: bool) -> None:
        self.settings = settings
        self.backend = settings.backend  # the registry's name for this loader
        self.device = torch.device(settings.device)
        if use_gpu and self.device.type != "cuda":
            raise BackendUnavailable(f"--loader {self.backend} needs a CUDA target device, "
                                     f"got {self.device}")
        self.use_gpu = use_gpu
        self.batch_size = batch_size = settings.batch_size
        self.workers = settings.workers
        self.planner = planner
        self.drop_last = drop_last = settings.drop_last
        self.channels_first = settings.channels_first
        self.records = list(records)
        self.video = bool(self.records[0].is_video)
        if any(r.is_video != self.video for r in self.records):
            raise DataError("a loader's records must be all frame folders or all video files")
        self.num_samples = len(shard_indices(len(self.records), settings.num_shards,
                                             settings.shard_id))
        if drop_last and self.num_samples < batch_size:
            raise DataError(f"{self.num_samples} samples per shard is fewer than one batch of "
                            f"{batch_size}; lower the batch size")
        self._items = items_per_epoch(self.num_samples, batch_size, drop_last)
        self._source_args = dict(shuffle=settings.shuffle, num_shards=settings.num_shards,
                                 shard_id=settings.shard_id, frame_tmpl=settings.frame_tmpl)
        tuning = settings.tuning
        self.num_threads = int(tuning.threads or default_num_threads())
        self.pipeline_threads: list[int] = []  # DALI threads each pipeline got (after a build)
        self.hw_decoder_load = tuning.hw_decoder_load
        # Several video pipelines feed several NVDEC engines (DALI issue #6387: 1/2/4/7 pipelines
        # over shards of a list decoded 45/87/166/275 fps of 1080p H.264; not measured here);
        # frames go through one nvJPEG batch (and on CPU one thread pool), where splitting only
        # adds per-batch overhead.
        default_parts = 4 if (use_gpu and self.video) else 1
        self.decoder_pipelines = max(1, min(int(tuning.decoder_pipelines or default_parts),
                                            batch_size))
        self._bad = BadSampleLog(settings.max_bad_fraction)
        self._epoch = 0
        self._pipes: list[Any] = []
        self._sources: list[BatchSource] = []
        self._known_bad: dict[str, str] = {}  # videos DALI failed to decode: path -> reason
        self._stream_epoch = 0  # epoch the pipelines' next batch belongs to
        self._stream_batch = 0  # ... and its index in that epoch
        self._clean = False  # the pipelines sit at (_stream_epoch, _stream_batch), untouched
        self._first_batch = 0  # where the next iteration starts (see start())
        self._building: Optional[threading.Thread] = None
        self._build_error: Optional[BaseException] = None
        self.stage = "all"  # the loader benchmark cuts the graph short (see pipelines.GRAPH_STAGES)
        self.timings: dict[str, float] = {"batches": 0, "build_s": 0.0, "run_s": 0.0,
                                          "to_torch_s": 0.0, "python_s": 0.0}
        self._frame_hw = None if self.video else first_frame_size(
            [r.path for r in self.records[:8]], settings.frame_tmpl)
        if self.video and not use_gpu:
            self._check_cpu_codec(self.records[0].path)

    # -- pipeline lifecycle -------------------------------------------------------------------
    @staticmethod
    def _check_cpu_codec(path: str) -> None:
        from fastvid.data.video_headers import probe_video_headers

        try:
            codec = probe_video_headers(path).codec
        except DataError:
            return  # a broken first file is a bad sample, reported when it is read
        if codec not in DALI_CPU_CODECS:
            raise BackendUnavailable(cpu_codec_message(path, codec))

    def _build(self, epoch0: int, first_batch: int = 0) -> None:
        from dali_pipelines.pipelines import build_pipeline, gpu_decoder_options

        self._close()
        side = max(self.planner.scale_size, self.planner.image_size)
        placeholder = b"" if self.video else _placeholder_jpeg(side)
        records = [(r.path, r.label, r.num_frames, r.is_video) for r in self.records]
        device_id = None
        if self.use_gpu:
            device_id = self.device.index
            if device_id is None:
                device_id = torch.cuda.current_device()
        parts = _split(self.batch_size, self.decoder_pipelines)
        threads = _share(self.num_threads, len(parts))
        workers = _share(self.workers, len(parts)) if self.workers > 0 else [0] * len(parts)
        self.pipeline_threads = threads
        t0 = time.perf_counter()
        pipes, sources = [], []
        for item_range, n_threads, py_workers in zip(parts, threads, workers):
            source = BatchSource(records, self.planner, self.video, self.batch_size, self._items,
                                 epoch0=epoch0, placeholder=placeholder, placeholder_hw=(side, side),
                                 cpu_codecs=None if self.use_gpu else DALI_CPU_CODECS,
                                 item_range=item_range, first_batch=first_batch,
                                 known_bad=dict(self._known_bad), **self._source_args)
            options = gpu_decoder_options(self.hw_decoder_load, self._frame_hw) \
                if self.use_gpu else None
            pipe = build_pipeline(source, self.settings, use_gpu=self.use_gpu,
                                  num_threads=n_threads, device_id=device_id,
                                  py_workers=py_workers, decoder_options=options, stage=self.stage)
            try:
                pipe.build()
            except RuntimeError as exc:
                for p in pipes + [pipe]:
                    self._shutdown(p)
                if "CUDA" in str(exc) or "GPU" in str(exc):
                    raise BackendUnavailable(f"--loader {self.backend}: DALI could not build its GPU "
                                             f"pipeline: {str(exc).splitlines()[0]}") from None
                raise
            pipes.append(pipe)
            sources.append(source)
        self.timings["build_s"] += time.perf_counter() - t0
        log.debug("%d DALI pipeline(s) built in %.1f s (threads %s, python workers %s)",
                  len(pipes), time.perf_counter() - t0, threads, workers)
        self._pipes, self._sources = pipes, sources
        self._stream_epoch, self._stream_batch = epoch0, first_batch
        self._clean = True

    @staticmethod
    def _shutdown(pipe: Any) -> None:
        pool = getattr(pipe, "_py_pool", None)
        if pool is not None:
            pool.close()
        pipe._shutdown()

    def _close(self) -> None:
        pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            self._shutdown(pipe)

    def close(self) -> None:
        """Shut the pipelines and their Python worker processes down now (idempotent).

        A build still running in the background (:meth:`start`) is waited for first, so that
        it cannot leave pipelines behind; its error, if any, is dropped (closing is not using).
        The loader can be iterated again afterwards: it builds new pipelines.
        """
        thread, self._building = self._building, None
        if thread is not None:
            thread.join()
        self._build_error = None
        self._clean = False
        self._close()

    def __enter__(self) -> "DaliVideoLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: DALI may be half torn down
            pass

    # -- loader protocol ----------------------------------------------------------------------
    @property
    def bad_samples(self) -> list[tuple[str, str]]:
        return list(self._bad.items)

    @property
    def source_timings(self) -> dict[str, float]:
        """Seconds the batch sources spent per stage in this process (0 with workers > 0)."""
        out: dict[str, float] = {}
        for src in self._sources:
            for k, v in src.timings.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def stage_profile(self, batches: int) -> dict[str, Any]:
        """Where a batch's time goes: the graph cut after each stage (see
        :data:`dali_pipelines.pipelines.GRAPH_STAGES`), rebuilt and timed over ``batches``
        batches after one warm-up batch, at this loader's threads; the increments are each
        stage's cost (``stage_ms``), plus the source's and the loader's own Python timers
        (``python_ms``). The loader is closed after and builds its full graph again when next
        iterated."""
        import itertools
        import warnings

        from dali_pipelines.pipelines import GRAPH_STAGES

        def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for epoch in itertools.count():
                self.set_epoch(epoch)
                yield from self

        def sync() -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

        cumulative: dict[str, float] = {}
        python: dict[str, float] = {}
        try:
            for stage in GRAPH_STAGES:
                self.close()
                self.stage = stage
                self.set_epoch(0)
                batches_of = stream()
                with warnings.catch_warnings():  # a cut graph leaves source outputs unused
                    warnings.filterwarnings("ignore", message="The external source node")
                    next(batches_of)
                before_src, before = self.source_timings, dict(self.timings)
                sync()
                t0 = time.perf_counter()
                for _ in range(batches):
                    next(batches_of)
                sync()
                cumulative[stage] = 1e3 * (time.perf_counter() - t0) / batches
                if stage == "all":
                    for k, v in self.source_timings.items():
                        python[f"source_{k}"] = 1e3 * (v - before_src.get(k, 0.0)) / batches
                    for k in ("run_s", "to_torch_s", "python_s"):
                        python[f"loader_{k[:-2]}"] = 1e3 * (self.timings[k] - before[k]) / batches
                del batches_of
        finally:
            self.close()
            self.stage = "all"
        names = {"source": "source (plan + read + checks)", "decode": "decode",
                 "resize": "crop/resize", "all": "normalize + layout"}
        increments, prev = {}, 0.0
        for stage in GRAPH_STAGES:
            increments[names[stage]] = round(cumulative[stage] - prev, 2)
            prev = cumulative[stage]
        return {"stage_ms": increments,
                "stage_cumulative_ms": {k: round(v, 2) for k, v in cumulative.items()},
                "python_ms": {k: round(v, 3) for k, v in python.items()},
                "stage_method": "graph cut after each stage, per-batch ms at these threads; "
                                "python_ms: the source's and loader's own timers (source run in "
                                "the main process inside DALI's run())"}

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self._epoch:  # cancels a start() on another epoch
            self._first_batch = 0
        self._epoch = int(epoch)

    def start(self, epoch: int, first_batch: int = 0) -> None:
        """Build the pipelines for ``epoch`` from batch ``first_batch`` in a background thread.

        Called before the model is built (and compiled), so DALI's build - its Python workers'
        start, nvJPEG/NVDEC set-up - overlaps that work instead of delaying the first step; the
        next ``iter()`` waits for it and yields batches ``first_batch`` .. end of the epoch (a
        resumed run skips what it consumed without decoding it).
        """
        self._join()
        self.set_epoch(epoch)
        self._first_batch = int(first_batch)
        at = (self._want_epoch(), self._first_batch)  # fixed now: set_epoch may follow at once

        def build() -> None:
            try:
                self._build(at[0], first_batch=at[1])
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's iter()
                self._build_error = exc

        self._building = threading.Thread(target=build, name="dali-build", daemon=True)
        self._building.start()

    def _join(self) -> None:
        thread, self._building = self._building, None
        if thread is not None:
            thread.join()
        error, self._build_error = self._build_error, None
        if error is not None:
            raise error

    def _want_epoch(self) -> int:
        # Training frames depend on the epoch; evaluation sampling is fixed (epoch 0 always).
        return self._epoch if self.planner.train else 0

    def __len__(self) -> int:
        return self._items // self.batch_size

    def _run(self, pipe: Any, batch: int) -> tuple[Any, ...]:
        """One pipeline's outputs; errors raised by the source become fastvid errors.

        In the main process the source's own exception arrives; from DALI's Python workers it
        arrives as text inside a plain ``Exception``, so both are matched by their message.
        """
        try:
            return pipe.run()
        except Exception as exc:  # noqa: BLE001 - DALI wraps worker errors in plain Exception
            self._clean = False
            text = str(exc)
            if UNSUPPORTED_MARK in text:
                msg = text[text.index(UNSUPPORTED_MARK) + len(UNSUPPORTED_MARK):].splitlines()[0]
                raise BackendUnavailable(msg) from None
            if isinstance(exc, FastvidError):
                raise
            if "DataError" in text and "failed to load" in text:
                line = next(ln for ln in text.splitlines() if "failed to load" in ln)
                raise DataError(line.split("DataError:", 1)[-1].strip()) from None
            if "DataError:" in text:  # any other DataError a source raised in a worker process
                raise DataError(text.split("DataError:", 1)[1].strip().splitlines()[0]) from None
            if self.video and isinstance(exc, RuntimeError) and "Error in" in text:
                raise _DecodeFailure(_dali_reason(text)) from None
            raise

    def _run_all(self, batch: int) -> list[tuple[Any, ...]]:
        """Outputs of every pipeline for ``batch``; a video DALI cannot decode becomes a bad
        sample: the file is found by decoding the batch's videos one by one, the pipelines are
        rebuilt at this batch with the file marked bad, and the batch is made again."""
        while True:
            try:
                return [self._run(pipe, batch) for pipe in self._pipes]
            except _DecodeFailure as exc:
                found = {p: r for p, r in self._find_undecodable(batch).items()
                         if p not in self._known_bad}
                if not found:
                    raise DataError(f"DALI could not decode a video of batch {batch}, and none of "
                                    f"its files fails alone: {exc}") from None
                for path, reason in found.items():
                    log.warning("DALI cannot decode %s (%s); it is a bad sample from now on",
                                path, reason)
                self._known_bad.update(found)
                self._build(self._stream_epoch, first_batch=batch)
                self._clean = False

    def _find_undecodable(self, batch: int) -> dict[str, str]:
        """Videos of ``batch`` (of the current stream epoch) that DALI fails to decode alone."""
        from dali_pipelines.pipelines import build_decode_check

        probe = dataclasses.replace(self._sources[0], item_range=(0, self.batch_size),
                                    epoch0=self._stream_epoch, first_batch=0, timings={},
                                    known_bad=dict(self._known_bad))
        device_id = self._pipes[0].device_id if self._pipes else None
        found: dict[str, str] = {}
        pipe = None
        for path, data, frames in probe.batch_videos(batch):
            if pipe is None:
                pipe = build_decode_check(use_gpu=self.use_gpu, device_id=device_id,
                                          num_threads=max(1, min(4, self.num_threads)))
                pipe.build()
            try:
                pipe.feed_input("data", [data])
                pipe.feed_input("frames", [frames])
                pipe.run()
            except RuntimeError as exc:
                found[path] = (f"{path}: DALI cannot decode frames {frames.tolist()}: "
                               f"{_dali_reason(str(exc))}")
                self._shutdown(pipe)
                pipe = None
        if pipe is not None:
            self._shutdown(pipe)
        return found

    @staticmethod
    def _to_torch(tl: Any, exec_dynamic: bool) -> torch.Tensor:
        dense = tl.as_tensor()
        gpu = type(dense).__name__ == "TensorGPU"
        if exec_dynamic:
            # The dynamic executor gives every batch its own buffers: wrap, don't copy (as
            # DALIGenericIterator does). GPU tensors: __dlpack__ makes the current stream of
            # DALI's device wait for DALI's work.
            if gpu:
                with torch.cuda.device(dense.device_id()):
                    return torch.from_dlpack(dense)
            return torch.from_dlpack(dense)
        from nvidia.dali.plugin.pytorch import feed_ndarray
        from nvidia.dali.plugin.pytorch.torch_utils import to_torch_type

        out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype],
                          device=torch.device("cuda", dense.device_id()) if gpu else "cpu")
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device) if gpu else None)
        return out

    def _label_to_device(self, label: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(label)
        if self.device.type == "cuda":
            # From pinned memory without blocking: a pageable copy would wait for the training
            # step queued on the stream, and count as data wait.
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)

    def _fold(self, video: torch.Tensor, items: int) -> torch.Tensor:
        """Units -> the contract's item layout (views axis only for multi-view evaluation)."""
        views = self.planner.num_views
        if self.stage != "all":
            return video
        crops = self._sources[0].crops_per_unit
        if crops > 1 and not self.video:  # (N*clips*T, crops, C, H, W) -> (N, V, T, C, H, W)
            t = self.planner.spec.frames_per_view
            video = video.reshape(items, views // crops, t, crops, *video.shape[2:])
            video = video.transpose(2, 3).reshape(items, views, t, *video.shape[4:])
            if self.channels_first:
                video = video.transpose(2, 3)
        elif crops > 1:  # (N*clips, crops, ...) clips -> (N, V, ...)
            video = video.reshape(items, views, *video.shape[2:])
        elif not self.video:  # (U, C, H, W) frames -> (N, V, T, C, H, W)
            t = self.planner.spec.frames_per_view
            video = video.reshape(items, views, t, *video.shape[1:])
            if self.channels_first:
                video = video.transpose(2, 3)
        else:  # (N*V, T, C, H, W) or (N*V, C, T, H, W)
            video = video.reshape(items, views, *video.shape[1:])
        if not (self.planner.views is not None and not self.planner.train):
            video = video.squeeze(1)
        return video.contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._join()
        first, self._first_batch = self._first_batch, 0
        # Pipelines are kept from epoch to epoch while they stream the batches wanted next;
        # otherwise (another epoch, an abandoned half-read epoch, another start) rebuilt.
        if (not self._pipes or not self._clean or self._stream_batch != first
                or (self.planner.train and self._stream_epoch != self._epoch)):
            self._build(self._want_epoch(), first_batch=first)
        action = "replaced by another sample" if self.planner.train else "scored as label -1"
        self._bad.start_epoch(self._items if self.drop_last else self.num_samples)
        units_per_item = self._sources[0].units_per_item
        timings = self.timings
        self._clean = False
        for b in range(first, len(self)):
            t0 = time.perf_counter()
            outs = self._run_all(b)
            t1 = time.perf_counter()
            videos, labels = [], []
            for pipe, (video_tl, label_tl, bad_tl) in zip(self._pipes, outs):
                if self.stage in ("resize", "all"):
                    videos.append(self._to_torch(video_tl, pipe.exec_dynamic))
                labels.append(np.array(label_tl.as_tensor()).reshape(-1)[::units_per_item])
                for i in range(0, len(bad_tl), units_per_item):
                    for path, reason in decode_bad(np.array(bad_tl[i])):
                        self._bad.add(path, reason, action)
            t2 = time.perf_counter()
            self._bad.check()
            keep = self.batch_size if self.drop_last else min(
                self.batch_size, self.num_samples - b * self.batch_size)
            np_label = np.concatenate(labels).astype(np.int64)[:keep]
            label = self._label_to_device(np_label)
            if videos:
                video = videos[0] if len(videos) == 1 else torch.cat(videos)
                video = self._fold(video, self.batch_size)
                if video.device != self.device:
                    # dali-cpu feeding a GPU: pinned memory lets the copy overlap the running
                    # step instead of blocking the host until the device is idle.
                    if self.device.type == "cuda":
                        video = video.pin_memory()
                    video = video.to(self.device, non_blocking=True)
                video = video[:keep]
                if self.stage == "all" and (np_label < 0).any():  # host-side test
                    # masked_fill with a broadcast mask: a boolean index would call nonzero()
                    # and synchronise with the device
                    video.masked_fill_((label < 0).view(-1, *[1] * (video.dim() - 1)), 0)
            else:  # a cut graph (benchmark): variable-size frames stay in DALI
                video = torch.empty(0)
            if b == len(self) - 1:
                self._clean = True
                self._stream_epoch, self._stream_batch = self._stream_epoch + 1, 0
            timings["batches"] += 1
            timings["run_s"] += t1 - t0
            timings["to_torch_s"] += t2 - t1
            timings["python_s"] += time.perf_counter() - t2
            yield video, label
