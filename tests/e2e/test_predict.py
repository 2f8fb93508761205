"""`fastvid predict` on a user's own footage: frame folder, video files, sliding windows, engines."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


# -- DALI decoding (--loader dali / dali-cpu): no PyAV on any DALI path -------------------------
def _pyav_importable() -> bool:
    try:
        importlib.import_module("av")
    except ImportError:
        return False
    return True


# PyAV writes the test videos (the GPU machine has none): decided before any fixture trains.
needs_pyav = pytest.mark.skipif(not _pyav_importable(),
                                reason="PyAV is not installed, so no test video can be written here")
REPO = Path(__file__).resolve().parents[2]
DALI_WINDOW = ["--window", "12", "--stride", "6"]


def _clip_video(tmp_path: Path, codec: str, frames: int = 24, name: str = "clip") -> Path:
    """Two actions back to back (classes 0 then 1), 64 px, 12 fps."""
    rng = np.random.default_rng(3)
    half = frames // 2
    clip = np.concatenate([render_clip(0, half, (64, 64), rng), render_clip(1, frames - half, (64, 64), rng)])
    return write_video(tmp_path / name, clip, codec, fps=12.0)


def _one_line_error(res, *needles: str) -> str:
    """The CLI failed with one line naming what it should, and no traceback."""
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _all_probs(res: dict) -> list[dict[int, float]]:
    return [{t["index"]: t["prob"] for t in w["topk"]} for w in res["windows"]]


def _in_order(frames: torch.Tensor, count: int) -> None:
    """``frames`` are the :mod:`_media` test video's frames 0..count-1: its blue level names each."""
    from _media import blue_level

    assert frames.shape[0] == count and frames.dtype == torch.uint8
    blue = frames[:, 2].float().mean((1, 2)).cpu().numpy()
    assert np.abs(blue - blue_level(np.arange(count))).max() < 6, blue


@pytest.mark.dali
@needs_pyav
@pytest.mark.parametrize("codec,frames,chunk", [
    ("mjpeg", 12, 32),  # one partial chunk
    ("mjpeg", 16, 8),  # whole chunks only: no run past the end
    ("vp9", 26, 8)])  # 8, 8, 8, 2
def test_dali_cpu_frames_in_order(tmp_path, codec, frames, chunk):
    """dali-cpu decodes every frame, in order, a chunk at a time: the pixels of PyAV's decode
    (the torch loader's) up to the decoders' colour conversion."""
    from _media import write_video as write_media_video

    from fastvid.predict import FrameSource, InputSpec

    spec = InputSpec(write_media_video(tmp_path / "v", frames, 48, 64, codec), "video")
    dali = FrameSource(spec, loader="dali-cpu", chunk_frames=chunk)
    got = torch.stack(list(dali))
    ref = torch.stack(list(FrameSource(spec, loader="torch")))
    assert dali.num_frames == frames and got.shape == ref.shape == (frames, 3, 48, 64)
    assert got.device.type == "cpu"
    _in_order(got, frames)
    diff = (got.float() - ref.float()).abs()
    # measured: mean 1.3 (mjpeg) / 1.5 (vp9), max 11 / 6 grey levels
    assert diff.mean() < 2.5 and diff.max() < 24, (diff.mean(), diff.max())


@pytest.mark.gpu
@pytest.mark.dali
def test_dali_gpu_frames_in_order(tmp_path):
    """--loader dali: NVDEC decodes every frame of an H.264 file in order, a chunk at a time, and
    the frames stay on the GPU; chunking does not change a pixel. No PyAV needed (prebuilt
    media on the GPU machine, see tests/_media.py)."""
    from _media import video_dataset

    from fastvid.predict import FrameSource, InputSpec

    path = sorted((video_dataset(tmp_path, "h264") / "videos").iterdir())[0]
    spec = InputSpec(path, "video")
    cuda = torch.device("cuda")
    chunked = FrameSource(spec, loader="dali", device=cuda, chunk_frames=8)
    got = torch.stack(list(chunked))
    assert got.device.type == "cuda" and got.shape[1:] == (3, 48, 64)
    _in_order(got, chunked.num_frames)
    whole = torch.stack(list(FrameSource(spec, loader="dali", device=cuda, chunk_frames=64)))
    assert torch.equal(got, whole)


def _separable_ab(frames_root: Path) -> np.ndarray:
    """The first validation clip of class 0, then the first of class 1 (64 px)."""
    rows = [line.split() for line in (frames_root / "val_videofolder.txt").read_text().splitlines()]
    first: dict[int, str] = {}
    for name, _, label in rows:
        first.setdefault(int(label), name)
    return np.concatenate([_read_folder(frames_root / "20bn-jester-v1" / first[c]) for c in (0, 1)])


@pytest.mark.dali
@needs_pyav
@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_dali_cpu_predict_matches_torch(separable_frames, separable_trn, tmp_path, codec):
    """Whole-video and windowed predictions with --loader dali-cpu give the torch loader's top
    class and, within 0.03, its probabilities: the decoders round colours differently (~1.5
    grey levels, see test_dali_cpu_frames_in_order) and, whole, the DALI loader resizes in its
    own graph (test_loaders: pixel-close)."""
    clip = _separable_ab(separable_frames)
    video = write_video(tmp_path / "ab", clip, codec, fps=12.0)
    ckpt = separable_trn / "best.pt"
    for extra in ([], DALI_WINDOW):
        res = {loader: predict(ckpt, video, tmp_path / f"{loader}.json", "--topk", "2",
                               "--loader", loader, *extra) for loader in ("torch", "dali-cpu")}
        a, b = res["torch"], res["dali-cpu"]
        assert a["num_frames"] == b["num_frames"] == len(clip)
        assert a["fps"] == pytest.approx(b["fps"]) and a["fps"] == pytest.approx(12.0)
        assert [(w["start_frame"], w["end_frame"]) for w in a["windows"]] == \
            [(w["start_frame"], w["end_frame"]) for w in b["windows"]] == \
            ([(st, st + 12) for st in window_starts(len(clip), 12, 6)] if extra else [(0, len(clip))])
        pa, pb = _all_probs(a), _all_probs(b)
        for k, (wa, wb) in enumerate(zip(pa, pb)):
            assert set(wa) == set(wb) == {0, 1}  # the model's two classes, both listed
            # measured: 0.0016 (vp9) / 0.0005 (mjpeg) whole, 0.008 / 0.006 windowed
            assert wa == pytest.approx(wb, abs=0.03), (extra, k, wa, wb)
            if max(wa.values()) > 0.6:  # not a tie (the middle window sees both actions)
                assert max(wa, key=wa.get) == max(wb, key=wb.get), (extra, k, wa, wb)
        if extra:  # the first window sees a, the last b
            assert max(pb[0], key=pb[0].get) == 0 and max(pb[-1], key=pb[-1].get) == 1, pb


_NO_PYAV_SCRIPT = r"""
import json, sys
from importlib.abc import MetaPathFinder

import _block_av  # noqa: F401 - `import av` now fails, as on the GPU machine


class _Record(MetaPathFinder):  # in front of the blocker: also sees attempts that are caught
    tried = []

    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            self.tried.append(name)
        return None


sys.meta_path.insert(0, _Record())
from click.testing import CliRunner

from fastvid.cli import cli

video, ckpt, out, config = sys.argv[1:5]
small, window = json.loads(sys.argv[5]), json.loads(sys.argv[6])
found = {}
for mode, extra in (("whole", []), ("window", window)):
    res = CliRunner().invoke(cli, ["predict", video, "-c", config, "--checkpoint", ckpt,
                                   "--device", "cpu", *small, "--loader", "dali-cpu",
                                   "--topk", "4", "--out", out, *extra])
    found[mode] = {"exit_code": res.exit_code, "output": res.output[-2000:],
                   "result": json.load(open(out)) if res.exit_code == 0 else None}
found["tried_av"] = _Record.tried
found["av_loaded"] = sorted(m for m in sys.modules if m == "av" or m.startswith("av."))
print(json.dumps(found))
"""


@pytest.mark.dali
@needs_pyav
def test_dali_cpu_predict_without_pyav(trained_trn, tmp_path):
    """With PyAV unimportable (the GPU machine has none), dali-cpu predicts a VP9 video whole and
    in windows, never trying to import av, and gives what it gives with PyAV around."""
    video = _clip_video(tmp_path, "vp9")  # PyAV writes it; the subprocess cannot
    ckpt = trained_trn / "best.pt"
    expected = {mode: predict(ckpt, video, tmp_path / f"{mode}.json", "--topk", "4",
                              "--loader", "dali-cpu", *extra)
                for mode, extra in (("whole", []), ("window", DALI_WINDOW))}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _NO_PYAV_SCRIPT, str(video), str(ckpt),
                           str(tmp_path / "sub.json"), CONFIG, json.dumps(SMALL),
                           json.dumps(DALI_WINDOW)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["tried_av"] == [] and found["av_loaded"] == []
    for mode in ("whole", "window"):
        assert found[mode]["exit_code"] == 0, found[mode]["output"]
        got = found[mode]["result"]
        assert len(got["windows"]) == (1 if mode == "whole" else 3)
        for wa, wb in zip(_all_probs(got), _all_probs(expected[mode])):
            assert wa == pytest.approx(wb, abs=1e-5)


@pytest.mark.dali
@needs_pyav
def test_dali_predict_unsupported_is_one_line(trained_trn, tmp_path):
    """H.264 through DALI's CPU decoder, or --loader dali without a GPU: one line saying why and
    what to use instead, whole or windowed, before any decoding."""
    video = _clip_video(tmp_path, "h264")
    base = ["predict", str(video), "-c", CONFIG, "--checkpoint", str(trained_trn / "best.pt"),
            "--device", "cpu", *SMALL]
    for extra in ([], DALI_WINDOW):
        res = invoke(base + ["--loader", "dali-cpu", *extra])
        _one_line_error(res, video.name, "codec h264 is not supported by DALI's CPU video decoder",
                        "--loader torch")
        if not torch.cuda.is_available():
            res = invoke(base + ["--loader", "dali", *extra])
            _one_line_error(res, "--loader dali", "CUDA")


def _wipe_mjpeg_frames(path: Path, keep: int) -> None:
    """Zero the JPEG data of every frame from ``keep`` on, keeping every AVI chunk size: the
    container headers stay valid, the decoder fails."""
    data = bytearray(path.read_bytes())
    chunks = [i for i in range(len(data) - 8) if data[i:i + 4] == b"00dc"]
    for pos in chunks[keep:]:
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        data[pos + 8:pos + 8 + size] = bytes(size)
    path.write_bytes(bytes(data))


@pytest.mark.dali
@needs_pyav
def test_dali_predict_corrupt_video_is_one_line(trained_trn, tmp_path):
    """A file that is no video, a truncated one, and one whose headers are fine but whose frames
    do not decode (DALI fails in the pipeline): a one-line DataError naming the file, whole or
    windowed."""
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all" * 20)
    truncated = _clip_video(tmp_path, "vp9", name="truncated")
    truncated.write_bytes(truncated.read_bytes()[:600])
    wiped = _clip_video(tmp_path, "mjpeg", name="wiped")
    _wipe_mjpeg_frames(wiped, keep=12)
    cases = [(garbage, "not a video container"), (truncated, "truncated or corrupt"),
             (wiped, "DALI cannot decode")]
    for path, why in cases:
        for extra in ([], DALI_WINDOW):
            res = invoke(["predict", str(path), "-c", CONFIG, "--checkpoint",
                          str(trained_trn / "best.pt"), "--device", "cpu", *SMALL,
                          "--loader", "dali-cpu", *extra])
            _one_line_error(res, str(path), why)
    # past the first chunk: the frames before it came through, then the error names the chunk
    from fastvid.errors import DataError
    from fastvid.predict import FrameSource, InputSpec

    got = []
    with pytest.raises(DataError, match=r"wiped\.avi: DALI cannot decode frames 8-15: "):
        for frame in FrameSource(InputSpec(wiped, "video"), loader="dali-cpu", chunk_frames=8):
            got.append(frame)
    assert len(got) == 8


def _colour_model(x: torch.Tensor) -> torch.Tensor:
    """A "model" scoring a window's mean colour, (N, T, C, H, W) in pixel units -> 4 logits: the
    test video's blue level changes every frame, so windows score differently, no training."""
    m = x.float().mean(dim=(1, 3, 4))
    return torch.stack([m[:, 0], m[:, 1], m[:, 2], -m[:, 2]], dim=1) / 20


def _window_cfg():
    from fastvid.cli.common import load_cli_config

    return load_cli_config(CONFIG, tuple(SMALL[1::2]))


@pytest.mark.dali
@needs_pyav
def test_windows_through_dali_cpu_match_torch(tmp_path):
    """Sliding windows over frames DALI decoded (dali-cpu) score like those over PyAV's frames."""
    from _media import write_video as write_media_video

    from fastvid.predict import InputSpec, PredictOptions, predict_input

    spec = InputSpec(write_media_video(tmp_path / "v", 26, 48, 64, "vp9"), "video")
    res = {name: predict_input(_window_cfg(), _colour_model, spec, device=torch.device("cpu"),
                               labels=None, options=PredictOptions(topk=4, window="8", stride="6",
                                                                   loader=name))
           for name in ("dali-cpu", "torch")}
    a, b = res["dali-cpu"], res["torch"]
    assert a["num_frames"] == b["num_frames"] == 26
    assert [(w["start_frame"], w["end_frame"]) for w in a["windows"]] == \
        [(s, s + 8) for s in window_starts(26, 8, 6)]
    pa, pb = _all_probs(a), _all_probs(b)
    assert len({round(max(p.values()), 3) for p in pb}) > 1  # the windows score differently
    for wa, wb in zip(pa, pb):  # measured: 0.003 at most
        assert wa == pytest.approx(wb, abs=0.03)


class _OnCPU:
    """The frames of a FrameSource, copied to the CPU: the same decoded pixels, windowed there."""

    def __init__(self, source) -> None:
        self.source, self.spec = source, source.spec
        self.num_frames, self.fps = source.num_frames, source.fps

    def __iter__(self):
        return (frame.cpu() for frame in self.source)


@pytest.mark.gpu
@pytest.mark.dali
def test_dali_gpu_windows_on_the_device(tmp_path):
    """--loader dali --window on H.264: NVDEC frames stay on the GPU and are resized, cropped,
    normalized and batched there; the windows score as the same frames windowed on the CPU
    (resize rounding apart). No PyAV needed (prebuilt media)."""
    from _media import video_dataset

    from fastvid.predict import (FrameSource, InputSpec, PredictOptions, _predict_windows,
                                 predict_input)

    cfg, cuda = _window_cfg(), torch.device("cuda")
    spec = InputSpec(sorted((video_dataset(tmp_path, "h264") / "videos").iterdir())[0], "video")
    res = predict_input(cfg, _colour_model, spec, device=cuda, labels=None,
                        options=PredictOptions(topk=4, window="8", stride="6", loader="dali"))
    source = _OnCPU(FrameSource(spec, loader="dali", device=cuda))
    ref = list(_predict_windows(cfg, _colour_model, source, torch.device("cpu"),
                                PredictOptions(views=(1, 1), batch_size=8), (8, 6), 8))
    assert [(w["start_frame"], w["end_frame"]) for w in res["windows"]] == [(s, e) for s, e, _ in ref]
    assert len(ref) == len(window_starts(source.num_frames, 8, 6)) > 1
    for win, (_, _, probs) in zip(res["windows"], ref):
        for t in win["topk"]:
            assert t["prob"] == pytest.approx(float(probs[t["index"]]), abs=5e-3)
