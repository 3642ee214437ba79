"""Stage ``bow``: the bag-of-words baselines of van den Oord et al. (2013), section 4.

Each song's MFCC + delta + delta-delta frames (``features``) are standardised and quantised
against a vocabulary learnt by k-means (MiniBatchKMeans) on frames of the training songs; a song
becomes its term-frequency histogram over the vocabulary, log-compressed and reduced by PCA.
Two regressors map that vector to the song's WMF factors:

- ``bow_linear``: ridge regression;
- ``bow_mlp``: a one-hidden-layer ReLU network trained with MSE, stopped early on the
  validation slice (the shared loop of :mod:`musicrec.models.training`).

Both predict factors for every song; ``evaluate`` ranks songs for each user with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from musicrec.errors import MusicrecError
from musicrec.io import load_params, section
from musicrec.models.content import (
    ContentData,
    ContentTuneConfig,
    SongFactorModel,
    as_control,
    content_stage_parser,
    load_content_data,
    publish_history,
    publish_tuning,
    save_content_model,
    shuffled_targets,
    target_scaling,
    tune_content_model,
)
from musicrec.models.saved import (
    MAX_WIDTH,
    check_shapes,
    int_field,
    make_settings,
    meta_section,
    npz_shapes,
    read_meta,
    read_weights,
    refusal,
    vector_length,
)
from musicrec.models.training import (
    TrainConfig,
    inputs_digest,
    seed_everything,
    train,
)
from musicrec.stage import read_config, run_stage

_SOURCE = Path(__file__).read_text()


@dataclass(frozen=True)
class BowConfig:
    """``bow`` params: vocabulary, PCA, ridge and MLP sizes."""

    vocabulary_size: int = 1024
    frames_per_song: int = 200
    pca_components: int = 128
    ridge_alpha: float = 10.0
    hidden_units: int = 256
    dropout: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vocabulary_size < 2 or self.pca_components < 1 or self.hidden_units < 1:
            raise MusicrecError("bow: vocabulary_size >= 2, pca_components >= 1, hidden_units >= 1")


class BagOfWords:
    """Frames -> vocabulary histogram -> PCA vector; fitted on training songs only.

    All state is arrays (``state()`` / ``from_state``), saved as ``.npz``: nothing is pickled.
    """

    def __init__(self, cfg: BowConfig):
        self.cfg = cfg
        self.frame_mean = self.frame_std = self.centres = None
        self.pca_mean = self.pca_components = None
        # Transforms already computed: (frames array, rows, result), the array held so that it
        # is the same object, not one that reuses its id. A search fits bow_mlp once per trial
        # on the same songs, and the words of every frame cost more than the MLP.
        self._transformed: list[tuple[np.ndarray, bytes, np.ndarray]] = []

    def fit(self, frames: np.ndarray, rows: np.ndarray) -> BagOfWords:
        """Learn the vocabulary and PCA from songs ``rows`` of ``frames`` [(n, dims, t)]."""
        self._transformed.clear()
        rng = np.random.default_rng(self.cfg.seed)
        n_frames = frames.shape[2]
        take = min(self.cfg.frames_per_song, n_frames)
        sample = np.concatenate(
            [
                np.asarray(frames[r][:, rng.choice(n_frames, take, replace=False)], np.float32).T
                for r in rows
            ]
        )
        self.frame_mean, self.frame_std = sample.mean(0), sample.std(0) + 1e-6
        if self.cfg.vocabulary_size > len(sample):
            raise MusicrecError(
                "bow: fewer sampled frames than vocabulary words; lower "
                "bow.vocabulary_size or raise bow.frames_per_song"
            )
        kmeans = MiniBatchKMeans(
            self.cfg.vocabulary_size,
            batch_size=4096,
            n_init=1,
            random_state=self.cfg.seed,
            max_iter=50,
        )
        self.centres = kmeans.fit((sample - self.frame_mean) / self.frame_std).cluster_centers_
        histograms = self.histograms(frames, rows)
        n_components = min(self.cfg.pca_components, *histograms.shape)
        pca = PCA(n_components, random_state=self.cfg.seed).fit(histograms)
        self.pca_mean, self.pca_components = pca.mean_, pca.components_
        return self

    def histograms(self, frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """log(1 + term frequency) [shape=(len(rows), vocabulary_size)]."""
        centres = self.centres.astype(np.float32)
        centre_norms = (centres**2).sum(1)
        out = np.zeros((len(rows), len(centres)), np.float32)
        for i, r in enumerate(rows):
            x = (np.asarray(frames[r], np.float32).T - self.frame_mean) / self.frame_std
            words = np.argmin(centre_norms[None, :] - 2 * x @ centres.T, axis=1)
            out[i] = np.bincount(words, minlength=len(centres)) / len(words)
        return np.log1p(100 * out)

    def transform(self, frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """PCA vectors [shape=(len(rows), n_components)] (a copy: callers may change it)."""
        key = np.asarray(rows, np.int64).tobytes()
        for seen, seen_key, result in self._transformed:
            if seen is frames and seen_key == key:
                return result.copy()
        result = (self.histograms(frames, rows) - self.pca_mean) @ self.pca_components.T
        self._transformed = [*self._transformed[-3:], (frames, key, result)]  # 4 at most
        return result.copy()

    def state(self) -> dict[str, np.ndarray]:
        return {
            k: np.asarray(getattr(self, k))
            for k in ("frame_mean", "frame_std", "centres", "pca_mean", "pca_components")
        }


class MLP(torch.nn.Module):
    """BOW vector -> hidden ReLU layer (dropout) -> song factors."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, dropout: float):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, n_hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(n_hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BowModel(SongFactorModel):
    """``bow_linear`` (ridge) or ``bow_mlp`` on the bag-of-words vector of a song's MFCCs.

    A vocabulary already fitted (``bow``) can be shared by both, so k-means runs once.
    """

    def __init__(
        self, kind: str, cfg: BowConfig, train_cfg: TrainConfig, bow: BagOfWords | None = None
    ):
        if kind not in ("linear", "mlp"):
            raise MusicrecError(f"bow: kind must be linear or mlp, not {kind!r}")
        self.kind, self.cfg, self.train_cfg = kind, cfg, train_cfg
        self.name = f"bow_{kind}"
        self.description = f"{'ridge' if kind == 'linear' else 'MLP'} on MFCC bag-of-words"
        self.bow = bow or BagOfWords(cfg)
        self.arrays: dict[str, np.ndarray] = {}
        self.mlp: MLP | None = None

    def _inputs(self, features: dict, rows: np.ndarray) -> np.ndarray:
        return (self.bow.transform(features["mfcc"], rows) / self.arrays["input_scale"]).astype(
            np.float32
        )

    def fit(self, features: dict, data: ContentData, checkpoint_dir: Path) -> BowModel:
        seed_everything(self.cfg.seed)
        frames = features["mfcc"]
        if self.bow.centres is None:
            self.bow.fit(frames, data.train_songs)
        raw = self.bow.transform(frames, data.train_songs)
        self.arrays["input_scale"] = raw.std(0) + 1e-6
        train_x = (raw / self.arrays["input_scale"]).astype(np.float32)
        train_y = data.targets[data.train_songs]
        if self.kind == "linear":
            ridge = Ridge(alpha=self.cfg.ridge_alpha).fit(train_x, train_y)
            self.arrays.update(
                coef=ridge.coef_.T.astype(np.float32), intercept=ridge.intercept_.astype(np.float32)
            )
            return self
        y_mean, y_std = target_scaling(train_y)
        self.arrays.update(y_mean=y_mean, y_std=y_std)
        val_x = self._inputs(features, data.validation_songs)
        tx, ty = torch.from_numpy(train_x), torch.from_numpy((train_y - y_mean) / y_std)
        vx = torch.from_numpy(val_x)
        vy = torch.from_numpy((data.targets[data.validation_songs] - y_mean) / y_std)
        self.mlp = MLP(train_x.shape[1], self.cfg.hidden_units, train_y.shape[1], self.cfg.dropout)
        batch = self.train_cfg.batch_size

        def batches(rng):
            order = rng.permutation(len(tx))
            return (order[i : i + batch] for i in range(0, len(order), batch))

        def step_loss(model, idx):
            return torch.nn.functional.mse_loss(model(tx[idx]), ty[idx])

        def validation_loss(model):
            return torch.nn.functional.mse_loss(model(vx), vy).item()

        # The module's source is part of the id: changed code never resumes an old checkpoint.
        run_id = inputs_digest(
            asdict(self.cfg), asdict(self.train_cfg), ty.numpy(), train_x, _SOURCE
        )
        self.history = train(
            self.mlp,
            batches,
            step_loss,
            validation_loss,
            self.train_cfg,
            checkpoint_dir,
            run_id,
            desc=self.name,
        ).history
        return self

    def predict(self, features: dict, rows: np.ndarray) -> np.ndarray:
        x = self._inputs(features, rows)
        if self.kind == "linear":
            return x @ self.arrays["coef"] + self.arrays["intercept"]
        with torch.no_grad():
            out = self.mlp(torch.from_numpy(x)).numpy()
        return (out * self.arrays["y_std"] + self.arrays["y_mean"]).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        np.savez(directory / "arrays.npz", **self.bow.state(), **self.arrays)
        (directory / "config.json").write_text(
            json.dumps(
                {"kind": self.kind, "bow": asdict(self.cfg), "train": asdict(self.train_cfg)}
            )
        )
        if self.mlp is not None:
            torch.save(self.mlp.state_dict(), directory / "mlp.pt")

    @classmethod
    def load(
        cls, directory: Path, n_users: int | None = None, n_songs: int | None = None
    ) -> BowModel:
        """Rebuild a model that :meth:`save` wrote into ``directory`` (its ``predictor/``).

        A model folder may come from elsewhere (``dvc get``), so nothing it declares is
        trusted: the vocabulary, PCA and hidden sizes in ``config.json`` and the shapes in
        ``arrays.npz`` are checked against :data:`MAX_WIDTH` and against each other, and
        ``mlp.pt``'s tensors against the network they make, before anything of that size is
        allocated (the arrays' headers read first, the weights memory-mapped).

        Raises
        ------
        MusicrecError
            Naming the file, the field, the declared value and the expected one.
        """
        directory = Path(directory)
        config = directory / "config.json"
        meta = read_meta(config)
        section = meta_section(config, meta, "bow")
        words = int_field(
            config, "bow.vocabulary_size", section.get("vocabulary_size"), 2, MAX_WIDTH
        )
        components = int_field(
            config, "bow.pca_components", section.get("pca_components"), 1, MAX_WIDTH
        )
        hidden = int_field(config, "bow.hidden_units", section.get("hidden_units"), 1, MAX_WIDTH)
        kind = meta.get("kind")
        if kind not in ("linear", "mlp"):
            raise refusal(config, f"kind is {kind!r:.60}, expected linear or mlp")
        model = cls(
            kind,
            make_settings(config, "bow", BowConfig, section),
            make_settings(config, "train", TrainConfig, meta_section(config, meta, "train")),
        )
        arrays_path = directory / "arrays.npz"
        shapes = npz_shapes(arrays_path)
        dims, fitted, n_out = (
            int_field(arrays_path, f"{name}'s length", vector_length(shapes.get(name)), 1, high)
            for name, high in (
                ("frame_mean", MAX_WIDTH),
                ("input_scale", components),  # PCA keeps at most bow.pca_components
                ("intercept" if kind == "linear" else "y_mean", MAX_WIDTH),
            )
        )
        expected = {
            "frame_mean": (dims,),
            "frame_std": (dims,),
            "centres": (words, dims),
            "pca_mean": (words,),
            "pca_components": (fitted, words),
            "input_scale": (fitted,),
        }
        if kind == "linear":
            expected.update(coef=(fitted, n_out), intercept=(n_out,))
        else:
            expected.update(y_mean=(n_out,), y_std=(n_out,))
        check_shapes(arrays_path, shapes, expected)
        with np.load(arrays_path) as arrays:
            for key in arrays.files:
                if hasattr(model.bow, key):  # the vocabulary's state
                    setattr(model.bow, key, arrays[key])
                else:
                    model.arrays[key] = arrays[key]
        if model.kind == "mlp":
            # The network's shapes first, with no memory behind them (the meta device), to
            # hold the weights file to before a byte of that size is allocated.
            with torch.device("meta"):
                skeleton = MLP(fitted, hidden, n_out, model.cfg.dropout)
            state = read_weights(directory / "mlp.pt", skeleton)
            model.mlp = MLP(fitted, hidden, n_out, model.cfg.dropout)
            model.mlp.load_state_dict(state)
            model.mlp.eval()
        return model


def bow_mlp_training(values: dict) -> TrainConfig:
    """``bow_mlp`` params as a :class:`TrainConfig`. The MLP always trains on the CPU in one
    process (a network this small gains nothing from a GPU or from torchrun), so asking for
    anything else is an error, not a setting silently ignored."""
    values = dict(values)
    unsupported = {
        key: values.pop(key)
        for key, allowed in (("device", "cpu"), ("processes", 1))
        if key in values and values[key] != allowed
    }
    if unsupported:
        raise MusicrecError(
            f"bow_mlp: {unsupported} is not supported: the bag-of-words MLP trains on the CPU in "
            "one process; remove these keys from params.yaml"
        )
    return TrainConfig(**{**values, "device": "cpu", "processes": 1})


def main(argv: list[str] | None = None) -> int:
    parser = content_stage_parser("bow", __doc__, ["bow", "bow_mlp", "tune_content"])
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "bow", BowConfig)
    train_cfg = bow_mlp_training(section(params, "bow_mlp"))
    tune_cfg = read_config(params, "tune_content", ContentTuneConfig)
    with run_stage("bow", args, params, ("bow", "bow_mlp", "tune_content")) as (record, tracker):
        data = load_content_data(args.split, args.models / "wmf", args.features)
        features = {"mfcc": np.load(args.features / "mfcc.npy", mmap_mode="r")}
        vocabulary = BagOfWords(cfg).fit(features["mfcc"], data.train_songs)
        linear = BowModel("linear", cfg, train_cfg, vocabulary)
        save_content_model(
            args.models, linear.fit(features, data, args.checkpoints / "bow_linear"), features, data
        )
        control = BowModel("linear", cfg, train_cfg, vocabulary)
        control.fit(features, shuffled_targets(data), args.checkpoints / "bow_linear_shuffled")
        save_content_model(args.models, as_control(control), features, data)

        def make_mlp(width: int, training: TrainConfig) -> BowModel:
            return BowModel("mlp", replace(cfg, hidden_units=width), training, vocabulary)

        mlp, tuning = tune_content_model(
            make_mlp,
            train_cfg,
            cfg.hidden_units,
            tune_cfg.bow_mlp,
            features,
            data,
            tune_cfg,
            args.checkpoints / "bow_mlp",
        )
        save_content_model(args.models, mlp, features, data)
        publish_history("bow_mlp", mlp.history, tracker, args.reports)
        publish_tuning("bow_mlp", tuning, tracker, args.reports)
        record.update(
            epochs=len(mlp.history),
            tuning_trials=tuning["trials"],
            bow_mlp_search_seconds=tuning["search_seconds"],
        )
    print(f"bow: bow_linear (and its shuffled control) and bow_mlp -> {args.models}")
    return 0
