"""What every fastvid report and plot shares: the Agg backend, atomic PNG writes, plain device
names, one number format for a table cell and the label of the same value in a plot, and the
markdown table (``fastvid report`` and ``bench/report.py`` write theirs with it)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

__all__ = ["pyplot", "save", "fmt", "fmt_pct", "plain_device", "unique_names", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table; a ``|`` inside a cell is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                    for row in rows]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed; safe in workers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` atomically (a reader never sees half a PNG) and close it."""
    from fastvid.atomic import write_atomic

    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, format=path.suffix[1:] or "png", dpi=dpi),
                            "plot")
    finally:
        pyplot().close(fig)


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell and the plot label of the same value: ``1,234.5``, ``–`` for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN: e.g. an accuracy over no videos
            return "–"
        return f"{value:,.{digits}f}"
    return str(value)


def fmt_pct(fraction: Optional[float], digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage without the sign: ``0.6251`` -> ``62.5``."""
    return fmt(None if fraction is None else 100.0 * float(fraction), digits)


_CPU_NAME = re.compile(r"^(?P<model>.*?)\s*\((?P<cores>\d+) cores?\)$")


def plain_device(record: dict[str, Any]) -> str:
    """``CPU: AMD EPYC, 2 cores`` / ``GPU: NVIDIA H100 80GB HBM3`` from a benchmark record
    (``device`` is ``AMD EPYC (2 cores)``, a GPU name, or just ``cpu``/``cuda`` in loader
    records, which carry ``cores`` instead)."""
    name = str(record.get("device") or "")
    kind = str(record.get("device_type") or ("cuda" if name.startswith("cuda") else "cpu"))
    if kind == "cuda" or name.lower().startswith(("nvidia", "tesla")):
        return "GPU" if name in ("", "cuda") else f"GPU: {name}"
    m = _CPU_NAME.match(name)
    if m:
        return f"CPU: {m['model']}, {m['cores']} cores"
    cores = record.get("cores") or record.get("cpus")
    label = "CPU" if name.lower() in ("", "cpu") else f"CPU: {name}"
    return f"{label}, {cores} cores" if cores else label


def unique_names(paths: Iterable[Path]) -> list[str]:
    """The shortest path tails that tell the directories apart: ``run_a``, ``run_b``; two
    ``.../run`` folders become ``demo_out/run`` and ``other/run``."""
    parts = [Path(p).resolve().parts for p in paths]
    for n in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]
