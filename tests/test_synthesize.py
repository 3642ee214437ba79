"""The synthetic world: deterministic, music-like, with taste partly audible."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musicrec.errors import MusicrecError
from musicrec.synth_audio import STYLE_NAMES, SongAttributes, render_song
from musicrec.synthesize import WorldConfig, make_world
from musicrec.taste import affinity

SMALL = dict(n_songs=80, n_users=150, mean_songs_per_user=10, hidden_dims=4, seed=3)


def test_world_is_deterministic_for_a_seed():
    a = make_world(WorldConfig(**SMALL))
    b = make_world(WorldConfig(**SMALL))
    c = make_world(WorldConfig(**{**SMALL, "seed": 4}))
    assert a[1].equals(b[1]) and a[0].equals(b[0])
    assert not a[1].equals(c[1])


def test_play_log_is_valid_heavy_tailed_and_taste_driven():
    songs, plays, truth = make_world(WorldConfig(**{**SMALL, "n_songs": 400, "n_users": 600}))
    assert plays["play_count"].min() >= 1
    assert not plays.duplicated(["user_id", "song_id"]).any()
    assert plays["play_count"].var() > 2 * plays["play_count"].mean()  # over-dispersed
    listeners = plays.groupby("song_id").size().sort_values(ascending=False)
    assert listeners.iloc[:40].sum() > 0.25 * listeners.sum()  # top 10% of songs: > 25%
    users = plays["user_id"].str[1:].astype(int).to_numpy()
    song_idx = plays["song_id"].str[1:].astype(int).to_numpy()
    # Affinities are standardised over every (user, song) cell: 0 is the average cell.
    assert affinity(truth, "audible", users, song_idx).mean() > 0.2  # audible taste matters


def test_audio_share_zero_makes_taste_inaudible():
    _, plays, truth = make_world(WorldConfig(**{**SMALL, "audio_share": 0.0, "n_users": 600}))
    users = plays["user_id"].str[1:].astype(int).to_numpy()
    song_idx = plays["song_id"].str[1:].astype(int).to_numpy()
    audible = affinity(truth, "audible", users, song_idx).mean()
    hidden = affinity(truth, "hidden", users, song_idx).mean()
    assert abs(audible) < 0.1 < hidden


def test_truth_factors_reproduce_standardised_affinities_over_every_cell():
    _, _, truth = make_world(WorldConfig(**SMALL))
    every = {
        part: affinity(truth, part, np.arange(150)[:, None], np.arange(80)[None, :])
        for part in ("audible", "hidden")
    }
    for cells in every.values():  # the moments computed without the matrix are its moments
        assert cells.shape == (150, 80)
        assert abs(cells.mean()) < 1e-4 and cells.std() == pytest.approx(1.0, abs=1e-4)
    total = affinity(truth, "total", np.arange(150)[:, None], np.arange(80)[None, :])
    share = float(truth["audio_share"])
    expected = np.sqrt(share) * every["audible"] + np.sqrt(1 - share) * every["hidden"]
    np.testing.assert_allclose(total, expected, atol=1e-5)


def test_plays_do_not_depend_on_the_block_of_users_drawn_at_once():
    # Blocks bound synthesize's memory; the world must not change with them.
    reference = make_world(WorldConfig(**SMALL), block_cells=80 * 150)[1]
    for block_cells in (1, 80 * 7, 80 * 64 + 3):
        assert make_world(WorldConfig(**SMALL), block_cells=block_cells)[1].equals(reference)


def test_songs_are_drawn_in_proportion_to_exp_logit():
    # Gumbel top-1 over many users with the same taste gives softmax frequencies.
    from musicrec.taste import _draw_listened

    logits = np.array([0.0, 1.0, 2.0, -1.0, 0.5])
    users = np.ones((20000, 1))
    rows, cols = _draw_listened(
        (users, np.zeros((5, 1)), logits), np.ones(20000, int), np.random.default_rng(0), 4096
    )
    assert (rows == np.arange(20000)).all()
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(np.bincount(cols, minlength=5) / 20000, expected, atol=0.01)


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_rendered_clip_is_audible_finite_and_of_the_asked_length(style):
    attrs = SongAttributes(style, 100.0, 2, "major", "saw", 0.5, 0.5, 0.5)
    y = render_song(attrs, 22050, 2.0, [1, 2])
    assert y.shape == (44100,) and y.dtype == np.float32
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert 10 * np.log10(np.mean(y.astype(float) ** 2)) > -40


def test_brightness_moves_the_spectral_centroid():
    import librosa

    def centroid(brightness):
        attrs = SongAttributes("rock", 120.0, 0, "minor", "saw", brightness, 0.5, 0.5)
        return librosa.feature.spectral_centroid(y=render_song(attrs, 22050, 3.0, 1)).mean()

    assert centroid(0.9) > 1.5 * centroid(0.1)


def test_synthesized_folder_has_the_data_layout(tiny_world):
    plays = (tiny_world / "plays.tsv").read_text().splitlines()
    assert len(plays[0].split("\t")) == 3
    files = sorted((tiny_world / "audio").glob("*.flac"))
    assert len(files) == 60
    info = sf.info(str(files[0]))
    assert info.samplerate == 22050 and info.channels == 1 and info.duration == pytest.approx(3.0)
    assert (tiny_world / "songs.csv").exists() and (tiny_world / "truth").is_dir()


def test_bad_config_is_refused():
    with pytest.raises(MusicrecError, match="audio_share"):
        WorldConfig(audio_share=1.5)
