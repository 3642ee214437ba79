"""The splits are disjoint, seeded and follow docs/design.md, section 4."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musicrec.dataset import load_splits, write_splits
from musicrec.errors import MusicrecError
from musicrec.split import SplitConfig, make_splits, new_artist_songs


@pytest.fixture(scope="module")
def plays():
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"s{s}", int(rng.integers(1, 9)))
        for u in range(300)
        for s in rng.choice(100, rng.integers(3, 30), replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])


@pytest.fixture(scope="module")
def splits(plays):
    return make_splits(plays, [f"s{s}" for s in range(100)], SplitConfig(seed=1))


def pattern(matrix):
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_held_out_sets_are_disjoint(splits):
    names = ["train", "warm_test", "cold_test", "cold_user_seed", "cold_user_test"]
    sets = {n: pattern(splits.matrices[n]) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], f"{a} and {b} overlap"
    union = set().union(*sets.values())
    assert union <= pattern(splits.matrices["all"])
    # The only plays in no set are cold users' plays on cold songs.
    cold_song = np.flatnonzero(splits.songs["role"] == "cold")
    cold_user = np.flatnonzero(splits.users["role"] == "cold_user")
    for u, s in pattern(splits.matrices["all"]) - union:
        assert u in cold_user and s in cold_song


def test_cold_songs_and_cold_users_have_no_training_plays(splits):
    train = splits.matrices["train"]
    cold_song = splits.songs["role"].to_numpy() == "cold"
    cold_user = splits.users["role"].to_numpy() == "cold_user"
    assert train[:, cold_song].nnz == 0 and train[cold_user].nnz == 0
    assert cold_song.sum() == 20 and cold_user.sum() == 30


def test_cold_users_give_exactly_k_seed_plays_on_warm_songs(splits):
    seeds = splits.matrices["cold_user_seed"]
    cold_user = np.flatnonzero(splits.users["role"] == "cold_user")
    assert set(np.diff(seeds.indptr)[cold_user]) == {5}
    assert np.all(np.diff(splits.matrices["cold_user_test"].indptr)[cold_user] > 0)
    assert seeds[:, (splits.songs["role"] == "cold").to_numpy()].nnz == 0


def test_warm_holdout_fraction_and_every_user_keeps_training_plays(splits):
    warm = splits.users["role"].to_numpy() == "warm"
    test = splits.matrices["warm_test"][warm].nnz
    train = splits.matrices["train"][warm].nnz
    assert 0.15 < test / (test + train) < 0.25
    assert np.all(np.diff(splits.matrices["train"].indptr)[warm] > 0)


def test_validation_slice_is_warm_songs(splits):
    validation = splits.songs["validation"].to_numpy()
    assert validation.sum() == 8  # 10% of 80 warm songs
    assert set(splits.songs.loc[validation, "role"]) == {"warm"}


def test_same_seed_same_splits_and_round_trip(plays, splits, tmp_path):
    again = make_splits(plays, [f"s{s}" for s in range(100)], SplitConfig(seed=1))
    other = make_splits(plays, [f"s{s}" for s in range(100)], SplitConfig(seed=2))
    assert pattern(again.matrices["warm_test"]) == pattern(splits.matrices["warm_test"])
    assert pattern(other.matrices["warm_test"]) != pattern(splits.matrices["warm_test"])
    write_splits(splits, tmp_path / "split")
    loaded = load_splits(tmp_path / "split")
    assert pattern(loaded.matrices["cold_test"]) == pattern(splits.matrices["cold_test"])
    assert loaded.songs["validation"].sum() == 8


def test_bad_fraction_is_refused():
    with pytest.raises(MusicrecError, match="cold_song_fraction"):
        SplitConfig(cold_song_fraction=1.5)
    with pytest.raises(MusicrecError, match="new_artist_fraction must not exceed"):
        SplitConfig(cold_song_fraction=0.1, new_artist_fraction=0.2)
    # no cold songs at all: no new artists either (the default fraction is not an error)
    assert SplitConfig(cold_song_fraction=0.0).new_artist_fraction == 0.05


def test_new_artists_are_held_out_whole_among_the_cold_songs(plays, splits):
    artists = np.array([f"a{s // 5}" for s in range(100)])  # 20 artists of 5 songs
    artists[:3] = ""  # songs without an artist are never a new artist's
    cfg = SplitConfig(seed=1, new_artist_fraction=0.1)
    with_artists = make_splits(plays, [f"s{s}" for s in range(100)], cfg, artists)
    songs = with_artists.songs
    new = songs["new_artist"].to_numpy()
    assert new.sum() == 10  # two whole artists: the target, 10% of 100 songs
    assert set(songs.loc[new, "role"]) == {"cold"}
    for artist in set(artists[new]):
        assert new[artists == artist].all()  # every song of a new artist
        assert with_artists.matrices["train"][:, artists == artist].nnz == 0
    assert "" not in set(artists[new])
    # The cold split keeps its size; the new artists' songs are part of it.
    assert (songs["role"] == "cold").sum() == (splits.songs["role"] == "cold").sum() == 20


def test_no_cold_songs_means_no_new_artists(plays):
    artists = np.array([f"a{s // 5}" for s in range(100)])
    none = make_splits(
        plays, [f"s{s}" for s in range(100)], SplitConfig(cold_song_fraction=0.0), artists
    )
    assert not none.songs["new_artist"].any() and (none.songs["role"] == "warm").all()


def test_without_artists_the_split_is_the_one_before_new_artists(plays, splits):
    cfg = SplitConfig(seed=1, new_artist_fraction=0.1)
    for artists in (None, np.array([""] * 100), np.array(["one artist"] * 100)):
        same = make_splits(plays, [f"s{s}" for s in range(100)], cfg, artists)
        assert not same.songs["new_artist"].any()
        assert pattern(same.matrices["cold_test"]) == pattern(splits.matrices["cold_test"])


def test_new_artist_choice_never_lets_one_prolific_artist_swallow_the_cold_split():
    artists = np.array(["big"] * 90 + ["small"] * 4 + ["tiny"] * 2 + ["mid"] * 4)
    for seed in range(10):
        chosen = new_artist_songs(artists, 0.05, seed)  # target 5 songs, at most 7.5
        assert not chosen[:90].any() and 2 <= chosen.sum() <= 7
    only_big = np.array(["big"] * 90 + ["other"] * 10)
    assert new_artist_songs(only_big, 0.01, 0).sum() == 10  # none fits: the smallest
    assert not new_artist_songs(artists, 0.0, 0).any()


def _log(n_users: int = 300, n_songs: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u:03d}", f"s{s:03d}", int(rng.integers(1, 9)))
        for u in range(n_users)
        for s in rng.choice(n_songs, rng.integers(4, 20), replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])


def test_cold_folds_hold_every_song_out_once_and_new_artists_whole():
    from musicrec.split import fold_count, make_fold_splits

    plays, songs = _log(), [f"s{s:03d}" for s in range(60)]
    artists = np.array([f"a{s // 5}" for s in range(60)])  # 12 artists of 5 songs
    cfg = SplitConfig(seed=3, new_artist_fraction=0.1, cold_folds=4)
    folds = make_fold_splits(plays, songs, cfg, artists)
    assert len(folds) == 4
    cold = np.stack([(f.songs["role"] == "cold").to_numpy() for f in folds])
    assert (cold.sum(axis=0) == 1).all()  # every song cold in exactly one fold
    assert sorted(cold.sum(axis=1)) == [15, 15, 15, 15]  # folds as equal as can be
    new_in_all = np.stack([f.songs["new_artist"].to_numpy() for f in folds]).sum(axis=0)
    # new artists' songs: 10% of the songs in all (as with one fold), in one fold each
    assert new_in_all.max() == 1 and 5 <= new_in_all.sum() <= 9
    for fold, is_cold in zip(folds, cold, strict=True):
        new = fold.songs["new_artist"].to_numpy()
        assert not (new & ~is_cold).any()  # a fold's new artists are among its cold songs
        for artist in set(artists[new]):  # held out whole: no song of theirs in training
            assert is_cold[artists == artist].all()
        train = fold.matrices["train"].tocsc()
        assert np.diff(train.indptr)[is_cold].sum() == 0  # no cold song has a training play
    again = make_fold_splits(plays, songs, cfg, artists)
    assert all((a.songs == b.songs).all().all() for a, b in zip(folds, again, strict=True))
    # auto: folds for a small catalogue, one for a large one; one fold is the plain split
    assert fold_count(SplitConfig(), 60) == (5, fold_count(SplitConfig(), 60)[1])
    assert fold_count(SplitConfig(), 5000)[0] == 1
    assert fold_count(SplitConfig(cold_song_fraction=0.0), 60)[0] == 1
    one = make_fold_splits(plays, songs, SplitConfig(seed=3, cold_folds=1))
    plain = make_splits(plays, songs, SplitConfig(seed=3, cold_folds=1))
    assert len(one) == 1 and (one[0].songs == plain.songs).all().all()


def test_fold_splits_are_written_beside_fold_0_and_read_back(tmp_path):
    from musicrec.dataset import fold_split_dirs, load_splits, write_splits
    from musicrec.split import make_fold_splits

    folds = make_fold_splits(_log(), [f"s{s:03d}" for s in range(60)], SplitConfig(cold_folds=3))
    summary = write_splits(folds[0], tmp_path / "split", folds[1:], {"count": 3, "why": "test"})
    assert summary["cold_folds"] == {
        "count": 3, "why": "test", "cold_songs_scored": 60, "new_artist_songs_scored": 0,
    }  # fmt: skip
    dirs = fold_split_dirs(tmp_path / "split")
    assert [d.name for d in dirs] == ["split", "1", "2"]
    back = load_splits(dirs[2])
    assert (back.songs["role"] == folds[2].songs["role"]).all()
    assert fold_split_dirs(tmp_path / "nothing") == [tmp_path / "nothing"]


@pytest.mark.parametrize("bad", [0, -1, "some", 2.5, True])
def test_bad_cold_folds_are_one_clear_error(bad):
    with pytest.raises(MusicrecError, match="split.cold_folds"):
        SplitConfig(cold_folds=bad)
