"""One song order: the ids digest, the order check, and model folders refused when they were
fitted on another index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musicrec.dataset import check_same_songs, ids_digest
from musicrec.errors import MusicrecError
from musicrec.models.vectors import (
    InterleavedModel,
    ModelVectors,
    load_model,
    save_interleaved,
    save_model,
)
from musicrec.split import SplitConfig, make_splits


def test_the_digest_depends_on_the_ids_and_their_order():
    base = ids_digest(["a", "b"], ["u"])
    assert base == ids_digest(["a", "b"], ["u"])
    assert base != ids_digest(["b", "a"], ["u"])  # same songs, another order
    assert base != ids_digest(["a", "b"], ["v"])
    assert base != ids_digest(["a"], ["b", "u"])  # the boundary between songs and users counts


def test_check_same_songs_names_the_first_difference():
    songs = pd.Series(["S1", "S2", "S3"])
    check_same_songs(songs, pd.Series(["S1", "S2", "S3"]), "features", "rerun")
    with pytest.raises(MusicrecError, match=r"features .*first difference at row 1\): rerun"):
        check_same_songs(songs, pd.Series(["S1", "S3", "S2"]), "features", "rerun")
    with pytest.raises(MusicrecError, match="2 songs against 3"):
        check_same_songs(songs, pd.Series(["S1", "S2"]), "features", "rerun")


def test_split_keeps_the_catalogue_order_it_is_given():
    plays = pd.DataFrame(
        {"user_id": ["u1", "u2", "u1"], "song_id": ["S2", "S1", "S3"], "play_count": [1, 2, 3]}
    )
    splits = make_splits(plays, ["S3", "S1", "S2"], SplitConfig(cold_song_fraction=0.0))
    assert splits.songs["song_id"].tolist() == ["S3", "S1", "S2"]
    # Each play lands in its song's column of that order.
    assert splits.matrices["all"].toarray().tolist() == [[3.0, 0.0, 1.0], [0.0, 2.0, 0.0]]
    with pytest.raises(MusicrecError, match="twice"):
        make_splits(plays, ["S1", "S1", "S2", "S3"], SplitConfig())


def test_a_model_fitted_on_another_index_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    model = ModelVectors("m", "", ["all"], rng.normal(size=(3, 2)), rng.normal(size=(4, 2)))
    save_model(model, tmp_path / "m", index="abc")
    assert load_model(tmp_path / "m", "abc").index == "abc"
    assert load_model(tmp_path / "m").index == "abc"  # no check asked for
    with pytest.raises(MusicrecError, match="other songs or users.*dvc repro"):
        load_model(tmp_path / "m", "xyz")
    save_model(model, tmp_path / "old")  # a folder that records no index
    with pytest.raises(MusicrecError, match="other songs or users"):
        load_model(tmp_path / "old", "abc")
    save_interleaved(InterleavedModel("i", "", ["all"], model, model), tmp_path / "i", "abc")
    assert load_model(tmp_path / "i", "abc").first.index == "abc"
    with pytest.raises(MusicrecError):
        load_model(tmp_path / "i", "xyz")
