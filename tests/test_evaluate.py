"""evaluate's tasks: which users and songs each split scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musicrec.ranking import split_tasks
from musicrec.split import SplitConfig, make_splits


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"s{s}", int(rng.integers(1, 9)))
        for u in range(400)
        for s in rng.choice(120, rng.integers(3, 30), replace=False)
    ]
    plays = pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])
    return make_splits(plays, [f"s{s}" for s in range(120)], SplitConfig(seed=1))


def test_max_users_scores_a_fixed_uniform_sample_of_each_split(splits):
    every = split_tasks(splits)
    sampled = split_tasks(splits, max_users=25, seed=13)
    assert split_tasks(splits, max_users=25, seed=13)["all"].users.tolist() == (
        sampled["all"].users.tolist()
    )
    assert split_tasks(splits, max_users=25, seed=14)["all"].users.tolist() != (
        sampled["all"].users.tolist()
    )
    for name, task in sampled.items():
        full = every[name]
        assert len(full.users) > 25 and len(task.users) == 25
        assert np.isin(task.users, full.users).all() and (np.diff(task.users) > 0).all()
        rows = np.searchsorted(full.users, task.users)
        # each kept user keeps its own row of excluded and relevant songs
        assert (task.relevant != full.relevant[rows]).nnz == 0
        assert (task.excluded != full.excluded[rows]).nnz == 0
        assert task.candidates.tolist() == full.candidates.tolist()
    # more than a split has, or 0: every user
    assert split_tasks(splits, max_users=10**6)["warm"].users.tolist() == (
        every["warm"].users.tolist()
    )


def test_cold_new_artist_view_ranks_the_new_artists_cold_songs_only(splits):
    assert "cold_new_artist" not in split_tasks(splits)  # no artists: no view
    plays = splits.matrices["all"].tocoo()
    log = pd.DataFrame(
        {"user_id": [f"u{u:03d}" for u in plays.row], "song_id": [f"s{s:03d}" for s in plays.col]}
    ).assign(play_count=plays.data)
    artists = np.array([f"a{s // 6}" for s in range(120)])
    cfg = SplitConfig(seed=1, new_artist_fraction=0.1)
    with_artists = make_splits(log, [f"s{s:03d}" for s in range(120)], cfg, artists)
    tasks = split_tasks(with_artists)
    view, cold = tasks["cold_new_artist"], tasks["cold"]
    new = np.flatnonzero(with_artists.songs["new_artist"])
    assert view.candidates.tolist() == new.tolist() and len(new) == 12
    assert np.isin(view.candidates, cold.candidates).all()
    assert view.excluded.nnz == 0
    # every warm user with training plays and a play on a new artist's song; those plays
    test = with_artists.matrices["cold_test"][:, new].tocsr()
    warm = (with_artists.users["role"] == "warm").to_numpy().copy()
    warm &= np.diff(with_artists.matrices["train"].indptr) > 0
    assert view.users.tolist() == np.flatnonzero(warm & (np.diff(test.indptr) > 0)).tolist()
    assert (view.relevant != test[view.users]).nnz == 0


def test_a_view_scores_the_models_of_its_split():
    from musicrec import registry

    assert registry.scores_on(["cold", "all"], "cold_new_artist")
    assert registry.scores_on(list(registry.SPLITS), "cold_new_artist")
    assert not registry.scores_on(["warm", "cold_user"], "cold_new_artist")


def test_a_view_of_fewer_than_five_songs_is_not_scored(splits):
    from musicrec.ranking import MIN_VIEW_SONGS

    plays = splits.matrices["all"].tocoo()
    log = pd.DataFrame(
        {"user_id": [f"u{u:03d}" for u in plays.row], "song_id": [f"s{s:03d}" for s in plays.col]}
    ).assign(play_count=plays.data)
    artists = np.array([f"a{s // 3}" for s in range(120)])  # 40 artists of 3 songs
    cfg = SplitConfig(seed=1, new_artist_fraction=0.02)  # one artist: 3 songs
    few = make_splits(log, [f"s{s:03d}" for s in range(120)], cfg, artists)
    assert 0 < few.songs["new_artist"].sum() < MIN_VIEW_SONGS == 5
    assert "cold_new_artist" not in split_tasks(few)


def test_the_headline_is_each_deployable_models_map_and_recall_curves_a_column_per_model():
    from musicrec.evaluate import headline, recall_curves

    means = {
        "random": {"cold": {"map@500": 0.03, "recall@10": 0.1, "recall@50": 0.4}},
        "wmf": {
            "warm": {"map@500": 0.16, "auc": 0.9, "recall@10": 0.3, "recall@50": 0.6},
            "cold": {"map@500": 0.03, "auc": 0.5, "recall@10": 0.1, "recall@50": 0.3},
        },
        "cnn_mse": {"cold": {"map@500": 0.12, "r2": 0.2, "recall@10": 0.2, "recall@50": 0.5}},
    }
    # references (random) are left out; one value per model and split
    assert headline(means, 500) == {"wmf": {"warm": 0.16, "cold": 0.03}, "cnn_mse": {"cold": 0.12}}
    curves = recall_curves(means, [10, 50])
    assert set(curves) == {"warm", "cold"}
    assert list(curves["cold"].columns) == ["k", "random", "wmf", "cnn_mse"]  # registry order
    assert curves["cold"]["cnn_mse"].tolist() == [0.2, 0.5]
    assert list(curves["warm"].columns) == ["k", "wmf"]


def test_evaluate_pairs_models_on_shared_resamples_and_stores_what_recomputes_them(splits):
    from musicrec.dashboard import entry_values
    from musicrec.evaluate import evaluate_models
    from musicrec.models.vectors import ModelVectors

    rng = np.random.default_rng(4)
    n_users, n_songs = splits.matrices["train"].shape
    users = rng.normal(size=(n_users, 3)).astype(np.float32)
    every = ["warm", "cold", "all", "cold_user"]

    def model(name, songs):
        return ModelVectors(name, "", every, users, songs.astype(np.float32))

    songs = rng.normal(size=(n_songs, 3))
    models = [model("a", songs), model("twin", songs), model("b", rng.normal(size=(n_songs, 3)))]
    result = evaluate_models(splits, models, 20, [5], 200, seed=3)
    for split, by_model in result.paired.items():
        assert by_model["a"]["twin"] == [0.0, 0.0]  # the same scores: no difference, ever
        low, high = by_model["a"]["b"]
        assert by_model["b"]["a"] == [-high, -low]  # b - a mirrors a - b
        gap = result.means["a"][split]["map@20"] - result.means["b"][split]["map@20"]
        assert low <= gap <= high
        for name in ("a", "b"):
            low, high = result.intervals[name][split]["map@20"]
            assert low <= result.means[name][split]["map@20"] <= high
        # the stored per-entry ranks give back each user's value, entry by entry
        stored = result.per_user[split]
        for name in ("a", "b"):
            per_entry = entry_values(stored, name, "map@20")
            rows = np.searchsorted(stored["users"], stored["entry_users"])
            sums = np.bincount(rows, weights=per_entry, minlength=len(stored["users"]))
            np.testing.assert_allclose(sums, stored[f"{name}:map@20"], atol=1e-6)
