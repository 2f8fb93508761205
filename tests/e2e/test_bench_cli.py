"""Benchmarks end to end on CPU: every registered engine backend built and timed beside eager
(AOTInductor's CPU compile among them), `fastvid bench` / `fastvid report` through the CLI, and
bench/gpu_check.py's sections on real models with small CPU inputs."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import engines
from bench import InferenceBenchmarkRunner, append_records, read_records, render_report
from bench.runner import BenchSettings
from engines.backends import engine_names

from _report_tables import assert_plots_match_tables, table_rows
from _tiny import Tiny2D


INFERENCE_KEYS = {"kind", "backend", "precision", "batch", "model", "video_per_s", "latency_ms",
                  "peak_mem_mb", "peak_mem_method", "device", "device_type", "versions", "date",
                  "ratio_to_eager", "status", "cv", "p90_over_p50", "load_avg", "cpus", "unstable",
                  "unstable_reason"}


@pytest.fixture(scope="module")
def inference_records() -> list[dict]:
    """Eager and every registered engine backend at batch 2 (AOTInductor's CPU compile: minutes on
    2 shared cores; a tiny model keeps it to the compiler's fixed cost)."""
    torch.manual_seed(0)
    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (4, 3, 32, 32), "cpu", model_name="tiny",
                                      extra={"weights": "random"}, settings=BenchSettings(warmup=1, iters=4))
    return runner.run(["eager", *engine_names()], batches=[2], precisions=["fp32"])


def test_inference_records_have_the_schema_and_positive_numbers(inference_records):
    by_backend = {r["backend"]: r for r in inference_records}
    assert set(by_backend) == {"eager", *engine_names()}
    here = engines.available_backends("cpu")  # {name: None, or why it cannot run here}
    built = [name for name, why in here.items() if why is None]
    assert built, "no engine backend runs on this CPU"
    for backend in ["eager", *built]:
        rec = by_backend[backend]
        assert rec["status"] == "ok", rec.get("reason")
        assert INFERENCE_KEYS <= set(rec), INFERENCE_KEYS - set(rec)
        assert rec["kind"] == "inference" and rec["batch"] == 2 and rec["precision"] == "fp32"
        assert rec["video_per_s"] > 0 and rec["ratio_to_eager"] > 0
        lat = rec["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert rec["peak_mem_mb"] > 0 and "VmHWM" in rec["peak_mem_method"]
        assert rec["device_type"] == "cpu" and rec["versions"]["torch"] == torch.__version__
        assert rec["weights"] == "random"
        assert rec["cv"] >= 0 and rec["p90_over_p50"] >= 1 and rec["unstable"] == bool(rec["unstable_reason"])
        assert rec["load_avg"] is None or len(rec["load_avg"]) == 3
    assert by_backend["eager"]["ratio_to_eager"] == 1.0 and by_backend["eager"]["baseline"] is True
    for backend in built:  # each engine was built for this run and passed its validation
        assert by_backend[backend]["validation"]["passed"] and by_backend[backend]["build_s"] > 0
    for backend in set(here) - set(built):  # e.g. TensorRT on a CPU: skipped with the reason
        rec = by_backend[backend]
        assert rec["status"] == "skipped" and rec["reason"] and "video_per_s" not in rec


def test_results_file_is_extended_not_overwritten(tmp_path, inference_records):
    append_records(tmp_path, inference_records[:2])
    path = append_records(tmp_path, inference_records[2:])
    assert path.name == "results.json"
    assert len(json.loads(path.read_text())) == len(inference_records) == len(read_records(tmp_path))


@pytest.mark.dali
def test_cli_loader_thread_sweep_then_report(tmp_path):
    """fastvid bench --loader ... --loader-threads 1,2 writes one record per (backend, threads)
    into results.json; the report plots them against threads."""
    from _media import write_frames_dataset
    from fastvid.cli import cli

    root = write_frames_dataset(tmp_path / "data", num_videos=4, num_frames=9, height=40, width=56)
    out = tmp_path / "rep"
    result = CliRunner().invoke(cli, [
        "bench", "-c", "configs/trn_bninception_jester.yaml", "--set", "data.image_size=32",
        "--set", "model.num_segments=4", "--device", "cpu", "--loader", "dali-cpu,torch",
        "--data-root", str(root), "--loader-threads", "1,2", "--loader-batches", "2",
        "--loader-option", "prefetch=3", "--train-batch", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recs = read_records(out)
    assert sorted((r["backend"], r["threads"]) for r in recs) == [
        ("dali-cpu", 1), ("dali-cpu", 2), ("torch", 1), ("torch", 2)]
    assert all(r["status"] == "ok" and r["videos_per_s"] > 0 and "scaling" in r for r in recs)
    assert all(r.get("dali_options") == ({"prefetch": 3} if r["backend"] == "dali-cpu" else None)
               for r in recs)
    assert "vs 1 thread" in result.output
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "loader_threads.png").is_file()


def test_gpu_check_driver_runs_its_sections_on_cpu(tmp_path, monkeypatch):
    """bench/gpu_check.py (what scripts/gpu_check.sh runs per model) with small CPU inputs."""
    from bench.gpu_check import main

    monkeypatch.setenv("FASTVID_RUN_ID", "gpu-check-test")  # scripts/gpu_check.sh exports one per check
    out = tmp_path / "gpu"
    small = ["--device", "cpu", "--frames", "4", "--size", "64", "--warmup", "1", "--iters", "2"]
    assert main(["infer", "trn_bninception", str(out), *small, "--backends", "eager,trt",
                 "--batches", "1,2", "--precisions", "fp32"]) == 0
    assert main(["infer", "tpn_slowonly_r50", str(out), *small, "--backends", "eager",
                 "--batches", "1", "--precisions", "fp32"]) == 0
    assert main(["train", "trn_bninception", str(out), *small, "--train-batch", "2",
                 "--train-warmup", "1", "--train-iters", "1",
                 "--train-variants", "fp32,fp32:cl,bf16,bf16:cl"]) == 0  # no CPU compile: minutes
    records = read_records(out)
    infer = [r for r in records if r["kind"] == "inference"]
    eager = [r for r in infer if r["backend"] == "eager" and r["status"] == "ok"]
    assert sorted((r["model"], r["batch"]) for r in eager) == [
        ("tpn_slowonly_r50", 1), ("trn_bninception", 1), ("trn_bninception", 2)]
    assert all(r["video_per_s"] > 0 and r["input_shape"][1:] in ([4, 3, 64, 64], [3, 4, 64, 64])
               for r in eager)
    trt = [r for r in infer if r["backend"] == "trt"]
    assert len(trt) == 2 and all(r["status"] == "skipped" and r["reason"] for r in trt)
    train = [r for r in records if r["kind"] == "train"]
    assert {(r["precision"], r["channels_last"]) for r in train} == {
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert all(r["status"] == "ok" and r["videos_per_s"] > 0 for r in train)
    assert all(r["source"] == "scripts/gpu_check.sh" for r in records)
    assert {r["run_id"] for r in records} == {"gpu-check-test"}  # the three steps report as one run
    assert render_report(out)["records"] == len(records)


def test_cli_bench_twice_into_one_folder_keeps_both_runs_and_reports_the_latest(tmp_path, monkeypatch, caplog):
    """`make demo` twice / two benches into one --out: results.json kept both, the report repeated
    rows with identical labels, and the throughput plot showed only the first run's values."""
    import logging

    from fastvid.cli import cli

    monkeypatch.delenv("FASTVID_RUN_ID", raising=False)
    caplog.set_level(logging.INFO)
    out = tmp_path / "rep"
    args = ["bench", "-c", "configs/tpn_slowonly_r50_k400.yaml", "--set", "data.image_size=32",
            "--set", "data.clip_len=2", "--set", "model.num_classes=3", "--device", "cpu",
            "--iters", "2", "--warmup", "0", "--out", str(out)]
    for extra in (["--backends", "eager,trt", "--batch", "1,2"], ["--backends", "eager", "--batch", "1"]):
        result = CliRunner().invoke(cli, args + extra)
        assert result.exit_code == 0, result.output
        assert "records of run" in result.output
    records = read_records(out)
    runs = list(dict.fromkeys(r["run_id"] for r in records))
    assert len(records) == 5 and len(runs) == 2  # nothing lost, nothing merged
    said = [r.getMessage() for r in caplog.records]  # what bench is doing, before each measurement
    assert any(m.startswith("eager fp32 batch 2: measuring (0 warm-up + 2 timed") for m in said)
    first = [r for r in records if r["run_id"] == runs[0]]
    assert {(r["backend"], r["batch"]) for r in first} == {("eager", 1), ("eager", 2), ("trt", 1), ("trt", 2)}
    assert all(r["weights"].startswith("random") for r in records)
    assert all(r["video_per_s"] > 0 for r in records if r["backend"] == "eager")

    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and f"run {runs[1]}" in result.output, result.output
    assert (out / "report.md").is_file() and (out / "inference_throughput.png").is_file()
    rendered = render_report(out)
    md = rendered["markdown"].read_text()
    rows = table_rows(md, "Inference")
    assert len(rows) == 1 and "run" not in rows[0] and f"Run `{runs[1]}`" in md and "1 earlier run" in md
    latest = next(r for r in records if r["run_id"] == runs[1])
    assert rows[0]["video/s"] == f"{latest['video_per_s']:,.1f}" and rows[0]["batch"] == "1"
    assert_plots_match_tables(rendered)

    result = CliRunner().invoke(cli, ["report", str(out), "--all"])
    assert result.exit_code == 0 and "2 runs" in result.output, result.output
    rendered = render_report(out, all_runs=True)
    rows = table_rows(rendered["markdown"].read_text(), "Inference")
    assert len(rows) == 5 and sorted(r["run"] for r in rows) == sorted([runs[0]] * 4 + [runs[1]])
    assert_plots_match_tables(rendered)
    assert len(read_records(out)) == 5  # reporting changes nothing
