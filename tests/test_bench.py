"""Benchmarks on CPU: inference records (eager/aoti/onnx + skipped trt), training records, the
results file, the Markdown/PNG report and the CLI. Tiny models keep the AOTInductor compile short."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from bench import InferenceBenchmarkRunner, append_records, bench_training, read_records, render_report
from bench.memory import PeakMemory

INFERENCE_KEYS = {"kind", "backend", "precision", "batch", "model", "video_per_s", "latency_ms",
                  "peak_mem_mb", "peak_mem_method", "device", "device_type", "versions", "date",
                  "ratio_to_eager", "status"}


class _Tiny2D(nn.Module):
    input_layout = "NTCHW"
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = torch.relu(self.bn(self.conv(x.flatten(0, 1)))).mean((2, 3))
        return self.fc(y.view(n, t, -1).mean(1))


class _Tiny3D(nn.Module):
    input_layout = "NCTHW"
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))


@pytest.fixture(scope="module")
def inference_records() -> list[dict]:
    torch.manual_seed(0)
    runner = InferenceBenchmarkRunner(_Tiny2D().eval(), (4, 3, 32, 32), "cpu", model_name="tiny", warmup=1,
                                      iters=4, extra={"weights": "random"})
    return runner.run(["eager", "aoti", "onnx", "trt"], batches=[2], precisions=["fp32"])


def test_inference_records_have_the_schema_and_positive_numbers(inference_records):
    by_backend = {r["backend"]: r for r in inference_records}
    assert set(by_backend) == {"eager", "aoti", "onnx", "trt"}
    for backend in ("eager", "aoti", "onnx"):
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
    assert by_backend["eager"]["ratio_to_eager"] == 1.0 and by_backend["eager"]["baseline"] is True
    assert by_backend["aoti"]["validation"]["passed"] and by_backend["onnx"]["build_s"] > 0
    trt = by_backend["trt"]
    assert trt["status"] == "skipped" and "CUDA" in trt["reason"] and "video_per_s" not in trt


def test_unsupported_precision_is_recorded_as_skipped():
    runner = InferenceBenchmarkRunner(_Tiny2D().eval(), (2, 3, 16, 16), "cpu", warmup=0, iters=2)
    recs = runner.run(["eager", "onnx"], batches=[1], precisions=["fp16", "bf16"])
    status = {(r["backend"], r["precision"]): r for r in recs}
    assert status[("eager", "fp32")]["status"] == "ok"  # the baseline is always measured
    assert status[("eager", "fp16")]["status"] == "skipped" and "CUDA" in status[("eager", "fp16")]["reason"]
    assert status[("eager", "bf16")]["status"] == "ok" and status[("eager", "bf16")]["video_per_s"] > 0
    assert status[("onnx", "bf16")]["status"] == "skipped" and "bf16" in status[("onnx", "bf16")]["reason"]


@pytest.mark.parametrize("model_cls", [_Tiny2D, _Tiny3D])
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
    assert recs[0]["ratio_to_fp32"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "input model was trained"


def test_train_bench_skips_fp16_on_cpu():
    recs = bench_training(_Tiny2D(), (2, 3, 8, 8), 3, "cpu", batch=2, variants=[("fp16", False)],
                          warmup=0, iters=1)
    assert recs[0]["status"] == "skipped" and "CUDA" in recs[0]["reason"]


def test_results_file_is_extended_not_overwritten(tmp_path, inference_records):
    append_records(tmp_path, inference_records[:2])
    path = append_records(tmp_path, inference_records[2:])
    assert path.name == "results.json"
    assert len(json.loads(path.read_text())) == len(inference_records) == len(read_records(tmp_path))


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


def test_cli_bench_then_report(tmp_path):
    from fastvid.cli import cli

    out = tmp_path / "rep"
    result = CliRunner().invoke(cli, [
        "bench", "-c", "configs/tpn_slowonly_r50_k400.yaml", "--set", "data.image_size=32",
        "--set", "data.clip_len=2", "--set", "model.num_classes=3", "--device", "cpu",
        "--backends", "eager,trt", "--batch", "1,2", "--iters", "2", "--warmup", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recs = read_records(out)
    assert {(r["backend"], r["batch"]) for r in recs} == {("eager", 1), ("eager", 2), ("trt", 1), ("trt", 2)}
    assert all(r["weights"].startswith("random") for r in recs)
    assert all(r["video_per_s"] > 0 for r in recs if r["backend"] == "eager")
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "inference_throughput.png").is_file()


def test_cli_bench_loader_needs_data_root():
    from fastvid.cli import cli

    result = CliRunner().invoke(cli, ["bench", "-c", "configs/trn_bninception_jester.yaml", "--loader", "torch"])
    assert result.exit_code != 0 and "--data-root" in result.output


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
    runner = InferenceBenchmarkRunner(_Tiny2D().eval(), (4, 3, 32, 32), "cuda")
    assert "bf16" in runner._skip_reason("eager", "bf16")


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


def test_gpu_check_driver_runs_its_sections_on_cpu(tmp_path):
    """bench/gpu_check.py (what scripts/gpu_check.sh runs per model) with small CPU inputs."""
    from bench.gpu_check import main

    out = tmp_path / "gpu"
    small = ["--device", "cpu", "--frames", "4", "--size", "64", "--warmup", "1", "--iters", "2"]
    assert main(["infer", "trn_bninception", str(out), *small, "--backends", "eager,trt",
                 "--batches", "1,2", "--precisions", "fp32"]) == 0
    assert main(["infer", "tpn_slowonly_r50", str(out), *small, "--backends", "eager",
                 "--batches", "1", "--precisions", "fp32"]) == 0
    assert main(["train", "trn_bninception", str(out), *small, "--train-batch", "2",
                 "--train-warmup", "1", "--train-iters", "1"]) == 0
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
