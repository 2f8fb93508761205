"""``fastvid report DIR``: Markdown tables and matplotlib PNGs from ``DIR/results.json``."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional

from fastvid.errors import FastvidError

from .records import RESULTS_FILE, read_records

__all__ = ["render_report"]


def _status(r: dict[str, Any], notes: "_Footnotes") -> str:
    """``ok``, or ``skipped [n]`` / ``failed [n]`` with the reason as footnote n."""
    status = r.get("status") or ("skipped" if r.get("skipped") else "ok")
    if status == "ok":
        return status
    return f"{status} {notes.ref(r.get('reason') or r.get('skipped'))}"


def _ok(r: dict[str, Any]) -> bool:
    return (r.get("status") or ("skipped" if r.get("skipped") else "ok")) == "ok"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


class _Footnotes:
    """Numbers long labels (memory methods, skip reasons) so the tables stay narrow."""

    def __init__(self) -> None:
        self.notes: "OrderedDict[str, int]" = OrderedDict()

    def ref(self, text: Optional[str]) -> str:
        if not text:
            return ""
        if text not in self.notes:
            self.notes[text] = len(self.notes) + 1
        return f"[{self.notes[text]}]"

    def lines(self) -> list[str]:
        return [f"[{n}] {text}  " for text, n in self.notes.items()]


def _mem_cell(record: dict[str, Any], notes: _Footnotes) -> str:
    """Peak memory with a footnote saying how it was measured (allocator, device, RSS)."""
    mem = _fmt(record.get("peak_mem_mb"))
    if record.get("peak_mem_mb") is not None:
        mem += " " + notes.ref(record.get("peak_mem_method"))
    return mem


def _inference_section(records: list[dict[str, Any]], notes: _Footnotes) -> list[str]:
    header = ["model", "device", "backend", "precision", "batch", "video/s", "p50 ms", "p90 ms", "p99 ms",
              "peak mem MB", "× eager fp32", "status"]
    rows = []
    for r in records:
        lat = r.get("latency_ms") or {}
        status = _status(r, notes)
        mem = _mem_cell(r, notes)
        rows.append([_fmt(r.get("model")), _fmt(r.get("device")), _fmt(r.get("backend")),
                     _fmt(r.get("precision")), _fmt(r.get("batch")), _fmt(r.get("video_per_s")),
                     _fmt(lat.get("p50"), 2), _fmt(lat.get("p90"), 2), _fmt(lat.get("p99"), 2), mem,
                     _fmt(r.get("ratio_to_eager"), 2), status])
    return ["## Inference", "", *_table(header, rows), ""]


def _train_section(records: list[dict[str, Any]], notes: _Footnotes) -> list[str]:
    header = ["model", "device", "precision", "channels_last", "batch", "videos/s", "step p50 ms",
              "step mean ms", "peak mem MB", "× fp32", "status"]
    rows = []
    for r in records:
        step = r.get("step_ms") or {}
        status = _status(r, notes)
        mem = _mem_cell(r, notes)
        rows.append([_fmt(r.get("model")), _fmt(r.get("device")), _fmt(r.get("precision")),
                     _fmt(r.get("channels_last")), _fmt(r.get("batch")), _fmt(r.get("videos_per_s")),
                     _fmt(step.get("p50")), _fmt(step.get("mean")), mem, _fmt(r.get("ratio_to_fp32"), 2),
                     status])
    return ["## Training throughput (synthetic batches)", "", *_table(header, rows), ""]


_LOADER_KEYS = ("backend", "device", "threads", "workers", "batch_size", "image_size", "videos_per_s",
                "frames_per_s", "ratio_to_torch", "scaling", "cpu_ms_per_video", "startup_s",
                "data_wait_share")
_LOADER_DIGITS = {"ratio_to_torch": 2, "scaling": 2, "startup_s": 2, "data_wait_share": 3,
                  "cpu_ms_per_video": 2}


def _loader_section(records: list[dict[str, Any]], notes: _Footnotes) -> list[str]:
    header = list(_LOADER_KEYS) + ["load avg", "status"]
    rows = [[_fmt(r.get(k), _LOADER_DIGITS.get(k, 1)) for k in _LOADER_KEYS]
            + [_fmt((r.get("loadavg_before") or [None])[0], 2), _status(r, notes)] for r in records]
    lines = ["## Data loaders", "",
             "threads: DataLoader workers (torch) or DALI CPU threads; scaling: x the backend's "
             "1-thread figure; cpu_ms_per_video: CPU time of the loader's process and workers per "
             "video; data_wait_share: steady-state share of a real training step spent "
             "waiting for the batch; load avg: the machine's 1-minute load before the run.", "",
             *_table(header, rows), ""]
    staged = [r for r in records if r.get("stage_ms")]
    if staged:
        lines += ["### Where the loader time goes (ms per batch)", ""]
        for r in staged:
            cells = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items())
            py = r.get("python_ms") or {}
            extra = ("; timers: " + ", ".join(f"{k} {v:.1f}" for k, v in py.items())) if py else ""
            lines.append(f"- {r.get('backend')} on {r.get('device')}, {r.get('threads')} threads: "
                         f"{cells}{extra} {notes.ref(r.get('stage_method'))}")
        lines.append("")
    return lines


def _label(r: dict[str, Any], *keys: str) -> str:
    return " ".join(str(r.get(k)) for k in keys if r.get(k) is not None)


def _bar_plot(path: Path, labels: list[str], series: "OrderedDict[str, list[Optional[float]]]",
              ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) * max(1, len(series)) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
        for bar, v in zip(bars, values):
            if v is not None:
                ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    shown = [v for values in series.values() for v in values if v]
    if shown and max(shown) / min(shown) > 50:  # batch 1 and batch 16 on one axis
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _threads_plot(path: Path, records: list[dict[str, Any]]) -> Path:
    """videos/s against CPU threads, one line per (backend, device, batch, image size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: "OrderedDict[str, list[tuple[int, float]]]" = OrderedDict()
    for r in records:
        name = f"{r['backend']} · {r.get('device')} · b{r.get('batch_size')} · {r.get('image_size')} px"
        series.setdefault(name, []).append((int(r["threads"]), float(r["videos_per_s"])))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({int(r["threads"]) for r in records})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("CPU threads (torch: DataLoader workers; DALI: pipeline threads)")
    ax.set_ylabel("videos/s")
    ax.set_title("Loader throughput against CPU threads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(out: Path, inference: list[dict[str, Any]], train: list[dict[str, Any]],
           loader: list[dict[str, Any]]) -> list[Path]:
    paths = []
    ok_inf = [r for r in inference if _ok(r) and r.get("video_per_s") is not None]
    if ok_inf:
        labels = list(OrderedDict.fromkeys(_label(r, "model", "backend", "precision") for r in ok_inf))
        batches = sorted({int(r["batch"]) for r in ok_inf})
        devices = sorted({str(r.get("device")) for r in ok_inf})
        series: "OrderedDict[str, list[Optional[float]]]" = OrderedDict()
        for dev in devices:
            for b in batches:
                vals = []
                for lab in labels:
                    hit = [r["video_per_s"] for r in ok_inf if _label(r, "model", "backend", "precision") == lab
                           and int(r["batch"]) == b and str(r.get("device")) == dev]
                    vals.append(hit[0] if hit else None)
                name = f"batch {b}" + (f" · {dev}" if len(devices) > 1 else "")
                series[name] = vals
        paths.append(_bar_plot(out / "inference_throughput.png", labels, series, "video/s",
                               f"Inference throughput ({', '.join(devices)})"))
        lat_labels = [_label(r, "model", "backend", "precision") + f" b{r['batch']}" for r in ok_inf]
        lat = OrderedDict((q, [(r.get("latency_ms") or {}).get(q) for r in ok_inf]) for q in ("p50", "p90", "p99"))
        paths.append(_bar_plot(out / "inference_latency.png", lat_labels, lat, "latency per batch (ms)",
                               "Inference latency p50 / p90 / p99"))
    ok_train = [r for r in train if _ok(r) and r.get("videos_per_s") is not None]
    if ok_train:
        labels = [_label(r, "model", "precision") + (" channels_last" if r.get("channels_last") else " channels_first")
                  for r in ok_train]
        paths.append(_bar_plot(out / "train_throughput.png", labels,
                               OrderedDict([("videos/s", [r["videos_per_s"] for r in ok_train])]),
                               "videos/s (forward + backward + SGD step)", "Training throughput"))
    ok_loader = [r for r in loader if _ok(r) and r.get("videos_per_s") is not None]
    swept = [r for r in ok_loader if r.get("threads")]
    if len({r["threads"] for r in swept}) > 1:
        paths.append(_threads_plot(out / "loader_threads.png", swept))
    if ok_loader:
        labels = [_label(r, "backend", "device") + (f" t{r['threads']}" if r.get("threads") else "")
                  + (f" w{r['workers']}" if r.get("workers") is not None else "") for r in ok_loader]
        paths.append(_bar_plot(out / "loader_throughput.png", labels,
                               OrderedDict([("videos/s", [r["videos_per_s"] for r in ok_loader])]),
                               "videos/s", "Data loader throughput"))
    return paths


def render_report(directory: str | Path, out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Write ``report.md`` and PNG plots for the records in ``directory/results.json``.

    Returns ``{"markdown": Path, "plots": [Path, ...], "records": int}``.
    """
    directory = Path(directory)
    records = read_records(directory)
    if not records:
        raise FastvidError(f"{directory}: no benchmark records (expected {directory / RESULTS_FILE}; "
                           f"run `fastvid bench --out {directory}` first)")
    out = Path(out_dir) if out_dir else directory
    out.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[dict[str, Any]]] = {"inference": [], "train": [], "loader": []}
    for r in records:
        by_kind.setdefault(str(r.get("kind", "inference")), []).append(r)
    notes = _Footnotes()
    lines = ["# fastvid benchmark report", "",
             f"{len(records)} records from `{directory / RESULTS_FILE}`; dates "
             f"{min(str(r.get('date', '')) for r in records)} – {max(str(r.get('date', '')) for r in records)}.", ""]
    weights = sorted({str(r["weights"]) for r in records if r.get("weights")})
    if weights:
        lines += [f"Weights: {', '.join(weights)}.", ""]
    if by_kind["inference"]:
        lines += _inference_section(by_kind["inference"], notes)
    if by_kind["train"]:
        lines += _train_section(by_kind["train"], notes)
    if by_kind["loader"]:
        lines += _loader_section(by_kind["loader"], notes)
    try:
        plots = _plots(out, by_kind["inference"], by_kind["train"], by_kind["loader"])
    except ImportError as exc:  # a bare GPU box may lack matplotlib: the tables still render
        plots = []
        lines += [f"(no plots: {exc})", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    vers = [r.get("versions") for r in records if isinstance(r.get("versions"), dict)]
    if vers:
        merged = {k: v for d in vers for k, v in d.items() if v}
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in sorted(merged.items())), ""]
    if notes.notes:
        lines += ["## Notes", ""] + notes.lines() + [""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return {"markdown": md, "plots": plots, "records": len(records)}
