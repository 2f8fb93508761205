"""`fastvid data unpack-jester / prepare-jester / prepare-videos / prepare-sthv2` on small
generated inputs."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from fastvid.cli import cli
from fastvid.data.lists import ListError, parse_frame_list, parse_video_list, read_categories
from fastvid.data.prepare import (count_frames, prepare_jester, prepare_sthv2, prepare_videos,
                                  unpack_jester)
from fastvid.errors import DataError, FastvidError

CLASSES = ["Swiping Left", "Swiping Right", "Thumb Up"]  # spaces, as Jester's names have


def _jpeg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (shade, 100, 200)).save(path)


def _jester_root(root: Path, header: bool) -> Path:
    """labels/*.csv + frame folders; video 104 has an empty folder and 105 none at all."""
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.csv").write_text(("label\n" if header else "") + "\n".join(CLASSES) + "\n")
    head = "id;label\n" if header else ""
    (labels / "train.csv").write_text(head + "101;Thumb Up\n102;Swiping Left\n104;Swiping Right\n"
                                      "105;Thumb Up\n")
    (labels / "validation.csv").write_text(head + "201;Swiping Right\r\n\r\n202;Thumb Up\r\n")
    frames = {"101": 5, "102": 3, "201": 4, "202": 2}
    for vid, n in frames.items():
        for k in range(1, n + 1):
            _jpeg(root / "20bn-jester-v1" / vid / f"{k:05d}.jpg", k)
    (root / "20bn-jester-v1" / "104").mkdir()
    return root


@pytest.mark.parametrize("header", [False, True])
def test_prepare_jester_lists(tmp_path, header, caplog):
    root = _jester_root(tmp_path / "jester", header)
    with caplog.at_level(logging.WARNING, logger="fastvid.data.prepare"):
        summary = prepare_jester(root, progress=False)
    assert read_categories(root / "categories.txt") == CLASSES
    train = parse_frame_list(root / "train_videofolder.txt", root / "20bn-jester-v1", 3,
                             check_frames=True)
    val = parse_frame_list(root / "val_videofolder.txt", root / "20bn-jester-v1", 3,
                           check_frames=True)
    assert [(Path(r.path).name, r.num_frames, r.label) for r in train] == [("101", 5, 2), ("102", 3, 0)]
    assert [(Path(r.path).name, r.num_frames, r.label) for r in val] == [("201", 4, 1), ("202", 2, 2)]
    assert summary["skipped"] == {"train": ["104", "105"], "val": []}
    assert summary["num_skipped"] == 2 and (summary["train"], summary["val"]) == (2, 2)
    logged = caplog.text
    assert "104" in logged and "has no frames" in logged and "105" in logged and "missing" in logged


def test_prepare_jester_errors_name_file_and_line(tmp_path):
    root = _jester_root(tmp_path / "j", header=False)
    (root / "labels" / "validation.csv").write_text("201;Swiping Right\n202;Thumbs Down\n")
    with pytest.raises(ListError, match=r"validation\.csv:2: unknown class 'Thumbs Down'"):
        prepare_jester(root, progress=False)
    (root / "labels" / "validation.csv").write_text("201 Swiping Right\n")
    with pytest.raises(ListError, match=r"validation\.csv:1: expected 'id;Label'"):
        prepare_jester(root, progress=False)
    (root / "labels" / "labels.csv").write_text("A\nB\nA\n")
    with pytest.raises(ListError, match=r"labels\.csv:3: class 'A' repeats line 1"):
        prepare_jester(root, progress=False)
    (root / "labels" / "labels.csv").unlink()
    with pytest.raises(ListError, match="labels.csv"):
        prepare_jester(root, progress=False)
    assert not (root / "train_videofolder.txt").exists()  # nothing half-written


def test_count_frames_takes_the_unbroken_run(tmp_path):
    for k in (1, 2, 3, 5):
        _jpeg(tmp_path / "v" / f"{k:05d}.jpg")
    assert count_frames(tmp_path / "v") == 3
    assert count_frames(tmp_path / "nope") == 0
    _jpeg(tmp_path / "w" / "img_00001.jpg")
    assert count_frames(tmp_path / "w", "img_{:05d}.jpg") == 1


def test_prepare_jester_cli(tmp_path):
    root = _jester_root(tmp_path / "j", header=True)
    res = CliRunner().invoke(cli, ["data", "prepare-jester", str(root), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "3 classes, 2 train + 2 val videos" in res.output and "2 left out" in res.output
    (root / "labels" / "train.csv").write_text("101;Nope\n")
    res = CliRunner().invoke(cli, ["data", "prepare-jester", str(root), "--no-progress"])
    assert res.exit_code == 1 and "train.csv:1: unknown class 'Nope'" in res.output
    assert "Traceback" not in res.output


# --- unpack-jester -------------------------------------------------------------------------

def _split_archive(zip_dir: Path, members: dict[str, bytes], parts: int = 23) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    zip_dir.mkdir(parents=True, exist_ok=True)
    step = -(-len(blob) // parts)
    for i in range(parts):
        (zip_dir / f"20bn-jester-v1-{i:02d}").write_bytes(blob[i * step:(i + 1) * step])
    return blob


def _frames_members() -> dict[str, bytes]:
    members = {}
    for vid, n in (("1", 3), ("2", 4), ("7", 2)):
        for k in range(1, n + 1):
            img = io.BytesIO()
            Image.new("RGB", (8, 6), (k * 40, 0, 0)).save(img, format="JPEG")
            members[f"20bn-jester-v1/{vid}/{k:05d}.jpg"] = img.getvalue()
    return members


def test_unpack_jester_then_prepare(tmp_path):
    zip_dir = tmp_path / "download"
    members = _frames_members()
    blob = _split_archive(zip_dir, members)
    assert len(blob) > 23  # every part holds bytes, so a wrong order would break the stream
    (zip_dir / "jester-v1-labels.csv").write_text("Doing other things\nNo gesture\n")
    (zip_dir / "jester-v1-train.csv").write_text("1;No gesture\n2;Doing other things\n")
    (zip_dir / "jester-v1-validation.csv").write_text("7;No gesture\n")
    target = tmp_path / "jester"
    res = CliRunner().invoke(cli, ["data", "unpack-jester", str(zip_dir), str(target), "--no-progress"])
    assert res.exit_code == 0, res.output
    for name, data in members.items():
        assert (target / name).read_bytes() == data
    assert (target / "labels" / "train.csv").read_text() == "1;No gesture\n2;Doing other things\n"
    assert not (target / "labels" / "test.csv").exists()
    assert "warning: label files not found: jester-v1-test.csv" in res.output

    summary = prepare_jester(target, progress=False)
    assert (summary["train"], summary["val"], summary["num_skipped"]) == (2, 1, 0)
    assert (target / "train_videofolder.txt").read_text() == "1 3 1\n2 4 0\n"


def test_unpack_jester_missing_or_broken_parts(tmp_path):
    zip_dir = tmp_path / "dl"
    _split_archive(zip_dir, _frames_members())
    (zip_dir / "20bn-jester-v1-07").unlink()
    (zip_dir / "20bn-jester-v1-19").unlink()
    with pytest.raises(FastvidError, match="missing archive part.*20bn-jester-v1-07, 20bn-jester-v1-19"):
        unpack_jester(zip_dir, tmp_path / "t", progress=False)
    res = CliRunner().invoke(cli, ["data", "unpack-jester", str(zip_dir), str(tmp_path / "t")])
    assert res.exit_code == 1 and "20bn-jester-v1-07" in res.output and "Traceback" not in res.output

    # A part cut short in the download: the gzip stream breaks and the message names a part.
    blob = _split_archive(zip_dir, _frames_members())
    middle = zip_dir / "20bn-jester-v1-11"
    middle.write_bytes(middle.read_bytes()[: len(blob) // 23 // 2])
    with pytest.raises(DataError, match=r"not form a valid tar\.gz \(failed while reading 20bn-jester-v1-"):
        unpack_jester(zip_dir, tmp_path / "t2", progress=False)


def test_unpack_jester_refuses_paths_outside_target(tmp_path):
    zip_dir = tmp_path / "dl"
    _split_archive(zip_dir, {"../evil.txt": b"x", "20bn-jester-v1/1/00001.jpg": b"y"}, parts=3)
    with pytest.raises(DataError, match="unsafe"):
        unpack_jester(zip_dir, tmp_path / "t", num_parts=3, progress=False)
    assert not (tmp_path / "evil.txt").exists()


# --- prepare-videos ------------------------------------------------------------------------

def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


def test_prepare_videos_class_folders(tmp_path):
    root = tmp_path / "k"
    for cls, n in (("riding bike", 5), ("archery", 4), ("yoga", 1)):
        for i in range(n):
            _touch(root / "videos" / cls / f"{cls[:3]}{i}.mp4")
    _touch(root / "videos" / "archery" / "notes.txt")
    _touch(root / "videos" / "stray.mp4")
    summary = prepare_videos(root, val_fraction=0.25, seed=3)
    assert summary["layout"] == "class-folders" and summary["ignored"] == [str(root / "videos/stray.mp4")]
    assert read_categories(root / "categories.txt") == ["archery", "riding bike", "yoga"]
    train = parse_video_list(root / "train_list.txt", root, 3, check_files=True)
    val = parse_video_list(root / "val_list.txt", root, 3, check_files=True)
    per_class_val = {c: sum(r.label == c for r in val) for c in range(3)}
    assert per_class_val == {0: 1, 1: 1, 2: 0}  # stratified; a lone video stays in train
    assert len(train) + len(val) == 10
    assert not {r.path for r in train} & {r.path for r in val}
    first = (root / "val_list.txt").read_text()
    prepare_videos(root, val_fraction=0.25, seed=3)
    assert (root / "val_list.txt").read_text() == first  # deterministic from the seed


def test_prepare_videos_split_folders_and_categories(tmp_path):
    root = tmp_path / "s"
    for split in ("train", "validate"):
        for cls in ("b", "a"):
            _touch(root / "videos" / split / cls / f"{split}_{cls}.webm")
    cats = tmp_path / "cats.txt"
    cats.write_text("b\na\n")
    summary = prepare_videos(root, categories=cats)
    assert summary["layout"] == "split-folders" and (summary["train"], summary["val"]) == (2, 2)
    assert (root / "val_list.txt").read_text() == ("videos/validate/a/validate_a.webm 1\n"
                                                   "videos/validate/b/validate_b.webm 0\n")
    cats.write_text("b\n")
    with pytest.raises(ListError, match="class 'a' is not in"):
        prepare_videos(root, categories=cats)


def test_prepare_videos_kinetics_csv(tmp_path, caplog):
    root = tmp_path / "kin"
    _touch(root / "videos" / "train" / "abc_000010_000020.mp4")
    _touch(root / "videos" / "train" / "def.mp4")
    _touch(root / "videos" / "val" / "ghi_000000_000010.mp4")
    csv_path = tmp_path / "kinetics_train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                        "abseiling,abc,10,20,train,0\n"
                        "zumba,def,3,13,train,0\n"
                        "zumba,gone,0,10,train,0\n"
                        "abseiling,ghi,0,10,val,0\n"
                        ",tst,0,10,test,0\n")
    with caplog.at_level(logging.WARNING, logger="fastvid.data.prepare"):
        summary = prepare_videos(root, split_files=[csv_path])
    assert summary["layout"] == "kinetics-csv" and summary["missing"] == ["gone_000000_000010"]
    assert "gone_000000_000010" in caplog.text
    assert (root / "train_list.txt").read_text() == ("videos/train/abc_000010_000020.mp4 0\n"
                                                     "videos/train/def.mp4 1\n")
    assert (root / "val_list.txt").read_text() == "videos/val/ghi_000000_000010.mp4 0\n"

    # No split column: the file names say train/val; no times: any trimmed file of that id.
    csv_path.write_text("label,youtube_id\nabseiling,abc\n")
    val_csv = tmp_path / "kinetics_val.csv"
    val_csv.write_text("label,youtube_id\nyoga,ghi\n")
    summary = prepare_videos(root, split_files=[csv_path, val_csv])
    assert (summary["train"], summary["val"], summary["missing"]) == (1, 1, [])
    assert (root / "val_list.txt").read_text() == "videos/val/ghi_000000_000010.mp4 1\n"
    with pytest.raises(ListError, match="no val videos"):
        prepare_videos(root, split_files=[csv_path])
    bad = tmp_path / "validate.csv"
    bad.write_text("name,id\nx,y\n")
    with pytest.raises(ListError, match=r"validate\.csv:1: .*lacks column\(s\) label, youtube_id"):
        prepare_videos(root, split_files=[bad])


def test_prepare_videos_cli(tmp_path):
    root = tmp_path / "c"
    for cls in ("x", "y"):
        for i in range(3):
            _touch(root / "videos" / cls / f"{i}.avi")
            _touch(root / "videos" / cls / f"{i}.mp4")
    res = CliRunner().invoke(cli, ["data", "prepare-videos", str(root), "--ext", "avi",
                                   "--val-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    assert "2 classes, 4 train + 2 val videos (class-folders)" in res.output
    assert ".mp4" not in (root / "train_list.txt").read_text()
    res = CliRunner().invoke(cli, ["data", "prepare-videos", str(tmp_path / "none")])
    assert res.exit_code == 1 and "video folder not found" in res.output


# --- prepare-sthv2 -------------------------------------------------------------------------

# Index order (Holding, Approaching, Pushing) differs from the file's order and the alphabet's.
STH_LABELS = {"Pushing something from left to right": "2",
              "Holding something next to something": "0",
              "Approaching something with your camera": "1"}
STH_CLASSES = ["Holding something next to something", "Approaching something with your camera",
               "Pushing something from left to right"]
STH_TEMPLATES = {0: "Holding [something] next to [something]",
                 1: "Approaching [something] with your camera",
                 2: "Pushing [something] from left to right"}
STH_TRAIN = [("11", 0), ("12", 2), ("13", 1), ("14", 2)]  # 13's video is missing
STH_VAL = [("21", 1), ("22", 0)]
STH_VIDEOS = "20bn-something-something-v2"


def _sth_entries(rows: list[tuple[str, int]]) -> list[dict]:
    return [{"id": vid, "label": STH_TEMPLATES[c].replace("[something]", "a cup"),
             "template": STH_TEMPLATES[c], "placeholders": ["a cup"] * STH_TEMPLATES[c].count("[")}
            for vid, c in rows]


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))  # one value a line, as distributed


def _sthv2_root(root: Path, annotations: str = "labels", videos: bool = True) -> Path:
    """Sth-v2 as distributed: the JSONs in ``root/annotations`` + empty ``<id>.webm`` files
    (listing does not decode) for every id but 13."""
    meta = root / annotations
    _write_json(meta / "something-something-v2-labels.json", STH_LABELS)
    _write_json(meta / "something-something-v2-train.json", _sth_entries(STH_TRAIN))
    _write_json(meta / "something-something-v2-validation.json", _sth_entries(STH_VAL))
    _write_json(meta / "something-something-v2-test.json", [{"id": "31"}])
    if videos:
        for vid, _ in STH_TRAIN + STH_VAL:
            if vid != "13":
                _touch(root / STH_VIDEOS / f"{vid}.webm")
    return root


@pytest.mark.parametrize("annotations", [".", "labels", "annotations"])
def test_prepare_sthv2_video_lists(tmp_path, annotations, caplog):
    root = _sthv2_root(tmp_path / "sth", annotations)
    with caplog.at_level(logging.WARNING, logger="fastvid.data.prepare"):
        summary = prepare_sthv2(root, progress=False)
    assert (root / "categories.txt").read_text() == "".join(f"{c}\n" for c in STH_CLASSES)
    assert (root / "train_list.txt").read_text() == (f"{STH_VIDEOS}/11.webm 0\n"
                                                     f"{STH_VIDEOS}/12.webm 2\n"
                                                     f"{STH_VIDEOS}/14.webm 2\n")
    assert (root / "val_list.txt").read_text() == (f"{STH_VIDEOS}/21.webm 1\n"
                                                   f"{STH_VIDEOS}/22.webm 0\n")
    assert parse_video_list(root / "train_list.txt", root, 3, check_files=True)[2].label == 2
    assert summary["format"] == "videos" and summary["missing"] == ["13"]
    assert (summary["classes"], summary["train"], summary["val"]) == (3, 3, 2)
    assert summary["annotations"] == str(root / annotations)
    assert set(summary["files"]) == {"categories", "train", "val"}
    assert "video 13 left out" in caplog.text and "13.webm missing" in caplog.text
    assert not (root / "train_videofolder.txt").exists()


def test_prepare_sthv2_annotations_dir_and_options(tmp_path):
    root = _sthv2_root(tmp_path / "sth", "meta", videos=False)
    for vid, _ in STH_TRAIN + STH_VAL:
        _touch(root / "clips" / f"{vid}.mp4")
    summary = prepare_sthv2(root, videos_dir="clips", annotations_dir="meta", ext="mp4",
                            progress=False)
    assert (summary["train"], summary["val"], summary["missing"]) == (4, 2, [])
    assert (root / "val_list.txt").read_text() == "clips/21.mp4 1\nclips/22.mp4 0\n"
    # An absolute annotations_dir works too; the default places do not hold the JSONs.
    assert prepare_sthv2(root, videos_dir="clips", annotations_dir=root / "meta", ext=".mp4",
                         progress=False)["train"] == 4
    with pytest.raises(ListError, match=r"something-something-v2-labels\.json not found in "
                                        r".*sth, .*sth/labels, .*sth/annotations"):
        prepare_sthv2(root, videos_dir="clips", progress=False)


def test_prepare_sthv2_frames(tmp_path, caplog):
    root = _sthv2_root(tmp_path / "sth", videos=False)
    tmpl = "img_{:05d}.jpg"
    for vid, n in (("11", 3), ("12", 2), ("21", 4), ("22", 1)):
        for k in range(1, n + 1):
            _jpeg(root / "frames" / vid / tmpl.format(k), k)
    (root / "frames" / "14").mkdir()
    with caplog.at_level(logging.WARNING, logger="fastvid.data.prepare"):
        summary = prepare_sthv2(root, frames_dir="frames", frame_tmpl=tmpl, progress=False)
    assert summary["format"] == "frames" and summary["missing"] == ["13", "14"]
    assert (root / "train_videofolder.txt").read_text() == "11 3 0\n12 2 2\n"
    assert (root / "val_videofolder.txt").read_text() == "21 4 1\n22 1 0\n"
    val = parse_frame_list(root / "val_videofolder.txt", root / "frames", 3, check_frames=True,
                           frame_tmpl=tmpl)
    assert [(r.num_frames, r.label) for r in val] == [(4, 1), (1, 0)]
    assert read_categories(root / "categories.txt") == STH_CLASSES
    assert "13 missing" in caplog.text and "14 has no frames" in caplog.text
    assert not (root / "train_list.txt").exists()
    with pytest.raises(ListError, match="frame folder root not found"):
        prepare_sthv2(root, frames_dir="nope", progress=False)


@pytest.mark.parametrize("labels, fragment", [
    ({"A": "0", "B": "2"}, r"class 'B': index \"2\" is outside 0\.\.1"),
    ({"A": "1", "B": "1"}, r"class 'B': index \"1\" is already class 'A'"),
    ({"A": "0", "B": "one"}, r"class 'B': index \"one\" is not an integer"),
    ({"A": "0", "B": 1.5}, r"class 'B': index 1\.5 is not an integer"),
    ('{"A": "0", "A": "1"}', r"class 'A' appears twice"),
    (["A", "B"], r"expected a JSON object .* got a JSON array"),
    ({}, "no classes"),
], ids=["out-of-range", "duplicate-index", "not-an-int", "float", "repeated-class", "array",
        "empty"])
def test_prepare_sthv2_bad_labels(tmp_path, labels, fragment):
    root = _sthv2_root(tmp_path / "sth")
    path = root / "labels" / "something-something-v2-labels.json"
    path.write_text(labels if isinstance(labels, str) else json.dumps(labels))
    with pytest.raises(ListError, match=rf"labels/something-something-v2-labels\.json: {fragment}"):
        prepare_sthv2(root, progress=False)
    assert not (root / "categories.txt").exists() and not (root / "train_list.txt").exists()


def test_prepare_sthv2_bad_entries(tmp_path):
    root = _sthv2_root(tmp_path / "sth")
    train = root / "labels" / "something-something-v2-train.json"
    val = root / "labels" / "something-something-v2-validation.json"
    entries = _sth_entries(STH_TRAIN)
    entries[2]["template"] = "Pushing [something] from up to down"
    _write_json(train, entries)
    with pytest.raises(ListError, match=r"something-something-v2-train\.json: entry 3 \(id '13'\): "
                                        r"unknown class 'Pushing something from up to down'"):
        prepare_sthv2(root, progress=False)
    del entries[2]["template"]
    _write_json(train, entries)
    with pytest.raises(ListError, match=r"train\.json: entry 3 \(id '13'\): missing field "
                                        r"'template'"):
        prepare_sthv2(root, progress=False)
    _write_json(train, [{"template": STH_TEMPLATES[0]}])
    with pytest.raises(ListError, match=r"train\.json: entry 1: missing field 'id'"):
        prepare_sthv2(root, progress=False)
    _write_json(train, [{"id": "1 2", "template": STH_TEMPLATES[0]}])
    with pytest.raises(ListError, match=r"train\.json: entry 1: id '1 2' cannot name a file"):
        prepare_sthv2(root, progress=False)
    _write_json(train, [["11", STH_TEMPLATES[0]]])
    with pytest.raises(ListError, match=r"train\.json: entry 1: expected an object"):
        prepare_sthv2(root, progress=False)
    _write_json(train, {"11": STH_TEMPLATES[0]})
    with pytest.raises(ListError, match=r"train\.json: expected a JSON array .* got a JSON object"):
        prepare_sthv2(root, progress=False)
    _write_json(train, _sth_entries(STH_TRAIN))
    lines = json.dumps(_sth_entries(STH_VAL), indent=1).splitlines()
    lines[3] = lines[3].rstrip(",")  # the comma after the first entry's "label"
    val.write_text("\n".join(lines))
    with pytest.raises(ListError, match=r"something-something-v2-validation\.json:5:\d+: invalid "
                                        r"JSON: Expecting ',' delimiter"):
        prepare_sthv2(root, progress=False)
    val.unlink()
    with pytest.raises(ListError, match=r"something-something-v2-validation\.json not found in"):
        prepare_sthv2(root, progress=False)
    assert not (root / "categories.txt").exists() and not (root / "train_list.txt").exists()


def test_prepare_sthv2_missing_videos(tmp_path):
    root = _sthv2_root(tmp_path / "sth", videos=False)
    with pytest.raises(ListError, match=rf"video folder not found: .*{STH_VIDEOS}"):
        prepare_sthv2(root, progress=False)
    _touch(root / STH_VIDEOS / "11.webm")
    with pytest.raises(ListError, match=r"something-something-v2-validation\.json: none of its 2 "
                                        r"videos has a \.webm file in"):
        prepare_sthv2(root, progress=False)
    assert not (root / "train_list.txt").exists()  # train was fine, but nothing is half-written


def test_prepare_sthv2_cli(tmp_path):
    root = _sthv2_root(tmp_path / "sth", "annotations")
    res = CliRunner().invoke(cli, ["data", "prepare-sthv2", str(root), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert ("3 classes, 3 train + 2 val videos (videos) listed in" in res.output
            and "1 left out (missing videos)" in res.output)
    res = CliRunner().invoke(cli, ["data", "prepare-sthv2", str(root), "--no-progress",
                                   "--frames-dir", "frames"])
    assert res.exit_code == 1 and "frame folder root not found" in res.output
    assert "Traceback" not in res.output
    _write_json(root / "annotations" / "something-something-v2-labels.json", {"A": "1"})
    res = CliRunner().invoke(cli, ["data", "prepare-sthv2", str(root), "--no-progress"])
    assert res.exit_code == 1 and "something-something-v2-labels.json: class 'A'" in res.output


@pytest.fixture(scope="module")
def sthv2_videos(tmp_path_factory) -> Path:
    """Sth-v2 laid out with real VP9 webm videos (64x64, 12 fps), lists by the CLI."""
    from _media import write_video

    root = _sthv2_root(tmp_path_factory.mktemp("sthv2_e2e"), videos=False)
    for vid, _ in STH_TRAIN + STH_VAL:
        if vid != "13":
            write_video(root / STH_VIDEOS / vid, num_frames=10 + int(vid) % 4, height=64, width=64,
                        codec="vp9", seed=int(vid), fps=12)
    res = CliRunner().invoke(cli, ["data", "prepare-sthv2", str(root), "--no-progress"])
    assert res.exit_code == 0, res.output
    return root


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali-cpu", marks=pytest.mark.dali)])
def test_prepare_sthv2_videos_load(sthv2_videos, backend):
    """prepare-sthv2's lists + the shipped Sth-v2 config feed the loaders (2D TRN input)."""
    import torch

    from fastvid.config import load_config, replace
    from fastvid.data.lists import resolve_dataset
    from fastvid.loaders import build_loader

    root = sthv2_videos
    val = parse_video_list(root / "val_list.txt", root, 3, check_files=True)
    assert [(Path(r.path).name, r.label) for r in val] == [("21.webm", 1), ("22.webm", 0)]
    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(configs / "trn_bninception_sthv2.yaml")
    cfg = replace(cfg, model={"num_segments": 4}, data={"image_size": 56, "scale_size": 64},
                  train={"batch_size": 2, "workers": 0})
    ds = resolve_dataset(root, cfg.data)
    assert ds.format == "videos" and ds.categories == STH_CLASSES
    for split, labels in (("val", [[1, 0]]), ("train", None)):
        loader = build_loader(cfg, ds, split, loader=backend, device=torch.device("cpu"))
        batches = list(loader)
        assert loader.backend == backend and loader.bad_samples == []
        assert len(batches) == 1  # train: 3 videos, batch 2, the last one dropped
        video, label = batches[0]
        assert video.shape == (2, 4, 3, 56, 56) and video.dtype == torch.float32
        assert video.std() > 1  # decoded pixels, not blank frames
        if labels is not None:
            assert [label.tolist()] == labels
        else:
            assert set(label.tolist()) <= {0, 2}


# --- official download layouts -------------------------------------------------------------

@pytest.mark.parametrize("where", [".", "labels", "annotations"])
def test_prepare_jester_reads_the_download_names(tmp_path, where):
    """jester-v1-*.csv as downloaded, beside the frames or under labels/ / annotations/."""
    root = _jester_root(tmp_path / "j", header=False)
    folder = root if where == "." else root / where
    folder.mkdir(exist_ok=True)
    for short in ("labels", "train", "validation"):
        (root / "labels" / f"{short}.csv").rename(folder / f"jester-v1-{short}.csv")
    (folder / "jester-v1-test.csv").write_text("301\n302\n")
    summary = prepare_jester(root, progress=False)
    assert summary["labels"] == str(folder / "jester-v1-labels.csv")
    assert read_categories(root / "categories.txt") == CLASSES
    assert (summary["train"], summary["val"]) == (2, 2)
    info = json.loads((root / "dataset.json").read_text())
    assert info["dataset"] == "jester" and info["class_order"] == "label-file"


def test_prepare_frames_missing_files_name_the_places_and_options(tmp_path):
    root = _jester_root(tmp_path / "j", header=False)
    (root / "labels" / "labels.csv").unlink()
    with pytest.raises(ListError) as err:
        prepare_jester(root, progress=False)
    text = str(err.value)
    assert "jester-v1-labels.csv or labels.csv" in text and "--labels-dir" in text
    assert str(root / "annotations") in text
    root = _jester_root(tmp_path / "k", header=False)
    (root / "labels" / "validation.csv").unlink()
    with pytest.raises(ListError, match=r"validation split not found: looked for "
                                        r"jester-v1-validation\.csv or validation\.csv"):
        prepare_jester(root, progress=False)
    root = _jester_root(tmp_path / "m", header=False)
    (root / "20bn-jester-v1").rename(root / "frames")
    with pytest.raises(ListError, match=r"20bn-jester-v1 \(expected .*\); pass --frames-dir"):
        prepare_jester(root, progress=False)
    assert prepare_jester(root, frames_dir="frames", progress=False)["train"] == 2


def test_prepare_sthv1_download_names_crlf_and_cli(tmp_path):
    from fastvid.data.prepare import prepare_sthv1

    root = tmp_path / "s1"
    names = ["Pushing something from left to right", "Putting something, something and something on the table"]
    root.mkdir()
    (root / "something-something-v1-labels.csv").write_bytes("\r\n".join(names).encode() + b"\r\n")
    (root / "something-something-v1-train.csv").write_bytes(f"1;{names[1]}\r\n".encode())
    (root / "something-something-v1-validation.csv").write_bytes(f"2;{names[0]}\r\n".encode())
    for vid in ("1", "2"):
        _jpeg(root / "20bn-something-something-v1" / vid / "00001.jpg")
    summary = prepare_sthv1(root, progress=False)
    assert read_categories(root / "categories.txt") == names
    assert (root / "train_videofolder.txt").read_text() == "1 1 1\n"
    assert summary["dataset"] == "sthv1"
    res = CliRunner().invoke(cli, ["data", "prepare-sthv1", str(root), "--no-progress"])
    assert res.exit_code == 0 and "2 classes, 1 train + 1 val videos" in res.output
    res = CliRunner().invoke(cli, ["data", "prepare-sthv1", str(tmp_path / "s1"), "--no-progress",
                                   "--labels-dir", "nowhere"])
    assert res.exit_code == 1 and "something-something-v1-labels.csv" in res.output


@pytest.mark.parametrize("labels_name", ["labels.json", "something-something-v2-labels.json"])
def test_prepare_sthv2_current_download_names(tmp_path, labels_name):
    """labels/{labels,train,validation,test}.json as the current download names them."""
    root = tmp_path / "sth"
    meta = root / "labels"
    _write_json(meta / labels_name, STH_LABELS)
    _write_json(meta / "train.json", _sth_entries(STH_TRAIN))
    _write_json(meta / "validation.json", _sth_entries(STH_VAL))
    _write_json(meta / "test.json", [{"id": "31"}])
    for vid, _ in STH_TRAIN + STH_VAL:
        _touch(root / STH_VIDEOS / f"{vid}.webm")
    summary = prepare_sthv2(root, progress=False)
    assert (root / "categories.txt").read_text() == "".join(f"{c}\n" for c in STH_CLASSES)
    assert (summary["train"], summary["val"]) == (4, 2)
    (meta / "validation.json").unlink()
    with pytest.raises(ListError, match=r"validation\.json or something-something-v2-validation"
                                        r"\.json not found in .*--annotations-dir"):
        prepare_sthv2(root, progress=False)


@pytest.mark.parametrize("flat_val", [False, True])
def test_prepare_videos_kinetics_as_downloaded(tmp_path, flat_val, caplog):
    """ROOT/annotations/{train,val}.csv + ROOT/{train,val}/<label>/<id>_<s>_<e>.mp4 (or flat),
    no options: quoted labels with commas-free punctuation, ids starting with '-'."""
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"massaging person\'s head",-abc,5,15,train\n'
        '"passing American football (in game)",xyz,0,10,train\n'
        '"passing American football (in game)",gone,0,10,train\n')
    (root / "annotations" / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"massaging person\'s head",-v1,1,11,val\n')
    _touch(root / "train" / "massaging person's head" / "-abc_000005_000015.mp4")
    _touch(root / "train" / "passing American football (in game)" / "xyz_000000_000010.mp4")
    val = root / "val" / ("" if flat_val else "massaging person's head")
    _touch(val / "-v1_000001_000011.mp4")
    with caplog.at_level(logging.WARNING, logger="fastvid.data.prepare"):
        summary = prepare_videos(root)
    assert summary["layout"] == "kinetics-csv" and summary["missing"] == ["gone_000000_000010"]
    assert "gone_000000_000010" in caplog.text
    assert read_categories(root / "categories.txt") == ["massaging person's head",
                                                        "passing American football (in game)"]
    train = parse_video_list(root / "train_list.txt", root, 2, check_files=True)
    assert [(Path(r.path).name, r.label) for r in train] == [("-abc_000005_000015.mp4", 0),
                                                             ("xyz_000000_000010.mp4", 1)]
    assert json.loads((root / "dataset.json").read_text())["dataset"] == "kinetics"
    res = CliRunner().invoke(cli, ["data", "prepare-videos", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "--videos-dir" in res.output
