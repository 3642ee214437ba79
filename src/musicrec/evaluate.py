"""Stage ``evaluate``: score every model on every split it applies to, the same way.

Each split's task (users, candidate songs, excluded and relevant songs) is built by
:func:`musicrec.ranking.split_tasks` (docs/design.md, section 4). Every model folder under
``data/models/`` (format: :mod:`musicrec.models.vectors`) is scored.
Outputs:

- ``reports/metrics.json``, the DVC metric: what people compare across experiments (``dvc exp
  show``, ``dvc metrics diff``): each deployable model's mAP@k on each split it is scored on,
  model -> split -> value (:func:`headline`);
- ``reports/evaluation/metrics.json``: the full table, model -> split -> metric (every metric,
  mean over users), which the report, the dashboard, ``recommend`` and W&B read;
- ``reports/evaluation/intervals.json``: 95% intervals of the full table from a two-way
  bootstrap that resamples users and songs (:class:`musicrec.metrics.TwoWayResamples`;
  resamples shared by all models on a split);
- ``reports/evaluation/paired.json``: split -> model a -> model b -> the 95% interval of a's mAP
  minus b's on those shared resamples: what the report's Findings say "ahead" or "behind" by;
- per-user values and per-entry ranks in ``data/evaluation/<split>.npz`` for paired
  comparisons across experiments (the dashboard);
- ``reports/plots/recall/<split>.csv``: recall@k, one column per model (dvc.yaml's plots draw
  one curve per model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from musicrec import registry
from musicrec.dataset import Splits, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, write_json
from musicrec.metrics import (
    TwoWayResamples,
    impute_missing,
    percentile_intervals,
    two_way_means,
)
from musicrec.models.vectors import ModelVectors, discover_models, load_model
from musicrec.ranking import draw_tiebreak_seeds, factor_agreement, score_task, split_tasks
from musicrec.stage import read_config, run_stage, stage_parser


@dataclass
class Evaluation:
    """What ``evaluate`` measures.

    means : model -> split -> metric -> mean over users.
    intervals : model -> split -> metric -> [low, high], 95%, users and songs resampled.
    paired : split -> model a -> model b -> [low, high] of a's mAP minus b's on the same
        resamples (a paired comparison).
    per_user : split -> arrays for ``data/evaluation/<split>.npz`` (:func:`evaluate_models`).
    """

    means: dict
    intervals: dict
    paired: dict
    per_user: dict


def evaluate_models(
    splits: Splits,
    models: list[ModelVectors],
    map_k: int,
    ks: list[int],
    n_bootstrap: int,
    seed: int,
    song_targets: np.ndarray | None = None,
    max_users: int = 0,
) -> Evaluation:
    """Score every model on every split it declares (``max_users``: see :func:`split_tasks`).

    For a model whose song vectors predict WMF factors, the ``cold`` entry also gets ``r2``
    and ``cosine`` of its cold songs' vectors against ``song_targets`` (WMF factors of every
    song, cold ones folded in; see :func:`musicrec.models.factorization.song_targets`).

    Intervals come from a two-way bootstrap (:class:`musicrec.metrics.TwoWayResamples`): one
    set of resamples of a split's users and candidate songs, shared by every model on it, so
    that two models' resampled means can be subtracted into a paired interval.

    The per-user arrays of a split are ``users`` [shape=(n_users,)], ``<model>:<metric>``
    [shape=(n_users,)], and, per relevant (user, song) entry, ``entry_users`` and
    ``entry_songs`` (user and song indices) and ``<model>:rank`` (the song's 0-based place in
    the user's ranking) [shape=(n_entries,)], with ``n_valid`` (candidates each user could be
    recommended) and ``candidates`` (the split's songs): enough to recompute any metric per
    entry (:func:`musicrec.metrics.entry_contributions`).
    """
    tasks = split_tasks(splits, max_users, seed)
    rng = np.random.default_rng(seed)
    tiebreak_seeds = draw_tiebreak_seeds(rng)
    resamples = {
        name: TwoWayResamples.draw(rng, n_bootstrap, len(t.users), len(t.candidates))
        for name, t in tasks.items()
    }
    means: dict = {}
    per_user: dict = {}
    entry_rows, entry_cols = {}, {}
    for name, task in tasks.items():
        entries = task.relevant.tocoo()
        entry_rows[name], entry_cols[name] = entries.row, entries.col
        per_user[name] = {
            "users": task.users,
            "entry_users": task.users[entries.row].astype(np.int32),
            "entry_songs": task.candidates[entries.col].astype(np.int32),
            "n_valid": (
                len(task.candidates) - np.asarray((task.excluded > 0).sum(axis=1)).ravel()
            ).astype(np.int32),
            "candidates": task.candidates.astype(np.int32),
        }
    # Each model's resampled mAP per split, kept for the paired intervals (the other metrics'
    # resamples are reduced to their intervals as each model is scored: memory stays at
    # n_resamples x n_models per split, whatever the number of entries).
    map_key = registry.map_key(map_k)
    map_samples: dict[str, dict[str, np.ndarray]] = {name: {} for name in tasks}
    intervals: dict = {}
    jobs = [(m, t) for m in models for t in tasks.values() if registry.scores_on(m.splits, t.name)]
    for model, task in tqdm(jobs, desc="evaluate", unit="model x split"):
        if len(task.users) == 0:
            raise MusicrecError(
                f"evaluate: the {task.name} split has no users to score; "
                "check the split params and the data size"
            )
        scores = score_task(model, task, map_k, ks, tiebreak_seeds[task.name])
        split_means = {name: round(value, 6) for name, value in scores.coverage.items()}
        metrics = list(scores.per_user)
        for metric, values in scores.per_user.items():
            split_means[metric] = round(float(np.nanmean(values)), 6)
            per_user[task.name][f"{model.name}:{metric}"] = values.astype(np.float32)
        per_user[task.name][f"{model.name}:rank"] = scores.ranks.astype(np.int32)
        # Contributions in the task's CSR order, which tocoo keeps (entry_rows, entry_cols).
        contributions = np.stack(
            [
                impute_missing(scores.per_entry[m], scores.per_user[m], entry_rows[task.name])
                for m in metrics
            ],
            axis=1,
        )
        samples = two_way_means(
            entry_rows[task.name], entry_cols[task.name], contributions, resamples[task.name]
        )
        bounds = percentile_intervals(samples)
        intervals.setdefault(model.name, {})[task.name] = {
            metric: [round(float(low), 6), round(float(high), 6)]
            for metric, (low, high) in zip(metrics, bounds, strict=True)
        }
        map_samples[task.name][model.name] = samples[:, metrics.index(map_key)]
        split_means["users"] = len(task.users)
        if (
            task.name == "cold"
            and model.predicts == "wmf_song_factors"
            and (song_targets is not None)
        ):
            split_means.update(factor_agreement(model.song_vectors, song_targets, task.candidates))
        means.setdefault(model.name, {})[task.name] = split_means
    paired = {
        name: {
            a: {
                b: [round(float(v), 6) for v in percentile_intervals((of_a - of_b)[:, None])[0]]
                for b, of_b in by_model.items()
                if b != a
            }
            for a, of_a in by_model.items()
        }
        for name, by_model in map_samples.items()
        if by_model
    }
    return Evaluation(means, intervals, paired, per_user)


def headline(means: dict, map_k: int) -> dict:
    """The DVC metric: each deployable model's (:func:`musicrec.registry.deployable`) mAP@k
    on each split it was scored on, ``{model: {split: value}}``: about 65 values by default,
    where the full table holds about 1,700."""
    key = registry.map_key(map_k)
    deployable = set(registry.deployable())
    return {
        model: {split: values[key] for split, values in by_split.items()}
        for model, by_split in means.items()
        if model in deployable
    }


def recall_curves(means: dict, ks: list[int]) -> dict[str, pd.DataFrame]:
    """Per split, recall@k of every model scored on it: a column ``k`` and one column per
    model, in registry order [shape=(len(ks), 1 + n_models)]."""
    order = {name: i for i, name in enumerate(registry.MODEL_NAMES)}
    curves = {}
    for split in registry.SPLITS:
        models = sorted((m for m in means if split in means[m]), key=lambda m: order.get(m, 0))
        if models:
            curves[split] = pd.DataFrame(
                {"k": ks, **{m: [means[m][split][f"recall@{k}"] for k in ks] for m in models}}
            )
    return curves


def _song_targets(path: Path) -> np.ndarray | None:
    return np.load(path) if path.exists() else None


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate`` in params.yaml."""

    map_k: int = 500  # the cut-off of mAP, the headline metric (registry.map_key)
    ks: tuple[int, ...] = (10, 50, 100, 500)  # recall@k and coverage@k
    bootstrap: int = 1000  # resamples of the 95% intervals
    seed: int = 13
    max_users: int = 0  # > 0: score a fixed sample of this many users per split

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(sorted(int(k) for k in self.ks)))
        if self.map_k < 1 or not self.ks or self.ks[0] < 1:
            raise MusicrecError("evaluate: map_k and every k in ks must be >= 1")
        if self.bootstrap < 1 or self.max_users < 0:
            raise MusicrecError("evaluate: need bootstrap >= 1 and max_users >= 0")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("evaluate", __doc__, ["evaluate"], ("split", "models", "per_user"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "evaluate", EvaluateConfig)
    ks = list(cfg.ks)
    with run_stage("evaluate", args, params, ("evaluate",)) as (record, tracker):
        model_dirs = discover_models(args.models)
        if not model_dirs:
            raise MusicrecError(f"evaluate: no model under {args.models}; run dvc repro")
        splits = load_splits(args.split)
        models = [load_model(d, splits.index_digest) for d in model_dirs]
        evaluation = evaluate_models(
            splits,
            models,
            cfg.map_k,
            ks,
            cfg.bootstrap,
            cfg.seed,
            _song_targets(args.models / "wmf" / "song_targets.npy"),
            cfg.max_users,
        )
        means, intervals = evaluation.means, evaluation.intervals
        write_json(args.reports / "metrics.json", headline(means, cfg.map_k))
        tracker.log_metrics(means)
        tracker.log_table(
            "metrics",
            ["model", "split", "metric", "mean", "low", "high"],
            [
                [model, split, metric, value, *intervals[model][split].get(metric, [None, None])]
                for model, by_split in means.items()
                for split, values in by_split.items()
                for metric, value in values.items()
            ],
        )
        with atomic_path(args.reports / "evaluation") as tmp:
            tmp.mkdir()
            write_json(tmp / "metrics.json", means)
            write_json(tmp / "intervals.json", intervals)
            write_json(tmp / "paired.json", evaluation.paired)
        with atomic_path(args.per_user) as tmp:
            tmp.mkdir()
            for split, arrays in evaluation.per_user.items():
                np.savez_compressed(tmp / f"{split}.npz", **arrays)
        with atomic_path(args.reports / "plots" / "recall") as tmp:
            tmp.mkdir()
            for split, curve in recall_curves(means, ks).items():
                curve.to_csv(tmp / f"{split}.csv", index=False)
        record.update(models=[m.name for m in models])
    print(
        f"evaluate: {len(models)} models -> {args.reports / 'metrics.json'} (the headline), "
        f"{args.reports / 'evaluation' / 'metrics.json'} (every metric)"
    )
    return 0
