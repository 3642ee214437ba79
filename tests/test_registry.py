"""The registry is the one list of splits, stages and models: dvc.yaml agrees with it, and a
model added with one registry entry is scored, reported and recommended with no other change."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import yaml
from conftest import REPO

from musicrec import registry
from musicrec.errors import MusicrecError


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_dvc_yaml_runs_the_registry_stages_in_order_and_writes_each_model_where_it_says():
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(dag) == list(registry.STAGE_NAMES)
    for name, stage in dag.items():
        assert stage["cmd"] == f"musicrec {name}"
        written = [o.removeprefix("data/models/") for o in _outs(stage) if "data/models/" in o]
        assert sorted(written) == sorted(registry.models(stage=name)), name
    # evaluate reads every model the registry knows.
    read = {
        d.removeprefix("data/models/")
        for d in dag["evaluate"]["deps"]
        if d.startswith("data/models/")
    }
    assert read == set(registry.MODEL_NAMES)


def test_every_stage_module_has_a_main_and_every_predictor_class_loads():
    for stage in registry.STAGES:
        assert callable(importlib.import_module(stage.module).main), stage.name
    for spec in registry.MODELS:
        if spec.predictor:
            assert hasattr(spec.load_predictor_class(), "load"), spec.name


def test_map_key_follows_map_k_and_is_found_in_the_metrics():
    assert registry.map_key(500) == "map@500" and registry.map_key(100) == "map@100"
    assert registry.map_key_in({"auc": 0.5, "map@100": 0.1, "ndcg@10": 0.2}) == "map@100"
    with pytest.raises(MusicrecError, match="no map@k"):
        registry.map_key_in({"auc": 0.5})


def test_an_unknown_model_is_a_clear_error():
    with pytest.raises(MusicrecError, match="no model 'nope'.*known: random"):
        registry.model("nope")
    assert registry.models(family=registry.CONTENT, stage="cnn") == (
        "cnn_mse",
        "cnn_wpe",
        "cnn_contrastive",
    )
    assert set(registry.yardsticks()) == {
        "random",
        "popularity_oracle",
        "upper_bound",
        "stats_ridge_shuffled",
        "bow_linear_shuffled",
        "cnn_mse_shuffled",
    }


def test_a_toy_model_with_one_registry_entry_is_scored_reported_and_recommended(
    trained_project, tmp_path, monkeypatch
):
    """The toy model is one writer of the vectors format (here: the upper bound's vectors under
    another name, so it is the best on every split) and one registry entry."""
    from musicrec.cli import main as musicrec
    from musicrec.models.vectors import ModelVectors, load_model, save_model
    from musicrec.recommend import Recommender

    project = tmp_path / "project"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("wandb"))
    source = load_model(project / "data" / "models" / "upper_bound")
    toy = ModelVectors(
        "toy",
        "a toy",
        list(registry.SPLITS),
        source.user_vectors,
        source.song_vectors,
        index=source.index,  # fitted on the project's split
    )
    save_model(toy, project / "data" / "models" / "toy")
    entry = registry.ModelSpec("toy", "baselines", registry.COLLABORATIVE)
    monkeypatch.setattr(registry, "MODELS", (*registry.MODELS, entry))
    monkeypatch.chdir(project)
    monkeypatch.setenv("WANDB_MODE", "disabled")

    assert musicrec(["evaluate"]) == 0
    metrics = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert set(metrics["toy"]) == set(registry.SPLITS)
    assert musicrec(["report"]) == 0
    assert "`toy`" in (project / "reports" / "report.md").read_text()
    assert Recommender(project).best_model("all") == "toy"
    # A yardstick is scored and reported but never recommended.
    monkeypatch.setattr(
        registry,
        "MODELS",
        (
            *registry.MODELS[:-1],
            registry.ModelSpec("toy", "baselines", registry.REFERENCE, recommends=False),
        ),
    )
    assert Recommender(project).best_model("all") != "toy"


def test_dvc_yaml_names_every_deployable_model_as_an_artifact_and_plots_each_loss_file():
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())
    artifacts = dag["artifacts"]
    assert {a["path"] for a in artifacts.values()} == {
        f"data/models/{name}" for name in registry.deployable()
    }
    for name, artifact in artifacts.items():
        spec = registry.model(artifact["path"].removeprefix("data/models/"))
        assert name == spec.name.replace("_", "-") and artifact["type"] == "model"
        assert f"stage-{spec.stage.replace('_', '-')}" in artifact["labels"]
    # every loss file a stage writes is drawn, training and validation loss together
    written = {
        o
        for stage in dag["stages"].values()
        for o in _outs(stage)
        if o.startswith("reports/plots/") and o.endswith("_loss.csv")
    }
    drawn = {}
    for plot in dag["plots"]:
        if isinstance(plot, dict):
            (definition,) = plot.values()
            drawn.update(definition["y"])
    losses = {f: y for f, y in drawn.items() if f.endswith("_loss.csv")}
    assert set(losses) == written and all(y == ["train_loss", "val_loss"] for y in losses.values())
    # recall@k: a plot per split, one curve per model (which columns: tests/test_pipeline.py)
    recall = {f: y for f, y in drawn.items() if f not in losses}
    assert set(recall) == {f"reports/plots/recall/{s}.csv" for s in registry.SPLITS}
    assert "reports/plots/recall" in _outs(dag["stages"]["evaluate"])
    for columns in recall.values():
        assert {"random", "upper_bound"} <= set(columns) <= set(registry.MODEL_NAMES)
    images = {p for p in dag["plots"] if isinstance(p, str)}
    assert images == {
        f"reports/figures/{f}.png" for f in ("map_at_500", "recall_at_k", "training_curves", "data")
    }
