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
results are logged: no environment variable, so no key, ever reaches a run's config.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT = "musicrec"


class Tracker:
    """What a stage logs to. A tracker without a run (disabled, or W&B failed) does nothing."""

    def __init__(self, run: Any = None):
        self.run = run

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

    def log_history(self, model: str, history: list[dict]) -> None:
        """One point per epoch: ``<model>/train_loss``, ``<model>/val_loss``, ..."""

        def log() -> None:
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
    """The experiment's name under ``dvc exp run``, else ``workspace``."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


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
        try:
            import wandb

            run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT),
                group=group_name(),
                job_type=stage,
                name=f"{group_name()}-{stage}",
                config=config,
                dir=str(root),
                reinit="finish_previous",
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    x_disable_stats=True,
                    disable_git=True,
                    save_code=False,
                    init_timeout=60,
                ),
            )
        except Exception as error:
            print(f"tracking: W&B did not start ({error}); {stage} runs untracked", file=sys.stderr)
            run = None
    tracker = Tracker(run)
    try:
        yield tracker
    finally:
        if run is not None:
            try:
                run.finish()
            except Exception as error:
                print(f"tracking: could not close the W&B run ({error})", file=sys.stderr)
