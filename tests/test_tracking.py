"""W&B tracking: offline runs on disk, nothing when disabled, never a failed stage, no secrets."""

from __future__ import annotations

import json

import pytest

from musicrec import tracking
from musicrec.tracking import flatten, tracked_run

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"


def test_flatten_joins_nested_keys():
    assert flatten({"wmf": {"cold": {"map@500": 0.1}, "x": 2}}) == {
        "wmf/cold/map@500": 0.1,
        "wmf/x": 2,
    }


def test_offline_run_holds_params_curves_and_metrics_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lucid-bass")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    metrics = {"cnn_wpe": {"cold": {"map@500": 0.1265}}}
    with tracked_run("cnn", {"cnn": {"dropout": 0.3}}, root=tmp_path) as tracker:
        assert tracker.active
        assert tracker.run.group == "exp-lucid-bass" and tracker.run.job_type == "cnn"
        assert dict(tracker.run.config) == {"cnn": {"dropout": 0.3}}
        history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 2.0} for e in range(3)]
        tracker.log_history("cnn_wpe", history)
        tracker.log_metrics(metrics)
        assert tracker.run.summary["cnn_wpe/cold/map@500"] == pytest.approx(0.1265)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    saved = json.loads((runs[0] / "files" / "musicrec_metrics.json").read_text())
    assert saved == metrics
    for path in (tmp_path / "wandb").rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_disabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with tracked_run("evaluate", {"evaluate": {}}, root=tmp_path) as tracker:
        assert not tracker.active
        tracker.log_metrics({"a": 1})
        tracker.log_history("m", [{"epoch": 0, "train_loss": 1.0}])
    assert not (tmp_path / "wandb").exists()


def test_a_stage_goes_on_when_wandb_cannot_start(tmp_path, monkeypatch, capsys):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("no route to host")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", broken_init)
    done = []
    with tracked_run("bow", {}, root=tmp_path) as tracker:
        tracker.log_metrics({"a": 1})
        done.append(True)
    assert done and not tracker.active
    assert "W&B did not start (no route to host); bow runs untracked" in capsys.readouterr().err


def test_a_failing_log_call_does_not_fail_the_stage(capsys):
    class BrokenRun:
        def log(self, values):
            raise OSError("disk full")

    tracking.Tracker(BrokenRun()).log_history("m", [{"epoch": 0, "train_loss": 1.0}])
    assert "could not log the training curve (disk full)" in capsys.readouterr().err
