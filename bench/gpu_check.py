"""The benchmark steps of ``scripts/gpu_check.sh``: one model, one section, records appended.

``python -m bench.gpu_check {train,infer} MODEL OUT_DIR [options]`` measures TRN-BNInception or
TPN-SlowOnly-R50 with random weights (timings only) and appends its records to
``OUT_DIR/results.json`` as each group finishes, so a step stopped by the script's time cap
keeps what it measured. It runs where only torch is installed (a lent GPU machine may lack
click and PyYAML), hence argparse rather than the package's click CLI. The defaults are the GPU
check's; the tests run the same code on CPU with small inputs.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Optional, Sequence

import torch

from bench.records import append_records, new_run_id
from bench.runner import InferenceBenchmarkRunner
from bench.train import bench_training
from fastvid.models import create_model

__all__ = ["MODELS", "run_section", "main"]

_BGR = ([104.0, 117.0, 128.0], [1.0, 1.0, 1.0])  # BNInception: BGR 0-255
_RGB = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])  # ResNets: ImageNet RGB
# name: (create_model kwargs, sample layout, (mean, std))
MODELS: dict[str, tuple[dict[str, Any], str, tuple[list[float], list[float]]]] = {
    "trn_bninception": (dict(num_classes=27, num_segments=8, consensus="trn_multiscale"),
                        "TCHW", _BGR),
    "tpn_slowonly_r50": (dict(num_classes=400), "CTHW", _RGB),
}


def _sample_shape(layout: str, frames: int, size: int) -> tuple[int, int, int, int]:
    return (frames, 3, size, size) if layout == "TCHW" else (3, frames, size, size)


def run_section(section: str, name: str, out_dir: str, *, device: str = "cuda",
                frames: int = 8, size: int = 224, train_batch: int = 8,
                backends: Sequence[str] = ("eager", "compile", "aoti", "onnx", "trt"),
                batches: Sequence[int] = (1, 16), precisions: Sequence[str] = ("fp16",),
                warmup: int = 5, iters: int = 30, train_warmup: int = 3,
                train_iters: int = 10, run_id: Optional[str] = None) -> list[dict[str, Any]]:
    """Measure ``section`` (``train`` or ``infer``) of model ``name``; returns the records.

    ``infer`` always measures eager fp32 too (the baseline of every ratio); ``train`` measures
    :func:`bench.train.default_variants` for the device (fp32 / AMP x channels-first / last).
    ``run_id`` (default :func:`bench.records.new_run_id`, i.e. ``$FASTVID_RUN_ID`` when set) goes
    into every record: the script's steps share one, so the report shows them as one run.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    kwargs, layout, (mean, std) = MODELS[name]
    if "num_segments" in kwargs:  # TRN's relation head is built for its number of segments
        kwargs = {**kwargs, "num_segments": frames}
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sample = _sample_shape(layout, frames, size)
    model = create_model(name, **kwargs)
    extra = {"weights": "random (gpu_check): timings only", "source": "scripts/gpu_check.sh",
             "run_id": run_id or new_run_id()}
    if section == "train":
        records = bench_training(model, sample, kwargs["num_classes"], dev, batch=train_batch,
                                 warmup=train_warmup, iters=train_iters,
                                 model_name=name, extra=extra)
        append_records(out_dir, records)
        return records
    if section != "infer":
        raise ValueError(f"section must be 'train' or 'infer', got {section!r}")
    runner = InferenceBenchmarkRunner(model.eval().to(dev), sample, dev, model_name=name,
                                      warmup=warmup, iters=iters, extra=extra, mean=mean, std=std)
    return runner.run(list(backends), batches=list(batches), precisions=list(precisions),
                      on_records=lambda group: append_records(out_dir, group))


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["train", "infer"])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=8, help="segments / clip length")
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--backends", type=_csv, default="eager,compile,aoti,onnx,trt")
    parser.add_argument("--batches", type=lambda t: [int(b) for b in _csv(t)], default="1,16")
    parser.add_argument("--precisions", type=_csv, default="fp16",
                        help="besides the fp32 baseline")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--train-warmup", type=int, default=3)
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--run-id", default=None,
                        help="id stored in every record (default: $FASTVID_RUN_ID, else a new one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    records = run_section(args.section, args.model, args.out_dir, device=args.device,
                          frames=args.frames, size=args.size, train_batch=args.train_batch,
                          backends=args.backends, batches=args.batches,
                          precisions=args.precisions, warmup=args.warmup, iters=args.iters,
                          train_warmup=args.train_warmup, train_iters=args.train_iters,
                          run_id=args.run_id)
    keys = ("kind", "backend", "precision", "channels_last", "batch", "status", "video_per_s",
            "videos_per_s", "ratio_to_eager", "ratio_to_fp32", "reason", "cv", "unstable_reason")
    for rec in records:
        print({k: rec.get(k) for k in keys if k in rec})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
