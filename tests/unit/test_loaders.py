"""Loaders (torch and DALI-CPU): batch contract, backend parity, epochs, sharding, bad samples.

Tolerance for torch vs DALI-CPU in fixed (val) sampling, in 0-255 pixel units: the loaders cut
the same boxes from the same frames, so the differences are decoder and interpolation rounding.
Measured on these test media (2 cores, DALI 2.4, torchvision 0.29): JPEG frames mean |diff|
~0.2 (max 1), MJPEG/VP9 videos ~0.8-1.2 (max 7; PyAV's and DALI's YUV->RGB conversions
differ). Bounds asserted: mean < 0.6 (frames) / 2.5 (videos), max < 16.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _media import write_frames_dataset, write_video, write_videos_dataset
from fastvid.config import Config, replace
from fastvid.data.lists import resolve_dataset
from fastvid.errors import BackendUnavailable, DataError
from fastvid.loaders import LoaderRequest, build_loader, resolve_loader_name

CPU = torch.device("cpu")
# torchvision 0.29 deprecates its JPEG decoder in favour of torchcodec (not installed here).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

# Named with their marks (the dali mark skips where nvidia-dali is missing, and the GPU check
# selects DALI's tests by it); test_every_cpu_loader_of_the_registry_is_tested keeps it whole.
BACKENDS = ["torch", pytest.param("dali-cpu", marks=pytest.mark.dali)]
H, W, S, SCALE = 48, 64, 32, 40  # frame size, crop, test short side
MEAN, STD = [104.0, 117.0, 128.0], [1.0, 1.0, 1.0]


class _Roots(dict):
    """Test datasets written on first use: a test of frame folders runs without PyAV, and one
    of videos skips (with the reason) where PyAV is missing, instead of the whole module."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def __missing__(self, kind: str) -> Path:
        if kind == "frames":
            root = write_frames_dataset(self.base / kind, num_videos=6, num_frames=10, height=H, width=W)
        else:
            root = write_videos_dataset(self.base / kind, kind, num_videos=3, num_frames=18, height=H, width=W)
        self[kind] = root
        return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    return _Roots(tmp_path_factory.mktemp("loaders"))


def make_cfg(kind: str = "2d", **data) -> Config:
    model = {"num_segments": 4} if kind == "2d" else {"arch": "tpn", "backbone": "resnet3d_slowonly50"}
    d = {"image_size": S, "scale_size": SCALE, "clip_len": 4, "frame_interval": 2,
         "sampling": "tsn" if kind == "2d" else "dense"}
    d.update(data)
    return replace(Config(), model=model, data=d, train={"batch_size": 2, "workers": 0, "seed": 3})


def loader_for(root, backend, split="val", kind="2d", views=None, records=None, data=None, **kw):
    cfg = make_cfg(kind, **(data or {}))
    ds = resolve_dataset(root, cfg.data)
    request = LoaderRequest(split, views=views, records=records, **kw)
    return build_loader(cfg, ds, request, loader=backend, device=CPU)


def collect(loader):
    batches = list(loader)
    return torch.cat([v for v, _ in batches]), torch.cat([lab for _, lab in batches]), batches


# -- contract ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("data", ["frames", "mjpeg", "vp9"])
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_batch_contract(roots, backend, data, kind):
    t = 4
    per_view = (t, 3, S, S) if kind == "2d" else (3, t, S, S)
    n = 6 if data == "frames" else 3
    for split, views in [("train", None), ("val", None), ("val", (1, 10)), ("val", (2, 1))]:
        loader = loader_for(roots[data], backend, split, kind, views)
        video, label, batches = collect(loader)
        assert loader.backend == backend
        assert len(batches) == len(loader)
        v = views[0] * views[1] if views else None
        expected = ((v,) if v else ()) + per_view
        assert video.shape[1:] == expected, (split, views)
        assert video.dtype == torch.float32 and label.dtype == torch.int64
        assert all(b[0].is_contiguous() and b[0].device == CPU for b in batches)
        assert len(label) == (n // 2) * 2 if split == "train" else len(label) == n
        assert loader.bad_samples == []
        if split == "val":
            assert label.tolist() == [r.label for r in loader_records(roots[data])]


def loader_records(root):
    return resolve_dataset(root, make_cfg().data).records("val")


@pytest.mark.parametrize("data", ["frames", "mjpeg", "vp9"])
@pytest.mark.parametrize("kind, views", [("2d", (2, 3)), ("3d", (2, 3)), ("2d", (1, 10)),
                                         ("3d", (2, 1))])
@pytest.mark.dali
def test_torch_and_dali_cpu_pixel_close(roots, data, kind, views):
    """Multi-crop views are cut from frames DALI decodes once per clip (grouped crops); single
    crops by the ROI resize; both match the torch loader's resize-then-crop(-then-mirror)."""
    raw = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # compare in pixel units
    outs = {b: collect(loader_for(roots[data], b, "val", kind, views, data=raw))
            for b in ("torch", "dali-cpu")}
    (a, la, _), (b, lb, _) = outs["torch"], outs["dali-cpu"]
    assert torch.equal(la, lb)
    diff = (a - b).abs()
    bound = 0.6 if data == "frames" else 2.5
    assert diff.mean().item() < bound, f"mean |torch - dali| = {diff.mean():.3f} px"
    assert diff.max().item() < 16
    assert a.std() > 10  # the frames are not blank: a real comparison


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalization_and_channel_order(roots, backend):
    raw, _, _ = collect(loader_for(roots["frames"], backend, data={"mean": [0.0] * 3, "std": [1.0] * 3,
                                                                    "color": "RGB"}))
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    norm, _, _ = collect(loader_for(roots["frames"], backend, data={"mean": mean, "std": std,
                                                                     "color": "BGR"}))
    m = torch.tensor(mean).view(1, 1, 3, 1, 1)
    s = torch.tensor(std).view(1, 1, 3, 1, 1)
    expected = (raw.flip(2) - m) / s  # BGR: channel 0 holds blue
    assert torch.allclose(norm, expected, atol=1e-3)


# -- length, order, epochs, sharding, workers -------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_len_and_partial_last_batch(roots, backend):
    val = loader_for(roots["frames"], backend, "val", batch_size=4)
    _, label, batches = collect(val)
    assert len(val) == 2 and [len(b[1]) for b in batches] == [4, 2] and val.num_samples == 6
    train = loader_for(roots["frames"], backend, "train", batch_size=4)
    assert len(train) == 1 and len(list(train)) == 1
    keep = loader_for(roots["frames"], backend, "train", batch_size=4, drop_last=False)
    assert len(keep) == 2 and sum(len(lab) for _, lab in keep) == 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_epoch_changes_train_sampling_reproducibly(roots, backend):
    loader = loader_for(roots["frames"], backend, "train")
    runs = {}
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        runs.setdefault(epoch, []).append(collect(loader)[:2])
    (v0, l0), (v0b, l0b) = runs[0]
    v1, l1 = runs[1][0]
    assert torch.equal(v0, v0b) and torch.equal(l0, l0b), "an epoch replays exactly"
    assert not (torch.equal(v0, v1) and torch.equal(l0, l1)), "another epoch samples differently"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers", [0, 2])
def test_start_resumes_at_a_batch_without_reading_the_ones_before(roots, backend, workers):
    """``start(epoch, k)``: the next pass yields batches k.. of that epoch, equal to a full pass's
    (a resumed run); its build/prefetch began at the call; the pass after it is whole again."""
    loader = loader_for(roots["frames"], backend, "train", batch_size=2, workers=workers)
    loader.set_epoch(1)
    full = [(v.clone(), lab.clone()) for v, lab in loader]
    assert len(full) == 3
    loader.start(1, 2)
    tail = list(loader)
    assert len(tail) == 1
    assert torch.equal(tail[0][0], full[2][0]) and torch.equal(tail[0][1], full[2][1])
    again = list(loader)  # no start: the whole epoch (still epoch 1)
    assert len(again) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(again, full))
    loader.start(1, 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(list(loader), full))
    loader.start(1, 2)
    loader.set_epoch(1)  # the same epoch: the start stands
    assert len(list(loader)) == 1
    loader.start(1, 2)
    loader.set_epoch(0)  # another epoch cancels it: the whole of epoch 0
    epoch0 = list(loader)
    assert len(epoch0) == 3 and not torch.equal(epoch0[0][0], full[0][0])


def test_torch_loader_on_videos_without_pyav_says_so(roots, monkeypatch):
    """No PyAV (the bare GPU image; --loader auto without DALI): one line at construction, not
    a 'ModuleNotFoundError' per sample from the workers."""
    from fastvid.data import video_io

    root = roots["mjpeg"]  # written with PyAV (skips without it)
    monkeypatch.setattr(video_io, "pyav_installed", lambda: False)
    with pytest.raises(BackendUnavailable, match=r"\.avi: the torch loader decodes video files "
                                                 r"with PyAV, which is not installed.*--loader dali"):
        loader_for(root, "torch")
    loader_for(roots["frames"], "torch")  # frame folders need no PyAV


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_split_the_val_list(roots, backend):
    seen = []
    for shard in range(2):
        loader = loader_for(roots["frames"], backend, "val", shard_id=shard, num_shards=2)
        assert loader.num_samples == 3
        seen.append(collect(loader)[1].tolist())
    labels = [r.label for r in loader_records(roots["frames"])]
    assert sorted(seen[0] + seen[1]) == sorted(labels)
    assert seen[0] == labels[0::2] and seen[1] == labels[1::2]


def test_torch_workers_give_the_same_batches(roots):
    for split in ("train", "val"):
        a = collect(loader_for(roots["mjpeg"], "torch", split, workers=0))
        b = collect(loader_for(roots["mjpeg"], "torch", split, workers=2))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_train_flip_remaps_labels(roots):
    data = {"flip": True, "flip_label_map": {0: 1, 1: 0}}
    loader = loader_for(roots["frames"], "torch", "train", data=data, batch_size=6)
    flipped = 0
    for epoch in range(4):
        loader.set_epoch(epoch)
        planner = loader.planner
        _, label, _ = collect(loader)
        order = loader.sampler.indices()
        recs = loader_records(roots["frames"])
        for idx, lab in zip(order, label.tolist()):
            plan = planner.view_plan(H, W, epoch, int(idx))
            want = {0: 1, 1: 0}.get(recs[idx].label, recs[idx].label) if plan.flip else recs[idx].label
            assert lab == want
            flipped += plan.flip
    assert flipped > 0


# -- backend choice ------------------------------------------------------------------------------
def test_resolve_loader_name(monkeypatch):
    import fastvid.loaders as loaders

    assert resolve_loader_name("torch", CPU) == "torch"
    if loaders.dali_available():
        assert resolve_loader_name("auto", CPU) == "dali-cpu"
        with pytest.raises(BackendUnavailable, match="CUDA"):
            resolve_loader_name("dali", CPU)
    monkeypatch.setattr(loaders, "dali_available", lambda: False)
    assert resolve_loader_name("auto", CPU) == "torch"
    for name in ("dali", "dali-cpu"):
        with pytest.raises(BackendUnavailable, match="nvidia-dali"):
            resolve_loader_name(name, CPU)


def test_every_cpu_loader_of_the_registry_is_tested():
    """A registered backend that can load for a CPU target here is one of BACKENDS (the
    contract tests above run on each of them)."""
    from fastvid.loaders import loader_backends

    tested = {p if isinstance(p, str) else p.values[0] for p in BACKENDS}
    here = {b.name for b in loader_backends() if b.unavailable_reason(CPU) is None}
    assert here <= tested, f"add {sorted(here - tested)} to BACKENDS"


def test_auto_picks_a_loader_that_decodes_the_lists_codecs(tmp_path, monkeypatch, caplog):
    """auto reads the container headers of the list: H.264/HEVC on a CPU go to the torch loader
    (DALI-on-CPU cannot decode them), VP9 may stay on DALI-on-CPU; said in one line."""
    import fastvid.loaders as loaders
    from fastvid.data.lists import VideoRecord
    from fastvid.loaders import list_codecs

    h264 = write_video(tmp_path / "a", 4, 32, 32, "h264")
    vp9 = write_video(tmp_path / "b", 4, 32, 32, "vp9")
    rec = lambda p: VideoRecord(str(p), 0, -1, is_video=True)  # noqa: E731
    assert list_codecs([rec(h264), rec(vp9)]) == {"h264": str(h264), "vp9": str(vp9)}
    assert list_codecs([VideoRecord(str(tmp_path), 0, 3)]) == {}  # frame folders: no codec
    # As if DALI were installed (it is not everywhere): only the codec check can refuse it.
    monkeypatch.setattr(loaders, "dali_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="fastvid.loaders"):
        assert resolve_loader_name("auto", CPU, [rec(vp9)] * 3) == "dali-cpu"
        caplog.clear()
        assert resolve_loader_name("auto", CPU, [rec(vp9), rec(h264)]) == "torch"
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "not dali-cpu" in m]) == 1, said
    assert "h264" in said[0] and str(h264) in said[0]
    assert any("loader auto -> torch for h264, vp9 videos" in m for m in said), said
    # A GPU target keeps DALI for H.264 (NVDEC) when CUDA is there.
    monkeypatch.setattr(loaders.torch.cuda, "is_available", lambda: True)
    assert resolve_loader_name("auto", torch.device("cuda"), [rec(h264)]) == "dali"
    assert resolve_loader_name("auto", CPU) == "dali-cpu"  # no records: no codec to check


@pytest.mark.dali
def test_h264_on_dali_cpu_is_a_clear_error(tmp_path):
    root = write_videos_dataset(tmp_path, "h264", num_videos=2, num_frames=12, height=H, width=W)
    with pytest.raises(BackendUnavailable, match=r"v000\.mp4.*h264.*--loader torch"):
        loader_for(root, "dali-cpu")
    video, label, _ = collect(loader_for(root, "torch"))  # torch decodes H.264 with PyAV
    assert video.shape == (2, 4, 3, S, S)


@pytest.mark.dali
@pytest.mark.parametrize("workers", [0, 1])
def test_unsupported_codec_inside_a_list_is_a_clear_error(roots, tmp_path, workers):
    """An H.264 file behind a VP9 first file: BackendUnavailable naming it, from the main
    process and from a DALI Python worker (whose errors arrive as plain Exception text)."""
    root = tmp_path / "mixed"
    shutil.copytree(roots["vp9"], root)
    write_video(root / "videos" / "v001", 12, H, W, "h264")
    for name in ("train_list.txt", "val_list.txt"):
        lst = root / name
        lst.write_text(lst.read_text().replace("v001.webm", "v001.mp4"))
    with pytest.raises(BackendUnavailable, match=r"^\S*v001\.mp4: codec h264 .*--loader torch"):
        collect(loader_for(root, "dali-cpu", workers=workers))


# -- bad samples ---------------------------------------------------------------------------------
@pytest.fixture()
def broken_frames(roots, tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "broken"
    shutil.copytree(roots["frames"], root)
    frames = root / "20bn-jester-v1"
    data = (frames / "001" / "00003.jpg").read_bytes()
    (frames / "001" / "00003.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    for f in (frames / "003").glob("*.jpg"):
        f.unlink()  # empty folder
    (frames / "004" / "00005.jpg").unlink()  # one missing frame
    return root, {"001": "00003.jpg", "003": "003", "004": "00005.jpg"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_frames_in_val_keep_their_place(broken_frames, backend, caplog):
    root, broken = broken_frames
    records = resolve_dataset(root, make_cfg().data).records("val", check=False)
    # test sampling of 4 segments reads frames 2, 5, 7, 10 of the 11-frame folders 001 and
    # 004: it misses the corrupt frame 3 of 001 (the train test reads it) and hits the missing 5
    loader = loader_for(root, backend, "val", views=(1, 1), records=records,
                        data={"max_bad_fraction": 0.6}, batch_size=4)
    with caplog.at_level(logging.WARNING):
        video, label, _ = collect(loader)
    bad_rows = [i for i, lab in enumerate(label.tolist()) if lab < 0]
    bad_paths = [p for p, _ in loader.bad_samples]
    assert len(label) == 6
    for row in bad_rows:
        assert torch.count_nonzero(video[row]) == 0
    good = [i for i in range(6) if i not in bad_rows]
    assert label[good].tolist() == [records[i].label for i in good]
    assert bad_rows == [3, 4]  # the empty folder and the missing frame
    assert len(bad_paths) == len(bad_rows)
    for path in bad_paths:
        assert path in caplog.text
    assert any("empty" in r for _, r in loader.bad_samples)
    with pytest.raises(DataError, match="max_bad_fraction"):
        collect(loader_for(root, backend, "val", views=(1, 1), records=records))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_frames_in_train_are_replaced(broken_frames, backend, caplog):
    root, _ = broken_frames
    records = resolve_dataset(root, make_cfg().data).records("train", check=False)
    # one view of every frame makes the corrupt JPEG (001/00003.jpg) certain to be read
    loader = loader_for(root, backend, "train", records=records, batch_size=6,
                        data={"max_bad_fraction": 0.9, "clip_len": 12, "frame_interval": 1,
                              "sampling": "dense"})
    with caplog.at_level(logging.WARNING):
        video, label, _ = collect(loader)
    assert (label >= 0).all() and len(label) == 6
    assert torch.isfinite(video).all()
    assert any(p.endswith("001") and "001/00003.jpg: truncated JPEG" in r
               for p, r in loader.bad_samples), loader.bad_samples
    assert "001/00003.jpg" in caplog.text
    with pytest.raises(DataError, match="could not be read"):
        collect(loader_for(root, backend, "train", records=records, batch_size=6,
                           data={"clip_len": 12, "frame_interval": 1, "sampling": "dense"}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_video_is_a_bad_sample(roots, tmp_path, backend, caplog):
    root = tmp_path / "vids"
    shutil.copytree(roots["mjpeg"], root)
    victim = root / "videos" / "v001.avi"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    loader = loader_for(root, backend, "val", data={"max_bad_fraction": 0.5})
    with caplog.at_level(logging.WARNING):
        video, label, _ = collect(loader)
    assert label.tolist() == [0, -1, 0] and torch.count_nonzero(video[1]) == 0
    assert [Path(p).name for p, _ in loader.bad_samples] == ["v001.avi"]
    assert "v001.avi" in caplog.text
    with pytest.raises(DataError, match="v001.avi"):
        collect(loader_for(root, backend, "val"))


def test_write_video_helper_roundtrip(tmp_path):
    from fastvid.data.video_io import probe_video, read_video_frames

    path = write_video(tmp_path / "x", 12, H, W, "vp9")
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width, info.codec) == (12, H, W, "vp9")
    frames = read_video_frames(path, [0, 11, 5])
    # the blue channel encodes the frame index (30 + 23 i): the right frames came back, in order
    blue = frames[:, 2].float().mean(dim=(1, 2))
    assert np.allclose(blue.numpy(), [30, 30 + 23 * 11 % 200, 30 + 23 * 5], atol=4)


def test_bench_loaders_records(roots):
    from bench.loader import LoaderBenchSettings, bench_loaders

    cfg = make_cfg()
    ds = resolve_dataset(roots["frames"], cfg.data)
    recs = bench_loaders(cfg, ds, ["torch", "dali-cpu", "dali"], CPU,
                         LoaderBenchSettings(batches=2, batch_size=2, workers=0))
    by = {r["backend"]: r for r in recs}
    assert by["torch"]["videos_per_s"] > 0 and by["torch"]["ratio_to_torch"] == 1.0
    assert by["torch"]["frames_per_s"] == pytest.approx(4 * by["torch"]["videos_per_s"], rel=0.01)
    assert "CUDA" in by["dali"]["skipped"] or "nvidia-dali" in by["dali"]["skipped"]
    if "videos_per_s" in by["dali-cpu"]:  # default threads (every core) vs torch's workers
        assert by["dali-cpu"]["ratio_to_torch"] == pytest.approx(
            by["dali-cpu"]["videos_per_s"] / by["torch"]["videos_per_s"], rel=1e-2)
    for r in recs:
        assert r["kind"] == "loader" and r["batch_size"] == 2 and r["workers"] == 0 and r["date"]


def test_thread_counts():
    from bench.loader import available_cores, thread_counts

    cores = available_cores()
    assert thread_counts(None) == [None]
    assert thread_counts("1,2,all") == list(dict.fromkeys([1, 2, cores]))
    auto = thread_counts("auto")
    assert auto[0] == 1 and auto[-1] == cores and auto == sorted(set(auto))
    with pytest.raises(Exception, match="threads"):
        thread_counts("1,two")


def test_dali_option_values():
    from bench.loader import dali_option_values
    from fastvid.errors import FastvidError

    assert dali_option_values(["hw_decoder_load=0.9", "prefetch=3", "decoder-pipelines=4"]) == {
        "hw_decoder_load": 0.9, "prefetch": 3, "decoder_pipelines": 4}
    for bad in ("threads=2", "prefetch", "prefetch=x"):
        with pytest.raises(FastvidError, match="DALI loader option"):
            dali_option_values([bad])


@pytest.mark.dali
def test_bench_loader_thread_sweep_stages_and_data_wait(roots, tmp_path):
    """The record the issue asks for: per backend and thread count videos/s, frames/s, start-up,
    scaling, the per-stage breakdown and data_wait of a short real training run; the report
    plots throughput against threads."""
    import json

    from bench.loader import LoaderBenchSettings, bench_loaders
    from bench.report import render_report

    cfg = make_cfg()
    ds = resolve_dataset(roots["frames"], cfg.data)
    recs = bench_loaders(cfg, ds, ["torch", "dali-cpu"], CPU, LoaderBenchSettings(
        batches=2, batch_size=2, threads=[1, 2], stages=True, train_steps=1, train_warmup=0))
    # the throughput first; at the last thread count data_wait and stages as records of their own
    assert [(r["backend"], r["threads"], r["measure"]) for r in recs] == [
        ("torch", 1, "throughput"), ("dali-cpu", 1, "throughput"),
        ("torch", 2, "throughput"), ("torch", 2, "data_wait"), ("torch", 2, "stages"),
        ("dali-cpu", 2, "throughput"), ("dali-cpu", 2, "data_wait"), ("dali-cpu", 2, "stages")]
    assert all(r["status"] == "ok" and "skipped" not in r for r in recs), [r.get("skipped") for r in recs]
    tput = [r for r in recs if r["measure"] == "throughput"]
    for r in tput:
        assert r["videos_per_s"] > 0 and r["startup_s"] > 0 and len(r["loadavg_before"]) == 3
        # /proc counts CPU time in 10 ms ticks: a tiny run may round to 0
        assert r["cpu_ms_per_video"] >= 0 and r["cpu_cores_used"] >= 0
        assert r["frames_per_s"] == pytest.approx(4 * r["videos_per_s"], rel=0.01)
        assert r["scaling"] == (1.0 if r["threads"] == 1 else pytest.approx(
            r["videos_per_s"] / next(x["videos_per_s"] for x in tput
                                     if x["backend"] == r["backend"] and x["threads"] == 1),
            rel=1e-2, abs=1e-3))  # scaling is rounded to 3 decimals
        assert "data_wait_share" not in r and "stage_ms" not in r
    for r in recs:
        if r["measure"] == "data_wait":
            assert 0.0 <= r["data_wait_share"] <= 1.0 and r["train_steps"] == 1 and "videos_per_s" not in r
        if r["measure"] == "stages":
            # increments of noisy timings can dip below 0 on a busy machine; the totals cannot
            assert all(np.isfinite(v) for v in r["stage_ms"].values()) and r["stage_method"]
    dali = [r for r in tput if r["backend"] == "dali-cpu"]
    assert [r["workers"] for r in dali] == [0, 0] and [r["dali_threads"] for r in dali] == [1, 2]
    assert [(r["decoder_pipelines"], r["dali_threads_used"]) for r in dali] == [(1, 1), (1, 2)]
    dali_stages = recs[-1]
    assert list(dali_stages["stage_ms"]) == ["source (plan + read + checks)", "decode", "crop/resize",
                                             "normalize + layout"]
    assert {"source_read", "source_plan", "loader_run"} <= set(dali_stages["python_ms"])
    assert all(v > 0 for v in dali_stages["stage_cumulative_ms"].values())
    assert list(recs[4]["stage_ms"]) == ["plan", "read + decode", "crop/resize",
                                         "normalize + to device"]
    (tmp_path / "results.json").write_text(json.dumps(recs))
    result = render_report(tmp_path)
    assert "loader_threads.png" in {p.name for p in result["plots"]}
    md = result["markdown"].read_text()
    assert "Where the loader time goes" in md and (f"| dali-cpu | {recs[-1]['measure']} | "
                                                      f"{recs[-1]['device']} | 2 |") in md
