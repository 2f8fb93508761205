"""Benchmarks on CPU with tiny models: inference records (eager, onnx, skipped variants), training
records, the Markdown/PNG report and the CLI's quick refusals. Engine builds of every backend
(AOTInductor's CPU compile among them) and `fastvid bench` runs are in tests/e2e/test_bench_cli.py."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from bench import InferenceBenchmarkRunner, bench_training, render_report
from bench.memory import PeakMemory
from bench.runner import BenchSettings

from _report_tables import table_rows
from _tiny import Tiny2D, Tiny3D


def test_unsupported_precision_is_recorded_as_skipped():
    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (2, 3, 16, 16), "cpu",
                                      settings=BenchSettings(warmup=0, iters=2))
    recs = runner.run(["eager", "onnx"], batches=[1], precisions=["fp16", "bf16"])
    status = {(r["backend"], r["precision"]): r for r in recs}
    assert status[("eager", "fp32")]["status"] == "ok"  # the baseline is always measured
    assert status[("eager", "fp16")]["status"] == "skipped" and "CUDA" in status[("eager", "fp16")]["reason"]
    assert status[("eager", "bf16")]["status"] == "ok" and status[("eager", "bf16")]["video_per_s"] > 0
    assert status[("onnx", "bf16")]["status"] == "skipped" and "bf16" in status[("onnx", "bf16")]["reason"]


@pytest.mark.parametrize("model_cls", [Tiny2D, Tiny3D])
def test_train_bench_fp32_vs_bf16_and_channels_last(model_cls):
    model = model_cls()
    shape = (4, 3, 16, 16) if model.input_layout == "NTCHW" else (3, 4, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recs = bench_training(model, shape, 3, "cpu", batch=2, warmup=1, iters=3, model_name="tiny")
    assert [(r["precision"], r["channels_last"]) for r in recs] == [
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    for r in recs:
        assert r["kind"] == "train" and r["status"] == "ok", r.get("reason")
        assert r["videos_per_s"] > 0 and r["step_ms"]["p50"] > 0 and r["ratio_to_fp32"] > 0
        assert r["peak_mem_mb"] > 0 and r["peak_mem_method"] and "data_wait_share" in r
        assert r["cv"] >= 0 and r["p90_over_p50"] >= 1 and isinstance(r["unstable"], bool)
        assert r["unstable"] == bool(r["unstable_reason"])
    assert recs[0]["ratio_to_fp32"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "input model was trained"


def test_train_bench_hands_over_each_record_before_the_next_variant():
    """on_record gets every record as it is measured (gpu_check appends it at once), and the
    variants are read one at a time, so a lazy iterable can stop handing them out."""
    seen: list[dict] = []
    asked_after: list[int] = []

    def variants():
        for v in [("fp32", False), ("fp16", False), ("fp32", True)]:
            asked_after.append(len(seen))
            yield v

    recs = bench_training(Tiny2D(), (2, 3, 8, 8), 3, "cpu", batch=2, variants=variants(), warmup=0, iters=1,
                          on_record=lambda r: seen.append(dict(r)))
    assert asked_after == [0, 1, 2]  # the next variant was asked for after the record was handed over
    assert [(r["precision"], r["status"]) for r in seen] == [("fp32", "ok"), ("fp16", "skipped"), ("fp32", "ok")]
    assert seen[0]["ratio_to_fp32"] == 1.0 and seen[2]["ratio_to_fp32"] > 0  # ratios known when handed over
    assert [r["status"] for r in recs] == [r["status"] for r in seen]


def test_inference_plan_puts_the_baselines_first():
    from bench.runner import inference_plan

    assert inference_plan(["eager", "compile", "aoti"], [1, 16], ["fp32", "fp16"]) == [
        ("eager", "fp32", 1), ("eager", "fp32", 16), ("eager", "fp16", 1), ("eager", "fp16", 16),
        ("compile", "fp32", 1), ("compile", "fp32", 16), ("compile", "fp16", 1), ("compile", "fp16", 16),
        ("aoti", "fp32", 1), ("aoti", "fp32", 16), ("aoti", "fp16", 1), ("aoti", "fp16", 16)]


def test_inference_runner_hands_over_each_record():
    seen: list[dict] = []
    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (2, 3, 16, 16), "cpu",
                                      settings=BenchSettings(warmup=0, iters=2))
    variants = [("eager", "fp32", 2), ("eager", "bf16", 2), ("trt", "fp32", 2), ("eager", "fp32", 1)]
    recs = runner.run_variants(iter(variants), on_record=lambda r: seen.append(dict(r)))
    assert [(r["backend"], r["precision"], r["batch"]) for r in seen] == variants
    assert seen[0]["baseline"] is True and seen[0]["ratio_to_eager"] == 1.0
    assert seen[1]["status"] == "ok" and seen[1]["ratio_to_eager"] > 0  # set before it was handed over
    assert seen[2]["status"] == "skipped" and "ratio_to_eager" not in seen[2]
    assert seen[3]["ratio_to_eager"] == 1.0  # batch 1 against its own baseline
    assert len(recs) == 4


def test_train_bench_skips_fp16_on_cpu():
    recs = bench_training(Tiny2D(), (2, 3, 8, 8), 3, "cpu", batch=2, variants=[("fp16", False)],
                          warmup=0, iters=1)
    assert recs[0]["status"] == "skipped" and "CUDA" in recs[0]["reason"]


def _sample_records() -> list[dict]:
    """A recorded results.json as a GPU run writes it (no GPU needed to render it)."""
    base = {"device": "NVIDIA H100", "device_type": "cuda", "versions": {"torch": "2.14.1"},
            "date": "2026-11-22T10:00:00+00:00", "model": "trn_bninception", "weights": "random"}
    recs = []
    for batch, scale in ((1, 1.0), (16, 8.0)):
        for backend, speed in (("eager", 100.0), ("compile", 180.0), ("aoti", 200.0), ("trt", 420.0)):
            vps = speed * scale
            recs.append(dict(base, kind="inference", backend=backend, precision="fp16", batch=batch, status="ok",
                             video_per_s=vps, latency_ms={"p50": 1e3 * batch / vps, "p90": 1.1e3 * batch / vps,
                                                          "p99": 1.3e3 * batch / vps},
                             peak_mem_mb=900.0, peak_mem_method="NVML device used memory", ratio_to_eager=vps / 100))
    recs.append(dict(base, kind="inference", backend="onnx", precision="fp16", batch=1, status="skipped",
                     reason="onnxruntime has no CUDAExecutionProvider"))
    for precision, cl, vps in (("fp32", False, 50.0), ("fp16", True, 140.0)):
        recs.append(dict(base, kind="train", precision=precision, channels_last=cl, batch=8, status="ok",
                         videos_per_s=vps, step_ms={"p50": 8000 / vps, "mean": 8100 / vps}, peak_mem_mb=5000.0,
                         peak_mem_method="NVML", ratio_to_fp32=vps / 50))
    for loader, vps in (("dali", 900.0), ("torch", 250.0)):
        recs.append(dict(base, kind="loader", backend=loader, workers=4, videos_per_s=vps, frames_per_s=8 * vps))
    recs.append(dict(base, kind="loader", backend="dali-cpu", workers=4, skipped="codec h264 not in DALI's CPU decoder"))
    return recs


def test_report_renders_tables_and_pngs(tmp_path):
    import matplotlib.image

    (tmp_path / "results.json").write_text(json.dumps(_sample_records()))
    result = render_report(tmp_path)
    md = result["markdown"].read_text()
    for backend in ("eager", "compile", "aoti", "trt", "onnx"):
        assert f"| {backend} |" in md
    assert "onnxruntime has no CUDAExecutionProvider" in md and "NVML device used memory" in md
    assert "## Training throughput" in md and "## Data loaders" in md and "| dali |" in md
    assert "| dali-cpu |" in md and "codec h264 not in DALI's CPU decoder" in md
    names = {p.name for p in result["plots"]}
    assert names == {"inference_throughput.png", "inference_latency.png", "train_throughput.png",
                     "loader_throughput.png"}
    for p in result["plots"]:
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert f"]({p.name})" in md


def test_report_on_empty_dir_is_a_clear_error(tmp_path):
    from fastvid.cli import cli

    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no benchmark records" in result.output


def test_cli_bench_loader_needs_data_root():
    from fastvid.cli import cli

    result = CliRunner().invoke(cli, ["bench", "-c", "configs/trn_bninception_jester.yaml", "--loader", "torch"])
    assert result.exit_code != 0 and "--data-root" in result.output


@pytest.mark.gpu
def test_gpu_peak_memory_is_labelled():
    with PeakMemory("cuda") as mem:
        x = torch.empty(64 * 1024 * 1024, device="cuda")
        del x
    res = mem.result()
    assert res["torch_peak_mem_mb"] >= 255 and "max_memory_allocated" in res["torch_peak_mem_method"]
    assert res["peak_mem_mb"] > 0 and "device used memory" in res["peak_mem_method"]


def test_bf16_checks_ignore_emulated_bf16(monkeypatch):
    from fastvid.errors import FastvidError
    from fastvid.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # A pre-Ampere GPU: bf16 only emulated, so the default (including_emulation=True) says True.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with pytest.raises(FastvidError, match="bf16"):
        resolve_precision(True, "bf16", "cuda")
    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (4, 3, 32, 32), "cuda")
    assert "bf16" in runner.skip_reason("eager", "bf16")


def test_device_memory_reader_uses_the_nvml_mapping(monkeypatch):
    from bench.memory import _MB, _device_used_reader

    calls = []
    monkeypatch.setattr(torch.cuda, "device_memory_used", lambda i: calls.append(i) or 3 * _MB)
    read, how = _device_used_reader(torch.device("cuda", 1))
    assert read() == 3.0 and calls[-1] == 1 and how.startswith("NVML")

    def no_pynvml(i):
        raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "device_memory_used", no_pynvml)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (1 * _MB, 5 * _MB))
    read, how = _device_used_reader(torch.device("cuda", 1))
    assert read() == 4.0 and how.startswith("torch.cuda.mem_get_info")


class _Tiny2D3D(nn.Module):
    """2D convs per frame, then a 3D conv over time: TPN-TSM's mix of weight ranks, tiny."""

    input_layout = "NTCHW"
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(3, 4, 3, padding=1)
        self.conv3d = nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0))
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = torch.relu(self.conv2d(x.flatten(0, 1)))
        y = y.reshape(n, t, *y.shape[1:]).transpose(1, 2)
        return self.fc(torch.relu(self.conv3d(y)).mean((2, 3, 4)))


def test_train_bench_channels_last_with_2d_and_3d_convs():
    """``net.to(memory_format=channels_last)`` raised on the 5-D weights, outside the try."""
    recs = bench_training(_Tiny2D3D(), (4, 3, 8, 8), 3, "cpu", batch=2,
                          variants=[("fp32", False), ("fp32", True)], warmup=1, iters=2)
    assert [r["status"] for r in recs] == ["ok", "ok"], [r.get("reason") for r in recs]


# ------------------------------------------------------------------ dispersion, runs, report
def test_stability_flags_dispersion_and_records_the_load():
    from bench.records import stability

    quiet = stability([10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.0, 10.2, 9.9])
    assert not quiet["unstable"] and quiet["unstable_reason"] is None
    assert quiet["cv"] < 0.02 and 1.0 <= quiet["p90_over_p50"] < 1.05
    assert quiet["load_avg"] == [round(v, 2) for v in os.getloadavg()] and quiet["cpus"] >= 1
    # A busy machine: most iterations fast, a third of them 3-5x slower (a figure to distrust).
    busy = stability([10.0] * 7 + [30.0, 40.0, 50.0], load_avg=[3.5, 2.0, 1.0])
    assert busy["unstable"] and busy["cv"] > 0.10 and busy["p90_over_p50"] > 2.0
    assert "CV" in busy["unstable_reason"] and "p90 4.1x p50 > 2x" in busy["unstable_reason"]
    assert "load average 3.5" in busy["unstable_reason"]
    assert stability([12.0])["cv"] is None  # one sample has no spread


def test_ratio_is_flagged_when_the_eager_baseline_moves(monkeypatch):
    import bench.runner as runner_mod

    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (2, 3, 8, 8), "cpu",
                                      settings=BenchSettings(warmup=0, iters=4))
    base = {"status": "ok", "batch": 1, "video_per_s": 100.0, "unstable": False}
    other = {"status": "ok", "batch": 1, "video_per_s": 150.0, "ratio_to_eager": 1.5, "unstable": False}
    # Re-timed at 50 video/s: the load changed while the batch was measured.
    monkeypatch.setattr(runner_mod, "time_callable", lambda fn, x, dev, w, n: ([20.0] * n, n / 50.0))
    runner._check_baseline(base, [base, other])
    assert base["baseline_drift"] == -0.5 and base["video_per_s_after"] == 50.0
    assert other["ratio_unstable"] and "went from 100 to 50 video/s" in other["ratio_unstable_reason"]
    steady = {"status": "ok", "batch": 1, "video_per_s": 150.0, "ratio_to_eager": 1.5, "unstable": False}
    monkeypatch.setattr(runner_mod, "time_callable", lambda fn, x, dev, w, n: ([10.0] * n, n / 102.0))
    runner._check_baseline(dict(base), [dict(base), steady])
    assert "ratio_unstable" not in steady


def test_report_marks_unstable_figures_and_ratios(tmp_path):
    recs = _sample_records()
    aoti = next(r for r in recs if r.get("backend") == "aoti" and r["batch"] == 1)
    aoti.update(run_id="r1", cv=0.35, p90_over_p50=3.2, load_avg=[5.1, 4.0, 3.0], cpus=2, unstable=True,
                unstable_reason="CV 35% > 10%; p90 3.2x p50 > 2x; load average 5.1 on 2 CPUs",
                ratio_unstable=True, ratio_unstable_reason="unstable: CV 35% > 10%")
    for r in recs:
        r.setdefault("run_id", "r1")
    (tmp_path / "results.json").write_text(json.dumps(recs))
    md = render_report(tmp_path)["markdown"].read_text()
    row = next(r for r in table_rows(md, "Inference") if r["backend"] == "aoti" and r["batch"] == "1")
    assert row["status"].startswith("ok, **unstable** [") and row["CV %"] == "35.0" and row["load"] == "5.1"
    assert row["p90/p50"] == "3.20" and row["× eager fp32"].startswith("2.00 [")
    assert "unstable: CV 35% > 10%; p90 3.2x p50 > 2x; load average 5.1 on 2 CPUs" in md
    assert "**Unstable: 1 of" in md and "and 1 ratios" in md
    stable = next(r for r in table_rows(md, "Inference") if r["backend"] == "eager" and r["batch"] == "1")
    assert stable["status"] == "ok" and stable["p90/p50"] == "1.10"  # from the recorded percentiles


def test_plots_flag_the_rows_the_tables_flag(tmp_path):
    """The issue's loaded machine: unstable figures and an unreliable ratio are hatched /
    red-edged in the plots exactly where the tables flag them, each bar's value written as its
    table cell, loader bars spelled out, the device named plainly."""
    from bench.report import RATIO_KEY, UNSTABLE_KEY

    recs = _sample_records()
    for r in recs:
        r["run_id"] = "r1"
        if r["kind"] == "inference" and r["batch"] == 1 and r["backend"] in ("compile", "aoti", "trt"):
            r.update(cv=0.4, unstable=True, unstable_reason="CV 40% > 10%; load average 6 on 2 CPUs")
        if r["kind"] == "inference" and r["backend"] == "trt" and r["batch"] == 16:
            r.update(ratio_unstable=True, ratio_unstable_reason="eager went from 800 to 500 video/s")
        if r["kind"] == "train" and r["precision"] == "fp16":
            r.update(p90_over_p50=2.6, unstable=True, unstable_reason="p90 2.6x p50 > 2x", ratio_unstable=True,
                     ratio_unstable_reason="unstable")
    (tmp_path / "results.json").write_text(json.dumps(recs))
    result = render_report(tmp_path)
    md = result["markdown"].read_text()
    for section, png, ratio_col, value_col in (
            ("Inference", "inference_throughput.png", "× eager fp32", "video/s"),
            ("Training throughput", "train_throughput.png", "× fp32", "videos/s")):
        rows = [r for r in table_rows(md, section) if r["status"].startswith("ok")]
        bars = result["plotted"][png]
        assert len(bars) == len(rows)
        flagged_rows = sorted((r[value_col], "unstable" in r["status"], "[" in r[ratio_col]) for r in rows)
        flagged_bars = sorted((b.text, b.unstable is not None, b.ratio_unreliable is not None) for b in bars)
        assert flagged_rows == flagged_bars  # same values, same flags
        assert sorted(r[ratio_col].split(" ")[0] for r in rows) == sorted(b.ratio_text for b in bars)
    inf = result["plotted"]["inference_throughput.png"]
    assert sum(b.unstable is not None for b in inf) == 3 and sum(b.ratio_unreliable is not None for b in inf) == 1
    lat = result["plotted"]["inference_latency.png"]
    assert sum(b.unstable is not None for b in lat) == 3 * 3  # p50, p90, p99 of each unstable row
    assert "CV 10%" in UNSTABLE_KEY.replace("> ", "") and "baseline moved" in RATIO_KEY
    loader = result["plotted"]["loader_throughput.png"]
    assert {b.label for b in loader} == {"dali\n4 DALI threads", "torch\n4 DataLoader workers"}
    assert [b.text for b in loader] == ["900.0", "250.0"]
    # Rounded as the table rounds: latency cells with 2 decimals, the same strings.
    table_p50 = sorted(r["p50 ms"] for r in table_rows(md, "Inference") if r["status"].startswith("ok"))
    assert table_p50 == sorted(b.text for b in lat if b.series == "p50 (median)")
