"""Tiny replicas of the four datasets as their official downloads unpack (file names, separators,
JSON shapes, folder names), for the end-to-end tests of the README's workflows.

* 20BN-Jester v1: ``jester-v1-labels.csv`` (a name a line, no header), ``jester-v1-train.csv`` /
  ``-validation.csv`` (``<id>;<label>``), ``jester-v1-test.csv`` (``<id>``), frames
  ``20bn-jester-v1/<id>/00001.jpg ...``.
* Something-Something V1: the same with ``something-something-v1-*`` and
  ``20bn-something-something-v1/``; its class names have commas and apostrophes.
* Something-Something V2: ``labels/labels.json`` (``{"template": "index"}``), ``labels/train.json``
  / ``validation.json`` (``[{"id", "label", "template", "placeholders"}]``, templates with
  ``[something]``), ``labels/test.json`` (``[{"id"}]``), VP9 videos
  ``20bn-something-something-v2/<id>.webm``.
* Kinetics-400: ``annotations/{train,val,test}.csv`` (``label,youtube_id,time_start,time_end,
  split,is_cc``; quoted labels with spaces, parentheses, apostrophes; ids starting with ``-``),
  H.264 videos ``train/<label>/<id>_<start:06d>_<end:06d>.mp4`` and, as the CVDF archives unpack,
  flat ``val/<id>_<start:06d>_<end:06d>.mp4``; one listed video is missing.

Where the order of the label file differs from the alphabet, fastvid's ``categories.txt`` and a
peer's (TRN-pytorch sorts) differ, which the class-order tests rely on.
"""
from __future__ import annotations

import json
from pathlib import Path

from _media import write_frame_folder, write_video

# Label-file order, not alphabetical (so sorted != as listed).
JESTER_CLASSES = ["Swiping Left", "Swiping Right", "Doing other things", "Thumb Up"]
STHV1_CLASSES = ["Pushing something from left to right", "Holding something next to something",
                 "Putting something, something and something on the table",
                 "Pretending to pick something up"]
# index order of labels.json, which is also not its key order
STHV2_TEMPLATES = ["Holding [something] next to [something]",
                   "Approaching [something] with your camera",
                   "Pushing [something] from left to right"]
# 'jumping jacks' / 'jumping-rope': sorted() and mmaction2's underscore sort disagree.
KINETICS_CLASSES = ["passing American football (in game)", "massaging person's head",
                    "jumping-rope", "jumping jacks"]


def _frames_replica(root: Path, prefix: str, frames_dir: str, classes: list[str],
                    per_class: int, frames: int, crlf: bool) -> Path:
    eol = "\r\n" if crlf else "\n"
    (root / f"{prefix}-labels.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}-labels.csv").write_text(eol.join(classes) + eol, newline="")
    train, val = [], []
    vid = 10001
    for c, name in enumerate(classes):
        for k in range(per_class + 1):
            (val if k == per_class else train).append((str(vid), name))
            write_frame_folder(root / frames_dir / str(vid), frames + (vid % 3), 72, 96,
                               seed=vid % 97)
            vid += 1
    for split, rows in (("train", train), ("validation", val)):
        (root / f"{prefix}-{split}.csv").write_text(
            "".join(f"{v};{n}{eol}" for v, n in rows), newline="")
    (root / f"{prefix}-test.csv").write_text(f"{vid}{eol}", newline="")
    return root


def jester_replica(root: str | Path, per_class: int = 2, frames: int = 8) -> Path:
    """20BN-Jester v1 as downloaded and unpacked (labels beside the frames)."""
    return _frames_replica(Path(root), "jester-v1", "20bn-jester-v1", JESTER_CLASSES, per_class,
                           frames, crlf=False)


def sthv1_replica(root: str | Path, per_class: int = 2, frames: int = 8) -> Path:
    """Something-Something V1 as downloaded (CRLF line ends, as Windows-saved copies have)."""
    return _frames_replica(Path(root), "something-something-v1", "20bn-something-something-v1",
                           STHV1_CLASSES, per_class, frames, crlf=True)


def sthv2_name(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def sthv2_replica(root: str | Path, per_class: int = 2, frames: int = 10) -> Path:
    """Something-Something V2 as downloaded: labels/*.json + VP9 webm videos."""
    root = Path(root)
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    # key order differs from index order: the indices decide
    mapping = {sthv2_name(t): str(i) for i, t in enumerate(STHV2_TEMPLATES)}
    keys = sorted(mapping, reverse=True)
    (labels / "labels.json").write_text(json.dumps({k: mapping[k] for k in keys}, indent=1))
    train, val = [], []
    vid = 70001
    for c, template in enumerate(STHV2_TEMPLATES):
        for k in range(per_class + 1):
            entry = {"id": str(vid), "label": template.replace("[something]", "a cup"),
                     "template": template,
                     "placeholders": ["a cup"] * template.count("[something]")}
            (val if k == per_class else train).append(entry)
            write_video(root / "20bn-something-something-v2" / f"{vid}.webm", frames, 72, 96,
                        "vp9", seed=vid % 97, fps=12)
            vid += 1
    (labels / "train.json").write_text(json.dumps(train, indent=1))
    (labels / "validation.json").write_text(json.dumps(val, indent=1))
    (labels / "test.json").write_text(json.dumps([{"id": str(vid)}], indent=1))
    return root


def kinetics_replica(root: str | Path, per_class: int = 2, frames: int = 12) -> Path:
    """Kinetics-400 as downloaded: annotations/*.csv + H.264 clips (train in class folders,
    val flat as the CVDF archives unpack); one train row's video is missing."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    rows = {"train": [], "val": []}
    n = 0
    for c, label in enumerate(KINETICS_CLASSES):
        for k in range(per_class + 1):
            split = "val" if k == per_class else "train"
            yid = f"-{chr(97 + c)}Xy_{k:02d}z{n:02d}"  # ids may start with '-' and hold '_'
            start, end = 10 * n, 10 * n + 10
            name = f"{yid}_{start:06d}_{end:06d}"
            folder = root / "train" / label if split == "train" else root / "val"
            write_video(folder / name, frames, 72, 96, "h264", seed=n, fps=12)
            rows[split].append(f'"{label}",{yid},{start},{end},{split},0\n')
            n += 1
    rows["train"].append(f'"{KINETICS_CLASSES[0]}",gone_video,0,10,train,0\n')  # not downloaded
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.csv").write_text(header + "".join(rows[split]))
    (root / "annotations" / "test.csv").write_text(
        "youtube_id,time_start,time_end,split\nzzz,0,10,test\n")
    return root
