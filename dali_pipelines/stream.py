"""One video's frames in order, decoded by DALI a chunk at a time (``fastvid predict --window``).

No PyAV on this path: the frame count and codec come from the container headers
(:mod:`fastvid.data.video_headers`), the bytes from one read, and the frames from
:func:`dali_pipelines.pipelines.build_video_stream`, which decodes the video once, front to back,
and hands over ``chunk_frames`` frames per run, so a long recording never sits decoded in memory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from dali_pipelines.loader import DaliVideoLoader, _dali_reason, default_num_threads
from dali_pipelines.sources import DALI_CPU_CODECS, cpu_codec_message
from fastvid.data.video_headers import probe_video_headers, read_video_bytes
from fastvid.data.video_io import VideoInfo
from fastvid.errors import BackendUnavailable, DataError

__all__ = ["video_chunks"]


def video_chunks(path: str | Path, *, use_gpu: bool, device: torch.device | str,
                 chunk_frames: int = 32, num_threads: Optional[int] = None,
                 info: Optional[VideoInfo] = None) -> Iterator[torch.Tensor]:
    """The frames of ``path`` in order as ``(F, H, W, 3)`` uint8 RGB tensors, ``F <= chunk_frames``.

    ``use_gpu`` False (``--loader dali-cpu``): DALI's CPU decoder (VP8/VP9/MJPEG), CPU tensors.
    ``use_gpu`` True (``--loader dali``): NVDEC; the tensors stay on ``device`` (a CUDA device),
    since the caller resizes every frame to the test scale there and keeps only the small
    copies: full-size frames never cross PCIe, and the windows are already on the model's device.

    ``info``: the headers of ``path`` when the caller has probed them; the frames yielded are
    at most ``info.num_frames`` (the count :mod:`fastvid.data.video_headers` reports).

    Raises:
        BackendUnavailable: a codec DALI's CPU decoder does not handle (dali-cpu), or no CUDA
            device for ``use_gpu``.
        DataError: naming the file, when it cannot be read, its headers cannot be parsed, or
            DALI fails to decode it.
    """
    path = os.fspath(path)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    data = read_video_bytes(path)
    if info is None:
        info = probe_video_headers(path, data)
    if not use_gpu and info.codec not in DALI_CPU_CODECS:
        raise BackendUnavailable(cpu_codec_message(path, info.codec))
    device = torch.device(device)
    device_id = None
    if use_gpu:
        if device.type != "cuda":
            raise BackendUnavailable(f"--loader dali needs a CUDA target device, got {device}")
        device_id = device.index if device.index is not None else torch.cuda.current_device()

    from dali_pipelines.pipelines import build_video_stream

    pipe = build_video_stream(use_gpu=use_gpu, device_id=device_id,
                              num_threads=int(num_threads or default_num_threads()),
                              sequence_length=chunk_frames)
    try:
        try:
            pipe.build()
        except RuntimeError as exc:
            if use_gpu and ("CUDA" in str(exc) or "GPU" in str(exc)):
                raise BackendUnavailable(f"--loader dali: DALI could not build its GPU video "
                                         f"decoder: {str(exc).splitlines()[0]}") from None
            raise
        pipe.feed_input("video", [np.frombuffer(data, dtype=np.uint8)])
        done = 0
        while done < info.num_frames:
            try:
                (frames,) = pipe.run()
            except RuntimeError as exc:
                last = min(done + chunk_frames, info.num_frames) - 1
                raise DataError(f"{path}: DALI cannot decode frames {done}-{last}: "
                                f"{_dali_reason(str(exc))}") from None
            chunk = DaliVideoLoader._to_torch(frames, pipe.exec_dynamic)[0]
            chunk = chunk[:info.num_frames - done]
            if len(chunk):
                yield chunk
            done += len(chunk)
            if len(chunk) < chunk_frames:  # the last, partial sequence: the stream has ended
                break
    finally:
        DaliVideoLoader._shutdown(pipe)
