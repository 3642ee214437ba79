"""The hybrid strategies: interleaving (known answer), the vectors each strategy writes, and the
choice of the CF weight on a validation task made of training plays only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musicrec.errors import MusicrecError
from musicrec.models.factorization import WMFConfig, fit_wmf, listeners_of, with_popularity
from musicrec.models.hybrid import (
    HybridConfig,
    WeightRule,
    build_hybrids,
    choose_weight,
    pick_content_model,
)
from musicrec.models.vectors import (
    InterleavedModel,
    ModelVectors,
    discover_models,
    load_model,
    save_interleaved,
)
from musicrec.split import SplitConfig, make_splits


def test_interleaving_known_answer():
    users = np.zeros((1, 1), np.float32)
    first = ModelVectors("a", "", ["all"], users + 1, np.array([[3.0], [2.0], [1.0], [0.0]]))
    second = ModelVectors("b", "", ["all"], users + 1, np.array([[0.0], [1.0], [2.0], [3.0]]))
    mixed = InterleavedModel("m", "", ["all"], first, second)
    scores = mixed.scores(np.array([0]), np.arange(4))[0]
    # first ranks A B C D, second D C B A: interleaved A (first), D (second), B (first), C.
    assert list(np.argsort(-scores)) == [0, 3, 1, 2]
    np.testing.assert_array_equal(scores, [-0.0, -2.0, -3.0, -1.0])


def test_interleaved_model_round_trips_and_is_one_model_to_discover(tmp_path):
    rng = np.random.default_rng(0)
    first = ModelVectors("a", "", ["all"], rng.normal(size=(5, 2)), rng.normal(size=(7, 2)))
    second = ModelVectors("b", "", ["all"], rng.normal(size=(5, 3)), rng.normal(size=(7, 3)))
    save_interleaved(InterleavedModel("mixed", "d", ["all"], first, second), tmp_path / "mixed")
    assert discover_models(tmp_path) == [tmp_path / "mixed"]
    loaded = load_model(tmp_path / "mixed")
    users, songs = np.arange(5), np.arange(7)
    expected = InterleavedModel("mixed", "d", ["all"], first, second).scores(users, songs)
    np.testing.assert_array_equal(loaded.scores(users, songs), expected)


@pytest.fixture(scope="module")
def block_world():
    """Two taste groups: users play 12 songs, nearly all from their own group's half."""
    rng = np.random.default_rng(0)
    n_users, n_songs = 300, 120
    rows = []
    for u in range(n_users):
        own = np.arange(u % 2, n_songs, 2)
        picks = rng.choice(own, 11, replace=False).tolist() + [int(rng.integers(n_songs))]
        rows += [(f"u{u:03d}", f"s{s:03d}", int(rng.integers(1, 6))) for s in set(picks)]
    plays = pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])
    cfg = SplitConfig(seed=1, validation_song_fraction=0.08)
    splits = make_splits(plays, [f"s{s:03d}" for s in range(n_songs)], cfg)
    # (no weight on popularity: the column is there, as the stage writes it, but this world's
    # songs are equally popular and the tests below are about content)
    wmf_cfg = WMFConfig(factors=4, iterations=10, seed=0)
    users, songs = fit_wmf(splits.matrices["train"], wmf_cfg)
    # as the wmf stage writes it: the popularity column last
    listeners = listeners_of(splits.matrices["train"])
    users, songs = with_popularity(users, songs, listeners, wmf_cfg.user_popularity())
    wmf = ModelVectors("wmf", "", ["warm", "cold", "all"], users, songs)
    group = np.array([int(s[1:]) % 2 for s in splits.songs["song_id"]])
    return splits, wmf, wmf_cfg, group


def test_build_hybrids_writes_what_each_strategy_means(block_world):
    splits, wmf, _, _ = block_world
    rng = np.random.default_rng(1)
    cf, popularity = wmf.song_vectors[:, :4], wmf.song_vectors[:, 4:]
    content = ModelVectors("c", "", ["cold"], wmf.user_vectors[:, :4], rng.normal(size=cf.shape))
    cfg = HybridConfig(switch_min_plays=3)
    rule = WeightRule("global", 0.7)
    weighted, switching, mixed, profile = build_hybrids(splits, wmf, content, rule, cfg)
    # CF and content mixed on the factors; CF's popularity column kept for every song
    np.testing.assert_allclose(
        weighted.song_vectors,
        np.hstack([0.7 * cf + 0.3 * content.song_vectors, popularity]),
        atol=1e-6,
    )
    assert weighted.user_vectors is wmf.user_vectors
    plays = np.diff(splits.matrices["train"].tocsc().indptr)
    # Per song: w_v = n_v / (n_v + k) from the song's training listeners; cold songs content.
    soft = build_hybrids(splits, wmf, content, WeightRule("per_song", 4.0), cfg)[0]
    w = (plays / (plays + 4.0))[:, None]
    np.testing.assert_allclose(
        soft.song_vectors[:, :4], w * cf + (1 - w) * content.song_vectors, atol=1e-6
    )
    cold = splits.songs["role"].to_numpy() == "cold"
    np.testing.assert_allclose(soft.song_vectors[cold, :4], content.song_vectors[cold], rtol=1e-6)
    assert (soft.song_vectors[cold, 4] == 0).all()  # nobody played them: no popularity
    few = plays < 3
    assert few.any() and (~few).any()
    np.testing.assert_array_equal(switching.song_vectors[few, :4], content.song_vectors[few])
    np.testing.assert_array_equal(switching.song_vectors[~few], wmf.song_vectors[~few])
    assert mixed.first is wmf and mixed.second is content
    new_user = np.flatnonzero(splits.users["role"].to_numpy() == "cold_user")[0]
    seeds = splits.matrices["cold_user_seed"][new_user].indices
    np.testing.assert_allclose(
        profile.user_vectors[new_user], content.song_vectors[seeds].mean(axis=0), rtol=1e-5
    )
    assert profile.splits == ["cold_user"]


def test_informative_content_earns_more_than_noise_and_songs_cf_has_learnt_stay_cf(block_world):
    splits, wmf, wmf_cfg, group = block_world
    cfg = HybridConfig(weights=(0.0, 0.5, 1.0))
    rng = np.random.default_rng(2)
    scale = wmf.song_vectors[:, :4].std()  # noise on the scale of real predicted factors
    noise = ModelVectors(
        "noise", "", ["cold"], wmf.user_vectors[:, :4], scale * rng.normal(size=(120, 4))
    )
    # Content that knows each song's group: the mean WMF vector of the group's warm songs.
    warm = splits.songs["role"].to_numpy() == "warm"
    centres = np.stack([wmf.song_vectors[warm & (group == g), :4].mean(axis=0) for g in (0, 1)])
    informed = ModelVectors("group", "", ["cold"], wmf.user_vectors[:, :4], centres[group])
    _, noise_scores = choose_weight(splits, wmf, noise, wmf_cfg, cfg)
    rule, scores = choose_weight(splits, wmf, informed, wmf_cfg, cfg)
    assert scores[rule] == max(scores.values())
    assert len(scores) == 3 + len(cfg.per_song_k)  # every rule is scored
    assert max(scores.values()) > max(noise_scores.values())
    # Informed content helps the cold-like validation songs: some weight leaves pure CF.
    assert rule != WeightRule("global", 1.0)
    # A per-song weight hands a song CF has learnt (many listeners) to CF.
    assert WeightRule("per_song", 5.0).song_weights(np.array([0, 5, 495]))[:, 0].tolist() == [
        0.0, 0.5, 0.99,
    ]  # fmt: skip
    best, by_name = pick_content_model(splits, [noise, informed], 500, 0)
    assert best.name == "group" and by_name["group"] > by_name["noise"]


def test_max_users_validates_on_a_sample_that_still_finds_the_informative_content(block_world):
    from musicrec.ranking import build_task

    splits, wmf, wmf_cfg, group = block_world
    warm_users = np.flatnonzero(splits.users["role"].to_numpy() == "warm")
    songs = np.flatnonzero(splits.songs["role"].to_numpy() == "warm")
    train = splits.matrices["train"]
    every = build_task("t", warm_users, songs, train, train)
    sample = build_task("t", warm_users, songs, train, train, max_users=60, seed=3)
    assert len(every.users) > 60 and len(sample.users) == 60
    assert np.isin(sample.users, every.users).all()
    rows = np.searchsorted(every.users, sample.users)
    assert (sample.relevant != every.relevant[rows]).nnz == 0
    rng = np.random.default_rng(2)
    noise = ModelVectors("noise", "", ["cold"], wmf.user_vectors[:, :4], rng.normal(size=(120, 4)))
    warm = splits.songs["role"].to_numpy() == "warm"
    centres = np.stack([wmf.song_vectors[warm & (group == g), :4].mean(axis=0) for g in (0, 1)])
    informed = ModelVectors("group", "", ["cold"], wmf.user_vectors[:, :4], centres[group])
    grid, one = (0.0, 0.5, 1.0), WeightRule("global", 1.0)
    # A sample as large as the users is every user: the same choice and scores.
    full = choose_weight(splits, wmf, informed, wmf_cfg, HybridConfig(weights=grid, per_song_k=()))
    everyone = HybridConfig(weights=grid, per_song_k=(), max_users=10**6)
    assert choose_weight(splits, wmf, informed, wmf_cfg, everyone) == full
    # On a sample, informative content still earns a weight and is picked over noise.
    weight, scores = choose_weight(
        splits, wmf, informed, wmf_cfg, HybridConfig(weights=grid, per_song_k=(), max_users=100)
    )
    assert weight.value < 1.0 and scores[weight] > scores[one] and scores != full[1]
    best, _ = pick_content_model(splits, [noise, informed], 500, 0, max_users=100)
    assert best.name == "group"


@pytest.mark.parametrize(
    "bad",
    [
        dict(weights=(), per_song_k=()),
        dict(per_song_k=(0.0,)),
        dict(weights=(1.5,)),
        dict(switch_min_plays=0),
        dict(validation_holdout=1.0),
        dict(max_users=-1),
    ],
)
def test_bad_params_raise(bad):
    with pytest.raises(MusicrecError):
        HybridConfig(**bad)
