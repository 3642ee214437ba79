"""Stage ``baselines``: ``random``, ``popularity`` and ``popularity_oracle``.

- ``random``: Gaussian user and song vectors from a seed, so each user gets an unrelated random
  ranking: the floor.
- ``popularity``: every user gets the same ranking, by the number of distinct listeners a song
  has in the *training* plays: the non-personalised model a real system could deploy, and the
  baseline every model must beat. A cold song has no training listener, so on cold songs it
  ranks by the evaluation's random tie-break: no better than ``random``, as it should be.
- ``popularity_oracle``: the same count over *all* plays, held-out ones included. Like
  ``upper_bound`` it sees what is being predicted: a reference, never a recommendation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec import registry
from musicrec.dataset import Splits, load_splits
from musicrec.io import load_params
from musicrec.models.vectors import ModelVectors, save_model
from musicrec.stage import read_config, run_stage, stage_parser

RANDOM_DIM = 32


def random_model(n_users: int, n_songs: int, seed: int) -> ModelVectors:
    """Seeded Gaussian vectors [shape=(n, 32)]: an independent random ranking per user."""
    rng = np.random.default_rng(seed)
    return ModelVectors(
        "random",
        "random scores",
        list(registry.SPLITS),
        rng.standard_normal((n_users, RANDOM_DIM)).astype(np.float32),
        rng.standard_normal((n_songs, RANDOM_DIM)).astype(np.float32),
    )


def popularity_model(splits: Splits, plays: str = "train") -> ModelVectors:
    """Distinct listeners per song in ``splits.matrices[plays]`` as one-dimensional song
    vectors [shape=(n_songs, 1)]; user vectors are 1: ``popularity`` on the training plays,
    ``popularity_oracle`` on ``"all"``."""
    listeners = np.asarray((splits.matrices[plays] > 0).sum(axis=0), np.float32).reshape(-1, 1)
    name, seen = {
        "train": ("popularity", "the training plays"),
        "all": ("popularity_oracle", "all plays, held-out ones included"),
    }[plays]
    return ModelVectors(
        name,
        f"distinct listeners over {seen}",
        list(registry.SPLITS),
        np.ones((len(splits.users), 1), np.float32),
        listeners,
    )


@dataclass(frozen=True)
class BaselinesConfig:
    """``baselines`` in params.yaml."""

    seed: int = 5  # of the random model's vectors


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("baselines", __doc__, ["baselines"], ("split", "models"))
    args = parser.parse_args(argv)
    cfg = read_config(load_params(args.params), "baselines", BaselinesConfig)
    with run_stage("baselines", args):
        splits = load_splits(args.split)
        random = random_model(len(splits.users), len(splits.songs), cfg.seed)
        save_model(random, args.models / "random", index=splits.index_digest)
        for plays in ("train", "all"):
            model = popularity_model(splits, plays)
            save_model(model, args.models / model.name, index=splits.index_digest)
    print(f"baselines: random, popularity and popularity_oracle -> {args.models}")
    return 0
