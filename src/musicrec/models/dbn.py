"""Stage ``dbn``: the deep belief network models of Wang and Wang (ACM Multimedia 2014).

A song's feature vector ``f_v`` goes through a deep belief network (a Gaussian-Bernoulli RBM,
then Bernoulli-Bernoulli RBMs, pre-trained greedily by CD-k: :mod:`musicrec.models.rbm`); the
stack then becomes a feed-forward network ``x_v = DBN(f_v; Omega)`` that is fine-tuned jointly
with user preference vectors ``beta_u`` on the implicit-feedback objective

    sum_uv c_uv (p_uv - beta_u' x_v)^2 + lambda_beta sum_u ||beta_u - mu||^2 + wd ||Omega||^2

(``r_uv ~ N(beta_u' x_v, sigma_R^2)``, ``beta_u ~ N(mu, sigma_u^2 I)``; weight decay on Omega
through AdamW, none on ``beta`` and ``mu``, whose prior is the ``lambda_beta`` term). The
weighting is **full**: every user's confidence for every song of a mini-batch enters the loss
(``c = 1 + alpha log(1 + r / eps)`` for plays, as in ``wmf``; ``c = 1``, ``p = 0`` for the rest),
which on a catalogue of this size costs one dense (users x batch) product per step. Three models:

- ``hldbn``: the above; cold songs are scored from audio alone.
- ``hldbn_nopretrain``: the same network from a random start, to show what pre-training buys.
- ``hybrid_dbn``: ``r_uv = beta_u' x_v + gamma_u' y_v``, with ``gamma_u`` and ``y_v``
  initialised from the WMF factors and trained jointly; a song never trained on (a cold one)
  has ``y_v`` = its prior mean, 0.

**The input** ``f_v``: per song, the mean and standard deviation over the clip's frames of the
log-mel bands and of the MFCCs with their deltas (``features`` stage). A DBN is a fully connected
network on one fixed-length vector, and these statistics are the usual such summary of timbre,
loudness, brightness and their variability; unlike the CNN's windows they do not keep time order,
so tempo and rhythm reach them only through the deltas' spread.

A user held out as new (``cold_user``) gets ``beta_u`` (and ``gamma_u``) by one least-squares
fold-in from their seed plays, the song vectors held fixed, as for WMF.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from musicrec import registry
from musicrec.errors import MusicrecError
from musicrec.models.content import (
    ContentData,
    ContentTuneConfig,
    SongFactorModel,
    run_training_stage,
    song_feature_vectors,
    tune_content_model,
)
from musicrec.models.factorization import WMFConfig, confidence, fold_in
from musicrec.models.rbm import DBN, PretrainConfig
from musicrec.models.saved import (
    MAX_ROWS,
    MAX_WIDTH,
    check_shapes,
    check_split,
    int_field,
    int_list,
    make_settings,
    meta_section,
    npz_shapes,
    read_meta,
    read_weights,
    refusal,
)
from musicrec.models.training import (
    TrainConfig,
    inputs_digest,
    pick_device,
    seed_everything,
    train,
)
from musicrec.stage import read_config

_SOURCE = Path(__file__).read_text()
KINDS = ("hldbn", "hldbn_nopretrain", "hybrid_dbn")


@dataclass(frozen=True)
class DBNConfig:
    """``dbn`` params: layer sizes, pre-training, the prior on ``beta`` and the confidences."""

    layers: tuple[int, ...] = (256, 32)
    pretrain_epochs: int = 20
    pretrain_batch_size: int = 16
    cd_steps: int = 1
    pretrain_learning_rate: float = 0.05
    gaussian_learning_rate: float = 0.005
    momentum: float = 0.5
    pretrain_weight_decay: float = 0.0002
    lambda_beta: float = 1.0
    alpha: float = 2.0
    eps: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if not self.layers or min(self.layers) < 1:
            raise MusicrecError("dbn.layers: at least one hidden layer, every size >= 1")
        if self.lambda_beta < 0 or self.alpha < 0 or self.eps <= 0:
            raise MusicrecError("dbn: need lambda_beta >= 0, alpha >= 0 and eps > 0")

    def pretraining(self) -> PretrainConfig:
        return PretrainConfig(
            epochs=self.pretrain_epochs,
            batch_size=self.pretrain_batch_size,
            cd_steps=self.cd_steps,
            learning_rate=self.pretrain_learning_rate,
            gaussian_learning_rate=self.gaussian_learning_rate,
            momentum=self.momentum,
            weight_decay=self.pretrain_weight_decay,
            seed=self.seed,
        )


class PreferenceModel(nn.Module):
    """``scores = beta x' (+ gamma y')`` with ``x = network(f)``; the trainable whole."""

    def __init__(self, network: nn.Module, n_users: int, dim: int, wmf: tuple | None):
        super().__init__()
        self.network = network
        self.beta = nn.Parameter(0.01 * torch.randn(n_users, dim))
        self.mu = nn.Parameter(torch.zeros(dim))
        self.hybrid = wmf is not None
        if self.hybrid:
            self.gamma = nn.Parameter(torch.as_tensor(wmf[0], dtype=torch.float32).clone())
            self.y = nn.Parameter(torch.as_tensor(wmf[1], dtype=torch.float32).clone())

    def scores(self, f: torch.Tensor, songs: torch.Tensor) -> torch.Tensor:
        """[shape=(n_users, len(songs))] for song features ``f`` and song indices ``songs``."""
        out = self.beta @ self.network(f).T
        return out + self.gamma @ self.y[songs].T if self.hybrid else out

    def prior(self) -> torch.Tensor:
        return (self.beta - self.mu).pow(2).sum()

    def forward(self, f: torch.Tensor, songs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and the prior together: every parameter is reached by the forward, as DDP
        needs when training runs in several processes."""
        return self.scores(f, songs), self.prior()


def _network(n_in: int, layers: tuple[int, ...]) -> nn.Sequential:
    """The DBN's architecture as a sigmoid network with PyTorch's default random start."""
    sizes = [n_in, *layers]
    modules: list[nn.Module] = []
    for n_from, n_to in zip(sizes[:-1], sizes[1:], strict=True):
        modules += [nn.Linear(n_from, n_to), nn.Sigmoid()]
    return nn.Sequential(*modules)


class DBNModel(SongFactorModel):
    """``hldbn``, ``hldbn_nopretrain`` or ``hybrid_dbn`` (module docstring)."""

    predicts_wmf_factors = False
    splits = registry.SPLITS

    def __init__(self, kind: str, cfg: DBNConfig, train_cfg: TrainConfig):
        if kind not in KINDS:
            raise MusicrecError(f"dbn: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.kind, self.cfg, self.train_cfg = kind, cfg, train_cfg
        self.name = kind
        self.description = {
            "hldbn": "DBN on song features, pre-trained, fine-tuned with user vectors (HLDBN)",
            "hldbn_nopretrain": "HLDBN's network from a random start (no pre-training)",
            "hybrid_dbn": "HLDBN plus a CF term gamma_u'y_v initialised from WMF",
        }[kind]
        self.device = pick_device(train_cfg.device)
        self.model: PreferenceModel | None = None
        self.arrays: dict[str, np.ndarray] = {}

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        features: dict,
        data: ContentData,
        checkpoint_dir: Path,
        start_from: DBNModel | None = None,
    ) -> DBNModel:
        """Pre-train (unless ``hldbn_nopretrain``) and fine-tune.

        ``start_from``: a fitted ``hldbn`` whose network, ``beta`` and ``mu`` start
        ``hybrid_dbn`` (its ``gamma`` and ``y`` start from WMF). Trained jointly from scratch,
        the CF term explains the training plays so fast that the content term learns little,
        and cold songs, which have only the content term, suffer.
        """
        seed_everything(self.train_cfg.seed)
        f_all = song_feature_vectors(features, data.songs)
        train_f = f_all[data.train_songs]
        self.arrays = {
            "f_mean": train_f.mean(axis=0),
            "f_std": train_f.std(axis=0) + 1e-6,
        }
        f_all = torch.from_numpy(self._standardise(f_all))
        self._build(f_all, data, start_from)
        step_loss, validation_loss = self._losses(f_all.to(self.device), data)
        batch, n_train = self.train_cfg.batch_size, len(data.train_songs)

        def batches(rng):
            order = rng.permutation(data.train_songs)
            return (order[i : i + batch] for i in range(0, n_train, batch))

        run_id = inputs_digest(
            self.kind,
            asdict(self.cfg),
            asdict(self.train_cfg),
            train_f,
            data.targets,
            data.user_factors,
            start_from.arrays["user_vectors"] if start_from is not None else None,
            _SOURCE,
        )
        self.history = train(
            self.model,
            batches,
            step_loss,
            validation_loss,
            self.train_cfg,
            checkpoint_dir,
            run_id,
            desc=self.name,
            no_weight_decay=("beta", "mu", "gamma", "y"),
        ).history
        self.model.cpu()
        self._fold_in_new_users(data, self._song_vectors(f_all.numpy(), data.songs))
        return self

    def _build(self, f_all: torch.Tensor, data: ContentData, start_from: DBNModel | None) -> None:
        """The network (pre-trained, fresh, or ``start_from``'s) and the preference model
        around it, on the device; ``f_all`` [shape=(n_songs, n_inputs)] standardised."""
        torch.manual_seed(self.cfg.seed)
        if start_from is not None:
            network = copy.deepcopy(start_from.model.network).cpu()
        elif self.kind == "hldbn_nopretrain":
            network = _network(f_all.shape[1], self.cfg.layers)
        else:
            dbn = DBN([f_all.shape[1], *self.cfg.layers])
            dbn.pretrain(f_all[data.train_songs], self.cfg.pretraining())
            network = dbn.to_network()
        wmf = (data.user_factors, data.targets) if self.kind == "hybrid_dbn" else None
        self.model = PreferenceModel(network, len(data.user_factors), self.cfg.layers[-1], wmf)
        if start_from is not None:
            with torch.no_grad():
                self.model.beta.copy_(start_from.model.beta)
                self.model.mu.copy_(start_from.model.mu)
        self.model.to(self.device)

    def _losses(self, f_device: torch.Tensor, data: ContentData):
        """``step_loss(model, songs)`` and ``validation_loss(model)``: the confidence-weighted
        squared error of a batch of songs over all users, plus the prior on ``beta_u``."""
        conf = confidence(data.train_plays, self.cfg.alpha, self.cfg.eps).tocsc()
        n_train = len(data.train_songs)

        def weighted_error(
            model: nn.Module, songs: np.ndarray
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """The weighted error of ``songs`` and the prior (``model``: or its DDP wrapper)."""
            dense = conf[:, songs].toarray()
            played = torch.from_numpy(dense > 0).to(self.device)
            c = torch.from_numpy(np.where(dense > 0, dense, 1.0)).to(self.device)  # unplayed: 1
            index = torch.from_numpy(songs).to(self.device)
            scores, prior = model(f_device[index], index)
            error = played.float() - scores
            return (c * error.pow(2)).sum(dim=0).mean(), prior  # per song, summed over users

        def step_loss(model, songs):
            error, prior = weighted_error(model, songs)
            return error + self.cfg.lambda_beta / n_train * prior

        def validation_loss(model):
            return weighted_error(model, data.validation_songs)[0].item()

        return step_loss, validation_loss

    def _fold_in_new_users(self, data: ContentData, songs: np.ndarray) -> None:
        """``beta_u`` (and ``gamma_u``) of held-out users from their seeds; songs fixed."""
        users = self._user_matrix()
        if data.new_users is not None and len(data.new_users):
            seeds = confidence(data.new_user_seeds[data.new_users], self.cfg.alpha, self.cfg.eps)
            solver = WMFConfig(factors=songs.shape[1], regularization=self.cfg.lambda_beta)
            users[data.new_users] = fold_in(songs, sp.csr_matrix(seeds), solver)
        self.arrays["user_vectors"] = users

    def _user_matrix(self) -> np.ndarray:
        parts = [self.model.beta] + ([self.model.gamma] if self.model.hybrid else [])
        return torch.cat(parts, dim=1).detach().cpu().numpy().astype(np.float32)

    def _standardise(self, f: np.ndarray) -> np.ndarray:
        return ((f - self.arrays["f_mean"]) / self.arrays["f_std"]).astype(np.float32)

    # -- predicting --------------------------------------------------------------------------
    def _song_vectors(self, f_standardised: np.ndarray, songs: np.ndarray) -> np.ndarray:
        """Song vectors ``x_v`` (hybrid: ``[x_v, y_v]``, ``y_v = 0`` for a song never trained)
        [shape=(len(songs), d)] from standardised features of catalogue ``songs`` (indices;
        -1 for a song outside the catalogue)."""
        self.model.eval()
        with torch.no_grad():
            x = self.model.network(torch.from_numpy(f_standardised)).numpy()
        if not self.model.hybrid:
            return x.astype(np.float32)
        if len(songs) and songs.max() >= self.model.y.shape[0]:
            raise MusicrecError(
                f"hybrid_dbn was fitted on {self.model.y.shape[0]} songs; song index "
                f"{songs.max()} is not one of them (a new song goes through predict_new)"
            )
        y = np.zeros((len(songs), self.model.y.shape[1]), np.float32)
        known = songs >= 0
        y[known] = self.model.y.detach().numpy()[songs[known]]
        return np.hstack([x, y]).astype(np.float32)

    def predict(self, features: dict, rows: np.ndarray) -> np.ndarray:
        return self._song_vectors(self._standardise(song_feature_vectors(features, rows)), rows)

    def predict_new(self, features: dict) -> np.ndarray:
        """New songs: the network's ``x_v``; a hybrid's ``y_v`` is its prior mean, 0, as for a
        cold song (row -1 matches no catalogue song)."""
        n_songs = len(features["logmel"])
        f = self._standardise(song_feature_vectors(features, np.arange(n_songs)))
        return self._song_vectors(f, np.full(n_songs, -1))

    def user_vectors(self, data: ContentData) -> np.ndarray:
        return self.arrays["user_vectors"]

    # -- saving ------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        np.savez(directory / "arrays.npz", **self.arrays)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / "model.pt")
        meta = {
            "kind": self.kind,
            "dbn": asdict(self.cfg),
            "train": {**asdict(self.train_cfg), "device": "cpu"},
            "n_inputs": int(self.arrays["f_mean"].shape[0]),
            "n_users": int(self.model.beta.shape[0]),
            "cf_dim": int(self.model.y.shape[1]) if self.model.hybrid else 0,
            "n_songs": int(self.model.y.shape[0]) if self.model.hybrid else 0,
        }
        (directory / "config.json").write_text(json.dumps(meta))

    @classmethod
    def load(
        cls, directory: Path, n_users: int | None = None, n_songs: int | None = None
    ) -> DBNModel:
        """Rebuild a model that :meth:`save` wrote into ``directory``.

        A model folder may come from elsewhere (``dvc get``), so nothing it declares is
        trusted: every size in ``config.json`` is checked, before anything of that size is
        allocated, against :data:`MAX_WIDTH`, :data:`MAX_LAYERS` and :data:`MAX_ROWS`, against
        the split's sizes when the caller gives them, and against the shapes that
        ``arrays.npz`` and ``model.pt`` hold (read from their headers; the weights
        memory-mapped).

        Parameters
        ----------
        directory : Path
            The ``predictor/`` folder.
        n_users, n_songs : int, optional
            The split's numbers of users and songs, which ``beta`` [shape=(n_users, d)] and
            a hybrid's ``y`` [shape=(n_songs, cf_dim)] must match.

        Raises
        ------
        MusicrecError
            Naming the file, the field, the declared value and the expected one.
        """
        directory = Path(directory)
        config = directory / "config.json"
        meta = read_meta(config)
        section = meta_section(config, meta, "dbn")
        layers = int_list(config, "dbn.layers", section.get("layers"), 1, MAX_WIDTH)
        n_inputs = int_field(config, "n_inputs", meta.get("n_inputs"), 1, MAX_WIDTH)
        check_split(config, "n_users", meta.get("n_users"), n_users, "users")
        users = int_field(config, "n_users", meta.get("n_users"), 1, MAX_ROWS)
        kind = meta.get("kind")
        if kind not in KINDS:
            raise refusal(config, f"kind is {kind!r:.60}, expected one of {', '.join(KINDS)}")
        hybrid = kind == "hybrid_dbn"
        cf_dim = songs = 0  # gamma and y: a hybrid's alone
        if hybrid:
            cf_dim = int_field(config, "cf_dim", meta.get("cf_dim"), 1, MAX_WIDTH)
            check_split(config, "n_songs", meta.get("n_songs"), n_songs, "songs")
            songs = int_field(config, "n_songs", meta.get("n_songs"), 1, MAX_ROWS)
        model = cls(
            kind,
            make_settings(config, "dbn", DBNConfig, section),
            make_settings(config, "train", TrainConfig, meta_section(config, meta, "train")),
        )
        arrays_path = directory / "arrays.npz"
        check_shapes(
            arrays_path,
            npz_shapes(arrays_path),
            {
                "f_mean": (n_inputs,),
                "f_std": (n_inputs,),
                "user_vectors": (users, layers[-1] + cf_dim),
            },
        )
        with np.load(arrays_path) as arrays:
            model.arrays = {k: arrays[k] for k in arrays.files}
        # The module's shapes first, with no memory behind them (the meta device), to hold
        # the weights file to before a byte of that size is allocated.
        with torch.device("meta"):
            cf = (torch.empty(users, cf_dim), torch.empty(songs, cf_dim)) if hybrid else None
            skeleton = PreferenceModel(_network(n_inputs, model.cfg.layers), users, layers[-1], cf)
        state = read_weights(directory / "model.pt", skeleton)
        model.model = skeleton.to_empty(device="cpu")
        model.model.load_state_dict(state)
        model.model.eval()
        return model


def fit_models(
    kinds: list[str],
    cfg: DBNConfig,
    train_cfg: TrainConfig,
    features: dict,
    data: ContentData,
    checkpoint_dir: Path,
    done: dict[str, DBNModel] | None = None,
) -> Iterator[DBNModel]:
    """Fit the models of ``kinds`` in order, yielding each as soon as it is fitted (those
    in ``done``, fitted already, as they are).

    ``hybrid_dbn`` starts from ``hldbn``'s network and user vectors when ``hldbn`` was fitted
    before it (see :meth:`DBNModel.fit`). Checkpoints go to ``checkpoint_dir/<kind>``.
    """
    fitted: dict[str, DBNModel] = dict(done or {})
    for kind in kinds:
        if kind not in fitted:
            start = fitted.get("hldbn") if kind == "hybrid_dbn" else None
            model = DBNModel(kind, cfg, train_cfg)
            fitted[kind] = model.fit(features, data, Path(checkpoint_dir) / kind, start_from=start)
        yield fitted[kind]


@dataclass(frozen=True)
class DBNRun:
    """Which DBN models the ``dbn`` stage trains (``dbn.models``), in this order."""

    models: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(KINDS))
        if unknown or not self.models:
            raise MusicrecError(f"dbn.models: a list of {', '.join(KINDS)}, not {self.models}")


def main(argv: list[str] | None = None) -> int:
    def configure(params: dict):
        cfg, run = read_config(params, "dbn", DBNConfig, DBNRun)
        train_cfg = read_config(params, "dbn_training", TrainConfig)
        tune_cfg = read_config(params, "tune_content", ContentTuneConfig)

        def fit_all(features: dict, data: ContentData, checkpoints: Path):
            if "hldbn" not in run.models:  # the search is hldbn's
                return fit_models(run.models, cfg, train_cfg, features, data, checkpoints)

            def make(width: int, training: TrainConfig) -> DBNModel:
                return DBNModel("hldbn", replace(cfg, layers=(width, *cfg.layers[1:])), training)

            hldbn, tuning = tune_content_model(
                make,
                train_cfg,
                cfg.layers[0],
                tune_cfg.dbn,
                features,
                data,
                tune_cfg,
                checkpoints / "hldbn",
            )
            hldbn.tuning = tuning  # published by run_training_stage
            # The choice serves the other DBN models too (they share hldbn's network).
            return fit_models(
                run.models,
                hldbn.cfg,
                hldbn.train_cfg,
                features,
                data,
                checkpoints,
                {"hldbn": hldbn},
            )

        return train_cfg, fit_all

    return run_training_stage("dbn", __doc__, argv, ("logmel", "mfcc"), configure)
