"""Frame count, size, codec and rate of a video file from its container headers, without FFmpeg.

The DALI loaders plan every sample (which frames, which crop) before DALI decodes it, and a DALI
path must not need PyAV: the GPU machines have DALI but no PyAV. This module reads the container
families the datasets come in, in pure Python (+ numpy), from the file's bytes:

* **ISO-BMFF** (MP4, MOV, M4V; Kinetics): the first ``trak`` with a ``vide`` handler. Frames are
  the ``stsz`` samples whose bytes lie inside the file (``stco``/``co64`` + ``stsc`` + ``stsz``
  give every sample's end), size and codec come from the ``stsd`` sample entry, the rate from the
  ``mdhd`` time scale and the ``stts`` durations.
* **Matroska / WebM** (Something-Something V2): the first video ``TrackEntry`` (``CodecID``,
  ``PixelWidth``/``PixelHeight``, ``DefaultDuration``) and every complete ``SimpleBlock`` /
  ``Block`` of that track in the ``Cluster``\\ s (laced blocks count their frames).
* **AVI** (RIFF, with OpenDML ``AVIX`` extensions): ``avih``/``strh``/``strf`` and the non-empty
  ``##dc``/``##db`` chunks of the video stream in every ``movi`` list.

Counting stops at the end of the file, so a truncated file reports fewer frames than its header
declares; the same rule as :func:`fastvid.data.video_io.probe_video` (PyAV demuxing) then makes it
a :class:`~fastvid.errors.DataError`: no complete frame, or more than one frame missing. Frame
counts equal the packets PyAV demuxes (one per coded frame), which is also what DALI's video
decoders index.
"""
from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from fastvid.data.video_io import VideoInfo, file_key, read_bytes
from fastvid.errors import DataError

__all__ = ["probe_video_headers", "probe_video_bytes", "read_video_bytes", "CODEC_NAMES"]

# Sample-entry / CodecID / FOURCC -> FFmpeg codec name (what probe_video reports).
CODEC_NAMES: dict[str, str] = {
    # ISO-BMFF sample entries
    "avc1": "h264", "avc2": "h264", "avc3": "h264", "avc4": "h264",
    "hvc1": "hevc", "hev1": "hevc", "vp08": "vp8", "vp09": "vp9", "av01": "av1",
    "mp4v": "mpeg4", "jpeg": "mjpeg", "mjpa": "mjpeg", "mjpb": "mjpeg",
    # Matroska CodecIDs
    "V_MPEG4/ISO/AVC": "h264", "V_MPEGH/ISO/HEVC": "hevc", "V_VP8": "vp8", "V_VP9": "vp9",
    "V_AV1": "av1", "V_MPEG4/ISO/ASP": "mpeg4", "V_MPEG4/ISO/SP": "mpeg4", "V_MJPEG": "mjpeg",
    # AVI FOURCCs (upper-cased before the lookup)
    "MJPG": "mjpeg", "AVRN": "mjpeg", "H264": "h264", "X264": "h264", "AVC1": "h264",
    "DAVC": "h264", "HEVC": "hevc", "H265": "hevc", "HVC1": "hevc", "XVID": "mpeg4",
    "DIVX": "mpeg4", "DX50": "mpeg4", "FMP4": "mpeg4", "MP4V": "mpeg4", "VP80": "vp8",
    "VP90": "vp9", "AV01": "av1",
}


class _Bad(Exception):
    """A header that cannot be parsed (turned into DataError with the path)."""


# -- shared ------------------------------------------------------------------------------------
def _info(path: str, count: int, declared: int, height: int, width: int, codec: str,
          fps: float) -> VideoInfo:
    """VideoInfo, or DataError by probe_video's rule for truncated/corrupt files."""
    if count == 0 or (declared and count < declared - 1):
        raise DataError(f"{path}: truncated or corrupt video ({count} complete frames, header "
                        f"says {declared or 'unknown'})")
    if height <= 0 or width <= 0:
        raise DataError(f"{path}: video header has no frame size ({width}x{height})")
    return VideoInfo(int(count), int(height), int(width), codec, float(fps) if fps > 0 else 25.0)


def probe_video_bytes(data: bytes | memoryview, path: str = "<bytes>") -> VideoInfo:
    """:class:`VideoInfo` of an in-memory video file; DataError naming ``path`` otherwise."""
    buf = memoryview(data)
    head = bytes(buf[:12])
    try:
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return _probe_matroska(buf, path)
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return _probe_avi(buf, path)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
            return _probe_mp4(buf, path)
    except (_Bad, struct.error, IndexError, ValueError) as exc:
        raise DataError(f"{path}: cannot read video header: {exc or type(exc).__name__}") from None
    if not head:
        raise DataError(f"{path}: empty video file")
    raise DataError(f"{path}: not a video container fastvid can read without FFmpeg "
                    f"(MP4/MOV, Matroska/WebM, AVI); use --loader torch")


def read_video_bytes(path: str | Path) -> bytes:
    """The whole file (one ``os.read`` loop, no Python file object); DataError naming ``path``."""
    path = os.fspath(path)
    try:
        return read_bytes(path)
    except FileNotFoundError:
        raise DataError(f"{path}: video file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read video: {exc}") from None


@functools.lru_cache(maxsize=8192)
def _probe_cached(path: str, mtime_ns: int, size: int) -> VideoInfo:
    return probe_video_bytes(read_video_bytes(path), path)


def probe_video_headers(path: str | Path, data: Optional[bytes] = None) -> VideoInfo:
    """Frame count, size, codec and rate of ``path`` (cached per path, mtime and size).

    ``data``: the file's bytes when the caller has read them already (parsed only on a cache
    miss, so a loader that reads the file anyway pays no second read).
    """
    key = file_key(path)
    path = key[0]
    if data is not None and len(data) == key[2]:
        info = _FROM_BYTES.get(key)
        if info is None:
            info = probe_video_bytes(data, path)
            if len(_FROM_BYTES) > 8192:
                _FROM_BYTES.clear()
            _FROM_BYTES[key] = info
        return info
    return _probe_cached(*key)


_FROM_BYTES: dict[tuple[str, int, int], VideoInfo] = {}


# -- ISO-BMFF (MP4 / MOV) ------------------------------------------------------------------------
def _u32(buf: memoryview, pos: int) -> int:
    return struct.unpack_from(">I", buf, pos)[0]


def _u64(buf: memoryview, pos: int) -> int:
    return struct.unpack_from(">Q", buf, pos)[0]


def _boxes(buf: memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``[start, end)``; the end may pass EOF."""
    pos = start
    while pos + 8 <= end:
        size, kind = _u32(buf, pos), bytes(buf[pos + 4:pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > len(buf):
                return
            size, header = _u64(buf, pos + 8), 16
        elif size == 0:  # to the end of the enclosing box (or file)
            size = end - pos
        if size < header:
            raise _Bad(f"box {kind!r} at byte {pos} has size {size}")
        yield kind, pos + header, pos + size
        pos += size


def _child(buf: memoryview, start: int, end: int, kind: bytes) -> Optional[tuple[int, int]]:
    for k, s, e in _boxes(buf, start, end):
        if k == kind:
            return s, e
    return None


def _table(buf: memoryview, box: tuple[int, int], dtype: str, cols: int = 1) -> np.ndarray:
    """A full-box table (version/flags, entry count, entries) as a ``(count, cols)`` array."""
    start, end = box
    count = _u32(buf, start + 4)
    dt = np.dtype(dtype)
    if start + 8 + count * cols * dt.itemsize > min(end, len(buf)):
        raise _Bad(f"table of {count} entries runs past its box")
    return np.frombuffer(buf, dtype=dt, count=count * cols, offset=start + 8).reshape(count, cols)


def _probe_mp4(buf: memoryview, path: str) -> VideoInfo:
    size = len(buf)
    moov = None
    for kind, start, end in _boxes(buf, 0, size):
        if kind == b"moov":
            if end > size:
                raise DataError(f"{path}: truncated or corrupt video (moov box cut off)")
            moov = (start, end)
            break
    if moov is None:
        raise DataError(f"{path}: truncated or corrupt video (no moov box: cut off, or a "
                        f"fragmented MP4, which fastvid reads only with --loader torch)")
    for kind, t_start, t_end in _boxes(buf, *moov):
        if kind != b"trak":
            continue
        mdia = _child(buf, t_start, t_end, b"mdia")
        if mdia is None:
            continue
        hdlr = _child(buf, *mdia, b"hdlr")
        if hdlr is None or bytes(buf[hdlr[0] + 8:hdlr[0] + 12]) != b"vide":
            continue
        return _mp4_video_track(buf, path, mdia)
    raise DataError(f"{path}: no video stream")


def _mp4_video_track(buf: memoryview, path: str, mdia: tuple[int, int]) -> VideoInfo:
    mdhd = _child(buf, *mdia, b"mdhd")
    minf = _child(buf, *mdia, b"minf")
    stbl = _child(buf, *minf, b"stbl") if minf else None
    if mdhd is None or stbl is None:
        raise _Bad("video track without mdhd/stbl")
    version = buf[mdhd[0]]
    timescale = _u32(buf, mdhd[0] + (20 if version == 1 else 12))
    boxes = {k: (s, e) for k, s, e in _boxes(buf, *stbl)}
    if b"stsd" not in boxes:
        raise _Bad("video track without stsd")
    entry = boxes[b"stsd"][0] + 8
    fourcc = bytes(buf[entry + 4:entry + 8]).decode("latin-1")
    width, height = struct.unpack_from(">HH", buf, entry + 32)
    codec = CODEC_NAMES.get(fourcc, fourcc.strip().lower())

    if b"stsz" in boxes:
        s0 = boxes[b"stsz"][0]
        fixed, declared = _u32(buf, s0 + 4), _u32(buf, s0 + 8)
        if fixed:
            sizes = np.full(declared, fixed, dtype=np.int64)
        else:
            if s0 + 12 + 4 * declared > len(buf):
                raise _Bad("stsz runs past the file")
            sizes = np.frombuffer(buf, ">u4", declared, s0 + 12).astype(np.int64)
    elif b"stz2" in boxes:
        s0 = boxes[b"stz2"][0]
        field, declared = buf[s0 + 7], _u32(buf, s0 + 8)
        if field == 8:
            sizes = np.frombuffer(buf, "u1", declared, s0 + 12).astype(np.int64)
        elif field == 16:
            sizes = np.frombuffer(buf, ">u2", declared, s0 + 12).astype(np.int64)
        else:  # 4-bit sizes: two per byte
            packed = np.frombuffer(buf, "u1", (declared + 1) // 2, s0 + 12)
            sizes = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[:declared].astype(np.int64)
    else:
        raise _Bad("video track without stsz/stz2")
    if declared == 0:
        raise DataError(f"{path}: truncated or corrupt video (0 frames in the header; a "
                        f"fragmented MP4 is read only with --loader torch)")

    if b"stco" in boxes:
        chunk_offsets = _table(buf, boxes[b"stco"], ">u4")[:, 0].astype(np.int64)
    elif b"co64" in boxes:
        chunk_offsets = _table(buf, boxes[b"co64"], ">u8")[:, 0].astype(np.int64)
    else:
        raise _Bad("video track without stco/co64")
    if b"stsc" not in boxes:
        raise _Bad("video track without stsc")
    stsc = _table(buf, boxes[b"stsc"], ">u4", 3).astype(np.int64)
    n_chunks = len(chunk_offsets)
    if len(stsc) == 0 or n_chunks == 0:
        raise _Bad("video track without chunks")
    # stsc runs: chunks first[i] .. first[i+1]-1 hold per_chunk[i] samples each (1-based).
    first = stsc[:, 0] - 1
    runs = np.diff(np.append(first, n_chunks)).clip(min=0)
    per_chunk = np.repeat(stsc[:, 1], runs)[:n_chunks]
    chunk_of = np.repeat(np.arange(len(per_chunk)), per_chunk)[:declared]
    if len(chunk_of) < declared:
        raise _Bad(f"stsc maps {len(chunk_of)} of {declared} samples to chunks")
    before = np.cumsum(sizes) - sizes  # bytes of all earlier samples
    chunk_first = np.minimum(np.cumsum(per_chunk) - per_chunk, declared - 1)
    sample_end = chunk_offsets[chunk_of] + before - before[chunk_first[chunk_of]] + sizes
    complete = int(np.count_nonzero(sample_end <= len(buf)))

    fps = 0.0
    if b"stts" in boxes and timescale:
        stts = _table(buf, boxes[b"stts"], ">u4", 2).astype(np.float64)
        total = float((stts[:, 0] * stts[:, 1]).sum())
        if total > 0:
            fps = timescale * float(stts[:, 0].sum()) / total
    return _info(path, complete, declared, height, width, codec, fps)


# -- Matroska / WebM -----------------------------------------------------------------------------
_EBML, _SEGMENT, _CLUSTER = 0x1A45DFA3, 0x18538067, 0x1F43B675
_INFO, _TRACKS, _TRACK_ENTRY = 0x1549A966, 0x1654AE6B, 0xAE
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489
_TRACK_NUMBER, _TRACK_TYPE, _CODEC_ID, _DEFAULT_DURATION = 0xD7, 0x83, 0x86, 0x23E383
_VIDEO, _PIXEL_WIDTH, _PIXEL_HEIGHT = 0xE0, 0xB0, 0xBA
_CLUSTER_TIMECODE, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0xE7, 0xA3, 0xA0, 0xA1
# Segment children: where a Cluster of unknown size ends.
_LEVEL1 = frozenset({_CLUSTER, _INFO, _TRACKS, 0x114D9B74, 0x1C53BB6B, 0x1941A469, 0x1043A770,
                     0x1254C367})


def _vint(buf: memoryview, pos: int, is_id: bool) -> tuple[int, int, bool]:
    """(value, length, unknown-size) of the EBML variable-size integer at ``pos``."""
    first = buf[pos]
    if first == 0:
        raise _Bad(f"invalid EBML number at byte {pos}")
    n = 9 - first.bit_length()
    if pos + n > len(buf):
        raise IndexError("EBML number cut off")
    if is_id:
        return int.from_bytes(buf[pos:pos + n], "big"), n, False
    value = first & (0xFF >> n)
    for b in buf[pos + 1:pos + n]:
        value = (value << 8) | b
    return value, n, value == (1 << (7 * n)) - 1


def _elements(buf: memoryview, start: int, end: int, stop_ids: frozenset = frozenset()
              ) -> Iterator[tuple[int, int, int, bool]]:
    """(id, payload start, payload end, unknown size) of the elements in ``[start, end)``.

    Ends quietly where the data ends (a truncated file); an element of unknown size ends the
    walk after it is yielded, as does an id in ``stop_ids`` (not yielded).
    """
    pos = start
    while pos < end:
        try:
            eid, n_id, _ = _vint(buf, pos, True)
            size, n_size, unknown = _vint(buf, pos + n_id, False)
        except IndexError:
            return
        if eid in stop_ids:
            return
        payload = pos + n_id + n_size
        yield eid, payload, (end if unknown else payload + size), unknown
        if unknown:
            return
        pos = payload + size


def _uint(buf: memoryview, start: int, end: int) -> int:
    return int.from_bytes(buf[start:end], "big")


def _probe_matroska(buf: memoryview, path: str) -> VideoInfo:
    size = len(buf)
    segment = None
    for eid, start, end, unknown in _elements(buf, 0, size):
        if eid == _SEGMENT:
            segment = (start, min(end, size))
            break
    if segment is None:
        raise DataError(f"{path}: truncated or corrupt video (no Matroska segment)")
    scale, duration = 1_000_000, 0.0
    video: dict[str, object] = {}
    counts: dict[int, int] = {}
    times: dict[int, list[int]] = {}
    pos = segment[0]
    while pos < segment[1]:
        try:
            eid, n_id, _ = _vint(buf, pos, True)
            esize, n_size, unknown = _vint(buf, pos + n_id, False)
        except IndexError:
            break
        start = pos + n_id + n_size
        end = segment[1] if unknown else start + esize
        if eid == _INFO:
            for cid, s, e, _ in _elements(buf, start, min(end, size)):
                if cid == _TIMECODE_SCALE:
                    scale = _uint(buf, s, e)
                elif cid == _DURATION and e <= size:
                    duration = struct.unpack_from(">f" if e - s == 4 else ">d", buf, s)[0]
        elif eid == _TRACKS and not video:
            video = _mkv_video_track(buf, start, min(end, size))
        elif eid == _CLUSTER:
            end = _mkv_cluster(buf, start, end, unknown, counts, times)
        elif unknown:
            break  # cannot skip an element of unknown size that is not a cluster
        pos = end
    if not video:
        raise DataError(f"{path}: no video stream")
    track = int(video["number"])
    count = counts.get(track, 0)
    # DefaultDuration is whole nanoseconds per frame (12 fps: 83333333 ns -> 12.0000000048);
    # 6 decimals undo that truncation and keep NTSC rates (29.97003).
    fps = round(1e9 / float(video["default_duration"]), 6) if video.get("default_duration") else 0.0
    stamps = times.get(track, [])
    if not fps and len(stamps) > 1:
        span = (max(stamps) - min(stamps)) * scale / 1e9
        fps = (len(stamps) - 1) / span if span > 0 else 0.0
    declared = int(round(duration * scale / 1e9 * fps)) if duration and fps else 0
    codec_id = str(video.get("codec", ""))
    codec = CODEC_NAMES.get(codec_id, codec_id.lower().removeprefix("v_"))
    return _info(path, count, declared, int(video.get("height", 0)), int(video.get("width", 0)),
                 codec, fps)


def _mkv_video_track(buf: memoryview, start: int, end: int) -> dict[str, object]:
    for eid, s, e, _ in _elements(buf, start, end):
        if eid != _TRACK_ENTRY:
            continue
        track: dict[str, object] = {}
        for cid, cs, ce, _ in _elements(buf, s, min(e, end)):
            if cid == _TRACK_NUMBER:
                track["number"] = _uint(buf, cs, ce)
            elif cid == _TRACK_TYPE:
                track["type"] = _uint(buf, cs, ce)
            elif cid == _CODEC_ID:
                track["codec"] = bytes(buf[cs:ce]).rstrip(b"\0").decode("ascii", "replace")
            elif cid == _DEFAULT_DURATION:
                track["default_duration"] = _uint(buf, cs, ce)
            elif cid == _VIDEO:
                for vid, vs, ve, _ in _elements(buf, cs, min(ce, end)):
                    if vid == _PIXEL_WIDTH:
                        track["width"] = _uint(buf, vs, ve)
                    elif vid == _PIXEL_HEIGHT:
                        track["height"] = _uint(buf, vs, ve)
        if track.get("type") == 1 and "number" in track:
            return track
    return {}


def _mkv_block(buf: memoryview, start: int, end: int, cluster_time: int,
               counts: dict[int, int], times: dict[int, list[int]]) -> None:
    """Count one (Simple)Block's frames for its track, if the block is complete."""
    if end > len(buf) or end - start < 4:
        return
    track, n, _ = _vint(buf, start, False)
    rel = struct.unpack_from(">h", buf, start + n)[0]
    flags = buf[start + n + 2]
    frames = 1
    if flags & 0x06 and start + n + 3 < end:  # laced: the next byte is the frame count - 1
        frames = buf[start + n + 3] + 1
    counts[track] = counts.get(track, 0) + frames
    times.setdefault(track, []).append(cluster_time + rel)


def _mkv_cluster(buf: memoryview, start: int, end: int, unknown: bool, counts: dict[int, int],
                 times: dict[int, list[int]]) -> int:
    """Count the blocks of one cluster; returns where the cluster ends."""
    cluster_time = 0
    pos = start
    limit = min(end, len(buf))
    while pos < limit:
        try:
            eid, n_id, _ = _vint(buf, pos, True)
            esize, n_size, _ = _vint(buf, pos + n_id, False)
        except IndexError:
            return len(buf)
        if unknown and eid in _LEVEL1:
            return pos
        s = pos + n_id + n_size
        e = s + esize
        if eid == _CLUSTER_TIMECODE:
            cluster_time = _uint(buf, s, min(e, len(buf)))
        elif eid == _SIMPLE_BLOCK:
            _mkv_block(buf, s, e, cluster_time, counts, times)
        elif eid == _BLOCK_GROUP:
            for bid, bs, be, _ in _elements(buf, s, min(e, len(buf))):
                if bid == _BLOCK:
                    _mkv_block(buf, bs, be, cluster_time, counts, times)
        pos = e
    return pos if unknown else end


# -- AVI (RIFF) ----------------------------------------------------------------------------------
def _le32(buf: memoryview, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _chunks(buf: memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, data start, data end) of the RIFF chunks in ``[start, end)``; ends may pass EOF."""
    pos = start
    while pos + 8 <= end:
        cid, size = bytes(buf[pos:pos + 4]), _le32(buf, pos + 4)
        yield cid, pos + 8, pos + 8 + size
        pos += 8 + size + (size & 1)


def _probe_avi(buf: memoryview, path: str) -> VideoInfo:
    size = len(buf)
    stream = -1
    handler = ""
    width = height = declared = 0
    fps = 0.0
    strl_index = -1
    count = 0
    for riff_id, r_start, r_end in _chunks(buf, 0, size):
        if riff_id != b"RIFF":
            break
        for cid, start, end in _chunks(buf, r_start + 4, min(r_end, size)):
            if cid != b"LIST" or start + 4 > size:
                continue
            kind = bytes(buf[start:start + 4])
            if kind == b"hdrl":
                for hid, hs, he in _chunks(buf, start + 4, min(end, size)):
                    if hid == b"avih" and not width:
                        width, height = _le32(buf, hs + 32), _le32(buf, hs + 36)
                    elif hid == b"LIST" and bytes(buf[hs:hs + 4]) == b"strl":
                        strl_index += 1
                        if stream < 0:
                            got = _avi_stream(buf, hs + 4, min(he, size))
                            if got is not None:
                                stream = strl_index
                                handler, fps, declared, w, h = got
                                width, height = w or width, h or height
                    elif hid == b"LIST" and bytes(buf[hs:hs + 4]) == b"odml":
                        for oid, os_, _ in _chunks(buf, hs + 4, min(he, size)):
                            if oid == b"dmlh":
                                declared = max(declared, _le32(buf, os_))
            elif kind == b"movi" and stream >= 0:
                count += _avi_movi(buf, start + 4, min(end, size), stream)
    if stream < 0:
        raise DataError(f"{path}: no video stream")
    codec = CODEC_NAMES.get(handler.upper(), handler.strip().lower())
    return _info(path, count, declared, height, width, codec, fps)


def _avi_stream(buf: memoryview, start: int, end: int
                ) -> Optional[tuple[str, float, int, int, int]]:
    """(fourcc, fps, length, width, height) of a video ``strl``, None for other streams."""
    fourcc, fps, length, width, height = "", 0.0, 0, 0, 0
    for cid, s, e in _chunks(buf, start, end):
        if cid == b"strh":
            if bytes(buf[s:s + 4]) != b"vids":
                return None
            fourcc = bytes(buf[s + 4:s + 8]).decode("latin-1")
            scale, rate, length = _le32(buf, s + 20), _le32(buf, s + 24), _le32(buf, s + 32)
            fps = rate / scale if scale else 0.0
        elif cid == b"strf" and e - s >= 20:
            width = struct.unpack_from("<i", buf, s + 4)[0]
            height = abs(struct.unpack_from("<i", buf, s + 8)[0])
            compression = bytes(buf[s + 16:s + 20])
            if compression.strip(b"\0"):  # BI_RGB (0) keeps the strh handler
                fourcc = compression.decode("latin-1")
    return (fourcc, fps, length, width, height) if fourcc or width else None


def _avi_movi(buf: memoryview, start: int, end: int, stream: int) -> int:
    """Complete, non-empty video chunks of ``stream`` in a ``movi`` list (``rec `` lists too)."""
    prefix = b"%02d" % stream
    count = 0
    for cid, s, e in _chunks(buf, start, end):
        if cid == b"LIST":
            count += _avi_movi(buf, s + 4, min(e, end), stream)
        elif cid[:2] == prefix and cid[2:] in (b"dc", b"db") and e > s and e <= len(buf):
            count += 1
    return count
