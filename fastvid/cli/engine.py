"""``fastvid build-engine``, ``fastvid bench`` and ``fastvid report``."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click

from bench.runner import BenchSettings, inference_backends
from engines.backends import backend_help, engine_names, precision_help
from fastvid.cli import cli
from fastvid.cli.common import (class_order_option, config_options, friendly_errors, int_list,
                                load_inference_config, resolve_device)
from fastvid.loaders import loader_names
from fastvid.precision import PRECISIONS

log = logging.getLogger("fastvid.cli.engine")

ENGINE_BACKENDS = engine_names()
BENCH_BACKENDS = inference_backends()
LOADERS = loader_names(auto=False)

def _split(value: Optional[str], choices: tuple[str, ...], option: str) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    bad = [v for v in items if v not in choices]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)} not in {', '.join(choices)}", param_hint=option)
    return list(dict.fromkeys(items))


def _batches(value: str) -> list[int]:
    out = int_list(value, "--batch", "1 or 1,16")
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: batch sizes must be >= 1", param_hint="--batch")
    return list(dict.fromkeys(out))


def _engine_meta(cfg: Any, meta: dict[str, Any], checkpoint: Optional[str]) -> dict[str, Any]:
    from fastvid.checkpoint import data_geometry

    spec = cfg.input_spec
    return {"model_name": cfg.model_name, "classes": meta.get("classes"), "checkpoint": checkpoint,
            "config": cfg.to_dict(), "color": spec["color"], "mean": spec["mean"], "std": spec["std"],
            "image_size": cfg.data.image_size, "data_geometry": data_geometry(cfg)}


def _model_for(cfg: Any, checkpoint: Optional[str], device: Any,
               raw: Optional[dict[str, Any]] = None, labels: Optional[str] = None,
               class_order: str = "auto") -> tuple[Any, dict[str, Any]]:
    """The eval model from a checkpoint (its rows mapped onto ``labels``, a categories.txt,
    when given), or with random weights (said so in ``meta['weights']``)."""
    if checkpoint:
        from fastvid.checkpoint import load_model_for_inference
        from fastvid.cli.common import labels_mapping

        model, meta = load_model_for_inference(cfg, checkpoint, device, raw=raw,
                                               class_order=class_order, **labels_mapping(labels))
        meta["weights"] = str(checkpoint)
        return model, meta
    from fastvid.models import create_model_from_config

    # Any head size works for timing; Jester's 27 classes when the config does not say.
    num_classes = cfg.model.num_classes or 27
    model = create_model_from_config(cfg.model, num_classes).eval().to(device)
    return model, {"classes": None, "num_classes": num_classes,
                   "weights": "random (no --checkpoint): timings only, accuracy meaningless"}


@cli.command("build-engine")
@config_options
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="Trained checkpoint (fastvid, TRN-pytorch or mmaction2) to export.")
@click.option("--backend", required=True, type=click.Choice(("auto",) + ENGINE_BACKENDS),
              help=backend_help())
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help=precision_help())
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size to optimise for (TensorRT's opt shape).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Largest batch the engine accepts (default: --batch). Batches 1..N work.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Artifact path (extension added); default next to the checkpoint, "
                   "<checkpoint>.<backend>.<precision>.b<batch>-<max>.<ext>. A .json description "
                   "with the validation numbers is written beside it.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="The dataset's categories.txt: the engine's outputs follow it (a foreign "
                   "checkpoint's rows mapped by name, see --class-order) and it records the names.")
@class_order_option
@friendly_errors
def build_engine_cmd(config_path: str, overrides: tuple[str, ...], device: str, checkpoint: str,
                     backend: str, precision: str, batch: int, max_batch: Optional[int],
                     out: Optional[str], labels: Optional[str], class_order: str) -> None:
    """Export a checkpoint to an inference engine, validated against the eager model."""
    import torch

    import engines
    from fastvid.cli.common import load_cli_config

    load_cli_config(config_path, overrides)  # a bad config or --set is named first
    dev = resolve_device(device)
    max_batch = max_batch or batch
    if batch > max_batch:
        raise click.BadParameter(f"--batch {batch} is larger than --max-batch {max_batch}",
                                 param_hint="--batch")
    if backend == "auto":
        backend = engines.auto_backend(dev, precision)
        log.info("--backend auto: %s", backend)
    # Fail on a missing backend before spending time loading the checkpoint.
    engines.check_supported(backend, precision, dev)
    # The checkpoint's data geometry (crop size, segments, ...) is what the engine is built for.
    cfg, raw = load_inference_config(config_path, overrides, checkpoint)
    log.info("loading %s into %s", checkpoint, cfg.model_name)
    model, meta = _model_for(cfg, checkpoint, dev, raw, labels, class_order)
    if meta.get("origin") not in (None, "fastvid") and meta.get("classes") is None:
        # A foreign file's rows are in its own class order, which nothing records here.
        log.warning("%s is a %s checkpoint: the engine's outputs keep its class order (%s) and "
                    "it records no class names; pass --labels CATEGORIES.txt to map its rows "
                    "onto the dataset's classes", checkpoint, meta["origin"], meta["class_order"])
    if out is None:
        ckpt = Path(checkpoint)
        out = str(ckpt.with_name(f"{ckpt.stem}.{backend}.{precision}.b{batch}-{max_batch}"))
    example = torch.zeros(cfg.input_shape(batch), device=dev)
    path = engines.build_engine(model, example, backend, precision, batch=batch, max_batch=max_batch,
                                out_path=out, meta=_engine_meta(cfg, meta, checkpoint))
    info = engines.read_meta(path)[1]
    val = info["validation"]
    click.echo(f"engine: {path}")
    click.echo(f"  {backend} {precision} on {info['device']}, input "
               f"{tuple(['B'] + info['input_shape'][1:])} with B in {info['batch_range']}, "
               f"built in {info['build_s']:.1f} s")
    click.echo(f"  validation: max |engine - eager| {val['max_abs_err']:.3g} (relative {val['rel_err']:.3g}, "
               f"tolerance {val['tolerance_rel']:g}), top-1 agreement {100 * val['top1_agreement']:.1f}%")
    runtime = info.get("runtime") or {}
    if runtime.get("inference_precision"):
        click.echo(f"  runtime: computes in {runtime['inference_precision']}"
                   + (f", {runtime['num_threads']} threads" if runtime.get("num_threads") else ""))


@cli.command("bench")
@config_options
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights to benchmark; without it the model has random weights (recorded as such).")
@click.option("--engine", "engine_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Prebuilt engine(s) to measure at their precision, for the batches in their range "
                   "(repeatable). Engine backends without one are built on the fly: one engine for "
                   "all batches (TensorRT: one per batch).")
@click.option("--batch", "batch_text", default="1", show_default=True,
              help="Inference batch size(s), comma separated, e.g. 1,16.")
@click.option("--backends", default=None,
              help=f"Comma list of {','.join(BENCH_BACKENDS)} (default: all, or none when only "
                   "--train/--loader is asked for; 'none' skips inference). '+cudagraph': each call "
                   "replays a CUDA graph (compile+cudagraph: torch.compile mode='reduce-overhead'; "
                   "the others an explicit capture; CUDA only). Unavailable ones are recorded as "
                   "skipped with the reason.")
@click.option("--precision", "precision_text", default="fp32", show_default=True,
              help="Inference precision(s), comma list of fp32,fp16,bf16.")
@click.option("--loader", "loader_text", default="none", show_default=True,
              help=f"Data-loader benchmark: comma list of {','.join(LOADERS)}, or none. Needs --data-root.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Dataset root for --loader.")
@click.option("--loader-batches", type=click.IntRange(min=1), default=20, show_default=True,
              help="Batches timed per loader.")
@click.option("--loader-threads", default=None,
              help="Sweep CPU threads per loader: e.g. 1,2,4, 'all' (every core) or 'auto' "
                   "(1, 2, 4, ... all). torch: DataLoader workers; DALI: pipeline threads, batches "
                   "built in the main process. Default: train.workers / every core, no sweep.")
@click.option("--loader-stages", is_flag=True,
              help="Also time each loader stage (source, decode, resize, normalize; torch: plan, "
                   "read, decode, crop/resize, normalize).")
@click.option("--loader-option", "loader_options", multiple=True, metavar="KEY=VALUE",
              help="DALI loader setting for --loader: prefetch=N, hw_decoder_load=F (nvJPEG "
                   "hardware share), decoder_pipelines=K; repeatable.")
@click.option("--loader-train-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also run this many real training steps (config's model, random weights) fed "
                   "by each loader and record data_wait_share.")
@click.option("--train", "train_bench", is_flag=True,
              help="Also benchmark training throughput: fp32 vs AMP (bf16 on CPU; fp16 and bf16 on GPU) "
                   "x channels-first vs channels-last, on synthetic batches.")
@click.option("--train-modes", "train_modes_text", default="eager", show_default=True,
              help="With --train: how the step runs, comma list of eager, compile (torch.compile), "
                   "cuda-graphs (the whole step replayed from a CUDA graph; CUDA only), "
                   "compile+cuda-graphs (the compiled model's whole step captured; CUDA only).")
@click.option("--train-batch", type=click.IntRange(min=1), default=None,
              help="Videos per training step and per loader batch (default: train.batch_size).")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed iterations per measurement.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed iterations before timing (compilation happens in the first call).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="reports/bench", show_default=True,
              help="Folder; records are appended to OUT/results.json (a JSON list). Render with "
                   "`fastvid report OUT`.")
@click.option("--run-id", default=None, envvar="FASTVID_RUN_ID", show_envvar=True,
              help="Id stored in every record of this call (default: UTC time + random); give several "
                   "calls the same id to report them as one run.")
@friendly_errors
def bench_cmd(config_path: str, overrides: tuple[str, ...], device: str, checkpoint: Optional[str],
              engine_paths: tuple[str, ...], batch_text: str, backends: Optional[str], precision_text: str,
              loader_text: str, data_root: Optional[str], loader_batches: int,
              loader_threads: Optional[str], loader_stages: bool,
              loader_options: tuple[str, ...], loader_train_steps: int,
              train_bench: bool, train_modes_text: str, train_batch: Optional[int], iters: int,
              warmup: int, out_dir: str, run_id: Optional[str]) -> None:
    """Benchmark inference backends, training throughput and data loaders; write JSON records.

    Every record gets the run's id and, for timed figures, their dispersion (CV, p90/p50) and the
    load average; a figure with CV > 10% or p90 > 2x p50 is flagged unstable.
    """
    from bench.records import ResultsWriter, new_run_id

    # With --checkpoint, its data geometry (crop size, segments, ...) is what is timed.
    cfg, raw = load_inference_config(config_path, overrides, checkpoint)
    dev = resolve_device(device)
    batches = _batches(batch_text)
    precisions = _split(precision_text, PRECISIONS, "--precision") or ["fp32"]
    from bench.train import TRAIN_MODES

    train_modes = _split(train_modes_text, TRAIN_MODES, "--train-modes") or ["eager"]
    loaders = [] if loader_text.strip() in ("", "none") else _split(loader_text, LOADERS, "--loader")
    if backends is None:
        backend_list = [] if (train_bench or loaders) else list(BENCH_BACKENDS)
    elif backends.strip() == "none":
        backend_list = []
    else:
        backend_list = _split(backends, BENCH_BACKENDS, "--backends")
    if loaders and not data_root:
        raise click.UsageError("--loader needs --data-root ROOT")
    run_id = run_id or new_run_id()
    common = {"config": config_path, "config_model": cfg.model_name, "run_id": run_id}
    log.info("bench run %s -> %s", run_id, Path(out_dir) / "results.json")

    if not (backend_list or engine_paths or train_bench or loaders):
        raise click.UsageError("nothing to benchmark: give --backends, --train or --loader")
    # Each record is written to results.json as soon as it is measured: Ctrl-C (or a failure
    # in a later section) keeps everything measured before it.
    writer = ResultsWriter(out_dir)
    path = writer.path
    try:
        if backend_list or engine_paths or train_bench:
            plan = _ModelBench(tuple(batches), tuple(backend_list), tuple(precisions), train_bench,
                               train_batch, iters, warmup, tuple(train_modes))
            _bench_models(cfg, dev, checkpoint, engine_paths, plan, common, writer, raw)
        if loaders:
            _bench_loaders(cfg, dev, data_root, loaders, _LoaderBenchArgs(
                loader_batches, train_batch or cfg.train.batch_size, threads=loader_threads,
                stages=loader_stages, train_steps=loader_train_steps, options=loader_options),
                common, writer)
    except KeyboardInterrupt:
        n = len(writer.records)
        stopped = click.ClickException(
            f"interrupted: {n} record{'' if n == 1 else 's'} measured before Ctrl-C "
            f"{'are' if n != 1 else 'is'} kept in {path}" + (f" (run {run_id}); render with "
                                                            f"`fastvid report {out_dir}`" if n else ""))
        stopped.exit_code = 130  # 128 + SIGINT, as the shell reports an interrupted command
        raise stopped from None
    records = writer.records
    for r in records:
        click.echo(_summary_line(r))
    unstable = sum(bool(r.get("unstable")) for r in records)
    if unstable:
        click.echo(f"{unstable} of {len(records)} figures are unstable (CV > 10% or p90 > 2x p50): the "
                   f"machine was busy; measure again on a quiet machine before quoting them")
    click.echo(f"{len(records)} records of run {run_id} appended to {path}; render with "
               f"`fastvid report {out_dir}`")


@dataclass(frozen=True)
class _ModelBench:
    """What ``fastvid bench`` measures of the model: inference (backends x batches x
    precisions) and, with ``train_bench``, training steps in ``train_modes``."""

    batches: tuple[int, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    train_bench: bool
    train_batch: Optional[int]
    iters: int
    warmup: int
    train_modes: tuple[str, ...]


def _bench_models(cfg: Any, dev: Any, checkpoint: Optional[str], engine_paths: tuple[str, ...],
                  plan: _ModelBench, common: dict[str, Any], writer: Any,
                  raw: Optional[dict[str, Any]] = None) -> None:
    """Inference and training records, each written by ``writer`` (a
    :class:`bench.records.ResultsWriter`) as soon as it is measured; ``raw``: the checkpoint
    already read by :func:`load_inference_config`, if any. A prebuilt engine adds its backend
    and precision to the plan's."""
    backend_list, precisions = list(plan.backends), list(plan.precisions)
    batches, iters, warmup, train_batch = list(plan.batches), plan.iters, plan.warmup, plan.train_batch
    import engines
    from bench.runner import InferenceBenchmarkRunner
    from engines.compat import check_engine_fits, expected_from_config
    model, meta = _model_for(cfg, checkpoint, dev, raw)
    sample = cfg.input_shape(1)[1:]
    spec = cfg.input_spec
    extra = dict(common, weights=meta["weights"])
    prebuilt: dict[str, list[Path]] = {}
    # A prebuilt engine is compared with the eager model of this config (and checkpoint): it
    # must be the same model on the same input, or the ratio means nothing.
    expected = expected_from_config(
        cfg, (meta["num_classes"], "the checkpoint") if checkpoint else None,
        (meta.get("classes"), "the checkpoint") if checkpoint else None)
    for p in engine_paths:
        path, info = engines.read_meta(p)
        check_engine_fits(info, expected, path)
        prebuilt.setdefault(info["backend"], []).append(path)
        if info["backend"] not in backend_list:
            backend_list.append(info["backend"])
        if info["precision"] not in precisions:  # measure a given engine in its own precision
            precisions.append(info["precision"])
    if backend_list:
        runner = InferenceBenchmarkRunner(model, sample, dev, model_name=cfg.model_name,
                                          engines=prebuilt, extra=extra, norm=(spec["mean"], spec["std"]),
                                          settings=BenchSettings(warmup=warmup, iters=iters))
        runner.run(backend_list, batches, precisions, on_record=writer.add, check_baseline=True)
        writer.flush()  # the baselines' second timing may have flagged ratios
    if plan.train_bench:
        from bench.train import bench_training, default_variants

        variants = [(p, cl, mode) for mode in plan.train_modes for p, cl in default_variants(dev)]
        bench_training(model, sample, int(meta["num_classes"]), dev,
                                  batch=train_batch or cfg.train.batch_size,
                                  warmup=min(warmup, 3) or 1, iters=min(iters, 20),
                                  model_name=cfg.model_name, extra=extra, variants=variants,
                                  aux_loss_weight=cfg.model.aux_loss_weight,
                                  clip_grad_norm=cfg.train.clip_grad_norm, on_record=writer.add)


@dataclass(frozen=True)
class _LoaderBenchArgs:
    """``fastvid bench``'s loader options, as given (parsed by bench.loader when it is there)."""

    batches: int
    batch_size: int
    threads: Optional[str] = None  # "1,2,all" / "auto"
    stages: bool = False
    train_steps: int = 0
    options: tuple[str, ...] = ()  # KEY=VALUE backend tuning


def _bench_loaders(cfg: Any, dev: Any, data_root: str, loaders: list[str], args: _LoaderBenchArgs,
                   common: dict[str, Any], writer: Any) -> None:
    try:
        from bench.loader import bench_loaders
    except ModuleNotFoundError as exc:
        if exc.name != "bench.loader":
            raise
        from fastvid.errors import BackendUnavailable

        raise BackendUnavailable("the loader benchmark (bench/loader.py) is not part of this install") from None
    from bench.records import stamp
    from fastvid.data.lists import resolve_dataset

    dataset = resolve_dataset(data_root, cfg.data)
    from bench.loader import LoaderBenchSettings, dali_option_values, thread_counts

    def finish(rec: dict[str, Any]) -> None:
        for k, v in common.items():
            rec.setdefault(k, v)
        stamp(rec, dev)
        writer.add(rec)

    settings = LoaderBenchSettings(
        args.batches, args.batch_size, threads=thread_counts(args.threads) if args.threads else None,
        options=dali_option_values(args.options), stages=args.stages, train_steps=args.train_steps,
        amp=args.train_steps > 0 and dev.type == "cuda")
    bench_loaders(cfg, dataset, loaders, dev, settings, on_record=finish)
    writer.flush()  # ratios bench_loaders set on records after handing them over


def _flop_text(r: dict[str, Any]) -> str:
    """``, 46.1 TFLOP/s = 4.7% of peak`` (``n/a`` off the peak table); empty without FLOPs."""
    if r.get("tflops") is None:
        return ""
    pct = "n/a" if r.get("pct_of_peak") is None else f"{r['pct_of_peak']:.3g}%"
    return f", {r['tflops']:.3g} TFLOP/s = {pct} of peak"


def _summary_line(r: dict[str, Any]) -> str:
    kind = r.get("kind")
    if r.get("status", "ok") != "ok":
        what = r.get("backend") or f"{r.get('precision')} channels_last={r.get('channels_last')}"
        return f"  {kind:9s} {what} {r.get('precision', '')}: {r.get('status')} ({r.get('reason')})"
    flag = f" UNSTABLE ({r['unstable_reason']})" if r.get("unstable") else ""
    if kind == "inference":
        lat = r["latency_ms"]
        ratio = f", x{r['ratio_to_eager']:.2f} eager" if r.get("ratio_to_eager") else ""
        if r.get("ratio_to_peer") and r.get("backend") != r.get("peer_backend"):
            ratio += f", x{r['ratio_to_peer']:.2f} {r['peer_backend']}"
        if ratio and r.get("ratio_unstable"):
            ratio += f" (unreliable: {r.get('ratio_unstable_reason')})"
        cl = ", channels_last" if r.get("channels_last") else ""
        used = (f" (computes in {r['precision_used']})"
                if r.get("runtime", {}).get("inference_precision") else "")
        return (f"  inference {r['backend']:8s} {r['precision']}{used} batch {r['batch']} (mode {r.get('mode')}{cl}): "
                f"{r['video_per_s']:.1f} video/s, "
                f"p50/p90/p99 {lat['p50']:.1f}/{lat['p90']:.1f}/{lat['p99']:.1f} ms, "
                f"peak {r.get('peak_mem_mb')} MB{ratio}{_flop_text(r)}{flag}")
    if kind == "train":
        cl = "channels_last" if r["channels_last"] else "channels_first"
        return (f"  train     {r['precision']} {cl} {r.get('mode', 'eager')}: {r['videos_per_s']:.1f} "
                f"videos/s, step {r['step_ms']['p50']:.1f} ms{_flop_text(r)}{flag}")
    if kind == "loader":
        from bench.loader import summary_line

        return "  loader    " + summary_line(r).strip()
    return f"  {kind} {r.get('backend', '')}: {r.get('videos_per_s')} videos/s"


@cli.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write report.md and the PNGs (default: the directory reported; "
                   "several runs: compare-<names> beside the first).")
@click.option("--all", "all_runs", is_flag=True,
              help="Benchmarks: every run in results.json, with a run column (default: the latest run only).")
@friendly_errors
def report_cmd(paths: tuple[str, ...], out_dir: Optional[str], all_runs: bool) -> None:
    """Render report.md (Markdown tables) and PNG plots of what fastvid measured.

    \b
    PATHS is one of:
      a benchmark directory (results.json from 'fastvid bench'): tables and plots of the latest
        run, unstable figures marked in both;
      training run directories ('fastvid train --work-dir'): loss, validation accuracy, learning
        rate, videos/s, data wait and time to first step; several runs are overlaid;
        an eval*.json inside a run adds its confusion matrix;
      eval JSONs ('fastvid eval --out'): the confusion matrix and the most confused pairs.
    """
    from fastvid.report import render

    result = render(paths, out_dir, all_runs=all_runs)
    if result["kind"] == "bench":
        which = f"{result['runs']} runs" if all_runs else f"run {result['run_id'] or 'without run id'}"
        click.echo(f"report: {result['markdown']} ({result['records']} records, {which})")
    else:
        click.echo(f"report: {result['markdown']}")
    for p in result["plots"]:
        click.echo(f"  plot: {p}")
