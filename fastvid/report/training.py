"""``fastvid report RUN_DIR [RUN_DIR ...]``: training curves from ``metrics.jsonl``.

One run, or several overlaid (one colour per run, named by its directory): the loss of every
logged step (raw and smoothed), validation top-1 / top-5 / mean class accuracy per epoch, the
learning rate per logged step, videos/s and the share of time spent waiting for data per epoch,
and the time from process start to the first finished step. ``report.md`` has the same figures
as tables. Every plot function returns the data it drew (:class:`Drawn`), so that tests check a
picture through its numbers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fastvid.errors import FastvidError

from .plotting import fmt, fmt_pct, markdown_table, pyplot, save, unique_names

__all__ = ["RunMetrics", "read_run", "is_run_dir", "render_training_report", "ema",
           "TRAINING_PLOTS", "Drawn"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TRAINING_PLOTS = ("loss.png", "val_accuracy.png", "lr.png", "speed.png")
#: png name -> what it drew: {panel or series name: {run name: (x values, y values)}}
Drawn = dict[str, dict[str, dict[str, tuple[list[float], list[float]]]]]


@dataclass
class RunMetrics:
    """One run directory's ``metrics.jsonl``, one record per logged step and per epoch.

    A step or epoch logged twice (a run resumed from a checkpoint taken before it, whose
    metrics were not cut back) keeps its last record: the one the resumed run wrote.
    """

    path: Path
    name: str
    steps: list[dict[str, Any]] = field(default_factory=list)  # type "train", by step
    epochs: list[dict[str, Any]] = field(default_factory=list)  # type "epoch", by epoch
    startups: list[dict[str, Any]] = field(default_factory=list)  # type "startup", as written
    summary: Optional[dict[str, Any]] = None
    model: Optional[str] = None
    configured_epochs: Optional[int] = None
    skipped_lines: int = 0

    def val_epochs(self) -> list[dict[str, Any]]:
        return [e for e in self.epochs if e.get("val_top1") is not None]

    def best(self) -> Optional[dict[str, Any]]:
        vals = self.val_epochs()
        return max(vals, key=lambda e: e["val_top1"]) if vals else None


def is_run_dir(path: Path) -> bool:
    """A ``fastvid train`` work dir: it has ``metrics.jsonl`` or ``config.yaml``."""
    return path.is_dir() and ((path / METRICS_FILE).is_file() or (path / "config.yaml").is_file())


def read_run(path: str | Path, name: Optional[str] = None) -> RunMetrics:
    """Parse ``path/metrics.jsonl`` (+ ``summary.json`` and ``config.yaml`` when present).

    A line that is not a JSON object (a run killed mid-write) is skipped with a warning naming
    its line number; a run with no records at all is an error.
    """
    path = Path(path)
    metrics = path / METRICS_FILE
    if not metrics.is_file():
        raise FastvidError(f"{path}: no {METRICS_FILE} (a training run writes it at its first "
                           f"logged step; `fastvid train --work-dir {path}` first)")
    run = RunMetrics(path, name or path.name)
    steps: dict[int, dict[str, Any]] = {}
    epochs: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(metrics.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            run.skipped_lines += 1
            log.warning("%s line %d: not a JSON object, skipped", metrics, lineno)
            continue
        kind = rec.get("type")
        if kind == "train" and "step" in rec:
            steps[int(rec["step"])] = rec
        elif kind == "epoch" and "epoch" in rec:
            epochs[int(rec["epoch"])] = rec
        elif kind == "startup":
            run.startups.append(rec)
    run.steps = [steps[k] for k in sorted(steps)]
    run.epochs = [epochs[k] for k in sorted(epochs)]
    if not (run.steps or run.epochs or run.startups):
        raise FastvidError(f"{metrics}: no training records yet")
    summary = path / "summary.json"
    if summary.is_file():
        try:
            run.summary = json.loads(summary.read_text())
        except ValueError:
            log.warning("%s: not valid JSON, ignored", summary)
    if run.summary:
        run.model = run.summary.get("model")
        run.configured_epochs = run.summary.get("epochs")
    config = path / "config.yaml"
    if config.is_file() and (run.model is None or run.configured_epochs is None):
        import yaml

        try:
            cfg = yaml.safe_load(config.read_text()) or {}
            m = cfg.get("model") or {}
            run.model = run.model or "_".join(str(m[k]) for k in ("arch", "backbone") if m.get(k))
            run.configured_epochs = run.configured_epochs or (cfg.get("train") or {}).get("epochs")
        except (yaml.YAMLError, AttributeError):
            log.warning("%s: not a fastvid config, ignored", config)
    return run


def ema(values: Sequence[float], span: int) -> list[float]:
    """Exponential moving average over ``span`` points, bias-corrected at the start (the
    first value is itself, not pulled towards 0): TensorBoard's smoothing."""
    alpha = 1.0 - 2.0 / (span + 1)
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = alpha * acc + (1 - alpha) * v
        weight = alpha * weight + (1 - alpha)
        out.append(acc / weight)
    return out


def smoothing_span(n: int) -> int:
    """Smooth over about a fifteenth of the logged steps (1: no smoothing), at most 100."""
    return max(1, min(100, round(n / 15)))


def _colors(n: int) -> list[Any]:
    plt = pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _finish(ax: Any, runs: Sequence[RunMetrics], extra_handles: int = 0) -> None:
    ax.grid(alpha=0.3)
    if len(runs) > 1 or extra_handles:
        ax.legend(fontsize=8)


def _loss_plot(out: Path, runs: Sequence[RunMetrics], drawn: Drawn) -> Optional[Path]:
    if not any(r.steps for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    data: dict[str, dict[str, tuple[list[float], list[float]]]] = {"raw": {}, "smoothed": {}}
    for run, color in zip(runs, _colors(len(runs))):
        if not run.steps:
            continue
        x = [float(s["step"]) for s in run.steps]
        y = [float(s["loss"]) for s in run.steps]
        span = smoothing_span(len(y))
        smooth = ema(y, span)
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        ax.plot(x, y, color=color, alpha=0.35, linewidth=0.9, marker="." if len(x) < 60 else None,
                label=f"{prefix}loss at each logged step")
        ax.plot(x, smooth, color=color, linewidth=2.0,
                label=f"{prefix}smoothed (EMA over {span} logged steps)" if span > 1
                else f"{prefix}smoothed (too few steps: same as raw)")
        data["raw"][run.name] = (x, y)
        data["smoothed"][run.name] = (x, smooth)
    if len(runs) == 1 and 1 < len(runs[0].epochs) <= 60:
        for e in runs[0].epochs[:-1]:  # epoch boundaries, for reading the loss against epochs
            ax.axvline(e["step"], color="grey", alpha=0.15, linewidth=0.8)
    ax.set_xlabel("training step" + (" (grey lines: epoch ends)" if len(runs) == 1 and
                                     1 < len(runs[0].epochs) <= 60 else ""))
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("Training loss" + (f" — {runs[0].path}" if len(runs) == 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    drawn["loss.png"] = data
    return save(fig, out / "loss.png")


_VAL_METRICS = (("val_top1", "top-1"), ("val_top5", "top-5"), ("val_mean_class_acc", "mean class accuracy"))


def _accuracy_plot(out: Path, runs: Sequence[RunMetrics], drawn: Drawn) -> Optional[Path]:
    if not any(r.val_epochs() for r in runs):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharey=True)
    data: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for ax, (key, title) in zip(axes, _VAL_METRICS):
        data[key] = {}
        for run, color in zip(runs, _colors(len(runs))):
            vals = [e for e in run.epochs if e.get(key) is not None]
            if not vals:
                continue
            x = [float(e["epoch"]) for e in vals]
            y = [100.0 * float(e[key]) for e in vals]
            best = max(range(len(y)), key=lambda i: y[i])
            prefix = f"{run.name}: " if len(runs) > 1 else ""
            ax.plot(x, y, color=color, marker="o", markersize=4,
                    label=f"{prefix}best {fmt_pct(vals[best][key])}% (epoch {int(x[best])})")
            ax.plot([x[best]], [y[best]], color=color, marker="*", markersize=12, linestyle="none")
            data[key][run.name] = (x, y)
        ax.set_title(f"val {title} (★ best)", fontsize=10)
        if data[key]:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("% of validation videos")
    axes[0].set_ylim(0, 105)
    fig.suptitle("Validation accuracy per epoch" + (f" — {runs[0].path}" if len(runs) == 1 else ""))
    fig.tight_layout()
    drawn["val_accuracy.png"] = data
    return save(fig, out / "val_accuracy.png")


def _lr_plot(out: Path, runs: Sequence[RunMetrics], drawn: Drawn) -> Optional[Path]:
    if not any(r.steps or r.epochs for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    data: dict[str, dict[str, tuple[list[float], list[float]]]] = {"lr": {}}
    values: list[float] = []
    for run, color in zip(runs, _colors(len(runs))):
        recs = run.steps or run.epochs  # no logged step: the lr set at each epoch end
        x = [float(r["step"]) for r in recs if r.get("lr") is not None]
        y = [float(r["lr"]) for r in recs if r.get("lr") is not None]
        if not x:
            continue
        ax.plot(x, y, color=color, drawstyle="steps-post", marker="." if len(x) < 60 else None,
                label=run.name + ("" if run.steps else " (set at epoch ends)"))
        data["lr"][run.name] = (x, y)
        values += y
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    elif positive:  # from 0, so that a constant lr reads as one, not as noise around it
        ax.set_ylim(0, 1.15 * max(positive))
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate (param group 0)")
    ax.set_title("Learning rate" + (f" — {runs[0].path}" if len(runs) == 1 else ""))
    _finish(ax, runs, extra_handles=int(any(not r.steps for r in runs)))
    fig.tight_layout()
    drawn["lr.png"] = data
    return save(fig, out / "lr.png")


def time_to_first_step(run: RunMetrics) -> Optional[float]:
    """Seconds from process start to the first finished step of the run's first start."""
    return run.startups[0].get("time_to_first_step_s") if run.startups else None


def _speed_plot(out: Path, runs: Sequence[RunMetrics], drawn: Drawn) -> Optional[Path]:
    if not any(r.epochs or r.startups for r in runs):
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), gridspec_kw={"width_ratios": [3, 3, 1.6]})
    data: dict[str, dict[str, tuple[list[float], list[float]]]] = {"videos_per_s": {}, "data_wait": {},
                                                                      "time_to_first_step_s": {}}
    colors = _colors(len(runs))
    for run, color in zip(runs, colors):
        eps = [e for e in run.epochs if e.get("videos_per_s") is not None]
        x = [float(e["epoch"]) for e in eps]
        vps = [float(e["videos_per_s"]) for e in eps]
        wait = [100.0 * float(e.get("data_wait") or 0.0) for e in eps]
        if x:
            axes[0].plot(x, vps, color=color, marker="o", markersize=4, label=run.name)
            axes[1].plot(x, wait, color=color, marker="o", markersize=4, label=run.name)
            if len(runs) == 1 and len(x) <= 20:  # on a 0-100% axis a 0.2% wait is a flat line
                for xi, w, e in zip(x, wait, eps):
                    axes[1].annotate(fmt_pct(e.get("data_wait")), (xi, w), textcoords="offset points",
                                     xytext=(0, 5), ha="center", fontsize=7)
            data["videos_per_s"][run.name] = (x, vps)
            data["data_wait"][run.name] = (x, wait)
    axes[0].set_title("training videos/s per epoch\n(all processes; epoch 1 includes start-up)", fontsize=9)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("videos/s")
    axes[0].set_ylim(bottom=0)
    axes[1].set_title("share of the epoch spent waiting for data", fontsize=9)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("% of epoch time")
    axes[1].set_ylim(0, 100)
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    names, secs, bar_colors = [], [], []
    for run, color in zip(runs, colors):
        t = time_to_first_step(run)
        if t is not None:
            names.append(run.name)
            secs.append(float(t))
            bar_colors.append(color)
    ax = axes[2]
    if secs:
        bars = ax.bar(range(len(secs)), secs, color=bar_colors)
        for bar, v in zip(bars, secs):
            ax.annotate(fmt(v) + " s", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(secs)))
        ax.set_xticklabels(names, rotation=30 if len(names) > 1 else 0, ha="right" if len(names) > 1
                           else "center", fontsize=8)
        ax.set_ylim(0, max(secs) * 1.2)
        data["time_to_first_step_s"] = {n: ([float(i)], [v]) for i, (n, v) in enumerate(zip(names, secs))}
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_title("time to first step\n(process start → first step done)", fontsize=9)
    ax.set_ylabel("seconds")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Training speed" + (f" — {runs[0].path}" if len(runs) == 1 else ""))
    fig.tight_layout()
    drawn["speed.png"] = data
    return save(fig, out / "speed.png")


def _summary_table(runs: Sequence[RunMetrics]) -> list[str]:
    header = ["run", "model", "epochs", "steps", "best val top-1 % (epoch)", "last val top-1 %",
              "last val top-5 %", "last mean class acc %", "last train loss", "videos/s",
              "data wait %", "time to first step s", "training time s"]
    rows = []
    for run in runs:
        last = run.val_epochs()[-1] if run.val_epochs() else {}
        best = run.best()
        later = [e for e in run.epochs[1:] if e.get("videos_per_s") is not None] or run.epochs
        vps = [float(e["videos_per_s"]) for e in later if e.get("videos_per_s") is not None]
        wait = [float(e["data_wait"]) for e in later if e.get("data_wait") is not None]
        done = run.epochs[-1]["epoch"] if run.epochs else 0
        total = run.configured_epochs
        step = max([int(s["step"]) for s in run.steps] + [int(e["step"]) for e in run.epochs] or [0])
        time_s = sum(float(e.get("epoch_time_s") or 0.0) for e in run.epochs)
        rows.append([
            f"`{run.name}`", fmt(run.model), f"{done}" + (f" of {total}" if total else ""), str(step),
            f"{fmt_pct(best['val_top1'])} ({best['epoch']})" if best else "–",
            fmt_pct(last.get("val_top1")), fmt_pct(last.get("val_top5")),
            fmt_pct(last.get("val_mean_class_acc")),
            fmt(float(run.epochs[-1]["train_loss"]), 4) if run.epochs and run.epochs[-1].get("train_loss")
            is not None else "–",
            fmt(sum(vps) / len(vps)) if vps else "–", fmt_pct(sum(wait) / len(wait)) if wait else "–",
            fmt(time_to_first_step(run)), fmt(time_s)])
    return markdown_table(header, rows)


def epoch_lr(run: RunMetrics) -> dict[int, Optional[float]]:
    """The lr each epoch trained with: its last logged step's, else its epoch record's ``lr``.

    Epoch records written before ``next_lr`` existed hold the lr set *after* the scheduler
    stepped (the next epoch's); for those the previous epoch's record gives the epoch's lr.
    """
    used: dict[int, Optional[float]] = {}
    prev: Optional[float] = None
    for e in run.epochs:
        steps = [s for s in run.steps if s.get("epoch") == e["epoch"] and s.get("lr") is not None]
        own = None if e.get("lr") is None else float(e["lr"])
        if steps:
            used[int(e["epoch"])] = float(steps[-1]["lr"])
        else:
            used[int(e["epoch"])] = own if "next_lr" in e else prev
        prev = own
    return used


def _epoch_table(run: RunMetrics) -> list[str]:
    header = ["epoch", "step", "train loss", "lr", "val top-1 %", "val top-5 %", "mean class acc %",
              "videos/s", "data wait %", "epoch s", "bad samples"]
    lrs = epoch_lr(run)
    rows = [[str(e["epoch"]), str(e.get("step", "–")),
             fmt(None if e.get("train_loss") is None else float(e["train_loss"]), 4),
             "–" if lrs.get(int(e["epoch"])) is None else f"{lrs[int(e['epoch'])]:.3g}",
             fmt_pct(e.get("val_top1")), fmt_pct(e.get("val_top5")), fmt_pct(e.get("val_mean_class_acc")),
             fmt(e.get("videos_per_s")), fmt_pct(e.get("data_wait")), fmt(e.get("epoch_time_s")),
             str(e.get("bad_samples", "–"))] for e in run.epochs]
    return markdown_table(header, rows)


def _startup_lines(runs: Sequence[RunMetrics]) -> list[str]:
    lines = []
    for run in runs:
        for i, s in enumerate(run.startups):
            what = "first start" if i == 0 else f"restart {i} (resumed at step {s.get('step', 1) - 1})"
            lines.append(f"- `{run.name}`, {what}: first step done {fmt(s.get('time_to_first_step_s'))} s "
                         f"after the process started, {fmt(s.get('first_epoch_to_first_step_s'))} s after "
                         f"its epoch began (loader warm-up, model build, compilation).")
    return (["Time to first step:", "", *lines, ""]) if lines else []


def render_training_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/report.md`` and the training PNGs for one or several run directories.

    Returns ``{"markdown": Path, "plots": [Path, ...], "runs": [RunMetrics, ...], "drawn":
    Drawn}`` (the eval sections are added by :func:`fastvid.report.render`).
    """
    dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d, name) for d, name in zip(dirs, unique_names(dirs))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in TRAINING_PLOTS:  # a plot of an earlier render would disagree with these tables
        (out / name).unlink(missing_ok=True)
    drawn: Drawn = {}
    plots = [p for p in (_loss_plot(out, runs, drawn), _accuracy_plot(out, runs, drawn),
                         _lr_plot(out, runs, drawn), _speed_plot(out, runs, drawn)) if p is not None]
    title = "# fastvid training report"
    which = ", ".join(f"`{r.path}`" for r in runs)
    lines = [title, "", f"{'Run' if len(runs) == 1 else 'Runs'} {which}, from `{METRICS_FILE}`"
             f" ({sum(len(r.steps) for r in runs)} logged steps, {sum(len(r.epochs) for r in runs)} epochs).", ""]
    skipped = sum(r.skipped_lines for r in runs)
    if skipped:
        lines += [f"{skipped} line(s) of {METRICS_FILE} were not JSON objects and were skipped.", ""]
    lines += ["## Summary", "", *_summary_table(runs), "",
              "videos/s and data wait: mean of the epochs after the first (start-up excluded); "
              "training time: the epochs' own time (no evaluation, no start-up before epoch 1).", ""]
    lines += _startup_lines(runs)
    for run in runs:
        if run.epochs:
            lines += [f"## Epochs{f' of `{run.name}`' if len(runs) > 1 else ''}", "", *_epoch_table(run), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return {"markdown": out / "report.md", "lines": lines, "plots": plots, "runs": runs, "drawn": drawn}
