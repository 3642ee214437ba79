"""The taste model behind a simulated listening log, shared by the synthetic world and the
real-audio world (docs/design.md, section 5).

Each song has an audible description ``phi`` [shape=(n_songs, d_a)] whose first ``n_groups``
columns are one-hot groups (a style, or a recording's source) and hidden factors that no audio
reveals. Each user has a taste over both: a sparse love of a few groups, milder views on the
other audible dimensions, and a hidden part; ``audio_share`` sets how much of the taste the
audio explains. Users pick songs without replacement by ``taste_sharpness * affinity +
popularity`` (popularity heavy-tailed, partly hidden) and play each an over-dispersed (negative
binomial) number of times that grows with affinity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Cells (users x songs) drawn at a time: memory stays flat as the catalogue grows.
BLOCK_CELLS = 1 << 21


@dataclass(frozen=True)
class Taste:
    """The knobs of the taste model (``synthesize`` or ``real_world`` params)."""

    n_users: int
    mean_songs_per_user: float
    audio_share: float
    taste_sharpness: float
    popularity_spread: float


def _cell_moments(left: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over every cell of ``left @ right.T``, without forming it.

    Over all (row, column) pairs, E[l.r] = E[l].E[r] and E[(l.r)^2] = sum_ij E[l_i l_j] E[r_i r_j]:
    two small second-moment matrices replace the n_left x n_right product.
    """
    mean = float(left.mean(0) @ right.mean(0))
    second = float(np.sum((left.T @ left / len(left)) * (right.T @ right / len(right))))
    return mean, float(np.sqrt(max(second - mean**2, 0.0))) + 1e-12


def affinity(
    truth: dict[str, np.ndarray], part: str, users: np.ndarray, songs: np.ndarray
) -> np.ndarray:
    """A user's standardised affinity for songs, from the factors in ``truth/ground_truth.npz``.

    Parameters
    ----------
    truth : dict of np.ndarray
        As returned by :func:`make_world`.
    part : {"audible", "hidden", "total"}
        The audible or hidden part of taste (each standardised over every (user, song) cell), or
        their mix weighted by ``audio_share`` (what plays were drawn from, before popularity).
    users, songs : np.ndarray [shape=(n,)] of int
        Indices of the cells; broadcast against each other as numpy indexing does.

    Returns
    -------
    np.ndarray [shape=broadcast shape of users and songs]
    """
    users, songs = np.broadcast_arrays(np.asarray(users), np.asarray(songs))
    if part == "total":
        share = float(truth["audio_share"])
        return np.sqrt(share) * affinity(truth, "audible", users, songs) + np.sqrt(
            1 - share
        ) * affinity(truth, "hidden", users, songs)
    taste, song, (mean, std) = (
        truth[f"taste_{part}"],
        truth[f"song_{part}"],
        truth[f"moments_{part}"],
    )
    return (np.einsum("...d,...d->...", taste[users], song[songs]) - mean) / std


def _draw_listened(
    logit_parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_listened: np.ndarray,
    rng: np.random.Generator,
    block_cells: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which songs each user plays: a draw without replacement, P(song) proportional to exp(logit).

    The logit of user u for song s is ``user_vectors[u] . song_vectors[s] + song_bias[s]``. Gumbel
    top-k (exactly a draw without replacement): the k largest ``logit - log(E)``, E ~ Exp(1).
    Users are taken in blocks of about ``block_cells`` cells, so memory grows with the catalogue
    and not with users x songs; the random stream is drawn block after block in user order, so the
    result does not depend on the block size. Time is users x songs: every song gets a key.

    Returns
    -------
    rows, cols : np.ndarray [shape=(n_listened.sum(),)]
        User and song indices, each user's songs in decreasing key order.
    """
    user_vectors, song_vectors, song_bias = logit_parts
    n_users, n_songs = len(user_vectors), len(song_vectors)
    step = max(1, block_cells // n_songs)
    rows, cols = [], []
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        logits = user_vectors[start:stop] @ song_vectors.T + song_bias
        # float64: float32 draws hit exactly 0 about once in 2^24 cells, an infinite key.
        keys = logits - np.log(rng.standard_exponential(logits.shape))
        counts = n_listened[start:stop]
        kmax = int(counts.max())
        top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), 1), 1)
        keep = np.arange(kmax)[None, :] < counts[:, None]
        rows.append(np.nonzero(keep)[0] + start)
        cols.append(top[keep])
    return np.concatenate(rows), np.concatenate(cols)


def draw_listening(
    phi: np.ndarray,
    n_groups: int,
    song_hidden: np.ndarray,
    popularity_known: np.ndarray,
    song_ids: np.ndarray,
    taste: Taste,
    rng: np.random.Generator,
    block_cells: int = BLOCK_CELLS,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Draw users' tastes and their play log over songs described by ``phi``.

    Memory grows with users + songs + plays, never with users x songs (see
    :func:`_draw_listened`).

    Parameters
    ----------
    phi : np.ndarray [shape=(n_songs, d_a)]
        Audible description; its first ``n_groups`` columns are one-hot groups.
    song_hidden : np.ndarray [shape=(n_songs, hidden_dims)]
    popularity_known : np.ndarray [shape=(n_songs,)]
        The part of popularity that follows something known about the song (added to a hidden
        Gaussian part of standard deviation 0.85, then scaled by ``popularity_spread``).
    song_ids : np.ndarray [shape=(n_songs,)] of str
    taste : Taste
    rng : np.random.Generator

    Returns
    -------
    plays : pd.DataFrame
        ``user_id``, ``song_id``, ``play_count`` (int >= 1), one row per (user, song) pair.
    truth : dict of np.ndarray (float32)
        ``taste_audible`` [shape=(n_users, d_a)], ``song_audible`` (``phi``), ``taste_hidden``
        and ``song_hidden``, ``moments_audible`` and ``moments_hidden`` (mean and standard
        deviation of each product over all cells), ``popularity`` [shape=(n_songs,)],
        ``audio_share`` and ``taste_sharpness``: :func:`affinity` turns them into cells.
    """
    n_songs = len(phi)
    # A user loves a few groups (sparse Dirichlet) and has milder views on everything else.
    style_taste = rng.dirichlet(np.full(n_groups, 0.3), size=taste.n_users) * 3.0
    other_taste = rng.normal(0, 0.5, (taste.n_users, phi.shape[1] - n_groups))
    taste_audible = np.hstack([style_taste, other_taste])
    taste_hidden = rng.standard_normal((taste.n_users, song_hidden.shape[1]))
    # Popularity is heavy-tailed and partly hidden (marketing, charts).
    popularity = taste.popularity_spread * (0.85 * rng.standard_normal(n_songs) + popularity_known)
    truth = {
        "taste_audible": taste_audible,
        "song_audible": phi,
        "moments_audible": np.array(_cell_moments(taste_audible, phi)),
        "taste_hidden": taste_hidden,
        "song_hidden": song_hidden,
        "moments_hidden": np.array(_cell_moments(taste_hidden, song_hidden)),
        "popularity": popularity,
        "audio_share": np.array(taste.audio_share),
        "taste_sharpness": np.array(taste.taste_sharpness),
    }

    # How many songs each user plays: log-normal, so a few users play very many.
    activity = rng.lognormal(np.log(taste.mean_songs_per_user) - 0.5 * 0.8**2, 0.8, taste.n_users)
    n_listened = np.clip(np.round(activity), 3, n_songs // 2).astype(int)
    # logit = sharpness * affinity(total) + popularity, written as one product plus a song bias.
    weights = [
        taste.taste_sharpness * np.sqrt(share) / truth[f"moments_{part}"][1]
        for part, share in (("audible", taste.audio_share), ("hidden", 1 - taste.audio_share))
    ]
    user_vectors = np.hstack([weights[0] * taste_audible, weights[1] * taste_hidden])
    song_vectors = np.hstack([phi, song_hidden])
    offset = weights[0] * truth["moments_audible"][0] + weights[1] * truth["moments_hidden"][0]
    rows, cols = _draw_listened(
        (user_vectors, song_vectors, popularity - offset), n_listened, rng, block_cells
    )
    # Over-dispersed counts: negative binomial whose mean grows with affinity.
    mean_extra = np.exp(0.6 + 0.7 * affinity(truth, "total", rows, cols))
    dispersion = 0.8
    counts = 1 + rng.negative_binomial(dispersion, dispersion / (dispersion + mean_extra))
    plays = pd.DataFrame(
        {
            "user_id": [f"U{u:06d}" for u in rows],
            "song_id": np.asarray(song_ids)[cols],
            "play_count": counts.astype(np.int64),
        }
    )
    return plays, {k: np.asarray(v, np.float32) for k, v in truth.items()}
