"""Stage ``split``: the evaluation splits of docs/design.md, section 4, seeded.

- ``cold``: a fraction of songs is held out whole; none of their plays is in training. Some of
  them are the songs of whole artists held out (``new_artist_fraction`` of the songs, from the
  data folder's ``songs.csv``): the ``cold_new_artist`` view scores those alone, where no song
  of the artist is known (README "How models are scored").
- ``warm``: a fraction of each remaining user's plays on the other songs is held out.
- ``all``: the union of the two held-out sets, ranked over the whole catalogue.
- ``cold_user``: a fraction of users is held out whole; each gives ``cold_user_seed_plays``
  seed plays on warm songs and the rest of their warm-song plays is the test.
- a validation slice: a fraction of warm songs that content models leave out of their training
  to stop early on (their plays stay in the WMF training set).

**Cold folds.** With ``split.cold_folds`` K > 1 the songs are dealt into K folds, every song in
exactly one (the new artists' songs by whole artists, spread over the folds), and K splits are
written: fold k holds fold k's songs out cold, the rest as above (its own draw of cold users,
held-out plays and validation songs). Fold 0 is ``data/split`` itself, what every stage of the
DAG and ``recommend`` read; folds 1 to K-1 go to ``data/split/folds/<k>/`` for the ``folds``
stage, which trains every model again on each (:mod:`musicrec.folds`), and ``evaluate`` pools
the cold, all and new-artist scores of every fold: each song is scored cold once. ``auto``
(the default) takes ``round(1 / cold_song_fraction)`` folds for a catalogue of at most
``split.fold_max_songs`` songs, where one draw of cold songs is a few dozen songs, and one fold
for a larger one, where a fifth of the catalogue is many songs and K trainings would cost K
times as much.

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
from musicrec.metadata import read_metadata
from musicrec.stage import DataConfig, read_config, run_stage, stage_parser


@dataclass(frozen=True)
class SplitConfig:
    """Split params (``split`` in params.yaml)."""

    cold_song_fraction: float = 0.2
    warm_test_fraction: float = 0.2
    cold_user_fraction: float = 0.1
    cold_user_seed_plays: int = 5
    validation_song_fraction: float = 0.1
    # Songs of whole artists held out among the cold songs (about this share of all songs;
    # none where songs.csv has no ``artist_column``).
    new_artist_fraction: float = 0.05
    artist_column: str = "artist"
    seed: int = 11
    cold_folds: int | str = "auto"  # K: every song cold in one of K folds (module docstring)
    fold_max_songs: int = 1000  # auto: folds for a catalogue of at most this many songs

    def __post_init__(self) -> None:
        if self.cold_folds != "auto" and (
            isinstance(self.cold_folds, bool)
            or not isinstance(self.cold_folds, int)
            or self.cold_folds < 1
        ):
            raise MusicrecError(
                f"split.cold_folds: a whole number >= 1 or 'auto', not {self.cold_folds!r}"
            )
        if self.fold_max_songs < 0:
            raise MusicrecError("split.fold_max_songs must be >= 0")
        for name in (
            "cold_song_fraction",
            "warm_test_fraction",
            "cold_user_fraction",
            "validation_song_fraction",
            "new_artist_fraction",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise MusicrecError(f"split.{name} must be in [0, 1)")
        if self.cold_user_seed_plays < 1:
            raise MusicrecError("split.cold_user_seed_plays must be >= 1")
        if self.new_artist_fraction > self.cold_song_fraction > 0:
            raise MusicrecError(
                "split.new_artist_fraction must not exceed split.cold_song_fraction: the new "
                "artists' songs are some of the cold songs"
            )


def new_artist_songs(artists: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which songs belong to the artists held out whole: about ``fraction`` of the songs.

    Artists are taken in a seeded random order, each unless its songs would carry the total
    past 1.5 times the target (so one prolific artist cannot swallow the cold split); if no
    artist fits, the one with fewest songs is taken. Songs with no artist ("") are never taken.

    Parameters
    ----------
    artists : np.ndarray [shape=(n_songs,)] of str  each song's artist, "" where unknown.
    fraction : float  the share of songs wanted.
    seed : int  the order's seed (its own generator: the other draws of the split stay put).

    Returns
    -------
    np.ndarray [shape=(n_songs,), bool]
    """
    chosen = np.zeros(len(artists), bool)
    target = fraction * len(artists)
    names, counts = np.unique(artists[artists != ""], return_counts=True)
    if target <= 0 or len(names) < 2:  # one artist: none would be left known
        return chosen
    taken: list[str] = []
    total = 0
    for i in np.random.default_rng([seed, 1]).permutation(len(names)):
        if total + counts[i] <= 1.5 * target:
            taken.append(names[i])
            total += counts[i]
        if total >= target:
            break
    if not taken:
        taken = [names[np.argmin(counts)]]
    chosen[np.isin(artists, taken)] = True
    return chosen


def fold_count(cfg: SplitConfig, n_songs: int) -> tuple[int, str]:
    """K, the number of cold folds for a catalogue of ``n_songs``, and why (module docstring)."""
    if cfg.cold_folds != "auto":
        return int(cfg.cold_folds), "split.cold_folds"
    if cfg.cold_song_fraction <= 0:
        return 1, "auto: no cold songs (split.cold_song_fraction 0)"
    if n_songs > cfg.fold_max_songs:
        return 1, f"auto: {n_songs} songs, more than split.fold_max_songs ({cfg.fold_max_songs})"
    k = max(2, int(round(1 / cfg.cold_song_fraction)))
    return k, (
        f"auto: {n_songs} songs, at most split.fold_max_songs ({cfg.fold_max_songs}): "
        f"1 / split.cold_song_fraction folds"
    )


def assign_folds(
    n_songs: int, k: int, cfg: SplitConfig, artists: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Deal the songs into ``k`` cold folds of sizes as equal as can be.

    The new artists (:func:`new_artist_songs`: ``new_artist_fraction`` of the songs in all, as
    with one fold, so that the cold songs are not more and more whole artists as K grows) go
    whole, largest first, to the fold with the fewest of their songs so far; the other songs
    are dealt in a seeded random order, each to the smallest fold.

    Returns
    -------
    fold : np.ndarray [shape=(n_songs,), int]  each song's fold.
    new_artist : np.ndarray [shape=(n_songs,), bool]  the songs of the artists held out whole.
    """
    rng = np.random.default_rng([cfg.seed, 101])
    new_artist = (
        new_artist_songs(np.asarray(artists, dtype=str), cfg.new_artist_fraction, cfg.seed)
        if artists is not None
        else np.zeros(n_songs, bool)
    )
    fold = np.full(n_songs, -1)
    held = np.zeros(k)
    if new_artist.any():
        names, counts = np.unique(np.asarray(artists, dtype=str)[new_artist], return_counts=True)
        for i in np.argsort(-counts, kind="stable"):
            target = int(np.argmin(held))
            fold[new_artist & (np.asarray(artists, dtype=str) == names[i])] = target
            held[target] += counts[i]
    size = np.bincount(fold[fold >= 0], minlength=k).astype(float)
    for song in rng.permutation(np.flatnonzero(fold < 0)):
        target = int(np.argmin(size))
        fold[song] = target
        size[target] += 1
    return fold, new_artist


def make_fold_splits(
    plays: pd.DataFrame,
    song_ids: list[str],
    cfg: SplitConfig,
    artists: np.ndarray | None = None,
) -> list[Splits]:
    """The splits of every cold fold, fold 0 first (one split, :func:`make_splits`'s, where
    :func:`fold_count` gives 1)."""
    k, _ = fold_count(cfg, len(song_ids))
    if k == 1:
        return [make_splits(plays, song_ids, cfg, artists)]
    fold, new_artist = assign_folds(len(song_ids), k, cfg, artists)
    return [
        make_splits(
            plays, song_ids, cfg, cold=fold == f, new_artist=new_artist & (fold == f), fold=f
        )
        for f in range(k)
    ]


def make_splits(
    plays: pd.DataFrame,
    song_ids: list[str],
    cfg: SplitConfig,
    artists: np.ndarray | None = None,
    cold: np.ndarray | None = None,
    new_artist: np.ndarray | None = None,
    fold: int | None = None,
) -> Splits:
    """Split a clean play log over a catalogue of usable songs, kept in its order.

    Parameters
    ----------
    plays : pd.DataFrame  ``user_id``, ``song_id``, ``play_count`` (validate's clean log).
    song_ids : list of str [shape=(n_songs,)]  the validated catalogue, in its order (sorted by
        id): a song's index in every matrix is its position here.
    cfg : SplitConfig
    artists : np.ndarray [shape=(n_songs,)] of str, optional  each song's artist ("" unknown),
        for the songs of new artists; None: no new artists.
    cold, new_artist : np.ndarray [shape=(n_songs,), bool], optional  a cold fold's songs and
        its new artists' songs (:func:`make_fold_splits`), instead of drawing them.
    fold : int, optional  the fold: its draws (cold users, held-out plays, validation songs)
        come from their own generator.
    """
    rng = np.random.default_rng(cfg.seed if fold is None else [cfg.seed, 7, fold])
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

    if cold is not None:
        is_cold_song = np.asarray(cold, bool).copy()
        is_new_artist = (
            np.asarray(new_artist, bool) if new_artist is not None else np.zeros(n_songs, bool)
        )
    else:
        is_new_artist = (
            new_artist_songs(np.asarray(artists, dtype=str), cfg.new_artist_fraction, cfg.seed)
            if artists is not None and cfg.cold_song_fraction > 0  # no cold songs: none of them
            else np.zeros(n_songs, bool)
        )
        # The rest of the cold songs at random among the others (with no new artists, the very
        # draw of a split without them).
        n_random_cold = max(
            0, int(round(cfg.cold_song_fraction * n_songs)) - int(is_new_artist.sum())
        )
        is_cold_song = is_new_artist.copy()
        is_cold_song[rng.choice(np.flatnonzero(~is_new_artist), n_random_cold, False)] = True
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
            "new_artist": is_new_artist,
        }
    )
    users = pd.DataFrame({"user_id": user_ids, "role": np.where(is_cold_user, "cold_user", "warm")})
    return Splits(songs, users, matrices)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "split", __doc__, ["data.root", "split"], ("validated",), out=Path("data/split")
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = read_config(params, "split", SplitConfig)
    root = Path(read_config(params, "data", DataConfig).root)
    with run_stage("split", args) as (record, _):
        plays = read_tsv(args.validated / "plays.tsv")
        songs = read_tsv(args.validated / "songs.tsv")
        metadata = read_metadata(root, songs["song_id"], (cfg.artist_column,))
        artists = metadata[cfg.artist_column].to_numpy() if len(metadata.columns) else None
        folds, why = fold_count(cfg, len(songs))
        splits = make_fold_splits(plays, list(songs["song_id"]), cfg, artists)
        summary = write_splits(splits[0], args.out, splits[1:], {"count": folds, "why": why})
        record.update(
            summary["pairs"], new_artist_songs=summary["songs"]["new_artist"], cold_folds=folds
        )
    print(f"split: {summary['songs']} songs, {summary['users']} users -> {args.out}")
    return 0
