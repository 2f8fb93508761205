"""Loader throughput: every backend side by side, in one run, on the same data.

``bench_loaders`` times training batches (random sampling + augmentation + normalize, as the
trainer sees them) after one warm-up batch, whose time -- pipeline build, worker start-up -- is
reported apart as ``startup_s``. The clock is read after synchronising the device, so GPU
loaders are charged for their asynchronous work.

    python -m bench.loader -c configs/demo_trn_synth.yaml --data-root DATA \\
        --backends torch,dali-cpu --batches 20 --out reports/loader.json
"""
from __future__ import annotations

import datetime
import itertools
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from fastvid.config import Config
from fastvid.data.lists import DatasetInfo
from fastvid.errors import FastvidError

__all__ = ["bench_loaders", "main"]

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(loader: Any) -> Any:
    """Endless stream of batches across epochs (set_epoch advanced at each pass)."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        out["nvidia-dali"] = version("nvidia-dali-cuda130")
    except Exception:  # noqa: BLE001 - PackageNotFoundError and friends: optional package
        pass
    return out


def bench_loaders(cfg: Config, dataset: DatasetInfo, backends: Iterable[str], device: torch.device,
                  batches: int, batch_size: int, *, workers: Optional[int] = None,
                  split: str = "train",
                  on_record: Optional[Callable[[dict[str, Any]], None]] = None) -> list[dict[str, Any]]:
    """One record per backend: ``videos_per_s``, ``frames_per_s`` and ``ratio_to_torch``.

    A backend that cannot run here (no DALI, no GPU, a codec DALI's CPU decoder lacks) gives a
    record with ``"skipped": reason`` instead of stopping the comparison. ``backends`` is read
    one at a time, each when the previous one is measured (a lazy iterable can stop early);
    ``on_record`` gets each record as soon as it is measured, with ``ratio_to_torch`` when the
    torch loader was measured before it.
    """
    from fastvid.loaders import build_loader

    device = torch.device(device)
    records = dataset.records(split, frame_tmpl=cfg.data.frame_tmpl)
    n_workers = cfg.train.workers if workers is None else workers
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    base = {"kind": "loader", "batches": batches, "batch_size": batch_size, "workers": n_workers,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "date": date, "dataset": str(dataset.root), "format": dataset.format,
            "image_size": cfg.data.image_size, "layout": cfg.spec.input_layout,
            "versions": _versions()}
    results: list[dict[str, Any]] = []

    def done(rec: dict[str, Any]) -> None:
        results.append(rec)
        torch_rec = next((r for r in results if r["backend"] == "torch" and "videos_per_s" in r), None)
        if torch_rec is not None and "videos_per_s" in rec:
            rec["ratio_to_torch"] = round(rec["videos_per_s"] / torch_rec["videos_per_s"], 3)
        if on_record is not None:
            on_record(rec)

    for backend in backends:
        rec: dict[str, Any] = dict(base, backend=backend)
        log.info("loader %s: starting, then timing %d batches of %d", backend, batches, batch_size)
        try:
            t0 = time.perf_counter()
            loader = build_loader(cfg, dataset, split, loader=backend, device=device,
                                  batch_size=batch_size, workers=n_workers, records=records)
            stream = _batches(loader)
            video, _ = next(stream)  # warm-up: builds pipelines, starts workers
            _sync(device)
            rec["startup_s"] = round(time.perf_counter() - t0, 3)
            frames_per_video = video.shape[cfg.spec.input_layout.index("T")]
            n_videos = 0
            t0 = time.perf_counter()
            for _ in range(batches):
                video, _ = next(stream)
                n_videos += video.shape[0]
            _sync(device)
            elapsed = time.perf_counter() - t0
            del stream, loader
        except FastvidError as exc:
            rec["skipped"] = str(exc)
            log.warning("loader bench: %s skipped: %s", backend, exc)
            done(rec)
            continue
        rec.update(backend=backend, seconds=round(elapsed, 4),
                   videos_per_s=round(n_videos / elapsed, 2),
                   frames_per_s=round(n_videos * frames_per_video / elapsed, 1),
                   frames_per_video=int(frames_per_video))
        done(rec)
    torch_rec = next((r for r in results if r["backend"] == "torch" and "videos_per_s" in r), None)
    for rec in results:
        if torch_rec is not None and "videos_per_s" in rec:
            rec["ratio_to_torch"] = round(rec["videos_per_s"] / torch_rec["videos_per_s"], 3)
    return results


def main() -> None:
    import click

    @click.command()
    @click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False))
    @click.option("--data-root", required=True, type=click.Path(file_okay=False))
    @click.option("--backends", default="torch,dali-cpu", show_default=True,
                  help="Comma-separated loaders to compare (torch, dali-cpu, dali).")
    @click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
    @click.option("--batches", type=int, default=20, show_default=True)
    @click.option("--batch-size", type=int, default=8, show_default=True)
    @click.option("--workers", type=int, default=None, help="Default: train.workers of the config.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
    @click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the records as JSON.")
    def cli(config_path: str, data_root: str, backends: str, device: str, batches: int,
            batch_size: int, workers: Optional[int], overrides: tuple[str, ...],
            out: Optional[str]) -> None:
        """Compare data-loader throughput on one dataset."""
        from fastvid.config import load_config
        from fastvid.data.lists import resolve_dataset

        cfg = load_config(config_path, overrides)
        dataset = resolve_dataset(data_root, cfg.data)
        results = bench_loaders(cfg, dataset, [b.strip() for b in backends.split(",") if b.strip()],
                                torch.device(device), batches, batch_size, workers=workers)
        for r in results:
            if "skipped" in r:
                click.echo(f"{r['backend']:>9}: skipped ({r['skipped']})")
            else:
                click.echo(f"{r['backend']:>9}: {r['videos_per_s']:8.1f} videos/s "
                           f"{r['frames_per_s']:9.1f} frames/s  x{r.get('ratio_to_torch', float('nan')):.2f} "
                           f"vs torch  (start-up {r['startup_s']:.1f} s, {r['workers']} workers)")
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(results, indent=2))

    cli()


if __name__ == "__main__":
    main()
