"""The confidence transform (known answers) and WMF's behaviour on structured data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from musicrec.errors import MusicrecError
from musicrec.models.factorization import WMFConfig, confidence, fit_wmf, fold_in


def test_confidence_known_values_and_sparsity():
    counts = sp.csr_matrix(np.array([[0, 1, 3], [7, 0, 0]], dtype=float))
    conf = confidence(counts, alpha=2.0, eps=1.0)
    assert conf.nnz == 3  # unplayed stays implicit (c = 1 inside implicit)
    assert conf[0, 1] == pytest.approx(1 + 2 * np.log(2))
    assert conf[0, 2] == pytest.approx(1 + 2 * np.log(4))
    assert conf[1, 0] == pytest.approx(1 + 2 * np.log(8))
    half = confidence(counts, alpha=1.0, eps=0.5)
    assert half[0, 1] == pytest.approx(1 + np.log(3))  # 1 + log(1 + 1/0.5)


def test_confidence_is_monotone_in_play_count():
    conf = confidence(sp.csr_matrix(np.arange(1, 50, dtype=float)[None, :]), 3.0, 0.1)
    assert np.all(np.diff(conf.toarray()[0]) > 0)


def test_wmf_recovers_block_structure_and_zeroes_unplayed_songs():
    rng = np.random.default_rng(0)
    n_users, n_songs = 80, 40
    group_user = np.arange(n_users) % 2
    group_song = np.arange(n_songs) % 2
    plays = (group_user[:, None] == group_song[None, :]) & (rng.random((n_users, n_songs)) < 0.4)
    plays[:, 39] = False  # a song nobody played
    counts = sp.csr_matrix(plays * rng.integers(1, 5, plays.shape), dtype=np.float32)
    users, songs = fit_wmf(counts, WMFConfig(factors=4, iterations=10, seed=1))
    assert users.shape == (n_users, 4) and songs.shape == (n_songs, 4)
    assert np.all(songs[39] == 0)
    scores = users @ songs.T
    same = scores[group_user[:, None] == group_song[None, :]].mean()
    other = scores[group_user[:, None] != group_song[None, :]].mean()
    assert same > other + 0.3


def test_wmf_is_seeded():
    counts = sp.random(30, 20, density=0.2, random_state=3, format="csr") * 5
    a = fit_wmf(counts, WMFConfig(factors=3, iterations=3, seed=4))
    b = fit_wmf(counts, WMFConfig(factors=3, iterations=3, seed=4))
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("bad", [dict(factors=0), dict(eps=0.0), dict(alpha=-1.0)])
def test_bad_params_raise_before_compute(bad):
    with pytest.raises(MusicrecError):
        WMFConfig(**bad)


def test_fold_in_solves_the_als_least_squares_for_new_rows():
    rng = np.random.default_rng(2)
    songs = rng.normal(size=(12, 3)).astype(np.float32)
    counts = sp.csr_matrix(np.array([[0, 2, 0, 5] + [0] * 8, [0] * 12], dtype=np.float32))
    conf = confidence(counts, alpha=2.0, eps=1.0)
    folded = fold_in(songs, conf, WMFConfig(factors=3, regularization=0.5))
    # Closed form: (Y'CY + lambda I) x = Y'Cp with c = 1 on unplayed songs, p = 1 on played.
    c = np.ones(12)
    c[[1, 3]] = conf.data
    p = (counts.toarray()[0] > 0).astype(float)
    y = songs.astype(float)
    expected = np.linalg.solve(y.T @ (c[:, None] * y) + 0.5 * np.eye(3), y.T @ (c * p))
    np.testing.assert_allclose(folded[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(folded[1], 0.0)  # no seeds, no knowledge


def test_a_folded_in_user_prefers_the_block_of_their_seeds():
    rng = np.random.default_rng(0)
    group_user, group_song = np.arange(80) % 2, np.arange(40) % 2
    plays = (group_user[:, None] == group_song[None, :]) & (rng.random((80, 40)) < 0.4)
    counts = sp.csr_matrix(plays * rng.integers(1, 5, plays.shape), dtype=np.float32)
    cfg = WMFConfig(factors=4, iterations=10, seed=1)
    _, songs = fit_wmf(counts, cfg)
    seeds = sp.csr_matrix(([3.0, 1.0, 2.0], ([0, 0, 0], [1, 3, 5])), shape=(1, 40))
    user = fold_in(songs, confidence(seeds, cfg.alpha, cfg.eps), cfg)[0]
    scores = songs @ user
    assert scores[group_song == 1].mean() > scores[group_song == 0].mean() + 0.2


def test_cuda_libraries_are_loaded_for_implicit_only_where_rmm_is_installed(tmp_path, monkeypatch):
    """Without rmm implicit never tries CUDA, so nothing is searched or loaded; with it, the
    libraries implicit's extension links to are loaded from pip's ``nvidia`` folders on the
    path, and a file that is no library is passed over."""
    import importlib.util
    import os
    import shutil
    import sys

    from musicrec.models import factorization

    zlib = "/usr/lib/x86_64-linux-gnu/libz.so.1"  # any real shared library stands in
    if not os.path.exists(zlib):
        pytest.skip(f"no {zlib} to stand in for a CUDA library")
    lib = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    shutil.copy(zlib, lib / "libcudart.so.13")
    (lib / "libcublas.so.13").write_text("not a library")
    (lib / "libunrelated.so.1").write_text("never looked at")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    real_find_spec = importlib.util.find_spec

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert factorization.load_cuda_libraries() == []
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: object() if name == "rmm" else real_find_spec(name),
    )
    assert factorization.load_cuda_libraries() == ["libcudart.so.13"]


def test_the_popularity_column_adds_beta_times_scaled_log_listeners_to_every_score():
    from musicrec.models.factorization import popularity_feature, with_popularity

    listeners = np.array([0, 1, 9, 99])
    p = popularity_feature(listeners)
    np.testing.assert_allclose(p, np.log1p(listeners) / np.log(100), rtol=1e-6)
    assert p[0] == 0 and p[-1] == pytest.approx(1.0)
    assert (popularity_feature(np.zeros(3)) == 0).all()  # nobody listened: no term
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    beta = np.array([0.0, 0.5, 1.0, 2.0, 0.1])
    users, songs = with_popularity(u, v, listeners, beta)
    assert users.shape == (5, 4) and songs.shape == (4, 4)
    np.testing.assert_allclose(users @ songs.T, u @ v.T + beta[:, None] * p[None], atol=1e-5)


def test_a_new_user_weighs_popularity_more_the_fewer_their_seed_plays():
    from musicrec.models.factorization import new_user_vectors, with_popularity

    cfg = WMFConfig(factors=3, popularity_weight=0.2, new_user_popularity=1.0)
    assert cfg.user_popularity() == 0.2
    np.testing.assert_allclose(cfg.user_popularity(np.array([0, 1, 4])), [1.2, 1.2, 0.45])
    rng = np.random.default_rng(1)
    _, songs = with_popularity(np.zeros((1, 3)), rng.normal(size=(6, 3)), np.arange(6), 0.0)
    seeds = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], np.float32))
    users = new_user_vectors(songs, seeds, cfg)
    np.testing.assert_allclose(users[:, -1], [1.2, 0.45])
    np.testing.assert_allclose(
        users[:, :3], fold_in(songs[:, :3], confidence(seeds, 2.0, 1.0), cfg)
    )
    with pytest.raises(MusicrecError, match="popularity_weight >= 0"):
        WMFConfig(popularity_weight=-0.1)


def test_a_wmf_model_without_the_popularity_column_is_refused_with_what_to_do():
    from musicrec.models.factorization import new_user_vectors

    old = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)  # factors only
    with pytest.raises(MusicrecError, match="rerun `dvc repro wmf`"):
        new_user_vectors(old, sp.csr_matrix(np.ones((1, 6))), WMFConfig(factors=3))
