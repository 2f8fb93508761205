"""The PyTorch loader: a Dataset that decodes and augments in uint8 on CPU workers, and a thin
wrapper that moves each batch to the target device and normalizes it there.

Frames are decoded with torchvision's libjpeg-turbo binding (PIL as fallback), video files with
PyAV (seeking to the frames a sample needs). Which frames and which crop a sample gets is decided
by :class:`fastvid.data.transforms.SamplePlanner` from ``(seed, epoch, index)``, never by worker
RNG state, so results do not depend on the worker count and match the DALI loader box for box.

The sampler yields ``(index, epoch)`` pairs, which lets persistent workers follow
``set_epoch`` without being restarted.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fastvid.data.bad_samples import BadSampleLog
from fastvid.data.lists import VideoRecord
from fastvid.data.sampling import shard_indices
from fastvid.data.transforms import SamplePlanner, ViewPlan, apply_plan, normalize_video
from fastvid.data.video_io import (probe_video, read_frame_folder, read_video_frames,
                                   require_pyav)
from fastvid.errors import DataError

if TYPE_CHECKING:
    from fastvid.data.loader_settings import LoaderSettings

__all__ = ["VideoClipDataset", "EpochShardSampler", "TorchVideoLoader", "MAX_REDRAWS", "STAGES"]

log = logging.getLogger(__name__)

MAX_REDRAWS = 10  # training: tries to replace a bad sample before giving up on the batch

#: The steps :meth:`TorchVideoLoader.stage_profile` times, in the order a sample takes them.
STAGES = ("plan", "read + decode", "crop/resize", "normalize + to device")


class _StepClock:
    """Adds the time since the previous lap to a step's total (the stage profile's clock)."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.totals[step] += now - self._last
        self._last = now


class _NoClock:
    """The clock of every load outside the stage profile: laps cost a method call."""

    def lap(self, step: str) -> None:
        pass


_NO_CLOCK = _NoClock()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, DataError) else f"{type(exc).__name__}: {text}"


class VideoClipDataset(Dataset):
    """``dataset[(index, epoch)]`` -> ``(uint8 video, label, bad)``.

    ``video`` is ``(T, 3, S, S)`` RGB, or ``(V, T, 3, S, S)`` when the planner has views; ``bad``
    lists ``(path, reason)`` of samples that failed while producing this item. A bad training
    sample is replaced by a re-drawn one; a bad evaluation sample becomes zeros with label -1.
    """

    def __init__(self, records: Sequence[VideoRecord], planner: SamplePlanner,
                 frame_tmpl: str = "{:05d}.jpg") -> None:
        self.records = list(records)
        self.planner = planner
        self.frame_tmpl = frame_tmpl

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int, epoch: int,
              clock: "_StepClock | _NoClock" = _NO_CLOCK) -> tuple[torch.Tensor, int]:
        rec = self.records[index]
        planner = self.planner
        if rec.is_video:
            info = probe_video(rec.path)
            num_frames, start = info.num_frames, 0
        else:
            num_frames, start = rec.num_frames, 1
        per_view = [planner.frame_indices(num_frames, epoch, index, v, start)
                    for v in range(planner.num_views)]
        wanted = sorted({int(i) for idx in per_view for i in idx})
        clock.lap("plan")
        if rec.is_video:
            decoded = read_video_frames(rec.path, wanted, info)
        else:
            decoded = read_frame_folder(rec.path, wanted, self.frame_tmpl)
        clock.lap("read + decode")
        position = {i: k for k, i in enumerate(wanted)}
        height, width = decoded.shape[-2:]
        views, label = [], rec.label
        resized: dict[tuple, torch.Tensor] = {}  # the crops of one clip share its resized frames
        for v, idx in enumerate(per_view):
            plan = planner.view_plan(height, width, epoch, index, v)
            frames = decoded[[position[int(i)] for i in idx]]
            clock.lap("plan")
            if plan.resize is not None:
                key = (tuple(int(i) for i in idx), tuple(plan.resize))
                if key not in resized:
                    rh, rw = plan.resize
                    resized[key] = apply_plan(frames, ViewPlan((rh, rw), (0, 0, rw, rh), None))
                frames, plan = resized[key], dataclasses.replace(plan, resize=None)
            views.append(apply_plan(frames, plan))
            label = planner.label(rec.label, plan)
            clock.lap("crop/resize")
        video = torch.stack(views) if planner.views is not None and not planner.train else views[0]
        return video, label

    def _empty(self) -> torch.Tensor:
        p = self.planner
        s = p.image_size
        shape = (p.spec.frames_per_view, 3, s, s)
        if p.views is not None and not p.train:
            shape = (p.num_views,) + shape
        return torch.zeros(shape, dtype=torch.uint8)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, list[tuple[str, str]]]:
        index, epoch = key
        bad: list[tuple[str, str]] = []
        tries = MAX_REDRAWS + 1 if self.planner.train else 1
        current = index
        for attempt in range(tries):
            try:
                video, label = self._load(current, epoch)
                return video, label, bad
            # Decoders raise many types (OSError, RuntimeError, av errors, ValueError); any of
            # them for one sample must become a counted bad sample, not a dead worker.
            except Exception as exc:  # noqa: BLE001
                bad.append((self.records[current].path, _reason(exc)))
                if self.planner.train:
                    current = self.planner.redraw(len(self.records), epoch, index, attempt)
        if self.planner.train:
            raise DataError(f"{len(bad)} samples in a row failed to load (last: {bad[-1][0]}: "
                            f"{bad[-1][1]}); is the dataset readable?")
        return self._empty(), -1, bad


class EpochShardSampler(Sampler):
    """Yields ``(index, epoch)`` for this shard's part of the list (see :func:`shard_indices`)."""

    def __init__(self, num_samples: int, shuffle: bool, seed: int, num_shards: int = 1,
                 shard_id: int = 0) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.num_shards, self.shard_id = num_shards, shard_id
        self.epoch = 0
        self.skip = 0  # samples the next iteration leaves out at the start (then reset)

    def indices(self) -> np.ndarray:
        return shard_indices(self.num_samples, self.num_shards, self.shard_id, shuffle=self.shuffle,
                             seed=self.seed, epoch=self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        return iter([(int(i), self.epoch) for i in self.indices()[skip:]])

    def __len__(self) -> int:
        return len(self.indices())


def _collate(items: list[tuple[torch.Tensor, int, list]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    videos = torch.stack([it[0] for it in items])
    labels = torch.tensor([it[1] for it in items], dtype=torch.int64)
    bad = [b for it in items for b in it[2]]
    return videos, labels, bad


def _worker_init(worker_id: int) -> None:
    # Sampling uses explicit (seed, epoch, index) generators; seeding the global RNGs per worker
    # only keeps any third-party randomness reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.set_num_threads(1)


class TorchVideoLoader:
    """DataLoader-backed loader yielding the batch contract on ``device``."""

    def __init__(self, records: Sequence[VideoRecord], planner: SamplePlanner,
                 settings: "LoaderSettings") -> None:
        self.settings = settings
        self.backend = settings.backend
        self.device = torch.device(settings.device)
        self.batch_size = batch_size = settings.batch_size
        self.workers = workers = settings.workers
        self.drop_last = drop_last = settings.drop_last
        self.planner = planner
        self._norm = settings.norm_args()
        self.dataset = VideoClipDataset(records, planner, settings.frame_tmpl)
        first_video = next((r.path for r in self.dataset.records if r.is_video), None)
        if first_video is not None:
            require_pyav(first_video)
        self.sampler = EpochShardSampler(len(self.dataset), settings.shuffle, settings.seed,
                                         settings.num_shards, settings.shard_id)
        self.num_samples = len(self.sampler)
        if drop_last and self.num_samples < batch_size:
            raise DataError(f"{self.num_samples} samples per shard is fewer than one batch of "
                            f"{batch_size}; lower the batch size")
        self._bad = BadSampleLog(settings.max_bad_fraction)
        self._pending: Optional[Iterator] = None  # an iterator start() began
        cuda = self.device.type == "cuda"
        kwargs: dict[str, Any] = {}
        if workers > 0:
            kwargs = dict(persistent_workers=True, prefetch_factor=2, worker_init_fn=_worker_init)
        # A private generator for the per-iteration base seed: by default every ``iter()`` draws
        # it from the global RNG, which would shift dropout/relation draws between a run and its
        # resumed twin (and after precise-BN passes). Sampling does not depend on it.
        self._dl = DataLoader(self.dataset, batch_size=batch_size, sampler=self.sampler,
                              num_workers=workers, collate_fn=_collate, pin_memory=cuda,
                              drop_last=drop_last, generator=torch.Generator().manual_seed(settings.seed),
                              **kwargs)

    @property
    def bad_samples(self) -> list[tuple[str, str]]:
        return list(self._bad.items)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.sampler.epoch:  # cancels a start() on another epoch
            self._pending, self.sampler.skip = None, 0
        self.sampler.epoch = int(epoch)

    def start(self, epoch: int, first_batch: int = 0) -> None:
        """Start the workers on ``epoch`` from batch ``first_batch`` now (they decode while the
        caller builds the model); the next ``iter()`` yields batches ``first_batch`` .. end.
        Skipped batches are not decoded: the sampler leaves their samples out."""
        self.set_epoch(epoch)
        self.sampler.skip = int(first_batch) * self.batch_size
        self._pending = iter(self._dl)

    def close(self) -> None:
        """Shut the worker processes down now (idempotent; the loader can be iterated again,
        starting new workers). Persistent workers otherwise live until garbage collection."""
        self._pending = None
        workers = getattr(self._dl, "_iterator", None)
        self._dl._iterator = None
        shutdown = getattr(workers, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def stage_profile(self, batches: int) -> dict[str, Any]:
        """Where a batch's time goes (``stage_ms`` per step of :data:`STAGES`, per batch): the
        dataset's own loading, one worker's steps run serially in this process over ``batches``
        batches of this epoch's samples, after one warm-up batch (lazy imports, first
        allocations)."""
        indices = self.sampler.indices()
        cuda = self.device.type == "cuda"
        clock = _StepClock()
        for b in range(-1, batches):
            if b == 0:
                clock = _StepClock()
            clips = []
            for k in range(self.batch_size):
                index = int(indices[((b + 1) * self.batch_size + k) % len(indices)])
                clips.append(self.dataset._load(index, self.sampler.epoch, clock)[0])
            batch = torch.stack(clips).to(self.device, non_blocking=True)
            normalize_video(batch, **self._norm)
            if cuda:
                torch.cuda.synchronize(self.device)
            clock.lap("normalize + to device")
        return {"stage_ms": {k: round(1e3 * v / batches, 2) for k, v in clock.totals.items()},
                "stage_method": f"one worker's steps (the dataset's own loading) timed serially "
                                f"in the main process over {batches} batches (the DataLoader "
                                f"spreads them over its workers; collation and inter-process "
                                f"transfer are not included)"}

    def __enter__(self) -> "TorchVideoLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        action = "replaced by another sample" if self.planner.train else "scored as label -1"
        self._bad.start_epoch(len(self) * self.batch_size if self.drop_last else self.num_samples)
        batches, self._pending = self._pending, None
        if batches is None:
            batches = iter(self._dl)
        for video, label, bad in batches:
            for path, reason in bad:
                self._bad.add(path, reason, action)
            self._bad.check()
            video = video.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            out = normalize_video(video, **self._norm)
            if bad:
                # Failed eval samples are zeros in normalized units, not "-mean/std" garbage.
                out[label < 0] = 0
            yield out, label
