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
