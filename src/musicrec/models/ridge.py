"""Stage ``ridge``: ``stats_ridge``, ridge regression from a clip's plain statistics to its WMF
factors: the simplest audio model, the yardstick any learnt audio model must at least match.

A song's input is the mean and standard deviation over its clip's frames of every log-mel band
and every MFCC (with deltas): 2 x (64 + 60) numbers, standardised on the training songs
(:func:`musicrec.models.content.song_feature_vectors`, the DBN's input too). Ridge maps them to
the song's WMF factors (scaled by :func:`~musicrec.models.content.target_scaling`); the
penalty is the one of ``ridge.alphas`` with the lowest squared error on the validation songs,
then the model is refitted on the training songs with it. Closed form: no epochs, no seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from musicrec.errors import MusicrecError
from musicrec.io import load_params
from musicrec.models.content import (
    ContentData,
    SongFactorModel,
    as_control,
    choose_ridge,
    content_stage_parser,
    load_content_data,
    ridge_predict,
    save_content_model,
    shuffled_targets,
    song_feature_vectors,
    target_scaling,
)
from musicrec.models.saved import (
    check_bounded,
    make_settings,
    meta_section,
    npz_shapes,
    read_meta,
    refusal,
)
from musicrec.stage import read_config, run_stage


@dataclass(frozen=True)
class RidgeConfig:
    """``ridge`` in params.yaml."""

    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)  # penalties tried

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.alphas or min(self.alphas) <= 0:
            raise MusicrecError("ridge.alphas: a non-empty list of penalties > 0")


class RidgeModel(SongFactorModel):
    """``stats_ridge``: summary statistics of the clip -> ridge -> WMF song factors."""

    name = "stats_ridge"
    description = "ridge on the mean and spread of each log-mel band and MFCC over the clip"

    def __init__(self, cfg: RidgeConfig):
        self.cfg = cfg
        self.arrays: dict[str, np.ndarray] = {}
        self.alpha: float | None = None  # the penalty chosen on validation
        self.history: list[dict] = []

    def _inputs(self, features: dict, rows: np.ndarray) -> np.ndarray:
        f = song_feature_vectors(features, rows).astype(np.float64)
        return (f - self.arrays["x_mean"]) / self.arrays["x_std"]

    def fit(self, features: dict, data: ContentData, checkpoint_dir: Path) -> RidgeModel:
        f_train = song_feature_vectors(features, data.train_songs).astype(np.float64)
        self.arrays = {"x_mean": f_train.mean(axis=0), "x_std": f_train.std(axis=0) + 1e-6}
        y_mean, y_scale = target_scaling(data.targets[data.train_songs])
        self.arrays.update(y_mean=y_mean.astype(np.float64), y_scale=y_scale.astype(np.float64))
        x = self._inputs(features, data.train_songs)
        y = (data.targets[data.train_songs] - y_mean) / y_scale
        x_val = self._inputs(features, data.validation_songs)
        y_val = (data.targets[data.validation_songs] - y_mean) / y_scale
        self.alpha, self.arrays["weights"], errors = choose_ridge(
            x, y, x_val, y_val, self.cfg.alphas
        )
        self.history = [
            {"epoch": i, "alpha": a, "val_loss": e} for i, (a, e) in enumerate(errors.items())
        ]
        return self

    def predict(self, features: dict, rows: np.ndarray) -> np.ndarray:
        x = self._inputs(features, rows)
        y = ridge_predict(x, self.arrays["weights"])
        return (y * self.arrays["y_scale"] + self.arrays["y_mean"]).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        np.savez(directory / "arrays.npz", **self.arrays)
        (directory / "config.json").write_text(
            json.dumps({"ridge": asdict(self.cfg), "alpha": self.alpha})
        )

    @classmethod
    def load(
        cls, directory: Path, n_users: int | None = None, n_songs: int | None = None
    ) -> RidgeModel:
        """Rebuild a model that :meth:`save` wrote (no array of it has a row per user or
        song: ``n_users`` and ``n_songs`` are not needed)."""
        config = Path(directory) / "config.json"
        meta = read_meta(config)
        model = cls(
            make_settings(config, "ridge", RidgeConfig, meta_section(config, meta, "ridge"))
        )
        alpha = meta.get("alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise refusal(config, f"alpha is {alpha!r:.60}, expected a number")
        model.alpha = alpha
        arrays_path = Path(directory) / "arrays.npz"
        check_bounded(arrays_path, npz_shapes(arrays_path))
        with np.load(arrays_path) as arrays:
            model.arrays = {k: arrays[k] for k in arrays.files}
        return model


def main(argv: list[str] | None = None) -> int:
    parser = content_stage_parser("ridge", __doc__, ["ridge"])
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "ridge", RidgeConfig)
    with run_stage("ridge", args, params, ("ridge",)) as (record, _):
        data = load_content_data(args.split, args.models / "wmf", args.features)
        features = {
            k: np.load(args.features / f"{k}.npy", mmap_mode="r") for k in ("logmel", "mfcc")
        }
        model = RidgeModel(cfg).fit(features, data, args.checkpoints)
        save_content_model(args.models, model, features, data)
        control = as_control(
            RidgeModel(cfg).fit(features, shuffled_targets(data), args.checkpoints)
        )
        save_content_model(args.models, control, features, data)
        record.update(alpha=model.alpha, control_alpha=control.alpha)
    print(f"ridge: stats_ridge (alpha {model.alpha:g}) and its shuffled control -> {args.models}")
    return 0
