"""Ranking metrics per user, computed from the ranks of each user's relevant songs.

Definitions (DESIGN.md section 4):

- AP@K, as in the Million Song Dataset Challenge (McFee et al. 2012) and implicit's
  ``ranking_metrics_at_k``: ``sum_{k <= K, song k relevant} precision@k / min(|R|, K)``.
- AUC over the full ranking of the user's candidates: the fraction of (relevant, irrelevant)
  pairs ranked in the right order (equal to scikit-learn's ``roc_auc_score`` without ties).
- NDCG@k with binary relevance: ``sum_{hits} 1/log2(rank + 2)`` over the ideal
  ``sum_{j < min(|R|, k)} 1/log2(j + 2)`` (ranks 0-based).
- recall@k = hits@k / |R|, precision@k = hits@k / k.

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
    n_users = relevant.shape[0]
    n_rel = np.diff(relevant.indptr)
    user_of = np.repeat(np.arange(n_users), n_rel)
    ranks = np.asarray(ranks)
    # Sort each user's relevant ranks; i = index of the rank within its user's sorted list.
    order = np.lexsort((ranks, user_of))
    ranks = ranks[order]
    first = np.repeat(relevant.indptr[:-1], n_rel)
    i = np.arange(len(ranks)) - first

    def per_user(values: np.ndarray) -> np.ndarray:
        return np.bincount(user_of, weights=values, minlength=n_users)

    with np.errstate(divide="ignore", invalid="ignore"):
        out: dict[str, np.ndarray] = {}
        hit = ranks < map_k
        out[registry.map_key(map_k)] = per_user(
            np.where(hit, (i + 1) / (ranks + 1), 0.0)
        ) / np.minimum(n_rel, map_k)
        n_irrelevant = n_valid - n_rel
        out["auc"] = 1.0 - per_user((ranks - i).astype(float)) / (n_rel * n_irrelevant)
        out["auc"][n_irrelevant <= 0] = np.nan
        ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(max(ks)) + 2))])
        for k in ks:
            hits = per_user((ranks < k).astype(float))
            out[f"ndcg@{k}"] = (
                per_user(np.where(ranks < k, 1.0 / np.log2(ranks + 2), 0.0))
                / (ideal[np.minimum(n_rel, k)])
            )
            out[f"recall@{k}"] = hits / n_rel
            out[f"precision@{k}"] = hits / k
    for values in out.values():
        values[n_rel == 0] = np.nan
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
