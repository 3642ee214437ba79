"""Weighted matrix factorisation of play counts (Hu, Koren, Volinsky 2008): the library.

Confidence ``c = 1 + alpha * log(1 + r / eps)`` for a play count ``r`` (1 where nobody played),
preference ``p = 1`` for played songs, fitted by implicit's alternating least squares:
minimise ``sum_uv c_uv (p_uv - u_u'v_v)^2 + lambda (sum ||u_u||^2 + sum ||v_v||^2)``.
Fold-in solves the same least squares for new rows with the other side held fixed. Used by the
``wmf`` stage, the DBN's new users, the hybrid's validation refit and ``recommend``.

**Popularity.** WMF's scores ``u'v`` carry no term for how many people a song reaches, while
listening is skewed towards popular songs: on such logs plain WMF ties with ranking by
popularity. The ``wmf`` model adds one, ``beta_u * p_v`` with ``p_v = log(1 + n_v) / log(1 +
max n)`` (``n_v``: the song's training listeners), as one more factor column on each side (an
augmented factorisation: every dot-product consumer scores it unchanged; the factors
themselves are fitted as before, so the content models' targets keep their meaning). A known
user's ``beta_u`` is ``wmf.popularity_weight``; a new user folded in from ``k`` seed plays gets
``popularity_weight + new_user_popularity / k``: the fewer the plays, the more popularity
weighs against a profile that a few plays define poorly. Both are chosen by ``tune`` on
validation tasks (:mod:`musicrec.models.tune`), 0 included.
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
    popularity_weight: float = 0.0  # beta of a known user (module docstring)
    new_user_popularity: float = 0.0  # gamma: a new user with k seed plays: beta + gamma / k

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise MusicrecError("wmf.factors and wmf.iterations must be >= 1")
        if self.regularization < 0 or self.alpha < 0 or self.eps <= 0:
            raise MusicrecError("wmf: need regularization >= 0, alpha >= 0 and eps > 0")
        if self.popularity_weight < 0 or self.new_user_popularity < 0:
            raise MusicrecError("wmf: need popularity_weight >= 0 and new_user_popularity >= 0")

    def user_popularity(self, seed_plays: np.ndarray | None = None) -> np.ndarray | float:
        """A user's weight on song popularity: ``popularity_weight`` for a known user, plus
        ``new_user_popularity / k`` for a new one with ``seed_plays`` = k [shape=(n,)]."""
        if seed_plays is None:
            return self.popularity_weight
        k = np.maximum(np.asarray(seed_plays, np.float64), 1.0)
        return self.popularity_weight + self.new_user_popularity / k


def popularity_feature(listeners: np.ndarray) -> np.ndarray:
    """``p_v = log(1 + n_v) / log(1 + max n)`` [shape=(n_songs,), float32, in [0, 1]] from each
    song's training listeners ``n_v`` [shape=(n_songs,)] (zeros where nobody listened)."""
    scaled = np.log1p(np.asarray(listeners, np.float64))
    top = scaled.max(initial=0.0)
    return (scaled / top if top > 0 else scaled).astype(np.float32)


def listeners_of(plays: sp.spmatrix) -> np.ndarray:
    """Each song's number of listeners in ``plays`` [shape=(n_users, n_songs)]:
    [shape=(n_songs,), int]."""
    return np.diff(sp.csc_matrix(plays).indptr)


def with_popularity(
    user_factors: np.ndarray,
    song_factors: np.ndarray,
    listeners: np.ndarray,
    user_weights: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Factors with the popularity column appended, so ``u'v`` becomes ``u'v + beta_u p_v``.

    Parameters
    ----------
    user_factors : np.ndarray [shape=(n_users, d)]
    song_factors : np.ndarray [shape=(n_songs, d)]
    listeners : np.ndarray [shape=(n_songs,)]  training listeners (:func:`popularity_feature`).
    user_weights : float or np.ndarray [shape=(n_users,)]  each user's ``beta_u``.

    Returns
    -------
    users : np.ndarray [shape=(n_users, d + 1), float32]
    songs : np.ndarray [shape=(n_songs, d + 1), float32]
    """
    weights = np.broadcast_to(np.asarray(user_weights, np.float32), (len(user_factors),))
    users = np.hstack([user_factors, weights[:, None]]).astype(np.float32)
    songs = np.hstack([song_factors, popularity_feature(listeners)[:, None]]).astype(np.float32)
    return users, songs


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
    user_vectors: np.ndarray, song_vectors: np.ndarray, splits, cfg: WMFConfig
) -> np.ndarray:
    """``wmf`` user vectors with each held-out (``cold_user``) user folded in from their seed
    plays (:func:`new_user_vectors`).

    The new-user problem: the song factors stay as fitted; a new user's factors solve WMF's
    least squares for their k seed plays alone, so they can be scored with no refit.

    Parameters
    ----------
    user_vectors, song_vectors : np.ndarray [shape=(n_users or n_songs, cfg.factors + 1)]
        :func:`with_popularity`'s.

    Returns
    -------
    np.ndarray [shape=(n_users, cfg.factors + 1), float32]
        ``user_vectors`` with the rows of the cold users replaced.
    """
    new_users = np.flatnonzero(splits.users["role"].to_numpy() == "cold_user")
    users = user_vectors.copy()
    seeds = splits.matrices["cold_user_seed"][new_users]
    users[new_users] = new_user_vectors(song_vectors, seeds, cfg)
    return users


def new_user_vectors(
    song_vectors: np.ndarray, seed_plays: sp.csr_matrix, cfg: WMFConfig
) -> np.ndarray:
    """New users' ``wmf`` vectors from their seed plays: WMF fold-in on the factor columns of
    ``song_vectors`` (a ``wmf`` model's, popularity column last), and the popularity weight
    for their number of seed plays (:meth:`WMFConfig.user_popularity`).

    Parameters
    ----------
    song_vectors : np.ndarray [shape=(n_songs, cfg.factors + 1)]
    seed_plays : sp.csr_matrix [shape=(n_new, n_songs)]  play counts.

    Returns
    -------
    np.ndarray [shape=(n_new, cfg.factors + 1), float32]
    """
    if song_vectors.shape[1] != cfg.factors + 1:
        raise MusicrecError(
            f"wmf: song vectors of {song_vectors.shape[1]} columns where {cfg.factors} factors "
            "and the popularity column make "
            f"{cfg.factors + 1}: a wmf model from before the popularity term; rerun "
            "`dvc repro wmf`"
        )
    seed_plays = sp.csr_matrix(seed_plays)
    factors = fold_in(
        song_vectors[:, : cfg.factors], confidence(seed_plays, cfg.alpha, cfg.eps), cfg
    )
    weights = cfg.user_popularity(np.diff(seed_plays.indptr))
    return np.hstack([factors, np.asarray(weights, np.float32)[:, None]]).astype(np.float32)


def fitted_config(model_dir: Path) -> WMFConfig:
    """The settings a ``wmf`` model folder was fitted with (its ``config.json``): what a
    refit or a fold-in must use to match it."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise MusicrecError(f"{path}: not found; rerun the wmf stage (dvc repro wmf)")
    return WMFConfig(**json.loads(path.read_text()))
