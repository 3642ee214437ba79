"""The contract every model that predicts song vectors from audio honours, on a tiny world.

fit -> predict -> save -> load -> the same predictions, seeded and deterministic on the CPU,
and better than chance at telling two kinds of songs apart. Plus known answers for the WPE loss
and a resumed training run that ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from musicrec.errors import MusicrecError
from musicrec.models.bow import BowConfig, BowModel, bow_mlp_training
from musicrec.models.cnn import CNNConfig, CNNModel, info_nce_loss, wpe_loss
from musicrec.models.content import ContentData
from musicrec.models.dbn import DBNConfig, DBNModel
from musicrec.models.ridge import RidgeConfig, RidgeModel
from musicrec.models.training import TrainConfig, train

N_SONGS, N_USERS, N_FRAMES, DIM = 56, 40, 48, 4
TRAIN_CFG = TrainConfig(epochs=6, batch_size=8, learning_rate=3e-3, patience=6, device="cpu")


def make_tiny_content() -> tuple[dict, ContentData, np.ndarray]:
    """Two kinds of songs, told apart by a band of energy in the spectrum and a pulse.

    Returns the features, the content data (40 training, 8 validation songs) and the kind of
    each song [shape=(n_songs,)].
    """
    rng = np.random.default_rng(0)
    kind = np.arange(N_SONGS) % 2
    logmel = rng.normal(-40, 3, (N_SONGS, 16, N_FRAMES)).astype(np.float32)
    logmel[kind == 1, 4:8, :] += 15.0  # kind 1: a loud mid band
    logmel[kind == 1, :, ::4] += 6.0  # and a beat every 4 frames
    mfcc = rng.normal(0, 1, (N_SONGS, 6, N_FRAMES)).astype(np.float32)
    mfcc[kind == 1, :2] += 3.0
    direction = np.array([0.2, -0.1, 0.05, 0.0], np.float32)
    targets = np.where(kind[:, None] == 1, direction, -direction).astype(np.float32)
    targets += rng.normal(0, 0.02, targets.shape).astype(np.float32)
    users = rng.normal(0, 1, (N_USERS, DIM)).astype(np.float32)
    liked = (users @ targets.T) > 0.05
    counts = sp.csr_matrix(liked * rng.integers(1, 6, liked.shape), dtype=np.float32)
    # Users 36-39 are new: they give two seed plays each and nothing else to train on.
    new_users = np.arange(36, 40)
    seeds = np.zeros(liked.shape, np.float32)
    for u in new_users:
        seeds[u, np.flatnonzero(liked[u, :40])[:2]] = 3.0
    train = counts.toarray()
    train[new_users] = 0.0
    data = ContentData(
        targets=targets,
        user_factors=users,
        train_plays=sp.csr_matrix(train),
        train_songs=np.arange(40),
        validation_songs=np.arange(40, 48),
        index_digest="test",
        new_users=new_users,
        new_user_seeds=sp.csr_matrix(seeds),
    )
    data.liked = liked  # the truth behind the plays, for the tests
    return {"logmel": logmel, "mfcc": mfcc}, data, kind


CNN_CFG = CNNConfig(
    window_frames=16,
    channels=(8, 8),
    kernel_size=3,
    pools=(2,),
    dense_units=16,
    dropout=0.1,
    windows_per_song=2,
    wpe_users_per_batch=16,
)
BOW_CFG = BowConfig(vocabulary_size=8, frames_per_song=24, pca_components=4, hidden_units=16)
DBN_CFG = DBNConfig(layers=(16, 4), pretrain_epochs=5, pretrain_batch_size=8, lambda_beta=0.1)

MODELS = {
    "stats_ridge": lambda: RidgeModel(RidgeConfig()),
    "bow_linear": lambda: BowModel("linear", BOW_CFG, TRAIN_CFG),
    "bow_mlp": lambda: BowModel("mlp", BOW_CFG, TRAIN_CFG),
    "cnn_mse": lambda: CNNModel("mse", CNN_CFG, TRAIN_CFG),
    "cnn_wpe": lambda: CNNModel("wpe", CNN_CFG, TRAIN_CFG),
    "cnn_contrastive": lambda: CNNModel("contrastive", CNN_CFG, TRAIN_CFG),
    # Each song's 48 frames as two clips of 24 (features.clips: 2).
    "cnn_mse_two_clips": lambda: CNNModel("mse", CNN_CFG, TRAIN_CFG, clips=2),
    "hldbn": lambda: DBNModel("hldbn", DBN_CFG, TRAIN_CFG),
    "hldbn_nopretrain": lambda: DBNModel("hldbn_nopretrain", DBN_CFG, TRAIN_CFG),
    "hybrid_dbn": lambda: DBNModel("hybrid_dbn", DBN_CFG, TRAIN_CFG),
}


@pytest.fixture(scope="module")
def tiny_content():
    return make_tiny_content()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_predict_save_load_gives_the_same_predictions(name, tiny_content, tmp_path):
    features, data, kind = tiny_content
    model = MODELS[name]().fit(features, data, tmp_path / "checkpoints")
    assert name.startswith(model.name)
    predicted = model.predict(features, data.songs)
    users = model.user_vectors(data)
    assert predicted.shape[0] == N_SONGS and predicted.dtype == np.float32
    assert users.shape == (N_USERS, predicted.shape[1]) and np.isfinite(predicted).all()

    model.save(tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.pkl"))  # arrays, JSON and state dicts only
    reloaded = type(model).load(tmp_path / "saved")
    np.testing.assert_allclose(reloaded.predict(features, data.songs), predicted, atol=1e-6)

    # On the held-out songs (never trained on), the users who like them score them higher.
    held_out = np.arange(48, N_SONGS)
    old_users = np.arange(36)
    scores = users[old_users] @ predicted[held_out].T
    liked = data.liked[np.ix_(old_users, held_out)]
    assert scores[liked].mean() > scores[~liked].mean()


@pytest.mark.parametrize(
    "name", ["bow_mlp", "cnn_mse", "cnn_wpe", "cnn_contrastive", "hldbn", "hybrid_dbn"]
)
def test_training_is_seeded_and_deterministic_on_the_cpu(name, tiny_content, tmp_path):
    features, data, _ = tiny_content
    first = MODELS[name]().fit(features, data, tmp_path / "a").predict(features, data.songs)
    again = MODELS[name]().fit(features, data, tmp_path / "b").predict(features, data.songs)
    np.testing.assert_array_equal(first, again)


def test_wpe_loss_known_answer():
    # Two songs, two users; scores u'v = [[1, 0], [0.5, 0.5]], preferences [[1, 0], [0, 1]].
    predicted = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    users = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    conf = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    # Errors [[0, 0], [-0.5, 0.5]]; weighted squares 0, 0, 1 * 0.25, 2 * 0.25; mean 0.1875.
    assert wpe_loss(predicted, users, conf).item() == pytest.approx(0.1875)
    # A perfect predictor of the preferences has no loss whatever the confidences.
    assert wpe_loss(torch.eye(2), torch.eye(2), conf).item() == pytest.approx(0.0)


def test_wpe_gradient_weights_errors_by_confidence():
    predicted = torch.zeros(1, 1, requires_grad=True)
    wpe_loss(predicted, torch.ones(1, 1), torch.tensor([[5.0]])).backward()
    # d/dv mean(c (1 - v)^2) at v = 0 is -2 c = -10.
    assert predicted.grad.item() == pytest.approx(-10.0)


def test_info_nce_known_answer_and_shared_songs():
    predicted = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # only directions count
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0])  # windows 0 and 2 are of song 0
    scale = torch.tensor(math.log(2.0))
    # cosines: [1, 0], [0, 1], [0.707, 0.707]; logits twice those
    expected = (
        2 * -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
        + -torch.log_softmax(torch.tensor([2**0.5, 2**0.5]), 0)[0]
    ) / 3
    assert info_nce_loss(predicted, targets, labels, scale).item() == pytest.approx(expected.item())
    # a temperature past CLIP's ceiling of 100 is clamped to it
    huge = info_nce_loss(predicted, targets, labels, torch.tensor(10.0))
    capped = info_nce_loss(predicted, targets, labels, torch.tensor(math.log(100.0)))
    assert huge.item() == pytest.approx(capped.item())


def test_contrastive_cnn_outputs_a_direction_at_the_targets_typical_distance(
    tiny_content, tmp_path
):
    features, data, _ = tiny_content
    model = MODELS["cnn_contrastive"]().fit(features, data, tmp_path / "checkpoints")
    centred = (model.predict(features, data.songs) - model.scales["y_mean"]) / model.scales["y_std"]
    norms = np.linalg.norm(centred, axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-4)  # every song at one distance...
    # ...the training songs' mean distance from their mean, in the same units
    train = (data.targets[data.train_songs] - model.scales["y_mean"]) / model.scales["y_std"]
    assert norms[0] == pytest.approx(np.linalg.norm(train, axis=1).mean(), rel=1e-4)
    assert "log_scale" in dict(model.net.named_parameters())  # the temperature is learnt


class _Stop(Exception):
    pass


def _linear_problem():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(64, 3)).astype(np.float32))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def batches(rng):
        order = rng.permutation(64)
        return (order[i : i + 16] for i in range(0, 64, 16))

    def step_loss(model, idx):
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    def validation_loss(model):
        return torch.nn.functional.mse_loss(model(x), y).item()

    return batches, step_loss, validation_loss


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=6, learning_rate=0.05, patience=10, device="cpu")

    torch.manual_seed(0)
    whole = torch.nn.Linear(3, 1)
    train(whole, batches, step_loss, validation_loss, cfg, tmp_path / "whole", "run")

    calls = {"n": 0}

    def dying_batches(rng):
        calls["n"] += 1
        if calls["n"] == 4:  # killed during the fourth epoch, after three checkpoints
            raise _Stop
        return batches(rng)

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    with pytest.raises(_Stop):
        train(model, dying_batches, step_loss, validation_loss, cfg, tmp_path / "cut", "run")
    torch.manual_seed(123)  # a fresh process: other initial weights, restored from the checkpoint
    resumed = torch.nn.Linear(3, 1)
    result = train(resumed, batches, step_loss, validation_loss, cfg, tmp_path / "cut", "run")
    assert result.resumed_from == 2
    assert [h["epoch"] for h in result.history] == list(range(6))
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=2, learning_rate=0.05, patience=10, device="cpu")
    train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path, "old")
    result = train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path, "new")
    assert result.resumed_from is None and len(result.history) == 2


class _Payload:
    """What a tampered checkpoint could hold: an object whose unpickling runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_checkpoint_is_never_unpickled_and_training_starts_afresh(tmp_path, capsys):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=2, learning_rate=0.05, patience=10, device="cpu")
    marker = tmp_path / "code-ran"
    torch.save({"run_id": "run", "payload": _Payload(marker)}, tmp_path / "last.pt")
    result = train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path, "run")
    assert not marker.exists()  # the payload never ran
    assert result.resumed_from is None and len(result.history) == 2
    assert "not a checkpoint musicrec wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make",
    [
        lambda: CNNModel("mae", CNN_CFG, TRAIN_CFG),
        lambda: CNNConfig(channels=(8, 8), pools=(2, 2)),
        lambda: CNNConfig(window_frames=8, kernel_size=4, pools=(4, 2)),
        lambda: BowModel("forest", BOW_CFG, TRAIN_CFG),
        lambda: BowConfig(vocabulary_size=1),
        lambda: TrainConfig(device="tpu"),
        lambda: TrainConfig(learning_rate=0.0),
        lambda: bow_mlp_training({"epochs": 5, "device": "cuda"}),
        lambda: bow_mlp_training({"epochs": 5, "processes": 2}),
    ],
)
def test_bad_params_raise_one_clear_error_before_compute(make):
    with pytest.raises(MusicrecError):
        make()


def test_loader_workers_make_the_same_batches_as_the_main_process(tiny_content):
    from musicrec.models.cnn import _WindowBatches

    features, data, _ = tiny_content
    rng = np.random.default_rng(3)
    plan = [
        (rng.permutation(40)[:8], rng.integers(0, N_FRAMES - 16, 8), rng.permutation(N_USERS)[:5])
        for _ in range(4)
    ]
    plays = data.train_plays[:, data.train_songs].tocsc()
    dataset = _WindowBatches(features["logmel"], plan, 16, plays, CNN_CFG)

    def load(workers):
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
        return list(loader)

    for main, worker in zip(load(0), load(2), strict=True):
        for a, b in zip(main, worker, strict=True):
            torch.testing.assert_close(a, b)
    idx, x, _, block = load(0)[0]
    assert x.shape == (8, 16, 16) and block.shape == (5, 8)
    assert (block >= 1).all()  # confidences: 1 where unplayed


def test_cosine_schedule_decays_the_learning_rate_over_the_planned_epochs(tmp_path):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=4, learning_rate=0.1, patience=10, lr_schedule="cosine", device="cpu")
    result = train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path, "r")
    rates = [h["learning_rate"] for h in result.history]
    # 0.1 * (1 + cos(pi * e / 4)) / 2 for e = 0..3
    np.testing.assert_allclose(rates, [0.1, 0.0853553, 0.05, 0.0146447], rtol=1e-5)
    constant = TrainConfig(epochs=3, learning_rate=0.1, patience=10, device="cpu")
    result = train(
        torch.nn.Linear(3, 1), batches, step_loss, validation_loss, constant, tmp_path / "c", "r"
    )
    assert [h["learning_rate"] for h in result.history] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    "channels,pools,kernel", [((8, 8, 8), (4, 2), 4), ((8, 8), (3,), 5), ((8, 8, 8), (2, 2), 3)]
)
def test_smallest_window_the_config_allows_runs_through_the_network(channels, pools, kernel):
    from musicrec.models.cnn import AudioCNN

    smallest = next(
        n
        for n in range(1, 500)
        if CNNConfig(
            window_frames=500, channels=channels, pools=pools, kernel_size=kernel
        ).output_frames(n)
        >= 1
    )
    cfg = CNNConfig(window_frames=smallest, channels=channels, pools=pools, kernel_size=kernel)
    net = AudioCNN(16, DIM, cfg).eval()
    frames_out = net.features(torch.zeros(2, 16, smallest)).shape[2]
    assert frames_out == cfg.output_frames(smallest) >= 1
    with pytest.raises(MusicrecError, match=f">= {smallest}"):
        CNNConfig(window_frames=smallest - 1, channels=channels, pools=pools, kernel_size=kernel)


@pytest.mark.parametrize("name", ["hldbn", "hybrid_dbn"])
def test_dbn_models_fold_in_new_users_from_their_seeds(name, tiny_content, tmp_path):
    features, data, _ = tiny_content
    longer = TrainConfig(epochs=40, batch_size=8, learning_rate=0.01, patience=40, device="cpu")
    model = DBNModel(name, DBN_CFG, longer).fit(features, data, tmp_path)
    users = model.user_vectors(data)
    songs = model.predict(features, data.songs)
    for u in data.new_users:
        seeds = data.new_user_seeds[u].indices
        scores = songs @ users[u]
        assert scores[seeds].mean() > np.delete(scores, seeds).mean()


def test_hybrid_dbn_gives_a_song_it_never_trained_on_a_zero_cf_part(tiny_content, tmp_path):
    features, data, _ = tiny_content
    model = MODELS["hybrid_dbn"]().fit(features, data, tmp_path)
    x_dim = DBN_CFG.layers[-1]
    songs = model.predict(features, data.songs)
    assert songs.shape[1] == x_dim + DIM
    # Validation and held-out songs keep their WMF start; a song outside the catalogue gets 0.
    np.testing.assert_allclose(songs[40:, x_dim:], data.targets[40:], atol=1e-6)
    new_song = model.predict_new({k: v[:1] for k, v in features.items()})
    np.testing.assert_array_equal(new_song[0, x_dim:], 0.0)
    np.testing.assert_allclose(new_song[0, :x_dim], songs[0, :x_dim], atol=1e-6)  # its audio
    # A catalogue index the model was not fitted on is refused, not read from another song.
    outside = {k: np.concatenate([v, v[:1]]) for k, v in features.items()}
    with pytest.raises(MusicrecError, match="predict_new"):
        model.predict(outside, np.array([N_SONGS]))


def test_hybrid_dbn_starts_from_a_fitted_hldbn(tiny_content, tmp_path):
    features, data, _ = tiny_content
    hldbn = MODELS["hldbn"]().fit(features, data, tmp_path / "hldbn")
    still = TrainConfig(epochs=1, learning_rate=1e-12, patience=1, device="cpu")
    hybrid = DBNModel("hybrid_dbn", DBN_CFG, still).fit(
        features, data, tmp_path / "hybrid", start_from=hldbn
    )
    x_dim = DBN_CFG.layers[-1]
    np.testing.assert_allclose(
        hybrid.predict(features, data.songs)[:, :x_dim],
        hldbn.predict(features, data.songs),
        atol=1e-5,
    )
    old_users = np.arange(36)
    np.testing.assert_allclose(
        hybrid.user_vectors(data)[old_users, :x_dim],
        hldbn.user_vectors(data)[old_users],
        atol=1e-5,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_new_song_is_predicted_from_its_features_alone(name, tiny_content, tmp_path):
    """``predict_new`` on one song's features: what ``predict`` gives for a song the model
    holds nothing of. For ``hybrid_dbn`` that is the content part with ``y_v`` = 0, not the CF
    vector of whichever catalogue song sits at row 0 (it used to be, for a new clip)."""
    features, data, _ = tiny_content
    model = MODELS[name]().fit(features, data, tmp_path / "checkpoints")
    first = {k: v[:1] for k, v in features.items()}  # song 0 (a training song) as a new clip
    new = model.predict_new(first)
    catalogue = model.predict(features, np.array([0]))
    assert new.shape == catalogue.shape == (1, catalogue.shape[1])
    if name == "hybrid_dbn":
        d = DBN_CFG.layers[-1]
        np.testing.assert_allclose(new[:, :d], catalogue[:, :d], atol=1e-6)  # the same x_v
        assert np.all(new[:, d:] == 0) and np.any(catalogue[:, d:] != 0)  # no y_v of song 0
    else:
        np.testing.assert_allclose(new, catalogue, atol=1e-5)


def test_cnn_windows_span_every_clip_and_never_cross_from_one_to_the_next():
    model = CNNModel("mse", CNN_CFG, TRAIN_CFG, clips=3)
    # Three clips of 40 frames; clip i holds the value i everywhere.
    spectrogram = np.repeat(np.arange(3.0), 40)[None, :].repeat(16, axis=0)
    windows = model._windows(spectrogram)
    per_window = windows.reshape(len(windows), -1)
    assert (per_window.min(axis=1) == per_window.max(axis=1)).all()  # one clip each
    # Half-window hop over 40 frames: starts 0, 8, 16, 24 (the last one flush with the end).
    assert list(per_window[:, 0]) == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    # The same clip three times (a short file): its windows once, the same mean.
    repeated = np.tile(spectrogram[:, :40], 3)
    np.testing.assert_array_equal(model._windows(repeated), model._windows(spectrogram)[:4])


def test_cnn_training_crops_stay_inside_one_clip(tiny_content):
    features, data, _ = tiny_content
    model = CNNModel("mse", CNN_CFG, TRAIN_CFG, clips=2)
    inputs = model._training_inputs(features["logmel"], data)
    loader = model._epoch_batches(inputs)(np.random.default_rng(0))
    starts = np.concatenate([starts for _, starts, _ in loader.dataset.plan])
    width, clip_frames = CNN_CFG.window_frames, N_FRAMES // 2
    assert ((starts % clip_frames) + width <= clip_frames).all()
    assert {0, 1} == set(starts // clip_frames)  # both clips are cropped from


def test_cnn_refuses_features_whose_frames_do_not_split_into_its_clips(tiny_content):
    features, data, _ = tiny_content
    with pytest.raises(MusicrecError, match="not a multiple of features.clips 5"):
        CNNModel("mse", CNN_CFG, TRAIN_CFG, clips=5)._training_inputs(features["logmel"], data)


def test_the_bag_of_words_reuses_a_transform_only_for_the_same_frames_and_songs(tiny_content):
    from musicrec.models.bow import BagOfWords

    features, data, _ = tiny_content
    vocabulary = BagOfWords(BOW_CFG).fit(features["mfcc"], data.train_songs)
    first = vocabulary.transform(features["mfcc"], data.train_songs)
    first[:] = 0.0  # a caller's change does not reach the cache
    again = vocabulary.transform(features["mfcc"], data.train_songs)
    assert np.abs(again).sum() > 0
    other = np.ascontiguousarray(features["mfcc"][::-1])  # other frames, same shape
    flipped = vocabulary.transform(other, data.train_songs)
    np.testing.assert_array_equal(
        flipped, BagOfWords.transform(vocabulary, other.copy(), data.train_songs)
    )
    assert not np.array_equal(flipped, again)


def test_no_improving_epoch_is_an_error_not_an_earlier_runs_weights(tmp_path):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=3, learning_rate=0.05, patience=10, device="cpu")
    torch.manual_seed(0)
    train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path, "first")
    assert (tmp_path / "best.pt").exists()  # the first run's best weights lie there

    def diverged(model):
        return float("nan")

    with pytest.raises(MusicrecError, match="no epoch improved the validation loss"):
        train(torch.nn.Linear(3, 1), batches, step_loss, diverged, cfg, tmp_path, "second")


def test_a_best_checkpoint_of_another_run_is_refused(tmp_path):
    batches, step_loss, validation_loss = _linear_problem()
    cfg = TrainConfig(epochs=3, learning_rate=0.05, patience=10, device="cpu")
    torch.manual_seed(0)
    train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path / "a", "a")
    torch.manual_seed(0)
    train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path / "b", "b")
    (tmp_path / "b" / "best.pt").replace(tmp_path / "a" / "best.pt")  # a stray file
    with pytest.raises(MusicrecError, match="belongs to another training run"):
        # run a resumes after its last epoch and would load the stray weights as its best
        train(torch.nn.Linear(3, 1), batches, step_loss, validation_loss, cfg, tmp_path / "a", "a")


def test_cnn_controls_are_registered_objectives_only():
    from musicrec.models.cnn import CNNRun

    assert CNNRun().controls == ("mse",)
    for bad in (("wpe",), ("mse", "contrastive")):  # no registered control of theirs
        with pytest.raises(MusicrecError, match="cnn.controls"):
            CNNRun(controls=bad)
    with pytest.raises(MusicrecError, match="cnn.controls"):
        CNNRun(objectives=("wpe",), controls=("mse",))  # the model itself is not trained
