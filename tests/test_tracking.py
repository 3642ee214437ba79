"""W&B tracking: offline runs on disk, nothing when disabled, never a failed stage, no secrets."""

from __future__ import annotations

import json

import pytest
from conftest import artifact_records, run_job_type

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


def test_a_run_starts_its_own_service_when_the_shared_one_is_gone(tmp_path, monkeypatch):
    """scripts/repro.sh shares one W&B service among the stages; one that is gone (stopped, or
    idle too long) does not leave a stage untracked."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SERVICE", f"3-999999-unix-{tmp_path / 'gone' / 'socket'}")
    with tracked_run("wmf", {"wmf": {}}, root=tmp_path) as tracker:
        assert tracker.active
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_a_failing_log_call_does_not_fail_the_stage(capsys):
    class BrokenRun:
        def log(self, values):
            raise OSError("disk full")

    tracking.Tracker(BrokenRun()).log_history("m", [{"epoch": 0, "train_loss": 1.0}])
    assert "could not log the training curve (disk full)" in capsys.readouterr().err


def test_epochs_are_logged_as_they_happen_on_each_models_own_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logged, defined = [], []
    with tracked_run("cnn", {"cnn": {}}, root=tmp_path) as tracker:
        monkeypatch.setattr(tracker.run, "log", lambda values: logged.append(values))
        monkeypatch.setattr(
            tracker.run, "define_metric", lambda name, **kw: defined.append((name, kw))
        )
        for epoch in range(2):  # what the training loop calls (musicrec.models.training)
            tracking.log_epoch("cnn_mse", {"epoch": epoch, "train_loss": 1.0, "val_loss": 2.0})
        tracking.log_epoch("cnn_mse", {"epoch": 0, "train_loss": 0.5, "val_loss": 1.0})  # again
        tracker.log_history("cnn_mse", [{"epoch": 0, "train_loss": 9.0}])  # already live: no-op
    assert logged[0] == {"cnn_mse/train_loss": 1.0, "cnn_mse/val_loss": 2.0, "cnn_mse/epoch": 0}
    assert logged[2]["cnn_mse#2/epoch"] == 0 and len(logged) == 3
    assert ("cnn_mse/*", {"step_metric": "cnn_mse/epoch"}) in defined
    tracking.log_epoch("cnn_mse", {"epoch": 5, "train_loss": 1.0})  # no stage running: nothing
    assert len(logged) == 3


def test_an_evaluate_run_holds_all_params_a_metrics_table_and_its_lineage(tmp_path, monkeypatch):
    """What a stage's run holds when run_stage opens it in a DVC project: all of params.yaml,
    the revision and experiment, and artifacts from the DAG: the data and models used, the
    evaluation logged, and the model the same version (digest) as the one its stage logged,
    which is what joins the two runs in W&B's artifact graph once synced."""
    import argparse

    import yaml

    from musicrec.stage import run_stage

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lineage")
    monkeypatch.chdir(tmp_path)
    for folder in ("data/split", "data/models/wmf", "data/models/cnn_mse", "reports/evaluation"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.json").write_text(json.dumps(folder))
    dag = {
        "stages": {
            "wmf": {
                "cmd": "musicrec wmf",
                "deps": ["data/split", "src/x.py"],
                "outs": ["data/models/wmf"],
            },
            "evaluate": {
                "cmd": "musicrec evaluate",
                "deps": ["data/split", "data/models/wmf", "data/models/cnn_mse", "src/x.py"],
                "outs": [{"reports/evaluation": {"cache": False}}],
            },
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dag))
    lock = {"stages": {"split": {"outs": [{"path": "data/split", "md5": "aa11.dir"}]}}}
    cached_split = tmp_path / ".dvc" / "cache" / "files" / "md5" / "aa" / "11.dir"
    cached_split.parent.mkdir(parents=True)
    cached_split.write_text("[]")  # DVC's listing of the split folder
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = {"evaluate": {"map_k": 500}, "cnn": {"dropout": 0.3}, "wmf": {"factors": 8}}
    args = argparse.Namespace(reports=tmp_path / "reports")
    with run_stage("wmf", args, params, ("wmf",)):
        pass
    lock["stages"]["wmf"] = {"outs": [{"path": "data/models/wmf", "md5": "bb22.dir"}]}
    lock["stages"]["cnn"] = {"outs": [{"path": "data/models/cnn_mse", "md5": "cc33.dir"}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    with run_stage("evaluate", args, params, ("evaluate",)) as (_, tracker):
        config = dict(tracker.run.config)
        assert config["cnn"] == {"dropout": 0.3} and config["evaluate"] == {"map_k": 500}
        assert config["musicrec"]["experiment"] == "exp-lineage"
        assert config["musicrec"]["stage"] == "evaluate"
        tracker.log_table("metrics", ["model", "mean"], [["wmf", 0.1]])
        run_config = tracker.run.config
    assert run_config["musicrec"]["inputs"] == {
        "data/split": "aa11.dir",
        "data/models/wmf": "bb22.dir",
        "data/models/cnn_mse": "cc33.dir",
    }
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    runs = {run_job_type(path): path for path in run_dirs}
    assert len(run_dirs) == 2 and set(runs) == {"wmf", "evaluate"}
    tables = list((runs["evaluate"] / "files" / "media" / "table").glob("metrics_*.table.json"))
    assert len(tables) == 1 and json.loads(tables[0].read_text())["data"] == [["wmf", 0.1]]
    produced = artifact_records(runs["wmf"])
    assert set(produced) == {"data-split", "data-models-wmf"}
    assert produced["data-split"][1] and not produced["data-models-wmf"][1]  # used, logged
    evaluated = artifact_records(runs["evaluate"])
    used = {name for name, (_, is_used, _) in evaluated.items() if is_used}
    assert used == {"data-split", "data-models-wmf", "data-models-cnn_mse"}
    assert not evaluated["reports-evaluation"][1]
    # One version each: what wmf logged is what evaluate used, and both used the same split.
    assert evaluated["data-models-wmf"][0] == produced["data-models-wmf"][0]
    assert evaluated["data-split"][0] == produced["data-split"][0]
    assert evaluated["data-models-wmf"][0] != evaluated["data-models-cnn_mse"][0]
    # The dataset refers to DVC's cache (content-addressed), a model to its workspace folder.
    assert evaluated["data-split"][2] == [cached_split.resolve().as_uri()]
    assert evaluated["data-models-wmf"][2][0].endswith("data/models/wmf/x.json")
