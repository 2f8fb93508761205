"""``fastvid report DIR``: Markdown tables and matplotlib PNGs from ``DIR/results.json``.

By default the report shows the latest run only (the ``run_id`` of the last record appended);
``all_runs`` shows every run, with a run column. Tables and plots are drawn from the same rows,
one bar per table row. Timed figures flagged unstable (see :func:`bench.records.stability`) are
marked in the status column, and ratios whose baseline moved in the ratio column.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple, Optional

from fastvid.errors import FastvidError
from fastvid.report.plotting import fmt, markdown_table

from .records import CV_MAX, RESULTS_FILE, TAIL_MAX, read_records

__all__ = ["render_report", "select_run", "Bar"]


def _stability(r: dict[str, Any], samples: str) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """``(cv, p90/p50, why unstable or None)`` of a timed record.

    Records written before dispersion was recorded get p90/p50 from their percentiles (no CV).
    """
    tail = r.get("p90_over_p50")
    if tail is None:
        pct = r.get(samples) or {}
        if pct.get("p50") and pct.get("p90") is not None:
            tail = pct["p90"] / pct["p50"]
    if "unstable" in r:
        return r.get("cv"), tail, (r.get("unstable_reason") or "unstable") if r["unstable"] else None
    why = f"p90 {tail:.1f}x p50 > {TAIL_MAX:g}x" if tail is not None and tail > TAIL_MAX else None
    return None, tail, why


def _status(r: dict[str, Any], notes: "_Footnotes", samples: Optional[str] = None) -> str:
    """``ok`` (``ok, unstable [n]``), or ``skipped [n]`` / ``failed [n]`` with the reason as footnote n."""
    status = r.get("status") or ("skipped" if r.get("skipped") else "ok")
    if status == "ok":
        why = _stability(r, samples)[2] if samples else None
        return f"ok, **unstable** {notes.ref('unstable: ' + why)}" if why else status
    return f"{status} {notes.ref(r.get('reason') or r.get('skipped'))}"


def _ratio(r: dict[str, Any], key: str, notes: "_Footnotes") -> str:
    flag = _ratio_flag(r, key)
    return _fmt(r.get(key), 2) + (" " + notes.ref("ratio unreliable: " + flag) if flag else "")


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _load(r: dict[str, Any]) -> str:
    load = r.get("load_avg")
    return f"{load[0]:g}" if isinstance(load, list) and load else "–"


def _ok(r: dict[str, Any]) -> bool:
    return (r.get("status") or ("skipped" if r.get("skipped") else "ok")) == "ok"


# The one number format of the tables and of the values written on the plots.
_fmt = fmt


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


def _run_cell(r: dict[str, Any]) -> list[str]:
    return [str(r.get("run_id") or "(no run id)")]


def _mode_cell(record: dict[str, Any]) -> str:
    """How an inference record's calls reached the GPU, and its memory format."""
    mode = record.get("mode")
    if mode is None:  # written before records had a mode
        return "–"
    return mode + (", channels_last" if record.get("channels_last") else "")


_FLOP_HEADER = ["TFLOP/s", "% peak"]


def _flop_cells(record: dict[str, Any], notes: _Footnotes) -> list[str]:
    """Achieved TFLOP/s and % of the dense peak, the peak used as a footnote (n/a: why none)."""
    tflops = record.get("tflops")
    if tflops is None:
        return ["–", "–"]
    pct = record.get("pct_of_peak")
    cell = "n/a" if pct is None else f"{pct:.3g}"
    return [f"{tflops:.3g}", f"{cell} {notes.ref(record.get('peak_basis'))}".strip()]


def _flop_lines(records: list[dict[str, Any]]) -> list[str]:
    """A line with each model's GFLOP per video and how TFLOP/s was counted."""
    per_model: dict[tuple[str, tuple[Any, ...]], float] = {}
    basis: set[str] = set()
    for r in records:
        if r.get("gflop_per_video") is not None:
            per_model[(str(r.get("model")), tuple((r.get("input_shape") or [None])[1:]))] = r["gflop_per_video"]
            basis.add(str(r.get("flop_basis")))
    if not per_model:
        return []
    models = ", ".join(f"{model} {shape} {gflop:.4g}" for (model, shape), gflop in per_model.items())
    return [f"GFLOP per video: {models} ({'; '.join(sorted(basis))}). TFLOP/s = videos/s x "
            f"those FLOPs / 1000; % peak: of the dense peak named in the footnote.", ""]


def _precision_cell(r: dict[str, Any]) -> str:
    """The precision asked for, and what the runtime reports computing in when it says (OpenVINO)."""
    used = (r.get("runtime") or {}).get("inference_precision")
    return f"{r.get('precision')} (runtime {used})" if used else _fmt(r.get("precision"))


def _inference_section(records: list[dict[str, Any]], notes: _Footnotes, runs: bool) -> list[str]:
    peer = next((r["peer_backend"] for r in records if r.get("peer_backend")), None)
    header = (["run"] if runs else []) + [
        "model", "device", "backend", "mode", "precision", "batch", "video/s", "p50 ms", "p90 ms",
        "p99 ms", "CV %", "p90/p50", "load", *_FLOP_HEADER, "peak mem MB", "× eager fp32",
        *([f"× {peer}"] if peer else []), "status"]
    rows = []
    for r in records:
        lat = r.get("latency_ms") or {}
        cv, tail, _ = _stability(r, "latency_ms")
        status = _status(r, notes, "latency_ms")
        mem = _mem_cell(r, notes)
        rows.append((_run_cell(r) if runs else []) + [
            _fmt(r.get("model")), _fmt(r.get("device")), _fmt(r.get("backend")), _mode_cell(r),
            _precision_cell(r), _fmt(r.get("batch")), _fmt(r.get("video_per_s")),
            _fmt(lat.get("p50"), 2), _fmt(lat.get("p90"), 2), _fmt(lat.get("p99"), 2), _pct(cv),
            _fmt(tail, 2), _load(r), *_flop_cells(r, notes), mem, _ratio(r, "ratio_to_eager", notes),
            *([_fmt(r.get("ratio_to_peer"), 2)] if peer else []), status])
    return ["## Inference", "", *_flop_lines(records), *markdown_table(header, rows), ""]


def _train_section(records: list[dict[str, Any]], notes: _Footnotes, runs: bool) -> list[str]:
    header = (["run"] if runs else []) + [
        "model", "device", "precision", "channels_last", "mode", "batch", "videos/s", "step p50 ms",
        "step mean ms", "CV %", "p90/p50", "load", *_FLOP_HEADER, "peak mem MB", "× fp32", "status"]
    rows = []
    for r in records:
        step = r.get("step_ms") or {}
        cv, tail, _ = _stability(r, "step_ms")
        status = _status(r, notes, "step_ms")
        mem = _mem_cell(r, notes)
        rows.append((_run_cell(r) if runs else []) + [
            _fmt(r.get("model")), _fmt(r.get("device")), _fmt(r.get("precision")),
            _fmt(r.get("channels_last")), _fmt(r.get("mode", "eager")), _fmt(r.get("batch")),
            _fmt(r.get("videos_per_s")), _fmt(step.get("p50")), _fmt(step.get("mean")), _pct(cv),
            _fmt(tail, 2), _load(r), *_flop_cells(r, notes), mem, _ratio(r, "ratio_to_fp32", notes),
            status])
    return ["## Training throughput (synthetic batches)", "", *_flop_lines(records),
            *markdown_table(header, rows), ""]


# measure: throughput, data_wait (feeding training steps) or stages; without it a data_wait or
# stages row reads as a second throughput figure of the same backend.
_LOADER_KEYS = ("backend", "measure", "device", "threads", "workers", "batch_size", "image_size", "videos_per_s",
                "frames_per_s", "ratio_to_torch", "scaling", "cpu_ms_per_video", "startup_s",
                "data_wait_share")
_LOADER_DIGITS = {"ratio_to_torch": 2, "scaling": 2, "startup_s": 2, "data_wait_share": 3,
                  "cpu_ms_per_video": 2}


def _loader_section(records: list[dict[str, Any]], notes: _Footnotes, runs: bool) -> list[str]:
    header = (["run"] if runs else []) + list(_LOADER_KEYS) + ["load avg", "status"]
    rows = [(_run_cell(r) if runs else [])
            + [_fmt(r.get(k), _LOADER_DIGITS.get(k, 1)) for k in _LOADER_KEYS]
            + [_fmt((r.get("loadavg_before") or [None])[0], 2), _status(r, notes)] for r in records]
    lines = ["## Data loaders", "",
             "measure: throughput (steady state), data_wait (feeding real training steps) or "
             "stages; threads: DataLoader workers (torch) or DALI CPU threads; scaling: x the backend's "
             "1-thread figure; cpu_ms_per_video: CPU time of the loader's process and workers per "
             "video; data_wait_share: steady-state share of a real training step spent "
             "waiting for the batch; load avg: the machine's 1-minute load before the run.", "",
             *markdown_table(header, rows), ""]
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


class Bar(NamedTuple):
    """One bar of a bench plot and why it is marked: ``text`` is the value as the table cell
    shows it, ``ratio_text`` the ratio cell (the number only), ``unstable`` / ``ratio_unreliable``
    the table's reasons (None when not flagged)."""

    label: str
    series: str
    value: float
    text: str
    unstable: Optional[str] = None
    ratio_text: Optional[str] = None
    ratio_unreliable: Optional[str] = None


UNSTABLE_KEY = (f"hatched, faded: unstable figure (CV > {100 * CV_MAX:.0f}% or p90 > {TAIL_MAX:g}x p50; "
                f"see report.md)")
RATIO_KEY = "red dashed edge, ×N?: ratio unreliable (its baseline moved during the run)"


def _bar_plot(path: Path, bars: list[Bar], ylabel: str, title: str, ratio_of: Optional[str] = None) -> Path:
    """Grouped bars (x: label, colour: series), each annotated as its table cell, flagged bars
    hatched/faded or red-edged, with a legend entry for every mark used."""
    import numpy as np
    from matplotlib.patches import Patch

    from fastvid.report.plotting import pyplot, save

    plt = pyplot()
    labels = list(OrderedDict.fromkeys(b.label for b in bars))
    names = list(OrderedDict.fromkeys(b.series for b in bars))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    longest = max(len(line) for lab in labels for line in lab.split("\n"))
    lines = max(lab.count("\n") + 1 for lab in labels)
    handles = [Patch(color=colors[i % len(colors)], label=n) for i, n in enumerate(names)] if len(names) > 1 else []
    if ratio_of and any(b.ratio_text is not None for b in bars):
        handles.append(Patch(facecolor="none", edgecolor="none", label=f"×N: {ratio_of}"))
    if any(b.unstable for b in bars):
        handles.append(Patch(facecolor="lightgrey", alpha=0.6, hatch="////", edgecolor="black",
                             label=UNSTABLE_KEY))
    if any(b.ratio_unreliable for b in bars):
        handles.append(Patch(facecolor="white", edgecolor="red", linestyle="--", linewidth=1.6,
                             label=RATIO_KEY))
    n_bars = len(labels) * max(1, len(names))
    fig_w = max(6.5, min(16.0, 0.4 * n_bars + 0.5 * len(labels) + 2.5))
    # The key goes below the axes: inside, it covered bars and their values.
    key_in = 0.19 * len(handles) + 0.15 if handles else 0.0
    flat = len(labels) * max(1, len(names)) <= 8 and longest <= 24
    # Many or long labels stand upright, one column per line: slanted multi-line labels overlap.
    fig_h = 4.6 + (0.18 * lines if flat else 0.075 * longest) + key_in
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    # Values written on narrow bars are turned upright rather than overlapping their neighbours.
    upright = (fig_w - 2.0) / n_bars < 0.45
    width = 0.8 / max(1, len(names))
    x = np.arange(len(labels))
    for b in bars:
        i, j = names.index(b.series), labels.index(b.label)
        pos = x[j] + (i - (len(names) - 1) / 2) * width
        color = colors[i % len(colors)]
        rect = ax.bar(pos, b.value, width, color=color, alpha=0.45 if b.unstable else 1.0,
                      hatch="////" if b.unstable else None,
                      edgecolor="red" if b.ratio_unreliable else ("black" if b.unstable else color),
                      linewidth=1.6 if b.ratio_unreliable else 0.5,
                      linestyle="--" if b.ratio_unreliable else "-")[0]
        text = b.text
        if b.ratio_text is not None:
            text += f"\n×{b.ratio_text}" + ("?" if b.ratio_unreliable else "")
        ax.annotate(text, (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                    va="bottom", fontsize=7, color="red" if b.ratio_unreliable else "black",
                    rotation=90 if upright else 0, textcoords="offset points", xytext=(0, 2))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=0 if flat else 90, ha="center", fontsize=8)
    shown = [b.value for b in bars if b.value]
    if shown and max(shown) / min(shown) > 50:  # batch 1 and batch 16 on one axis
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.margins(y=0.2)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if handles:
        fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=1, frameon=False)
        fig.tight_layout(rect=(0, key_in / fig_h, 1, 1))
    else:
        fig.tight_layout()
    return save(fig, path)


Plotted = dict[str, list[Bar]]  # png name -> the bars drawn
PLOT_NAMES = ("inference_throughput.png", "inference_latency.png", "train_throughput.png",
              "loader_throughput.png", "loader_threads.png")
# Most telling first: what max_plots keeps.
PLOT_PRIORITY = ("inference_throughput.png", "train_throughput.png", "loader_threads.png",
                 "loader_throughput.png", "inference_latency.png")


def _unique(labels: list[str], series: Optional[list[str]] = None) -> list[str]:
    """Labels made unique per series (``#2``, ``#3``...), so that no row hides behind another's bar."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for i, label in enumerate(labels):
        key = (label, series[i] if series else "")
        seen[key] = seen.get(key, 0) + 1
        out.append(label if seen[key] == 1 else f"{label} #{seen[key]}")
    return out


def _devices(records: list[dict[str, Any]]) -> str:
    from fastvid.report.plotting import plain_device

    return "; ".join(OrderedDict.fromkeys(plain_device(r) for r in records))


def _spelled(records: list[dict[str, Any]], fields: list[tuple[str, Any]]) -> tuple[list[str], str]:
    """Bar labels from the fields that differ between ``records`` (spelled out, one per line),
    and the fields they share, for the title. ``fields``: (key, formatter of a record)."""
    labels: list[list[str]] = [[] for _ in records]
    shared = []
    for key, show in fields:
        values = [show(r) for r in records]
        if len(set(values)) > 1 or key == "backend":
            for lab, v in zip(labels, values):
                if v:
                    lab.append(v)
        elif values and values[0] and key != "device":  # the device is the title's first line
            shared.append(values[0])
    return ["\n".join(lab) for lab in labels], ", ".join(shared)


def _infer_mode(r: dict[str, Any]) -> str:
    mode = r.get("mode")
    parts = ([] if mode in (None, "launch") else [f"mode {mode}"]) + (["channels-last"] if r.get("channels_last") else [])
    return ", ".join(parts)


def _loader_threads(r: dict[str, Any]) -> str:
    """``2 DataLoader workers`` for a backend whose threads are its worker processes (torch),
    ``2 DALI threads`` for one with CPU threads of its own (the registry's ``threads``
    capability; a record of a backend no longer registered: whether it counted threads)."""
    from fastvid.errors import BackendUnavailable
    from fastvid.loaders import loader_backend

    threads, workers = r.get("threads"), r.get("workers")
    try:
        own_threads = bool(loader_backend(str(r.get("backend", ""))).threads)
    except BackendUnavailable:
        own_threads = "dali_threads" in r
    if not own_threads:
        n = workers if workers is not None else threads
        return "" if n is None else f"{n} DataLoader worker{'s' if n != 1 else ''}"
    n = threads if threads is not None else workers
    return "" if n is None else f"{n} DALI thread{'s' if n != 1 else ''}"


def _title(what: str, records: list[dict[str, Any]], shared: str) -> str:
    return f"{what}\n{_devices(records)}" + (f" · {shared}" if shared else "")


def _ratio_flag(r: dict[str, Any], key: str) -> Optional[str]:
    if r.get(key) is None or not r.get("ratio_unstable"):
        return None
    return str(r.get("ratio_unstable_reason") or "baseline moved")


def _threads_plot(path: Path, records: list[dict[str, Any]]) -> Path:
    """videos/s against CPU threads, one line per (backend, device, batch, image size)."""
    from fastvid.report.plotting import pyplot, save

    plt = pyplot()
    series: "OrderedDict[str, list[tuple[int, float]]]" = OrderedDict()
    for r in records:
        where = "GPU" if str(r.get("device", "")).startswith("cuda") else "CPU"
        name = (f"{r['backend']} (decoding on the {where}), batch {r.get('batch_size')}, "
                f"{r.get('image_size')} px")
        series.setdefault(name, []).append((int(r["threads"]), float(r["videos_per_s"])))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        for t, v in points:
            ax.annotate(_fmt(v), (t, v), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    ax.set_xscale("log", base=2)
    ticks = sorted({int(r["threads"]) for r in records})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("CPU threads (torch: DataLoader workers; DALI: pipeline threads)")
    ax.set_ylabel("videos/s")
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    ax.set_title(f"Loader throughput against CPU threads\n{_devices(records)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def _plots(out: Path, inference: list[dict[str, Any]], train: list[dict[str, Any]],
           loader: list[dict[str, Any]], runs: bool) -> tuple[list[Path], Plotted]:
    """One bar per ``ok`` table row (the same rows the tables show), its value written as the
    table writes it, flagged as the table flags it; returns what was drawn."""
    paths: list[Path] = []
    plotted: Plotted = {}
    run_field = [("run", lambda r: f"run {r.get('run_id') or '(no run id)'}" if runs else "")]

    def draw(name: str, bars: list[Bar], ylabel: str, title: str, ratio_of: Optional[str] = None) -> None:
        paths.append(_bar_plot(out / name, bars, ylabel, title, ratio_of))
        plotted[name] = bars

    ok_inf = [r for r in inference if _ok(r) and r.get("video_per_s") is not None]
    if ok_inf:
        from fastvid.report.plotting import plain_device

        fields = [("model", lambda r: str(r.get("model") or "")), ("backend", lambda r: str(r.get("backend"))),
                  ("precision", lambda r: str(r.get("precision") or "")), ("mode", _infer_mode),
                  ("device", plain_device), *run_field]
        names, shared = _spelled(ok_inf, fields)
        series = [f"batch {r['batch']}" for r in ok_inf]
        labels = _unique(names, series)
        bars = [Bar(lab, ser, float(r["video_per_s"]), _fmt(r["video_per_s"]), _stability(r, "latency_ms")[2],
                    None if r.get("ratio_to_eager") is None else _fmt(r["ratio_to_eager"], 2),
                    _ratio_flag(r, "ratio_to_eager"))
                for lab, ser, r in zip(labels, series, ok_inf)]
        draw("inference_throughput.png", bars, "videos/s", _title("Inference throughput", ok_inf, shared),
             "ratio to eager fp32 at the same batch")
        lat_rows = [r for r in ok_inf if (r.get("latency_ms") or {}).get("p50") is not None]
        lat_names, lat_shared = _spelled(lat_rows, fields + [("batch", lambda r: f"batch {r['batch']}")])
        lat_labels = _unique(lat_names)
        qs = (("p50", "p50 (median)"), ("p90", "p90"), ("p99", "p99"))
        bars = [Bar(lab, title, float(r["latency_ms"][q]), _fmt(r["latency_ms"][q], 2),
                    _stability(r, "latency_ms")[2])
                for lab, r in zip(lat_labels, lat_rows) for q, title in qs if r["latency_ms"].get(q) is not None]
        draw("inference_latency.png", bars, "latency per batch (ms)",
             _title("Inference latency per batch: p50 / p90 / p99", lat_rows, lat_shared))
    ok_train = [r for r in train if _ok(r) and r.get("videos_per_s") is not None]
    if ok_train:
        fields = [("model", lambda r: str(r.get("model") or "")),
                  ("precision", lambda r: str(r.get("precision") or "")),
                  ("format", lambda r: "channels-last" if r.get("channels_last") else "channels-first"),
                  ("mode", lambda r: "" if r.get("mode", "eager") == "eager" else f"mode {r['mode']}"),
                  ("batch", lambda r: f"batch {r.get('batch')}"), *run_field]
        names, shared = _spelled(ok_train, fields)
        labels = _unique(names)
        bars = [Bar(lab, "videos/s", float(r["videos_per_s"]), _fmt(r["videos_per_s"]),
                    _stability(r, "step_ms")[2],
                    None if r.get("ratio_to_fp32") is None else _fmt(r["ratio_to_fp32"], 2),
                    _ratio_flag(r, "ratio_to_fp32"))
                for lab, r in zip(labels, ok_train)]
        draw("train_throughput.png", bars, "videos/s (forward + backward + SGD step)",
             _title("Training throughput (synthetic batches)", ok_train, shared),
             "ratio to fp32 channels-first eager")
    ok_loader = [r for r in loader if _ok(r) and r.get("videos_per_s") is not None]
    swept = [r for r in ok_loader if r.get("threads")]
    if len({r["threads"] for r in swept}) > 1:
        paths.append(_threads_plot(out / "loader_threads.png", swept))
    if ok_loader:
        fields = [("backend", lambda r: str(r.get("backend"))), ("threads", _loader_threads),
                  ("batch", lambda r: f"batch {r.get('batch_size')}" if r.get("batch_size") else ""),
                  ("size", lambda r: f"{r.get('image_size')} px" if r.get("image_size") else ""), *run_field]
        names, shared = _spelled(ok_loader, fields)
        labels = _unique(names)
        bars = [Bar(lab, "videos/s", float(r["videos_per_s"]), _fmt(r["videos_per_s"]),
                    (r.get("unstable_reason") or "unstable") if r.get("unstable") else None,
                    None if r.get("ratio_to_torch") is None else _fmt(r["ratio_to_torch"], 2))
                for lab, r in zip(labels, ok_loader)]
        draw("loader_throughput.png", bars, "videos/s", _title("Data loader throughput", ok_loader, shared),
             "ratio to the torch loader with as many workers")
    return paths, plotted


def _run_id(r: dict[str, Any]) -> Optional[str]:
    return r.get("run_id") or None  # None: written before records had run ids


def select_run(records: list[dict[str, Any]], all_runs: bool = False) -> tuple[list[dict[str, Any]], list]:
    """``(records to show, run ids in the file in order)``: the latest run (that of the last
    record appended), or every record with ``all_runs``."""
    runs = list(OrderedDict.fromkeys(_run_id(r) for r in records))
    if all_runs:
        return records, runs
    latest = _run_id(records[-1])
    return [r for r in records if _run_id(r) == latest], runs


def _unstable_summary(records: list[dict[str, Any]]) -> list[str]:
    timed = [(r, "latency_ms" if r.get("kind", "inference") == "inference" else "step_ms")
             for r in records if _ok(r) and r.get("kind", "inference") in ("inference", "train")]
    unstable = [r for r, samples in timed if _stability(r, samples)[2]]
    ratios = [r for r, _ in timed if r.get("ratio_unstable")]
    loads = [r["load_avg"][0] for r, _ in timed if isinstance(r.get("load_avg"), list) and r["load_avg"]]
    cpus = sorted({int(r["cpus"]) for r, _ in timed if r.get("cpus")})
    lines = []
    if loads:
        lines.append(f"Load average (1 min) when timing started: {min(loads):g}–{max(loads):g}"
                     + (f" on {', '.join(map(str, cpus))} CPUs" if cpus else "") + ".")
    if unstable or ratios:
        lines.append(f"**Unstable: {len(unstable)} of {len(timed)} timed figures** (CV > {100 * CV_MAX:.0f}% "
                     f"or p90 > {TAIL_MAX:g}x p50){f' and {len(ratios)} ratios' if ratios else ''} depend on "
                     f"what else the machine was doing (see the status and ratio columns); measure again on "
                     f"a quiet machine before quoting them.")
    return lines + ([""] if lines else [])


def render_report(directory: str | Path, out_dir: Optional[str | Path] = None,
                  all_runs: bool = False, max_plots: Optional[int] = None) -> dict[str, Any]:
    """Write ``report.md`` and PNG plots for the records in ``directory/results.json``.

    ``max_plots`` keeps the most telling plots only (:data:`PLOT_PRIORITY`), e.g. to fit the
    GPU check's eight returned files.

    Shows the latest run (the ``run_id`` of the last record), or every run with ``all_runs``
    (then with a run column). Returns ``{"markdown": Path, "plots": [Path, ...], "records": int,
    "runs": int, "run_id": latest run id, "plotted": {png name: [(label, series, value), ...]}}``.
    """
    directory = Path(directory)
    all_records = read_records(directory)
    if not all_records:
        raise FastvidError(f"{directory}: no benchmark records (expected {directory / RESULTS_FILE}; "
                           f"run `fastvid bench --out {directory}` first)")
    records, runs = select_run(all_records, all_runs)
    latest = _run_id(all_records[-1])
    out = Path(out_dir) if out_dir else directory
    out.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[dict[str, Any]]] = {"inference": [], "train": [], "loader": []}
    for r in records:
        by_kind.setdefault(str(r.get("kind", "inference")), []).append(r)
    notes = _Footnotes()
    dates = (f"dates {min(str(r.get('date', '')) for r in records)} – "
             f"{max(str(r.get('date', '')) for r in records)}")
    if all_runs:
        what = f"{len(records)} records of {len(runs)} runs from `{directory / RESULTS_FILE}`; {dates}."
    else:
        run = f"Run `{latest}`:" if latest else "Written before records had run ids:"
        what = f"{run} {len(records)} records from `{directory / RESULTS_FILE}`; {dates}."
        if len(runs) > 1:
            what += (f" The file holds {len(runs) - 1} earlier run(s), not shown: `fastvid report {directory} "
                     f"--all` lists every run with a run column.")
    lines = ["# fastvid benchmark report", "", what, ""]
    weights = sorted({str(r["weights"]) for r in records if r.get("weights")})
    if weights:
        lines += [f"Weights: {', '.join(weights)}.", ""]
    lines += _unstable_summary(records)
    if by_kind["inference"]:
        lines += _inference_section(by_kind["inference"], notes, all_runs)
    if by_kind["train"]:
        lines += _train_section(by_kind["train"], notes, all_runs)
    if by_kind["loader"]:
        lines += _loader_section(by_kind["loader"], notes, all_runs)
    for name in PLOT_NAMES:  # a plot of an earlier render would disagree with these tables
        (out / name).unlink(missing_ok=True)
    try:
        plots, plotted = _plots(out, by_kind["inference"], by_kind["train"], by_kind["loader"], all_runs)
    except ImportError as exc:  # a bare GPU box may lack matplotlib: the tables still render
        plots, plotted = [], {}
        lines += [f"(no plots: {exc})", ""]
    if max_plots is not None and len(plots) > max_plots:
        keep = sorted(plots, key=lambda q: PLOT_PRIORITY.index(q.name))[:max_plots]
        for q in plots:
            if q not in keep:
                q.unlink(missing_ok=True)
                plotted.pop(q.name, None)
        plots = [q for q in plots if q in keep]
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
    return {"markdown": md, "plots": plots, "records": len(records), "runs": len(runs), "run_id": latest,
            "plotted": plotted}
