"""DALI graphs: external source -> decode (CPU or mixed/GPU) -> crop/resize -> normalize.

The graph fixes layout and normalization inside the pipeline (one output per sample, already in
the batch contract's ``FCHW`` or ``CFHW``), as DALI's video examples do. Per-sample geometry
comes from the source's ``plan`` output (see :meth:`fastvid.data.transforms.ViewPlan.as_array`):

* train: ``slice`` the crop box, ``resize`` it to ``image_size``;
* test: ``resize`` the frames (short side to ``scale_size``), ``slice`` the crop.

The GPU variant decodes JPEGs with nvJPEG (``device="mixed"``) and videos with NVDEC
(``fn.decoders.video(device="mixed", frames=...)``, which takes the sparse TSN indices as well as
dense clips); every later op then runs on the GPU. On a machine without CUDA such a graph fails
at build time, which :func:`build_clip_pipeline`'s caller reports as BackendUnavailable.
"""
from __future__ import annotations

from typing import Optional, Sequence

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from dali_pipelines.sources import ClipSource

__all__ = ["build_clip_pipeline"]


def build_clip_pipeline(source: ClipSource, *, frames_per_view: int, use_gpu: bool,
                        mean: Sequence[float], std: Sequence[float], bgr: bool,
                        channels_first: bool, batch_size: int, num_threads: int,
                        device_id: Optional[int], py_workers: int = 0, prefetch: int = 2):
    """A built-ready DALI pipeline yielding ``(video, label, bad)`` per sample (one view each)."""
    t = frames_per_view
    parallel = py_workers > 0
    decode_device = "mixed" if use_gpu else "cpu"
    extra = dict(py_num_workers=py_workers, py_start_method="spawn") if parallel else {}

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=prefetch, seed=source.planner.seed, **extra)
    def clip_graph():
        if source.video:
            enc, idx, label, plan, bad = fn.external_source(
                source=source, batch=False, num_outputs=5, parallel=parallel,
                dtype=[types.UINT8, types.INT32, types.INT64, types.FLOAT, types.UINT8])
            frames = fn.decoders.video(enc, device=decode_device, frames=idx)  # FHWC RGB
            if bgr:
                frames = fn.color_space_conversion(frames, image_type=types.RGB,
                                                   output_type=types.BGR)
        else:
            outs = fn.external_source(
                source=source, batch=False, num_outputs=t + 3, parallel=parallel,
                dtype=[types.UINT8] * t + [types.INT64, types.FLOAT, types.UINT8])
            jpegs, (label, plan, bad) = outs[:t], outs[t:]
            color = types.BGR if bgr else types.RGB
            decoded = [fn.decoders.image(j, device=decode_device, output_type=color) for j in jpegs]
            frames = fn.stack(*decoded, axis_name="F")  # FHWC
        rh, rw, x, y, w, h, oh, ow, flip = (plan[i] for i in range(9))
        start = fn.cast(fn.stack(y, x), dtype=types.INT32)
        shape = fn.cast(fn.stack(h, w), dtype=types.INT32)
        resize = dict(interp_type=types.INTERP_LINEAR, antialias=True)
        if source.planner.train:
            frames = fn.slice(frames, start=start, shape=shape, axis_names="HW")
            frames = fn.resize(frames, resize_y=oh, resize_x=ow, **resize)
        else:
            frames = fn.resize(frames, resize_y=rh, resize_x=rw, **resize)
            frames = fn.slice(frames, start=start, shape=shape, axis_names="HW")
        video = fn.crop_mirror_normalize(
            frames, mirror=fn.cast(flip, dtype=types.INT32), mean=list(mean), std=list(std),
            dtype=types.FLOAT, output_layout="CFHW" if channels_first else "FCHW")
        return video, label, bad

    return clip_graph()
