"""The context-based filter: shrunk means per metadata value, their ridge, and its skipping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from musicrec.errors import MusicrecError
from musicrec.metadata import read_metadata
from musicrec.models.content import ContentData
from musicrec.models.context import (
    ContextConfig,
    fit_context,
    skip_reason,
    value_means,
)


def test_value_means_known_answer_leave_one_out_and_shrinkage():
    values = pd.Series(["a", "a", "b", "", "a"])
    targets = np.array([[1.0], [3.0], [5.0], [7.0], [9.0]])
    source = np.array([0, 1, 2])  # the training songs; their global mean is 3
    means = value_means(values, targets, source, shrinkage=1.0)
    # 0: the other "a" (3) and one pseudo-song of 3; 1: the other "a" (1) and 3;
    # 2: no other "b", the global mean; 3: unknown, the global mean; 4: both "a" songs and 3.
    np.testing.assert_allclose(means[:, 0], [3.0, 2.0, 3.0, 3.0, 7.0 / 3.0])
    unshrunk = value_means(values, targets, source, shrinkage=0.0)
    np.testing.assert_allclose(unshrunk[:, 0], [3.0, 1.0, 3.0, 3.0, 2.0])


def _artist_world(seed: int = 0, n_artists: int = 12, per_artist: int = 10):
    """Songs whose factors are their artist's plus noise; 70% training, 10% validation."""
    rng = np.random.default_rng(seed)
    artist_factors = rng.normal(0, 1, (n_artists, 4))
    artists = np.repeat(np.arange(n_artists), per_artist)
    targets = (artist_factors[artists] + rng.normal(0, 0.3, (len(artists), 4))).astype(np.float32)
    order = rng.permutation(len(artists))
    n = len(artists)
    train, validation = np.sort(order[: int(0.7 * n)]), np.sort(order[int(0.7 * n) : int(0.8 * n)])
    data = ContentData(
        targets=targets,
        user_factors=rng.normal(0, 1, (5, 4)).astype(np.float32),
        train_plays=sp.csr_matrix((5, n), dtype=np.float32),
        train_songs=train,
        validation_songs=validation,
        index_digest="test",
    )
    metadata = pd.DataFrame(
        {
            "artist": [f"artist {a}" for a in artists],
            "year": rng.choice(["1999", "2000"], n),  # says nothing
        }
    )
    return metadata, data, artist_factors[artists]


def test_a_songs_context_vector_is_near_its_artists_factors():
    metadata, data, truth = _artist_world()
    metadata.loc[0, "artist"] = ""  # one song of unknown artist
    vectors, summary = fit_context(metadata, data, ContextConfig(columns=("artist", "year")))
    held_out = np.setdiff1d(np.arange(len(vectors)), data.train_songs)
    held_out = held_out[held_out != 0]
    cosine = (vectors[held_out] * truth[held_out]).sum(1) / (
        np.linalg.norm(vectors[held_out], axis=1) * np.linalg.norm(truth[held_out], axis=1)
    )
    assert cosine.mean() > 0.9
    assert summary["columns"] == ["artist", "year"] and summary["known_share"]["artist"] > 0.9
    # Nothing known: the prediction from the global means, far from any one artist's.
    assert np.linalg.norm(vectors[0]) < 0.5 * np.linalg.norm(vectors[held_out], axis=1).mean()


def test_metadata_follows_the_song_order_and_leaves_gaps_empty(tmp_path):
    (tmp_path / "songs.csv").write_text("song_id,artist,title\ns2,B,x\ns1,A,y\n", encoding="utf-8")
    table = read_metadata(tmp_path, pd.Series(["s1", "s2", "s3"]), ("artist", "genre"))
    assert list(table.columns) == ["artist"]  # genre is not in the file
    assert list(table["artist"]) == ["A", "B", ""]  # s3 has no row


def test_auto_columns_are_the_categorical_ones_ids_titles_and_free_text_fall_out(tmp_path):
    rows = ["song_id,title,artist,genre,path,constant,sparse,isrc"]
    for i in range(10):
        genre = "rock" if i < 5 else "jazz"
        sparse = "x" if i < 2 else ""  # 1 distinct known value: falls out
        isrc = f"US{i}" if i < 4 else ""  # an id known for few songs: falls out all the same
        rows.append(f"s{i},Title {i},A{i // 2},{genre},/music/{i}.ogg,same,{sparse},{isrc}")
    (tmp_path / "songs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    songs = pd.Series([f"s{i}" for i in range(10)])
    table = read_metadata(tmp_path, songs, "auto")
    # artist: 5 values for 10 songs (at most half: kept); genre 2; title and path 10 each
    assert list(table.columns) == ["artist", "genre"]
    assert list(read_metadata(tmp_path, songs[:8], "auto").columns) == ["artist", "genre"]
    # 5 songs of 5 artists: more than half as many artists as songs, no longer a category
    assert list(read_metadata(tmp_path, songs[::2], "auto").columns) == ["genre"]
    # an explicit list still reads what it names, categorical or not
    assert list(read_metadata(tmp_path, songs, ("title", "artist")).columns) == ["title", "artist"]
    (tmp_path / "songs.csv").write_text("song_id,title\ns0,a\ns1,b\n", encoding="utf-8")
    table = read_metadata(tmp_path, songs[:2], "auto")
    assert table.columns.empty
    assert "no categorical column (context.columns: auto" in skip_reason(tmp_path, table, "auto")


def test_context_columns_default_to_auto_and_other_words_are_refused():
    assert ContextConfig().columns == "auto"
    with pytest.raises(MusicrecError, match="context.columns: 'all'.*'auto'"):
        ContextConfig(columns="all")


def test_a_songs_csv_that_is_not_utf8_is_one_clear_error(tmp_path):
    (tmp_path / "songs.csv").write_bytes(b"song_id,artist\ns1,Bj\xf6rk\n")
    with pytest.raises(MusicrecError, match="songs.csv: cannot be read as UTF-8 CSV"):
        read_metadata(tmp_path, pd.Series(["s1"]), ("artist",))


def test_no_metadata_means_the_model_is_skipped_with_a_reason(tmp_path):
    songs = pd.Series(["s1", "s2"])
    assert "is absent" in skip_reason(
        tmp_path, read_metadata(tmp_path, songs, ("artist",)), ("artist",)
    )
    (tmp_path / "songs.csv").write_text("song_id,title\ns1,x\n")
    table = read_metadata(tmp_path, songs, ("artist", "genre"))
    assert "none of the columns artist, genre" in skip_reason(tmp_path, table, ("artist", "genre"))
    (tmp_path / "songs.csv").write_text("song_id,artist\ns1,\ns2,\n")
    table = read_metadata(tmp_path, songs, ("artist",))
    assert "no value in artist" in skip_reason(tmp_path, table, ("artist",))
    (tmp_path / "songs.csv").write_text("song_id,artist\ns1,A\n")
    assert skip_reason(tmp_path, read_metadata(tmp_path, songs, ("artist",)), ("artist",)) is None


@pytest.mark.parametrize("bad", [dict(columns=()), dict(columns=("song_id",)), dict(shrinkage=-1)])
def test_bad_context_params_are_one_clear_error(bad):
    with pytest.raises(MusicrecError, match="context"):
        ContextConfig(**bad)


def test_without_metadata_a_stage_writes_why_it_skipped(tmp_path):
    from musicrec.models.context import metadata_or_skip

    features = tmp_path / "features"
    features.mkdir()
    (features / "songs.tsv").write_text("song_id\trow\ns1\t0\ns2\t1\n")
    record = {"stage": "audio_context"}
    out = tmp_path / "models" / "hybrid_audio_context"
    assert metadata_or_skip(tmp_path, features, ("artist",), out, record) is None
    skipped = json.loads((out / "skipped.json").read_text())
    assert skipped == {"model": "hybrid_audio_context", "reason": record["skipped"]}
    assert "is absent" in record["skipped"]
    (tmp_path / "songs.csv").write_text("song_id,artist\ns2,B\ns1,A\n")
    found = metadata_or_skip(tmp_path, features, ("artist",), tmp_path / "other", {"stage": "x"})
    assert found["artist"].tolist() == ["A", "B"] and not (tmp_path / "other").exists()
