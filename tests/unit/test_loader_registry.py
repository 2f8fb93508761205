"""The loader registry carries all loader-backend behaviour: one settings dataclass for every
factory, and capabilities (devices, threads, streaming, baseline) that the callers read instead
of a backend's name."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fastvid import loaders
from fastvid.config import Config, apply_overrides
from fastvid.data.lists import VideoRecord
from fastvid.errors import BackendUnavailable

CPU = torch.device("cpu")


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: backends registered in a test go away after it."""
    monkeypatch.setattr(loaders, "_BACKENDS", dict(loaders._BACKENDS))
    return loaders


class _FakeLoader:
    """Yields ``len(self)`` batches of zeros in the batch contract's shape; records its settings."""

    def __init__(self, records, planner, settings) -> None:
        self.settings, self.backend = settings, settings.backend
        self.num_samples = len(records)
        self.num_threads = settings.tuning.threads or 1
        self.pipeline_threads = [self.num_threads]
        self.bad_samples: list = []
        self._frames = planner.spec.frames_per_view
        _FakeLoader.made.append(self)

    made: list = []

    def __len__(self) -> int:
        return max(1, self.num_samples // self.settings.batch_size)

    def __iter__(self):
        n = self.settings.batch_size
        for _ in range(len(self)):
            yield torch.zeros(n, self._frames, 3, 8, 8), torch.zeros(n, dtype=torch.int64)

    def set_epoch(self, epoch: int) -> None: ...

    def start(self, epoch: int, first_batch: int = 0) -> None: ...

    def close(self) -> None: ...


def _entry(name: str, **kw) -> loaders.LoaderBackend:
    return loaders.LoaderBackend(name, f"test backend {name}", lambda device: None, _FakeLoader, **kw)


@pytest.mark.parametrize("backend", loaders.loader_backends(), ids=lambda b: b.name)
def test_every_registered_backend_declares_its_capabilities(backend):
    assert backend.name in loaders.loader_names() and backend.description
    assert backend.devices and set(backend.devices) <= {"cpu", "cuda", "xpu", "mps"}
    for device in (CPU, torch.device("cuda")):
        reason = backend.reason(device)
        assert reason is None or (isinstance(reason, str) and reason)
        if device.type not in backend.devices:
            assert reason is not None  # a device it does not feed is never "available"
    if backend.video_codecs is not None:
        assert all(isinstance(c, str) for c in backend.video_codecs(CPU))
    assert isinstance(backend.threads, bool) and isinstance(backend.baseline, bool)


def test_one_baseline_that_runs_everywhere():
    baselines = [b for b in loaders.loader_backends() if b.baseline]
    assert len(baselines) == 1 and loaders.baseline_loader() is baselines[0]
    assert baselines[0].reason(CPU) is None and baselines[0].stream is not None


def test_settings_are_one_frozen_dataclass_the_factory_gets_whole(registry):
    registry.register_loader(_entry("fake"))
    cfg = apply_overrides(Config(), ["model.arch=tpn", "model.backbone=resnet3d_slowonly50",
                                     "train.seed=7", "train.workers=0"])
    records = [VideoRecord(f"v{i}", 0, 8) for i in range(5)]
    tuning = loaders.LoaderTuning(threads=3, prefetch=4)
    loader = registry.build_loader(cfg, None, loaders.LoaderRequest(
        "val", batch_size=2, records=records, shard_id=1, num_shards=2, tuning=tuning),
        loader="fake", device=CPU)
    s = loader.settings
    assert isinstance(s, loaders.LoaderSettings) and s.backend == loader.backend == "fake"
    assert (s.batch_size, s.shard_id, s.num_shards, s.seed, s.workers) == (2, 1, 2, 7, 0)
    assert s.channels_first and not s.shuffle and not s.drop_last and s.tuning == tuning
    assert s.norm_args()["mean"] == list(cfg.input_spec["mean"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 4  # type: ignore[misc]
    # a split name alone is a request; train shuffles and drops the last partial batch
    train = registry.build_loader(cfg, None, loaders.LoaderRequest("train", records=records),
                                  loader="fake", device=CPU).settings
    assert train.shuffle and train.drop_last and train.batch_size == cfg.train.batch_size


def test_a_device_the_backend_does_not_feed_is_refused(registry):
    registry.register_loader(_entry("gpu-only", devices=("cuda",)))
    with pytest.raises(BackendUnavailable, match="gpu-only: it feeds cuda devices"):
        registry.resolve_loader_name("gpu-only", CPU)


def test_predict_auto_picks_a_streaming_backend_that_decodes_footage(registry):
    # built-ins on a CPU: the torch loader (DALI-on-CPU cannot decode H.264), never dali-cpu
    assert registry.streaming_loader("auto", CPU).name == "torch"
    # a preferred backend that cannot stream, or cannot decode H.264, is passed over
    registry.register_loader(_entry("no-stream", preference=-3))
    registry.register_loader(_entry("vp9-only", preference=-2, stream=lambda *a: iter(()),
                                    video_codecs=lambda d: frozenset({"vp9"})))
    registry.register_loader(_entry("streamer", preference=-1, stream=lambda *a: iter(())))
    assert registry.streaming_loader("auto", CPU).name == "streamer"
    # an explicit backend is taken as asked; its windows need a stream
    assert registry.streaming_loader("no-stream", CPU).name == "no-stream"
    with pytest.raises(BackendUnavailable, match="no-stream cannot read a video as a stream.*streamer"):
        registry.frame_stream(registry.loader_backend("no-stream"))


def test_frame_source_decodes_with_the_entry_stream(registry, monkeypatch, tmp_path):
    from fastvid import predict
    from fastvid.data.video_io import VideoInfo

    seen = []

    def stream(path, device, chunk_frames, info):
        seen.append((path, chunk_frames))
        yield torch.zeros(2, 4, 6, 3, dtype=torch.uint8)
        yield torch.zeros(1, 4, 6, 3, dtype=torch.uint8)

    registry.register_loader(_entry("streamer", stream=stream))
    monkeypatch.setattr(predict, "probe_input_video",
                        lambda path, loader: VideoInfo(3, 4, 6, "h264", 10.0))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    source = predict.FrameSource(predict.InputSpec(video, "video"), loader="streamer",
                                 chunk_frames=2)
    frames = list(source)
    assert len(frames) == 3 and frames[0].shape == (3, 4, 6) and seen == [(str(video), 2)]


class _Dataset:
    """What bench_loaders reads of a DatasetInfo."""

    root, format, num_classes = Path("."), "frames", 2

    def __init__(self, n: int) -> None:
        self._records = [VideoRecord(f"v{i}", i % 2, 8) for i in range(n)]

    def records(self, split, frame_tmpl=None):
        return self._records


def test_bench_sweeps_threads_or_workers_by_capability_against_the_registry_baseline(registry):
    from bench.loader import LoaderBenchSettings, bench_loaders

    registry.register_loader(_entry("threaded", threads=True))
    registry.register_loader(_entry("workers"))
    # the baseline is the registry's, whatever its name
    registry._BACKENDS["torch"] = dataclasses.replace(registry._BACKENDS["torch"], baseline=False)
    registry._BACKENDS["workers"] = dataclasses.replace(registry._BACKENDS["workers"], baseline=True)
    assert registry.baseline_loader().name == "workers"
    cfg = apply_overrides(Config(), ["model.num_segments=2", "train.workers=0"])
    _FakeLoader.made.clear()
    recs = bench_loaders(cfg, _Dataset(8), ["threaded", "workers"], CPU, LoaderBenchSettings(
        batches=1, batch_size=2, threads=[1, 3], py_workers=0, options={"prefetch": 5}))
    made = {(m.backend, m.settings.tuning.threads, m.settings.workers) for m in _FakeLoader.made}
    assert made == {("threaded", 1, 0), ("threaded", 3, 0), ("workers", None, 1),
                    ("workers", None, 3)}
    assert all(m.settings.tuning.prefetch == 5 for m in _FakeLoader.made)
    by = {(r["backend"], r["threads"]): r for r in recs}
    assert by[("workers", 3)]["ratio_to_torch"] == 1.0  # the field keeps its name
    assert by[("threaded", 3)]["ratio_to_torch"] == pytest.approx(
        by[("threaded", 3)]["videos_per_s"] / by[("workers", 3)]["videos_per_s"], rel=1e-2)
    assert by[("threaded", 3)]["dali_threads"] == 3 and "dali_threads" not in by[("workers", 3)]


def test_loader_help_is_generated_from_the_registry(monkeypatch):
    from fastvid import loaders

    for backend in loaders.loader_backends():
        assert f"{backend.name}: {backend.description}" in loaders.loader_help()
    monkeypatch.setattr(loaders, "_BACKENDS", dict(loaders._BACKENDS))
    toy = loaders.register_loader(loaders.LoaderBackend(
        "toy", "a toy loader", lambda device: None, lambda *a: None, preference=-1))
    assert "toy: a toy loader" in loaders.loader_help()
    assert "auto: the first of toy, " in loaders.loader_help()
    # predict's auto only considers backends that stream; the toy has no stream
    assert "toy, " not in loaders.loader_help(streaming=True).split("auto:")[1]
    assert toy.stream is None
