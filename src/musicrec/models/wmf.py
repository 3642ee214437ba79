"""Stage ``wmf``: weighted matrix factorisation of play counts (Hu, Koren, Volinsky 2008).

Confidence ``c = 1 + alpha * log(1 + r / eps)`` for a play count ``r`` (1 where nobody played),
preference ``p = 1`` for played songs, fitted by implicit's alternating least squares:
minimise ``sum_uv c_uv (p_uv - u_u'v_v)^2 + lambda (sum ||u_u||^2 + sum ||v_v||^2)``.

Two models come out of one stage:

- ``wmf``: fitted on the training plays. Its song factors are the targets that audio models
  learn to predict, and its user factors score every content model. Cold songs have no plays,
  so their WMF factors are zero: CF cannot rank them.
- ``upper_bound``: the same fit on all plays, cold songs and held-out plays included (as in van
  den Oord et al. 2013): the ceiling any audio model that predicts factors could reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from musicrec.errors import MusicrecError
from musicrec.io import load_params, section, stage_timer
from musicrec.models.vectors import ModelVectors, save_model
from musicrec.split import load_splits
from musicrec.stage import stage_parser


@dataclass(frozen=True)
class WMFConfig:
    """WMF params (``wmf`` in params.yaml)."""

    factors: int = 32
    regularization: float = 0.1
    alpha: float = 2.0
    eps: float = 1.0
    iterations: int = 15
    seed: int = 3
    n_jobs: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise MusicrecError("wmf.factors and wmf.iterations must be >= 1")
        if self.regularization < 0 or self.alpha < 0 or self.eps <= 0:
            raise MusicrecError("wmf: need regularization >= 0, alpha >= 0 and eps > 0")


def confidence(counts: sp.csr_matrix, alpha: float, eps: float) -> sp.csr_matrix:
    """The confidence matrix ``1 + alpha * log(1 + r / eps)`` on the played entries.

    Parameters
    ----------
    counts : sp.csr_matrix [shape=(n_users, n_songs)]
        Play counts (zero where not played).

    Returns
    -------
    sp.csr_matrix [shape=(n_users, n_songs), dtype=float32]
        Same sparsity pattern; implicit reads these values as the confidences ``c_uv`` of the
        played entries and takes ``c = 1`` elsewhere.
    """
    conf = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    conf.data = (1.0 + alpha * np.log1p(conf.data / eps)).astype(np.float32)
    return conf


def fit_wmf(counts: sp.csr_matrix, cfg: WMFConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit WMF to a users x songs count matrix.

    Returns
    -------
    user_factors : np.ndarray [shape=(n_users, factors), float32]
    song_factors : np.ndarray [shape=(n_songs, factors), float32]
    """
    import implicit.gpu
    from implicit.als import AlternatingLeastSquares

    # implicit parallelises over users itself; BLAS threads on top only oversubscribe.
    with threadpool_limits(limits=1, user_api="blas"):
        # implicit's factory: the CUDA implementation where there is one, the CPU one otherwise.
        model = AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=1.0,
            iterations=cfg.iterations,
            random_state=cfg.seed,
            num_threads=cfg.n_jobs,
            use_gpu=implicit.gpu.HAS_CUDA,
            calculate_training_loss=False,
        )
        model.fit(confidence(counts, cfg.alpha, cfg.eps), show_progress=True)
    if implicit.gpu.HAS_CUDA:
        model = model.to_cpu()
    users = np.asarray(model.user_factors, np.float32).copy()
    songs = np.asarray(model.item_factors, np.float32).copy()
    # A song or user without plays keeps what is left of its random start after a few CG
    # steps: noise, not knowledge. CF knows nothing of it, so its factors are zero.
    users[np.diff(counts.tocsr().indptr) == 0] = 0.0
    songs[np.diff(counts.tocsc().indptr) == 0] = 0.0
    return users, songs


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("wmf", __doc__, ["wmf"], ("split", "models"))
    args = parser.parse_args(argv)
    cfg = WMFConfig(**section(load_params(args.params), "wmf"))
    with stage_timer("wmf") as record:
        splits = load_splits(args.split)
        users, songs = fit_wmf(splits.matrices["train"], cfg)
        save_model(
            ModelVectors(
                "wmf",
                "WMF (implicit ALS) on the training plays",
                ["warm", "cold", "all"],
                users,
                songs,
            ),
            args.models / "wmf",
        )
        users, songs = fit_wmf(splits.matrices["all"], cfg)
        save_model(
            ModelVectors(
                "upper_bound",
                "WMF on all plays, held-out ones included",
                ["warm", "cold", "all", "cold_user"],
                users,
                songs,
            ),
            args.models / "upper_bound",
        )
        record.update(factors=cfg.factors, iterations=cfg.iterations)
    print(f"wmf: {cfg.factors} factors, fitted on train and on all plays -> {args.models}")
    return 0
