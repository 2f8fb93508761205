"""Small test media written on the fly: JPEG frame folders (PIL) and MJPEG/VP9/H.264/HEVC videos
(PyAV).

Without PyAV (a bare torch image, such as the lent GPU machine's), writing a video skips the test
or fixture that asked for it, with the reason; frame folders need only PIL.

Every frame carries a smooth colour gradient plus a per-frame blue level (``30 + 23 i mod 200``),
so frames differ from each other (sampling mistakes show) while staying JPEG-friendly (decoder
differences stay small and measurable).

The GPU machine has no PyAV: ``python tests/_media.py DIR`` writes the video datasets the GPU
tests use into ``DIR`` here, and ``FASTVID_TEST_MEDIA=DIR`` there makes :func:`video_dataset`
use them (it writes them with PyAV when it can, and skips the test otherwise).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CODECS = {
    # codec name -> (PyAV encoder, container suffix, pixel format)
    "mjpeg": ("mjpeg", ".avi", "yuvj420p"),
    "vp9": ("libvpx-vp9", ".webm", "yuv420p"),
    "h264": ("libx264", ".mp4", "yuv420p"),
    "hevc": ("libx265", ".mp4", "yuv420p"),
}


def frame_image(index: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB: gradients whose phase depends on ``seed`` and ``index``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = seed * 0.7
    r = 128 + 100 * np.sin(xx / max(width, 1) * 3.0 + phase)
    g = 128 + 100 * np.cos(yy / max(height, 1) * 2.5 + phase)
    b = np.full_like(r, 30.0 + (index * 23) % 200)
    img = np.stack([r, g, b], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def require_pyav() -> None:
    """Skip the calling test or fixture, with the reason, when PyAV cannot be imported."""
    import pytest

    try:
        import av  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"PyAV is not installed, so no test video can be written here ({exc})")


def write_frame_folder(folder: str | Path, num_frames: int, height: int = 72, width: int = 96,
                       seed: int = 0, tmpl: str = "{:05d}.jpg") -> Path:
    """``folder/00001.jpg ...`` (1-based, as TRN-pytorch's frame lists)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(frame_image(i, height, width, seed)).save(folder / tmpl.format(i + 1),
                                                                  quality=92)
    return folder


def write_video(path: str | Path, num_frames: int, height: int = 72, width: int = 96,
                codec: str = "mjpeg", seed: int = 0, fps: int = 25) -> Path:
    """Encode ``num_frames`` frames with PyAV; the suffix of ``path`` is replaced by the codec's."""
    require_pyav()
    import av

    encoder, suffix, pix_fmt = CODECS[codec]
    path = Path(path).with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "g": "4"}
        elif codec == "hevc":
            stream.options = {"preset": "ultrafast", "x265-params": "log-level=error:keyint=4"}
        elif codec == "vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "g": "4", "crf": "10",
                              "b": "0"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width, seed), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames_dataset(root: str | Path, num_videos: int = 6, num_frames: int = 10,
                         classes: int = 3, height: int = 72, width: int = 96,
                         split_lists: tuple[str, ...] = ("train_videofolder.txt",
                                                         "val_videofolder.txt"),
                         frames_dir: str = "20bn-jester-v1") -> Path:
    """A Jester-layout dataset; every split list names the same videos (enough for loader tests)."""
    root = Path(root)
    lines = []
    for v in range(num_videos):
        n = num_frames + (v % 3)  # lengths differ a little, as in real data
        write_frame_folder(root / frames_dir / f"{v:03d}", n, height, width, seed=v)
        lines.append(f"{v:03d} {n} {v % classes}")
    for name in split_lists:
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "categories.txt").write_text("\n".join(f"class{c}" for c in range(classes)) + "\n")
    return root


def write_videos_dataset(root: str | Path, codec: str = "mjpeg", num_videos: int = 4,
                         num_frames: int = 20, classes: int = 2, height: int = 72,
                         width: int = 96) -> Path:
    """A video-list dataset (mmaction2 format); train and val lists name the same videos."""
    root = Path(root)
    lines = []
    for v in range(num_videos):
        path = write_video(root / "videos" / f"v{v:03d}", num_frames + 2 * (v % 2), height, width,
                           codec, seed=v)
        lines.append(f"{path.relative_to(root)} {v % classes}")
    for name in ("train_list.txt", "val_list.txt"):
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "categories.txt").write_text("\n".join(f"class{c}" for c in range(classes)) + "\n")
    return root


def blue_level(index) -> "np.ndarray":
    """The blue value :func:`frame_image` gives frame ``index`` (identifies decoded frames)."""
    return 30.0 + (np.asarray(index) * 23) % 200


# (codec, videos, frames, height, width) of the prebuilt GPU-test datasets
GPU_VIDEO_SETS = [(codec, 3, 26, 48, 64) for codec in ("h264", "hevc", "vp9")]


def video_dataset(tmp_path: str | Path, codec: str, num_videos: int = 3, num_frames: int = 26,
                  height: int = 48, width: int = 64) -> Path:
    """A video-list dataset: from ``$FASTVID_TEST_MEDIA/<codec>`` when present, else written
    with PyAV; the test is skipped (with the reason) when neither is possible."""
    import os

    import pytest

    prebuilt = os.environ.get("FASTVID_TEST_MEDIA")
    if prebuilt and (Path(prebuilt) / f"{codec}-{num_videos}x{num_frames}-{height}x{width}" /
                     "val_list.txt").is_file():
        return Path(prebuilt) / f"{codec}-{num_videos}x{num_frames}-{height}x{width}"
    try:
        import av  # noqa: F401
    except ImportError:
        pytest.skip(f"PyAV is not installed to write {codec} test videos and FASTVID_TEST_MEDIA "
                    f"has none (write them elsewhere: python tests/_media.py DIR)")
    return write_videos_dataset(Path(tmp_path) / codec, codec, num_videos, num_frames,
                                height=height, width=width)


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "test_media")
    for codec, n, frames, h, w in GPU_VIDEO_SETS:
        root = write_videos_dataset(out / f"{codec}-{n}x{frames}-{h}x{w}", codec, n, frames,
                                    height=h, width=w)
        print(root)
