"""Container headers without FFmpeg (the DALI loaders' probe) against PyAV's demuxing probe.

The test videos are written with PyAV (skipped without it); the probe under test never imports it.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from fastvid.data.video_headers import probe_video_bytes, probe_video_headers
from fastvid.errors import DataError

from _media import require_pyav, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    require_pyav()
    base = tmp_path_factory.mktemp("headers")
    return {(codec, n): write_video(base / f"{codec}{n}", n, 48, 64, codec, seed=n)
            for codec in ("mjpeg", "vp9", "h264", "hevc") for n in (7, 18)}


def _pyav_probe(path):
    from fastvid.data.video_io import _probe_cached, probe_video

    _probe_cached.cache_clear()
    return probe_video(path)


@pytest.mark.parametrize("codec", ["mjpeg", "vp9", "h264", "hevc"])
def test_headers_match_pyav(videos, codec):
    for n in (7, 18):
        path = videos[(codec, n)]
        info = probe_video_headers(path)
        assert info == _pyav_probe(path)
        assert (info.num_frames, info.height, info.width, info.codec) == (n, 48, 64, codec)
        assert info.fps == pytest.approx(25.0)


@pytest.mark.parametrize("codec", ["mjpeg", "vp9", "h264"])
def test_truncated_files_fail_like_pyav(videos, tmp_path, codec):
    """Cut files: a DataError naming the file where PyAV's probe fails too, same frame counts."""
    data = videos[(codec, 18)].read_bytes()
    for frac in (0.5, 0.9):
        cut = tmp_path / f"cut{frac}{videos[(codec, 18)].suffix}"
        cut.write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(DataError, match=rf"{cut.name}: (truncated or corrupt|cannot)") as got:
            probe_video_headers(cut)
        with pytest.raises(DataError) as want:
            _pyav_probe(cut)
        if "complete frames" in str(got.value):  # the same count of complete frames
            assert str(want.value).split("(")[-1] == str(got.value).split("(")[-1]


def test_mp4_counts_only_complete_samples(tmp_path):
    """moov before mdat (faststart) with B-frames: a cut mdat leaves fewer complete samples."""
    av = pytest.importorskip("av", reason="PyAV writes the test video")
    path = tmp_path / "bf.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"bf": "3", "g": "12", "preset": "ultrafast"}
        rng = np.random.default_rng(0)
        for _ in range(40):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    data = path.read_bytes()
    info = probe_video_bytes(data, "bf.mp4")
    assert (info.num_frames, info.codec, info.fps) == (40, "h264", pytest.approx(30.0))
    assert probe_video_bytes(data + b"\0" * 10, "x").num_frames == 40
    counts = []
    for frac in (0.95, 0.8):
        cut = tmp_path / f"cut{frac}.mp4"
        cut.write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(DataError, match="complete frames, header says 40") as got:
            probe_video_headers(cut)
        with pytest.raises(DataError) as want:
            _pyav_probe(cut)
        assert str(got.value).split("(")[-1] == str(want.value).split("(")[-1]
        counts.append(int(str(got.value).split("(")[-1].split()[0]))
    assert 0 < counts[1] < counts[0] < 40


def _avi(frames: list[bytes], fourcc: bytes = b"MJPG", width: int = 32, height: int = 16) -> bytes:
    """A minimal AVI written by hand: hdrl (avih, strl: strh + strf) and movi with 00dc chunks."""
    def chunk(cid: bytes, payload: bytes) -> bytes:
        return cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")

    def lst(kind: bytes, payload: bytes) -> bytes:
        return chunk(b"LIST", kind + payload)

    avih = struct.pack("<10I", 40000, 0, 0, 0, len(frames), 0, 1, 0, width, height) + bytes(16)
    strh = b"vids" + fourcc + struct.pack("<IHHIIIIIIII", 0, 0, 0, 0, 1, 25, 0, len(frames), 0,
                                          0xFFFFFFFF, 0) + bytes(8)
    strf = struct.pack("<IiiHH", 40, width, -height, 1, 24) + fourcc + bytes(20)
    hdrl = lst(b"hdrl", chunk(b"avih", avih) + lst(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf)))
    movi = lst(b"movi", b"".join(chunk(b"00dc", f) for f in frames))
    body = b"AVI " + hdrl + movi
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_avi_written_by_hand():
    """No encoder needed: odd chunk sizes (padding), an empty chunk (a dropped frame), a cut."""
    frames = [bytes([i]) * (5 + i) for i in range(9)] + [b""]
    data = _avi(frames, b"H264", 32, 16)
    info = probe_video_bytes(data, "x.avi")
    assert (info.num_frames, info.height, info.width, info.codec, info.fps) == (9, 16, 32, "h264", 25.0)
    # the last 70 bytes hold the empty chunk (8), frames 8 and 7 (22 + 20 with header and pad)
    # and frame 6 (20): frames 0-5 remain
    with pytest.raises(DataError, match=r"x\.avi: truncated or corrupt video \(6 complete frames, "
                                        r"header says 10\)"):
        probe_video_bytes(data[:len(data) - 70], "x.avi")


def test_unreadable_inputs_are_data_errors(tmp_path):
    for name, content, match in [("empty.mp4", b"", "empty video file"),
                                 ("text.mp4", b"hello world, not a video", "not a video container"),
                                 ("noisy.avi", b"RIFF\x10\0\0\0AVI LIST\xff\xff", "no video stream")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}: .*{match}"):
            probe_video_headers(tmp_path / name)
    with pytest.raises(DataError, match="video file not found"):
        probe_video_headers(tmp_path / "missing.webm")


def test_webm_frame_rate_is_not_nanosecond_truncated(tmp_path):
    """Matroska stores whole nanoseconds per frame (12 fps: 83333333 ns); the rate reported is
    PyAV's 12.0, not 12.0000000048 (it lands in predictions JSON as ``fps``)."""
    from _media import write_video

    path = write_video(tmp_path / "v.webm", 6, 32, 32, codec="vp9", fps=12)
    info = probe_video_headers(path)
    assert info.fps == 12.0 and info == _pyav_probe(path)
