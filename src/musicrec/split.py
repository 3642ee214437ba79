"""Stage ``split``: the evaluation splits of DESIGN.md section 4, seeded.

- ``cold``: a fraction of songs is held out whole; none of their plays is in training.
- ``warm``: a fraction of each remaining user's plays on the other songs is held out.
- ``all``: the union of the two held-out sets, ranked over the whole catalogue.
- ``cold_user``: a fraction of users is held out whole; each gives ``cold_user_seed_plays``
  seed plays on warm songs and the rest of their warm-song plays is the test.
- a validation slice: a fraction of warm songs that content models leave out of their training
  to stop early on (their plays stay in the WMF training set).

Every matrix is users x songs of play counts in one index space, saved as CSR ``.npz``: songs in
the order of ``data/validated/songs.tsv``, users sorted by id (:mod:`musicrec.dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from musicrec.dataset import Splits, write_splits
from musicrec.errors import MusicrecError
from musicrec.io import load_params, read_tsv
from musicrec.stage import read_config, run_stage, stage_parser


@dataclass(frozen=True)
class SplitConfig:
    """Split params (``split`` in params.yaml)."""

    cold_song_fraction: float = 0.2
    warm_test_fraction: float = 0.2
    cold_user_fraction: float = 0.1
    cold_user_seed_plays: int = 5
    validation_song_fraction: float = 0.1
    seed: int = 11

    def __post_init__(self) -> None:
        for name in (
            "cold_song_fraction",
            "warm_test_fraction",
            "cold_user_fraction",
            "validation_song_fraction",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise MusicrecError(f"split.{name} must be in [0, 1)")
        if self.cold_user_seed_plays < 1:
            raise MusicrecError("split.cold_user_seed_plays must be >= 1")


def make_splits(plays: pd.DataFrame, song_ids: list[str], cfg: SplitConfig) -> Splits:
    """Split a clean play log over a catalogue of usable songs, kept in its order.

    Parameters
    ----------
    plays : pd.DataFrame  ``user_id``, ``song_id``, ``play_count`` (validate's clean log).
    song_ids : list of str [shape=(n_songs,)]  the validated catalogue, in its order (sorted by
        id): a song's index in every matrix is its position here.
    cfg : SplitConfig
    """
    rng = np.random.default_rng(cfg.seed)
    if len(set(song_ids)) != len(song_ids):
        raise MusicrecError("split: the song manifest names a song twice; rerun validate")
    user_ids = sorted(plays["user_id"].unique())
    song_index = pd.Index(song_ids)
    user_index = pd.Index(user_ids)
    n_users, n_songs = len(user_ids), len(song_ids)
    u = user_index.get_indexer(plays["user_id"])
    s = song_index.get_indexer(plays["song_id"])
    if (s < 0).any():
        raise MusicrecError("split: the play log names songs missing from the song manifest")
    counts = plays["play_count"].to_numpy(np.float32)

    is_cold_song = np.zeros(n_songs, bool)
    is_cold_song[rng.choice(n_songs, int(round(cfg.cold_song_fraction * n_songs)), False)] = True
    warm_play = ~is_cold_song[s]

    # Cold users: drawn among users with enough warm plays to give seeds and keep a test.
    warm_plays_per_user = np.bincount(u[warm_play], minlength=n_users)
    eligible = np.flatnonzero(warm_plays_per_user > cfg.cold_user_seed_plays)
    n_cold_users = min(len(eligible), int(round(cfg.cold_user_fraction * n_users)))
    is_cold_user = np.zeros(n_users, bool)
    is_cold_user[rng.choice(eligible, n_cold_users, replace=False)] = True

    # Rank each user's warm plays in a random order; the first ones become test or seeds.
    order_key = rng.random(len(plays))
    frame = pd.DataFrame({"u": u, "key": np.where(warm_play, order_key, np.inf)})
    rank = frame.groupby("u")["key"].rank(method="first").to_numpy() - 1
    n_warm = warm_plays_per_user[u]
    n_test = np.minimum(np.round(cfg.warm_test_fraction * n_warm), n_warm - 1)
    cold_user = is_cold_user[u]

    masks = {
        "train": ~cold_user & warm_play & (rank >= n_test),
        "warm_test": ~cold_user & warm_play & (rank < n_test),
        "cold_test": ~cold_user & ~warm_play,
        "cold_user_seed": cold_user & warm_play & (rank < cfg.cold_user_seed_plays),
        "cold_user_test": cold_user & warm_play & (rank >= cfg.cold_user_seed_plays),
        "all": np.ones(len(plays), bool),
    }
    matrices = {
        name: sp.csr_matrix((counts[m], (u[m], s[m])), shape=(n_users, n_songs))
        for name, m in masks.items()
    }

    warm_songs = np.flatnonzero(~is_cold_song)
    validation = np.zeros(n_songs, bool)
    n_val = int(round(cfg.validation_song_fraction * len(warm_songs)))
    validation[rng.choice(warm_songs, n_val, replace=False)] = True
    songs = pd.DataFrame(
        {
            "song_id": song_ids,
            "role": np.where(is_cold_song, "cold", "warm"),
            "validation": validation,
        }
    )
    users = pd.DataFrame({"user_id": user_ids, "role": np.where(is_cold_user, "cold_user", "warm")})
    return Splits(songs, users, matrices)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("split", __doc__, ["split"], ("validated",), out=Path("data/split"))
    args = parser.parse_args(argv)
    cfg = read_config(load_params(args.params), "split", SplitConfig)
    with run_stage("split", args) as (record, _):
        plays = read_tsv(args.validated / "plays.tsv")
        songs = read_tsv(args.validated / "songs.tsv")
        summary = write_splits(make_splits(plays, list(songs["song_id"]), cfg), args.out)
        record.update(summary["pairs"])
    print(f"split: {summary['songs']} songs, {summary['users']} users -> {args.out}")
    return 0
