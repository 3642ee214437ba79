"""What every content model shares: its inputs, its targets and how it hands over its output.

A content model learns to predict a song's WMF factors from the song's audio features
(van den Oord et al. 2013). It trains on the warm songs outside the validation slice, stops
early on the validation slice, and predicts factors for *every* song; ``evaluate`` then ranks
songs for each user by ``u_u' v_hat`` with the WMF user factors ``u_u``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from musicrec import registry
from musicrec.dataset import check_same_songs, load_splits
from musicrec.errors import MusicrecError
from musicrec.io import load_params, read_tsv, write_json
from musicrec.models import distributed
from musicrec.models.factorization import fitted_config
from musicrec.models.search import search, summary
from musicrec.models.training import TrainConfig, pick_device, write_loss_curve
from musicrec.models.vectors import ModelVectors, load_model, save_model
from musicrec.ranking import mean_map, songs_task
from musicrec.stage import run_stage, stage_parser
from musicrec.tracking import Tracker


@dataclass
class ContentData:
    """Targets and the song sets of a content model.

    targets : np.ndarray [shape=(n_songs, d)] WMF song factors (zero rows for cold songs).
    user_factors : np.ndarray [shape=(n_users, d)] WMF user factors (fixed).
    train_plays : sp.csr_matrix [shape=(n_users, n_songs)] training play counts (for WPE).
    train_songs, validation_songs : np.ndarray of song indices (a song's index is also its
    row in the feature arrays: one song order, :mod:`musicrec.dataset`).
    index_digest : str, the split's ids digest, recorded in the model folder.
    new_users : np.ndarray of the held-out (``cold_user``) users' indices.
    new_user_seeds : sp.csr_matrix [shape=(n_users, n_songs)] their seed play counts.
    """

    targets: np.ndarray
    user_factors: np.ndarray
    train_plays: sp.csr_matrix
    train_songs: np.ndarray
    validation_songs: np.ndarray
    index_digest: str
    new_users: np.ndarray | None = None
    new_user_seeds: sp.csr_matrix | None = None

    @property
    def songs(self) -> np.ndarray:
        """Every song's index [shape=(n_songs,)], which is also its row in the features."""
        return np.arange(len(self.targets))


def load_content_data(split_dir: Path, wmf_dir: Path, features_dir: Path) -> ContentData:
    """Gather a content model's inputs from the outputs of ``split``, ``wmf`` and ``features``.

    The targets and user factors are WMF's factors alone: the ``wmf`` model's popularity column
    (:mod:`musicrec.models.factorization`) is CF's, not something audio can be asked for.
    """
    splits = load_splits(split_dir)
    wmf = load_model(wmf_dir, splits.index_digest)
    factors = fitted_config(wmf_dir).factors
    check_same_songs(
        splits.songs["song_id"],
        read_tsv(Path(features_dir) / "songs.tsv")["song_id"],
        f"{features_dir}/songs.tsv",
        "the features were computed for another catalogue; run dvc repro features",
    )
    warm = splits.songs["role"].to_numpy() == "warm"
    validation = splits.songs["validation"].to_numpy()
    if not validation.any() or not (warm & ~validation).any():
        raise MusicrecError(
            f"content models need warm training songs and a validation slice; {split_dir} has "
            f"{int((warm & ~validation).sum())} and {int(validation.sum())}: "
            "change split.validation_song_fraction or bring more songs"
        )
    return ContentData(
        np.ascontiguousarray(wmf.song_vectors[:, :factors]),
        np.ascontiguousarray(wmf.user_vectors[:, :factors]),
        splits.matrices["train"],
        np.flatnonzero(warm & ~validation),
        np.flatnonzero(validation),
        splits.index_digest,
        np.flatnonzero(splits.users["role"].to_numpy() == "cold_user"),
        splits.matrices["cold_user_seed"],
    )


def target_scaling(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and one common scale for regressing WMF factors [shape=(n_songs, d)].

    WMF factors are small (about 0.04), so a network learns them rescaled; but the scale is
    one number for all dimensions, not one per dimension: a dimension with little variance
    carries little of the ranking ``u'v``, and standardising it would make the loss chase its
    noise as hard as the dimensions that matter. The MSE stays the paper's MSE on the factors,
    times a constant.

    Returns
    -------
    mean, scale : np.ndarray [shape=(d,), float32]
    """
    mean = targets.mean(axis=0)
    scale = np.full(targets.shape[1], (targets - mean).std() + 1e-8)
    return mean.astype(np.float32), scale.astype(np.float32)


def song_feature_vectors(features: dict, rows: np.ndarray) -> np.ndarray:
    """``f_v``: mean and std over frames of log-mel and MFCC(+deltas), one row per song.

    Returns
    -------
    np.ndarray [shape=(len(rows), 2 * (n_mels + 3 * n_mfcc)), float32]
    """
    out = []
    for r in rows:
        frames = np.vstack([np.asarray(features[k][r], np.float32) for k in ("logmel", "mfcc")])
        out.append(np.concatenate([frames.mean(axis=1), frames.std(axis=1)]))
    return np.asarray(out, np.float32)


class SongFactorModel(ABC):
    """A model that predicts song vectors from a song's features.

    ``features`` is a dict of the ``features`` stage's arrays (``"logmel"``, ``"mfcc"``, each
    [shape=(n_songs_in_store, dims, n_frames)], memory-mapped); ``rows`` index into them.
    ``save`` writes arrays and JSON only, and ``load`` reads them back (checkpoints with
    ``torch.load(weights_only=True)``): nothing is unpickled.

    Most content models predict WMF song factors and are scored with the WMF user factors
    (``predicts_wmf_factors``); a model that learns its own user vectors (the DBN models)
    returns them from :meth:`user_vectors`.
    """

    name: str
    description: str
    predicts_wmf_factors: bool = True
    splits: tuple[str, ...] = registry.CONTENT_SPLITS

    def user_vectors(self, data: ContentData) -> np.ndarray:
        """User vectors [shape=(n_users, d)] that score this model's song vectors."""
        return data.user_factors

    @abstractmethod
    def fit(self, features: dict, data: ContentData, checkpoint_dir: Path) -> SongFactorModel:
        """Train on ``data.train_songs``, stopping early on ``data.validation_songs``."""

    @abstractmethod
    def predict(self, features: dict, rows: np.ndarray) -> np.ndarray:
        """Predicted factors [shape=(len(rows), d), float32]."""

    def predict_new(self, features: dict) -> np.ndarray:
        """Vectors [shape=(n, d), float32] of songs outside the catalogue, from their features
        alone (``features``' arrays hold just those songs, [shape=(n, dims, n_frames)]).

        Row ``i`` of these arrays is no catalogue song, so a model that keeps parameters of the
        catalogue's songs (``hybrid_dbn``'s ``y_v``) must not look them up here; it overrides
        this. The others predict from the features as for any song.
        """
        return self.predict(features, np.arange(len(next(iter(features.values())))))

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything ``load`` needs into ``directory`` (created)."""

    @classmethod
    @abstractmethod
    def load(
        cls, directory: Path, n_users: int | None = None, n_songs: int | None = None
    ) -> SongFactorModel:
        """Rebuild a fitted model from ``save``'s folder, checking what it declares before
        allocating it (:mod:`musicrec.models.saved`): a folder may come from ``dvc get``.

        ``n_users`` and ``n_songs`` are the split's sizes, which a model whose arrays have a row
        per user or song must match; the others take and ignore them."""


@dataclass(frozen=True)
class ContentTuneConfig:
    """``tune_content`` in params.yaml: how many settings each content model's search tries
    (0: params.yaml's own) and the shared search space of their training settings."""

    seed: int = 0
    map_k: int = 500
    bow_mlp: int = 8  # trials of bow_mlp's search
    dbn: int = 6  # trials of hldbn's search (its choice serves all three DBN models)
    cnn: int = 0  # trials of each CNN's search: opt-in, a trial trains a CNN
    learning_rate: tuple[float, float] = (1e-4, 1e-2)  # log-uniform range
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log-uniform range
    width: tuple[int, ...] = (64, 128, 256, 512)  # choices: hidden units of the model's net

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", tuple(int(w) for w in self.width))
        ranges = (self.learning_rate, self.weight_decay)
        if min(self.bow_mlp, self.dbn, self.cnn) < 0 or self.map_k < 1 or not self.width:
            raise MusicrecError("tune_content: need trials >= 0, map_k >= 1 and some widths")
        if any(len(r) != 2 or not 0 < r[0] <= r[1] for r in ranges) or min(self.width) < 1:
            raise MusicrecError("tune_content: each range is [low, high] with 0 < low <= high")

    def space(self) -> dict[str, tuple]:
        return {
            "learning_rate": ("log", *self.learning_rate),
            "weight_decay": ("log", *self.weight_decay),
            "width": ("choice", self.width),
        }


def ridge_weights(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights [shape=(d_in + 1, d_out)] from ``x`` [(n, d_in)] to ``y`` [(n, d_out)],
    the last row the intercept (not penalised). Closed form."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(x1.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(x1.T @ x1 + penalty, x1.T @ y)


def ridge_predict(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``x`` [(n, d_in)] through :func:`ridge_weights`' weights (intercept last)."""
    return np.hstack([x, np.ones((len(x), 1))]) @ weights


def choose_ridge(
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, alphas: tuple[float, ...]
) -> tuple[float, np.ndarray, dict[float, float]]:
    """The penalty of ``alphas`` whose ridge on ``(x, y)`` predicts ``y_val`` from ``x_val``
    with the least mean squared error, its weights (:func:`ridge_weights`) and every
    penalty's error."""
    fitted = {a: ridge_weights(x, y, a) for a in alphas}
    errors = {a: float(np.mean((ridge_predict(x_val, w) - y_val) ** 2)) for a, w in fitted.items()}
    best = min(errors, key=errors.get)
    return best, fitted[best], errors


def ridge_onto_targets(
    x: np.ndarray,
    targets: np.ndarray,
    train: np.ndarray,
    validation: np.ndarray,
    alphas: tuple[float, ...],
) -> tuple[np.ndarray, float, dict[float, float]]:
    """Every song's prediction of ``targets`` [(n_songs, d)] by a ridge from ``x``
    [(n_songs, d_in)]: targets scaled by :func:`target_scaling` of the ``train`` songs, fitted
    on them, the penalty of ``alphas`` chosen on the ``validation`` songs
    (:func:`choose_ridge`).

    Returns
    -------
    predicted : np.ndarray [shape=(n_songs, d), float64], in the targets' units
    alpha : float  the penalty kept.
    errors : dict  each penalty's mean squared error on the validation songs (scaled targets).
    """
    y_mean, y_scale = target_scaling(targets[train])
    y = (targets - y_mean) / y_scale
    alpha, weights, errors = choose_ridge(x[train], y[train], x[validation], y[validation], alphas)
    return ridge_predict(x, weights) * y_scale + y_mean, alpha, errors


def validation_songs_map(
    model: SongFactorModel, features: dict, data: ContentData, k: int, seed: int
) -> float:
    """mAP@k of a fitted content model on the validation songs, cold-like: every user with
    training plays on them ranks them by the model's scores (``hybrid`` chooses its content
    model on the same task)."""
    predicted = model.predict(features, data.validation_songs)
    songs = np.zeros((len(data.targets), predicted.shape[1]), np.float32)
    songs[data.validation_songs] = predicted
    vectors = ModelVectors(model.name, "", ["cold"], model.user_vectors(data), songs)
    task = songs_task("validation", data.train_plays, data.validation_songs, 0, seed)
    return mean_map(vectors, task, k, seed)


def tune_content_model(
    make: Callable[[int, TrainConfig], SongFactorModel],
    train_cfg: TrainConfig,
    width: int,
    trials: int,
    features: dict,
    data: ContentData,
    cfg: ContentTuneConfig,
    checkpoint_dir: Path,
) -> tuple[SongFactorModel, dict]:
    """Search a content model's training settings on the validation songs and fit it with
    the chosen ones.

    Parameters
    ----------
    make : callable
        ``(width, training config)`` -> an unfitted model whose network is that wide and
        trains with that config.
    train_cfg, width : TrainConfig, int
        params.yaml's own training config and width: the search's first trial, and what a
        trial's ``learning_rate`` and ``weight_decay`` (:meth:`ContentTuneConfig.space`)
        replace.
    trials : int
        Settings tried; 0 fits params.yaml's own without a search.
    checkpoint_dir : Path
        Each setting trains with its own checkpoints in a folder under it (an interrupted
        search resumes); without a search, in it.

    Returns
    -------
    model : SongFactorModel
        Fitted with the chosen values: the very model its trial scored.
    record : dict
        :func:`musicrec.models.search.summary` of the search, for ``reports/tuning``.
    """

    own = {
        "learning_rate": train_cfg.learning_rate,
        "weight_decay": train_cfg.weight_decay,
        "width": width,
    }

    def build(values: dict) -> SongFactorModel:
        training = replace(
            train_cfg, learning_rate=values["learning_rate"], weight_decay=values["weight_decay"]
        )
        return make(values["width"], training)

    def fit(values: dict) -> SongFactorModel:
        name = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
        return build(values).fit(features, data, Path(checkpoint_dir) / name)

    best: dict = {"score": -np.inf}  # the best model so far: the search's choice is kept

    def objective(values: dict) -> float:
        model = fit(values)
        score = validation_songs_map(model, features, data, cfg.map_k, cfg.seed)
        if score > best["score"]:
            best.update(score=score, values=values, model=model)
        return score

    if not trials:  # no search: the checkpoints where an unsearched model keeps them
        model = build(own).fit(features, data, Path(checkpoint_dir))
        return model, {**summary(own, own, []), "search_seconds": 0.0}
    chosen, trace = search(cfg.space(), objective, trials, cfg.seed, own)
    reused = best.get("values") == chosen
    model = best["model"] if reused else fit(chosen)
    record = summary(chosen, own, trace)
    # Time spent on settings not kept: the stage's wall time less this is the kept model's.
    kept = (
        next(t["seconds"] for t in trace if t["validation_map"] == best["score"]) if reused else 0
    )
    record["search_seconds"] = round(sum(t["seconds"] for t in trace) - kept, 3)
    return model, record


SHUFFLED = "_shuffled"  # the suffix of a model's shuffled control


def shuffled_targets(data: ContentData, seed: int = 0) -> ContentData:
    """``data`` with the training songs' targets dealt out among them at random: a model fitted
    on it pairs each song's audio with another song's factors. The shuffled control of an audio
    model (``<model>_shuffled``): what it scores is what the model scores without any real
    audio signal. The validation songs keep their own targets, so the control's settings are
    chosen as the model's are."""
    rng = np.random.default_rng([seed, 23])
    targets = data.targets.copy()
    targets[data.train_songs] = data.targets[rng.permutation(data.train_songs)]
    return replace(data, targets=targets)


def as_control(model: SongFactorModel) -> SongFactorModel:
    """Name a model fitted on :func:`shuffled_targets` as its control (``<name>_shuffled``)."""
    model.name = f"{model.name}{SHUFFLED}"
    model.description = (
        f"shuffled control of {model.description}: audio paired with other songs' factors"
    )
    return model


def load_predictor(
    directory: Path, n_users: int | None = None, n_songs: int | None = None
) -> SongFactorModel:
    """Load the ``predictor/`` folder of ``data/models/<name>/`` with the class the registry
    names for model ``<name>`` (:mod:`musicrec.registry`), held to the split's sizes
    ``n_users`` and ``n_songs`` where given."""
    directory = Path(directory)
    model_class = registry.model(directory.parent.name).load_predictor_class()
    return model_class.load(directory, n_users=n_users, n_songs=n_songs)


def save_content_model(
    models_dir: Path, model: SongFactorModel, features: dict, data: ContentData
) -> np.ndarray:
    """Predict every song's vector and write the model folder ``evaluate`` reads.

    The folder also holds ``predictor/``, the fitted model (for recommending new songs), except
    for a shuffled control, which nothing recommends with. Returns the predictions
    [shape=(n_songs, d)].
    """
    predicted = model.predict(features, data.songs).astype(np.float32)
    if not distributed.is_main():
        return predicted  # under torchrun, process 0 writes
    save_model(
        ModelVectors(
            model.name,
            model.description,
            list(model.splits),
            model.user_vectors(data),
            predicted,
            predicts="wmf_song_factors" if model.predicts_wmf_factors else None,
        ),
        Path(models_dir) / model.name,
        predictor=None if model.name.endswith(SHUFFLED) else model,
        index=data.index_digest,
    )
    return predicted


@contextmanager
def training_run(
    stage: str, args: argparse.Namespace, params: dict, tracked: tuple[str, ...]
) -> Iterator[tuple[dict, Tracker]]:
    """:func:`musicrec.stage.run_stage` for a training stage: in process 0 only.

    Under torchrun every process trains, but only process 0 times the stage, tracks it and
    writes (:func:`save_content_model` and :func:`publish_history` check it too); the others
    get a record nobody writes and a tracker that does nothing.
    """
    with distributed.process_group():
        if not distributed.is_main():
            yield {}, Tracker(None)
            return
        with run_stage(stage, args, params, tracked) as (record, tracker):
            yield record, tracker


def publish_history(name: str, history: list[dict], tracker, reports: Path) -> None:
    """A trained model's per-epoch losses: ``<reports>/plots/<name>_loss.csv`` (a DVC plot,
    and the report's training curves) and the stage's W&B run."""
    if distributed.is_main():
        write_loss_curve(history, Path(reports) / "plots" / f"{name}_loss.csv")
        tracker.log_history(name, history)


def publish_tuning(name: str, record: dict, tracker, reports: Path) -> None:
    """A content model's search (:func:`tune_content_model`): ``<reports>/tuning/<name>.json``
    and the stage's W&B run."""
    if distributed.is_main():
        write_json(Path(reports) / "tuning" / f"{name}.json", record)
        tracker.log_metrics({f"tune_{name}": {k: v for k, v in record.items() if k != "trace"}})


def content_stage_parser(name: str, doc: str, sections: list[str]) -> argparse.ArgumentParser:
    """The command line of a content-model stage: the usual folders plus features and
    checkpoints."""
    parser = stage_parser(name, doc, sections, ("split", "models", "features", "checkpoints"))
    return parser


def run_training_stage(
    stage: str,
    doc: str,
    argv: list[str] | None,
    feature_names: tuple[str, ...],
    configure: Callable[[dict], tuple[TrainConfig, Callable[..., Iterable[SongFactorModel]]]],
) -> int:
    """The ``main`` of a stage that trains content models with :func:`train` (``cnn``, ``dbn``).

    ``configure(params)`` reads the stage's sections (``<stage>``, ``<stage>_training`` and
    ``tune_content``)
    and returns the training config and ``fit_all(features, data, checkpoints)``, which yields
    each model once fitted. Each is saved, its losses published and its epochs recorded;
    ``<stage>_training.processes`` > 1 reruns the stage under torchrun first.
    """
    sections = (stage, f"{stage}_training", "tune_content")
    parser = content_stage_parser(stage, doc, list(sections))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    train_cfg, fit_all = configure(params)
    exit_code = distributed.relaunch_if_asked(stage, argv, train_cfg.processes)
    if exit_code is not None:
        return exit_code
    names = []
    with training_run(stage, args, params, sections) as (record, tracker):
        data = load_content_data(args.split, args.models / "wmf", args.features)
        features = {k: np.load(args.features / f"{k}.npy", mmap_mode="r") for k in feature_names}
        for model in fit_all(features, data, args.checkpoints):
            save_content_model(args.models, model, features, data)
            publish_history(model.name, model.history, tracker, args.reports)
            if getattr(model, "tuning", None) is not None:
                publish_tuning(model.name, model.tuning, tracker, args.reports)
                record[f"{model.name}_search_seconds"] = model.tuning["search_seconds"]
            record[f"{model.name}_epochs"] = len(model.history)
            names.append(model.name)
        record["device"] = str(pick_device(train_cfg.device))
        record.update(distributed.describe())
    if distributed.is_main():
        print(f"{stage}: {', '.join(names)} -> {args.models}")
    return 0
