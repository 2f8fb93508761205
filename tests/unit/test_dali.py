"""DALI specifics: parallel external source (spawned workers), JPEG pre-checks, the GPU graph."""
from __future__ import annotations

import re
import sys

import pytest
import torch

from _media import blue_level, require_pyav, video_dataset, write_frames_dataset, write_videos_dataset
from fastvid.config import Config, replace
from fastvid.data.lists import resolve_dataset
from fastvid.data.video_io import jpeg_problem, jpeg_size
from fastvid.errors import BackendUnavailable
from fastvid.loaders import LoaderRequest, LoaderTuning, build_loader

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _cfg(**data) -> Config:
    d = {"image_size": 32, "scale_size": 40}
    d.update(data)
    return replace(Config(), model={"num_segments": 4}, data=d,
                   train={"batch_size": 2, "workers": 0, "seed": 1})


def _collect(loader):
    batches = list(loader)
    return torch.cat([v for v, _ in batches]), torch.cat([lab for _, lab in batches])


def test_jpeg_checks(tmp_path):
    from _media import write_frame_folder

    data = (write_frame_folder(tmp_path / "f", 1, 30, 50) / "00001.jpg").read_bytes()
    assert jpeg_problem(data) is None and jpeg_size(data) == (30, 50)
    assert "empty" in jpeg_problem(b"")
    assert "SOI" in jpeg_problem(b"GIF89a" + data[6:])
    assert "truncated" in jpeg_problem(data[: len(data) // 2])
    with pytest.raises(ValueError):
        jpeg_size(b"\xff\xd8\xff\xda\x00\x02")


@pytest.mark.dali
def test_parallel_source_matches_serial(tmp_path):
    """One spawned-worker pipeline (~7 s to start on 2 cores): same batches as workers=0."""
    root = write_frames_dataset(tmp_path, num_videos=4, num_frames=9, height=40, width=56)
    cfg = _cfg()
    ds = resolve_dataset(root, cfg.data)
    serial = build_loader(cfg, ds, LoaderRequest("train", workers=0), loader="dali-cpu",
                          device=torch.device("cpu"))
    parallel = build_loader(cfg, ds, LoaderRequest("train", workers=1), loader="dali-cpu",
                            device=torch.device("cpu"))
    for epoch in (0, 1):
        serial.set_epoch(epoch)
        parallel.set_epoch(epoch)
        a, b = _collect(serial), _collect(parallel)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.dali
def test_frame_sizes_are_checked_per_sample(tmp_path):
    """Frames of one sample must share a size (a crop box is cut from all of them): a folder of
    mixed sizes is a bad sample; frames of the same size but other JPEG tables are fine."""
    from PIL import Image

    root = write_frames_dataset(tmp_path, num_videos=3, num_frames=10, height=40, width=56)
    frames = root / "20bn-jester-v1"
    for f in sorted((frames / "000").glob("*.jpg"))[::2]:  # other quality: other header bytes
        Image.open(f).convert("RGB").save(f, quality=40)
    for f in sorted((frames / "001").glob("*.jpg"))[1::2]:  # every other frame 60 px wide
        Image.open(f).convert("RGB").resize((60, 40)).save(f)
    cfg = _cfg(max_bad_fraction=0.5)
    loader = build_loader(cfg, resolve_dataset(root, cfg.data), "val", loader="dali-cpu",
                          device=torch.device("cpu"))
    video, label = _collect(loader)
    assert label.tolist() == [0, -1, 2] and torch.count_nonzero(video[1]) == 0
    (path, reason), = loader.bad_samples
    assert path.endswith("001")
    assert re.search(r"frame size \(40, (56|60)\) differs from the sample's \(40, (60|56)\)", reason)


@pytest.mark.dali
def test_dali_video_path_needs_no_pyav(tmp_path, monkeypatch):
    """The DALI path probes videos from their headers and pads/replaces with a file of the list:
    with ``import av`` failing, MJPEG and VP9 lists load, and a truncated file is a counted bad
    sample (eval: label -1, zeros; train: replaced). PyAV only writes the test videos."""
    require_pyav()
    roots = {c: write_videos_dataset(tmp_path / c, c, num_videos=3, num_frames=14, height=40,
                                     width=56) for c in ("mjpeg", "vp9")}
    victim = roots["vp9"] / "videos" / "v001.webm"
    victim.write_bytes(victim.read_bytes()[:400])
    monkeypatch.setitem(sys.modules, "av", None)  # any `import av` now raises ImportError
    cfg = _cfg(max_bad_fraction=0.5)
    for codec, root in roots.items():
        ds = resolve_dataset(root, cfg.data)
        val = build_loader(cfg, ds, LoaderRequest("val", views=(1, 3)), loader="dali-cpu",
                           device=torch.device("cpu"))
        video, label = _collect(val)
        assert video.shape == (3, 3, 4, 3, 32, 32)
        if codec == "vp9":
            assert label.tolist() == [0, -1, 0] and torch.count_nonzero(video[1]) == 0
            assert [p.rsplit("/", 1)[-1] for p, _ in val.bad_samples] == ["v001.webm"]
            assert "truncated" in val.bad_samples[0][1]
        else:
            assert label.tolist() == [0, 1, 0] and val.bad_samples == []
        assert video[label >= 0].std() > 0.1
        train = build_loader(cfg, ds, LoaderRequest("train", batch_size=3), loader="dali-cpu",
                             device=torch.device("cpu"))
        video, label = _collect(train)
        assert video.shape == (3, 4, 3, 32, 32) and (label >= 0).all()
    assert sys.modules["av"] is None


def _wipe_mjpeg_frames(path) -> None:
    """Zero the JPEG data of every frame but the first, keeping every AVI chunk size: the
    container headers stay valid, the decoder fails."""
    data = bytearray(path.read_bytes())
    chunks = [i for i in range(len(data) - 8) if data[i:i + 4] == b"00dc"]
    for pos in chunks[1:]:
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        data[pos + 8:pos + 8 + size] = bytes(size)
    path.write_bytes(bytes(data))


@pytest.mark.dali
def test_video_dali_cannot_decode_is_a_bad_sample(tmp_path, caplog):
    """A video whose headers are fine but whose frames do not decode: DALI's pipeline fails, the
    loader finds the file, marks it bad and rebuilds at that batch (eval: label -1 and zeros in
    its place; train: replaced), and the other samples come through unchanged."""
    import logging

    require_pyav()
    root = write_videos_dataset(tmp_path / "v", "mjpeg", num_videos=4, num_frames=14, height=40,
                                width=56)
    cfg = _cfg(max_bad_fraction=0.5)
    ds = resolve_dataset(root, cfg.data)
    cpu = torch.device("cpu")
    clean, clean_label = _collect(build_loader(cfg, ds, "val", loader="dali-cpu", device=cpu))
    _wipe_mjpeg_frames(root / "videos" / "v002.avi")
    val = build_loader(cfg, ds, "val", loader="dali-cpu", device=cpu)
    with caplog.at_level(logging.WARNING):
        video, label = _collect(val)
    assert label.tolist() == [0, 1, -1, 1] and clean_label.tolist() == [0, 1, 0, 1]
    assert torch.count_nonzero(video[2]) == 0
    keep = [0, 1, 3]
    assert torch.equal(video[keep], clean[keep])
    assert [(p.rsplit("/", 1)[-1], "DALI cannot decode" in r) for p, r in val.bad_samples] == [
        ("v002.avi", True)]
    assert "v002.avi" in caplog.text
    train = build_loader(cfg, ds, LoaderRequest("train", batch_size=2), loader="dali-cpu",
                         device=cpu)
    for epoch in (0, 1):
        train.set_epoch(epoch)
        video, label = _collect(train)
        assert len(label) == 4 and (label >= 0).all() and torch.isfinite(video).all()
    assert [p.rsplit("/", 1)[-1] for p, _ in train.bad_samples] == ["v002.avi"]


@pytest.mark.dali
@pytest.mark.parametrize("data", ["frames", "mjpeg"])
def test_split_batches_over_pipelines(tmp_path, data):
    """decoder_pipelines=K (one DALI pipeline per NVDEC engine on a GPU) gives the same batches
    as one pipeline, with a batch that does not divide evenly and a padded last batch."""
    if data == "frames":
        root = write_frames_dataset(tmp_path, num_videos=7, num_frames=9, height=40, width=56)
    else:
        require_pyav()
        root = write_videos_dataset(tmp_path, "mjpeg", num_videos=7, num_frames=14, height=40,
                                    width=56)
    cfg = _cfg()
    ds = resolve_dataset(root, cfg.data)
    for split, views in (("train", None), ("val", (2, 1)), ("val", (1, 3))):
        outs = []
        for parts in (1, 2):
            loader = build_loader(cfg, ds, LoaderRequest(
                split, batch_size=3, views=views, drop_last=False,
                tuning=LoaderTuning(decoder_pipelines=parts, threads=2)),
                loader="dali-cpu", device=torch.device("cpu"))
            assert len(loader._pipes or []) == 0 and loader.decoder_pipelines == parts
            outs.append(_collect(loader))
            assert len(loader._pipes) == parts
            assert loader.pipeline_threads == ([2] if parts == 1 else [1, 1])  # shared, not 2 each
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
        assert len(outs[0][1]) == 7


@pytest.mark.dali
def test_dali_gpu_needs_cuda_target(tmp_path):
    root = write_frames_dataset(tmp_path, num_videos=2, num_frames=8, height=40, width=56)
    cfg = _cfg()
    with pytest.raises(BackendUnavailable, match="CUDA"):
        build_loader(cfg, resolve_dataset(root, cfg.data), "val", loader="dali",
                     device=torch.device("cpu"))


@pytest.mark.dali
def test_gpu_decoder_options_are_arguments_of_the_mixed_decoders():
    """What the GPU graph passes nvJPEG exists in DALI's schemas (checked without a GPU), and
    chroma is upsampled as libjpeg does (the torch loader's PIL/torchvision decode)."""
    from nvidia.dali import backend

    from dali_pipelines.pipelines import gpu_decoder_options

    opts = gpu_decoder_options(0.7, (100, 176))
    assert opts["jpeg_fancy_upsampling"] is True and gpu_decoder_options(None, None) == {"jpeg_fancy_upsampling": True}
    for op in ("decoders__Image", "decoders__ImageSlice"):
        schema = backend.GetSchema(op)
        assert all(schema.HasArgument(k) for k in opts), (op, opts)


@pytest.mark.gpu
@pytest.mark.dali
@pytest.mark.parametrize("data", ["frames", "vp9", "h264"])
def test_dali_gpu_graph_matches_torch(tmp_path, data):
    """nvJPEG / NVDEC decode + GPU crop/resize/normalize, against the torch loader on the GPU."""
    if data == "frames":
        root = write_frames_dataset(tmp_path, num_videos=4, num_frames=10, height=48, width=64)
    else:
        pytest.importorskip("av", reason="the torch loader (the reference) decodes videos with PyAV")
        root = write_videos_dataset(tmp_path, data, num_videos=3, num_frames=18, height=48, width=64)
    cfg = _cfg(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    ds = resolve_dataset(root, cfg.data)
    cuda = torch.device("cuda")
    outs = {}
    for backend in ("dali", "torch"):
        loader = build_loader(cfg, ds, LoaderRequest("val", views=(2, 3)), loader=backend,
                              device=cuda)
        video, label = _collect(loader)
        assert video.device.type == "cuda" and video.shape[1:] == (6, 4, 3, 32, 32)
        outs[backend] = (video.float().cpu(), label.cpu())
    assert torch.equal(outs["dali"][1], outs["torch"][1])
    diff = (outs["dali"][0] - outs["torch"][0]).abs()
    # nvJPEG/NVDEC colour conversion differs from libjpeg/swscale by a few levels at most
    assert diff.mean() < (1.0 if data == "frames" else 3.0), diff.mean()
    train = build_loader(cfg, ds, "train", loader="dali", device=cuda)
    video, label = _collect(train)
    assert video.is_cuda and video.shape[1:] == (4, 3, 32, 32) and (label >= 0).all()


def _assert_planned_frames(loader, video: torch.Tensor, views: int) -> None:
    """Each view holds the frames the planner chose: their blue level encodes the frame index."""
    from fastvid.data.video_headers import probe_video_headers

    for i, rec in enumerate(loader.records):
        n = probe_video_headers(rec.path).num_frames
        for v in range(views):
            idx = loader.planner.frame_indices(n, 0, i, v, 0)
            got = video[i, v, :, 2].float().mean(dim=(-1, -2)).cpu().numpy()  # FCHW, RGB
            assert abs(got - blue_level(idx)).max() < 8, (rec.path, v, idx, got)


@pytest.mark.dali
@pytest.mark.parametrize("codec", ["mjpeg", "vp9"])
@pytest.mark.parametrize("sampling", ["tsn", "dense"])
def test_dali_cpu_decodes_the_planned_frames(tmp_path, codec, sampling):
    """The frame-identity check of the NVDEC test below, on DALI's CPU decoder."""
    require_pyav()
    root = write_videos_dataset(tmp_path, codec, num_videos=3, num_frames=26, height=48, width=64)
    cfg = _cfg(mean=[0.0] * 3, std=[1.0] * 3, color="RGB", sampling=sampling, clip_len=4,
               frame_interval=3)
    loader = build_loader(cfg, resolve_dataset(root, cfg.data), LoaderRequest("val", views=(2, 1)),
                          loader="dali-cpu", device=torch.device("cpu"))
    video, _ = _collect(loader)
    _assert_planned_frames(loader, video, 2)


@pytest.mark.gpu
@pytest.mark.dali
@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9"])
@pytest.mark.parametrize("sampling", ["tsn", "dense"])
def test_nvdec_decodes_the_planned_frames(tmp_path, codec, sampling):
    """--loader dali on video lists: NVDEC (mixed fn.decoders.video) decodes the sparse TSN or
    dense frames the planner chose, no PyAV involved (prebuilt media via FASTVID_TEST_MEDIA),
    over several decoder pipelines; training batches come out on the GPU."""
    root = video_dataset(tmp_path, codec)
    cfg = _cfg(mean=[0.0] * 3, std=[1.0] * 3, color="RGB", sampling=sampling, clip_len=4,
               frame_interval=3)
    ds = resolve_dataset(root, cfg.data)
    cuda = torch.device("cuda")
    loader = build_loader(cfg, ds, LoaderRequest("val", views=(2, 1)), loader="dali", device=cuda)
    assert loader.decoder_pipelines > 1
    video, label = _collect(loader)
    assert video.is_cuda and video.shape == (3, 2, 4, 3, 32, 32) and (label >= 0).all()
    _assert_planned_frames(loader, video, 2)
    train = build_loader(cfg, ds, "train", loader="dali", device=cuda)
    video, label = _collect(train)
    assert video.is_cuda and video.shape[1:] == (4, 3, 32, 32) and (label >= 0).all()


@pytest.mark.gpu
@pytest.mark.dali
def test_cli_train_and_eval_on_h264_with_nvdec(tmp_path):
    """The crash of 2026-11-30: fastvid eval --loader dali on H.264 files (no PyAV there)."""
    from _helpers import CONFIG, SMALL, invoke_ok

    root = video_dataset(tmp_path, "h264")
    work = tmp_path / "w"
    common = ["-c", CONFIG, "--data-root", str(root), "--loader", "dali", "--device", "cuda",
              *SMALL, "--set", "data.format=videos"]
    invoke_ok(["train", *common, "--work-dir", str(work), "--no-progress", "--epochs", "1",
               "--batch-size", "2", "--set", "train.precise_bn_batches=0"])
    out = invoke_ok(["eval", *common, "--checkpoint", str(work / "last.pt")])
    assert "top" in out.lower()
