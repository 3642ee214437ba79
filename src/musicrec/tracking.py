"""Experiment tracking with Weights & Biases, which a stage can never fail or hang on.

Each training and evaluation stage opens one W&B run (``job_type`` = the stage) and logs its
params (the ``params.yaml`` sections it reads), per-epoch curves, final metrics and plots. The
mode comes from the environment, as W&B itself reads it:

- ``WANDB_MODE=offline`` (the default here; ``make repro`` and the tests set it): runs are written
  under ``wandb/`` and nothing touches the network; ``wandb sync wandb/offline-run-*`` uploads
  them later;
- ``WANDB_MODE=online`` with ``WANDB_API_KEY`` set: runs go to W&B as they happen;
- ``WANDB_MODE=disabled``: nothing is written.

Runs of one ``dvc exp run`` share a group named after the experiment (``DVC_EXP_NAME``, which
DVC sets); runs of a plain ``dvc repro`` share ``workspace``. If W&B cannot start (no key, no
network, a broken install) the stage says so in one line and goes on untracked. Only params and
results are logged: no environment variable, so no key, ever reaches a run's config. A run goes
through the W&B service that ``WANDB_SERVICE`` names where one is set (``scripts/repro.sh``
starts one for all the stages), else W&B starts one for it.

What a run holds (:func:`musicrec.stage.run_stage` opens it):

- its config: all of ``params.yaml``, and under ``musicrec`` the stage, the git revision and
  the experiment's name (so W&B can chart any param against any result);
- each model's epochs as they happen (:func:`log_epoch`, called by the training loop), on its
  own step, ``<model>/epoch`` (``define_metric``); a search's later trials of one model are
  ``<model>#2``, ``<model>#3``, ...;
- final numbers in its summary, and ``evaluate``'s as a table with intervals (``metrics``);
- lineage from the DAG (:func:`link_stage_artifacts`): the stage's inputs that other stages
  wrote (splits, features, models) as used artifacts, its models and evaluation as logged
  ones, each a reference (no upload: datasets to DVC's cache, models to the workspace path,
  checksummed by W&B), built alike on both sides, so a model the ``wmf`` stage logs and the
  one ``evaluate`` uses are one artifact version (one digest) and W&B's artifact graph runs
  from the data through the models to the evaluation. Offline, where ``run.use_artifact``
  refuses to run, a used input is written to the run's log as W&B itself writes a used draft
  artifact (logged, to be used once committed): ``wandb sync`` then draws the same graph.
  The inputs' paths and DVC md5s are also in the config (``musicrec.inputs``) and in each
  logged artifact's metadata;
- system metrics (CPU, memory, GPU), unless ``WANDB_X_DISABLE_STATS=true``.

CI runs are tagged ``ci`` and grouped by commit (``GITHUB_SHA``) where no experiment names them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT = "musicrec"


class Tracker:
    """What a stage logs to. A tracker without a run (disabled, or W&B failed) does nothing."""

    def __init__(self, run: Any = None):
        self.run = run
        self._live: dict[str, str] = {}  # model -> the key its running attempt logs under
        self._attempts: dict[str, int] = {}
        self._last_epoch: dict[str, int] = {}  # key -> its last epoch logged

    @property
    def active(self) -> bool:
        return self.run is not None

    def _guard(self, action: str, fn) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as error:  # tracking must never break a stage
            print(f"tracking: could not {action} ({error}); going on", file=sys.stderr)

    def log_epoch(self, model: str, record: dict) -> None:
        """One epoch of ``model`` as it ends (``record``: ``epoch``, ``train_loss``, ...), on
        the model's own step ``<model>/epoch``. An epoch 0 (or a first epoch after a resume)
        of a model already logged starts a new attempt, ``<model>#2``."""

        def log() -> None:
            key = self._live.get(model)
            if key is None or record["epoch"] <= self._last_epoch.get(key, -1):
                n = self._attempts[model] = self._attempts.get(model, 0) + 1
                key = self._live[model] = model if n == 1 else f"{model}#{n}"
                self.run.define_metric(f"{key}/epoch")
                self.run.define_metric(f"{key}/*", step_metric=f"{key}/epoch")
            self._last_epoch[key] = record["epoch"]
            values = {f"{key}/{k}": v for k, v in record.items() if k != "epoch"}
            self.run.log({**values, f"{key}/epoch": record["epoch"]})

        self._guard("log the epoch", log)

    def log_history(self, model: str, history: list[dict]) -> None:
        """One point per epoch: ``<model>/train_loss``, ``<model>/val_loss``, ...; nothing for
        a model whose epochs were logged as they happened (:meth:`log_epoch`)."""

        def log() -> None:
            if model in self._live:
                return
            for row in history:
                values = {f"{model}/{k}": v for k, v in row.items() if k != "epoch"}
                self.run.log({**values, f"{model}/epoch": row["epoch"]})

        self._guard("log the training curve", log)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Final numbers into the run's summary (nested dicts become ``a/b/c`` keys), and the
        same numbers as ``musicrec_metrics.json`` in the run's files, which ``wandb sync``
        uploads with it."""

        def log() -> None:
            flat = flatten(metrics)
            self.run.summary.update(flat)
            (Path(self.run.dir) / "musicrec_metrics.json").write_text(
                json.dumps(metrics, indent=1, sort_keys=True)
            )

        self._guard("log the metrics", log)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        """A ``wandb.Table`` (sortable and chartable in W&B) under ``name``."""

        def log() -> None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})

        self._guard("log the table", log)

    def log_images(self, paths: list[Path]) -> None:
        def log() -> None:
            import wandb

            self.run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in paths if p.exists()})

        self._guard("log the plots", log)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"wmf": {"cold": {"map@500": x}}}`` -> ``{"wmf/cold/map@500": x}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def group_name() -> str:
    """The experiment's name under ``dvc exp run``; in CI, the commit; else ``workspace``."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    if os.environ.get("GITHUB_SHA"):
        return f"ci-{os.environ['GITHUB_SHA'][:12]}"
    return "workspace"


def git_revision(root: Path = Path(".")) -> str | None:
    """The git revision (HEAD) of ``root``, or None outside a git work tree."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head or None


# The tracker of the stage running in this process, for the training loop's log_epoch.
_ACTIVE: list[Tracker] = []


def log_epoch(model: str, record: dict) -> None:
    """Log one epoch to the running stage's W&B run, if there is one (else nothing)."""
    if _ACTIVE:
        _ACTIVE[-1].log_epoch(model, record)


def locked_outputs(root: Path = Path(".")) -> dict[str, str]:
    """Every stage output recorded in ``root/dvc.lock``, path -> md5 (empty without a lock):
    what the last ``dvc repro`` wrote."""
    from musicrec.io import read_yaml

    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (read_yaml(lock) or {}).get("stages", {})
    return {
        str(out["path"]): str(out.get("md5", ""))
        for entry in stages.values()
        for out in entry.get("outs", [])
    }


def _artifact_type(path: str) -> str | None:
    if path.startswith("data/models/"):
        return "model"
    if path == "reports/evaluation":
        return "evaluation"
    if path.startswith("data/"):
        return "dataset"
    return None


def _artifact_name(path: str) -> str:
    return path.strip("/").replace("/", "-")


def _dag_artifact(path: str, kind: str, root: Path, md5: str, metadata: dict[str, Any]) -> Any:
    """A W&B reference artifact for a DAG path, built the same way by the stage that writes it
    and by every stage that reads it: one name and one reference make one digest, which is what
    makes W&B take them for one version and link the runs.

    Models and evaluations (a few MB, logged by the stage that writes them, which cannot know
    DVC's md5 yet) refer to the workspace path, checksummed by W&B. Datasets (splits, features:
    hundreds of MB, used but never logged) refer to their object in DVC's cache, whose URI
    holds the md5 (content-addressed), so W&B has nothing to checksum."""
    import wandb

    artifact = wandb.Artifact(_artifact_name(path), type=kind, metadata=metadata)
    cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:] if md5 else None
    if kind == "dataset" and cached is not None and cached.exists():
        artifact.add_reference(cached.resolve().as_uri(), name=path, checksum=False)
    else:
        artifact.add_reference((root / path).resolve().as_uri(), name=path)
    return artifact


def _use_artifact(run: Any, artifact: Any) -> None:
    """Declare ``artifact`` an input of ``run``, online or offline."""
    if not run.offline:
        run.use_artifact(artifact)
        return
    # Offline, run.use_artifact raises before doing what it does for a draft artifact online:
    # log it with use_after_commit, a record `wandb sync` commits and then marks as used. (A
    # private method: should a W&B release drop it, the input stays in the run's config.)
    with contextlib.suppress(AttributeError, TypeError):
        run._log_artifact(artifact, aliases=[], is_user_created=True, use_after_commit=True)


def link_stage_artifacts(tracker: Tracker, stage: str, root: Path = Path(".")) -> None:
    """Log the stage's place in the DAG as artifacts (see the module docstring): its deps that
    other stages wrote (DVC md5 from ``dvc.lock``, current: DVC updates the lock after each
    stage) as used; its outputs under ``data/models/`` and ``reports/evaluation`` as logged.
    Where there is no ``dvc.yaml`` (a stage run by hand elsewhere), nothing."""
    root = Path(root)
    if tracker.run is None or not (root / "dvc.yaml").exists():
        return

    def link() -> None:
        from musicrec.io import read_yaml

        dag = read_yaml(root / "dvc.yaml").get("stages", {})
        written = locked_outputs(root)
        spec = dag.get(stage, {})
        inputs = {}
        for dep in spec.get("deps", []):
            kind = _artifact_type(str(dep))
            if kind is None or dep not in written or not (root / dep).exists():
                continue
            inputs[dep] = written[dep]
            metadata = {"path": dep, "dvc_md5": written[dep]}
            _use_artifact(tracker.run, _dag_artifact(dep, kind, root, written[dep], metadata))
        tracker.run.config.update(
            {"musicrec": {**tracker.run.config.get("musicrec", {}), "inputs": inputs}},
            allow_val_change=True,
        )
        for out in spec.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else str(out)
            kind = _artifact_type(path)
            if kind not in ("model", "evaluation") or not (root / path).exists():
                continue
            metadata = {"path": path, "inputs": inputs}
            tracker.run.log_artifact(_dag_artifact(path, kind, root, "", metadata))

    tracker._guard("log the stage's artifacts", link)


def _start_run(stage: str, config: dict[str, Any], root: Path) -> Any:
    """``wandb.init`` for ``stage``: the run, or None (and one line said) if W&B cannot start."""
    run_dirs = Path(root) / "wandb"
    # The run folders there before, only needed to clean up after a shared service that is gone.
    before = set(run_dirs.glob("*run-*")) if os.environ.get("WANDB_SERVICE") else set()
    try:
        import wandb

        in_ci = bool(os.environ.get("CI") or os.environ.get("GITHUB_ACTIONS"))
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            group=group_name(),
            job_type=stage,
            name=f"{group_name()}-{stage}",
            config=config,
            dir=str(Path(root).resolve()),  # the service process may have another cwd
            reinit="finish_previous",
            tags=["ci"] if in_ci else None,
            settings=wandb.Settings(
                silent=True,
                console="off",
                # System metrics on unless asked off (WANDB_X_DISABLE_STATS=true).
                x_disable_stats=os.environ.get("WANDB_X_DISABLE_STATS", "").lower()
                in ("1", "true"),
                # The revision is in the config (musicrec.git_revision); W&B's own git
                # probe would also send the remote's URL.
                disable_git=True,
                save_code=False,
                init_timeout=60,
            ),
        )
    except Exception as error:
        if os.environ.pop("WANDB_SERVICE", None):
            # The shared service scripts/repro.sh started is gone (stopped, or idle too long
            # during a long untracked stage): start this run with a service of its own, and
            # leave no empty run folder from the attempt.
            for attempt in set(run_dirs.glob("*run-*")) - before:
                if not any(attempt.glob("*.wandb")):
                    shutil.rmtree(attempt, ignore_errors=True)
            with contextlib.suppress(Exception):
                wandb.teardown()
            return _start_run(stage, config, root)
        print(f"tracking: W&B did not start ({error}); {stage} runs untracked", file=sys.stderr)
        return None


@contextlib.contextmanager
def tracked_run(stage: str, config: dict[str, Any], root: Path = Path(".")) -> Iterator[Tracker]:
    """Open a W&B run for ``stage`` (see the module docstring); always yields a tracker."""
    mode = os.environ.get("WANDB_MODE", "offline")
    run = None
    if mode != "disabled":
        # Without these W&B may contact its servers even offline (error reporting, telemetry).
        os.environ.setdefault("WANDB_MODE", mode)
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        os.environ.setdefault("WANDB_SILENT", "true")
        run = _start_run(stage, config, root)
    tracker = Tracker(run)
    _ACTIVE.append(tracker)
    try:
        yield tracker
    finally:
        _ACTIVE.remove(tracker)
        if run is not None:
            try:
                run.finish()
            except Exception as error:
                print(f"tracking: could not close the W&B run ({error})", file=sys.stderr)
