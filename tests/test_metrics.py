"""Known-answer tests of the ranking metrics, and agreement with implicit and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from musicrec import metrics
from musicrec.metrics import (
    Resamples,
    bootstrap_interval,
    metrics_from_ranks,
    rank_positions,
    relevant_ranks,
    tiebreak_keys,
    top_k,
    top_k_members,
)
from musicrec.models.vectors import ModelVectors
from musicrec.ranking import SplitTask, evaluate_on_task


def one_user(scores, relevant, excluded=None, map_k=500, ks=(1, 3, 5)):
    scores = np.asarray([scores], float)
    n = scores.shape[1]
    excluded = np.zeros((1, n), bool) if excluded is None else np.asarray([excluded], bool)
    rel = np.zeros((1, n))
    rel[0, relevant] = 1
    positions = rank_positions(scores, excluded, np.tile(np.arange(n), (1, 1)))
    out = metrics_from_ranks(positions, sp.csr_matrix(rel), n - excluded.sum(1), map_k, list(ks))
    return {k: float(v[0]) for k, v in out.items()}


def test_perfect_ranking_scores_one():
    m = one_user([5, 4, 3, 2, 1], relevant=[0, 1])
    assert m["map@500"] == 1.0 and m["auc"] == 1.0 and m["ndcg@5"] == 1.0
    assert m["recall@3"] == 1.0 and m["precision@1"] == 1.0


def test_ranking_with_no_hits_in_cutoff():
    m = one_user([5, 4, 3, 2, 1], relevant=[3, 4], map_k=2)
    assert m["map@2"] == 0.0
    assert m["auc"] == 0.0  # every relevant song below every irrelevant one
    assert m["recall@3"] == 0.0 and m["ndcg@3"] == 0.0 and m["precision@1"] == 0.0


def test_hand_computed_case():
    # Ranking: s0 (relevant), s1, s2 (relevant), s3, s4.
    m = one_user([5, 4, 3, 2, 1], relevant=[0, 2])
    assert m["map@500"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["auc"] == pytest.approx(1 - 1 / (2 * 3))  # one of 6 pairs misordered
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))
    assert m["recall@1"] == 0.5 and m["precision@3"] == pytest.approx(2 / 3)


def test_ap_normalises_by_min_of_relevant_and_cutoff():
    # Three relevant songs, cut-off 2, both top songs relevant: AP@2 = (1 + 1) / min(3, 2).
    m = one_user([5, 4, 3, 2, 1], relevant=[0, 1, 4], map_k=2)
    assert m["map@2"] == 1.0


def test_excluded_songs_rank_last_and_leave_the_auc():
    # s0 is excluded (a training play): s1 then becomes first.
    m = one_user([9, 4, 3, 2, 1], relevant=[1], excluded=[True, False, False, False, False])
    assert m["map@500"] == 1.0 and m["auc"] == 1.0


def test_ties_follow_each_users_tiebreak_keys_not_the_catalogue_order():
    scores = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    keys = np.array([[0.9, 0.7, 0.5, 0.1], [0.1, 0.2, 0.9, 0.3]])
    positions = rank_positions(scores, np.zeros((2, 4), bool), keys)
    assert positions.tolist() == [[3, 2, 1, 0], [0, 1, 3, 2]]


def test_a_model_that_cannot_tell_songs_apart_ranks_like_random():
    users = np.arange(400)
    model = ModelVectors("zero", "", ["all"], np.zeros((400, 2)), np.zeros((50, 2)))
    relevant = sp.csr_matrix((np.arange(400)[:, None] % 50 == np.arange(50)[None, :]) * 1.0)
    task = SplitTask("all", users, np.arange(50), sp.csr_matrix((400, 50)), relevant)
    result = evaluate_on_task(model, task, 500, [5], tiebreak_seed=1)
    assert abs(np.mean(result["auc"]) - 0.5) < 0.05
    assert result["coverage@5"] == 1.0  # users get different random orders


def test_user_without_relevant_songs_is_nan():
    rel = sp.csr_matrix(np.array([[0, 0, 0], [1, 0, 0]]))
    positions = rank_positions(np.ones((2, 3)), np.zeros((2, 3), bool), np.ones((2, 3)))
    out = metrics_from_ranks(positions, rel, np.array([3, 3]), 500, [1])
    assert np.isnan(out["map@500"][0]) and out["map@500"][1] == 1.0


@pytest.fixture
def random_case():
    rng = np.random.default_rng(0)
    n_users, n_songs, dim = 60, 800, 6
    train = sp.random(n_users, n_songs, density=0.05, random_state=1, format="csr")
    test = sp.random(n_users, n_songs, density=0.03, random_state=2, format="csr")
    test = test - test.multiply(train > 0)  # held-out plays are never training plays
    test.eliminate_zeros()
    user_vectors = rng.standard_normal((n_users, dim)).astype(np.float32)
    song_vectors = rng.standard_normal((n_songs, dim)).astype(np.float32)
    return train.tocsr(), test.tocsr(), user_vectors, song_vectors


def _evaluate(random_case, map_k, batch_users=7):
    train, test, user_vectors, song_vectors = random_case
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    task = SplitTask("all", users, np.arange(train.shape[1]), train[users], test[users])
    model = ModelVectors("m", "", ["all"], user_vectors, song_vectors)
    return users, evaluate_on_task(
        model, task, map_k, [10], tiebreak_seed=0, batch_cells=batch_users * train.shape[1]
    )


def test_batching_users_does_not_change_any_metric(random_case):
    _, one_at_a_time = _evaluate(random_case, 500, batch_users=1)
    _, all_at_once = _evaluate(random_case, 500, batch_users=1000)
    assert one_at_a_time.keys() == all_at_once.keys()
    for name, values in one_at_a_time.items():
        np.testing.assert_array_equal(values, all_at_once[name], err_msg=name)


def test_map_matches_implicit_ranking_metrics_at_k(random_case):
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    train, test, user_vectors, song_vectors = random_case
    for k in (10, 500):
        _, ours = _evaluate(random_case, map_k=k)
        model = AlternatingLeastSquares(factors=user_vectors.shape[1], random_state=0)
        model.user_factors, model.item_factors = user_vectors, song_vectors
        theirs = ranking_metrics_at_k(model, train, test, K=k, show_progress=False)
        assert np.nanmean(ours[f"map@{k}"]) == pytest.approx(theirs["map"], abs=1e-6)


def test_auc_matches_scikit_learn_per_user(random_case):
    train, test, user_vectors, song_vectors = random_case
    users, ours = _evaluate(random_case, map_k=500)
    for i, u in enumerate(users):
        candidates = np.setdiff1d(np.arange(train.shape[1]), train[u].indices)
        truth = np.isin(candidates, test[u].indices)
        if truth.all():
            continue
        expected = roc_auc_score(truth, user_vectors[u] @ song_vectors[candidates].T)
        assert ours["auc"][i] == pytest.approx(expected, abs=1e-9)


def test_coverage_counts_songs_in_anyones_top_k():
    # Two users with opposite tastes over 4 songs: top-1 covers 2 of 4 songs.
    model = ModelVectors(
        "m", "", ["all"], np.array([[1.0], [-1.0]]), np.array([[3.0], [1.0], [-1.0], [-3.0]])
    )
    task = SplitTask(
        "all", np.arange(2), np.arange(4), sp.csr_matrix((2, 4)), sp.csr_matrix(np.ones((2, 4)))
    )
    result = evaluate_on_task(model, task, 500, [1, 2], tiebreak_seed=0)
    assert result["coverage@1"] == 0.5 and result["coverage@2"] == 1.0


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    lo_s, hi_s = bootstrap_interval(small, rng.integers(0, 50, (500, 50)))
    lo_l, hi_l = bootstrap_interval(large, rng.integers(0, 5000, (500, 5000)))
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_resamples_regenerate_the_draws_of_one_call_in_small_blocks(monkeypatch):
    monkeypatch.setattr(metrics, "RESAMPLE_BLOCK_CELLS", 1000)  # 3 rows of 300 users a block
    values = np.random.default_rng(1).random(300)
    rng, twin = np.random.default_rng(4), np.random.default_rng(4)
    resamples = Resamples.draw(rng, 50, 300)
    in_one_call = twin.integers(0, 300, (50, 300))
    assert [len(block) for block in resamples.blocks()] == [3] * 16 + [2]
    np.testing.assert_array_equal(np.concatenate(list(resamples.blocks())), in_one_call)
    assert rng.random() == twin.random()  # the generator moved on as if it had drawn them
    assert bootstrap_interval(values, resamples) == bootstrap_interval(values, in_one_call)
    # Every model on a split gets the same resamples, however often they are regenerated.
    np.testing.assert_array_equal(np.concatenate(list(resamples.blocks())), in_one_call)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("excluded_share", [0.1, 0.995])  # 0.995: fewer valid songs than k
def test_counted_ranks_and_top_k_equal_the_full_ranking(ties, excluded_share):
    """relevant_ranks, top_k_members and top_k against rank_positions' full sort."""
    rng = np.random.default_rng(int(ties) + 2 * int(excluded_share > 0.5))
    n_users, n = 50, 300
    scores = rng.standard_normal((n_users, n)).astype(np.float32)
    if ties:
        scores = np.round(scores * 2)  # a handful of distinct scores: ties everywhere
    excluded = rng.random((n_users, n)) < excluded_share
    relevant = sp.csr_matrix((rng.random((n_users, n)) < 0.05) & ~excluded)
    keys = tiebreak_keys(rng.choice(10_000, n_users, replace=False), n, seed=5)
    positions = rank_positions(scores, excluded, keys)
    masked = np.where(excluded, -np.inf, scores)
    ascending = np.sort(masked, axis=1)
    user_of = np.repeat(np.arange(n_users), np.diff(relevant.indptr))
    ranks = relevant_ranks(masked, ascending, relevant, lambda row: keys[row])
    np.testing.assert_array_equal(ranks, positions[user_of, relevant.indices])
    for k in (1, 10, 50, 299, 300):
        members = top_k_members(masked, ascending, k, lambda row: keys[row])
        np.testing.assert_array_equal(members, (positions < k) & ~excluded)
        best = top_k(masked, k, lambda row: keys[row])
        for row in range(n_users):
            expected = np.argsort(positions[row])[:k]
            valid = ~excluded[row, best[row]]
            assert best[row][valid].tolist() == expected[~excluded[row, expected]].tolist()


def test_each_entry_carries_its_share_of_its_users_metric():
    # one user, 5 candidates, relevant songs at ranks 0 and 2
    relevant = sp.csr_matrix(np.array([[1, 0, 1, 0, 0]]))
    entries = metrics.entry_contributions(np.array([0, 2]), relevant, np.array([5]), 500, [1, 3])
    np.testing.assert_allclose(entries["map@500"], [1 / 2, (2 / 3) / 2])  # precision / |R|
    np.testing.assert_allclose(entries["auc"], [3 / 6, 2 / 6])  # irrelevant songs below / pairs
    np.testing.assert_allclose(entries["recall@1"], [0.5, 0.0])
    np.testing.assert_allclose(entries["precision@3"], [1 / 3, 1 / 3])
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(entries["ndcg@3"], [1 / ideal, (1 / np.log2(4)) / ideal])
    sums = metrics.per_user_sums(entries, relevant)
    assert sums["auc"][0] == pytest.approx(5 / 6) and sums["map@500"][0] == pytest.approx(5 / 6)


class _SongsOnce:
    """Two-way resamples whose songs are each drawn once: users-only resamples."""

    def __init__(self, user_draws: np.ndarray, n_songs: int) -> None:
        self.user_draws, self.n_users, self.n_songs = user_draws, user_draws.shape[1], n_songs
        self.n_resamples = len(user_draws)

    def blocks(self, rows: int):
        counts = metrics._counts(self.user_draws, self.n_users)
        yield counts, np.ones((len(counts), self.n_songs))


def test_two_way_means_with_every_song_drawn_once_are_the_users_only_bootstrap():
    rng = np.random.default_rng(3)
    relevant = sp.random(40, 30, density=0.2, random_state=3, format="csr")
    relevant = relevant[np.diff(relevant.indptr) > 0]
    entries = relevant.tocoo()
    values = rng.random((relevant.nnz, 2))
    per_user = np.stack(
        [np.bincount(entries.row, weights=v, minlength=relevant.shape[0]) for v in values.T], 1
    )
    draws = rng.integers(0, relevant.shape[0], (64, relevant.shape[0]))
    means = metrics.two_way_means(entries.row, entries.col, values, _SongsOnce(draws, 30))
    np.testing.assert_allclose(means, per_user[draws].mean(axis=1))


def test_two_way_resamples_do_not_depend_on_the_block_size():
    resamples = metrics.TwoWayResamples.draw(np.random.default_rng(0), 10, 7, 5)
    whole = [np.concatenate(part) for part in zip(*resamples.blocks(100), strict=True)]
    pieces = [np.concatenate(part) for part in zip(*resamples.blocks(3), strict=True)]
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole[0].shape == (10, 7) and (whole[0].sum(axis=1) == 7).all()
    assert whole[1].shape == (10, 5) and (whole[1].sum(axis=1) == 5).all()


def _crossed_world(rng: np.random.Generator, n_users: int = 300, n_songs: int = 25) -> tuple:
    """One draw of users and songs from a population whose mean metric is 0.5: each user has
    three relevant songs; an entry's value is 0.5 + the song's effect (sd 0.2, the most of the
    variance) + the user's (sd 0.05) + noise (sd 0.05). Returns (users, songs, per-entry
    contributions, per-user values)."""
    song_effect = rng.normal(0, 0.2, n_songs)
    user_effect = rng.normal(0, 0.05, n_users)
    users = np.repeat(np.arange(n_users), 3)
    songs = np.concatenate([rng.choice(n_songs, 3, replace=False) for _ in range(n_users)])
    value = 0.5 + song_effect[songs] + user_effect[users] + rng.normal(0, 0.05, len(users))
    contributions = value / 3  # a user's metric is the mean of its songs' values
    return users, songs, contributions, np.bincount(users, weights=contributions)


def test_where_songs_vary_most_only_the_two_way_interval_covers_at_its_nominal_rate():
    """The population mean is 0.5. Over 200 draws of (users, songs), a 95% interval that
    resamples users alone covers it in far fewer than 95% of draws; the two-way one in about
    95%."""
    rng = np.random.default_rng(2026)
    users_only = two_way = 0
    draws = 200
    for _ in range(draws):
        users, songs, contributions, per_user = _crossed_world(rng)
        resamples = metrics.TwoWayResamples.draw(rng, 300, len(per_user), 25)
        low, high = metrics.percentile_intervals(
            metrics.two_way_means(users, songs, contributions[:, None], resamples)
        )[0]
        two_way += low <= 0.5 <= high
        low, high = bootstrap_interval(per_user, Resamples.draw(rng, 300, len(per_user)))
        users_only += low <= 0.5 <= high
    assert users_only / draws < 0.5
    assert 0.88 <= two_way / draws <= 1.0
