"""Synthetic action datasets whose classes need motion, and its order, to tell apart.

Each clip shows one textured object on a noisy, textured background. The built-in actions come
in pairs that are the *same frames in opposite order*:

====  ==========================  =====================================
pair  forward (even index)        reversed (odd index)
====  ==========================  =====================================
0     ``grow``                    ``shrink``
1     ``rotate_clockwise``        ``rotate_counterclockwise``
2     ``move_right``              ``move_left``
3     ``move_down``               ``move_up``
====  ==========================  =====================================

An odd class renders its even partner with the same random draws and reverses the frames, so an
order-free model (TSN's average consensus) sees identical frame *sets* for both members of a pair
and cannot separate them; a model of temporal relations (TRN) can. Start positions, speeds,
sizes, colours, shapes, backgrounds and noise are drawn per clip, so no single pixel or frame
gives the class away.

More than 8 classes combine the motion with the object's shape (disc, square, triangle, ring:
up to 32 classes) and then with its palette (colour or grey: up to 64). With 8 classes or fewer,
shape and palette are random nuisances.

Output layouts are those of ``docs/design.md`` ("Files on disk"): the Jester layout for
``kind="frames"`` (JPEG folders, ``labels/*.csv``, then :func:`fastvid.data.prepare.prepare_jester`)
and class-per-folder video files with mmaction2 lists for ``kind="video"``. Everything is
deterministic from the seed: every clip draws from its own generator spawned from
``(seed, split, index)``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fastvid.errors import FastvidError

__all__ = ["parse_size", "MOTIONS", "SHAPES", "PALETTES", "CODECS", "MAX_CLASSES", "class_names", "class_spec",
           "render_clip", "write_video", "SynthSpec", "synth_dataset"]

_logger = logging.getLogger(__name__)

# Pairs (forward, reversed). Size and orientation survive a backbone's global average pooling
# better than position does, so those pairs come first: the default 4-class set is learnable
# from scratch in a few epochs.
# Size and orientation changes first: global average pooling keeps them, so a 4-class set
# (demo, tests) is learnt from scratch faster than one of translations (measured: val top-1
# 0.54 vs 0.38 after 96 steps).
MOTIONS = ("grow", "shrink", "rotate_clockwise", "rotate_counterclockwise", "move_right",
           "move_left", "move_down", "move_up")
SHAPES = ("disc", "square", "triangle", "ring")
PALETTES = ("colour", "grey")
MAX_CLASSES = len(MOTIONS) * len(SHAPES) * len(PALETTES)

# codec -> (PyAV encoder, default container suffix, pixel format, encoder options).
# Keyframes every 12 frames keep seeks cheap for the video readers (DALI wants frequent ones).
CODECS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    # Constant quality (ffmpeg's -q:v 3; 118 = FF_QP2LAMBDA): each frame is coded the same way
    # whatever precedes it, so the same frames give the same pixels in any file.
    "mjpeg": ("mjpeg", ".avi", "yuvj420p", {"flags": "+qscale", "global_quality": str(3 * 118)}),
    "vp9": ("libvpx-vp9", ".webm", "yuv420p",
            {"deadline": "realtime", "cpu-used": "8", "crf": "12", "b": "0", "g": "12"}),
    "h264": ("libx264", ".mp4", "yuv420p", {"preset": "ultrafast", "crf": "18", "g": "12"}),
}


def class_spec(class_index: int, num_classes: Optional[int] = None) -> dict[str, Optional[str]]:
    """What defines class ``class_index``: ``motion`` always; ``shape``/``palette`` or None (random).

    Args:
        class_index: 0-based class index.
        num_classes: classes in the dataset; shape becomes part of the class above 8 classes
            and palette above 32. None means the smallest dataset that has ``class_index``.
    """
    if not 0 <= class_index < MAX_CLASSES:
        raise FastvidError(f"class index {class_index} out of range: the synthetic generator has "
                           f"{MAX_CLASSES} classes (0..{MAX_CLASSES - 1})")
    n = class_index + 1 if num_classes is None else num_classes
    per_shape = len(MOTIONS) * len(SHAPES)
    return {
        "motion": MOTIONS[class_index % len(MOTIONS)],
        "shape": SHAPES[(class_index // len(MOTIONS)) % len(SHAPES)] if n > len(MOTIONS) else None,
        "palette": PALETTES[class_index // per_shape] if n > per_shape else None,
    }


def class_names(n: int) -> list[str]:
    """Names of the first ``n`` classes: ``grow``, ``shrink``, ..., then ``grow_square``, ...

    Shape and palette suffixes appear only where they are part of the class (disc and colour
    are the unnamed defaults).
    """
    if not 1 <= n <= MAX_CLASSES:
        raise FastvidError(f"classes must be in 1..{MAX_CLASSES}, got {n}")
    names = []
    for i in range(n):
        spec = class_spec(i, n)
        name = spec["motion"]
        if spec["shape"] not in (None, "disc"):
            name += f"_{spec['shape']}"
        if spec["palette"] not in (None, "colour"):
            name += f"_{spec['palette']}"
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# rendering

def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) as float RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return 255.0 * (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32: smooth colour blotches + a random grating + static distractor blobs."""
    from PIL import Image

    coarse = rng.uniform(30, 220, size=(rng.integers(3, 6), rng.integers(3, 6), 3))
    grey = coarse.mean(axis=-1, keepdims=True)
    coarse = grey + rng.uniform(0.3, 0.8) * (coarse - grey)  # muted, so the object stands out
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC),
                     dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.05, 0.25)
    theta = rng.uniform(0, math.pi)
    grating = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 6.3))
    img += rng.uniform(6, 18) * grating[..., None]
    # Static look-alikes: a detector of "a coloured blob somewhere" alone learns nothing.
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.04, 0.08) * min(height, width)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        mask = np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0, 1)[..., None]
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.4, 1.0))
        img = img * (1 - mask) + colour * mask
    return img


def _shape_inside(shape: str, u: np.ndarray, v: np.ndarray, radius_px: float) -> np.ndarray:
    """Soft coverage in [0, 1] of ``shape`` (unit size, local coordinates u, v), 1 px edge."""
    if shape == "disc":
        dist = np.hypot(u, v) - 1.0
    elif shape == "square":
        dist = np.maximum(np.abs(u), np.abs(v)) - 0.8
    elif shape == "triangle":
        # Equilateral, apex along +u: the largest of the three edge-normal projections.
        angles = (0.0, 2 * math.pi / 3, 4 * math.pi / 3)
        dist = np.max([u * math.cos(a) + v * math.sin(a) for a in angles], axis=0) - 0.5
        dist = dist * 1.6
    elif shape == "ring":
        dist = np.abs(np.hypot(u, v) - 0.7) - 0.3
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - dist * radius_px, 0.0, 1.0)


def _object_colours(rng: np.random.Generator, palette: str) -> tuple[np.ndarray, np.ndarray]:
    if palette == "grey":
        light = rng.uniform(200, 255)
        return np.full(3, light), np.full(3, rng.uniform(0, 60))
    hue = rng.uniform()
    first = _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))
    second = _hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1.0, rng.uniform(0.6, 1.0),
                         rng.uniform(0.3, 0.6))
    return first, second


def _forward_track(motion: str, t: np.ndarray, rng: np.random.Generator, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y, radius (px) and angle (rad) per time step for a forward motion."""
    side = min(height, width)
    n = len(t)
    angle0 = rng.uniform(0, 2 * math.pi)
    if motion in ("move_right", "move_down"):
        radius = np.full(n, rng.uniform(0.12, 0.18) * side)
        along, across = (width, height) if motion == "move_right" else (height, width)
        travel = rng.uniform(0.3, 0.55) * along
        margin = 0.6 * radius[0]
        start = rng.uniform(margin, max(margin, along - travel - margin))
        pos_along = start + travel * t
        across0 = rng.uniform(radius[0], across - radius[0])
        drift = rng.uniform(-0.08, 0.08) * across
        pos_across = np.clip(across0 + drift * t, radius[0] * 0.5, across - radius[0] * 0.5)
        cx, cy = (pos_along, pos_across) if motion == "move_right" else (pos_across, pos_along)
        return cx, cy, radius, np.full(n, angle0)
    if motion == "rotate_clockwise":
        radius = np.full(n, rng.uniform(0.17, 0.25) * side)
        # Image y points down, so a growing angle turns clockwise on screen. Under ~200 degrees
        # in all, so frames a few segments apart are never half a turn apart (ambiguous).
        angle = angle0 + rng.uniform(0.55, 1.1) * math.pi * t
    elif motion == "grow":
        end = rng.uniform(0.24, 0.34) * side
        start = end / rng.uniform(2.2, 3.2)
        radius = start + (end - start) * t
        angle = np.full(n, angle0)
    else:
        raise ValueError(f"{motion!r} is not a forward motion")
    r_max = float(radius.max())
    cx0, cy0 = rng.uniform(r_max, width - r_max), rng.uniform(r_max, height - r_max)
    dx, dy = rng.uniform(-0.06, 0.06, size=2) * side  # a little drift: position is no clue
    return cx0 + dx * t, cy0 + dy * t, radius, angle


def render_clip(class_index: int, num_frames: int, size: tuple[int, int],
                rng: np.random.Generator, num_classes: Optional[int] = None) -> np.ndarray:
    """One clip of class ``class_index`` as ``(T, H, W, 3)`` uint8 RGB.

    The motion spans the whole clip whatever its length (as a gesture spans a Jester clip).
    Odd classes are their even partner rendered with the same draws, frames reversed.

    Args:
        class_index: 0-based class (see :func:`class_names`).
        num_frames: T, at least 2.
        size: ``(width, height)`` in pixels, each at least 16.
        rng: the clip's random generator; the same generator state gives the same clip.
        num_classes: classes of the dataset the clip belongs to (decides whether shape and
            palette are part of the class, see :func:`class_spec`).
    """
    width, height = int(size[0]), int(size[1])
    if num_frames < 2:
        raise FastvidError(f"a clip needs at least 2 frames to show motion, got {num_frames}")
    if width < 16 or height < 16:
        raise FastvidError(f"clip size must be at least 16x16, got {width}x{height}")
    spec = class_spec(class_index, num_classes)
    motion_index = MOTIONS.index(spec["motion"])
    forward = MOTIONS[motion_index - motion_index % 2]
    shape = spec["shape"] or SHAPES[int(rng.integers(len(SHAPES)))]
    palette = spec["palette"] or PALETTES[int(rng.integers(len(PALETTES)))]

    background = _background(rng, height, width)
    first, second = _object_colours(rng, palette)
    stripe_freq = rng.uniform(2.0, 4.0)
    # A random easing: constant speed would let one frame pair fix the whole trajectory.
    t = np.linspace(0.0, 1.0, num_frames) ** rng.uniform(0.7, 1.4)
    cx, cy, radius, angle = _forward_track(forward, t, rng, height, width)
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for k in range(num_frames):
        cos_a, sin_a = math.cos(angle[k]), math.sin(angle[k])
        dx, dy = (xx - cx[k]) / radius[k], (yy - cy[k]) / radius[k]
        u, v = dx * cos_a + dy * sin_a, -dx * sin_a + dy * cos_a
        cover = _shape_inside(shape, u, v, float(radius[k]))[..., None]
        # Two-tone along u plus stripes across it: the texture shows the object's orientation.
        mix = (0.5 + 0.5 * np.tanh(3.0 * u))[..., None]
        stripes = (0.8 + 0.2 * np.sin(stripe_freq * math.pi * v))[..., None]
        obj = (first * mix + second * (1.0 - mix)) * stripes
        img = background * (1.0 - cover) + obj * cover
        img = img * gain + offset + rng.uniform(-4, 4)  # per-frame flicker
        img += rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
        frames[k] = np.clip(img, 0, 255).astype(np.uint8)
    if motion_index % 2:
        frames = np.ascontiguousarray(frames[::-1])
    return frames


# ---------------------------------------------------------------------------------------------
# writing

def write_video(path: str | Path, frames: np.ndarray, codec: str, fps: float = 12.0) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB ``frames`` with PyAV.

    Args:
        path: output file; without a suffix the codec's container is used (mjpeg ``.avi``,
            vp9 ``.webm``, h264 ``.mp4``).
        frames: the clip.
        codec: ``mjpeg``, ``vp9`` or ``h264``.
        fps: frame rate stored in the container.

    Returns:
        The path written.
    """
    if codec not in CODECS:
        raise FastvidError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise FastvidError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got "
                           f"{frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise FastvidError(f"{codec} with 4:2:0 chroma needs an even frame size, got {width}x{height}")
    import av

    encoder, suffix, pix_fmt, options = CODECS[codec]
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = dict(options)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def parse_size(size: Any) -> tuple[int, int]:
    """``"WxH"`` or ``(W, H)`` -> ``(W, H)``, each at least 16; FastvidError otherwise."""
    if isinstance(size, str):
        try:
            w, h = (int(x) for x in size.lower().split("x"))
        except ValueError:
            raise FastvidError(f"size: expected WxH, e.g. 96x96; got {size!r}") from None
        size = (w, h)
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise FastvidError(f"size must be at least 16x16, got {width}x{height}")
    return width, height


def _clip_length(frames: int, rng: np.random.Generator) -> int:
    """``frames`` +- 25 % (at least 2): real Jester clips vary in length too."""
    low, high = max(2, round(frames * 0.75)), max(2, round(frames * 1.25))
    return int(rng.integers(low, high + 1))


@dataclass(frozen=True)
class SynthSpec:
    """What :func:`synth_dataset` writes (everything written is a function of these fields).

    Attributes:
        kind: ``frames`` (Jester layout + prepared ``*_videofolder.txt`` lists) or ``video``
            (``videos/<class>/<id>.<ext>`` + ``train_list.txt``/``val_list.txt``).
        codec: for ``kind="video"``: ``mjpeg``, ``vp9`` or ``h264``.
        classes: number of classes (1..64); labels are balanced within each split.
        train: training clips.
        val: validation clips.
        frames: mean clip length; each clip has ``frames`` +- 25 %.
        size: ``(width, height)`` or ``"WxH"``.
        seed: everything written is a function of the fields and this seed.
        progress: show a tqdm bar.
        class_ids: generator classes to use as labels ``0..len-1`` instead of the first
            ``classes`` (which is then ignored), e.g. ``(0, 32)``: the same motion with a colour
            vs a grey object, a set separable from any single frame. They are rendered and named
            as in a ``max(class_ids) + 1``-class set.
    """

    kind: str = "frames"
    codec: str = "mjpeg"
    classes: int = 4
    train: int = 64
    val: int = 32
    frames: int = 16
    size: tuple[int, int] | str = (96, 96)
    seed: int = 0
    progress: bool = False
    class_ids: Optional[Sequence[int]] = None

    def generator_ids(self) -> tuple[list[int], int]:
        """(the generator class of each label, the class count names and renders follow)."""
        if self.class_ids is None:
            return list(range(self.classes)), self.classes
        ids = [int(c) for c in self.class_ids]
        if not ids or len(set(ids)) != len(ids) or not all(0 <= c < MAX_CLASSES for c in ids):
            raise FastvidError(f"class_ids must be distinct indices in 0..{MAX_CLASSES - 1}, "
                               f"got {list(self.class_ids)}")
        return ids, max(ids) + 1

    def check(self) -> tuple[int, int]:
        """Raise :class:`FastvidError` on an impossible spec; returns ``(width, height)``."""
        if self.kind not in ("frames", "video"):
            raise FastvidError(f"kind must be 'frames' or 'video', got {self.kind!r}")
        if self.kind == "video" and self.codec not in CODECS:
            raise FastvidError(f"unknown codec {self.codec!r}; choose from {', '.join(CODECS)}")
        self.generator_ids()
        width, height = parse_size(self.size)
        if self.kind == "video" and (width % 2 or height % 2):
            raise FastvidError(f"video files need an even frame size, got {width}x{height}")
        if self.train < 1 or self.val < 1:
            raise FastvidError(f"train and val must be at least 1, got train={self.train} "
                               f"val={self.val}")
        if self.frames < 2:
            raise FastvidError(f"frames must be at least 2, got {self.frames}")
        return width, height


def synth_dataset(out: str | Path, spec: Optional[SynthSpec] = None, **fields: Any) -> dict[str, Any]:
    """Write a synthetic dataset under ``out`` and return a summary.

    Args:
        out: dataset root (created; existing files with the same names are overwritten).
        spec: what to write (:class:`SynthSpec`; default: its defaults).
        fields: :class:`SynthSpec` fields replacing the spec's, e.g.
            ``synth_dataset(root, kind="video", train=8, val=4)``.

    Returns:
        ``{"root", "kind", "codec", "classes", "train", "val", "num_frames", "seconds",
        "videos": [{"id", "split", "label", "num_frames", "path"}], "prepared"}`` where ``path``
        is relative to ``root`` and ``prepared`` is the prepare-jester summary (frames only).
    """
    spec = dataclasses.replace(spec or SynthSpec(), **fields)
    width, height = spec.check()
    generator_ids, spec_classes = spec.generator_ids()
    kind, codec, train, val, frames, seed = (spec.kind, spec.codec, spec.train, spec.val,
                                             spec.frames, spec.seed)
    classes = len(generator_ids)
    all_names = class_names(spec_classes)
    names = [all_names[c] for c in generator_ids]
    from tqdm import tqdm

    started = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    layout_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    # Ids run over both splits, as Jester's do; labels are balanced then shuffled per split.
    plan = []
    for split_no, (split, count) in enumerate((("train", train), ("val", val))):
        labels = layout_rng.permutation(np.arange(count) % classes)
        plan += [(split, split_no, i, int(label)) for i, label in enumerate(labels)]
    videos: list[dict[str, Any]] = []
    for vid_no, (split, split_no, index, label) in enumerate(
            tqdm(plan, desc="synth", unit="clip", disable=not spec.progress)):
        clip_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, split_no, index]))
        num_frames = _clip_length(frames, clip_rng)
        clip = render_clip(generator_ids[label], num_frames, (width, height), clip_rng,
                           num_classes=spec_classes)
        vid = f"{vid_no + 1:05d}"
        if kind == "frames":
            rel = Path("20bn-jester-v1") / vid
            _write_frames(root / rel, clip)
        else:
            rel = write_video(root / "videos" / names[label] / f"{vid}{CODECS[codec][1]}", clip,
                              codec).relative_to(root)
        videos.append({"id": vid, "split": split, "label": label, "num_frames": num_frames,
                       "path": rel.as_posix()})

    summary: dict[str, Any] = {"root": str(root), "kind": kind,
                               "codec": codec if kind == "video" else None, "classes": names,
                               "train": train, "val": val,
                               "num_frames": sum(v["num_frames"] for v in videos)}
    if kind == "frames":
        labels_dir = root / "labels"
        labels_dir.mkdir(exist_ok=True)
        (labels_dir / "labels.csv").write_text("\n".join(names) + "\n")
        for split, csv_name in (("train", "train.csv"), ("val", "validation.csv")):
            rows = [f"{v['id']};{names[v['label']]}" for v in videos if v["split"] == split]
            (labels_dir / csv_name).write_text("\n".join(rows) + "\n")
        from fastvid.data.prepare import prepare_jester

        summary["prepared"] = prepare_jester(root, progress=False)
    else:
        for split, list_name in (("train", "train_list.txt"), ("val", "val_list.txt")):
            rows = [f"{v['path']} {v['label']}" for v in videos if v["split"] == split]
            (root / list_name).write_text("\n".join(rows) + "\n")
        (root / "categories.txt").write_text("\n".join(names) + "\n")
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["videos"] = videos
    _logger.info("synthetic %s dataset: %d train + %d val clips of %d classes in %s (%.1f s)",
                 kind, train, val, classes, root, summary["seconds"])
    return summary


def _write_frames(folder: Path, clip: np.ndarray) -> None:
    """``folder/00001.jpg ...``: 1-based names, as the Jester archive has them."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.jpg"):  # a longer clip from an earlier run would miscount
        stale.unlink()
    for k, image in enumerate(clip, 1):
        Image.fromarray(image).save(folder / f"{k:05d}.jpg", quality=90)
