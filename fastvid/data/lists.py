"""Dataset lists: Jester/Something frame-folder lists and Kinetics-style video lists.

Frame-folder list line: ``<relative dir> <num_frames> <class_index>`` (TRN-pytorch's
``*_videofolder.txt``). Video list line: ``<relative path> <class_index>`` (mmaction2's format).
Every error names the file and the 1-based line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fastvid.errors import ListError

__all__ = ["ListError", "VideoRecord", "parse_frame_list", "parse_video_list", "read_categories",
           "DatasetInfo", "resolve_dataset", "FRAME_LISTS", "VIDEO_LISTS"]

FRAME_LISTS = ("train_videofolder.txt", "val_videofolder.txt")
VIDEO_LISTS = ("train_list.txt", "val_list.txt")


@dataclass(frozen=True)
class VideoRecord:
    """One sample: ``path`` is a frame folder or a video file (absolute)."""

    path: str
    label: int
    num_frames: int = -1  # -1: unknown until the video is opened
    is_video: bool = False


def _check_label(label: int, num_classes: Optional[int], where: str) -> None:
    if label < 0 or (num_classes is not None and label >= num_classes):
        limit = f" (dataset has {num_classes} classes)" if num_classes is not None else ""
        raise ListError(f"{where}: class index {label} out of range{limit}")


def _inside_root(root: Path, name: str, where: str) -> Path:
    """``root / name`` for a list path; a relative path that climbs out of ``root`` with
    ``..`` is refused (a list is data, it must not open ``../../../../etc/passwd``).
    Absolute paths are taken as given: they say where they point. Symlinks inside the root
    (a frames folder linked from another disk) are followed as usual."""
    if os.path.isabs(name):
        return Path(name)
    joined = os.path.normpath(os.path.join(root, name))
    base = os.path.normpath(root)
    if os.path.commonpath([base, joined]) != base:
        raise ListError(f"{where}: path {name!r} leads outside the data folder {root}; list paths "
                        f"are relative to it (write an absolute path to use a file elsewhere)")
    return root / name


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise ListError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None


def parse_frame_list(list_file: str | Path, frames_root: str | Path,
                     num_classes: Optional[int] = None, check_frames: bool = False,
                     frame_tmpl: str = "{:05d}.jpg") -> list[VideoRecord]:
    """Parse ``<dir> <num_frames> <label>`` lines; blank lines and ``#`` comments are skipped.

    With ``check_frames`` each folder must exist and hold ``num_frames`` frames named by
    ``frame_tmpl`` (checked by the last frame's presence, which is cheap on big datasets).
    """
    list_file, frames_root = Path(list_file), Path(frames_root)
    if not list_file.is_file():
        raise ListError(f"list file not found: {list_file}")
    records = []
    for lineno, raw in enumerate(_read_lines(list_file), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file}:{lineno}"
        parts = line.split()
        if len(parts) < 3:
            raise ListError(f"{where}: expected '<dir> <num_frames> <class_index>', got {raw!r}")
        # Folder names may contain spaces: the last two fields are numbers.
        name, frames_s, label_s = " ".join(parts[:-2]), parts[-2], parts[-1]
        try:
            num_frames, label = int(frames_s), int(label_s)
        except ValueError:
            raise ListError(f"{where}: num_frames and class_index must be integers, got {raw!r}") from None
        if num_frames <= 0:
            raise ListError(f"{where}: '{name}' has num_frames={num_frames}; expected > 0")
        _check_label(label, num_classes, where)
        folder = _inside_root(frames_root, name, where)
        if check_frames:
            if not folder.is_dir():
                raise ListError(f"{where}: frame folder not found: {folder}")
            if not (folder / frame_tmpl.format(num_frames)).is_file():
                have = sum(1 for _ in folder.iterdir())
                raise ListError(f"{where}: list says {num_frames} frames but {folder} has {have} "
                                f"(missing {frame_tmpl.format(num_frames)})")
        records.append(VideoRecord(str(folder), label, num_frames, is_video=False))
    if not records:
        raise ListError(f"{list_file}: list has no samples")
    return records


def parse_video_list(list_file: str | Path, videos_root: str | Path,
                     num_classes: Optional[int] = None, check_files: bool = False) -> list[VideoRecord]:
    """Parse ``<relative path> <class_index>`` lines (mmaction2 video lists)."""
    list_file, videos_root = Path(list_file), Path(videos_root)
    if not list_file.is_file():
        raise ListError(f"list file not found: {list_file}")
    records = []
    for lineno, raw in enumerate(_read_lines(list_file), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file}:{lineno}"
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ListError(f"{where}: expected '<path> <class_index>', got {raw!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise ListError(f"{where}: class index must be an integer, got {parts[1]!r}") from None
        _check_label(label, num_classes, where)
        path = _inside_root(videos_root, parts[0], where)
        if check_files and not path.is_file():
            raise ListError(f"{where}: video file not found: {path}")
        records.append(VideoRecord(str(path), label, -1, is_video=True))
    if not records:
        raise ListError(f"{list_file}: list has no samples")
    return records


def read_categories(path: str | Path) -> list[str]:
    """One class name per line; blank lines are an error (they would shift indices)."""
    path = Path(path)
    if not path.is_file():
        raise ListError(f"categories file not found: {path}")
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise ListError(f"{path}:{lineno}: empty class name")
    if not lines:
        raise ListError(f"{path}: no classes")
    return [line.strip() for line in lines]


@dataclass
class DatasetInfo:
    root: Path
    format: str  # frames | videos
    train_list: Path
    val_list: Path
    data_dir: Path  # where list paths are relative to
    categories: Optional[list[str]]

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.categories) if self.categories else None

    def records(self, split: str, check: bool = True, frame_tmpl: str = "{:05d}.jpg") -> list[VideoRecord]:
        list_file = self.train_list if split == "train" else self.val_list
        if self.format == "frames":
            return parse_frame_list(list_file, self.data_dir, self.num_classes, check_frames=check,
                                    frame_tmpl=frame_tmpl)
        return parse_video_list(list_file, self.data_dir, self.num_classes, check_files=check)


def resolve_dataset(root: str | Path, data_cfg) -> DatasetInfo:
    """Find the lists under ``root`` for a :class:`fastvid.config.DataConfig`."""
    root = Path(root)
    if not root.is_dir():
        raise ListError(f"--data-root {root} does not exist or is not a directory")
    fmt = data_cfg.format
    if fmt is None:
        if all((root / n).is_file() for n in FRAME_LISTS):
            fmt = "frames"
        elif all((root / n).is_file() for n in VIDEO_LISTS):
            fmt = "videos"
        else:
            raise ListError(f"{root}: no dataset lists found (expected {' + '.join(FRAME_LISTS)} "
                            f"for frame folders or {' + '.join(VIDEO_LISTS)} for videos; run "
                            f"'fastvid data prepare-jester', 'prepare-videos' or 'prepare-sthv2')")
    defaults = FRAME_LISTS if fmt == "frames" else VIDEO_LISTS
    train_list = root / (data_cfg.train_list or defaults[0])
    val_list = root / (data_cfg.val_list or defaults[1])
    for lst in (train_list, val_list):
        if not lst.is_file():
            raise ListError(f"{root}: list file {lst.name} not found (data.format={fmt})")
    data_dir = root / (data_cfg.frames_dir if fmt == "frames" else data_cfg.videos_dir)
    cats = root / "categories.txt"
    categories = read_categories(cats) if cats.is_file() else None
    return DatasetInfo(root, fmt, train_list, val_list, data_dir, categories)
