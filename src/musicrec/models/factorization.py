"""Weighted matrix factorisation of play counts (Hu, Koren, Volinsky 2008): the library.

Confidence ``c = 1 + alpha * log(1 + r / eps)`` for a play count ``r`` (1 where nobody played),
preference ``p = 1`` for played songs, fitted by implicit's alternating least squares:
minimise ``sum_uv c_uv (p_uv - u_u'v_v)^2 + lambda (sum ||u_u||^2 + sum ||v_v||^2)``.
Fold-in solves the same least squares for new rows with the other side held fixed. Used by the
``wmf`` stage, the DBN's new users, the hybrid's validation refit and ``recommend``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from musicrec.errors import MusicrecError


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


# The CUDA libraries implicit's CUDA extension links to (implicit 0.7.3 from PyPI: CUDA 13).
_IMPLICIT_CUDA_LIBRARIES = (
    "libcudart.so.*",
    "libcublasLt.so.*",
    "libcublas.so.*",
    "libcurand.so.*",
)


def load_cuda_libraries() -> list[str]:
    """Load, for implicit's CUDA extension, the CUDA libraries of the pip ``nvidia-*`` packages
    (those a CUDA build of torch installs), which the system's loader does not search.

    Done only where ``rmm`` is installed (the ``gpu`` extra): without it implicit never tries
    CUDA. Without this, implicit turns its GPU support off with a warning ("libcublas.so.13:
    cannot open shared object file") on a machine whose CUDA comes from pip alone.

    Returns
    -------
    list of str
        The file names loaded (none where rmm is absent or nothing matched).
    """
    if importlib.util.find_spec("rmm") is None:
        return []
    loaded = set()
    for entry in sys.path:
        for pattern in _IMPLICIT_CUDA_LIBRARIES:
            found = glob.glob(os.path.join(entry, "nvidia", "**", pattern), recursive=True)
            for library in sorted(found):
                with contextlib.suppress(OSError):
                    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
                    loaded.add(os.path.basename(library))
    return sorted(loaded)


def fit_wmf(
    counts: sp.csr_matrix, cfg: WMFConfig, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fit WMF to a users x songs count matrix.

    Returns
    -------
    user_factors : np.ndarray [shape=(n_users, factors), float32]
    song_factors : np.ndarray [shape=(n_songs, factors), float32]
    """
    load_cuda_libraries()
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
        model.fit(confidence(counts, cfg.alpha, cfg.eps), show_progress=show_progress)
    if implicit.gpu.HAS_CUDA:
        model = model.to_cpu()
    users = np.asarray(model.user_factors, np.float32).copy()
    songs = np.asarray(model.item_factors, np.float32).copy()
    # A song or user without plays keeps what is left of its random start after a few CG
    # steps: noise, not knowledge. CF knows nothing of it, so its factors are zero.
    users[np.diff(counts.tocsr().indptr) == 0] = 0.0
    songs[np.diff(counts.tocsc().indptr) == 0] = 0.0
    return users, songs


def fold_in(fixed: np.ndarray, conf_rows: sp.csr_matrix, cfg: WMFConfig) -> np.ndarray:
    """Solve WMF for new rows with the other side's factors held fixed (one ALS half-step).

    implicit's ``recalculate_user`` with ``fixed`` as the item factors: for each row ``i`` with
    confidences ``c_ij`` on its played columns, ``x_i = (Y'Y + Y'(C_i - I)Y + lambda I)^-1
    Y' C_i p_i``, exactly what ALS solves. It folds in new users (fixed = song factors) and new
    songs (fixed = user factors) alike.

    Parameters
    ----------
    fixed : np.ndarray [shape=(n_columns, d)]
        The fixed factors.
    conf_rows : sp.csr_matrix [shape=(n_rows, n_columns)]
        Confidences ``c = 1 + alpha * log(1 + r / eps)`` of the rows to fold in.

    Returns
    -------
    np.ndarray [shape=(n_rows, d), float32]
        Zero for a row with no plays.
    """
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(limits=1, user_api="blas"):
        solver = AlternatingLeastSquares(
            factors=fixed.shape[1],
            regularization=cfg.regularization,
            alpha=1.0,  # the confidences are already transformed
            num_threads=cfg.n_jobs,
        )
        solver.item_factors = np.ascontiguousarray(fixed, np.float32)
        rows = solver.recalculate_user(np.arange(conf_rows.shape[0]), conf_rows.tocsr())
    return np.asarray(rows, np.float32)


def song_targets(song_factors: np.ndarray, user_factors: np.ndarray, splits, cfg: WMFConfig):
    """WMF factors of every song: the fitted ones, and cold songs folded in from their plays.

    The cold songs' factors use all their plays by training users (the ``cold_test`` set) and
    the training user factors: where a perfect audio model's predictions would land. They are
    only a yardstick (R^2, cosine); no model trains on them.
    """
    cold = np.flatnonzero(splits.songs["role"].to_numpy() == "cold")
    conf = confidence(splits.matrices["cold_test"][:, cold].T.tocsr(), cfg.alpha, cfg.eps)
    targets = song_factors.copy()
    targets[cold] = fold_in(user_factors, conf, cfg)
    return targets


def fold_in_new_users(
    user_factors: np.ndarray, song_factors: np.ndarray, splits, cfg: WMFConfig
) -> np.ndarray:
    """User factors with each held-out (``cold_user``) user folded in from their seed plays.

    The new-user problem: the song factors stay as fitted; a new user's factors solve WMF's
    least squares for their k seed plays alone, so they can be scored with no refit.

    Returns
    -------
    np.ndarray [shape=(n_users, d), float32]
        ``user_factors`` with the rows of the cold users replaced.
    """
    new_users = np.flatnonzero(splits.users["role"].to_numpy() == "cold_user")
    seeds = confidence(splits.matrices["cold_user_seed"][new_users], cfg.alpha, cfg.eps)
    users = user_factors.copy()
    users[new_users] = fold_in(song_factors, seeds, cfg)
    return users


def fitted_config(model_dir: Path) -> WMFConfig:
    """The settings a ``wmf`` model folder was fitted with (its ``config.json``): what a
    refit or a fold-in must use to match it."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise MusicrecError(f"{path}: not found; rerun the wmf stage (dvc repro wmf)")
    return WMFConfig(**json.loads(path.read_text()))
