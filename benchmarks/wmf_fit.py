"""WMF fit time: ``musicrec.models.factorization.fit_wmf`` against calling implicit directly.

A random play-count matrix (``--users`` x ``--songs``, ``--plays`` per user on average,
log-normal counts) is fitted with the ``wmf`` params of ``params.yaml``, alternating the two
ways ``--rounds`` times:

- ``fit_wmf``: the confidence transform ``1 + alpha log(1 + r / eps)``, implicit's ALS with
  BLAS pinned to one thread, and the factors of empty rows zeroed;
- the baseline: ``implicit.als.AlternatingLeastSquares(...).fit(confidences)`` on the same
  confidences (computed beforehand, outside the timing), as a user of implicit would call it.

The ratio of medians says what musicrec's wrapper costs. Figures go to the ``wmf_fit`` section
of ``reports/benchmarks.md``.

    python benchmarks/wmf_fit.py [--users 50000] [--songs 20000] [--plays 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from musicrec.io import load_params, replace_section
from musicrec.models.factorization import WMFConfig, confidence, fit_wmf


def random_counts(n_users: int, n_songs: int, plays: int, seed: int = 0) -> sp.csr_matrix:
    """Play counts [shape=(n_users, n_songs)]: popular songs played more, counts >= 1."""
    rng = np.random.default_rng(seed)
    per_user = rng.poisson(plays, n_users) + 1
    users = np.repeat(np.arange(n_users), per_user)
    # Popularity falls off as rank^-0.8: a long tail, yet most draws are distinct pairs.
    popularity = rng.permutation(1.0 / np.arange(1, n_songs + 1) ** 0.8)
    songs = rng.choice(n_songs, len(users), p=popularity / popularity.sum())
    counts = np.ceil(rng.lognormal(1.0, 1.0, len(users)))
    matrix = sp.csr_matrix((counts, (users, songs)), shape=(n_users, n_songs))
    matrix.sum_duplicates()
    return matrix


def implicit_directly(conf: sp.csr_matrix, cfg: WMFConfig) -> None:
    from implicit.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=cfg.factors,
        regularization=cfg.regularization,
        alpha=1.0,
        iterations=cfg.iterations,
        random_state=cfg.seed,
        num_threads=cfg.n_jobs,
        calculate_training_loss=False,
    )
    model.fit(conf, show_progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--songs", type=int, default=20_000)
    parser.add_argument("--plays", type=int, default=40, help="mean distinct songs per user")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    cfg = WMFConfig(**load_params(args.params)["wmf"])
    counts = random_counts(args.users, args.songs, args.plays)
    conf = confidence(counts, cfg.alpha, cfg.eps)
    times: dict[str, list[float]] = {"fit_wmf": [], "implicit directly": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        fit_wmf(counts, cfg)
        times["fit_wmf"].append(time.perf_counter() - start)
        start = time.perf_counter()
        implicit_directly(conf, cfg)
        times["implicit directly"].append(time.perf_counter() - start)
    median = {name: float(np.median(values)) for name, values in times.items()}
    ratio = median["fit_wmf"] / median["implicit directly"]
    lines = [
        "## WMF fit",
        "",
        f"`python benchmarks/wmf_fit.py --users {args.users} --songs {args.songs} --plays "
        f"{args.plays} --rounds {args.rounds}`: {counts.nnz:,} (user, song) pairs, "
        f"{cfg.factors} factors, {cfg.iterations} iterations, {os.cpu_count()} cores; "
        "the two ways alternate, medians in seconds.",
        "",
        "| way | median s | runs |",
        "|---|---|---|",
    ]
    for name, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {median[name]:.2f} | {runs} |")
    lines += ["", f"fit_wmf / implicit directly: **{ratio:.3f}**"]
    replace_section(args.out, "wmf_fit", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
