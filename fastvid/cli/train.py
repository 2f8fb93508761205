"""``fastvid train`` and ``fastvid eval``."""
from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import click

from engines.backends import engine_extensions
from fastvid.cli import cli
from fastvid.cli.common import (class_order_option, config_options, friendly_errors,
                                load_cli_config, load_inference_config, loader_option)

log = logging.getLogger("fastvid")


@cli.command("train")
@config_options
@click.option("--data-root", required=True, type=click.Path(file_okay=False),
              help="Dataset root with the lists (train_videofolder.txt / train_list.txt ...).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (config.yaml, metrics.jsonl, last.pt, best.pt, summary.json). "
                   "Default: work_dirs/<config name>.")
@click.option("--amp/--no-amp", default=False, show_default=True,
              help="Automatic mixed precision (torch.autocast).")
@click.option("--amp-dtype", type=click.Choice(["bf16", "fp16"]), default="bf16", show_default=True,
              help="AMP dtype; fp16 uses a GradScaler and needs CUDA.")
@loader_option
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override train.epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Override train.batch_size (per process).")
@click.option("--resume", default=None, metavar="auto|PATH",
              help="Continue a run: 'auto' takes WORK_DIR/last.pt when it exists.")
@click.option("--pretrained", type=click.Path(dir_okay=False), default=None,
              help="ImageNet BNInception file (TRN), TRN-pytorch or mmaction2 checkpoint to start from.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the model (forward and backward); kernels are cached in "
                   "$TORCHINDUCTOR_CACHE_DIR (default ~/.cache/fastvid/inductor).")
@click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune",
                                                   "max-autotune-no-cudagraphs"]),
              default="default", show_default=True, help="torch.compile mode, with --compile.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=False, show_default=True,
              help="Capture the whole training step (forward, loss, backward, clipping, SGD) in a "
                   "CUDA graph after 3 eager steps and replay it: no per-kernel launch overhead. "
                   "One GPU, fused SGD, fixed batch shape. With --compile: the compiled "
                   "model's step is captured (compiled during the 3 warm-up steps; --compile-mode "
                   "default or max-autotune-no-cudagraphs).")
@click.option("--apex/--no-apex", default=False, show_default=True,
              help="Use apex.optimizers.FusedSGD (apex must be installed from source).")
@click.option("--tensorboard/--no-tensorboard", default=False, show_default=True,
              help="Also log scalars to WORK_DIR/tb (needs the tensorboard package).")
@click.option("--max-steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Cap the steps of each epoch (smoke tests, benchmarks).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@friendly_errors
def train_cmd(config_path: str, overrides: tuple[str, ...], device: str, data_root: str,
              work_dir: Optional[str], amp: bool, amp_dtype: str, loader: str,
              epochs: Optional[int], batch_size: Optional[int], resume: Optional[str],
              pretrained: Optional[str], compile_: bool, compile_mode: str, cuda_graphs: bool,
              apex: bool, tensorboard: bool, max_steps_per_epoch: Optional[int],
              progress: bool) -> None:
    """Train a model. Multi-GPU: torchrun --nproc_per_node N -m fastvid train ..."""
    import torch

    from fastvid.loaders import resolve_loader_name
    from fastvid.training import TrainOptions, train

    extra = list(overrides)
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if batch_size is not None:
        extra.append(f"train.batch_size={batch_size}")
    cfg = load_cli_config(config_path, tuple(extra))
    if work_dir is None:
        work_dir = str(Path("work_dirs") / Path(config_path).stem)
    if loader == "auto":
        # Resolved (and logged) once here: the train and val loaders would each log it again.
        # The training list's codecs decide too (H.264 on a CPU: not DALI-on-CPU).
        from fastvid.data.lists import resolve_dataset

        cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        records = resolve_dataset(data_root, cfg.data).records("train", check=False)
        loader = resolve_loader_name("auto", torch.device("cuda" if cuda else "cpu"), records)
    opts = TrainOptions(data_root=Path(data_root), work_dir=Path(work_dir), loader=loader,
                        device=device, amp=amp, amp_dtype=amp_dtype, resume=resume,
                        pretrained=pretrained or cfg.model.pretrained, compile=compile_,
                        compile_mode=None if compile_mode == "default" else compile_mode,
                        cuda_graphs=cuda_graphs, apex=apex,
                        tensorboard=tensorboard, progress=progress,
                        max_steps_per_epoch=max_steps_per_epoch)
    summary = train(cfg, opts)
    if summary.get("best_top1", -1) >= 0:
        click.echo(f"best val Top1: {100 * summary['best_top1']:.2f}%  ({work_dir}/best.pt)")


@cli.command("eval")
@config_options
@click.option("--data-root", required=True, type=click.Path(file_okay=False),
              help="Dataset root with the validation list.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="fastvid, TRN-pytorch or mmaction2 checkpoint.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), default=None,
              help=f"An engine from 'fastvid build-engine' ({', '.join(engine_extensions())}).")
@click.option("--clips", type=click.IntRange(min=1), default=None,
              help="Test clips per video (default: data.test_clips).")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default=None,
              help="Test crops per clip (default: data.test_crops).")
@loader_option
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True,
              help="Which list to evaluate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Videos per batch (default: train.batch_size).")
@click.option("--amp/--no-amp", default=False, show_default=True, help="Evaluate under autocast.")
@click.option("--amp-dtype", type=click.Choice(["bf16", "fp16"]), default="bf16", show_default=True,
              help="Autocast dtype with --amp; fp16 needs CUDA.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write results JSON here.")
@click.option("--save-scores", type=click.Path(dir_okay=False), default=None,
              help="Write per-video scores (float32 .npy, list order) here, and each video's "
                   "label, prediction and top-5 to <name>.predictions.csv beside it.")
@class_order_option
@friendly_errors
def eval_cmd(config_path: str, overrides: tuple[str, ...], device: str, data_root: str,
             checkpoint: Optional[str], engine_path: Optional[str], clips: Optional[int],
             crops: Optional[str], loader: str, split: str, batch_size: Optional[int], amp: bool,
             amp_dtype: str, out: Optional[str], save_scores: Optional[str],
             class_order: str) -> None:
    """Evaluate a checkpoint or an engine: top-1, top-5, mean class accuracy.

    Under torchrun (e.g. 'torchrun --nproc_per_node 8 -m fastvid eval ...') every process
    scores its share of the videos and rank 0 reports the gathered result, the same as one
    process would.
    """
    import numpy as np

    from fastvid.checkpoint import load_model_for_inference
    from fastvid.data.lists import resolve_dataset
    from fastvid.loaders import LoaderRequest, build_loader, close_loader
    from fastvid.precision import resolve_precision
    from fastvid.distributed import process_group
    from fastvid.evaluate import evaluate_sharded

    if (checkpoint is None) == (engine_path is None):
        raise click.UsageError("give exactly one of --checkpoint or --engine")
    # The checkpoint's (engine's) data geometry over the YAML's, before the loader is built.
    cfg, raw = load_inference_config(config_path, overrides, checkpoint, engine_path)
    # The loader is closed (workers and pipelines shut down) however the command ends: an
    # engine that fails to load must not leave DALI's worker processes behind.
    with process_group(device) as dist_info, ExitStack() as resources:
        dev = dist_info.device
        n_clips = clips or cfg.data.test_clips
        n_crops = int(crops) if crops else cfg.data.test_crops
        dataset = resolve_dataset(data_root, cfg.data)
        records = dataset.records(split, frame_tmpl=cfg.data.frame_tmpl)
        shard = records[dist_info.rank::dist_info.world_size]
        loader_obj = None
        if shard:
            loader_obj = build_loader(cfg, dataset, LoaderRequest(
                split, batch_size=batch_size, views=(n_clips, n_crops), records=shard),
                loader=loader, device=dev)
            resources.callback(close_loader, loader_obj)
            loader_obj.start(0)  # decoding starts while the model or engine loads
        max_batch = None
        if checkpoint:
            from fastvid.data.prepare import read_dataset_info

            model, meta = load_model_for_inference(
                cfg, checkpoint, dev, num_classes=cfg.model.num_classes or dataset.num_classes,
                raw=raw, target_classes=dataset.categories, class_order=class_order,
                dataset_info=read_dataset_info(dataset.root))
            num_classes = meta["num_classes"]
        else:
            import engines
            from engines.compat import check_engine_fits, expected_from_config

            # Refused before running: a same-shaped engine for another model or normalisation
            # would run and report a wrong accuracy.
            cats = str(dataset.root / "categories.txt")
            check_engine_fits(engines.read_meta(engine_path)[1],
                              expected_from_config(cfg, (dataset.num_classes, cats),
                                                   (dataset.categories, cats)), engine_path)
            # On a CPU the loader's workers decode beside the engine: leave them cores.
            threads = (engines.cpu_threads_beside_loader(cfg.train.workers)
                       if dev.type == "cpu" and loader_obj is not None else None)
            model = engines.load(engine_path, dev, cpu_threads=threads)
            meta = model.meta
            num_classes = int(meta["num_classes"])
            max_batch = model.max_batch
        if dataset.num_classes and dataset.num_classes != num_classes:
            raise click.ClickException(f"the model has {num_classes} classes but {dataset.root}/"
                                       f"categories.txt lists {dataset.num_classes}")
        precision = resolve_precision(amp, amp_dtype, dev)
        backend = loader_obj.backend if loader_obj is not None else loader
        log.info("evaluating %s on %d videos x %d views with loader %s%s",
                 checkpoint or engine_path, len(shard), n_clips * n_crops, backend,
                 f" (rank {dist_info.rank} of {dist_info.world_size})"
                 if dist_info.distributed else "")
        res = evaluate_sharded(model, loader_obj, num_classes, dist_info,
                               average=cfg.model.average_clips, autocast=precision.autocast,
                               sync_buffers=False, max_batch=max_batch,
                               progress=dist_info.is_main)
        if res is None:  # another rank reports
            return
        click.echo(f"Top1: {100 * res.top1:.2f}%")
        click.echo(f"Top5: {100 * res.top5:.2f}%")
        click.echo(f"Mean class accuracy: {100 * res.mean_class_acc:.2f}%  "
                   f"({res.num_videos} videos, {n_clips} clips x {n_crops} crops)")
        classes = dataset.categories or meta.get("classes")
        predictions = None
        if save_scores:
            from fastvid.evaluate import write_predictions

            Path(save_scores).parent.mkdir(parents=True, exist_ok=True)
            np.save(save_scores, res.scores.astype(np.float32))
            predictions = write_predictions(_predictions_path(save_scores), res, records,
                                            classes, dataset.root)
            click.echo(f"per-video predictions: {predictions}")
        if out:
            from fastvid.jsonfile import write_json

            # The result first, the confusion matrix (K rows of K counts) and the config last.
            payload = {**res.to_json(), "clips": n_clips, "crops": n_crops, "views": res.views,
                       "checkpoint": checkpoint, "engine": engine_path, "split": split,
                       "loader": backend, "world_size": dist_info.world_size,
                       # np.save appends .npy to any other name
                       "scores": save_scores and (save_scores if save_scores.endswith(".npy")
                                                  else save_scores + ".npy"),
                       "predictions": predictions and str(predictions),
                       "classes": list(classes) if classes else None}
            payload["confusion_matrix"] = payload.pop("confusion_matrix")
            payload["config"] = cfg.to_dict()
            write_json(out, payload, "eval results")


def _predictions_path(save_scores: str) -> Path:
    """``scores.npy`` -> ``scores.predictions.csv`` (np.save appends .npy to a bare name)."""
    path = Path(save_scores)
    return path.with_name((path.stem if path.suffix == ".npy" else path.name) + ".predictions.csv")
