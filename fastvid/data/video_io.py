"""Reading frames for the loaders: JPEG checks/size from the header, JPEG folders, video files (PyAV).

Everything here fails with :class:`fastvid.errors.DataError` naming the file, so a loader can turn
one broken sample into a counted, logged "bad sample" instead of a crash in a worker. ``av`` is
imported inside the functions that need it (it is an optional extra).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

import numpy as np

from fastvid.errors import DataError

if TYPE_CHECKING:  # imported where used: the DALI source checks JPEG headers without torch
    import torch

__all__ = ["VIDEO_EXTS", "jpeg_problem", "jpeg_size", "jpeg_frame_header", "read_bytes",
           "read_jpeg_file", "read_frame_folder", "first_frame_size", "VideoInfo", "file_key",
           "probe_video", "read_video_frames", "stream_video_frames", "decode_jpeg_rgb"]

# Video file extensions fastvid reads (PyAV/FFmpeg demuxes them all; DALI the MP4/MOV, Matroska/
# WebM and AVI ones): what ``fastvid data prepare`` lists and ``fastvid predict`` takes as videos.
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv")

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_problem(data: bytes) -> Optional[str]:
    """Why ``data`` is not a complete JPEG, or None when it looks whole.

    Checks only the SOI marker at the start and an EOI marker at the end (a few bytes of slack
    for padding): cheap enough for every frame, and it catches empty and truncated files, which
    libjpeg would otherwise "decode" with a grey bottom half and a warning.
    """
    if len(data) == 0:
        return "empty file"
    if data[:2] != b"\xff\xd8":
        return "not a JPEG (no SOI marker)"
    if b"\xff\xd9" not in data[-16:]:
        return "truncated JPEG (no EOI marker)"
    return None


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from the SOF segment of an encoded JPEG, without decoding it."""
    return jpeg_frame_header(data)[:2]


def jpeg_frame_header(data: bytes) -> tuple[int, int, int]:
    """``(height, width, end)``: the frame size and where the SOF segment ends.

    Two files whose first ``end`` bytes are equal have the same size (a loader checking every
    frame of a clip compares that prefix, one ``startswith``, instead of parsing each header).
    """
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ValueError("corrupt JPEG header (marker expected)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                break
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            if height == 0 or width == 0:
                raise ValueError("JPEG frame header has a zero size")
            return height, width, pos + 2 + length
        if marker == 0xDA:  # start of scan before any SOF
            break
        pos += 2 + length
    raise ValueError("no frame header (SOF) found")


def read_bytes(path: str | Path) -> bytes:
    """A whole file with raw ``os`` calls (about half the cost of ``open().read()`` for the small
    files of frame folders); OSError as ``os`` raises it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size:  # short reads: network file systems, signals
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def read_jpeg_file(path: str | Path) -> bytes:
    """The bytes of one frame file, checked by :func:`jpeg_problem`; DataError otherwise."""
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        folder = Path(path).parent
        if folder.is_dir() and not any(folder.iterdir()):
            raise DataError(f"{folder}: frame folder is empty") from None
        raise DataError(f"{path}: frame file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read frame: {exc}") from None
    problem = jpeg_problem(data)
    if problem:
        raise DataError(f"{path}: {problem}")
    return data


def decode_jpeg_rgb(data: bytes, path: str | Path = "<bytes>") -> torch.Tensor:
    """(3, H, W) uint8 RGB via torchvision's libjpeg-turbo binding, PIL as a fallback."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        pass  # e.g. CMYK or arithmetic-coded JPEGs that torchvision's build refuses
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode JPEG: {exc}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_frame_folder(folder: str | Path, indices: Sequence[int],
                      tmpl: str = "{:05d}.jpg") -> torch.Tensor:
    """Frames ``tmpl.format(i)`` of ``folder`` -> (T, 3, H, W) uint8 RGB; each file read once."""
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: frame folder not found")
    cache: dict[int, torch.Tensor] = {}
    frames = []
    for i in indices:
        i = int(i)
        if i not in cache:
            path = folder / tmpl.format(i)
            if not path.is_file() and not any(folder.iterdir()):
                raise DataError(f"{folder}: frame folder is empty")
            cache[i] = decode_jpeg_rgb(read_jpeg_file(path), path)
        frames.append(cache[i])
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{folder}: frames have different sizes {sorted(shapes)}")
    return torch.stack(frames)


def first_frame_size(folders: Iterable[str | Path],
                     frame_tmpl: str = "{:05d}.jpg") -> Optional[tuple[int, int]]:
    """(height, width) of the first frame of the first readable frame folder, from its JPEG
    header; None when none of ``folders`` has a readable first frame (a bad sample, reported
    when it is loaded)."""
    first = frame_tmpl.format(1)
    for folder in folders:
        try:
            with open(os.path.join(folder, first), "rb") as fh:
                return jpeg_size(fh.read(1 << 16))
        except (OSError, ValueError, DataError):
            continue
    return None


@dataclass(frozen=True)
class VideoInfo:
    """What a loader needs to know about a video file before decoding it."""

    num_frames: int
    height: int
    width: int
    codec: str  # FFmpeg codec name: h264, vp9, mjpeg, ...
    fps: float


@functools.lru_cache(maxsize=4096)
def _probe_cached(path: str, mtime_ns: int, size: int) -> VideoInfo:
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: cannot open video: {exc}") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        # Demuxing (no decoding) counts the frames actually present: headers of truncated or
        # webm files do not say, and sampling past the real end would fail mid-batch.
        count, corrupt = 0, False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.is_corrupt:
                    corrupt = True
                    continue
                count += 1
        except (av.error.FFmpegError, OSError) as exc:
            raise DataError(f"{path}: truncated or corrupt video ({exc})") from None
        declared = int(stream.frames or 0)
        if not declared and container.duration:
            declared = int(round(container.duration / 1e6 * fps))
        if corrupt or count == 0 or (declared and count < declared - 1):
            raise DataError(f"{path}: truncated or corrupt video ({count} complete frames, "
                            f"header says {declared or 'unknown'})")
        return VideoInfo(count, int(ctx.height), int(ctx.width), str(ctx.name), fps)


def pyav_installed() -> bool:
    """Whether ``import av`` can work (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("av") is not None
    except ImportError:  # a finder that refuses the name
        return False


def require_pyav(path: str | Path) -> None:
    """BackendUnavailable (one line, naming ``path``) when PyAV, which the torch loader decodes
    video files with, is not installed; checked before any worker would fail on each sample."""
    from fastvid.errors import BackendUnavailable

    if not pyav_installed():
        raise BackendUnavailable(
            f"{path}: the torch loader decodes video files with PyAV, which is not installed: "
            f"pip install av (fastvid's [video] extra), or use --loader dali (NVDEC) or dali-cpu "
            f"(VP8/VP9/MJPEG)")


def file_key(path: str | Path) -> tuple[str, int, int]:
    """``(path, mtime_ns, size)``: what a probe cache is keyed by; DataError when unreadable."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: video file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read video: {exc}") from None
    return path, st.st_mtime_ns, st.st_size


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, size and codec of a video (cached per path and modification time)."""
    return _probe_cached(*file_key(path))


def read_video_frames(path: str | Path, indices: Sequence[int],
                      info: Optional[VideoInfo] = None) -> torch.Tensor:
    """Frames ``indices`` (0-based) of a video file -> (T, 3, H, W) uint8 RGB.

    Frames are decoded in order; a seek (to the keyframe before the target, by timestamp) is
    made only when the next wanted frame is far ahead, so short dense clips decode straight
    through and sparse TSN samples of long videos skip the gaps.
    """
    import av
    import torch

    path = os.fspath(path)
    info = info or probe_video(path)
    wanted = sorted({int(i) for i in indices})
    if wanted and (wanted[0] < 0 or wanted[-1] >= info.num_frames):
        raise DataError(f"{path}: frame {wanted[-1]} requested but the video has {info.num_frames}")
    lookup = set(wanted)
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base) if stream.time_base else None
            start_pts = stream.start_time or 0

            def index_of(frame: "av.VideoFrame", fallback: int) -> int:
                if frame.pts is None or tb is None:
                    return fallback
                return int(round((frame.pts - start_pts) * tb * info.fps))

            frames_iter = container.decode(stream)
            pos = -1  # index of the last decoded frame
            for target in wanted:
                if target in got:
                    continue
                if tb is not None and (target < pos or target - pos > 32) and target > 0:
                    container.seek(start_pts + int(target / info.fps / tb), stream=stream,
                                   backward=True, any_frame=False)
                    frames_iter = container.decode(stream)
                    pos = -1 << 30  # unknown until the first frame after the seek
                for frame in frames_iter:
                    pos = index_of(frame, pos + 1 if pos >= 0 else 0)
                    if pos in lookup and pos not in got:
                        got[pos] = frame.to_ndarray(format="rgb24")
                    if pos >= target:
                        break
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: cannot decode video: {exc}") from None
    missing = [i for i in wanted if i not in got]
    if missing:
        raise DataError(f"{path}: could not decode frame(s) {missing[:4]} of {info.num_frames}")
    arrays = [got[int(i)] for i in indices]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def stream_video_frames(path: str | Path, chunk_frames: int = 32) -> Iterator["torch.Tensor"]:
    """The frames of a video in order with PyAV, as ``(F, H, W, 3)`` uint8 RGB CPU tensors of
    at most ``chunk_frames`` frames (the torch loader's stream for ``fastvid predict --window``).
    """
    import torch

    require_pyav(path)
    import av

    chunk: list[np.ndarray] = []
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                chunk.append(frame.to_ndarray(format="rgb24"))
                if len(chunk) == chunk_frames:
                    yield torch.from_numpy(np.stack(chunk))
                    chunk = []
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: cannot decode video: {exc}") from None
    if chunk:
        yield torch.from_numpy(np.stack(chunk))
