"""The benchmark scripts run and write their section of reports/benchmarks.md."""

from __future__ import annotations

import runpy
import sys

from conftest import REPO


def test_cnn_throughput_writes_its_section_and_keeps_the_others(tmp_path, monkeypatch):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n<!-- other -->\nkept\n<!-- /other -->\n")
    monkeypatch.setattr(
        sys,
        "argv",
        ["cnn_throughput.py", "--steps", "1", "--clips", "2", "--out", str(out)],
    )
    monkeypatch.chdir(REPO)
    module = runpy.run_path(str(REPO / "benchmarks" / "cnn_throughput.py"))
    assert module["main"](sys.argv[1:]) == 0
    text = out.read_text()
    assert "kept" in text and text.count("<!-- cnn_throughput -->") == 1
    row = next(line for line in text.splitlines() if line.startswith("| cpu |"))
    windows_per_second = float(row.split("|")[2])
    assert windows_per_second > 0
    # Run again: the section is replaced, not appended.
    module["main"](sys.argv[1:])
    assert out.read_text().count("<!-- cnn_throughput -->") == 1
