"""Batch-level Python sources for DALI's ``fn.external_source`` (frames and video files).

A source is a picklable callable ``source(batch_info) -> outputs`` that builds a whole DALI batch
at once -- what ``external_source(batch=True, batch_info=True)`` calls in the main process, or in
spawned worker processes with ``parallel=True`` (one batch per worker call). It never raises
``StopIteration``: ``batch_info.iteration`` counts batches since the pipeline was built and the
source derives (epoch, batch) from it, so one built pipeline serves consecutive epochs and the
workers need no message when the epoch changes.

**Units.** Frames: one DALI sample per *frame* (a batch is ``items x views x T`` frames), so one
decoder op sees the whole batch (nvJPEG batches it, the CPU thread pool spreads it) and every
later op runs once per batch; the loader folds ``(N*V*T, C, H, W)`` back into the contract.
Videos: one DALI sample per *view* (a clip of ``T`` frames, decoded together by
``fn.decoders.video(frames=...)``).

Every unit carries its geometry from the plan (:class:`fastvid.data.transforms.ViewPlan`):
``start``/``end`` (float32 ``[y, x]`` in source-frame pixels) and ``size`` (``[h, w]`` out).
Training plans crop then resize, so ``start``/``end`` is the integer crop box (cut by ROI
decoding or ``fn.slice``) and ``size`` the output size. Test plans resize the frame then crop;
the same box is mapped back to source pixels (``y * H / rh``), and ``fn.resize`` with that ROI
gives the resize-then-crop pixels without resizing the whole frame. Then ``mirror`` (int32),
``label`` (int64) and ``bad`` (uint8 UTF-8 ``path\\treason`` lines, on the first unit of an item).

**Grouped crops.** Multi-crop evaluation (``views=(clips, crops)`` with 3 or 10 crops) cuts every
crop of a clip from the same frames, so a unit is a frame (or a clip) of one *clip*, decoded and
resized to the test scale once, and its ``crops`` boxes are cut from it in the graph: the slots
then carry ``resize`` (``[rh, rw]``), ``anchors`` (``(crops, 2)`` ``[y, x]`` in resized pixels),
``crop`` (``[h, w]``) and ``mirror`` (``(crops,)``). 10-crop decodes each frame once, not 10 times.

The source decides everything that must match the torch loader -- frame indices, crop box,
mirror, label -- through :class:`fastvid.data.transforms.SamplePlanner`, and checks inputs
before DALI sees them (JPEG SOI/EOI markers and header; video container headers, truncation and
codec through :mod:`fastvid.data.video_headers`, which needs no PyAV), so a broken file becomes a
counted bad sample instead of a pipeline crash.

This module does not import ``nvidia.dali``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from fastvid.data.sampling import shard_indices
from fastvid.data.transforms import SamplePlanner, ViewPlan
from fastvid.data.video_headers import probe_video_headers, read_video_bytes
from fastvid.data.video_io import jpeg_frame_header, jpeg_problem, read_bytes, read_jpeg_file
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["BatchSource", "RecordTuple", "DALI_CPU_CODECS", "UNSUPPORTED_MARK", "cpu_codec_message",
           "encode_bad",
           "decode_bad", "items_per_epoch", "unit_geometry", "SOURCE_STAGES"]

RecordTuple = tuple[str, int, int, bool]  # path, label, num_frames (-1 unknown), is_video

# What DALI's CPU video decoder handles (FFmpeg software decoders bundled with DALI).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# Prefix of the error a source raises for an unsupported codec; the loader recognises it in
# DALI's wrapped exception and re-raises BackendUnavailable with the message.
UNSUPPORTED_MARK = "fastvid-unsupported-codec: "
# Where a source's time goes (``BatchSource.timings`` keys), in call order.
SOURCE_STAGES = ("plan", "read", "check", "assemble")

_NO_BAD = np.zeros(0, dtype=np.uint8)


def cpu_codec_message(path: str, codec: str, codecs: frozenset = DALI_CPU_CODECS) -> str:
    """Why ``--loader dali-cpu`` cannot decode ``path`` (one line, what to use instead)."""
    return (f"{path}: codec {codec} is not supported by DALI's CPU video decoder (it handles "
            f"{', '.join(sorted(codecs))}); use --loader torch or a GPU (--loader dali)")


def encode_bad(items: Sequence[tuple[str, str]]) -> np.ndarray:
    if not items:
        return _NO_BAD
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


def items_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Items a DALI epoch produces: whole batches (padding the last one unless ``drop_last``)."""
    if drop_last:
        return (num_samples // batch_size) * batch_size
    return math.ceil(num_samples / batch_size) * batch_size


def unit_geometry(plan: ViewPlan, frame_hw: tuple[int, int]) -> tuple[list[float], list[float],
                                                                     list[float]]:
    """``(start, end, size)`` of a plan for the graph: ROI in source pixels and output size.

    Training plans (no frame resize) give the integer crop box; test plans map the crop box of
    the resized frame back to source pixels, so a resize of that ROI to the crop size equals
    resizing the whole frame and cutting the crop (the pixel-parity tests check it).
    """
    x, y, w, h = plan.crop
    if plan.resize is None:
        oh, ow = plan.out_size or (h, w)
        return [y, x], [y + h, x + w], [oh, ow]
    fh, fw = frame_hw
    rh, rw = plan.resize
    sy, sx = fh / rh, fw / rw
    oh, ow = plan.out_size or (h, w)
    return [y * sy, x * sx], [(y + h) * sy, (x + w) * sx], [oh, ow]


@dataclass
class _Item:
    """One loaded item: per view the data of its units, frame indices, plan, label."""

    units: list[list[np.ndarray]]  # per view: frames -> T JPEG arrays; videos -> [file bytes]
    indices: list[np.ndarray]  # per view: frame indices (videos: int32 (T,))
    plans: list[ViewPlan]
    frame_hw: tuple[int, int]
    label: int  # the loaded record's class (before flip remapping); -1: padding or failed
    path: str = ""  # the file or folder read (videos: the stand-in for padding/failed items)


def _ignore_sigint_in_worker() -> None:
    """In a DALI Python worker process (where a source is unpickled): ignore SIGINT.

    Ctrl-C signals the terminal's whole process group; each worker would print a
    KeyboardInterrupt traceback from its task queue. The process owning the loader handles
    Ctrl-C and shuts the workers down (``DaliVideoLoader.close``).
    """
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is None:
        return
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the worker's main thread
        pass


@dataclass
class BatchSource:
    """``source(batch_info)`` for a frames or a videos pipeline (see the module docstring).

    ``batch_size`` items make one loader batch; this source builds items
    ``[item_range[0], item_range[1])`` of each (several pipelines can split a batch).
    ``items_per_epoch`` counts the loader's items per epoch: positions past ``num_samples`` are
    padding (a placeholder with label -1) that the loader trims.
    """

    records: list[RecordTuple]
    planner: SamplePlanner
    video: bool
    batch_size: int
    items_per_epoch: int
    shuffle: bool
    num_shards: int
    shard_id: int
    epoch0: int
    frame_tmpl: str
    placeholder: bytes  # frames: a valid JPEG for padding/bad rows; videos: unused
    placeholder_hw: tuple[int, int]
    cpu_codecs: Optional[frozenset] = None  # None: GPU decoding, any codec NVDEC takes
    item_range: Optional[tuple[int, int]] = None  # default: the whole batch
    first_batch: int = 0  # batch of epoch ``epoch0`` the first call builds (a resumed stream)
    known_bad: dict[str, str] = field(default_factory=dict)  # videos DALI failed to decode
    timings: dict[str, float] = field(default_factory=dict)  # seconds per SOURCE_STAGES key

    def __post_init__(self) -> None:
        self._order_epoch: Optional[int] = None
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)
        self._stand_in: Optional[tuple[str, np.ndarray, tuple[int, int]]] = None
        if self.item_range is None:
            self.item_range = (0, self.batch_size)
        for key in SOURCE_STAGES:
            self.timings.setdefault(key, 0.0)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_order_epoch"], state["_order"], state["_stand_in"] = None, np.zeros(0, np.int64), None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _ignore_sigint_in_worker()

    @property
    def num_views(self) -> int:
        return self.planner.num_views

    @property
    def units_per_view(self) -> int:
        return 1 if self.video else self.planner.spec.frames_per_view

    @property
    def crops_per_unit(self) -> int:
        """Crops cut from one decoded unit: the test crops when there are several (grouped), else 1."""
        views = self.planner.views
        if views is None or self.planner.train or views[1] <= 1:
            return 1
        return int(views[1])

    @property
    def units_per_item(self) -> int:
        return self.num_views // self.crops_per_unit * self.units_per_view

    @property
    def units_per_batch(self) -> int:
        lo, hi = self.item_range
        return (hi - lo) * self.units_per_item

    def _shard_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order = shard_indices(len(self.records), self.num_shards, self.shard_id,
                                        shuffle=self.shuffle, seed=self.planner.seed, epoch=epoch)
            self._order_epoch = epoch
        return self._order

    # -- reading and checking one item ---------------------------------------------------------
    def _frames(self, index: int, epoch: int) -> _Item:
        path, label, num_frames, _ = self.records[index]
        t0 = time.perf_counter()
        views = range(self.num_views)
        per_view = [self.planner.frame_indices(num_frames, epoch, index, v, start_index=1)
                    for v in views]
        t1 = time.perf_counter()
        cache: dict[int, np.ndarray] = {}
        size: Optional[tuple[int, int]] = None
        header = b"\xff"  # the first frame's bytes up to its SOF segment
        check = 0.0
        for idx in per_view:
            for i in idx:
                i = int(i)
                if i in cache:
                    continue
                fname = f"{path}/{self.frame_tmpl.format(i)}"
                try:
                    data = read_bytes(fname)
                except OSError:
                    read_jpeg_file(fname)  # raises the DataError naming the file or empty folder
                    raise DataError(f"{fname}: cannot read frame") from None
                tc = time.perf_counter()
                problem = jpeg_problem(data)
                if problem:
                    raise DataError(f"{fname}: {problem}")
                if size is None or not data.startswith(header):  # same header bytes: same size
                    try:
                        h, w, end = jpeg_frame_header(data)
                    except ValueError as exc:
                        raise DataError(f"{fname}: {exc}") from None
                    if size is not None and (h, w) != size:
                        raise DataError(f"{fname}: frame size {(h, w)} differs from the sample's "
                                        f"{size}")
                    size, header = (h, w), data[:end]
                cache[i] = np.frombuffer(data, dtype=np.uint8)
                check += time.perf_counter() - tc
        t2 = time.perf_counter()
        plans = [self.planner.view_plan(size[0], size[1], epoch, index, v) for v in views]
        t3 = time.perf_counter()
        timings = self.timings
        timings["plan"] += (t1 - t0) + (t3 - t2)
        timings["read"] += (t2 - t1) - check
        timings["check"] += check
        units = [[cache[int(i)] for i in idx] for idx in per_view]
        return _Item(units, per_view, plans, size, label, path)

    def _video(self, index: int, epoch: int) -> _Item:
        path, label, _, _ = self.records[index]
        if path in self.known_bad:
            raise DataError(self.known_bad[path])
        t0 = time.perf_counter()
        raw = read_video_bytes(path)
        t1 = time.perf_counter()
        info = probe_video_headers(path, raw)
        if self.cpu_codecs is not None and info.codec not in self.cpu_codecs:
            raise BackendUnavailable(UNSUPPORTED_MARK + cpu_codec_message(path, info.codec,
                                                                          self.cpu_codecs))
        t2 = time.perf_counter()
        views = range(self.num_views)
        per_view = [self.planner.frame_indices(info.num_frames, epoch, index, v,
                                               start_index=0).astype(np.int32) for v in views]
        hw = (info.height, info.width)
        plans = [self.planner.view_plan(hw[0], hw[1], epoch, index, v) for v in views]
        t3 = time.perf_counter()
        timings = self.timings
        timings["read"] += t1 - t0
        timings["check"] += t2 - t1
        timings["plan"] += t3 - t2
        data = np.frombuffer(raw, dtype=np.uint8)
        return _Item([[data] for _ in views], per_view, plans, hw, label, path)

    def _placeholder(self, epoch: int) -> _Item:
        """Stand-in for padding and failed evaluation rows (the loader zeros or trims them)."""
        t = self.planner.spec.frames_per_view
        views = range(self.num_views)
        path = ""
        if self.video:
            path, data, hw = self._video_stand_in()
            idx = [np.zeros(t, dtype=np.int32) for _ in views]
            units = [[data] for _ in views]
        else:
            hw = self.placeholder_hw
            data = np.frombuffer(self.placeholder, dtype=np.uint8)
            idx = [np.ones(t, dtype=np.int64) for _ in views]
            units = [[data] * t for _ in views]
        plans = [self.planner.view_plan(hw[0], hw[1], epoch, 0, v) for v in views]
        return _Item(units, idx, plans, hw, -1, path)

    def _video_stand_in(self) -> tuple[str, np.ndarray, tuple[int, int]]:
        """A readable video of the list, decoded in place of a bad or padding sample.

        A JPEG or an encoded blank clip would need an encoder (PyAV) or a codec the GPU
        decoder might lack; any file of the list decodes wherever the list does.
        """
        if self._stand_in is None:
            first = ""  # why the first file failed: a one-file list (fastvid predict) names it
            for path, *_ in self.records:
                if path in self.known_bad:
                    first = first or self.known_bad[path]
                    continue
                try:
                    raw = read_video_bytes(path)
                    info = probe_video_headers(path, raw)
                except DataError as exc:
                    first = first or str(exc)
                    continue
                if self.cpu_codecs is None or info.codec in self.cpu_codecs:
                    self._stand_in = (path, np.frombuffer(raw, dtype=np.uint8),
                                      (info.height, info.width))
                    break
                first = first or cpu_codec_message(path, info.codec, self.cpu_codecs)
            else:
                if len(self.records) == 1 and first:  # one file (fastvid predict): its own error
                    raise DataError(first)
                raise DataError(f"no video of the list could be read (every file failed its "
                                f"header check or decoding; the first: {first}); is the dataset "
                                f"readable?")
        return self._stand_in

    def _load_item(self, position: int, epoch: int, order: np.ndarray) -> tuple[_Item, list]:
        if position >= len(order):
            return self._placeholder(epoch), []
        index = int(order[position])
        bad: list[tuple[str, str]] = []
        tries = 11 if self.planner.train else 1
        current = index
        for attempt in range(tries):
            try:
                if self.video:
                    return self._video(current, epoch), bad
                return self._frames(current, epoch), bad
            except DataError as exc:
                bad.append((self.records[current][0], str(exc)))
                if self.planner.train:
                    current = self.planner.redraw(len(self.records), epoch, index, attempt)
        if self.planner.train:
            raise DataError(f"{len(bad)} samples in a row failed to load (last: "
                            f"{bad[-1][0]}: {bad[-1][1]}); is the dataset readable?")
        return self._placeholder(epoch), bad

    # -- the callable --------------------------------------------------------------------------
    def _batch_items(self, iteration: int) -> list[tuple[_Item, list[tuple[str, str]]]]:
        """The items (and their failures) that batch ``iteration`` of this pipeline holds."""
        batches = self.items_per_epoch // self.batch_size
        g = self.first_batch + iteration
        epoch = self.epoch0 + g // batches
        first = (g % batches) * self.batch_size
        order = self._shard_order(epoch)
        lo, hi = self.item_range
        return [self._load_item(position, epoch, order)
                for position in range(first + lo, first + hi)]

    def batch_videos(self, iteration: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(path, file bytes, frame indices)`` of every video batch ``iteration`` decodes
        (stand-ins included), for finding the file that DALI fails to decode."""
        out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for item, _ in self._batch_items(iteration):
            idx = np.unique(np.concatenate(item.indices)).astype(np.int32)
            if item.path in out:
                idx = np.union1d(out[item.path][2], idx).astype(np.int32)
            out[item.path] = (item.path, item.units[0][0], idx)
        return list(out.values())

    def __call__(self, batch_info: Any) -> tuple[Any, ...]:
        iteration = int(getattr(batch_info, "iteration", batch_info))
        data: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        geometry: list[list[float]] = []
        mirror: list[int] = []
        labels: list[int] = []
        bad: list[np.ndarray] = []
        upv = self.units_per_view
        if self.crops_per_unit > 1:
            return self._grouped(iteration)
        for item, failed in self._batch_items(iteration):
            t0 = time.perf_counter()
            for v, plan in enumerate(item.plans):
                start, end, size = unit_geometry(plan, item.frame_hw)
                data.extend(item.units[v])
                if self.video:
                    frames.append(item.indices[v])
                geometry.extend([start + end + size] * upv)
                mirror.extend([int(plan.flip)] * upv)
                label = item.label if item.label < 0 else self.planner.label(item.label, plan)
                labels.extend([label] * upv)
                bad.append(encode_bad(failed) if v == 0 else _NO_BAD)
                bad.extend([_NO_BAD] * (upv - 1))
            self.timings["assemble"] += time.perf_counter() - t0
        geo = np.asarray(geometry, dtype=np.float32).reshape(-1, 6)
        starts, ends, sizes = (np.ascontiguousarray(geo[:, k:k + 2]) for k in (0, 2, 4))
        tail = (starts, ends, sizes, np.asarray(mirror, dtype=np.int32),
                np.asarray(labels, dtype=np.int64), bad)
        if self.video:
            return (data, frames) + tail
        return (data,) + tail

    def _grouped(self, iteration: int) -> tuple[Any, ...]:
        """The outputs for grouped crops (see the module docstring): one unit per clip frame."""
        crops, upv = self.crops_per_unit, self.units_per_view
        data: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        resize: list[list[float]] = []
        anchors: list[list[list[float]]] = []
        shape: list[list[float]] = []
        mirror: list[list[int]] = []
        labels: list[int] = []
        bad: list[np.ndarray] = []
        for item, failed in self._batch_items(iteration):
            t0 = time.perf_counter()
            for k in range(0, len(item.plans), crops):
                plans = item.plans[k:k + crops]  # the crops of clip k // crops share its frames
                data.extend(item.units[k])
                if self.video:
                    frames.append(item.indices[k])
                rh, rw = plans[0].resize or item.frame_hw
                resize.extend([[rh, rw]] * upv)
                anchors.extend([[[p.crop[1], p.crop[0]] for p in plans]] * upv)
                shape.extend([[plans[0].crop[3], plans[0].crop[2]]] * upv)
                mirror.extend([[int(p.flip) for p in plans]] * upv)
                label = item.label if item.label < 0 else self.planner.label(item.label, plans[0])
                labels.extend([label] * upv)
                bad.append(encode_bad(failed) if k == 0 else _NO_BAD)
                bad.extend([_NO_BAD] * (upv - 1))
            self.timings["assemble"] += time.perf_counter() - t0
        tail = (np.asarray(resize, dtype=np.float32), np.asarray(anchors, dtype=np.float32),
                np.asarray(shape, dtype=np.float32), np.asarray(mirror, dtype=np.int32),
                np.asarray(labels, dtype=np.int64), bad)
        if self.video:
            return (data, frames) + tail
        return (data,) + tail
