"""DALI graphs: batch source -> decode (CPU or mixed/GPU) -> ROI/resize -> normalize.

The graph fixes layout and normalization inside the pipeline, as DALI's video examples do. The
batch comes from a :class:`dali_pipelines.sources.BatchSource` (``batch=True``: one Python call
per batch, no per-sample callbacks), whose units carry their geometry (``start``/``end`` ROI in
source pixels, output ``size``, ``mirror``):

* frames, train: ``fn.decoders.image_slice`` decodes only the crop box (libjpeg-turbo skips
  the rows and blocks outside it; nvJPEG/the hardware decoder take the ROI too), then
  ``fn.resize`` to ``size``;
* frames, test: ``fn.decoders.image``, then ``fn.resize`` of the ROI straight to the crop size
  (= resize the frame, cut the crop; the whole frame is never resized);
* videos: ``fn.decoders.video(frames=...)`` (FFmpeg on CPU for VP8/VP9/MJPEG, NVDEC as
  ``device="mixed"`` for H.264/HEVC/VP9/AV1, the sparse TSN indices or dense clips alike), then
  ``fn.slice`` + ``fn.resize`` (train) or the ROI resize (test) on the frame sequence;
* ``fn.crop_mirror_normalize`` to float32 ``CHW`` per frame (frames) or ``FCHW``/``CFHW`` per
  clip (videos);
* grouped crops (3/10-crop evaluation, see :mod:`dali_pipelines.sources`): decode once,
  ``fn.resize`` the whole frame(s) to the test scale once, then per crop ``fn.slice`` +
  ``fn.crop_mirror_normalize``, stacked into a leading crops axis (``VCHW``, ``VFCHW``, ``VCFHW``).

With ``use_gpu`` the decoders are ``mixed`` and everything after them runs on the GPU; only the
Huffman stage of small JPEGs (nvJPEG's host decoder, below ``hybrid_huffman_threshold`` pixels)
and whatever ``hw_decoder_load`` leaves to software run on the CPU threads. On a machine without
CUDA such a graph fails at build time, which the loader reports as BackendUnavailable.

``stage`` cuts the graph short for the loader benchmark's per-stage timing ("source", "decode",
"resize", "all").
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from dali_pipelines.sources import BatchSource

if TYPE_CHECKING:
    from fastvid.data.loader_settings import LoaderSettings

__all__ = ["build_pipeline", "build_decode_check", "build_video_stream", "GRAPH_STAGES",
           "gpu_decoder_options"]

GRAPH_STAGES = ("source", "decode", "resize", "all")

_RESIZE = dict(interp_type=types.INTERP_LINEAR, antialias=True)


def gpu_decoder_options(hw_decoder_load: Optional[float],
                        frame_hw: Optional[tuple[int, int]]) -> dict[str, Any]:
    """nvJPEG settings for ``fn.decoders.image*(device="mixed")``.

    Always ``jpeg_fancy_upsampling=True`` (libjpeg's chroma upsampling, as the CPU decoders).

    ``hw_decoder_load``: share of the batch sent to the hardware JPEG decoder (A100/H100/H200
    have one; elsewhere it is ignored). The paddings preallocate nvJPEG's per-thread device and
    pinned host buffers for the largest frame expected, so a bigger frame does not reallocate
    mid-epoch; the hints size the hardware decoder's batch buffers.
    """
    # Chroma upsampled as libjpeg-turbo (DALI's CPU decoder, PIL, torchvision) does, not
    # nvJPEG's default nearest-neighbour: the GPU loader then gives the pixels the torch loader
    # and DALI-on-CPU give (a model trained on one is evaluated on another; the parity tests).
    opts: dict[str, Any] = {"jpeg_fancy_upsampling": True}
    if hw_decoder_load is not None:
        opts["hw_decoder_load"] = float(hw_decoder_load)
    if frame_hw is not None:
        h, w = frame_hw
        # 3 bytes/pixel decoded, x4 for frames larger than the first one seen; never below
        # DALI's own defaults (16 MiB device, 8 MiB host).
        need = 4 * 3 * h * w
        opts.update(device_memory_padding=max(16 << 20, need), host_memory_padding=max(8 << 20, need),
                    preallocate_height_hint=int(h), preallocate_width_hint=int(w))
    return opts


def build_pipeline(source: BatchSource, settings: "LoaderSettings", *, use_gpu: bool,
                   num_threads: int, device_id: Optional[int], py_workers: int = 0,
                   decoder_options: Optional[dict[str, Any]] = None, stage: str = "all") -> Any:
    """A pipeline (not yet built) yielding ``(video, label, bad)`` per unit; see the module doc.

    From ``settings`` (:class:`fastvid.loaders.LoaderSettings`) it takes the normalization
    (``mean``, ``std``, ``bgr``), the layout (``channels_first``) and ``tuning.prefetch``.
    """
    if stage not in GRAPH_STAGES:
        raise ValueError(f"stage must be one of {GRAPH_STAGES}, got {stage!r}")
    parallel = py_workers > 0
    decode_device = "mixed" if use_gpu else "cpu"
    dec_opts = dict(decoder_options or {}) if use_gpu else {}
    extra: dict[str, Any] = {}
    es_extra: dict[str, Any] = {}
    if parallel:
        extra = dict(py_num_workers=py_workers, py_start_method="spawn")
        # One batch per worker call: keep every worker busy.
        es_extra = dict(prefetch_queue_depth=max(2, py_workers))
    mean, std, bgr = settings.mean, settings.std, settings.bgr
    channels_first, prefetch = settings.channels_first, settings.tuning.prefetch
    color = types.BGR if bgr else types.RGB
    train = source.planner.train
    crops = source.crops_per_unit

    @pipeline_def(batch_size=source.units_per_batch, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=prefetch, seed=source.planner.seed, **extra)
    def graph():
        dtypes = [types.UINT8] + ([types.INT32] if source.video else []) + \
                 [types.FLOAT, types.FLOAT, types.FLOAT, types.INT32, types.INT64, types.UINT8]
        outs = fn.external_source(source=source, num_outputs=len(dtypes), batch=True,
                                  batch_info=True, parallel=parallel, dtype=dtypes, **es_extra)
        if source.video:
            data, frame_idx, start, end, size, mirror, label, bad = outs
        else:
            data, start, end, size, mirror, label, bad = outs
        if stage == "source":
            return data, label, bad
        if source.video:
            frames = fn.decoders.video(data, device=decode_device, frames=frame_idx)  # FHWC RGB
            if bgr:
                frames = fn.color_space_conversion(frames, image_type=types.RGB, output_type=types.BGR)
        elif train:  # ROI decoding: only the crop box is decoded
            frames = fn.decoders.image_slice(data, device=decode_device, output_type=color,
                                             start=fn.cast(start, dtype=types.INT32),
                                             end=fn.cast(end, dtype=types.INT32),
                                             axis_names="HW", **dec_opts)
        else:
            frames = fn.decoders.image(data, device=decode_device, output_type=color, **dec_opts)
        if stage == "decode":
            return frames, label, bad
        layout = ("CFHW" if channels_first else "FCHW") if source.video else "CHW"
        if crops > 1:  # start, end, size, mirror hold resize, anchors, crop, mirrors
            frames = fn.resize(frames, size=start, **_RESIZE)
            if stage == "resize":
                return frames, label, bad
            shape = fn.cast(size, dtype=types.INT32)
            views = [fn.crop_mirror_normalize(
                fn.slice(frames, start=fn.cast(end[c], dtype=types.INT32), shape=shape,
                         axis_names="HW"),
                mirror=mirror[c], mean=list(mean), std=list(std), dtype=types.FLOAT,
                output_layout=layout) for c in range(crops)]
            return fn.stack(*views, axis=0, axis_name="V"), label, bad
        if train:
            if source.video:  # frames were decoded whole: cut the crop box first
                frames = fn.slice(frames, start=fn.cast(start, dtype=types.INT32),
                                  end=fn.cast(end, dtype=types.INT32), axis_names="HW")
            frames = fn.resize(frames, size=size, **_RESIZE)
        else:
            frames = fn.resize(frames, size=size, roi_start=start, roi_end=end,
                               roi_relative=False, **_RESIZE)
        if stage == "resize":
            return frames, label, bad
        video = fn.crop_mirror_normalize(frames, mirror=mirror, mean=list(mean), std=list(std),
                                         dtype=types.FLOAT, output_layout=layout)
        return video, label, bad

    return graph()


def build_decode_check(*, use_gpu: bool, device_id: Optional[int], num_threads: int) -> Any:
    """A one-video pipeline fed with ``feed_input("data"/"frames")``: decodes or raises.

    Used after a batch failed to decode, to find the file that broke it (a bitstream error that
    the container headers did not show). After a failure a DALI pipeline is unusable, so the
    caller builds a new one.
    """
    @pipeline_def(batch_size=1, num_threads=num_threads, device_id=device_id,
                  exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
    def check():
        data = fn.external_source(name="data", dtype=types.UINT8)
        frames = fn.external_source(name="frames", dtype=types.INT32)
        return fn.decoders.video(data, device="mixed" if use_gpu else "cpu", frames=frames)

    return check()


def build_video_stream(*, use_gpu: bool, device_id: Optional[int], num_threads: int,
                       sequence_length: int) -> Any:
    """A pipeline fed one video's bytes with ``feed_input("video", [bytes])``; each run returns
    its next ``sequence_length`` frames as one ``(F, H, W, 3)`` uint8 RGB sample, the last run
    fewer.

    ``fn.experimental.inputs.video`` keeps its decoder open between runs, so a video is decoded
    once, front to back: ``fn.decoders.video(frames=...)`` per chunk would reopen the stream and
    decode from the keyframe before each chunk again. Only the chunk being returned is held
    decoded (sliding-window prediction over long recordings).
    """
    @pipeline_def(batch_size=1, num_threads=num_threads, device_id=device_id,
                  exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
    def stream():
        return fn.experimental.inputs.video(name="video", sequence_length=int(sequence_length),
                                            device="mixed" if use_gpu else "cpu",
                                            last_sequence_policy="partial")

    return stream()
