"""The one hyperparameter search, and the content models' searches built on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from musicrec.errors import MusicrecError
from musicrec.models.bow import BowConfig, BowModel
from musicrec.models.content import (
    ContentTuneConfig,
    tune_content_model,
    validation_songs_map,
)
from musicrec.models.search import search, summary
from musicrec.models.training import TrainConfig
from tests.models.test_content_models import make_tiny_content

SPACE = {"lr": ("log", 1e-4, 1e-1), "width": ("choice", (8, 16, 32)), "steps": ("int", 1, 9)}


def score(values: dict) -> float:
    """Best at lr 1e-2, width 16 and 5 steps."""
    return -((np.log10(values["lr"]) + 2) ** 2) - (values["width"] != 16) - abs(values["steps"] - 5)


def test_the_search_tries_params_first_finds_the_optimum_region_and_repeats_itself():
    own = {"lr": 1e-4, "width": 8, "steps": 1}
    best, trace = search(SPACE, score, 30, seed=3, first=own)
    assert {k: trace[0][k] for k in own} == own  # params.yaml's values are trial 0
    assert len(trace) == 30 and best["width"] == 16 and abs(best["steps"] - 5) <= 1
    assert 10**-3 < best["lr"] < 10**-1
    assert score(best) == max(t["validation_map"] for t in trace) > score(own)
    assert search(SPACE, score, 30, seed=3, first=own)[0] == best  # seeded: the same choice
    record = summary(best, own, trace)
    assert record["params_yaml_map"] == score(own) and record["trials"] == 30


def test_values_outside_the_space_are_not_forced_on_the_search():
    _, trace = search(SPACE, score, 3, seed=0, first={"lr": 1.0, "width": 8, "steps": 1})
    assert trace[0]["lr"] != 1.0


@pytest.fixture(scope="module")
def tiny_content():
    return make_tiny_content()


TRAIN = TrainConfig(
    epochs=6, batch_size=8, learning_rate=3e-3, weight_decay=1e-4, patience=6, device="cpu"
)
BOW = BowConfig(vocabulary_size=8, frames_per_song=24, pca_components=4, hidden_units=16)
TUNE = ContentTuneConfig(bow_mlp=3, width=(8, 16), learning_rate=(1e-3, 1e-2))


def make_mlp(width: int, training: TrainConfig) -> BowModel:
    return BowModel("mlp", dataclasses.replace(BOW, hidden_units=width), training)


def own_values() -> dict:
    """params' own settings, as a search's trace names them."""
    return {
        "learning_rate": TRAIN.learning_rate,
        "weight_decay": TRAIN.weight_decay,
        "width": BOW.hidden_units,
    }


def test_a_content_search_keeps_the_model_of_its_best_trial(tiny_content, tmp_path):
    features, data, _ = tiny_content
    own = own_values()
    model, record = tune_content_model(
        make_mlp, TRAIN, BOW.hidden_units, 3, features, data, TUNE, tmp_path
    )
    trace = record["trace"]
    assert len(trace) == 3 and {k: trace[0][k] for k in own} == own
    assert record["validation_map"] == max(t["validation_map"] for t in trace)
    chosen = record["chosen"]
    assert model.cfg.hidden_units == chosen["width"]
    assert model.train_cfg.learning_rate == chosen["learning_rate"]
    # The model returned is the one its trial scored: refitting the choice gives its score.
    chosen_training = dataclasses.replace(
        TRAIN, learning_rate=chosen["learning_rate"], weight_decay=chosen["weight_decay"]
    )
    refit = make_mlp(chosen["width"], chosen_training).fit(features, data, tmp_path / "refit")
    again = validation_songs_map(refit, features, data, TUNE.map_k, TUNE.seed)
    assert again == validation_songs_map(model, features, data, TUNE.map_k, TUNE.seed)
    assert again == record["validation_map"]
    # The time of the settings not kept: all trials' but the chosen one's.
    kept = next(t["seconds"] for t in trace if t["validation_map"] == record["validation_map"])
    total = sum(t["seconds"] for t in trace)
    assert record["search_seconds"] == pytest.approx(total - kept, abs=1e-3)


def test_no_trials_fits_params_own_settings(tiny_content, tmp_path):
    features, data, _ = tiny_content
    own = own_values()
    model, record = tune_content_model(
        make_mlp, TRAIN, BOW.hidden_units, 0, features, data, TUNE, tmp_path
    )
    assert record["chosen"] == own and record["trace"] == [] and record["trials"] == 0
    assert record["search_seconds"] == 0.0
    assert model.cfg == BOW and model.train_cfg == TRAIN


def test_the_validation_songs_map_rewards_a_model_that_ranks_them_right(tiny_content, tmp_path):
    features, data, kind = tiny_content

    class Oracle:  # the true factors for the validation songs
        name = "oracle"

        def predict(self, features, rows):
            return data.targets[rows]

        def user_vectors(self, data):
            return data.user_factors

    class Reversed(Oracle):
        def predict(self, features, rows):
            return -data.targets[rows]

    good = validation_songs_map(Oracle(), features, data, 500, 0)
    bad = validation_songs_map(Reversed(), features, data, 500, 0)
    assert 0 < bad < good <= 1


@pytest.mark.parametrize(
    "bad", [dict(bow_mlp=-1), dict(width=()), dict(learning_rate=(0.1, 0.01)), dict(map_k=0)]
)
def test_bad_content_tuning_params_are_one_clear_error(bad):
    with pytest.raises(MusicrecError, match="tune_content"):
        ContentTuneConfig(**bad)
