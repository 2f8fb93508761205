"""Training-step timing through the CLI: `fastvid train` records its time to the first step, and
`fastvid bench --train --train-modes` writes one record per mode and variant (a CUDA-graph step
on a CPU: skipped with the reason)."""
from __future__ import annotations


def test_metrics_record_time_to_first_step(synth_frames, tmp_path):
    import json

    from _helpers import invoke_ok, train_args

    work = tmp_path / "run"
    invoke_ok(train_args(synth_frames, work, "--epochs", "1", "--batch-size", "4",
                         "--max-steps-per-epoch", "3"))
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    startup = [x for x in lines if x["type"] == "startup"]
    epoch = next(x for x in lines if x["type"] == "epoch")
    assert len(startup) == 1 and startup[0]["step"] == 1
    assert 0 < startup[0]["first_epoch_to_first_step_s"] < startup[0]["time_to_first_step_s"]
    assert 0 <= epoch["startup_overhead_s"] <= epoch["epoch_time_s"]
    assert 0 <= epoch["outside_steady_share"] <= 1


def test_bench_train_modes_on_cpu(tmp_path):
    """fastvid bench --train --train-modes: one record per mode and variant; a CUDA-graph step
    on a CPU is a skipped record with the reason, and every record reaches results.json."""
    from _helpers import CONFIG, SMALL, invoke_ok
    from bench.records import read_records

    out = tmp_path / "bench"
    invoke_ok(["bench", "-c", CONFIG, *SMALL, "--device", "cpu", "--train", "--train-batch", "2",
               "--train-modes", "eager,cuda-graphs", "--iters", "1", "--warmup", "1", "--out", str(out)])
    recs = [r for r in read_records(out) if r["kind"] == "train"]
    assert {(r["precision"], r["channels_last"], r["mode"]) for r in recs} == {
        (p, cl, m) for p in ("fp32", "bf16") for cl in (False, True) for m in ("eager", "cuda-graphs")}
    graphs = [r for r in recs if r["mode"] == "cuda-graphs"]
    assert all(r["status"] == "skipped" and "needs a CUDA device" in r["reason"] for r in graphs)
    assert all(r["status"] == "ok" and r["videos_per_s"] > 0 for r in recs if r["mode"] == "eager")
