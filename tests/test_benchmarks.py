"""The benchmark scripts run and write their section of reports/benchmarks.md."""

from __future__ import annotations

import re
import runpy
import sys

import numpy as np
import pytest
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


def test_coverage_counts_the_other_seeds_means_inside_each_interval():
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    means = [0.20, 0.28, 0.29]
    intervals = [(0.19, 0.21), (0.27, 0.295), (0.28, 0.30)]
    # a=0 holds neither; a=1 holds 0.29; a=2 holds 0.28 and 0.29 is its own: 2 of 6.
    assert module["coverage"](means, intervals) == (2, 6)
    assert module["coverage"]([0.5, 0.5], [(0.4, 0.6), (0.4, 0.6)]) == (2, 2)


def _seed_result(
    seed: int, shift: float, width: float, gap: float = 0.1, users_width: float = 0.01
) -> dict:
    """A full table as evaluate writes it, for two models on two splits; ``gap``: wmf ahead
    of popularity by this, and a paired interval of +-0.02 around it."""
    metrics, intervals, users_only = {}, {}, {}
    for model, base in (("wmf", 0.30 + gap), ("popularity", 0.30), ("random", 0.10)):
        for split in ("warm", "cold"):
            value = base + shift
            metrics.setdefault(model, {})[split] = {"map@500": value, "users": 100}
            intervals.setdefault(model, {})[split] = {"map@500": [value - width, value + width]}
            users_only.setdefault(model, {})[split] = {
                "map@500": [value - users_width, value + users_width]
            }
    paired = {
        split: {"wmf": {"popularity": [gap - 0.02, gap + 0.02]}} for split in ("warm", "cold")
    }
    return {
        "seed": seed,
        "seconds": 1.0,
        "metrics": metrics,
        "intervals": intervals,
        "paired": paired,
        "users_only": users_only,
    }


def test_split_stability_tabulates_spread_coverage_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    # Seeds whose means move by 0.05 from one to the next, with intervals of +-0.01 (which
    # cover no other seed's mean) or +-0.2 (which cover them all).
    runs = []

    def fake_run_seed(repo, project, root, seed):
        runs.append(seed)
        return _seed_result(seed, 0.05 * (seed - 1), 0.01 if root == "narrow" else 0.2)

    monkeypatch.setitem(module["main"].__globals__, "run_seed", fake_run_seed)
    out = tmp_path / "benchmarks.md"
    args = ["--seeds", "1", "2", "3", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    assert module["main"]([*args, "--world", "narrow", "--root", "narrow"]) == 0
    text = out.read_text()
    # wmf and popularity (deployable), 6 pairs each; users-only intervals of +-0.01
    assert "| cold | 0 of 12 (0%) | 0 of 12 (0%) |" in text
    assert "| wmf | warm | 0.4000 | 0.4500 | 0.5000 | 0.1000 | 0/6 |" in text
    assert "| random |" not in text  # a yardstick, not deployable
    assert module["main"]([*args, "--world", "wide", "--root", "wide"]) == 0
    assert "| cold | 12 of 12 (100%) | 0 of 12 (0%) |" in out.read_text()
    assert "<!-- split_stability_narrow -->" in out.read_text()  # both sections kept
    assert runs == [1, 2, 3, 1, 2, 3]
    module["main"]([*args, "--world", "wide", "--root", "wide"])
    assert runs == [1, 2, 3, 1, 2, 3]  # resumed: no seed ran again


def test_a_finding_that_changes_or_reverses_its_verdict_between_seeds_is_named():
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    ahead, tied = _seed_result(1, 0.0, 0.01), _seed_result(2, 0.0, 0.2, gap=0.0)
    behind = _seed_result(3, 0.0, 0.01, gap=-0.1)
    verdicts = module["verdicts"]
    assert verdicts(ahead["metrics"], ahead["intervals"], ahead["paired"]) != {}
    analysis = module["analyse"]([ahead, tied], ("wmf", "popularity"), "map@500")
    changed = {name for name, v in analysis["findings"].items() if len(set(v)) > 1}
    assert changed, analysis["findings"]
    assert module["reversed_findings"](analysis["findings"]) == []  # ahead, then unclear
    text = module["table"]("toy", [ahead, tied], analysis, "map@500")
    assert "Findings that keep their verdict on every seed" in text and "- changes: " in text
    assert "reversed (ahead on one seed, behind on another): 0" in text
    analysis = module["analyse"]([ahead, behind], ("wmf", "popularity"), "map@500")
    assert len(module["reversed_findings"](analysis["findings"])) == 2  # warm and cold


def test_users_only_intervals_are_recomputed_from_the_per_user_values(tmp_path):
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    values = np.random.default_rng(0).random(400)
    np.savez(tmp_path / "cold.npz", users=np.arange(400), **{"wmf:map@500": values})
    params = {"map_k": 500, "seed": 13, "bootstrap": 300}
    low, high = module["users_only_intervals"](tmp_path, params)["wmf"]["cold"]["map@500"]
    half = 1.96 * values.std() / np.sqrt(400)  # the normal approximation of the same
    assert low == pytest.approx(values.mean() - half, abs=0.01)
    assert high == pytest.approx(values.mean() + half, abs=0.01)


def test_split_stability_builds_a_pipeline_world_in_each_clone_and_links_only_others():
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    outputs = module["pipeline_outputs"](REPO)
    assert "data/synthetic" in outputs and "data/models/wmf" in outputs
    assert "data/real_world" not in outputs


def test_findings_that_share_a_name_are_counted_apart():
    module = runpy.run_path(str(REPO / "benchmarks" / "split_stability.py"))
    means = {m: {"cold": {"map@500": v}} for m, v in (("cnn_contrastive", 0.3), ("cnn_mse", 0.2))}
    means["cnn_wpe"] = {"cold": {"map@500": 0.4}}
    paired = {"cold": {"cnn_contrastive": {"cnn_mse": [0.05, 0.15], "cnn_wpe": [-0.15, -0.05]}}}
    found = module["verdicts"](means, {}, paired)
    name = "Cold songs, InfoNCE against regression"
    assert found[name].startswith("ahead") and found[f"{name} (2)"].startswith("behind")
