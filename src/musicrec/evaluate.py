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
from musicrec.dataset import Splits, fold_split_dirs, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, write_json
from musicrec.metrics import (
    TwoWayResamples,
    impute_missing,
    percentile_intervals,
    two_way_means,
)
from musicrec.models.vectors import ModelVectors, discover_models, load_model
from musicrec.ranking import (
    MIN_VIEW_SONGS,
    draw_tiebreak_seeds,
    factor_agreement,
    score_task,
    split_tasks,
)
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


@dataclass
class Fold:
    """One cold fold after the first: its split, its models and its WMF song targets."""

    splits: Splits
    models: list[ModelVectors]
    song_targets: np.ndarray | None = None


# The splits scored on every cold fold and pooled; the others are scored on fold 0 alone.
POOLED = ("cold", "all", "cold_new_artist")


def evaluate_models(
    splits: Splits,
    models: list[ModelVectors],
    map_k: int,
    ks: list[int],
    n_bootstrap: int,
    seed: int,
    song_targets: np.ndarray | None = None,
    max_users: int = 0,
    folds: list[Fold] | tuple[Fold, ...] = (),
) -> Evaluation:
    """Score every model on every split it declares (``max_users``: see :func:`split_tasks`).

    For a model whose song vectors predict WMF factors, the ``cold`` entry also gets ``r2``
    and ``cosine`` of its cold songs' vectors against ``song_targets`` (WMF factors of every
    song, cold ones folded in; see :func:`musicrec.models.factorization.song_targets`).

    With ``folds`` (cold folds 1 to K-1, :mod:`musicrec.folds`), the ``POOLED`` splits are
    scored on every fold, each fold's model of a name on that fold's task, and pooled: a mean
    is over (fold, user) rows, and every song is a cold candidate once. ``warm`` and
    ``cold_user`` are fold 0's.

    Intervals come from a two-way bootstrap (:class:`musicrec.metrics.TwoWayResamples`): one
    set of resamples of a split's users and candidate songs, shared by every model on it, so
    that two models' resampled means can be subtracted into a paired interval. A user scored
    on several folds is one user there: drawn or not, on every fold at once.

    The per-user arrays of a split are ``users`` [shape=(n_rows,)], ``<model>:<metric>``
    [shape=(n_rows,)], and, per relevant (user, song) entry, ``entry_users`` and
    ``entry_songs`` (user and song indices) and ``<model>:rank`` (the song's 0-based place in
    the user's ranking) [shape=(n_entries,)], with ``n_valid`` (candidates each user could be
    recommended) and ``candidates`` (the split's songs): enough to recompute any metric per
    entry (:func:`musicrec.metrics.entry_contributions`). On a pooled split with folds, a row
    is a (fold, user): ``users`` and ``entry_users`` hold ``fold * n_users + user`` and
    ``fold`` the fold.
    """
    n_users = splits.matrices["train"].shape[0]
    parts: dict[str, list] = {}
    every = [(0, splits, models, song_targets)]
    every += [(k, f.splits, f.models, f.song_targets) for k, f in enumerate(folds, start=1)]
    # With folds, a fold's new artists may be few or none: the view is kept where all folds
    # together hold MIN_VIEW_SONGS of their songs.
    min_view = 1 if folds else MIN_VIEW_SONGS
    for k, fold_splits, fold_models, targets in every:
        by_name = {m.name: m for m in fold_models}
        for name, task in split_tasks(fold_splits, max_users, seed, min_view).items():
            if (k == 0 or name in POOLED) and not (
                name == "cold_new_artist" and not len(task.users)
            ):
                parts.setdefault(name, []).append((k, task, by_name, targets))
    view = parts.get("cold_new_artist", [])
    if sum(len(task.candidates) for _, task, _, _ in view) < MIN_VIEW_SONGS:
        parts.pop("cold_new_artist", None)
    parts = {name: parts[name] for name in registry.SPLITS if name in parts}
    rng = np.random.default_rng(seed)
    tiebreak_seeds = draw_tiebreak_seeds(rng)
    layouts = {name: _pooled_layout(name_parts, n_users) for name, name_parts in parts.items()}
    resamples = {
        name: TwoWayResamples.draw(rng, n_bootstrap, *layout.n_units)
        for name, layout in layouts.items()
    }
    per_user = {name: dict(layout.arrays) for name, layout in layouts.items()}
    means: dict = {}
    intervals: dict = {}
    # Each model's resampled mAP per split, kept for the paired intervals (the other metrics'
    # resamples are reduced to their intervals as each model is scored: memory stays at
    # n_resamples x n_models per split, whatever the number of entries).
    map_key = registry.map_key(map_k)
    map_samples: dict[str, dict[str, np.ndarray]] = {name: {} for name in parts}
    jobs = [(m, name) for m in models for name in parts if registry.scores_on(m.splits, name)]
    for model, name in tqdm(jobs, desc="evaluate", unit="model x split"):
        layout = layouts[name]
        scored = []
        for k, task, by_name, _ in parts[name]:
            if len(task.users) == 0:
                raise MusicrecError(
                    f"evaluate: the {name} split{f' of cold fold {k}' if k else ''} has no "
                    "users to score; check the split params and the data size"
                )
            if model.name not in by_name:
                raise MusicrecError(
                    f"evaluate: cold fold {k} has no model {model.name}; rerun `dvc repro folds`"
                )
            scored.append(score_task(by_name[model.name], task, map_k, ks, tiebreak_seeds[name]))
        metrics = list(scored[0].per_user)
        split_means = {
            key: round(
                float(np.average([s.coverage[key] for s in scored], weights=layout.sizes)), 6
            )
            for key in scored[0].coverage
        }
        per_row = {m: np.concatenate([s.per_user[m] for s in scored]) for m in metrics}
        for metric, values in per_row.items():
            split_means[metric] = round(float(np.nanmean(values)), 6)
            per_user[name][f"{model.name}:{metric}"] = values.astype(np.float32)
        per_user[name][f"{model.name}:rank"] = np.concatenate([s.ranks for s in scored]).astype(
            np.int32
        )
        contributions = np.stack(
            [
                impute_missing(
                    np.concatenate([s.per_entry[m] for s in scored]), per_row[m], layout.entry_rows
                )
                for m in metrics
            ],
            axis=1,
        )
        samples = two_way_means(
            layout.entry_units,
            layout.entry_songs,
            contributions,
            resamples[name],
            layout.entry_rows,
        )
        bounds = percentile_intervals(samples)
        intervals.setdefault(model.name, {})[name] = {
            metric: [round(float(low), 6), round(float(high), 6)]
            for metric, (low, high) in zip(metrics, bounds, strict=True)
        }
        map_samples[name][model.name] = samples[:, metrics.index(map_key)]
        split_means["users"] = len(per_row[map_key])
        if name == "cold" and model.predicts == "wmf_song_factors":
            agreement = _pooled_agreement(parts[name], model.name)
            if agreement is not None:
                split_means.update(agreement)
        means.setdefault(model.name, {})[name] = split_means
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


@dataclass
class _Layout:
    """Where one split's rows and entries are, over the folds it is scored on."""

    arrays: dict  # the npz arrays that do not depend on the model
    entry_rows: np.ndarray  # each entry's row (a (fold, user) pair)
    entry_units: np.ndarray  # each entry's resampled user (the same user on every fold)
    entry_songs: np.ndarray  # each entry's resampled song
    n_units: tuple[int, int]  # users and songs resampled
    sizes: list[int]  # candidates per fold (weights of coverage@k)


def _pooled_layout(parts: list, n_users: int) -> _Layout:
    pooled = len(parts) > 1
    rows, users, songs, keys, n_valid, folds, offset = [], [], [], [], [], [], 0
    for k, task, _, _ in parts:
        entries = task.relevant.tocoo()  # CSR order, the order of the contributions
        rows.append(entries.row + offset)
        users.append(task.users[entries.row])
        songs.append(task.candidates[entries.col])
        keys.append(task.users + (k * n_users if pooled else 0))
        n_valid.append(task.valid_counts())
        folds.append(np.full(len(task.users), k))
        offset += len(task.users)
    users_all, songs_all = np.concatenate(users), np.concatenate(songs)
    unit_ids, entry_units = np.unique(users_all, return_inverse=True)
    candidates = np.unique(np.concatenate([task.candidates for _, task, _, _ in parts]))
    rows_all = np.concatenate(rows)
    row_keys = np.concatenate(keys)
    arrays = {
        "users": row_keys,
        "entry_users": row_keys[rows_all].astype(np.int64 if pooled else np.int32),
        "entry_songs": songs_all.astype(np.int32),
        "n_valid": np.concatenate(n_valid).astype(np.int32),
        "candidates": candidates.astype(np.int32),
    }
    if pooled:
        arrays["fold"] = np.concatenate(folds).astype(np.int32)
    return _Layout(
        arrays,
        rows_all,
        entry_units,
        np.searchsorted(candidates, songs_all),
        (len(unit_ids), len(candidates)),
        [len(task.candidates) for _, task, _, _ in parts],
    )


def _pooled_agreement(parts: list, name: str) -> dict | None:
    """R^2 and cosine of a content model's cold-song vectors against each fold's WMF targets,
    pooled over the folds (:func:`musicrec.ranking.factor_agreement`)."""
    predicted, targets = [], []
    for _, task, by_name, fold_targets in parts:
        if fold_targets is None:
            return None
        predicted.append(by_name[name].song_vectors[task.candidates])
        targets.append(fold_targets[task.candidates])
    stacked = np.concatenate(predicted)
    return factor_agreement(stacked, np.concatenate(targets), np.arange(len(stacked)))


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


def load_folds(split_dir: Path, folds_dir: Path, index_digest: str) -> list[Fold]:
    """Cold folds 1 to K-1: each one's split (``<split_dir>/folds/<k>``) and models
    (``<folds_dir>/<k>/models``, the ``folds`` stage's)."""
    folds = []
    for k, fold_split in enumerate(fold_split_dirs(split_dir)[1:], start=1):
        model_dir = Path(folds_dir) / str(k) / "models"
        found = discover_models(model_dir) if model_dir.is_dir() else []
        if not found:
            raise MusicrecError(
                f"evaluate: {split_dir} has cold fold {k} but {model_dir} holds no model; run "
                "`dvc repro folds` (or `musicrec folds`)"
            )
        folds.append(
            Fold(
                load_splits(fold_split),
                [load_model(d, index_digest) for d in found],
                _song_targets(model_dir / "wmf" / "song_targets.npy"),
            )
        )
    return folds


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
    parser.add_argument(
        "--folds",
        type=Path,
        default=Path("data/folds"),
        help="the models of cold folds 1 to K-1 (the folds stage's output; default: data/folds)",
    )
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
            load_folds(args.split, args.folds, splits.index_digest),
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
