"""Stage ``cnn``: the convolutional network of van den Oord, Dieleman and Schrauwen (2013).

Input: a window of about 3 s of a song's log-mel spectrogram, the mel bins as channels,
standardised per bin with training statistics. Three 1-D convolutions over time (batch norm,
ReLU, max-pooling between them), then global temporal pooling (mean, max and L2 norm over
time, concatenated), a dense ReLU layer with dropout and a linear output of the WMF factor size.
Training crops windows at random from the training songs (a random clip, then a random place
in it); a song's prediction is the mean of its predictions over windows spanning each of its
clips (half-window hop), all clips together (``features.clips``).

Three objectives, one model each (``cnn.objectives``):

- ``cnn_mse``: mean squared error on the WMF song factors (rescaled by one common scale);
- ``cnn_wpe``: the weighted prediction error on the preferences themselves,
  ``sum_u c_uv (p_uv - u_u' v_hat)^2`` over users sampled for each batch, with the WMF user
  factors ``u_u`` fixed (confidences as in ``wmf``);
- ``cnn_contrastive``: InfoNCE (:func:`info_nce_loss`). Each window's output, normalised, must
  pick its own song's centred WMF factors, normalised, among those of the other songs in the
  batch, at a learned temperature (CLIP's). Why this loss: a user ranks songs by ``u'v``, which
  only the part of ``v`` off the mean moves; regression spends its capacity on the size of
  that part, which audio barely predicts (a song's popularity), while InfoNCE asks only for its
  direction against the other songs' (Tamm & Aljanaki 2024 found it ahead of regression onto
  CF factors). The in-batch negatives cost nothing (no user sampling, unlike WPE). The model's
  song vector is the training songs' mean factors plus the predicted direction at their
  typical distance from the mean.

``cnn.controls`` names objectives whose shuffled control is trained too (``cnn_mse_shuffled``:
the same network on audio paired with other songs' factors, :func:`~musicrec.models.content.
shuffled_targets`), so the report can tell audio signal from what any fit scores.

``device: auto`` trains on CUDA with bf16 autocast where there is a GPU, else on the CPU, where
runs are seeded and deterministic.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from musicrec import registry
from musicrec.audio import ClipSpec
from musicrec.errors import MusicrecError
from musicrec.models.content import (
    ContentData,
    ContentTuneConfig,
    SongFactorModel,
    as_control,
    run_training_stage,
    shuffled_targets,
    target_scaling,
    tune_content_model,
)
from musicrec.models.factorization import confidence
from musicrec.models.saved import (
    MAX_FRAMES,
    MAX_WIDTH,
    check_shapes,
    int_field,
    int_list,
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
    pick_device,
    seed_everything,
    train,
)
from musicrec.stage import read_config, read_shared

_SOURCE = Path(__file__).read_text()


@dataclass(frozen=True)
class CNNConfig:
    """``cnn`` params: architecture, windows and the WPE sampling."""

    window_frames: int = 128
    channels: tuple[int, ...] = (128, 128, 128)
    kernel_size: int = 4
    pools: tuple[int, ...] = (4, 2)
    dense_units: int = 256
    dropout: float = 0.3
    windows_per_song: int = 2
    wpe_users_per_batch: int = 512
    wpe_alpha: float = 2.0
    wpe_eps: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "pools", tuple(self.pools))
        if len(self.pools) != len(self.channels) - 1:
            raise MusicrecError("cnn: need one pool size between each pair of convolutions")
        if self.output_frames(self.window_frames) < 1:
            smallest = next(n for n in range(1, 100_000) if self.output_frames(n) >= 1)
            raise MusicrecError(
                f"cnn: window_frames must be >= {smallest} for these channels, pools and "
                f"kernel size (got {self.window_frames})"
            )

    def output_frames(self, n_frames: int) -> int:
        """Frames left after the convolutions (no padding) and poolings of a window."""
        for i in range(len(self.channels)):
            n_frames -= self.kernel_size - 1
            if i < len(self.pools):
                n_frames //= self.pools[i]
        return n_frames


OBJECTIVES = ("mse", "wpe", "contrastive")


class AudioCNN(nn.Module):
    """Log-mel window [shape=(batch, n_mels, frames)] -> standardised factors [(batch, d)].

    ``learn_temperature``: the network also holds InfoNCE's log inverse temperature
    (``log_scale``), so that the optimiser trains it and checkpoints keep it.
    """

    def __init__(self, n_mels: int, n_out: int, cfg: CNNConfig, learn_temperature: bool = False):
        super().__init__()
        if learn_temperature:  # CLIP's start, 1 / 0.07
            self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        layers: list[nn.Module] = []
        n_in = n_mels
        for i, n_channels in enumerate(cfg.channels):
            layers += [
                nn.Conv1d(n_in, n_channels, cfg.kernel_size),
                nn.BatchNorm1d(n_channels),
                nn.ReLU(),
            ]
            if i < len(cfg.pools):
                layers.append(nn.MaxPool1d(cfg.pools[i]))
            n_in = n_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(3 * n_in, cfg.dense_units),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.dense_units, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2), h.pow(2).mean(dim=2).sqrt()], dim=1)
        return self.head(pooled)


def wpe_loss(
    predicted: torch.Tensor, user_factors: torch.Tensor, conf: torch.Tensor
) -> torch.Tensor:
    """Weighted prediction error, averaged over the (user, song) pairs given.

    Parameters
    ----------
    predicted : torch.Tensor [shape=(n_songs, d)]
        Predicted song factors (WMF scale).
    user_factors : torch.Tensor [shape=(n_users, d)]
    conf : torch.Tensor [shape=(n_users, n_songs)]
        Confidence ``c_uv``: 1 where the user did not play the song (preference 0), more where
        they did (preference 1).

    Returns
    -------
    torch.Tensor
        ``mean_uv c_uv (p_uv - u_u' v_hat_v)^2`` with ``p_uv = [c_uv > 1]``.
    """
    preference = (conf > 1).to(predicted.dtype)
    error = preference - user_factors @ predicted.T
    return (conf * error.pow(2)).mean()


def info_nce_loss(
    predicted: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """InfoNCE of windows against songs, with in-batch negatives.

    Parameters
    ----------
    predicted : torch.Tensor [shape=(n_windows, d)]
        The windows' outputs (centred, any scale: only their direction counts).
    targets : torch.Tensor [shape=(n_songs, d)]
        The centred WMF factors of the batch's distinct songs.
    labels : torch.Tensor [shape=(n_windows,), int64]
        Each window's song: its row of ``targets`` (two windows of one song share a row, so a
        song is never its own negative).
    log_scale : torch.Tensor []
        The learned log inverse temperature, clamped to CLIP's ceiling of 100.

    Returns
    -------
    torch.Tensor
        Mean cross-entropy of each window's cosine similarities (times the scale) against the
        right song.
    """
    scale = log_scale.clamp(max=math.log(100.0)).exp()
    logits = (
        scale
        * nn.functional.normalize(predicted, dim=1)
        @ nn.functional.normalize(targets, dim=1).T
    )
    return nn.functional.cross_entropy(logits, labels)


@dataclass
class _TrainingInputs:
    """What a CNN's epochs draw from (:meth:`CNNModel._training_inputs`).

    spectra : np.ndarray [shape=(n_train_songs, n_mels, clips * n_frames), float32]
        standardised.
    targets : np.ndarray [shape=(n_train_songs, d)] their WMF factors.
    train_plays : sp.csc_matrix [shape=(n_users, n_train_songs)] their training plays.
    active_users : np.ndarray  indices of the users with training plays.
    """

    spectra: np.ndarray
    targets: np.ndarray
    train_plays: object
    active_users: np.ndarray


class CNNModel(SongFactorModel):
    """``cnn_mse``, ``cnn_wpe`` or ``cnn_contrastive``: an :class:`AudioCNN` with its input and
    output scaling."""

    def __init__(self, objective: str, cfg: CNNConfig, train_cfg: TrainConfig, clips: int = 1):
        if objective not in OBJECTIVES:
            raise MusicrecError(
                f"cnn: objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}"
            )
        self.objective, self.cfg, self.train_cfg = objective, cfg, train_cfg
        self.clips = clips  # a song's features are this many clips side by side
        self.name = f"cnn_{objective}"
        loss = "InfoNCE" if objective == "contrastive" else objective.upper()
        self.description = f"CNN on log-mel windows, {loss} objective"
        self.net: AudioCNN | None = None
        self.scales: dict[str, np.ndarray] = {}
        self.device = pick_device(train_cfg.device)

    def _standardise(self, spectra: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Per-mel-bin standardisation of one clip [(n_mels, t)] or a stack [(n, n_mels, t)];
        ``out=spectra`` does it in place (the training clips are the stage's largest array)."""
        out = np.subtract(spectra, self.scales["mel_mean"][:, None], out=out)
        return np.divide(out, self.scales["mel_std"][:, None], out=out)

    def _windows(self, spectrogram: np.ndarray) -> np.ndarray:
        """Windows spanning each of a song's distinct clips with a half-window hop, no window
        across two clips [shape=(n, n_mels, window)]."""
        width = self.cfg.window_frames
        clips = np.split(spectrogram, self.clips, axis=1)
        # A clip equal to an earlier one (a file too short for distinct clips) adds windows
        # equal to its, which leave the mean as it is: they are not computed again.
        distinct = [
            c for i, c in enumerate(clips) if not any(np.array_equal(c, d) for d in clips[:i])
        ]
        windows = []
        for clip in distinct:
            n_frames = clip.shape[1]
            if n_frames < width:
                clip = np.pad(clip, ((0, 0), (0, width - n_frames)), mode="edge")
                n_frames = width
            starts = list(range(0, n_frames - width + 1, max(1, width // 2)))
            if starts[-1] != n_frames - width:
                starts.append(n_frames - width)
            windows += [clip[:, s : s + width] for s in starts]
        return np.stack(windows)

    def _forward(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Predicted factors on the WMF scale (``net``: the network or its DDP wrapper); for
        InfoNCE, the predicted direction at the training songs' typical distance from the
        mean."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            z = (net or self.net)(x)
        z = z.float()
        if self.objective == "contrastive":
            z = nn.functional.normalize(z, dim=1) * self._y_norm
        return z * self._y_std + self._y_mean

    def _song_vector(self, windows: torch.Tensor) -> torch.Tensor:
        """A song's predicted factors [shape=(d,)] from its windows [(n, n_mels, window)]: the
        mean over windows (for InfoNCE, the mean direction, at the typical distance again)."""
        mean = self._forward(windows).mean(0)
        if self.objective != "contrastive":
            return mean
        direction = nn.functional.normalize((mean - self._y_mean) / self._y_std, dim=0)
        return direction * self._y_norm * self._y_std + self._y_mean

    def fit(self, features: dict, data: ContentData, checkpoint_dir: Path) -> CNNModel:
        seed_everything(self.train_cfg.seed)
        inputs = self._training_inputs(features["logmel"], data)
        step_loss, validation_loss = self._losses(features["logmel"], data, inputs)
        run_id = inputs_digest(
            self.objective,
            asdict(self.cfg),
            asdict(self.train_cfg),
            inputs.targets,
            data.user_factors[inputs.active_users],
            inputs.spectra[:, :, :8],
            self.clips,
            _SOURCE,
        )
        self.history = train(
            self.net,
            self._epoch_batches(inputs),
            step_loss,
            validation_loss,
            self.train_cfg,
            checkpoint_dir,
            run_id,
            desc=self.name,
        ).history
        return self

    def _training_inputs(self, logmel: np.ndarray, data: ContentData) -> _TrainingInputs:
        """Fit the input and output scaling, build the network, and gather what an epoch
        draws from: the standardised training clips in memory, their targets and plays."""
        if logmel.shape[2] % self.clips:
            raise MusicrecError(
                f"cnn: the features have {logmel.shape[2]} frames a song, not a multiple of "
                f"features.clips {self.clips}; run dvc repro features"
            )
        # The training spectrograms fit in memory (float32); windows are cropped from them.
        # (train_songs is sorted, so the memory-mapped store is read front to back.)
        spectra = np.asarray(logmel[data.train_songs], np.float32)
        targets = data.targets[data.train_songs]
        y_mean, y_std = target_scaling(targets)
        self.scales = {
            "mel_mean": spectra.mean(axis=(0, 2)),
            "mel_std": spectra.std(axis=(0, 2)) + 1e-6,
            "y_mean": y_mean,
            "y_std": y_std,
        }
        if self.objective == "contrastive":  # the typical distance of a song from the mean
            centred = (targets - y_mean) / y_std
            self.scales["y_norm"] = np.float32(np.linalg.norm(centred, axis=1).mean())
        self._build(logmel.shape[1], targets.shape[1])
        spectra = self._standardise(spectra, out=spectra)
        if spectra.shape[2] // self.clips < self.cfg.window_frames:
            raise MusicrecError(
                f"cnn: clips have {spectra.shape[2] // self.clips} frames, fewer than "
                f"window_frames {self.cfg.window_frames}; lower cnn.window_frames or lengthen "
                "the clips (features.clip_seconds)"
            )
        return _TrainingInputs(
            spectra,
            targets,
            data.train_plays[:, data.train_songs].tocsc(),
            np.flatnonzero(np.diff(data.train_plays.tocsr().indptr) > 0),
        )

    def _epoch_batches(self, inputs: _TrainingInputs):
        """``batches(rng)`` for :func:`train`: one epoch's loader of training windows."""
        batch, width = self.train_cfg.batch_size, self.cfg.window_frames
        clip_frames = inputs.spectra.shape[2] // self.clips
        n_sampled = min(self.cfg.wpe_users_per_batch, len(inputs.active_users))

        def batches(rng):
            # The epoch's plan (which song, where to crop, which users) is drawn here, in one
            # process, so loader workers on a GPU machine cannot change what is trained on.
            songs = np.repeat(np.arange(len(inputs.spectra)), self.cfg.windows_per_song)
            rng.shuffle(songs)
            plan = []
            for i in range(0, len(songs), batch):
                idx = songs[i : i + batch]
                starts = rng.integers(0, clip_frames - width + 1, len(idx))
                if self.clips > 1:  # (drawn after, so one clip crops as it always did)
                    starts += clip_frames * rng.integers(0, self.clips, len(idx))
                sampled = (
                    rng.choice(inputs.active_users, n_sampled, replace=False)
                    if self.objective == "wpe"
                    else None
                )
                plan.append((idx, starts, sampled))
            on_gpu = self.device.type == "cuda"
            return torch.utils.data.DataLoader(
                _WindowBatches(inputs.spectra, plan, width, inputs.train_plays, self.cfg),
                batch_size=None,
                num_workers=self.train_cfg.loader_workers if on_gpu else 0,
                pin_memory=on_gpu,
            )

        return batches

    def _losses(self, logmel: np.ndarray, data: ContentData, inputs: _TrainingInputs):
        """``step_loss(net, batch)`` and ``validation_loss(net)`` of this objective: MSE on
        standardised factors, or WPE against the WMF user factors of sampled users."""
        users = torch.from_numpy(data.user_factors).to(self.device)
        y_train = torch.from_numpy(inputs.targets).to(self.device)
        val_windows = [
            torch.from_numpy(self._windows(self._standardise(np.asarray(logmel[r], np.float32))))
            for r in data.validation_songs
        ]
        val_conf = torch.from_numpy(
            confidence(
                data.train_plays[:, data.validation_songs], self.cfg.wpe_alpha, self.cfg.wpe_eps
            ).toarray()[inputs.active_users]
        )
        val_conf[val_conf == 0] = 1.0
        val_targets = torch.from_numpy(data.targets[data.validation_songs])

        def contrastive(net, predicted, targets, labels):
            log_scale = (net.module if hasattr(net, "module") else net).log_scale
            return info_nce_loss(
                (predicted - self._y_mean) / self._y_std,
                (targets - self._y_mean) / self._y_std,
                labels,
                log_scale,
            )

        def step_loss(net, item):
            idx, x, sampled, block = item
            predicted = self._forward(x.to(self.device, non_blocking=True), net)
            if self.objective == "contrastive":
                songs, labels = torch.unique(idx, return_inverse=True)
                return contrastive(
                    net, predicted, y_train[songs.to(self.device)], labels.to(self.device)
                )
            if self.objective == "mse":
                return nn.functional.mse_loss(
                    (predicted - self._y_mean) / self._y_std,
                    (y_train[idx] - self._y_mean) / self._y_std,
                )
            block = block.to(self.device, non_blocking=True)
            return wpe_loss(predicted, users[sampled], block)

        def validation_loss(net):
            predicted = torch.stack([self._song_vector(w.to(self.device)) for w in val_windows])
            if self.objective == "contrastive":
                labels = torch.arange(len(predicted), device=self.device)
                return contrastive(self.net, predicted, val_targets.to(self.device), labels).item()
            if self.objective == "mse":
                return nn.functional.mse_loss(
                    (predicted - self._y_mean) / self._y_std,
                    (val_targets.to(self.device) - self._y_mean) / self._y_std,
                ).item()
            active = users[inputs.active_users]
            return wpe_loss(predicted, active, val_conf.to(self.device)).item()

        return step_loss, validation_loss

    def _build(self, n_mels: int, n_out: int) -> None:
        contrastive = self.objective == "contrastive"
        self.net = AudioCNN(n_mels, n_out, self.cfg, learn_temperature=contrastive)
        self.net = self.net.to(self.device)
        self._y_mean = torch.from_numpy(self.scales["y_mean"]).to(self.device)
        self._y_std = torch.from_numpy(self.scales["y_std"]).to(self.device)
        self._y_norm = float(self.scales.get("y_norm", 1.0))

    def predict(self, features: dict, rows: np.ndarray) -> np.ndarray:
        self.net.eval()
        out = np.zeros((len(rows), len(self.scales["y_mean"])), np.float32)
        with torch.no_grad():
            for i, r in enumerate(rows):
                windows = self._windows(
                    self._standardise(np.asarray(features["logmel"][r], np.float32))
                )
                out[i] = self._song_vector(torch.from_numpy(windows).to(self.device)).cpu()
        return out

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        np.savez(directory / "scales.npz", **self.scales)
        torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, directory / "cnn.pt")
        (directory / "config.json").write_text(
            json.dumps(
                {
                    "objective": self.objective,
                    "clips": self.clips,
                    "cnn": asdict(self.cfg),
                    "train": {**asdict(self.train_cfg), "device": "cpu"},
                }
            )
        )

    @classmethod
    def load(
        cls, directory: Path, n_users: int | None = None, n_songs: int | None = None
    ) -> CNNModel:
        """Rebuild a model that :meth:`save` wrote into ``directory`` (its ``predictor/``).

        A model folder may come from elsewhere (``dvc get``), so nothing it declares is
        trusted: every size in ``config.json`` and ``scales.npz`` (mel bands, output width,
        channels, kernel, pools, dense units, window) is checked against :data:`MAX_WIDTH`,
        :data:`MAX_LAYERS` and :data:`MAX_FRAMES`, and ``cnn.pt``'s tensors against the
        network those sizes make, before anything of that size is allocated (the arrays'
        headers read first, the weights memory-mapped).

        Raises
        ------
        MusicrecError
            Naming the file, the field, the declared value and the expected one.
        """
        directory = Path(directory)
        config = directory / "config.json"
        meta = read_meta(config)
        objective = meta.get("objective")
        if objective not in OBJECTIVES:
            raise refusal(
                config, f"objective is {objective!r:.60}, expected one of {', '.join(OBJECTIVES)}"
            )
        section = meta_section(config, meta, "cnn")
        channels = int_list(config, "cnn.channels", section.get("channels"), 1, MAX_WIDTH)
        if len(channels) > 1:  # one convolution has no pool (CNNConfig checks the count)
            int_list(config, "cnn.pools", section.get("pools"), 1, MAX_FRAMES)
        for field in ("window_frames", "kernel_size"):
            int_field(config, f"cnn.{field}", section.get(field), 1, MAX_FRAMES)
        int_field(config, "cnn.dense_units", section.get("dense_units"), 1, MAX_WIDTH)
        clips = int_field(config, "clips", meta.get("clips", 1), 1, MAX_FRAMES)
        model = cls(
            objective,
            make_settings(config, "cnn", CNNConfig, section),
            make_settings(config, "train", TrainConfig, meta_section(config, meta, "train")),
            clips,
        )
        scales_path = directory / "scales.npz"
        shapes = npz_shapes(scales_path)
        n_mels, n_out = (
            int_field(
                scales_path, f"{name}'s length", vector_length(shapes.get(name)), 1, MAX_WIDTH
            )
            for name in ("mel_mean", "y_mean")
        )
        expected = {"mel_mean": (n_mels,), "mel_std": (n_mels,), "y_mean": (n_out,)}
        expected["y_std"] = (n_out,)
        if objective == "contrastive":
            expected["y_norm"] = ()
        check_shapes(scales_path, shapes, expected)
        with np.load(scales_path) as scales:
            model.scales = {k: scales[k] for k in scales.files}
        # The network's shapes first, with no memory behind them (the meta device), to hold
        # the weights file to before a byte of that size is allocated.
        with torch.device("meta"):
            skeleton = AudioCNN(n_mels, n_out, model.cfg, objective == "contrastive")
        state = read_weights(directory / "cnn.pt", skeleton)
        model._build(n_mels, n_out)
        model.net.load_state_dict(state)
        model.net.eval()
        return model


class _WindowBatches(torch.utils.data.Dataset):
    """Batch ``i`` of an epoch's plan: windows cropped from the standardised clips and, for
    WPE, the confidences of the sampled users for the batch's songs."""

    def __init__(self, spectra: np.ndarray, plan: list, width: int, plays, cfg: CNNConfig):
        self.spectra, self.plan, self.width = spectra, plan, width
        self.plays, self.cfg = plays, cfg

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        idx, starts, sampled = self.plan[i]
        x = np.stack(
            [self.spectra[s, :, o : o + self.width] for s, o in zip(idx, starts, strict=True)]
        )
        block = (
            torch.from_numpy(_conf_block(self.plays, sampled, idx, self.cfg))
            if sampled is not None
            else torch.empty(0)
        )
        return torch.from_numpy(idx), torch.from_numpy(x), sampled, block


def _conf_block(
    train_plays: sp.csc_matrix, users: np.ndarray, songs: np.ndarray, cfg: CNNConfig
) -> np.ndarray:
    """Confidences [shape=(len(users), len(songs)), float32] of sampled users for batch songs."""
    block = train_plays[:, songs].tocsr()[users]
    conf = confidence(block, cfg.wpe_alpha, cfg.wpe_eps).toarray()
    conf[conf == 0] = 1.0
    return conf.astype(np.float32)


@dataclass(frozen=True)
class CNNRun:
    """Which CNNs the ``cnn`` stage trains: one model per objective (``cnn.objectives``) and a
    shuffled control per objective of ``cnn.controls`` (trained with the model's settings)."""

    objectives: tuple[str, ...] = OBJECTIVES
    controls: tuple[str, ...] = ("mse",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "controls", tuple(self.controls))
        unknown = sorted(set(self.objectives) - set(OBJECTIVES))
        if unknown or not self.objectives:
            raise MusicrecError(
                f"cnn.objectives: a list of {', '.join(OBJECTIVES)}, not {list(self.objectives)}"
            )
        # A control is a model of its own: registered, and an output of dvc.yaml's cnn stage.
        registered = {o for o in OBJECTIVES if f"cnn_{o}_shuffled" in registry.MODEL_NAMES}
        if not set(self.controls) <= set(self.objectives) & registered:
            raise MusicrecError(
                f"cnn.controls: objectives of cnn.objectives whose control the registry and "
                f"dvc.yaml name ({', '.join(sorted(registered))}), not {list(self.controls)}"
            )


def main(argv: list[str] | None = None) -> int:
    def configure(params: dict):
        cfg, run = read_config(params, "cnn", CNNConfig, CNNRun)
        train_cfg = read_config(params, "cnn_training", TrainConfig)
        clips = read_shared(params, "features", ClipSpec).clips
        tune_cfg = read_config(params, "tune_content", ContentTuneConfig)

        def fit_all(features: dict, data: ContentData, checkpoints: Path):
            for objective in run.objectives:

                def make(width: int, training: TrainConfig, objective: str = objective):
                    return CNNModel(objective, replace(cfg, dense_units=width), training, clips)

                model, tuning = tune_content_model(
                    make,
                    train_cfg,
                    cfg.dense_units,
                    tune_cfg.cnn,
                    features,
                    data,
                    tune_cfg,
                    checkpoints / f"cnn_{objective}",
                )
                model.tuning = tuning  # published by run_training_stage
                yield model
                if objective in run.controls:  # the same settings, other songs' factors
                    control = CNNModel(objective, model.cfg, model.train_cfg, clips)
                    control.fit(
                        features, shuffled_targets(data), checkpoints / f"cnn_{objective}_shuffled"
                    )
                    yield as_control(control)

        return train_cfg, fit_all

    return run_training_stage("cnn", __doc__, argv, ("logmel",), configure)
