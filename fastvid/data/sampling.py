"""Which frames a sample reads, and which samples a shard reads: pure numpy, shared by every loader.

Two temporal samplers:

* **TSN segments** (TRN, TSM): the video is cut into ``T`` equal segments and one frame is taken
  per segment -- a random one when training, the middle one when testing. The formulas are
  TRN-pytorch's (``dataset.py``: ``_sample_indices``, ``_get_val_indices``,
  ``_get_test_indices``) with ``new_length`` = 1 for RGB.
* **Dense clips** (TPN-SlowOnly): ``clip_len`` frames ``frame_interval`` apart from a start
  offset, as mmaction2's ``SampleFrames`` (train: random start per clip; test: clips spread
  evenly); indices past the end wrap around ("loop").

Randomness comes from :func:`sample_rng`, a generator keyed by ``(seed, epoch, index)``, so the
frames of sample ``index`` in epoch ``epoch`` do not depend on worker count, worker order or
backend. Every sampler also accepts a legacy ``np.random.RandomState``, which is how the tests
replay TRN-pytorch's and mmaction2's ``np.random.randint`` calls draw for draw.

Frame indices are returned 0-based plus ``start_index``: 1 for frame folders (``00001.jpg``, as
TRN-pytorch and mmaction2's rawframes), 0 for video files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["Rng", "SamplingSpec", "sample_rng", "tsn_train_indices", "tsn_val_indices",
           "tsn_test_indices", "dense_train_indices", "dense_test_indices", "sample_indices",
           "shard_indices"]

Rng = Union[np.random.Generator, np.random.RandomState]


def sample_rng(seed: int, epoch: int, index: int, salt: int = 0) -> np.random.Generator:
    """Generator for one (seed, epoch, sample) triple; ``salt`` separates independent streams."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(salt)])


def _randint(rng: Rng, high: int, size: int) -> np.ndarray:
    """``randint(high, size=size)`` for both numpy RNG APIs (values in ``[0, high)``)."""
    if isinstance(rng, np.random.RandomState):
        return rng.randint(high, size=size)
    return rng.integers(high, size=size)


def tsn_train_indices(num_frames: int, num_segments: int, rng: Rng, start_index: int = 0,
                      new_length: int = 1) -> np.ndarray:
    """TSN training sampling: one random frame inside each of ``num_segments`` equal segments.

    Videos shorter than one frame per segment fall back to sorted random frames, and videos with
    at most ``num_segments`` frames to frame 0 everywhere (TRN-pytorch's behaviour).
    """
    avg = (num_frames - new_length + 1) // num_segments
    if avg > 0:
        offsets = np.arange(num_segments) * avg + _randint(rng, avg, num_segments)
    elif num_frames > num_segments:
        offsets = np.sort(_randint(rng, num_frames - new_length + 1, num_segments))
    else:
        offsets = np.zeros(num_segments, dtype=np.int64)
    return offsets.astype(np.int64) + start_index


def tsn_val_indices(num_frames: int, num_segments: int, start_index: int = 0,
                    new_length: int = 1) -> np.ndarray:
    """TSN validation sampling: the middle frame of each segment (frame 0 for too-short videos)."""
    if num_frames > num_segments + new_length - 1:
        tick = (num_frames - new_length + 1) / float(num_segments)
        offsets = np.array([int(tick / 2.0 + tick * i) for i in range(num_segments)], dtype=np.int64)
    else:
        offsets = np.zeros(num_segments, dtype=np.int64)
    return offsets + start_index


def tsn_test_indices(num_frames: int, num_segments: int, clip_index: int = 0, num_clips: int = 1,
                     start_index: int = 0, new_length: int = 1) -> np.ndarray:
    """TSN test sampling for clip ``clip_index`` of ``num_clips``.

    Clip ``c`` takes the point at fraction ``(c + 0.5) / num_clips`` of every segment, so one
    clip is TRN-pytorch's ``_get_test_indices`` (segment middles) exactly and more clips spread
    evenly inside the segments. Short videos repeat frames instead of collapsing to frame 0.
    """
    if not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index {clip_index} out of range for {num_clips} clips")
    tick = (num_frames - new_length + 1) / float(num_segments)
    shift = tick * (clip_index + 0.5) / num_clips
    offsets = np.array([int(shift + tick * i) for i in range(num_segments)], dtype=np.int64)
    return np.clip(offsets, 0, max(num_frames - 1, 0)) + start_index


def dense_train_indices(num_frames: int, clip_len: int, frame_interval: int, rng: Rng,
                        num_clips: int = 1, start_index: int = 0) -> np.ndarray:
    """Dense training clips (mmaction2 ``SampleFrames``, test_mode False): ``(num_clips, clip_len)``."""
    ori_clip_len = clip_len * frame_interval
    avg = (num_frames - ori_clip_len + 1) // num_clips
    if avg > 0:
        offsets = np.arange(num_clips) * avg + _randint(rng, avg, num_clips)
    elif num_frames > max(num_clips, ori_clip_len):
        offsets = np.sort(_randint(rng, num_frames - ori_clip_len + 1, num_clips))
    elif avg == 0:
        ratio = (num_frames - ori_clip_len + 1.0) / num_clips
        offsets = np.around(np.arange(num_clips) * ratio)
    else:
        offsets = np.zeros(num_clips, dtype=np.int64)
    return _dense_clips(offsets, num_frames, clip_len, frame_interval, start_index)


def dense_test_indices(num_frames: int, clip_len: int, frame_interval: int, num_clips: int = 1,
                       start_index: int = 0) -> np.ndarray:
    """Dense test clips (mmaction2 ``SampleFrames``, test_mode True): evenly spaced starts."""
    ori_clip_len = (clip_len - 1) * frame_interval + 1
    max_offset = max(num_frames - ori_clip_len, 0)
    if num_clips > 1:
        offsets = np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
    else:
        offsets = np.array([max_offset // 2])
    return _dense_clips(offsets, num_frames, clip_len, frame_interval, start_index)


def _dense_clips(offsets: np.ndarray, num_frames: int, clip_len: int, frame_interval: int,
                 start_index: int) -> np.ndarray:
    inds = offsets.astype(np.int64)[:, None] + np.arange(clip_len)[None, :] * frame_interval
    # Clips running past the end loop back to the start (mmaction2's out_of_bound_opt="loop").
    return np.mod(inds, max(num_frames, 1)) + start_index


@dataclass(frozen=True)
class SamplingSpec:
    """What one view of a sample reads: ``tsn`` segments or ``dense`` clips."""

    mode: str  # tsn | dense
    num_segments: int = 8  # tsn: frames per view
    clip_len: int = 8  # dense: frames per view
    frame_interval: int = 8  # dense: stride between frames

    @property
    def frames_per_view(self) -> int:
        return self.num_segments if self.mode == "tsn" else self.clip_len


def sample_indices(spec: SamplingSpec, num_frames: int, *, train: bool, rng: Rng | None = None,
                   clip_index: int = 0, num_clips: int = 1, test: bool = False,
                   start_index: int = 0) -> np.ndarray:
    """Frame indices ``(frames_per_view,)`` of one view.

    ``train`` draws from ``rng``; otherwise the sampling is fixed: validation (``test`` False,
    one clip) uses TRN-pytorch's ``_get_val_indices``, multi-view testing ``tsn_test_indices``
    or mmaction2's test clips with ``num_clips`` and takes clip ``clip_index``.
    """
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if spec.mode == "tsn":
        if train:
            if rng is None:
                raise ValueError("training sampling needs an rng")
            return tsn_train_indices(num_frames, spec.num_segments, rng, start_index)
        if not test and num_clips == 1:
            return tsn_val_indices(num_frames, spec.num_segments, start_index)
        return tsn_test_indices(num_frames, spec.num_segments, clip_index, num_clips, start_index)
    if spec.mode == "dense":
        if train:
            if rng is None:
                raise ValueError("training sampling needs an rng")
            return dense_train_indices(num_frames, spec.clip_len, spec.frame_interval, rng, 1,
                                       start_index)[0]
        return dense_test_indices(num_frames, spec.clip_len, spec.frame_interval, num_clips,
                                  start_index)[clip_index]
    raise ValueError(f"unknown sampling mode {spec.mode!r} (expected tsn or dense)")


def shard_indices(num_samples: int, num_shards: int = 1, shard_id: int = 0, *, shuffle: bool = False,
                  seed: int = 0, epoch: int = 0, pad: bool = True) -> np.ndarray:
    """Sample indices shard ``shard_id`` of ``num_shards`` reads this epoch.

    The list is shuffled with a generator keyed by ``(seed, epoch)`` -- the same on every rank --
    then dealt round-robin. With ``pad`` the list is first extended by repeating its head until
    every shard has the same length, as ``torch.utils.data.DistributedSampler`` does: ranks then
    run the same number of steps (DDP needs that), at the price of a few samples seen twice per
    epoch. With one shard nothing is padded and the order is the list order when not shuffled.
    """
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in [0, {num_shards})")
    if shuffle:
        order = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED]).permutation(num_samples)
    else:
        order = np.arange(num_samples)
    if pad and num_shards > 1 and num_samples > 0:
        total = -(-num_samples // num_shards) * num_shards
        reps = -(-total // num_samples)
        order = np.tile(order, reps)[:total]
    return order[shard_id::num_shards].astype(np.int64)
