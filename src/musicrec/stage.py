"""How a stage runs: its command line, its config and its bookkeeping, the same for every stage.

A stage's ``main(argv)`` is thin and reads alike everywhere::

    args = stage_parser("split", __doc__, ["split"], ("validated",), out=...).parse_args(argv)
    cfg = read_config(load_params(args.params), "split", SplitConfig)
    with run_stage("split", args) as (record, tracker):
        ...  # the stage's pure function; figures worth reporting go into ``record``

- :func:`stage_parser`: ``--help`` from the module docstring, ``--params``, ``--reports`` and
  the project's folders as options.
- :func:`read_config`: a params.yaml section as frozen dataclasses (the defaults live in them
  and in params.yaml, nowhere else); a key no dataclass knows is an error, not ignored.
- :func:`run_stage`: times the stage into ``<reports>/timings/<stage>.json`` and, given
  sections, records it as a W&B run. Training stages wrap it in
  :func:`musicrec.models.content.training_run` (torchrun: only process 0 keeps the books).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from musicrec.errors import MusicrecError
from musicrec.io import section, stage_timer, sweep_stale_temporaries
from musicrec.tracking import (
    Tracker,
    git_revision,
    group_name,
    link_stage_artifacts,
    tracked_run,
)

REPORTS = Path("reports")
# The project layout dvc.yaml uses: option name -> (default folder, what it holds).
LAYOUT = {
    "validated": (Path("data/validated"), "validated data (validate's output)"),
    "split": (Path("data/split"), "evaluation splits (split's output)"),
    "models": (Path("data/models"), "one folder per model"),
    "per_user": (Path("data/evaluation"), "per-user metric values"),
    "features": (Path("data/features"), "features folder"),
    "checkpoints": (
        Path(".cache/checkpoints"),
        "training checkpoints, resumed after an interruption",
    ),
}


def stage_parser(
    stage: str,
    doc: str | None,
    sections: list[str],
    folders: tuple[str, ...] = (),
    out: Path | None = None,
) -> argparse.ArgumentParser:
    """A parser for ``musicrec <stage>`` with the module docstring as its description.

    Parameters
    ----------
    stage : str
        The subcommand name.
    doc : str
        The stage module's docstring (shown whole by ``--help``).
    sections : list of str
        The params.yaml sections the stage reads, named in the ``--params`` help.
    folders : tuple of str
        Keys of ``LAYOUT``: the standard folders the stage reads or writes, as options
        (``per_user`` becomes ``--per-user``). Every stage has ``--reports``.
    out : Path, optional
        The default of an ``--out`` option, for a stage with an output folder of its own.
    """
    parser = argparse.ArgumentParser(
        prog=f"musicrec {stage}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Paths default to the project layout that dvc.yaml uses; run from the project root.",
    )
    if sections:
        parser.add_argument(
            "--params",
            type=Path,
            default=Path("params.yaml"),
            help=f"params file (default: params.yaml); reads {', '.join(sections)}",
        )
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPORTS,
        help=f"reports, metrics and timings (default: {REPORTS})",
    )
    for name in folders:
        default, what = LAYOUT[name]
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, type=Path, default=default, help=f"{what} (default: {default})")
    if out is not None:
        parser.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    return parser


@dataclass(frozen=True)
class DataConfig:
    """``data`` in params.yaml: where the data set lives (README "Your own data")."""

    root: str = "data/synthetic"


@dataclass(frozen=True)
class Workers:
    """``n_jobs`` of a section: how many processes compute, which never changes the result."""

    n_jobs: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise MusicrecError(f"n_jobs must be a whole number >= 1, not {self.n_jobs!r}")


def read_config(params: dict[str, Any], name: str, *classes: type) -> Any:
    """Section ``name`` of params.yaml as instances of the frozen dataclasses ``classes``.

    Each key goes to the class with a field of that name (a section may hold the computation's
    config and how the stage runs it, e.g. ``FeatureConfig`` and ``FeaturesRun``); a key that
    no class has is an error naming the known keys, so a misspelt param never falls back to a
    default unnoticed.

    Returns
    -------
    One instance, or a tuple of them in the order of ``classes``.
    """
    values = section(params, name) or {}
    if not isinstance(values, dict):
        raise MusicrecError(f"params.yaml: {name} must be a mapping of keys to values")
    owner = {f.name: cls for cls in classes for f in fields(cls)}
    unknown = sorted(set(values) - set(owner))
    if unknown:
        raise MusicrecError(
            f"params.yaml: {', '.join(f'{name}.{k}' for k in unknown)} is not a parameter "
            f"(known: {', '.join(sorted(owner))}); check the spelling"
        )
    try:
        made = tuple(cls(**{k: v for k, v in values.items() if owner[k] is cls}) for cls in classes)
    except TypeError as error:  # a value of the wrong kind, seen by a dataclass's checks
        raise MusicrecError(f"params.yaml: {name}: {error}") from error
    return made[0] if len(made) == 1 else made


def read_shared(params: dict[str, Any], name: str, cls: type) -> Any:
    """The fields of ``cls`` from another stage's section ``name`` (e.g. ``validate`` reads
    the clip of ``features``): that section's other keys are its own stage's business."""
    values = section(params, name) or {}
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@contextmanager
def run_stage(
    stage: str,
    args: argparse.Namespace,
    params: dict[str, Any] | None = None,
    tracked: tuple[str, ...] = (),
) -> Iterator[tuple[dict[str, Any], Tracker]]:
    """The bookkeeping of one stage run: its timing record and its W&B tracker.

    The record is written to ``<args.reports>/timings/<stage>.json`` when the stage succeeds.
    With ``tracked`` section names (those it reads, checked to be there), the stage is a W&B
    run whose config is all of ``params`` and, under ``musicrec``, the stage, the sections it
    reads, the git revision and the experiment; when the stage succeeds, its place in the DAG
    is logged as artifacts (:func:`musicrec.tracking.link_stage_artifacts`). Otherwise the
    tracker does nothing.

    A stage with an ``--out`` first removes what killed runs of it left beside that output
    (:func:`musicrec.io.sweep_stale_temporaries`): a killed ``features`` leaves hundreds of MB.
    """
    if getattr(args, "out", None) is not None:
        sweep_stale_temporaries(Path(args.out))
    with stage_timer(stage, args.reports) as record:
        if not tracked:
            yield record, Tracker(None)
            return
        for name in tracked:
            section(params or {}, name)
        config = {
            **(params or {}),
            "musicrec": {
                "stage": stage,
                "reads": list(tracked),
                "git_revision": git_revision(),
                "experiment": group_name(),
            },
        }
        with tracked_run(stage, config) as tracker:
            yield record, tracker
            link_stage_artifacts(tracker, stage)
