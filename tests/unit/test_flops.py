"""FLOPs per video, the dense-peak table and the FLOP columns of records and reports, on CPU:
known values for a tiny model (counted by hand) and the issue's H200 figures."""
from __future__ import annotations

import json

import pytest
import torch

from _tiny import Tiny2D
from bench.flops import (PEAK_TFLOPS, annotate, annotate_record, forward_gflop_per_video, peak_tflops,
                         precision_class)


# Tiny2D(classes=5): Conv2d(3 -> 8, 3x3, pad 1) on every frame, mean, Linear(8 -> 5).
# By hand: 2 FLOPs per multiply-add. Conv: 8 out x 3 in x 3 x 3 taps x 16 x 16 pixels x 4 frames;
# Linear: 8 x 5. BN, ReLU and means are not matrix work and are not counted.
TINY_GFLOP = 2 * (8 * 3 * 9 * 16 * 16 * 4 + 8 * 5) / 1e9


def test_forward_gflop_of_a_tiny_model_is_counted_by_hand():
    model = Tiny2D(classes=5).train()
    assert forward_gflop_per_video(model, (4, 3, 16, 16)) == pytest.approx(TINY_GFLOP, rel=1e-9)
    assert model.training and next(model.parameters()).device.type == "cpu"  # left as it was
    two_frames = 2 * (8 * 3 * 9 * 16 * 16 * 2 + 8 * 5) / 1e9  # cached per shape: a new count
    assert forward_gflop_per_video(model, (2, 3, 16, 16)) == pytest.approx(two_frames, rel=1e-9)


def test_peak_table_picks_the_device_and_the_precision_class(monkeypatch):
    assert peak_tflops("NVIDIA H200", "bf16")[0] == 989.5
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp16")[0] == 989.5  # the SXM part's torch name
    assert peak_tflops("NVIDIA H100 PCIe", "bf16")[0] == 756.5
    assert peak_tflops("NVIDIA H200 NVL", "bf16")[0] == 835.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    assert peak_tflops("NVIDIA L40S", "fp16")[0] == 362.05 and peak_tflops("NVIDIA L4", "fp16")[0] == 121.0
    peak, why = peak_tflops("NVIDIA L40", "fp16")  # not in the table: no guess from the L4
    assert peak is None and "NVIDIA L40" in why
    peak, why = peak_tflops("Tesla V100-SXM2-16GB", "bf16")
    assert peak is None and "no bf16" in why
    assert peak_tflops("Tesla V100-SXM2-16GB", "tf32")[0] == 15.7  # Volta: fp32 on the CUDA cores
    assert peak_tflops("Tesla V100-PCIE-32GB", "fp16")[0] == 112.0
    assert "dense" in peak_tflops("NVIDIA H200", "bf16")[1]
    assert all(set(peaks) <= {"fp16", "bf16", "tf32", "fp32"} for _, _, peaks in PEAK_TFLOPS)
    # fp32 convolutions count against TF32 while cuDNN may use it, else against plain fp32.
    assert precision_class("fp32", "cuda") == "tf32" and precision_class("bf16", "cuda") == "bf16"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert precision_class("fp32", "cuda") == "fp32"


def test_annotate_gives_the_issue_figures():
    """TRN-BNInception bf16 training at 471 videos/s x 32.5 GFLOP x 3 = ~46 TFLOP/s (issue 18)."""
    rec = annotate({"videos_per_s": 471.0}, 32.5, "NVIDIA H200", "bf16", training=True)
    assert rec["tflops"] == pytest.approx(45.92, abs=0.01)
    assert rec["peak_tflops"] == 989.5 and rec["pct_of_peak"] == pytest.approx(4.641, abs=1e-3)
    assert "x3" in rec["flop_basis"] and rec["gflop_per_video"] == 32.5
    rec = annotate({"video_per_s": 1000.0}, 32.5, "NVIDIA H200", "fp16", training=False)
    assert rec["tflops"] == 32.5 and rec["pct_of_peak"] == pytest.approx(3.284, abs=1e-3)
    rec = annotate({"video_per_s": 10.0}, 32.5, "AMD EPYC (2 cores)", "fp32", training=False, device_type="cpu")
    assert rec["tflops"] == 0.325 and rec["pct_of_peak"] is None and rec["peak_tflops"] is None
    assert "CPU" in rec["peak_basis"]
    rec = annotate({"video_per_s": 10.0}, 32.5, "NVIDIA GeForce RTX 4090", "fp16", training=False)
    assert rec["pct_of_peak"] is None and "RTX 4090" in rec["peak_basis"]
    assert "tflops" not in annotate({"status": "ok"}, 32.5, "NVIDIA H200", "fp16", training=False)


def test_annotate_record_reads_the_stamped_record():
    model = Tiny2D(classes=5)
    rec = {"status": "ok", "video_per_s": 2000.0, "precision": "bf16", "device": "NVIDIA H100 80GB HBM3",
           "device_type": "cuda", "input_shape": [2, 4, 3, 16, 16]}
    annotate_record(rec, model, (4, 3, 16, 16), training=False)
    assert rec["tflops"] == pytest.approx(2000 * TINY_GFLOP / 1e3, rel=1e-3)
    assert rec["pct_of_peak"] == pytest.approx(100 * rec["tflops"] / 989.5, rel=1e-3)
    skipped = annotate_record({"status": "skipped"}, model, (4, 3, 16, 16), training=False)
    assert skipped == {"status": "skipped"}


def test_inference_and_train_records_carry_consistent_flop_figures():
    from bench import InferenceBenchmarkRunner, bench_training
    from bench.runner import BenchSettings

    model = Tiny2D(classes=5).eval()
    runner = InferenceBenchmarkRunner(model, (4, 3, 16, 16), "cpu", model_name="tiny",
                                      settings=BenchSettings(warmup=0, iters=2))
    (rec,) = runner.run(["eager"], [2], ["fp32"])
    assert rec["gflop_per_video"] == pytest.approx(TINY_GFLOP, rel=1e-3)
    assert rec["tflops"] == pytest.approx(rec["video_per_s"] * TINY_GFLOP / 1e3, rel=2e-3)
    assert rec["pct_of_peak"] is None and rec["peak_basis"].startswith("no peak table")
    (train,) = bench_training(model, (4, 3, 16, 16), 5, "cpu", batch=2, variants=[("fp32", False)],
                              warmup=0, iters=2)
    assert train["tflops"] == pytest.approx(train["videos_per_s"] * 3 * TINY_GFLOP / 1e3, rel=2e-3)


def _gpu_like_records() -> list[dict]:
    base = {"device": "NVIDIA H200", "device_type": "cuda", "versions": {"torch": "2.11.0+cu130"},
            "date": "2026-12-01T10:00:00+00:00", "model": "trn_bninception", "status": "ok",
            "input_shape": [1, 8, 3, 224, 224], "peak_mem_mb": 900.0, "peak_mem_method": "NVML"}
    recs = [dict(base, kind="inference", backend="eager", runner="eager", mode="launch", precision="fp32",
                 batch=1, video_per_s=110.0, latency_ms={"p50": 9.06, "p90": 9.1, "p99": 9.2}),
            dict(base, kind="inference", backend="eager+cudagraph", runner="eager", mode="cudagraph",
                 channels_last=True, precision="fp16", batch=1, video_per_s=900.0,
                 latency_ms={"p50": 1.1, "p90": 1.2, "p99": 1.3}),
            dict(base, kind="train", precision="bf16", channels_last=True, batch=24, videos_per_s=471.0,
                 step_ms={"p50": 51.9, "mean": 52.0}),
            dict(base, kind="inference", backend="eager", mode="launch", precision="fp32", batch=1,
                 device="AMD EPYC (2 cores)", device_type="cpu", video_per_s=2.0,
                 latency_ms={"p50": 500.0, "p90": 510.0, "p99": 520.0})]
    for r in recs:
        annotate(r, 32.5, r["device"], r["precision"], training=r["kind"] == "train",
                 device_type=r["device_type"])
    return recs


def test_report_shows_mode_tflops_and_percent_of_peak(tmp_path):
    from bench import render_report

    (tmp_path / "results.json").write_text(json.dumps(_gpu_like_records()))
    md = render_report(tmp_path)["markdown"].read_text()
    inference = md.split("## Inference")[1].split("##")[0]
    assert "| mode |" in inference and "| TFLOP/s | % peak |" in inference
    assert "| eager+cudagraph | cudagraph, channels_last | fp16 | 1 |" in inference
    # 900 video/s x 32.5 GFLOP = 29.25 TFLOP/s = 2.96% of the H200's 989.5 dense fp16
    assert "| 29.2 | 2.96 [" in inference and "| 3.58 | 0.723 [" in inference  # fp32: TF32's 494.5
    assert "| 0.065 | n/a [" in inference  # the CPU row
    train = md.split("## Training throughput")[1].split("##")[0]
    assert "| 45.9 | 4.64 [" in train and "x3 for a training step" in train
    assert "GFLOP per video: trn_bninception (8, 3, 224, 224) 32.5" in md
    notes = md.split("## Notes")[1]
    assert "NVIDIA H200 SXM fp16 tensor cores, dense: 989.5 TFLOP/s" in notes
    assert "NVIDIA H200 SXM tf32 tensor cores, dense: 494.5 TFLOP/s" in notes
    assert "no peak table for CPUs" in notes
