"""``fastvid report PATH [PATH ...]``: pictures and tables of what fastvid measured.

What a path is decides the report (:func:`kind_of`):

* a benchmark directory (``results.json``): :func:`bench.report.render_report`;
* a training run directory (``metrics.jsonl`` / ``config.yaml``): training curves
  (:mod:`fastvid.report.training`), several runs overlaid, plus the confusion matrix of every
  ``eval*.json`` inside it;
* an ``eval.json`` (or a directory holding only eval JSONs): the confusion matrix and the
  most confused pairs (:mod:`fastvid.report.confusion`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from fastvid.atomic import write_text_atomic
from fastvid.errors import FastvidError

from .confusion import eval_section, is_eval_json, read_eval
from .plotting import unique_names

__all__ = ["kind_of", "render", "eval_files"]


def eval_files(directory: Path) -> list[Path]:
    """The eval JSONs of a directory (``eval.json``, ``eval_engine.json``, ...), sorted."""
    return [p for p in sorted(directory.glob("eval*.json")) if is_eval_json(p)]


def kind_of(path: Path) -> str:
    """``bench`` | ``run`` | ``eval`` for a path given to ``fastvid report``."""
    from bench.records import RESULTS_FILE

    from .training import is_run_dir

    if path.is_file():
        if path.name == RESULTS_FILE:
            return "bench"
        if is_eval_json(path):
            return "eval"
        raise FastvidError(f"{path}: not a results.json or an eval JSON (`fastvid eval --out`)")
    if not path.is_dir():
        raise FastvidError(f"{path}: no such file or directory")
    if (path / RESULTS_FILE).is_file():
        return "bench"
    if is_run_dir(path):
        return "run"
    if eval_files(path):
        return "eval"
    raise FastvidError(f"{path}: no benchmark records, training metrics or eval JSON: expected "
                       f"{RESULTS_FILE} (`fastvid bench --out {path}`), metrics.jsonl (`fastvid "
                       f"train --work-dir {path}`) or eval.json (`fastvid eval --out {path}/eval.json`)")


def _default_out(paths: Sequence[Path]) -> Path:
    """One path: the run itself (an eval JSON: its folder). Several: ``compare-A-B`` beside
    the first, named after the runs."""
    if len(paths) == 1:
        return paths[0] if paths[0].is_dir() else paths[0].parent
    names = "-".join(n.replace("/", "_") for n in unique_names(paths))
    return paths[0].resolve().parent / f"compare-{names}"[:120]


def _png_name(ev_path: Path, prefix: str = "") -> str:
    return f"{prefix}confusion{ev_path.stem[4:] if ev_path.stem.startswith('eval') else '_' + ev_path.stem}.png"


def render(paths: Sequence[str | Path], out_dir: Optional[str | Path] = None,
           all_runs: bool = False) -> dict[str, Any]:
    """Render the report of ``paths`` into ``out_dir``; returns ``{"kind", "markdown", "plots",
    ...}`` with the data behind each plot (``drawn`` / ``plotted`` / ``confusion``)."""
    items = [Path(p) for p in paths]
    if not items:
        raise FastvidError("fastvid report: give a benchmark directory, a training run or an eval JSON")
    kinds = [kind_of(p) for p in items]
    if "bench" in kinds:
        if len(items) > 1:
            raise FastvidError("fastvid report: one benchmark directory at a time (several runs in it: "
                               "--all); training runs and eval JSONs can be given together")
        from bench.report import render_report

        return {"kind": "bench", **render_report(items[0], out_dir, all_runs=all_runs)}
    out = Path(out_dir) if out_dir else _default_out(items)
    out.mkdir(parents=True, exist_ok=True)
    # Matrices of an earlier render (of eval files since removed) would contradict report.md.
    for stale in [*out.glob("confusion*.png"), *(out.glob("*_confusion*.png") if len(items) > 1 else [])]:
        stale.unlink()
    runs = [p for p, k in zip(items, kinds) if k == "run"]
    evals: list[tuple[str, Path]] = []  # (prefix for its png, eval json)
    result: dict[str, Any] = {"kind": "run" if runs else "eval", "plots": [], "confusion": {}}
    if runs:
        from .training import render_training_report

        res = render_training_report(runs, out)
        lines = res.pop("lines")
        result.update(res)
        names = unique_names(runs)
        for run, name in zip(runs, names):
            prefix = f"{name.replace('/', '_')}_" if len(runs) > 1 else ""
            evals += [(prefix, e) for e in eval_files(run)]
    else:
        lines = ["# fastvid evaluation report", ""]
    for p, k in zip(items, kinds):
        if k == "eval":
            files = [p] if p.is_file() else eval_files(p)
            evals += [("" if len(items) == 1 and len(files) == 1 else
                       f"{(p.parent if p.is_file() else p).name}_", f) for f in files]
    for prefix, ev_path in evals:
        ev = read_eval(ev_path)
        png = _png_name(ev_path, prefix)
        heading = "What the model confuses" + (f": `{ev_path}`" if len(evals) > 1 else "")
        section, drawn = eval_section(ev, out, png, heading)
        lines += section
        if drawn is not None:
            result["plots"].append(drawn["path"])
            result["confusion"][str(ev_path)] = drawn
    md = write_text_atomic(out / "report.md", "\n".join(lines), "report")
    result["markdown"] = md
    return result
