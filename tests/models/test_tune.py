"""Tuning WMF on validation: the held-out task, the search, its determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from musicrec.models.factorization import WMFConfig
from musicrec.models.tune import TuneConfig, choose_popularity, new_user_task, tune_wmf
from musicrec.ranking import holdout_task
from musicrec.split import SplitConfig, make_splits


def _splits():
    rng = np.random.default_rng(3)
    taste = rng.normal(size=(60, 3)) @ rng.normal(size=(3, 40))
    rows = [
        (f"U{u:02d}", f"S{s:02d}", int(1 + rng.poisson(2)))
        for u in range(60)
        for s in np.argsort(-taste[u])[: 8 + u % 5]
    ]
    plays = pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])
    return make_splits(plays, sorted(set(plays["song_id"])), SplitConfig(seed=2))


def test_the_holdout_takes_a_share_of_each_users_training_plays_and_never_all():
    splits = _splits()
    train = splits.matrices["train"]
    fit, task = holdout_task(splits, 0.25, seed=1)
    held = train - fit
    assert held.min() >= 0 and (fit.multiply(held)).nnz == 0  # a partition of the plays
    per_user, kept = np.diff(train.indptr), np.diff(fit.tocsr().indptr)
    has = per_user > 0
    assert (kept[has] >= 1).all()
    expected = np.minimum(np.round(0.25 * per_user), per_user - 1)
    np.testing.assert_array_equal((per_user - kept)[has], expected[has])
    again, _ = holdout_task(splits, 0.25, seed=1)
    assert (again != fit).nnz == 0
    assert task.relevant.sum() > 0 and set(task.candidates) <= set(
        np.flatnonzero(splits.songs["role"].to_numpy() == "warm")
    )


def test_the_search_starts_from_params_and_keeps_its_best_trial():
    splits = _splits()
    base = WMFConfig(factors=8, regularization=1.0, iterations=5, n_jobs=1)
    cfg = TuneConfig(trials=6, factors=(4, 8), iterations=(3, 8), map_k=20)
    chosen, trace = tune_wmf(splits, base, cfg)
    first = trace[0]
    assert (first["factors"], first["regularization"], first["iterations"]) == (8, 1.0, 5)
    best = max(trace, key=lambda t: t["validation_map"])
    assert best["validation_map"] >= first["validation_map"]
    assert (chosen.factors, chosen.alpha, chosen.iterations) == (
        best["factors"], best["alpha"], best["iterations"],
    )  # fmt: skip
    assert chosen.seed == base.seed and chosen.n_jobs == base.n_jobs  # not searched
    again, trace_again = tune_wmf(splits, base, cfg)
    assert again == chosen and [t["validation_map"] for t in trace_again] == [
        t["validation_map"] for t in trace
    ]
    assert tune_wmf(splits, base, dataclasses.replace(cfg, trials=0)) == (base, [])


def _popular_world(pull: float, seed: int = 5):
    """300 users and 120 songs: each user plays 12 songs drawn by taste (3 hidden dims) and,
    with weight ``pull``, by a Zipf popularity."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 120))
    popularity = np.log(1.0 / np.arange(1, 121)) * 3.0
    rows = []
    for u in range(300):
        logits = (1 - pull) * taste[u] + pull * popularity + rng.gumbel(size=120)
        rows += [
            (f"U{u:03d}", f"S{s:03d}", 1 + int(rng.poisson(2))) for s in np.argsort(-logits)[:12]
        ]
    plays = pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])
    return make_splits(plays, sorted(set(plays["song_id"])), SplitConfig(seed=2))


def test_the_new_user_task_takes_users_out_of_the_fit_and_splits_their_plays():
    splits = _popular_world(0.5)
    cfg = TuneConfig(new_user_share=0.2, new_user_seeds=(1, 3), seed=4)
    fit_plays, seed_plays, task = new_user_task(splits, cfg)
    train = splits.matrices["train"]
    taken = np.flatnonzero(np.diff(seed_plays.tocsr().indptr))
    assert len(taken) == round(0.2 * 270)  # of the warm users (10% are held out as new)
    assert fit_plays[taken].nnz == 0  # out of the refit
    others = np.setdiff1d(np.arange(train.shape[0]), taken)
    assert (fit_plays[others] != train[others]).nnz == 0
    seeds_per_user = np.diff(seed_plays.tocsr().indptr)[taken]
    assert set(seeds_per_user) == {1, 3}
    relevant = np.zeros(train.shape)
    relevant[np.ix_(task.users, task.candidates)] = task.relevant.toarray()
    # seeds and relevant plays: a partition of the taken users' plays on warm songs
    warm = splits.songs["role"].to_numpy() == "warm"
    whole = (seed_plays + sp.csr_matrix(relevant)).toarray()[:, warm][task.users]
    np.testing.assert_array_equal(whole > 0, train.toarray()[:, warm][task.users] > 0)
    again = new_user_task(splits, cfg)[1]
    assert (again != seed_plays).nnz == 0


def test_popularity_is_weighed_where_listening_follows_it_and_not_where_it_does_not():
    cfg = TuneConfig(trials=0, map_k=50, new_user_share=0.2)
    base = WMFConfig(factors=8, iterations=8, n_jobs=1)
    world = _popular_world(0.8)
    pulled, scores = choose_popularity(world, base, cfg)
    assert pulled.popularity_weight > 0
    assert scores["popularity_weight"][pulled.popularity_weight] > scores["popularity_weight"][0.0]
    assert (pulled.factors, pulled.alpha) == (base.factors, base.alpha)  # factors as chosen
    # Known users held to no popularity: new users, whose few seed plays say little, take it
    no_beta = dataclasses.replace(cfg, popularity_weights=(0.0,))
    new_only, scores = choose_popularity(world, base, no_beta)
    assert new_only.popularity_weight == 0 and new_only.new_user_popularity > 0
    gain = scores["new_user_popularity"][new_only.new_user_popularity]
    assert gain > scores["new_user_popularity"][0.0]
    taste, _ = choose_popularity(_popular_world(0.0), base, cfg)
    assert taste.popularity_weight < pulled.popularity_weight
