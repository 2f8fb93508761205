"""Turning downloaded datasets into the lists fastvid reads (``docs/design.md``, "Files on disk").

* :func:`unpack_jester` - 20BN-Jester ships as 23 parts of one ``tar.gz``
  (``20bn-jester-v1-00`` ... ``-22``) plus label CSVs; the parts are streamed into
  :mod:`tarfile` one after the other, so the 22 GB archive is never written out whole.
* :func:`prepare_frames` (:func:`prepare_jester`, :func:`prepare_sthv1`) - Jester v1 /
  Something-Something V1 as downloaded (``jester-v1-{labels,train,validation}.csv`` /
  ``something-something-v1-*.csv``, ``id;Label``, beside the frames or under ``labels/``; the
  short ``labels/{labels,train,validation}.csv`` too) + frame folders -> ``categories.txt``,
  ``train_videofolder.txt``, ``val_videofolder.txt`` (``<id> <num_frames> <class_index>``),
  TRN-pytorch's lists.
* :func:`prepare_videos` - video files (Kinetics as downloaded: ``annotations/{train,val}.csv``
  ``label,youtube_id,time_start,time_end,split`` + ``train/``/``val/`` videos in class folders
  or flat; or any class-per-folder tree) -> ``train_list.txt``, ``val_list.txt``
  (``relative/path.ext class_index``, mmaction2's format) and ``categories.txt``.
* :func:`prepare_sthv2` - Something-Something V2 as downloaded (``20bn-something-something-v2/
  <id>.webm`` + ``labels/{labels,train,validation}.json``, or the older
  ``something-something-v2-*.json``) -> ``categories.txt``
  and either ``train_list.txt``/``val_list.txt`` (the videos) or, when frames were extracted,
  ``train_videofolder.txt``/``val_videofolder.txt``.

Bad input raises :class:`~fastvid.data.lists.ListError` (naming file and line, or file and JSON
entry) or a :class:`~fastvid.errors.FastvidError`; samples that cannot be used (an empty frame
folder, a Kinetics clip that failed to download) are logged, left out and counted in the summary.
Every prepare writes ``dataset.json`` beside the lists: which dataset and where its class order
came from (matched against a foreign checkpoint's, :mod:`fastvid.models.class_order`).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from fastvid.atomic import write_text_atomic
from fastvid.data.lists import ListError, read_categories
from fastvid.data.video_io import VIDEO_EXTS
from fastvid.errors import DataError, FastvidError

__all__ = ["JESTER_PARTS", "JESTER_PART_PREFIX", "JESTER_LABEL_FILES",
           "STHV2_FILES", "FRAME_DATASETS", "FrameDataset", "DATASET_INFO", "unpack_jester",
           "prepare_frames", "prepare_jester", "prepare_sthv1", "count_frames", "prepare_videos",
           "prepare_sthv2", "find_kinetics_annotations", "write_dataset_info", "read_dataset_info"]

_logger = logging.getLogger(__name__)

JESTER_PARTS = 23
JESTER_PART_PREFIX = "20bn-jester-v1-"
# As downloaded -> as the Jester layout names them under TARGET/labels/.
JESTER_LABEL_FILES = {"jester-v1-labels.csv": "labels.csv", "jester-v1-train.csv": "train.csv",
                      "jester-v1-validation.csv": "validation.csv", "jester-v1-test.csv": "test.csv"}
# Something-Something V2's annotation files (the test split has no labels and is not used).
# The current download names them labels/labels.json, train.json, validation.json (test.json
# has no labels); earlier releases something-something-v2-{labels,train,validation}.json.
STHV2_FILES = {"labels": ("labels.json", "something-something-v2-labels.json"),
               "train": ("train.json", "something-something-v2-train.json"),
               "val": ("validation.json", "something-something-v2-validation.json")}
# First-row id fields that mark a header rather than a sample.
_ID_HEADERS = {"id", "video_id", "video", "name", "youtube_id", "vid"}
_LABEL_HEADERS = {"label", "labels", "name", "class", "classes", "category", "template"}
_MAX_LISTED = 20
_TRIMMED_NAME = re.compile(r"^(.+)_\d{6}_\d{6}$")  # Kinetics downloader: <id>_<start>_<end>  # skipped samples named one by one in the log; the rest only counted


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write via a temporary file (:func:`fastvid.atomic.write_text_atomic`), so an interrupted
    run never leaves half a list behind, and a failed write names the file and the cause."""
    write_text_atomic(path, "".join(f"{line}\n" for line in lines), "dataset list")


# ---------------------------------------------------------------------------------------------
# unpack-jester

class _ConcatReader(io.RawIOBase):
    """Read a list of files as one stream (the parts of a split archive), reporting bytes read."""

    def __init__(self, paths: Sequence[Path], on_read=None) -> None:
        super().__init__()
        self._paths = list(paths)
        self._index = 0
        self._file = None
        self._on_read = on_read

    @property
    def current(self) -> Optional[Path]:
        """The part being read (None once all are consumed)."""
        return self._paths[self._index] if self._index < len(self._paths) else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._index < len(self._paths):
            if self._file is None:
                self._file = open(self._paths[self._index], "rb")
            n = self._file.readinto(buffer)
            if n:
                if self._on_read is not None:
                    self._on_read(n)
                return n
            self._file.close()
            self._file = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def unpack_jester(zip_dir: str | Path, target: str | Path, num_parts: int = JESTER_PARTS,
                  prefix: str = JESTER_PART_PREFIX, progress: bool = True) -> dict[str, Any]:
    """Extract the split Jester archive in ``zip_dir`` into ``target``; copy the label CSVs.

    The parts ``{prefix}00`` ... ``{prefix}{num_parts-1:02d}`` are concatenated as one gzip'ed
    tar stream (no temporary file), giving ``target/20bn-jester-v1/<id>/*.jpg``. The CSVs
    ``jester-v1-{labels,train,validation,test}.csv``, where present in ``zip_dir``, are copied
    to ``target/labels/{labels,train,validation,test}.csv``; missing ones are only reported
    (they may already be in place).

    Args:
        zip_dir: folder with the downloaded parts (and CSVs).
        target: dataset root to extract into (created).
        num_parts: number of parts expected (23 for Jester v1).
        prefix: part name without the two-digit number.
        progress: show a tqdm bar over the bytes read.

    Returns:
        ``{"target", "parts", "bytes", "files", "folders", "labels_copied", "labels_missing"}``.
    """
    from tqdm import tqdm

    zip_dir, target = Path(zip_dir), Path(target)
    if not zip_dir.is_dir():
        raise FastvidError(f"archive folder not found: {zip_dir}")
    parts = [zip_dir / f"{prefix}{i:02d}" for i in range(num_parts)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise FastvidError(f"{zip_dir}: missing archive part(s) {', '.join(missing)} "
                           f"(expected {parts[0].name} ... {parts[-1].name})")
    total = sum(p.stat().st_size for p in parts)
    target.mkdir(parents=True, exist_ok=True)
    files, folders = 0, set()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="unpack", disable=not progress)
    reader = _ConcatReader(parts, on_read=bar.update)
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|gz") as archive:
            for member in archive:
                # "data" refuses absolute paths, links out of target and device files.
                archive.extract(member, target, filter="data")
                if member.isfile():
                    files += 1
                    folders.add(Path(member.name).parent)
    except tarfile.FilterError as exc:
        raise DataError(f"{zip_dir}: refusing an unsafe archive member: {exc}") from exc
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        where = reader.current.name if reader.current is not None else parts[-1].name
        raise DataError(f"{zip_dir}: the archive parts do not form a valid tar.gz (failed while "
                        f"reading {where}: {type(exc).__name__}: {exc}); re-download that part "
                        f"or check the parts' sizes") from exc
    finally:
        reader.close()
        bar.close()

    copied, absent = [], []
    labels_dir = target / "labels"
    for source_name, dest_name in JESTER_LABEL_FILES.items():
        source = zip_dir / source_name
        if source.is_file():
            labels_dir.mkdir(exist_ok=True)
            shutil.copyfile(source, labels_dir / dest_name)
            copied.append(dest_name)
        elif not (labels_dir / dest_name).is_file():
            absent.append(source_name)
    if absent:
        _logger.warning("%s: label file(s) %s not found; put them in %s before prepare-jester",
                        zip_dir, ", ".join(absent), labels_dir)
    return {"target": str(target), "parts": num_parts, "bytes": total, "files": files,
            "folders": len(folders), "labels_copied": copied, "labels_missing": absent}


# ---------------------------------------------------------------------------------------------
# prepare-jester

def count_frames(folder: str | Path, frame_tmpl: str = "{:05d}.jpg") -> int:
    """Frames ``frame_tmpl.format(1), (2), ...`` present in ``folder`` without a gap (0: none).

    The lists say "frames 1..n", and the loaders read frame k by name, so only the unbroken run
    from frame 1 counts; frames after a gap are logged and ignored.
    """
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except (FileNotFoundError, NotADirectoryError):
        return 0
    n = 0
    while frame_tmpl.format(n + 1) in names:
        n += 1
    suffix = Path(frame_tmpl.format(1)).suffix
    extra = sum(1 for name in names if name.endswith(suffix)) - n
    if n and extra > 0:
        _logger.warning("%s: frames after %s are not numbered on from it (%d file(s) ignored)",
                        folder, frame_tmpl.format(n), extra)
    return n


def read_csv_rows(path: Path, delimiter: str = ";") -> Iterator[tuple[int, list[str]]]:
    """``(line number, stripped fields)`` of a CSV file, read with the csv module's quoting
    rules (``"quoted"`` fields lose their quotes, ``""`` is a quote) - the one reader of every
    Jester CSV, so labels.csv and train.csv agree on what a class name is."""
    try:
        # utf-8-sig: a byte-order mark (some re-saved copies carry one) is not part of a name
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for fields in reader:
                yield reader.line_num, [f.strip() for f in fields]
    except UnicodeDecodeError as exc:
        raise ListError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except csv.Error as exc:
        raise ListError(f"{path}: {exc}") from None


def _read_labels_csv(path: Path) -> list[str]:
    if not path.is_file():
        raise ListError(f"label file not found: {path} (one class name per line)")
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, fields in read_csv_rows(path):
        name = ";".join(fields).strip()  # one field per line; a ';' inside a name is kept
        if not name:
            continue
        if not names and name.lower() in _LABEL_HEADERS:
            continue  # a header line
        if name in seen:
            raise ListError(f"{path}:{lineno}: class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise ListError(f"{path}: no class names")
    return names


def _read_split_csv(path: Path, class_index: dict[str, int],
                    labels_name: str = "labels.csv") -> list[tuple[str, int]]:
    """``id;Label`` rows -> ``(id, class index)``; an optional header row is skipped."""
    if not path.is_file():
        raise ListError(f"split file not found: {path} (lines 'id;Label')")
    rows: list[tuple[str, int]] = []
    for lineno, fields in read_csv_rows(path):
        if not any(fields):
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 2 or not fields[0]:
            raise ListError(f"{where}: expected 'id;Label', got {';'.join(fields)!r}")
        vid, label = fields
        if label not in class_index:
            if not rows and vid.lower() in _ID_HEADERS:
                continue  # a header row
            raise ListError(f"{where}: unknown class {label!r} (not in {labels_name})")
        rows.append((vid, class_index[label]))
    return rows


@dataclass(frozen=True)
class FrameDataset:
    """A frame-folder dataset as its official download unpacks.

    Attributes:
        name: the ``dataset`` recorded in ``dataset.json`` (``jester``, ``sthv1``).
        title: for messages.
        prefix: the CSVs' prefix: ``<prefix>-labels.csv``, ``<prefix>-train.csv``,
            ``<prefix>-validation.csv`` (``-test.csv`` has no labels and is not read).
        frames_dir: the frame folders' folder, ``<frames_dir>/<id>/00001.jpg``.
        command: the ``fastvid data`` command that prepares it (for messages).
    """

    name: str
    title: str
    prefix: str
    frames_dir: str
    command: str

    def label_names(self, kind: str) -> tuple[str, ...]:
        """File names of ``kind`` (labels/train/validation): as downloaded, then the short
        name ``unpack-jester`` and the seed's ``labels/`` layout use."""
        return (f"{self.prefix}-{kind}.csv", f"{kind}.csv")


FRAME_DATASETS = {
    "jester": FrameDataset("jester", "20BN-Jester v1", "jester-v1", "20bn-jester-v1",
                           "prepare-jester"),
    "sthv1": FrameDataset("sthv1", "Something-Something V1", "something-something-v1",
                          "20bn-something-something-v1", "prepare-sthv1"),
}
# Where label and split files are looked for under ROOT, in this order (Jester, Sth-v1 CSVs;
# Sth-v2 JSONs): the first folder holding the file wins.
_LABEL_DIRS = (".", "labels", "annotations")
DATASET_INFO = "dataset.json"


def _label_dirs(root: Path, labels_dir: Optional[str | Path],
                near: Optional[Path] = None) -> list[Path]:
    """The folders a label/split file is looked for in: ``labels_dir`` alone when given (an
    absolute one replaces root), else ``near`` (the labels file's folder: the splits go with
    it) and then :data:`_LABEL_DIRS` under ``root``."""
    if labels_dir is not None:
        return [root / labels_dir]
    dirs = [root / d if d != "." else root for d in _LABEL_DIRS]
    if near is not None:
        dirs = [near] + [d for d in dirs if d != near]
    return dirs


def _first_file(dirs: Sequence[Path], names: Sequence[str]) -> Optional[Path]:
    """The first of ``names`` in the first of ``dirs`` holding one; None when none does."""
    return next((d / n for d in dirs for n in names if (d / n).is_file()), None)


def _find_label_file(root: Path, names: Sequence[str], labels_dir: Optional[str | Path],
                     what: str, near: Optional[Path] = None,
                     missing: str = "{what} not found: looked for {names} in {dirs}; put the "
                                    "downloaded file there or pass --labels-dir DIR") -> Path:
    """The first of ``names`` in the label folders (:func:`_label_dirs`); else ListError from
    ``missing`` (``{what}``, ``{names}``, ``{dirs}``: every place looked in)."""
    dirs = _label_dirs(root, labels_dir, near)
    found = _first_file(dirs, names)
    if found is None:
        raise ListError(missing.format(what=what, names=" or ".join(names),
                                       dirs=", ".join(str(d) for d in dirs)))
    return found


def write_dataset_info(root: Path, dataset: str, class_order: str, source: Optional[Path],
                       layout: Optional[str] = None) -> Path:
    """``ROOT/dataset.json``: which dataset the lists are and where the class order came from
    (a foreign checkpoint's class order is matched against it; ``docs/design.md``)."""
    from fastvid.version import __version__

    if source is not None:
        # relative to ROOT where inside it: the same download gives the same bytes wherever it is
        try:
            source = Path(os.path.relpath(source, root)) if source.resolve().is_relative_to(
                root.resolve()) else source
        except (OSError, ValueError):
            pass
    info = {"dataset": dataset, "class_order": class_order,
            "class_source": source.as_posix() if source is not None else None,
            "layout": layout, "fastvid_version": __version__}
    path = root / DATASET_INFO
    _write_atomic(path, [json.dumps(info, indent=1)])
    return path


def read_dataset_info(root: str | Path) -> dict[str, Any]:
    """``ROOT/dataset.json`` as written by a prepare command, or ``{}`` (older or hand-made lists)."""
    path = Path(root) / DATASET_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def prepare_frames(root: str | Path, dataset: str = "jester", frames_dir: Optional[str] = None,
                   labels_dir: Optional[str | Path] = None, frame_tmpl: str = "{:05d}.jpg",
                   progress: bool = True) -> dict[str, Any]:
    """Write ``categories.txt``, ``train_videofolder.txt`` and ``val_videofolder.txt`` in ``root``
    for a frame-folder dataset (:data:`FRAME_DATASETS`: Jester v1, Something-Something V1).

    Reads the label CSVs as downloaded, ``<prefix>-labels.csv`` (class names, one per line:
    their order gives the class indices, as mmaction2's label maps and TSM's lists keep it),
    ``<prefix>-train.csv`` and ``<prefix>-validation.csv`` (``id;Label``, header optional,
    CRLF or LF), or their short names ``labels.csv``/``train.csv``/``validation.csv``; they are
    looked for in ``labels_dir`` when given, else in ``root``, ``root/labels``,
    ``root/annotations`` (the first folder holding the labels file; the split files may be in
    any of them). Every ``root/<frames_dir>/<id>/`` is counted; a video whose folder is missing
    or holds no frames is logged, left out and counted. ``dataset.json`` records the dataset.

    Args:
        root: dataset root.
        dataset: a key of :data:`FRAME_DATASETS`.
        frames_dir: folder of the frame folders, relative to ``root`` (default: the official
            name, ``20bn-jester-v1`` / ``20bn-something-something-v1``).
        labels_dir: folder of the CSVs, relative to ``root`` or absolute.
        frame_tmpl: frame file names (1-based index).
        progress: show a tqdm bar while counting frames.

    Returns:
        ``{"root", "dataset", "classes", "train", "val", "skipped": {"train": [ids], "val":
        [ids]}, "num_skipped", "files", "labels"}`` (``train``/``val``: videos listed;
        ``labels``: the label file read).
    """
    from tqdm import tqdm

    if dataset not in FRAME_DATASETS:
        raise FastvidError(f"unknown frame dataset {dataset!r} (known: {', '.join(FRAME_DATASETS)})")
    ds = FRAME_DATASETS[dataset]
    root = Path(root)
    if not root.is_dir():
        raise ListError(f"dataset root not found: {root}")
    frames_dir = frames_dir or ds.frames_dir
    labels_path = _find_label_file(root, ds.label_names("labels"), labels_dir,
                                   f"{ds.title} label file")
    names = _read_labels_csv(labels_path)
    class_index = {name: i for i, name in enumerate(names)}
    frames_root = root / frames_dir
    splits = {"train": ("train", "train_videofolder.txt"),
              "val": ("validation", "val_videofolder.txt")}
    # The split files go with the labels file: its folder first, then the other places.
    sources = {split: _find_label_file(root, ds.label_names(kind), labels_dir,
                                       f"{ds.title} {kind} split", near=labels_path.parent)
               for split, (kind, _) in splits.items()}
    rows = {split: _read_split_csv(path, class_index, labels_path.name)
            for split, path in sources.items()}
    if not frames_root.is_dir():
        raise ListError(f"frame folder root not found: {frames_root} (expected "
                        f"{frames_root}/<id>/{frame_tmpl.format(1)} ...); pass --frames-dir DIR "
                        f"(relative to {root}) where the frames were extracted elsewhere")

    summary: dict[str, Any] = {"root": str(root), "dataset": ds.name, "classes": len(names),
                               "skipped": {}, "files": {}, "labels": str(labels_path)}
    outputs = {"categories": (root / "categories.txt", names)}
    for split, (kind, list_name) in splits.items():
        csv_name = sources[split].name
        lines, skipped = [], []
        for vid, label in tqdm(rows[split], desc=f"count frames ({split})", unit="video",
                               disable=not progress):
            n = count_frames(frames_root / vid, frame_tmpl)
            if n == 0:
                skipped.append(vid)
                if len(skipped) <= _MAX_LISTED:
                    why = "missing" if not (frames_root / vid).is_dir() else "has no frames"
                    _logger.warning("%s (%s): video %s left out: %s %s", csv_name, split, vid,
                                    frames_root / vid, why)
                continue
            lines.append(f"{vid} {n} {label}")
        if len(skipped) > _MAX_LISTED:
            _logger.warning("%s: %d more videos left out (missing or empty folders)", csv_name,
                            len(skipped) - _MAX_LISTED)
        if not lines:
            raise ListError(f"{sources[split]}: none of its {len(rows[split])} videos has "
                            f"frames under {frames_root} (--frames-dir)")
        outputs[split] = (root / list_name, lines)
        summary[split] = len(lines)
        summary["skipped"][split] = skipped
    # Written only once every list is known good: no mix of old and new lists after an error.
    for key, (path, lines) in outputs.items():
        _write_atomic(path, lines)
        summary["files"][key] = str(path)
    summary["dataset_info"] = str(write_dataset_info(root, ds.name, "label-file", labels_path,
                                                         f"frames:{frames_dir}"))
    summary["num_skipped"] = sum(len(s) for s in summary["skipped"].values())
    return summary


def prepare_jester(root: str | Path, frames_dir: str = "20bn-jester-v1",
                   frame_tmpl: str = "{:05d}.jpg", progress: bool = True,
                   labels_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """20BN-Jester v1: :func:`prepare_frames` with ``dataset="jester"``."""
    return prepare_frames(root, "jester", frames_dir, labels_dir, frame_tmpl, progress)


def prepare_sthv1(root: str | Path, frames_dir: str = "20bn-something-something-v1",
                  frame_tmpl: str = "{:05d}.jpg", progress: bool = True,
                  labels_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Something-Something V1: :func:`prepare_frames` with ``dataset="sthv1"``."""
    return prepare_frames(root, "sthv1", frames_dir, labels_dir, frame_tmpl, progress)


# ---------------------------------------------------------------------------------------------
# prepare-videos

_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validate": "val", "validation": "val", "test": "test", "testing": "test"}


def _is_video(path: Path, exts: Sequence[str]) -> bool:
    return path.is_file() and path.suffix.lower() in exts


def _class_folders(folder: Path, exts: Sequence[str], split: str,
                   ignored: list[str]) -> list[tuple[str, str, Path]]:
    """``(split, class, file)`` for ``folder/<class>/<file>``; loose files are noted in ``ignored``."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            found += [(split, entry.name, f) for f in sorted(entry.rglob("*")) if _is_video(f, exts)]
        elif _is_video(entry, exts):
            ignored.append(str(entry))
    return found


def _split_folders(videos: Path) -> dict[str, Path]:
    """``videos/train``, ``videos/val`` (or validate/validation) when the split is in the tree."""
    found: dict[str, Path] = {}
    for entry in videos.iterdir():
        split = _SPLIT_NAMES.get(entry.name.lower())
        if entry.is_dir() and split in ("train", "val"):
            found[split] = entry
    return found if "train" in found and "val" in found else {}


def _kinetics_rows(path: Path) -> list[tuple[int, str, str, Optional[str]]]:
    """``(line, label, file stem candidates joined by '|', split)`` from a Kinetics CSV."""
    if not path.is_file():
        raise ListError(f"split file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = {"label", "youtube_id"} - set(fields)
        if missing:
            raise ListError(f"{path}:1: header {','.join(fields)!r} lacks column(s) "
                            f"{', '.join(sorted(missing))} (expected Kinetics' "
                            f"'label,youtube_id,time_start,time_end,split')")
        rows = []
        file_split = next((s for key, s in _SPLIT_NAMES.items() if key in path.stem.lower()), None)
        for lineno, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row.get("youtube_id"):
                raise ListError(f"{path}:{lineno}: empty youtube_id")
            stems = []
            start, end = row.get("time_start", ""), row.get("time_end", "")
            if start and end:
                try:
                    stems.append(f"{row['youtube_id']}_{int(float(start)):06d}_{int(float(end)):06d}")
                except ValueError:
                    raise ListError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                    f"{start!r}, {end!r}") from None
            stems.append(row["youtube_id"])
            split = _SPLIT_NAMES.get(row.get("split", "").lower()) or file_split
            rows.append((lineno, row.get("label", ""), "|".join(stems), split))
    return rows


# Kinetics' annotation CSVs as downloaded (kinetics-dataset / CVDF, ActivityNet's crawler):
# ROOT/annotations/{train,val}.csv, older releases kinetics_{train,val}.csv or validate.csv.
_KINETICS_ANNOTATION_DIRS = ("annotations", ".", "labels")
_KINETICS_SPLIT_NAMES = {"train": ("train.csv", "kinetics_train.csv", "kinetics-400_train.csv"),
                         "val": ("val.csv", "validate.csv", "validation.csv", "kinetics_val.csv",
                                 "kinetics-400_val.csv")}


def find_kinetics_annotations(root: str | Path) -> list[Path]:
    """The train and val annotation CSVs of a Kinetics download under ``root`` (both, or [])."""
    root = Path(root)
    for folder in _KINETICS_ANNOTATION_DIRS:
        base = root if folder == "." else root / folder
        found = [next((base / n for n in names if (base / n).is_file()), None)
                 for names in _KINETICS_SPLIT_NAMES.values()]
        if all(found):
            return [p for p in found if p is not None]
    return []


def _default_videos_dir(root: Path, annotations: Sequence[Path]) -> str:
    """``videos`` when ROOT has it; ROOT itself when ROOT holds Kinetics' ``train/`` and
    ``val/`` or its ``annotations`` (as downloaded); else ``videos`` (for the error to name)."""
    if (root / "videos").is_dir():
        return "videos"
    if annotations or _split_folders(root):
        return "."
    return "videos"


def prepare_videos(root: str | Path, videos_dir: Optional[str] = None,
                   exts: Sequence[str] = VIDEO_EXTS, split_files: Sequence[str | Path] = (),
                   categories: Optional[str | Path] = None, val_fraction: float = 0.2,
                   seed: int = 0, find_annotations: bool = True) -> dict[str, Any]:
    """Write ``train_list.txt``, ``val_list.txt`` and ``categories.txt`` for video files.

    Three layouts, tried in this order:

    1. ``split_files`` given: Kinetics annotation CSVs (``label,youtube_id,time_start,time_end,
       split``; extra columns ignored). A row's file is ``<youtube_id>_<start:06d>_<end:06d>.<ext>``
       (the official downloader's name; any times when the CSV has none) or
       ``<youtube_id>.<ext>`` anywhere under
       ``root/videos_dir``. The split comes from the ``split`` column or else the CSV's name
       (``train.csv``, ``validate.csv``); test rows and rows whose video is missing (Kinetics
       always has some) are left out and counted.
    2. ``root/videos_dir/{train,val}/<class>/<file>`` (``validate``/``validation`` also name val).
    3. ``root/videos_dir/<class>/<file>``: each class's files, shuffled with ``seed``, give
       ``val_fraction`` of them (at least one when a class has two or more) to val.

    Kinetics-400 as downloaded needs no option: with ``videos_dir`` None, ``root/videos`` is
    used when it exists, else ``root`` itself when it holds ``train/`` + ``val/`` or the
    annotations; with no ``split_files`` and ``find_annotations``, ``root/annotations/
    {train,val}.csv`` (or ``root/{train,val}.csv``, ``validate.csv``, ``kinetics_*.csv``) are
    used when present. Videos may be in class folders (``train/<label>/<id>_<s>_<e>.mp4``) or
    flat (``train/<id>_<s>_<e>.mp4``, the CVDF archives): a row finds its file by name.

    Args:
        root: dataset root; list paths are relative to it.
        videos_dir: folder holding the videos, relative to ``root`` (see above for None).
        exts: file suffixes taken as videos (case-insensitive).
        split_files: Kinetics CSVs (layout 1).
        find_annotations: look for Kinetics' CSVs under ``root`` when ``split_files`` is empty.
        categories: a ``categories.txt`` fixing the class order (a class missing from it is an
            error); default: class names sorted, as mmaction2's Kinetics label maps are.
        val_fraction: layout 3 only.
        seed: layout 3 only.

    Returns:
        ``{"root", "layout", "classes", "train", "val", "missing", "ignored", "files"}``.
    """
    root = Path(root)
    # Looked up once: it decides the default videos folder and the layout.
    annotations = find_kinetics_annotations(root) if root.is_dir() else []
    if videos_dir is None:
        videos_dir = _default_videos_dir(root, annotations) if root.is_dir() else "videos"
    videos = root / videos_dir if videos_dir not in ("", ".") else root
    if not videos.is_dir():
        hint = ("" if videos_dir != "videos" else
                f"; a Kinetics download ({root}/annotations/train.csv, {root}/train/, "
                f"{root}/val/) is found without options")
        raise ListError(f"video folder not found: {videos}{hint}; pass --videos-dir DIR "
                        f"(relative to {root}, '.' for {root} itself)")
    if not split_files and find_annotations:
        split_files = annotations
        if split_files:
            _logger.info("Kinetics annotations: %s", ", ".join(map(str, split_files)))
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)
    if not 0.0 <= val_fraction < 1.0:
        raise FastvidError(f"val_fraction must be in [0, 1), got {val_fraction}")
    samples: list[tuple[str, str, Path, str]] = []  # split, class, file, where it came from
    missing: list[str] = []
    ignored: list[str] = []

    if split_files:
        layout = "kinetics-csv"
        index: dict[str, Path] = {}
        by_youtube_id: dict[str, Path] = {}  # "<id>_<start>_<end>" files, for CSVs without times
        for f in sorted(videos.rglob("*")):
            if _is_video(f, exts):
                index.setdefault(f.stem, f)
                match = _TRIMMED_NAME.match(f.stem)
                if match:
                    by_youtube_id.setdefault(match.group(1), f)
        for split_file in map(Path, split_files):
            for lineno, label, stems, split in _kinetics_rows(split_file):
                where = f"{split_file}:{lineno}"
                if split not in ("train", "val"):
                    if split is None:
                        raise ListError(f"{where}: no split column and the file name does not say "
                                        f"train or val")
                    continue  # test rows carry no labels
                if not label:
                    raise ListError(f"{where}: empty label in a {split} row")
                candidates = stems.split("|")
                path = next((index[s] for s in candidates if s in index),
                            by_youtube_id.get(candidates[-1]))
                if path is None:
                    missing.append(stems.split("|")[0])
                    continue
                samples.append((split, label, path, where))
    else:
        by_split = _split_folders(videos)
        if by_split:
            layout = "split-folders"
            for split, folder in sorted(by_split.items()):
                samples += [(s, c, f, str(f)) for s, c, f in _class_folders(folder, exts, split, ignored)]
        else:
            layout = "class-folders"
            rng = np.random.default_rng(seed)
            per_class: dict[str, list[Path]] = {}
            for _, cls, f in _class_folders(videos, exts, "", ignored):
                per_class.setdefault(cls, []).append(f)
            for cls in sorted(per_class):
                files = per_class[cls]
                order = rng.permutation(len(files))
                n_val = round(len(files) * val_fraction)
                if val_fraction > 0 and len(files) >= 2:
                    n_val = min(max(n_val, 1), len(files) - 1)
                val_ids = set(order[:n_val].tolist())
                samples += [("val" if i in val_ids else "train", cls, f, str(f))
                            for i, f in enumerate(files)]
    if ignored:
        _logger.warning("%d video file(s) not inside a class folder were ignored, e.g. %s",
                        len(ignored), ignored[0])
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        _logger.warning("%d annotated video(s) not found under %s: %s%s", len(missing), videos,
                        shown, more)

    if categories is not None:
        names = read_categories(categories)
        class_index = {name: i for i, name in enumerate(names)}
        for _, cls, _, where in samples:
            if cls not in class_index:
                raise ListError(f"{where}: class {cls!r} is not in {categories}")
    else:
        names = sorted({cls for _, cls, _, _ in samples})
        class_index = {name: i for i, name in enumerate(names)}
    counts, outputs = {}, {}
    for split, list_name in (("train", "train_list.txt"), ("val", "val_list.txt")):
        lines = [f"{path.relative_to(root).as_posix()} {class_index[cls]}"
                 for s, cls, path, _ in samples if s == split]
        if not lines:
            raise ListError(f"{videos}: no {split} videos found (layout {layout}, suffixes "
                            f"{', '.join(exts)})")
        outputs[root / list_name] = lines
        counts[split] = len(lines)
    outputs[root / "categories.txt"] = names
    for path, lines in outputs.items():
        _write_atomic(path, lines)
    write_dataset_info(root, "kinetics" if layout == "kinetics-csv" else "videos",
                       "categories-file" if categories is not None else "sorted",
                       Path(categories) if categories is not None else None, layout)
    return {"root": str(root), "layout": layout, "classes": len(names), "train": counts["train"],
            "val": counts["val"], "missing": missing, "ignored": ignored,
            "files": {"train": str(root / "train_list.txt"), "val": str(root / "val_list.txt"),
                      "categories": str(root / "categories.txt")}}


# ---------------------------------------------------------------------------------------------
# prepare-sthv2

class _JSONPairs(list):
    """A JSON object as its ``(key, value)`` pairs, in file order (repeated keys kept)."""


_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _json_type(value: Any) -> str:
    """What ``value`` is called in JSON (for messages)."""
    if isinstance(value, (dict, _JSONPairs)):
        return "object"
    kinds = ((bool, "boolean"), (str, "string"), (list, "array"), ((int, float), "number"))
    for typ, name in kinds:
        if isinstance(value, typ):
            return name
    return "null"


def _read_json(path: Path, pairs: bool = False) -> Any:
    """Parse ``path``; a syntax error becomes a :class:`ListError` naming file, line and column.

    With ``pairs``, JSON objects come back as :class:`_JSONPairs`, so a repeated key is seen
    rather than silently replaced by the last one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ListError(f"{path}: not UTF-8 text ({exc})") from None
    try:
        return json.loads(text, object_pairs_hook=_JSONPairs if pairs else None)
    except json.JSONDecodeError as exc:
        raise ListError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def _find_annotation(root: Path, names: Sequence[str], annotations_dir: Optional[str | Path],
                     near: Optional[Path] = None) -> Path:
    """The first of ``names`` in ``annotations_dir`` (relative to ``root`` or absolute), else in
    ``near`` (the labels JSON's folder) and then ``root``, ``root/labels``, ``root/annotations``."""
    return _find_label_file(root, names, annotations_dir, "Something-Something V2 annotations",
                            near, missing="{what}: {names} not found in {dirs}; put the "
                                          "downloaded labels/ folder there or pass "
                                          "--annotations-dir DIR")


def _read_sthv2_labels(path: Path) -> list[str]:
    """``{"class name": "index", ...}`` -> class names in index order (indices exactly 0..N-1)."""
    raw = _read_json(path, pairs=True)
    if not isinstance(raw, _JSONPairs):
        raise ListError(f"{path}: expected a JSON object {{\"class name\": \"index\", ...}}, got "
                        f"a JSON {_json_type(raw)}")
    if not raw:
        raise ListError(f"{path}: no classes")
    names: dict[int, str] = {}
    seen: set[str] = set()
    for key, value in raw:
        name = key.strip()  # the name categories.txt will hold
        where = f"{path}: class {key!r}"
        if name in seen:
            raise ListError(f"{where} appears twice")
        seen.add(name)
        if not name:
            raise ListError(f"{where}: empty class name")
        if "\n" in name or "\r" in name:
            raise ListError(f"{where}: a class name cannot span lines (categories.txt has one "
                            f"a line)")
        shown = json.dumps(value)[:80]  # as the file has it: "3"
        if isinstance(value, bool) or not (isinstance(value, int) or (
                isinstance(value, str) and _INTEGER.fullmatch(value))):
            raise ListError(f"{where}: index {shown} is not an integer")
        index = int(value)
        if not 0 <= index < len(raw):
            raise ListError(f"{where}: index {shown} is outside 0..{len(raw) - 1} (the indices "
                            f"of its {len(raw)} classes must be exactly 0..{len(raw) - 1})")
        if index in names:
            raise ListError(f"{where}: index {shown} is already class {names[index]!r}")
        names[index] = name
    return [names[i] for i in range(len(raw))]  # N distinct indices in 0..N-1: all present


def _read_sthv2_split(path: Path, class_index: dict[str, int],
                      labels_name: str = "labels.json") -> list[tuple[str, int]]:
    """A train/validation JSON -> ``(id, class index)`` in file order; entries counted from 1."""
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise ListError(f"{path}: expected a JSON array of {{\"id\", \"template\", ...}} "
                        f"objects, got a JSON {_json_type(raw)}")
    rows: list[tuple[str, int]] = []
    for number, entry in enumerate(raw, 1):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise ListError(f"{where}: expected an object with 'id' and 'template', got "
                            f"{json.dumps(entry)[:80]}")
        if "id" not in entry:
            raise ListError(f"{where}: missing field 'id'")
        vid = entry["id"]
        if isinstance(vid, bool) or not isinstance(vid, (str, int)):
            raise ListError(f"{where}: 'id' must be a string, got {json.dumps(vid)[:80]}")
        vid = str(vid)
        if not vid or any(c.isspace() or c in "/\\" for c in vid) or vid in (".", ".."):
            raise ListError(f"{where}: id {vid!r} cannot name a file (empty, or has a space or "
                            f"a slash)")
        where = f"{where} (id {vid!r})"
        if "template" not in entry:
            raise ListError(f"{where}: missing field 'template'")
        template = entry["template"]
        if not isinstance(template, str):
            raise ListError(f"{where}: 'template' must be a string, got "
                            f"{json.dumps(template)[:80]}")
        name = template.replace("[", "").replace("]", "").strip()
        if name not in class_index:
            raise ListError(f"{where}: unknown class {name!r} (template {template!r} is not in "
                            f"{labels_name})")
        rows.append((vid, class_index[name]))
    return rows


def prepare_sthv2(root: str | Path, videos_dir: str = "20bn-something-something-v2",
                  annotations_dir: Optional[str | Path] = None, frames_dir: Optional[str] = None,
                  frame_tmpl: str = "{:05d}.jpg", ext: str = ".webm",
                  progress: bool = True) -> dict[str, Any]:
    """Write ``categories.txt`` and the train/val lists for Something-Something V2 in ``root``.

    Reads ``labels.json`` (``{"class name": "index"}``; the indices, strings as distributed,
    give the order of ``categories.txt`` and must be exactly 0..N-1), ``train.json`` and
    ``validation.json`` (arrays of ``{"id", "label", "template", "placeholders"}``; older
    releases name them ``something-something-v2-{labels,train,validation}.json``, also read;
    "template", ...}``; a sample's class is its template without the square brackets:
    ``"Holding [something] next to [something]"`` -> ``"Holding something next to
    something"``). The JSONs are looked for in ``annotations_dir`` when given, else in
    ``root``, ``root/labels``, ``root/annotations`` (first found; the split files beside the
    labels file first). The test JSON (no labels) is not used.

    Without ``frames_dir`` the lists name the videos: ``train_list.txt`` / ``val_list.txt``
    with ``<videos_dir>/<id><ext> <class_index>`` (paths relative to ``root``, as
    :func:`prepare_videos` writes them, so ``data.videos_dir`` stays unset). With
    ``frames_dir`` (frames extracted to ``root/<frames_dir>/<id>/``) the frames of every video
    are counted and ``train_videofolder.txt`` / ``val_videofolder.txt`` (``<id> <num_frames>
    <class_index>``) are written, as :func:`prepare_jester` does. A video whose file (or frame
    folder) is missing or empty is logged, left out and counted; nothing is written unless
    both splits keep at least one video.

    Args:
        root: dataset root.
        videos_dir: folder of the ``<id><ext>`` videos, relative to ``root``.
        annotations_dir: folder of the JSONs (relative to ``root``, or absolute).
        frames_dir: folder of extracted frame folders, relative to ``root``; given, the frame
            lists are written instead of the video lists.
        frame_tmpl: frame file names (1-based index), with ``frames_dir``.
        ext: video file suffix (``.webm`` as distributed).
        progress: show a tqdm bar while checking videos / counting frames.

    Returns:
        ``{"root", "format", "classes", "train", "val", "missing", "annotations", "files"}``:
        ``format`` is ``"videos"`` or ``"frames"``; ``train``/``val`` the videos listed;
        ``missing`` the ids left out (train's, then val's); ``annotations`` the folder of the
        labels JSON.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ListError(f"dataset root not found: {root}")
    ext = f".{ext}" if ext and not ext.startswith(".") else ext
    labels_path = _find_annotation(root, STHV2_FILES["labels"], annotations_dir)
    names = _read_sthv2_labels(labels_path)
    class_index = {name: i for i, name in enumerate(names)}
    splits = {"train": ("train_list.txt", "train_videofolder.txt"),
              "val": ("val_list.txt", "val_videofolder.txt")}
    sources = {split: _find_annotation(root, STHV2_FILES[split], annotations_dir,
                                       labels_path.parent)
               for split in splits}
    rows = {split: _read_sthv2_split(path, class_index, labels_path.name)
            for split, path in sources.items()}

    fmt = "videos" if frames_dir is None else "frames"
    if fmt == "videos":
        media = root / videos_dir
        if not media.is_dir():
            raise ListError(f"video folder not found: {media} (expected {media}/<id>{ext}); "
                            f"pass --videos-dir DIR (relative to {root}), or --frames-dir DIR "
                            f"for extracted frames")
        present = {entry.name for entry in os.scandir(media) if entry.is_file()}
        prefix = Path(videos_dir).as_posix().rstrip("/")
        prefix = "" if prefix in ("", ".") else f"{prefix}/"
    else:
        media = root / frames_dir
        if not media.is_dir():
            raise ListError(f"frame folder root not found: {media} (expected "
                            f"{media}/<id>/{frame_tmpl.format(1)} ...)")

    summary: dict[str, Any] = {"root": str(root), "format": fmt, "classes": len(names),
                               "missing": [], "annotations": str(labels_path.parent), "files": {}}
    outputs = {"categories": (root / "categories.txt", names)}
    for split, (video_list, frame_list) in splits.items():
        source = sources[split]
        lines, skipped = [], []
        desc = f"check videos ({split})" if fmt == "videos" else f"count frames ({split})"
        for vid, label in tqdm(rows[split], desc=desc, unit="video", disable=not progress):
            if fmt == "videos":
                if f"{vid}{ext}" in present:
                    lines.append(f"{prefix}{vid}{ext} {label}")
                    continue
                why = f"{media / (vid + ext)} missing"
            else:
                n = count_frames(media / vid, frame_tmpl)
                if n:
                    lines.append(f"{vid} {n} {label}")
                    continue
                why = f"{media / vid} " + ("has no frames" if (media / vid).is_dir() else "missing")
            skipped.append(vid)
            if len(skipped) <= _MAX_LISTED:
                _logger.warning("%s (%s): video %s left out: %s", source.name, split, vid, why)
        if len(skipped) > _MAX_LISTED:
            _logger.warning("%s: %d more videos left out (%s)", source.name,
                            len(skipped) - _MAX_LISTED,
                            f"no {ext} file" if fmt == "videos" else "missing or empty folders")
        if not lines:
            what = f"has a {ext} file in" if fmt == "videos" else "has frames under"
            raise ListError(f"{source}: none of its {len(rows[split])} videos {what} {media}")
        if skipped:
            _logger.warning("%s (%s): %d of %d videos left out", source.name, split, len(skipped),
                            len(rows[split]))
        list_name = video_list if fmt == "videos" else frame_list
        outputs[split] = (root / list_name, lines)
        summary[split] = len(lines)
        summary["missing"] += skipped
    # Written only once every list is known good: no mix of old and new lists after an error.
    for key, (path, lines) in outputs.items():
        _write_atomic(path, lines)
        summary["files"][key] = str(path)
    summary["dataset_info"] = str(write_dataset_info(
        root, "sthv2", "label-file", labels_path,
        f"videos:{videos_dir}" if fmt == "videos" else f"frames:{frames_dir}"))
    return summary
