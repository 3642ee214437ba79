"""End to end: the real ``dvc repro`` on a tiny synthetic world and on real recorded audio."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    BIN,
    REPO,
    TINY_WORLD,
    artifact_records,
    run,
    run_job_type,
    tiny_params,
)

from musicrec import registry
from musicrec.messy import mix_into
from musicrec.recommend import Recommender
from musicrec.serve import Served

pytestmark = pytest.mark.slow

MODELS = set(registry.MODEL_NAMES)
# The content models scored on cold and all only (the DBN models learn their own user vectors).
CONTENT_MODELS = set(registry.models(stage="bow") + registry.models(stage="cnn"))
# The cold split and its view of the new artists' songs (the tiny world's songs.csv: artists).
COLD = {"cold", "cold_new_artist"}
EVERY_SPLIT = set(registry.SPLITS)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


def test_dvc_repro_on_a_tiny_world(dvc_project, browser_page):
    project = dvc_project(tiny_params())
    first = run(["dvc", "repro"], project)
    assert stages_run(first.stdout) == set(registry.STAGE_NAMES)
    metrics = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert set(metrics) == MODELS
    assert set(metrics["upper_bound"]) == EVERY_SPLIT
    headline = json.loads((project / "reports" / "metrics.json").read_text())
    assert set(headline) == set(registry.deployable())
    assert headline["wmf"] == {s: v["map@500"] for s, v in metrics["wmf"].items()}
    # recall@k: a file per split, a column per model scored on it, as dvc.yaml's plots draw them
    dag = yaml.safe_load((project / "dvc.yaml").read_text())
    for plot in dag["plots"]:
        if isinstance(plot, dict) and "recall" in next(iter(plot)):
            ((path, columns),) = next(iter(plot.values()))["y"].items()
            split = Path(path).stem
            header = (project / path).read_text().splitlines()[0].split(",")
            assert header == ["k", *columns]
            assert set(columns) == {m for m in metrics if split in metrics[m]}
    assert set(metrics["wmf"]) == EVERY_SPLIT  # new users folded in
    split_summary = json.loads((project / "data" / "split" / "split.json").read_text())
    assert split_summary["songs"]["new_artist"] > 0
    for model in MODELS:
        for values in metrics[model].values():
            assert 0.0 <= values["map@500"] <= 1.0 and 0.0 <= values["auc"] <= 1.0
    assert metrics["upper_bound"]["cold"]["map@500"] > metrics["random"]["cold"]["map@500"]
    for model in CONTENT_MODELS:
        assert set(metrics[model]) == COLD | {"all"}
        assert {"r2", "cosine"} <= set(metrics[model]["cold"])
    for model in ("hldbn", "hldbn_nopretrain", "hybrid_dbn", "hybrid_weighted", "hybrid_mixed"):
        assert set(metrics[model]) == EVERY_SPLIT
    assert set(metrics["content_profile"]) == {"cold_user"}
    assert set(metrics["context"]) == COLD | {"all"}  # the tiny world's songs.csv: artist
    assert set(metrics["hybrid_audio_context"]) == COLD | {"all"}
    assert (project / "reports" / "plots" / "cnn_wpe_loss.csv").exists()
    assert json.loads((project / "reports" / "hybrid.json").read_text())["content_model"]
    # Tracking (offline here): one W&B run per tracked stage; the evaluate run holds the metrics.
    runs = list((project / "wandb").glob("offline-run-*"))
    # tune, wmf, ridge, context, bow, cnn, dbn, audio_context, hybrid, evaluate, report
    assert len(runs) == 11
    saved = [json.loads(p.read_text()) for p in project.glob("wandb/*/files/musicrec_metrics.json")]
    assert metrics in saved
    # The evaluate run (the one with a metrics table): all of params.yaml in its config (the
    # CNN's params too), its inputs from the DAG (the data, WMF and the CNNs, with DVC's md5)
    # and the evaluation it logged as an artifact (read from the run's record file).
    (evaluate_run,) = [r for r in runs if list(r.glob("files/media/table/metrics_*.table.json"))]
    records = next(evaluate_run.glob("run-*.wandb")).read_bytes()
    for needle in (b"windows_per_song", b"data/models/wmf", b"data/models/cnn_mse", b"data/split"):
        assert needle in records, needle
    assert b"reports-evaluation" in records and b"git_revision" in records
    # Lineage: evaluate used the very versions (digests) of WMF and the CNN their stages logged,
    # and the split they were trained on.
    by_stage = {run_job_type(r): artifact_records(r) for r in runs}
    used = {name: digest for name, (digest, is_used, _) in by_stage["evaluate"].items() if is_used}
    assert used["data-models-wmf"] == by_stage["wmf"]["data-models-wmf"][0]
    assert used["data-models-cnn_mse"] == by_stage["cnn"]["data-models-cnn_mse"][0]
    assert used["data-split"] == by_stage["wmf"]["data-split"][0]
    assert not by_stage["evaluate"]["reports-evaluation"][1]  # logged, not used
    html = (project / "reports" / "report.html").read_text()
    head = html.split("<body>")[0]  # nothing loaded from a network
    assert "data:image/png;base64," in html and "http://" not in head and "https://" not in head
    assert "| `wmf` |" in (project / "reports" / "report.md").read_text()

    again = run(["dvc", "repro"], project)
    assert stages_run(again.stdout) == set()
    # Machine settings are not params: more processes, another backend's workers, other
    # loader workers rerun nothing (musicrec.machine).
    machine = {
        "features": {"n_jobs": 2},
        "synthesize": {"n_jobs": 2},
        "cnn_training": {"loader_workers": 2},
    }
    (project / "machine.yaml").write_text(yaml.safe_dump(machine))
    other_machine = run(["dvc", "repro"], project)
    assert stages_run(other_machine.stdout) == set()
    assert "didn't change" in other_machine.stdout

    # A server of these models, to swap in the retrained ones below (serve's POST /reload).
    served = Served(Recommender(project))
    before = served.current[1]
    models = [p for p in (project / "data" / "models").iterdir() if p.is_dir()]
    assert before["models"] and before["model_outputs"] == len(models)

    params = yaml.safe_load((project / "params.yaml").read_text())
    # No search: wmf's own section is used as it is (tune.trials 0), with 6 factors.
    params["wmf"]["factors"] = 6
    params["tune"]["trials"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(["dvc", "repro"], project)
    # The content models regress WMF's factors, so they follow it (and folds trains them all
    # again on each cold fold: here one, so it has nothing to do).
    assert stages_run(changed.stdout) == {
        "tune",
        "wmf",
        "folds",
        "ridge",
        "context",
        "bow",
        "cnn",
        "dbn",
        "audio_context",
        "hybrid",
        "evaluate",
        "report",
    }
    dims = json.loads((project / "data" / "models" / "wmf" / "model.json").read_text())["dim"]
    assert dims == 6 + 1  # the factors and the popularity column
    old = served.current[0]
    assert served.reload() and served.current[1]["models"] != before["models"]
    assert (
        served.current[0] is not old and served.current[0].model("wmf").song_vectors.shape[1] == 7
    )

    # (That the hybrids follow each audio model is dvc.yaml's deps: tests/test_dag_deps.py.)

    # An experiment on top: `dvc exp run -S` re-runs what the param feeds, and `dvc exp show`
    # compares it with the workspace, metrics keyed model -> split -> metric.
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    experiment = run(
        ["dvc", "exp", "run", "-n", "switch2", "-S", "hybrid.switch_min_plays=2"], project
    )
    assert stages_run(experiment.stdout) == {"hybrid", "folds", "evaluate", "report"}
    # A second variant through the queue, as the README's grid runs: queued, then a worker.
    run(
        ["dvc", "exp", "run", "--queue", "-n", "switch9", "-S", "hybrid.switch_min_plays=9"],
        project,
    )
    run(["dvc", "queue", "start"], project)
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", run(["dvc", "queue", "status"], project).stdout):
        assert time.monotonic() < deadline, "the queued experiment did not finish in 10 minutes"
        time.sleep(3)
    run(["dvc", "queue", "stop"], project)
    assert "Success" in run(["dvc", "queue", "status"], project).stdout
    table = run(["dvc", "exp", "show", "--md"], project).stdout
    names = [row.split("|")[1].strip() for row in table.splitlines()[2:] if row.startswith("|")]
    # The workspace, the baseline commit and the two experiments (└── 1a2b3c4 [switch9]).
    assert names[0] == "workspace" and names[1] == "master", names
    assert sorted(re.sub(r".*\[(\w+)\]", r"\1", n) for n in names[2:]) == ["switch2", "switch9"]
    # The DVC metric is the headline, model -> split -> mAP@500 of the deployable models; the
    # full table is reports/evaluation/metrics.json.
    assert "hybrid_switching.all" in table and "hybrid_switching.cold_user.auc" not in table
    assert "upper_bound.cold" not in table
    # The default run and two experiments fit a terminal of 200 columns, with what changed.
    shown = run(
        ["dvc", "exp", "show", "--only-changed", "--no-pager"],
        project,
        env_extra={"COLUMNS": "200"},
    ).stdout
    assert max(len(line) for line in shown.splitlines()) <= 200
    # (what may not fit, folded into "…": the hashes of the changed models, evaluate's deps)
    header = next(line for line in shown.splitlines() if "Experiment" in line)
    for column in ("hybrid.switch_min_plays", "hybrid_switching.warm", "hybrid_switching.all"):
        assert column in header, shown
    # Two experiments side by side, params and metrics, as the CI comment shows them.
    diff = run(["dvc", "exp", "diff", "switch2", "switch9", "--md"], project).stdout
    assert "hybrid.switch_min_plays" in diff and "| 2 " in diff and "| 9 " in diff
    # dvc plots diff of the two: recall@k with one curve per model, and the report's images.
    plots = json.loads(
        run(["dvc", "plots", "diff", "switch2", "switch9", "--json"], project).stdout
    )["data"]
    (recall,) = plots["recall@k on cold"]
    curves = {(row["rev"], row["field"]) for row in recall["content"]["data"]["values"]}
    assert {field for _, field in curves} == {m for m in metrics if "cold" in metrics[m]}
    assert {rev for rev, _ in curves} == {"switch2", "switch9"}
    images = plots["reports/figures/recall_at_k.png"]
    assert {image["type"] for image in images} == {"image"} and len(images) == 2

    # The dashboard compares all three, offline, and renders in a browser.
    run(["musicrec", "dashboard", "--compare", "master", "switch9"], project)
    page_html = (project / "reports" / "dashboard.html").read_text()
    for name in ("master", "switch2", "switch9", "hybrid.switch_min_plays"):
        assert name in page_html
    assert "A = <b>master" in page_html and "B = <b>switch9" in page_html
    page, requests = browser_page(project / "reports" / "dashboard.html")
    header = page.locator("#overview-all thead th").all_inner_texts()
    assert [h.split(" ")[0] for h in header[1:]] == ["master", "switch2", "switch9"]
    assert page.locator("#overview-all tbody tr").count() == len(
        [m for m in MODELS if "all" in metrics[m]]
    )
    assert page.locator("#paired tbody tr").count() > 0
    assert all(url.startswith(("file:", "data:")) for url in requests)


def test_dvc_repro_on_real_recorded_audio(dvc_project):
    params = tiny_params(
        data={"root": "data/real"},
        validate={"min_seconds": 0.5},
        features={"clip_seconds": 1.0},
        split={
            "cold_song_fraction": 0.25,
            "cold_user_seed_plays": 1,
            "cold_user_fraction": 0.15,
            "validation_song_fraction": 0.2,
        },
        evaluate={"ks": [1, 3]},
        # 6 artists for 8 songs: not categorical by context.columns' auto rule, named instead
        context={"columns": ["artist"]},
    )
    project = dvc_project(params)
    shutil.copytree(REPO / "tests" / "data" / "real_world", project / "data" / "real")
    run(["dvc", "add", "data/real"], project)
    result = run(["dvc", "repro"], project)
    assert "nothing to synthesize" in result.stdout
    assert not list((project / "data" / "synthetic").glob("*/*"))  # no synthesis done

    validation = json.loads((project / "reports" / "validation.json").read_text())
    assert validation["audio"]["songs_usable"] == 8
    assert validation["audio"]["songs_quarantined"] == 0
    features = json.loads((project / "data" / "features" / "features.json").read_text())
    assert features["shapes"]["logmel"][0] == 8
    metrics = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert set(metrics) == MODELS and "cold" in metrics["wmf"]
    status = run(["dvc", "status", "data/real.dvc"], project)
    assert "changed" not in status.stdout  # the raw folder is exactly what was added

    # A local DVC remote: push data, features and models; a fresh clone pulls them back whole.
    remote = project.parent / "dvc-remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "pipeline run on real audio"], project)
    run(["dvc", "push"], project)
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["dvc", "pull"], clone)
    for path in (
        "data/real/plays.tsv",
        "data/features/logmel.npy",
        "data/models/cnn_wpe/song_vectors.npy",
        "data/models/hybrid_mixed/first/song_vectors.npy",
    ):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    assert "up to date" in run(["dvc", "status"], clone).stdout


def kill_repro_when(
    project: Path, ready, what: str, args: tuple[str, ...] = (), timeout: float = 600
) -> None:
    """Start ``dvc repro [args]``; SIGKILL it (and every process it started) once ``ready()``."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    log = project.parent / "killed-repro.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            ["dvc", "repro", *args],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"dvc repro ended before {what}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_killed_stages_resume_and_every_run_gives_the_same_metrics(dvc_project):
    """SIGKILL during features and during cnn, then dvc repro: same metrics as a clean run.

    Also the determinism check of the parts that could differ between runs: features computed
    again (by worker processes) and CNNs trained again give the same metrics.json, bit for bit.
    (A forced rerun of every stage gave it too; it cost a minute of the suite, and `make repro`
    in a clean clone reproduces the committed metrics.json byte for byte, README.)
    """
    project = dvc_project(tiny_params())
    run(["dvc", "repro"], project)
    reference = (project / "reports" / "metrics.json").read_bytes()

    # Start features over with no cache, and kill them midway.
    shutil.rmtree(project / ".cache" / "features")
    shutil.rmtree(project / "data" / "features")
    cache = project / ".cache" / "features"
    kill_repro_when(project, lambda: any(cache.glob("*/*/[!.]*.npy")), "feature cached")
    cached = len(list(cache.glob("*/*/[!.]*.npy")))
    assert 0 < cached < TINY_WORLD["n_songs"]
    first_cached = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/[!.]*.npy")}
    assert not (project / "data" / "features" / "logmel.npy").exists()  # nothing half-written

    # Run again: it finishes features from the cache (the features before the kill are reused).
    run(["dvc", "repro"], project)
    assert len(list(cache.glob("*/*/[!.]*.npy"))) == TINY_WORLD["n_songs"]
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in first_cached.items())
    assert not list(cache.glob("*/.*.tmp*"))  # what the kill left half-written is gone
    assert (project / "reports" / "metrics.json").read_bytes() == reference

    # Retrain the CNNs and kill the stage once the first has a checkpoint.
    models = project / "data" / "models"
    trained = {p: p.read_bytes() for p in models.glob("cnn_*/**/*") if p.is_file()}
    shutil.rmtree(project / ".cache" / "checkpoints")
    checkpoint = project / ".cache" / "checkpoints" / "cnn_mse" / "last.pt"
    kill_repro_when(
        project, checkpoint.exists, "CNN checkpoint", ("--force", "--single-item", "cnn")
    )
    assert not (models / "cnn_mse" / "song_vectors.npy").exists()  # nothing half-written

    resumed = run(["dvc", "repro"], project)
    assert "cnn_mse: resuming after epoch" in resumed.stdout
    # The resumed training made the same models, bit for bit, so the metrics stand as they were.
    assert {p: p.read_bytes() for p in models.glob("cnn_*/**/*") if p.is_file()} == trained
    assert (project / "reports" / "metrics.json").read_bytes() == reference


def test_the_pipeline_completes_on_a_messy_copy_of_the_world(dvc_project, tiny_world):
    """Every bad-audio case and every repairable log row mixed into the tiny world; with two
    cold folds, so that every song is scored cold once."""
    params = tiny_params(data={"root": "data/messy"})
    params["split"].update(cold_folds=2)
    # no searches (tested elsewhere): each fold trains every model once
    params["tune"].update(trials=0)
    params["tune_content"].update(bow_mlp=0, dbn=0)
    project = dvc_project(params)
    mixed = mix_into(tiny_world, project / "data" / "messy", clip_seconds=3.0)
    run(["dvc", "add", "data/messy"], project)
    run(["dvc", "repro"], project)

    validation = json.loads((project / "reports" / "validation.json").read_text())
    assert validation["play_log"]["repairs"] == mixed["repairs"]
    reasons = {q["song_id"]: q["reasons"] for q in validation["audio"]["quarantine"]}
    expected = {s: o for s, o in mixed["outcomes"].items() if o != "used"}
    assert set(reasons) == set(expected)
    for song, outcome in expected.items():
        assert reasons[song].startswith(outcome), (song, reasons[song])
    report = (project / "reports" / "report.md").read_text()
    assert "1 header row skipped, 10 rows with 0 plays dropped, 10 duplicate rows" in report
    for song in expected:
        assert f"`{song}`" in report  # each quarantined song listed with its reason
    used = {s for s, o in mixed["outcomes"].items() if o == "used"}
    songs = (project / "data" / "validated" / "songs.tsv").read_text()
    assert all(song in songs for song in used)
    metrics = json.loads((project / "reports" / "evaluation" / "metrics.json").read_text())
    assert set(metrics) == MODELS
    # Two cold folds: fold 1's models trained by the folds stage, every song scored cold once.
    split = json.loads((project / "data" / "split" / "split.json").read_text())
    assert split["cold_folds"]["count"] == 2
    n_songs = split["songs"]["total"]
    assert split["cold_folds"]["cold_songs_scored"] == n_songs
    fold_models = project / "data" / "folds" / "1" / "models"
    assert {p.name for p in fold_models.iterdir() if p.is_dir()} == MODELS
    cold = np.load(project / "data" / "evaluation" / "cold.npz")
    assert sorted(cold["candidates"]) == list(range(n_songs))  # every song a cold candidate
    assert set(cold["fold"]) == {0, 1} and len(cold["users"]) == metrics["wmf"]["cold"]["users"]
    warm = np.load(project / "data" / "evaluation" / "warm.npz")
    assert "fold" not in warm  # warm and cold_user: fold 0's
    assert "cold songs scored in 2 folds" in (project / "reports" / "report.md").read_text()


def test_a_world_missing_most_of_its_audio_stops_at_the_gate(dvc_project, tiny_world):
    """60% of the audio gone: validate stops the pipeline, naming the threshold, and nothing
    after it runs."""
    project = dvc_project(tiny_params(data={"root": "data/patchy"}))
    shutil.copytree(tiny_world, project / "data" / "patchy")
    files = sorted((project / "data" / "patchy" / "audio").iterdir())
    for path in files[: int(0.6 * len(files))]:
        path.unlink()
    run(["dvc", "add", "data/patchy"], project)
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "validate.max_quarantined_share = 20.0%" in output, output[-3000:]
    assert "share of the played songs quarantined: 60.0%" in output
    assert not (project / "data" / "validated").exists()
    assert not (project / "data" / "features").exists() and "Running stage 'features'" not in output
    summary = json.loads((project / "reports" / "validation.json").read_text())
    assert summary["gate"]["max_quarantined_share"]["ok"] is False and summary["accepted"] is None
