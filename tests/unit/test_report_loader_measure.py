"""bench/report.py's loader table says what each row measured."""
from __future__ import annotations

from bench import append_records, render_report


def test_loader_rows_show_their_measure(tmp_path):
    base = {"kind": "loader", "backend": "torch", "device": "cpu", "status": "ok", "batch_size": 2,
            "run_id": "r1", "date": "2026-12-07T00:00:00+00:00"}
    append_records(tmp_path, [dict(base, measure="throughput", videos_per_s=10.0),
                              dict(base, measure="data_wait", videos_per_s=8.0, data_wait_share=0.25)])
    render_report(tmp_path, max_plots=0)
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| backend"))
    assert header.startswith("| backend | measure |")
    assert "| torch | throughput |" in md and "| torch | data_wait |" in md
