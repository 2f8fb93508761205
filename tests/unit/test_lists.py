"""Dataset list parsing: good lists, malformed lines with file:line errors, dataset detection."""
from __future__ import annotations

import pytest

from fastvid.config import DataConfig
from fastvid.data.lists import (ListError, parse_frame_list, parse_video_list, read_categories,
                                resolve_dataset)


def _frames(root, name, n):
    d = root / "20bn-jester-v1" / name
    d.mkdir(parents=True)
    for i in range(1, n + 1):
        (d / f"{i:05d}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    return d


def test_frame_list_parses_and_checks_frames(tmp_path):
    _frames(tmp_path, "1", 5)
    _frames(tmp_path, "two words", 3)
    lst = tmp_path / "train_videofolder.txt"
    lst.write_text("1 5 0\n\n# comment\ntwo words 3 1\n")
    recs = parse_frame_list(lst, tmp_path / "20bn-jester-v1", num_classes=2, check_frames=True)
    assert [(r.label, r.num_frames) for r in recs] == [(0, 5), (1, 3)]
    assert recs[1].path.endswith("two words") and not recs[0].is_video


@pytest.mark.parametrize("line, fragment", [
    ("1 5", "expected '<dir> <num_frames> <class_index>'"),
    ("1 five 0", "must be integers"),
    ("1 0 0", "num_frames=0"),
    ("1 5 7", "class index 7 out of range (dataset has 3 classes)"),
    ("1 5 -1", "class index -1 out of range"),
])
def test_frame_list_errors_name_file_and_line(tmp_path, line, fragment):
    lst = tmp_path / "val_videofolder.txt"
    lst.write_text(f"# header comment\n{line}\n")
    with pytest.raises(ListError) as err:
        parse_frame_list(lst, tmp_path, num_classes=3)
    assert f"{lst}:2" in str(err.value) and fragment in str(err.value)


def test_frame_count_disagreeing_with_folder(tmp_path):
    _frames(tmp_path, "7", 4)
    lst = tmp_path / "train_videofolder.txt"
    lst.write_text("7 6 0\n")
    with pytest.raises(ListError, match=r"train_videofolder.txt:1: list says 6 frames but .* has 4"):
        parse_frame_list(lst, tmp_path / "20bn-jester-v1", check_frames=True)
    lst.write_text("8 6 0\n")
    with pytest.raises(ListError, match="frame folder not found"):
        parse_frame_list(lst, tmp_path / "20bn-jester-v1", check_frames=True)


def test_video_list(tmp_path):
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "x.webm").write_bytes(b"0")
    lst = tmp_path / "train_list.txt"
    lst.write_text("a b/x.webm 2\n")
    recs = parse_video_list(lst, tmp_path, num_classes=3, check_files=True)
    assert recs[0].label == 2 and recs[0].is_video and recs[0].path.endswith("a b/x.webm")
    lst.write_text("a b/x.webm 2\nmissing.mp4 1\n")
    with pytest.raises(ListError, match=r"train_list.txt:2: video file not found"):
        parse_video_list(lst, tmp_path, check_files=True)
    lst.write_text("justonefield\n")
    with pytest.raises(ListError, match=r"train_list.txt:1: expected '<path> <class_index>'"):
        parse_video_list(lst, tmp_path)
    lst.write_text("x.mp4 label\n")
    with pytest.raises(ListError, match="class index must be an integer"):
        parse_video_list(lst, tmp_path)


def test_empty_list_and_categories(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("\n# nothing\n")
    with pytest.raises(ListError, match="no samples"):
        parse_frame_list(lst, tmp_path)
    cats = tmp_path / "categories.txt"
    cats.write_text("Swiping Left\nSwiping Right\n\n")
    assert read_categories(cats) == ["Swiping Left", "Swiping Right"]
    cats.write_text("a\n\nb\n")
    with pytest.raises(ListError, match="categories.txt:2: empty class name"):
        read_categories(cats)


def test_resolve_dataset_detects_format(tmp_path):
    with pytest.raises(ListError, match="does not exist"):
        resolve_dataset(tmp_path / "nope", DataConfig())
    with pytest.raises(ListError, match="no dataset lists found"):
        resolve_dataset(tmp_path, DataConfig())
    (tmp_path / "train_list.txt").write_text("a.webm 0\n")
    (tmp_path / "val_list.txt").write_text("b.webm 1\n")
    (tmp_path / "categories.txt").write_text("x\ny\n")
    info = resolve_dataset(tmp_path, DataConfig())
    assert info.format == "videos" and info.num_classes == 2
    assert [r.label for r in info.records("val", check=False)] == [1]
    with pytest.raises(ListError, match="list file train_videofolder.txt not found"):
        resolve_dataset(tmp_path, DataConfig(format="frames"))
