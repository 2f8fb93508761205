"""`fastvid predict` on a user's own footage: frame folder, video files, sliding windows, engines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastvid.data.synth import render_clip, write_video
from fastvid.predict import parse_span, window_starts

from _helpers import CONFIG, SMALL, invoke, invoke_ok

WINDOW, STRIDE = 12, 3


def predict(ckpt: Path, target: Path, out: Path, *extra: str) -> dict | list:
    invoke_ok(["predict", str(target), "-c", CONFIG, "--checkpoint", str(ckpt), "--device", "cpu",
               *SMALL, "--out", str(out), *extra])
    return json.loads(out.read_text())


def test_window_arithmetic():
    assert window_starts(10, 12, 3) == [0]
    assert window_starts(24, 12, 3) == [0, 3, 6, 9, 12]
    assert window_starts(25, 12, 5) == [0, 5, 10, 13]
    assert parse_span("2s", 12.0) == 24 and parse_span("7", 30.0) == 7
    with pytest.raises(Exception, match="expected frames"):
        parse_span("two", 12.0)


def _probs(res: dict, window: int = 0) -> dict[int, float]:
    return {t["index"]: t["prob"] for t in res["windows"][window]["topk"]}


def test_predict_frame_folder_matches_eval_scores(synth_frames, trained_trn, tmp_path):
    # predict on a frame folder is `fastvid eval` on that one video: same sampling, same crop,
    # same averaged probabilities (the model need not be accurate for this to hold).
    scores = tmp_path / "scores.npy"
    invoke_ok(["eval", "-c", CONFIG, "--data-root", str(synth_frames), "--checkpoint",
               str(trained_trn / "best.pt"), "--loader", "torch", "--device", "cpu", *SMALL,
               "--save-scores", str(scores)])
    expected = np.load(scores)
    lines = (synth_frames / "val_videofolder.txt").read_text().split("\n")
    samples = [line.split() for line in lines if line.strip()][:4]
    for row, (name, _, _) in enumerate(samples):
        res = predict(trained_trn / "best.pt", synth_frames / "20bn-jester-v1" / name,
                      tmp_path / f"{name}.json", "--topk", "4", "--loader", "torch")
        assert res["input"].endswith(name) and len(res["windows"]) == 1
        top = res["windows"][0]["topk"]
        assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
        assert {"index", "label", "prob"} <= set(top[0]) and 0 < top[0]["prob"] <= 1
        assert top[0]["index"] == int(expected[row].argmax())
        for index, prob in _probs(res).items():
            assert prob == pytest.approx(float(expected[row, index]), abs=1e-4)


def test_predict_video_folder_and_sliding_windows(trained_trn, tmp_path):
    rng = np.random.default_rng(7)
    videos = tmp_path / "videos"
    videos.mkdir()
    for c in range(2):
        write_video(videos / f"c{c}.avi", render_clip(c, 12, (64, 64), rng), "mjpeg")
    res = predict(trained_trn / "best.pt", videos, tmp_path / "dir.json", "--topk", "4")
    assert isinstance(res, list) and sorted(Path(r["input"]).name for r in res) == ["c0.avi", "c1.avi"]
    for r in res:  # a folder of videos gives what each video gives alone
        alone = predict(trained_trn / "best.pt", Path(r["input"]), tmp_path / "one.json", "--topk", "4")
        assert len(r["windows"]) == 1 and _probs(r) == pytest.approx(_probs(alone), abs=1e-5)

    # a, then b, then a again as one recording: each window is scored exactly as a separate
    # video holding only that window's frames (MJPEG at constant quality is intra-coded: the pixels are equal).
    clip = np.concatenate([render_clip(0, 12, (64, 64), rng), render_clip(1, 12, (64, 64), rng),
                           render_clip(0, 12, (64, 64), rng)])
    long_video = write_video(tmp_path / "aba.avi", clip, "mjpeg", fps=12.0)
    res = predict(trained_trn / "best.pt", long_video, tmp_path / "win.json", "--topk", "4",
                  "--window", str(WINDOW), "--stride", str(STRIDE))
    wins = res["windows"]
    assert [w["start_frame"] for w in wins] == window_starts(36, WINDOW, STRIDE)
    for w in wins:
        assert w["end_frame"] - w["start_frame"] == WINDOW
        assert w["start_s"] == pytest.approx(w["start_frame"] / 12.0)
    for k, start in ((0, 0), (2, 6), (4, 12), (8, 24)):
        assert wins[k]["start_frame"] == start
        part = write_video(tmp_path / f"part{start}.avi", clip[start:start + WINDOW], "mjpeg",
                           fps=12.0)
        alone = predict(trained_trn / "best.pt", part, tmp_path / f"part{start}.json", "--topk", "4")
        assert _probs(res, k) == pytest.approx(_probs(alone), abs=1e-4), start
    # windows over different frames do not all score alike
    assert len({round(w["topk"][0]["prob"], 4) for w in wins}) > 1


def _read_folder(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.jpg"))])


def test_predict_recognises_a_separable_set(separable_frames, separable_trn, tmp_path):
    """Frame folders and video files of a set the model learnt get the right class."""
    rows = [line.split() for line in (separable_frames / "val_videofolder.txt").read_text().splitlines()]
    hits = 0
    for name, _, label in rows[:8]:
        res = predict(separable_trn / "best.pt", separable_frames / "20bn-jester-v1" / name,
                      tmp_path / f"{name}.json", "--topk", "2")
        hits += res["windows"][0]["topk"][0]["index"] == int(label)
    assert hits >= 7, f"{hits}/8 frame folders recognised"  # measured 8/8

    rng = np.random.default_rng(11)
    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(8):  # unseen clips, as MJPEG files
        write_video(videos / f"c{k % 2}_{k}.avi",
                    render_clip(32 * (k % 2), 12, (64, 64), rng, num_classes=33), "mjpeg")
    res = predict(separable_trn / "best.pt", videos, tmp_path / "dir.json", "--topk", "2")
    correct = sum(int(Path(r["input"]).name[1]) == r["windows"][0]["topk"][0]["index"] for r in res)
    assert len(res) == 8 and correct >= 6, f"{correct}/8 videos recognised"


def test_sliding_windows_find_the_change(separable_frames, separable_trn, tmp_path):
    """a, then b, then a again in one recording: windows inside one action name it, and the
    first window called b starts within one stride of where b takes the majority."""
    rows = [line.split() for line in (separable_frames / "val_videofolder.txt").read_text().splitlines()]
    first = {}
    for name, _, label in rows:
        first.setdefault(int(label), name)
    a, b = (_read_folder(separable_frames / "20bn-jester-v1" / first[c]) for c in (0, 1))
    clip = np.concatenate([a, b, a])
    video = write_video(tmp_path / "aba.avi", clip, "mjpeg", fps=12.0)
    window, stride = 8, 2
    res = predict(separable_trn / "best.pt", video, tmp_path / "win.json", "--topk", "2",
                  "--window", str(window), "--stride", str(stride))
    top = {w["start_frame"]: w["topk"][0]["index"] for w in res["windows"]}
    assert sorted(top) == window_starts(len(clip), window, stride)
    spans = [(0, len(a), 0), (len(a), len(a) + len(b), 1), (len(a) + len(b), len(clip), 0)]
    for lo, hi, label in spans:
        inside = [s for s in top if lo <= s and s + window <= hi]
        assert inside and all(top[s] == label for s in inside), (lo, hi, label, top)
    first_b = min(s for s, i in top.items() if i == 1)
    assert abs((first_b + window / 2) - len(a)) <= stride, (len(a), top)


def test_predict_errors(trained_trn, tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"not a video at all")
    res = invoke(["predict", str(bad), "-c", CONFIG, "--checkpoint", str(trained_trn / "best.pt"),
                  "--device", "cpu", *SMALL])
    assert res.exit_code == 1 and "broken.avi" in res.output and "Traceback" not in res.output
    labels = tmp_path / "labels.txt"
    labels.write_text("one\ntwo\n")
    res = invoke(["predict", str(bad), "-c", CONFIG, "--checkpoint", str(trained_trn / "best.pt"),
                  "--device", "cpu", *SMALL, "--labels", str(labels)])
    assert res.exit_code == 1 and "the model has 4 classes but" in res.output


def test_engine_and_checkpoint_agree(synth_frames, trained_trn, tmp_path):
    engine = tmp_path / "trn.onnx"
    invoke_ok(["build-engine", "-c", CONFIG, "--checkpoint", str(trained_trn / "best.pt"),
               "--backend", "onnx", "--batch", "1", "--max-batch", "4", "--out", str(engine),
               "--device", "cpu", *SMALL])
    name = (synth_frames / "val_videofolder.txt").read_text().split()[0]
    folder = synth_frames / "20bn-jester-v1" / name
    by_ckpt = predict(trained_trn / "best.pt", folder, tmp_path / "c.json")
    res = invoke(["predict", str(folder), "-c", CONFIG, "--engine", str(engine), "--device", "cpu",
                  *SMALL, "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    by_engine = json.loads((tmp_path / "e.json").read_text())
    a, b = by_ckpt["windows"][0]["topk"], by_engine["windows"][0]["topk"]
    assert a[0]["index"] == b[0]["index"]
    assert a[0]["prob"] == pytest.approx(b[0]["prob"], abs=1e-3)
