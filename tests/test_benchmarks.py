"""The benchmark scripts run and write their section of reports/benchmarks.md."""

from __future__ import annotations

import re
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


def test_tracking_overhead_alternates_modes_and_writes_the_ratio(tmp_path, monkeypatch):
    """With a stand-in command that records WANDB_MODE: an untimed warm-up, then both modes,
    alternated, and a ratio."""
    seen = tmp_path / "modes.txt"
    out = tmp_path / "benchmarks.md"
    module = runpy.run_path(str(REPO / "benchmarks" / "tracking_overhead.py"))
    command = f"sh -c 'echo $WANDB_MODE >> {seen}'"
    monkeypatch.setitem(module["main"].__globals__, "isolated_prefix", lambda: [])
    args = ["--project", str(tmp_path), "--rounds", "2", "--out", str(out)]
    assert module["main"]([*args, "--command", command]) == 0
    assert seen.read_text().split() == ["disabled", "disabled", "offline", "offline", "disabled"]
    text = out.read_text()
    assert "after 1 untimed warm-up run(s)" in text
    assert "| disabled |" in text and "| offline |" in text
    assert re.search(r"offline / disabled: \*\*\d+\.\d{3}\*\*", text)


def test_recommend_latency_times_top_500_and_new_song(trained_project, tmp_path):
    out = tmp_path / "benchmarks.md"
    module = runpy.run_path(str(REPO / "benchmarks" / "recommend_latency.py"))
    args = ["--queries", "3", "--users", "50", "--sizes", "2000", "--files", "4"]
    assert module["main"]([*args, "--project", str(trained_project), "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 2,000 |"))
    median_ms = float(row.split("|")[2])
    assert 0 < median_ms < 1000
    assert "`new-song` on 4 files of 30 s (.flac, .mp3, .ogg, .wav)" in text


def test_features_wmf_and_evaluate_benchmarks_print_their_ratios(trained_project, tmp_path):
    """Each runs small and writes a ratio against its baseline (the figures are not judged)."""
    out = tmp_path / "benchmarks.md"
    project = str(trained_project)
    runs = {
        "features_throughput.py": ["--songs", "6", "--n-jobs", "2", "--project", project],
        "wmf_fit.py": ["--users", "300", "--songs", "200", "--plays", "10", "--rounds", "1"],
        "evaluate_speed.py": ["--users", "200", "--songs", "600", "--rounds", "1"],
    }  # fmt: skip
    for script, args in runs.items():
        module = runpy.run_path(str(REPO / "benchmarks" / script))
        assert module["main"]([*args, "--out", str(out)]) == 0, script
    text = out.read_text()
    assert re.search(r"\| features stage, 2 processes \| [\d.]+ \| \d+ \| [\d.]+x \|", text)
    assert re.search(r"fit_wmf / implicit directly: \*\*\d+\.\d{3}\*\*", text)
    assert re.search(r"implicit time / evaluate time: \*\*\d+\.\d{2}\*\*", text)


def test_scaling_run_tabulates_slopes_plots_and_resumes(tmp_path, monkeypatch):
    """With a stand-in for the stage processes: stage costs of known growth give their log-log
    slopes; a rerun on the same workdir runs nothing again; changed params rerun the world."""
    monkeypatch.chdir(REPO)
    module = runpy.run_path(str(REPO / "benchmarks" / "scaling.py"))
    calls = []

    def fake_run_stage(stage, project):
        n = int(project.name.split("_")[1])
        calls.append((stage, n))
        quadratic = stage == "synthesize"
        return (n**2 / 1e4 if quadratic else n / 100, 100 + n / 10)

    monkeypatch.setitem(module["main"].__globals__, "run_stage", fake_run_stage)
    out, plot = tmp_path / "benchmarks.md", tmp_path / "plots" / "scaling.png"
    args = ["--sizes", "100", "1000", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    assert module["main"]([*args, "--plot", str(plot)]) == 0
    assert len(calls) == 2 * len(module["STAGES"]) and plot.stat().st_size > 10_000
    rows = {line.split(" | ")[0][2:]: line for line in out.read_text().splitlines()}
    assert rows["synthesize"].split(" | ")[-2] == "2.00"  # quadratic
    assert rows["wmf"].split(" | ")[-2] == "1.00"  # linear
    assert "![scaling](plots/scaling.png)" in out.read_text()
    module["main"]([*args, "--plot", str(plot)])
    assert len(calls) == 2 * len(module["STAGES"])  # resumed: nothing ran again
    module["main"]([*args, "--plot", str(plot), "--max-users", "7"])
    assert len(calls) == 4 * len(module["STAGES"])  # other params: measured again
