"""Stage ``folds``: every model trained again on each cold fold after the first.

With ``split.cold_folds`` K > 1, ``split`` writes fold 0 to ``data/split`` (what the rest of
the DAG trains on) and folds 1 to K-1 to ``data/split/folds/<k>/``. This stage runs, for each
of those folds, the training stages in DAG order (``RUNS_STAGES``: baselines, tune, wmf, the
content, context and hybrid models) with their own ``main`` and the same params, on that
fold's split, into ``data/folds/<k>/`` (``models/``, ``tune/``, ``reports/``); ``evaluate``
then scores each fold's models on that fold's cold songs and pools them, so every song is
scored cold once. With one fold it writes an empty ``data/folds``.

Why one stage that loops rather than a DVC ``foreach`` over folds: K is chosen from the
catalogue's size (``split.cold_folds: auto``), so it is not known when ``dvc.yaml`` is read,
and a ``foreach`` would copy a dozen stages per fold into the DAG a reader has to take in. The
price: a change to one model's params retrains every model of folds 1 to K-1 (fold 0 follows
the DAG as before). The fold runs are not tracked in W&B (their figures are pooled by
``evaluate``, which is); their checkpoints go to ``<checkpoints>/folds/<k>``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from musicrec import registry
from musicrec.dataset import fold_split_dirs
from musicrec.io import atomic_path, write_json
from musicrec.stage import run_stage, stage_parser

# The stages that train on the warm songs of a split, in DAG order. They are run by name (a
# stage module is never imported by another), so dvc.yaml's code deps of ``folds`` add their
# import closures to its own (tests/test_dag_deps.py reads this tuple).
RUNS_STAGES = (
    "baselines",
    "tune",
    "wmf",
    "ridge",
    "context",
    "bow",
    "cnn",
    "dbn",
    "audio_context",
    "hybrid",
)
# Those with a --features and a --checkpoints option (models/content.content_stage_parser).
CONTENT_STAGES = ("ridge", "context", "bow", "cnn", "dbn", "audio_context")


def stage_argv(
    stage: str, split_dir: Path, fold_dir: Path, params: Path, features: Path, checkpoints: Path
) -> list[str]:
    """The command line of one training stage on one fold: its split, and the fold's own
    folders for what it reads and writes (``fold_dir``: ``models/``, ``tune/``, ``reports/``)."""
    argv = ["--params", str(params), "--reports", str(fold_dir / "reports")]
    if stage == "tune":
        return [*argv, "--split", str(split_dir), "--out", str(fold_dir / "tune")]
    argv += ["--split", str(split_dir), "--models", str(fold_dir / "models")]
    if stage == "wmf":
        argv += ["--tune", str(fold_dir / "tune" / "wmf.json")]
    if stage in CONTENT_STAGES:
        argv += ["--features", str(features), "--checkpoints", str(checkpoints)]
    return argv


@contextmanager
def untracked() -> Iterator[None]:
    """W&B off for the fold runs (``WANDB_MODE=disabled``), as it was afterwards."""
    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    try:
        yield
    finally:
        if before is None:
            del os.environ["WANDB_MODE"]
        else:
            os.environ["WANDB_MODE"] = before


def run_folds(
    split_dir: Path, out: Path, params: Path, features: Path, checkpoints: Path
) -> list[dict]:
    """Train every model of ``RUNS_STAGES`` on each fold after the first into ``out/<k>/``.

    Returns
    -------
    list of dict
        Per fold: ``fold``, ``split`` (its folder) and ``stages`` (those run).
    """
    modules = {s.name: s.module for s in registry.STAGES}
    done = []
    folds = fold_split_dirs(split_dir)[1:]
    with untracked(), tqdm(total=len(folds) * len(RUNS_STAGES), desc="folds", unit="stage") as bar:
        for k, fold_split in enumerate(folds, start=1):
            fold_dir = out / str(k)
            (fold_dir / "models").mkdir(parents=True)
            for stage in RUNS_STAGES:
                bar.set_postfix_str(f"fold {k}: {stage}")
                main = importlib.import_module(modules[stage]).main
                main(
                    stage_argv(stage, fold_split, fold_dir, params, features, checkpoints / str(k))
                )
                bar.update()
            done.append({"fold": k, "split": str(fold_split), "stages": list(RUNS_STAGES)})
    return done


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "folds", __doc__, ["split"], ("split", "features", "checkpoints"), out=Path("data/folds")
    )
    args = parser.parse_args(argv)
    with run_stage("folds", args) as (record, _):
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            done = run_folds(
                args.split, tmp, args.params, args.features, (args.checkpoints / "folds").resolve()
            )
            write_json(tmp / "folds.json", {"folds": done})
        record.update(folds=1 + len(done))
    print(f"folds: {len(done)} fold(s) after the first trained -> {args.out}")
    return 0
