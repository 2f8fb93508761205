"""The DALI loader: a built pipeline wrapped in ``__len__``/``__iter__``/``set_epoch``.

Each batch is ``batch_size`` items x ``V`` views DALI samples; the wrapper copies the output to
the target device (GPU outputs stay on the GPU), folds views into ``(N, V, ...)``, trims the
padding of the last partial batch, zeros failed evaluation samples (label -1), and keeps the
bad-sample log (entries arrive from the source, possibly in worker processes, inside the batch).
"""
from __future__ import annotations

import io
import logging
import time
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from dali_pipelines.sources import (DALI_CPU_CODECS, UNSUPPORTED_MARK, ClipSource, decode_bad,
                                    items_per_epoch)
from fastvid.data.bad_samples import BadSampleLog
from fastvid.data.lists import VideoRecord
from fastvid.data.sampling import shard_indices
from fastvid.data.transforms import SamplePlanner
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["DaliVideoLoader"]

log = logging.getLogger(__name__)


def _placeholder_jpeg(size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (0, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def _placeholder_video(size: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), format="rgb24")
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    return buf.getvalue()


class DaliVideoLoader:
    """Batch-contract loader over a DALI pipeline (``backend`` "dali" on GPU, "dali-cpu")."""

    def __init__(self, records: Sequence[VideoRecord], planner: SamplePlanner, *, use_gpu: bool,
                 device: torch.device, batch_size: int, workers: int, mean: Sequence[float],
                 std: Sequence[float], bgr: bool, channels_first: bool, shuffle: bool,
                 drop_last: bool, shard_id: int = 0, num_shards: int = 1,
                 frame_tmpl: str = "{:05d}.jpg", max_bad_fraction: float = 0.01,
                 seed: int = 0, num_threads: Optional[int] = None) -> None:
        self.backend = "dali" if use_gpu else "dali-cpu"
        self.device = torch.device(device)
        if use_gpu and self.device.type != "cuda":
            raise BackendUnavailable(f"--loader dali needs a CUDA target device, got {self.device}")
        self.use_gpu = use_gpu
        self.batch_size = batch_size
        self.workers = workers
        self.planner = planner
        self.drop_last = drop_last
        self.records = list(records)
        self.video = bool(self.records[0].is_video)
        if any(r.is_video != self.video for r in self.records):
            raise DataError("a loader's records must be all frame folders or all video files")
        self.num_samples = len(shard_indices(len(self.records), num_shards, shard_id))
        if drop_last and self.num_samples < batch_size:
            raise DataError(f"{self.num_samples} samples per shard is fewer than one batch of "
                            f"{batch_size}; lower the batch size")
        self._items = items_per_epoch(self.num_samples, batch_size, drop_last)
        self._graph_args = dict(mean=list(mean), std=list(std), bgr=bgr,
                                channels_first=channels_first)
        self._source_args = dict(shuffle=shuffle, num_shards=num_shards, shard_id=shard_id,
                                 frame_tmpl=frame_tmpl)
        self.num_threads = num_threads or max(1, min(4, torch.get_num_threads()))
        self._bad = BadSampleLog(max_bad_fraction)
        self._epoch = 0
        self._pipe: Any = None
        self._stream_epoch = 0  # epoch the pipeline's next batch belongs to
        self._clean = False  # the pipeline sits at an epoch boundary
        if self.video and not use_gpu:
            self._check_cpu_codec(self.records[0].path)

    # -- pipeline lifecycle -------------------------------------------------------------------
    @staticmethod
    def _check_cpu_codec(path: str) -> None:
        from fastvid.data.video_io import probe_video

        try:
            codec = probe_video(path).codec
        except DataError:
            return  # a broken first file is a bad sample, reported when it is read
        if codec not in DALI_CPU_CODECS:
            raise BackendUnavailable(
                f"{path}: codec {codec} is not supported by DALI's CPU video decoder (it handles "
                f"{', '.join(sorted(DALI_CPU_CODECS))}); use --loader torch or a GPU (--loader dali)")

    def _build(self, epoch0: int) -> None:
        from dali_pipelines.pipelines import build_clip_pipeline

        self._close()
        side = max(self.planner.scale_size, self.planner.image_size)
        placeholder = _placeholder_video(side) if self.video else _placeholder_jpeg(side)
        records = [(r.path, r.label, r.num_frames, r.is_video) for r in self.records]
        source = ClipSource(records, self.planner, self.video, self._items, epoch0=epoch0,
                            placeholder=placeholder, placeholder_hw=(side, side),
                            cpu_codecs=None if self.use_gpu else DALI_CPU_CODECS,
                            **self._source_args)
        device_id = (self.device.index or 0) if self.use_gpu else None
        t0 = time.perf_counter()
        pipe = build_clip_pipeline(source, frames_per_view=self.planner.spec.frames_per_view,
                                   use_gpu=self.use_gpu, batch_size=self._items_per_batch,
                                   num_threads=self.num_threads, device_id=device_id,
                                   py_workers=self.workers, **self._graph_args)
        try:
            pipe.build()
        except RuntimeError as exc:
            if "CUDA" in str(exc) or "GPU" in str(exc):
                raise BackendUnavailable(f"--loader dali: DALI could not build its GPU pipeline: "
                                         f"{str(exc).splitlines()[0]}") from None
            raise
        log.debug("DALI pipeline built in %.1f s (%d python workers)", time.perf_counter() - t0,
                  self.workers)
        self._pipe = pipe
        self._stream_epoch = epoch0
        self._clean = True

    def _close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        pool = getattr(pipe, "_py_pool", None)
        if pool is not None:
            pool.close()
        pipe._shutdown()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: DALI may be half torn down
            pass

    # -- loader protocol ----------------------------------------------------------------------
    @property
    def _items_per_batch(self) -> int:
        return self.batch_size * self.planner.num_views

    @property
    def bad_samples(self) -> list[tuple[str, str]]:
        return list(self._bad.items)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return self._items // self.batch_size

    def _run(self) -> tuple[Any, ...]:
        try:
            return self._pipe.run()
        except RuntimeError as exc:
            self._clean = False
            text = str(exc)
            if UNSUPPORTED_MARK in text:
                msg = text[text.index(UNSUPPORTED_MARK) + len(UNSUPPORTED_MARK):].splitlines()[0]
                raise BackendUnavailable(msg) from None
            if "DataError" in text and "failed to load" in text:
                line = next(ln for ln in text.splitlines() if "failed to load" in ln)
                raise DataError(line.split("DataError:", 1)[-1].strip()) from None
            raise

    def _to_torch(self, tl: Any) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = tl.as_tensor()
        shape = dense.shape()
        if self.use_gpu:
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
            return out
        out = torch.empty(shape, dtype=torch.float32)
        feed_ndarray(dense, out)
        return out.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Training frames depend on the epoch: a pipeline streaming another epoch is rebuilt.
        # Evaluation sampling is fixed, so only an abandoned (half-read) epoch forces a rebuild.
        if (self._pipe is None or not self._clean
                or (self.planner.train and self._stream_epoch != self._epoch)):
            self._build(self._epoch if self.planner.train else 0)
        action = "replaced by another sample" if self.planner.train else "scored as label -1"
        self._bad.start_epoch(self._items if self.drop_last else self.num_samples)
        views = self.planner.num_views
        has_views_axis = self.planner.views is not None and not self.planner.train
        self._clean = False
        for b in range(len(self)):
            video_tl, label_tl, bad_tl = self._run()
            video = self._to_torch(video_tl)
            labels = np.array(label_tl.as_tensor()).reshape(-1)[::views]
            for i in range(0, len(bad_tl), views):
                for path, reason in decode_bad(np.array(bad_tl[i])):
                    self._bad.add(path, reason, action)
            self._bad.check()
            keep = min(self.batch_size, self.num_samples - b * self.batch_size)
            if self.drop_last:
                keep = self.batch_size
            video = video.reshape(self.batch_size, views, *video.shape[1:]) if has_views_axis \
                else video.reshape(self.batch_size, *video.shape[1:])
            label = torch.from_numpy(labels.astype(np.int64)).to(self.device)
            video, label = video[:keep], label[:keep]
            if (label < 0).any():
                video[label < 0] = 0
            if b == len(self) - 1:
                self._clean = True
                self._stream_epoch += 1
            yield video, label
