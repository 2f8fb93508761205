"""The one factory that picks a data loader: DALI on GPU, DALI on CPU, or PyTorch.

Every loader yields the batch contract (see DESIGN.md): ``(video, label)`` with ``video`` float32
on the target device, ``(N, T, C, H, W)`` for 2D models and ``(N, C, T, H, W)`` for 3D models,
normalized per ``cfg.input_spec``, plus a views axis ``(N, V, ...)`` when ``views`` is given;
``label`` int64 ``(N,)``, -1 for evaluation samples that could not be decoded. The training loop
and the evaluator never ask which backend they got.

``dali_pipelines`` and ``fastvid.data.torch_loader`` are imported only when chosen, so the torch
loader works without DALI installed.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Iterator, Optional, Protocol, Sequence

import torch

from fastvid.config import Config
from fastvid.data.lists import DatasetInfo, VideoRecord
from fastvid.data.sampling import SamplingSpec
from fastvid.data.transforms import SamplePlanner
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["VideoLoader", "build_loader", "resolve_loader_name", "dali_available", "is_3d",
           "planner_for", "LOADER_NAMES"]

log = logging.getLogger(__name__)

LOADER_NAMES = ("auto", "dali", "dali-cpu", "torch")


class VideoLoader(Protocol):
    """What every backend provides."""

    backend: str  # "dali" (GPU), "dali-cpu", "torch"
    num_samples: int  # samples this shard yields per epoch (padding included when sharded)

    @property
    def bad_samples(self) -> list[tuple[str, str]]: ...  # (path, reason) failed this epoch

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def set_epoch(self, epoch: int) -> None: ...


def dali_available() -> bool:
    """True when the ``nvidia.dali`` package can be found (it is not imported here)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def resolve_loader_name(name: str, device: torch.device) -> str:
    """``auto`` -> ``dali`` (CUDA device and DALI), ``dali-cpu`` (DALI), else ``torch``.

    Explicit names are checked: ``dali`` needs the package and a CUDA target device,
    ``dali-cpu`` the package; otherwise :class:`BackendUnavailable` says what is missing.
    """
    device = torch.device(device)
    if name not in LOADER_NAMES:
        raise BackendUnavailable(f"unknown loader {name!r}; choose one of {', '.join(LOADER_NAMES)}")
    has_dali = dali_available()
    cuda = device.type == "cuda" and torch.cuda.is_available()
    if name == "auto":
        chosen = "dali" if (has_dali and cuda) else "dali-cpu" if has_dali else "torch"
        why = ("CUDA device and DALI present" if chosen == "dali" else
               "DALI present, target device is CPU" if chosen == "dali-cpu" else
               "nvidia-dali is not installed")
        log.info("loader auto -> %s (%s)", chosen, why)
        return chosen
    if name in ("dali", "dali-cpu") and not has_dali:
        raise BackendUnavailable(f"--loader {name}: the nvidia-dali package is not installed "
                                 f"(pip install 'fastvid[dali]'), or use --loader torch")
    if name == "dali" and not cuda:
        raise BackendUnavailable("--loader dali needs a CUDA GPU as the target device "
                                 f"(device is {device}, CUDA available: {torch.cuda.is_available()}); "
                                 "use --loader dali-cpu or --loader torch")
    return name


def is_3d(cfg: Config) -> bool:
    """3D models take (N, C, T, H, W); the 2D ones (N, T, C, H, W)."""
    return cfg.model.backbone == "resnet3d_slowonly50"


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
    name = resolve_loader_name(loader, device)
    if records is None:
        records = dataset.records(split, frame_tmpl=cfg.data.frame_tmpl)
    records = list(records)
    if not records:
        raise DataError(f"no samples to load for split {split!r}")
    train = split == "train"
    planner = planner_for(cfg, split, views)
    spec = cfg.input_spec
    common = dict(
        device=device,
        batch_size=int(batch_size or cfg.train.batch_size),
        workers=cfg.train.workers if workers is None else int(workers),
        mean=spec["mean"], std=spec["std"], bgr=spec["color"] == "BGR",
        channels_first=is_3d(cfg), shuffle=train,
        drop_last=train if drop_last is None else bool(drop_last),
        shard_id=shard_id, num_shards=num_shards, frame_tmpl=cfg.data.frame_tmpl,
        max_bad_fraction=cfg.data.max_bad_fraction, seed=cfg.train.seed,
    )
    if name == "torch":
        from fastvid.data.torch_loader import TorchVideoLoader

        return TorchVideoLoader(records, planner, **common)
    from dali_pipelines import DaliVideoLoader

    return DaliVideoLoader(records, planner, use_gpu=name == "dali", **common, **(dali_options or {}))
