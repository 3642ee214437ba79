"""Stage ``tune``: WMF's hyperparameters chosen on validation, before ``wmf`` fits them.

WMF's defaults (factors, regularisation, the confidence's ``alpha`` and ``eps``, iterations)
were fitted to one world; on another they can cost a third of the warm-song mAP. This stage
holds out ``tune.holdout`` of each warm user's *training* plays (the test plays are never
seen: :func:`musicrec.ranking.holdout_task`), fits WMF on the rest, and scores mAP@k of the
held-out plays among the warm songs. Optuna's TPE sampler, seeded, proposes ``tune.trials``
settings within the search space of params.yaml; the first trial is params.yaml's ``wmf``
section itself, so the choice is never worse than the defaults on validation. The same seed
and data give the same choice.

Then the popularity term of :mod:`musicrec.models.factorization` is weighed, the factors held
as chosen (:func:`choose_popularity`):

- ``popularity_weight`` (beta, a known user's): WMF refitted with the chosen settings on the
  same held-out task, each of ``tune.popularity_weights`` scored; the best is kept (0, no term,
  is a candidate, so the choice is never worse than plain WMF on validation).
- ``new_user_popularity`` (gamma; a new user with k seed plays weighs popularity by ``beta +
  gamma / k``): a new-user task made of training plays alone. ``tune.new_user_share`` of the
  warm users are taken out, WMF is refitted on the others, and each taken-out user is folded
  in from k of their training plays (k in turn from ``tune.new_user_seeds``, at most all but
  one), the rest of their plays relevant among the warm songs: as ``cold_user`` scores new
  users, at several k. Each of ``tune.new_user_popularities`` is scored; the best is kept.

Outputs: ``data/tune/wmf.json`` (the chosen values, which the ``wmf`` stage uses; with
``tune.trials: 0`` they are params.yaml's own, and the popularity weights still chosen), and
``reports/tuning/wmf.json`` (every trial: values, validation mAP, seconds; and every popularity
weight's validation mAP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median_high

import numpy as np
import scipy.sparse as sp

from musicrec.dataset import Splits, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, write_json
from musicrec.models.factorization import (
    WMFConfig,
    fit_wmf,
    listeners_of,
    new_user_vectors,
    with_popularity,
)
from musicrec.models.search import search, summary
from musicrec.models.vectors import ModelVectors
from musicrec.ranking import SplitTask, build_task, holdout_task, mean_map, plays_part
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
    # The popularity term's weights tried (module docstring): a known user's, a new user's.
    popularity_weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0)
    new_user_popularities: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
    new_user_share: float = 0.1  # of the warm users, taken out to make the new-user task
    new_user_seeds: tuple[int, ...] = (1, 2, 3, 5, 8)  # seed plays of those users, in turn

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 < self.holdout < 1 or self.max_users < 0:
            raise MusicrecError("tune: need trials >= 0, 0 < holdout < 1 and max_users >= 0")
        for name in ("popularity_weights", "new_user_popularities", "new_user_seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name) or min(getattr(self, name)) < 0:
                raise MusicrecError(f"tune.{name}: a list of values >= 0 (0 alone: no term)")
        if min(self.new_user_seeds) < 1 or not 0 < self.new_user_share < 1:
            raise MusicrecError("tune: need new_user_seeds >= 1 and 0 < new_user_share < 1")
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


def new_user_task(
    splits: Splits, cfg: TuneConfig
) -> tuple[sp.csr_matrix, sp.csr_matrix, SplitTask]:
    """A new-user validation task made of training plays (module docstring).

    Returns
    -------
    fit_plays : sp.csr_matrix [shape=(n_users, n_songs)]
        The training plays without the taken-out users: what WMF is refitted on.
    seed_plays : sp.csr_matrix [shape=(n_users, n_songs)]
        The taken-out users' seed plays (their rows only).
    task : SplitTask
        The taken-out users ranking the warm songs, seeds excluded, the rest relevant.
    """
    rng = np.random.default_rng([cfg.seed, 31])
    train = splits.matrices["train"].tocsr()
    plays_per_user = np.diff(train.indptr)
    warm = np.flatnonzero((splits.users["role"].to_numpy() == "warm") & (plays_per_user >= 2))
    count = min(len(warm), max(1, round(cfg.new_user_share * len(warm))))
    taken = np.sort(rng.choice(warm, size=count, replace=False))
    coo = train.tocoo()
    # Each taken-out user's plays in a random order; the first k of them are the seeds.
    order = np.lexsort((rng.random(coo.nnz), coo.row))
    place = np.empty(coo.nnz, np.int64)
    place[order] = np.arange(coo.nnz) - np.searchsorted(coo.row[order], coo.row[order])
    seeds_of = np.zeros(train.shape[0], np.int64)
    wanted = np.asarray(cfg.new_user_seeds)[np.arange(count) % len(cfg.new_user_seeds)]
    seeds_of[taken] = np.minimum(wanted, plays_per_user[taken] - 1)
    is_taken = np.isin(coo.row, taken)
    seed = is_taken & (place < seeds_of[coo.row])
    task = build_task(
        "new-user-validation",
        taken,
        np.flatnonzero(splits.songs["role"].to_numpy() == "warm"),
        plays_part(coo, seed),
        plays_part(coo, is_taken & ~seed),
        cfg.max_users,
        cfg.seed,
    )
    return plays_part(coo, ~is_taken), plays_part(coo, seed), task


def choose_popularity(
    splits: Splits, chosen: WMFConfig, cfg: TuneConfig
) -> tuple[WMFConfig, dict[str, dict[float, float]]]:
    """``chosen`` with the popularity weights that score best on validation (module
    docstring), and every candidate's validation mAP: ``{"popularity_weight": {beta: mAP},
    "new_user_popularity": {gamma: mAP}}``."""
    scores: dict[str, dict[float, float]] = {"popularity_weight": {}, "new_user_popularity": {}}
    fit_plays, task = holdout_task(splits, cfg.holdout, cfg.seed, cfg.max_users)
    users, songs = fit_wmf(fit_plays, chosen, show_progress=False)
    listeners = listeners_of(fit_plays)
    for beta in cfg.popularity_weights:
        model = ModelVectors("beta", "", ["warm"], *with_popularity(users, songs, listeners, beta))
        scores["popularity_weight"][beta] = mean_map(model, task, cfg.map_k, cfg.seed)
    beta = _best(scores["popularity_weight"])
    fit_plays, seed_plays, task = new_user_task(splits, cfg)
    users, songs = fit_wmf(fit_plays, chosen, show_progress=False)
    users, songs = with_popularity(users, songs, listeners_of(fit_plays), beta)
    for gamma in cfg.new_user_popularities:
        trial = replace(chosen, popularity_weight=beta, new_user_popularity=gamma)
        users[task.users] = new_user_vectors(songs, seed_plays[task.users], trial)
        model = ModelVectors("gamma", "", ["cold_user"], users, songs)
        scores["new_user_popularity"][gamma] = mean_map(model, task, cfg.map_k, cfg.seed)
    gamma = _best(scores["new_user_popularity"])
    return replace(chosen, popularity_weight=beta, new_user_popularity=gamma), scores


def _best(scores: dict[float, float]) -> float:
    """The candidate with the highest score (the first of equals; NaN counts as lowest)."""
    return max(scores, key=lambda key: -np.inf if np.isnan(scores[key]) else scores[key])


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("tune", __doc__, ["tune", "wmf"], ("split",), out=Path("data/tune"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "tune", TuneConfig)
    base = read_config(params, "wmf", WMFConfig)
    with run_stage("tune", args, params, ("tune", "wmf")) as (record, tracker):
        splits = load_splits(args.split)
        chosen, trace = tune_wmf(splits, base, cfg)
        result = summary(tuned_values(chosen), tuned_values(base), trace)
        chosen, popularity = choose_popularity(splits, chosen, cfg)
        weights = {name: getattr(chosen, name) for name in popularity}
        result["chosen"] |= weights
        result["popularity_validation_map"] = {
            name: {str(value): score for value, score in candidates.items()}
            for name, candidates in popularity.items()
        }
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            write_json(tmp / "wmf.json", result["chosen"])
        write_json(args.reports / "tuning" / "wmf.json", result)
        tracker.log_metrics({"tune_wmf": {k: v for k, v in result.items() if k != "trace"}})
        seconds = [t["seconds"] for t in trace]
        record.update(trials=len(trace), seconds_per_trial=median_high(seconds) if trace else None)
    print(f"tune: WMF {result['chosen']} (validation mAP {result['validation_map']})")
    return 0
