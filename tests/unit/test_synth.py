"""The synthetic dataset generator: order-dependent classes, layouts, decodability, determinism."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastvid.cli import cli
from fastvid.data.lists import parse_frame_list, parse_video_list, read_categories
from fastvid.data.synth import (MAX_CLASSES, MOTIONS, class_names, class_spec, render_clip,
                                synth_dataset, write_video)
from fastvid.errors import FastvidError


def _centroid_track(clip: np.ndarray) -> np.ndarray:
    """(T, 2) x/y centroid of the pixels that differ from the clip's per-pixel temporal median.

    The median is the background wherever the object does not stay, so this follows the moving
    object without knowing how it was drawn.
    """
    c = clip.astype(np.float32)
    diff = np.abs(c - np.median(c, axis=0)).sum(-1)
    weight = np.where(diff > 60, diff, 0.0)
    yy, xx = np.mgrid[0:clip.shape[1], 0:clip.shape[2]]
    mass = weight.sum(axis=(1, 2)) + 1e-6
    return np.stack([(weight * xx).sum(axis=(1, 2)) / mass, (weight * yy).sum(axis=(1, 2)) / mass], 1)


def _slopes(track: np.ndarray) -> tuple[float, float]:
    t = np.arange(len(track))
    return float(np.polyfit(t, track[:, 0], 1)[0]), float(np.polyfit(t, track[:, 1], 1)[0])


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_class_names_and_specs():
    names = class_names(MAX_CLASSES)
    assert len(set(names)) == MAX_CLASSES
    assert class_names(4) == list(MOTIONS[:4]) and class_names(8) == list(MOTIONS)
    # Shape is a nuisance up to 8 classes, part of the class above; palette above 32.
    assert class_spec(0, 8)["shape"] is None and class_spec(0, 9)["shape"] == "disc"
    assert class_spec(9, 16) == {"motion": "shrink", "shape": "square", "palette": None}
    assert class_spec(37, 40)["palette"] == "grey" and names[37] == "move_left_grey"
    assert names[:2] == ["grow", "shrink"] and names[8] == "grow_square"
    for bad in (0, MAX_CLASSES + 1):
        with pytest.raises(FastvidError, match="classes must be"):
            class_names(bad)


@pytest.mark.parametrize("num_classes", [8, 40])
def test_odd_class_is_its_partner_reversed(num_classes):
    # Same draws, frames in opposite order: an order-free consensus sees the same frame set.
    for even in range(0, num_classes, 2):
        seed = 100 + even
        fwd = render_clip(even, 9, (48, 40), np.random.default_rng(seed), num_classes=num_classes)
        rev = render_clip(even + 1, 9, (48, 40), np.random.default_rng(seed), num_classes=num_classes)
        assert fwd.shape == (9, 40, 48, 3) and fwd.dtype == np.uint8
        np.testing.assert_array_equal(rev, fwd[::-1])
        assert np.abs(fwd[0].astype(int) - fwd[-1].astype(int)).mean() > 2  # it does move


def test_move_classes_follow_their_direction():
    rng = np.random.default_rng(3)
    directions = {"move_right": (0, 1), "move_left": (0, -1), "move_down": (1, 1), "move_up": (1, -1)}
    for _ in range(6):
        for name, (axis, sign) in directions.items():
            cls = MOTIONS.index(name)
            clip = render_clip(cls, 10, (64, 64), rng, num_classes=8)
            slopes = _slopes(_centroid_track(clip))
            assert np.sign(slopes[axis]) == sign, (name, slopes)
            assert abs(slopes[axis]) > 2 * abs(slopes[1 - axis]), (name, slopes)


def test_clips_vary_beyond_the_class():
    a = render_clip(0, 8, (64, 64), np.random.default_rng(1))
    b = render_clip(0, 8, (64, 64), np.random.default_rng(2))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 20  # other background, object, path
    # Per-frame noise: no two frames are equal even where nothing moves.
    assert all(not np.array_equal(a[k, :4, :4], a[k + 1, :4, :4]) for k in range(7))


def test_frames_dataset_layout_and_lists(tmp_path):
    root = tmp_path / "ds"
    summary = synth_dataset(root, kind="frames", classes=4, train=12, val=8, frames=8,
                            size=(48, 40), seed=5)
    assert (summary["train"], summary["val"]) == (12, 8)
    assert read_categories(root / "categories.txt") == class_names(4)
    assert (root / "labels" / "labels.csv").read_text().split() == class_names(4)
    rows = (root / "labels" / "train.csv").read_text().split()
    assert len(rows) == 12 and all(r.split(";")[1] in class_names(4) for r in rows)

    by_id = {v["id"]: v for v in summary["videos"]}
    for split, name in (("train", "train_videofolder.txt"), ("val", "val_videofolder.txt")):
        records = parse_frame_list(root / name, root / "20bn-jester-v1", 4, check_frames=True)
        labels = [r.label for r in records]
        assert sorted(labels) == sorted(np.arange(len(records)) % 4)  # balanced
        for rec in records:
            meta = by_id[Path(rec.path).name]
            assert meta["split"] == split and meta["label"] == rec.label
            files = sorted(Path(rec.path).iterdir())
            assert len(files) == rec.num_frames == meta["num_frames"]
            assert 6 <= rec.num_frames <= 10  # 8 +- 25 %
            for f in files:
                with Image.open(f) as im:
                    im.load()
                    assert im.size == (48, 40) and im.mode == "RGB"
    lengths = {v["num_frames"] for v in summary["videos"]}
    assert len(lengths) > 1, "clip lengths should vary"
    assert summary["num_frames"] == sum(v["num_frames"] for v in summary["videos"])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    kw = dict(kind="frames", classes=2, train=3, val=2, frames=6, size=(32, 32))
    synth_dataset(tmp_path / "a", seed=7, **kw)
    synth_dataset(tmp_path / "b", seed=7, **kw)
    synth_dataset(tmp_path / "c", seed=8, **kw)
    a, b, c = (_tree_digest(tmp_path / n) for n in "abc")
    assert a == b
    frames = [k for k in a if k.endswith(".jpg")]
    assert frames and sum(a[k] != c.get(k) for k in frames) == len(frames)


@pytest.mark.parametrize("codec,suffix", [("mjpeg", ".avi"), ("vp9", ".webm"), ("h264", ".mp4")])
def test_video_dataset_decodes(tmp_path, codec, suffix):
    import av

    root = tmp_path / codec
    summary = synth_dataset(root, kind="video", codec=codec, classes=2, train=2, val=2, frames=6,
                            size=(64, 48), seed=0)
    assert read_categories(root / "categories.txt") == class_names(2)
    by_path = {v["path"]: v for v in summary["videos"]}
    for split, name in (("train", "train_list.txt"), ("val", "val_list.txt")):
        records = parse_video_list(root / name, root, 2, check_files=True)
        assert len(records) == 2
        for rec in records:
            rel = Path(rec.path).relative_to(root).as_posix()
            meta = by_path[rel]
            assert rel == f"videos/{class_names(2)[rec.label]}/{meta['id']}{suffix}"
            with av.open(rec.path) as container:
                decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            assert len(decoded) == meta["num_frames"]
            assert decoded[0].shape == (48, 64, 3)


@pytest.mark.parametrize("codec", ["mjpeg", "vp9", "h264"])
def test_write_video_keeps_pixels_and_colours(tmp_path, codec):
    import av

    clip = render_clip(4, 6, (64, 48), np.random.default_rng(0), num_classes=8)
    path = write_video(tmp_path / "clip", clip, codec, fps=10.0)
    assert path.suffix == {"mjpeg": ".avi", "vp9": ".webm", "h264": ".mp4"}[codec]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(10.0)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == clip.shape
    err = np.abs(decoded.astype(int) - clip.astype(int)).mean(axis=(0, 1, 2))
    # Lossy, but each channel stays where it was (a swapped R/B would be off by far more).
    assert (err < 12).all(), err
    swapped = np.abs(decoded[..., ::-1].astype(int) - clip.astype(int)).mean()
    assert swapped > err.mean() + 5


def test_write_video_and_synth_reject_bad_input(tmp_path):
    clip = np.zeros((3, 33, 32, 3), np.uint8)
    with pytest.raises(FastvidError, match="even frame size"):
        write_video(tmp_path / "odd.mp4", clip, "h264")
    with pytest.raises(FastvidError, match="unknown codec"):
        write_video(tmp_path / "x.avi", clip[:, :32], "xvid")
    with pytest.raises(FastvidError, match="uint8"):
        write_video(tmp_path / "x.avi", clip.astype(np.float32), "mjpeg")
    with pytest.raises(FastvidError, match="at least 2 frames"):
        render_clip(0, 1, (32, 32), np.random.default_rng(0))
    with pytest.raises(FastvidError, match="out of range"):
        render_clip(MAX_CLASSES, 4, (32, 32), np.random.default_rng(0))
    with pytest.raises(FastvidError, match="kind"):
        synth_dataset(tmp_path / "k", kind="gif")
    with pytest.raises(FastvidError, match="WxH"):
        synth_dataset(tmp_path / "s", size="96by96")


def test_cli_synth_and_help(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "--help"])
    assert res.exit_code == 0
    for cmd in ("synth", "unpack-jester", "prepare-jester", "prepare-videos"):
        assert cmd in res.output
    res = runner.invoke(cli, ["data", "synth", "--help"])
    for opt in ("--kind", "--codec", "--classes", "--train", "--val", "--frames", "--size", "--seed"):
        assert opt in res.output

    out = tmp_path / "cli"
    res = runner.invoke(cli, ["data", "synth", str(out), "--kind", "video", "--codec", "mjpeg",
                              "--classes", "3", "--train", "3", "--val", "3", "--frames", "4",
                              "--size", "48x32", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert "3 train + 3 val mjpeg videos" in res.output
    assert read_categories(out / "categories.txt") == class_names(3)
    assert len(parse_video_list(out / "train_list.txt", out, 3, check_files=True)) == 3

    res = runner.invoke(cli, ["data", "synth", str(tmp_path / "bad"), "--size", "big"])
    assert res.exit_code == 2 and "expected WxH" in res.output
    res = runner.invoke(cli, ["data", "synth", str(tmp_path / "odd"), "--kind", "video",
                              "--size", "33x32"])
    assert res.exit_code == 1 and "even frame size" in res.output and "Traceback" not in res.output


def test_class_ids_pick_generator_classes(tmp_path):
    summary = synth_dataset(tmp_path / "s", classes=99, train=4, val=2, frames=4, size=(32, 32),
                            class_ids=[0, 32])
    assert summary["classes"] == ["grow", "grow_grey"]
    assert (tmp_path / "s" / "categories.txt").read_text().split() == ["grow", "grow_grey"]
    # label 1 is rendered as generator class 32 of a 33-class set: a grey object
    assert class_spec(32, 33)["palette"] == "grey" and class_spec(0, 33)["palette"] == "colour"
    for bad in ([], [0, 0], [0, MAX_CLASSES]):
        with pytest.raises(FastvidError, match="class_ids"):
            synth_dataset(tmp_path / "bad", train=2, val=2, frames=4, size=(32, 32), class_ids=bad)
