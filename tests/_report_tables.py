"""Reading a bench report back: its Markdown tables as rows, and the check that its plots drew
exactly what its tables list (tests of both layers)."""
from __future__ import annotations


def table_rows(md: str, section: str) -> list[dict[str, str]]:
    """The rows of a Markdown table under ``## section`` as {column: cell}."""
    lines = md.split(f"## {section}", 1)[1].strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("|")):]  # past prose lines
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def assert_plots_match_tables(result: dict) -> None:
    md = result["markdown"].read_text()
    table = sorted(r["video/s"] for r in table_rows(md, "Inference") if r["status"].startswith("ok"))
    drawn = result["plotted"]["inference_throughput.png"]
    assert sorted(b.text for b in drawn) == table  # one bar per row, written as the row writes it
    bars = [(b.label, b.series) for b in drawn]
    assert len(bars) == len(set(bars)), "two rows share one bar"
