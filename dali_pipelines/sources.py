"""Per-sample Python sources for DALI's ``fn.external_source`` (frames and video files).

A source is a picklable callable ``source(sample_info) -> arrays`` -- what
``external_source(parallel=True, batch=False)`` runs in its spawned worker processes. It never
raises ``StopIteration``: ``sample_info.idx_in_epoch`` counts samples since the pipeline was
built, and the source derives (epoch, position, view) from it. So one built pipeline serves
consecutive epochs without DALI's epoch reset, and the workers need no message from the main
process when the epoch changes.

The source decides everything that must match the torch loader -- frame indices, crop box,
mirror, label -- through :class:`fastvid.data.transforms.SamplePlanner`, and checks inputs
before DALI sees them (JPEG SOI/EOI markers and header, video truncation and codec via PyAV), so
a broken file becomes a counted bad sample instead of a pipeline crash. Bad samples travel back
to the main process inside the batch, as UTF-8 ``path\\treason`` lines in a byte array output.

This module does not import ``nvidia.dali``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from fastvid.data.sampling import shard_indices
from fastvid.data.transforms import SamplePlanner, ViewPlan
from fastvid.data.video_io import jpeg_size, probe_video, read_jpeg_file
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["ClipSource", "RecordTuple", "DALI_CPU_CODECS", "UNSUPPORTED_MARK", "encode_bad",
           "decode_bad"]

RecordTuple = tuple[str, int, int, bool]  # path, label, num_frames (-1 unknown), is_video

# What DALI's CPU video decoder handles (FFmpeg software decoders bundled with DALI).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# Prefix of the error a source raises for an unsupported codec; the loader recognises it in
# DALI's wrapped exception and re-raises BackendUnavailable with the message.
UNSUPPORTED_MARK = "fastvid-unsupported-codec: "


def encode_bad(items: Sequence[tuple[str, str]]) -> np.ndarray:
    text = "\n".join(f"{p}\t{r}".replace("\n", " ") for p, r in items)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_bad(arr: np.ndarray) -> list[tuple[str, str]]:
    if arr.size == 0:
        return []
    out = []
    for line in bytes(arr).decode("utf-8", "replace").split("\n"):
        path, _, reason = line.partition("\t")
        out.append((path, reason))
    return out


@dataclass
class ClipSource:
    """``source(sample_info)`` for a frames or a videos pipeline.

    Frames: outputs ``T`` encoded JPEGs, then label (int64 scalar), plan (float32 (9,), see
    :meth:`ViewPlan.as_array`), bad (uint8 bytes). Videos: file bytes, frame indices
    (int32 (T,)), label, plan, bad. One DALI sample is one view; ``items_per_epoch`` items of
    ``num_views`` views each form an epoch, positions past ``num_samples`` are padding
    (placeholder with label -1) that the loader trims.
    """

    records: list[RecordTuple]
    planner: SamplePlanner
    video: bool
    items_per_epoch: int
    shuffle: bool
    num_shards: int
    shard_id: int
    epoch0: int
    frame_tmpl: str
    placeholder: bytes  # a valid JPEG (frames) or video (videos) for bad/padding samples
    placeholder_hw: tuple[int, int]
    cpu_codecs: Optional[frozenset] = None  # None: GPU decoding, any codec NVDEC takes

    def __post_init__(self) -> None:
        self._order_epoch: Optional[int] = None
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_order_epoch"], state["_order"] = None, np.zeros(0, dtype=np.int64)
        return state

    @property
    def num_views(self) -> int:
        return self.planner.num_views

    def _shard_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order = shard_indices(len(self.records), self.num_shards, self.shard_id,
                                        shuffle=self.shuffle, seed=self.planner.seed, epoch=epoch)
            self._order_epoch = epoch
        return self._order

    # -- reading and checking one sample ------------------------------------------------------
    def _frames(self, index: int, epoch: int, view: int) -> tuple[list[np.ndarray], tuple[int, int], np.ndarray]:
        path, _, num_frames, _ = self.records[index]
        idx = self.planner.frame_indices(num_frames, epoch, index, view, start_index=1)
        cache: dict[int, np.ndarray] = {}
        size: Optional[tuple[int, int]] = None
        for i in idx:
            i = int(i)
            if i in cache:
                continue
            fname = f"{path}/{self.frame_tmpl.format(i)}"
            data = read_jpeg_file(fname)  # DataError naming the file (or the empty folder)
            try:
                hw = jpeg_size(data)
            except ValueError as exc:
                raise DataError(f"{fname}: {exc}") from None
            if size is not None and hw != size:
                raise DataError(f"{fname}: frame size {hw} differs from the sample's {size}")
            size = hw
            cache[i] = np.frombuffer(data, dtype=np.uint8)
        return [cache[int(i)] for i in idx], size, idx

    def _video(self, index: int, epoch: int, view: int) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        path = self.records[index][0]
        info = probe_video(path)
        if self.cpu_codecs is not None and info.codec not in self.cpu_codecs:
            raise BackendUnavailable(
                f"{UNSUPPORTED_MARK}{path}: codec {info.codec} is not supported by DALI's CPU "
                f"video decoder (it handles {', '.join(sorted(self.cpu_codecs))}); use "
                f"--loader torch or a GPU (--loader dali)")
        idx = self.planner.frame_indices(info.num_frames, epoch, index, view, start_index=0)
        with open(path, "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8)
        return data, (info.height, info.width), idx.astype(np.int32)

    def _load(self, index: int, epoch: int, view: int) -> tuple[Any, ...]:
        rec = self.records[index]
        if self.video:
            data, (h, w), idx = self._video(index, epoch, view)
        else:
            data, (h, w), idx = self._frames(index, epoch, view)
        plan = self.planner.view_plan(h, w, epoch, index, view)
        label = self.planner.label(rec[1], plan)
        return data, idx, plan, (h, w), label

    def _placeholder(self, epoch: int, view: int) -> tuple[Any, ...]:
        h, w = self.placeholder_hw
        plan: ViewPlan = self.planner.view_plan(h, w, epoch, 0, view)
        t = self.planner.spec.frames_per_view
        data = np.frombuffer(self.placeholder, dtype=np.uint8)
        if self.video:
            return data, np.zeros(t, dtype=np.int32), plan, (h, w), -1
        return [data] * t, None, plan, (h, w), -1

    # -- the callable --------------------------------------------------------------------------
    def __call__(self, sample_info: Any) -> tuple[np.ndarray, ...]:
        g = int(sample_info.idx_in_epoch)
        per_epoch = self.items_per_epoch * self.num_views
        epoch = self.epoch0 + g // per_epoch
        pos = g % per_epoch
        item, view = divmod(pos, self.num_views)
        order = self._shard_order(epoch)
        bad: list[tuple[str, str]] = []
        if item >= len(order):
            out = self._placeholder(epoch, view)
        else:
            index = int(order[item])
            out = None
            tries = 11 if self.planner.train else 1
            current = index
            for attempt in range(tries):
                try:
                    out = self._load(current, epoch, view)
                    break
                except DataError as exc:
                    bad.append((self.records[current][0], str(exc)))
                    if self.planner.train:
                        current = self.planner.redraw(len(self.records), epoch, index, attempt)
            if out is None:
                if self.planner.train:
                    raise DataError(f"{len(bad)} samples in a row failed to load (last: "
                                    f"{bad[-1][0]}: {bad[-1][1]}); is the dataset readable?")
                out = self._placeholder(epoch, view)
        data, idx, plan, hw, label = out
        if view != 0:
            bad = []  # reported once per sample, not once per view
        tail = (np.array(label, dtype=np.int64), plan.as_array(hw), encode_bad(bad))
        if self.video:
            return (data, idx) + tail
        return tuple(data) + tail


def items_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Items a DALI epoch produces: whole batches (padding the last one unless ``drop_last``)."""
    if drop_last:
        return (num_samples // batch_size) * batch_size
    return math.ceil(num_samples / batch_size) * batch_size
