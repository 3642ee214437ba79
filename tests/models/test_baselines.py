"""The baselines: popularity a real system can run, and the oracle that sees held-out plays."""

from __future__ import annotations

import numpy as np
import pandas as pd

from musicrec import registry
from musicrec.models.baselines import popularity_model
from musicrec.report import findings_section
from musicrec.split import SplitConfig, make_splits


def _splits():
    rng = np.random.default_rng(0)
    rows = [(f"U{u}", f"S{s}", 1) for u in range(40) for s in range(30) if rng.random() < 0.3]
    plays = pd.DataFrame(rows, columns=["user_id", "song_id", "play_count"])
    return make_splits(plays, sorted(set(plays["song_id"])), SplitConfig(seed=1))


def test_popularity_counts_training_listeners_and_the_oracle_counts_all():
    splits = _splits()
    deployable, oracle = popularity_model(splits), popularity_model(splits, "all")
    assert (deployable.name, oracle.name) == ("popularity", "popularity_oracle")
    train, every = splits.matrices["train"], splits.matrices["all"]
    np.testing.assert_array_equal(deployable.song_vectors[:, 0], (train > 0).sum(axis=0).A1)
    np.testing.assert_array_equal(oracle.song_vectors[:, 0], (every > 0).sum(axis=0).A1)
    cold = splits.songs["role"].to_numpy() == "cold"
    # A cold song has no training listener: deployable popularity cannot rank it; the oracle can.
    assert (deployable.song_vectors[cold] == 0).all() and (oracle.song_vectors[cold] > 0).any()


def test_the_oracle_is_a_reference_and_never_the_best_deployable_model():
    assert "popularity_oracle" in registry.yardsticks()
    assert "popularity_oracle" not in registry.deployable()
    assert "popularity" in registry.deployable() and "upper_bound" not in registry.deployable()
    means = {
        "popularity_oracle": {"warm": {"map@500": 0.9}},
        "upper_bound": {"warm": {"map@500": 0.95}},
        "wmf": {"warm": {"map@500": 0.3}},
        "popularity": {"warm": {"map@500": 0.1}},
    }
    intervals = {m: {"warm": {"map@500": [v["warm"]["map@500"]] * 2}} for m, v in means.items()}
    text = findings_section(means, intervals, {})
    assert "`warm`, the best deployable model against popularity" in text
    assert "`wmf` 0.3000" in text and "oracle" not in text and "upper_bound" not in text
