"""Ranking tasks and how a model is scored on one: the library behind ``evaluate``, the hybrid
stage's validation and ``recommend``'s tie-breaks.

For each split (docs/design.md, section 4) a task fixes the users scored, the candidate songs they
rank, the songs excluded from their ranking (their training plays or seeds) and the relevant
songs (their held-out plays):

============  ================================  ===========  ==================  ============
split         users                             candidates   excluded            relevant
============  ================================  ===========  ==================  ============
warm          warm users with training plays    warm songs   training plays      warm_test
cold          warm users with training plays    cold songs   (none)              cold_test
all           warm users with training plays    all songs    training plays      warm + cold
cold_user     held-out users                    warm songs   their seed plays    the rest
cold_new_     warm users with training plays    new artists' (none)              cold_test
artist                                          cold songs
============  ================================  ===========  ==================  ============
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from musicrec import registry
from musicrec.dataset import Splits
from musicrec.metrics import (
    entry_contributions,
    per_user_sums,
    relevant_ranks,
    tiebreak_keys,
    top_k_members,
)
from musicrec.models.vectors import ModelVectors


@dataclass
class SplitTask:
    """What a split asks of a model.

    users : np.ndarray [shape=(n_eval_users,)] user indices scored.
    candidates : np.ndarray [shape=(n_candidates,)] song indices ranked.
    excluded, relevant : sp.csr_matrix [shape=(n_eval_users, n_candidates)].
    """

    name: str
    users: np.ndarray
    candidates: np.ndarray
    excluded: sp.csr_matrix
    relevant: sp.csr_matrix

    def valid_counts(self) -> np.ndarray:
        """Candidates each user can be recommended (not excluded) [shape=(n_eval_users,)]."""
        return len(self.candidates) - np.asarray((self.excluded > 0).sum(axis=1)).ravel()


def sample_users(users: np.ndarray, max_users: int, seed: int, stream: int) -> np.ndarray:
    """A fixed uniform sample of ``max_users`` of ``users`` [shape=(n,)], sorted; all of them
    when ``max_users`` is 0 or not smaller. It has its own generator (``[seed, stream]``), so
    sampling moves no other draw."""
    if 0 < max_users < len(users):
        sampler = np.random.default_rng([seed, stream])
        return np.sort(sampler.choice(users, size=max_users, replace=False))
    return users


def build_task(
    name: str,
    users: np.ndarray,
    candidates: np.ndarray,
    excluded: sp.csr_matrix,
    relevant: sp.csr_matrix,
    max_users: int = 0,
    seed: int = 0,
    stream: int = 0,
) -> SplitTask:
    """The task of ranking ``candidates`` for those of ``users`` [shape=(n,), sorted] with a
    relevant candidate; a sample of ``max_users`` of them when > 0 (:func:`sample_users`).
    ``excluded`` and ``relevant`` are all users x all songs."""
    relevant = relevant[users][:, candidates].tocsr()
    rows = sample_users(np.flatnonzero(np.diff(relevant.indptr) > 0), max_users, seed, stream)
    users = users[rows]
    return SplitTask(
        name, users, candidates, excluded[users][:, candidates].tocsr(), relevant[rows]
    )


def songs_task(
    name: str, plays: sp.csr_matrix, songs: np.ndarray, max_users: int = 0, seed: int = 0
) -> SplitTask:
    """A cold-like task: every user with ``plays`` [shape=(n_users, n_songs)] on ``songs``
    ranks those songs, nothing excluded (a sample of ``max_users`` of them when > 0). The
    validation songs' task, on which content models are tuned and chosen."""
    return build_task(
        name, np.arange(plays.shape[0]), songs, sp.csr_matrix(plays.shape), plays, max_users, seed
    )


# A view of fewer songs ranks too little to say anything (with one song every user's only
# candidate is relevant: mAP 1, AUC undefined): it is not scored.
MIN_VIEW_SONGS = 5


def split_tasks(
    splits: Splits, max_users: int = 0, seed: int = 0, min_view_songs: int = MIN_VIEW_SONGS
) -> dict[str, SplitTask]:
    """The evaluation tasks of docs/design.md, section 4 (table in the module docstring); the
    ``cold_new_artist`` view only where the split held out at least ``min_view_songs`` songs
    of new artists (:data:`MIN_VIEW_SONGS`; ``evaluate`` asks the cold folds for any, and
    counts their songs together).

    Scoring is users x candidate songs per task, so with users growing as the catalogue does,
    its cost grows as songs squared. ``max_users`` > 0 scores a uniform sample of that many
    users per task instead (drawn from ``seed``, the same for every model), which makes the
    cost linear in songs; the bootstrap intervals then also carry the sampling error.
    """
    m = splits.matrices
    warm_songs = np.flatnonzero(splits.songs["role"].to_numpy() == "warm")
    all_songs = np.arange(len(splits.songs))
    cold_songs = np.flatnonzero(splits.songs["role"].to_numpy() == "cold")
    new_artist_songs = np.flatnonzero(splits.songs["new_artist"].to_numpy())
    warm_user = splits.users["role"].to_numpy() == "warm"
    trained = np.diff(m["train"].indptr) > 0
    empty = sp.csr_matrix(m["train"].shape, dtype=np.float32)
    definitions = {
        "warm": (warm_user & trained, warm_songs, m["train"], m["warm_test"]),
        "cold": (warm_user & trained, cold_songs, empty, m["cold_test"]),
        "all": (warm_user & trained, all_songs, m["train"], m["warm_test"] + m["cold_test"]),
        "cold_user": (~warm_user, warm_songs, m["cold_user_seed"], m["cold_user_test"]),
        "cold_new_artist": (warm_user & trained, new_artist_songs, empty, m["cold_test"]),
    }
    if len(new_artist_songs) < max(min_view_songs, 1):
        del definitions["cold_new_artist"]
    return {
        name: build_task(
            name, np.flatnonzero(mask), candidates, excluded, relevant, max_users, seed, i
        )
        for i, (name, (mask, candidates, excluded, relevant)) in enumerate(definitions.items())
    }


def draw_tiebreak_seeds(rng: np.random.Generator) -> dict[str, int]:
    """Each split's tie-break seed, the first draws of evaluate's generator (seeded by
    ``evaluate.seed``); ``musicrec recommend`` draws them too, to rank ties as evaluate did."""
    return {name: int(rng.integers(2**31)) for name in registry.SPLITS}


@dataclass
class TaskScores:
    """One model's scores on one task.

    per_user : metric -> values [shape=(n_eval_users,)] (NaN where undefined).
    per_entry : metric -> each relevant entry's contribution [shape=(relevant.nnz,)], in the
        task's ``relevant`` CSR order (:func:`musicrec.metrics.entry_contributions`); a user's
        entries sum to their value.
    ranks : each relevant entry's 0-based position in its user's ranking [shape=(relevant.nnz,)].
    coverage : ``coverage@k`` -> the share of candidates in at least one user's top k.
    """

    per_user: dict[str, np.ndarray]
    per_entry: dict[str, np.ndarray]
    ranks: np.ndarray
    coverage: dict[str, float]


def evaluate_on_task(
    model: ModelVectors,
    task: SplitTask,
    map_k: int,
    ks: list[int],
    tiebreak_seed: int,
    batch_cells: int = 2**20,
    n_threads: int = os.cpu_count() or 1,
) -> dict[str, np.ndarray | float]:
    """Per-user metrics of one model on one task, plus catalogue coverage@k
    (:func:`score_task`'s per-user values and coverage in one dict).

    Returns
    -------
    dict
        Metric name -> per-user values [shape=(n_eval_users,)], and ``coverage@k`` -> float
        (the share of candidates that appear in at least one user's top k).
    """
    scores = score_task(model, task, map_k, ks, tiebreak_seed, batch_cells, n_threads)
    return {**scores.per_user, **scores.coverage}


def score_task(
    model: ModelVectors,
    task: SplitTask,
    map_k: int,
    ks: list[int],
    tiebreak_seed: int,
    batch_cells: int = 2**20,
    n_threads: int = os.cpu_count() or 1,
) -> TaskScores:
    """One model's metrics on one task: per user, per relevant entry, and coverage@k.

    Ties in scores are broken by random keys fixed by ``tiebreak_seed`` and the user. No
    ranking is sorted with its keys: each user's scores are sorted once, and the relevant
    songs' positions and the top-k sets are counted from them
    (:func:`musicrec.metrics.relevant_ranks`, :func:`~musicrec.metrics.top_k_members`); keys
    are drawn only for users with ties that matter. Users go in batches of about
    ``batch_cells`` (user, candidate) cells, ``n_threads`` batches at a time, so memory stays
    flat as the catalogue grows: a batch costs about 20 bytes a cell (scores, sorted
    scores, masks), 20 MB at the default.
    """
    n_candidates = len(task.candidates)
    batch_size = max(1, batch_cells // max(n_candidates, 1))
    starts = range(0, max(len(task.users), 1), batch_size)  # one (empty) batch for no users

    def evaluate_batch(start: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        rows = slice(start, start + batch_size)
        users = task.users[rows]
        excluded = task.excluded[rows].toarray() > 0
        masked = np.where(excluded, -np.inf, model.scores(users, task.candidates))
        ascending = np.sort(masked, axis=1)

        @functools.cache  # a user's keys serve all their tied songs and their top k
        def keys(row: int) -> np.ndarray:
            return tiebreak_keys(users[row : row + 1], n_candidates, tiebreak_seed)[0]

        ranks = relevant_ranks(masked, ascending, task.relevant[rows], keys)
        covered = {
            k: top_k_members(masked, ascending, min(k, n_candidates), keys).any(axis=0) for k in ks
        }
        return ranks, covered

    # numpy sorts and compares without the GIL: batches run side by side on the cores, each
    # with a one-thread BLAS (threads inside threads would fight over the same cores).
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(max(1, min(n_threads, len(starts)))) as pool,
    ):
        # Coverage is folded in as batches finish: holding every batch's sets would cost
        # n_batches x n_candidates, which grows as users x songs^2.
        parts: list[np.ndarray] = []
        covered = {k: np.zeros(n_candidates, bool) for k in ks}
        for batch_ranks, batch_covered in pool.map(evaluate_batch, starts):
            parts.append(batch_ranks)
            for k in ks:
                covered[k] |= batch_covered[k]
    ranks = np.concatenate(parts)
    n_valid = task.valid_counts()
    per_entry = entry_contributions(ranks, task.relevant, n_valid, map_k, ks)
    return TaskScores(
        per_user_sums(per_entry, task.relevant),
        per_entry,
        ranks,
        {f"coverage@{k}": float(covered[k].mean()) for k in ks},
    )


def factor_agreement(predicted: np.ndarray, targets: np.ndarray, songs: np.ndarray) -> dict:
    """R^2 (pooled over dimensions) and mean cosine of predicted vs target song factors.

    Parameters
    ----------
    predicted, targets : np.ndarray [shape=(n_songs, d)]
    songs : np.ndarray  indices of the songs compared
    """
    p, t = predicted[songs].astype(np.float64), targets[songs].astype(np.float64)
    r2 = 1.0 - ((p - t) ** 2).sum() / ((t - t.mean(axis=0)) ** 2).sum()
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1)
    cosine = np.mean((p * t).sum(axis=1) / np.maximum(norms, 1e-12))
    return {"r2": round(float(r2), 6), "cosine": round(float(cosine), 6)}


def holdout_task(
    splits: Splits, share: float, seed: int, max_users: int = 0
) -> tuple[sp.csr_matrix, SplitTask]:
    """A validation task made of training plays only: ``share`` of each warm user's training
    plays (at least one kept) is held out, drawn from ``seed``.

    Returns
    -------
    fit_plays : sp.csr_matrix [shape=(n_users, n_songs)]
        The training plays less the held-out ones: what a model is fitted on.
    task : SplitTask
        Warm users ranking the warm songs, their ``fit_plays`` excluded, the held-out plays
        relevant (a sample of ``max_users`` users when > 0).
    """
    rng = np.random.default_rng([seed, 17])
    train = splits.matrices["train"].tocoo()
    key = rng.random(train.nnz)
    # Each user's plays in a random order; the first share of them (rounded, at most all but
    # one) is held out, as the split holds out warm_test.
    order = np.lexsort((key, train.row))
    rows = train.row[order]
    rank = np.empty(train.nnz, np.int64)
    rank[order] = np.arange(train.nnz) - np.searchsorted(rows, rows, side="left")
    per_user = np.bincount(train.row, minlength=train.shape[0])[train.row]
    held_out = rank < np.minimum(np.round(share * per_user), per_user - 1)
    fit_plays = plays_part(train, ~held_out)
    task = warm_task("validation", splits, fit_plays, plays_part(train, held_out), max_users, seed)
    return fit_plays, task


def warm_task(
    name: str,
    splits: Splits,
    excluded: sp.csr_matrix,
    relevant: sp.csr_matrix,
    max_users: int = 0,
    seed: int = 0,
) -> SplitTask:
    """Warm users ranking the warm songs, ``excluded`` plays left out and ``relevant`` ones to
    find (all users x all songs): the validation tasks made of training plays (WMF's search,
    the hybrid's weight) are of this kind."""
    warm_songs = np.flatnonzero(splits.songs["role"].to_numpy() == "warm")
    warm_users = np.flatnonzero(splits.users["role"].to_numpy() == "warm")
    return build_task(name, warm_users, warm_songs, excluded, relevant, max_users, seed)


def plays_part(plays: sp.coo_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """The entries of ``plays`` where ``mask`` [shape=(plays.nnz,)] holds, same shape: one
    side of a held-out split of a play matrix."""
    return sp.csr_matrix((plays.data[mask], (plays.row[mask], plays.col[mask])), shape=plays.shape)


def mean_map(model: ModelVectors, task: SplitTask, k: int, seed: int) -> float:
    """mAP@k over the task's users (ties broken from ``seed``); NaN where it has none."""
    if len(task.users) == 0:
        return float("nan")
    return float(np.nanmean(evaluate_on_task(model, task, k, [10], seed)[registry.map_key(k)]))
