"""``fastvid predict``: actions in a user's video file, frame folder or folder of videos."""
from __future__ import annotations

import json
from typing import Optional

import click

from fastvid.cli import cli
from fastvid.cli.common import (class_order_option, config_options, friendly_errors,
                                load_inference_config)
from fastvid.loaders import loader_help, loader_names


@cli.command("predict")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@config_options
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="fastvid, TRN-pytorch or mmaction2 checkpoint.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help="An engine from 'fastvid build-engine'.")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes listed per prediction.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="The dataset's categories.txt: a checkpoint's classes are mapped onto it by "
                   "name (see --class-order). Default: the names saved in the checkpoint.")
@click.option("--window", default=None, metavar="N|Ns",
              help="Sliding window length in frames (48) or seconds (4s); default: the whole input.")
@click.option("--stride", default=None, metavar="M|Ms",
              help="Step between windows in frames or seconds (default: half the window).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame rate of a frame folder (default 12, Jester's), or to override a video's.")
@click.option("--clips", type=click.IntRange(min=1), default=None,
              help="Test clips per window (default: data.test_clips).")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default=None,
              help="Test crops (default: data.test_crops).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Windows per forward pass.")
@click.option("--loader", type=click.Choice(loader_names()), default="auto",
              show_default=True,
              help=f"Decoder of the input, whole or windowed. {loader_help(streaming=True)}")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write predictions JSON here.")
@class_order_option
@friendly_errors
def predict_cmd(input_path: str, config_path: str, overrides: tuple[str, ...], device: str,
                checkpoint: Optional[str], engine_path: Optional[str], topk: int,
                labels: Optional[str], window: Optional[str], stride: Optional[str],
                fps: Optional[float], clips: Optional[int], crops: Optional[str], batch_size: int,
                loader: str, out: Optional[str], class_order: str) -> None:
    """Predict the actions in INPUT (video file, frame folder, or folder of videos)."""
    from rich.console import Console
    from rich.table import Table

    from fastvid.checkpoint import load_model_for_inference
    from fastvid.cli.common import resolve_device
    from fastvid.data.lists import read_categories
    from fastvid.predict import PredictOptions, detect_input, predict_input, predict_loader

    if (checkpoint is None) == (engine_path is None):
        raise click.UsageError("give exactly one of --checkpoint or --engine")
    cfg, raw = load_inference_config(config_path, overrides, checkpoint, engine_path)
    dev = resolve_device(device)
    loader = predict_loader(loader, dev)
    max_batch = None
    if checkpoint:
        from fastvid.cli.common import labels_mapping

        # --labels is the dataset's categories.txt: the checkpoint's rows are mapped onto it.
        model, meta = load_model_for_inference(cfg, checkpoint, dev, raw=raw,
                                               class_order=class_order, **labels_mapping(labels))
        num_classes, classes, name = meta["num_classes"], meta["classes"], meta.get("model_name")
    else:
        import engines
        from engines.compat import check_engine_fits, expected_from_config

        names = read_categories(labels) if labels else None
        check_engine_fits(engines.read_meta(engine_path)[1],
                          expected_from_config(cfg, (len(names) if names else None, labels or ""),
                                               (names, labels or "")), engine_path)
        model = engines.load(engine_path, dev)
        num_classes = int(model.meta["num_classes"])
        classes = model.meta.get("classes")
        name = model.meta.get("model_name")
        max_batch = model.max_batch
    if labels:
        classes = read_categories(labels)
    if classes is not None and len(classes) != num_classes:
        raise click.ClickException(f"the model has {num_classes} classes but "
                                   f"{labels or 'the checkpoint'} names {len(classes)}")
    views = (clips or cfg.data.test_clips, int(crops) if crops else cfg.data.test_crops)
    options = PredictOptions(topk=topk, window=window, stride=stride, fps=fps, views=views,
                             batch_size=batch_size, max_batch=max_batch, loader=loader,
                             model_name=name or cfg.model_name)
    results = []
    for spec in detect_input(input_path):
        results.append(predict_input(cfg, model, spec, device=dev, labels=classes,
                                     options=options))
    console = Console()
    for res in results:
        table = Table(title=f"{res['input']}  ({res['num_frames']} frames, {res['fps']:g} fps)")
        table.add_column("window")
        for rank in range(min(topk, num_classes)):
            table.add_column(f"#{rank + 1}")
        for win in res["windows"]:
            table.add_row(f"{win['start_s']:.2f}-{win['end_s']:.2f}s",
                          *[f"{t['label']} {100 * t['prob']:.1f}%" for t in win["topk"]])
        console.print(table)
    if out:
        from fastvid.atomic import write_text_atomic

        payload = results[0] if len(results) == 1 else results
        write_text_atomic(out, json.dumps(payload, indent=2), "predictions")
