"""What every loader backend is built from: :class:`LoaderSettings` (with its backend tuning,
:class:`LoaderTuning`).

Its own module below :mod:`fastvid.loaders` (which re-exports both) so that the backends'
modules (:mod:`fastvid.data.torch_loader`, :mod:`dali_pipelines`) read it without importing the
registry that imports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

__all__ = ["LoaderSettings", "LoaderTuning"]


@dataclass(frozen=True)
class LoaderTuning:
    """Backend tuning knobs; a backend reads those it has and ignores the others.

    Attributes:
        threads: CPU threads of a backend whose entry has ``threads=True`` (DALI's pipeline
            threads; None: every core this process may use). A backend without the capability
            runs its CPU work in its ``workers`` processes instead.
        prefetch: batches a pipelined backend runs ahead (DALI's prefetch queue).
        hw_decoder_load: share of JPEGs sent to a hardware decoder (DALI on A100/H100/H200;
            None: the backend's default).
        decoder_pipelines: pipelines a batch is split over (DALI: one NVDEC engine each; None:
            the backend's default).
    """

    threads: Optional[int] = None
    prefetch: int = 2
    hw_decoder_load: Optional[float] = None
    decoder_pipelines: Optional[int] = None


@dataclass(frozen=True)
class LoaderSettings:
    """Everything a loader factory needs beside the records and the sampling plan.

    :func:`build_loader` fills it from the config and the request; a backend's loader class
    takes it whole, so a new option reaches every backend without a new keyword argument.

    Attributes:
        backend: the registered name the loader reports as ``loader.backend``.
        device: target device of the batches.
        batch_size: videos per batch.
        workers: worker processes (torch: DataLoader workers; DALI: Python source workers).
        mean, std: per-channel normalization in 0-255 units (``cfg.input_spec``).
        bgr: channels in BGR order (Caffe-trained backbones).
        channels_first: ``(N, C, T, H, W)`` (3D models) instead of ``(N, T, C, H, W)``.
        shuffle: shuffle per epoch (training).
        drop_last: drop the last partial batch.
        shard_id, num_shards: this process's share of the list (DDP).
        frame_tmpl: file names of frame folders (``"{:05d}.jpg"``).
        max_bad_fraction: share of undecodable samples per epoch tolerated before DataError.
        seed: sampling/augmentation seed.
        tuning: backend tuning knobs (:class:`LoaderTuning`).
    """

    backend: str
    device: torch.device
    batch_size: int
    workers: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool = False
    channels_first: bool = False
    shuffle: bool = False
    drop_last: bool = False
    shard_id: int = 0
    num_shards: int = 1
    frame_tmpl: str = "{:05d}.jpg"
    max_bad_fraction: float = 0.01
    seed: int = 0
    tuning: LoaderTuning = field(default_factory=LoaderTuning)

    def norm_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fastvid.data.transforms.normalize_video` (and DALI's
        normalize stage): mean, std, colour order and layout."""
        return dict(mean=list(self.mean), std=list(self.std), bgr=self.bgr,
                    channels_first=self.channels_first)
