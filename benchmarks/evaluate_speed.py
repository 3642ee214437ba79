"""Evaluate speed: ``evaluate_on_task`` against implicit's ``ranking_metrics_at_k`` at K=500.

Random factors (``--dim``) for ``--users`` listeners and ``--songs`` songs, a training matrix
(``--plays`` songs per listener) and a test matrix (a fifth as many, none of them trained on).
Both score every listener with held-out songs over the whole catalogue, training songs left
out:

- ``evaluate_on_task`` (the ``evaluate`` stage's core): mAP@500, AUC over the full ranking,
  NDCG, recall and precision at 10, 50, 100 and 500, and coverage;
- the baseline, ``implicit.evaluation.ranking_metrics_at_k(model, train, test, K=500)``:
  precision, mAP, NDCG and AUC at K, multithreaded in C++.

The mAPs must agree (to 1e-6); the times are the medians of ``--rounds`` alternated runs.
Figures go to the ``evaluate_speed`` section of ``reports/benchmarks.md``.

    python benchmarks/evaluate_speed.py [--users 10000] [--songs 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from musicrec.io import replace_section
from musicrec.models.vectors import ModelVectors
from musicrec.ranking import SplitTask, evaluate_on_task


def random_case(n_users: int, n_songs: int, plays: int, dim: int, seed: int = 0):
    """Factors, training and test matrices [shape=(n_users, n_songs)], disjoint."""
    rng = np.random.default_rng(seed)
    held_out = max(1, plays // 5)
    picks = np.stack([rng.choice(n_songs, plays + held_out, replace=False) for _ in range(n_users)])
    users = np.repeat(np.arange(n_users), plays)
    train = sp.csr_matrix(
        (np.ones(users.size, np.float32), (users, picks[:, :plays].ravel())),
        shape=(n_users, n_songs),
    )
    users = np.repeat(np.arange(n_users), held_out)
    test = sp.csr_matrix(
        (np.ones(users.size, np.float32), (users, picks[:, plays:].ravel())),
        shape=(n_users, n_songs),
    )
    user_factors = rng.standard_normal((n_users, dim)).astype(np.float32)
    song_factors = rng.standard_normal((n_songs, dim)).astype(np.float32)
    return user_factors, song_factors, train, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--songs", type=int, default=20_000)
    parser.add_argument("--plays", type=int, default=30)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    user_factors, song_factors, train, test = random_case(
        args.users, args.songs, args.plays, args.dim
    )
    users = np.arange(args.users)
    task = SplitTask("all", users, np.arange(args.songs), train, test)
    model = ModelVectors("random", "", ["all"], user_factors, song_factors)
    theirs_model = AlternatingLeastSquares(factors=args.dim)
    theirs_model.user_factors, theirs_model.item_factors = user_factors, song_factors
    times: dict[str, list[float]] = {"evaluate_on_task": [], "ranking_metrics_at_k": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        ours = evaluate_on_task(model, task, 500, [10, 50, 100, 500], tiebreak_seed=0)
        times["evaluate_on_task"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = ranking_metrics_at_k(theirs_model, train, test, K=500, show_progress=False)
        times["ranking_metrics_at_k"].append(time.perf_counter() - start)
    our_map, their_map = float(np.nanmean(ours["map@500"])), float(theirs["map"])
    if abs(our_map - their_map) > 1e-6:
        raise SystemExit(f"mAP@500 differs: evaluate {our_map:.8f}, implicit {their_map:.8f}")
    median = {name: float(np.median(values)) for name, values in times.items()}
    ratio = median["ranking_metrics_at_k"] / median["evaluate_on_task"]
    lines = [
        "## Evaluate speed",
        "",
        f"`python benchmarks/evaluate_speed.py --users {args.users} --songs {args.songs} "
        f"--plays {args.plays} --rounds {args.rounds}`: random {args.dim}-d factors, every "
        f"listener ranks all {args.songs:,} songs, {os.cpu_count()} cores; medians of "
        "alternated runs in seconds.",
        "",
        "| way | computes | median s | runs |",
        "|---|---|---|---|",
        f"| `evaluate_on_task` | mAP@500, full AUC, NDCG/recall/precision@10,50,100,500, "
        f"coverage | {median['evaluate_on_task']:.2f} | "
        + ", ".join(f"{v:.2f}" for v in times["evaluate_on_task"])
        + " |",
        f"| implicit `ranking_metrics_at_k`, K=500 | precision, mAP, NDCG, AUC at K | "
        f"{median['ranking_metrics_at_k']:.2f} | "
        + ", ".join(f"{v:.2f}" for v in times["ranking_metrics_at_k"])
        + " |",
        "",
        f"mAP@500: evaluate {our_map:.6f}, implicit {their_map:.6f} (equal to 1e-6). "
        f"implicit time / evaluate time: **{ratio:.2f}** (above 1: evaluate is faster).",
    ]
    replace_section(args.out, "evaluate_speed", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
