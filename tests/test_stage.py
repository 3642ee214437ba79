"""How a stage runs: its config from params.yaml, its bookkeeping, its command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.stage import Workers, read_config, read_shared, run_stage


@dataclass(frozen=True)
class Compute:
    size: int = 3
    rate: float = 0.5


def test_read_config_hands_each_key_to_the_dataclass_that_has_it():
    params = {"thing": {"size": 7, "n_jobs": 4}}
    compute, workers = read_config(params, "thing", Compute, Workers)
    assert compute == Compute(size=7, rate=0.5)  # rate: the dataclass's default
    assert workers == Workers(4)
    assert read_config({"thing": {}}, "thing", Compute) == Compute()


def test_read_config_refuses_a_key_no_dataclass_knows():
    with pytest.raises(MusicrecError, match=r"thing\.sise is not a parameter \(known: n_jobs"):
        read_config({"thing": {"sise": 7}}, "thing", Compute, Workers)
    with pytest.raises(MusicrecError, match="no 'other' section"):
        read_config({"thing": {}}, "other", Compute)
    with pytest.raises(MusicrecError, match="n_jobs must be a whole number"):
        read_config({"thing": {"n_jobs": 0}}, "thing", Workers)


def test_read_shared_takes_only_its_own_fields_of_another_section():
    params = {"features": {"size": 2, "n_mels": 64, "backend": "local"}}
    assert read_shared(params, "features", Compute) == Compute(size=2)


def test_run_stage_writes_its_timing_into_the_reports_folder_it_is_given(tmp_path):
    args = argparse.Namespace(reports=tmp_path / "elsewhere")
    with run_stage("toy", args) as (record, tracker):
        record["songs"] = 3
        assert not tracker.active
    timing = json.loads((tmp_path / "elsewhere" / "timings" / "toy.json").read_text())
    assert timing["stage"] == "toy" and timing["songs"] == 3 and timing["wall_seconds"] >= 0
    with pytest.raises(RuntimeError), run_stage("failed", args):
        raise RuntimeError("the stage failed")
    assert not (tmp_path / "elsewhere" / "timings" / "failed.json").exists()


def test_a_stage_first_removes_what_a_killed_run_of_it_left_beside_its_output(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    leftover = tmp_path / f".features.{dead}.abc12345.tmp"  # a killed features run's folder
    (leftover / "logmel.npy").parent.mkdir()
    (leftover / "logmel.npy").write_bytes(b"\0" * 1000)
    other = tmp_path / f".features.{os.getpid()}.xyz78901.tmp"  # a live writer's: kept
    other.mkdir()
    args = argparse.Namespace(reports=tmp_path / "reports", out=tmp_path / "features")
    with run_stage("features", args) as (record, _):
        assert not leftover.exists() and other.exists()


@pytest.mark.parametrize("stage", [s for s in registry.STAGES], ids=lambda s: s.name)
def test_every_stage_takes_params_and_reports_options(stage, capsys):
    main = importlib.import_module(stage.module).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert f"musicrec {stage.name}" in help_text and "--reports" in help_text
    if stage.name != "report":  # the report reads no params
        assert "--params" in help_text
