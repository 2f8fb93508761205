"""What the model confuses: the confusion matrix of an ``eval.json`` as a PNG and tables.

``eval.json`` (``fastvid eval --out``) holds ``confusion_matrix`` (counts; row = true class,
column = top-1 prediction, in ``categories.txt`` order) and ``classes``. The plot normalises
each row by that class's videos (a cell reads "x% of the videos of this class were predicted as
that class"). Up to :data:`FULL_MAX` classes (Jester's 27) every class is drawn; above it (e.g.
Something-Something's 174), the :data:`TOP_N` classes most involved in confusions, with an
"all other classes" column so that each row still sums to 100%.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fastvid.errors import FastvidError

from .plotting import fmt_pct, markdown_table, pyplot, save

__all__ = ["EvalReport", "read_eval", "is_eval_json", "most_confused_classes", "confused_pairs",
           "confusion_plot", "eval_section", "FULL_MAX", "TOP_N"]

FULL_MAX = 40  # classes drawn in full up to this many
TOP_N = 30  # classes drawn when there are more
NAME_MAX = 38  # characters of a class name on an axis (the tables keep the whole name)


@dataclass
class EvalReport:
    path: Path
    data: dict[str, Any]
    confusion: Optional[np.ndarray]  # (K, K) int64, None for an eval.json written before it
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return 0 if self.confusion is None else self.confusion.shape[0]


def is_eval_json(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError):
        return False
    return isinstance(data, dict) and "top1" in data and "num_videos" in data


def read_eval(path: str | Path) -> EvalReport:
    """An ``eval.json``; its confusion matrix checked to be square and to match ``classes``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise FastvidError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "top1" not in data:
        raise FastvidError(f"{path}: not an eval JSON (`fastvid eval --out` writes one; expected "
                           f"keys top1, top5, mean_class_acc, confusion_matrix)")
    conf = None
    if data.get("confusion_matrix") is not None:
        conf = np.asarray(data["confusion_matrix"], dtype=np.int64)
        if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
            raise FastvidError(f"{path}: confusion_matrix is {conf.shape}, expected K x K")
    k = 0 if conf is None else conf.shape[0]
    classes = [str(c) for c in data.get("classes") or []]
    if conf is not None and len(classes) != k:
        classes = [str(i) for i in range(k)]  # no (matching) names: the class indices
    return EvalReport(path, data, conf, classes)


def _short(name: str) -> str:
    return name if len(name) <= NAME_MAX else name[:NAME_MAX - 1].rstrip() + "…"


def row_normalised(conf: np.ndarray) -> np.ndarray:
    """Each row divided by its class's videos; NaN rows for classes without videos."""
    totals = conf.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, conf / np.maximum(totals, 1), np.nan)


def most_confused_classes(conf: np.ndarray, n: int) -> list[int]:
    """The ``n`` classes with the most misclassified videos in or into them (off-diagonal
    row + column counts), returned in class-index order; all classes when there are ``n`` or fewer."""
    k = conf.shape[0]
    if k <= n:
        return list(range(k))
    off = conf - np.diag(np.diag(conf))
    involvement = off.sum(axis=1) + off.sum(axis=0)
    order = sorted(range(k), key=lambda c: (-int(involvement[c]), c))[:n]
    return sorted(order)


def confused_pairs(conf: np.ndarray, n: int = 20) -> list[tuple[int, int, int]]:
    """The ``n`` largest off-diagonal cells as ``(true, predicted, videos)``, largest first."""
    off = conf - np.diag(np.diag(conf))
    cells = [(int(off[t, p]), t, p) for t, p in zip(*np.nonzero(off))]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(t, p, v) for v, t, p in cells[:n]]


def confusion_plot(ev: EvalReport, path: Path, title: str) -> dict[str, Any]:
    """Draw the row-normalised matrix; returns what was drawn: ``classes`` (indices shown),
    ``names`` (axis labels), ``counts`` (the rows shown, with an ``other`` column when the
    matrix is cut), ``shares`` (those rows normalised), ``other`` (bool), ``path``."""
    assert ev.confusion is not None
    conf = ev.confusion
    k = conf.shape[0]
    shown = most_confused_classes(conf, TOP_N) if k > FULL_MAX else list(range(k))
    cut = len(shown) < k
    counts = conf[np.ix_(shown, shown)]
    if cut:
        rest = conf[shown].sum(axis=1) - counts.sum(axis=1)
        counts = np.concatenate([counts, rest[:, None]], axis=1)
    shares = row_normalised(counts)  # each row still holds all of its class's videos
    names = [f"{c}: {_short(ev.classes[c])}" for c in shown]
    col_names = names + (["all other classes"] if cut else [])
    rows_names = [n + ("  (no videos)" if conf[c].sum() == 0 else "") for n, c in zip(names, shown)]

    plt = pyplot()
    n_rows, n_cols = shares.shape
    # About a third of an inch per cell (room for "100" at 6 pt), more for a handful of classes.
    cell = min(0.8, max(0.34, 4.0 / n_cols))
    font = 7
    label_in = 0.075 * max(len(n) for n in col_names)  # inches the longest label needs at 7 pt
    fig_w = n_cols * cell + label_in + 1.6
    fig_h = n_rows * cell + label_in + 1.2
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    cmap = plt.get_cmap("Blues").with_extremes(bad="#dddddd")  # grey: a class without videos
    im = ax.imshow(np.ma.masked_invalid(shares * 100.0), cmap=cmap, vmin=0, vmax=100, aspect="equal",
                   interpolation="nearest")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(col_names, rotation=90, fontsize=font)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(rows_names, fontsize=font)
    ax.set_xlabel("predicted class (top-1)")
    ax.set_ylabel("true class")
    if cut:  # the "other" column apart from the matrix proper
        ax.axvline(n_rows - 0.5, color="black", linewidth=1.0)
    for i in range(n_rows):
        for j in range(n_cols):
            v = shares[i, j]
            if v == v and counts[i, j] > 0:  # skip NaN and empty cells: zeros would drown the rest
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=font - 1,
                        color="white" if v > 0.55 else "black")
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size=0.15, pad=0.1)  # as tall as the matrix
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("% of the true class's videos (blank: none; grey row: class without videos)", fontsize=8)
    sub = (f"the {len(shown)} classes most involved in confusions, of {k}; "
           f"rows still sum to 100% with 'all other classes'" if cut else
           f"all {k} classes; each row sums to 100%")
    ax.set_title(f"{title}\n{sub}", fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return {"path": path, "classes": shown, "names": col_names, "counts": counts, "shares": shares,
            "other": cut}


def eval_section(ev: EvalReport, out: Path, png_name: str, heading: str = "What the model confuses",
                 pairs: int = 20) -> tuple[list[str], Optional[dict[str, Any]]]:
    """Markdown lines (metrics, most confused pairs, lowest per-class accuracy) and the plot."""
    d = ev.data
    views = f", {d.get('clips')} clips x {d.get('crops')} crops" if d.get("clips") else ""
    source = d.get("checkpoint") or d.get("engine") or "?"
    lines = [f"## {heading}", "",
             f"`{ev.path}`: `{source}` on the {d.get('split', 'val')} split, {d.get('num_videos')} videos"
             f"{views}: top-1 {fmt_pct(d.get('top1'))}%, top-5 {fmt_pct(d.get('top5'))}%, mean class "
             f"accuracy {fmt_pct(d.get('mean_class_acc'))}%"
             + (f"; {d['bad_samples']} unreadable videos left out" if d.get("bad_samples") else "") + ".", ""]
    if ev.confusion is None:
        return lines + ["(this eval JSON was written before fastvid recorded the confusion matrix: run "
                        "`fastvid eval ... --out` again to get it)", ""], None
    conf = ev.confusion
    title = f"Confusion matrix: top-1 {fmt_pct(d.get('top1'))}%, {int(conf.sum())} videos"
    drawn = confusion_plot(ev, out / png_name, title)
    totals = conf.sum(axis=1)
    top = confused_pairs(conf, pairs)
    lines += [f"![confusion matrix]({png_name})", ""]
    if top:
        lines += [f"Most confused pairs ({len(top)} largest off-diagonal cells):", "",
                  *markdown_table(("true class", "predicted as", "videos", "% of the true class",
                                   "the other way"),
                                  [(f"{t}: {ev.classes[t]}", f"{p}: {ev.classes[p]}", str(v),
                                    fmt_pct(v / totals[t]), str(int(conf[p, t])))
                                   for t, p, v in top]), ""]
    else:
        lines += ["No video was confused with another class.", ""]
    from fastvid.evaluate import per_class_accuracy

    acc = [(c, a) for c, a in enumerate(per_class_accuracy(conf)) if a is not None]
    acc.sort(key=lambda a: (a[1], a[0]))
    n_low = len(acc) if len(acc) <= 15 else 15
    if acc:
        rows = []
        for c, a in acc[:n_low]:
            row = conf[c].copy()
            row[c] = 0
            other = int(row.argmax())
            instead = f"{other}: {ev.classes[other]} ({int(row[other])})" if row[other] else "–"
            rows.append((f"{c}: {ev.classes[c]}", str(int(totals[c])), fmt_pct(a), instead))
        lines += [f"Per-class accuracy, lowest {n_low} of {len(acc)} classes with videos:", "",
                  *markdown_table(("class", "videos", "top-1 %", "most often predicted instead"), rows),
                  ""]
    empty = [c for c in range(conf.shape[0]) if totals[c] == 0]
    if empty:
        lines += [f"{len(empty)} classes have no videos in this split: "
                  + ", ".join(f"{c}: {ev.classes[c]}" for c in empty[:20]) + ("…" if len(empty) > 20 else ""),
                  ""]
    return lines, drawn


