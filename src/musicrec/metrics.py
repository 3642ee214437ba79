"""Ranking metrics per user, computed from the ranks of each user's relevant songs.

Definitions (docs/design.md, section 4):

- AP@K, as in the Million Song Dataset Challenge (McFee et al. 2012) and implicit's
  ``ranking_metrics_at_k``: ``sum_{k <= K, song k relevant} precision@k / min(|R|, K)``.
- AUC over the full ranking of the user's candidates: the fraction of (relevant, irrelevant)
  pairs ranked in the right order (equal to scikit-learn's ``roc_auc_score`` without ties).
- NDCG@k with binary relevance: ``sum_{hits} 1/log2(rank + 2)`` over the ideal
  ``sum_{j < min(|R|, k)} 1/log2(j + 2)`` (ranks 0-based).
- recall@k = hits@k / |R|, precision@k = hits@k / k.

Intervals resample users and songs (:class:`TwoWayResamples`, :func:`two_way_means`): a split
scores one draw of users and one draw of songs, and which songs were drawn moves a mean as much
as which users were, or more.

Ties in scores are broken at random, independently per user (keys fixed by the seed and the
user), so a model that scores many songs equally (a zero vector, a constant) ranks them as a
random model would: not in catalogue order, and not in one order shared by every user.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from musicrec import registry


def rank_positions(scores: np.ndarray, excluded: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Each candidate's 0-based position in each user's ranking.

    Parameters
    ----------
    scores : np.ndarray [shape=(n_users, n_candidates)]
    excluded : np.ndarray [shape=(n_users, n_candidates), dtype=bool]
        Candidates a user cannot be recommended (their training plays); ranked last.
    tiebreak : np.ndarray [shape=(n_users, n_candidates)]
        Keys that order equal scores, lower first: drawn at random per user, so a model that
        cannot tell songs apart ranks them as a random model would, independently per user.

    Returns
    -------
    positions : np.ndarray [shape=(n_users, n_candidates), dtype=int64]
    """
    scores = np.where(excluded, -np.inf, scores)
    order = np.lexsort((tiebreak, -scores), axis=-1)  # by score, then by tie-break key
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(order.shape[1])[None, :], axis=1)
    return positions


def tiebreak_keys(users: np.ndarray, n_candidates: int, seed: int) -> np.ndarray:
    """Random tie-break keys [shape=(len(users), n_candidates)], fixed by (seed, user).

    The same user gets the same keys whatever the batch, so every model on a split is ranked
    with the same tie-breaks (paired comparisons stay paired).
    """
    return np.stack([np.random.default_rng([seed, int(u)]).random(n_candidates) for u in users])


def metrics_from_ranks(
    positions: np.ndarray, relevant: sp.csr_matrix, n_valid: np.ndarray, map_k: int, ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-user metrics from ranking positions.

    Parameters
    ----------
    positions : np.ndarray [shape=(n_users, n_candidates)]
        From :func:`rank_positions`.
    relevant : sp.csr_matrix [shape=(n_users, n_candidates)]
        Non-zero where a candidate is relevant (held out and played) for the user.
    n_valid : np.ndarray [shape=(n_users,)]
        Candidates each user can be recommended (not excluded).
    map_k : int
        The cut-off of AP (500 in the protocol).
    ks : list of int
        Cut-offs for NDCG, recall and precision.

    Returns
    -------
    dict of np.ndarray [shape=(n_users,)]
        ``map@{map_k}``, ``auc`` and ``ndcg@k``, ``recall@k``, ``precision@k`` for each k.
        Users with no relevant candidate get NaN; AUC is NaN where every candidate is relevant.
    """
    relevant = sp.csr_matrix(relevant)
    user_of = np.repeat(np.arange(relevant.shape[0]), np.diff(relevant.indptr))
    return metrics_from_relevant_ranks(
        positions[user_of, relevant.indices], relevant, n_valid, map_k, ks
    )


def metrics_from_relevant_ranks(
    ranks: np.ndarray, relevant: sp.csr_matrix, n_valid: np.ndarray, map_k: int, ks: list[int]
) -> dict[str, np.ndarray]:
    """:func:`metrics_from_ranks` from the ranks of the relevant entries alone.

    Parameters
    ----------
    ranks : np.ndarray [shape=(relevant.nnz,)]
        Each relevant entry's 0-based position in its user's ranking, in ``relevant``'s CSR
        order (:func:`relevant_ranks`).

    The other parameters and the result are those of :func:`metrics_from_ranks`.
    """
    relevant = sp.csr_matrix(relevant)
    entries = entry_contributions(ranks, relevant, n_valid, map_k, ks)
    return per_user_sums(entries, relevant)


def per_user_sums(entries: dict[str, np.ndarray], relevant: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Each user's metric: the sum of their relevant entries' contributions
    (:func:`entry_contributions`) [shape=(n_users,)]; NaN for a user with no relevant entry or
    whose contributions are NaN."""
    n_users = relevant.shape[0]
    n_rel = np.diff(relevant.indptr)
    user_of = np.repeat(np.arange(n_users), n_rel)
    out = {}
    for name, values in entries.items():
        sums = np.bincount(user_of, weights=values, minlength=n_users)
        sums[n_rel == 0] = np.nan
        out[name] = sums
    return out


def entry_contributions(
    ranks: np.ndarray, relevant: sp.csr_matrix, n_valid: np.ndarray, map_k: int, ks: list[int]
) -> dict[str, np.ndarray]:
    """Each relevant (user, song) entry's share of its user's metrics.

    Every metric here is a sum over the user's relevant songs: AP@K of ``precision@rank /
    min(|R|, K)`` over the hits, AUC of the share of the irrelevant candidates the song is
    ranked above (over ``|R|``), NDCG@k of ``1 / log2(rank + 2) / ideal``, recall@k of
    ``1 / |R|`` per hit, precision@k of ``1 / k`` per hit. The split into entries is what lets
    an interval resample songs as well as users (:func:`two_way_means`).

    Parameters
    ----------
    ranks : np.ndarray [shape=(relevant.nnz,)]
        As in :func:`metrics_from_relevant_ranks`.
    relevant : sp.csr_matrix [shape=(n_users, n_candidates)]
    n_valid : np.ndarray [shape=(n_users,)]
    map_k : int
    ks : list of int

    Returns
    -------
    dict of np.ndarray [shape=(relevant.nnz,)]
        The metrics of :func:`metrics_from_ranks`, per entry, in ``relevant``'s CSR order.
        AUC's entries are NaN where every candidate of the user is relevant.
    """
    relevant = sp.csr_matrix(relevant)
    n_users = relevant.shape[0]
    n_rel = np.diff(relevant.indptr)
    user_of = np.repeat(np.arange(n_users), n_rel)
    ranks = np.asarray(ranks)
    # i: the entry's index among its user's relevant songs sorted by rank (AP's precision and
    # AUC's count of irrelevant songs ranked ahead need it).
    order = np.lexsort((ranks, user_of))
    first = np.repeat(relevant.indptr[:-1], n_rel)
    i = np.empty(len(ranks), np.int64)
    i[order] = np.arange(len(ranks)) - first
    n_rel_e = n_rel[user_of].astype(float)
    n_irrelevant = (np.asarray(n_valid) - n_rel)[user_of].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: dict[str, np.ndarray] = {}
        out[registry.map_key(map_k)] = np.where(
            ranks < map_k, (i + 1) / (ranks + 1), 0.0
        ) / np.minimum(n_rel_e, map_k)
        auc = 1.0 / n_rel_e - (ranks - i) / (n_rel_e * n_irrelevant)
        out["auc"] = np.where(n_irrelevant > 0, auc, np.nan)
        ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(max(ks)) + 2))])
        for k in ks:
            hit = ranks < k
            out[f"ndcg@{k}"] = (
                np.where(hit, 1.0 / np.log2(ranks + 2), 0.0) / ideal[np.minimum(n_rel[user_of], k)]
            )
            out[f"recall@{k}"] = hit / n_rel_e
            out[f"precision@{k}"] = hit / k
    return out


def relevant_ranks(
    masked: np.ndarray,
    ascending: np.ndarray,
    relevant: sp.csr_matrix,
    keys: Callable[[int], np.ndarray],
) -> np.ndarray:
    """Each relevant entry's position in its user's ranking, without ranking the rest.

    The same positions as :func:`rank_positions` (by score, equal scores by the user's
    tie-break keys), found by counting: a song's 0-based position is the number of candidates
    that score higher, plus those that score the same and have a lower key. Each row's scores
    are sorted once (a float sort, no keys), and binary search counts the higher and the equal
    ones for every relevant song; the keys are drawn only for users whose relevant songs tie
    with another.

    Parameters
    ----------
    masked : np.ndarray [shape=(n_users, n_candidates)]
        Scores, with the excluded candidates at ``-inf``.
    ascending : np.ndarray [shape=(n_users, n_candidates)]
        ``np.sort(masked, axis=1)``.
    relevant : sp.csr_matrix [shape=(n_users, n_candidates)]
    keys : callable
        ``keys(row)`` -> the tie-break keys [shape=(n_candidates,)] of the user in that row.

    Returns
    -------
    np.ndarray [shape=(relevant.nnz,), dtype=int64], in ``relevant``'s CSR order.
    """
    n_candidates = masked.shape[1]
    user_of = np.repeat(np.arange(masked.shape[0]), np.diff(relevant.indptr))
    songs = relevant.indices
    own = masked[user_of, songs]
    ranks = np.empty(len(songs), np.int64)
    others_equal = np.empty(len(songs), np.int64)
    for row in np.flatnonzero(np.diff(relevant.indptr)):
        entries = slice(relevant.indptr[row], relevant.indptr[row + 1])
        below = np.searchsorted(ascending[row], own[entries], side="left")
        up_to = np.searchsorted(ascending[row], own[entries], side="right")
        ranks[entries] = n_candidates - up_to
        others_equal[entries] = up_to - below - 1
    tied = np.flatnonzero(others_equal > 0)  # in CSR order, so grouped by row
    rows_of_tied, first = np.unique(user_of[tied], return_index=True)
    groups = np.split(tied, first[1:]) if len(tied) else []
    for row, entries in zip(rows_of_tied, groups, strict=True):
        row_keys = keys(row)
        equal = masked[row][None, :] == own[entries, None]
        lower_key = row_keys[None, :] < row_keys[songs[entries], None]
        ranks[entries] += (equal & lower_key).sum(axis=1)
    return ranks


def top_k_members(
    masked: np.ndarray, ascending: np.ndarray, k: int, keys: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Which candidates are in each row's top ``k`` [shape=(n_rows, n_candidates), bool].

    The top ``k`` of :func:`rank_positions`, excluded candidates (``-inf``) left out, found
    from the sorted scores: everything above the ``k``-th best score, and of the scores equal
    to it, those with the lowest keys (drawn only for rows where the tie crosses the edge).

    Parameters
    ----------
    masked, ascending, keys
        As in :func:`relevant_ranks`.
    k : int
        At most ``n_candidates``.
    """
    n_candidates = masked.shape[1]
    cut = ascending[:, n_candidates - k]
    members = masked > cut[:, None]
    at_cut = masked == cut[:, None]
    room = k - np.count_nonzero(members, axis=1)
    n_at_cut = np.count_nonzero(at_cut, axis=1)
    fits = (n_at_cut <= room) & (cut > -np.inf)
    members[fits] |= at_cut[fits]
    for row in np.flatnonzero((n_at_cut > room) & (cut > -np.inf)):
        tied = np.flatnonzero(at_cut[row])
        members[row, tied[np.argsort(keys(row)[tied], kind="stable")[: room[row]]]] = True
    return members


def top_k(
    masked: np.ndarray, k: int, keys: Callable[[int], np.ndarray] | None = None
) -> np.ndarray:
    """Each row's ``k`` best candidates, best first, equal scores ordered by the row's keys.

    ``argpartition`` finds the best ``k`` of a row in linear time and only they are sorted.
    Where equal scores fall inside the top ``k`` or across its edge, that row is ordered again
    by (score, key): ``keys(row)`` [shape=(n_candidates,)], or the index where ``keys`` is None.

    Parameters
    ----------
    masked : np.ndarray [shape=(n_rows, n_candidates)]
        Scores; ``-inf`` for candidates a row must not get (they come last).
    k : int
        At most ``n_candidates``.

    Returns
    -------
    np.ndarray [shape=(n_rows, k), dtype=int64]
    """
    n_rows, n_candidates = masked.shape
    if k <= 0:
        return np.zeros((n_rows, 0), np.int64)
    best = np.argpartition(masked, n_candidates - k, axis=1)[:, n_candidates - k :]
    best_scores = np.take_along_axis(masked, best, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    cut = best_scores[:, -1]
    with np.errstate(invalid="ignore"):  # -inf - -inf
        tie_inside = (np.diff(best_scores, axis=1) == 0).any(axis=1)
    tie_at_edge = np.count_nonzero(masked >= cut[:, None], axis=1) > k
    for row in np.flatnonzero(tie_inside | tie_at_edge):
        candidates = np.flatnonzero(masked[row] >= cut[row])
        row_keys = candidates if keys is None else keys(row)[candidates]
        best[row] = candidates[np.lexsort((row_keys, -masked[row, candidates]))][:k]
    return best.astype(np.int64)


@dataclass(frozen=True)
class Resamples:
    """Bootstrap resamples of users, drawn again block by block instead of held in memory.

    ``n_resamples`` rows of ``n_users`` indices drawn with replacement would take
    ``8 * n_resamples * n_users`` bytes (80 MB for 1,000 resamples of 10,000 users, per split);
    keeping the generator's state instead lets every model on a split be scored on the same
    resamples, regenerated a block of rows at a time. A generator draws the same numbers in
    blocks as in one call, so the resamples are those of ``rng.integers(0, n_users,
    (n_resamples, n_users))``.
    """

    state: dict
    n_resamples: int
    n_users: int

    @classmethod
    def draw(cls, rng: np.random.Generator, n_resamples: int, n_users: int) -> Resamples:
        """Resamples of ``rng``'s next draws; ``rng`` is left as if it had drawn them all."""
        resamples = cls(copy.deepcopy(rng.bit_generator.state), n_resamples, n_users)
        for _ in resamples.blocks(rng):
            pass
        return resamples

    def blocks(self, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
        """Rows of resamples [shape=(<= block, n_users), dtype=int64], in order.

        A block holds about a million indices (8 MB), whatever the number of users.
        """
        if rng is None:
            rng = np.random.Generator(type(np.random.default_rng().bit_generator)())
            rng.bit_generator.state = copy.deepcopy(self.state)
        rows = max(1, RESAMPLE_BLOCK_CELLS // max(self.n_users, 1))
        for start in range(0, self.n_resamples, rows):
            yield rng.integers(
                0, max(self.n_users, 1), (min(rows, self.n_resamples - start), self.n_users)
            )


RESAMPLE_BLOCK_CELLS = 2**20


def bootstrap_interval(
    values: np.ndarray, resamples: np.ndarray | Resamples, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users.

    Parameters
    ----------
    values : np.ndarray [shape=(n_users,)]
    resamples : np.ndarray [shape=(n_resamples, n_users), dtype=int] or Resamples
        Indices of users drawn with replacement (shared across models, so intervals of
        different models on one split come from the same resamples).
    """
    blocks = resamples.blocks() if isinstance(resamples, Resamples) else [resamples]
    means = np.concatenate([values[block].mean(axis=1) for block in blocks])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class TwoWayResamples:
    """Pigeonhole bootstrap resamples (Owen 2007): users and songs drawn with replacement,
    independently, as counts of how often each was drawn.

    A split's users and its songs are both samples: the cold songs are one draw of the
    catalogue, as the users scored are one draw of the listeners. Resampling only users treats
    the songs as fixed and gives intervals far too narrow where songs differ more than users
    do. Each resample weights a (user, song) entry by ``user_count * song_count`` (Owen and
    Eckles 2012's product weights).

    Users and songs come from two generators seeded from ``rng``, so the counts do not depend
    on how many rows a block holds; nothing but the seeds is kept in memory.
    """

    seeds: tuple[int, int]
    n_resamples: int
    n_users: int
    n_songs: int

    @classmethod
    def draw(
        cls, rng: np.random.Generator, n_resamples: int, n_users: int, n_songs: int
    ) -> TwoWayResamples:
        """Resamples seeded by ``rng``'s next two draws."""
        users_seed, songs_seed = (int(s) for s in rng.integers(2**63, size=2))
        return cls((users_seed, songs_seed), n_resamples, n_users, n_songs)

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(user_counts, song_counts)`` [shape=(<= rows, n_users) and (<= rows, n_songs),
        dtype=float64] for ``rows`` resamples at a time, in order."""
        generators = [np.random.default_rng(seed) for seed in self.seeds]
        sizes = (self.n_users, self.n_songs)
        for start in range(0, self.n_resamples, max(1, rows)):
            b = min(max(1, rows), self.n_resamples - start)
            yield tuple(
                _counts(generator.integers(0, max(n, 1), (b, n)), n)
                for generator, n in zip(generators, sizes, strict=True)
            )


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items occurs in each row of ``draws`` [shape=(b, n)]."""
    b = draws.shape[0]
    offsets = (np.arange(b) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=b * n).reshape(b, n).astype(float)


def two_way_means(
    users: np.ndarray,
    songs: np.ndarray,
    values: np.ndarray,
    resamples: TwoWayResamples,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The mean over users of each column's per-user metric, under every two-way resample.

    Parameters
    ----------
    users, songs : np.ndarray [shape=(n_entries,), dtype=int]
        Each relevant entry's user (row of the task, ``< resamples.n_users``) and song
        (column, ``< resamples.n_songs``).
    values : np.ndarray [shape=(n_entries, n_columns)]
        Each entry's contribution to its user's metric (:func:`entry_contributions`), one
        column per (model, metric); no NaN. A user's entries sum to the user's metric.
    resamples : TwoWayResamples
    rows : np.ndarray [shape=(n_entries,), dtype=int], optional
        Each entry's row, the unit a mean is over, where it is not the user: a user scored on
        several cold folds has a row per fold, one resampled user (default: ``users``).

    Returns
    -------
    np.ndarray [shape=(n_resamples, n_columns)]
        Per resample (user counts W, song counts V), the ratio estimate with product
        weights of Owen and Eckles (2012): ``sum_e W[u_e] V[s_e] values[e] / sum_e W[u_e]
        V[s_e] / |R_{u_e}|``. The mean over users is the mean over entries weighted by
        ``1 / |R_u|`` (an entry's value scaled by ``|R_u|``); a resample reweights each entry
        by its user's and its song's counts, and divides by the reweighted total weight. So a
        song drawn twice counts twice, and a model that gains ``g`` on every user, spread as
        ``g / |R_u|`` over each user's entries, gains exactly ``g`` under every resample; with
        every song count 1 it is the users-only bootstrap of the mean of the per-user sums. A
        resample that draws none of the relevant entries (every drawn user's songs undrawn)
        has no mean: NaN (:func:`percentile_intervals` leaves it out).

    Ranks are held at their observed values: a resampled song is not ranked again (the
    linearised pigeonhole bootstrap). Each block of resamples is one matrix product of
    per-entry weights [shape=(block, n_entries)] with ``values``.
    """
    users, songs = np.asarray(users), np.asarray(songs)
    rows = users if rows is None else np.asarray(rows)
    values = np.asarray(values, dtype=np.float64).reshape(len(users), -1)
    entry_weight = 1.0 / np.bincount(rows)[rows]
    cells = max(len(users), resamples.n_users + resamples.n_songs, 1)
    rows = max(1, RESAMPLE_BLOCK_CELLS // cells)
    out = []
    for user_counts, song_counts in resamples.blocks(rows):
        weights = user_counts[:, users] * song_counts[:, songs]  # [b, n_entries]
        totals = weights @ entry_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            means = weights @ values / totals[:, None]
        means[totals <= 0] = np.nan
        out.append(means)
    return np.concatenate(out) if out else np.zeros((0, values.shape[1]))


def impute_missing(
    per_entry: np.ndarray, per_user: np.ndarray, entry_users: np.ndarray
) -> np.ndarray:
    """``per_entry`` [shape=(n_entries,)] with the entries of users whose value is NaN (AUC
    where every candidate is relevant) set so that the user sums to the mean of the others:
    a resample counts such a user as an average one, as the mean that skips them does.

    ``per_user`` [shape=(n_users,)]; ``entry_users`` [shape=(n_entries,)]: each entry's row.
    """
    missing = np.isnan(per_user)
    if not missing.any():
        return per_entry
    n_relevant = np.bincount(entry_users, minlength=len(per_user))
    fill = np.nanmean(per_user) if (~missing).any() else 0.0
    filled = per_entry.copy()
    on_missing = missing[entry_users]
    filled[on_missing] = fill / n_relevant[entry_users[on_missing]]
    return filled


def percentile_intervals(samples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile intervals of each column of ``samples`` [shape=(n_resamples, n_columns)]:
    [shape=(n_columns, 2)], low and high; resamples without a mean (NaN) are left out."""
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(samples, [tail, 100 - tail], axis=0).T
