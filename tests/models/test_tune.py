"""Tuning WMF on validation: the held-out task, the search, its determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from musicrec.models.factorization import WMFConfig
from musicrec.models.tune import TuneConfig, tune_wmf
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
