"""Stage ``tune``: WMF's hyperparameters chosen on validation, before ``wmf`` fits them.

WMF's defaults (factors, regularisation, the confidence's ``alpha`` and ``eps``, iterations)
were fitted to one world; on another they can cost a third of the warm-song mAP. This stage
holds out ``tune.holdout`` of each warm user's *training* plays (the test plays are never
seen: :func:`musicrec.ranking.holdout_task`), fits WMF on the rest, and scores mAP@k of the
held-out plays among the warm songs. Optuna's TPE sampler, seeded, proposes ``tune.trials``
settings within the search space of params.yaml; the first trial is params.yaml's ``wmf``
section itself, so the choice is never worse than the defaults on validation. The same seed
and data give the same choice.

Outputs: ``data/tune/wmf.json`` (the chosen values, which the ``wmf`` stage uses; with
``tune.trials: 0`` they are params.yaml's own), and ``reports/tuning/wmf.json`` (every trial:
values, validation mAP, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median_high

from musicrec.dataset import Splits, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, write_json
from musicrec.models.factorization import WMFConfig, fit_wmf
from musicrec.models.search import search, summary
from musicrec.models.vectors import ModelVectors
from musicrec.ranking import holdout_task, mean_map
from musicrec.stage import read_config, run_stage, stage_parser

TUNED = ("factors", "regularization", "alpha", "eps", "iterations")


@dataclass(frozen=True)
class TuneConfig:
    """``tune`` in params.yaml: the budget, the validation task and the search space."""

    trials: int = 24  # settings tried (0: no search, params.yaml's wmf is used as it is)
    seed: int = 0
    holdout: float = 0.2  # share of each warm user's training plays held out
    map_k: int = 500
    max_users: int = 0  # > 0: score a fixed sample of users per trial
    factors: tuple[int, ...] = (8, 16, 32, 64)  # choices
    regularization: tuple[float, float] = (0.01, 10.0)  # log-uniform range
    alpha: tuple[float, float] = (0.5, 20.0)  # log-uniform range
    eps: tuple[float, float] = (0.1, 10.0)  # log-uniform range
    iterations: tuple[int, int] = (5, 30)  # integer range

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 < self.holdout < 1 or self.max_users < 0:
            raise MusicrecError("tune: need trials >= 0, 0 < holdout < 1 and max_users >= 0")
        ranges = (self.regularization, self.alpha, self.eps, self.iterations)
        if not self.factors or any(len(r) != 2 or not 0 < r[0] <= r[1] for r in ranges):
            raise MusicrecError("tune: each range is [low, high] with 0 < low <= high")


def tuned_values(wmf: WMFConfig) -> dict:
    """The fields of ``wmf`` that the search sets (``TUNED``)."""
    return {name: getattr(wmf, name) for name in TUNED}


def tune_wmf(splits: Splits, base: WMFConfig, cfg: TuneConfig) -> tuple[WMFConfig, list[dict]]:
    """The WMF config with the best validation mAP, and the trace of every trial.

    Returns
    -------
    chosen : WMFConfig
        ``base`` with the tuned fields replaced (``base`` itself when ``cfg.trials`` is 0).
    trace : list of dict
        Per trial: its values, ``validation_map`` and ``seconds``.
    """
    if cfg.trials == 0:
        return base, []
    fit_plays, task = holdout_task(splits, cfg.holdout, cfg.seed, cfg.max_users)
    space = {
        "factors": ("choice", cfg.factors),
        "regularization": ("log", *cfg.regularization),
        "alpha": ("log", *cfg.alpha),
        "eps": ("log", *cfg.eps),
        "iterations": ("int", *cfg.iterations),
    }

    def objective(values: dict) -> float:
        users, songs = fit_wmf(fit_plays, replace(base, **values), show_progress=False)
        return mean_map(
            ModelVectors("trial", "", ["warm"], users, songs), task, cfg.map_k, cfg.seed
        )

    best, trace = search(space, objective, cfg.trials, cfg.seed, tuned_values(base))
    return replace(base, **best), trace


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("tune", __doc__, ["tune", "wmf"], ("split",), out=Path("data/tune"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "tune", TuneConfig)
    base = read_config(params, "wmf", WMFConfig)
    with run_stage("tune", args, params, ("tune", "wmf")) as (record, tracker):
        chosen, trace = tune_wmf(load_splits(args.split), base, cfg)
        result = summary(tuned_values(chosen), tuned_values(base), trace)
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            write_json(tmp / "wmf.json", result["chosen"])
        write_json(args.reports / "tuning" / "wmf.json", result)
        tracker.log_metrics({"tune_wmf": {k: v for k, v in result.items() if k != "trace"}})
        seconds = [t["seconds"] for t in trace]
        record.update(trials=len(trace), seconds_per_trial=median_high(seconds) if trace else None)
    print(f"tune: WMF {result['chosen']} (validation mAP {result['validation_map']})")
    return 0
