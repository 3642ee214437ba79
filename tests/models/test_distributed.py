"""Data-parallel training: the cnn and dbn stages under torchrun, 2 CPU processes on gloo."""

from __future__ import annotations

import json
import shutil

import yaml
from conftest import run


def cold_map(project, model: str) -> tuple[float, list[float]]:
    means = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    intervals = json.loads((project / "reports" / "evaluation" / "intervals.json").read_text())
    return means[model]["cold"]["map@500"], intervals[model]["cold"]["map@500"]


def test_two_processes_train_as_well_as_one(trained_project, tmp_path):
    """Same quality within noise: each 2-process model's cold mAP@500 lies inside the
    one-process model's 95% interval widened by its own, and the reverse."""
    one, two = tmp_path / "one", tmp_path / "two"
    for project, processes in ((one, 1), (two, 2)):
        shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("wandb"))
        shutil.rmtree(project / ".cache" / "checkpoints", ignore_errors=True)
        # A machine setting (musicrec.machine): the stage relaunches itself under torchrun.
        machine = {
            section: {"processes": processes} for section in ("cnn_training", "dbn_training")
        }
        (project / "machine.yaml").write_text(yaml.safe_dump(machine))
        stages = ("dbn", "evaluate") if processes == 1 else ("cnn", "dbn", "evaluate")
        for stage in stages:
            result = run(["musicrec", stage], project)
            if stage != "evaluate" and processes == 2:
                assert f"{stage}: training in 2 processes" in result.stdout
                # Process 0 alone reports and writes.
                assert result.stdout.count(f"{stage}: ") == 2, result.stdout
    for model in ("cnn_mse", "cnn_wpe", "hldbn", "hybrid_dbn"):
        (map_one, (low_one, high_one)), (map_two, (low_two, high_two)) = (
            cold_map(one, model),
            cold_map(two, model),
        )
        assert low_one - (high_two - low_two) <= map_two <= high_one + (high_two - low_two), model
        assert low_two - (high_one - low_one) <= map_one <= high_two + (high_one - low_one), model
    # The 2-process models were really trained by both: their training config says so.
    config = json.loads((two / "data/models/cnn_wpe/predictor/config.json").read_text())
    assert config["train"]["processes"] == 2
    # And each stage's timing record says how it ran: a group of 2 on gloo (CPUs).
    for stage in ("cnn", "dbn"):
        timing = json.loads((two / "reports" / "timings" / f"{stage}.json").read_text())
        assert (timing["world_size"], timing["backend"]) == (2, "gloo"), timing
