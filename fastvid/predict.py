"""Recognise actions in a user's own footage: a video file, a frame folder, or a folder of videos.

A short input gets one prediction through the evaluation loader (the same sampling, views and
normalization as ``fastvid eval``). A long input with ``window`` gets one prediction per sliding
window: the input is decoded once, front to back, each frame resized once to the test scale and
kept only while a pending window needs it; every window is then sampled and cropped by the same
:class:`fastvid.data.transforms.SamplePlanner` the loaders use, and the windows are batched
through the model.

The loader backend decides the decoder of a video, whole (its loader) or windowed (its entry's
``stream``, a chunk of frames at a time; :func:`fastvid.loaders.streaming_loader`). Frame counts
come from the container headers (:mod:`fastvid.data.video_headers`); PyAV's probe is the
fallback only for a backend that decodes with PyAV anyway (``video_codecs`` None), so no DALI
path imports PyAV (the GPU machines have none).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from fastvid.config import Config, replace
from fastvid.data.video_io import VIDEO_EXTS
from fastvid.errors import DataError, FastvidError

if TYPE_CHECKING:
    from fastvid.data.video_io import VideoInfo

__all__ = ["InputSpec", "PredictOptions", "detect_input", "parse_span", "window_starts",
           "predict_input", "predict_loader", "probe_input_video", "FrameSource"]

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
# Frames a backend's stream decodes per step for windowed prediction: what is held decoded at
# full size.
CHUNK_FRAMES = 32


@dataclass(frozen=True)
class InputSpec:
    path: Path
    kind: str  # video | frames


@dataclass(frozen=True)
class PredictOptions:
    """How ``fastvid predict`` scores an input (its options, as given on the command line).

    Attributes:
        topk: classes listed per window.
        window, stride: sliding windows as frames (``48``) or seconds (``2s``); None: one
            prediction over the whole input (stride default: half the window).
        fps: frame rate of a frame folder (default 12) or an override of the video's.
        views: ``(clips, crops)`` per prediction.
        batch_size: windows per model call.
        max_batch: the engine's largest batch (views are sent in chunks of it); None: eager.
        loader: the decoding loader backend (``auto``: :func:`predict_loader`).
        model_name: written into the predictions JSON.
    """

    topk: int = 5
    window: Optional[str] = None
    stride: Optional[str] = None
    fps: Optional[float] = None
    views: tuple[int, int] = (1, 1)
    batch_size: int = 8
    max_batch: Optional[int] = None
    loader: str = "auto"
    model_name: str = ""


def detect_input(path: str | Path) -> list[InputSpec]:
    """What ``path`` is: one video file, one frame folder, or a folder of videos (sorted)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            # One picture holds no motion: the models recognise actions over time.
            raise DataError(f"{path} is a single image; fastvid predict needs a video file or a "
                            f"folder of its frames (00001.jpg, 00002.jpg, ...)")
        return [InputSpec(path, "video")]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTS]
    videos = [p for p in entries if p.suffix.lower() in VIDEO_EXTS]
    if images and not videos:
        _note_skipped(path, [p for p in entries if p not in images], "frame folder")
        return [InputSpec(path, "frames")]
    if videos:
        _note_skipped(path, [p for p in entries if p not in videos], "folder of videos")
        return [InputSpec(p, "video") for p in videos]
    raise DataError(f"{path}: neither a video file, a folder of frames ({', '.join(sorted(IMAGE_EXTS))}) "
                    f"nor a folder of videos ({', '.join(sorted(VIDEO_EXTS))})")


def _note_skipped(folder: Path, skipped: list[Path], taken_as: str) -> None:
    """Say which entries of an input folder are not used (a user may expect them to be)."""
    if not skipped:
        return
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    log.warning("%s: read as a %s; skipping %d other entr%s: %s%s", folder, taken_as, len(skipped),
                "y" if len(skipped) == 1 else "ies", names, more)


def parse_span(text: Optional[str], fps: float) -> Optional[int]:
    """A window/stride given as frames (``48``) or seconds (``2s``, ``1.5s``) -> frames."""
    if text is None:
        return None
    text = str(text).strip().lower()
    try:
        frames = round(float(text[:-1]) * fps) if text.endswith("s") else int(text)
    except ValueError:
        raise FastvidError(f"window/stride {text!r}: expected frames (48) or seconds (2s)") from None
    if frames < 1:
        raise FastvidError(f"window/stride {text!r} is less than one frame at {fps:g} fps")
    return int(frames)


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of the sliding windows; the last window is moved back to end at the end."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def predict_loader(loader: str, device: torch.device) -> str:
    """``--loader`` for predict: :func:`fastvid.loaders.streaming_loader`'s choice (``auto``:
    the first backend that streams windows and decodes H.264 on the device: DALI on a GPU,
    else the torch loader's PyAV).

    Not :func:`fastvid.loaders.resolve_loader_name`: its ``auto`` picks DALI-on-CPU where DALI is
    installed, which handles VP8/VP9/MJPEG only, while a user's footage is mostly H.264.
    """
    from fastvid.loaders import streaming_loader

    return streaming_loader(loader, device).name


def probe_input_video(path: Path, loader: str) -> "VideoInfo":
    """:class:`fastvid.data.video_io.VideoInfo` of a video input, without PyAV when possible.

    The container headers (MP4/MOV, Matroska/WebM, AVI) are read in Python. Other containers,
    or headers the parser refuses, fall back to PyAV's probe only for a backend that decodes
    with PyAV anyway (``video_codecs`` None: any codec); for one with its own decoders (DALI)
    the parser's one-line DataError stands.
    """
    from fastvid.data.video_headers import probe_video_headers
    from fastvid.loaders import loader_backend

    try:
        return probe_video_headers(path)
    except DataError:
        # Without PyAV there is nothing to fall back to: the parser's message stands.
        from fastvid.data.video_io import probe_video, pyav_installed

        if loader_backend(loader).video_codecs is not None or not pyav_installed():
            raise

    return probe_video(path)


class FrameSource:
    """Frames of a video file or frame folder in order, as (3, H, W) uint8 RGB tensors.

    Video files are decoded by the loader backend's ``stream`` (DALI: frames on ``device`` for
    the GPU loader, on the CPU otherwise; torch: PyAV). Frame folders are read with
    libjpeg-turbo / PIL whatever the loader. ``chunk_frames``: frames decoded per step, the most
    held decoded at full size.
    """

    def __init__(self, spec: InputSpec, fps: Optional[float] = None, loader: str = "auto",
                 device: torch.device | str = "cpu", chunk_frames: int = CHUNK_FRAMES) -> None:
        from fastvid.loaders import streaming_loader

        self.spec = spec
        self.loader = loader
        self.device = torch.device(device)
        self.chunk_frames = int(chunk_frames)
        if spec.kind == "video":
            # Checked before the first frame: installed and runs on this device.
            self.backend = streaming_loader(loader, self.device)
            self.loader = self.backend.name
            self.info = probe_input_video(spec.path, self.loader)
            self.num_frames, self.fps = self.info.num_frames, float(fps or self.info.fps)
            self._files: list[Path] = []
        else:
            self._files = sorted(p for p in spec.path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not self._files:
                raise DataError(f"{spec.path}: frame folder is empty")
            self.num_frames, self.fps = len(self._files), float(fps or 12.0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.spec.kind == "frames":
            yield from self._folder_frames()
            return
        from fastvid.loaders import frame_stream

        stream = frame_stream(self.backend)
        for chunk in stream(str(self.spec.path), self.device, self.chunk_frames, self.info):
            for frame in chunk:
                yield frame.permute(2, 0, 1)

    def _folder_frames(self) -> Iterator[torch.Tensor]:
        from fastvid.data.video_io import decode_jpeg_rgb, read_jpeg_file

        for path in self._files:
            if path.suffix.lower() == ".png":
                from PIL import Image

                with Image.open(path) as img:
                    arr = np.asarray(img.convert("RGB")).copy()
                yield torch.from_numpy(arr).permute(2, 0, 1)
            else:
                yield decode_jpeg_rgb(read_jpeg_file(path), path)


def _topk(probs: np.ndarray, k: int, labels: Optional[Sequence[str]]) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i] if labels else str(int(i)), "prob": float(probs[i])}
            for i in order]


def _probs(model: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, n_views: int,
           average: str, chunk: int) -> np.ndarray:
    from fastvid.evaluate import score_views

    with torch.inference_mode():
        scores = score_views(model, views, n_views, average, chunk)
        if average == "score":
            scores = scores.softmax(dim=-1)
    return scores.float().cpu().numpy()


def predict_input(cfg: Config, model: Callable[[torch.Tensor], torch.Tensor], spec: InputSpec, *,
                  device: torch.device, labels: Optional[Sequence[str]],
                  options: PredictOptions = PredictOptions()) -> dict[str, Any]:
    """Predictions for one input, in the predictions-JSON schema of docs/design.md.

    ``options.loader``: a registered loader backend or ``auto`` (:func:`predict_loader`); it
    decodes the video both for a whole-input prediction and for sliding windows.
    """
    loader = predict_loader(options.loader, device)
    source = FrameSource(spec, options.fps, loader, device)
    window_len = parse_span(options.window, source.fps)
    stride_len = parse_span(options.stride, source.fps) or \
        (max(1, window_len // 2) if window_len else None)
    views = options.views
    chunk = options.max_batch or max(1, options.batch_size * views[0] * views[1])
    if window_len is None or window_len >= source.num_frames:
        probs = _predict_whole(cfg, model, spec, source, device, views, chunk, loader)
        windows = [(0, source.num_frames, probs)]
    else:
        windows = list(_predict_windows(cfg, model, source, device, options,
                                        (window_len, stride_len), chunk))
    return {
        "input": str(spec.path),
        "model": options.model_name,
        "fps": source.fps,
        "num_frames": source.num_frames,
        "windows": [{"start_frame": s, "end_frame": e, "start_s": s / source.fps,
                     "end_s": e / source.fps, "topk": _topk(p, options.topk, labels)}
                    for s, e, p in windows],
    }


def _predict_whole(cfg: Config, model: Callable, spec: InputSpec, source: FrameSource,
                   device: torch.device, views: tuple[int, int], chunk: int,
                   loader: str) -> np.ndarray:
    """One prediction through the evaluation loader (the path ``fastvid eval`` takes)."""
    from fastvid.data.lists import DatasetInfo, VideoRecord
    from fastvid.loaders import LoaderRequest, build_loader, close_loader

    # One input, not a dataset: a failure is this command's error, said once below in its own
    # words - not the loaders' "N of M samples this epoch ... remove them from the list".
    data: dict[str, Any] = {"max_bad_fraction": 1.0}
    if spec.kind == "frames":
        data["frame_tmpl"] = _frame_template(spec.path, source)
        record = VideoRecord(str(spec.path), 0, source.num_frames, is_video=False)
    else:
        record = VideoRecord(str(spec.path), 0, -1, is_video=True)
    cfg = replace(cfg, data=data)
    fmt = "frames" if spec.kind == "frames" else "videos"
    dataset = DatasetInfo(spec.path.parent, fmt, Path(), Path(), spec.path.parent, None)
    bad_log = logging.getLogger("fastvid.data.bad_samples")
    level = bad_log.level
    bad_log.setLevel(logging.ERROR)
    batches = None
    try:  # the logger's level comes back even when the loader cannot be built
        batches = build_loader(cfg, dataset, LoaderRequest("predict", batch_size=1, views=views,
                                                           records=[record], workers=0),
                               loader=loader, device=device)
        (video, label), = list(batches)
    finally:
        bad_log.setLevel(level)
        if batches is not None:
            close_loader(batches)
    if int(label[0]) < 0:
        reasons = "; ".join(dict.fromkeys(r for _, r in batches.bad_samples)) or "decode failed"
        raise DataError(f"{spec.path}: cannot read this input: {reasons}")
    flat = video.reshape(-1, *video.shape[2:])
    return _probs(model, flat, views[0] * views[1], cfg.model.average_clips, chunk)[0]


# Frame-file numberings a folder given to predict may follow (first match wins).
FRAME_TEMPLATES = ("{:05d}.jpg", "{:06d}.jpg", "img_{:05d}.jpg", "{:04d}.jpg", "{:05d}.png")


def _frame_template(folder: Path, source: FrameSource) -> str:
    """The loaders read ``tmpl.format(i)`` for i = 1..n; a folder of other names is refused."""
    names = [p.name for p in source._files]
    present = set(names)
    for tmpl in FRAME_TEMPLATES:
        if names == [tmpl.format(i) for i in range(1, len(names) + 1)]:
            return tmpl
    for tmpl in FRAME_TEMPLATES:
        numbered = [n for n in names if _numbered(n, tmpl)]
        if tmpl.format(1) in present or len(numbered) > len(names) // 2:
            # The folder follows this numbering, with frames missing: name the first gap.
            missing = next(tmpl.format(i) for i in range(1, len(names) + 2)
                           if tmpl.format(i) not in present)
            last = max(numbered, key=lambda n: int("".join(c for c in n if c.isdigit())))
            others = [n for n in names if n not in numbered]
            extra = f"; {len(others)} file(s) named otherwise, e.g. {others[0]}" if others else ""
            raise DataError(f"{folder}: frame {missing} is missing ({len(numbered)} frames numbered "
                            f"up to {last}{extra}); the frames must be numbered 1, 2, 3, ... "
                            f"without gaps - renumber them or pass a video file")
    raise DataError(f"{folder}: frames must be numbered from 1 like 00001.jpg (or img_00001.jpg); "
                    f"found {names[0]}, ... - rename them or pass a video file")


def _numbered(name: str, tmpl: str) -> bool:
    """Whether ``name`` is ``tmpl.format(i)`` for some i >= 1."""
    head, _, tail = tmpl.partition("{")
    tail = tail.partition("}")[2]
    digits = name[len(head):len(name) - len(tail)] if name.startswith(head) and name.endswith(tail) else ""
    return digits.isdigit() and tmpl.format(int(digits)) == name and int(digits) >= 1


def _predict_windows(cfg: Config, model: Callable, source: FrameSource, device: torch.device,
                     options: PredictOptions, span: tuple[int, int],
                     chunk: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Decode once; for each window sample, crop and normalize like the loaders; batch
    ``options.batch_size`` windows. ``span``: (window, stride) in frames."""
    from torchvision.transforms.v2 import functional as F

    from fastvid.data.transforms import normalize_video
    from fastvid.loaders import planner_for

    window, stride = span
    batch_size = options.batch_size
    planner = planner_for(cfg, "predict", options.views)
    n_views = planner.num_views
    spec_in = cfg.input_spec
    starts = window_starts(source.num_frames, window, stride)
    pending: deque[int] = deque(starts)
    buffer: dict[int, torch.Tensor] = {}
    ready: list[tuple[int, int, torch.Tensor]] = []
    plans = None

    def flush() -> Iterator[tuple[int, int, np.ndarray]]:
        batch = torch.stack([v for _, _, v in ready]).to(device)
        video = normalize_video(batch, spec_in["mean"], spec_in["std"],
                                bgr=spec_in["color"] == "BGR", channels_first=cfg.spec.is_3d)
        flat = video.reshape(-1, *video.shape[2:])
        probs = _probs(model, flat, n_views, cfg.model.average_clips, chunk)
        for (s, e, _), p in zip(ready, probs):
            yield s, e, p
        ready.clear()

    last = -1
    for idx, frame in enumerate(source):
        last = idx
        if plans is None:
            h, w = frame.shape[-2:]
            plans = [planner.view_plan(h, w, 0, 0, v) for v in range(n_views)]
            size = plans[0].resize or (h, w)  # every test view shares the resize
        # Each frame is resized once to the test scale; the plans' own resize is then a no-op.
        buffer[idx] = F.resize(frame, list(size), antialias=True)
        while pending and pending[0] + window - 1 <= idx:
            start = pending.popleft()
            ready.append((start, start + window, _window_views(planner, plans, buffer, start, window)))
            if len(ready) == batch_size:
                yield from flush()
        keep_from = pending[0] if pending else idx + 1
        for old in [k for k in buffer if k < keep_from]:
            del buffer[old]
    if last + 1 < source.num_frames:
        log.warning("%s: decoded %d frames, header said %d", source.spec.path, last + 1,
                    source.num_frames)
        if pending:  # the remaining windows would end past the real end: one last, shorter one
            start = pending[0]
            pending.clear()
            ready.append((start, last + 1, _window_views(planner, plans, buffer, start, last + 1 - start)))
    if ready:
        yield from flush()


def _window_views(planner: Any, plans: list, buffer: dict[int, torch.Tensor], start: int,
                  length: int) -> torch.Tensor:
    """(V, T, 3, h, w) uint8 views of the window [start, start + length)."""
    from fastvid.data.transforms import apply_plan

    out = []
    for v, plan in enumerate(plans):
        idx = planner.frame_indices(length, 0, 0, v, start_index=0)
        frames = torch.stack([buffer[start + int(i)] for i in idx])
        out.append(apply_plan(frames, plan))
    return torch.stack(out)
