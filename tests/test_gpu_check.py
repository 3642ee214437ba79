"""The GPU check's CPU mode (``benchmarks/gpu_check.py --device cpu --quick``), so the script
cannot rot between GPU runs, and its carried-data path (``prepare``, then ``--prepared``)."""

from __future__ import annotations

import json
import os
import runpy

import pytest
from conftest import REPO

# Runs every stage of a tiny world, several times: the slow tier.
pytestmark = pytest.mark.slow

MODELS = ("cnn_mse", "cnn_wpe", "cnn_contrastive", "hldbn", "hldbn_nopretrain", "hybrid_dbn")


@pytest.fixture(scope="module")
def gpu_check():
    return runpy.run_path(str(REPO / "benchmarks" / "gpu_check.py"))["main"]


@pytest.fixture(scope="module")
def quick_run(gpu_check, tmp_path_factory):
    """One quick CPU run, its scratch folder kept for the prepared-path test."""
    base = tmp_path_factory.mktemp("gpu_check")
    out, work = base / "gpu.md", base / "work"
    code = gpu_check(["--device", "cpu", "--quick", "--out", str(out), "--work", str(work)])
    return code, out, work


def test_quick_cpu_mode_runs_every_part_and_names_every_figure(quick_run):
    code, out, _ = quick_run
    text = out.read_text()
    figures = json.loads(out.with_suffix(".json").read_text())
    assert code == 0, text
    assert figures["failed_parts"] == []
    # The check turned W&B off for its own stages and gave the caller its settings back.
    assert os.environ["WANDB_MODE"] == "offline"
    for heading in ("Machine", "World", "Models on the device", "CNN throughput", "torchrun"):
        assert f"## {heading}" in text
    # Each model trained, was scored on cold, and compared with the CPU reference run, which
    # on the CPU is the same seeded computation: no difference at all.
    for model in MODELS:
        assert figures["cold"][model]["map@500"] == figures["reference_cold"][model]["map@500"]
        assert figures["train"][model]["epochs"] >= 1
        assert figures["train"][model]["seconds_per_epoch"] > 0
    assert figures["cold_outside_reference_interval"] == 0
    assert figures["throughput"]["cpu"]["windows_per_s"] > 0
    # The torchrun part ran the real stage in two processes on gloo, and the stage said so.
    assert (figures["torchrun"]["2"]["world_size"], figures["torchrun"]["2"]["backend"]) == (
        2,
        "gloo",
    )
    # implicit has no CUDA here, and the report says exactly why.
    assert figures["implicit"]["has_cuda"] is False
    assert "import rmm` fails" in text


def test_prepared_data_path_runs_from_carried_splits_and_wmf(gpu_check, quick_run, tmp_path):
    """What a GPU machine does: validate, split and wmf carried, the world synthesised again
    and checked against the carried fingerprint, features made there."""
    _, _, work = quick_run
    prepared = tmp_path / "prepared"
    assert (
        gpu_check(
            [
                "prepare",
                "--project",
                str(work),
                "--params",
                str(work / "params.yaml"),
                "--to",
                str(prepared),
            ]
        )
        == 0
    )
    assert (prepared / "data" / "split" / "train.npz").exists()
    out = tmp_path / "gpu.md"
    args = ["--device", "cpu", "--prepared", str(prepared), "--reference", "cpu", "--out", str(out)]
    code = gpu_check([*args, "--skip", "torchrun", "implicit", "throughput"])
    text = out.read_text()
    figures = json.loads(out.with_suffix(".json").read_text())
    assert code == 0, text
    assert "carried from `prepared`" in text
    assert figures["world_matches_prepared"]["plays"] is True
    assert set(figures["cold"]) == set(MODELS)
