"""`fastvid report` on training runs and eval JSONs, and the honesty of the bench plots: every
plot is checked through the data it drew (one point per logged step / epoch, confusion rows that
add up to each class's videos, the flagged bars the table's flagged rows)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from fastvid.cli import cli
from fastvid.evaluate import summarize
from fastvid.errors import FastvidError
from fastvid.report import render
from fastvid.report.confusion import FULL_MAX, TOP_N, most_confused_classes
from fastvid.report.plotting import fmt, plain_device, unique_names
from fastvid.report.training import ema



def _write_run(work: Path, epochs: int = 4, steps_per_epoch: int = 5, resumed_at: int = 0,
               val_every: int = 1, lr_drop: int = 3, acc_shift: float = 0.0) -> list[dict]:
    """metrics.jsonl as `fastvid train` writes it (train / epoch / startup records); with
    ``resumed_at`` the run restarts from the checkpoint of that step and logs those steps again."""
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(work)))
    recs: list[dict] = [{"type": "startup", "epoch": 1, "step": 1, "time_to_first_step_s": 12.5,
                         "first_epoch_to_first_step_s": 4.25}]
    step = 0
    for e in range(1, epochs + 1):
        lr = 0.01 if e < lr_drop else 0.001
        for _ in range(steps_per_epoch):
            step += 1
            recs.append({"type": "train", "epoch": e, "step": step, "loss": float(2.0 / step + rng.random() * 0.2),
                         "lr": lr, "videos_per_s": 40.0 + rng.random(), "data_wait": 0.1})
        # As the loop writes it: the epoch's lr, and the one the scheduler set for the next.
        epoch = {"type": "epoch", "epoch": e, "step": step, "train_loss": 1.0 / e,
                 "lr": lr, "next_lr": 0.01 if e + 1 < lr_drop else 0.001,
                 "videos_per_s": 30.0 + e, "data_wait": 0.2 / e, "bad_samples": 0, "epoch_time_s": 3.0}
        if e % val_every == 0 or e == epochs:
            epoch.update(val_top1=min(1.0, 0.2 * e), val_top5=min(1.0, 0.3 * e),
                         val_mean_class_acc=min(1.0, 0.18 * e) - acc_shift)
        recs.append(epoch)
    if resumed_at:  # steps after the checkpoint logged again by the resumed process
        again = [dict(r, loss=r["loss"] + 1.0) for r in recs if r["type"] == "train" and r["step"] > resumed_at]
        recs += [{"type": "startup", "epoch": 2, "step": resumed_at + 1, "time_to_first_step_s": 9.0,
                  "first_epoch_to_first_step_s": 2.0}] + again
    (work / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    (work / "config.yaml").write_text("model:\n  arch: trn\n  backbone: bninception\ntrain:\n  epochs: %d\n" % epochs)
    return recs


def test_training_report_has_one_point_per_logged_step_and_epoch(tmp_path):
    run = tmp_path / "trn_run"
    recs = _write_run(run, epochs=5, steps_per_epoch=6, resumed_at=20, val_every=2)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "train", "step": 9\n')  # a line cut by a kill: skipped, counted
    result = render([run])
    assert result["kind"] == "run" and result["markdown"] == run / "report.md"
    assert {p.name for p in result["plots"]} == {"loss.png", "val_accuracy.png", "lr.png", "speed.png"}
    for p in result["plots"]:
        img = matplotlib.image.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300
    drawn = result["drawn"]
    steps = sorted({r["step"] for r in recs if r["type"] == "train"})
    x, loss = drawn["loss.png"]["raw"]["trn_run"]
    assert x == steps == list(range(1, 31))
    # A step logged twice keeps the resumed run's record (the later one).
    last = {r["step"]: r["loss"] for r in recs if r["type"] == "train"}
    assert loss == [last[s] for s in steps] and loss[25] == pytest.approx(last[26]) and last[26] > 1.0
    xs, smooth = drawn["loss.png"]["smoothed"]["trn_run"]
    assert xs == x and smooth == pytest.approx(ema(loss, 2))  # 30 steps: EMA over 2
    assert smooth[0] == loss[0]  # bias-corrected: starts at the first loss, not at 0
    val = drawn["val_accuracy.png"]
    assert val["val_top1"]["trn_run"] == ([2.0, 4.0, 5.0], [40.0, 80.0, 100.0])
    assert val["val_mean_class_acc"]["trn_run"][1] == pytest.approx([36.0, 72.0, 90.0])
    assert drawn["lr.png"]["lr"]["trn_run"] == ([float(s) for s in steps], [0.01] * 12 + [0.001] * 18)
    assert drawn["speed.png"]["videos_per_s"]["trn_run"] == ([1.0, 2.0, 3.0, 4.0, 5.0], [31.0, 32.0, 33.0, 34.0, 35.0])
    assert drawn["speed.png"]["data_wait"]["trn_run"][1] == pytest.approx([20.0, 10.0, 20 / 3, 5.0, 4.0])
    assert drawn["speed.png"]["time_to_first_step_s"] == {"trn_run": ([0.0], [12.5])}
    md = result["markdown"].read_text()
    assert "| `trn_run` | trn_bninception | 5 of 5 | 30 | 100.0 (5) | 100.0 |" in md
    assert "restart 1 (resumed at step 20)" in md and "12.5 s after the process started" in md
    assert "1 line(s) of metrics.jsonl were not JSON objects" in md
    epoch_rows = [ln for ln in md.split("## Epochs", 1)[1].split("##", 1)[0].splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0] for ln in epoch_rows[1:]] == ["| 1", "| 2", "| 3", "| 4", "| 5"]
    assert epoch_rows[2].startswith("| 2 | 12 | 0.5000 | 0.01 | 40.0 | 60.0 | 36.0 | 32.0 | 10.0 |")
    # The lr each epoch trained with.
    assert [ln.split(" | ")[3] for ln in epoch_rows[1:]] == ["0.01", "0.01", "0.001", "0.001", "0.001"]
    for p in result["plots"]:
        assert f"]({p.name})" in md


def test_several_runs_are_overlaid_with_their_names(tmp_path):
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _write_run(a, epochs=3, steps_per_epoch=4)
    _write_run(b, epochs=2, steps_per_epoch=4, acc_shift=0.05)
    assert unique_names([a, b]) == ["a/run", "b/run"]
    result = CliRunner().invoke(cli, ["report", str(a), str(b)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "a" / "compare-a_run-b_run"
    assert f"report: {out / 'report.md'}" in result.output
    rendered = render([a, b])
    drawn = rendered["drawn"]
    assert set(drawn["loss.png"]["raw"]) == {"a/run", "b/run"}  # the legend's names
    assert len(drawn["loss.png"]["raw"]["a/run"][0]) == 12 and len(drawn["loss.png"]["raw"]["b/run"][0]) == 8
    assert drawn["val_accuracy.png"]["val_top1"]["b/run"][0] == [1.0, 2.0]
    md = rendered["markdown"].read_text()
    assert "## Epochs of `a/run`" in md and "## Epochs of `b/run`" in md


def _eval_json(path: Path, k: int, per_class: int, seed: int = 0, bad: int = 0) -> dict:
    """An eval.json written by the code `fastvid eval --out` uses (EvalResult.to_json)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per_class)
    scores = rng.random((len(labels), k)).astype(np.float32)
    scores[np.arange(len(labels)), labels] += rng.random(len(labels)) * 1.2  # mostly right
    labels = np.concatenate([labels, -np.ones(bad, np.int64)])
    scores = np.concatenate([scores, np.zeros((bad, k), np.float32)])
    res = summarize(scores, labels, 1, [f"bad_{i}.webm" for i in range(bad)])
    data = {**res.to_json(), "clips": 1, "crops": 1, "split": "val", "checkpoint": "best.pt",
            "classes": [f"class {i} doing something rather long to read on an axis" for i in range(k)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def test_confusion_matrix_counts_each_class_videos_and_leaves_bad_samples_out():
    labels = np.array([0, 0, 1, 1, 1, -1, 2])
    scores = np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 0, 0, 2]]
    res = summarize(scores, labels)
    data = res.to_json()
    assert data["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert data["class_videos"] == [2, 3, 1] and sum(data["class_videos"]) == res.num_videos == 6
    assert data["per_class_accuracy"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert np.mean(data["per_class_accuracy"]) == pytest.approx(res.mean_class_acc)


@pytest.mark.parametrize("k", [27, 174])
def test_confusion_plot_is_readable_at_27_and_174_classes(tmp_path, k):
    data = _eval_json(tmp_path / "eval.json", k, per_class=6 if k > 100 else 12, bad=2)
    conf = np.asarray(data["confusion_matrix"])
    rendered = render([tmp_path / "eval.json"])
    assert rendered["markdown"] == tmp_path / "report.md"
    drawn = rendered["confusion"][str(tmp_path / "eval.json")]
    img = matplotlib.image.imread(drawn["path"])
    shown = drawn["classes"]
    assert len(shown) == (k if k <= FULL_MAX else TOP_N) and drawn["other"] == (k > FULL_MAX)
    # Each drawn row adds up to its class's videos (with 'all other classes' when cut), the
    # bad samples out; rows normalised to 100%.
    assert drawn["counts"].sum(axis=1).tolist() == [data["class_videos"][c] for c in shown]
    np.testing.assert_allclose(drawn["shares"].sum(axis=1), 1.0)
    assert conf.sum() == data["num_videos"] == k * (6 if k > 100 else 12)
    assert drawn["names"][0].startswith(f"{shown[0]}: class {shown[0]}")
    assert all(len(n) <= 45 for n in drawn["names"])  # long names cut on the axes
    # At 174 classes: the most confused ones, readable cells (about 1/3 inch each at 110 dpi).
    assert shown == most_confused_classes(conf, TOP_N if k > FULL_MAX else k)
    assert img.shape[0] / (len(shown) + 1) >= 25 and img.shape[1] / (len(shown) + 1) >= 25
    off = conf - np.diag(np.diag(conf))
    inv = off.sum(axis=0) + off.sum(axis=1)
    if k > FULL_MAX:
        assert min(inv[shown]) >= max(np.delete(inv, shown))
    md = rendered["markdown"].read_text()
    t, p = np.unravel_index(off.argmax(), off.shape)
    first = md.split("Most confused pairs", 1)[1].split("\n")[4]
    assert first.startswith(f"| {t}: class {t} ") and f"| {p}: class {p} " in first
    assert f"| {off[t, p]} | {fmt(100 * off[t, p] / conf[t].sum())} |" in first
    assert "2 unreadable videos left out" in md


def test_run_dir_report_includes_its_eval_json(tmp_path):
    run = tmp_path / "run"
    _write_run(run, epochs=2, steps_per_epoch=3)
    _eval_json(run / "eval.json", 4, per_class=5)
    result = render([run])
    assert {p.name for p in result["plots"]} == {"loss.png", "val_accuracy.png", "lr.png", "speed.png",
                                                 "confusion.png"}
    md = result["markdown"].read_text()
    assert "## What the model confuses" in md and "![confusion matrix](confusion.png)" in md


def test_report_refuses_what_it_cannot_draw(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text("[]")
    _write_run(tmp_path / "run")
    with pytest.raises(FastvidError, match="one benchmark directory at a time"):
        render([tmp_path / "bench", tmp_path / "run"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastvidError, match="expected results.json .* metrics.jsonl .* eval.json"):
        render([tmp_path / "empty"])
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(FastvidError, match="not a results.json or an eval JSON"):
        render([tmp_path / "other.json"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(FastvidError, match="no metrics.jsonl"):
        render([tmp_path / "half"])


def test_device_titles_are_plain():
    assert plain_device({"device": "AMD EPYC (2 cores)", "device_type": "cpu"}) == "CPU: AMD EPYC, 2 cores"
    assert plain_device({"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda"}) == "GPU: NVIDIA H100 80GB HBM3"
    assert plain_device({"device": "cpu", "cores": 2}) == "CPU, 2 cores"


def test_epoch_lr_without_logged_steps_reads_both_record_formats():
    from fastvid.report.training import RunMetrics, epoch_lr

    def run(epochs):
        return RunMetrics(path=Path("run"), name="run", epochs=epochs)

    # Current records: lr = the epoch's, next_lr = after the scheduler stepped.
    new = [{"epoch": 1, "lr": 0.1, "next_lr": 0.1}, {"epoch": 2, "lr": 0.1, "next_lr": 0.01},
           {"epoch": 3, "lr": 0.01, "next_lr": 0.01}]
    assert epoch_lr(run(new)) == {1: 0.1, 2: 0.1, 3: 0.01}
    # Older records held the next epoch's lr: the previous record gives the epoch's.
    old = [{"epoch": 1, "lr": 0.1}, {"epoch": 2, "lr": 0.01}, {"epoch": 3, "lr": 0.01}]
    assert epoch_lr(run(old)) == {1: None, 2: 0.1, 3: 0.01}
