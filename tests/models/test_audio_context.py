"""hybrid_audio_context: audio plus the context of what the audio leaves of the factors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from musicrec.errors import MusicrecError
from musicrec.models.audio_context import AudioContextConfig, fit_audio_context, key_evidence
from musicrec.models.content import ContentData
from musicrec.models.context import ContextConfig
from musicrec.models.vectors import ModelVectors


def _world(
    seed: int = 0,
    n_artists: int = 16,
    per_artist: int = 10,
    n_users: int = 300,
    unheard: np.ndarray | None = None,
):
    """Factors = what can be heard (+ ``unheard`` [(n_songs, 4)], a part the audio models
    miss) + the artist's standing; users play the songs they score highest. 70% of songs
    train, 15% validate, 15% are new."""
    rng = np.random.default_rng(seed)
    artists = np.repeat(np.arange(n_artists), per_artist)
    n = len(artists)
    audible = rng.normal(0, 1, (n, 4))
    if unheard is not None:
        audible = audible + unheard
    targets = (audible + 1.2 * rng.normal(0, 1, (n_artists, 4))[artists]).astype(np.float32)
    users = rng.normal(0, 1, (n_users, 4)).astype(np.float32)
    scores = users @ targets.T
    plays = (scores > np.quantile(scores, 0.9, axis=1, keepdims=True)).astype(np.float32)
    order = rng.permutation(n)
    train = np.sort(order[: int(0.7 * n)])
    validation = np.sort(order[int(0.7 * n) : int(0.85 * n)])
    new = np.sort(order[int(0.85 * n) :])
    seen = np.zeros(n, bool)
    seen[train] = seen[validation] = True
    data = ContentData(
        targets=np.where(seen[:, None], targets, 0).astype(np.float32),  # new songs: unknown
        user_factors=users,
        train_plays=sp.csr_matrix(plays * seen),
        train_songs=train,
        validation_songs=validation,
        index_digest="test",
    )
    metadata = pd.DataFrame({"artist": [f"artist {a}" for a in artists]})
    return metadata, data, audible, targets, new


def _audio(name: str, vectors: np.ndarray) -> ModelVectors:
    return ModelVectors(name, "", ["cold", "all"], np.zeros((1, vectors.shape[1])), vectors)


CONTEXT = ContextConfig(columns=("artist",), shrinkage=2.0, alphas=(0.1, 1.0, 10.0))


def test_audio_and_context_together_come_closer_than_audio_alone():
    metadata, data, audible, targets, new = _world()
    rng = np.random.default_rng(1)
    good = _audio("good", (audible + rng.normal(0, 0.3, audible.shape)).astype(np.float32))
    noise = _audio("noise", rng.normal(0, 1, audible.shape).astype(np.float32))
    vectors, summary = fit_audio_context(
        metadata, data, [noise, good], CONTEXT, AudioContextConfig()
    )
    assert summary["audio_model"] == "good" and summary["weight"] > 0
    assert set(summary["validation_map_by_model_and_weight"]) == {
        "noise", "good", "audio_mean", "none",
    }  # fmt: skip

    def error(v):
        return float(np.mean((v[new] - targets[new]) ** 2))

    assert error(vectors) < 0.6 * error(good.song_vectors)  # the artist's part, recovered


def test_a_new_artist_keeps_the_audio_models_ranking():
    metadata, data, audible, _, new = _world()
    metadata.loc[new[:6], "artist"] = ["newcomer"] * 3 + [""] * 3  # no training song of theirs
    good = _audio("good", audible.astype(np.float32))
    vectors, summary = fit_audio_context(
        metadata, data, [good], CONTEXT, AudioContextConfig(weights=(1.0,))
    )
    shift = vectors[new[:6]] - good.song_vectors[new[:6]]
    # one vector for all of them: every user ranks them as the audio model does
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-5)
    known = vectors[new[6:]] - good.song_vectors[new[6:]]
    assert np.ptp(known, axis=0).max() > 10 * np.ptp(shift, axis=0).max()


def test_no_weight_is_the_audio_model_itself_and_bad_params_are_refused():
    metadata, data, audible, _, _ = _world()
    metadata["artist"] = "everyone"  # context that says nothing: the audio model wins
    good = _audio("good", audible.astype(np.float32))
    vectors, summary = fit_audio_context(
        metadata, data, [good], CONTEXT, AudioContextConfig(weights=(0.0,))
    )
    np.testing.assert_allclose(vectors, good.song_vectors, atol=1e-6)
    with pytest.raises(MusicrecError, match="audio_context"):
        AudioContextConfig(weights=(-1.0,))
    with pytest.raises(MusicrecError, match="no audio model"):
        fit_audio_context(metadata, data, [], CONTEXT, AudioContextConfig())


def test_the_mean_of_the_audio_models_is_a_candidate_too():
    metadata, data, audible, _, _ = _world()
    metadata["artist"] = "everyone"  # context that says nothing: an audio choice wins
    rng = np.random.default_rng(2)
    # two ears with errors of their own: their mean errs half as much
    left = audible + rng.normal(0, 1.5, audible.shape)
    right = audible + rng.normal(0, 1.5, audible.shape)
    candidates = [
        _audio("left", left.astype(np.float32)),
        _audio("right", right.astype(np.float32)),
    ]
    _, summary = fit_audio_context(
        metadata, data, candidates, CONTEXT, AudioContextConfig(weights=(0.0,))
    )
    assert summary["audio_model"] == "audio_mean"
    assert set(summary["validation_map_by_model_and_weight"]) == {
        "left", "right", "audio_mean", "none",
    }  # fmt: skip


def test_where_the_audio_says_nothing_the_context_alone_is_chosen():
    from musicrec.models.context import context_regression

    metadata, data, audible, _, _ = _world()
    noise = _audio("noise", np.random.default_rng(3).normal(0, 1, audible.shape).astype(np.float32))
    vectors, summary = fit_audio_context(metadata, data, [noise], CONTEXT, AudioContextConfig())
    scores = summary["validation_map_by_model_and_weight"]
    assert summary["audio_model"] == "none" and summary["key_descriptors"] is False
    assert scores["none"]["1"] >= max(scores["noise"].values())  # never behind on validation
    alone, _, _ = context_regression(
        metadata, data.targets, data.train_songs, data.validation_songs, CONTEXT
    )
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_the_key_descriptors_add_what_the_audio_models_miss():
    rng = np.random.default_rng(3)
    n_songs = 160
    descriptors = rng.normal(0, 1, (n_songs, 15))
    unheard = descriptors @ rng.normal(0, 0.5, (15, 4))  # the mode, say: no audio model hears it
    metadata, data, audible, targets, new = _world(unheard=unheard)
    ear = _audio("ear", (audible - unheard).astype(np.float32))  # hears all but that part
    with_key, summary = fit_audio_context(
        metadata, data, [ear], CONTEXT, AudioContextConfig(), descriptors
    )
    assert summary["key_descriptors"] is True and summary["key_alpha"] in CONTEXT.alphas
    assert summary["key_gain_z"] >= 1.96
    assert set(summary["validation_map_by_model_and_weight"]) == {"ear", "ear+key", "none"}
    without, summary = fit_audio_context(metadata, data, [ear], CONTEXT, AudioContextConfig())
    assert summary["key_descriptors"] is False and summary["key_alpha"] is None

    def error(v):
        return float(np.mean((v[new] - targets[new]) ** 2))

    assert error(with_key) < 0.7 * error(without)
    # Not asked for: never added, whatever the descriptors.
    _, summary = fit_audio_context(
        metadata, data, [ear], CONTEXT, AudioContextConfig(key_descriptors=(False,)), descriptors
    )
    assert summary["key_descriptors"] is False
    # Demanding more evidence than the validation users give: the key is not heard.
    _, summary = fit_audio_context(
        metadata, data, [ear], CONTEXT, AudioContextConfig(key_min_z=1e9), descriptors
    )
    assert summary["key_descriptors"] is False and summary["key_gain_z"] < 1e9
    with pytest.raises(MusicrecError, match="key_descriptors"):
        AudioContextConfig(key_descriptors=("yes",))


def test_key_evidence_is_the_paired_gain_over_its_standard_error():
    without = (0.5, "a", None, 1.0, None, 0.1, np.array([0.2, 0.4, np.nan, 0.6, 0.3]))
    gain = np.array([0.1, 0.0, 0.2, 0.1])  # the users with something to find
    with_key = (0.6, "a", 10.0, 1.0, None, 0.1, np.array([0.3, 0.4, np.nan, 0.8, 0.4]))
    z = key_evidence({False: without, True: with_key})
    assert z == pytest.approx(gain.mean() / (gain.std(ddof=1) / 2))
    assert key_evidence({False: without}) is None
