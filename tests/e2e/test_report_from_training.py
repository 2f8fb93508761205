"""`fastvid report` on a run trained and evaluated through the CLI (train -> eval --out -> report):
one point per logged step and epoch, the confusion matrix from the run's eval.json."""
from __future__ import annotations

import json

from fastvid.report import render

from _helpers import CONFIG, SMALL, invoke_ok, train_args


def test_tiny_train_eval_report_end_to_end(tmp_path):
    """A real 2-epoch x 2-step TRN run, its eval with --out inside the run dir, then the report."""
    from fastvid.data.synth import synth_dataset

    root = tmp_path / "data"
    synth_dataset(root, kind="frames", classes=4, train=8, val=8, frames=8, size=(48, 48), seed=0)
    work = tmp_path / "run"
    small = [a.replace("=64", "=48") for a in SMALL]
    args = train_args(root, work, "--epochs", "2", "--batch-size", "4", "--max-steps-per-epoch", "2",
                      "--set", "train.precise_bn_batches=0")
    invoke_ok([a.replace("=64", "=48") for a in args])
    invoke_ok(["eval", "-c", CONFIG, "--data-root", str(root), "--checkpoint", str(work / "best.pt"),
               "--loader", "torch", "--device", "cpu", *small, "--out", str(work / "eval.json"),
               "--save-scores", str(work / "scores.npy")])
    text = invoke_ok(["report", str(work)])
    assert f"report: {work / 'report.md'}" in text and "confusion.png" in text
    result = render([work])
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r["type"] == "train"]
    epochs = [r for r in lines if r["type"] == "epoch"]
    assert result["drawn"]["loss.png"]["raw"]["run"][0] == [float(s) for s in steps] == [1.0, 2.0, 3.0, 4.0]
    assert result["drawn"]["val_accuracy.png"]["val_top1"]["run"] == (
        [1.0, 2.0], [100 * e["val_top1"] for e in epochs])
    ev = json.loads((work / "eval.json").read_text())
    drawn = result["confusion"][str(work / "eval.json")]
    assert drawn["counts"].sum(axis=1).tolist() == ev["class_videos"] == [2, 2, 2, 2]
    assert ev["classes"] == (root / "categories.txt").read_text().split("\n")[:4]
    assert (work / "scores.predictions.csv").is_file()
